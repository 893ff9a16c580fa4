//! `artemis predict`: classify JPEG/PNG images, DICOM files (one row per frame) and NIfTI
//! volumes (one row per slice, plus a per-volume summary), optionally with test-time
//! augmentation and a Grad-CAM heat map per picture.
//!
//! Files are streamed in chunks (decoded on all cores, then classified), so memory stays flat
//! however large the folder; a file that cannot be read gets its own error row naming the file
//! and the problem, and the rest go on. The JSON output is versioned ([`SCHEMA`], documented in
//! `docs/predict-json.md`).

use crate::error::{EngineError, Result};
use crate::infer::{Classifier, top1};
use artemis_data::dicom::Identifiers;
use artemis_data::input::InputOptions;
use artemis_data::scan::list_inputs;
use artemis_explain::{OverlayStyle, overlay_png};
use image::RgbImage;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Version of the `predict --json` document.
pub const SCHEMA: &str = "artemis.predict/2";

/// Files decoded together (a NIfTI volume counts as one file).
pub const CHUNK: usize = 32;
/// Pictures classified together.
pub const BATCH: usize = 32;

/// Options of a prediction run.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    /// Write a Grad-CAM heat map PNG per picture into this folder.
    pub explain_dir: Option<PathBuf>,
    /// Explain this class instead of the predicted one.
    pub explain_class: Option<usize>,
    /// Average over test-time augmentation views.
    pub tta: bool,
    /// How files are opened: pixel limit, DICOM identifiers (reported only when asked for),
    /// the slices of a volume.
    pub input: InputOptions,
    /// Colour-map weight of the heat maps.
    pub opacity: f32,
    /// Only these files (one shard of a prediction split over a cluster, less the files a
    /// resumed shard file holds); every file when `None`.
    pub select: Option<crate::shard::Selection>,
}

impl Default for PredictConfig {
    fn default() -> Self {
        PredictConfig {
            explain_dir: None,
            explain_class: None,
            tta: false,
            input: InputOptions::default(),
            opacity: 0.45,
            select: None,
        }
    }
}

/// One classified picture (or an input that could not be read).
#[derive(Debug, Clone, Serialize)]
pub struct PredictRow {
    #[serde(serialize_with = "artemis_data::fsutil::lossy::path")]
    pub input: PathBuf,
    /// DICOM frame index (0-based), for DICOM inputs.
    pub frame: Option<u32>,
    /// NIfTI slice index along the slicing axis, for volumes.
    pub slice: Option<usize>,
    /// Predicted class name, absent on error.
    pub class: Option<String>,
    /// Probability of the predicted class.
    pub confidence: Option<f32>,
    /// `[class name, probability]` pairs in class order.
    pub probabilities: Option<Vec<(String, f32)>>,
    /// Whether the probabilities are temperature-scaled (the run was calibrated by `eval`).
    pub calibrated: bool,
    /// Whether the probabilities are averaged over test-time augmentation views.
    pub tta: bool,
    /// The heat map of this picture: the PNG file `predict --explain` wrote, or (from the web
    /// API) the PNG as a `data:` URI.
    pub heatmap: Option<String>,
    /// DICOM identifiers, only with `--show-identifiers`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identifiers: Option<Identifiers>,
    /// Why the input could not be classified.
    pub error: Option<String>,
    /// What the decoder had to say about a file it read anyway (a damaged JPEG decoded
    /// leniently: the prediction may rest on a partly wrong picture); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

impl PredictRow {
    /// A classified picture from its class probabilities (`probs` in `classes` order).
    pub fn classified(input: &Path, probs: &[f32], classes: &[String], calibrated: bool) -> Self {
        let (i, conf) = top1(probs);
        PredictRow {
            class: classes.get(i).cloned(),
            confidence: Some(conf),
            probabilities: Some(classes.iter().cloned().zip(probs.iter().cloned()).collect()),
            calibrated,
            ..PredictRow::about(input)
        }
    }

    fn failed(input: &Path, error: String) -> PredictRow {
        PredictRow {
            error: Some(error),
            ..PredictRow::about(input)
        }
    }

    /// A row naming `input` and nothing else yet.
    fn about(input: &Path) -> PredictRow {
        PredictRow {
            input: input.to_path_buf(),
            frame: None,
            slice: None,
            class: None,
            confidence: None,
            probabilities: None,
            calibrated: false,
            tta: false,
            heatmap: None,
            identifiers: None,
            error: None,
            warning: None,
        }
    }
}

/// Per-volume summary of a NIfTI input.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeSummary {
    pub input: PathBuf,
    pub dims: [usize; 3],
    /// Voxel axis the slices are perpendicular to, and its anatomical plane when known.
    pub axis: usize,
    pub plane: Option<String>,
    pub orientation: String,
    pub slices: usize,
    /// `[class, number of slices predicted as it]`, most frequent first.
    pub class_counts: Vec<(String, usize)>,
    /// The most confident slices: `[slice, class, probability]`.
    pub most_confident: Vec<(usize, String, f32)>,
}

