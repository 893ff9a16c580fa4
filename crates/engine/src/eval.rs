//! `artemis eval`: metrics of a trained run on a split of its manifest or on a folder, with
//! `report.json`, `report.md` and confusion-matrix pictures.

use crate::dataset::{Item, load};
use crate::error::{EngineError, Result};
use crate::infer::{Classifier, top1};
use crate::metrics::{Confusion, Metrics};
use crate::run::{Run, write_json};
use crate::train::manifest_items;
use artemis_data::labels::{Plane, Task, TumorType};
use artemis_data::manifest::{Manifest, Split};
use artemis_data::scan::scan;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// What to evaluate on.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// A split of the run's manifest.
    Split(Split),
    /// A labelled folder (either layout) not in the manifest.
    Folder(PathBuf),
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub run_dir: PathBuf,
    pub source: EvalSource,
    /// Override of the data root for manifest splits.
    pub data_root: Option<PathBuf>,
    pub batch_size: usize,
}

/// One evaluated file.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub path: PathBuf,
    pub truth: String,
    pub predicted: String,
    pub confidence: f32,
}

/// Everything `eval` measured.
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub run: PathBuf,
    pub source: String,
    pub model: String,
    pub task: Task,
    pub notice: String,
    /// Metrics under the model's own task (absent when the labels only allow a coarser view).
    pub metrics: Option<Metrics>,
    /// 4-class tumor-type view (12-class models, or models on 4-class folders).
    pub type_view: Option<Metrics>,
    /// 3-class plane view (12-class models).
    pub plane_view: Option<Metrics>,
    pub skipped: Vec<(PathBuf, String)>,
    pub predictions: Vec<EvalRow>,
    /// Files written.
    pub outputs: Vec<PathBuf>,
}

pub const NOTICE: &str =
    "Research use only. artemis is not a medical device and must not be used for diagnosis.";

fn type_names() -> Vec<String> {
    TumorType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}
fn plane_names() -> Vec<String> {
    Plane::ALL.iter().map(|p| p.name().to_string()).collect()
}

