//! `artemis compare --paired`: two recipes compared image by image on the predictions they made
//! for the same images ([`artemis_report::paired`] has the statistics).
//!
//! A side of a comparison is a folder of predictions: a `cv` folder (`cv.json`, its
//! out-of-fold predictions), a run folder evaluated on its test split (`report.json`), or an
//! `eval` output folder (`report.json`). Rows are matched by image path; an image only one
//! side scored is left out and counted, and an image the two sides label differently is
//! refused (the two did not read the same data).

use crate::cv::CvReport;
use crate::error::{EngineError, Result};
use crate::run::read_json;
use artemis_data::labels::Label;
use artemis_report::paired::{PairedRow, PairedScore, compare};
use artemis_report::{EvalReport, EvalRow};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A paired comparison, pooled over every pair of folders given.
#[derive(Debug, Clone, Serialize)]
pub struct Paired {
    /// The folders, `(A, B)` for each pair.
    pub pairs: Vec<(PathBuf, PathBuf)>,
    /// Rows scored by only one side of a pair.
    pub left_out: usize,
    pub views: Vec<PairedView>,
}

/// One view of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct PairedView {
    /// `as scored` (the folders' own classes) or `tumor type` (the predicted class's type).
    pub view: String,
    pub score: PairedScore,
}

/// The prediction rows of a `cv` folder, a run folder or an `eval` output folder.
pub fn prediction_rows(dir: &Path) -> Result<Vec<EvalRow>> {
    let cv = dir.join("cv.json");
    if cv.exists() {
        let r: CvReport = read_json(&cv)?;
        return Ok(r.predictions.into_iter().map(|(_, row)| row).collect());
    }
    let report = dir.join("report.json");
    if report.exists() {
        let r: EvalReport = read_json(&report)?;
        return Ok(r.predictions);
    }
    Err(EngineError::Config(format!(
        "{}: neither cv.json nor report.json (give a `cv` folder, or a run or eval folder \
         after `artemis eval`)",
        dir.display()
    )))
}

/// Whether the predicted class has the true class's tumor type; `None` when a name carries
/// no type (the plane task).
fn type_correct(r: &EvalRow) -> Option<bool> {
    let t = Label::from_class_dir(&r.truth)?.tumor;
    let p = Label::from_class_dir(&r.predicted)?.tumor;
    Some(t == p)
}

/// Both sides' rows for each image of one pair, and the count of images only one side has.
type Matched = (Vec<(PathBuf, EvalRow, EvalRow)>, usize);

fn match_rows(a: (&Path, Vec<EvalRow>), b: (&Path, Vec<EvalRow>)) -> Result<Matched> {
    let mut bs: HashMap<PathBuf, EvalRow> = b.1.into_iter().map(|r| (r.path.clone(), r)).collect();
    let mut out = Vec::new();
    let mut left_out = 0;
    for ra in a.1 {
        let Some(rb) = bs.remove(&ra.path) else {
            left_out += 1;
            continue;
        };
        if ra.truth != rb.truth {
            return Err(EngineError::Config(format!(
                "{}: labelled {} in {} but {} in {}: the two did not score the same data",
                ra.path.display(),
                ra.truth,
                a.0.display(),
                rb.truth,
                b.0.display()
            )));
        }
        out.push((ra.path.clone(), ra, rb));
    }
    Ok((out, left_out + bs.len()))
}

