//! `artemis eval`: everything a reviewer asks of a trained run on a split of its manifest or on
//! an external folder: per-class metrics in the model's 12-class task and the 4-class / 3-class
//! views, one-vs-rest ROC-AUC and PR-AUC, seeded bootstrap confidence intervals, calibration
//! (ECE, reliability diagram, temperature scaling fitted on the validation split), coverage
//! against accuracy when the model may abstain, the worst mistakes, and for external folders
//! the overlap with the training images. Writes `report.json`, `report.md`, a self-contained
//! `report.html` and the pictures.

use crate::calibrate::{CALIBRATION, Calibration};
use crate::dataset::{Item, describe_failures, manifest_items, read_resized, stream};
use crate::error::{EngineError, Result};
use crate::infer::{Classifier, softmax, top1};
use crate::overlap::{OverlapReport, find_overlap};
use crate::run::{Run, write_json};
use artemis_data::labels::{LabelMap, Plane, Task, TumorType};
use artemis_data::manifest::{Manifest, Split};
use artemis_data::scan::scan_mapped;
use artemis_report::metrics::Confusion;
pub use artemis_report::notice::NOTICE;
use artemis_report::stats::{
    COVERAGE_THRESHOLDS, CoveragePoint, ECE_BINS, bootstrap, calibration, coverage_at,
    coverage_curve, roc_curves, separation,
};
pub use artemis_report::{
    CalibrationReport, DataSummary, EvalReport, EvalRow, REPORT_SCHEMA, View,
};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// What to evaluate on.
#[derive(Debug, Clone)]
pub enum EvalSource {
    /// A split of the run's manifest.
    Split(Split),
    /// A labelled folder (either layout, or any names through a label map) not in the manifest.
    Folder(PathBuf),
}

/// Whether and how the run's temperature is fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CalibrationMode {
    /// Use the run's saved temperature if it matches the weights, else fit one on the
    /// validation split and save it.
    #[default]
    Auto,
    /// Fit again on the validation split even if one is saved.
    Refit,
    /// Report raw softmax probabilities.
    Off,
}

#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub run_dir: PathBuf,
    pub source: EvalSource,
    /// Override of the data root for manifest splits (and the training images compared with
    /// an external folder).
    pub data_root: Option<PathBuf>,
    pub batch_size: usize,
    /// Bootstrap resamples for the confidence intervals (0: none).
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    pub seed: u64,
    pub calibration: CalibrationMode,
    /// Top-1 probability below which the model abstains (reported as coverage and accuracy).
    pub abstain: Option<f64>,
    /// Folder-name rules for an external folder.
    pub label_map: Option<LabelMap>,
    /// Leave external files that duplicate training images out of the metrics.
    pub exclude_duplicates: bool,
    /// How many of the most confident mistakes the report shows.
    pub worst: usize,
    /// Average probabilities over test-time augmentation views (flip, shifts).
    pub tta: bool,
    /// Files with more pixels than this are skipped (checked before decoding).
    pub max_pixels: u64,
    /// burn or ONNX Runtime (see [`crate::infer::Classifier::open_with`]).
    pub engine: crate::onnx::EngineOptions,
}

