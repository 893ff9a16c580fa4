//! The report's types: what `eval` measured, serialised as `report.json`.

use crate::metrics::Metrics;
use crate::stats::{Bootstrap, CalibrationStats, CoveragePoint, Separation};
use artemis_data::labels::Task;
use artemis_data::manifest::Split;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One evaluated file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    pub path: PathBuf,
    pub truth: String,
    pub predicted: String,
    /// Probability of the predicted class (calibrated when the report is).
    pub confidence: f32,
    pub correct: bool,
    /// The three most probable classes.
    pub top3: Vec<(String, f32)>,
}

/// Metrics of one view (12-class task, 4 tumor types or 3 planes) with areas and intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct View {
    #[serde(flatten)]
    pub metrics: Metrics,
    pub separation: Separation,
    /// Absent when bootstrapping was turned off.
    pub bootstrap: Option<Bootstrap>,
}

/// Calibration as measured on the evaluated images.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CalibrationReport {
    /// The temperature applied (1 when uncalibrated).
    pub temperature: f64,
    /// Where it was fitted (`None`: not calibrated).
    pub fitted_on: Option<String>,
    /// On the evaluated images with the raw softmax.
    pub before: CalibrationStats,
    /// On the evaluated images with the temperature applied.
    pub after: CalibrationStats,
}

/// The data behind the evaluation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataSummary {
    pub manifest: PathBuf,
    /// The manifest's protocol, seed and whether its bytes still match the hash recorded at
    /// training time (an edited manifest makes the split untrustworthy).
    pub protocol: Option<String>,
    pub seed: Option<u64>,
    pub manifest_matches_run: Option<bool>,
    /// Per class: images in train, val, test, excluded.
    pub split_counts: Vec<(String, [usize; 4])>,
    /// Per class of the evaluated set: images.
    pub evaluated: Vec<(String, usize)>,
}

/// Everything `eval` measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    pub schema: String,
    pub run: PathBuf,
    pub source: String,
    pub model: String,
    /// Whether probabilities were averaged over test-time augmentation views.
    #[serde(default)]
    pub tta: bool,
    /// Architecture, weights and training in one line.
    pub description: String,
    /// What computed the logits (burn, or ONNX Runtime with its thread count).
    #[serde(default)]
    pub engine: String,
    pub task: Task,
    pub notice: String,
    pub data: DataSummary,
    /// Metrics under the model's own task (absent when the labels only allow a coarser view).
    pub metrics: Option<View>,
    /// 4-class tumor-type view (12-class models, or models on 4-class folders): the 12
    /// probabilities summed per type, the prediction their argmax.
    pub type_view: Option<View>,
    /// 3-class plane view (12-class models).
    pub plane_view: Option<View>,
    pub calibration: CalibrationReport,
    /// Coverage and accuracy at fixed top-1 thresholds.
    pub coverage: Vec<CoveragePoint>,
    /// At the user's abstain threshold.
    pub abstain: Option<CoveragePoint>,
    /// External folders: files that duplicate training images.
    pub overlap: Option<OverlapReport>,
    #[serde(serialize_with = "artemis_data::fsutil::lossy::path_reasons")]
    pub skipped: Vec<(PathBuf, String)>,
    pub predictions: Vec<EvalRow>,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// The probabilities behind `predictions`, row by row in class-index order (calibrated
    /// when the report is): for callers that combine runs (`cv`'s ensemble); not written.
    #[serde(skip)]
    pub probabilities: Vec<Vec<f32>>,
}

pub const REPORT_SCHEMA: &str = "artemis.eval/2";

/// Column titles of the per-class table ([`View::class_rows`]).
pub const CLASS_COLUMNS: [&str; 8] = [
    "class",
    "precision",
    "recall",
    "recall 95% CI",
    "F1",
    "ROC-AUC",
    "PR-AUC",
    "support",
];

impl View {
    /// The per-class table as text cells (one row per class, then the macro average), shared
    /// by the Markdown and HTML reports.
    pub fn class_rows(&self) -> Vec<[String; 8]> {
        let m = &self.metrics;
        let sep = &self.separation;
        let mut rows: Vec<[String; 8]> = m
            .per_class
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let ci = self
                    .bootstrap
                    .as_ref()
                    .and_then(|b| b.recall.get(i))
                    .map_or("-".into(), |r| format!("{:.3}-{:.3}", r.low, r.high));
                [
                    c.class.clone(),
                    format!("{:.3}", c.precision),
                    format!("{:.3}", c.recall),
                    ci,
                    format!("{:.3}", c.f1),
                    opt3(sep.roc_auc.get(i).copied().flatten()),
                    opt3(sep.pr_auc.get(i).copied().flatten()),
                    c.support.to_string(),
                ]
            })
            .collect();
        rows.push([
            "macro avg".into(),
            format!("{:.3}", m.macro_avg.precision),
            format!("{:.3}", m.macro_avg.recall),
            String::new(),
            format!("{:.3}", m.macro_avg.f1),
            opt3(sep.macro_roc_auc),
            opt3(sep.macro_pr_auc),
            m.n.to_string(),
        ]);
        rows
    }
}

