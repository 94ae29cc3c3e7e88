//! In-repo mock of vLLM's OpenAI-compatible HTTP server, used by integration tests (in the
//! test's own tokio runtime), the demo (`modelgate-mock` binary) and load tests.
//!
//! It is test infrastructure, not part of the gateway's request path: nothing in the gateway may
//! depend on it. It must stay cheap per request (no GPU work is simulated beyond the configured
//! sleeps) and must never sleep except to simulate latency or a failure under test.
//!
//! What it serves (shapes follow vLLM's `vllm/entrypoints/openai` protocol):
//! - `GET /health` (200, empty), `GET /version`, `GET /v1/models`, `GET /metrics` (Prometheus
//!   text with vLLM's metric names; the load it reports follows the `POST`s in flight, or a
//!   [`MockLoad`] set to make the backend look busy);
//! - `POST /v1/chat/completions` and `POST /v1/completions`, streaming (SSE) or not;
//! - `POST /v1/embeddings`;
//! - any other `POST` path answers `{"object":"mock","path":..,"model":..}` once the model is
//!   known, so pass-through of arbitrary endpoints can be tested.
//!
//! With a [`SimConfig`] ([`MockServer::start_sim`], `modelgate-mock --sim`) a server simulates a
//! vLLM engine instead of answering after fixed delays: continuous batching, prefix caching,
//! preemption and a step-time model decide when each token is produced; it also serves
//! `POST /reset_prefix_cache`, SGLang's `/model_info` and `/server_info`, and the engine's own
//! `/metrics`. See [`sim`].
//!
//! [`dns::MockDns`] is a small authoritative DNS server (A, AAAA, SRV; runtime changes, TTL,
//! failure modes) for the gateway's DNS discovery.
//!
//! Every response carries `x-mock-backend`; every `POST` response also carries
//! `x-mock-body-sha256` and `x-mock-body-len` of the exact request body received, and echoes
//! `x-request-id`. [`FailMode`] injects failures into `POST` handling only.

pub mod dns;
mod handler;
mod responses;
mod server;
pub mod sim;
mod stats;
mod stream;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use server::MockServer;
pub use sim::{SimConfig, StepCost};
pub use stats::MockStats;
pub use stream::MockBodyError;

/// Default served model, also the `modelgate-mock` binary's default.
pub const DEFAULT_MODEL: &str = "mistral-7b";
/// vLLM's `--max-model-len` for a small model; only reported, never enforced.
pub const DEFAULT_MAX_MODEL_LEN: u32 = 4096;
/// Completion tokens generated when the request does not cap them with `max_tokens`.
pub const DEFAULT_TOKENS: usize = 16;

/// Behaviour of one mock backend. Everything here can be read per request; the knobs that tests
/// flip at runtime have setters on [`MockServer`].
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Backend name, returned in the `x-mock-backend` header of every response.
    pub name: String,
    /// Served model ids (vLLM `--served-model-name`). The first is the default for requests
    /// without a `model` and the `model_name` label of `/metrics`.
    pub models: Vec<String>,
    /// `root` of every model in `/v1/models`; `None` means the model id itself.
    pub root: Option<String>,
    /// `max_model_len` reported in `/v1/models`. Default 4096. Not enforced on prompts, so that
    /// large-body tests get a 200.
    pub max_model_len: u32,
    /// Time to first token: delay before the response head of a non-stream answer, and before
    /// the first SSE chunk of a stream (whose head is sent at once, as uvicorn does).
    pub ttft: Duration,
    /// Inter-token latency: delay between two token chunks of a stream.
    pub itl: Duration,
    /// Completion tokens to generate (default 16). A request's `max_tokens` (or
    /// `max_completion_tokens`) caps it, and then `finish_reason` is `"length"`, else `"stop"`.
    pub tokens: usize,
    /// Failure injected into `POST` handling.
    pub fail: FailMode,
    /// Load reported by `/metrics` instead of the one derived from the `POST`s in flight, to
    /// make this backend look busy (or idle) to a load-aware gateway. `None` (the default)
    /// reports the real in-flight count.
    pub load: Option<MockLoad>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            name: "mock".to_owned(),
            models: vec![DEFAULT_MODEL.to_owned()],
            root: None,
            max_model_len: DEFAULT_MAX_MODEL_LEN,
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens: DEFAULT_TOKENS,
            fail: FailMode::None,
            load: None,
        }
    }
}

/// A simulated vLLM scheduler state, reported by `GET /metrics` in place of the derived one.
/// It changes only what `/metrics` says: `POST`s are served as usual and [`MockStats`] still
/// counts the real ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MockLoad {
    /// `vllm:num_requests_running`: requests in the engine's running batch.
    pub running: u64,
    /// `vllm:num_requests_waiting`: requests queued by the scheduler.
    pub waiting: u64,
    /// `vllm:kv_cache_usage_perc` and `vllm:gpu_cache_usage_perc`: a fraction, 1.0 = full.
    /// Rendered as given (`NaN` and infinities in Prometheus spelling), so tests can also feed
    /// a gateway nonsense.
    pub kv_cache_usage: f64,
}

/// A failure injected into every `POST` (generation, embeddings and pass-through endpoints).
/// `GET /health`, `/v1/models` and `/metrics` are never affected. The body is always read
/// first, so the request is counted and hashed in [`MockStats`] whatever the mode.
#[derive(Clone, Debug, PartialEq)]
pub enum FailMode {
    /// Behave normally.
    None,
    /// Answer this status with vLLM's error JSON (`{"error":{"message","type","param","code"}}`).
    Status(u16),
    /// Accept the request and never answer. Counts as aborted when the client goes away.
    Hang,
    /// Stream this many SSE chunks, then drop the connection (no `data: [DONE]`; never more
    /// chunks than the stream has before `[DONE]`). A non-stream answer sends its head with the
    /// full `content-length`, half the body, then drops the connection.
    CloseMidStream {
        /// SSE chunks (`data:` events) sent before the connection is dropped.
        after_chunks: usize,
    },
    /// Like [`FailMode::CloseMidStream`] but the connection stays open and nothing more is sent.
    /// Counts as aborted when the client goes away.
    HangMidStream {
        /// SSE chunks (`data:` events) sent before going silent.
        after_chunks: usize,
    },
}
