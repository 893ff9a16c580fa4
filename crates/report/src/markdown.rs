//! `report.md` and the summary printed after `eval`: Markdown renderings of an
//! [`EvalReport`].

use crate::metrics::Metrics;
use crate::stats::{Bootstrap, CoveragePoint, ECE_BINS};
use crate::types::{CLASS_COLUMNS, EvalReport, View, opt3};
use artemis_data::labels::{Plane, Task, TumorType};
use std::fmt::Write as _;

fn ci_text(b: &Option<Bootstrap>, f: impl Fn(&Bootstrap) -> crate::stats::Interval) -> String {
    match b {
        Some(b) => {
            let i = f(b);
            format!(" [{:.4}, {:.4}]", i.low, i.high)
        }
        None => String::new(),
    }
}

fn metrics_table(o: &mut String, title: &str, v: &View) {
    let m = &v.metrics;
    let _ = writeln!(o, "### {title}\n");
    let _ = writeln!(
        o,
        "accuracy **{:.4}**{} (n = {}), macro F1 **{:.4}**{}, weighted F1 {:.4}, \
         macro ROC-AUC {}, macro PR-AUC {}\n",
        m.accuracy,
        ci_text(&v.bootstrap, |b| b.accuracy),
        m.n,
        m.macro_avg.f1,
        ci_text(&v.bootstrap, |b| b.macro_f1),
        m.weighted_avg.f1,
        opt3(v.separation.macro_roc_auc),
        opt3(v.separation.macro_pr_auc),
    );
    if let Some(b) = &v.bootstrap {
        let _ = writeln!(
            o,
            "Brackets: 95% percentile-bootstrap intervals ({} resamples, seed {}).\n",
            b.resamples, b.seed
        );
    }
    let _ = writeln!(o, "| {} |", CLASS_COLUMNS.join(" | "));
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let rows = v.class_rows();
    let last = rows.len() - 1;
    for (i, r) in rows.iter().enumerate() {
        let mut cells = r.clone();
        if i == last {
            cells[0] = format!("*{}*", cells[0]);
        }
        let _ = writeln!(o, "| {} |", cells.join(" | "));
    }
    let _ = writeln!(
        o,
        "| *weighted avg* | {:.3} | {:.3} | | {:.3} | | | {} |\n",
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

/// Coverage table rows as Markdown.
fn coverage_md(o: &mut String, points: &[CoveragePoint]) {
    let _ = writeln!(
        o,
        "| abstain below | coverage | accuracy on answered | answered |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|");
    for p in points {
        let _ = writeln!(
            o,
            "| {:.2} | {:.1}% | {} | {} |",
            p.threshold,
            100.0 * p.coverage,
            p.accuracy
                .map_or("-".into(), |a| format!("{:.1}%", 100.0 * a)),
            p.covered
        );
    }
    let _ = writeln!(o);
}

impl EvalReport {
    pub fn to_markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# artemis evaluation\n");
        let _ = writeln!(o, "> **{}**\n", self.notice);
        let _ = writeln!(o, "- run: `{}`", self.run.display());
        let _ = writeln!(o, "- model: {} (task {})", self.description, self.task);
        if !self.engine.is_empty() {
            let _ = writeln!(o, "- inference: {}", self.engine);
        }
        let _ = writeln!(o, "- evaluated on: {}", self.source);
        if self.tta {
            let _ = writeln!(
                o,
                "- test-time augmentation: probabilities averaged over the image, its mirror \
                 and four 4% shifts"
            );
        }
        if let Some(p) = &self.data.protocol {
            let _ = writeln!(
                o,
                "- manifest: `{}` (protocol {p}, seed {}){}",
                self.data.manifest.display(),
                self.data.seed.unwrap_or_default(),
                if self.data.manifest_matches_run == Some(false) {
                    " **changed since training**"
                } else {
                    ""
                }
            );
        }
        let _ = writeln!(o, "- files skipped (unreadable): {}\n", self.skipped.len());
        if let Some(ov) = &self.overlap {
            let _ = writeln!(
                o,
                "**Overlap with the training data:** {}.\n",
                ov.sentence()
            );
        }
        if let Some(m) = &self.metrics
            && self.task == Task::TypePlane
            && m.metrics.per_class.len() == 12
        {
            let _ = writeln!(
                o,
                "### Precision / recall (support) by type and plane\n\nThe layout of the \
                 reference project's results table.\n"
            );
            let _ = writeln!(o, "{}", type_plane_grid(&m.metrics));
        }
        for (title, v) in self.views() {
            metrics_table(&mut o, &title, v);
        }
        let c = &self.calibration;
        let _ = writeln!(o, "### Calibration\n");
        match &c.fitted_on {
            Some(f) => {
                let _ = writeln!(o, "Temperature {:.3}, fitted on the {f}.\n", c.temperature);
            }
            None => {
                let _ = writeln!(o, "Not calibrated: probabilities are the raw softmax.\n");
            }
        }
        let _ = writeln!(o, "| probabilities | ECE ({ECE_BINS} bins) | MCE | NLL |");
        let _ = writeln!(o, "|---|---:|---:|---:|");
        let _ = writeln!(
            o,
            "| softmax | {:.4} | {:.4} | {:.4} |",
            c.before.ece, c.before.mce, c.before.nll
        );
        if c.fitted_on.is_some() {
            let _ = writeln!(
                o,
                "| temperature-scaled | {:.4} | {:.4} | {:.4} |",
                c.after.ece, c.after.mce, c.after.nll
            );
        }
        let _ = writeln!(o, "\n### Coverage when the model may abstain\n");
        coverage_md(&mut o, &self.coverage);
        if let Some(a) = &self.abstain {
            let _ = writeln!(o, "At the chosen threshold:\n");
            coverage_md(&mut o, std::slice::from_ref(a));
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
            if let Some(v) = m {
                let m = &v.metrics;
                let _ = writeln!(
                    o,
                    "  {name:<6} accuracy {:.4}{}  macro F1 {:.4}{}  ROC-AUC {}  (n = {})",
                    m.accuracy,
                    ci_text(&v.bootstrap, |b| b.accuracy),
                    m.macro_avg.f1,
                    ci_text(&v.bootstrap, |b| b.macro_f1),
                    opt3(v.separation.macro_roc_auc),
                    m.n
                );
            }
        }
        let c = &self.calibration;
        let _ = writeln!(
            o,
            "  ECE {:.4} (softmax {:.4}, temperature {:.3}{})",
            c.after.ece,
            c.before.ece,
            c.temperature,
            if c.fitted_on.is_some() {
                ""
            } else {
                ", not calibrated"
            }
        );
        if let Some(a) = &self.abstain {
            let _ = writeln!(
                o,
                "  abstain below {:.2}: coverage {:.1}%, accuracy {}",
                a.threshold,
                100.0 * a.coverage,
                a.accuracy
                    .map_or("-".into(), |x| format!("{:.1}%", 100.0 * x))
            );
        }
        if let Some(ov) = &self.overlap {
            let _ = writeln!(
                o,
                "  overlap with training data: {} files ({} exact, {} near){}",
                ov.files.len(),
                ov.exact,
                ov.near,
                if ov.excluded {
                    ", excluded"
                } else {
                    ", included"
                }
            );
            if let Some((n, acc)) = ov.unseen_accuracy(&self.predictions) {
                let _ = writeln!(
                    o,
                    "  task accuracy on the {n} files that copy no training or validation image: {acc:.4} \
                     (--exclude-duplicates for the full report on them)"
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
    use crate::metrics::Confusion;

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
