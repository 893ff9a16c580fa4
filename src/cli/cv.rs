//! `artemis cv`: cross-validate a training recipe.

use super::common::bounded;
use super::train::{TrainArgs, train_config};
use anyhow::{Context, Result};
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CvArgs {
    /// The recipe, as for `train`; `-o` is the cross-validation folder (one run per fold).
    #[command(flatten)]
    pub train: TrainArgs,
    /// Number of folds.
    #[arg(long, default_value_t = 5, value_parser = bounded::folds)]
    pub folds: usize,
    /// Bootstrap resamples of the pooled intervals.
    #[arg(long, default_value_t = 1000, value_parser = bounded::bootstrap)]
    pub bootstrap: usize,
    /// Seed that deals the folds (and seeds the bootstrap); defaults to --seed. Fix it to
    /// cross-validate several training seeds on the same folds.
    #[arg(long)]
    pub fold_seed: Option<u64>,
}

pub(super) fn run(a: CvArgs) -> Result<ExitCode> {
    let recipe = train_config(&a.train)?;
    let mut cfg = artemis_engine::cv::CvConfig::new(recipe, a.train.out.clone());
    cfg.folds = a.folds;
    cfg.bootstrap = a.bootstrap;
    if let Some(seed) = a.fold_seed {
        cfg.seed = seed;
    }
    cfg.members = a.train.members;
    cfg.engine = a.train.engine.options();
    let r = artemis_engine::cv::cross_validate(&cfg)
        .with_context(|| format!("cross-validation in {}", a.train.out.display()))?;
    print!("{}", artemis_engine::cv::to_markdown(&r));
    println!("report: {}", a.train.out.join("cv.html").display());
    Ok(ExitCode::SUCCESS)
}
