//! `modelgate-mock`: runs one mock vLLM server (see `modelgate::mock`) for the demo, manual
//! testing and load tests, or (`--sim`) a fleet of simulated vLLM servers for routing
//! benchmarks (see `modelgate::mock::sim`).
//!
//! Control plane only: parses flags, starts the server on a multi-threaded runtime, prints one
//! readiness line to stderr, and stops cleanly on SIGTERM/SIGINT. Must not implement any
//! serving behaviour itself; that lives in the library so tests exercise the same code.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use modelgate::mock::dns::MockDns;
use modelgate::mock::sim::{
    DEFAULT_BLOCK_SIZE, DEFAULT_KV_BLOCKS, DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS,
    DEFAULT_STEP_BASE_US, DEFAULT_STEP_DECODE_US, DEFAULT_STEP_PREFILL_US,
};
use modelgate::mock::{
    FailMode, MockConfig, MockLoad, MockRole, MockServer, SimConfig, StepCost,
    DEFAULT_MAX_MODEL_LEN, DEFAULT_MODEL, DEFAULT_TOKENS,
};
use tracing_subscriber::EnvFilter;

/// Mock vLLM OpenAI-compatible server (no GPU): canned tokens with configurable latency and
/// failures, or with --sim a simulated vLLM engine per port (continuous batching, prefix
/// caching, preemption, step-time model) for routing benchmarks.
#[derive(Debug, Parser)]
#[command(name = "modelgate-mock", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 8001)]
    port: u16,
    /// Serve on this many ports: --port, --port + 1, ... (with --port 0, that many free ports),
    /// one mock backend per port in this one process (named mock-PORT unless --name is given).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    ports: u16,
    /// With --ports: backend k serves only the k-th --model (cycling through the list), as a
    /// fleet of single-model vLLM servers would; without it every port serves every model.
    #[arg(long)]
    spread_models: bool,
    /// A role in prefill/decode disaggregation: `prefill` wants vLLM's
    /// `kv_transfer_params.do_remote_decode`, `stream: false` and `max_tokens: 1` and answers
    /// `kv_transfer_params` naming its blocks; `decode` wants those back. Either answers 400,
    /// naming the field, when the router sent something else. Default: plain.
    #[arg(long, value_enum, default_value = "plain")]
    role: Role,
    /// With --role prefill: answer without `kv_transfer_params` (a server started without a
    /// KV connector), to test the router's handling of it.
    #[arg(long)]
    omit_kv_params: bool,
    /// Also serve DNS (UDP) on this address, from --dns-zone (discovery tests and load tests).
    #[arg(long, requires = "dns_zone")]
    dns_listen: Option<SocketAddr>,
    /// Zone file for --dns-listen, re-read when it changes (polled every 100 ms): one record per
    /// line, `NAME A IP`, `NAME AAAA IP`, `NAME SRV PORT TARGET`, or `ttl SECONDS`.
    #[arg(long, requires = "dns_listen")]
    dns_zone: Option<std::path::PathBuf>,
    /// Backend name returned in `x-mock-backend` (default `mock-PORT`).
    #[arg(long)]
    name: Option<String>,
    /// Served model id; repeat for several (the first is the default).
    #[arg(long = "model", default_value = DEFAULT_MODEL)]
    models: Vec<String>,
    /// `root` reported in /v1/models (default: the model id).
    #[arg(long)]
    root: Option<String>,
    /// `max_model_len` reported in /v1/models.
    #[arg(long, default_value_t = DEFAULT_MAX_MODEL_LEN)]
    max_model_len: u32,
    /// Time to first token, in milliseconds.
    #[arg(long, default_value_t = 0, conflicts_with = "sim")]
    ttft_ms: u64,
    /// Inter-token latency of streams, in milliseconds.
    #[arg(long, default_value_t = 0, conflicts_with = "sim")]
    itl_ms: u64,
    /// Completion tokens per answer (capped by the request's max_tokens). With --sim: tokens
    /// generated when a request sets no max_tokens (otherwise exactly max_tokens).
    #[arg(long, default_value_t = DEFAULT_TOKENS)]
    tokens: usize,
    /// Failure to inject into every POST: none, an HTTP status (500, 503, 429, ...), hang,
    /// close-mid-stream or hang-mid-stream.
    #[arg(long, default_value = "none", value_parser = parse_fail)]
    fail: Fail,
    /// SSE chunks sent before a close-mid-stream / hang-mid-stream failure.
    #[arg(long, default_value_t = 2)]
    fail_after_chunks: usize,
    /// Switch the failure mode while running (soak tests): this file is polled every 100 ms;
    /// its trimmed content, in --fail's syntax, applies to requests that start after it is
    /// seen. A missing or empty file means --fail; an invalid value is reported on stderr and
    /// the current mode stays.
    #[arg(long)]
    fail_file: Option<std::path::PathBuf>,
    /// Report this `vllm:num_requests_running` in /metrics instead of the real in-flight count,
    /// to look busy to a load-aware gateway. Any of --running, --waiting, --kv-usage turns the
    /// fixed report on; the others then default to 0.
    #[arg(long)]
    running: Option<u64>,
    /// Report this `vllm:num_requests_waiting` in /metrics (see --running).
    #[arg(long)]
    waiting: Option<u64>,
    /// Report this KV-cache usage fraction (0 to 1) in /metrics (see --running).
    #[arg(long, value_parser = parse_fraction)]
    kv_usage: Option<f64>,
    #[command(flatten)]
    sim: SimArgs,
}

