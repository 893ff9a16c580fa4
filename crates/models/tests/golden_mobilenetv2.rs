//! Golden test: the genuine torchvision ImageNet MobileNetV2 checkpoint, loaded by
//! `weights::load_torchvision`, reproduces the reference logits of the four images in
//! `../shared/fixtures/imagenet-mobilenetv2/` (every top-5, logits within 1e-3 relative).
//!
//! Needs the checkpoint in the artemis cache: `scripts/setup` fetches it (CI runs it first).
#![allow(clippy::unwrap_used)]

use artemis_data::image_io::{DEFAULT_MAX_PIXELS, ResizeMode, read_rgb};
use artemis_data::transform::{Preprocess, Scaling};
use artemis_models::mobilenetv2::weights;
use artemis_models::{Architecture, ModelSpec};
use burn::prelude::*;
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/imagenet-mobilenetv2")
}

#[test]
fn imagenet_logits_match_the_reference() {
    let path = std::env::var_os("ARTEMIS_MOBILENETV2_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(weights::default_path);
    assert!(
        path.is_file(),
        "{} is missing: {}",
        path.display(),
        weights::HOW_TO_GET
    );
    let device = Device::flex();
    let spec = ModelSpec {
        architecture: Architecture::MobileNetV2,
        num_classes: 1000,
        input: (224, 224),
        width: 1.0,
    };
    let model = spec.init_pretrained(&path, &device).unwrap().valid();
    let dir = fixtures();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let pre = Preprocess {
        width: 224,
        height: 224,
        resize: ResizeMode::Squash,
        scaling: Scaling::Imagenet,
    };
    let images = expected["images"].as_object().unwrap();
    assert_eq!(images.len(), 4);
    let mut batch = Vec::new();
    let mut names = Vec::new();
    for (name, v) in images {
        let img = read_rgb(&dir.join(v["file"].as_str().unwrap()), DEFAULT_MAX_PIXELS).unwrap();
        assert_eq!(
            img.dimensions(),
            (224, 224),
            "fixture images are pre-cropped"
        );
        let mut chw = vec![0f32; pre.tensor_len()];
        pre.write_chw(&img, &mut chw);
        batch.extend(chw);
        names.push(name.clone());
    }
    let x = Tensor::<4>::from_data(TensorData::new(batch, [4, 3, 224, 224]), &device);
    let logits = model
        .forward(x)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap();
    for (i, name) in names.iter().enumerate() {
        let got = &logits[i * 1000..(i + 1) * 1000];
        let want: Vec<f32> = images[name]["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= 1e-3 * scale,
            "{name}: max |diff| {worst} vs logit scale {scale}"
        );
        let mut order: Vec<usize> = (0..1000).collect();
        order.sort_by(|&a, &b| got[b].total_cmp(&got[a]));
        let want_top5: Vec<usize> = images[name]["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(order[..5], want_top5[..], "{name}: top-5");
    }
}

#[test]
fn a_wrong_file_is_refused_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join(weights::FILE_NAME);
    std::fs::write(&fake, b"not a checkpoint").unwrap();
    let spec = ModelSpec {
        architecture: Architecture::MobileNetV2,
        num_classes: 12,
        input: (160, 160),
        width: 1.0,
    };
    let e = spec
        .init_pretrained(&fake, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sha256") && e.contains(weights::FILE_NAME),
        "{e}"
    );
}
