//! Batch prediction split over a cluster: which shard a file belongs to, the JSON Lines file a
//! shard writes (resumable, committed by a rename), and the merge of the shards' files.
//!
//! A shard file holds one predict row per line (the `rows` of `predict --json`) and, as its
//! last line, `{"shard": {"index": I, "count": N, "files": [...]}}`: the input files of shard
//! I of N, named as its rows name them. It is written as `<name>.partial`, a line per row as
//! the row is made, and renamed to `<name>` once every file is done, so the name appears only
//! on a complete shard. A rerun after a kill keeps the partial file's whole lines, drops the
//! rows of its last file (that file may be incomplete: a DICOM or a volume gives several
//! rows) and goes on from there, so no file is lost or written twice.

use crate::error::{EngineError, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Most shards one prediction may be split into.
pub const MAX_SHARDS: usize = 1 << 20;

/// Shard `index` of `count` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `index` of `count`, checked.
    pub fn new(index: usize, count: usize) -> std::result::Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("{count} shards: expected 1 to {MAX_SHARDS}"));
        }
        if index >= count {
            return Err(format!(
                "shard {index} of {count}: indices run from 0 to {}",
                count - 1
            ));
        }
        Ok(Shard { index, count })
    }

    /// `I/N`, `auto` (a Slurm job array's task) or `auto/N` (a Kubernetes Indexed Job's
    /// completion index, or a Slurm task, with N given), reading the scheduler's variables
    /// through `env`.
    pub fn parse(
        spec: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Shard, String> {
        let number = |name: &str, v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("{name}={v}: not a whole number"))
        };
        let (index, count) = match spec.split_once('/') {
            Some((i, n)) => (i, Some(number("shard count", n)?)),
            None => (spec, None),
        };
        if index != "auto" {
            let count =
                count.ok_or_else(|| format!("--shard {spec}: expected I/N, auto or auto/N"))?;
            return Shard::new(number("shard index", index)?, count);
        }
        let var = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(id) = var("SLURM_ARRAY_TASK_ID") {
            let min = match var("SLURM_ARRAY_TASK_MIN") {
                Some(m) => number("SLURM_ARRAY_TASK_MIN", &m)?,
                None => 0,
            };
            let id = number("SLURM_ARRAY_TASK_ID", &id)?;
            let count = match (count, var("SLURM_ARRAY_TASK_COUNT")) {
                (Some(n), _) => n,
                (None, Some(n)) => number("SLURM_ARRAY_TASK_COUNT", &n)?,
                (None, None) => return Err("SLURM_ARRAY_TASK_COUNT is not set".into()),
            };
            return Shard::new(
                id.checked_sub(min)
                    .ok_or("SLURM_ARRAY_TASK_ID below its MIN")?,
                count,
            );
        }
        if let Some(i) = var("JOB_COMPLETION_INDEX") {
            let count =
                count.ok_or("JOB_COMPLETION_INDEX needs the shard count: --shard auto/N")?;
            return Shard::new(number("JOB_COMPLETION_INDEX", &i)?, count);
        }
        Err("--shard auto: neither SLURM_ARRAY_TASK_ID nor JOB_COMPLETION_INDEX is set".into())
    }

    /// Whether `file` (found under one of `inputs`) belongs to this shard.
    pub fn owns(&self, file: &Path, inputs: &[PathBuf]) -> bool {
        shard_of(&shard_key(file, inputs), self.count) == self.index
    }
}

/// A file's name for sharding: its path relative to the input folder it was found under (its
/// own file name when it was given directly), with `/` separators, so the assignment does not
/// depend on where the data is mounted and adding files elsewhere does not move it.
pub fn shard_key(file: &Path, inputs: &[PathBuf]) -> String {
    let rel = inputs
        .iter()
        .filter_map(|i| file.strip_prefix(i).ok())
        .find(|r| !r.as_os_str().is_empty())
        .or_else(|| file.file_name().map(Path::new))
        .unwrap_or(file);
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.join("/")
}

/// The shard of a key: the first 8 bytes of its BLAKE3, modulo `count`.
pub fn shard_of(key: &str, count: usize) -> usize {
    let h = blake3::hash(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) % count.max(1) as u64) as usize
}

/// The files a prediction takes: those of one shard, less those a resumed shard file holds.
#[derive(Debug, Clone)]
pub struct Selection {
    pub shard: Shard,
    /// The inputs as given (the roots of the shard keys).
    pub inputs: Vec<PathBuf>,
    /// Files already written.
    pub done: HashSet<PathBuf>,
}

impl Selection {
    pub fn keeps(&self, file: &Path) -> bool {
        self.shard.owns(file, &self.inputs) && !self.done.contains(file)
    }
}

/// The trailer of a complete shard file.
#[derive(Debug, Serialize, serde::Deserialize)]
struct Trailer {
    shard: TrailerBody,
}

#[derive(Debug, Serialize, serde::Deserialize)]
struct TrailerBody {
    index: usize,
    count: usize,
    files: Vec<String>,
}

