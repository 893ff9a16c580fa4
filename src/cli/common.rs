//! What the commands share: exit codes, the engine flags, bounded count parsers, progress
//! bars. A leaf: it imports no command.

use artemis_engine::device::Devices;
use clap::Args;
use std::process::ExitCode;

/// Exit code for a failed command (bad input, unreadable file, failed run).
pub const EXIT_FAILURE: u8 = 1;

/// Exit code when the command finished but some inputs were skipped, each reported with its
/// path and reason (data check, data split, train, eval, predict).
pub const EXIT_PARTIAL: u8 = 3;

/// ONNX Runtime Web's folder for the in-browser page: `dir`, else where `scripts/setup`
/// puts it in the artemis cache.
pub(super) fn ort_web_dir(dir: Option<std::path::PathBuf>) -> std::path::PathBuf {
    dir.unwrap_or_else(|| {
        artemis_serve::web::default_ort_web_dir(&artemis_models::weights::cache_dir())
    })
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
    /// Where the network runs: cpu, vulkan[:N], cuda[:N] or metal. burn's GPU backends are
    /// cargo features (`--features vulkan`); ONNX Runtime runs on cuda[:N] with its GPU build
    /// (scripts/setup --gpu). train and cv take a comma-separated list: one replica per
    /// device, gradients averaged every step.
    #[arg(long, default_value = "cpu")]
    pub device: Devices,
    /// The exported graph ONNX Runtime runs: fp32, or int8 (made by `artemis export
    /// --quantize int8`).
    #[arg(long, default_value = "fp32")]
    pub precision: artemis_engine::onnx::Precision,
}

impl EngineArgs {
    /// The options, on the first device given (what training's feature cache and every
    /// single-device command use).
    pub(super) fn options(&self) -> artemis_engine::onnx::EngineOptions {
        artemis_engine::onnx::EngineOptions {
            backend: self.engine,
            threads: self.threads.unwrap_or(0),
            device: self.device.main(),
            precision: self.precision,
        }
    }

    /// [`Self::options`] for a command that runs on one device (eval, predict, serve).
    pub(super) fn single(&self) -> anyhow::Result<artemis_engine::onnx::EngineOptions> {
        if self.device.list().len() > 1 {
            anyhow::bail!(
                "--device {}: this command runs on one device (only train and cv take a list)",
                self.device
            );
        }
        Ok(self.options())
    }
}

/// Value parsers for bounded counts: the bounds are the libraries' ([`artemis_engine::limits`]),
/// so an out-of-range flag is a usage error (exit 2) naming the flag and its range.
pub(super) mod bounded {
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
        members => MEMBERS,
    }
    pub fn max_pixels(s: &str) -> Result<u64, String> {
        limits::MAX_PIXELS.parse(s)
    }
}

pub(super) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    artemis_engine::progress::bar(len, what)
}

/// Exit code 3 when the command finished but skipped some inputs (each was reported).
pub(super) fn partial_if(skipped: bool) -> ExitCode {
    if skipped {
        ExitCode::from(EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    }
}
