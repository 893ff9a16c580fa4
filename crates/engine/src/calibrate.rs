//! Temperature scaling (Guo et al. 2017): one scalar `T` divides the logits so that the
//! softmax probabilities match observed accuracy. It is fitted on the run's validation split
//! (never on the test split), saved as `<run>/calibration.json` with the hash of the weights it
//! was fitted for, and applied by every later `predict`, `eval` and the library API. Dividing by
//! `T` never changes the predicted class.

use crate::error::Result;
use crate::run::{Run, read_json};
use artemis_report::prob::{softmax, softmax_t};
use artemis_report::stats::{CalibrationStats, ECE_BINS, calibration, fit_temperature};
use serde::{Deserialize, Serialize};

pub const CALIBRATION: &str = "calibration.json";

/// A fitted temperature and what it did on the data it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub temperature: f64,
    /// What it was fitted on, e.g. `val split of runs/planes-clean.tsv (325 images)`.
    pub fitted_on: String,
    pub images: usize,
    /// BLAKE3 of `model-best.bpk` when fitted; a calibration for other weights is ignored.
    pub model_hash: String,
    /// On the fitting data, before (T = 1) and after.
    pub before: CalibrationStats,
    pub after: CalibrationStats,
}

impl Calibration {
    /// The run's calibration if one was fitted for its current best weights. A stale one (the
    /// run trained further since) is reported and ignored.
    /// An unreadable or non-finite file is reported and ignored the same way (it never blocks
    /// `--no-calibration`, `--recalibrate` or the refit `eval` makes).
    /// `weights_hash` is the BLAKE3 of the run's `model-best.bpk`.
    pub fn load_for(run: &Run, weights_hash: &str) -> Result<Option<Calibration>> {
        let path = run.path(CALIBRATION);
        if !path.exists() {
            return Ok(None);
        }
        let c: Calibration = match read_json(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("{e}; ignored (`artemis eval` refits it)");
                return Ok(None);
            }
        };
        if !c.is_finite() {
            tracing::warn!(
                "{}: holds non-finite numbers; ignored (`artemis eval` refits it)",
                path.display()
            );
            return Ok(None);
        }
        if c.model_hash != weights_hash {
            tracing::warn!(
                "{}: fitted for other weights (the run has trained since); ignored until `artemis eval` refits it",
                path.display()
            );
            return Ok(None);
        }
        Ok(Some(c))
    }

    /// Whether the temperature and every figure are finite (a calibration is never written or
    /// used otherwise).
    pub fn is_finite(&self) -> bool {
        self.temperature.is_finite()
            && self.temperature > 0.0
            && self.before.is_finite()
            && self.after.is_finite()
    }

    /// Fits the temperature on logits and true classes.
    pub fn fit(
        logits: &[Vec<f32>],
        truth: &[usize],
        fitted_on: String,
        model_hash: String,
    ) -> Calibration {
        let t = fit_temperature(logits, truth);
        let raw: Vec<Vec<f32>> = logits.iter().map(|z| softmax(z)).collect();
        let scaled: Vec<Vec<f32>> = logits.iter().map(|z| softmax_t(z, t)).collect();
        Calibration {
            temperature: t,
            fitted_on,
            images: logits.len(),
            model_hash,
            before: calibration(&raw, truth, ECE_BINS),
            after: calibration(&scaled, truth, ECE_BINS),
        }
    }
}