impl EvalConfig {
    /// The defaults: batch 64, 1000 bootstrap resamples with seed 42, automatic calibration,
    /// the 12 worst mistakes.
    pub fn new(run_dir: PathBuf, source: EvalSource) -> Self {
        EvalConfig {
            run_dir,
            source,
            data_root: None,
            batch_size: 64,
            bootstrap: 1000,
            seed: 42,
            calibration: CalibrationMode::Auto,
            abstain: None,
            label_map: None,
            exclude_duplicates: false,
            worst: 12,
            tta: false,
            max_pixels: artemis_data::image_io::DEFAULT_MAX_PIXELS,
            engine: Default::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.abstain
            && !(0.0..=1.0).contains(&t)
        {
            return Err(EngineError::Config(format!(
                "abstain threshold {t} must lie between 0 and 1"
            )));
        }
        use crate::limits::{BATCH, BOOTSTRAP, MAX_PIXELS, WORST};
        let checks = [
            BATCH.check(self.batch_size as u64),
            BOOTSTRAP.check(self.bootstrap as u64),
            WORST.check(self.worst as u64),
            MAX_PIXELS.check(self.max_pixels),
        ];
        for c in checks {
            c.map_err(EngineError::Config)?;
        }
        self.engine.validate()
    }
}

fn type_names() -> Vec<String> {
    TumorType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}
fn plane_names() -> Vec<String> {
    Plane::ALL.iter().map(|p| p.name().to_string()).collect()
}

/// Sums probabilities of the classes `f` maps together (12 classes to 4 types or 3 planes).
fn collapse_probs(p: &[f32], k: usize, f: impl Fn(usize) -> usize) -> Vec<f32> {
    let mut out = vec![0f32; k];
    for (c, v) in p.iter().enumerate() {
        out[f(c)] += v;
    }
    out
}

fn view(classes: Vec<String>, truth: &[usize], probs: &[Vec<f32>], cfg: &EvalConfig) -> View {
    let k = classes.len();
    let pairs: Vec<(usize, usize)> = truth
        .iter()
        .zip(probs)
        .map(|(&t, p)| (t, top1(p).0))
        .collect();
    View {
        separation: separation(probs, truth, k),
        bootstrap: (cfg.bootstrap > 0)
            .then(|| bootstrap(&classes, &pairs, cfg.bootstrap, cfg.seed)),
        metrics: Confusion::from_pairs(classes, &pairs).metrics(),
    }
}

/// One line naming the architecture, its starting weights and how it was trained (an
/// ensemble: how many members, and each distinct member line).
pub fn describe(run: &Run) -> String {
    if crate::ensemble::is_ensemble(&run.dir) {
        let members = crate::ensemble::member_runs(&run.dir).unwrap_or_default();
        let mut lines: Vec<String> = Vec::new();
        for line in members.iter().map(describe) {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        return format!(
            "ensemble of {} runs (mean of calibrated probabilities): {}",
            members.len(),
            lines.join("; ")
        );
    }
    let c = &run.config;
    let start = match &c.pretrained {
        Some(p) => format!("{} weights", p.source),
        None => "from scratch".into(),
    };
    let how = if c.pretrained.is_some() {
        if c.trainable_from == 0 {
            ", whole network fine-tuned".to_string()
        } else if c.trainable_from >= c.model.architecture.stages().saturating_sub(1) {
            ", head only".to_string()
        } else {
            format!(", stages {}+ trained", c.trainable_from)
        }
    } else {
        String::new()
    };
    let epochs = run
        .state()
        .map(|s| {
            let plural = if s.epochs_done == 1 { "" } else { "s" };
            format!(", {} epoch{plural} (best {})", s.epochs_done, s.best_epoch)
        })
        .unwrap_or_default();
    let framing = match c.preprocess.framing {
        artemis_data::framing::Framing::AsIs => "",
        artemis_data::framing::Framing::Head => ", head framing",
    };
    let t = &c.train;
    let mut regular = String::new();
    if c.augment.blur > 0.0 {
        regular += &format!(" (blur up to {} px)", c.augment.blur);
    }
    if t.weight_decay > 0.0 {
        regular += &format!(", AdamW (weight decay {})", t.weight_decay);
    }
    if t.label_smoothing > 0.0 {
        regular += &format!(", label smoothing {}", t.label_smoothing);
    }
    if t.subsample < 1.0 {
        regular += &format!(
            ", trained on {:.0}% of the training split",
            100.0 * t.subsample
        );
    }
    format!(
        "{} {}x{}{framing}, {start}{how}{epochs}, augment {}{regular}",
        c.model.architecture.name(),
        c.preprocess.width,
        c.preprocess.height,
        if c.augment.is_identity() { "off" } else { "on" }
    )
}

/// Runs an evaluation and writes its report files: collect (split or folder, with overlap)
/// -> infer (a probability row per image) -> measure (views, calibration, coverage, rows)
/// -> an [`EvalReport`], written with its pictures.
pub fn evaluate(cfg: &EvalConfig) -> Result<EvalReport> {
    cfg.validate()?;
    let run = Run::open(&cfg.run_dir)?;
    if matches!(cfg.source, EvalSource::Split(_)) {
        run.check_manifest()?;
        same_splits(&run)?;
    }
    let manifest = Manifest::load(&run.config.manifest);
    let data_root = cfg
        .data_root
        .clone()
        .unwrap_or(run.config.data_root.clone());
    let mut clf = open_classifier(cfg, &run)?;
    let mut collected = collect(cfg, &run, manifest.as_ref(), &data_root)?;
    let items = std::mem::take(&mut collected.items);
    let inferred = infer(cfg, &mut clf, items, &collected.source)?;
    let m = measure(cfg, &clf, run.config.task, &inferred, &collected);
    let data = data_summary(&run, manifest.as_ref().ok(), &m.rows);
    let mut report = EvalReport {
        schema: REPORT_SCHEMA.into(),
        run: run.dir.clone(),
        source: collected.source,
        model: crate::ensemble::model_name(&run),
        tta: cfg.tta,
        description: describe(&run),
        engine: clf.engine(),
        task: run.config.task,
        notice: NOTICE.into(),
        data,
        metrics: m.metrics,
        type_view: m.type_view,
        plane_view: m.plane_view,
        calibration: m.calibration,
        coverage: m.coverage,
        abstain: m.abstain,
        overlap: collected.overlap,
        skipped: collected
            .skipped
            .into_iter()
            .chain(inferred.failed.iter().cloned())
            .collect(),
        predictions: m.rows,
        outputs: Vec::new(),
        probabilities: inferred.probs.clone(),
    };
    write_report(
        cfg,
        &clf,
        &mut report,
        &m.fine,
        &inferred.kept,
        &collected.out_dir,
    )?;
    Ok(report)
}

/// An ensemble is scored on a split only when every member was trained on the same manifest
/// (else one member's test images are another's training images).
fn same_splits(run: &Run) -> Result<()> {
    if !crate::ensemble::is_ensemble(&run.dir) {
        return Ok(());
    }
    let members = crate::ensemble::member_runs(&run.dir)?;
    if let Some(m) = (members.iter()).find(|m| m.config.manifest_hash != run.config.manifest_hash) {
        return Err(EngineError::Config(format!(
            "{}: member {} was trained on another manifest than the first member, so no split \
             is held out from every member; evaluate the ensemble on a folder with --data",
            run.dir.display(),
            m.dir.display()
        )));
    }
    Ok(())
}

/// The run's classifier with the calibration `cfg` asks for (refitted on validation logits
/// when asked, or when none is saved and `auto` is in force).
fn open_classifier(cfg: &EvalConfig, run: &Run) -> Result<Classifier> {
    let mut clf = Classifier::open_with(run.clone(), cfg.engine)?;
    if let Some(notice) = &clf.notice {
        tracing::warn!("{notice}");
    }
    // An ensemble's members are each calibrated on their own validation split; an export
    // averaging them with other temperatures is then stale.
    let key = clf.export_key();
    for m in clf.members.iter_mut() {
        set_calibration(cfg, m)?;
    }
    if clf.export_key() != key && matches!(clf.runtime, crate::infer::Engine::Onnx(_)) {
        tracing::warn!(
            "the members' temperatures changed: the ensemble's export is stale (run `artemis \
             export` again); averaging the members instead"
        );
        clf.runtime = crate::infer::Engine::Burn;
    }
    if clf.members.is_empty() {
        set_calibration(cfg, &mut clf)?;
    }
    Ok(clf)
}

/// Applies the calibration mode of `cfg` to one run's classifier.
fn set_calibration(cfg: &EvalConfig, clf: &mut Classifier) -> Result<()> {
    let refit = |clf: &mut Classifier| {
        calibrate_on_val(
            clf,
            cfg.data_root.as_deref(),
            cfg.batch_size,
            cfg.max_pixels,
        )
    };
    match cfg.calibration {
        CalibrationMode::Off => clf.calibration = None,
        CalibrationMode::Refit => {
            refit(clf)?;
        }
        CalibrationMode::Auto if clf.calibration.is_none() => {
            if let Err(e) = refit(clf) {
                tracing::warn!("no calibration: {e}");
            }
        }
        CalibrationMode::Auto => {}
    }
    Ok(())
}

/// What an evaluation scores, before any image is read.
struct Collected {
    /// The images, with their class under the model's task when the labels allow it.
    items: Vec<Item>,
    /// The tumor type of every item (the type view of a 12-class model on a 4-class folder).
    coarse_of: HashMap<PathBuf, usize>,
    source: String,
    out_dir: PathBuf,
    overlap: Option<OverlapReport>,
    /// Folders and files the scan of an external folder skipped (odd names, links, FIFOs).
    skipped: Vec<(PathBuf, String)>,
    /// Whether every image has a label under the model's task (else tumor types only).
    full_labels: bool,
}

/// The images of the split or folder `cfg` names, with their labels; for a folder, the
/// training images it shares with the run (dropped with `--exclude-duplicates`).
fn collect(
    cfg: &EvalConfig,
    run: &Run,
    manifest: std::result::Result<&Manifest, &artemis_data::DataError>,
    data_root: &Path,
) -> Result<Collected> {
    let task = run.config.task;
    let (mut overlap, mut skipped) = (None, Vec::new());
    let (mut items, mut coarse, source, out_dir) = match &cfg.source {
        EvalSource::Split(split) => {
            let manifest = manifest.map_err(|e| EngineError::Config(e.to_string()))?;
            let items = manifest_items(manifest, data_root, *split, task);
            let coarse: Vec<usize> = manifest
                .split(*split)
                .filter(|e| task.class_of(&e.label).is_some())
                .filter_map(|e| Task::Type.class_of(&e.label))
                .collect();
            let out = match split {
                Split::Test => run.dir.clone(),
                _ => run.dir.join(format!("eval-{split}")),
            };
            (items, coarse, format!("manifest split '{split}'"), out)
        }
        EvalSource::Folder(folder) => {
            let s = scan_mapped(folder, &cfg.label_map.clone().unwrap_or_default())?;
            skipped.extend(
                s.problems
                    .iter()
                    .map(|p| (p.path.clone(), p.reason.clone())),
            );
            let (items, coarse): (Vec<Item>, Vec<usize>) = s
                .samples
                .iter()
                .map(|smp| {
                    let item = Item {
                        path: smp.path.clone(),
                        class: task.class_of(&smp.label),
                        content_hash: None,
                    };
                    (item, Task::Type.class_of(&smp.label).unwrap_or(0))
                })
                .unzip();
            let name = folder
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "folder".into());
            let files: Vec<PathBuf> = items.iter().map(|i| i.path.clone()).collect();
            overlap = folder_overlap(cfg, run, manifest, data_root, &files)?;
            let out = run.dir.join(format!("eval-{name}"));
            (items, coarse, format!("folder {}", folder.display()), out)
        }
    };
    // The int8 graph's report, and the test-time-augmented one, beside the plain one's, not
    // over it (`artemis compare --paired RUN RUN/tta` puts them side by side).
    let out_dir = match cfg.engine.precision {
        crate::onnx::Precision::Int8 => out_dir.join("int8"),
        crate::onnx::Precision::Fp32 => out_dir,
    };
    let out_dir = if cfg.tta {
        out_dir.join("tta")
    } else {
        out_dir
    };
    if let Some(o) = overlap.as_mut()
        && cfg.exclude_duplicates
    {
        let dup: HashSet<&PathBuf> = o.files.iter().map(|f| &f.path).collect();
        let keep: Vec<bool> = items.iter().map(|i| !dup.contains(&i.path)).collect();
        let mut k = keep.iter();
        items.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        coarse.retain(|_| *k.next().unwrap_or(&true));
        o.excluded = true;
    }
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
    let coarse_of = items.iter().map(|i| i.path.clone()).zip(coarse).collect();
    Ok(Collected {
        items,
        coarse_of,
        source,
        out_dir,
        overlap,
        skipped,
        full_labels,
    })
}

/// The files of an external folder that duplicate a training or validation image of the run
/// (of any member of an ensemble, with each member's own manifest and data root).
fn folder_overlap(
    cfg: &EvalConfig,
    run: &Run,
    manifest: std::result::Result<&Manifest, &artemis_data::DataError>,
    data_root: &Path,
    files: &[PathBuf],
) -> Result<Option<OverlapReport>> {
    if !crate::ensemble::is_ensemble(&run.dir) {
        return match manifest {
            Ok(m) => Ok(Some(find_overlap(run, m, data_root, files)?)),
            Err(e) => {
                tracing::warn!("training images not compared: {e}");
                Ok(None)
            }
        };
    }
    let mut all: Option<OverlapReport> = None;
    for member in crate::ensemble::member_runs(&run.dir)? {
        let m = Manifest::load(&member.config.manifest)?;
        let root = cfg
            .data_root
            .clone()
            .unwrap_or(member.config.data_root.clone());
        let o = find_overlap(&member, &m, &root, files)?;
        all = Some(match all {
            None => o,
            Some(mut acc) => {
                let seen: HashSet<PathBuf> = acc.files.iter().map(|f| f.path.clone()).collect();
                acc.files
                    .extend(o.files.into_iter().filter(|f| !seen.contains(&f.path)));
                acc.exact = acc.files.iter().filter(|f| f.kind == "exact").count();
                acc.near = acc.files.len() - acc.exact;
                acc
            }
        });
    }
    Ok(all)
}

/// The images that were read, with a probability row each (calibrated, and raw softmax).
struct Inferred {
    kept: Vec<Item>,
    raw: Vec<Vec<f32>>,
    probs: Vec<Vec<f32>>,
    /// Files that could not be read, with the reason.
    failed: Vec<(PathBuf, String)>,
}

/// Streams the images through the network, one chunk of pictures in memory at a time.
fn infer(
    cfg: &EvalConfig,
    clf: &mut Classifier,
    items: Vec<Item>,
    source: &str,
) -> Result<Inferred> {
    let temperature = clf.temperature();
    let n = items.len();
    let (mut kept, mut raw, mut probs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let failed = stream(items, clf, "evaluate", cfg.max_pixels, |chunk, images| {
        kept.extend_from_slice(chunk);
        for imgs in images.chunks(cfg.batch_size) {
            let refs: Vec<_> = imgs.iter().collect();
            if cfg.tta {
                let views = clf.tta_logits(&refs)?;
                raw.extend(crate::infer::average_views(&views, 1.0));
                probs.extend(crate::infer::average_views(&views, temperature));
            } else {
                for z in clf.logits(&refs)? {
                    raw.push(softmax(&z));
                    probs.push(artemis_report::stats::softmax_t(&z, temperature));
                }
            }
        }
        Ok(())
    })?;
    if kept.is_empty() {
        return Err(EngineError::Config(format!(
            "{source}: no file could be read ({})",
            describe_failures(&failed)
        )));
    }
    Ok(Inferred {
        kept,
        raw,
        probs,
        failed,
    })
}

/// The figures of the report, from the probability rows.
struct Measured<'a> {
    metrics: Option<View>,
    type_view: Option<View>,
    plane_view: Option<View>,
    calibration: CalibrationReport,
    coverage: Vec<CoveragePoint>,
    abstain: Option<CoveragePoint>,
    rows: Vec<EvalRow>,
    fine: FineView<'a>,
}

/// Views (model task, tumor type, plane), calibration, coverage and one row per image.
fn measure<'a>(
    cfg: &EvalConfig,
    clf: &Classifier,
    task: Task,
    inf: &'a Inferred,
    collected: &Collected,
) -> Measured<'a> {
    let (coarse_of, full_labels) = (&collected.coarse_of, collected.full_labels);
    let classes = clf.classes().to_vec();
    let coarse: Vec<usize> = inf
        .kept
        .iter()
        .map(|i| coarse_of.get(&i.path).copied().unwrap_or(0))
        .collect();
    let truth: Vec<usize> = inf.kept.iter().map(|i| i.class.unwrap_or(0)).collect();
    let collapse = |v: &[Vec<f32>], k: usize, f: fn(usize) -> usize| -> Vec<Vec<f32>> {
        v.iter().map(|p| collapse_probs(p, k, f)).collect()
    };
    let probs = &inf.probs;
    let metrics = full_labels.then(|| view(classes.clone(), &truth, probs, cfg));
    let type_view = (task == Task::TypePlane).then(|| {
        let p = collapse(probs, 4, Task::type_of_type_plane);
        view(type_names(), &coarse, &p, cfg)
    });
    let plane_view = (task == Task::TypePlane && full_labels).then(|| {
        let t: Vec<usize> = truth
            .iter()
            .map(|&c| Task::plane_of_type_plane(c))
            .collect();
        let p = collapse(probs, 3, Task::plane_of_type_plane);
        view(plane_names(), &t, &p, cfg)
    });
    let fine = FineView::of(inf, full_labels, (&classes, &truth), &coarse);
    let calibration = CalibrationReport {
        temperature: clf.temperature(),
        fitted_on: match &clf.calibration {
            Some(c) => Some(c.fitted_on.clone()),
            // An ensemble: before and after are both the mean of the calibrated members.
            None if !clf.members.is_empty() && clf.calibrated() => Some(format!(
                "each of the {} members on its own validation split (the ensemble averages \
                 their calibrated probabilities)",
                clf.members.len()
            )),
            None => None,
        },
        before: calibration(&fine.raw, &fine.truth, ECE_BINS),
        after: calibration(&fine.probs, &fine.truth, ECE_BINS),
    };
    let coverage = COVERAGE_THRESHOLDS
        .iter()
        .map(|&t| coverage_at(&fine.conf_correct, t))
        .collect();
    let abstain = cfg.abstain.map(|t| coverage_at(&fine.conf_correct, t));
    let rows = prediction_rows(&inf.kept, probs, &classes, &coarse);
    Measured {
        metrics,
        type_view,
        plane_view,
        calibration,
        coverage,
        abstain,
        rows,
        fine,
    }
}

