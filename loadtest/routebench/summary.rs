//! The JSON line of one point: what the report reads back. Built from a [`PointRun`] after the
//! point, never on a timed path.

use std::collections::BTreeMap;

use super::fleet::FleetDelta;
use super::run::PointRun;
use super::stats::{ratio, skew, Quantiles};

/// Labels of a point: which scenario, arm and rate it measured, and how.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Labels {
    pub scenario: String,
    pub arm: String,
    /// `knee` (RR calibration) or `ladder`.
    pub phase: String,
    /// Rate ÷ the scenario's knee, for ladder points.
    pub multiple: Option<f64>,
    /// Offered load, simulated requests/s.
    pub rate: f64,
    pub seed: u64,
    pub time_scale: f64,
    pub workload: String,
    pub warmup: u32,
    pub measured: u32,
    /// TTFT p99 bound of the SLO, simulated seconds.
    pub slo_ttft_p99: f64,
}

/// One point's results (latencies in simulated seconds; `null` = infinite, i.e. the percentile
/// fell on a failed request).
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct PointRecord {
    #[serde(flatten)]
    pub labels: Labels,
    /// Measured requests sent (or refused by the client cap) and those that succeeded.
    pub sent: u64,
    pub ok: u64,
    /// Failures of measured requests by kind.
    pub errors: BTreeMap<String, u64>,
    pub ttft: Quantiles,
    pub e2e: Quantiles,
    /// Output tokens of the measured requests ÷ the measured window.
    pub out_tok_s: Option<f64>,
    /// Prompt tokens of the measured requests ÷ the measured window (from usage).
    pub in_tok_s: Option<f64>,
    /// Fleet prefix-cache hit rate from the servers' counters over the measured window.
    pub hit_rate: Option<f64>,
    /// Per-server hit rates from the same counters.
    pub server_hit_rates: Vec<Option<f64>>,
    /// The same from the answers: Σ usage cached_tokens ÷ Σ prompt_tokens of measured requests.
    pub hit_rate_usage: Option<f64>,
    /// Requests each server completed over the measured window (servers' counters).
    pub server_requests: Vec<u64>,
    /// max ÷ min of `server_requests` (`null` = a server got none).
    pub skew: Option<f64>,
    /// Measured requests per backend named in the answers' headers.
    pub backend_requests: BTreeMap<String, u64>,
    /// Affinity: distinct backends that served each key (group or session) with at least two
    /// measured requests, averaged over those keys (1.0 = every key stayed on one server;
    /// `null` without backend headers or repeated keys).
    pub servers_per_key: Option<f64>,
    pub preemptions: f64,
    /// The simulator's late steps ÷ busy time over the measured window (host fell behind).
    pub sim_late_fraction: Option<f64>,
    /// First measured due time to the last measured answer, simulated seconds.
    pub window_s: f64,
    /// How late the generator sent requests, p99, simulated seconds.
    pub send_lag_p99: Option<f64>,
    /// Load generator CPU, cores (CPU seconds ÷ wall seconds of the point).
    pub client_cpu: f64,
    /// The whole machine's busy CPUs, averaged over the point.
    pub machine_cpus: Option<f64>,
    pub wall_s: f64,
    /// TTFT p99 ≤ the SLO.
    pub slo_ok: bool,
    /// Problems during the point (fleet not idle, reset refused, counters missing).
    pub notes: Vec<String>,
}

