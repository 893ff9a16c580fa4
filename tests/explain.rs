//! Grad-CAM looks where the evidence is: a network trained on synthetic slices whose class is
//! decided only by where a bright blob lies (left third or right third) must put the peak of
//! its class activation map on the blob.

#![allow(clippy::unwrap_used)] // tests may panic on broken fixtures

use artemis_engine::infer::Classifier;
use artemis_engine::run::Run;
use image::{Rgb, RgbImage};
use std::fs;

mod common;
use common::*;

/// A 128x128 slice: textured ellipse, and a bright blob of radius 10 at `(bx, by)`.
fn blob_image(bx: f32, by: f32, seed: u32) -> RgbImage {
    RgbImage::from_fn(128, 128, |x, y| {
        let (fx, fy) = (x as f32, y as f32);
        let e = ((fx - 64.0) / 58.0).powi(2) + ((fy - 64.0) / 60.0).powi(2);
        let b = ((fx - bx).powi(2) + (fy - by).powi(2)).sqrt();
        let noise = ((x * 7 + y * 13 + seed * 31) % 17) as f32 * 3.0;
        let v = if b < 10.0 {
            235.0
        } else if e < 1.0 {
            70.0 + noise
        } else {
            5.0
        };
        Rgb([v as u8; 3])
    })
}

/// Blob centre of image `i` of class `c` (0: left third, 1: right third).
fn centre(c: usize, i: usize) -> (f32, f32) {
    let x = if c == 0 { 22.0 } else { 106.0 } + (i % 3) as f32 * 3.0;
    let y = 30.0 + (i * 37 % 68) as f32;
    (x, y)
}

#[test]
fn grad_cam_peaks_on_the_class_evidence() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (c, name) in ["glioma_coronal", "pituitary_transverse"]
        .iter()
        .enumerate()
    {
        let d = data.join(name);
        fs::create_dir_all(&d).unwrap();
        for i in 0..40 {
            let (x, y) = centre(c, i);
            blob_image(x, y, i as u32)
                .save(d.join(format!("{i}.png")))
                .unwrap();
        }
    }
    let manifest = tmp.path().join("m.tsv");
    split(&data, &manifest, "4", &[]);
    let run = tmp.path().join("run");
    train_baseline(
        &manifest,
        &run,
        "128",
        "4",
        &["--lr", "0.003", "--seed", "1"],
    );

    let clf = Classifier::open(Run::open(&run).unwrap()).unwrap();
    let pre = clf.run.config.preprocess;
    let mut hits = 0;
    let probes = [
        (0, 20.0, 40.0),
        (0, 26.0, 90.0),
        (1, 104.0, 50.0),
        (1, 108.0, 96.0),
    ];
    for &(c, bx, by) in &probes {
        let img = blob_image(bx, by, 99);
        let prepared = clf.prepare(&img);
        let x = artemis_engine::dataset::batch_tensor(&[&prepared], &pre, None, &clf.device);
        // The class named by the folder order of the run: glioma_coronal is 0,
        // pituitary_transverse is 11 in the 12-class task.
        let class = if c == 0 { 0 } else { 11 };
        let cam = &artemis_explain::grad_cam(&clf.network, x, &[class]).unwrap()[0];
        assert!(cam.peak > 0.0, "no positive evidence for class {class}");
        let (gx, gy) = cam.argmax();
        // Grid cell centre in image pixels.
        let px = (gx as f32 + 0.5) * 128.0 / cam.width as f32;
        let py = (gy as f32 + 0.5) * 128.0 / cam.height as f32;
        let d = ((px - bx).powi(2) + (py - by).powi(2)).sqrt();
        let cell = 128.0 / cam.width as f32;
        eprintln!(
            "class {class}: blob ({bx}, {by}), peak cell ({gx}, {gy}) of {}x{} at ({px:.0}, {py:.0}), distance {d:.1} px",
            cam.width, cam.height
        );
        if d <= 1.5 * cell {
            hits += 1;
        }
        // The half holding the blob carries more of the map than the other.
        let half = |left: bool| -> f32 {
            (0..cam.height)
                .flat_map(|y| (0..cam.width).map(move |x| (x, y)))
                .filter(|&(x, _)| ((x as f32 + 0.5) < cam.width as f32 / 2.0) == left)
                .map(|(x, y)| cam.at(x, y))
                .sum()
        };
        assert!(
            half(c == 0) > half(c != 0),
            "class {class}: map not on the blob's side"
        );
    }
    assert!(
        hits >= 3,
        "peak on the blob in {hits} of {} probes",
        probes.len()
    );

    // The library call the web app uses: the same map, and a picture of it.
    let img = blob_image(20.0, 40.0, 99);
    let e = artemis_engine::predict::explain(&clf, &img, Some(0), 0.45).unwrap();
    let prepared = clf.prepare(&img);
    let x = artemis_engine::dataset::batch_tensor(&[&prepared], &pre, None, &clf.device);
    let direct = &artemis_explain::grad_cam(&clf.network, x, &[0]).unwrap()[0];
    assert_eq!(&e.cam, direct);
    assert_eq!(e.class, 0);
    assert!((e.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(image::load_from_memory(&e.png).unwrap().width() >= 384);
    assert!(artemis_engine::predict::explain(&clf, &img, Some(99), 0.45).is_err());
}
