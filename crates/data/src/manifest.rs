//! Split manifests: which file goes to train, validation or test, written once and read by
//! `train`, `eval` and `predict`.
//!
//! The file is tab-separated text with a `#`-commented header:
//!
//! ```text
//! # artemis split manifest v1
//! # protocol: clean
//! # seed: 42
//! # data_root: /work/shared/data/artemis-planes
//! # val_fraction: 0.1
//! # test_fraction: 0.1
//! # near_threshold: 16
//! split<TAB>path<TAB>content_hash<TAB>cluster<TAB>label<TAB>note
//! train<TAB>Training/glioma_coronal/x.jpg<TAB>5e1f…<TAB>17<TAB>glioma_coronal<TAB>
//! ```
//!
//! `path` is relative to `data_root` (`artemis data split` writes it absolute; a relative
//! one, written by hand, is read from the working directory); `label` is the class folder's label; `cluster` is the
//! near-duplicate cluster (clusters never span train/val/test under the `clean` protocol);
//! `excluded` rows record files left out and why (`note`). Rows are sorted by split then path,
//! so the same inputs and seed always give the same bytes.

use crate::error::{DataError, Result};
use crate::labels::Label;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which subset a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
    Excluded,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
            Split::Excluded => "excluded",
        }
    }
}

impl FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "val" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            "excluded" => Ok(Split::Excluded),
            o => Err(format!(
                "unknown split '{o}' (expected train, val, test or excluded)"
            )),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a manifest was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The reference's: all files merged, random test then validation split, no de-duplication.
    Reference,
    /// Leakage-free: exact duplicates removed, near-duplicate clusters kept whole, stratified.
    Clean,
    /// The data set's own Training/Testing folders; validation carved from Training by cluster.
    Official,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Reference => "reference",
            Protocol::Clean => "clean",
            Protocol::Official => "official",
        }
    }
}

impl FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "reference" => Ok(Protocol::Reference),
            "clean" => Ok(Protocol::Clean),
            "official" => Ok(Protocol::Official),
            o => Err(format!(
                "unknown protocol '{o}' (expected reference, clean or official)"
            )),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One row of a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub split: Split,
    /// Path relative to the data root, `/`-separated.
    pub rel: String,
    pub content_hash: String,
    pub cluster: usize,
    pub label: Label,
    /// Why an `excluded` row was excluded; empty otherwise.
    pub note: String,
}

/// A split manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub protocol: Protocol,
    pub seed: u64,
    pub data_root: String,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub near_threshold: u32,
    pub entries: Vec<Entry>,
}

const MAGIC: &str = "# artemis split manifest v1";
const COLUMNS: &str = "split\tpath\tcontent_hash\tcluster\tlabel\tnote";

impl Manifest {
    /// Sorts rows into their canonical order (split, then path).
    pub fn canonicalize(&mut self) {
        self.entries
            .sort_by(|a, b| (a.split, &a.rel).cmp(&(b.split, &b.rel)));
    }