/// Runs an evaluation and writes its report files.
pub fn evaluate(cfg: &EvalConfig) -> Result<EvalReport> {
    let run = Run::open(&cfg.run_dir)?;
    let task = run.config.task;
    let pre = run.config.preprocess;
    // Items carry the class under the model's task when the labels allow it; `coarse` holds the
    // tumor type for every item (for the type view of a 12-class model on a 4-class folder).
    let (items, coarse, source, out_dir): (Vec<Item>, Vec<usize>, String, PathBuf) =
        match &cfg.source {
            EvalSource::Split(split) => {
                let manifest = Manifest::load(&run.config.manifest)?;
                let root = cfg
                    .data_root
                    .clone()
                    .unwrap_or(run.config.data_root.clone());
                let items = manifest_items(&manifest, &root, *split, task);
                let coarse: Vec<usize> = manifest
                    .split(*split)
                    .filter(|e| task.class_of(&e.label).is_some())
                    .filter_map(|e| Task::Type.class_of(&e.label))
                    .collect();
                let out = if *split == Split::Test {
                    run.dir.clone()
                } else {
                    run.dir.join(format!("eval-{split}"))
                };
                (items, coarse, format!("manifest split '{split}'"), out)
            }
            EvalSource::Folder(folder) => {
                let s = scan(folder)?;
                let mut items = Vec::new();
                let mut coarse = Vec::new();
                for smp in &s.samples {
                    items.push(Item {
                        path: smp.path.clone(),
                        class: task.class_of(&smp.label),
                    });
                    coarse.push(Task::Type.class_of(&smp.label).unwrap_or(0));
                }
                let name = folder
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "folder".into());
                (
                    items,
                    coarse,
                    format!("folder {}", folder.display()),
                    run.dir.join(format!("eval-{name}")),
                )
            }
        };
    if items.is_empty() {
        return Err(EngineError::Config(format!(
            "{source}: no labelled images to evaluate"
        )));
    }
    let full_labels = items.iter().all(|i| i.class.is_some());
    if !full_labels && task != Task::TypePlane {
        return Err(EngineError::Config(format!(
            "{source}: labels do not fit the model's task '{task}'"
        )));
    }
    let items_with_coarse: Vec<(Item, usize)> = items.into_iter().zip(coarse).collect();
    let loaded = load(
        items_with_coarse.iter().map(|(i, _)| i.clone()).collect(),
        &pre,
        "evaluate",
    );
    let coarse_of: std::collections::HashMap<PathBuf, usize> = items_with_coarse
        .iter()
        .map(|(i, c)| (i.path.clone(), *c))
        .collect();
    let clf = Classifier::open(run.clone())?;
    let classes = clf.classes().to_vec();
    let mut pairs = Vec::new();
    let mut type_pairs = Vec::new();
    let mut rows = Vec::new();
    let bs = cfg.batch_size.max(1);
    for start in (0..loaded.images.len()).step_by(bs) {
        let end = (start + bs).min(loaded.images.len());
        let imgs: Vec<_> = loaded.images[start..end].iter().collect();
        let probs = clf.probabilities(&imgs)?;
        for (k, p) in probs.iter().enumerate() {
            let item = &loaded.items[start + k];
            let (pred, conf) = top1(p);
            let coarse_truth = coarse_of.get(&item.path).copied().unwrap_or(0);
            if let Some(t) = item.class {
                pairs.push((t, pred));
            }
            if task == Task::TypePlane {
                type_pairs.push((coarse_truth, Task::type_of_type_plane(pred)));
            } else if task == Task::Type {
                type_pairs.push((coarse_truth, pred));
            }
            rows.push(EvalRow {
                path: item.path.clone(),
                truth: match item.class {
                    Some(t) => classes[t].clone(),
                    None => TumorType::ALL[coarse_truth].name().to_string(),
                },
                predicted: classes[pred].clone(),
                confidence: conf,
            });
        }
    }
    let metrics = full_labels.then(|| Confusion::from_pairs(classes.clone(), &pairs).metrics());
    let type_view = match task {
        Task::TypePlane => Some(Confusion::from_pairs(type_names(), &type_pairs).metrics()),
        _ => None,
    };
    let plane_view = match (&metrics, task) {
        (Some(m), Task::TypePlane) => Some(
            m.confusion
                .collapse(plane_names(), Task::plane_of_type_plane)
                .metrics(),
        ),
        _ => None,
    };
    std::fs::create_dir_all(&out_dir).map_err(|e| EngineError::io(&out_dir, e))?;
    let mut report = EvalReport {
        run: run.dir.clone(),
        source,
        model: run.config.model.architecture.name().into(),
        task,
        notice: NOTICE.into(),
        metrics,
        type_view,
        plane_view,
        skipped: loaded.failed.clone(),
        predictions: rows,
        outputs: Vec::new(),
    };
    let title = format!("{} on {}", report.model, report.source);
    let mut outputs = Vec::new();
    for (name, m, label) in [
        ("confusion.png", &report.metrics, task.name()),
        ("confusion-type.png", &report.type_view, "type"),
        ("confusion-plane.png", &report.plane_view, "plane"),
    ] {
        if let Some(m) = m {
            let p = out_dir.join(name);
            crate::plot::confusion_png(&m.confusion, &format!("{title} ({label})"), &p)?;
            outputs.push(p);
        }
    }
    let json = out_dir.join("report.json");
    let md = out_dir.join("report.md");
    outputs.push(json.clone());
    outputs.push(md.clone());
    report.outputs = outputs;
    write_json(&json, &report)?;
    artemis_data::fsutil::write_atomic(&md, report.to_markdown().as_bytes())?;
    Ok(report)
}

