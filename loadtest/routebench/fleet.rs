//! The simulated vLLM fleet as routebench sees it: each server's `/metrics` counters, the wait
//! for an idle fleet, and the prefix-cache reset between points.
//!
//! Control plane of the benchmark: runs between points and twice per point (counter snapshots),
//! never per request. Every wait is bounded; nothing here retries forever.

use std::time::{Duration, Instant};

/// The vLLM metrics routebench reads from one server, each summed over its label sets.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServerMetrics {
    pub running: f64,
    pub waiting: f64,
    pub kv_usage: f64,
    pub prefix_queries: f64,
    pub prefix_hits: f64,
    pub preemptions: f64,
    pub prompt_tokens: f64,
    pub generation_tokens: f64,
    pub requests: f64,
    /// The simulator's own: simulated seconds its engines were busy, and simulated seconds
    /// steps started late because the host did not keep up.
    pub sim_busy_seconds: f64,
    pub sim_late_seconds: f64,
}

/// The metric each field comes from (vLLM's names, then the simulator's).
const NAMES: [&str; 11] = [
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:request_success_total",
    "modelgate_mock_sim_busy_seconds_total",
    "modelgate_mock_sim_late_seconds_total",
];

impl ServerMetrics {
    /// Parses Prometheus text: sums each known metric over its label sets; unknown lines and
    /// unparsable values are skipped (a server without a counter reports 0 for it).
    pub fn parse(text: &str) -> Self {
        let mut sums = [0.0_f64; NAMES.len()];
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = &line[..name_end];
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                continue;
            };
            let value = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|v| v.is_finite());
            if let Some(v) = value {
                sums[i] += v;
            }
        }
        let [running, waiting, kv_usage, prefix_queries, prefix_hits, preemptions, prompt_tokens, generation_tokens, requests, sim_busy_seconds, sim_late_seconds] =
            sums;
        ServerMetrics {
            running,
            waiting,
            kv_usage,
            prefix_queries,
            prefix_hits,
            preemptions,
            prompt_tokens,
            generation_tokens,
            requests,
            sim_busy_seconds,
            sim_late_seconds,
        }
    }

    /// Counter increase from `before` to `self` (gauges are taken from `self`).
    pub fn since(&self, before: &ServerMetrics) -> ServerMetrics {
        ServerMetrics {
            running: self.running,
            waiting: self.waiting,
            kv_usage: self.kv_usage,
            prefix_queries: self.prefix_queries - before.prefix_queries,
            prefix_hits: self.prefix_hits - before.prefix_hits,
            preemptions: self.preemptions - before.preemptions,
            prompt_tokens: self.prompt_tokens - before.prompt_tokens,
            generation_tokens: self.generation_tokens - before.generation_tokens,
            requests: self.requests - before.requests,
            sim_busy_seconds: self.sim_busy_seconds - before.sim_busy_seconds,
            sim_late_seconds: self.sim_late_seconds - before.sim_late_seconds,
        }
    }
}

/// The fleet's servers by base URL (`http://127.0.0.1:PORT`).
#[derive(Clone, Debug)]
pub struct Fleet {
    pub servers: Vec<String>,
    client: reqwest::Client,
}

/// Longest wait for one admin request to a server.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

impl Fleet {
    pub fn new(servers: Vec<String>) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(ADMIN_TIMEOUT).build()?;
        Ok(Fleet { servers, client })
    }

    /// Every server's metrics, in `servers` order.
    pub async fn scrape(&self) -> Result<Vec<ServerMetrics>, String> {
        let mut out = Vec::with_capacity(self.servers.len());
        for base in &self.servers {
            let url = format!("{base}/metrics");
            let text = async {
                self.client
                    .get(&url)
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await
            }
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
            out.push(ServerMetrics::parse(&text));
        }
        Ok(out)
    }

    /// Polls until every server reports running = waiting = 0, at most `limit`.
    pub async fn wait_idle(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let busy: Vec<(usize, f64, f64)> = self
                .scrape()
                .await?
                .iter()
                .enumerate()
                .filter(|(_, m)| m.running > 0.0 || m.waiting > 0.0)
                .map(|(i, m)| (i, m.running, m.waiting))
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "fleet not idle after {limit:?} (server, running, waiting): {busy:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST /reset_prefix_cache` on every server; an error names the first that refused.
    pub async fn reset_prefix_caches(&self) -> Result<(), String> {
        for base in &self.servers {
            let url = format!("{base}/reset_prefix_cache");
            let status = self
                .client
                .post(&url)
                .send()
                .await
                .map_err(|e| format!("POST {url}: {e}"))?
                .status();
            if !status.is_success() {
                return Err(format!("POST {url}: {status}"));
            }
        }
        Ok(())
    }
}

