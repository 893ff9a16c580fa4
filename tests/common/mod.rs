//! Helpers shared by the CLI test binaries: run the binary, draw a tiny data set.
#![allow(dead_code, clippy::unwrap_used)]

use image::{Rgb, RgbImage};
use std::fs;
use std::path::Path;
use std::process::{Command, Output};

pub fn artemis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_artemis"))
        .args(args)
        .env("ARTEMIS_NO_PROGRESS", "1")
        .output()
        .expect("run artemis")
}

pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A synthetic slice: an ellipse ("head") with a bright blob whose place and the overall
/// brightness depend on the class, plus per-image jitter.
pub fn slice(class: usize, i: usize) -> RgbImage {
    let (bx, by) = [(0.3, 0.3), (0.7, 0.4), (0.5, 0.75)][class];
    let jitter = i as f32 * 0.01;
    RgbImage::from_fn(120, 110, |x, y| {
        let (fx, fy) = (x as f32 / 120.0, y as f32 / 110.0);
        let e = ((fx - 0.5) / 0.42).powi(2) + ((fy - 0.5) / 0.45).powi(2);
        let b = ((fx - bx - jitter).powi(2) + (fy - by).powi(2)).sqrt();
        let v = if b < 0.12 {
            240.0
        } else if e < 1.0 {
            60.0 + 40.0 * class as f32 + 20.0 * ((fx + fy) * 12.0 + i as f32).sin()
        } else {
            3.0
        };
        Rgb([v.clamp(0.0, 255.0) as u8; 3])
    })
}

pub const CLASSES: [&str; 3] = ["glioma_coronal", "no_sagittal", "pituitary_transverse"];

/// `<root>/<class>/img_<i>.png`, 10 per class, plus one corrupt file.
pub fn make_dataset(root: &Path) {
    for (c, name) in CLASSES.iter().enumerate() {
        let d = root.join(name);
        fs::create_dir_all(&d).unwrap();
        for i in 0..10 {
            slice(c, i).save(d.join(format!("img_{i}.png"))).unwrap();
        }
    }
    fs::write(
        root.join("no_sagittal/broken.jpg"),
        b"\xff\xd8\xff\xe0 truncated",
    )
    .unwrap();
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