fn metrics_table(o: &mut String, title: &str, m: &Metrics) {
    let _ = writeln!(o, "### {title}\n");
    let _ = writeln!(
        o,
        "accuracy **{:.4}** (n = {}), macro F1 **{:.4}**, weighted F1 {:.4}\n",
        m.accuracy, m.n, m.macro_avg.f1, m.weighted_avg.f1
    );
    let _ = writeln!(o, "| class | precision | recall | F1 | support |");
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for c in &m.per_class {
        let _ = writeln!(
            o,
            "| {} | {:.3} | {:.3} | {:.3} | {} |",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    let _ = writeln!(
        o,
        "| *macro avg* | {:.3} | {:.3} | {:.3} | {} |",
        m.macro_avg.precision, m.macro_avg.recall, m.macro_avg.f1, m.n
    );
    let _ = writeln!(
        o,
        "| *weighted avg* | {:.3} | {:.3} | {:.3} | {} |\n",
        m.weighted_avg.precision, m.weighted_avg.recall, m.weighted_avg.f1, m.n
    );
    let _ = writeln!(
        o,
        "Confusion matrix (rows: true, columns: predicted):\n\n```"
    );
    let c = &m.confusion;
    let w = c.classes.iter().map(|s| s.len()).max().unwrap_or(4);
    let _ = write!(o, "{:w$}", "");
    for i in 0..c.classes.len() {
        let _ = write!(o, " {i:>4}");
    }
    let _ = writeln!(o);
    for (i, row) in c.counts.iter().enumerate() {
        let _ = write!(
            o,
            "{:w$}",
            format!("{i} {}", c.classes[i])
                .chars()
                .take(w)
                .collect::<String>()
        );
        for n in row {
            let _ = write!(o, " {n:>4}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "```\n");
}

/// The 12-class metrics as the reference's table: tumor types down, planes across, each cell
/// `precision/recall (support)`.
pub fn type_plane_grid(m: &Metrics) -> String {
    let mut o = String::new();
    let _ = write!(o, "| type |");
    for p in Plane::ALL {
        let _ = write!(o, " {} |", p.name());
    }
    let _ = writeln!(o, "\n|---|---:|---:|---:|");
    for (t, ty) in TumorType::ALL.iter().enumerate() {
        let _ = write!(o, "| {} |", ty.name());
        for p in 0..Plane::ALL.len() {
            match m.per_class.get(t * Plane::ALL.len() + p) {
                Some(c) => {
                    let _ = write!(o, " {:.2}/{:.2} ({}) |", c.precision, c.recall, c.support);
                }
                None => {
                    let _ = write!(o, " - |");
                }
            }
        }
        let _ = writeln!(o);
    }
    o
}

impl EvalReport {
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# artemis evaluation\n");
        let _ = writeln!(o, "> **{}**\n", self.notice);
        let _ = writeln!(o, "- run: `{}`", self.run.display());
        let _ = writeln!(o, "- model: {} (task {})", self.model, self.task);
        let _ = writeln!(o, "- evaluated on: {}", self.source);
        let _ = writeln!(o, "- files skipped (unreadable): {}\n", self.skipped.len());
        if let Some(m) = &self.metrics {
            if self.task == Task::TypePlane && m.per_class.len() == 12 {
                let _ = writeln!(
                    o,
                    "### Precision / recall (support) by type and plane\n\nThe layout of the \
                     reference project's results table.\n"
                );
                let _ = writeln!(o, "{}", type_plane_grid(m));
            }
            metrics_table(&mut o, &format!("{} classes", m.confusion.classes.len()), m);
        }
        if let Some(m) = &self.type_view {
            metrics_table(&mut o, "Tumor type (4 classes)", m);
        }
        if let Some(m) = &self.plane_view {
            metrics_table(&mut o, "Plane (3 classes)", m);
        }
        for (p, why) in &self.skipped {
            let _ = writeln!(o, "- skipped `{}`: {why}", p.display());
        }
        o
    }

    /// The short summary printed on the terminal.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{}", self.notice);
        let _ = writeln!(o, "{} on {}", self.model, self.source);
        for (name, m) in [
            ("task", &self.metrics),
            ("type", &self.type_view),
            ("plane", &self.plane_view),
        ] {
            if let Some(m) = m {
                let _ = writeln!(
                    o,
                    "  {name:<6} accuracy {:.4}  macro F1 {:.4}  (n = {})",
                    m.accuracy, m.macro_avg.f1, m.n
                );
            }
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(o, "  {} files skipped (see report.md)", self.skipped.len());
        }
        for p in &self.outputs {
            let _ = writeln!(o, "  wrote {}", p.display());
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_plane_grid_puts_each_class_in_its_cell() {
        let classes = Task::TypePlane.classes();
        // meningioma_sagittal (class 4): 2 right, 1 predicted as pituitary_sagittal (7);
        // glioma_coronal (0): 1 right.
        let m = Confusion::from_pairs(classes, &[(4, 4), (4, 4), (4, 7), (0, 0)]).metrics();
        let g = type_plane_grid(&m);
        let row = g.lines().find(|l| l.starts_with("| meningioma")).unwrap();
        assert_eq!(
            row,
            "| meningioma | 0.00/0.00 (0) | 1.00/0.67 (3) | 0.00/0.00 (0) |"
        );
        let row = g.lines().find(|l| l.starts_with("| pituitary")).unwrap();
        assert!(row.contains("| 0.00/0.00 (0) |"), "{row}");
        assert!(g.starts_with("| type | coronal | sagittal | transverse |"));
    }
}
