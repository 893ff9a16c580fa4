//! `artemis train`: the training loop, learning-rate schedule, checkpoints and resume.
//!
//! Determinism: the model is initialised after seeding the device with the run's seed; epoch
//! `e` shuffles with a generator seeded from `(seed, e)`, each image's augmentation draws from a
//! generator seeded from `(seed, e, position)`, and the device is re-seeded at the start of
//! every epoch (dropout). A run resumed after a kill therefore replays exactly the epochs it
//! lost.

use crate::dataset::{Item, Loaded, describe_failures, load, to_vec_f32};
use crate::device::{ComputeDevice, Devices};
use crate::error::{EngineError, Result};
use crate::features::{FeatureKey, cached, extract};
use crate::run::{
    BEST, CONFIG, DEFAULT_EPOCHS, METRICS, Pretrained, RunConfig, STATE, Schedule, TrainSettings,
    TrainState, file_hash, load_module, native_scaling, read_json, save_module, write_json,
};
pub use crate::step::argmax_rows;
use crate::step::{EpochContext, Inputs, StepGrads, batch_loss, mix};
use artemis_data::framing::Framing;
use artemis_data::image_io::ResizeMode;
use artemis_data::labels::Task;
use artemis_data::manifest::{Manifest, Split};
use artemis_data::transform::{Augment, Preprocess, Scaling};
use artemis_models::{Architecture, ModelSpec, Network};
use artemis_report::EpochMetrics;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer};
use burn::prelude::*;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What `artemis train` was asked to do.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub run_dir: PathBuf,
    pub manifest: PathBuf,
    /// Where the manifest's relative paths live; defaults to the manifest's `data_root`.
    pub data_root: Option<PathBuf>,
    pub architecture: Architecture,
    pub task: Task,
    /// `(height, width)`; defaults to the architecture's reference size.
    pub input: Option<(usize, usize)>,
    pub resize: ResizeMode,
    /// Cropping and intensity stretching before the resize ([`Framing`]).
    pub framing: Framing,
    /// Pixel scaling; defaults to what the architecture's ImageNet weights expect
    /// ([`native_scaling`]: imagenet, inception, lite; raw 0-255 for the baselines).
    pub scaling: Option<Scaling>,
    pub augment: Augment,
    pub settings: TrainSettings,
    /// Continue the run in `run_dir` from its last checkpoint.
    pub resume: bool,
    /// Stop after this many epochs in this call (the run can be resumed); for tests and
    /// time-boxed sessions.
    pub stop_after: Option<usize>,
    /// Start from the architecture's ImageNet weights.
    pub pretrained: bool,
    /// The ImageNet checkpoint file (default: the artemis cache's copy, which `scripts/setup`
    /// fetches).
    pub weights: Option<PathBuf>,
    /// Which part of the network trains.
    pub strategy: Strategy,
    /// Width multiplier (MobileNetV2).
    pub width: f32,
    /// Train InceptionV3's auxiliary classifier too (loss weight 0.4).
    pub aux_logits: bool,
    /// Train on cached activations of the frozen stages.
    pub feature_cache: bool,
    /// Where cached activations live.
    pub cache_dir: PathBuf,
    /// Augmented copies per training image in the cache (with augmentation on).
    pub cache_copies: usize,
    /// Files with more pixels than this are skipped (checked before decoding).
    pub max_pixels: u64,
    /// What computes the feature cache: ONNX Runtime (the frozen stages exported in memory)
    /// when the runtime loads, unless this says burn. Its `device` must be the first of
    /// [`Self::devices`] ([`Self::validate`] checks).
    pub engine: crate::onnx::EngineOptions,
    /// Where training runs: one replica per device, each step's batch split between them
    /// and their gradients averaged on the first (default: the CPU alone).
    pub devices: Devices,
}

/// Which part of a network trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Every layer.
    Full,
    /// The classifier head only; the backbone is frozen.
    Head,
    /// Stages from this one on (MobileNetV2: the torchvision `features.K` index, 1-18).
    From(usize),
}

impl Strategy {
    /// The first trainable stage of `arch` under this strategy.
    pub fn trainable_from(self, arch: Architecture) -> Result<usize> {
        let stages = arch.stages();
        match self {
            Strategy::Full => Ok(0),
            _ if stages == 1 => Err(EngineError::Config(format!(
                "model {} trains whole (strategy full); head and from:K need a backbone",
                arch.name()
            ))),
            // Everything below the classifier, the global pool included: the cache holds one
            // pooled vector per image.
            Strategy::Head => Ok(stages),
            Strategy::From(k) if (1..stages - 1).contains(&k) => Ok(k),
            Strategy::From(k) => Err(EngineError::Config(format!(
                "model {}: fine-tuning can start at stage 1 to {}, not {k}",
                arch.name(),
                stages - 2
            ))),
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so that width and alignment flags apply (tables).
        match self {
            Strategy::Full => f.pad("full"),
            Strategy::Head => f.pad("head"),
            Strategy::From(k) => f.pad(&format!("from:{k}")),
        }
    }
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "full" => Ok(Strategy::Full),
            "head" => Ok(Strategy::Head),
            o => o
                .strip_prefix("from:")
                .and_then(|k| k.parse().ok())
                .map(Strategy::From)
                .ok_or_else(|| format!("unknown strategy '{o}' (expected full, head or from:K)")),
        }
    }
}

