//! `artemis cv`: K-fold cross-validation of one training recipe.
//!
//! The images a manifest lets a recipe learn from are dealt into `2K` bins, stratified by
//! label, a whole near-duplicate cluster (the manifest's `cluster` column) always in one bin.
//! Fold `k` tests on bins `2k` and `2k + 1`, validates on bin `2k + 2 (mod 2K)` (best epoch and
//! plateau schedule) and trains on the rest: 20% / 10% / 70% with five folds. Every pooled
//! image is thus predicted exactly once by a model that never saw it, nor any near copy of it.
//!
//! The pool is every non-excluded row of a `reference` or `clean` manifest. Under `official`
//! the pool is the Training rows only, and each fold's model is also scored on the data set's
//! own Testing folder, which no fold trains or validates on.
//!
//! Layout of the output folder: `fold-K/manifest.tsv`, `fold-K/run/` (a run folder like
//! `train`'s, evaluated into its `report.*`), `fold-K/run/eval-<Testing>/` (official), and
//! `cv.json`, `cv.md`, `cv.html`. Rerunning the same command continues: finished folds are
//! kept, an interrupted one resumes from its last committed epoch.

use crate::error::{EngineError, Result};
use crate::eval::{EvalConfig, EvalSource, evaluate};
use crate::run::write_json;
use crate::train::{TrainConfig, train};
use artemis_data::labels::{Label, Task, TumorType};
use artemis_data::manifest::{Entry, Manifest, Protocol, Split};
use artemis_report::html::esc;
use artemis_report::metrics::{Confusion, Metrics};
use artemis_report::notice::NOTICE;
use artemis_report::stats::{Interval, bootstrap};
use artemis_report::{EvalReport, EvalRow};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Settings of a cross-validation.
#[derive(Debug, Clone)]
pub struct CvConfig {
    /// The recipe: its manifest is the source of the folds; its run folder and resume flag
    /// are set per fold.
    pub recipe: TrainConfig,
    pub out_dir: PathBuf,
    pub folds: usize,
    /// Seed of the fold assignment and of the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples of the pooled intervals.
    pub bootstrap: usize,
    pub eval_batch: usize,
    pub engine: crate::onnx::EngineOptions,
    /// Runs of the recipe per fold, with seeds `seed`, `seed + 1`, ... (1: one run; more: each
    /// fold's model is an ensemble of seeds, see [`crate::members`]).
    pub members: usize,
}

impl CvConfig {
    /// Five folds, 1000 resamples, evaluation batch 64; the seed is the recipe's.
    pub fn new(recipe: TrainConfig, out_dir: PathBuf) -> Self {
        let seed = recipe.settings.seed;
        CvConfig {
            recipe,
            out_dir,
            folds: 5,
            seed,
            bootstrap: 1000,
            eval_batch: 64,
            engine: Default::default(),
            members: 1,
        }
    }

    pub fn validate(&self) -> Result<()> {
        crate::limits::FOLDS
            .check(self.folds as u64)
            .map_err(EngineError::Config)?;
        if self.recipe.resume || self.recipe.stop_after.is_some() {
            return Err(EngineError::Config(
                "cv resumes on its own: rerun the same command (no --resume or --stop-after)"
                    .into(),
            ));
        }
        crate::limits::BOOTSTRAP
            .check(self.bootstrap as u64)
            .map_err(EngineError::Config)?;
        crate::limits::MEMBERS
            .check(self.members as u64)
            .map_err(EngineError::Config)?;
        self.recipe.validate()
    }
}

/// One fold's figures on its held-out images (and, under `official`, on Testing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldResult {
    pub fold: usize,
    pub run: PathBuf,
    pub train_images: usize,
    pub val_images: usize,
    pub test_images: usize,
    /// The best epoch (of the first member, when the fold's model is an ensemble of seeds).
    pub best_epoch: usize,
    /// Wall time of the training epochs (of every member).
    pub train_seconds: f64,
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Accuracy of the predicted class's tumor type (absent for the plane task).
    pub type_accuracy: Option<f64>,
    pub official: Option<TypeScore>,
}

/// Tumor-type accuracy and mean per-class recall on a set scored by type.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct TypeScore {
    pub n: usize,
    pub accuracy: f64,
    pub mean_recall: f64,
}

