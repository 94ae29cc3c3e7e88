//! vLLM load reports for the `load_aware` policy: parse a vLLM `/metrics` scrape into the
//! scheduler's running and waiting counts and its KV-cache usage, and fetch one over a pooled
//! Pingora connector.
//!
//! Control plane: a background poller calls [`fetch`] and publishes the [`LoadReport`]; the
//! request path only reads what was published. Nothing here may run on the request path (it
//! does network I/O), take a lock, or panic on what a backend sends: a scrape is untrusted input
//! and [`parse`] skips whatever it does not understand.
//!
//! The metric names are vLLM's (`vllm/v1/metrics/loggers.py`; `vllm/engine/metrics.py` before
//! v1): gauges labelled `model_name` and, since v1, `engine` (one label set per data-parallel
//! engine), rendered by Python's `prometheus_client` as `name{labels} 3.0`.

use std::time::{Duration, Instant};

use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

use crate::oneshot;

/// Requests in the engine's running batch. Summed over label sets.
pub const RUNNING_METRIC: &str = "vllm:num_requests_running";
/// Requests queued by the scheduler. Summed over label sets.
pub const WAITING_METRIC: &str = "vllm:num_requests_waiting";
/// KV-cache usage as a fraction (1 = full), vLLM v0.10 and later. Max over label sets.
pub const KV_CACHE_METRIC: &str = "vllm:kv_cache_usage_perc";
/// The older name of [`KV_CACHE_METRIC`]; read only when the new one is absent (vLLM versions
/// in between export both, with the same value).
pub const GPU_CACHE_METRIC: &str = "vllm:gpu_cache_usage_perc";

/// vLLM's cache configuration (an info gauge): its `num_gpu_blocks` and `block_size` labels give
/// the KV cache's size in tokens.
pub const CACHE_CONFIG_METRIC: &str = "vllm:cache_config_info";

/// Path of vLLM's Prometheus endpoint, after the backend's path prefix.
pub const METRICS_PATH: &str = "/metrics";
/// Cap on a scrape's body: vLLM's histograms make a scrape a few hundred KiB (more with many
/// LoRA adapters or engines); anything past this is not a vLLM scrape.
pub const MAX_METRICS_BODY: usize = 4 * 1024 * 1024;
/// What one scrape says about a backend's load, without the time it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadMetrics {
    /// `vllm:num_requests_running`, summed over engines and models. Finite, `>= 0`; 0 when only
    /// the waiting count was exported.
    pub running: f64,
    /// `vllm:num_requests_waiting`, summed the same way. Finite, `>= 0`; 0 when absent.
    pub waiting: f64,
    /// `vllm:kv_cache_usage_perc` (else `vllm:gpu_cache_usage_perc`): the fullest engine's
    /// fraction, clamped to `0..=1`. `None` when neither was exported.
    pub kv_cache_usage: Option<f64>,
    /// KV-cache size in tokens (`num_gpu_blocks` × `block_size` of [`CACHE_CONFIG_METRIC`],
    /// summed over engines). `None` when not exported.
    pub kv_cache_tokens: Option<u64>,
}

impl LoadMetrics {
    /// Stamps these metrics with the time they were scraped.
    pub fn at(self, at: Instant) -> LoadReport {
        LoadReport {
            running: self.running,
            waiting: self.waiting,
            kv_cache_usage: self.kv_cache_usage,
            kv_cache_tokens: self.kv_cache_tokens,
            at,
        }
    }
}

/// A backend's load as of `at`: [`LoadMetrics`] plus the time of the scrape, so a reader can
/// tell a stale report from a fresh one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadReport {
    /// See [`LoadMetrics::running`].
    pub running: f64,
    /// See [`LoadMetrics::waiting`].
    pub waiting: f64,
    /// See [`LoadMetrics::kv_cache_usage`].
    pub kv_cache_usage: Option<f64>,
    /// See [`LoadMetrics::kv_cache_tokens`].
    pub kv_cache_tokens: Option<u64>,
    /// When the scrape's body was fully read and parsed.
    pub at: Instant,
}

