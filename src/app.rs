//! Wiring: the Pingora server with the public proxy, the admin listener, the health prober, the
//! reloader and the lifecycle services, run with modelgate's own signal handling; and `--test`
//! (control plane).

use std::fmt::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use pingora_core::connectors::http::v1::Connector;
use pingora_core::listeners::{L4BufferSettings, ListenerConfig};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use tracing::{info, warn};

use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::{self, Config};
use crate::discovery::{self, DiscoveryService};
use crate::health::{self, HealthService};
use crate::lifecycle::{self, ExitPlan, GatewaySignals, LifecycleService, Traffic};
use crate::proxy::Gateway;
use crate::reload::{BootSettings, ReloadService};
use crate::state::{Publisher, Snapshot};
use crate::telemetry::Spans;

/// Pingora's own grace sleep is only a backstop: [`LifecycleService`] exits as soon as the last
/// request ends or at the deadline the shutdown signal chose; Pingora's sleep ends this much later.
const PINGORA_GRACE_SLACK_S: u64 = 10;

/// Start serving `config` and never return. `early_hup` is the flag `main` set up so a SIGHUP
/// during startup is remembered instead of killing the process.
pub fn run(cli: &Cli, config: Config, early_hup: Arc<AtomicBool>) -> ! {
    log_summary(&config);
    let (paths, problems) = lifecycle::paths::resolve(&config.server);
    for p in problems {
        warn!(problem = %p, "upgrade socket / pid file directory; binary upgrades may not work");
    }
    let config_path = std::path::absolute(&cli.config).unwrap_or_else(|_| cli.config.clone());
    let publisher = Publisher::new(&config, config_path);
    let discovery = Arc::new(discovery::Registry::default());
    let traffic = Arc::new(Traffic::default());
    let spans = Arc::new(Spans::default());
    crate::metrics::record_start();
    let exit_plan = Arc::new(ExitPlan::new(config.server.grace_period));
    let self_command = lifecycle::upgrade::SelfCommand::capture();

    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Default::default()
    };
    let conf = server_conf(&config, &paths);
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let proxy = public_service(&config, &publisher, &traffic, &spans);
    let mut admin = Service::new(
        "modelgate admin".to_string(),
        AdminApp::new(
            Arc::clone(&publisher),
            Arc::clone(&discovery),
            Arc::clone(&traffic),
        ),
    );
    admin.add_tcp(&config.admin_listen.to_string());

    let health = background_service(
        "modelgate health",
        HealthService::new(Arc::clone(&publisher)),
    );
    let discovery = background_service(
        "modelgate discovery",
        DiscoveryService::new(Arc::clone(&publisher), discovery),
    );
    let reload = background_service(
        "modelgate reload",
        ReloadService::new(
            Arc::clone(&publisher),
            BootSettings::of(&config),
            spans,
            early_hup,
            !cli.no_watch,
        ),
    );
    let lifecycle = background_service(
        "modelgate lifecycle",
        LifecycleService {
            traffic: Arc::clone(&traffic),
            live: Arc::clone(publisher.live()),
            exit: Arc::clone(&exit_plan),
            phases: std::sync::Mutex::new(Some(server.watch_execution_phase())),
            listen: vec![config.listen, config.admin_listen],
        },
    );

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);
    server.add_service(discovery);
    server.add_service(reload);
    server.add_service(lifecycle);
    info!(listen = %config.listen, admin = %config.admin_listen, upgrade_sock = %paths.upgrade_sock.display(), pid = std::process::id(), "modelgate listening");
    server.run(RunArgs {
        shutdown_signal: Box::new(GatewaySignals {
            traffic,
            live: Arc::clone(publisher.live()),
            grace: config.server.grace_period,
            exit: exit_plan,
            upgrade_sock: paths.upgrade_sock,
            self_command,
        }),
    });
    lifecycle::exit::exit_now()
}