impl TrainConfig {
    /// Checks values that would otherwise fail late.
    pub fn validate(&self) -> Result<()> {
        let s = &self.settings;
        if s.batch_size == 0 {
            return Err(EngineError::Config("batch size must be at least 1".into()));
        }
        if crate::ensemble::is_ensemble(&self.run_dir) {
            return Err(EngineError::Config(format!(
                "{} is an ensemble, not a run: train its members (ensemble.json names them)",
                self.run_dir.display()
            )));
        }
        if !(s.learning_rate > 0.0 && s.learning_rate < 10.0) {
            return Err(EngineError::Config(format!(
                "learning rate {} out of range (0, 10)",
                s.learning_rate
            )));
        }
        if let Some(b) = s.backbone_lr
            && !(0.0..10.0).contains(&b)
        {
            return Err(EngineError::Config(format!(
                "backbone learning rate {b} out of range [0, 10)"
            )));
        }
        if !(0.0..1.0).contains(&s.weight_decay) {
            return Err(EngineError::Config(format!(
                "weight decay {} out of range [0, 1)",
                s.weight_decay
            )));
        }
        if !(0.0..0.5).contains(&s.label_smoothing) {
            return Err(EngineError::Config(format!(
                "label smoothing {} out of range [0, 0.5)",
                s.label_smoothing
            )));
        }
        if !(s.subsample > 0.0 && s.subsample <= 1.0) {
            return Err(EngineError::Config(format!(
                "subsample {} out of range (0, 1]",
                s.subsample
            )));
        }
        if !(s.warmup_epochs >= 0.0 && s.warmup_epochs.is_finite()) {
            return Err(EngineError::Config("warm-up must be >= 0 epochs".into()));
        }
        use crate::limits::{BATCH, CACHE_COPIES, EPOCHS, MAX_PIXELS};
        let mut checks = vec![
            BATCH.check(s.batch_size as u64),
            CACHE_COPIES.check(self.cache_copies as u64),
            MAX_PIXELS.check(self.max_pixels),
        ];
        // 0 epochs asks for the default (TrainSettings::epochs).
        if s.epochs != 0 {
            checks.push(EPOCHS.check(s.epochs as u64));
        }
        for c in checks {
            c.map_err(EngineError::Config)?;
        }
        self.engine.validate()?;
        if self.engine.device != self.devices.main() {
            return Err(EngineError::Config(format!(
                "the engine options name device {} but training runs first on {}: give both \
                 the same device (the feature cache runs on the first training device)",
                self.engine.device,
                self.devices.main()
            )));
        }
        if !self.pretrained && self.weights.is_some() {
            return Err(EngineError::Config(
                "a weights file was given without pretrained weights being asked for".into(),
            ));
        }
        if self.pretrained && self.architecture.checkpoint().is_none() {
            return Err(EngineError::Config(format!(
                "no pretrained weights exist for model {}",
                self.architecture.name()
            )));
        }
        if self.width != 1.0 && self.architecture != Architecture::MobileNetV2 {
            return Err(EngineError::Config(format!(
                "a width multiplier applies to MobileNetV2 only, not {}",
                self.architecture.name()
            )));
        }
        if self.pretrained && self.width != 1.0 {
            return Err(EngineError::Config(format!(
                "the ImageNet checkpoint is MobileNetV2 width 1.0, not {}",
                self.width
            )));
        }
        if !(s.plateau.factor > 0.0 && s.plateau.factor <= 1.0) {
            return Err(EngineError::Config(
                "plateau factor must lie in (0, 1]".into(),
            ));
        }
        self.augment.validate()?;
        Ok(())
    }

    /// The pixel scaling, the default applied; warns when pretrained weights get another.
    fn scaling(&self) -> Scaling {
        let native = native_scaling(self.architecture);
        let scaling = self.scaling.unwrap_or(native);
        if self.pretrained && scaling != native {
            tracing::warn!(
                "{} ImageNet weights expect scaling {native:?}; training with {scaling:?}",
                self.architecture
            );
        }
        scaling
    }
}

/// What a finished (or stopped) training call reports.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub run_dir: PathBuf,
    pub epochs_done: usize,
    pub best_epoch: usize,
    pub best_val_accuracy: f64,
    /// Wall time of this call.
    pub seconds: f64,
    /// Wall time of every committed epoch, over all calls (validation included).
    pub epoch_seconds: f64,
    /// Images trained and validated on (decoded ones; for a run that was already finished,
    /// the usable files of its manifest splits, since nothing is decoded).
    pub train_images: usize,
    pub val_images: usize,
    pub skipped_files: Vec<(PathBuf, String)>,
}

fn ckpt_stem(epoch: usize) -> String {
    format!("ckpt-{epoch:04}")
}

/// Trains (or resumes) a run.
pub fn train(cfg: &TrainConfig) -> Result<TrainSummary> {
    cfg.validate()?;
    let t0 = Instant::now();
    let dir = &cfg.run_dir;
    let fresh = |lr: f64| TrainState {
        lr,
        best_val_accuracy: -1.0,
        best_val_loss: f64::INFINITY,
        ..TrainState::default()
    };
    let (run_cfg, state) = if cfg.resume {
        if !dir.join(CONFIG).exists() {
            return Err(EngineError::Config(format!(
                "{}: no run to resume (no {CONFIG}); start it without --resume",
                dir.display()
            )));
        }
        let run_cfg: RunConfig = read_json(&dir.join(CONFIG))?;
        // A run stopped before its first epoch was committed has no state yet.
        let mut state: TrainState = if dir.join(STATE).exists() {
            read_json(&dir.join(STATE))?
        } else {
            refuse_lost_state(dir)?;
            fresh(run_cfg.train.learning_rate)
        };
        tidy_after_crash(dir, &state)?;
        let hash = file_hash(&run_cfg.manifest)?;
        if hash != run_cfg.manifest_hash {
            return Err(EngineError::Config(format!(
                "{} changed since the run started (hash {} vs {}); cannot resume",
                run_cfg.manifest.display(),
                hash,
                run_cfg.manifest_hash
            )));
        }
        let mut run_cfg = run_cfg;
        // More epochs may be asked for on resume, on other devices; nothing else changes.
        run_cfg.train.epochs = run_cfg.train.epochs.max(cfg.settings.epochs);
        note_devices(&mut run_cfg, &cfg.devices);
        write_json(&dir.join(CONFIG), &run_cfg)?;
        if state.lr == 0.0 {
            state.lr = run_cfg.train.learning_rate;
        }
        (run_cfg, state)
    } else {
        if dir.join(CONFIG).exists() {
            return Err(EngineError::Config(format!(
                "{} already holds a run; pass --resume to continue it or choose another --out",
                dir.display()
            )));
        }
        let run_cfg = new_run_config(cfg)?;
        // Fail on an impossible model, or a device that does not open, before writing
        // anything.
        cfg.devices.open()?;
        run_cfg.model.init(&Device::flex())?;
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        write_json(&dir.join(CONFIG), &run_cfg)?;
        (run_cfg, fresh(cfg.settings.learning_rate))
    };
    run_loop(cfg, run_cfg, state, t0)
}

