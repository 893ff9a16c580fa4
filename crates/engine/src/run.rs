//! The run folder: the unit of reproducibility. It holds the run's configuration (model,
//! task, preprocessing, training settings, the manifest it was trained from and that
//! manifest's hash), checkpoints, the per-epoch metrics and the reports.
//!
//! ```text
//! <run>/config.json          RunConfig
//! <run>/state.json           TrainState: completed epochs, learning rate, history
//! <run>/metrics.csv          one row per epoch
//! <run>/model-best.bpk       weights with the best validation accuracy
//! <run>/ckpt-NNNN.model.bpk  last completed epoch (weights), with
//! <run>/ckpt-NNNN.optim.bpk  its optimizer state; state.json names the current pair
//! <run>/calibration.json     temperature fitted on the validation split
//! <run>/export/              ONNX graphs and export.json (their hashes)
//! <run>/report.{json,md}, confusion*.png, curves.png
//! ```
//! Every file is written atomically; `state.json` is written last and is the commit point of
//! an epoch. Checkpoints end in a seal ([`seal`]: the BLAKE3 of their contents), checked
//! whenever they are read.

use crate::error::{EngineError, Result};
use artemis_data::fsutil::write_atomic;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Preprocess};
use artemis_models::{ModelSpec, Network};
use artemis_report::EpochMetrics;
use burn::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Learning-rate schedule: Keras-style ReduceLROnPlateau on validation accuracy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Plateau {
    /// Multiply the rate by this when validation accuracy stalls.
    pub factor: f64,
    /// Epochs without improvement before reducing.
    pub patience: usize,
    /// Lower bound of the rate.
    pub min_lr: f64,
}

impl Default for Plateau {
    fn default() -> Self {
        // The reference's MobileNetV2 run: factor 0.3, patience 2.
        Plateau {
            factor: 0.3,
            patience: 2,
            min_lr: 1e-6,
        }
    }
}

/// How the learning rate moves after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Keras ReduceLROnPlateau on validation accuracy (the reference).
    #[default]
    Plateau,
    /// Cosine decay from the rate to `plateau.min_lr` over the remaining epochs.
    Cosine,
}

impl std::str::FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "plateau" => Ok(Schedule::Plateau),
            "cosine" => Ok(Schedule::Cosine),
            o => Err(format!(
                "unknown schedule '{o}' (expected plateau or cosine)"
            )),
        }
    }
}

/// Epochs of a new run when none are asked for (the reference's MobileNetV2 schedule).
pub const DEFAULT_EPOCHS: usize = 30;

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// Epochs in all; 0 asks for the default: [`DEFAULT_EPOCHS`] for a new run, what the run
    /// was started with on resume.
    pub epochs: usize,
    pub batch_size: usize,
    /// Rate of the head (and of the whole network unless `backbone_lr` is set).
    pub learning_rate: f64,
    /// Rate of the trainable backbone stages, when it differs from the head's.
    #[serde(default)]
    pub backbone_lr: Option<f64>,
    #[serde(default)]
    pub schedule: Schedule,
    /// Linear warm-up from 0 over this many epochs (fractions allowed), per step.
    #[serde(default)]
    pub warmup_epochs: f64,
    pub plateau: Plateau,
    pub seed: u64,
    /// A second phase with another batch size (the reference baseline: 100 epochs at 32, then
    /// 50 at 64).
    #[serde(default)]
    pub later_batch: Option<LaterBatch>,
    /// Decoupled weight decay (AdamW: each step takes `lr x weight_decay` of every weight);
    /// 0 is Adam, the reference's optimizer (and every run before the field existed).
    #[serde(default)]
    pub weight_decay: f64,
    /// Label smoothing of the training loss: the target puts `1 - s + s / classes` on the
    /// label and `s / classes` on every other class; 0 is plain cross-entropy.
    #[serde(default)]
    pub label_smoothing: f64,
    /// The share of the training split the run trains on: a seeded draw (by `seed`) of that
    /// share of each class's images; 1 trains on all of it (and every run before the field
    /// existed). Members of an ensemble of seeds then see different images (bagging).
    #[serde(default = "all_of_it")]
    pub subsample: f64,
}

fn all_of_it() -> f64 {
    1.0
}

impl Default for TrainSettings {
    /// The reference's settings: batch 32, Adam at 1e-3 with its plateau schedule, seed 42.
    fn default() -> Self {
        TrainSettings {
            epochs: 0,
            batch_size: 32,
            learning_rate: 1e-3,
            backbone_lr: None,
            schedule: Schedule::default(),
            warmup_epochs: 0.0,
            plateau: Plateau::default(),
            seed: 42,
            later_batch: None,
            weight_decay: 0.0,
            label_smoothing: 0.0,
            subsample: 1.0,
        }
    }
}

