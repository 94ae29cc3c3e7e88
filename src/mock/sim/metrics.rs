//! `GET /metrics` of one simulated vLLM server: vLLM v1's metric names, label set
//! (`model_name`, `engine="0"`), histogram buckets and `vllm:cache_config_info`
//! (`vllm/v1/metrics/loggers.py`), plus the simulator's own timing counters.
//!
//! Written by the engine task after each step (atomics), read by the HTTP handler at scrape
//! time. All durations are simulated seconds. Must not be written from anywhere but the engine.

use prometheus::{
    Counter, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use tracing::warn;

use super::SimConfig;

/// `vllm:time_to_first_token_seconds` buckets, as vLLM v1 defines them.
const TTFT_BUCKETS: [f64; 22] = [
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
/// `vllm:e2e_request_latency_seconds` buckets, as vLLM v1 defines them.
const LATENCY_BUCKETS: [f64; 21] = [
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];
/// vLLM's `FinishReason` values, each a `vllm:request_success_total` series from the start.
pub(crate) const FINISH_REASONS: [&str; 3] = ["stop", "length", "abort"];

/// The metric handles of one simulated server.
pub(crate) struct SimMetrics {
    registry: Registry,
    pub(crate) running: Gauge,
    pub(crate) waiting: Gauge,
    pub(crate) kv_usage: Gauge,
    pub(crate) gpu_cache_usage: Gauge,
    pub(crate) prefix_queries: IntCounter,
    pub(crate) prefix_hits: IntCounter,
    pub(crate) preemptions: IntCounter,
    pub(crate) prompt_tokens: IntCounter,
    pub(crate) generation_tokens: IntCounter,
    pub(crate) success: IntCounterVec,
    pub(crate) ttft: Histogram,
    pub(crate) e2e: Histogram,
    pub(crate) steps: IntCounter,
    pub(crate) busy_seconds: Counter,
    pub(crate) late_steps: IntCounter,
    pub(crate) late_seconds: Counter,
}

/// Labels of every vLLM series: the served model and the data-parallel engine index.
fn vllm_opts(name: &str, help: &str, model: &str) -> Opts {
    Opts::new(name, help)
        .const_label("model_name", model)
        .const_label("engine", "0")
}

impl SimMetrics {
    /// Registers every series for a server serving `model` with `config`.
    pub(crate) fn new(model: &str, config: &SimConfig) -> Result<SimMetrics, prometheus::Error> {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| vllm_opts(name, help, model);
        let gauge = |name: &str, help: &str| -> Result<Gauge, prometheus::Error> {
            let gauge = Gauge::with_opts(opts(name, help))?;
            registry.register(Box::new(gauge.clone()))?;
            Ok(gauge)
        };
        let counter = |o: Opts| -> Result<IntCounter, prometheus::Error> {
            let counter = IntCounter::with_opts(o)?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        // The simulator's own counters: no vLLM labels.
        let seconds = |name: &str, help: &str| -> Result<Counter, prometheus::Error> {
            let counter = Counter::with_opts(Opts::new(name, help))?;
            registry.register(Box::new(counter.clone()))?;
            Ok(counter)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let o = HistogramOpts::from(opts(name, help)).buckets(buckets.to_vec());
            let histogram = Histogram::with_opts(o)?;
            registry.register(Box::new(histogram.clone()))?;
            Ok::<_, prometheus::Error>(histogram)
        };
        let success = IntCounterVec::new(
            opts(
                "vllm:request_success_total",
                "Count of successfully processed requests.",
            ),
            &["finished_reason"],
        )?;
        registry.register(Box::new(success.clone()))?;
        for reason in FINISH_REASONS {
            success.with_label_values(&[reason]);
        }
        let info = Gauge::with_opts(cache_config_info(config))?;
        info.set(1.0);
        registry.register(Box::new(info))?;
        Ok(SimMetrics {
            running: gauge(
                "vllm:num_requests_running",
                "Number of requests in model execution batches.",
            )?,
            waiting: gauge(
                "vllm:num_requests_waiting",
                "Number of requests waiting to be processed.",
            )?,
            kv_usage: gauge(
                "vllm:kv_cache_usage_perc",
                "KV-cache usage. 1 means 100 percent usage.",
            )?,
            gpu_cache_usage: gauge(
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage. \
                 DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            )?,
            prefix_queries: counter(opts(
                "vllm:prefix_cache_queries_total",
                "Prefix cache queries, in terms of number of queried tokens.",
            ))?,
            prefix_hits: counter(opts(
                "vllm:prefix_cache_hits_total",
                "Prefix cache hits, in terms of number of cached tokens.",
            ))?,
            preemptions: counter(opts(
                "vllm:num_preemptions_total",
                "Cumulative number of preemption from the engine.",
            ))?,
            prompt_tokens: counter(opts(
                "vllm:prompt_tokens_total",
                "Number of prefill tokens processed.",
            ))?,
            generation_tokens: counter(opts(
                "vllm:generation_tokens_total",
                "Number of generation tokens processed.",
            ))?,
            success,
            ttft: histogram(
                "vllm:time_to_first_token_seconds",
                "Histogram of time to first token in seconds.",
                &TTFT_BUCKETS,
            )?,
            e2e: histogram(
                "vllm:e2e_request_latency_seconds",
                "Histogram of e2e request latency in seconds.",
                &LATENCY_BUCKETS,
            )?,
            steps: counter(Opts::new(
                "modelgate_mock_sim_steps_total",
                "Engine steps run by the simulator.",
            ))?,
            busy_seconds: seconds(
                "modelgate_mock_sim_busy_seconds_total",
                "Simulated seconds the engine spent running steps.",
            )?,
            late_steps: counter(Opts::new(
                "modelgate_mock_sim_late_steps_total",
                "Steps that started late because the host woke the engine late.",
            ))?,
            late_seconds: seconds(
                "modelgate_mock_sim_late_seconds_total",
                "Simulated seconds lost to late wake-ups (the engine stalled, not sped up).",
            )?,
            registry,
        })
    }

    /// The Prometheus text of every series.
    pub(crate) fn render(&self) -> String {
        let mut out = Vec::with_capacity(8 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(error = %e, "simulated metrics could not be rendered");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// `vllm:cache_config_info`: vLLM's `CacheConfig.metrics_info()` labels for this server.
fn cache_config_info(config: &SimConfig) -> Opts {
    Opts::new(
        "vllm:cache_config_info",
        "Information of the LLMEngine CacheConfig",
    )
    .const_label("block_size", config.block_size.to_string())
    .const_label("cache_dtype", "auto")
    .const_label("calculate_kv_scales", "False")
    .const_label("cpu_offload_gb", "0")
    .const_label("enable_prefix_caching", "True")
    .const_label("engine", "0")
    .const_label("gpu_memory_utilization", "0.9")
    .const_label("is_attention_free", "False")
    .const_label("num_cpu_blocks", "None")
    .const_label("num_gpu_blocks", config.kv_blocks.to_string())
    .const_label("num_gpu_blocks_override", "None")
    .const_label("prefix_caching_hash_algo", "builtin")
    .const_label("sliding_window", "None")
    .const_label("swap_space", "4")
}
