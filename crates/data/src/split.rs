//! Making split manifests under the three protocols.
//!
//! - `reference`: every readable file merged, shuffled with the seed; the first
//!   `ceil(test_fraction * n)` are test (as scikit-learn's `train_test_split` rounds), then
//!   `ceil(val_fraction * rest)` of the rest are validation. No de-duplication, exactly as the
//!   reference did, so its numbers can be compared like for like.
//! - `clean`: exact duplicates collapsed to one file (the first by path; identical contents with
//!   conflicting labels are dropped altogether, since their label is unknown), then
//!   near-duplicate clusters assigned whole to one split, stratified by label: within each label,
//!   clusters are shuffled and a cluster goes to test while it fits the test quota, else to
//!   validation while it fits that quota, else to train. (Clusters larger than a quota therefore
//!   land in train.)
//! - `official`: the data set's own `Testing` folder is test; validation is carved from the rest
//!   by cluster as in `clean`; nothing is de-duplicated (the check report shows the leakage).

use crate::check::Indexed;
use crate::error::{DataError, Result};
use crate::labels::Label;
use crate::manifest::{Entry, Manifest, Protocol, Split};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Settings of `data split`.
#[derive(Debug, Clone)]
pub struct SplitConfig {
    pub protocol: Protocol,
    pub seed: u64,
    pub val_fraction: f64,
    pub test_fraction: f64,
    pub near_threshold: u32,
    /// Stored in the manifest as `data_root`.
    pub data_root: String,
}

impl SplitConfig {
    /// Checks the fractions.
    pub fn validate(&self) -> Result<()> {
        let ok = |f: f64| (0.0..1.0).contains(&f);
        if !ok(self.val_fraction) || !ok(self.test_fraction) {
            return Err(DataError::Config(format!(
                "fractions must lie in [0, 1): val {} test {}",
                self.val_fraction, self.test_fraction
            )));
        }
        if self.val_fraction + self.test_fraction >= 1.0 {
            return Err(DataError::Config(
                "val and test fractions leave nothing to train on".into(),
            ));
        }
        Ok(())
    }
}

