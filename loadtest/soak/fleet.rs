//! The mock fleet: one `modelgate-mock` process per backend (so `SIGKILL` kills exactly one
//! backend), each with a `--fail-file` the schedule writes to make it answer 503 or hang, and
//! the raw responder ([`super::faulty`]) that takes over a backend's port for the faults a
//! well-behaved HTTP server cannot produce.
//!
//! Every process started here is stopped by its PID, never by name.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::faulty::RawBackend;
use super::plan::{Fault, Options, FLEET};

/// A free 127.0.0.1 port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free local port")
}

pub struct Fleet {
    mock_bin: PathBuf,
    dir: PathBuf,
    tokens: usize,
    itl_ms: u64,
    ttft_ms: u64,
    ports: HashMap<&'static str, u16>,
    procs: HashMap<&'static str, Child>,
    raw: HashMap<&'static str, RawBackend>,
}

impl Fleet {
    /// Start every backend of [`FLEET`] and wait until each answers `/health`.
    pub async fn start(opts: &Options) -> Result<Fleet, String> {
        let mut ports = HashMap::new();
        for b in FLEET {
            let mut port = free_port();
            while ports.values().any(|&p| p == port) {
                port = free_port();
            }
            ports.insert(b.name, port);
        }
        let mut fleet = Fleet {
            mock_bin: opts.mock_bin.clone(),
            dir: opts.out_dir.clone(),
            tokens: opts.stream_tokens,
            itl_ms: opts.itl_ms,
            ttft_ms: opts.ttft_ms,
            ports,
            procs: HashMap::new(),
            raw: HashMap::new(),
        };
        for b in FLEET {
            fleet.spawn(b.name)?;
        }
        for b in FLEET {
            fleet.wait_healthy(b.name).await?;
        }
        Ok(fleet)
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[name])
    }

    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.get(name).map(Child::id)
    }

    fn fail_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.fail"))
    }

    fn spawn(&mut self, name: &'static str) -> Result<(), String> {
        let model = FLEET
            .iter()
            .find(|b| b.name == name)
            .map(|b| b.model)
            .ok_or_else(|| format!("no backend {name}"))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("mock-{name}.log")))
            .map_err(|e| format!("mock log: {e}"))?;
        let child = Command::new(&self.mock_bin)
            .args(["--port", &self.ports[name].to_string()])
            .args(["--name", name, "--model", model])
            .args(["--tokens", &self.tokens.to_string()])
            .args(["--itl-ms", &self.itl_ms.to_string()])
            .args(["--ttft-ms", &self.ttft_ms.to_string()])
            .arg("--fail-file")
            .arg(self.fail_file(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.mock_bin.display()))?;
        self.procs.insert(name, child);
        Ok(())
    }

    /// Wait (at most 20 s) until the backend's `/health` answers 200.
    pub async fn wait_healthy(&self, name: &str) -> Result<(), String> {
        let url = format!("{}/health", self.url(name));
        let client = reqwest::Client::new();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            let r = client
                .get(&url)
                .timeout(Duration::from_millis(500))
                .send()
                .await;
            if r.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("mock {name} did not answer /health within 20 s"))
    }

    /// `SIGKILL` the backend's process and reap it.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.procs.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the backend's process again on its port and wait until it is up.
    pub async fn restart(&mut self, name: &'static str) -> Result<(), String> {
        self.spawn(name)?;
        self.wait_healthy(name).await
    }

    /// Start `fault` on backend `name`: a fail-file mode, or (faults a real HTTP server does not
    /// produce) the process is killed and a raw responder takes its port.
    pub async fn fault_start(&mut self, name: &'static str, fault: Fault) -> Result<(), String> {
        match fault {
            Fault::Status503 => write_atomically(&self.fail_file(name), "503"),
            Fault::Hang => write_atomically(&self.fail_file(name), "hang"),
            Fault::ResetMidHeader | Fault::Malformed => {
                self.kill(name);
                let model = FLEET
                    .iter()
                    .find(|b| b.name == name)
                    .map_or("m1", |b| b.model);
                let addr = SocketAddr::from(([127, 0, 0, 1], self.ports[name]));
                let raw = RawBackend::start(addr, model, fault)
                    .await
                    .map_err(|e| format!("raw responder on {addr}: {e}"))?;
                self.raw.insert(name, raw);
                Ok(())
            }
        }
    }

    /// End `fault`: clear the fail file, or stop the raw responder and start the mock again.
    /// Returns how many POSTs the raw responder answered (0 for fail-file faults).
    pub async fn fault_end(&mut self, name: &'static str, fault: Fault) -> Result<u64, String> {
        match fault {
            Fault::Status503 | Fault::Hang => {
                write_atomically(&self.fail_file(name), "")?;
                Ok(0)
            }
            Fault::ResetMidHeader | Fault::Malformed => {
                let posts = match self.raw.remove(name) {
                    Some(raw) => raw.stop().await,
                    None => 0,
                };
                self.restart(name).await?;
                Ok(posts)
            }
        }
    }

    /// Stop everything: raw responders, then each mock process (SIGTERM, SIGKILL after 5 s).
    pub async fn stop(&mut self) {
        for (_, raw) in self.raw.drain() {
            raw.stop().await;
        }
        for (_, child) in self.procs.drain() {
            stop_child(child).await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, mut child) in self.procs.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGTERM, then SIGKILL if still running after 5 s; always reaped.
pub async fn stop_child(mut child: Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Replace `path`'s content in one step (write a temporary file, rename it over), as editors
/// and Kubernetes do: a reader never sees half a file.
pub fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}