impl PointRecord {
    pub fn summarize(labels: Labels, run: &PointRun) -> Self {
        let measured: Vec<_> = run.records.iter().filter(|r| r.measured).collect();
        let mut errors = BTreeMap::new();
        let mut backend_requests = BTreeMap::new();
        let mut key_backends: BTreeMap<u64, (u32, std::collections::BTreeSet<&str>)> =
            BTreeMap::new();
        let (mut out_tokens, mut prompt, mut cached) = (0u64, 0u64, 0u64);
        let (mut first_due, mut last_end) = (f64::INFINITY, 0.0_f64);
        for r in &measured {
            let o = &r.outcome;
            if let Some(kind) = &o.error {
                *errors.entry(kind.clone()).or_insert(0) += 1;
            }
            if let Some(b) = &o.backend {
                *backend_requests.entry(b.clone()).or_insert(0) += 1;
                let entry = key_backends.entry(r.key).or_default();
                entry.0 += 1;
                entry.1.insert(b);
            }
            out_tokens += u64::from(o.output_tokens);
            if let (Some(p), Some(c)) = (o.prompt_tokens, o.cached_tokens) {
                prompt += p;
                cached += c;
            }
            first_due = first_due.min(r.due);
            let end = o.e2e.or(o.ttft).unwrap_or(0.0);
            last_end = last_end.max(r.due + end);
        }
        let window_s = if first_due.is_finite() {
            (last_end - first_due).max(0.0)
        } else {
            0.0
        };
        let repeated: Vec<usize> = key_backends
            .values()
            .filter(|(n, _)| *n >= 2)
            .map(|(_, set)| set.len())
            .collect();
        let servers_per_key = ratio(repeated.iter().sum::<usize>() as f64, repeated.len() as f64);
        let ok = measured
            .iter()
            .filter(|r| r.outcome.error.is_none())
            .count() as u64;
        // A failed request never counts as a first token, even if one came before the failure.
        let ttft = Quantiles::of(
            measured
                .iter()
                .map(|r| {
                    r.outcome
                        .error
                        .is_none()
                        .then_some(r.outcome.ttft)
                        .flatten()
                })
                .collect(),
        );
        let e2e = Quantiles::of(measured.iter().map(|r| r.outcome.e2e).collect());
        let lag = Quantiles::of(measured.iter().map(|r| Some(r.lag)).collect());
        let mut notes = run.notes.clone();
        let fleet = match &run.fleet {
            Ok(f) => f.clone(),
            Err(e) => {
                notes.push(format!("server counters unavailable: {e}"));
                FleetDelta::default()
            }
        };
        let slo_ok = ttft.p99.is_some_and(|p| p <= labels.slo_ttft_p99);
        PointRecord {
            labels,
            sent: measured.len() as u64,
            ok,
            errors,
            ttft,
            e2e,
            out_tok_s: ratio(out_tokens as f64, window_s),
            in_tok_s: ratio(prompt as f64, window_s),
            hit_rate: fleet.hit_rate,
            server_hit_rates: fleet.server_hit_rates,
            hit_rate_usage: ratio(cached as f64, prompt as f64),
            skew: skew(&fleet.requests),
            server_requests: fleet.requests,
            backend_requests,
            servers_per_key,
            preemptions: fleet.preemptions,
            sim_late_fraction: fleet.sim_late_fraction,
            window_s,
            send_lag_p99: lag.p99,
            client_cpu: ratio(run.cpu_seconds, run.wall_seconds).unwrap_or(0.0),
            machine_cpus: run.machine_busy_cpus,
            wall_s: run.wall_seconds,
            slo_ok,
            notes,
        }
    }

    /// The one-line summary printed after a point (the shell reads `slo=`).
    pub fn line(&self) -> String {
        let s = |v: Option<f64>| v.map_or("inf".to_owned(), |v| format!("{v:.3}"));
        format!(
            "slo={} scenario={} arm={} rate={:.2} ttft_p50={} ttft_p99={} e2e_p99={} ok={}/{} \
             hit={} skew={} out_tok_s={} late={} cpu={:.2} machine_cpus={} wall={:.0}s",
            if self.slo_ok { "pass" } else { "fail" },
            self.labels.scenario,
            self.labels.arm,
            self.labels.rate,
            s(self.ttft.p50),
            s(self.ttft.p99),
            s(self.e2e.p99),
            self.ok,
            self.sent,
            s(self.hit_rate),
            s(self.skew),
            s(self.out_tok_s),
            s(self.sim_late_fraction),
            self.client_cpu,
            s(self.machine_cpus),
            self.wall_s,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::client::Outcome;
    use super::super::run::{PointRun, RequestRecord};
    use super::*;

    fn record(measured: bool, due: f64, ttft: f64, e2e: f64, error: Option<&str>) -> RequestRecord {
        RequestRecord {
            measured,
            key: 1,
            due,
            lag: 0.0,
            outcome: Outcome {
                ttft: Some(ttft),
                e2e: error.is_none().then_some(e2e),
                error: error.map(str::to_owned),
                output_tokens: 10,
                prompt_tokens: Some(100),
                cached_tokens: Some(25),
                backend: Some("b".to_owned()),
                text: String::new(),
            },
        }
    }

    #[test]
    fn summary_counts_only_measured_requests_and_failures_as_infinite() {
        let mut records = vec![record(false, 0.0, 9.0, 9.5, None)];
        for i in 0..98 {
            records.push(record(true, 1.0 + f64::from(i) * 0.1, 0.5, 1.0, None));
        }
        records.push(record(true, 20.0, 0.7, 2.0, None));
        records.push(record(true, 20.0, 0.1, 0.0, Some("http_503")));
        let run = PointRun {
            records,
            fleet: Err("none".to_owned()),
            notes: Vec::new(),
            cpu_seconds: 1.0,
            wall_seconds: 4.0,
            machine_busy_cpus: Some(1.5),
        };
        let labels = Labels {
            slo_ttft_p99: 2.0,
            ..Labels::default()
        };
        let p = PointRecord::summarize(labels, &run);
        assert_eq!((p.sent, p.ok), (100, 99));
        assert_eq!(p.errors.get("http_503"), Some(&1));
        assert_eq!(p.ttft.p50, Some(0.5));
        assert_eq!(p.ttft.p99, Some(0.7));
        assert!(p.slo_ok);
        assert_eq!(p.window_s, 21.0);
        assert_eq!(p.out_tok_s, Some(1000.0 / 21.0));
        assert_eq!(p.hit_rate_usage, Some(0.25));
        assert_eq!(p.client_cpu, 0.25);
        assert_eq!(p.servers_per_key, Some(1.0));
        assert!(p.notes[0].contains("server counters unavailable"));
        let line = serde_json::to_string(&p).unwrap();
        let back: PointRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back.ttft, p.ttft);
    }
}