/// A shard file being written.
pub struct ShardWriter {
    target: PathBuf,
    partial: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    shard: Shard,
    /// Input files written, in order (resumed ones first).
    files: Vec<PathBuf>,
}

/// What opening a shard file found.
pub enum Opened {
    /// The shard file is complete: nothing is left to do.
    Complete,
    /// Writing (resumed when `done` is not empty).
    Writing(Box<ShardWriter>, Selection),
}

fn row_input(line: &str) -> Option<PathBuf> {
    let v: Value = serde_json::from_str(line).ok()?;
    v.get("input")?.as_str().map(PathBuf::from)
}

impl ShardWriter {
    /// Opens `target` for `shard` of the files under `inputs`: a complete file there is left
    /// as it is; a partial one is resumed.
    pub fn open(target: &Path, shard: Shard, inputs: &[PathBuf]) -> Result<Opened> {
        if target.exists() {
            let last = read_lines(target)?.pop().unwrap_or_default();
            return match serde_json::from_str::<Trailer>(&last) {
                Ok(t) if t.shard.index == shard.index && t.shard.count == shard.count => {
                    Ok(Opened::Complete)
                }
                _ => Err(EngineError::Config(format!(
                    "{}: exists and is not the complete file of shard {}/{}; move it away",
                    target.display(),
                    shard.index,
                    shard.count
                ))),
            };
        }
        let mut name = target.as_os_str().to_owned();
        name.push(".partial");
        let partial = PathBuf::from(name);
        let (kept, files) = resumable_rows(&partial)?;
        let text: String = kept.iter().map(|l| format!("{l}\n")).collect();
        artemis_data::fsutil::write_atomic(&partial, text.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&partial)
            .map_err(|e| EngineError::io(&partial, e))?;
        let done: HashSet<PathBuf> = files.iter().cloned().collect();
        let sel = Selection {
            shard,
            inputs: inputs.to_vec(),
            done,
        };
        let w = ShardWriter {
            target: target.to_path_buf(),
            partial,
            file: std::io::BufWriter::new(file),
            shard,
            files,
        };
        Ok(Opened::Writing(Box::new(w), sel))
    }

    /// How many input files a resumed shard file already held.
    pub fn resumed(&self) -> usize {
        self.files.len()
    }

    /// Appends one row (of the file `input`), flushed to the OS: a process killed after
    /// this returns loses nothing.
    pub fn append(&mut self, input: &Path, row: &impl Serialize) -> Result<()> {
        let line = serde_json::to_string(row).map_err(|e| EngineError::Config(e.to_string()))?;
        if self.files.last().is_none_or(|f| f != input) {
            self.files.push(input.to_path_buf());
        }
        let p = &self.partial;
        writeln!(self.file, "{line}").map_err(|e| EngineError::io(p, e))?;
        self.file.flush().map_err(|e| EngineError::io(p, e))
    }

    /// Writes the trailer, syncs and renames the file to its name: the shard is complete.
    pub fn finish(mut self) -> Result<PathBuf> {
        let trailer = Trailer {
            shard: TrailerBody {
                index: self.shard.index,
                count: self.shard.count,
                files: self
                    .files
                    .iter()
                    .map(|f| f.to_string_lossy().into_owned())
                    .collect(),
            },
        };
        let line =
            serde_json::to_string(&trailer).map_err(|e| EngineError::Config(e.to_string()))?;
        let p = self.partial.clone();
        writeln!(self.file, "{line}").map_err(|e| EngineError::io(&p, e))?;
        self.file.flush().map_err(|e| EngineError::io(&p, e))?;
        self.file
            .get_ref()
            .sync_all()
            .map_err(|e| EngineError::io(&p, e))?;
        std::fs::rename(&p, &self.target).map_err(|e| EngineError::io(&self.target, e))?;
        Ok(self.target)
    }
}

