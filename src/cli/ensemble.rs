//! `artemis ensemble`: several trained runs as one model.

use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EnsembleArgs {
    /// The member runs (at least two, with the same classes; each prepares its own input).
    #[arg(required = true, num_args = 2..)]
    pub runs: Vec<PathBuf>,
    /// The ensemble folder to create (eval, predict, serve and compare take it like a run).
    #[arg(short, long)]
    pub out: PathBuf,
}

pub(super) fn run(a: EnsembleArgs) -> Result<ExitCode> {
    let how = artemis_engine::members::Calibrate::default();
    let file = artemis_engine::members::assemble(&a.out, &a.runs, &how)
        .with_context(|| format!("making the ensemble {}", a.out.display()))?;
    println!(
        "wrote ensemble {} of {} members ({}); its probabilities are the mean of theirs, each \
         calibrated with its own temperature (fitted on its validation split)",
        a.out.display(),
        file.members.len(),
        (file.members.iter())
            .map(|m| format!("{} ({})", m.run.display(), m.model))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}