/// The ensemble's tumor-type figures on the Testing folder, with bootstrap intervals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnsembleScore {
    pub members: usize,
    pub n: usize,
    pub type_accuracy: Interval,
    pub type_mean_recall: f64,
    /// Per-type recall with its interval, in glioma, meningioma, no tumor, pituitary order.
    pub type_recall: Vec<Interval>,
}

/// Each Testing image's averaged probabilities, keyed by path, with its truth.
type Members = BTreeMap<PathBuf, (String, Vec<f32>, usize)>;

/// Mean, sample standard deviation, minimum and maximum over folds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    fn of(v: &[f64]) -> Spread {
        let n = v.len().max(1) as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Spread {
            mean,
            sd: var.sqrt(),
            min: v.iter().copied().fold(f64::INFINITY, f64::min),
            max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        }
    }
}

/// Out-of-fold predictions of every pooled image, scored together.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pooled {
    pub n: usize,
    pub accuracy: Interval,
    pub macro_f1: Interval,
    pub type_accuracy: Option<Interval>,
    /// Mean over tumor types of the pooled type recall.
    pub type_mean_recall: Option<f64>,
    pub metrics: Metrics,
}

/// What `cv.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvReport {
    pub schema: String,
    pub notice: String,
    pub manifest: PathBuf,
    pub protocol: String,
    pub recipe: String,
    /// Runs of the recipe (seeds) per fold; each fold's model is their ensemble when above 1.
    #[serde(default = "one")]
    pub members: usize,
    pub folds: Vec<FoldResult>,
    pub pooled: Pooled,
    pub accuracy_over_folds: Spread,
    /// Under `official`: each fold's model on the Testing folder.
    pub official_over_folds: Option<Spread>,
    /// Under `official`: the folds' models as one ensemble on the Testing folder (their
    /// calibrated probabilities averaged).
    pub official_ensemble: Option<EnsembleScore>,
    /// The same ensemble on the Testing images that copy (exactly or nearly) no image any
    /// fold trained or validated on: what the figure is on pictures new to every member.
    #[serde(default)]
    pub official_ensemble_unseen: Option<EnsembleScore>,
    pub bootstrap: usize,
    /// Seed of the fold assignment and of the bootstrap.
    pub seed: u64,
    /// Seed the recipe trained with (of its first member); reports before it was recorded
    /// read as `None`.
    #[serde(default)]
    pub train_seed: Option<u64>,
    /// Every out-of-fold prediction, by fold.
    pub predictions: Vec<(usize, EvalRow)>,
}

pub const CV_SCHEMA: &str = "artemis.cv/1";

fn one() -> usize {
    1
}

/// Deals the pooled rows into `bins` bins, a whole cluster per bin, stratified by label:
/// clusters in a seeded order, largest first, each to the bin with the fewest rows of its
/// label (then the fewest rows, then the lowest index). Returns each row's bin.
pub fn assign_bins(rows: &[&Entry], bins: usize, seed: u64) -> Vec<usize> {
    let mut clusters: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, e) in rows.iter().enumerate() {
        clusters.entry(e.cluster).or_default().push(i);
    }
    let mut order: Vec<Vec<usize>> = clusters.into_values().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut per_label: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut total = vec![0usize; bins];
    let mut bin_of = vec![0usize; rows.len()];
    for members in order {
        let label = rows[members[0]].label.name();
        let counts = per_label.entry(label).or_insert_with(|| vec![0; bins]);
        let b = (0..bins)
            .min_by_key(|&b| (counts[b], total[b], b))
            .unwrap_or(0);
        counts[b] += members.len();
        total[b] += members.len();
        for m in members {
            bin_of[m] = b;
        }
    }
    bin_of
}

/// Whether a row is in the pool a cross-validation deals into folds.
fn pooled(m: &Manifest, e: &Entry) -> bool {
    match m.protocol {
        Protocol::Official => matches!(e.split, Split::Train | Split::Val),
        _ => e.split != Split::Excluded,
    }
}

