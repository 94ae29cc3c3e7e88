//! ERROR in the event log means an operator must act (STYLE.md): a client must not be able to
//! write ERROR lines. Found by the soak (`loadtest/soak.sh`): every hostile request refused
//! while its header arrives (too large: 431, too slow: 408, or a header cut off by the client)
//! left one Pingora line `"level":"ERROR","message":"Fail to proxy: Downstream ReadError ..."`
//! (pingora-proxy 0.9.1 `lib.rs`, the request-header read in `handle_new_request`), one per
//! connection, at whatever rate a client opens them. The gateway now reads the request header
//! itself (`proxy::head`), answers and counts these (`modelgate_connections_rejected_total`),
//! and Pingora's proxy loop is not in the path: no such line at any level.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Open a connection, send `bytes`, optionally close our side, read until the gateway closes.
async fn hostile(gw: &Gateway, bytes: &[u8], half_close: bool) -> String {
    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if half_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn header_failures_caused_by_clients_write_no_error_lines() {
    let a = mock("a0", "m").await;
    // Everything logged, DEBUG included: no client-caused line may reach ERROR.
    let port = free_port();
    let mut admin_port = free_port();
    while admin_port == port {
        admin_port = free_port();
    }
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("router.yaml");
    let yaml = format!(
        "listen: \"127.0.0.1:{port}\"\nadmin:\n  listen: \"127.0.0.1:{admin_port}\"\nlimits:\n  header_timeout_ms: 300\nmodels:\n{}",
        model_block("m", &[backend("a0", &a)], "")
    );
    std::fs::write(&config_path, yaml).unwrap();
    let child = gateway_command(&config_path, dir.path(), &[])
        .env("RUST_LOG", "debug")
        .spawn()
        .unwrap();
    let gw = Gateway {
        child,
        port,
        admin_port,
        dir,
        config_path,
        extra_pids: Vec::new(),
    };
    gw.wait_ready().await;

    let big = format!(
        "GET /v1/models HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    assert!(hostile(&gw, big.as_bytes(), false)
        .await
        .starts_with("HTTP/1.1 431"));
    let slow = hostile(&gw, b"GET /v1/models HTTP/1.1\r\nHost: g", false).await;
    assert!(slow.starts_with("HTTP/1.1 408"), "{slow:?}");
    hostile(&gw, b"GET /v1/models HTTP/1.1\r\nHost: g", true).await;

    // The gateway counted the two it refused; the third is a client gone before a request.
    let refused = [("reason", "header_too_large")];
    assert!(
        gw.metric("modelgate_connections_rejected_total", &refused)
            .await
            >= 1.0
    );
    let timed_out = [("reason", "header_timeout")];
    assert!(
        gw.metric("modelgate_connections_rejected_total", &timed_out)
            .await
            >= 1.0
    );
    assert!(
        !gw.log().contains("Fail to proxy"),
        "Pingora's proxy loop answered"
    );
    let errors: Vec<String> = gw
        .log()
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        errors,
        Vec::<String>::new(),
        "ERROR lines caused by clients"
    );
}
