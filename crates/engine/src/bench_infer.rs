//! Inference benchmarks: burn against ONNX Runtime on the same network and batches, and
//! end-to-end folder prediction (files to JSON rows) with each engine.
//!
//! The networks are freshly initialised (speed does not depend on the weights' values) at a
//! fixed input size, written into a temporary run folder and exported there, so the figures
//! need no trained run.

use crate::bench::median;
use crate::device::ComputeDevice;
use crate::error::{EngineError, Result};
use crate::infer::Classifier;
use crate::onnx::{Backend, EngineOptions, OnnxModel};
use crate::predict::{PredictConfig, predict};
use crate::run::{
    CONFIG, Plateau, Run, RunConfig, Schedule, TrainSettings, native_scaling, write_json,
};
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Preprocess};
use artemis_models::{Architecture, ModelSpec};
use burn::prelude::*;
use burn::tensor::Distribution;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The input side the inference benchmark uses by default: the Python peers' (224 for the
/// ImageNet backbones, 299 for InceptionV3), the reference's 150 for the baselines.
pub fn bench_side(arch: Architecture) -> usize {
    match arch {
        Architecture::MobileNetV2 | Architecture::EfficientNetLite0 => 224,
        Architecture::InceptionV3 => 299,
        Architecture::Baseline | Architecture::BaselineReluBn => 150,
    }
}

/// One model at one batch size.
#[derive(Debug, Clone, Serialize)]
pub struct InferRow {
    pub model: String,
    pub input: usize,
    pub batch: usize,
    /// Median images/s of the network's forward pass (input tensor ready, logits read back).
    pub burn: f64,
    /// The same for ONNX Runtime on the exported graph (`None`: runtime unavailable).
    pub onnxruntime: Option<f64>,
    /// The same for the int8 graph (`artemis export --quantize int8`; ranges calibrated on
    /// random inputs, as the weights are random too).
    pub onnxruntime_int8: Option<f64>,
    /// int8 over float images/s: the median over [`ROUNDS`] alternating rounds of each
    /// round's ratio (a change of load on a shared machine hits both graphs of a round).
    pub int8_speedup: Option<f64>,
    pub threads: usize,
}

/// Median images/s of repeated calls of `step` (each on `batch` images) after one warm-up:
/// at least `min_steps` timed calls, more while under `budget` in total (at most 50).
fn rate(
    batch: usize,
    min_steps: usize,
    budget: Duration,
    mut step: impl FnMut() -> Result<()>,
) -> Result<f64> {
    step()?;
    let start = Instant::now();
    let mut rates = Vec::new();
    while rates.len() < min_steps.max(1) || (start.elapsed() < budget && rates.len() < 50) {
        let t = Instant::now();
        step()?;
        rates.push(batch as f64 / t.elapsed().as_secs_f64());
    }
    Ok(median(rates))
}

/// Alternating rounds of ONNX Runtime's float and int8 graphs per batch size.
pub const ROUNDS: usize = 5;

/// Images/s of the float graph, of the int8 graph, and the median of the rounds' int8/float
/// ratios: [`ROUNDS`] rounds, float then int8 in each, `budget` split over them.
fn float_and_int8<M>(
    float: &M,
    int8: &M,
    batch: usize,
    steps: usize,
    budget: Duration,
    mut call: impl FnMut(&M) -> Result<()>,
) -> Result<(f64, f64, f64)> {
    let per_round = budget / (2 * ROUNDS) as u32;
    let (mut f, mut q) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        f.push(rate(batch, steps, per_round, || call(float))?);
        q.push(rate(batch, steps, per_round, || call(int8))?);
    }
    let ratios = f.iter().zip(&q).map(|(f, q)| q / f).collect();
    Ok((median(f), median(q), median(ratios)))
}

fn spec_for(arch: Architecture, side: usize) -> ModelSpec {
    ModelSpec::new(arch, Task::TypePlane.num_classes(), (side, side))
}

