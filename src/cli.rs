//! Command line (clap).

use std::path::PathBuf;

use clap::Parser;

/// OpenAI-compatible edge gateway for fleets of vLLM model servers.
#[derive(Debug, Parser)]
#[command(name = "modelgate", version, about)]
pub struct Cli {
    /// Path of router.yaml.
    #[arg(short = 'c', long = "config", default_value = "router.yaml")]
    pub config: PathBuf,
    /// Validate the config, print a summary, and exit (0 valid, 1 invalid), like `nginx -t`.
    #[arg(short = 't', long = "test")]
    pub test: bool,
    /// With --test: also probe every backend's /v1/models once; exit 1 if a model has no
    /// backend that is reachable and serves it.
    #[arg(long = "check-backends", requires = "test")]
    pub check_backends: bool,
    /// Take over the listening sockets of a running modelgate (zero-downtime upgrade).
    #[arg(short = 'u', long = "upgrade")]
    pub upgrade: bool,
    /// Run in the background (writes server.pid_file).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Do not watch the config file; reload on SIGHUP only.
    #[arg(long = "no-watch")]
    pub no_watch: bool,
}
