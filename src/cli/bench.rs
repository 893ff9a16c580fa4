//! `artemis bench`: training and inference throughput, and time to an accuracy.

use super::common::bounded;
use anyhow::{Context, Result};
use artemis_engine::bench::{Timing, bench_model, time_to_accuracy};
use artemis_engine::device::ComputeDevice;
use artemis_engine::train::Strategy;
use artemis_models::Architecture;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed steps per measurement (median reported).
    #[arg(long, default_value_t = 5, value_parser = bounded::steps)]
    pub steps: usize,
    /// Untimed steps before each measurement (the first training steps of a process also
    /// fault in their buffers' pages).
    #[arg(long, default_value_t = 1, value_parser = bounded::steps)]
    pub warmup: usize,
    #[arg(long, default_value_t = 32, value_parser = bounded::batch)]
    pub batch_size: usize,
    /// Models to measure (repeat or comma-separate; default: the two baselines, with
    /// --inference every architecture).
    #[arg(long = "model", value_delimiter = ',')]
    pub models: Vec<Architecture>,
    /// Input sides (repeat or comma-separate), each measured for every model (default: 150;
    /// with --inference, each model's bench size: 224, 299 for InceptionV3, 150 for the
    /// baselines).
    #[arg(long = "input-size", value_delimiter = ',')]
    pub input_sizes: Vec<usize>,
    /// Time-to-accuracy of MobileNetV2 transfer learning on this split manifest instead:
    /// trains each --strategy from ImageNet weights with a cold feature cache in a temporary
    /// folder and prints elapsed time against validation accuracy, epoch by epoch.
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Inference instead: burn against ONNX Runtime per model at batch 1 and 32, then
    /// end-to-end folder prediction on --data with each engine.
    #[arg(long, conflicts_with = "manifest")]
    pub inference: bool,
    /// With --inference: the folder predicted end to end (e.g. ../shared/data/artemis-planes).
    #[arg(long, requires = "inference")]
    pub data: Option<PathBuf>,
    /// With --inference: files burn predicts end to end (it is slow; ONNX Runtime does all).
    #[arg(long, default_value_t = 256)]
    pub burn_files: usize,
    /// With --inference: ONNX Runtime threads (default: every core).
    #[arg(long, value_parser = bounded::threads)]
    pub threads: Option<usize>,
    /// With --inference: keep the benchmark's run folders (config, checkpoint, ONNX export)
    /// here, e.g. for bench/peers.
    #[arg(long)]
    pub keep: Option<PathBuf>,
    /// Strategies for --manifest (comma-separated).
    #[arg(long = "strategy", value_delimiter = ',', default_values = ["head", "from:14"])]
    pub strategies: Vec<Strategy>,
    /// Epochs per strategy for --manifest.
    #[arg(long, default_value_t = 5)]
    pub epochs: usize,
    /// Whole-network training steps only (no inference, extraction or cached-map rows).
    #[arg(long, conflicts_with_all = ["manifest", "inference"])]
    pub train_only: bool,
    /// The golden and parity check of --device instead: the ImageNet MobileNetV2 on the four
    /// pictures of FIXTURES/imagenet-mobilenetv2 (../shared/fixtures), by burn on the CPU, by
    /// burn on the device and (for cuda) by ONNX Runtime's CUDA provider, against the
    /// reference logits and the CPU's. Exit 1 when an engine misses the golden bound (100x the
    /// test suite's, 1e-3 of the largest logit) or the top 5.
    #[arg(long, value_name = "FIXTURES", conflicts_with_all = ["manifest", "inference"])]
    pub check_device: Option<PathBuf>,
    /// Where the whole-network and inference rows run: cpu, vulkan[:N], cuda[:N] or metal
    /// (GPU backends are cargo features; see the README).
    #[arg(long, default_value = "cpu")]
    pub device: ComputeDevice,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Elapsed time against validation accuracy for transfer-learning strategies, each from a