/// The manifest of fold `k` of `folds`: its test, validation and training rows; rows outside
/// the pool become `excluded` with a note.
pub fn fold_manifest(source: &Manifest, bin_of: &[usize], k: usize, folds: usize) -> Manifest {
    let mut m = source.clone();
    let val_bin = (2 * k + 2) % (2 * folds);
    let mut pos = 0;
    for e in m.entries.iter_mut() {
        if !pooled(source, e) {
            if e.split != Split::Excluded {
                e.note = format!("outside the cross-validation pool (was {})", e.split);
                e.split = Split::Excluded;
            }
            continue;
        }
        let b = bin_of[pos];
        pos += 1;
        e.split = if b / 2 == k {
            Split::Test
        } else if b == val_bin {
            Split::Val
        } else {
            Split::Train
        };
    }
    m.canonicalize();
    m
}

/// Writes fold `k`'s manifest, or checks that the one already there is the same (a rerun).
fn write_fold_manifest(path: &Path, m: &Manifest) -> Result<()> {
    if path.exists() {
        let old = Manifest::load(path)?;
        if old.entries != m.entries {
            return Err(EngineError::Config(format!(
                "{} differs from the folds this command makes (another manifest, --folds or \
                 --seed?); choose another --out",
                path.display()
            )));
        }
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::io(dir, e))?;
    }
    Ok(m.save(path)?)
}

/// Runs the cross-validation and writes its report.
pub fn cross_validate(cfg: &CvConfig) -> Result<CvReport> {
    cfg.validate()?;
    let source = Manifest::load(&cfg.recipe.manifest)?;
    let pool: Vec<&Entry> = source
        .entries
        .iter()
        .filter(|e| pooled(&source, e))
        .collect();
    if pool.len() < 4 * cfg.folds {
        return Err(EngineError::Config(format!(
            "{}: {} images to cross-validate, too few for {} folds",
            cfg.recipe.manifest.display(),
            pool.len(),
            cfg.folds
        )));
    }
    let bin_of = assign_bins(&pool, 2 * cfg.folds, cfg.seed);
    let testing = testing_folder(&source, cfg);
    let mut folds = Vec::with_capacity(cfg.folds);
    let mut predictions = Vec::new();
    let mut members = Members::new();
    let mut copies = BTreeSet::new();
    for k in 0..cfg.folds {
        let dir = cfg.out_dir.join(format!("fold-{}", k + 1));
        let manifest_path = dir.join("manifest.tsv");
        let fold = fold_manifest(&source, &bin_of, k, cfg.folds);
        if let Some(empty) = fold.counts()[..3].iter().position(|&n| n == 0) {
            let split = [Split::Train, Split::Val, Split::Test][empty];
            return Err(EngineError::Config(format!(
                "{}: fold {} has no {split} images (near-duplicate clusters too large for {} \
                 folds); use fewer folds",
                cfg.recipe.manifest.display(),
                k + 1,
                cfg.folds
            )));
        }
        write_fold_manifest(&manifest_path, &fold)?;
        let (result, rows, official) = run_fold(cfg, k, &dir, &manifest_path, testing.as_deref())?;
        if let Some(r) = official {
            add_member(&mut members, &r.predictions, &r.probabilities);
            copies.extend(
                r.overlap
                    .iter()
                    .flat_map(|o| o.files.iter().map(|f| f.path.clone())),
            );
        }
        predictions.extend(rows.into_iter().map(|r| (k + 1, r)));
        folds.push(result);
    }
    // The folds as one model for predict, serve and eval on other data.
    let ensemble = cfg.out_dir.join("ensemble");
    if !crate::ensemble::is_ensemble(&ensemble) {
        let runs: Vec<PathBuf> = (1..=cfg.folds)
            .map(|k| cfg.out_dir.join(format!("fold-{k}")).join("run"))
            .flat_map(|run| match cfg.members {
                1 => vec![run],
                n => (1..=n)
                    .map(|m| crate::members::member_dir(&run, m))
                    .collect(),
            })
            .collect();
        crate::ensemble::create(&ensemble, &runs)?;
    }
    let mut report = summarise(cfg, &source, folds, predictions)?;
    let task = cfg.recipe.task;
    let boot = (cfg.bootstrap, cfg.seed);
    report.official_ensemble = ensemble_score(task, cfg.folds, boot, &members);
    report.official_ensemble_unseen =
        ensemble_score(task, cfg.folds, boot, &unseen(members, &copies));
    write_cv_report(&cfg.out_dir, &report)?;
    Ok(report)
}

