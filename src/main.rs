//! `artemis`: the command line. Parses flags, turns them into the libraries' checked configs,
//! and prints results. All the work happens in the library crates.

mod cli;

use clap::Parser;

/// mimalloc instead of glibc's allocator. glibc returns every freed block over its mmap
/// threshold (32 MB at most) to the OS, so each training step faulted in fresh pages for its
/// large activations and gradients, which cost about as much as the kernels: MobileNetV2 at
/// 160 px, batch 32 (`artemis bench --train-only`), trained at 14.2 and 12.1 images/s with
/// glibc against 17.1 and 14.9 with mimalloc, in two alternating runs of the two builds.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h` v2, the version libmimalloc-sys 0.1.49
/// builds by default; its Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory that training frees committed for reuse instead of returning it to the OS
/// after mimalloc's default 10 ms: each step frees and allocates the same large activation
/// and gradient buffers, and re-faulting them cost the kernel's page zeroing (15% of a
/// MobileNetV2 step at 160 px in a profile). Called by the commands that train; a long-lived
/// server keeps the default, so what it frees goes back to the OS.
/// An explicit `MIMALLOC_PURGE_DELAY` in the environment is left to rule.
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option of the allocator (-1 is a documented value: "no purging
    // at all"). Called at the start of a command, on the main thread, before the command
    // starts any other thread, so no allocator call runs while the option is written.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARTEMIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(cli::EXIT_FAILURE)
        }
    };
    // For scripts/bench-memory: the process's peak resident memory, as the kernel counted it.
    if std::env::var_os("ARTEMIS_PEAK_RSS").is_some() {
        match peak_rss_kib() {
            Some(kib) => eprintln!("peak resident memory: {kib} KiB"),
            None => eprintln!("peak resident memory: unknown (no /proc/self/status)"),
        }
    }
    code
}

/// `VmHWM` of /proc/self/status (Linux): the high-water mark of resident memory, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}
