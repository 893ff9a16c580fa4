//! `artemis`: the command line. Parses flags, turns them into the libraries' checked configs,
//! and prints results. All the work happens in the library crates.

mod alloc;
mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ARTEMIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // A panic inside an image decoder on hostile bytes comes back as an error naming the file
    // (artemis-data catches it); print nothing for it here.
    artemis_data::guard::skip_guarded_panics();
    let args = cli::Cli::parse();
    if args.command.keeps_freed_memory() {
        alloc::keep_freed_memory();
    }
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
