//! The golden and parity check of a device (`artemis bench --check-device FIXTURES`): the
//! ImageNet MobileNetV2 on the fixture's four pictures, computed by burn on the device and, for
//! `cuda[:N]`, by ONNX Runtime's CUDA execution provider, against the fixture's reference
//! logits (golden) and against burn on the CPU (parity). What `scripts/gpu-check` runs on a
//! GPU machine, where the test suite (built for the CPU) does not reach.

use crate::device::ComputeDevice;
use crate::error::{EngineError, Result};
use crate::onnx::OnnxModel;
use artemis_data::image_io::{DEFAULT_MAX_PIXELS, ResizeMode, read_rgb};
use artemis_data::transform::{Preprocess, Scaling};
use artemis_models::{Architecture, ModelSpec, Network, OnnxGraph};
use burn::prelude::*;
use serde::Serialize;
use std::path::Path;

/// The golden bound of the test suite (`crates/models/tests/golden.rs`): at most this much of
/// the largest reference logit.
pub const GOLDEN_TOLERANCE: f32 = 1e-5;

/// One engine on one picture.
#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub engine: String,
    pub image: String,
    /// Largest |logit - reference logit|, over the largest |reference logit|.
    pub golden: f32,
    /// Largest |logit - burn-on-CPU logit|, over the same scale.
    pub parity: f32,
    /// Whether the top 5 classes are the reference's, in order.
    pub top5: bool,
}

impl CheckRow {
    /// Golden within 100x the test suite's bound (GPU kernels sum in other orders) and the
    /// same top 5.
    pub fn passed(&self) -> bool {
        self.golden <= 100.0 * GOLDEN_TOLERANCE && self.top5
    }
}

/// The fixture's pictures as a `[4, 3, 224, 224]` batch, their names and reference logits.
struct Fixture {
    batch: Vec<f32>,
    names: Vec<String>,
    logits: Vec<Vec<f32>>,
}

fn fixture(dir: &Path) -> Result<Fixture> {
    let path = dir.join("expected.json");
    let expected: serde_json::Value = crate::run::read_json(&path)?;
    let bad = |why: &str| EngineError::Json {
        path: path.clone(),
        reason: why.into(),
    };
    let images = expected["images"]
        .as_object()
        .ok_or_else(|| bad("no \"images\" object"))?;
    let pre = Preprocess {
        width: 224,
        height: 224,
        resize: ResizeMode::Squash,
        scaling: Scaling::Imagenet,
        framing: Default::default(),
    };
    let (mut batch, mut names, mut logits) = (Vec::new(), Vec::new(), Vec::new());
    for (name, v) in images {
        let file = dir.join(
            v["file"]
                .as_str()
                .ok_or_else(|| bad("an image without \"file\""))?,
        );
        let img = read_rgb(&file, DEFAULT_MAX_PIXELS)?;
        let mut chw = vec![0f32; pre.tensor_len()];
        pre.write_chw(&img, &mut chw);
        batch.extend(chw);
        names.push(name.clone());
        let want = (v["logits"]
            .as_array()
            .ok_or_else(|| bad("no \"logits\""))?
            .iter())
        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
        .collect();
        logits.push(want);
    }
    Ok(Fixture {
        batch,
        names,
        logits,
    })
}

/// The network the check runs: MobileNetV2 at 224 px with 1000 classes.
fn spec() -> ModelSpec {
    ModelSpec::new(Architecture::MobileNetV2, 1000, (224, 224))
}

/// `[b, 1000]` logits of `model` (inference mode) for `batch`, on `device` (the model is
/// moved there).
fn burn_logits(model: &Network, batch: &[f32], device: &Device) -> Result<Vec<f32>> {
    let model = model.clone().to_device(device);
    let n = batch.len() / (3 * 224 * 224);
    let x = Tensor::<4>::from_data(TensorData::new(batch.to_vec(), [n, 3, 224, 224]), device);
    crate::dataset::to_vec_f32(model.forward(x))
}

/// The same through ONNX Runtime on `on` (the CPU, or CUDA's execution provider), from the
/// CPU copy of the network.
fn onnx_logits(model: &Network, batch: &[f32], on: ComputeDevice) -> Result<Vec<f32>> {
    let bytes = model.to_onnx(&spec(), OnnxGraph::Logits, &[])?;
    let m = OnnxModel::from_bytes_on(&bytes, 0, "MobileNetV2 (ImageNet, in memory)", on)?;
    let n = batch.len() / (3 * 224 * 224);
    Ok(m.run(batch, [n, 3, 224, 224], "logits")?.1)
}

/// Rows for one engine's logits against the references and the CPU's.
fn rows(
    engine: &str,
    got: &[f32],
    cpu: &[f32],
    names: &[String],
    want: &[Vec<f32>],
) -> Vec<CheckRow> {
    let worst = |a: &[f32], b: &[f32]| {
        (a.iter().zip(b))
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let top5 = |v: &[f32]| {
        let mut order: Vec<usize> = (0..v.len()).collect();
        order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        order.truncate(5);
        order
    };
    (names.iter().zip(want).enumerate())
        .map(|(i, (name, want))| {
            let (g, c) = (&got[i * 1000..][..1000], &cpu[i * 1000..][..1000]);
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
            CheckRow {
                engine: engine.into(),
                image: name.clone(),
                golden: worst(g, want) / scale,
                parity: worst(g, c) / scale,
                top5: top5(g) == top5(want),
            }
        })
        .collect()
}

/// The check of `on` (see the module docs): burn on the CPU, burn on `on`, and for `cuda[:N]`
/// ONNX Runtime's CUDA provider; `fixtures` is the folder holding `imagenet-mobilenetv2/`.
pub fn check_device(on: ComputeDevice, fixtures: &Path, weights: &Path) -> Result<Vec<CheckRow>> {
    let Fixture {
        batch,
        names,
        logits: want,
    } = fixture(&fixtures.join("imagenet-mobilenetv2"))?;
    // The checkpoint is read once, on the CPU; the device gets a copy.
    let model = spec().init_pretrained(weights, &Device::flex())?.valid();
    let cpu = burn_logits(&model, &batch, &Device::flex())?;
    let mut out = rows("burn cpu", &cpu, &cpu, &names, &want);
    if on.is_gpu() {
        match on.open() {
            Ok(device) => {
                let got = burn_logits(&model, &batch, &device)?;
                out.extend(rows(&format!("burn {on}"), &got, &cpu, &names, &want));
            }
            // ONNX Runtime may still reach a CUDA GPU without burn's CUDA backend.
            Err(e) if matches!(on, ComputeDevice::Cuda(_)) => eprintln!("{e}"),
            Err(e) => return Err(e),
        }
    }
    if matches!(on, ComputeDevice::Cuda(_)) {
        let got = onnx_logits(&model, &batch, on)?;
        out.extend(rows(
            &format!("onnxruntime {on}"),
            &got,
            &cpu,
            &names,
            &want,
        ));
    }
    Ok(out)
}
