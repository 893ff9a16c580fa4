//! Does an external test set overlap the images a model was trained on? Every external file is
//! compared with the run's training and validation images: byte-identical files by BLAKE3
//! content hash, re-encoded or resized copies by the 256-bit perceptual hash within the
//! manifest's near-duplicate threshold (the same rule `data split --protocol clean` uses).
//!
//! The fingerprints of the training images are cached in `<run>/train-fingerprints.json`,
//! keyed by the manifest's hash, so a second external evaluation does not decode them again.

use crate::error::Result;
use crate::run::{Run, read_json, write_json};
use artemis_data::dedup::fingerprint_files;
use artemis_data::hash::PHash;
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_data::manifest::{Manifest, Split};
pub use artemis_report::types::{Overlap, OverlapReport};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const CACHE: &str = "train-fingerprints.json";

/// One training or validation image's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Known {
    rel: String,
    split: Split,
    content: String,
    phash: PHash,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Cache {
    manifest_hash: String,
    images: Vec<Known>,
}

fn known_images(run: &Run, manifest: &Manifest, root: &Path) -> Result<Vec<Known>> {
    let cache_path = run.path(CACHE);
    if let Ok(c) = read_json::<Cache>(&cache_path)
        && c.manifest_hash == run.config.manifest_hash
    {
        return Ok(c.images);
    }
    let entries: Vec<_> = manifest
        .entries
        .iter()
        .filter(|e| matches!(e.split, Split::Train | Split::Val))
        .collect();
    let paths: Vec<PathBuf> = entries.iter().map(|e| manifest.path_of(root, e)).collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    let pb = crate::progress::bar(refs.len() as u64, "fingerprint training images");
    let prints = fingerprint_files(&refs, DEFAULT_MAX_PIXELS, &pb);
    pb.finish_and_clear();
    let mut images = Vec::with_capacity(entries.len());
    for (e, f) in entries.iter().zip(prints) {
        match f {
            Ok(f) => images.push(Known {
                rel: e.rel.clone(),
                split: e.split,
                content: f.content,
                phash: f.phash,
            }),
            Err(err) => tracing::warn!("{err} (not compared)"),
        }
    }
    let cache = Cache {
        manifest_hash: run.config.manifest_hash.clone(),
        images,
    };
    if let Err(e) = write_json(&cache_path, &cache) {
        tracing::warn!("{e} (fingerprint cache not written)");
    }
    Ok(cache.images)
}

/// Compares `files` with the run's training and validation images. Files that cannot be read
/// are left to the caller's decoding step to report.
pub fn find_overlap(
    run: &Run,
    manifest: &Manifest,
    data_root: &Path,
    files: &[PathBuf],
) -> Result<OverlapReport> {
    let known = known_images(run, manifest, data_root)?;
    let by_content: HashMap<&str, &Known> = known.iter().map(|k| (k.content.as_str(), k)).collect();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let pb = crate::progress::bar(refs.len() as u64, "fingerprint external images");
    let prints = fingerprint_files(&refs, DEFAULT_MAX_PIXELS, &pb);
    pb.finish_and_clear();
    let threshold = manifest.near_threshold;
    let mut out = Vec::new();
    for (path, f) in files.iter().zip(prints) {
        let Ok(f) = f else { continue };
        if let Some(k) = by_content.get(f.content.as_str()) {
            out.push(Overlap {
                path: path.clone(),
                matches: k.rel.clone(),
                split: k.split,
                kind: "exact".into(),
                distance: 0,
            });
            continue;
        }
        let nearest = known
            .iter()
            .map(|k| (k.phash.distance(&f.phash), k))
            .min_by_key(|(d, _)| *d);
        if let Some((d, k)) = nearest
            && d <= threshold
        {
            out.push(Overlap {
                path: path.clone(),
                matches: k.rel.clone(),
                split: k.split,
                kind: "near".into(),
                distance: d,
            });
        }
    }
    Ok(OverlapReport {
        checked: files.len(),
        threshold,
        exact: out.iter().filter(|o| o.kind == "exact").count(),
        near: out.iter().filter(|o| o.kind == "near").count(),
        excluded: false,
        files: out,
    })
}