/// The `predict --json` document (schema [`SCHEMA`], documented in `docs/predict-json.md`).
#[derive(Debug, Serialize)]
pub struct PredictDocument<'a> {
    pub schema: &'static str,
    pub notice: &'static str,
    pub run: &'a Path,
    /// The temperature dividing the logits (1 when not calibrated).
    pub temperature: f64,
    pub engine: String,
    pub tta: bool,
    pub classes: &'a [String],
    pub rows: &'a [PredictRow],
    pub volumes: &'a [VolumeSummary],
}

impl<'a> PredictDocument<'a> {
    pub fn new(clf: &'a Classifier, tta: bool, out: &'a PredictOutput) -> Self {
        PredictDocument {
            schema: SCHEMA,
            notice: artemis_report::NOTICE,
            run: &clf.run.dir,
            temperature: clf.temperature(),
            engine: clf.engine(),
            tta,
            classes: clf.classes(),
            rows: &out.rows,
            volumes: &out.volumes,
        }
    }
}

/// Everything a prediction run produced.
#[derive(Debug, Clone, Serialize)]
pub struct PredictOutput {
    pub rows: Vec<PredictRow>,
    pub volumes: Vec<VolumeSummary>,
}

/// A picture to classify and where it came from.
struct Unit {
    input: PathBuf,
    frame: Option<u32>,
    slice: Option<usize>,
    /// The picture as decoded (heat maps are drawn over it; empty when not explaining).
    image: RgbImage,
    /// The picture at the network's input size.
    prepared: RgbImage,
    identifiers: Option<Identifiers>,
    /// The decoder's warning about the file.
    warning: Option<String>,
}

/// One file decoded into pictures, or its error.
enum Decoded {
    Units(Vec<Unit>, Option<artemis_data::volume::Volume>),
    Failed(String),
}

/// `path` is a regular file: [`list_inputs`] reports everything else before decoding.
fn decode(path: &Path, cfg: &PredictConfig) -> Decoded {
    let opened = match artemis_data::input::open(path, &cfg.input) {
        Ok(o) => o,
        Err(e) => return Decoded::Failed(e.to_string()),
    };
    let units = (opened.pictures.into_iter())
        .map(|p| Unit {
            input: path.to_path_buf(),
            frame: p.frame,
            slice: p.slice,
            image: p.image,
            prepared: RgbImage::new(0, 0),
            identifiers: opened.identifiers.clone(),
            warning: opened.warning.clone(),
        })
        .collect();
    Decoded::Units(units, opened.volume)
}

/// A file name for a unit's heat map, unique within the run.
fn heatmap_name(u: &Unit, taken: &mut HashSet<String>) -> String {
    let name = u
        .input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "input".into());
    let stem = name
        .trim_end_matches(".gz")
        .rsplit_once('.')
        .map_or(name.as_str(), |(s, _)| s)
        .to_string();
    let base = match (u.frame, u.slice) {
        (Some(f), _) => format!("{stem}_frame{f:03}"),
        (_, Some(s)) => format!("{stem}_slice{s:04}"),
        _ => stem,
    };
    let mut candidate = format!("{base}.png");
    let mut k = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{base}-{k}.png");
        k += 1;
    }
    candidate
}

/// One picture classified and explained: what the web app and other library users get.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The class the map explains (the predicted one unless another was asked for).
    pub class: usize,
    /// Probabilities in class order (calibrated when the run is).
    pub probabilities: Vec<f32>,
    pub cam: artemis_explain::Cam,
    /// The heat-map picture (PNG bytes).
    pub png: Vec<u8>,
}

/// The heat-map style for a class and its probability.
fn style(clf: &Classifier, class: usize, p: f32, opacity: f32) -> OverlayStyle {
    OverlayStyle {
        opacity,
        title: format!(
            "{} {p:.3}{}",
            clf.classes()[class],
            if clf.calibrated() {
                " (calibrated)"
            } else {
                ""
            }
        ),
        notice: artemis_report::notice::NOTICE.into(),
        ..OverlayStyle::default()
    }
}

/// Classifies one decoded picture (as the user gave it) and draws its Grad-CAM heat map over
/// the picture the network saw before its resize (cropped, for a run with `--framing head`).
pub fn explain(
    clf: &Classifier,
    image: &RgbImage,
    class: Option<usize>,
    opacity: f32,
) -> Result<Explanation> {
    explain_framed(clf, &clf.framed(image), class, opacity)
}