/// Makes a manifest from an indexed data set. Unreadable files are listed as `excluded` rows.
pub fn make_manifest(idx: &Indexed, cfg: &SplitConfig) -> Result<Manifest> {
    cfg.validate()?;
    let mut entries = unreadable_rows(idx);
    let mut rows = readable_rows(idx, cfg.near_threshold);
    if rows.is_empty() {
        return Err(DataError::Layout {
            path: idx.scan.root.clone(),
            reason: "no readable images to split".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    match cfg.protocol {
        Protocol::Reference => split_reference(&mut rows, cfg, &mut rng),
        Protocol::Clean => {
            dedupe_exact(&mut rows);
            let active: Vec<usize> = (0..rows.len())
                .filter(|&r| rows[r].split != Split::Excluded)
                .collect();
            assign_clusters(
                &mut rows,
                &active,
                cfg.test_fraction,
                cfg.val_fraction,
                &mut rng,
            );
        }
        Protocol::Official => split_official(idx, &mut rows, cfg, &mut rng)?,
    }
    entries.extend(rows);
    let mut m = Manifest {
        protocol: cfg.protocol,
        seed: cfg.seed,
        data_root: cfg.data_root.clone(),
        val_fraction: cfg.val_fraction,
        test_fraction: if cfg.protocol == Protocol::Official {
            0.0
        } else {
            cfg.test_fraction
        },
        near_threshold: cfg.near_threshold,
        entries,
    };
    m.canonicalize();
    Ok(m)
}

/// An `excluded` row for each file that could not be read, with the reason.
fn unreadable_rows(idx: &Indexed) -> Vec<Entry> {
    (idx.scan.samples.iter().zip(&idx.fingerprints))
        .filter_map(|(s, f)| {
            let e = f.as_ref().err()?;
            Some(Entry {
                split: Split::Excluded,
                rel: s.rel.clone(),
                content_hash: "-".into(),
                cluster: 0,
                label: s.label,
                note: format!("unreadable: {}", one_line(&e.to_string())),
            })
        })
        .collect()
}

/// The readable files' rows, in [`Indexed::readable`] order, with their near-duplicate
/// clusters; every split is left `train` for the protocol to decide.
fn readable_rows(idx: &Indexed, near_threshold: u32) -> Vec<Entry> {
    let samples = &idx.scan.samples;
    let readable = idx.readable();
    let groups = idx.groups(&readable, near_threshold);
    (readable.iter().enumerate())
        .filter_map(|(k, &i)| {
            let f = idx.fingerprints[i].as_ref().ok()?;
            Some(Entry {
                split: Split::Train,
                rel: samples[i].rel.clone(),
                content_hash: f.content.clone(),
                cluster: groups.cluster[k],
                label: samples[i].label,
                note: String::new(),
            })
        })
        .collect()
}

/// The reference protocol: the rows shuffled, the first `ceil(test_fraction * n)` test, then
/// `ceil(val_fraction * rest)` validation.
fn split_reference(rows: &mut [Entry], cfg: &SplitConfig, rng: &mut ChaCha8Rng) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.shuffle(rng);
    let n = rows.len();
    let n_test = (cfg.test_fraction * n as f64).ceil() as usize;
    let n_val = (cfg.val_fraction * (n - n_test) as f64).ceil() as usize;
    for (pos, &r) in order.iter().enumerate() {
        rows[r].split = if pos < n_test {
            Split::Test
        } else if pos < n_test + n_val {
            Split::Val
        } else {
            Split::Train
        };
    }
}

/// The official protocol: files under `<root>/Testing*` are test; validation is carved from
/// the rest by cluster.
fn split_official(
    idx: &Indexed,
    rows: &mut [Entry],
    cfg: &SplitConfig,
    rng: &mut ChaCha8Rng,
) -> Result<()> {
    let is_test = |e: &Entry| {
        e.rel
            .split('/')
            .next()
            .is_some_and(|s| s.to_ascii_lowercase().starts_with("test"))
    };
    if !idx.scan.has_splits || !rows.iter().any(is_test) {
        return Err(DataError::Layout {
            path: idx.scan.root.clone(),
            reason: "the official protocol needs a <root>/Testing/<class> folder".into(),
        });
    }
    let mut train_pool = Vec::new();
    for (r, e) in rows.iter_mut().enumerate() {
        if is_test(e) {
            e.split = Split::Test;
        } else {
            train_pool.push(r);
        }
    }
    assign_clusters(rows, &train_pool, 0.0, cfg.val_fraction, rng);
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Marks all but one file of each exact-duplicate group excluded; groups whose labels
/// disagree are excluded whole.
fn dedupe_exact(rows: &mut [Entry]) {
    let mut by_content: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (r, e) in rows.iter().enumerate() {
        by_content
            .entry(e.content_hash.clone())
            .or_default()
            .push(r);
    }
    for members in by_content.values() {
        if members.len() < 2 {
            continue;
        }
        let mut members = members.clone();
        members.sort_by(|&a, &b| rows[a].rel.cmp(&rows[b].rel));
        let labels: std::collections::BTreeSet<Label> =
            members.iter().map(|&r| rows[r].label).collect();
        if labels.len() > 1 {
            let names: Vec<String> = labels.iter().map(|l| l.name()).collect();
            for &r in &members {
                rows[r].split = Split::Excluded;
                rows[r].note = format!(
                    "identical content with conflicting labels ({})",
                    names.join(", ")
                );
            }
        } else {
            let keep = rows[members[0]].rel.clone();
            for &r in &members[1..] {
                rows[r].split = Split::Excluded;
                rows[r].note = format!("exact duplicate of {keep}");
            }
        }
    }
}

/// Assigns the clusters of `pool` rows to test/val/train, stratified by each cluster's
/// majority label. Clusters never span splits.
fn assign_clusters(
    rows: &mut [Entry],
    pool: &[usize],
    test_fraction: f64,
    val_fraction: f64,
    rng: &mut ChaCha8Rng,
) {
    // cluster -> members (rows)
    let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &r in pool {
        clusters.entry(rows[r].cluster).or_default().push(r);
    }
    // label -> clusters
    let mut by_label: BTreeMap<Label, Vec<usize>> = BTreeMap::new();
    for (&c, members) in &clusters {
        let mut votes: BTreeMap<Label, usize> = BTreeMap::new();
        for &r in members {
            *votes.entry(rows[r].label).or_default() += 1;
        }
        let best = votes
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(l, _)| *l);
        if let Some(l) = best {
            by_label.entry(l).or_default().push(c);
        }
    }
    for cl in by_label.values_mut() {
        cl.shuffle(rng);
        let n: usize = cl.iter().map(|c| clusters[c].len()).sum();
        let t_test = (test_fraction * n as f64).round() as usize;
        let t_val = (val_fraction * (n - t_test.min(n)) as f64).round() as usize;
        let (mut n_test, mut n_val) = (0, 0);
        for c in cl.iter() {
            let size = clusters[c].len();
            let split = if n_test + size <= t_test {
                n_test += size;
                Split::Test
            } else if n_val + size <= t_val {
                n_val += size;
                Split::Val
            } else {
                Split::Train
            };
            for &r in &clusters[c] {
                rows[r].split = split;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::Fingerprint;
    use crate::hash::PHash;
    use crate::scan::{Sample, Scan};
    use std::collections::HashMap;

    /// An index of `n` synthetic files: labels cycle over 4 classes; every 10th file is an
    /// exact copy of the previous one; files 3k and 3k+1 (k even) are near copies.
    fn fake_index(n: usize) -> Indexed {
        let classes = [
            "glioma_coronal",
            "no_sagittal",
            "pituitary_transverse",
            "meningioma_coronal",
        ];
        let mut samples = Vec::new();
        let mut fps = Vec::new();
        for i in 0..n {
            let class = classes[(i / 2) % 4];
            let rel = format!("{class}/{i:04}.jpg");
            samples.push(Sample {
                path: rel.clone().into(),
                rel,
                split: None,
                label: Label::from_class_dir(class).unwrap(),
            });
            let base = if i % 10 == 9 { i - 1 } else { i };
            // distinct hashes far apart: spread bits by index
            let mut h = [0u64; 4];
            for (w, word) in h.iter_mut().enumerate() {
                *word = (base as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ w as u64);
            }
            let near_partner = i % 3 == 1 && (i / 3) % 2 == 0;
            if near_partner {
                for (w, word) in h.iter_mut().enumerate() {
                    *word = ((i - 1) as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15 ^ w as u64);
                }
                h[0] ^= 0b11;
            }
            fps.push(Ok(Fingerprint {
                content: format!("c{base}"),
                phash: PHash(h),
                width: 8,
                height: 8,
            }));
        }
        Indexed {
            scan: Scan {
                root: "root".into(),
                has_splits: false,
                class_dirs: 4,
                samples,
                problems: vec![],
            },
            fingerprints: fps,
        }
    }

    fn cfg(protocol: Protocol, seed: u64) -> SplitConfig {
        SplitConfig {
            protocol,
            seed,
            val_fraction: 0.1,
            test_fraction: 0.2,
            near_threshold: 4,
            data_root: "root".into(),
        }
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_split() {
        let idx = fake_index(400);
        for p in [Protocol::Reference, Protocol::Clean] {
            let a = make_manifest(&idx, &cfg(p, 1)).unwrap().to_tsv();
            let b = make_manifest(&idx, &cfg(p, 1)).unwrap().to_tsv();
            let c = make_manifest(&idx, &cfg(p, 2)).unwrap().to_tsv();
            assert_eq!(a, b);
            assert_ne!(a, c);
        }
    }

    #[test]
    fn reference_split_sizes_like_scikit_learn() {
        let idx = fake_index(3246);
        let mut c = cfg(Protocol::Reference, 0);
        c.test_fraction = 0.1;
        let m = make_manifest(&idx, &c).unwrap();
        let [train, val, test, excl] = m.counts();
        assert_eq!((test, val, excl), (325, 293, 0));
        assert_eq!(train + val + test, 3246);
    }

    #[test]
    fn clean_never_splits_a_cluster_and_drops_exact_copies() {
        let idx = fake_index(600);
        let m = make_manifest(&idx, &cfg(Protocol::Clean, 3)).unwrap();
        let mut split_of: HashMap<usize, Split> = HashMap::new();
        let mut contents = std::collections::HashSet::new();
        let mut clusters_with_two = 0;
        let mut seen: HashMap<usize, usize> = HashMap::new();
        for e in m.entries.iter().filter(|e| e.split != Split::Excluded) {
            let prev = split_of.insert(e.cluster, e.split);
            assert!(
                prev.is_none() || prev == Some(e.split),
                "cluster {} split",
                e.cluster
            );
            assert!(
                contents.insert(e.content_hash.clone()),
                "duplicate content kept"
            );
            *seen.entry(e.cluster).or_default() += 1;
        }
        clusters_with_two += seen.values().filter(|&&n| n > 1).count();
        assert!(
            clusters_with_two > 50,
            "test fixture should have near clusters"
        );
        let [train, val, test, excl] = m.counts();
        assert_eq!(excl, 60);
        let kept = (train + val + test) as f64;
        assert!(
            (test as f64 / kept - 0.2).abs() < 0.03,
            "test share {}",
            test as f64 / kept
        );
        assert!(
            (val as f64 / kept - 0.08).abs() < 0.03,
            "val share {}",
            val as f64 / kept
        );
        // Stratified: every label is present in test.
        let test_labels: std::collections::HashSet<_> =
            m.split(Split::Test).map(|e| e.label).collect();
        assert_eq!(test_labels.len(), 4);
    }

    #[test]
    fn conflicting_exact_copies_are_dropped() {
        let mut idx = fake_index(20);
        // make file 5 a byte copy of file 4 but with another label
        idx.fingerprints[5] = Ok(idx.fingerprints[4].as_ref().unwrap().clone());
        idx.scan.samples[5].label = Label::from_class_dir("glioma_sagittal").unwrap();
        let m = make_manifest(&idx, &cfg(Protocol::Clean, 0)).unwrap();
        let dropped: Vec<_> = m
            .entries
            .iter()
            .filter(|e| {
                e.note
                    .starts_with("identical content with conflicting labels")
            })
            .collect();
        assert_eq!(dropped.len(), 2);
    }
}
