//! `data check`: what is in a data set, what is broken, and what is duplicated or leaks.

use crate::dedup::{Fingerprint, Groups, fingerprint_all, group};
use crate::error::Result;
use crate::scan::{Problem, Scan, scan};
use indicatif::ProgressBar;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

/// Settings of a check.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Perceptual-hash distance (bits of 256) at or below which images are near duplicates.
    pub near_threshold: u32,
    /// Pixel-count limit applied before decoding.
    pub max_pixels: u64,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            near_threshold: crate::hash::DEFAULT_NEAR_THRESHOLD,
            max_pixels: crate::image_io::DEFAULT_MAX_PIXELS,
        }
    }
}

/// Image size statistics over the decodable files.
#[derive(Debug, Clone, Serialize, Default)]
pub struct SizeSummary {
    pub min: (u32, u32),
    pub max: (u32, u32),
    pub median_width: u32,
    pub median_height: u32,
    /// The most frequent sizes, `(width, height, count)`, most frequent first (at most 5).
    pub most_common: Vec<(u32, u32, usize)>,
}

/// Files that share one content (or one near-duplicate cluster) but not one label.
#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    /// `tumor` when tumor types disagree, `plane` when only planes do.
    pub kind: String,
    /// `(relative path, label)` of every file in the group.
    pub files: Vec<(String, String)>,
}

/// Everything `data check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub root: String,
    pub layout: String,
    pub files: usize,
    pub decoded: usize,
    /// Per split (`-` without splits), per class folder: file counts.
    pub counts: BTreeMap<String, BTreeMap<String, usize>>,
    pub sizes: SizeSummary,
    /// Per split and class folder, the share of its decoded files at the data set's most
    /// common size: a class far from the others may be told apart by its source.
    pub common_size_share: BTreeMap<String, BTreeMap<String, f64>>,
    /// Files that could not be read or decoded, with the reason.
    pub unreadable: Vec<Problem>,
    /// Folders or files the scan skipped (unknown classes, links, odd names).
    pub skipped: Vec<Problem>,
    pub distinct_contents: usize,
    /// Exact-duplicate groups (one content, several files).
    pub exact_duplicate_groups: usize,
    /// Files that repeat a content already seen.
    pub exact_duplicate_extra_files: usize,
    pub near_threshold: u32,
    /// Near-duplicate clusters holding more than one distinct content.
    pub near_clusters: usize,
    /// Distinct contents that belong to such a cluster.
    pub near_clustered_contents: usize,
    pub largest_near_cluster: usize,
    /// Distinct contents present in more than one split (exact leakage).
    pub cross_split_contents: usize,
    /// Per split: files with an exact copy in another split.
    pub files_with_exact_copy_elsewhere: BTreeMap<String, usize>,
    /// Per split: files whose near-duplicate cluster reaches another split.
    pub files_with_near_copy_elsewhere: BTreeMap<String, usize>,
    /// Exact-duplicate groups whose labels disagree.
    pub exact_label_conflicts: Vec<Conflict>,
    /// Near-duplicate clusters whose tumor types disagree (count; the first few are listed).
    pub near_tumor_conflicts: usize,
    pub near_tumor_conflict_examples: Vec<Conflict>,
}

/// A scanned and fingerprinted data set: what `check` and `split` both work from.
pub struct Indexed {
    pub scan: Scan,
    /// Per sample, its fingerprint or the reason it could not be read.
    pub fingerprints: Vec<Result<Fingerprint>>,
}

impl Indexed {
    /// Scans `root` and fingerprints every file (all cores, with a progress bar).
    pub fn build(root: &Path, max_pixels: u64, progress: &ProgressBar) -> Result<Indexed> {
        let scan = scan(root)?;
        progress.set_length(scan.samples.len() as u64);
        let fingerprints = fingerprint_all(&scan.samples, max_pixels, progress);
        progress.finish_and_clear();
        Ok(Indexed { scan, fingerprints })
    }

    /// Indices of the samples that were read and decoded.
    pub fn readable(&self) -> Vec<usize> {
        (0..self.fingerprints.len())
            .filter(|&i| self.fingerprints[i].is_ok())
            .collect()
    }

