//! The model card: what the pages and `GET /api/v1/model` show about the model.

use artemis_engine::infer::Classifier;
use artemis_engine::run::read_json;
use artemis_report::{EvalReport, NOTICE};
use serde::Serialize;
use serde_json::json;
use std::path::Path;

/// What the page and `GET /api/v1/model` show about the model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCard {
    pub notice: String,
    pub task: String,
    pub classes: Vec<String>,
    pub model: String,
    pub description: String,
    /// What computes the logits (burn, or ONNX Runtime from the run's export).
    pub engine: String,
    pub input: [u32; 2],
    /// The training data's folder name and the manifest's file name (never a server path).
    pub training_data: String,
    pub manifest: String,
    pub protocol: Option<String>,
    pub calibrated: bool,
    pub temperature: f64,
    /// Test-split figures from the run's `report.json`, when `artemis eval` has run.
    pub evaluation: Option<serde_json::Value>,
}

pub fn model_card(clf: &Classifier) -> ModelCard {
    let run = &clf.run;
    let c = &run.config;
    let report: Option<EvalReport> = read_json(&run.path("report.json")).ok();
    let evaluation = report.as_ref().and_then(|r| {
        let v = r.primary()?;
        Some(json!({
            "source": r.source,
            "n": v.metrics.n,
            "accuracy": v.metrics.accuracy,
            "accuracy_ci95": v.bootstrap.as_ref().map(|b| [b.accuracy.low, b.accuracy.high]),
            "macro_f1": v.metrics.macro_avg.f1,
            "macro_f1_ci95": v.bootstrap.as_ref().map(|b| [b.macro_f1.low, b.macro_f1.high]),
            "macro_roc_auc": v.separation.macro_roc_auc,
            "ece": r.calibration.after.ece,
        }))
    });
    ModelCard {
        notice: NOTICE.into(),
        task: c.task.name().into(),
        classes: c.classes.clone(),
        model: artemis_engine::ensemble::model_name(run),
        description: artemis_engine::eval::describe(run),
        engine: clf.engine(),
        input: [c.preprocess.width, c.preprocess.height],
        training_data: last_component(&c.data_root),
        manifest: last_component(&c.manifest),
        protocol: report.and_then(|r| r.data.protocol),
        calibrated: clf.calibrated(),
        temperature: clf.temperature(),
        evaluation,
    }
}

/// The last component of a path (a folder or file name without where it lies on the server).
fn last_component(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