/// The finest labelled view, where calibration, coverage and ROC curves are taken: the
/// model's classes when every image has a label under its task, else tumor types (the
/// probabilities summed per type).
struct FineView<'a> {
    classes: Vec<String>,
    truth: Vec<usize>,
    /// Borrowed from the inference when it is the model's view.
    probs: Cow<'a, [Vec<f32>]>,
    /// Softmax without the temperature.
    raw: Cow<'a, [Vec<f32>]>,
    /// `(top-1 confidence, whether it is right)` per image.
    conf_correct: Vec<(f64, bool)>,
}

impl<'a> FineView<'a> {
    /// `model` is the model's classes and each image's class among them; `coarse` each
    /// image's tumor type.
    fn of(
        inf: &'a Inferred,
        full_labels: bool,
        (classes, truth): (&[String], &[usize]),
        coarse: &[usize],
    ) -> FineView<'a> {
        let view = |v: &'a [Vec<f32>]| -> Cow<'a, [Vec<f32>]> {
            if full_labels {
                Cow::Borrowed(v)
            } else {
                v.iter()
                    .map(|p| collapse_probs(p, 4, Task::type_of_type_plane))
                    .collect()
            }
        };
        let (classes, truth) = if full_labels {
            (classes.to_vec(), truth.to_vec())
        } else {
            (type_names(), coarse.to_vec())
        };
        let probs = view(&inf.probs);
        FineView {
            conf_correct: confidence_and_correct(&probs, &truth),
            raw: view(&inf.raw),
            probs,
            classes,
            truth,
        }
    }
}