/// Scrapes `GET {path_prefix}/metrics` from `peer` (sending `Host: {authority}`) over the
/// pooled `connector`, and parses it with [`parse`]. The whole exchange (connect, request,
/// body) is bounded by `timeout`. On success the connection goes back to the pool.
///
/// Fails, with a message for the log (it may name the path, never a client's data), on connect
/// or I/O errors, a timeout, a status other than 200, a body over [`MAX_METRICS_BODY`], or a
/// scrape with neither vLLM request gauge. A failure says nothing about health: the caller
/// keeps or ages its previous report and tries again next round.
pub async fn fetch(
    connector: &Connector,
    peer: &HttpPeer,
    authority: &str,
    path_prefix: &str,
    timeout: Duration,
) -> Result<LoadReport, String> {
    // A prefix is stored without a trailing slash; trimming keeps `/v/` from making `/v//metrics`.
    let path = format!("{}{METRICS_PATH}", path_prefix.trim_end_matches('/'));
    let mut req = RequestHeader::build("GET", path.as_bytes(), Some(3))
        .map_err(|e| format!("bad request for {path}: {e}"))?;
    req.insert_header("host", authority)
        .map_err(|e| format!("bad authority: {e}"))?;
    let _ = req.insert_header("user-agent", "modelgate-load");
    // The classic text format: `prometheus_client` answers OpenMetrics only when asked, and
    // compresses only when `accept-encoding` allows it, which we never send.
    let _ = req.insert_header("accept", "text/plain");
    let keep = oneshot::Body::Keep(MAX_METRICS_BODY);
    let answer = oneshot::exchange(connector, peer, req, None, keep, timeout)
        .await
        .map_err(|e| format!("{path}: {e}"))?;
    if answer.status != 200 {
        return Err(format!("{path} answered HTTP {}", answer.status));
    }
    parse(&answer.body)
        .map(|metrics| metrics.at(Instant::now()))
        .ok_or_else(|| format!("scrape has neither {RUNNING_METRIC} nor {WAITING_METRIC}"))
}

/// Reads vLLM's load gauges from a Prometheus text exposition (format 0.0.4; OpenMetrics and
/// Prometheus 3's quoted UTF-8 names are read too).
///
/// `running` and `waiting` are summed over their label sets (one per engine, or per served
/// model); the KV-cache usage is the maximum over its label sets, from
/// [`KV_CACHE_METRIC`] if present, else [`GPU_CACHE_METRIC`]. Samples that are `NaN`,
/// infinite or negative are ignored, as are comments, other metrics (histogram series included)
/// and malformed lines. Returns `None` when neither `running` nor `waiting` has a usable
/// sample. Never panics, whatever the bytes.
pub fn parse(text: &[u8]) -> Option<LoadMetrics> {
    let mut totals = Totals::default();
    for line in text.split(|&b| b == b'\n') {
        if let Some((gauge, value)) = sample(line) {
            totals.add(gauge, value);
        } else if let Some(tokens) = cache_config_tokens(line) {
            totals.kv_tokens = Some(totals.kv_tokens.unwrap_or(0).saturating_add(tokens));
        }
    }
    totals.finish()
}

/// `num_gpu_blocks` × `block_size` from a `vllm:cache_config_info{...} 1.0` line.
fn cache_config_tokens(line: &[u8]) -> Option<u64> {
    let rest = trim_start(line).strip_prefix(CACHE_CONFIG_METRIC.as_bytes())?;
    let labels = trim_start(rest).strip_prefix(b"{")?;
    let label = |name: &[u8]| -> Option<u64> {
        let mut at = 0;
        // `name="digits"`, at the start or after a comma (not the tail of a longer name).
        while let Some(found) = memchr::memmem::find(&labels[at..], name) {
            let start = at + found;
            at = start + name.len();
            let before_ok = start == 0 || matches!(labels[start - 1], b',' | b' ' | b'{');
            if let (true, Some(value)) = (before_ok, labels[at..].strip_prefix(b"=\"")) {
                let digits = value.iter().take_while(|b| b.is_ascii_digit()).count();
                return std::str::from_utf8(&value[..digits]).ok()?.parse().ok();
            }
        }
        None
    };
    label(b"num_gpu_blocks")?.checked_mul(label(b"block_size")?)
}

