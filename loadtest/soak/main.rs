//! `soak`: run the soak once and print its report (see `loadtest/soak.sh`, which builds and
//! runs this with the release binaries).
//!
//! ```text
//! soak --mode full|ci --gateway PATH --mock PATH --out DIR [--duration S] [--streams N]
//!      [--short-rate R] [--tokens N] [--itl-ms MS] [--threads N] [--command TEXT]
//! ```
//! Exit status: 0 when every judged target is met, 1 when one is missed, 2 on a usage or
//! setup error.

#[path = "mod.rs"]
mod soak;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "soak",
    about = "modelgate soak: reloads, upgrades, faults under load"
)]
struct Args {
    /// full (≥ 10 minutes, 500 streams) or ci (60 s, 50 streams).
    #[arg(long, default_value = "full")]
    mode: String,
    #[arg(long)]
    gateway: PathBuf,
    #[arg(long)]
    mock: PathBuf,
    /// Directory for logs, raw data and report.md.
    #[arg(long)]
    out: PathBuf,
    /// Seconds of load (default: 660 full, 60 ci).
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long)]
    streams: Option<usize>,
    #[arg(long)]
    short_rate: Option<f64>,
    #[arg(long)]
    tokens: Option<usize>,
    #[arg(long)]
    itl_ms: Option<u64>,
    #[arg(long)]
    threads: Option<u32>,
    /// Seconds of warm-up (the level RSS and descriptors are compared with).
    #[arg(long)]
    warmup: Option<u64>,
    /// The command line to quote in the report.
    #[arg(long, default_value = "")]
    command: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut opts = match args.mode.as_str() {
        "full" => soak::Options::full(args.gateway, args.mock, args.out),
        "ci" => soak::Options::ci(args.gateway, args.mock, args.out),
        other => {
            eprintln!("soak: --mode {other}: expected full or ci");
            return ExitCode::from(2);
        }
    };
    if let Some(s) = args.duration {
        opts.duration = Duration::from_secs(s);
    }
    if let Some(w) = args.warmup {
        opts.warmup = Duration::from_secs(w);
    }
    opts.streams = args.streams.unwrap_or(opts.streams);
    opts.short_rate = args.short_rate.unwrap_or(opts.short_rate);
    opts.stream_tokens = args.tokens.unwrap_or(opts.stream_tokens);
    opts.itl_ms = args.itl_ms.unwrap_or(opts.itl_ms);
    opts.threads = args.threads.unwrap_or(opts.threads);
    opts.command = args.command;
    let out = opts.out_dir.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(soak::run(opts)) {
        Ok(report) => {
            let text = std::fs::read_to_string(out.join("report.md")).unwrap_or_default();
            println!("{text}");
            eprintln!("soak: report and raw data in {}", out.display());
            if report.all_met() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}
