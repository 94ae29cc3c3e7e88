//! Process lifecycle over real sockets and real signals: SIGTERM drain (readiness first, the
//! listener after `drain.delay_ms`, in-flight streams complete, exit 0 as soon as they end),
//! binary upgrade under continuous load with 0 refused connections and 0 cut streams, and the
//! guards that keep a stray SIGQUIT or a broken new binary from becoming an outage.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use modelgate::lifecycle::upgrade::listener_waiting;
use nix::sys::signal::Signal;
use support::*;

fn slow(tokens: usize, itl_ms: u64) -> impl FnOnce(&mut MockConfig) {
    move |c: &mut MockConfig| {
        c.tokens = tokens;
        c.itl = Duration::from_millis(itl_ms);
    }
}

async fn ready_status(gw: &Gateway) -> u16 {
    match client().get(gw.admin_url("/ready")).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flips_readiness_first_then_drains_streams_and_exits_0() {
    // Streams of ~2 s; drain delay 1.5 s; timeout far away so an early exit proves itself.
    let a = mock_with("a0", "m", slow(80, 25)).await;
    let mut gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "drain:\n  delay_ms: 1500\n  timeout_ms: 60000\n",
    )
    .await;
    let c = client();
    let url = gw.url("/v1/chat/completions");
    let mut streams = Vec::new();
    for _ in 0..10 {
        let (c, u) = (c.clone(), url.clone());
        streams.push(tokio::spawn(async move { full_stream(&c, &u, "m").await }));
    }
    let stats = a.stats();
    eventually(Duration::from_secs(10), "10 streams running", || {
        let n = stats.in_flight();
        async move { n == 10 }
    })
    .await;

    let signalled = Instant::now();
    gw.signal(Signal::SIGTERM);
    // Readiness fails at once...
    let gw_ref = &gw;
    eventually(Duration::from_secs(1), "/ready 503", || async move {
        ready_status(gw_ref).await == 503
    })
    .await;
    let body: serde_json::Value = client()
        .get(gw.admin_url("/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["draining"], true);
    // ...while the public listener still takes new requests during the delay.
    assert!(signalled.elapsed() < Duration::from_millis(1500));
    let r = gw.chat("m", false).await;
    assert_eq!(r.status(), 200);
    assert!(gw.status().await["draining"] == true);

    // Every stream completes; the process exits 0 once they end, long before the timeout.
    for s in streams {
        s.await.unwrap().expect("stream cut by the drain");
    }
    let status = gw.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() >= Duration::from_millis(1500),
        "listener closed before drain.delay_ms"
    );
    assert!(signalled.elapsed() < Duration::from_secs(30));
    assert_eq!(stats.aborted(), 0);
    let log = gw.log();
    assert!(
        log.contains("all in-flight requests finished; exiting"),
        "{log}"
    );
    // After exit the listener is closed: connections are refused.
    assert!(std::net::TcpStream::connect(gw.addr()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigint_skips_the_delay() {
    let a = mock("a0", "m").await;
    let mut gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "drain:\n  delay_ms: 60000\n  timeout_ms: 60000\n",
    )
    .await;
    gw.signal(Signal::SIGINT);
    let gw_ref = &gw;
    eventually(Duration::from_secs(2), "/ready 503", || async move {
        ready_status(gw_ref).await == 503
    })
    .await;
    gw.signal(Signal::SIGINT);
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_sigquit_is_ignored_and_the_gateway_keeps_serving() {
    let a = mock("a0", "m").await;
    let mut gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    gw.signal(Signal::SIGQUIT);
    gw.wait_log("SIGQUIT ignored").await;
    assert_eq!(gw.chat("m", false).await.status(), 200);
    assert!(gw.child.try_wait().unwrap().is_none(), "process exited");
    assert_eq!(ready_status(&gw).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_with_a_broken_new_config_keeps_the_old_process_serving() {
    let a = mock("a0", "m").await;
    let mut gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    // The new process will read a broken file and exit 1; the reload of it is rejected too.
    std::fs::write(&gw.config_path, "models: [\n").unwrap();
    gw.signal(Signal::SIGUSR2);
    gw.wait_log("upgrade aborted; this process keeps serving")
        .await;
    assert_eq!(gw.chat("m", false).await.status(), 200);
    assert!(gw.child.try_wait().unwrap().is_none(), "old process exited");
    assert_eq!(ready_status(&gw).await, 200);
}

/// Counters of the load generator.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    refused: AtomicU64,
    other_errors: AtomicU64,
    non_2xx: AtomicU64,
    streams_ok: AtomicU64,
    streams_cut: AtomicU64,
}

fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = s.source();
    }
    e.is_connect()
}

async fn hammer(c: reqwest::Client, url: String, stop: Arc<AtomicBool>, load: Arc<Load>) {
    while !stop.load(Ordering::Relaxed) {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(chat_body("m", false))
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 200 => match r.bytes().await {
                Ok(_) => load.ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => load.other_errors.fetch_add(1, Ordering::Relaxed),
            },
            Ok(_) => load.non_2xx.fetch_add(1, Ordering::Relaxed),
            Err(e) if is_refused(&e) => load.refused.fetch_add(1, Ordering::Relaxed),
            Err(_) => load.other_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Upgrade under continuous load; `via_usr2` lets the old process start the new one.
async fn upgrade_under_load(via_usr2: bool) {
    let a = mock_with("a0", "m", slow(40, 50)).await;
    let mut gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let old_pid = gw.pid();
    let url = gw.url("/v1/chat/completions");
    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Load::default());
    let mut tasks = Vec::new();
    // 4 keep-alive clients and 4 that open a new connection per request.
    for i in 0..8 {
        let mut b = reqwest::Client::builder().timeout(Duration::from_secs(30));
        if i % 2 == 1 {
            b = b.pool_max_idle_per_host(0);
        }
        let c = b.build().unwrap();
        tasks.push(tokio::spawn(hammer(
            c,
            url.clone(),
            Arc::clone(&stop),
            Arc::clone(&load),
        )));
    }
    // 20 long streams (~2 s) started before the hand-over.
    let mut streams = Vec::new();
    let sc = client();
    for _ in 0..20 {
        let (c, u, l) = (sc.clone(), url.clone(), Arc::clone(&load));
        streams.push(tokio::spawn(async move {
            match full_stream(&c, &u, "m").await {
                Ok(_) => l.streams_ok.fetch_add(1, Ordering::Relaxed),
                Err(_) => l.streams_cut.fetch_add(1, Ordering::Relaxed),
            };
        }));
    }
    let stats = a.stats();
    eventually(Duration::from_secs(10), "streams running", || {
        let n = stats.stream_requests();
        async move { n >= 20 }
    })
    .await;
    let warm = load.ok.load(Ordering::Relaxed);

    let sock = gw.dir.path().join("run/upgrade.sock");
    let mut new_child = None;
    if via_usr2 {
        gw.signal(Signal::SIGUSR2);
    } else {
        let child = gateway_command(&gw.config_path, gw.dir.path(), &["--upgrade"])
            .spawn()
            .unwrap();
        gw.extra_pids.push(child.id());
        let s = sock.clone();
        eventually(
            Duration::from_secs(10),
            "new process waits on the upgrade socket",
            || {
                let w = listener_waiting(&s);
                async move { w }
            },
        )
        .await;
        gw.signal(Signal::SIGQUIT);
        new_child = Some(child);
    }
    // The old process exits on its own once its streams are done.
    let status = gw.wait_exit(Duration::from_secs(60)).await;
    assert!(status.success(), "old process: {status:?}");
    // The new one serves: /status reports another pid.
    let st = gw.status().await;
    let new_pid = st["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, old_pid);
    if new_child.is_none() {
        gw.extra_pids.push(new_pid);
    }
    // Keep the load on a little longer against the new process alone.
    let after = load.ok.load(Ordering::Relaxed);
    let l2 = Arc::clone(&load);
    eventually(
        Duration::from_secs(10),
        "requests served by the new process",
        || {
            let n = l2.ok.load(Ordering::Relaxed);
            async move { n >= after + 50 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    for s in streams {
        s.await.unwrap();
    }
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let summary = format!(
        "ok {} (before hand-over {warm}), refused {}, other errors {}, non-2xx {}, streams ok {} cut {}",
        get(&load.ok),
        get(&load.refused),
        get(&load.other_errors),
        get(&load.non_2xx),
        get(&load.streams_ok),
        get(&load.streams_cut)
    );
    eprintln!("upgrade under load: {summary}");
    assert_eq!(get(&load.refused), 0, "{summary}");
    assert_eq!(get(&load.streams_cut), 0, "{summary}");
    assert_eq!(get(&load.streams_ok), 20, "{summary}");
    assert_eq!(get(&load.non_2xx), 0, "{summary}");
    assert_eq!(get(&load.other_errors), 0, "{summary}");
    assert_eq!(stats.aborted(), 0);
    if let Some(mut c) = new_child {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_sigquit_under_load_refuses_nothing_and_cuts_nothing() {
    upgrade_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_with_sigusr2_under_load_refuses_nothing_and_cuts_nothing() {
    upgrade_under_load(true).await;
}

/// Whether `pid` is still running (a zombie awaiting its reaper counts as gone).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_mode_writes_the_configured_pid_file_and_drains_on_sigterm() {
    let a = mock("a0", "m").await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids/modelgate.pid");
    let extra = format!(
        "server:\n  pid_file: \"{}\"\n  upgrade_sock: \"{}\"\ndrain:\n  delay_ms: 200\n",
        pid_file.display(),
        dir.path().join("pids/upgrade.sock").display()
    );
    let mut gw = Gateway::spawn(&model_block("m", &[backend("a0", &a)], ""), &extra, &["-d"]);
    // The foreground process returns at once with 0; the daemon keeps serving.
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}");
    let pf = pid_file.clone();
    eventually(Duration::from_secs(10), "pid file written", || {
        let ok = std::fs::read_to_string(&pf).is_ok_and(|s| s.trim().parse::<u32>().is_ok());
        async move { ok }
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    gw.extra_pids.push(pid);
    assert_ne!(pid, gw.pid());
    gw.wait_ready().await;
    assert_eq!(gw.status().await["pid"], pid);
    assert_eq!(gw.chat("m", false).await.status(), 200);
    signal_pid(pid, Signal::SIGTERM);
    eventually(Duration::from_secs(10), "daemon exited", || {
        let gone = !running(pid);
        async move { gone }
    })
    .await;
    assert!(gw
        .log()
        .contains("all in-flight requests finished; exiting"));
}