    /// Duplicate groups over the readable samples (indices as in [`Indexed::readable`]).
    pub fn groups(&self, readable: &[usize], near_threshold: u32) -> Groups {
        let fps: Vec<&Fingerprint> = readable
            .iter()
            .filter_map(|&i| self.fingerprints[i].as_ref().ok())
            .collect();
        group(&fps, near_threshold)
    }
}

fn split_name(s: &crate::scan::Sample) -> String {
    s.split.clone().unwrap_or_else(|| "-".into())
}

/// Runs every check on an indexed data set.
pub fn check(idx: &Indexed, cfg: &CheckConfig) -> CheckReport {
    let samples = &idx.scan.samples;
    let counts = class_counts(samples);
    let unreadable: Vec<Problem> = idx
        .fingerprints
        .iter()
        .zip(samples)
        .filter_map(|(f, s)| {
            f.as_ref().err().map(|e| Problem {
                path: s.path.clone(),
                reason: e.to_string(),
            })
        })
        .collect();
    let readable = idx.readable();
    let fps: Vec<&Fingerprint> = readable
        .iter()
        .filter_map(|&i| idx.fingerprints[i].as_ref().ok())
        .collect();
    let sizes = size_summary(&fps);
    let common_size_share = size_share(&readable, &fps, samples, &sizes);
    let g = idx.groups(&readable, cfg.near_threshold);

    // Exact groups.
    let mut content_members: Vec<Vec<usize>> = vec![Vec::new(); g.n_contents];
    for (k, &c) in g.content.iter().enumerate() {
        content_members[c].push(readable[k]);
    }
    let exact_groups: Vec<&Vec<usize>> = content_members.iter().filter(|m| m.len() > 1).collect();
    let exact_duplicate_extra_files = exact_groups.iter().map(|m| m.len() - 1).sum();
    let mut cross_split_contents = 0;
    let mut exact_label_conflicts = Vec::new();
    let mut exact_elsewhere: BTreeMap<String, usize> = BTreeMap::new();
    for m in &exact_groups {
        if count_elsewhere(m, samples, &mut exact_elsewhere) {
            cross_split_contents += 1;
        }
        if let Some(c) = conflict(m, samples) {
            exact_label_conflicts.push(c);
        }
    }

    // Near clusters.
    let mut cluster_members: Vec<Vec<usize>> = vec![Vec::new(); g.n_clusters];
    let mut cluster_contents: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); g.n_clusters];
    for (k, (&cl, &c)) in g.cluster.iter().zip(&g.content).enumerate() {
        cluster_members[cl].push(readable[k]);
        cluster_contents[cl].insert(c);
    }
    let mut near_clusters = 0;
    let mut near_clustered_contents = 0;
    let mut largest_near_cluster = 0;
    let mut near_elsewhere: BTreeMap<String, usize> = BTreeMap::new();
    let mut near_tumor_conflicts = 0;
    let mut near_tumor_conflict_examples = Vec::new();
    for (members, contents) in cluster_members.iter().zip(&cluster_contents) {
        if contents.len() > 1 {
            near_clusters += 1;
            near_clustered_contents += contents.len();
            largest_near_cluster = largest_near_cluster.max(members.len());
        }
        count_elsewhere(members, samples, &mut near_elsewhere);
        if contents.len() > 1
            && let Some(c) = conflict(members, samples)
            && c.kind == "tumor"
        {
            near_tumor_conflicts += 1;
            if near_tumor_conflict_examples.len() < 10 {
                near_tumor_conflict_examples.push(c);
            }
        }
    }

    CheckReport {
        root: idx.scan.root.display().to_string(),
        layout: if idx.scan.has_splits {
            "<root>/<split>/<class>/<image>".into()
        } else {
            "<root>/<class>/<image>".into()
        },
        files: samples.len(),
        decoded: readable.len(),
        counts,
        sizes,
        common_size_share,
        unreadable,
        skipped: idx.scan.problems.clone(),
        distinct_contents: g.n_contents,
        exact_duplicate_groups: exact_groups.len(),
        exact_duplicate_extra_files,
        near_threshold: cfg.near_threshold,
        near_clusters,
        near_clustered_contents,
        largest_near_cluster,
        cross_split_contents,
        files_with_exact_copy_elsewhere: exact_elsewhere,
        files_with_near_copy_elsewhere: near_elsewhere,
        exact_label_conflicts,
        near_tumor_conflicts,
        near_tumor_conflict_examples,
    }
}

