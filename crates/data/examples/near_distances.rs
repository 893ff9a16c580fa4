//! Prints the histogram of each image's distance to its nearest *different* content, which is
//! how the near-duplicate threshold was chosen: copies sit in a low mode, distinct slices far
//! above it.
//!
//! `cargo run --release -p artemis-data --example near_distances -- ../shared/data/artemis-planes`

use artemis_data::check::Indexed;
use artemis_data::image_io::DEFAULT_MAX_PIXELS;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::env::args()
        .nth(1)
        .ok_or("usage: near_distances <data root>")?;
    let idx = Indexed::build(
        root.as_ref(),
        DEFAULT_MAX_PIXELS,
        &indicatif::ProgressBar::hidden(),
    )?;
    let fps: Vec<_> = idx
        .fingerprints
        .iter()
        .filter_map(|f| f.as_ref().ok())
        .collect();
    let mut hist = [0usize; 257];
    for (i, a) in fps.iter().enumerate() {
        let nearest = fps
            .iter()
            .enumerate()
            .filter(|(j, b)| *j != i && b.content != a.content)
            .map(|(_, b)| a.phash.distance(&b.phash))
            .min()
            .unwrap_or(256);
        hist[nearest as usize] += 1;
    }
    println!("distance  images (nearest other content at this distance)");
    for (d, n) in hist.iter().enumerate() {
        if *n > 0 {
            println!("{d:>8}  {n:>6} {}", "#".repeat((*n).div_ceil(10)));
        }
    }
    Ok(())
}