/// Writes a run folder (config and best checkpoint of a fresh `arch` network at `side` px)
/// and exports it; what the benchmark and the Python peers load.
pub fn bench_run(arch: Architecture, side: usize, dir: &Path) -> Result<Run> {
    std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    let device = Device::flex();
    device.seed(7);
    let spec = spec_for(arch, side);
    let network = spec.init(&device)?;
    let config = RunConfig {
        artemis_version: env!("CARGO_PKG_VERSION").into(),
        model: spec,
        task: Task::TypePlane,
        classes: Task::TypePlane.classes(),
        preprocess: Preprocess {
            width: side as u32,
            height: side as u32,
            resize: ResizeMode::Squash,
            scaling: native_scaling(arch),
            framing: Default::default(),
        },
        augment: Augment::default(),
        train: TrainSettings {
            epochs: 0,
            batch_size: 32,
            learning_rate: 1e-3,
            backbone_lr: None,
            schedule: Schedule::Plateau,
            warmup_epochs: 0.0,
            plateau: Plateau::default(),
            seed: 7,
            ..TrainSettings::default()
        },
        manifest: PathBuf::from("(benchmark: no manifest)"),
        manifest_hash: String::new(),
        data_root: PathBuf::new(),
        pretrained: None,
        trainable_from: 0,
        feature_cache: false,
        cache_copies: 1,
        trained_on: Vec::new(),
    };
    write_json(&dir.join(CONFIG), &config)?;
    crate::run::save_module(network, &dir.join(crate::run::BEST))?;
    let run = Run::open(dir)?;
    if crate::onnx::runtime().is_ok() {
        crate::onnx::export_run(&run)?;
    }
    Ok(run)
}

/// The benchmark run's int8 graph, its ranges calibrated on 64 seeded random inputs in
/// `[-1, 1]`, in a session on `on`.
fn int8_model(run: &Run, side: usize, threads: usize, on: ComputeDevice) -> Result<OnnxModel> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let batches: Vec<Vec<f32>> = (0..4)
        .map(|_| {
            (0..16 * 3 * side * side)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect()
        })
        .collect();
    let q = crate::quantize::quantize_export(run, &batches, &Default::default())?;
    OnnxModel::from_bytes_on(&q.graph, threads, &q.path.display().to_string(), on)
}

/// burn and ONNX Runtime images/s of `arch` at `side` px for each batch size, on `on`: burn
/// on its device (the CPU when burn cannot open a `cuda` one), ONNX Runtime on the CPU or,
/// for `cuda[:N]`, its CUDA provider.
pub fn bench_inference(
    arch: Architecture,
    side: usize,
    batches: &[usize],
    min_steps: usize,
    threads: usize,
    dir: &Path,
    on: ComputeDevice,
) -> Result<Vec<InferRow>> {
    let run = bench_run(arch, side, dir)?;
    let (device, _) = on.open_for_burn(true)?;
    let network = run.load_best(&device)?;
    let ort_on = on.onnx_device();
    // ONNX Runtime's float and int8 graphs, both or neither (without the library).
    let graphs = match crate::onnx::runtime() {
        Ok(_) => {
            let path = crate::onnx::export_paths(&run).0;
            let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
            let source = path.display().to_string();
            let float = OnnxModel::from_bytes_on(&bytes, threads, &source, ort_on)?;
            Some((float, int8_model(&run, side, threads, ort_on)?))
        }
        Err(_) => None,
    };
    let mut rows = Vec::new();
    for &batch in batches {
        let x = Tensor::<4>::random(
            [batch, 3, side, side],
            Distribution::Uniform(-1.0, 1.0),
            &device,
        );
        let data = crate::dataset::to_vec_f32(x.clone())?;
        let budget = Duration::from_secs(if batch == 1 { 3 } else { 10 });
        let steps = if batch == 1 { 10 } else { min_steps };
        // ONNX Runtime first, burn second. Timed after burn (its rayon pool and allocations
        // still around), MobileNetV2's batch 32 ran at a median 0.92x Python's onnxruntime over
        // five alternating rounds here; timed first, at 1.00x.
        let call = |m: &OnnxModel| m.run(&data, [batch, 3, side, side], "logits").map(|_| ());
        let (onnxruntime, onnxruntime_int8, int8_speedup) = match &graphs {
            Some((f, q)) => {
                let (f, q, r) = float_and_int8(f, q, batch, steps, 2 * budget, call)?;
                (Some(f), Some(q), Some(r))
            }
            None => (None, None, None),
        };
        let burn = rate(batch, steps, budget, || {
            crate::dataset::to_vec_f32(network.forward(x.clone())).map(|_| ())
        })?;
        rows.push(InferRow {
            model: arch.name().into(),
            input: side,
            batch,
            burn,
            onnxruntime,
            onnxruntime_int8,
            int8_speedup,
            threads,
        });
    }
    Ok(rows)
}