/// `(top-1 confidence, whether it is right)` per row.
fn confidence_and_correct(probs: &[Vec<f32>], truth: &[usize]) -> Vec<(f64, bool)> {
    probs
        .iter()
        .zip(truth)
        .map(|(p, &t)| {
            let (pred, c) = top1(p);
            (f64::from(c), pred == t)
        })
        .collect()
}

/// One report row per image: truth, prediction, confidence and the top three classes. An
/// image labelled with a tumor type only is right when the predicted class has that type.
fn prediction_rows(
    kept: &[Item],
    probs: &[Vec<f32>],
    classes: &[String],
    coarse: &[usize],
) -> Vec<EvalRow> {
    kept.iter()
        .zip(probs)
        .zip(coarse)
        .map(|((item, p), &ty)| {
            let (pred, conf) = top1(p);
            let (truth, correct) = match item.class {
                Some(t) => (classes[t].clone(), t == pred),
                None => (
                    TumorType::ALL[ty].name().to_string(),
                    Task::type_of_type_plane(pred) == ty,
                ),
            };
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            EvalRow {
                path: item.path.clone(),
                truth,
                predicted: classes[pred].clone(),
                confidence: conf,
                correct,
                top3: order
                    .iter()
                    .take(3)
                    .map(|&c| (classes[c].clone(), p[c]))
                    .collect(),
            }
        })
        .collect()
}