/// [`explain`] of a picture already framed by the classifier ([`Classifier::framed`]), for a
/// caller that shows the framed picture too.
pub fn explain_framed(
    clf: &Classifier,
    framed: &RgbImage,
    class: Option<usize>,
    opacity: f32,
) -> Result<Explanation> {
    let prepared = clf.fit(framed);
    let (mut cams, mut probs) =
        clf.explain(&[&prepared], |p| class.unwrap_or_else(|| top1(p).0))?;
    let (cam, probabilities) = cams
        .pop()
        .zip(probs.pop())
        .ok_or_else(|| EngineError::Tensor("no map".into()))?;
    let class = cam.class;
    let st = style(clf, class, probabilities[class], opacity);
    let (input, resize) = clf.map_geometry(framed);
    let png = overlay_png(framed, &cam, input, resize, &st)
        .map_err(|e| EngineError::Tensor(e.to_string()))?;
    Ok(Explanation {
        class,
        probabilities,
        cam,
        png,
    })
}

/// Classifies (and explains) a batch of pictures.
fn classify(
    clf: &Classifier,
    units: &[Unit],
    cfg: &PredictConfig,
    taken: &mut HashSet<String>,
) -> Result<Vec<PredictRow>> {
    let refs: Vec<&RgbImage> = units.iter().map(|u| &u.prepared).collect();
    let classes = clf.classes();
    let (probs, cams) = match (&cfg.explain_dir, cfg.tta) {
        (Some(_), false) => {
            let (cams, probs) =
                clf.explain(&refs, |p| cfg.explain_class.unwrap_or_else(|| top1(p).0))?;
            (probs, Some(cams))
        }
        // With TTA the class comes from the averaged views; the map explains it on the
        // picture as given.
        (Some(_), true) => {
            let probs = clf.probabilities_tta(&refs)?;
            let targets: Vec<usize> = probs
                .iter()
                .map(|p: &Vec<f32>| cfg.explain_class.unwrap_or_else(|| top1(p).0))
                .collect();
            (probs, Some(clf.cams(&refs, &targets)?))
        }
        (None, true) => (clf.probabilities_tta(&refs)?, None),
        (None, false) => (clf.probabilities(&refs)?, None),
    };
    let mut heatmaps: Vec<Option<String>> = vec![None; units.len()];
    if let (Some(dir), Some(cams)) = (&cfg.explain_dir, cams) {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
        let targets: Vec<usize> = cams.iter().map(|c| c.class).collect();
        for (i, (u, cam)) in units.iter().zip(&cams).enumerate() {
            let st = style(clf, targets[i], probs[i][targets[i]], cfg.opacity);
            let framed = clf.framed(&u.image);
            let (input, resize) = clf.map_geometry(&framed);
            let png = overlay_png(&framed, cam, input, resize, &st)
                .map_err(|e| EngineError::Tensor(e.to_string()))?;
            let path = dir.join(heatmap_name(u, taken));
            artemis_data::fsutil::write_atomic(&path, &png)?;
            heatmaps[i] = Some(path.display().to_string());
        }
    }
    Ok(units
        .iter()
        .zip(probs)
        .zip(heatmaps)
        .map(|((u, p), heatmap)| PredictRow {
            frame: u.frame,
            slice: u.slice,
            tta: cfg.tta,
            heatmap,
            identifiers: u.identifiers.clone(),
            warning: u.warning.clone(),
            ..PredictRow::classified(&u.input, &p, classes, clf.calibrated())
        })
        .collect())
}

fn summarise(v: &artemis_data::volume::Volume, input: &Path, rows: &[PredictRow]) -> VolumeSummary {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut conf: Vec<(usize, String, f32)> = Vec::new();
    for r in rows {
        if let (Some(c), Some(p), Some(s)) = (&r.class, r.confidence, r.slice) {
            *counts.entry(c.clone()).or_default() += 1;
            conf.push((s, c.clone(), p));
        }
    }
    let mut class_counts: Vec<(String, usize)> = counts.into_iter().collect();
    class_counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    conf.sort_by(|a, b| b.2.total_cmp(&a.2));
    conf.truncate(5);
    VolumeSummary {
        input: input.to_path_buf(),
        dims: v.dims,
        axis: v.axis,
        plane: v.plane.map(|p| p.name().to_string()),
        orientation: v.orientation.clone(),
        slices: rows.len(),
        class_counts,
        most_confident: conf,
    }
}