impl EvalReport {
    /// The views present, with their titles.
    pub fn views(&self) -> Vec<(String, &View)> {
        let mut v = Vec::new();
        if let Some(m) = &self.metrics {
            v.push((format!("{} classes", m.metrics.confusion.classes.len()), m));
        }
        if self.task != Task::Type
            && let Some(m) = &self.type_view
        {
            v.push(("Tumor type (4 classes)".to_string(), m));
        }
        if let Some(m) = &self.plane_view {
            v.push(("Plane (3 classes)".to_string(), m));
        }
        v
    }

    /// The view headline figures come from: the model's task, else the type view.
    pub fn primary(&self) -> Option<&View> {
        self.metrics.as_ref().or(self.type_view.as_ref())
    }
}

/// A figure to three decimals, or "-" when undefined (a class absent from the data).
pub(crate) fn opt3(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{x:.3}"))
}

/// An external file that duplicates a training or validation image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    pub path: PathBuf,
    /// The manifest path of the closest training/validation image.
    pub matches: String,
    pub split: Split,
    /// `exact` (same bytes) or `near` (perceptual-hash distance within the threshold).
    pub kind: String,
    /// Hamming distance of the perceptual hashes (0..=256).
    pub distance: u32,
}

/// The overlap of an external set with the run's training data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlapReport {
    pub checked: usize,
    pub threshold: u32,
    pub exact: usize,
    pub near: usize,
    /// Whether the overlapping files were left out of the metrics.
    pub excluded: bool,
    pub files: Vec<Overlap>,
}

impl OverlapReport {
    /// One sentence for the reports.
    pub fn sentence(&self) -> String {
        format!(
            "{} of {} files duplicate a training or validation image ({} exact, {} near; \
             perceptual-hash threshold {} of 256 bits); they are {} the metrics",
            self.files.len(),
            self.checked,
            self.exact,
            self.near,
            self.threshold,
            if self.excluded {
                "excluded from"
            } else {
                "included in (`--exclude-duplicates` leaves them out of)"
            }
        )
    }

    /// `(n, share correct)` of the rows whose file copies no training or validation image;
    /// `None` when no file was left out of the comparison or no row is new.
    pub fn unseen_accuracy(&self, rows: &[EvalRow]) -> Option<(usize, f64)> {
        if self.excluded || self.files.is_empty() {
            return None;
        }
        let copies: std::collections::HashSet<&PathBuf> =
            self.files.iter().map(|f| &f.path).collect();
        let new: Vec<&EvalRow> = rows.iter().filter(|r| !copies.contains(&r.path)).collect();
        let right = new.iter().filter(|r| r.correct).count();
        (!new.is_empty()).then(|| (new.len(), right as f64 / new.len() as f64))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, correct: bool) -> EvalRow {
        EvalRow {
            path: path.into(),
            truth: "glioma".into(),
            predicted: "glioma".into(),
            confidence: 0.9,
            correct,
            top3: Vec::new(),
        }
    }

    #[test]
    fn unseen_accuracy_counts_only_the_files_without_a_copy() {
        let copy = Overlap {
            path: "t/a.jpg".into(),
            matches: "Training/x.jpg".into(),
            split: Split::Train,
            kind: "exact".into(),
            distance: 0,
        };
        let mut o = OverlapReport {
            checked: 4,
            threshold: 16,
            exact: 1,
            near: 0,
            excluded: false,
            files: vec![copy],
        };
        let rows = [
            row("t/a.jpg", true),
            row("t/b.jpg", false),
            row("t/c.jpg", true),
            row("t/d.jpg", false),
        ];
        assert_eq!(o.unseen_accuracy(&rows), Some((3, 1.0 / 3.0)));
        o.excluded = true;
        assert_eq!(o.unseen_accuracy(&rows), None, "already left out");
        o.excluded = false;
        o.files.clear();
        assert_eq!(o.unseen_accuracy(&rows), None, "nothing overlaps");
    }
}
