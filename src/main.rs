//! `modelgate` binary: parse the CLI, set up logging, load the config, run.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use modelgate::{app, cli::Cli};

fn main() -> ExitCode {
    // First thing: until the reloader listens for SIGHUP, its default action would kill us.
    // Remember it instead; the reloader applies it once it runs.
    let early_hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&early_hup))
    {
        eprintln!("modelgate: cannot handle SIGHUP: {e}");
    }
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let path = cli.config.display().to_string();
    let config = match app::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("modelgate: {path}: invalid configuration:\n{e}");
            return ExitCode::from(1);
        }
    };
    if cli.test {
        print!("{}", app::summary(&path, &config));
        if cli.check_backends {
            let (report, ok) = app::check_backends(&config);
            print!("{report}");
            if !ok {
                return ExitCode::from(1);
            }
        }
        return ExitCode::SUCCESS;
    }
    app::run(&cli, config, early_hup)
}
