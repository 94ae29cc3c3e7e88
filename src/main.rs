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
    // Likewise an upgrade signal that comes too early must not kill (or core-dump) us: until the
    // lifecycle handlers run it is ignored; nothing can be waiting to take over yet.
    let too_early = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGQUIT, signal_hook::consts::SIGUSR2] {
        let _ = signal_hook::flag::register(sig, Arc::clone(&too_early));
    }
    let cli = Cli::parse();

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
    modelgate::logging::init(&config.log);
    app::run(&cli, config, early_hup)
}