/// Under `official`, the Testing folder (the first path component of the test rows).
fn testing_folder(source: &Manifest, cfg: &CvConfig) -> Option<PathBuf> {
    if source.protocol != Protocol::Official {
        return None;
    }
    let first = source.split(Split::Test).next()?;
    let top = first.rel.split('/').next()?;
    let root = cfg
        .recipe
        .data_root
        .clone()
        .unwrap_or_else(|| PathBuf::from(&source.data_root));
    Some(root.join(top))
}

/// Trains (or resumes) fold `k` and evaluates it on its held-out images (and on Testing).
fn run_fold(
    cfg: &CvConfig,
    k: usize,
    dir: &Path,
    manifest: &Path,
    testing: Option<&Path>,
) -> Result<(FoldResult, Vec<EvalRow>, Option<EvalReport>)> {
    let run_dir = dir.join("run");
    let mut recipe = cfg.recipe.clone();
    recipe.manifest = manifest.to_path_buf();
    recipe.run_dir = run_dir.clone();
    eprintln!("cv: fold {}/{} in {}", k + 1, cfg.folds, run_dir.display());
    let summary = if cfg.members > 1 {
        let all = crate::members::train_members(&recipe, cfg.members)?;
        let seconds = all.iter().map(|s| s.epoch_seconds).sum();
        let mut first = all.into_iter().next().ok_or_else(|| {
            EngineError::Config(format!("{}: no member trained", run_dir.display()))
        })?;
        first.epoch_seconds = seconds;
        first
    } else {
        recipe.resume = run_dir.join(crate::run::CONFIG).exists();
        train(&recipe)?
    };
    let eval_cfg = |source| {
        let mut e = EvalConfig::new(run_dir.clone(), source);
        e.bootstrap = 0;
        e.batch_size = cfg.eval_batch;
        e.data_root = cfg.recipe.data_root.clone();
        e.engine = cfg.engine;
        e
    };
    let held_out = evaluate(&eval_cfg(EvalSource::Split(Split::Test)))?;
    let testing_report = match testing {
        Some(t) => Some(evaluate(&eval_cfg(EvalSource::Folder(t.to_path_buf())))?),
        None => None,
    };
    let official = testing_report.as_ref().map(type_score);
    let task = held_out.task;
    let m = rows_metrics(task, &held_out.predictions);
    let result = FoldResult {
        fold: k + 1,
        run: run_dir,
        train_images: summary.train_images,
        val_images: summary.val_images,
        test_images: held_out.predictions.len(),
        best_epoch: summary.best_epoch,
        train_seconds: summary.epoch_seconds,
        accuracy: m.accuracy,
        macro_f1: m.macro_avg.f1,
        type_accuracy: type_pairs(task, &held_out.predictions)
            .map(|p| Confusion::from_pairs(type_names(), &p).metrics().accuracy),
        official,
    };
    Ok((result, held_out.predictions, testing_report))
}

/// The members' rows for the images not in `copies`.
fn unseen(members: Members, copies: &BTreeSet<PathBuf>) -> Members {
    members
        .into_iter()
        .filter(|(p, _)| !copies.contains(p))
        .collect()
}

/// Adds one fold's Testing probabilities to the ensemble's running sums.
fn add_member(members: &mut Members, rows: &[EvalRow], probs: &[Vec<f32>]) {
    for (row, p) in rows.iter().zip(probs) {
        let entry = members
            .entry(row.path.clone())
            .or_insert_with(|| (row.truth.clone(), vec![0.0; p.len()], 0));
        entry.1.iter_mut().zip(p).for_each(|(s, v)| *s += v);
        entry.2 += 1;
    }
}

