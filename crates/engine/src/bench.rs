//! Throughput benchmarks: training steps and inference of each architecture on synthetic
//! batches, medians over repeated timed steps after warm-up.

use crate::dataset::target_tensor;
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::run::{Plateau, Run, Schedule, TrainSettings};
use crate::train::{Strategy, TrainConfig, train};
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Scaling};
use artemis_models::{Architecture, ModelSpec};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub input: usize,
    pub batch: usize,
    /// `train` (whole network: forward + backward + Adam step), `infer` (forward only),
    /// `extract` (frozen stages only, what the feature cache computes once per image) or
    /// `train-from:K` (stages K.. and the head on cached activations; `K` = the number of
    /// stages: head only).
    pub mode: String,
    /// Median images per second over the timed steps.
    pub images_per_s: f64,
    pub steps: usize,
}

/// The middle value (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// How many calls a measurement times, after how many untimed ones.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub steps: usize,
    /// Untimed calls first (at least one): the first training steps of a process also fault
    /// in the pages of their buffers, which later steps reuse.
    pub warmup: usize,
}

/// Median images/s of `t.steps` calls of `step` (each on `batch` images) after `t.warmup`.
fn timed(t: Timing, batch: usize, mut step: impl FnMut()) -> f64 {
    (0..t.warmup.max(1)).for_each(|_| step());
    let steps = t.steps.max(1);
    let rates = (0..steps)
        .map(|_| {
            let t = Instant::now();
            step();
            batch as f64 / t.elapsed().as_secs_f64()
        })
        .collect();
    median(rates)
}

/// Times `steps` training steps and (unless `train_only`) `steps` inference batches, frozen
/// stage extractions and cached-map training steps, each after `timing.warmup` calls, on `on`.
pub fn bench_model(
    arch: Architecture,
    input: usize,
    batch: usize,
    timing: Timing,
    train_only: bool,
    on: ComputeDevice,
) -> Result<Vec<BenchRow>> {
    let spec = ModelSpec::new(arch, 12, (input, input));
    let steps = timing.steps.max(1);
    let mut rows = Vec::new();
    // Training.
    let plain = on.open()?;
    let device = plain.clone().autodiff();
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
    let train_rate = timed(timing, batch, || {
        let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model.clone(), grads);
        let _ = device.sync();
    });
    rows.push(row("train", train_rate));
    if train_only {
        return Ok(rows);
    }
    // Inference.
    let model = model.valid();
    let x = Tensor::<4>::random(
        [batch, 3, input, input],
        Distribution::Uniform(0.0, 255.0),
        &plain,
    );
    let infer_rate = timed(timing, batch, || {
        let _ = model.forward(x.clone()).into_data();
    });
    rows.push(row("infer", infer_rate));
    // The transfer-learning fast path: extraction of the frozen stages, then training steps
    // on their cached output.
    if let Some(top) = arch.top_stage() {
        for from in [top, arch.stages()] {
            let acts = model.forward_stages(x.clone(), 0, from);
            let extract_rate = timed(timing, batch, || {
                let _ = model.forward_stages(x.clone(), 0, from).into_data();
            });
            rows.push(row(&format!("extract:{from}"), extract_rate));
            let mut tm = spec.init(&device)?.freeze_below(from);
            let mut optim = AdamConfig::new().init();
            let acts = Tensor::<4>::from_data(acts.into_data(), &device);
            let rate = timed(timing, batch, || {
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

/// One point of a time-to-accuracy curve.
#[derive(Debug, Clone, Serialize)]
pub struct TtaRow {
    /// `None`: the setup before the first epoch (decoding and feature extraction).
    pub epoch: Option<usize>,
    /// Seconds since the start of the training call.
    pub elapsed_s: f64,
    pub val_accuracy: f64,
}

/// Trains MobileNetV2 from the ImageNet checkpoint at `weights` on `manifest` (12 classes,
/// 160 px, batch 32, head lr 1e-3, backbone lr 3e-4, seed 42) with `strategy` for `epochs`,
/// in a fresh run folder and feature cache under `work_dir` (so extraction is timed), and
/// returns elapsed time against validation accuracy.
pub fn time_to_accuracy(
    manifest: &Path,
    weights: &Path,
    strategy: Strategy,
    epochs: usize,
    work_dir: &Path,
) -> Result<Vec<TtaRow>> {
    let tag = strategy.to_string().replace(':', "-");
    let run_dir = work_dir.join(format!("run-{tag}"));
    let cfg = TrainConfig {
        run_dir: run_dir.clone(),
        manifest: manifest.to_path_buf(),
        data_root: None,
        architecture: Architecture::MobileNetV2,
        task: Task::TypePlane,
        input: None,
        resize: ResizeMode::Squash,
        framing: Default::default(),
        scaling: Some(Scaling::Imagenet),
        augment: Augment::default(),
        settings: TrainSettings {
            epochs,
            batch_size: 32,
            learning_rate: 1e-3,
            backbone_lr: Some(3e-4),
            schedule: Schedule::Plateau,
            warmup_epochs: 0.0,
            plateau: Plateau::default(),
            seed: 42,
            ..TrainSettings::default()
        },
        resume: false,
        stop_after: None,
        pretrained: true,
        weights: Some(weights.to_path_buf()),
        strategy,
        width: 1.0,
        aux_logits: false,
        feature_cache: true,
        cache_dir: work_dir.join(format!("cache-{tag}")),
        cache_copies: 1,
        max_pixels: artemis_data::image_io::DEFAULT_MAX_PIXELS,
        engine: Default::default(),
        devices: Default::default(),
    };
    let summary = train(&cfg)?;
    let history = Run::open(&run_dir)?.state()?.history;
    let epochs_s: f64 = history.iter().map(|m| m.seconds).sum();
    let mut elapsed = summary.seconds - epochs_s;
    let mut rows = vec![TtaRow {
        epoch: None,
        elapsed_s: elapsed,
        val_accuracy: f64::NAN,
    }];
    for m in &history {
        elapsed += m.seconds;
        rows.push(TtaRow {
            epoch: Some(m.epoch),
            elapsed_s: elapsed,
            val_accuracy: m.val_accuracy,
        });
    }
    Ok(rows)
}
