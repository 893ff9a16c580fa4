//! `artemis compare`: one table of several runs beside the reference's figures.

use anyhow::{Context, Result};
use artemis_report::NOTICE;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run folders, each evaluated on its test split (`artemis eval <run>`).
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Folder for compare.md and compare.html (nothing written without it).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Print JSON rows instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(a: CompareArgs) -> Result<ExitCode> {
    use artemis_engine::compare::{compare, to_html, to_markdown};
    let rows = compare(&a.runs).context("comparing runs")?;
    let md = to_markdown(&rows);
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for (name, text) in [("compare.md", md.clone()), ("compare.html", to_html(&rows))] {
            let p = out.join(name);
            artemis_data::fsutil::write_atomic(&p, text.as_bytes())
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
        }
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!("{NOTICE}\n");
        print!("{md}");
    }
    Ok(ExitCode::SUCCESS)
}