/// Draws the report's pictures and writes `report.json`, `report.md` and `report.html` (the
/// pictures embedded) into `out_dir`, listing every file in `report.outputs`.
fn write_report(
    cfg: &EvalConfig,
    clf: &Classifier,
    report: &mut EvalReport,
    fine: &FineView,
    kept: &[Item],
    out_dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(out_dir).map_err(|e| EngineError::io(out_dir, e))?;
    let mut outputs = Vec::new();
    let mut figures = figure_files(report, fine, out_dir, &mut outputs)?;
    figures.coverage = Some(artemis_report::plot::coverage_png(
        &coverage_curve(&fine.conf_correct),
        "Coverage vs accuracy (least confident referred)",
    )?);
    if let Ok(state) = clf.run.state()
        && !state.history.is_empty()
    {
        figures.curves = Some(artemis_report::plot::training_curves(&state.history)?);
    }
    figures.mistakes = worst_mistakes(cfg, clf, report, kept)?;
    figures.mistakes_as_decoded = clf.prepares_per_member();
    let json = out_dir.join("report.json");
    let md = out_dir.join("report.md");
    let html = out_dir.join("report.html");
    outputs.extend([json.clone(), md.clone(), html.clone()]);
    report.outputs = outputs;
    write_json(&json, report)?;
    artemis_data::fsutil::write_atomic(&md, report.to_markdown().as_bytes())?;
    artemis_data::fsutil::write_atomic(
        &html,
        artemis_report::html::report_html(report, &figures).as_bytes(),
    )?;
    Ok(())
}

