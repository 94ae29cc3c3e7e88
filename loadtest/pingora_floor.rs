//! The Pingora floor: the smallest reverse proxy `pingora-proxy` 0.9 can be, measured beside
//! modelgate in `loadtest/compare.sh` (peer `pingora`) so the report can tell what Pingora's own
//! request pipeline costs from what the gateway adds on top.
//!
//! It is Pingora's `load_balancer` example cut to the bone: one upstream, no filters, no body
//! reading, no logging, no health checks, no metrics. Settings are the fastest Pingora offers and
//! the same as modelgate's (per-thread runtimes without work stealing, `threads` as asked, an
//! upstream keep-alive pool large enough for 256 connections, mimalloc). Not part of the product.
//!
//! Usage: `pingora_floor LISTEN UPSTREAM [THREADS]`, e.g.
//! `cargo run --release --example pingora_floor -- 127.0.0.1:8080 127.0.0.1:8000 1`.

/// The allocator modelgate uses, so the comparison isolates the gateway's own work.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_proxy::{ProxyHttp, Session};

/// Proxies every request to one upstream address.
struct Floor {
    upstream: String,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.upstream.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: pingora_floor LISTEN UPSTREAM [THREADS]");
        std::process::exit(2);
    };
    let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = ServerConf {
        threads,
        work_stealing: false,
        upstream_keepalive_pool_size: 1024,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(
        &server.configuration,
        Floor {
            upstream: upstream.clone(),
        },
    );
    proxy.add_tcp(listen);
    server.add_service(proxy);
    server.run_forever();
}