/// cold feature cache in a temporary folder.
fn bench_time_to_accuracy(a: &BenchArgs, manifest: &std::path::Path) -> Result<ExitCode> {
    let tmp = tempfile::tempdir().context("creating a temporary folder")?;
    let weights = artemis_models::mobilenetv2::weights::CHECKPOINT.default_path();
    println!(
        "threads: {}; MobileNetV2 from ImageNet, 160 px, batch 32, lr 1e-3 (backbone 3e-4), cold cache",
        rayon::current_num_threads()
    );
    println!(
        "{:<10} {:>6} {:>12} {:>10}",
        "strategy", "epoch", "elapsed s", "val acc"
    );
    for &strategy in &a.strategies {
        let rows = time_to_accuracy(manifest, &weights, strategy, a.epochs, tmp.path())
            .with_context(|| format!("bench training {strategy}"))?;
        for r in rows {
            match r.epoch {
                None => println!(
                    "{strategy:<10} {:>6} {:>12.1} {:>10}",
                    "setup", r.elapsed_s, "-"
                ),
                Some(e) => println!(
                    "{strategy:<10} {e:>6} {:>12.1} {:>10.4}",
                    r.elapsed_s, r.val_accuracy
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The lines above the `--inference` table: the engines, threads and device.
fn inference_header(threads: usize, device: ComputeDevice) {
    match artemis_engine::onnx::runtime() {
        Ok(rt) => println!(
            "ONNX Runtime {} ({}), {threads} threads; burn flex, {} rayon threads; --device {device}",
            artemis_engine::onnx::ORT_VERSION,
            rt.library.display(),
            rayon::current_num_threads()
        ),
        Err(e) => println!("ONNX Runtime unavailable ({e}); burn only; --device {device}"),
    }
    println!("inference: median images/s, input tensor ready to logits read back");
    println!(
        "{:<18} {:>6} {:>6} {:>12} {:>12} {:>9} {:>12} {:>10}",
        "model", "input", "batch", "burn", "onnxruntime", "ort/burn", "ort int8", "int8/fp32"
    );
}

/// One line of the `--inference` table.
fn print_infer_row(r: &artemis_engine::bench_infer::InferRow) {
    let show = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.2}x", a / b),
        _ => "-".into(),
    };
    println!(
        "{:<18} {:>6} {:>6} {:>12.1} {:>12} {:>9} {:>12} {:>10}",
        r.model,
        r.input,
        r.batch,
        r.burn,
        show(r.onnxruntime),
        ratio(r.onnxruntime, Some(r.burn)),
        show(r.onnxruntime_int8),
        r.int8_speedup.map_or("-".into(), |x| format!("{x:.2}x"))
    );
}

fn bench_inference(a: &BenchArgs) -> Result<ExitCode> {
    use artemis_engine::bench_infer::{bench_folder, bench_inference, bench_side};
    use artemis_engine::onnx::{Backend, EngineOptions, runtime};
    let threads = EngineOptions {
        backend: Backend::Auto,
        threads: a.threads.unwrap_or(0),
        ..EngineOptions::default()
    }
    .threads();
    let tmp = tempfile::tempdir().context("creating a temporary folder")?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let models = if a.models.is_empty() {
        Architecture::ALL.to_vec()
    } else {
        a.models.clone()
    };
    inference_header(threads, a.device);
    let mut runs = Vec::new();
    let mut rows = Vec::new();
    for &arch in &models {
        let sides = if a.input_sizes.is_empty() {
            vec![bench_side(arch)]
        } else {
            a.input_sizes.clone()
        };
        for side in sides {
            let dir = root.join(format!("{}-{side}", arch.name()));
            for r in bench_inference(
                arch,
                side,
                &[1, a.batch_size],
                a.steps,
                threads,
                &dir,
                a.device,
            )
            .with_context(|| format!("benchmarking {} at {side} px", arch.name()))?
            {
                print_infer_row(&r);
                rows.push(r);
            }
            runs.push(dir);
        }
    }
    let mut folder_rows = Vec::new();
    if let Some(data) = &a.data {
        let (files, problems) = artemis_data::scan::list_inputs(std::slice::from_ref(data));
        if files.is_empty() {
            anyhow::bail!(
                "{}: no image files found ({} problems)",
                data.display(),
                problems.len()
            );
        }
        println!(
            "\nend-to-end folder prediction (read, decode, resize, infer, one JSON row per file) on {} ({} files)",
            data.display(),
            files.len()
        );
        println!(
            "{:<18} {:>6} {:>12} {:>7} {:>9} {:>10}",
            "model", "input", "engine", "files", "seconds", "images/s"
        );
        for dir in &runs {
            let rate = artemis_engine::bench_infer::bench_decode(dir, &files)?;
            println!(
                "{:<18} {:>6} {:>12} {:>7} {:>9.1} {:>10.1}",
                "(read+decode+resize only)",
                "",
                "-",
                files.len(),
                files.len() as f64 / rate,
                rate
            );
            for (backend, n) in [
                (Backend::Onnx, files.len()),
                (Backend::Burn, a.burn_files.min(files.len())),
            ] {
                if backend == Backend::Onnx && runtime().is_err() || n == 0 {
                    continue;
                }
                let r = bench_folder(dir, &files[..n], backend, threads)
                    .with_context(|| format!("predicting with {}", dir.display()))?;
                println!(
                    "{:<18} {:>6} {:>12} {:>7} {:>9.1} {:>10.1}",
                    r.model, r.input, r.engine, r.files, r.seconds, r.images_per_s
                );
                folder_rows.push(r);
            }
        }
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"inference": rows, "folder": folder_rows})
            )?
        );
    }
    if a.keep.is_some() {
        eprintln!(
            "kept the benchmark runs (config, checkpoint, export/) under {}",
            root.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `--check-device`: one line per engine and picture, and the verdict.
fn bench_check_device(a: &BenchArgs, fixtures: &std::path::Path) -> Result<ExitCode> {
    let weights = artemis_models::mobilenetv2::weights::CHECKPOINT.default_path();
    let rows = artemis_engine::device_check::check_device(a.device, fixtures, &weights)
        .with_context(|| format!("checking --device {}", a.device))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<24} {:<8} {:>12} {:>12} {:>6}",
            "engine", "image", "vs golden", "vs cpu", "top-5"
        );
        for r in &rows {
            println!(
                "{:<24} {:<8} {:>12.2e} {:>12.2e} {:>6}",
                r.engine,
                r.image,
                r.golden,
                r.parity,
                if r.top5 { "same" } else { "DIFFER" }
            );
        }
    }
    let failed = rows.iter().filter(|r| !r.passed()).count();
    println!(
        "{} of {} rows within the golden bound",
        rows.len() - failed,
        rows.len()
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::common::EXIT_FAILURE)
    })
}