/// The gauges [`parse`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gauge {
    Running,
    Waiting,
    KvCache,
    GpuCache,
}

impl Gauge {
    fn from_name(name: &[u8]) -> Option<Gauge> {
        match name {
            n if n == RUNNING_METRIC.as_bytes() => Some(Gauge::Running),
            n if n == WAITING_METRIC.as_bytes() => Some(Gauge::Waiting),
            n if n == KV_CACHE_METRIC.as_bytes() => Some(Gauge::KvCache),
            n if n == GPU_CACHE_METRIC.as_bytes() => Some(Gauge::GpuCache),
            _ => None,
        }
    }
}

/// Running sums and maxima; `None` until a usable sample arrives.
#[derive(Debug, Default)]
struct Totals {
    running: Option<f64>,
    waiting: Option<f64>,
    kv_cache: Option<f64>,
    gpu_cache: Option<f64>,
    kv_tokens: Option<u64>,
}

impl Totals {
    fn add(&mut self, gauge: Gauge, value: f64) {
        if !value.is_finite() || value < 0.0 {
            return;
        }
        // Adding +0.0 turns -0.0 into +0.0, so no report ever shows a negative zero.
        let value = value + 0.0;
        let sum = |total: &mut Option<f64>| {
            // Capped so that many huge samples cannot overflow to +Inf.
            *total = Some((total.unwrap_or(0.0) + value).min(f64::MAX));
        };
        let max = |top: &mut Option<f64>| *top = Some(top.map_or(value, |t| t.max(value)));
        match gauge {
            Gauge::Running => sum(&mut self.running),
            Gauge::Waiting => sum(&mut self.waiting),
            Gauge::KvCache => max(&mut self.kv_cache),
            Gauge::GpuCache => max(&mut self.gpu_cache),
        }
    }

    fn finish(self) -> Option<LoadMetrics> {
        if self.running.is_none() && self.waiting.is_none() {
            return None;
        }
        Some(LoadMetrics {
            running: self.running.unwrap_or(0.0),
            waiting: self.waiting.unwrap_or(0.0),
            kv_cache_usage: self.kv_cache.or(self.gpu_cache).map(|u| u.min(1.0)),
            kv_cache_tokens: self.kv_tokens,
        })
    }
}

/// One exposition line as `(gauge, value)`, or `None` for blanks, comments, other metrics and
/// anything malformed. Grammar: `name [{labels}] value [timestamp] [# exemplar]`, or
/// `{"name", labels} value ...` for a quoted name.
fn sample(line: &[u8]) -> Option<(Gauge, f64)> {
    let line = trim_start(line);
    let (gauge, rest) = match line.first()? {
        b'#' => return None,
        b'{' => (Gauge::from_name(quoted_name(line)?)?, skip_labels(line)?),
        _ => {
            let end = line
                .iter()
                .position(|&b| b == b'{' || is_blank(b))
                .unwrap_or(line.len());
            let (name, rest) = line.split_at(end);
            // Match the name before looking at labels: most lines (histogram buckets) are
            // other metrics, and this skips them without scanning their label sets.
            let gauge = Gauge::from_name(name)?;
            let rest = trim_start(rest);
            let rest = if rest.first() == Some(&b'{') {
                skip_labels(rest)?
            } else {
                rest
            };
            (gauge, rest)
        }
    };
    let rest = trim_start(rest);
    let end = rest.iter().position(|&b| is_blank(b)).unwrap_or(rest.len());
    // Rust's float syntax covers Prometheus' (`1e+01`, `NaN`, `+Inf`, `-Inf`), all of which
    // `add` then filters; Go's hex floats are not emitted by Python and are skipped.
    let value = std::str::from_utf8(&rest[..end])
        .ok()?
        .parse::<f64>()
        .ok()?;
    Some((gauge, value))
}

