//! `artemis predict`: classify files and folders with a trained run. Files are streamed in
//! chunks (decoded on all cores, then classified), so memory stays flat however large the
//! folder; a file that cannot be read gets its own error row and the rest go on.

use crate::error::Result;
use crate::infer::{Classifier, top1};
use artemis_data::image_io::{DEFAULT_MAX_PIXELS, read_rgb};
use artemis_data::scan::list_inputs;
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;

/// Files decoded and classified together.
pub const CHUNK: usize = 64;

/// One input's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct PredictRow {
    pub input: PathBuf,
    /// Predicted class name, absent on error.
    pub class: Option<String>,
    /// Probability of the predicted class.
    pub confidence: Option<f32>,
    /// `class name -> probability`, in class order.
    pub probabilities: Option<Vec<(String, f32)>>,
    /// Whether the probabilities are temperature-scaled (the run was calibrated by `eval`).
    pub calibrated: bool,
    /// Why the input could not be classified.
    pub error: Option<String>,
}

/// Classifies every file under `inputs`, calling `on_row` as each chunk finishes.
pub fn predict(
    clf: &Classifier,
    inputs: &[PathBuf],
    mut on_row: impl FnMut(&PredictRow),
) -> Result<Vec<PredictRow>> {
    let (files, problems) = list_inputs(inputs);
    let mut rows = Vec::with_capacity(files.len() + problems.len());
    for p in problems {
        let row = PredictRow {
            input: p.path,
            class: None,
            confidence: None,
            probabilities: None,
            calibrated: false,
            error: Some(p.reason),
        };
        on_row(&row);
        rows.push(row);
    }
    let pb = crate::progress::bar(files.len() as u64, "predict");
    for chunk in files.chunks(CHUNK) {
        let decoded: Vec<std::result::Result<image::RgbImage, String>> = chunk
            .par_iter()
            .map(|p| {
                read_rgb(p, DEFAULT_MAX_PIXELS)
                    .map(|img| clf.prepare(&img))
                    .map_err(|e| e.to_string())
            })
            .collect();
        let ok: Vec<&image::RgbImage> = decoded.iter().filter_map(|d| d.as_ref().ok()).collect();
        let mut probs = clf.probabilities(&ok)?.into_iter();
        for (path, d) in chunk.iter().zip(&decoded) {
            let row = match d {
                Ok(_) => {
                    let p = probs.next().unwrap_or_default();
                    let (i, conf) = top1(&p);
                    PredictRow {
                        input: path.clone(),
                        class: clf.classes().get(i).cloned(),
                        confidence: Some(conf),
                        probabilities: Some(
                            clf.classes()
                                .iter()
                                .cloned()
                                .zip(p.iter().cloned())
                                .collect(),
                        ),
                        calibrated: clf.calibration.is_some(),
                        error: None,
                    }
                }
                Err(e) => PredictRow {
                    input: path.clone(),
                    class: None,
                    confidence: None,
                    probabilities: None,
                    calibrated: false,
                    error: Some(e.clone()),
                },
            };
            on_row(&row);
            rows.push(row);
        }
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    Ok(rows)
}