/// Adds `devices` to the run's record of where it trained, when the last call used others.
fn note_devices(run_cfg: &mut RunConfig, devices: &Devices) {
    let now = devices.to_string();
    if run_cfg.trained_on.is_empty() {
        // A run from before devices were recorded trained on the CPU.
        run_cfg.trained_on.push(ComputeDevice::Cpu.to_string());
    }
    if run_cfg.trained_on.last() != Some(&now) {
        eprintln!(
            "resuming on {now}; earlier epochs ran on {}",
            run_cfg.trained_on.join(" then ")
        );
        run_cfg.trained_on.push(now);
    }
}

/// Without `state.json` a run can only have been killed before its first epoch was committed:
/// it may hold epoch 1's checkpoint pair and best weights, nothing later. Checkpoints of later
/// epochs, or metrics rows (written after the commit), mean the state was lost: resuming would
/// start over and delete them, so it is refused.
fn refuse_lost_state(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    let mut later: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.strip_prefix("ckpt-")
                .and_then(|rest| rest.split('.').next())
                .and_then(|n| n.parse::<usize>().ok())
                .is_some_and(|epoch| epoch >= 2)
        })
        .collect();
    later.sort();
    let metrics = dir.join(METRICS);
    let rows = std::fs::read_to_string(&metrics)
        .map(|t| t.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    if later.is_empty() && rows == 0 {
        return Ok(());
    }
    let evidence = if later.is_empty() {
        format!("{METRICS} records {rows} epoch(s)")
    } else {
        format!("it holds {}", later.join(", "))
    };
    Err(EngineError::Config(format!(
        "{}: {STATE} is missing but the run has committed epochs ({evidence}); refusing to resume, \
         which would start over and delete them. Restore {STATE}, or train into a new folder",
        dir.display()
    )))
}

/// Puts a run folder back in order after a process was killed: temporary files of writes that
/// never finished and checkpoints of epochs that were never committed (or whose removal was
/// cut short) are deleted, and the metrics table is rewritten from the committed state.
fn tidy_after_crash(dir: &Path, state: &TrainState) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| EngineError::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale_temp = artemis_data::fsutil::is_temp_name(&name);
        let orphan_ckpt = name.starts_with("ckpt-")
            && name.ends_with(".bpk")
            && (state.checkpoint.is_empty()
                || !name.starts_with(&format!("{}.", state.checkpoint)));
        if stale_temp || orphan_ckpt {
            tracing::info!("removing {name} left by an interrupted run");
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| EngineError::io(&path, e))?;
        }
    }
    if !state.history.is_empty() {
        write_metrics_csv(&dir.join(METRICS), &state.history)?;
    }
    Ok(())
}

/// Seed of augmentation copy `copy` of the image at `position` in the feature cache.
fn copy_seed(seed: u64, copy: usize, position: usize) -> u64 {
    mix(mix(seed ^ 0xCAC4E, copy as u64), position as u64)
}

/// Computes (or reads from the cache) the activations feeding stage `from` for a set.
#[allow(clippy::too_many_arguments)]
fn cached_inputs(
    cfg: &TrainConfig,
    run_cfg: &RunConfig,
    frozen: &Network,
    set: &Loaded,
    copies: usize,
    augment: Option<&Augment>,
    what: &str,
) -> Result<Inputs> {
    let paths: Vec<PathBuf> = set.items.iter().map(|i| i.path.clone()).collect();
    let inputs = FeatureKey::inputs_of(&paths)?;
    let weights = match &run_cfg.pretrained {
        Some(p) => p.sha256.clone(),
        None => format!("random-init seed {}", run_cfg.train.seed),
    };
    let aug = augment.filter(|a| !a.is_identity());
    // ONNX Runtime computes the activations when it loads (the frozen stages exported as a
    // graph in memory), else burn; the engine is part of the cache key (they agree to ~1e-5).
    let use_ort =
        cfg.engine.backend != crate::onnx::Backend::Burn && crate::onnx::runtime().is_ok();
    if cfg.engine.backend == crate::onnx::Backend::Onnx && !use_ort {
        return Err(EngineError::Config(format!(
            "--engine onnx: {}",
            crate::onnx::runtime().err().unwrap_or_default()
        )));
    }
    let engine = if use_ort {
        format!("onnxruntime {}", crate::onnx::ORT_VERSION)
    } else {
        "burn".to_string()
    };
    let mut ort: Option<crate::onnx::OnnxModel> = None;
    let device = cfg.devices.main().open()?;
    let mut out = Vec::new();
    for copy in 0..copies {
        let seeds: Vec<u64> = (0..set.images.len())
            .map(|i| copy_seed(run_cfg.train.seed, copy, i))
            .collect();
        let key = FeatureKey {
            model: run_cfg.model,
            from: run_cfg.trainable_from,
            weights: weights.clone(),
            preprocess: run_cfg.preprocess,
            augment: aug.map(|a| (*a, copy_seed(run_cfg.train.seed, copy, 0))),
            inputs: inputs.clone(),
            engine: engine.clone(),
        };
        let label = format!("{what} features, copy {}/{copies}", copy + 1);
        let (f, outcome) = cached(&cfg.cache_dir, &key, || {
            if use_ort && ort.is_none() {
                ort = Some(crate::features::stages_graph(
                    frozen,
                    &run_cfg.model,
                    run_cfg.trainable_from,
                    cfg.engine.threads(),
                )?);
            }
            extract(
                frozen,
                ort.as_ref(),
                run_cfg.trainable_from,
                &set.images,
                &run_cfg.preprocess,
                aug.map(|a| (a, seeds.as_slice())),
                32,
                &label,
                &device,
            )
        })?;
        eprintln!(
            "{label}: {outcome:?} ({} values an image, {engine})",
            f.row_len()
        );
        out.push(f);
    }
    Ok(Inputs::Features(out))
}

