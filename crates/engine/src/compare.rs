//! `artemis compare`: one table of models x protocols x metrics, with confidence intervals, from
//! the test-split reports (`<run>/report.json`) of several runs, beside the reference project's
//! published figures as fixed, labelled rows.

use crate::error::{EngineError, Result};
use crate::run::read_json;
use artemis_report::html::esc;
use artemis_report::stats::Interval;
use artemis_report::{EvalReport, REPORT_SCHEMA};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One row of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// Run folder, or `published` for the reference's figures.
    pub run: String,
    pub model: String,
    pub training: String,
    pub protocol: String,
    pub n: usize,
    pub accuracy: Interval,
    pub macro_f1: Option<Interval>,
    pub macro_roc_auc: Option<f64>,
    pub ece: Option<f64>,
    /// 4-class (tumor type) accuracy of 12-class models.
    pub type_accuracy: Option<Interval>,
    /// A figure copied from the reference's write-up, not measured by artemis.
    pub published: bool,
}

/// Test-set size of the reference protocol (`reference.md`: 10% of 3246 images).
pub const REFERENCE_TEST_N: usize = 325;

/// Wilson score 95% interval of a proportion `p` observed on `n` items.
pub fn wilson(p: f64, n: usize) -> Interval {
    let z = 1.959_963_984_540_054_f64;
    let n = n.max(1) as f64;
    let d = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / d;
    let half = z * ((p * (1.0 - p) / n) + z * z / (4.0 * n * n)).sqrt() / d;
    Interval {
        estimate: p,
        low: centre - half,
        high: centre + half,
    }
}

/// The reference project's published test figures (`../shared/docs/reference.md`), on its
/// leaky random split of n = 325. Their intervals are computed here (Wilson) from that n; the
/// reference published none.
pub fn published_rows() -> Vec<CompareRow> {
    [
        (
            "baseline CNN (Keras)",
            "from scratch, 150 epochs",
            0.883,
            None,
        ),
        (
            "InceptionV3 (Keras)",
            "ImageNet, fine-tuned",
            0.939,
            Some(0.93),
        ),
        (
            "MobileNetV2 (Keras)",
            "ImageNet, fine-tuned 30 epochs",
            0.95,
            Some(0.88),
        ),
    ]
    .into_iter()
    .map(|(model, training, acc, f1)| CompareRow {
        run: "published".into(),
        model: model.into(),
        training: training.into(),
        protocol: "reference".into(),
        n: REFERENCE_TEST_N,
        accuracy: wilson(acc, REFERENCE_TEST_N),
        macro_f1: f1.map(|f| Interval {
            estimate: f,
            low: f64::NAN,
            high: f64::NAN,
        }),
        macro_roc_auc: None,
        ece: None,
        type_accuracy: None,
        published: true,
    })
    .collect()
}

/// A row from a run's test-split report.
pub fn run_row(run: &Path) -> Result<CompareRow> {
    let path = run.join("report.json");
    if !path.exists() {
        return Err(EngineError::Config(format!(
            "{}: no test-split report; run `artemis eval {}` first",
            path.display(),
            run.display()
        )));
    }
    let r: EvalReport = read_json(&path).map_err(|e| match e {
        EngineError::Json { path, reason } => EngineError::Json {
            path,
            reason: format!("{reason} (written by an older artemis? expected {REPORT_SCHEMA}; re-run `artemis eval`)"),
        },
        other => other,
    })?;
    let v = r.primary().ok_or_else(|| {
        EngineError::Config(format!("{}: the report holds no metrics", path.display()))
    })?;
    let point = |x: f64| Interval {
        estimate: x,
        low: f64::NAN,
        high: f64::NAN,
    };
    let b = v.bootstrap.as_ref();
    Ok(CompareRow {
        run: run.display().to_string(),
        model: r.model.clone(),
        training: r
            .description
            .split_once(", ")
            .map_or(r.description.clone(), |(_, rest)| rest.to_string()),
        protocol: r.data.protocol.clone().unwrap_or_else(|| "-".into()),
        n: v.metrics.n,
        accuracy: b.map_or(point(v.metrics.accuracy), |b| b.accuracy),
        macro_f1: Some(b.map_or(point(v.metrics.macro_avg.f1), |b| b.macro_f1)),
        macro_roc_auc: v.separation.macro_roc_auc,
        ece: Some(r.calibration.after.ece),
        type_accuracy: r
            .type_view
            .as_ref()
            .filter(|_| r.metrics.is_some())
            .map(|t| {
                t.bootstrap
                    .as_ref()
                    .map_or(point(t.metrics.accuracy), |b| b.accuracy)
            }),
        published: false,
    })
}

