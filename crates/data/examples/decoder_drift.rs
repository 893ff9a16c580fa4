//! What artemis's JPEG decoder (libjpeg-turbo) changes against `image`'s own (zune-jpeg, what
//! artemis used before 2026-12-06) on a data set: files with identical pixels, perceptual
//! hashes that moved, and pairs that crossed the near-duplicate threshold (16 bits).
//!
//! `cargo run --release -p artemis-data --example decoder_drift -- ../shared/data/artemis-planes`

use artemis_data::hash::PHash;
use artemis_data::image_io::{DEFAULT_MAX_PIXELS, read_rgb};
use std::path::{Path, PathBuf};

/// Every file two folders down (`<split>/<class>/<file>`), sorted.
fn files(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for split in std::fs::read_dir(root)? {
        for class in std::fs::read_dir(split?.path())? {
            for f in std::fs::read_dir(class?.path())? {
                out.push(f?.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .ok_or("usage: decoder_drift <data root>")?;
    let files = files(root.as_ref())?;
    let (mut new, mut old, mut same) = (Vec::new(), Vec::new(), 0);
    for f in &files {
        let a = read_rgb(f, DEFAULT_MAX_PIXELS)?;
        let b = image::load_from_memory(&std::fs::read(f)?)?.to_rgb8();
        same += usize::from(a == b);
        new.push(PHash::of(&a));
        old.push(PHash::of(&b));
    }
    let moved = new.iter().zip(&old).filter(|(a, b)| a != b).count();
    let mut flips = 0;
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            let (now, before) = (new[i].distance(&new[j]), old[i].distance(&old[j]));
            if (now <= 16) != (before <= 16) {
                flips += 1;
                println!(
                    "crossed: {} {} (distance {before} before, {now} now)",
                    files[i].display(),
                    files[j].display()
                );
            }
        }
    }
    println!(
        "{} files: {same} with identical pixels, {moved} perceptual hashes moved, {flips} pairs crossed the threshold",
        files.len()
    );
    Ok(())
}