/// The class folder of a sample (`<split>/<class>/...` or `<class>/...`).
fn class_of(s: &crate::scan::Sample) -> &str {
    s.rel
        .split('/')
        .nth(usize::from(s.split.is_some()))
        .unwrap_or("?")
}

/// [`CheckReport::common_size_share`]: `readable[i]` is the sample of `fps[i]`.
fn size_share(
    readable: &[usize],
    fps: &[&Fingerprint],
    samples: &[crate::scan::Sample],
    sizes: &SizeSummary,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let Some(&(w, h, _)) = sizes.most_common.first() else {
        return BTreeMap::new();
    };
    let mut tally: BTreeMap<String, BTreeMap<String, (usize, usize)>> = BTreeMap::new();
    for (&i, f) in readable.iter().zip(fps) {
        let s = &samples[i];
        let t = tally.entry(split_name(s)).or_default();
        let e = t.entry(class_of(s).to_string()).or_default();
        e.0 += usize::from((f.width, f.height) == (w, h));
        e.1 += 1;
    }
    (tally.into_iter())
        .map(|(split, classes)| {
            let shares = classes
                .into_iter()
                .map(|(c, (k, n))| (c, k as f64 / n as f64));
            (split, shares.collect())
        })
        .collect()
}

/// Files per split and class folder.
fn class_counts(samples: &[crate::scan::Sample]) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut counts: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for s in samples {
        let class = class_of(s);
        *counts
            .entry(split_name(s))
            .or_default()
            .entry(class.to_string())
            .or_default() += 1;
    }
    counts
}

/// Whether a group's members lie in more than one split; if so, counts per split the
/// members with a copy in another split.
fn count_elsewhere(
    members: &[usize],
    samples: &[crate::scan::Sample],
    elsewhere: &mut BTreeMap<String, usize>,
) -> bool {
    let splits: BTreeSet<String> = members.iter().map(|&i| split_name(&samples[i])).collect();
    if splits.len() < 2 {
        return false;
    }
    for &i in members {
        let own = split_name(&samples[i]);
        if members.iter().any(|&j| split_name(&samples[j]) != own) {
            *elsewhere.entry(own).or_default() += 1;
        }
    }
    true
}

fn conflict(members: &[usize], samples: &[crate::scan::Sample]) -> Option<Conflict> {
    let tumors: BTreeSet<_> = members.iter().map(|&i| samples[i].label.tumor).collect();
    let labels: BTreeSet<_> = members.iter().map(|&i| samples[i].label).collect();
    if labels.len() < 2 {
        return None;
    }
    // A 4-class label (no plane) and a 12-class label of the same type do not conflict.
    let planes: BTreeSet<_> = members
        .iter()
        .filter_map(|&i| samples[i].label.plane)
        .collect();
    let kind = if tumors.len() > 1 {
        "tumor"
    } else if planes.len() > 1 {
        "plane"
    } else {
        return None;
    };
    Some(Conflict {
        kind: kind.into(),
        files: members
            .iter()
            .map(|&i| (samples[i].rel.clone(), samples[i].label.name()))
            .collect(),
    })
}