/// End-to-end folder prediction with one engine.
#[derive(Debug, Clone, Serialize)]
pub struct FolderRow {
    pub model: String,
    pub input: usize,
    /// `burn` or `onnxruntime`.
    pub engine: String,
    pub files: usize,
    pub seconds: f64,
    pub images_per_s: f64,
}

/// Times `artemis predict` on `files` (decode, resize, inference, one JSON row per file
/// serialised) for the run in `dir` (made by [`bench_run`]) with `backend`.
pub fn bench_folder(
    run_dir: &Path,
    files: &[PathBuf],
    backend: Backend,
    threads: usize,
) -> Result<FolderRow> {
    let run = Run::open(run_dir)?;
    let model = run.config.model.architecture.name().to_string();
    let input = run.config.preprocess.width as usize;
    let clf = Classifier::open_with(
        run,
        EngineOptions {
            backend,
            threads,
            ..EngineOptions::default()
        },
    )?;
    let engine = match clf.runtime {
        crate::infer::Engine::Onnx(_) => "onnxruntime",
        crate::infer::Engine::Burn => "burn",
    };
    let cfg = PredictConfig::default();
    let t = Instant::now();
    let mut sink = std::io::sink();
    let mut n = 0usize;
    predict(&clf, files, &cfg, |row| {
        n += 1;
        let _ = serde_json::to_writer(&mut sink, row);
    })?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(FolderRow {
        model,
        input,
        engine: engine.into(),
        files: n,
        seconds,
        images_per_s: n as f64 / seconds,
    })
}

/// Images/s of reading, decoding and resizing `files` to the run's input on every core, with
/// no inference: the ceiling the input pipeline puts on end-to-end prediction.
pub fn bench_decode(run_dir: &Path, files: &[PathBuf]) -> Result<f64> {
    use rayon::prelude::*;
    let run = Run::open(run_dir)?;
    let pre = run.config.preprocess;
    let t = Instant::now();
    let ok = files
        .par_iter()
        .filter(|p| {
            crate::dataset::read_resized(p, &pre, artemis_data::image_io::DEFAULT_MAX_PIXELS)
                .is_ok()
        })
        .count();
    Ok(ok as f64 / t.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The two graphs alternate round by round (each round: a warm-up call, then timed calls).
    #[test]
    fn float_and_int8_alternate_in_rounds() {
        let mut calls = Vec::new();
        let budget = Duration::from_millis(1);
        let (f, q, r) = float_and_int8(&'f', &'q', 4, 3, budget, |m| {
            calls.push(*m);
            Ok(())
        })
        .unwrap();
        assert!(f > 0.0 && q > 0.0 && r > 0.0);
        let mut blocks: Vec<(char, usize)> = Vec::new();
        for c in calls {
            match blocks.last_mut() {
                Some((b, n)) if *b == c => *n += 1,
                _ => blocks.push((c, 1)),
            }
        }
        assert_eq!(blocks.len(), 2 * ROUNDS, "{blocks:?}");
        for (i, (c, n)) in blocks.iter().enumerate() {
            assert_eq!(*c, if i % 2 == 0 { 'f' } else { 'q' });
            assert!(*n >= 4, "warm-up and at least 3 timed calls: {blocks:?}");
        }
    }
}
