//! Hot reload over real sockets and real signals: models and backends added and removed while
//! streams run, invalid files, `mv` over the file, SIGHUP, health carried across reloads,
//! per-backend drain, and a SIGHUP that arrives during startup.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

/// Backend entry with `drain: true`.
fn drained(name: &str, m: &MockServer) -> String {
    format!(
        "      - name: \"{name}\"\n        url: \"{}\"\n        drain: true\n",
        m.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_adds_and_removes_while_200_streams_run() {
    // Streams of ~1.5 s: 60 tokens, 25 ms apart.
    let slow = |c: &mut MockConfig| {
        c.tokens = 60;
        c.itl = Duration::from_millis(25);
    };
    let a1 = mock_with("a1", "a", slow).await;
    let a2 = mock_with("a2", "a", slow).await;
    let r1 = mock_with("r1", "r", slow).await;
    let n1 = mock("n1", "n").await;
    let before = format!(
        "{}{}",
        model_block("a", &[backend("a1", &a1), backend("a2", &a2)], ""),
        model_block("r", &[backend("r1", &r1)], "")
    );
    let gw = Gateway::start_ready(&before, "").await;

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = gw.url("/v1/chat/completions");
    let mut streams = Vec::new();
    for i in 0..200 {
        let (c, u) = (client.clone(), url.clone());
        let model = if i % 4 == 0 { "r" } else { "a" };
        streams.push(tokio::spawn(
            async move { full_stream(&c, &u, model).await },
        ));
    }
    // Reload only once all 200 are running on the backends.
    let (s1, s2, s3) = (a1.stats(), a2.stats(), r1.stats());
    eventually(Duration::from_secs(20), "200 streams in flight", || {
        let n = s1.in_flight() + s2.in_flight() + s3.in_flight();
        async move { n == 200 }
    })
    .await;

    // Remove model r and backend a2, add model n.
    let after = format!(
        "{}{}",
        model_block("a", &[backend("a1", &a1)], ""),
        model_block("n", &[backend("n1", &n1)], "")
    );
    let written = Instant::now();
    gw.write_config(&after, "");
    let c = client.clone();
    let u = url.clone();
    let mut routable = None;
    while written.elapsed() < Duration::from_secs(5) {
        let r = c
            .post(&u)
            .header("content-type", "application/json")
            .body(chat_body("n", false))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            routable = Some(written.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let routable = routable.expect("model n never became routable");
    assert!(
        routable < Duration::from_secs(1),
        "new model routable after {routable:?}"
    );
    assert_eq!(gw.generation().await, 2);

    // Every stream, including those on the removed model and the removed backend, completes.
    let mut failures = Vec::new();
    for s in streams {
        if let Err(e) = s.await.unwrap() {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} cut: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert_eq!(s1.aborted() + s2.aborted() + s3.aborted(), 0);

    // The removed model is gone; the removed backend gets nothing new.
    expect_error(gw.chat("r", false).await, 404, Some("model_not_found")).await;
    let a2_before = s2.requests();
    for _ in 0..10 {
        let r = gw.chat("a", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "a1");
    }
    assert_eq!(s2.requests(), a2_before);
    let log = gw.log();
    assert!(log.contains("config reloaded"), "{log}");
    assert!(
        log.contains("+model n") && log.contains("-model r") && log.contains("-backend a/a2"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_reload_keeps_serving_and_reports_the_error() {
    let a = mock("a0", "m").await;
    let models = model_block("m", &[backend("a0", &a)], "");
    let gw = Gateway::start_ready(&models, "").await;
    let first = gw.config().await;
    assert_eq!(first["generation"], 1);
    assert!(first["last_error"].is_null());
    assert_eq!(
        first["sha256"],
        sha256_hex(&std::fs::read(&gw.config_path).unwrap())
    );
    assert!(
        first["loaded_at"].as_str().unwrap().ends_with('Z'),
        "{first}"
    );

    // A semantic error: reported with its field path.
    let bad = models.replace(&a.url(), "ftp://nowhere");
    gw.write_config(&bad, "");
    let url = gw.admin_url("/config");
    let c = client();
    eventually(Duration::from_secs(10), "last_error set", || {
        let (c, u) = (c.clone(), url.clone());
        async move {
            let v: serde_json::Value = c.get(&u).send().await.unwrap().json().await.unwrap();
            v["last_error"].is_string()
        }
    })
    .await;
    let v = gw.config().await;
    assert_eq!(v["generation"], 1, "{v}");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("models.m.backends[0].url"),
        "{v}"
    );
    assert_eq!(v["sha256"], first["sha256"]);
    assert_eq!(gw.chat("m", false).await.status(), 200);

    // A syntax error via SIGHUP: still serving, process alive.
    std::fs::write(&gw.config_path, "models: [\n").unwrap();
    gw.signal(Signal::SIGHUP);
    gw.wait_log("\"trigger\":\"SIGHUP\"").await;
    assert_eq!(gw.chat("m", false).await.status(), 200);
    assert_eq!(gw.generation().await, 1);

    let m = gw.metrics().await;
    assert!(sum(&m, "modelgate_config_reloads_total", &[("result", "error")]) >= 2.0);
    assert_eq!(
        sum(&m, "modelgate_config_reloads_total", &[("result", "ok")]),
        0.0
    );
    assert_eq!(sum(&m, "modelgate_config_generation", &[]), 1.0);

    // Fixed: applied, error cleared.
    gw.write_config(&models.replace("interval_ms: 100", "interval_ms: 150"), "");
    gw.wait_generation(2).await;
    assert!(gw.config().await["last_error"].is_null());
    let m = gw.metrics().await;
    assert_eq!(
        sum(&m, "modelgate_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(sum(&m, "modelgate_config_generation", &[]), 2.0);
    assert!(sum(&m, "modelgate_config_last_reload_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(gw.chat("m", false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_moved_over_the_config_is_picked_up() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "other").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let text = gw.config_text(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("other", &[backend("b0", &b)], "")
        ),
        "",
    );
    let tmp = gw.dir.path().join(".router.yaml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &gw.config_path).unwrap();
    gw.wait_generation(2).await;
    assert_eq!(gw.chat("other", false).await.status(), 200);

    // A second rename (the watch survives the inode change).
    let text = gw.config_text(&model_block("other", &[backend("b0", &b)], ""), "");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &gw.config_path).unwrap();
    gw.wait_generation(3).await;
    expect_error(gw.chat("m", false).await, 404, Some("model_not_found")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    // ConfigMap volumes: router.yaml -> ..data/router.yaml, ..data -> ..v1; an update creates
    // ..v2 and renames a new ..data symlink over the old one.
    let a = mock("a0", "m").await;
    let b = mock("b0", "other").await;
    let mut gw = Gateway::spawn(&model_block("m", &[backend("a0", &a)], ""), "", &[]);
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    let root = gw.dir.path().join("cm");
    std::fs::create_dir_all(root.join("..v1")).unwrap();
    std::fs::copy(&gw.config_path, root.join("..v1/router.yaml")).unwrap();
    std::os::unix::fs::symlink("..v1", root.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/router.yaml", root.join("router.yaml")).unwrap();
    gw.config_path = root.join("router.yaml");
    gw.child = gateway_command(&gw.config_path, gw.dir.path(), &[])
        .spawn()
        .unwrap();
    gw.wait_admin().await;
    gw.wait_ready().await;
    let g1 = gw.generation().await;

    std::fs::create_dir_all(root.join("..v2")).unwrap();
    let text = gw.config_text(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("other", &[backend("b0", &b)], "")
        ),
        "",
    );
    std::fs::write(root.join("..v2/router.yaml"), text).unwrap();
    std::os::unix::fs::symlink("..v2", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    gw.wait_generation(g1 + 1).await;
    assert_eq!(gw.chat("other", false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_when_the_watch_is_off() {
    let a = mock("a0", "m").await;
    let b = mock("b0", "other").await;
    let gw = Gateway::start_with_args(
        &model_block("m", &[backend("a0", &a)], ""),
        "",
        &["--no-watch"],
    )
    .await;
    gw.wait_ready().await;
    gw.write_config(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("other", &[backend("b0", &b)], "")
        ),
        "",
    );
    gw.signal(Signal::SIGHUP);
    gw.wait_generation(2).await;
    assert_eq!(gw.chat("other", false).await.status(), 200);
    // SIGHUP applies even an unchanged file (re-resolves names): generation 3.
    gw.signal(Signal::SIGHUP);
    gw.wait_generation(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_backends_keep_health_and_new_ones_are_gated() {
    let a = mock("a0", "m").await;
    // Serves the wrong model: reachable, never healthy for "m".
    let wrong = mock("w0", "not-m").await;
    let models = model_block("m", &[backend("a0", &a)], "");
    let gw = Gateway::start_ready(&models, "").await;
    // Slow the probes right down so a re-gated backend would stay unchecked for long.
    let slow_models = models.replace("interval_ms: 100", "interval_ms: 60000");
    gw.write_config(&slow_models, "");
    gw.wait_generation(2).await;
    assert!(
        gw.backend_healthy("m", "a0").await,
        "kept backend lost its health"
    );
    assert_eq!(gw.chat("m", false).await.status(), 200);

    // Add the wrong-model backend: it stays gated and gets no request.
    let with_wrong = model_block("m", &[backend("a0", &a), backend("w0", &wrong)], "");
    gw.write_config(&with_wrong, "");
    gw.wait_generation(3).await;
    let ws = wrong.stats();
    eventually(Duration::from_secs(5), "w0 probed", || {
        let n = ws.models_requests();
        async move { n > 0 }
    })
    .await;
    for _ in 0..10 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "a0");
    }
    assert_eq!(ws.requests(), 0);
    assert!(!gw.backend_healthy("m", "w0").await);
    assert!(gw.backend_healthy("m", "a0").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_of_removed_pools_stop() {
    let a = mock("a0", "m").await;
    let r = mock("r0", "r").await;
    let gw = Gateway::start_ready(
        &format!(
            "{}{}",
            model_block("m", &[backend("a0", &a)], ""),
            model_block("r", &[backend("r0", &r)], "")
        ),
        "",
    )
    .await;
    gw.write_config(&model_block("m", &[backend("a0", &a)], ""), "");
    gw.wait_generation(2).await;
    let (sa, sr) = (a.stats(), r.stats());
    let r_after = sr.models_requests();
    let a_after = sa.models_requests();
    // Five more probe rounds of the kept pool...
    eventually(
        Duration::from_secs(10),
        "kept pool probed 5 more times",
        || {
            let n = sa.models_requests();
            async move { n >= a_after + 5 }
        },
    )
    .await;
    // ...and at most one straggler for the removed one.
    assert!(
        sr.models_requests() <= r_after + 1,
        "removed pool still probed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_backend_gets_nothing_new_and_finishes_its_streams() {
    let b1 = mock_with("b1", "m", |c| {
        c.tokens = 40;
        c.itl = Duration::from_millis(25);
    })
    .await;
    let b2 = mock("b2", "m").await;
    let both = model_block("m", &[backend("b1", &b1), backend("b2", &b2)], "");
    let gw = Gateway::start_ready(&both, "").await;

    // Start streams until one lands on b1.
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let s1 = b1.stats();
    let mut on_b1 = Vec::new();
    while s1.in_flight() == 0 {
        let (c, u) = (c.clone(), url.clone());
        on_b1.push(tokio::spawn(async move { full_stream(&c, &u, "m").await }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.write_config(
        &model_block("m", &[drained("b1", &b1), backend("b2", &b2)], ""),
        "",
    );
    gw.wait_generation(2).await;
    let status = gw.status().await;
    let b1_status = status["models"]["m"]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "b1")
        .unwrap()
        .clone();
    assert_eq!(b1_status["draining"], true, "{status}");
    let before = s1.requests();
    for _ in 0..20 {
        let r = gw.chat("m", false).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-modelgate-backend"], "b2");
    }
    assert_eq!(s1.requests(), before, "drained backend got a new request");
    for s in on_b1 {
        s.await
            .unwrap()
            .expect("stream on the drained backend was cut");
    }
    assert_eq!(s1.aborted(), 0);
    assert!(gw.log().contains("drain m/b1"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_change_is_logged_as_needing_an_upgrade() {
    let a = mock("a0", "m").await;
    let models = model_block("m", &[backend("a0", &a)], "");
    let gw = Gateway::start_ready(&models, "").await;
    let text = gw.config_text(&models, "").replace(
        &format!("127.0.0.1:{}", gw.port),
        &format!("127.0.0.1:{}", free_port()),
    );
    std::fs::write(&gw.config_path, text).unwrap();
    gw.wait_generation(2).await;
    gw.wait_log("`listen` changed: it takes effect only after a binary upgrade")
        .await;
    // Still serving on the old port.
    assert_eq!(gw.chat("m", false).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_during_startup_does_not_kill_the_process() {
    let a = mock("a0", "m").await;
    let gw = Gateway::spawn(&model_block("m", &[backend("a0", &a)], ""), "", &[]);
    // As soon as SIGHUP is caught (the early handler), before the services run.
    let pid = gw.pid();
    eventually(Duration::from_secs(10), "SIGHUP handler installed", || {
        let caught = sighup_caught(pid);
        async move { caught }
    })
    .await;
    gw.signal(Signal::SIGHUP);
    gw.wait_admin().await;
    gw.wait_ready().await;
    assert_eq!(gw.chat("m", false).await.status(), 200);
    // The early SIGHUP was applied once the reloader ran (a SIGHUP landing just as the
    // reloader starts may be seen by both the early flag and the live handler: 2 or 3).
    let url = gw.admin_url("/config");
    let c = client();
    eventually(Duration::from_secs(10), "generation >= 2", || {
        let (c, u) = (c.clone(), url.clone());
        async move {
            let v: serde_json::Value = c.get(&u).send().await.unwrap().json().await.unwrap();
            v["generation"].as_u64().unwrap() >= 2
        }
    })
    .await;
}

/// Whether `pid` catches SIGHUP (bit 0 of SigCgt in /proc/PID/status).
fn sighup_caught(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|mask| mask & 1 != 0)
}