/// Trains from the committed `state` to the configured number of epochs (or `stop_after`
/// more): set-up (images, network and optimizer, resumed from the last checkpoint), then one
/// [`train_epoch`] and one [`commit_epoch`] per epoch.
fn run_loop(
    cfg: &TrainConfig,
    run_cfg: RunConfig,
    mut state: TrainState,
    t0: Instant,
) -> Result<TrainSummary> {
    let dir = &cfg.run_dir;
    if state.epochs_done >= run_cfg.train.epochs {
        return finished(cfg, &run_cfg, &state, t0);
    }
    let (train_set, val_set, skipped) = load_splits(cfg, &run_cfg)?;
    let settings = run_cfg.train;
    let replicas: Vec<Device> = (cfg.devices.open()?.into_iter())
        .map(Device::autodiff)
        .collect();
    let device = replicas[0].clone();
    device.seed(settings.seed);
    let (model, mut optim) = restore(dir, &run_cfg, &state, &device)?;
    let mut model = model.freeze_below(run_cfg.trainable_from);
    let classes_of =
        |l: &Loaded| -> Vec<usize> { l.items.iter().map(|i| i.class.unwrap_or(0)).collect() };
    let (train_classes, val_classes) = (classes_of(&train_set), classes_of(&val_set));
    let (train_in, val_in, input_stage) = model_inputs(cfg, &run_cfg, &model, train_set, val_set)?;
    let ctx = EpochContext {
        run_cfg: &run_cfg,
        inputs: &train_in,
        classes: &train_classes,
        input_stage,
        loss_fn: training_loss(&settings, &device),
        replicas: &replicas,
    };
    let mut epochs_this_call = 0;
    while state.epochs_done < settings.epochs {
        if cfg.stop_after.is_some_and(|s| epochs_this_call >= s) {
            break;
        }
        let epoch = state.epochs_done + 1;
        let te = Instant::now();
        let (trained, totals) = train_epoch(&ctx, model, &mut optim, epoch, state.lr)?;
        model = trained;
        let (val_loss, val_accuracy) = if val_in.len() == 0 {
            (f64::NAN, totals.accuracy())
        } else {
            evaluate_loss(
                &model.valid(),
                &val_in,
                &val_classes,
                input_stage,
                &run_cfg.preprocess,
                settings.batch_size.max(32),
                run_cfg.classes.len(),
            )?
        };
        let m = EpochMetrics {
            epoch,
            lr: totals.lr_start,
            train_loss: totals.loss_sum / totals.seen as f64,
            train_accuracy: totals.accuracy(),
            val_loss,
            val_accuracy,
            seconds: te.elapsed().as_secs_f64(),
        };
        eprintln!(
            "epoch {epoch:>3}/{}: lr {:.2e}  train loss {:.4} acc {:.4}  val loss {:.4} acc {:.4}  ({:.1}s)",
            settings.epochs,
            m.lr,
            m.train_loss,
            m.train_accuracy,
            m.val_loss,
            m.val_accuracy,
            m.seconds
        );
        commit_epoch(dir, &settings, &mut state, &model, &optim, m)?;
        epochs_this_call += 1;
    }
    let curves = dir.join("curves.png");
    if let Err(e) = artemis_report::plot::training_curves(&state.history)
        .and_then(|png| artemis_report::plot::write_png(&png, &curves))
    {
        tracing::warn!("{e}");
    }
    Ok(TrainSummary {
        run_dir: dir.clone(),
        epochs_done: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_accuracy: state.best_val_accuracy,
        seconds: t0.elapsed().as_secs_f64(),
        epoch_seconds: state.history.iter().map(|m| m.seconds).sum(),
        train_images: train_in.len(),
        val_images: val_in.len(),
        skipped_files: skipped,
    })
}

/// The configuration of a new run of `cfg`: input and preprocessing, the pretrained
/// checkpoint (verified), the settings with their defaults, and canonical paths.
fn new_run_config(cfg: &TrainConfig) -> Result<RunConfig> {
    let manifest = Manifest::load(&cfg.manifest)?;
    let input = cfg.input.unwrap_or(cfg.architecture.default_input());
    let pre = Preprocess {
        width: input.1 as u32,
        height: input.0 as u32,
        resize: cfg.resize,
        scaling: cfg.scaling(),
        framing: cfg.framing,
    };
    pre.validate()?;
    let trainable_from = cfg.strategy.trainable_from(cfg.architecture)?;
    let pretrained = match (cfg.pretrained, cfg.architecture.checkpoint()) {
        (true, Some(checkpoint)) => {
            let w = (cfg.weights.clone()).unwrap_or_else(|| checkpoint.default_path());
            Some(Pretrained {
                source: "imagenet".into(),
                sha256: checkpoint.verify(&w)?,
                weights: w,
            })
        }
        _ => None,
    };
    Ok(RunConfig {
        artemis_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelSpec {
            architecture: cfg.architecture,
            num_classes: cfg.task.num_classes(),
            input,
            width: cfg.width,
            aux_logits: cfg.aux_logits,
        },
        task: cfg.task,
        classes: cfg.task.classes(),
        preprocess: pre,
        augment: cfg.augment,
        train: TrainSettings {
            epochs: if cfg.settings.epochs == 0 {
                DEFAULT_EPOCHS
            } else {
                cfg.settings.epochs
            },
            ..cfg.settings
        },
        // Absolute, so the run is evaluated from any working directory.
        manifest: crate::run::canonical(&cfg.manifest)?,
        manifest_hash: file_hash(&cfg.manifest)?,
        data_root: crate::run::canonical(
            &(cfg.data_root.clone()).unwrap_or_else(|| PathBuf::from(&manifest.data_root)),
        )?,
        pretrained,
        trainable_from,
        feature_cache: cfg.feature_cache && trainable_from > 0,
        cache_copies: if cfg.augment.is_identity() {
            1
        } else {
            cfg.cache_copies
        },
        trained_on: vec![cfg.devices.to_string()],
    })
}