/// `--role`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Role {
    Plain,
    Prefill,
    Decode,
}

/// The simulator's flags (`--sim` and what only applies with it).
#[derive(Debug, clap::Args)]
struct SimArgs {
    /// Simulate one vLLM engine per port (Llama-3.1-8B on one H100 by default): requests are
    /// scheduled with continuous batching, chunked prefill and prefix caching, and tokens come
    /// out at the simulated steps' ends. Adds POST /reset_prefix_cache, GET /model_info and
    /// /server_info, and vLLM's scheduler and cache metrics.
    #[arg(id = "sim", long = "sim", conflicts_with_all = ["running", "waiting", "kv_usage"])]
    enabled: bool,
    /// With --sim: wall-clock seconds per simulated second (2 = everything twice as slow, for
    /// a loaded machine). Reported durations stay in simulated seconds.
    #[arg(long, default_value_t = 1.0, value_parser = parse_positive, requires = "sim")]
    time_scale: f64,
    /// With --sim: KV-cache capacity per server, in blocks (default: Llama-3.1-8B on one H100,
    /// as measured by BLIS).
    #[arg(long, default_value_t = DEFAULT_KV_BLOCKS, requires = "sim",
          value_parser = clap::value_parser!(u32).range(1..))]
    kv_blocks: u32,
    /// With --sim: tokens per KV block (prefix-cache granularity).
    #[arg(long, default_value_t = DEFAULT_BLOCK_SIZE, requires = "sim",
          value_parser = clap::value_parser!(u32).range(1..))]
    block_size: u32,
    /// With --sim: most requests in a server's running batch.
    #[arg(long, default_value_t = DEFAULT_MAX_NUM_SEQS, requires = "sim",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_num_seqs: u32,
    /// With --sim: token budget of one step (prefill chunk tokens plus one per decode).
    #[arg(long, default_value_t = DEFAULT_MAX_NUM_BATCHED_TOKENS, requires = "sim",
          value_parser = clap::value_parser!(u32).range(1..))]
    max_num_batched_tokens: u32,
    /// With --sim: fixed cost of a step, in microseconds (BLIS fit, Llama-3.1-8B / H100).
    #[arg(long, default_value_t = DEFAULT_STEP_BASE_US, value_parser = parse_non_negative,
          requires = "sim")]
    step_base_us: f64,
    /// With --sim: cost of each prefill token in a step, in microseconds.
    #[arg(long, default_value_t = DEFAULT_STEP_PREFILL_US, value_parser = parse_non_negative,
          requires = "sim")]
    step_prefill_us: f64,
    /// With --sim: cost of each decode token in a step, in microseconds.
    #[arg(long, default_value_t = DEFAULT_STEP_DECODE_US, value_parser = parse_non_negative,
          requires = "sim")]
    step_decode_us: f64,
    /// With --sim: per-server slowdown factors, one per port in --ports order, cycling
    /// (1,1,1,2 = the fourth server's steps take twice as long).
    #[arg(long, value_delimiter = ',', default_value = "1", value_parser = parse_positive,
          requires = "sim")]
    sim_slowdown: Vec<f64>,
}