/// The pictures that are also written as files: confusion matrices, ROC curves and the
/// reliability diagram.
fn figure_files(
    report: &EvalReport,
    fine: &FineView,
    out_dir: &Path,
    outputs: &mut Vec<PathBuf>,
) -> Result<artemis_report::html::Figures> {
    let mut figures = artemis_report::html::Figures::default();
    let mut save = |png: &[u8], name: &str| -> Result<()> {
        let p = out_dir.join(name);
        artemis_report::plot::write_png(png, &p)?;
        outputs.push(p);
        Ok(())
    };
    let title = format!("{} on {}", report.model, report.source);
    for (name, m, label) in [
        ("confusion.png", &report.metrics, report.task.name()),
        ("confusion-type.png", &report.type_view, "type"),
        ("confusion-plane.png", &report.plane_view, "plane"),
    ] {
        if let Some(v) = m {
            let png = artemis_report::plot::confusion_png(
                &v.metrics.confusion,
                &format!("{title} ({label})"),
            )?;
            save(&png, name)?;
            figures.confusion.push((label.to_string(), png));
        }
    }
    let curves: Vec<(String, artemis_report::stats::Curve, f64)> =
        roc_curves(&fine.probs, &fine.truth, fine.classes.len())
            .into_iter()
            .enumerate()
            .filter_map(|(c, curve)| {
                let curve = curve?;
                let auc = artemis_report::stats::trapezoid(&curve);
                Some((fine.classes[c].clone(), curve, auc))
            })
            .collect();
    if !curves.is_empty() {
        let png = artemis_report::plot::roc_png(&curves, "One-vs-rest ROC (area in brackets)")?;
        save(&png, "roc.png")?;
        figures.roc = Some(png);
    }
    let cal = &report.calibration;
    let mut panels = vec![(
        "softmax".to_string(),
        cal.before.bins.as_slice(),
        cal.before.ece,
    )];
    if cal.fitted_on.is_some() {
        panels.push((
            format!("temperature {:.2}", cal.temperature),
            cal.after.bins.as_slice(),
            cal.after.ece,
        ));
    }
    let png = artemis_report::plot::reliability_png(
        &panels,
        "Reliability (bars: accuracy per confidence bin)",
    )?;
    save(&png, "reliability.png")?;
    figures.reliability = Some(png);
    Ok(figures)
}