/// The ensemble's type figures on the images all `count` members scored, with `resamples`
/// bootstrap resamples seeded with `seed`.
fn ensemble_score(
    task: Task,
    count: usize,
    (resamples, seed): (usize, u64),
    members: &Members,
) -> Option<EnsembleScore> {
    let classes = task.classes();
    let rows: Vec<EvalRow> = members
        .iter()
        .filter(|(_, (_, _, n))| *n == count)
        .map(|(path, (truth, sum, _))| {
            let best = (0..sum.len()).max_by(|&a, &b| sum[a].total_cmp(&sum[b]))?;
            let predicted = classes.get(best)?.clone();
            let tumor = |name: &str| Label::from_class_dir(name).map(|l| l.tumor);
            Some(EvalRow {
                path: path.clone(),
                correct: tumor(truth).is_some() && tumor(truth) == tumor(&predicted),
                truth: truth.clone(),
                predicted,
                confidence: sum[best] / count as f32,
                top3: Vec::new(),
            })
        })
        .collect::<Option<_>>()?;
    let pairs = type_pairs(task, &rows)?;
    if pairs.is_empty() {
        return None;
    }
    let b = bootstrap(&type_names(), &pairs, resamples, seed);
    let m = Confusion::from_pairs(type_names(), &pairs).metrics();
    Some(EnsembleScore {
        members: count,
        n: pairs.len(),
        type_accuracy: b.accuracy,
        type_mean_recall: m.macro_avg.recall,
        type_recall: b.recall,
    })
}

fn type_names() -> Vec<String> {
    TumorType::ALL
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

/// `(truth, predicted)` class indices of prediction rows under `task`.
fn class_pairs<'a>(task: Task, rows: impl IntoIterator<Item = &'a EvalRow>) -> Vec<(usize, usize)> {
    let index = |name: &str| Label::from_class_dir(name).and_then(|l| task.class_of(&l));
    rows.into_iter()
        .filter_map(|r| Some((index(&r.truth)?, index(&r.predicted)?)))
        .collect()
}

fn rows_metrics(task: Task, rows: &[EvalRow]) -> Metrics {
    Confusion::from_pairs(task.classes(), &class_pairs(task, rows)).metrics()
}

/// Tumor types of truth and prediction (the predicted class's type); `None` for the plane
/// task, whose classes carry no type.
fn type_pairs<'a>(
    task: Task,
    rows: impl IntoIterator<Item = &'a EvalRow>,
) -> Option<Vec<(usize, usize)>> {
    if task == Task::Plane {
        return None;
    }
    let ty = |name: &str| {
        let l = Label::from_class_dir(name)?;
        TumorType::ALL.iter().position(|t| *t == l.tumor)
    };
    Some(
        rows.into_iter()
            .filter_map(|r| Some((ty(&r.truth)?, ty(&r.predicted)?)))
            .collect(),
    )
}

/// Type accuracy and mean per-type recall of a report scored by type (a 4-class folder).
fn type_score(r: &EvalReport) -> TypeScore {
    let pairs = type_pairs(r.task, &r.predictions).unwrap_or_default();
    let m = Confusion::from_pairs(type_names(), &pairs).metrics();
    TypeScore {
        n: pairs.len(),
        accuracy: m.accuracy,
        mean_recall: m.macro_avg.recall,
    }
}

