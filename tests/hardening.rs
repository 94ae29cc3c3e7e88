//! Hardening over real sockets: the admin token, admin paths absent from the public listener,
//! and the `Server` header that never reveals the backend's software.

mod support;

use support::*;

const TOKEN: &str = "test-admin-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_token_guards_metrics_status_and_config_but_not_probes() {
    let a = mock("a0", "m").await;
    // admin.token lives inside the admin block: write the whole file ourselves.
    let gw = Gateway::spawn("", "", &[]);
    let text = format!(
        "listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"127.0.0.1:{}\"\n  token: \"{TOKEN}\"\nmodels:\n{}",
        gw.port,
        gw.admin_port,
        model_block("m", &[backend("a0", &a)], "")
    );
    let mut gw = gw;
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    std::fs::write(&gw.config_path, text).unwrap();
    gw.child = gateway_command(&gw.config_path, gw.dir.path(), &[])
        .spawn()
        .unwrap();
    gw.wait_admin().await;
    gw.wait_ready().await;
    let c = client();
    for path in ["/metrics", "/status", "/config"] {
        let r = c.get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        let r = c
            .get(gw.admin_url(path))
            .bearer_auth("wrong-token-wrong-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = c
            .get(gw.admin_url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    for path in ["/health", "/ready"] {
        assert_eq!(
            c.get(gw.admin_url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_paths_are_not_served_on_the_public_listener() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    for path in ["/metrics", "/status", "/config", "/health", "/ready"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} on the public port");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("generation") && !body.contains("modelgate_"),
            "{body}"
        );
    }
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_header_hides_the_backend_and_is_configurable() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let r = gw.chat("m", false).await;
    assert_eq!(r.headers()["server"], "modelgate");
    let r = gw.chat("nope", false).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["server"], "modelgate");
    let body = r.text().await.unwrap();
    assert!(
        !body.contains("127.0.0.1") && !body.contains(&a.url()),
        "{body}"
    );
    // Off by reload.
    gw.write_config(
        &model_block("m", &[backend("a0", &a)], ""),
        "server_header: \"\"\n",
    );
    gw.wait_generation(2).await;
    let r = gw.chat("m", false).await;
    assert!(r.headers().get("server").is_none(), "{:?}", r.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_request_ends_that_connection_only() {
    let a = mock("a0", "m").await;
    let mut gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    // Debug builds carry a fault hook (the test binary is a debug build).
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-modelgate-debug-panic", "1")
        .body(chat_body("m", false))
        .send()
        .await;
    assert!(r.is_err() || r.unwrap().status().is_server_error());
    // The process is up and serves the next requests, and the in-flight count is back to 0.
    for _ in 0..5 {
        assert_eq!(gw.chat("m", false).await.status(), 200);
    }
    assert!(gw.child.try_wait().unwrap().is_none(), "process died");
    let gw_ref = &gw;
    eventually(
        std::time::Duration::from_secs(5),
        "in_flight 0",
        || async move { gw_ref.status().await["in_flight"] == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_dropped_and_the_backend_freed() {
    use tokio::io::AsyncWriteExt;
    let a = mock_with("a0", "m", |c| c.tokens = 400_000).await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "limits:\n  client_write_timeout_ms: 300\n",
    )
    .await;
    let body = r#"{"model":"m","messages":[{"role":"user","content":"go"}],"max_tokens":400000,"stream":true}"#;
    let mut sock = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    // Never read. The gateway's writes back up, time out, and it cancels the upstream stream.
    let stats = a.stats();
    eventually(
        std::time::Duration::from_secs(20),
        "upstream stream aborted",
        || {
            let n = stats.aborted();
            async move { n >= 1 }
        },
    )
    .await;
    let gw_ref = &gw;
    eventually(
        std::time::Duration::from_secs(5),
        "in_flight 0",
        || async move { gw_ref.status().await["in_flight"] == 0 },
    )
    .await;
    let log = gw.access_log();
    assert!(log.iter().any(|l| l["cut"] == "client_gone"), "{log:?}");
    drop(sock);
}