/// Thumbnails of what the network saw for the most confident mistakes (`cfg.worst` of them;
/// the decoded picture, at most [`THUMBNAIL`] pixels a side, for an ensemble whose members
/// prepare it differently): only these few files are decoded again, the stream kept no
/// pictures.
fn worst_mistakes(
    cfg: &EvalConfig,
    clf: &Classifier,
    report: &EvalReport,
    kept: &[Item],
) -> Result<Vec<(usize, Vec<u8>)>> {
    let rows = &report.predictions;
    let mut wrong: Vec<usize> = (0..rows.len()).filter(|&i| !rows[i].correct).collect();
    wrong.sort_by(|&a, &b| rows[b].confidence.total_cmp(&rows[a].confidence));
    let mut out = Vec::new();
    for &i in wrong.iter().take(cfg.worst) {
        match read_resized(&kept[i].path, clf, cfg.max_pixels) {
            Ok(img) => out.push((i, artemis_report::html::thumbnail_jpeg(&small(img))?)),
            Err(e) => tracing::warn!("no thumbnail: {e}"),
        }
    }
    Ok(out)
}

/// Longest side of a mistake's thumbnail.
const THUMBNAIL: u32 = 256;

/// `img`, shrunk to fit [`THUMBNAIL`] pixels a side (its aspect kept) when it is larger.
fn small(img: image::RgbImage) -> image::RgbImage {
    match img.width().max(img.height()) <= THUMBNAIL {
        true => img,
        false => image::DynamicImage::ImageRgb8(img)
            .thumbnail(THUMBNAIL, THUMBNAIL)
            .into_rgb8(),
    }
}