impl SimArgs {
    /// The simulated engine of the server on the `k`-th port, with --sim.
    fn sim_config(&self, k: usize) -> Option<SimConfig> {
        if !self.enabled {
            return None;
        }
        let slowdown = match self.sim_slowdown.as_slice() {
            [] => 1.0,
            factors => factors[k % factors.len()],
        };
        Some(SimConfig {
            kv_blocks: self.kv_blocks,
            block_size: self.block_size,
            max_num_seqs: self.max_num_seqs,
            max_num_batched_tokens: self.max_num_batched_tokens,
            step: StepCost {
                base_us: self.step_base_us,
                prefill_us: self.step_prefill_us,
                decode_us: self.step_decode_us,
            },
            slowdown,
            time_scale: self.time_scale,
        })
    }

    /// One line describing the simulated fleet, printed before the readiness lines.
    fn sim_summary(&self) -> String {
        let slowdown: Vec<String> = self.sim_slowdown.iter().map(f64::to_string).collect();
        format!(
            "modelgate-mock sim: {} KV blocks of {} tokens, max_num_seqs {}, \
             max_num_batched_tokens {}, step {} us + {} us/prefill token + {} us/decode token, \
             slowdown {}, time scale {} (wall s per simulated s)",
            self.kv_blocks,
            self.block_size,
            self.max_num_seqs,
            self.max_num_batched_tokens,
            self.step_base_us,
            self.step_prefill_us,
            self.step_decode_us,
            slowdown.join(","),
            self.time_scale,
        )
    }
}

fn parse_positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err("expected a positive number, such as 1 or 2.5".to_owned()),
    }
}

fn parse_non_negative(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() && f >= 0.0 => Ok(f),
        _ => Err("expected a number of microseconds, 0 or more".to_owned()),
    }
}

fn parse_fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err("expected a fraction from 0 to 1, such as 0.85".to_owned()),
    }
}

/// `--fail` as typed; turned into a [`FailMode`] together with `--fail-after-chunks`.
#[derive(Clone, Debug)]
enum Fail {
    Named(FailName),
    Status(u16),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailName {
    None,
    Hang,
    CloseMidStream,
    HangMidStream,
}

fn parse_fail(value: &str) -> Result<Fail, String> {
    if let Ok(status) = value.parse::<u16>() {
        return if (100..=599).contains(&status) {
            Ok(Fail::Status(status))
        } else {
            Err(format!("{status} is not an HTTP status (100-599)"))
        };
    }
    FailName::from_str(value, true)
        .map(Fail::Named)
        .map_err(|_| {
            "expected none, an HTTP status such as 500, 503 or 429, hang, close-mid-stream or \
         hang-mid-stream"
                .to_owned()
        })
}

impl Fail {
    fn mode(&self, after_chunks: usize) -> FailMode {
        match self {
            Fail::Status(status) => FailMode::Status(*status),
            Fail::Named(FailName::None) => FailMode::None,
            Fail::Named(FailName::Hang) => FailMode::Hang,
            Fail::Named(FailName::CloseMidStream) => FailMode::CloseMidStream { after_chunks },
            Fail::Named(FailName::HangMidStream) => FailMode::HangMidStream { after_chunks },
        }
    }
}

impl Args {
    fn fail_mode(&self) -> FailMode {
        self.fail.mode(self.fail_after_chunks)
    }