/// B against A for each pair `(dirs[0], dirs[1])`, `(dirs[2], dirs[3])`, ..., pooled: one
/// view as scored and, when every class name carries a tumor type and some carry a plane
/// too, one by tumor type.
pub fn paired(dirs: &[PathBuf], resamples: usize, seed: u64) -> Result<Paired> {
    if dirs.len() < 2 || !dirs.len().is_multiple_of(2) {
        return Err(EngineError::Config(format!(
            "--paired takes folders two at a time (A B, or A1 B1 A2 B2 ...), got {}",
            dirs.len()
        )));
    }
    let mut group_of: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let (mut scored, mut typed) = (Vec::new(), Vec::new());
    let mut all_typed = true;
    let mut any_plane = false;
    let mut left_out = 0;
    let mut pairs = Vec::new();
    for pair in dirs.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (rows, lost) = match_rows((a, prediction_rows(a)?), (b, prediction_rows(b)?))?;
        if rows.is_empty() {
            return Err(EngineError::Config(format!(
                "{} and {} scored no image in common",
                a.display(),
                b.display()
            )));
        }
        left_out += lost;
        pairs.push((a.clone(), b.clone()));
        for (path, ra, rb) in rows {
            let next = group_of.len();
            let group = *group_of.entry(path).or_insert(next);
            scored.push(PairedRow {
                group,
                a_correct: ra.correct,
                b_correct: rb.correct,
            });
            any_plane |= Label::from_class_dir(&ra.truth).is_some_and(|l| l.plane.is_some());
            match (type_correct(&ra), type_correct(&rb)) {
                (Some(x), Some(y)) => typed.push(PairedRow {
                    group,
                    a_correct: x,
                    b_correct: y,
                }),
                _ => all_typed = false,
            }
        }
    }
    let view = |name: &str, rows: &[PairedRow]| PairedView {
        view: name.into(),
        score: compare(rows, resamples, seed),
    };
    let mut views = vec![view("as scored", &scored)];
    if all_typed && any_plane {
        views.push(view("tumor type", &typed));
    }
    Ok(Paired {
        pairs,
        left_out,
        views,
    })
}

fn pct(x: f64) -> String {
    format!("{:.2}", 100.0 * x)
}

/// The comparison as Markdown.
pub fn to_markdown(p: &Paired) -> String {
    let mut o = String::new();
    for (i, (a, b)) in p.pairs.iter().enumerate() {
        let _ = writeln!(
            o,
            "- pair {}: A = `{}`, B = `{}`",
            i + 1,
            a.display(),
            b.display()
        );
    }
    let _ = writeln!(
        o,
        "\n| view | rows (images) | A | B | B - A, points [95% CI] | right only in A | right only in B | McNemar p |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for v in &p.views {
        let s = &v.score;
        let _ = writeln!(
            o,
            "| {} | {} ({}) | {}% | {}% | {:+.2} [{:+.2}, {:+.2}] | {} | {} | {} |",
            v.view,
            s.n,
            s.groups,
            pct(s.a_accuracy),
            pct(s.b_accuracy),
            100.0 * s.difference.estimate,
            100.0 * s.difference.low,
            100.0 * s.difference.high,
            s.a_only,
            s.b_only,
            s.mcnemar_p
                .map_or("– (images repeat)".into(), |p| format!("{p:.3}"))
        );
    }
    if let Some(v) = p.views.first() {
        let _ = writeln!(
            o,
            "\nPaired percentile bootstrap, {} resamples of the images (seed {}; an image \
             scored by several pairs moves with all its rows). {} rows scored by one side only \
             were left out.",
            v.score.resamples, v.score.seed, p.left_out
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, truth: &str, predicted: &str) -> EvalRow {
        EvalRow {
            path: path.into(),
            truth: truth.into(),
            predicted: predicted.into(),
            confidence: 0.9,
            correct: truth == predicted,
            top3: Vec::new(),
        }
    }

    #[test]
    fn rows_match_by_path_and_a_relabelled_image_is_refused() {
        let a = vec![
            row("x.jpg", "glioma_coronal", "glioma_sagittal"),
            row("y.jpg", "no_transverse", "no_transverse"),
            row("only-a.jpg", "no_transverse", "no_transverse"),
        ];
        let b = vec![
            row("y.jpg", "no_transverse", "meningioma_transverse"),
            row("x.jpg", "glioma_coronal", "glioma_coronal"),
        ];
        let (m, lost) = match_rows((Path::new("A"), a.clone()), (Path::new("B"), b)).unwrap();
        assert_eq!(lost, 1);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].0, PathBuf::from("x.jpg"));
        assert!(!m[0].1.correct && m[0].2.correct);
        // The plane slip is right by type.
        assert_eq!(type_correct(&m[0].1), Some(true));
        let relabelled = vec![row("x.jpg", "meningioma_coronal", "glioma_coronal")];
        let e = match_rows((Path::new("A"), a), (Path::new("B"), relabelled)).unwrap_err();
        assert!(e.to_string().contains("x.jpg"), "{e}");
    }
}