/// Rows of the given runs (sorted by protocol, then accuracy), then the published rows.
pub fn compare(runs: &[PathBuf]) -> Result<Vec<CompareRow>> {
    let mut rows = runs
        .iter()
        .map(|r| run_row(r))
        .collect::<Result<Vec<_>>>()?;
    rows.sort_by(|a, b| {
        a.protocol
            .cmp(&b.protocol)
            .then(b.accuracy.estimate.total_cmp(&a.accuracy.estimate))
    });
    rows.extend(published_rows());
    Ok(rows)
}

fn ci(i: &Interval) -> String {
    if i.low.is_nan() {
        format!("{:.1}%", 100.0 * i.estimate)
    } else {
        format!(
            "{:.1}% [{:.1}, {:.1}]",
            100.0 * i.estimate,
            100.0 * i.low,
            100.0 * i.high
        )
    }
}

fn ci3(i: &Option<Interval>) -> String {
    match i {
        Some(i) if i.low.is_nan() => format!("{:.3}", i.estimate),
        Some(i) => format!("{:.3} [{:.3}, {:.3}]", i.estimate, i.low, i.high),
        None => "–".into(),
    }
}

fn cells(r: &CompareRow) -> [String; 9] {
    [
        if r.published {
            format!("{} *(published)*", r.model)
        } else {
            r.model.clone()
        },
        r.training.clone(),
        r.protocol.clone(),
        r.n.to_string(),
        ci(&r.accuracy),
        ci3(&r.macro_f1),
        r.macro_roc_auc.map_or("–".into(), |x| format!("{x:.3}")),
        r.ece.map_or("–".into(), |x| format!("{x:.3}")),
        r.type_accuracy.as_ref().map_or("–".into(), ci),
    ]
}

const HEADERS: [&str; 9] = [
    "model",
    "training",
    "protocol",
    "test n",
    "accuracy [95% CI]",
    "macro F1 [95% CI]",
    "macro ROC-AUC",
    "ECE",
    "4-class accuracy",
];

const FOOTNOTE: &str = "Intervals: 95% percentile bootstrap over the test images (artemis \
runs); for the published rows, Wilson intervals computed here from the reference's n = 325 \
(the reference reported none, and its figures are not measured by artemis). The reference \
protocol's random split lets duplicates leak between train and test; the clean protocol does \
not, so only rows of the same protocol compare like for like.";

/// The table as Markdown.
pub fn to_markdown(rows: &[CompareRow]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(o, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(o, "| {} |", cells(r).join(" | "));
    }
    let _ = writeln!(o, "\n{FOOTNOTE}");
    o
}

/// The table as a self-contained HTML page.
pub fn to_html(rows: &[CompareRow]) -> String {
    let mut o = String::from(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>artemis compare</title>\
         <style>body{font-family:system-ui,'DejaVu Sans',sans-serif;margin:24px}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}\
         tr.published{background:#f3f3f3;font-style:italic}\
         .notice{background:#fff3cd;border:2px solid #d39e00;padding:8px}</style></head><body>\
         <h1>artemis: model comparison</h1>",
    );
    let _ = write!(
        o,
        "<p class=notice>{}</p><table><tr>",
        esc(artemis_report::notice::NOTICE)
    );
    for h in HEADERS {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    let _ = write!(o, "</tr>");
    for r in rows {
        let _ = write!(
            o,
            "<tr{}>",
            if r.published { " class=published" } else { "" }
        );
        for c in cells(r) {
            let _ = write!(
                o,
                "<td>{}</td>",
                esc(&c.replace("*(published)*", "(published)"))
            );
        }
        let _ = write!(o, "</tr>");
    }
    let _ = write!(o, "</table><p>{}</p></body></html>", esc(FOOTNOTE));
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_interval_by_hand() {
        // p = 0.5, n = 100: centre 0.5, half-width z*sqrt(.25/100 + z^2/40000)/(1 + z^2/100)
        let w = wilson(0.5, 100);
        assert!(
            (w.low - 0.4038).abs() < 1e-3 && (w.high - 0.5962).abs() < 1e-3,
            "{w:?}"
        );
        // The reference's 95% on 325 images.
        let r = wilson(0.95, 325);
        assert!(
            r.low > 0.91 && r.low < 0.93 && r.high > 0.96 && r.high < 0.98,
            "{r:?}"
        );
    }

    #[test]
    fn published_rows_are_labelled_and_match_the_reference() {
        let rows = published_rows();
        let acc: Vec<f64> = rows.iter().map(|r| r.accuracy.estimate).collect();
        assert_eq!(acc, vec![0.883, 0.939, 0.95]);
        assert!(rows.iter().all(|r| r.published && r.n == 325));
        let md = to_markdown(&rows);
        assert_eq!(md.matches("*(published)*").count(), 3);
        assert!(md.contains("88.3% ["));
        assert!(to_html(&rows).contains("class=published"));
    }
}
