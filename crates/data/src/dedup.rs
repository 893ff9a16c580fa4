//! Fingerprinting every file of a scan and grouping exact and near duplicates.

use crate::error::Result;
use crate::hash::{PHash, content_hash};
use crate::image_io::decode_rgb;
use crate::scan::Sample;
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// What is known of one file once read: its content hash, perceptual hash and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    pub content: String,
    pub phash: PHash,
    pub width: u32,
    pub height: u32,
}

/// Reads, hashes and decodes every sample on all cores. A file that fails yields its error in
/// place; the others go on.
pub fn fingerprint_all(
    samples: &[Sample],
    max_pixels: u64,
    progress: &ProgressBar,
) -> Vec<Result<Fingerprint>> {
    let paths: Vec<&Path> = samples.iter().map(|s| s.path.as_path()).collect();
    fingerprint_files(&paths, max_pixels, progress)
}

/// [`fingerprint_all`] for bare paths.
pub fn fingerprint_files(
    paths: &[&Path],
    max_pixels: u64,
    progress: &ProgressBar,
) -> Vec<Result<Fingerprint>> {
    paths
        .par_iter()
        .map(|path| {
            let r = (|| {
                let bytes =
                    crate::fsutil::read_limited(path, crate::fsutil::max_file_bytes(max_pixels))?;
                let content = content_hash(&bytes);
                let img = decode_rgb(&bytes, path, max_pixels)?;
                Ok(Fingerprint {
                    content,
                    phash: PHash::of(&img),
                    width: img.width(),
                    height: img.height(),
                })
            })();
            progress.inc(1);
            r
        })
        .collect()
}

/// Duplicate structure of a list of fingerprints.
#[derive(Debug, Clone)]
pub struct Groups {
    /// For each item: index of its distinct content (exact-duplicate group).
    pub content: Vec<usize>,
    /// For each item: its near-duplicate cluster (exact duplicates always share a cluster).
    pub cluster: Vec<usize>,
    /// Number of distinct contents.
    pub n_contents: usize,
    /// Number of clusters.
    pub n_clusters: usize,
}

struct UnionFind(Vec<usize>);
impl UnionFind {
    fn find(&mut self, mut x: usize) -> usize {
        while self.0[x] != x {
            self.0[x] = self.0[self.0[x]];
            x = self.0[x];
        }
        x
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.0[hi] = lo;
        }
    }
}

/// Groups items into exact-duplicate groups (same content hash) and near-duplicate clusters
/// (connected components of "perceptual distance <= threshold"). Group and cluster ids are
/// numbered in order of first appearance, so the result depends only on the input order.
pub fn group(fps: &[&Fingerprint], near_threshold: u32) -> Groups {
    let mut content_ids: HashMap<&str, usize> = HashMap::new();
    let mut reps: Vec<PHash> = Vec::new();
    let content: Vec<usize> = fps
        .iter()
        .map(|f| {
            *content_ids.entry(f.content.as_str()).or_insert_with(|| {
                reps.push(f.phash);
                reps.len() - 1
            })
        })
        .collect();
    let n = reps.len();
    // All pairs of distinct contents; 256-bit popcounts make this cheap for tens of thousands.
    let edges: Vec<(usize, usize)> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let reps = &reps;
            (i + 1..n).filter_map(move |j| {
                (reps[i].distance(&reps[j]) <= near_threshold).then_some((i, j))
            })
        })
        .collect();
    let mut uf = UnionFind((0..n).collect());
    for (a, b) in edges {
        uf.union(a, b);
    }
    let mut cluster_ids: HashMap<usize, usize> = HashMap::new();
    let cluster: Vec<usize> = content
        .iter()
        .map(|&c| {
            let root = uf.find(c);
            let next = cluster_ids.len();
            *cluster_ids.entry(root).or_insert(next)
        })
        .collect();
    Groups {
        content,
        cluster,
        n_contents: n,
        n_clusters: cluster_ids.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(content: &str, bits: [u64; 4]) -> Fingerprint {
        Fingerprint {
            content: content.into(),
            phash: PHash(bits),
            width: 1,
            height: 1,
        }
    }

    #[test]
    fn exact_and_near_groups() {
        let items = [
            fp("a", [0, 0, 0, 0]),
            fp("b", [0b111, 0, 0, 0]),      // 3 bits from a: near
            fp("a", [0, 0, 0, 0]),          // exact copy of item 0
            fp("c", [u64::MAX, 0, 0, 0]),   // far from everything
            fp("d", [u64::MAX, 0b1, 0, 0]), // near c
        ];
        let refs: Vec<_> = items.iter().collect();
        let g = group(&refs, 4);
        assert_eq!(g.content, vec![0, 1, 0, 2, 3]);
        assert_eq!(g.n_contents, 4);
        assert_eq!(g.cluster, vec![0, 0, 0, 1, 1]);
        assert_eq!(g.n_clusters, 2);
        let strict = group(&refs, 0);
        assert_eq!(strict.cluster, vec![0, 1, 0, 2, 3]);
    }
}