/// Per-server counter deltas summed into the fleet's numbers for one point.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FleetDelta {
    /// Prefix-cache hit tokens ÷ queried tokens over the fleet (None without queries).
    pub hit_rate: Option<f64>,
    /// Requests each server completed.
    pub requests: Vec<u64>,
    pub preemptions: f64,
    pub prompt_tokens: f64,
    pub generation_tokens: f64,
    /// Each server's own hit rate, to see where the cache worked.
    pub server_hit_rates: Vec<Option<f64>>,
    /// Simulated seconds of late steps ÷ busy seconds over the fleet: how much the host fell
    /// behind the simulated clock (well under 1 % = the machine kept up).
    pub sim_late_fraction: Option<f64>,
}

impl FleetDelta {
    pub fn between(before: &[ServerMetrics], after: &[ServerMetrics]) -> Self {
        let deltas: Vec<ServerMetrics> =
            after.iter().zip(before).map(|(a, b)| a.since(b)).collect();
        let sum = |f: fn(&ServerMetrics) -> f64| deltas.iter().map(f).sum::<f64>();
        FleetDelta {
            hit_rate: super::stats::ratio(sum(|m| m.prefix_hits), sum(|m| m.prefix_queries)),
            requests: deltas.iter().map(|m| m.requests.max(0.0) as u64).collect(),
            preemptions: sum(|m| m.preemptions),
            prompt_tokens: sum(|m| m.prompt_tokens),
            generation_tokens: sum(|m| m.generation_tokens),
            server_hit_rates: deltas
                .iter()
                .map(|m| super::stats::ratio(m.prefix_hits, m.prefix_queries))
                .collect(),
            sim_late_fraction: super::stats::ratio(
                sum(|m| m.sim_late_seconds),
                sum(|m| m.sim_busy_seconds),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vllm_metrics_summing_label_sets() {
        let text = "# HELP vllm:num_requests_running x\n\
            # TYPE vllm:num_requests_running gauge\n\
            vllm:num_requests_running{model_name=\"m\",engine=\"0\"} 3.0\n\
            vllm:num_requests_running{model_name=\"m\",engine=\"1\"} 2.0\n\
            vllm:num_requests_waiting{model_name=\"m\"} 1\n\
            vllm:prefix_cache_queries_total{model_name=\"m\"} 1000.0\n\
            vllm:prefix_cache_hits_total{model_name=\"m\"} 250.0\n\
            vllm:request_success_total{finished_reason=\"length\",model_name=\"m\"} 7.0\n\
            vllm:request_success_total{finished_reason=\"stop\",model_name=\"m\"} 1.0\n\
            vllm:num_requests_running_other 99\n\
            vllm:kv_cache_usage_perc{model_name=\"m\"} NaN\n";
        let m = ServerMetrics::parse(text);
        assert_eq!(m.running, 5.0);
        assert_eq!(m.waiting, 1.0);
        assert_eq!(m.prefix_queries, 1000.0);
        assert_eq!(m.prefix_hits, 250.0);
        assert_eq!(m.requests, 8.0);
        assert_eq!(m.kv_usage, 0.0);
    }

    #[test]
    fn fleet_delta_hit_rate_is_token_weighted() {
        let at = |q: f64, h: f64, r: f64| ServerMetrics {
            prefix_queries: q,
            prefix_hits: h,
            requests: r,
            ..ServerMetrics::default()
        };
        let before = [at(100.0, 50.0, 1.0), at(0.0, 0.0, 0.0)];
        let after = [at(1100.0, 950.0, 11.0), at(3000.0, 0.0, 30.0)];
        let d = FleetDelta::between(&before, &after);
        assert_eq!(d.hit_rate, Some(900.0 / 4000.0));
        assert_eq!(d.requests, [10, 30]);
        assert_eq!(d.server_hit_rates, [Some(0.9), Some(0.0)]);
    }
}