/// Pingora's own settings, from `server:` and `drain:`.
fn server_conf(config: &Config, paths: &lifecycle::paths::RuntimePaths) -> ServerConf {
    let longest = config.server.grace_period.max(config.drain.timeout);
    ServerConf {
        threads: config
            .server
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        // One single-threaded tokio runtime per worker thread instead of one work-stealing
        // runtime: a request's tasks never migrate, so no cross-thread queue or wake-up on the
        // hot path. Measured -15 % CPU per request at 1 thread and equal req/s at 2 (see
        // loadtest/RESULTS.md, "Performance vs nginx and vllm-router").
        work_stealing: false,
        grace_period_seconds: Some(longest.as_secs() + PINGORA_GRACE_SLACK_S),
        graceful_shutdown_timeout_seconds: Some(5),
        pid_file: paths.pid_file.display().to_string(),
        upgrade_sock: paths.upgrade_sock.display().to_string(),
        ..Default::default()
    }
}

/// The public listener: the request pipeline behind the connection layer (header limits,
/// per-IP cap, keep-alive).
fn public_service(
    config: &Config,
    publisher: &Publisher,
    traffic: &Arc<Traffic>,
    spans: &Arc<Spans>,
) -> Service<crate::conn::Front<Gateway>> {
    let live = publisher.live();
    let gateway = Gateway::new(Arc::clone(live), Arc::clone(traffic), Arc::clone(spans));
    let lingering = Arc::clone(traffic);
    let front = crate::conn::Front::new(gateway, accept_settings(Arc::clone(live)), move || {
        Box::new(lingering.track_linger())
    });
    let mut proxy = Service::new("modelgate proxy".to_string(), front);
    // No L4 read buffer: Pingora reads request headers into its own 4 KiB buffer and bodies
    // into theirs, so the default 64 KiB per connection would only cost memory (it is for TLS).
    // No L4 write buffer either: the connection guard holds response bytes only while a
    // response is written, so an idle keep-alive connection holds no 1,460-byte buffer.
    proxy.add_listener(
        ListenerConfig::tcp(config.listen.to_string())
            .l4_buffer(L4BufferSettings::default().read(0).write(0)),
    );

    proxy
}

/// What the connection layer reads from the snapshot in force at each accept.
fn accept_settings(live: crate::state::SharedState) -> impl Fn() -> crate::conn::Accept {
    move || {
        let snapshot = live.load();
        crate::conn::Accept {
            limits: snapshot.limits,
            server: snapshot.server_header.clone(),
        }
    }
}

fn log_summary(config: &Config) {
    for m in &config.models {
        let backends = m
            .backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.url))
            .collect::<Vec<_>>()
            .join(", ");
        let discover = m
            .discover
            .iter()
            .map(|d| format!("{}=dns:{}", d.name, d.target.dns))
            .collect::<Vec<_>>()
            .join(", ");
        let prefill = m.prefill.as_ref().map(|side| {
            let names: Vec<String> = side
                .backends
                .iter()
                .map(|b| format!("{}={}", b.name, b.url))
                .collect();
            format!("{}: {}", side.policy.as_str(), names.join(", "))
        });
        info!(model = %m.name, policy = m.policy.as_str(), backends = %backends, discover = %discover, prefill = prefill.as_deref().unwrap_or(""), "model configured");
    }
}

