//! Command-line definitions and their translation into library calls: the top-level command
//! here, one file per command beside it, and what the commands share in `common.rs`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod bench;
mod common;
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

pub use common::EXIT_FAILURE;

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