/// The summary of a run that already has all its epochs: nothing is decoded or trained.
fn finished(
    cfg: &TrainConfig,
    run_cfg: &RunConfig,
    state: &TrainState,
    t0: Instant,
) -> Result<TrainSummary> {
    let manifest = Manifest::load(&run_cfg.manifest)?;
    let root = cfg.data_root.clone().unwrap_or(run_cfg.data_root.clone());
    let usable =
        |split| crate::dataset::manifest_items(&manifest, &root, split, run_cfg.task).len();
    let trained = training_items(&manifest, &root, run_cfg).len();
    Ok(TrainSummary {
        run_dir: cfg.run_dir.clone(),
        epochs_done: state.epochs_done,
        best_epoch: state.best_epoch,
        best_val_accuracy: state.best_val_accuracy,
        seconds: t0.elapsed().as_secs_f64(),
        epoch_seconds: state.history.iter().map(|m| m.seconds).sum(),
        train_images: trained,
        val_images: usable(Split::Val),
        skipped_files: Vec::new(),
    })
}

/// The training split's items the run trains on: all of them, or a [`subsample`].
fn training_items(manifest: &Manifest, root: &Path, run_cfg: &RunConfig) -> Vec<Item> {
    let items = crate::dataset::manifest_items(manifest, root, Split::Train, run_cfg.task);
    subsample(items, run_cfg.train.subsample, run_cfg.train.seed)
}

/// A seeded draw of `share` of each class's items (at least one a class), in their order;
/// all of them when `share` is 1.
fn subsample(items: Vec<Item>, share: f64, seed: u64) -> Vec<Item> {
    if share >= 1.0 {
        return items;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ab5_a3e1);
    let mut keep = vec![false; items.len()];
    let mut classes: Vec<Option<usize>> = items.iter().map(|i| i.class).collect();
    classes.sort_unstable();
    classes.dedup();
    for class in classes {
        let mut of: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].class == class)
            .collect();
        of.shuffle(&mut rng);
        let n = ((share * of.len() as f64).round() as usize).max(1);
        of.iter().take(n).for_each(|&i| keep[i] = true);
    }
    items
        .into_iter()
        .zip(keep)
        .filter_map(|(item, k)| k.then_some(item))
        .collect()
}

/// Files that could not be read, with the reason.
type Skipped = Vec<(PathBuf, String)>;

/// The decoded training and validation images, and the files that could not be read.
/// Refuses a training split with no usable file, no decodable image or a single class.
fn load_splits(cfg: &TrainConfig, run_cfg: &RunConfig) -> Result<(Loaded, Loaded, Skipped)> {
    let manifest = Manifest::load(&run_cfg.manifest)?;
    let root = cfg.data_root.clone().unwrap_or(run_cfg.data_root.clone());
    let (pre, task) = (run_cfg.preprocess, run_cfg.task);
    let train_items = training_items(&manifest, &root, run_cfg);
    let val_items = crate::dataset::manifest_items(&manifest, &root, Split::Val, task);
    if train_items.is_empty() {
        return Err(EngineError::Config(format!(
            "{}: no training files usable for task '{task}' (a 4-class data set has no plane \
             labels: use --task type)",
            run_cfg.manifest.display()
        )));
    }
    let train_set = load(train_items, &pre, "train set", cfg.max_pixels);
    let val_set = load(val_items, &pre, "val set", cfg.max_pixels);
    let mut skipped = train_set.failed.clone();
    skipped.extend(val_set.failed.iter().cloned());
    if train_set.images.is_empty() {
        return Err(EngineError::Config(format!(
            "no training image could be decoded ({})",
            describe_failures(&train_set.failed)
        )));
    }
    let mut present: Vec<usize> = train_set.items.iter().filter_map(|i| i.class).collect();
    present.sort_unstable();
    present.dedup();
    if present.len() < 2 {
        let names = task.classes();
        return Err(EngineError::Config(format!(
            "{}: the training split holds a single class ({}); a classifier needs at least two",
            run_cfg.manifest.display(),
            present
                .first()
                .and_then(|&c| names.get(c))
                .map_or("none", String::as_str)
        )));
    }
    Ok((train_set, val_set, skipped))
}

/// Adam (the reference's, epsilon 1e-7 as in Keras), or AdamW when the run asks for weight
/// decay: the same moments, plus the decoupled decay.
fn optimizer(s: &TrainSettings) -> ModuleOptimizer {
    if s.weight_decay > 0.0 {
        AdamWConfig::new()
            .with_epsilon(1e-7)
            .with_weight_decay(s.weight_decay as f32)
            .init()
    } else {
        AdamConfig::new().with_epsilon(1e-7).init()
    }
}

