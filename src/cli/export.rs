//! `artemis export`: a run's network as ONNX.

use super::common::{bounded, ort_web_dir};
use anyhow::{Context, Result};
use artemis_engine::run::Run;
use artemis_serve::ServeConfig;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug, Clone)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Format: onnx (opset 17, BatchNorm folded, into RUN/export/), or web: the page that
    /// classifies in the browser, with the graph and ONNX Runtime Web, as a static folder
    /// (--out).
    #[arg(long, default_value = "onnx", value_parser = ["onnx", "web"])]
    pub format: String,
    /// With --format web: the folder to write (created; the files in it are replaced).
    #[arg(long, short = 'o', value_name = "DIR", required_if_eq("format", "web"))]
    pub out: Option<PathBuf>,
    /// With --format web: ONNX Runtime Web's folder (default: where scripts/setup puts it).
    #[arg(long, value_name = "DIR")]
    pub ort_web: Option<PathBuf>,
    /// With --format web: the graph the page runs, fp32 or int8 (the run's current
    /// `export/model-int8.onnx`, from an earlier `--quantize int8`).
    #[arg(long, default_value = "fp32")]
    pub precision: artemis_engine::onnx::Precision,
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
    /// With --quantize: convolutions kept in float (float weights, unquantized input and
    /// output), comma-separated: stem (the first), last, depthwise (every grouped one) or
    /// node names (conv_15); `none` (the default) for none.
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LAYERS",
        default_value = "none"
    )]
    pub keep_float: Vec<String>,
    /// With --quantize: how each output channel's weights are rounded to int8: sum (to
    /// nearest, then the fewest moved by one so that the channel's sum stays exact to the
    /// nearest step) or nearest (each alone).
    #[arg(long, value_enum, default_value_t = WeightRounding::Sum)]
    pub weight_rounding: WeightRounding,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WeightRounding {
    Sum,
    Nearest,
}

impl From<WeightRounding> for artemis_models::onnx::quantize::Rounding {
    fn from(r: WeightRounding) -> Self {
        match r {
            WeightRounding::Sum => Self::SumPreserving,
            WeightRounding::Nearest => Self::Nearest,
        }
    }
}

pub(super) fn run(a: ExportArgs) -> Result<ExitCode> {
    use artemis_engine::onnx::{export_run, parity};
    if let (Some(out), "web") = (&a.out, a.format.as_str()) {
        let int8 = a.precision == artemis_engine::onnx::Precision::Int8;
        return export_web(&a.run, out, ort_web_dir(a.ort_web.clone()), int8);
    }
    let run = Run::open(&a.run).with_context(|| format!("opening run {}", a.run.display()))?;
    if artemis_engine::ensemble::is_ensemble(&a.run) {
        if let Some(why) = artemis_engine::ensemble::per_member_input(&a.run)? {
            return export_members(a, &run, &why);
        }
        let int8 = a.quantize.as_ref().map(|_| quantize_config(&a));
        return export_ensemble(&run, a.check, int8.as_ref());
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
        let q = artemis_engine::quantize::quantize_run(&run, &quantize_config(&a))
            .with_context(|| format!("quantizing run {}", a.run.display()))?;
        print_quantized(&q);
    }
    Ok(ExitCode::SUCCESS)
}

/// An ensemble whose members prepare their pictures differently: each member exported as
/// its own run (checked and quantized alike); the ensemble averages them in artemis.
fn export_members(a: ExportArgs, ens: &Run, why: &str) -> Result<ExitCode> {
    println!("{why}: exporting each member");
    for member in artemis_engine::ensemble::member_runs(&a.run)? {
        run(ExportArgs {
            run: member.dir,
            ..a.clone()
        })?;
    }
    if a.quantize.is_some() {
        // The in-browser page takes one graph: the members' int8 graphs averaged, an input
        // per picture.
        let q = artemis_engine::ensemble_export::write_page_int8(ens)
            .with_context(|| format!("averaging the int8 graphs of {}", a.run.display()))?;
        println!(
            "wrote {} ({:.1} MB, the members' int8 graphs averaged, an input per picture: for \
             the in-browser page)",
            q.path.display(),
            q.graph.len() as f64 / 1e6
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn quantize_config(a: &ExportArgs) -> artemis_engine::quantize::QuantizeConfig {
    artemis_engine::quantize::QuantizeConfig {
        images: a.calibration_images,
        keep_float: (a.keep_float.iter())
            .filter(|l| *l != "none")
            .cloned()
            .collect(),
        rounding: a.weight_rounding.into(),
        ..Default::default()
    }
}

fn print_quantized(q: &artemis_engine::quantize::Quantized) {
    println!(
        "wrote {} ({:.1} MB, {:.0}% of the float graph; ranges from {} training pictures)",
        q.path.display(),
        q.graph.len() as f64 / 1e6,
        100.0 * q.graph.len() as f64 / q.float_bytes as f64,
        q.settings.calibration_images
    );
}

/// An ensemble's one graph averaging its members, checked against the members in burn.
fn export_ensemble(
    run: &Run,
    check: usize,
    int8: Option<&artemis_engine::quantize::QuantizeConfig>,
) -> Result<ExitCode> {
    let out = artemis_engine::ensemble_export::export_ensemble(run, check, int8)
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
    if let Some(q) = &out.int8 {
        print_quantized(q);
    }
    Ok(ExitCode::SUCCESS)
}

/// The in-browser page as a static folder.
fn export_web(
    run: &std::path::Path,
    out: &std::path::Path,
    ort: PathBuf,
    int8: bool,
) -> Result<ExitCode> {
    let page = artemis_serve::web::PageOptions {
        max_pixels: ServeConfig::default().max_pixels,
        served: false,
        int8,
    };
    let files = artemis_serve::web::export_static(run, out, &ort, page)
        .with_context(|| format!("exporting {} as a web page", run.display()))?;
    let bytes: u64 = (files.iter())
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "wrote {} ({} files, {:.1} MB): open index.html from any static file host; the page \
         classifies in the browser (ONNX Runtime Web {}), the picture never leaves it",
        out.display(),
        files.len(),
        bytes as f64 / 1e6,
        artemis_serve::web::ORT_WEB_VERSION
    );
    Ok(ExitCode::SUCCESS)
}
