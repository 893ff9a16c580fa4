//! Throughput benchmarks: training steps and inference of each architecture on synthetic
//! batches, medians over repeated timed steps after warm-up.

use crate::dataset::target_tensor;
use crate::error::Result;
use artemis_models::{Architecture, ModelSpec};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub input: usize,
    pub batch: usize,
    /// `train` (whole network: forward + backward + Adam step), `infer` (forward only),
    /// `extract` (frozen stages only, what the feature cache computes once per image) or
    /// `train-from:K` (stages K.. and the head on cached activations; `K = 20`: head only).
    pub mode: String,
    /// Median images per second over the timed steps.
    pub images_per_s: f64,
    pub steps: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median images/s of `steps` calls of `step` (each on `batch` images) after one warm-up call.
fn timed(steps: usize, batch: usize, mut step: impl FnMut()) -> f64 {
    step();
    let rates = (0..steps)
        .map(|_| {
            let t = Instant::now();
            step();
            batch as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(rates)
}

/// Times `steps` training steps and `steps` inference batches (after one warm-up each).
pub fn bench_model(
    arch: Architecture,
    input: usize,
    batch: usize,
    steps: usize,
) -> Result<Vec<BenchRow>> {
    let spec = ModelSpec {
        architecture: arch,
        num_classes: 12,
        input: (input, input),
        width: 1.0,
    };
    let steps = steps.max(1);
    let mut rows = Vec::new();
    // Training.
    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model = spec.init(&device)?;
    let mut optim = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let x = Tensor::<4>::random(
        [batch, 3, input, input],
        Distribution::Uniform(0.0, 255.0),
        &device,
    );
    let y = target_tensor(&(0..batch).map(|i| i % 12).collect::<Vec<_>>(), &device);
    let row = |mode: &str, images_per_s: f64| BenchRow {
        model: arch.name().into(),
        input,
        batch,
        mode: mode.into(),
        images_per_s,
        steps,
    };
    let train_rate = timed(steps, batch, || {
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model.clone(), grads);
        let _ = device.sync();
    });
    rows.push(row("train", train_rate));
    // Inference.
    let plain = Device::flex();
    let model = model.valid();
    let x = Tensor::<4>::random(
        [batch, 3, input, input],
        Distribution::Uniform(0.0, 255.0),
        &plain,
    );
    let infer_rate = timed(steps, batch, || {
        let _ = model.forward(x.clone()).into_data();
    });
    rows.push(row("infer", infer_rate));
    // The transfer-learning fast path: extraction of the frozen stages, then training steps
    // on their cached output.
    if arch.stages() > 1 {
        for from in [14, arch.stages()] {
            let acts = model.forward_stages(x.clone(), 0, from);
            let extract_rate = timed(steps, batch, || {
                let _ = model.forward_stages(x.clone(), 0, from).into_data();
            });
            rows.push(row(&format!("extract:{from}"), extract_rate));
            let mut tm = spec.init(&device)?.freeze_below(from);
            let mut optim = AdamConfig::new().init();
            let acts = Tensor::<4>::from_data(acts.into_data(), &device);
            let rate = timed(steps, batch, || {
                let loss = loss_fn.forward(tm.forward_from(acts.clone(), from), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &tm);
                tm = optim.step(1e-3, tm.clone(), grads);
                let _ = device.sync();
            });
            rows.push(row(&format!("train-from:{from}"), rate));
        }
    }
    Ok(rows)
}