/// Classifies every file under `inputs`, calling `on_row` as each picture is done.
pub fn predict(
    clf: &Classifier,
    inputs: &[PathBuf],
    cfg: &PredictConfig,
    mut on_row: impl FnMut(&PredictRow),
) -> Result<PredictOutput> {
    let (mut files, mut problems) = list_inputs(inputs);
    if let Some(sel) = &cfg.select {
        files.retain(|f| sel.keeps(f));
        problems.retain(|p| sel.keeps(&p.path));
    }
    let mut out = PredictOutput {
        rows: Vec::with_capacity(files.len() + problems.len()),
        volumes: Vec::new(),
    };
    for p in problems {
        // Scan problems carry the reason alone; a row's error names its file.
        let row = PredictRow::failed(&p.path, format!("{}: {}", p.path.display(), p.reason));
        on_row(&row);
        out.rows.push(row);
    }
    let mut taken = HashSet::new();
    let pb = crate::progress::bar(files.len() as u64, "predict");
    // Up to CHUNK files decoded together; a volume (hundreds of slices) is a chunk of its own,
    // so at most one volume's pictures are in memory at a time.
    let mut groups: Vec<&[PathBuf]> = Vec::new();
    let mut start = 0;
    for (i, f) in files.iter().enumerate() {
        if artemis_data::volume::is_nifti_path(f) {
            if start < i {
                groups.push(&files[start..i]);
            }
            groups.push(&files[i..=i]);
            start = i + 1;
        } else if i + 1 - start == CHUNK {
            groups.push(&files[start..=i]);
            start = i + 1;
        }
    }
    if start < files.len() {
        groups.push(&files[start..]);
    }
    // Decoding (all cores) runs one chunk ahead of classification: while the network works
    // on chunk i, chunk i + 1 is read, decoded and resized, so neither waits for the other.
    // At most two chunks of pictures are in memory.
    let explaining = cfg.explain_dir.is_some();
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Decoded>>(1);
    std::thread::scope(|scope| -> Result<()> {
        let groups_ref = &groups;
        scope.spawn(move || {
            for chunk in groups_ref {
                let decoded: Vec<Decoded> = chunk
                    .par_iter()
                    .map(|p| prepare(decode(p, cfg), clf, explaining))
                    .collect();
                if tx.send(decoded).is_err() {
                    break; // the classifier stopped on an error
                }
            }
        });
        for (chunk, decoded) in groups.iter().zip(rx) {
            classify_chunk(clf, chunk, decoded, cfg, &mut taken, &mut out, &mut on_row)?;
            pb.inc(chunk.len() as u64);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    Ok(out)
}

/// Resizes every picture of a decoded file to the network's input (on the decoding thread),
/// keeping the original only when a heat map will be drawn over it.
fn prepare(d: Decoded, clf: &Classifier, keep_original: bool) -> Decoded {
    match d {
        // In parallel too: a volume or a multi-frame DICOM is one file of many pictures.
        Decoded::Units(units, v) => Decoded::Units(
            units
                .into_par_iter()
                .map(|mut u| {
                    u.prepared = clf.prepare(&u.image);
                    if !keep_original {
                        u.image = RgbImage::new(0, 0);
                    }
                    u
                })
                .collect(),
            v,
        ),
        failed => failed,
    }
}

/// Classifies one decoded chunk and emits its rows in file order.
fn classify_chunk(
    clf: &Classifier,
    chunk: &[PathBuf],
    decoded: Vec<Decoded>,
    cfg: &PredictConfig,
    taken: &mut HashSet<String>,
    out: &mut PredictOutput,
    on_row: &mut impl FnMut(&PredictRow),
) -> Result<()> {
    // Pictures of the whole chunk are classified in batches; rows keep file order.
    let mut units = Vec::new();
    let mut slots: Vec<(usize, std::result::Result<usize, String>)> = Vec::new();
    let mut volumes = Vec::new();
    for (f, d) in decoded.into_iter().enumerate() {
        match d {
            Decoded::Failed(e) => slots.push((f, Err(e))),
            Decoded::Units(us, v) => {
                slots.push((f, Ok(us.len())));
                units.extend(us);
                if let Some(v) = v {
                    volumes.push((f, v));
                }
            }
        }
    }
    let mut rows = Vec::with_capacity(units.len());
    for batch in units.chunks(BATCH) {
        rows.extend(classify(clf, batch, cfg, taken)?);
    }
    let mut rows = rows.into_iter();
    for (f, slot) in slots {
        let first = out.rows.len();
        match slot {
            Err(e) => {
                let row = PredictRow::failed(&chunk[f], e);
                on_row(&row);
                out.rows.push(row);
            }
            Ok(n) => {
                for row in rows.by_ref().take(n) {
                    on_row(&row);
                    out.rows.push(row);
                }
            }
        }
        if let Some((_, v)) = volumes.iter().find(|(g, _)| *g == f) {
            out.volumes
                .push(summarise(v, &chunk[f], &out.rows[first..]));
        }
    }
    Ok(())
}
