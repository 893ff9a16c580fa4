//! Command-line definitions and their translation into library calls: the top-level command
//! and what every command shares here, one file per command beside it.

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod compare;
mod cv;
mod data;
mod ensemble;
mod eval;
mod export;
mod predict;
mod serve;
mod train;
use bench::BenchArgs;
use compare::CompareArgs;
use cv::CvArgs;
use data::DataCommand;
use ensemble::EnsembleArgs;
use eval::EvalArgs;
use export::ExportArgs;
use predict::{MergeArgs, PredictArgs};
use serve::ServeArgs;
use train::TrainArgs;

/// Exit code for a failed command (bad input, unreadable file, failed run).
pub const EXIT_FAILURE: u8 = 1;

/// Exit code when the command finished but some inputs were skipped, each reported with its
/// path and reason (data check, data split, train, eval, predict).
pub const EXIT_PARTIAL: u8 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "artemis",
    version,
    about = "Brain MRI slice classification: check and split data, train, evaluate, predict.\n\
             Research use only. artemis is not a medical device and must not be used for diagnosis."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and split data sets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Train a network from a split manifest.
    Train(Box<TrainArgs>),
    /// Evaluate a trained run on a split of its manifest or on a folder.
    Eval(EvalArgs),
    /// Classify image files or folders with a trained run.
    Predict(PredictArgs),
    /// Merge the JSON Lines files of a sharded `predict --out ... --shard I/N` into one,
    /// refusing a missing or doubled file or shard.
    PredictMerge(MergeArgs),
    /// One table of several runs' test results (with confidence intervals) beside the
    /// reference project's published figures.
    Compare(CompareArgs),
    /// Serve a web page and a REST API (`/api/v1`) for a trained run.
    Serve(ServeArgs),
    /// Print throughput figures (training and inference images/s).
    Bench(BenchArgs),
    /// Write a run's network as ONNX (logits graph and backbone graph) into <run>/export/.
    Export(ExportArgs),
    /// Cross-validate a training recipe: K folds of the manifest's images (near-duplicate
    /// clusters kept whole), one run each, pooled out-of-fold metrics in cv.json/.md/.html.
    Cv(Box<CvArgs>),
    /// Several trained runs (the folds of a `cv`, or runs of different architectures) as one
    /// model: the mean of their calibrated probabilities, and of their heat maps.
    Ensemble(EnsembleArgs),
}

impl Command {
    /// Commands that free and reallocate the same large buffers every step (training and its
    /// benchmarks): their freed memory stays committed (see `alloc.rs`).
    pub fn keeps_freed_memory(&self) -> bool {
        matches!(self, Command::Train(_) | Command::Cv(_) | Command::Bench(_))
    }
}

/// Which engine computes logits, and with how many threads.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Inference engine: auto (ONNX Runtime when the run has a current `artemis export` and
    /// the runtime library loads, else burn with a one-line notice), burn, or onnx.
    #[arg(long, default_value = "auto")]
    pub engine: artemis_engine::onnx::Backend,
    /// ONNX Runtime threads (default: every core).
    #[arg(long, value_parser = bounded::threads)]
    pub threads: Option<usize>,
}

impl EngineArgs {
    fn options(&self) -> artemis_engine::onnx::EngineOptions {
        artemis_engine::onnx::EngineOptions {
            backend: self.engine,
            threads: self.threads.unwrap_or(0),
        }
    }
}

/// Value parsers for bounded counts: the bounds are the libraries' ([`artemis_engine::limits`]),
/// so an out-of-range flag is a usage error (exit 2) naming the flag and its range.
mod bounded {
    use artemis_engine::limits::{self, Limit};

    fn count(limit: Limit, s: &str) -> Result<usize, String> {
        limit.parse(s).map(|v| v as usize)
    }
    /// One parser per bounded count flag.
    macro_rules! counts {
        ($($name:ident => $limit:ident),* $(,)?) => {
            $(pub fn $name(s: &str) -> Result<usize, String> {
                count(limits::$limit, s)
            })*
        };
    }
    counts! {
        threads => THREADS,
        bootstrap => BOOTSTRAP,
        batch => BATCH,
        epochs => EPOCHS,
        cache_copies => CACHE_COPIES,
        worst => WORST,
        export_check => EXPORT_CHECK,
        steps => STEPS,
        folds => FOLDS,
    }
    pub fn max_pixels(s: &str) -> Result<u64, String> {
        limits::MAX_PIXELS.parse(s)
    }
}

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    artemis_engine::progress::bar(len, what)
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Data(DataCommand::Check(a)) => data::check(a),
        Command::Data(DataCommand::Split(a)) => data::split(a),
        Command::Train(a) => train::run(*a),
        Command::Eval(a) => eval::run(a),
        Command::Predict(a) => predict::run(a),
        Command::PredictMerge(a) => predict::merge(a),
        Command::Compare(a) => compare::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Export(a) => export::run(a),
        Command::Cv(a) => cv::run(*a),
        Command::Ensemble(a) => ensemble::run(a),
    }
}

/// Exit code 3 when the command finished but skipped some inputs (each was reported).
fn partial_if(skipped: bool) -> ExitCode {
    if skipped {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}