pub(super) fn run(a: BenchArgs) -> Result<ExitCode> {
    if let Some(f) = &a.check_device {
        return bench_check_device(&a, f);
    }
    if let Some(m) = &a.manifest {
        return bench_time_to_accuracy(&a, m);
    }
    if a.inference {
        return bench_inference(&a);
    }
    let models = if a.models.is_empty() {
        vec![Architecture::Baseline, Architecture::BaselineReluBn]
    } else {
        a.models.clone()
    };
    let sides = if a.input_sizes.is_empty() {
        vec![150]
    } else {
        a.input_sizes.clone()
    };
    let mut rows = Vec::new();
    for &arch in &models {
        for &side in &sides {
            eprintln!("measuring {} at {side} px ...", arch.name());
            rows.extend(bench_model(
                arch,
                side,
                a.batch_size,
                Timing {
                    steps: a.steps,
                    warmup: a.warmup,
                },
                a.train_only,
                a.device,
            )?);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("device: {}", a.device);
    println!(
        "threads: {} (RAYON_NUM_THREADS), median of {} steps after {} warm-up",
        rayon::current_num_threads(),
        a.steps,
        a.warmup
    );
    println!(
        "{:<18} {:>6} {:>6} {:>14} {:>12} {:>16}",
        "model", "input", "batch", "mode", "images/s", "x whole-net train"
    );
    for r in &rows {
        // Ratio against the same model's whole-network training, measured in the same run.
        let base = rows
            .iter()
            .find(|b| b.model == r.model && b.input == r.input && b.mode == "train")
            .map_or(f64::NAN, |b| r.images_per_s / b.images_per_s);
        println!(
            "{:<18} {:>6} {:>6} {:>14} {:>12.1} {:>16.2}",
            r.model, r.input, r.batch, r.mode, r.images_per_s, base
        );
    }
    Ok(ExitCode::SUCCESS)
}
