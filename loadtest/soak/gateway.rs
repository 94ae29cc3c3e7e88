//! The gateway under test: its config file (one per reload), the process and its upgrade
//! successors (followed through admin `/status`'s `pid`), signals, and admin reads.
//!
//! Every process signalled here is one this run started (the first process) or one the first
//! process started (its upgrade successors, reported by its own `/status`).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::fleet::{free_port, write_atomically, Fleet};
use super::plan::{ConfigState, Options, DRAINED, FLEET};

pub struct Gateway {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    pub port: u16,
    pub admin_port: u16,
    pub threads: u32,
    /// The first process (our child); its successors are not our children.
    pub child: Option<Child>,
    pub http: reqwest::Client,
}

impl Gateway {
    pub fn new(opts: &Options) -> Gateway {
        let port = free_port();
        let mut admin_port = free_port();
        while admin_port == port {
            admin_port = free_port();
        }
        Gateway {
            bin: opts.gateway_bin.clone(),
            dir: opts.out_dir.clone(),
            config_path: opts.out_dir.join("router.yaml"),
            log_path: opts.out_dir.join("gateway.log"),
            port,
            admin_port,
            threads: opts.threads,
            child: None,
            // A new connection per admin request: after a hand-off the old process keeps
            // answering on connections it already has (for a few seconds), so a pooled client
            // would follow the new process late.
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(5))
                .build()
                .expect("admin client"),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// The config text of `state`.
    pub fn render(&self, state: &ConfigState, fleet: &Fleet) -> String {
        let mut yaml = format!(
            "# modelgate soak, reload {k}\n\
             listen: \"127.0.0.1:{port}\"\n\
             admin:\n  listen: \"127.0.0.1:{admin}\"\n\
             server:\n  threads: {threads}\n  grace_period_s: 60\n\
             drain:\n  delay_ms: 0\n  timeout_ms: 30000\n\
             log:\n  level: info\n\
             defaults:\n\
             \x20 timeouts: {{connect_timeout_ms: 1000, first_byte_timeout_ms: 2000, idle_timeout_ms: 5000, request_timeout_ms: 60000}}\n\
             \x20 retries: {{max_attempts: 3, retry_on: [connection_failure, timeout, http_5xx]}}\n\
             \x20 health_check: {{interval_ms: 500, timeout_ms: 500, healthy_threshold: 2, unhealthy_threshold: 2}}\n\
             models:\n",
            k = state.k,
            port = self.port,
            admin = self.admin_port,
            threads = self.threads,
        );
        for (model, policy) in [("m1", state.m1_policy), ("m2", state.m2_policy)] {
            yaml.push_str(&format!(
                "  {model}:\n    load_balancer: {{policy: {policy}}}\n    backends:\n"
            ));
            for name in state.pool(model) {
                let drain = if name == DRAINED && state.drained {
                    ", drain: true"
                } else {
                    ""
                };
                yaml.push_str(&format!(
                    "      - {{name: {name}, url: \"{}\"{drain}}}\n",
                    fleet.url(name)
                ));
            }
        }
        debug_assert!(FLEET.len() == 7);
        yaml
    }

    /// Save `text` as the config (atomically) and return its sha256, as `/status` reports it.
    pub fn write_config(&self, text: &str) -> Result<String, String> {
        write_atomically(&self.config_path, text)?;
        Ok(format!("{:x}", Sha256::digest(text.as_bytes())))
    }

    /// Start the first process (stdout and stderr appended to `gateway.log`, which its
    /// successors inherit) and wait until `/ready` answers 200.
    pub async fn start(&mut self) -> Result<u32, String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("gateway log: {e}"))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config_path)
            .env("RUNTIME_DIRECTORY", self.dir.join("run"))
            // The config's log.level rules; a RUST_LOG from the caller's shell would override it.
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let pid = child.id();
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let ready = self.http.get(self.admin_url("/ready")).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                return Ok(pid);
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "gateway exited at start: {status}; see {}",
                    self.log_path.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err("gateway not ready within 30 s".into())
    }

    /// Reap the first process if it exited (it does after its first upgrade hand-off).
    pub fn reap(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
            }
        }
    }

    /// Admin `/status`, `None` if it did not answer.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let r = self.http.get(self.admin_url("/status")).send().await.ok()?;
        r.json().await.ok()
    }

    /// Admin `/metrics` text.
    pub async fn metrics(&self) -> Option<String> {
        let r = self
            .http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Send `sig` to `pid`.
pub fn signal(pid: u32, sig: nix::sys::signal::Signal) -> Result<(), String> {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
        .map_err(|e| format!("kill -{sig} {pid}: {e}"))
}

/// Whether `pid` runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Resident set size (KiB) and open descriptors of `pid`, `None` once it is gone.
pub fn rss_and_fds(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// CPU seconds (user + system) `pid` has used so far, `None` once it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after "(comm)": state is the 1st, utime the 12th, stime the 13th.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = rest.get(11)?.parse::<f64>().ok()? + rest.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    Some(ticks / hz as f64)
}

/// Sum of the samples of metric `name` whose labels contain every `labels` pair, in a
/// Prometheus text exposition.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