/// Pooled out-of-fold metrics with bootstrap intervals, and the spread over folds.
fn summarise(
    cfg: &CvConfig,
    source: &Manifest,
    folds: Vec<FoldResult>,
    predictions: Vec<(usize, EvalRow)>,
) -> Result<CvReport> {
    let task = cfg.recipe.task;
    let rows = || predictions.iter().map(|(_, r)| r);
    let pairs = class_pairs(task, rows());
    let b = bootstrap(&task.classes(), &pairs, cfg.bootstrap, cfg.seed);
    let (type_accuracy, type_mean_recall) = match type_pairs(task, rows()) {
        Some(tp) => {
            let tb = bootstrap(&type_names(), &tp, cfg.bootstrap, cfg.seed);
            let m = Confusion::from_pairs(type_names(), &tp).metrics();
            (Some(tb.accuracy), Some(m.macro_avg.recall))
        }
        None => (None, None),
    };
    let acc: Vec<f64> = folds.iter().map(|f| f.accuracy).collect();
    let official: Vec<f64> = folds
        .iter()
        .filter_map(|f| f.official.map(|o| o.accuracy))
        .collect();
    // What fold 1's run was trained with (a rerun continues the runs as they were started,
    // whatever this command's training seed).
    let first = crate::run::Run::open(&folds[0].run).ok();
    let recipe = first
        .as_ref()
        .map(crate::eval::describe)
        .unwrap_or_default();
    let train_seed = first.map(|r| r.config.train.seed);
    Ok(CvReport {
        schema: CV_SCHEMA.into(),
        notice: NOTICE.into(),
        manifest: cfg.recipe.manifest.clone(),
        protocol: source.protocol.name().into(),
        recipe,
        members: cfg.members,
        pooled: Pooled {
            n: pairs.len(),
            accuracy: b.accuracy,
            macro_f1: b.macro_f1,
            type_accuracy,
            type_mean_recall,
            metrics: Confusion::from_pairs(task.classes(), &pairs).metrics(),
        },
        accuracy_over_folds: Spread::of(&acc),
        official_over_folds: (!official.is_empty()).then(|| Spread::of(&official)),
        official_ensemble: None,
        official_ensemble_unseen: None,
        folds,
        bootstrap: cfg.bootstrap,
        seed: cfg.seed,
        train_seed,
        predictions,
    })
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The pooled figures and the spread over folds, one sentence a line.
fn summary_lines(r: &CvReport) -> Vec<String> {
    let p = &r.pooled;
    let mut pooled = format!(
        "Pooled out-of-fold (n = {}): accuracy {}, macro F1 {:.3} [{:.3}, {:.3}]",
        p.n, p.accuracy, p.macro_f1.estimate, p.macro_f1.low, p.macro_f1.high
    );
    if let (Some(t), Some(rec)) = (&p.type_accuracy, p.type_mean_recall) {
        let _ = write!(
            pooled,
            ", tumor type accuracy {t}, mean type recall {rec:.3}"
        );
    }
    let spread = |what: &str, s: &Spread| {
        format!(
            "{what}: {} ± {} (sd), {} to {}.",
            pct(s.mean),
            pct(s.sd),
            pct(s.min),
            pct(s.max)
        )
    };
    let mut lines = vec![
        pooled + ".",
        spread("Accuracy over folds", &r.accuracy_over_folds),
    ];
    if let Some(s) = &r.official_over_folds {
        lines.push(spread(
            "Official Testing folder, each fold's model, type accuracy",
            s,
        ));
    }
    if let Some(e) = &r.official_ensemble {
        let seeds = match r.members {
            1 => String::new(),
            n => format!(" ({n} seeds each)"),
        };
        lines.push(format!(
            "Official Testing folder, the {} folds' models{seeds} as one ensemble (mean \
             calibrated probabilities), n = {}: type accuracy {}, mean type recall {:.3} \
             (glioma recall {}).",
            e.members,
            e.n,
            e.type_accuracy,
            e.type_mean_recall,
            e.type_recall.first().map_or("–".into(), |i| i.to_string())
        ));
    }
    if let Some(e) = &r.official_ensemble_unseen {
        lines.push(format!(
            "The same ensemble on the {} Testing images that copy no image any fold trained or \
             validated on (exactly or nearly): type accuracy {}, mean type recall {:.3}.",
            e.n, e.type_accuracy, e.type_mean_recall
        ));
    }
    lines
}

/// The report's tables as Markdown.
pub fn to_markdown(r: &CvReport) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# artemis cross-validation\n\n> {}\n", r.notice);
    let _ = writeln!(
        o,
        "{} folds of `{}` ({} protocol); the recipe, as fold 1's run describes it: {}\n",
        r.folds.len(),
        r.manifest.display(),
        r.protocol,
        r.recipe
    );
    for line in summary_lines(r) {
        let _ = writeln!(o, "{line}");
    }
    let _ = writeln!(o, "\n| {} |", FOLD_COLUMNS.join(" | "));
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for f in &r.folds {
        let _ = writeln!(o, "| {} |", fold_cells(f).join(" | "));
    }
    let trained = r.train_seed.map_or(String::new(), |t| {
        format!(", the recipe trained with seed {t}")
    });
    let _ = writeln!(
        o,
        "\nIntervals: 95% percentile bootstrap ({} resamples, seed {}) over the pooled \
         out-of-fold predictions. Folds keep near-duplicate clusters whole; they were dealt \
         with seed {}{trained}.",
        r.bootstrap, r.seed, r.seed
    );
    o
}

const FOLD_COLUMNS: [&str; 10] = [
    "fold",
    "train",
    "val",
    "test",
    "best epoch",
    "accuracy",
    "macro F1",
    "type accuracy",
    "Testing type accuracy (mean recall)",
    "train s",
];