/// From epoch `from_epoch` (1-based) on, batches of `batch_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaterBatch {
    pub from_epoch: usize,
    pub batch_size: usize,
}

impl std::str::FromStr for LaterBatch {
    type Err = String;

    /// `EPOCH:SIZE`, e.g. `101:64`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("'{s}': expected EPOCH:SIZE, e.g. 101:64");
        let (e, b) = s.split_once(':').ok_or_else(bad)?;
        let from_epoch: usize = e.trim().parse().map_err(|_| bad())?;
        if from_epoch < 2 {
            return Err(format!(
                "'{s}': the later batch size starts at epoch 2 or after"
            ));
        }
        let batch_size = crate::limits::BATCH.parse(b.trim())? as usize;
        Ok(LaterBatch {
            from_epoch,
            batch_size,
        })
    }
}

impl TrainSettings {
    /// The batch size of epoch `epoch` (1-based).
    pub fn batch_size_at(&self, epoch: usize) -> usize {
        match self.later_batch {
            Some(l) if epoch >= l.from_epoch => l.batch_size,
            _ => self.batch_size,
        }
    }

    /// Multiplier of the rate at training time `t` (epochs, fractional: 0 at the start).
    /// `base` is the rate the plateau schedule has reached (the initial rate for cosine).
    pub fn lr_at(&self, base: f64, t: f64) -> f64 {
        let warm = if self.warmup_epochs > 0.0 {
            (t / self.warmup_epochs).min(1.0)
        } else {
            1.0
        };
        let lr = match self.schedule {
            Schedule::Plateau => base,
            Schedule::Cosine => {
                let span = (self.epochs as f64 - self.warmup_epochs).max(1e-9);
                let p = ((t - self.warmup_epochs) / span).clamp(0.0, 1.0);
                let min = self.plateau.min_lr.min(base);
                min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
            }
        };
        lr * warm
    }
}

/// The input scaling a model's ImageNet weights were trained with (the baselines: the
/// reference's raw 0..255).
pub fn native_scaling(model: artemis_models::Architecture) -> artemis_data::transform::Scaling {
    use artemis_data::transform::Scaling;
    use artemis_models::Architecture;
    match model {
        Architecture::MobileNetV2 => Scaling::Imagenet,
        Architecture::InceptionV3 => Scaling::Inception,
        Architecture::EfficientNetLite0 => Scaling::Lite,
        Architecture::Baseline | Architecture::BaselineReluBn => Scaling::Raw255,
    }
}

/// Pretrained weights a run started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pretrained {
    /// `imagenet`.
    pub source: String,
    pub weights: PathBuf,
    pub sha256: String,
}

/// Everything about a run that eval and predict need to reproduce its inputs and outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// artemis version that wrote the run.
    pub artemis_version: String,
    pub model: ModelSpec,
    pub task: Task,
    /// Class names in output order.
    pub classes: Vec<String>,
    pub preprocess: Preprocess,
    pub augment: Augment,
    pub train: TrainSettings,
    /// The manifest the run was trained from, as given, and the BLAKE3 hash of its bytes.
    pub manifest: PathBuf,
    pub manifest_hash: String,
    /// Data root the images were read from.
    pub data_root: PathBuf,
    /// Weights the backbone started from (`None`: random initialisation).
    #[serde(default)]
    pub pretrained: Option<Pretrained>,
    /// First trainable stage: stages below it are frozen (0: the whole network trains).
    #[serde(default)]
    pub trainable_from: usize,
    /// Train on cached activations of the frozen stages (when `trainable_from > 0`).
    #[serde(default)]
    pub feature_cache: bool,
    /// Augmented copies of each training image in the cache (1 without augmentation).
    #[serde(default = "one_copy")]
    pub cache_copies: usize,
    /// Where training ran (`--device`: `cpu`, `vulkan:0`, `vulkan:0,vulkan:1`, ...), one
    /// entry per change over the run's resumed calls. Empty in runs from before it was
    /// recorded (they trained on the CPU). Any device loads the checkpoints.
    #[serde(default)]
    pub trained_on: Vec<String>,
}

fn one_copy() -> usize {
    1
}

