//! Shared integration-test support: ports, the real gateway binary with a temp config, mock
//! backends, HTTP helpers and `eventually`.
#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use modelgate::mock::{FailMode, MockConfig, MockServer};

/// A free 127.0.0.1 port (bound then released; the OS does not hand it out again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `cond` until it returns true or `within` passes; panics with `what` on timeout.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

impl Gateway {
    /// Start with `models_yaml` as the `models:` block (indented by the caller) plus `extra`
    /// top-level YAML. Waits until the admin listener answers.
    pub async fn start(models_yaml: &str, extra: &str) -> Gateway {
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
        let log = std::fs::File::create(dir.path().join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_modelgate"))
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let gw = Gateway {
            child,
            port,
            admin_port,
            dir,
            config_path,
        };
        let admin = gw.admin_url("/health");
        let client = client();
        eventually(Duration::from_secs(20), "gateway admin /health", || {
            let c = client.clone();
            let u = admin.clone();
            async move { c.get(&u).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        gw
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
        s["models"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["model"] == model)
            .flat_map(|m| m["backends"].as_array().unwrap().iter())
            .any(|b| b["name"] == backend && b["healthy"] == true)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
