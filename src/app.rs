//! Wiring: the Pingora server with the public proxy, the admin listener and the health prober;
//! and `--test` (control plane).

use std::fmt::Write as _;
use std::sync::Arc;

use pingora_core::connectors::http::v1::Connector;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::background::background_service;
use pingora_core::services::listening::Service;
use tracing::info;

use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::{self, Config};
use crate::health::{self, HealthService};
use crate::proxy::Gateway;
use crate::state::{self, Snapshot};

/// Seconds the old process keeps serving in-flight requests after SIGTERM/SIGQUIT.
/// TODO(issue 3): make this `server.grace_period_s`.
const GRACE_PERIOD_S: u64 = 30;

/// Start serving `config` and never return.
pub fn run(cli: &Cli, config: Config) -> ! {
    log_summary(&config);
    let shared = state::shared(Snapshot::build(&config, 1));

    let opt = Opt {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
        ..Default::default()
    };
    let conf = ServerConf {
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        grace_period_seconds: Some(GRACE_PERIOD_S),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    let server_conf = Arc::clone(&server.configuration);

    let mut proxy = pingora_proxy::http_proxy_service_with_name(
        &server_conf,
        Gateway::new(Arc::clone(&shared)),
        "modelgate proxy",
    );
    proxy.add_tcp(&config.listen.to_string());

    let mut admin = Service::new(
        "modelgate admin".to_string(),
        AdminApp::new(Arc::clone(&shared)),
    );
    admin.add_tcp(&config.admin_listen.to_string());

    let health = background_service("modelgate health", HealthService::new(Arc::clone(&shared)));

    server.add_service(proxy);
    server.add_service(admin);
    server.add_service(health);
    info!(listen = %config.listen, admin = %config.admin_listen, "modelgate listening");
    server.run_forever()
}

fn log_summary(config: &Config) {
    for m in &config.models {
        let backends = m
            .backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.url))
            .collect::<Vec<_>>()
            .join(", ");
        info!(model = %m.name, policy = m.policy.as_str(), backends = %backends, "model configured");
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
        for b in &m.backends {
            let _ = writeln!(
                out,
                "  backend {} {} ({}) weight {}",
                b.name, b.url, b.addr, b.weight
            );
        }
    }
    out
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
        for pool in &snapshot.pools {
            let mut good = 0;
            for b in &pool.backends {
                let r = health::probe(
                    &connector,
                    b,
                    &pool.health.path,
                    &pool.name,
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