/// Training progress, committed after every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    /// Epochs completed (the next epoch to run is `epochs_done + 1`).
    pub epochs_done: usize,
    pub lr: f64,
    pub best_val_accuracy: f64,
    pub best_val_loss: f64,
    pub best_epoch: usize,
    /// Epochs since the last improvement (for the plateau schedule).
    pub plateau_wait: usize,
    /// Name stem of the current checkpoint pair (`ckpt-NNNN`).
    pub checkpoint: String,
    pub history: Vec<EpochMetrics>,
}

pub const CONFIG: &str = "config.json";
pub const STATE: &str = "state.json";
pub const METRICS: &str = "metrics.csv";
pub const BEST: &str = "model-best.bpk";

/// `path` made absolute and canonical (links and `..` resolved as the system resolves them,
/// so two runs name one file alike), or absolute against the working directory where it
/// does not exist.
pub fn canonical(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .map_err(|e| EngineError::io(path, e))
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| EngineError::Json {
        path: path.into(),
        reason: e.to_string(),
    })?;
    Ok(write_atomic(path, text.as_bytes())?)
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| EngineError::Json {
        path: path.into(),
        reason: e.to_string(),
    })
}

/// A run folder on disk.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub config: RunConfig,
}

impl Run {
    /// Opens an existing run (reads its `config.json`).
    pub fn open(dir: &Path) -> Result<Run> {
        let cfg_path = dir.join(CONFIG);
        if !cfg_path.exists() {
            return Err(EngineError::Config(format!(
                "{} is not an artemis run folder (no {CONFIG}); train one with `artemis train`",
                dir.display()
            )));
        }
        Ok(Run {
            dir: dir.to_path_buf(),
            config: read_json(&cfg_path)?,
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Loads the best weights onto `device` (inference device).
    pub fn load_best(&self, device: &Device) -> Result<Network> {
        Ok(self.load_best_hashed(device)?.0)
    }

    /// [`Self::load_best`] and the BLAKE3 of `model-best.bpk` (what calibrations and exports
    /// record), from one read of the file.
    pub fn load_best_hashed(&self, device: &Device) -> Result<(Network, String)> {
        let path = self.path(BEST);
        let bytes = std::fs::read(&path).map_err(|e| EngineError::io(&path, e))?;
        let hash = artemis_data::hash::content_hash(&bytes);
        let net = load_bytes(self.config.model.init(device)?, &path, bytes)?;
        Ok((net, hash))
    }

    /// Refuses a manifest whose bytes changed since the run was trained: its splits may no
    /// longer be the ones the run was trained and validated on, so a "test" figure could be
    /// measured on training images.
    pub fn check_manifest(&self) -> Result<()> {
        let m = &self.config.manifest;
        let hash = file_hash(m)?;
        if hash != self.config.manifest_hash {
            return Err(EngineError::Config(format!(
                "{}: changed since run {} was trained (BLAKE3 {} now, {} then); its splits may \
                 no longer be the run's. Evaluate on a folder with --data, or restore the manifest",
                m.display(),
                self.dir.display(),
                &hash[..12.min(hash.len())],
                &self.config.manifest_hash[..12.min(self.config.manifest_hash.len())]
            )));
        }
        Ok(())
    }

    pub fn state(&self) -> Result<TrainState> {
        read_json(&self.path(STATE))
    }
}

/// Marks the end of a sealed file: the payload, then this, then the payload's 32-byte BLAKE3.
const SEAL_MAGIC: &[u8; 8] = b"ARTSEAL1";
const SEAL_LEN: usize = SEAL_MAGIC.len() + 32;

/// `payload` followed by its seal (magic and BLAKE3), so that a damaged copy is recognised
/// when read ([`unseal`]) without a second file that could disagree with it after a crash.
pub fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + SEAL_LEN);
    out.extend_from_slice(payload);
    out.extend_from_slice(SEAL_MAGIC);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out
}

/// The payload of a file written by [`seal`], checked against its hash. A file without a seal
/// (weights written by artemis before seals were added) is passed through with a warning.
pub fn unseal<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    let damaged = |reason: String| EngineError::Checkpoint {
        path: path.into(),
        reason,
    };
    let Some(split) = bytes.len().checked_sub(SEAL_LEN) else {
        return legacy(path, bytes);
    };
    let (payload, tail) = bytes.split_at(split);
    let (magic, hash) = tail.split_at(SEAL_MAGIC.len());
    if magic != SEAL_MAGIC {
        return legacy(path, bytes);
    }
    if blake3::hash(payload).as_bytes() != hash {
        return Err(damaged(
            "damaged: its contents do not match the BLAKE3 hash recorded when it was written \
             (refused; restore the file, or retrain / resume the run)"
                .into(),
        ));
    }
    Ok(payload)
}