/// The training loss: cross-entropy, label-smoothed when the run asks for it.
fn training_loss(s: &TrainSettings, device: &Device) -> CrossEntropyLoss {
    let smoothing = (s.label_smoothing > 0.0).then_some(s.label_smoothing as f32);
    CrossEntropyLossConfig::new()
        .with_smoothing(smoothing)
        .init(device)
}

/// The network and its optimizer: fresh (from the pretrained weights when asked) before the
/// first commit, else both read back from the checkpoint `state` names.
fn restore(
    dir: &Path,
    run_cfg: &RunConfig,
    state: &TrainState,
    device: &Device,
) -> Result<(Network, ModuleOptimizer)> {
    let mut model: Network = match (&run_cfg.pretrained, state.epochs_done) {
        (Some(p), 0) => run_cfg.model.init_pretrained(&p.weights, device)?,
        _ => run_cfg.model.init(device)?,
    };
    let mut optim = optimizer(&run_cfg.train);
    if state.epochs_done > 0 {
        let stem = &state.checkpoint;
        model = load_module(model, &dir.join(format!("{stem}.model.bpk")))?;
        let opath = dir.join(format!("{stem}.optim.bpk"));
        let bytes = crate::run::read_sealed(&opath)?;
        optim = optim
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
            .map_err(|e| EngineError::Checkpoint {
                path: opath.clone(),
                reason: e.to_string(),
            })?;
    }
    Ok((model, optim))
}

/// What the trainable stages read, for training and validation, and the stage they start at.
/// The fast path: with a frozen prefix and the cache on, the frozen stages run once per image
/// (and augmentation copy), not once per epoch.
fn model_inputs(
    cfg: &TrainConfig,
    run_cfg: &RunConfig,
    model: &Network,
    train_set: Loaded,
    val_set: Loaded,
) -> Result<(Inputs, Inputs, usize)> {
    let from = run_cfg.trainable_from;
    if !(run_cfg.feature_cache && from > 0) {
        return Ok((Inputs::Images(train_set), Inputs::Images(val_set), 0));
    }
    let frozen = model.valid();
    let copies = run_cfg.cache_copies;
    let augment = Some(&run_cfg.augment);
    let tr = cached_inputs(cfg, run_cfg, &frozen, &train_set, copies, augment, "train")?;
    let va = cached_inputs(cfg, run_cfg, &frozen, &val_set, 1, None, "val")?;
    Ok((tr, va, from))
}

/// An epoch's running totals over the training batches.
struct EpochTotals {
    loss_sum: f64,
    correct: usize,
    seen: usize,
    /// The rate at the epoch's first step.
    lr_start: f64,
}

impl EpochTotals {
    fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen as f64
    }
}

/// One pass over the training images in a seeded order, one Adam step per batch (the head
/// at its rate and the trainable backbone at its own when they differ).
fn train_epoch(
    ctx: &EpochContext,
    mut model: Network,
    optim: &mut ModuleOptimizer,
    epoch: usize,
    base_lr: f64,
) -> Result<(Network, EpochTotals)> {
    let settings = ctx.run_cfg.train;
    let (n, bs) = (ctx.inputs.len(), settings.batch_size_at(epoch));
    let batches = n.div_ceil(bs);
    let backbone_scale = settings.backbone_lr.map(|b| b / settings.learning_rate);
    ctx.device().seed(mix(settings.seed, epoch as u64));
    if ctx.replicas.len() > 1 {
        // Drawn from the stream one device's first forward pass would draw them from.
        model = crate::replicas::initialised(model);
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix(
        settings.seed,
        epoch as u64,
    )));
    let pb = crate::progress::bar(n as u64, &format!("epoch {epoch}/{}", settings.epochs));
    let mut totals = EpochTotals {
        loss_sum: 0.0,
        correct: 0,
        seen: 0,
        lr_start: settings.lr_at(base_lr, (epoch - 1) as f64 + 1.0 / batches as f64),
    };
    for (b, chunk) in order.chunks(bs).enumerate() {
        let split = backbone_scale.is_some();
        let step = if ctx.replicas.len() > 1 {
            crate::replicas::step(ctx, &model, chunk, epoch, b, split)?
        } else {
            let (loss, correct) = batch_loss(ctx, &model, chunk, 0, epoch, b, ctx.device())?;
            let value = f64::from(loss.clone().into_scalar::<f32>());
            let grads = StepGrads::of(loss.backward(), &model, split);
            (value, correct, grads)
        };
        let (loss, correct, grads) = step;
        totals.correct += correct;
        totals.loss_sum += loss * chunk.len() as f64;
        totals.seen += chunk.len();
        let lr = settings.lr_at(
            base_lr,
            (epoch - 1) as f64 + (b + 1) as f64 / batches as f64,
        );
        // The backbone's rate scale applies only when the head stepped apart.
        let scale = match grads.head {
            Some(_) => backbone_scale.unwrap_or(1.0),
            None => 1.0,
        };
        if let Some(head) = grads.head {
            model = optim.step(lr, model, head);
        }
        if scale > 0.0 {
            model = optim.step(lr * scale, model, grads.rest);
        }
        pb.inc(chunk.len() as u64);
        pb.set_message(format!(
            "loss {:.4} acc {:.3}",
            totals.loss_sum / totals.seen as f64,
            totals.accuracy()
        ));
    }
    pb.finish_and_clear();
    Ok((model, totals))
}