fn fold_cells(f: &FoldResult) -> [String; 10] {
    [
        f.fold.to_string(),
        f.train_images.to_string(),
        f.val_images.to_string(),
        f.test_images.to_string(),
        f.best_epoch.to_string(),
        pct(f.accuracy),
        format!("{:.3}", f.macro_f1),
        f.type_accuracy.map_or("–".into(), pct),
        f.official.map_or("–".into(), |o| {
            format!("{} ({:.3}, n = {})", pct(o.accuracy), o.mean_recall, o.n)
        }),
        format!("{:.0}", f.train_seconds),
    ]
}

/// The report as a self-contained HTML page.
pub fn to_html(r: &CvReport) -> String {
    let mut o = String::from(
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>artemis cv</title>\
         <style>body{font-family:system-ui,'DejaVu Sans',sans-serif;margin:24px}\
         table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}\
         .notice{background:#fff3cd;border:2px solid #d39e00;padding:8px}</style></head><body>\
         <h1>artemis: cross-validation</h1>",
    );
    let _ = write!(o, "<p class=notice>{}</p>", esc(&r.notice));
    for line in summary_lines(r) {
        let _ = write!(o, "<p>{}</p>", esc(&line));
    }
    let _ = write!(o, "<table><tr>");
    for h in FOLD_COLUMNS {
        let _ = write!(o, "<th>{}</th>", esc(h));
    }
    let _ = write!(o, "</tr>");
    for f in &r.folds {
        let _ = write!(o, "<tr>");
        for c in fold_cells(f) {
            let _ = write!(o, "<td>{}</td>", esc(&c));
        }
        let _ = write!(o, "</tr>");
    }
    let _ = write!(o, "</table></body></html>");
    o
}

