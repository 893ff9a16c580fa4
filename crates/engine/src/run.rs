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
//! <run>/report.{json,md}, confusion*.png, curves.png
//! ```
//! Every file is written atomically; `state.json` is written last and is the commit point of
//! an epoch.

use crate::error::{EngineError, Result};
use artemis_data::fsutil::write_atomic;
use artemis_data::labels::Task;
use artemis_data::transform::{Augment, Preprocess};
use artemis_models::{ModelSpec, Network};
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

/// Training hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub plateau: Plateau,
    pub seed: u64,
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
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub train_accuracy: f64,
    pub val_loss: f64,
    pub val_accuracy: f64,
    pub seconds: f64,
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
        let net = self.config.model.init(device)?;
        load_module(net, &self.path(BEST))
    }

    pub fn state(&self) -> Result<TrainState> {
        read_json(&self.path(STATE))
    }
}

/// Serialises a module's weights (burnpack) and writes them atomically.
pub fn save_module<M: Module>(module: M, path: &Path) -> Result<()> {
    let bytes = module
        .into_record()
        .into_bytes()
        .map_err(|e| EngineError::Checkpoint {
            path: path.into(),
            reason: e.to_string(),
        })?;
    Ok(write_atomic(path, &bytes)?)
}

/// Loads weights saved by [`save_module`] into `module`.
pub fn load_module<M: Module>(module: M, path: &Path) -> Result<M> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::io(path, e))?;
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