/// The end of an epoch: the best checkpoint when validation improved (higher accuracy, ties
/// broken by lower loss), else the plateau schedule's count; then the checkpoint pair, then
/// `state.json` naming it (the commit point), the metrics table, and the previous pair removed.
fn commit_epoch(
    dir: &Path,
    settings: &TrainSettings,
    state: &mut TrainState,
    model: &Network,
    optim: &ModuleOptimizer,
    m: EpochMetrics,
) -> Result<()> {
    let epoch = m.epoch;
    let improved = m.val_accuracy > state.best_val_accuracy + 1e-9
        || ((m.val_accuracy - state.best_val_accuracy).abs() <= 1e-9
            && m.val_loss < state.best_val_loss);
    if improved {
        save_module(model.clone(), &dir.join(BEST))?;
        state.best_val_accuracy = m.val_accuracy;
        state.best_val_loss = m.val_loss;
        state.best_epoch = epoch;
        state.plateau_wait = 0;
    } else if settings.schedule == Schedule::Plateau && epoch as f64 > settings.warmup_epochs {
        state.plateau_wait += 1;
        if state.plateau_wait >= settings.plateau.patience {
            state.lr = (state.lr * settings.plateau.factor).max(settings.plateau.min_lr);
            state.plateau_wait = 0;
        }
    }
    let stem = ckpt_stem(epoch);
    save_module(model.clone(), &dir.join(format!("{stem}.model.bpk")))?;
    let opath = dir.join(format!("{stem}.optim.bpk"));
    let obytes = optim.into_bytes().map_err(|e| EngineError::Checkpoint {
        path: opath.clone(),
        reason: e.to_string(),
    })?;
    crate::run::write_sealed(&opath, &obytes)?;
    let previous = std::mem::replace(&mut state.checkpoint, stem);
    state.epochs_done = epoch;
    state.history.push(m);
    write_json(&dir.join(STATE), &*state)?;
    write_metrics_csv(&dir.join(METRICS), &state.history)?;
    if !previous.is_empty() && previous != state.checkpoint {
        for ext in ["model.bpk", "optim.bpk"] {
            let _ = std::fs::remove_file(dir.join(format!("{previous}.{ext}")));
        }
    }
    Ok(())
}

/// Mean cross-entropy and accuracy of `model` (in inference mode) over a set.
fn evaluate_loss(
    model: &Network,
    set: &Inputs,
    classes: &[usize],
    input_stage: usize,
    pre: &Preprocess,
    bs: usize,
    k: usize,
) -> Result<(f64, f64)> {
    let device = (model.devices().into_iter().next()).unwrap_or_else(Device::flex);
    let (mut loss, mut correct) = (0f64, 0usize);
    for chunk in (0..set.len()).collect::<Vec<_>>().chunks(bs) {
        let batch = set.batch(
            chunk,
            chunk.iter().map(|&i| classes[i]).collect(),
            1,
            pre,
            None,
            &device,
        );
        let logits = to_vec_f32(model.forward_from(batch.x, input_stage))?;
        for (row, &c) in logits.chunks(k).zip(&batch.classes) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            loss += f64::from(lse - row[c]);
            if argmax_rows(row, k)[0] == c {
                correct += 1;
            }
        }
    }
    let n = set.len().max(1) as f64;
    Ok((loss / n, correct as f64 / n))
}

fn write_metrics_csv(path: &Path, history: &[EpochMetrics]) -> Result<()> {
    let mut s = String::from("epoch,lr,train_loss,train_accuracy,val_loss,val_accuracy,seconds\n");
    for m in history {
        s.push_str(&format!(
            "{},{},{:.6},{:.6},{:.6},{:.6},{:.2}\n",
            m.epoch, m.lr, m.train_loss, m.train_accuracy, m.val_loss, m.val_accuracy, m.seconds
        ));
    }
    Ok(artemis_data::fsutil::write_atomic(path, s.as_bytes())?)
}

