//! Shared integration-test support: ports, the real gateway binary with a temp config, mock
//! backends, HTTP helpers and `eventually`.
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use modelgate::mock::{eventually, FailMode, MockConfig, MockLoad, MockServer};

pub mod dns;

/// A free 127.0.0.1 port for a process a test starts (checked by binding it, then released).
/// Taken below the kernel's ephemeral range (32768–60999 on Linux), where every port bound to 0
/// (the mocks', the clients' own) comes from: between this release and the process's own bind,
/// a parallel test could otherwise take it, and the gateway's requests would reach that test's
/// server. Within one test binary no port is handed out twice.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run one after another; the pid only spreads them over the span.
    let base = std::process::id().wrapping_mul(7_919);
    for _ in 0..SPAN {
        let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        let port = (FIRST + n % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

/// Start a mock vLLM backend serving `model`, named `name`.
pub async fn mock(name: &str, model: &str) -> MockServer {
    mock_with(name, model, |_| {}).await
}

pub async fn mock_with(name: &str, model: &str, f: impl FnOnce(&mut MockConfig)) -> MockServer {
    let mut cfg = MockConfig {
        name: name.to_string(),
        models: vec![model.to_string()],
        ..MockConfig::default()
    };
    f(&mut cfg);
    MockServer::start(cfg).await.unwrap()
}

/// The real `modelgate` binary running with a temp config; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    /// Other processes this test started through the gateway (upgrade successors): killed on
    /// drop too.
    pub extra_pids: Vec<u32>,
}

/// The `modelgate` command for `config`, logging (stdout and stderr) to `<dir>/gateway.log`
/// (appending, so an
/// upgrade successor's lines land in the same file), with its runtime directory (upgrade
/// socket, pid file) private to the test.
pub fn gateway_command(config: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Command {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))
        .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_modelgate"));
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env(
            "RUST_LOG",
            std::env::var("MODELGATE_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("RUNTIME_DIRECTORY", dir.join("run"))
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    cmd
}

impl Gateway {
    /// Start with `models_yaml` as the `models:` block (indented by the caller) plus `extra`
    /// top-level YAML. Waits until the admin listener answers.
    pub async fn start(models_yaml: &str, extra: &str) -> Gateway {
        Gateway::start_with_args(models_yaml, extra, &[]).await
    }

    /// [`Gateway::start`] with extra command-line arguments.
    pub async fn start_with_args(models_yaml: &str, extra: &str, args: &[&str]) -> Gateway {
        let gw = Gateway::spawn(models_yaml, extra, args);
        gw.wait_admin().await;
        gw
    }

    /// Write the config and start the process; does not wait for anything.
    pub fn spawn(models_yaml: &str, extra: &str, args: &[&str]) -> Gateway {
        let port = free_port();
        let mut admin_port = free_port();
        while admin_port == port {
            admin_port = free_port();
        }
        let dir = tempfile::tempdir().unwrap();
        let config_path = dir.path().join("router.yaml");
        let yaml = format!(
            "listen: \"127.0.0.1:{port}\"\nadmin:\n  listen: \"127.0.0.1:{admin_port}\"\n{extra}\nmodels:\n{models_yaml}\n"
        );
        std::fs::write(&config_path, yaml).unwrap();
        let child = gateway_command(&config_path, dir.path(), args)
            .spawn()
            .unwrap();
        Gateway {
            child,
            port,
            admin_port,
            dir,
            config_path,
            extra_pids: Vec::new(),
        }
    }

    /// Wait until the admin listener answers `/health`.
    pub async fn wait_admin(&self) {
        let admin = self.admin_url("/health");
        let client = client();
        eventually(Duration::from_secs(20), "gateway admin /health", || {
            let c = client.clone();
            let u = admin.clone();
            async move { c.get(&u).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// Start and wait for `/ready`.
    pub async fn start_ready(models_yaml: &str, extra: &str) -> Gateway {
        let gw = Gateway::start(models_yaml, extra).await;
        gw.wait_ready().await;
        gw
    }

    pub async fn wait_ready(&self) {
        let url = self.admin_url("/ready");
        let c = client();
        eventually(Duration::from_secs(20), "gateway /ready", || {
            let c = c.clone();
            let u = url.clone();
            async move { c.get(&u).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// `POST /v1/chat/completions` for `model` with a small body.
    pub async fn chat(&self, model: &str, stream: bool) -> reqwest::Response {
        client()
            .post(self.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(chat_body(model, stream))
            .send()
            .await
            .unwrap()
    }

    /// Admin `/status` JSON.
    pub async fn status(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Whether the named backend of `model` is healthy per `/status`.
    pub async fn backend_healthy(&self, model: &str, backend: &str) -> bool {
        let s = self.status().await;
        s["models"][model]["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|b| b["name"] == backend && b["healthy"] == true)
    }
}

impl Gateway {
    /// The process started by the test.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `sig` to the process started by the test.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        signal_pid(self.pid(), sig);
    }

    /// Wait for the started process to exit, up to `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!("gateway did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replace the config file's content in place.
    pub fn write_config(&self, models_yaml: &str, extra: &str) {
        std::fs::write(&self.config_path, self.config_text(models_yaml, extra)).unwrap();
    }

    /// The full config text for these blocks, with this gateway's listeners.
    pub fn config_text(&self, models_yaml: &str, extra: &str) -> String {
        format!(
            "listen: \"127.0.0.1:{}\"\nadmin:\n  listen: \"127.0.0.1:{}\"\n{extra}\nmodels:\n{models_yaml}\n",
            self.port, self.admin_port
        )
    }

    /// Admin `/config` JSON.
    pub async fn config(&self) -> serde_json::Value {
        client()
            .get(self.admin_url("/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `generation` from `/config`.
    pub async fn generation(&self) -> u64 {
        self.config().await["generation"].as_u64().unwrap()
    }

    /// Wait until `/config` reports `generation`.
    pub async fn wait_generation(&self, generation: u64) {
        let url = self.admin_url("/config");
        let c = client();
        eventually(
            Duration::from_secs(10),
            &format!("config generation {generation}"),
            || {
                let c = c.clone();
                let u = url.clone();
                async move {
                    match c.get(&u).send().await {
                        Ok(r) => r
                            .json::<serde_json::Value>()
                            .await
                            .is_ok_and(|v| v["generation"] == generation),
                        Err(_) => false,
                    }
                }
            },
        )
        .await;
    }

    /// Wait until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        eventually(
            Duration::from_secs(10),
            &format!("log line {needle:?}"),
            || {
                let found = self.log().contains(needle);
                async move { found }
            },
        )
        .await;
    }
}

/// Send a signal to a process this test started.
pub fn signal_pid(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in &self.extra_pids {
            signal_pid(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        if std::thread::panicking() {
            eprintln!("---- gateway log ----\n{}", self.log());
        }
    }
}

/// A backend entry for the `models:` block.
pub fn backend(name: &str, m: &MockServer) -> String {
    format!("      - name: \"{name}\"\n        url: \"{}\"\n", m.url())
}

/// A model block with fast health checks; `extra` is indented model-level YAML.
pub fn model_block(model: &str, backends: &[String], extra: &str) -> String {
    format!(
        "  {model}:\n    backends:\n{}    health_check: {{interval_ms: 100, timeout_ms: 500, healthy_threshold: 1, unhealthy_threshold: 1}}\n{extra}",
        backends.concat()
    )
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn chat_body(model: &str, stream: bool) -> String {
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"Describe vLLM in one paragraph."}}],"max_tokens":8,"stream":{stream}}}"#
    )
}

/// Assert an OpenAI-shaped error and return it.
pub async fn expect_error(
    resp: reqwest::Response,
    status: u16,
    code: Option<&str>,
) -> serde_json::Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    assert_eq!(
        resp.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap()),
        Some("application/json")
    );
    let v: serde_json::Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string(), "{v}");
    assert!(e["type"].is_string(), "{v}");
    assert!(e.get("param").is_some() && e.get("code").is_some(), "{v}");
    if let Some(code) = code {
        assert_eq!(e["code"], code, "{v}");
    }
    v
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(data))
}

/// Read a whole response body; `Err` if the body broke off.
pub async fn read_body(r: reqwest::Response) -> Result<String, String> {
    use futures_util::StreamExt;
    let mut s = r.bytes_stream();
    let mut out = Vec::new();
    while let Some(item) = s.next().await {
        out.extend_from_slice(&item.map_err(|e| e.to_string())?);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Run one streaming chat request to completion: `Ok(backend)` if it answered 200 and the
/// stream ended with `data: [DONE]`, `Err(why)` otherwise.
pub async fn full_stream(c: &reqwest::Client, url: &str, model: &str) -> Result<String, String> {
    let r = c
        .post(url)
        .header("content-type", "application/json")
        .body(chat_body(model, true).replace("\"max_tokens\":8", "\"max_tokens\":1000"))
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status().as_u16();
    let backend = r
        .headers()
        .get("x-modelgate-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = read_body(r).await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}: {body}"));
    }
    if !body.ends_with("data: [DONE]\n\n") {
        return Err(format!(
            "stream cut: ...{}",
            &body[body.len().saturating_sub(80)..]
        ));
    }
    Ok(backend)
}

/// One sample of a Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// Parse the Prometheus text format (enough of it for our own output: no escapes in names,
/// `\"` and `\\` in label values).
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("sample line has a value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().expect("numeric sample value"),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), Default::default()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = std::collections::BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'));
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.push(chars.next().unwrap()),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    labels.insert(key.trim_start_matches(',').to_string(), val);
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                }
                (name.to_string(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

impl Gateway {
    /// Scrape admin `/metrics`.
    pub async fn metrics(&self) -> Vec<Sample> {
        let r = client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        parse_prometheus(&r.text().await.unwrap())
    }

    /// Sum of the samples of `name` whose labels include all of `labels`.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sum(&self.metrics().await, name, labels)
    }

    /// The access-log lines (JSON objects with a `request_id`) written so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("request_id").is_some() && v.get("duration_ms").is_some())
            .collect()
    }
}

/// Sum of the samples of `name` whose labels include all of `labels`.
pub fn sum(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Start `n` streaming chat requests for `model` at once, each on its own connection; each
/// task ends as [`full_stream`] does.
pub fn spawn_streams(
    gw: &Gateway,
    n: usize,
    model: &str,
) -> Vec<tokio::task::JoinHandle<Result<String, String>>> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url = gw.url("/v1/chat/completions");
    (0..n)
        .map(|_| {
            let (c, u, m) = (client.clone(), url.clone(), model.to_string());
            tokio::spawn(async move { full_stream(&c, &u, &m).await })
        })
        .collect()
}