/// The metric name of a line that starts `{"name"` followed by `,` or `}` (Prometheus 3's
/// quoted form for names outside the classic charset). Escapes are kept as written: none of
/// the names we look for contains a character that needs one.
fn quoted_name(line: &[u8]) -> Option<&[u8]> {
    let inner = trim_start(line.get(1..)?);
    let quoted = inner.strip_prefix(b"\"")?;
    let mut escaped = false;
    let close = quoted.iter().position(|&b| {
        let is_close = !escaped && b == b'"';
        escaped = !escaped && b == b'\\';
        is_close
    })?;
    let after = trim_start(&quoted[close + 1..]);
    // A quoted *label* name is followed by `=`: then the line has no metric name at all.
    matches!(after.first(), Some(b',' | b'}')).then_some(&quoted[..close])
}

/// What follows the label set that `s` starts with (`s[0] == b'{'`), or `None` if it never
/// closes. Quoted values may hold `}`, `,`, `{`, `#` and escaped quotes.
fn skip_labels(s: &[u8]) -> Option<&[u8]> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &b) in s.iter().enumerate().skip(1) {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quotes = false;
            }
        } else if b == b'"' {
            in_quotes = true;
        } else if b == b'}' {
            return s.get(i + 1..);
        }
    }
    None
}

/// Blanks between tokens; `\r` too, so CRLF expositions read the same.
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r')
}

