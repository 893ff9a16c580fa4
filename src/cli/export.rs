//! `artemis export`: a run's network as ONNX.

use super::common::bounded;
use anyhow::{Context, Result};
use artemis_engine::run::Run;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Format (ONNX, opset 17, BatchNorm folded).
    #[arg(long, default_value = "onnx", value_parser = ["onnx"])]
    pub format: String,
    /// Check the export: run both graphs with ONNX Runtime on this many seeded random
    /// inputs and compare with burn (max |difference| printed; fails above 1e-4, relative to
    /// the largest value when that exceeds 1).
    #[arg(long, default_value_t = 4, value_parser = bounded::export_check)]
    pub check: usize,
    /// Also write `export/model-int8.onnx`: the logits graph quantized to int8 (QDQ form:
    /// per-channel int8 weights, per-tensor uint8 activations with ranges calibrated on the
    /// run's own training pictures); `--precision int8` runs it.
    #[arg(long, value_parser = ["int8"])]
    pub quantize: Option<String>,
    /// With --quantize: training pictures the activation ranges are calibrated on (a seeded
    /// sample).
    #[arg(long, default_value_t = 256, value_parser = bounded::batch)]
    pub calibration_images: usize,
}

pub(super) fn run(a: ExportArgs) -> Result<ExitCode> {
    use artemis_engine::onnx::{export_run, parity};
    let run = Run::open(&a.run).with_context(|| format!("opening run {}", a.run.display()))?;
    if artemis_engine::ensemble::is_ensemble(&a.run) {
        return export_ensemble(&run, a.check);
    }
    let out = export_run(&run).with_context(|| format!("exporting run {}", a.run.display()))?;
    println!(
        "wrote {} ({:.1} MB, image -> logits) and {} ({:.1} MB, image -> features, pooled)",
        out.model.display(),
        out.bytes.0 as f64 / 1e6,
        out.backbone.display(),
        out.bytes.1 as f64 / 1e6
    );
    if a.check > 0 {
        match artemis_engine::onnx::runtime() {
            Err(e) => eprintln!("notice: not checked against ONNX Runtime: {e}"),
            Ok(_) => {
                let p = parity(&run, &out.network, a.check, 42).context("checking the export")?;
                println!(
                    "checked with ONNX Runtime on {} random inputs: max |logit difference| {:.2e} (largest |logit| {:.1}), max |feature difference| {:.2e} (burn vs ONNX Runtime)",
                    a.check, p.logits, p.scale.0, p.features
                );
                if !p.within(1e-4) {
                    anyhow::bail!(
                        "burn and ONNX Runtime disagree by more than 1e-4 (relative to values above 1) on {}",
                        out.model.display()
                    );
                }
            }
        }
    }
    if a.quantize.is_some() {
        let cfg = artemis_engine::quantize::QuantizeConfig {
            images: a.calibration_images,
            ..Default::default()
        };
        let q = artemis_engine::quantize::quantize_run(&run, &cfg)
            .with_context(|| format!("quantizing run {}", a.run.display()))?;
        println!(
            "wrote {} ({:.1} MB, {:.0}% of the float graph; ranges from {} training pictures)",
            q.path.display(),
            q.bytes as f64 / 1e6,
            100.0 * q.bytes as f64 / q.float_bytes as f64,
            q.calibration_images
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// An ensemble's one graph averaging its members, checked against the members in burn.
fn export_ensemble(run: &Run, check: usize) -> Result<ExitCode> {
    let out = artemis_engine::ensemble_export::export_ensemble(run, check)
        .with_context(|| format!("exporting ensemble {}", run.dir.display()))?;
    println!(
        "wrote {} ({:.1} MB, image -> logits: the log of the mean of {} members' calibrated \
         probabilities)",
        out.model.display(),
        out.bytes as f64 / 1e6,
        out.members
    );
    match out.parity {
        None if check > 0 => {
            eprintln!("notice: not checked against ONNX Runtime (it does not load)")
        }
        None => {}
        Some(d) => {
            println!(
                "checked with ONNX Runtime on {check} random inputs: max |probability difference| \
                 {d:.2e} (the members averaged in burn vs the graph)"
            );
            if d > 1e-4 {
                anyhow::bail!(
                    "burn and ONNX Runtime disagree by more than 1e-4 on {}",
                    out.model.display()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