/// The `--test` summary: one screen with every model, policy, timeout and backend.
pub fn summary(path: &str, config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "modelgate: {path} is valid (sha256 {})",
        &config.sha256[..12.min(config.sha256.len())]
    );
    let _ = writeln!(
        out,
        "listen {}  admin {}  max_body_bytes {}",
        config.listen, config.admin_listen, config.max_body_bytes
    );
    let s = &config.server;
    let _ = writeln!(
        out,
        "server threads {}  grace_period_s {}  pid_file {}  upgrade_sock {}  (start-time only)",
        s.threads
            .map_or_else(|| "auto".to_string(), |t| t.to_string()),
        s.grace_period.as_secs(),
        s.pid_file
            .as_ref()
            .map_or_else(|| "default".to_string(), |p| p.display().to_string()),
        s.upgrade_sock
            .as_ref()
            .map_or_else(|| "default".to_string(), |p| p.display().to_string()),
    );
    let _ = writeln!(
        out,
        "drain delay_ms {}  timeout_ms {}",
        config.drain.delay.as_millis(),
        config.drain.timeout.as_millis()
    );
    for m in &config.models {
        let r = &m.retries;
        let on: Vec<&str> = [
            (r.on_connection_failure, "connection_failure"),
            (r.on_timeout, "timeout"),
            (r.on_http_5xx, "http_5xx"),
            (r.on_http_429, "http_429"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        let t = &m.timeouts;
        let _ = writeln!(
            out,
            "model {}: policy {}, {} attempt(s) on [{}], timeouts connect {}ms first_byte {}ms idle {}ms request {}ms, health {} every {}ms",
            m.name,
            m.policy.as_str(),
            r.max_attempts,
            on.join(", "),
            t.connect.as_millis(),
            t.first_byte.as_millis(),
            t.idle.as_millis(),
            t.request.as_millis(),
            m.health.path,
            m.health.interval.as_millis(),
        );
        match &m.prefill {
            Some(prefill) => {
                let _ = writeln!(out, "  prefill: policy {}", prefill.policy.as_str());
                side_summary(&mut out, &prefill.backends, &prefill.discover, "    ");
                let _ = writeln!(out, "  decode: policy {}", m.policy.as_str());
                side_summary(&mut out, &m.backends, &m.discover, "    ");
            }
            None => side_summary(&mut out, &m.backends, &m.discover, "  "),
        }
    }
    out
}

/// The backends and discover entries of one pool (or one side), indented by `indent`.
fn side_summary(
    out: &mut String,
    backends: &[crate::routing::BackendConfig],
    discover: &[crate::config::discover::DiscoverEntry],
    indent: &str,
) {
    for b in backends {
        let _ = writeln!(
            out,
            "{indent}backend {} {} ({}) weight {}{}",
            b.name,
            b.url,
            b.addr,
            b.weight,
            if b.drain { " DRAINING" } else { "" }
        );
    }
    for d in discover {
        let t = &d.target;
        let _ = writeln!(
            out,
            "{indent}discover {} dns {} {} refresh_ms {} nameserver {} weight {}{}",
            d.name,
            t.dns,
            t.port
                .map_or_else(|| "SRV".to_string(), |p| format!("A/AAAA port {p}")),
            d.refresh.as_millis(),
            t.nameserver
                .map_or_else(|| "system".to_string(), |n| n.to_string()),
            d.weight,
            if d.drain { " DRAINING" } else { "" }
        );
    }
}

/// `--test --check-backends`: probe every backend once. Returns the report and whether every
/// model has at least one good backend.
pub fn check_backends(config: &Config) -> (String, bool) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return (format!("cannot start runtime: {e}\n"), false),
    };
    let snapshot = Snapshot::build(config, 0);
    runtime.block_on(async {
        let connector = Connector::new(None);
        let mut out = String::new();
        let mut all_ok = true;
        for pool in snapshot.pools.iter().flat_map(|p| p.sides()) {
            let mut good = 0;
            for b in &pool.backends {
                let r = health::probe(
                    &connector,
                    b,
                    &pool.health.path,
                    pool.served_model_name.as_deref().unwrap_or(&pool.name),
                    pool.health.timeout,
                )
                .await;
                let verdict = match &r {
                    Ok(_) => {
                        good += 1;
                        format!("ok: reachable, serves {}", pool.name)
                    }
                    Err(health::ProbeError::WrongModel { served, .. }) => {
                        format!("BAD: reachable, but serves {served:?}, not {}", pool.name)
                    }
                    Err(e) => format!("BAD: {e}"),
                };
                let _ = writeln!(
                    out,
                    "model {} backend {} {}: {verdict}",
                    pool.name, b.config.name, b.config.url
                );
            }
            if good == 0 {
                all_ok = false;
                let _ = writeln!(out, "model {}: NO good backend", pool.name);
            }
        }
        (out, all_ok)
    })
}

/// Load for `--test`: same code path as startup.
pub fn load(path: &std::path::Path) -> Result<Config, config::ConfigError> {
    config::load(path)
}
