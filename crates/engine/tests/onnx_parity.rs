//! Parity of the ONNX export: for every architecture, ONNX Runtime on the exported graphs
//! (logits, backbone, the frozen stages of transfer learning) gives burn's values to 1e-5 (logits; 5e-5 for conv maps) on
//! the shared fixture images and on real MRI slices: absolute for values up to 1, relative to
//! the largest magnitude above that (float32 carries about 7 digits: two correct
//! implementations of a network whose logits reach 1000 differ by more than that absolute).
//!
//! - MobileNetV2 and EfficientNet-Lite0 carry their genuine ImageNet weights (1000 classes, 224
//!   px): ONNX Runtime must also reproduce the fixtures' reference logits (as the golden test
//!   does for burn).
//! - The baselines and InceptionV3 are freshly initialised (seeded; InceptionV3 at its native
//!   299 px) with their BatchNorm statistics fitted to the images: parity is about the graph,
//!   and a wrong operator, padding or fold shows at once on activations of order one.
//!
//! Needs the ONNX Runtime library and the ImageNet weights that `scripts/setup` fetches (the
//! README's test command runs it first).
#![allow(clippy::unwrap_used)]

use artemis_data::image_io::{DEFAULT_MAX_PIXELS, ResizeMode, read_rgb};
use artemis_data::transform::Preprocess;
use artemis_engine::dataset::{batch_data, to_vec_f32};
use artemis_engine::onnx::{OnnxModel, runtime};
use artemis_engine::run::native_scaling;
use artemis_models::{Architecture, ModelSpec, Network, OnnxGraph};
use burn::prelude::*;
use image::RgbImage;
use std::path::PathBuf;

