//! `artemis data check` and `artemis data split`: index a data set, report its defects, write a split manifest.

use super::common::{bounded, partial_if, progress_bar};
use anyhow::{Context, Result};
use artemis_data::check::{CheckConfig, Indexed};
use artemis_data::hash::DEFAULT_NEAR_THRESHOLD;
use artemis_data::image_io::DEFAULT_MAX_PIXELS;
use artemis_data::manifest::Protocol;
use artemis_data::split::{SplitConfig, make_manifest};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Count files, find unreadable ones, exact and near duplicates, leakage between splits
    /// and label conflicts.
    Check(CheckArgs),
    /// Write a seeded split manifest (train/val/test) under a protocol.
    Split(SplitArgs),
}

#[derive(Args, Debug)]
pub struct CommonData {
    /// Perceptual-hash distance (bits of 256) at or below which two images are near
    /// duplicates.
    #[arg(long, default_value_t = DEFAULT_NEAR_THRESHOLD)]
    pub near_threshold: u32,
    /// Refuse images with more pixels than this (checked before decoding).
    #[arg(long, default_value_t = DEFAULT_MAX_PIXELS, value_parser = bounded::max_pixels)]
    pub max_pixels: u64,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Data-set root (`<root>/<split>/<class>/<image>` or `<root>/<class>/<image>`).
    pub root: PathBuf,
    #[command(flatten)]
    pub common: CommonData,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SplitArgs {
    /// Data-set root.
    pub root: PathBuf,
    /// reference (the 2022 project's random split), clean (duplicates removed, clusters kept
    /// whole, stratified) or official (the data set's Testing folder).
    #[arg(long, default_value = "clean")]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Fraction of files for validation (of what remains after test).
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Fraction of files for test (ignored by `official`).
    #[arg(long, default_value_t = 0.1)]
    pub test_fraction: f64,
    /// Where to write the manifest.
    #[arg(long, short)]
    pub out: PathBuf,
    #[command(flatten)]
    pub common: CommonData,
}

fn index(root: &std::path::Path, max_pixels: u64) -> Result<Indexed> {
    let pb = progress_bar(0, "reading");
    Indexed::build(root, max_pixels, &pb)
        .with_context(|| format!("cannot index data set {}", root.display()))
}

pub(super) fn check(a: CheckArgs) -> Result<ExitCode> {
    let idx = index(&a.root, a.common.max_pixels)?;
    let report = artemis_data::check::check(
        &idx,
        &CheckConfig {
            near_threshold: a.common.near_threshold,
            max_pixels: a.common.max_pixels,
        },
    );
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(partial_if(
        !report.unreadable.is_empty() || !report.skipped.is_empty(),
    ))
}

pub(super) fn split(a: SplitArgs) -> Result<ExitCode> {
    let idx = index(&a.root, a.common.max_pixels)?;
    let cfg = SplitConfig {
        protocol: a.protocol,
        seed: a.seed,
        val_fraction: a.val_fraction,
        test_fraction: a.test_fraction,
        near_threshold: a.common.near_threshold,
        // Absolute, so that the manifest reads the same from any working directory.
        data_root: artemis_engine::run::canonical(&a.root)?
            .display()
            .to_string(),
    };
    let m = make_manifest(&idx, &cfg)?;
    m.save(&a.out)?;
    let [train, val, test, excluded] = m.counts();
    println!(
        "wrote {} ({} protocol, seed {}): train {train}, val {val}, test {test}, excluded {excluded}",
        a.out.display(),
        m.protocol,
        m.seed
    );
    // Unreadable files stand in the manifest as `excluded` rows with the reason.
    let mut skipped = 0;
    for p in &idx.scan.problems {
        eprintln!("skipped {}: {}", p.path.display(), p.reason);
        skipped += 1;
    }
    for f in idx.fingerprints.iter().filter_map(|f| f.as_ref().err()) {
        eprintln!("skipped: {f}");
        skipped += 1;
    }
    Ok(partial_if(skipped > 0))
}
