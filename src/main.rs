//! `modelgate` binary: parse the CLI, set up logging, load the config, run.

use std::process::ExitCode;

use clap::Parser;
use modelgate::{app, cli::Cli};

fn main() -> ExitCode {
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
    app::run(&cli, config)
}