/// Logits: measured 2026-12-01 at most 8.7e-7 (relative to max(1, max |logit|)).
const TOLERANCE: f32 = 1e-5;
/// Conv maps, pooled features and frozen stages: measured at most 6.8e-6 (Lite0's last map);
/// ~7x that, so a 100x regression fails.
const MAP_TOLERANCE: f32 = 5e-5;

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// The four fixture photographs and four MRI slices (one per tumor type).
fn images() -> Vec<RgbImage> {
    let fix = shared().join("fixtures/imagenet-mobilenetv2");
    let mut paths: Vec<PathBuf> = ["cat", "coffee", "hotdog", "bird"]
        .iter()
        .map(|n| fix.join(format!("{n}.png")))
        .collect();
    let data = shared().join("data/artemis-planes/Testing");
    for class in [
        "glioma_transverse",
        "meningioma_coronal",
        "no_sagittal",
        "pituitary_coronal",
    ] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(data.join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        paths.push(files[0].clone());
    }
    paths
        .iter()
        .map(|p| read_rgb(p, DEFAULT_MAX_PIXELS).unwrap())
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest magnitude of `v`, at least 1: what [`TOLERANCE`] is relative to.
fn scale(v: &[f32]) -> f32 {
    v.iter().fold(1f32, |m, x| m.max(x.abs()))
}

fn side(arch: Architecture) -> usize {
    match arch {
        Architecture::MobileNetV2 | Architecture::EfficientNetLite0 => 224,
        Architecture::InceptionV3 => 299,
        _ => 150,
    }
}

/// The pretrained network, or a fresh one whose BatchNorm statistics were fitted to the
/// batch `x` (5 training-mode passes) so that its activations are of order one, as a trained
/// network's are.
fn network(arch: Architecture, x: &[f32], n: usize) -> (ModelSpec, Network) {
    let side = side(arch);
    if let Some(c) = arch
        .checkpoint()
        .filter(|_| arch != Architecture::InceptionV3)
    {
        let spec = ModelSpec::new(arch, 1000, (side, side));
        let path = c.default_path();
        assert!(
            path.is_file(),
            "{} is missing: {}",
            path.display(),
            c.how_to_get
        );
        return (spec, spec.init_pretrained(&path, &Device::flex()).unwrap());
    }
    let spec = ModelSpec::new(arch, 12, (side, side));
    let device = Device::flex().autodiff();
    device.seed(3);
    let net = spec.init(&device).unwrap();
    let t = Tensor::<4>::from_data(TensorData::new(x.to_vec(), [n, 3, side, side]), &device);
    for _ in 0..5 {
        let _ = net.forward(t.clone());
    }
    (spec, net.valid())
}

/// Runs `graph` of `net` in ONNX Runtime on `x` and returns output `name`.
fn ort(
    net: &Network,
    spec: &ModelSpec,
    graph: OnnxGraph,
    x: &[f32],
    side: usize,
    name: &str,
) -> Vec<f32> {
    let bytes = net.to_onnx(spec, graph, &[]).unwrap();
    let m = OnnxModel::from_bytes(&bytes, 2, "test").unwrap();
    m.run(x, [x.len() / (3 * side * side), 3, side, side], name)
        .unwrap()
        .1
}

fn check(arch: Architecture) {
    runtime().unwrap_or_else(|e| panic!("{e}"));
    let side = side(arch);
    let pre = Preprocess {
        width: side as u32,
        height: side as u32,
        resize: ResizeMode::Squash,
        scaling: native_scaling(arch),
        framing: Default::default(),
    };
    let resized: Vec<RgbImage> = images().iter().map(|i| pre.resize(i)).collect();
    let refs: Vec<&RgbImage> = resized.iter().collect();
    let x = batch_data(&refs, &pre);
    let (spec, net) = network(arch, &x, refs.len());
    let device = Device::flex();
    let t = || {
        Tensor::<4>::from_data(
            TensorData::new(x.clone(), [refs.len(), 3, side, side]),
            &device,
        )
    };

    let logits = to_vec_f32(net.forward(t())).unwrap();
    let ort_logits = ort(&net, &spec, OnnxGraph::Logits, &x, side, "logits");
    let d_logits = max_diff(&logits, &ort_logits);

    let features = to_vec_f32(net.forward_features(t())).unwrap();
    let ort_features = ort(&net, &spec, OnnxGraph::Backbone, &x, side, "features");
    let d_features = max_diff(&features, &ort_features);

    let (s_logits, s_features) = (scale(&logits), scale(&features));
    let mut line = format!(
        "{}: {} images at {side} px: max |burn - ORT| / max(1, max |value|): logits {:.1e} (max |logit| {s_logits:.1}), last conv map {:.1e}",
        arch.name(),
        refs.len(),
        d_logits / s_logits,
        d_features / s_features,
    );
    assert!(d_logits <= TOLERANCE * s_logits, "{line}");
    assert!(d_features <= MAP_TOLERANCE * s_features, "{line}");
    if arch != Architecture::Baseline && arch != Architecture::BaselineReluBn {
        // The pooled backbone output is the mean of the map.
        let pooled = ort(&net, &spec, OnnxGraph::Backbone, &x, side, "pooled");
        let c = pooled.len() / refs.len();
        let hw = features.len() / refs.len() / c;
        let mean0 = features[..hw].iter().sum::<f32>() / hw as f32;
        assert!(
            (pooled[0] - mean0).abs() <= MAP_TOLERANCE * s_features,
            "pooled {} vs mean {mean0}",
            pooled[0]
        );
        // The frozen stages of `--strategy from:K` and of `head` (what the feature cache
        // holds).
        for k in [arch.top_stage().unwrap(), arch.stages()] {
            let acts = to_vec_f32(net.forward_stages(t(), 0, k)).unwrap();
            let ort_acts = ort(&net, &spec, OnnxGraph::Stages(k), &x, side, "activations");
            let (d_acts, s_acts) = (max_diff(&acts, &ort_acts), scale(&acts));
            line += &format!(", stages 0..{k} {:.1e}", d_acts / s_acts);
            assert!(d_acts <= MAP_TOLERANCE * s_acts, "{line}");
        }
    }
    eprintln!("{line}");
    // Genuine ImageNet weights: ONNX Runtime also reproduces the reference logits of the four
    // fixture images (to 1e-5 of the largest logit, as the golden test asks of burn).
    let fixture = match arch {
        Architecture::MobileNetV2 => Some("imagenet-mobilenetv2"),
        Architecture::EfficientNetLite0 => Some("imagenet-efficientnet-lite0"),
        _ => None,
    };
    if let Some(f) = fixture {
        let expected: serde_json::Value = serde_json::from_slice(
            &std::fs::read(shared().join("fixtures").join(f).join("expected.json")).unwrap(),
        )
        .unwrap();
        for (i, name) in ["cat", "coffee", "hotdog", "bird"].iter().enumerate() {
            let want: Vec<f32> = expected["images"][name]["logits"]
                .as_array()
                .unwrap_or_else(|| panic!("{f}/expected.json: no logits for {name}"))
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let got = &ort_logits[i * 1000..(i + 1) * 1000];
            let top = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max_diff(got, &want);
            assert!(
                d <= 1e-5 * top,
                "{f} {name}: ONNX Runtime logits differ from the reference by {d}"
            );
        }
    }
}

#[test]
fn baseline_matches_burn() {
    check(Architecture::Baseline);
}

#[test]
fn baseline_relu_bn_matches_burn() {
    check(Architecture::BaselineReluBn);
}

#[test]
fn mobilenetv2_matches_burn_and_the_reference() {
    check(Architecture::MobileNetV2);
}

#[test]
fn efficientnet_lite0_matches_burn_and_the_reference() {
    check(Architecture::EfficientNetLite0);
}

#[test]
fn inceptionv3_matches_burn() {
    check(Architecture::InceptionV3);
}