fn data_summary(run: &Run, manifest: Option<&Manifest>, rows: &[EvalRow]) -> DataSummary {
    let mut evaluated: std::collections::BTreeMap<String, usize> = Default::default();
    for r in rows {
        *evaluated.entry(r.truth.clone()).or_default() += 1;
    }
    let mut split_counts: std::collections::BTreeMap<String, [usize; 4]> = Default::default();
    if let Some(m) = manifest {
        for e in &m.entries {
            let i = match e.split {
                Split::Train => 0,
                Split::Val => 1,
                Split::Test => 2,
                Split::Excluded => 3,
            };
            split_counts.entry(e.label.name()).or_default()[i] += 1;
        }
    }
    let matches = crate::run::file_hash(&run.config.manifest)
        .ok()
        .map(|h| h == run.config.manifest_hash);
    DataSummary {
        manifest: run.config.manifest.clone(),
        protocol: manifest.map(|m| m.protocol.name().to_string()),
        seed: manifest.map(|m| m.seed),
        manifest_matches_run: matches,
        split_counts: split_counts.into_iter().collect(),
        evaluated: evaluated.into_iter().collect(),
    }
}

/// Fits the temperature of `clf`'s run on the validation split of its manifest and saves it
/// (atomically) in the run; `clf` then applies it. Returns `None` when the manifest has no
/// validation images the model can be scored on.
pub fn calibrate_on_val(
    clf: &mut Classifier,
    data_root: Option<&std::path::Path>,
    batch_size: usize,
    max_pixels: u64,
) -> Result<Option<Calibration>> {
    let run = clf.run.clone();
    run.check_manifest()?;
    let manifest = Manifest::load(&run.config.manifest)?;
    let root = data_root.map_or(run.config.data_root.clone(), |p| p.to_path_buf());
    let items = manifest_items(&manifest, &root, Split::Val, run.config.task);
    if items.is_empty() {
        return Ok(None);
    }
    let mut logits = Vec::with_capacity(items.len());
    let mut truth = Vec::with_capacity(items.len());
    let pre = run.config.preprocess;
    stream(
        items,
        &pre,
        "calibrate (val)",
        max_pixels,
        |items, images| {
            for (imgs, items) in images
                .chunks(batch_size.max(1))
                .zip(items.chunks(batch_size.max(1)))
            {
                let refs: Vec<_> = imgs.iter().collect();
                logits.extend(clf.logits(&refs)?);
                truth.extend(items.iter().map(|i| i.class.unwrap_or(0)));
            }
            Ok(())
        },
    )?;
    if logits.is_empty() {
        return Ok(None);
    }
    let cal = Calibration::fit(
        &logits,
        &truth,
        format!(
            "val split of {} ({} images)",
            run.config.manifest.display(),
            logits.len()
        ),
        clf.weights_hash.clone(),
    );
    if !cal.is_finite() {
        return Err(EngineError::Config(format!(
            "{}: temperature fit gave non-finite figures (T = {}); no calibration written",
            run.dir.display(),
            cal.temperature
        )));
    }
    write_json(&run.path(CALIBRATION), &cal)?;
    clf.calibration = Some(cal.clone());
    Ok(Some(cal))
}
