//! routebench `--trace`: one JSON line per request of a point, to see where an arm put each
//! group or session and which requests missed the cache (the point's summary only has totals).

use serde::Serialize;

use super::run::RequestRecord;
use super::summary::PointRecord;

/// One request, as written to the trace.
#[derive(Serialize)]
struct TraceLine<'a> {
    scenario: &'a str,
    arm: &'a str,
    multiple: Option<f64>,
    seed: u64,
    /// The oracle's key: group, session or request.
    key: u64,
    measured: bool,
    /// Due time, simulated seconds since the point's start.
    due: f64,
    backend: Option<&'a str>,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    ttft: Option<f64>,
    e2e: Option<f64>,
    error: Option<&'a str>,
}

/// The trace lines of a point's requests, in send order.
pub fn lines(point: &PointRecord, records: &[RequestRecord]) -> Vec<String> {
    let l = &point.labels;
    records
        .iter()
        .filter_map(|r| {
            let o = &r.outcome;
            serde_json::to_string(&TraceLine {
                scenario: &l.scenario,
                arm: &l.arm,
                multiple: l.multiple,
                seed: l.seed,
                key: r.key,
                measured: r.measured,
                due: r.due,
                backend: o.backend.as_deref(),
                prompt_tokens: o.prompt_tokens,
                cached_tokens: o.cached_tokens,
                ttft: o.ttft,
                e2e: o.e2e,
                error: o.error.as_deref(),
            })
            .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Outcome;

    #[test]
    fn one_line_per_request_with_its_group_backend_and_cached_tokens() {
        let mut point = PointRecord::default();
        point.labels.arm = "cache_aware".to_owned();
        point.labels.seed = 7;
        let request = |key, backend: &str, cached| RequestRecord {
            measured: true,
            key,
            due: 1.5,
            lag: 0.0,
            outcome: Outcome {
                backend: Some(backend.to_owned()),
                prompt_tokens: Some(2304),
                cached_tokens: Some(cached),
                ..Outcome::default()
            },
        };
        let lines = lines(&point, &[request(3, "sim0", 2048), request(9, "sim2", 0)]);
        assert_eq!(lines.len(), 2);
        let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        assert_eq!(second["arm"], "cache_aware");
        assert_eq!(second["seed"], 7);
        assert_eq!(second["key"], 9);
        assert_eq!(second["backend"], "sim2");
        assert_eq!(second["cached_tokens"], 0);
        assert_eq!(second["error"], serde_json::Value::Null);
    }
}
