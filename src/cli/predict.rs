//! `artemis predict` (optionally one shard of a cluster job) and `artemis predict-merge`.

use super::common::{EngineArgs, bounded, partial_if};
use anyhow::{Context, Result};
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_engine::infer::Classifier;
use artemis_engine::predict::{PredictDocument, predict};
use artemis_engine::run::Run;
use artemis_report::NOTICE;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shard files (`predict --out` of every shard).
    #[arg(required = true)]
    pub shards: Vec<PathBuf>,
    /// The merged JSON Lines file (rows sorted by input, frame and slice).
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Run folder.
    pub run: PathBuf,
    /// Image files or folders (searched recursively).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print JSON (one document with every row; schema in docs/predict-json.md).
    #[arg(long)]
    pub json: bool,
    /// Write a Grad-CAM heat map PNG per picture into this folder.
    #[arg(long, value_name = "DIR")]
    pub explain: Option<PathBuf>,
    /// With --explain: map this class instead of the predicted one.
    #[arg(long, requires = "explain")]
    pub explain_class: Option<String>,
    /// Heat-map colour weight over the image (0-1).
    #[arg(long, default_value_t = 0.45)]
    pub opacity: f32,
    /// Test-time augmentation: average over the image, its mirror and four small shifts.
    #[arg(long)]
    pub tta: bool,
    /// DICOM: also read and print patient/study identifiers (never shown otherwise).
    #[arg(long)]
    pub show_identifiers: bool,
    /// NIfTI: slices perpendicular to this axis: auto (transverse, from the header's
    /// orientation), transverse, coronal, sagittal, or a voxel axis i, j, k.
    #[arg(long, default_value = "auto")]
    pub slice_axis: artemis_data::volume::SliceAxis,
    /// NIfTI: only slices START:END (half-open).
    #[arg(long, value_name = "START:END")]
    pub slices: Option<String>,
    /// Refuse pictures with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
    /// Write the rows as JSON Lines to FILE instead of printing them: written as
    /// FILE.partial and renamed when every file is done; a rerun resumes a partial file.
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub out: Option<PathBuf>,
    /// Only one shard of the files, by a hash of each file's path relative to the input
    /// folder it is under: I/N (0-based), auto (a Slurm job array's task) or auto/N (a
    /// Kubernetes Indexed Job's completion index of N). Merge with `artemis predict-merge`.
    #[arg(long, value_name = "I/N", requires = "out", value_parser = parse_shard)]
    pub shard: Option<artemis_engine::shard::Shard>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub(super) fn run(a: PredictArgs) -> Result<ExitCode> {
    let run = Run::open(&a.run).with_context(|| format!("opening run {}", a.run.display()))?;
    let clf = Classifier::open_with(run, a.engine.single()?)
        .with_context(|| format!("loading run {}", a.run.display()))?;
    if let Some(notice) = &clf.notice {
        eprintln!("notice: {notice}");
    }
    let cfg = predict_config(&a, &clf)?;
    if let Some(out) = &a.out {
        return predict_to_file(&a, &clf, cfg, out);
    }
    if !a.json {
        println!("{NOTICE}");
        match &clf.calibration {
            _ if !clf.members.is_empty() => println!(
                "confidence: the mean of {} members' probabilities ({})",
                clf.members.len(),
                if clf.calibrated() {
                    "each temperature-scaled"
                } else {
                    "not all calibrated; `artemis eval` on the ensemble fits them"
                }
            ),
            Some(c) => println!(
                "confidence: temperature-scaled (T = {:.3}, fitted on the {})",
                c.temperature, c.fitted_on
            ),
            None => println!(
                "confidence: raw softmax (not calibrated; `artemis eval` fits a temperature)"
            ),
        }
        println!("{:<60} {:<24} {:>10}", "input", "class", "confidence");
    }
    let json = a.json;
    let out = predict(&clf, &a.inputs, &cfg, |r| {
        if json {
            return;
        }
        let name = match (r.frame, r.slice) {
            (Some(f), _) => format!("{} [frame {f}]", r.input.display()),
            (_, Some(s)) => format!("{} [slice {s}]", r.input.display()),
            _ => r.input.display().to_string(),
        };
        match (&r.class, r.confidence, &r.error) {
            (Some(c), Some(p), _) => {
                println!("{name:<60} {c:<24} {p:>10.4}");
                if let Some(w) = &r.warning {
                    eprintln!("warning: {name}: {w}");
                }
            }
            (_, _, Some(e)) => eprintln!("error: {e}"),
            _ => {}
        }
    })?;
    let failed = out.rows.iter().filter(|r| r.error.is_some()).count();
    if json {
        let doc = PredictDocument::new(&clf, a.tta, &out);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for v in &out.volumes {
            println!(
                "volume {}: {} slices along voxel axis {} ({}); per class: {}; most confident: {}",
                v.input.display(),
                v.slices,
                v.axis,
                v.plane.as_deref().unwrap_or("plane unknown"),
                v.class_counts
                    .iter()
                    .map(|(c, n)| format!("{c} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                v.most_confident
                    .iter()
                    .map(|(s, c, p)| format!("slice {s} {c} {p:.3}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if let Some(d) = &cfg.explain_dir {
            eprintln!("heat maps in {}", d.display());
        }
        eprintln!("{} classified, {failed} failed", out.rows.len() - failed);
    }
    Ok(partial_if(failed > 0))
}

/// The prediction options of `a` for the run's classifier.
fn predict_config(
    a: &PredictArgs,
    clf: &Classifier,
) -> Result<artemis_engine::predict::PredictConfig> {
    let explain_class = match &a.explain_class {
        Some(name) => Some(
            clf.classes()
                .iter()
                .position(|c| c == name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--explain-class {name}: not a class of this run (classes: {})",
                        clf.classes().join(", ")
                    )
                })?,
        ),
        None => None,
    };
    let slice_range = match &a.slices {
        Some(r) => {
            let (lo, hi) = r
                .split_once(':')
                .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
                .filter(|(a, b)| a < b)
                .ok_or_else(|| {
                    anyhow::anyhow!("--slices {r}: expected START:END with START < END")
                })?;
            Some((lo, hi))
        }
        None => None,
    };
    if !(0.0..=1.0).contains(&a.opacity) {
        anyhow::bail!("--opacity {}: must lie between 0 and 1", a.opacity);
    }
    Ok(artemis_engine::predict::PredictConfig {
        explain_dir: a.explain.clone(),
        explain_class,
        tta: a.tta,
        input: artemis_data::input::InputOptions {
            max_pixels: a.max_pixels,
            identifiers: a.show_identifiers,
            slice_axis: a.slice_axis,
            slice_range,
        },
        opacity: a.opacity,
        select: None,
    })
}

/// `predict --out FILE [--shard I/N]`: the rows of one shard as JSON Lines, resumable.
fn predict_to_file(
    a: &PredictArgs,
    clf: &Classifier,
    mut cfg: artemis_engine::predict::PredictConfig,
    out: &std::path::Path,
) -> Result<ExitCode> {
    use artemis_engine::shard::{Opened, Shard, ShardWriter};
    let shard = a.shard.unwrap_or(Shard { index: 0, count: 1 });
    let (mut writer, sel) = match ShardWriter::open(out, shard, &a.inputs)? {
        Opened::Complete => {
            eprintln!(
                "{}: shard {}/{} already complete",
                out.display(),
                shard.index,
                shard.count
            );
            return Ok(ExitCode::SUCCESS);
        }
        Opened::Writing(w, sel) => (w, sel),
    };
    if writer.resumed() > 0 {
        eprintln!(
            "{}: resuming after {} files",
            out.display(),
            writer.resumed()
        );
    }
    cfg.select = Some(sel);
    let mut write_error = None;
    let result = predict(clf, &a.inputs, &cfg, |r| {
        if write_error.is_none()
            && let Err(e) = writer.append(&r.input, r)
        {
            write_error = Some(e);
        }
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let failed = result.rows.iter().filter(|r| r.error.is_some()).count();
    let path = writer.finish()?;
    eprintln!(
        "{}: shard {}/{}, {} rows ({failed} failed)",
        path.display(),
        shard.index,
        shard.count,
        result.rows.len()
    );
    Ok(partial_if(failed > 0))
}

/// `--shard`: `I/N`, or `auto` / `auto/N` from the scheduler's environment.
fn parse_shard(spec: &str) -> std::result::Result<artemis_engine::shard::Shard, String> {
    artemis_engine::shard::Shard::parse(spec, |k| std::env::var(k).ok())
}

/// `predict-merge`: one JSON Lines file from every shard's.
pub(super) fn merge(a: MergeArgs) -> Result<ExitCode> {
    let m = artemis_engine::shard::merge(&a.shards, &a.out)?;
    eprintln!(
        "{}: {} rows of {} files from {} shards",
        a.out.display(),
        m.rows,
        m.files,
        m.shards
    );
    Ok(ExitCode::SUCCESS)
}
