//! `artemis serve`: the web page and REST API for a run.

use super::common::{EngineArgs, ort_web_dir};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Run folder.
    #[arg(long)]
    pub run: PathBuf,
    /// Address to listen on (loopback by default; anything else exposes the model to the
    /// network).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: std::net::SocketAddr,
    /// Largest upload accepted, in MiB.
    #[arg(long, default_value_t = 32)]
    pub max_body_mb: usize,
    /// Largest picture accepted, in pixels (checked before decoding).
    #[arg(long, default_value_t = 40_000_000)]
    pub max_pixels: u64,
    /// Requests classified at once; default: the number of cores.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Requests that may wait for a slot; beyond slots + waiting, 503 at once.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// Per-request time limit in seconds, receiving the upload included (at most 3600).
    #[arg(long, default_value_t = 30.0)]
    pub timeout: f64,
    /// Seconds a client may take to send a request's headers.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Open connections at most; one more is answered 503 and closed.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
    /// Seconds requests in flight may still take after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 10.0)]
    pub shutdown_grace: f64,
    /// ONNX Runtime Web's folder, for the page that classifies in the browser (`/local/`);
    /// default: where scripts/setup puts it in the artemis cache.
    #[arg(long, value_name = "DIR")]
    pub ort_web: Option<PathBuf>,
    /// Append one line per request to FILE: time, method, path (no query), status,
    /// milliseconds.
    #[arg(long, value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    #[command(flatten)]
    pub engine: EngineArgs,
}

pub(super) fn run(a: ServeArgs) -> Result<ExitCode> {
    use artemis_serve::{ServeConfig, serve};
    // Finite and non-negative here; ServeConfig::validate checks the range.
    let seconds = |flag: &str, v: f64| {
        std::time::Duration::try_from_secs_f64(v)
            .map_err(|_| anyhow::anyhow!("{flag} {v}: must be a number of seconds"))
    };
    let mut cfg = ServeConfig {
        addr: a.addr,
        max_body: a.max_body_mb.saturating_mul(1 << 20),
        max_pixels: a.max_pixels,
        timeout: seconds("--timeout", a.timeout)?,
        header_timeout: seconds("--header-timeout", a.header_timeout)?,
        shutdown_grace: seconds("--shutdown-grace", a.shutdown_grace)?,
        max_connections: a.max_connections,
        max_waiting: a.max_waiting,
        engine: a.engine.single()?,
        ort_web: Some(ort_web_dir(a.ort_web)),
        access_log: a.access_log,
        ..ServeConfig::default()
    };
    if let Some(n) = a.max_concurrent {
        cfg.max_concurrent = n;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(serve(&a.run, cfg))
        .with_context(|| format!("serving run {}", a.run.display()))?;
    Ok(ExitCode::SUCCESS)
}