fn trim_start(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| !is_blank(b)).unwrap_or(s.len());
    &s[start..]
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::mock::{MockConfig, MockLoad, MockServer};

    /// A vLLM v1 scrape (two data-parallel engines) trimmed to one of each kind of line: info
    /// gauges, counters with `_created`, histograms, and both KV-cache names.
    const V1_TWO_ENGINES: &str = r#"# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 12015.0
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 4.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:num_requests_waiting{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage. DEPRECATED: Use vllm:kv_cache_usage_perc instead.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.9
vllm:gpu_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.9
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.125
vllm:kv_cache_usage_perc{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.25
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.5e+04
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 1.7462e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="meta-llama/Llama-3.1-8B-Instruct"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 57.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 57.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.2
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",enable_prefix_caching="True",engine="0",gpu_memory_utilization="0.9",num_gpu_blocks="27845",prefix_caching_hash_algo="builtin"} 1.0
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="meta-llama/Llama-3.1-8B-Instruct"} 50.0
"#;

    /// vLLM v0 (`vllm/engine/metrics.py`): one label set, only the old KV-cache name, and the
    /// long-gone `num_requests_swapped`.
    const V0_ONE_MODEL: &str = r#"# HELP vllm:num_requests_running Number of requests currently running on GPU.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="/models/llama-2-7b"} 5.0
# HELP vllm:num_requests_swapped Number of requests swapped to CPU.
# TYPE vllm:num_requests_swapped gauge
vllm:num_requests_swapped{model_name="/models/llama-2-7b"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="/models/llama-2-7b"} 7.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="/models/llama-2-7b"} 0.4375
# HELP vllm:cpu_cache_usage_perc CPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:cpu_cache_usage_perc gauge
vllm:cpu_cache_usage_perc{model_name="/models/llama-2-7b"} 0.0
"#;

    fn load(running: f64, waiting: f64, kv_cache_usage: Option<f64>) -> Option<LoadMetrics> {
        Some(LoadMetrics {
            running,
            waiting,
            kv_cache_usage,
            kv_cache_tokens: None,
        })
    }

    #[test]
    fn v1_sums_engines_and_takes_the_fullest_kv_cache() {
        // The deprecated gpu_cache name (0.9) loses to kv_cache_usage_perc when both exist.
        let parsed = parse(V1_TWO_ENGINES.as_bytes()).unwrap();
        assert_eq!(
            Some(LoadMetrics {
                kv_cache_tokens: None,
                ..parsed
            }),
            load(7.0, 2.0, Some(0.25))
        );
        assert_eq!(parsed.kv_cache_tokens, Some(27_845 * 16));
    }

    #[test]
    fn cache_config_info_gives_the_kv_cache_size() {
        let line = |labels: &str| {
            format!("vllm:num_requests_running 1\nvllm:cache_config_info{{{labels}}} 1.0\n")
        };
        let tokens = |labels: &str| parse(line(labels).as_bytes()).unwrap().kv_cache_tokens;
        assert_eq!(
            tokens(r#"block_size="16",num_gpu_blocks="29205""#),
            Some(467_280)
        );
        assert_eq!(
            tokens(r#"num_gpu_blocks="100", block_size="32""#),
            Some(3_200)
        );
        // A longer label name ending in the same words is not the one.
        assert_eq!(tokens(r#"max_num_gpu_blocks="7",block_size="16""#), None);
        assert_eq!(tokens(r#"num_gpu_blocks="None",block_size="16""#), None);
        assert_eq!(tokens(r#"block_size="16""#), None);
    }

    #[test]
    fn v0_reads_the_old_kv_cache_name() {
        assert_eq!(parse(V0_ONE_MODEL.as_bytes()), load(5.0, 7.0, Some(0.4375)));
    }

    #[test]
    fn lines_are_read_leniently_and_bad_ones_skipped() {
        let cases: &[(&str, &str, Option<LoadMetrics>)] = &[
            ("empty", "", None),
            ("comments only", "# HELP x\n# TYPE x gauge\n", None),
            ("cache alone", "vllm:kv_cache_usage_perc 0.5\n", None),
            (
                "no labels",
                "vllm:num_requests_running 2\n",
                load(2.0, 0.0, None),
            ),
            (
                "empty labels",
                "vllm:num_requests_waiting{} 3\n",
                load(0.0, 3.0, None),
            ),
            (
                "no trailing newline",
                "vllm:num_requests_running 2",
                load(2.0, 0.0, None),
            ),
            (
                "exponents",
                "vllm:num_requests_running 1e+01\nvllm:num_requests_waiting 2.5E-1\n",
                load(10.0, 0.25, None),
            ),
            (
                "NaN, infinities and negatives are skipped",
                "vllm:num_requests_running{engine=\"0\"} NaN\n\
                 vllm:num_requests_running{engine=\"1\"} +Inf\n\
                 vllm:num_requests_running{engine=\"2\"} -1\n\
                 vllm:num_requests_running{engine=\"3\"} 4\n\
                 vllm:kv_cache_usage_perc NaN\n",
                load(4.0, 0.0, None),
            ),
            (
                "only NaN is absent",
                "vllm:num_requests_running NaN\nvllm:num_requests_waiting -Inf\n",
                None,
            ),
            (
                "quoted braces, commas, escapes and newlines in labels",
                "vllm:num_requests_running{model_name=\"a}b{c,d=\\\"e\\\" \\\\\\n\",x=\"}\"} 3\n\
                 vllm:num_requests_waiting{model_name=\"\\\\\"} 1\n",
                load(3.0, 1.0, None),
            ),
            (
                "tabs, CRLF, leading blanks and a space before the labels",
                "\tvllm:num_requests_running\t{a=\"b\"}\t6\r\n  vllm:num_requests_waiting 1 \r\n",
                load(6.0, 1.0, None),
            ),
            (
                "timestamps, exemplars and the OpenMetrics EOF",
                "vllm:num_requests_running{a=\"b\"} 2 1712345678901\n\
                 vllm:num_requests_waiting 1 # {trace_id=\"abc\"} 1.0 1712345678.9\n# EOF\n",
                load(2.0, 1.0, None),
            ),
            (
                "Prometheus 3 quoted names",
                "{\"vllm:num_requests_running\",engine=\"0\"} 2\n\
                 { \"vllm:num_requests_waiting\" } 5\n\
                 {\"vllm:num_requests_running\"=\"not a name\"} 100\n",
                load(2.0, 5.0, None),
            ),
            (
                "longer names and prefixes are other metrics",
                "vllm:num_requests_running_total 9\nvllm:num_requests_running_bucket{le=\"1\"} 9\n\
                 xvllm:num_requests_running 9\nvllm:num_requests 9\n\
                 vllm:num_requests_waiting 1\n",
                load(0.0, 1.0, None),
            ),
            (
                "malformed lines",
                "vllm:num_requests_running{a=\"unterminated} 9\n\
                 vllm:num_requests_running{a=\"b\" 9\n\
                 vllm:num_requests_running\n\
                 vllm:num_requests_running{} \n\
                 vllm:num_requests_running 0x10\n\
                 vllm:num_requests_running 1,5\n\
                 vllm:num_requests_running \u{fffd}\n\
                 vllm:num_requests_waiting 2\n",
                load(0.0, 2.0, None),
            ),
            (
                "a KV-cache fraction over 1 is capped",
                "vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 3.5\n",
                load(1.0, 0.0, Some(1.0)),
            ),
            (
                "negative zero reads as zero",
                "vllm:num_requests_running -0.0\nvllm:gpu_cache_usage_perc -0\n",
                load(0.0, 0.0, Some(0.0)),
            ),
            (
                "sums cannot overflow",
                "vllm:num_requests_running{e=\"0\"} 1.7e308\n\
                 vllm:num_requests_running{e=\"1\"} 1.7e308\n",
                load(f64::MAX, 0.0, None),
            ),
        ];
        for (name, text, want) in cases {
            assert_eq!(parse(text.as_bytes()), *want, "{name}");
        }
    }

    #[test]
    fn invalid_utf8_elsewhere_does_not_hide_the_gauges() {
        let mut text = b"\xff\xfe{\"\xc3\x28\n".to_vec();
        text.extend_from_slice(V0_ONE_MODEL.as_bytes());
        assert_eq!(parse(&text), load(5.0, 7.0, Some(0.4375)));
    }

    #[test]
    fn report_keeps_the_metrics_and_the_time() {
        let now = Instant::now();
        let report = LoadMetrics {
            running: 1.0,
            waiting: 2.0,
            kv_cache_usage: Some(0.5),
            kv_cache_tokens: None,
        }
        .at(now);
        assert_eq!(
            report,
            LoadReport {
                running: 1.0,
                waiting: 2.0,
                kv_cache_usage: Some(0.5),
                kv_cache_tokens: None,
                at: now,
            }
        );
    }

    /// Prometheus label-value escaping.
    fn escape(value: &str) -> String {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    /// One generated sample: which metric (0-3 ours, 4+ another), label values, value.
    type Sample = (usize, Vec<String>, u32);

    fn render(samples: &[Sample]) -> String {
        let names = [
            RUNNING_METRIC,
            WAITING_METRIC,
            KV_CACHE_METRIC,
            GPU_CACHE_METRIC,
            "vllm:num_requests_running_bucket",
            "vllm:e2e_request_latency_seconds_sum",
        ];
        let mut out = String::new();
        for (metric, labels, value) in samples {
            let name = names[*metric % names.len()];
            out.push_str(&format!("# HELP {name} help with {{\"quotes\"}}\n"));
            let labels: Vec<String> = labels
                .iter()
                .enumerate()
                .map(|(i, v)| format!("l{i}=\"{}\"", escape(v)))
                .collect();
            out.push_str(&format!("{name}{{{}}} {value}.0\n", labels.join(",")));
        }
        out
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_and_stay_in_range(
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            if let Some(m) = parse(&bytes) {
                prop_assert!(m.running.is_finite() && m.running >= 0.0);
                prop_assert!(m.waiting.is_finite() && m.waiting >= 0.0);
                if let Some(kv) = m.kv_cache_usage {
                    prop_assert!((0.0..=1.0).contains(&kv));
                }
            }
        }

        #[test]
        fn mangled_scrapes_never_panic(
            cut in 0..V1_TWO_ENGINES.len(),
            junk in "[{}\",=\\\\ \t\r\na-z:_0-9.#+-]{0,40}",
        ) {
            let mut text = V1_TWO_ENGINES.as_bytes()[..cut].to_vec();
            text.extend_from_slice(junk.as_bytes());
            text.extend_from_slice(&V1_TWO_ENGINES.as_bytes()[cut..]);
            let _ = parse(&text);
        }

        #[test]
        fn well_formed_scrapes_parse_exactly(
            samples in proptest::collection::vec(
                (0usize..6, proptest::collection::vec(".{0,12}", 0..3), 0u32..1000),
                0..20,
            ),
        ) {
            let text = render(&samples);
            let sum = |m: usize| samples.iter().filter(move |s| s.0 == m).map(|s| f64::from(s.2));
            let (running, waiting) = (sum(0).sum::<f64>(), sum(1).sum::<f64>());
            let has = |m: usize| samples.iter().any(|s| s.0 == m);
            let kv = sum(2)
                .reduce(f64::max)
                .or_else(|| sum(3).reduce(f64::max))
                .map(|v| v.min(1.0));
            let want = (has(0) || has(1)).then_some(LoadMetrics {
                running,
                waiting,
                kv_cache_usage: kv,
                kv_cache_tokens: None,
            });
            prop_assert_eq!(parse(text.as_bytes()), want, "{}", text);
        }
    }

    fn peer(addr: SocketAddr) -> HttpPeer {
        HttpPeer::new(addr, false, String::new())
    }

    #[tokio::test]
    async fn fetch_reads_derived_then_overridden_load_from_a_mock() {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("start");
        let connector = Connector::new(None);
        let peer = peer(server.addr());
        let authority = server.addr().to_string();
        let timeout = Duration::from_secs(5);

        let before = Instant::now();
        let idle = fetch(&connector, &peer, &authority, "", timeout)
            .await
            .expect("scrape");
        assert_eq!((idle.running, idle.waiting), (0.0, 0.0));
        assert_eq!(idle.kv_cache_usage, Some(0.0));
        assert!(idle.at >= before);

        server.set_load(Some(MockLoad {
            running: 12,
            waiting: 30,
            kv_cache_usage: 0.75,
        }));
        let busy = fetch(&connector, &peer, &authority, "/", timeout)
            .await
            .expect("scrape");
        assert_eq!(
            (busy.running, busy.waiting, busy.kv_cache_usage),
            (12.0, 30.0, Some(0.75))
        );
        assert_eq!(server.stats().metrics_requests(), 2);
    }

    #[tokio::test]
    async fn fetch_fails_on_a_non_200_or_a_silent_backend() {
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("start");
        let connector = Connector::new(None);
        let peer_ = peer(server.addr());
        let authority = server.addr().to_string();
        let err = fetch(
            &connector,
            &peer_,
            &authority,
            "/v1",
            Duration::from_secs(5),
        )
        .await
        .expect_err("404");
        assert!(err.contains("/v1/metrics") && err.contains("404"), "{err}");

        // A server that accepts and never answers: the timeout ends the scrape.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let silent = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let timeout = Duration::from_millis(100);
        let err = fetch(&connector, &peer(silent), "x", "", timeout)
            .await
            .expect_err("timeout");
        assert!(err.contains("timed out"), "{err}");
        hold.abort();
    }

    #[tokio::test]
    async fn fetch_rejects_a_scrape_without_request_gauges() {
        // /v1/models answers 200 with JSON: a 200 that is not a vLLM scrape.
        let server = MockServer::start(MockConfig::default())
            .await
            .expect("start");
        let connector = Connector::new(None);
        let authority = server.addr().to_string();
        // `{prefix}/metrics` with prefix "/v1/models?x=" asks for /v1/models (query ignored).
        let err = fetch(
            &connector,
            &peer(server.addr()),
            &authority,
            "/v1/models?x=",
            Duration::from_secs(5),
        )
        .await
        .expect_err("not a scrape");
        assert!(err.contains(RUNNING_METRIC), "{err}");
    }
}