fn legacy<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a [u8]> {
    tracing::warn!(
        "{}: no content hash (written by an older artemis); its integrity cannot be checked",
        path.display()
    );
    Ok(bytes)
}

/// Writes `payload` sealed ([`seal`]) and atomically.
pub fn write_sealed(path: &Path, payload: &[u8]) -> Result<()> {
    Ok(write_atomic(path, &seal(payload))?)
}

/// Reads a file written by [`write_sealed`], refusing a damaged one.
pub fn read_sealed(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    let n = unseal(path, &bytes)?.len();
    bytes.truncate(n);
    Ok(bytes)
}

/// Serialises a module's weights (burnpack), sealed with their hash, and writes them
/// atomically.
pub fn save_module<M: Module>(module: M, path: &Path) -> Result<()> {
    let bytes = module
        .into_record()
        .into_bytes()
        .map_err(|e| EngineError::Checkpoint {
            path: path.into(),
            reason: e.to_string(),
        })?;
    write_sealed(path, &bytes)
}

/// Loads weights saved by [`save_module`] into `module` (a damaged file is refused).
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    load_bytes(module, path, bytes)
}

/// [`load_module`] from the file's bytes, already read (`path` names it in errors).
fn load_bytes<M: Module>(module: M, path: &Path, mut bytes: Vec<u8>) -> Result<M> {
    let n = unseal(path, &bytes)?.len();
    bytes.truncate(n);
    let err = |e: burn::store::RecordError| EngineError::Checkpoint {
        path: path.into(),
        reason: e.to_string(),
    };
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
        .map_err(err)?;
    module.try_load_record(record).map_err(err)
}

/// Hash of a file's bytes.
pub fn file_hash(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
    Ok(artemis_data::hash::content_hash(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_batch_size_applies_from_its_epoch() {
        let mut s = settings(Schedule::Plateau, 0.0);
        s.later_batch = Some("101:64".parse().unwrap());
        assert_eq!(
            (
                s.batch_size_at(100),
                s.batch_size_at(101),
                s.batch_size_at(150)
            ),
            (s.batch_size, 64, 64)
        );
        for bad in ["64", "1:64", "x:64", "101:0", "101:"] {
            assert!(bad.parse::<LaterBatch>().is_err(), "{bad}");
        }
    }

    fn settings(schedule: Schedule, warmup: f64) -> TrainSettings {
        TrainSettings {
            epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            backbone_lr: None,
            schedule,
            warmup_epochs: warmup,
            plateau: Plateau::default(),
            seed: 0,
            ..TrainSettings::default()
        }
    }

    #[test]
    fn a_sealed_file_is_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.bpk");
        let payload: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
        write_sealed(&p, &payload).unwrap();
        assert_eq!(read_sealed(&p).unwrap(), payload);
        // One byte changed in the middle, size unchanged: refused, naming the file.
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[2500] ^= 0x55;
        std::fs::write(&p, &bytes).unwrap();
        let e = read_sealed(&p).unwrap_err().to_string();
        assert!(e.contains("w.bpk") && e.contains("damaged"), "{e}");
        // A file without a seal (older artemis) is read as it is.
        std::fs::write(&p, &payload).unwrap();
        assert_eq!(read_sealed(&p).unwrap(), payload);
    }

    #[test]
    fn warm_up_then_cosine_or_plateau() {
        let s = settings(Schedule::Cosine, 2.0);
        assert!((s.lr_at(1e-3, 1.0) - 0.5e-3).abs() < 1e-12); // half-way through warm-up
        assert!((s.lr_at(1e-3, 2.0) - 1e-3).abs() < 1e-12); // peak
        let mid = s.lr_at(1e-3, 6.0); // half-way through the cosine
        assert!((mid - (1e-6 + (1e-3 - 1e-6) * 0.5)).abs() < 1e-12, "{mid}");
        assert!((s.lr_at(1e-3, 10.0) - 1e-6).abs() < 1e-12); // floor at the end
        let p = settings(Schedule::Plateau, 0.0);
        assert_eq!(p.lr_at(3e-4, 5.5), 3e-4); // the plateau rate as is
        // Old run configs without the new fields still load.
        let old = r#"{"epochs":3,"batch_size":8,"learning_rate":0.001,
            "plateau":{"factor":0.3,"patience":2,"min_lr":1e-6},"seed":1}"#;
        let t: TrainSettings = serde_json::from_str(old).unwrap();
        assert_eq!(
            (t.schedule, t.warmup_epochs, t.backbone_lr),
            (Schedule::Plateau, 0.0, None)
        );
    }
}