fn size_summary(fps: &[&Fingerprint]) -> SizeSummary {
    if fps.is_empty() {
        return SizeSummary::default();
    }
    let mut ws: Vec<u32> = fps.iter().map(|f| f.width).collect();
    let mut hs: Vec<u32> = fps.iter().map(|f| f.height).collect();
    ws.sort_unstable();
    hs.sort_unstable();
    let mut freq: BTreeMap<(u32, u32), usize> = BTreeMap::new();
    for f in fps {
        *freq.entry((f.width, f.height)).or_default() += 1;
    }
    let mut most: Vec<(u32, u32, usize)> = freq.into_iter().map(|((w, h), c)| (w, h, c)).collect();
    most.sort_by(|a, b| b.2.cmp(&a.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    most.truncate(5);
    SizeSummary {
        min: (ws[0], hs[0]),
        max: (ws[ws.len() - 1], hs[hs.len() - 1]),
        median_width: ws[ws.len() / 2],
        median_height: hs[hs.len() / 2],
        most_common: most,
    }
}

impl CheckReport {
    /// The class-by-size lines of [`Self::to_text`], with a warning where, within one split,
    /// one class has at least 90% of its files at the common size and another at most 10%.
    fn size_share_text(&self) -> String {
        let Some((w, h, _)) = self.sizes.most_common.first() else {
            return String::new();
        };
        let mut o = format!("share of each class's files at the most common size ({w}x{h}):\n");
        let mut confounded = Vec::new();
        for (split, classes) in &self.common_size_share {
            let cells: Vec<String> = (classes.iter())
                .map(|(c, v)| format!("{c} {:.0}%", v * 100.0))
                .collect();
            let _ = writeln!(o, "  {split:<10} {}", cells.join(", "));
            let (lo, hi) = classes
                .values()
                .fold((1.0f64, 0.0f64), |(l, u), &v| (l.min(v), u.max(v)));
            if hi >= 0.9 && lo <= 0.1 {
                confounded.push(split.as_str());
            }
        }
        if !confounded.is_empty() {
            let _ = writeln!(
                o,
                "  warning: in {}, image size alone tells some classes apart: they likely come \
                 from different sources, and a network can learn the source's framing and \
                 exposure instead of the anatomy (train with --framing head; README \"Framing\")",
                confounded.join(", ")
            );
        }
        o
    }

    /// The human-readable table printed by `artemis data check`.
    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "data set   {}", self.root);
        let _ = writeln!(o, "layout     {}", self.layout);
        let _ = writeln!(
            o,
            "files      {} ({} decoded, {} unreadable)",
            self.files,
            self.decoded,
            self.unreadable.len()
        );
        let _ = writeln!(o, "\nfiles per split and class:");
        for (split, classes) in &self.counts {
            let total: usize = classes.values().sum();
            let _ = writeln!(o, "  {split} ({total})");
            for (class, n) in classes {
                let _ = writeln!(o, "    {class:<24} {n:>6}");
            }
        }
        let s = &self.sizes;
        let _ = writeln!(
            o,
            "\nimage sizes: min {}x{}, median {}x{}, max {}x{}; most common: {}",
            s.min.0,
            s.min.1,
            s.median_width,
            s.median_height,
            s.max.0,
            s.max.1,
            s.most_common
                .iter()
                .map(|(w, h, c)| format!("{w}x{h} ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        o.push_str(&self.size_share_text());
        let _ = writeln!(o, "\nduplicates:");
        let _ = writeln!(
            o,
            "  distinct contents          {} of {} decoded files",
            self.distinct_contents, self.decoded
        );
        let _ = writeln!(
            o,
            "  exact duplicate groups     {} ({} extra files)",
            self.exact_duplicate_groups, self.exact_duplicate_extra_files
        );
        let _ = writeln!(
            o,
            "  near-duplicate clusters    {} holding {} distinct contents, largest {} files (pHash distance <= {} of 256 bits)",
            self.near_clusters,
            self.near_clustered_contents,
            self.largest_near_cluster,
            self.near_threshold
        );
        let _ = writeln!(
            o,
            "  contents in several splits {} (exact leakage)",
            self.cross_split_contents
        );
        for (split, n) in &self.files_with_exact_copy_elsewhere {
            let _ = writeln!(
                o,
                "    {split}: {n} files have an exact copy in another split"
            );
        }
        for (split, n) in &self.files_with_near_copy_elsewhere {
            let _ = writeln!(
                o,
                "    {split}: {n} files have an exact or near copy in another split"
            );
        }
        let tumor_conflicts = self
            .exact_label_conflicts
            .iter()
            .filter(|c| c.kind == "tumor")
            .count();
        let _ = writeln!(
            o,
            "  exact copies with conflicting labels: {} tumor, {} plane",
            tumor_conflicts,
            self.exact_label_conflicts.len() - tumor_conflicts
        );
        for c in &self.exact_label_conflicts {
            let files: Vec<String> = c.files.iter().map(|(p, l)| format!("{p} [{l}]")).collect();
            let _ = writeln!(o, "    {}: {}", c.kind, files.join(" = "));
        }
        let _ = writeln!(
            o,
            "  near-duplicate clusters with conflicting tumor types: {}",
            self.near_tumor_conflicts
        );
        if !self.unreadable.is_empty() {
            let _ = writeln!(o, "\nunreadable files (skipped):");
            for p in &self.unreadable {
                let _ = writeln!(o, "  {}", p.reason);
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(o, "\nskipped entries:");
            for p in &self.skipped {
                let _ = writeln!(o, "  {}: {}", p.path.display(), p.reason);
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::tests::slice;
    use std::fs;

    #[test]
    fn finds_exact_near_leaks_conflicts_and_broken_files() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "Training/glioma_coronal",
            "Training/no_coronal",
            "Testing/glioma_coronal",
            "Testing/no_sagittal",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        let a = slice(200, 200, (0.3, 0.3));
        let b = slice(200, 200, (0.7, 0.6));
        let c = slice(200, 200, (0.5, 0.8));
        a.save(r.join("Training/glioma_coronal/a.png")).unwrap();
        b.save(r.join("Training/glioma_coronal/b.png")).unwrap();
        c.save(r.join("Training/no_coronal/c.png")).unwrap();
        // exact copy of a in Testing: leakage
        fs::copy(
            r.join("Training/glioma_coronal/a.png"),
            r.join("Testing/glioma_coronal/a_copy.png"),
        )
        .unwrap();
        // near copy of b (resized) in Testing
        image::imageops::resize(&b, 150, 150, image::imageops::FilterType::Triangle)
            .save(r.join("Testing/glioma_coronal/b_small.png"))
            .unwrap();
        // exact copy of c with another plane label: conflict
        fs::copy(
            r.join("Training/no_coronal/c.png"),
            r.join("Testing/no_sagittal/c.png"),
        )
        .unwrap();
        // broken files
        fs::write(r.join("Testing/no_sagittal/empty.jpg"), b"").unwrap();
        fs::write(r.join("Testing/no_sagittal/notes.txt"), b"not an image").unwrap();
        let png = fs::read(r.join("Training/glioma_coronal/a.png")).unwrap();
        fs::write(r.join("Testing/no_sagittal/cut.png"), &png[..png.len() / 3]).unwrap();

        let idx = Indexed::build(
            r,
            crate::image_io::DEFAULT_MAX_PIXELS,
            &ProgressBar::hidden(),
        )
        .unwrap();
        let rep = check(&idx, &CheckConfig::default());
        assert_eq!(rep.files, 9);
        assert_eq!(rep.decoded, 6);
        assert_eq!(rep.unreadable.len(), 3);
        assert!(
            rep.unreadable
                .iter()
                .any(|p| p.reason.contains("empty.jpg") && p.reason.contains("empty"))
        );
        assert_eq!(rep.distinct_contents, 4);
        assert_eq!(rep.exact_duplicate_groups, 2);
        assert_eq!(rep.cross_split_contents, 2);
        assert_eq!(rep.near_clusters, 1, "b and its resized copy");
        assert_eq!(rep.files_with_near_copy_elsewhere.get("Testing"), Some(&3));
        assert_eq!(rep.exact_label_conflicts.len(), 1);
        assert_eq!(rep.exact_label_conflicts[0].kind, "plane");
        assert_eq!(rep.counts["Testing"]["no_sagittal"], 4);
        // Five of the six decoded files are 200x200; b's resized copy is not.
        assert_eq!(rep.common_size_share["Testing"]["glioma_coronal"], 0.5);
        assert_eq!(rep.common_size_share["Training"]["no_coronal"], 1.0);
        let text = rep.to_text();
        assert!(text.contains("glioma_coronal 50%"), "{text}");
        assert!(!text.contains("image size alone"), "{text}");
        // A class all at the common size beside one never at it: the confound warning.
        let mut confounded = rep.clone();
        (confounded.common_size_share.get_mut("Training").unwrap())
            .insert("no_coronal".into(), 0.0);
        let text = confounded.to_text();
        assert!(
            text.contains("warning: in Training, image size alone"),
            "{text}"
        );
        let text = rep.to_text();
        assert!(text.contains("cut.png"));
    }
}
