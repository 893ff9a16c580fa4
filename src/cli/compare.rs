//! `artemis compare`: one table of several runs beside the reference's figures, or
//! (`--paired`) two recipes image by image.

use anyhow::{Context, Result};
use artemis_report::NOTICE;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders, each evaluated on its test split (`artemis eval <run>`); with --paired,
    /// also `cv` folders and `eval` output folders, two at a time.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Compare the folders two at a time, image by image: B against A for each pair (A B, or
    /// A1 B1 A2 B2 ... pooled, e.g. the same two recipes cross-validated with several seeds),
    /// with a paired bootstrap interval of the difference and McNemar's exact test.
    #[arg(long)]
    pub paired: bool,
    /// Bootstrap resamples of the paired interval.
    #[arg(long, default_value_t = 2000, requires = "paired")]
    pub resamples: usize,
    /// Seed of the paired bootstrap.
    #[arg(long, default_value_t = 42, requires = "paired")]
    pub seed: u64,
    /// Folder for compare.md and compare.html (nothing written without it).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print JSON rows instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

/// Writes each `(name, text)` into `out` (created), atomically.
fn write_all(out: &std::path::Path, files: &[(&str, &str)]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    for (name, text) in files {
        let p = out.join(name);
        artemis_data::fsutil::write_atomic(&p, text.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

fn run_paired(a: &CompareArgs) -> Result<ExitCode> {
    use artemis_engine::paired::{paired, to_markdown};
    let p = paired(&a.runs, a.resamples, a.seed).context("comparing image by image")?;
    let md = to_markdown(&p);
    if let Some(out) = &a.out {
        write_all(out, &[("paired.md", &md)])?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&p)?);
    } else {
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn run(a: CompareArgs) -> Result<ExitCode> {
    use artemis_engine::compare::{compare, to_html, to_markdown};
    if a.paired {
        return run_paired(&a);
    }
    let rows = compare(&a.runs).context("comparing runs")?;
    let md = to_markdown(&rows);
    if let Some(out) = &a.out {
        write_all(
            out,
            &[("compare.md", &md), ("compare.html", &to_html(&rows))],
        )?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{NOTICE}\n");
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}