/// A small recipe for unit tests (the relu-bn baseline, 1 epoch, batch 8, no cache).
#[cfg(test)]
pub(crate) fn test_recipe() -> TrainConfig {
    TrainConfig {
        run_dir: "run".into(),
        manifest: "m.tsv".into(),
        data_root: None,
        architecture: Architecture::BaselineReluBn,
        task: Task::TypePlane,
        input: None,
        resize: ResizeMode::Squash,
        framing: Framing::AsIs,
        scaling: None,
        augment: Augment::default(),
        // The defaults (Adam at 1e-3, the plateau schedule) but for these three.
        settings: TrainSettings {
            epochs: 1,
            batch_size: 8,
            seed: 1,
            ..TrainSettings::default()
        },
        resume: false,
        stop_after: None,
        pretrained: false,
        weights: None,
        strategy: Strategy::Full,
        width: 1.0,
        aux_logits: false,
        feature_cache: false,
        cache_dir: "cache".into(),
        cache_copies: 1,
        max_pixels: artemis_data::image_io::DEFAULT_MAX_PIXELS,
        engine: Default::default(),
        devices: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::GradientsParams;

    /// The engine options' device and the first training device must agree (the CLI fills
    /// both from one flag; a library caller could set them apart).
    #[test]
    fn the_engine_device_must_be_the_first_training_device() {
        let mut cfg = test_recipe();
        cfg.validate().unwrap();
        cfg.devices = "vulkan:1,vulkan:0".parse().unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("cpu") && e.contains("vulkan:1"), "{e}");
        cfg.engine.device = cfg.devices.main();
        cfg.validate().unwrap();
        cfg.settings.weight_decay = 1.5;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("weight decay 1.5"), "{e}");
        cfg.settings.weight_decay = 0.05;
        cfg.settings.label_smoothing = 0.6;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("label smoothing 0.6"), "{e}");
        cfg.settings.label_smoothing = 0.1;
        cfg.settings.subsample = 0.0;
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("subsample 0"), "{e}");
    }

    /// A subsample keeps the share of each class, in manifest order, and other seeds draw
    /// other images; share 1 keeps everything.
    #[test]
    fn a_subsample_draws_a_share_of_each_class() {
        let items = |n: usize| -> Vec<Item> {
            (0..n)
                .map(|i| Item {
                    path: PathBuf::from(format!("img{i}.png")),
                    class: Some(usize::from(i % 4 == 0)),
                    content_hash: None,
                })
                .collect()
        };
        let paths = |v: &[Item]| v.iter().map(|i| i.path.clone()).collect::<Vec<_>>();
        assert_eq!(subsample(items(40), 1.0, 1).len(), 40);
        let a = subsample(items(40), 0.8, 1);
        let count = |v: &[Item], c| v.iter().filter(|i| i.class == Some(c)).count();
        assert_eq!((count(&a, 0), count(&a, 1)), (24, 8));
        let order: Vec<usize> = (a.iter())
            .map(|i| {
                i.path.to_str().unwrap()[3..]
                    .trim_end_matches(".png")
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "manifest order kept");
        assert_eq!(paths(&a), paths(&subsample(items(40), 0.8, 1)), "seeded");
        assert_ne!(
            paths(&a),
            paths(&subsample(items(40), 0.8, 2)),
            "other seed, other draw"
        );
        assert_eq!(
            count(&subsample(items(4), 0.1, 3), 1),
            1,
            "at least one a class"
        );
    }

    /// Weight decay is wired: with a zero gradient AdamW still shrinks the weights by
    /// `lr x decay`, Adam leaves them; label smoothing costs a confident right answer.
    #[test]
    fn weight_decay_and_label_smoothing_take_effect() {
        let device = Device::flex().autodiff();
        device.seed(2);
        let spec = ModelSpec::new(Architecture::BaselineReluBn, 3, (96, 96));
        let x = Tensor::<4>::ones([2, 3, 96, 96], &device);
        let norm = |m: &Network| -> f32 {
            let v = to_vec_f32(m.valid().forward(x.clone().inner())).unwrap();
            v.iter().map(|a| a.abs()).sum()
        };
        let settings = |wd: f64| TrainSettings {
            weight_decay: wd,
            ..TrainSettings::default()
        };
        // The same start twice (one initialisation, cloned: re-seeding the device would race
        // with other tests drawing from it); the forward pass moves BatchNorm's statistics
        // alike in both.
        let start = spec.init(&device).unwrap();
        let mut outs = Vec::new();
        for wd in [0.0, 0.5] {
            let model = start.clone();
            let loss = model.forward(x.clone()).sum() * 0.0;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let model = optimizer(&settings(wd)).step(0.2, model, grads);
            outs.push(norm(&model));
        }
        // Eight weighted layers shrunk by 0.9 each: the output shrinks by far more than 5%.
        assert!(
            outs[1] < 0.95 * outs[0],
            "AdamW did not shrink the weights: {outs:?}"
        );
        let logits =
            Tensor::<2>::from_data(TensorData::new(vec![8.0f32, 0.0, 0.0], [1, 3]), &device);
        let y = crate::dataset::target_tensor(&[0], &device);
        let loss = |s: f64| {
            let t = TrainSettings {
                label_smoothing: s,
                ..TrainSettings::default()
            };
            (training_loss(&t, &device).forward(logits.clone(), y.clone())).into_scalar::<f32>()
        };
        let (plain, smooth) = (loss(0.0), loss(0.1));
        assert!(plain < 0.001 && smooth > 0.4, "{plain} {smooth}");
    }

    /// One real optimisation step on a fixed batch lowers the loss on that batch.
    #[test]
    fn a_training_step_lowers_the_loss() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let spec = ModelSpec::new(Architecture::BaselineReluBn, 3, (96, 96));
        let mut model = spec.init(&device).unwrap();
        let mut optim = AdamConfig::new().init();
        let loss_fn = CrossEntropyLossConfig::new().init(&device);
        // Three classes told apart by brightness.
        let mut data = Vec::new();
        let mut classes = Vec::new();
        for i in 0..6 {
            let c = i % 3;
            classes.push(c);
            data.extend(std::iter::repeat_n(0.2 + 0.4 * c as f32, 3 * 96 * 96));
        }
        let x = Tensor::<4>::from_data(TensorData::new(data, [6, 3, 96, 96]), &device);
        let y = crate::dataset::target_tensor(&classes, &device);
        let mut losses = Vec::new();
        for _ in 0..4 {
            let loss = loss_fn.forward(model.forward(x.clone()), y.clone());
            losses.push(loss.clone().into_scalar::<f32>());
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-2, model, grads);
        }
        assert!(losses[3] < losses[0], "losses {losses:?}");
    }

    #[test]
    fn strategies_map_to_stages() {
        let m = Architecture::MobileNetV2;
        assert_eq!(
            "full"
                .parse::<Strategy>()
                .unwrap()
                .trainable_from(m)
                .unwrap(),
            0
        );
        assert_eq!(
            "head"
                .parse::<Strategy>()
                .unwrap()
                .trainable_from(m)
                .unwrap(),
            20
        );
        assert_eq!(
            "from:14"
                .parse::<Strategy>()
                .unwrap()
                .trainable_from(m)
                .unwrap(),
            14
        );
        assert!(Strategy::From(19).trainable_from(m).is_err());
        assert!(Strategy::From(0).trainable_from(m).is_err());
        assert!(
            Strategy::Head
                .trainable_from(Architecture::Baseline)
                .is_err()
        );
        assert!("from:x".parse::<Strategy>().is_err());
        for st in ["full", "head", "from:7"] {
            assert_eq!(st.parse::<Strategy>().unwrap().to_string(), st);
            assert_eq!(format!("{:<8}|", st.parse::<Strategy>().unwrap()).len(), 9);
        }
    }

    #[test]
    fn argmax_and_seed_mixing() {
        assert_eq!(argmax_rows(&[0.1, 0.9, 0.0, 0.5, 0.2, 0.3], 3), vec![1, 0]);
        assert_ne!(mix(1, 2), mix(2, 1));
        assert_eq!(mix(5, 6), mix(5, 6));
    }
}