    /// Entries of one split.
    pub fn split(&self, split: Split) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.split == split)
    }

    /// Number of rows per split, in train/val/test/excluded order.
    pub fn counts(&self) -> [usize; 4] {
        let mut c = [0; 4];
        for e in &self.entries {
            c[e.split as usize] += 1;
        }
        c
    }

    /// Absolute (or root-relative) path of an entry's file.
    pub fn path_of(&self, root: &Path, e: &Entry) -> PathBuf {
        root.join(&e.rel)
    }

    /// Serialises the manifest (canonical row order expected).
    pub fn to_tsv(&self) -> String {
        let mut o = String::new();
        o.push_str(MAGIC);
        o.push('\n');
        o.push_str(&format!("# protocol: {}\n", self.protocol));
        o.push_str(&format!("# seed: {}\n", self.seed));
        o.push_str(&format!("# data_root: {}\n", self.data_root));
        o.push_str(&format!("# val_fraction: {}\n", self.val_fraction));
        o.push_str(&format!("# test_fraction: {}\n", self.test_fraction));
        o.push_str(&format!("# near_threshold: {}\n", self.near_threshold));
        o.push_str(COLUMNS);
        o.push('\n');
        for e in &self.entries {
            o.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\n",
                e.split,
                e.rel,
                e.content_hash,
                e.cluster,
                e.label.name(),
                e.note
            ));
        }
        o
    }

    /// Writes the manifest atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::fsutil::write_atomic(path, self.to_tsv().as_bytes())
    }

    /// Reads and validates a manifest file.
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Manifest::parse(&text, path)
    }

    /// Parses manifest text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let bad = |line: usize, reason: String| DataError::Manifest {
            path: path.to_path_buf(),
            line,
            reason,
        };
        // Carriage returns at the end of a line are line-ending debris (Windows editors, a file
        // cut after its "\r"): all are dropped, so what parses is what `to_tsv` writes back
        // (fuzzing found notes ending in "\r" that changed on every round trip).
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r')).enumerate();
        match lines.next() {
            Some((_, l)) if l == MAGIC => {}
            _ => {
                return Err(bad(
                    1,
                    format!("not an artemis manifest (first line must be '{MAGIC}')"),
                ));
            }
        }
        let mut header = std::collections::HashMap::new();
        let mut entries = Vec::new();
        let mut seen_columns = false;
        for (i, line) in lines {
            let n = i + 1;
            if let Some(h) = line.strip_prefix("# ") {
                let (k, v) = h
                    .split_once(": ")
                    .ok_or_else(|| bad(n, format!("bad header line '{line}'")))?;
                header.insert(k.to_string(), v.to_string());
                continue;
            }
            if !seen_columns {
                if line != COLUMNS {
                    return Err(bad(n, format!("expected the column line '{COLUMNS}'")));
                }
                seen_columns = true;
                continue;
            }
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 6 {
                return Err(bad(
                    n,
                    format!("expected 6 tab-separated fields, found {}", f.len()),
                ));
            }
            let split = f[0].parse::<Split>().map_err(|e| bad(n, e))?;
            if f[1].is_empty() || f[1].starts_with('/') || f[1].split('/').any(|c| c == "..") {
                return Err(bad(
                    n,
                    format!("path '{}' must be relative, without '..'", f[1]),
                ));
            }
            let cluster = f[3]
                .parse::<usize>()
                .map_err(|_| bad(n, format!("cluster '{}' is not a number", f[3])))?;
            let label = Label::from_class_dir(f[4])
                .ok_or_else(|| bad(n, format!("unknown label '{}'", f[4])))?;
            entries.push(Entry {
                split,
                rel: f[1].to_string(),
                content_hash: f[2].to_string(),
                cluster,
                label,
                note: f[5].to_string(),
            });
        }
        if !seen_columns {
            return Err(bad(1, "no column line: file is truncated".into()));
        }
        let get = |k: &str| {
            header
                .get(k)
                .cloned()
                .ok_or_else(|| bad(1, format!("header '{k}' missing")))
        };
        // A fraction of the files: a number in [0, 1] (NaN and infinities are refused).
        let num = |k: &str| -> Result<f64> {
            let v = get(k)?;
            v.parse::<f64>()
                .ok()
                .filter(|x| (0.0..=1.0).contains(x))
                .ok_or_else(|| {
                    bad(
                        1,
                        format!("header '{k}' is not a fraction in [0, 1]: '{v}'"),
                    )
                })
        };
        Ok(Manifest {
            protocol: get("protocol")?.parse().map_err(|e| bad(1, e))?,
            seed: get("seed")?
                .parse()
                .map_err(|_| bad(1, "header 'seed' is not an integer".into()))?,
            data_root: get("data_root")?,
            val_fraction: num("val_fraction")?,
            test_fraction: num("test_fraction")?,
            near_threshold: get("near_threshold")?
                .parse()
                .map_err(|_| bad(1, "header 'near_threshold' is not an integer".into()))?,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        let l = Label::from_class_dir("glioma_coronal").unwrap();
        Manifest {
            protocol: Protocol::Clean,
            seed: 7,
            data_root: "data".into(),
            val_fraction: 0.1,
            test_fraction: 0.2,
            near_threshold: 16,
            entries: vec![
                Entry {
                    split: Split::Train,
                    rel: "a/b c.jpg".into(),
                    content_hash: "ab".into(),
                    cluster: 0,
                    label: l,
                    note: String::new(),
                },
                Entry {
                    split: Split::Excluded,
                    rel: "a/d.jpg".into(),
                    content_hash: "ab".into(),
                    cluster: 0,
                    label: l,
                    note: "exact duplicate of a/b c.jpg".into(),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let text = m.to_tsv();
        let back = Manifest::parse(&text, Path::new("m.tsv")).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_tsv(), text);
    }

    #[test]
    fn malformed_manifests_name_the_line() {
        let p = Path::new("m.tsv");
        let e = Manifest::parse("hello", p).unwrap_err().to_string();
        assert!(e.starts_with("m.tsv:1:"), "{e}");
        let good = sample().to_tsv();
        let e = Manifest::parse(&good.replace("\tglioma_coronal\t", "\tcats\t"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown label 'cats'"), "{e}");
        let e = Manifest::parse(&good.replace("a/d.jpg", "../d.jpg"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.tsv:10:") && e.contains("relative"), "{e}");
        let truncated = &good[..good.find("split\t").unwrap()];
        assert!(Manifest::parse(truncated, p).is_err());
        let e = Manifest::parse(&good.replace("val_fraction: 0.1", "val_fraction: NaN"), p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("val_fraction") && e.contains("[0, 1]"), "{e}");
    }

    /// Fuzzing regression (fuzz/ target `manifest`): lines ending in "\r" kept it in the note,
    /// and the manifest written back read differently.
    #[test]
    fn crlf_and_a_trailing_carriage_return_read_like_the_written_file() {
        let p = Path::new("m.tsv");
        let good = sample().to_tsv();
        let windows = good.replace('\n', "\r\n");
        assert_eq!(Manifest::parse(&windows, p).unwrap(), sample());
        let cut = format!("{}\r", good.trim_end_matches('\n'));
        let m = Manifest::parse(&cut, p).unwrap();
        assert_eq!(m, sample());
        let many = good.replace("\n", "\r\r\r\n");
        assert_eq!(Manifest::parse(&many, p).unwrap(), sample());
        assert_eq!(Manifest::parse(&m.to_tsv(), p).unwrap(), m);
    }
}
