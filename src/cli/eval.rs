//! `artemis eval`: evaluate a run on a split of its manifest or on a folder.

use super::common::{EngineArgs, bounded, partial_if};
use anyhow::{Context, Result};
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_data::manifest::Split;
use artemis_engine::eval::{CalibrationMode, EvalConfig, EvalSource, evaluate};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run folder.
    pub run: PathBuf,
    /// Manifest split to evaluate on: test, val or train.
    #[arg(long, default_value = "test", conflicts_with = "data")]
    pub split: Split,
    /// Evaluate on a labelled folder instead (either layout), e.g. the official Testing set.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Data root for manifest paths (defaults to the run's).
    #[arg(long)]
    pub data_root: Option<PathBuf>,
    #[arg(long, default_value_t = 64, value_parser = bounded::batch)]
    pub batch_size: usize,
    /// Bootstrap resamples for the 95% confidence intervals (0 turns them off; at most
    /// 100,000).
    #[arg(long, default_value_t = 1000, value_parser = bounded::bootstrap)]
    pub bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Report coverage and accuracy when the model abstains below this top-1 probability.
    #[arg(long)]
    pub abstain: Option<f64>,
    /// Fit the temperature on the validation split again, even if the run has one.
    #[arg(long, conflicts_with = "no_calibration")]
    pub recalibrate: bool,
    /// Report raw softmax probabilities (no temperature scaling).
    #[arg(long)]
    pub no_calibration: bool,
    /// With --data: a file mapping the folder's class-folder names to labels
    /// (`folder<TAB>label` a line; see README "External data").
    #[arg(long, requires = "data")]
    pub label_map: Option<PathBuf>,
    /// With --data: leave files that duplicate training images out of the metrics.
    #[arg(long, requires = "data")]
    pub exclude_duplicates: bool,
    /// Most confident mistakes shown in report.html.
    #[arg(long, default_value_t = 12, value_parser = bounded::worst)]
    pub worst: usize,
    /// Test-time augmentation: average over the image, its mirror and four small shifts.
    #[arg(long)]
    pub tta: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Skip images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub(super) fn run(a: EvalArgs) -> Result<ExitCode> {
    let source = match &a.data {
        Some(f) => EvalSource::Folder(f.clone()),
        None => EvalSource::Split(a.split),
    };
    let label_map = match &a.label_map {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading label map {}", p.display()))?;
            Some(
                artemis_data::labels::LabelMap::parse(&text)
                    .map_err(|(line, why)| anyhow::anyhow!("{}:{line}: {why}", p.display()))?,
            )
        }
        None => None,
    };
    let mut cfg = EvalConfig::new(a.run.clone(), source);
    cfg.data_root = a.data_root.clone();
    cfg.batch_size = a.batch_size;
    cfg.bootstrap = a.bootstrap;
    cfg.seed = a.seed;
    cfg.abstain = a.abstain;
    cfg.label_map = label_map;
    cfg.exclude_duplicates = a.exclude_duplicates;
    cfg.worst = a.worst;
    cfg.tta = a.tta;
    cfg.max_pixels = a.max_pixels;
    cfg.engine = a.engine.single()?;
    cfg.calibration = if a.no_calibration {
        CalibrationMode::Off
    } else if a.recalibrate {
        CalibrationMode::Refit
    } else {
        CalibrationMode::Auto
    };
    let report = evaluate(&cfg).with_context(|| format!("evaluating run {}", a.run.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    for (p, why) in &report.skipped {
        eprintln!("skipped {}: {why}", p.display());
    }
    Ok(partial_if(!report.skipped.is_empty()))
}