/// Writes `cv.json`, `cv.md` and `cv.html` atomically.
fn write_cv_report(dir: &Path, r: &CvReport) -> Result<()> {
    write_json(&dir.join("cv.json"), r)?;
    for (name, text) in [("cv.md", to_markdown(r)), ("cv.html", to_html(r))] {
        let path = dir.join(name);
        artemis_data::fsutil::write_atomic(&path, text.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use artemis_data::labels::Plane;

    fn entry(i: usize, cluster: usize, tumor: usize) -> Entry {
        Entry {
            split: Split::Train,
            rel: format!("x/{i}.jpg"),
            content_hash: format!("{i}"),
            cluster,
            label: Label {
                tumor: TumorType::ALL[tumor],
                plane: Some(Plane::Coronal),
            },
            note: String::new(),
        }
    }

    #[test]
    fn bins_keep_clusters_whole_and_balance_labels() {
        // 200 rows of 4 labels; every 5th row shares a cluster with the next one.
        let rows: Vec<Entry> = (0..200)
            .map(|i| entry(i, if i % 5 == 0 { i + 1 } else { i }, i % 4))
            .collect();
        let refs: Vec<&Entry> = rows.iter().collect();
        let bins = assign_bins(&refs, 10, 7);
        for (a, b) in rows.iter().zip(&bins) {
            for (c, d) in rows.iter().zip(&bins) {
                if a.cluster == c.cluster {
                    assert_eq!(b, d, "cluster {} split across bins", a.cluster);
                }
            }
        }
        for t in 0..4 {
            let per_bin: Vec<usize> = (0..10)
                .map(|b| (0..200).filter(|&i| bins[i] == b && i % 4 == t).count())
                .collect();
            let (lo, hi) = (per_bin.iter().min(), per_bin.iter().max());
            assert!(hi.unwrap() - lo.unwrap() <= 2, "label {t}: {per_bin:?}");
        }
        assert_eq!(bins, assign_bins(&refs, 10, 7), "same seed, same bins");
        assert_ne!(bins, assign_bins(&refs, 10, 8), "another seed, other bins");
    }

    #[test]
    fn the_unseen_ensemble_leaves_out_the_copies() {
        let classes = Task::TypePlane.classes();
        let at = |name: &str| classes.iter().position(|c| c == name).unwrap();
        let sums =
            |k: usize| -> Vec<f32> { (0..12).map(|i| if i == k { 2.0 } else { 0.0 }).collect() };
        let mut members = Members::new();
        // Two members each: a copy called right, a new glioma called meningioma, a new
        // pituitary called right.
        let g = at("glioma_coronal");
        members.insert("t/copy.jpg".into(), ("glioma_coronal".into(), sums(g), 2));
        let m = at("meningioma_coronal");
        members.insert("t/new-g.jpg".into(), ("glioma_coronal".into(), sums(m), 2));
        let p = at("pituitary_sagittal");
        members.insert(
            "t/new-p.jpg".into(),
            ("pituitary_sagittal".into(), sums(p), 2),
        );
        let copies = BTreeSet::from([PathBuf::from("t/copy.jpg")]);
        let all = ensemble_score(Task::TypePlane, 2, (20, 1), &members).unwrap();
        let new = ensemble_score(Task::TypePlane, 2, (20, 1), &unseen(members, &copies)).unwrap();
        assert_eq!((all.n, new.n), (3, 2));
        assert!((all.type_accuracy.estimate - 2.0 / 3.0).abs() < 1e-9);
        assert!((new.type_accuracy.estimate - 0.5).abs() < 1e-9);
    }

    #[test]
    fn every_pooled_row_is_tested_once_and_official_testing_never_pooled() {
        let mut rows: Vec<Entry> = (0..60).map(|i| entry(i, i, i % 4)).collect();
        rows[0].split = Split::Excluded;
        for r in rows.iter_mut().skip(50) {
            r.split = Split::Test;
        }
        let source = Manifest {
            protocol: Protocol::Official,
            seed: 1,
            data_root: "d".into(),
            val_fraction: 0.1,
            test_fraction: 0.0,
            near_threshold: 0,
            entries: rows,
        };
        let pool: Vec<&Entry> = source
            .entries
            .iter()
            .filter(|e| pooled(&source, e))
            .collect();
        assert_eq!(pool.len(), 49);
        let bins = assign_bins(&pool, 6, 1);
        let mut tested = BTreeMap::new();
        for k in 0..3 {
            let m = fold_manifest(&source, &bins, k, 3);
            let [train, val, test, excluded] = m.counts();
            assert_eq!((train + val + test, excluded), (49, 11), "fold {k}");
            assert!(val > 0 && test > 0 && train > val);
            for e in m.split(Split::Test) {
                *tested.entry(e.rel.clone()).or_insert(0) += 1;
            }
        }
        assert_eq!(tested.len(), 49);
        assert!(tested.values().all(|&n| n == 1));
    }

    #[test]
    fn the_ensemble_averages_its_members_probabilities() {
        let row = |path: &str, truth: &str| EvalRow {
            path: path.into(),
            truth: truth.into(),
            predicted: String::new(),
            confidence: 0.0,
            correct: false,
            top3: Vec::new(),
        };
        let rows = [row("a.jpg", "glioma"), row("b.jpg", "pituitary")];
        // 4-class task. Member 1 gets a wrong and b right; member 2 is confidently right on a
        // and unsure on b: the mean gets both right.
        let one = [vec![0.4, 0.6, 0.0, 0.0], vec![0.0, 0.0, 0.4, 0.6]];
        let two = [vec![0.9, 0.1, 0.0, 0.0], vec![0.0, 0.0, 0.55, 0.45]];
        let mut members = Members::new();
        add_member(&mut members, &rows, &one);
        let single = ensemble_score(Task::Type, 1, (20, 1), &members).unwrap();
        assert_eq!((single.n, single.type_accuracy.estimate), (2, 0.5));
        add_member(&mut members, &rows, &two);
        let both = ensemble_score(Task::Type, 2, (20, 1), &members).unwrap();
        assert_eq!((both.members, both.n), (2, 2));
        assert_eq!(both.type_accuracy.estimate, 1.0);
        assert_eq!(both.type_mean_recall, 1.0);
        // An image only one member scored is left out.
        add_member(
            &mut members,
            &[row("c.jpg", "glioma")],
            &[vec![1.0, 0.0, 0.0, 0.0]],
        );
        assert_eq!(
            ensemble_score(Task::Type, 2, (20, 1), &members).unwrap().n,
            2
        );
    }

    #[test]
    fn spread_by_hand() {
        let s = Spread::of(&[0.8, 0.9, 1.0]);
        assert!((s.mean - 0.9).abs() < 1e-12 && (s.sd - 0.1).abs() < 1e-12);
        assert_eq!((s.min, s.max), (0.8, 1.0));
    }
}