/// The whole lines of a file (a torn last line, without its newline, is left out).
fn read_lines(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    let whole = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    Ok(whole
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// The rows of a partial shard file worth keeping, and their input files in order: every
/// whole row but those of the last file.
fn resumable_rows(partial: &Path) -> Result<(Vec<String>, Vec<PathBuf>)> {
    if !partial.exists() {
        return Ok((Vec::new(), Vec::new()));
    }
    let mut rows: Vec<(PathBuf, String)> = Vec::new();
    for line in read_lines(partial)? {
        match row_input(&line) {
            Some(input) => rows.push((input, line)),
            None => break, // a line that is not a row: keep what came before it
        }
    }
    if let Some((last, _)) = rows.last().cloned() {
        rows.retain(|(i, _)| *i != last);
    }
    let mut files: Vec<PathBuf> = Vec::new();
    for (i, _) in &rows {
        if files.last() != Some(i) {
            files.push(i.clone());
        }
    }
    Ok((rows.into_iter().map(|(_, l)| l).collect(), files))
}

/// What [`merge`] wrote.
#[derive(Debug)]
pub struct Merged {
    pub shards: usize,
    pub files: usize,
    pub rows: usize,
}

/// A row's identity: its input, DICOM frame and volume slice.
type RowKey = (String, Option<u64>, Option<u64>);

fn row_key(v: &Value) -> RowKey {
    (
        v.get("input")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        v.get("frame").and_then(Value::as_u64),
        v.get("slice").and_then(Value::as_u64),
    )
}

/// Merges complete shard files into one JSON Lines file of rows, sorted by input, frame and
/// slice, written atomically. Refuses, naming what is wrong: a shard of the set missing or
/// given twice, shard files of different counts, an incomplete file, a file its trailer lists
/// without rows (missing) and a row present twice (doubled).
pub fn merge(shard_files: &[PathBuf], out: &Path) -> Result<Merged> {
    let bad = |p: &Path, why: String| EngineError::Config(format!("{}: {why}", p.display()));
    let mut seen: BTreeMap<usize, PathBuf> = BTreeMap::new();
    let mut count = None;
    let mut rows: BTreeMap<RowKey, (Value, PathBuf)> = BTreeMap::new();
    let mut files = 0;
    for path in shard_files {
        let mut lines = read_lines(path)?;
        let trailer: Trailer = lines
            .pop()
            .and_then(|l| serde_json::from_str(&l).ok())
            .ok_or_else(|| bad(path, "not a complete shard file (no shard trailer)".into()))?;
        let t = trailer.shard;
        if *count.get_or_insert(t.count) != t.count {
            return Err(bad(
                path,
                format!("shard of {} where the others are of {count:?}", t.count),
            ));
        }
        if let Some(other) = seen.insert(t.index, path.clone()) {
            return Err(bad(
                path,
                format!("shard {} again (also {})", t.index, other.display()),
            ));
        }
        let mut with_rows: HashSet<String> = HashSet::new();
        for line in &lines {
            let v: Value = serde_json::from_str(line).map_err(|e| bad(path, e.to_string()))?;
            let key = row_key(&v);
            with_rows.insert(key.0.clone());
            if let Some((_, other)) = rows.insert(key.clone(), (v, path.clone())) {
                return Err(bad(
                    path,
                    format!("{} doubled (also in {})", key.0, other.display()),
                ));
            }
        }
        for f in &t.files {
            if !with_rows.contains(f) {
                return Err(bad(
                    path,
                    format!("{f} missing: listed by the shard, no row"),
                ));
            }
        }
        files += t.files.len();
    }
    let count = count.ok_or_else(|| EngineError::Config("no shard files to merge".into()))?;
    if let Some(i) = (0..count).find(|i| !seen.contains_key(i)) {
        return Err(EngineError::Config(format!(
            "shard {i} of {count} missing from the merge"
        )));
    }
    let mut text = String::new();
    for (v, _) in rows.values() {
        text += &serde_json::to_string(v).map_err(|e| EngineError::Config(e.to_string()))?;
        text.push('\n');
    }
    artemis_data::fsutil::write_atomic(out, text.as_bytes())?;
    Ok(Merged {
        shards: count,
        files,
        rows: rows.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_and_scheduler_variables() {
        let none = |_: &str| None;
        assert_eq!(Shard::parse("2/7", none), Ok(Shard { index: 2, count: 7 }));
        assert!(Shard::parse("7/7", none).is_err());
        assert!(Shard::parse("1/0", none).is_err());
        assert!(Shard::parse("x/3", none).is_err());
        assert!(Shard::parse("auto", none).is_err());
        let slurm = |k: &str| match k {
            "SLURM_ARRAY_TASK_ID" => Some("5".to_string()),
            "SLURM_ARRAY_TASK_MIN" => Some("1".to_string()),
            "SLURM_ARRAY_TASK_COUNT" => Some("8".to_string()),
            _ => None,
        };
        assert_eq!(
            Shard::parse("auto", slurm),
            Ok(Shard { index: 4, count: 8 })
        );
        let k8s = |k: &str| (k == "JOB_COMPLETION_INDEX").then(|| "3".to_string());
        assert_eq!(
            Shard::parse("auto/4", k8s),
            Ok(Shard { index: 3, count: 4 })
        );
        assert!(Shard::parse("auto", k8s).is_err());
    }

    #[test]
    fn keys_are_relative_to_the_input_root() {
        let inputs = [PathBuf::from("/mnt/a/scans"), PathBuf::from("/x/one.jpg")];
        assert_eq!(
            shard_key(Path::new("/mnt/a/scans/p1/s.dcm"), &inputs),
            "p1/s.dcm"
        );
        assert_eq!(shard_key(Path::new("/x/one.jpg"), &inputs), "one.jpg");
        // The same file under another mount point lands in the same shard.
        let moved = [PathBuf::from("/data/scans")];
        assert_eq!(
            shard_of(&shard_key(Path::new("/data/scans/p1/s.dcm"), &moved), 7),
            shard_of(&shard_key(Path::new("/mnt/a/scans/p1/s.dcm"), &inputs), 7)
        );
    }
}