    fn load(&self) -> Option<MockLoad> {
        if self.running.is_none() && self.waiting.is_none() && self.kv_usage.is_none() {
            return None;
        }
        Some(MockLoad {
            running: self.running.unwrap_or(0),
            waiting: self.waiting.unwrap_or(0),
            kv_cache_usage: self.kv_usage.unwrap_or(0.0),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("modelgate-mock: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("modelgate-mock: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> std::io::Result<()> {
    // A fail file present at start applies from the first request on.
    let mut fail = args.fail_mode();
    let mut fail_seen = String::new();
    if let Some(path) = &args.fail_file {
        let (text, mode) = read_fail_file(path, &args);
        match mode {
            Ok(mode) => fail = mode,
            Err(e) => eprintln!(
                "modelgate-mock: {}: {e}; starting with --fail",
                path.display()
            ),
        }
        fail_seen = text;
    }
    let base = MockConfig {
        name: String::new(),
        models: args.models.clone(),
        root: args.root.clone(),
        max_model_len: args.max_model_len,
        ttft: Duration::from_millis(args.ttft_ms),
        itl: Duration::from_millis(args.itl_ms),
        tokens: args.tokens,
        fail,
        load: args.load(),
        role: match args.role {
            Role::Plain => MockRole::Plain,
            Role::Prefill => MockRole::Prefill,
            Role::Decode => MockRole::Decode,
        },
        omit_kv_params: args.omit_kv_params,
    };
    let shutdown = shutdown_signal()?;
    let dns = match (&args.dns_listen, &args.dns_zone) {
        (Some(addr), Some(zone)) => Some(serve_dns(*addr, zone.clone()).await?),
        _ => None,
    };
    if args.sim.enabled {
        eprintln!("{}", args.sim.sim_summary());
    }
    let mut servers = Vec::with_capacity(usize::from(args.ports));
    for k in 0..args.ports {
        let port = if args.port == 0 {
            0
        } else {
            args.port.checked_add(k).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "--port + --ports exceeds 65535",
                )
            })?
        };
        let addr = SocketAddr::new(args.host, port);
        let mut config = base.clone();
        if args.spread_models && !args.models.is_empty() {
            let i = usize::from(k) % args.models.len();
            config.models = vec![args.models[i].clone()];
        }
        config.name = match (&args.name, port) {
            (Some(name), _) if args.ports == 1 => name.clone(),
            (Some(name), _) => format!("{name}-{k}"),
            (None, 0) => "mock".to_owned(),
            (None, port) => format!("mock-{port}"),
        };
        let (name, models) = (config.name.clone(), config.models.join(","));
        let started = match args.sim.sim_config(usize::from(k)) {
            Some(sim) => MockServer::start_sim_on(config, sim, addr).await,
            None => MockServer::start_on(config, addr).await,
        };
        let server = started
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        // The readiness line scripts wait for (one per port); printed, not logged, so its
        // format is fixed.
        eprintln!(
            "modelgate-mock {name} serving {models} on {}",
            server.addr()
        );
        servers.push(server);
    }
    match &args.fail_file {
        Some(path) => {
            tokio::select! {
                () = shutdown => {}
                () = watch_fail_file(&servers, path, &args, fail_seen) => {}
            }
        }
        None => shutdown.await,
    }
    drop(dns);
    for server in servers {
        server.stop().await;
    }
    Ok(())
}

/// `--fail-file`'s trimmed content (empty when missing or unreadable) and the mode it asks
/// for: --fail when empty, an error for a value --fail would refuse.
fn read_fail_file(path: &std::path::Path, args: &Args) -> (String, Result<FailMode, String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let text = text.trim().to_owned();
    let mode = if text.is_empty() {
        Ok(args.fail_mode())
    } else {
        parse_fail(&text).map(|f| f.mode(args.fail_after_chunks))
    };
    (text, mode)
}

/// `--fail-file`: apply the file's failure mode to every server whenever its content changes
/// from `seen` (what the servers started with). Never returns.
async fn watch_fail_file(
    servers: &[MockServer],
    path: &std::path::Path,
    args: &Args,
    mut seen: String,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let (text, mode) = read_fail_file(path, args);
        if text == seen {
            continue;
        }
        match mode {
            Ok(mode) => {
                for server in servers {
                    server.set_fail(mode.clone());
                }
                eprintln!("modelgate-mock fail mode {mode:?} from {}", path.display());
            }
            Err(e) => eprintln!(
                "modelgate-mock: {}: {e}; keeping the current mode",
                path.display()
            ),
        }
        seen = text;
    }
}

/// Serve DNS on `addr` from the zone file, re-reading it when its modification time changes.
async fn serve_dns(
    addr: SocketAddr,
    zone: std::path::PathBuf,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let dns = MockDns::start_on(addr, 30).await?;
    let mut seen = load_zone(&dns, &zone)?;
    eprintln!(
        "modelgate-mock dns serving {} on {}",
        zone.display(),
        dns.addr()
    );
    Ok(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now = std::fs::metadata(&zone).and_then(|m| m.modified()).ok();
            if now != seen {
                match load_zone(&dns, &zone) {
                    Ok(m) => {
                        seen = m;
                        eprintln!("modelgate-mock dns reloaded {}", zone.display());
                    }
                    Err(e) => eprintln!("modelgate-mock dns: {}: {e}", zone.display()),
                }
            }
        }
    }))
}

/// (Re)load the zone file; returns its modification time.
fn load_zone(
    dns: &MockDns,
    zone: &std::path::Path,
) -> std::io::Result<Option<std::time::SystemTime>> {
    let text = std::fs::read_to_string(zone)?;
    dns.load_zone(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(std::fs::metadata(zone)?.modified().ok())
}

/// Registers the SIGINT/SIGTERM handlers now (so a signal sent right after the readiness line
/// is not lost) and returns a future that resolves on the first of them.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Resolves on Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        // Without a handler Ctrl-C kills the process, which is also a fine way to stop.
        let _ = tokio::signal::ctrl_c().await;
    })
}
