//! Renders the mock's response bodies in vLLM's shapes: error JSON, `/v1/models`, `/metrics`,
//! chat/text completions (whole and as SSE chunks) and embeddings.
//!
//! Pure functions of their inputs, run per mock request. Key order follows vLLM's pydantic
//! models so byte-level comparisons against captures stay meaningful. Must not do I/O.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use super::{MockConfig, MockLoad};

/// Seconds since the Unix epoch, as vLLM's `created` fields.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// 32 random lowercase hex digits, like vLLM's `random_uuid()`.
pub(crate) fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// `s` as a JSON string literal, quotes included.
pub(crate) fn json_string(s: &str) -> String {
    // Serializing a `str` cannot fail: there is no map key or non-finite float involved.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorInfo<'a>,
}

#[derive(Serialize)]
struct ErrorInfo<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: u16,
}

/// vLLM's `ErrorResponse`: `{"error":{"message","type","param","code"}}`.
pub(crate) fn error_json(status: u16, kind: &str, message: &str, param: Option<&str>) -> Bytes {
    let body = ErrorBody {
        error: ErrorInfo {
            message,
            kind,
            param,
            code: status,
        },
    };
    serde_json::to_vec(&body).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// The `type` vLLM (or, where vLLM has none, OpenAI) uses for an error status.
pub(crate) fn error_kind(status: u16) -> &'static str {
    match status {
        400 => "BadRequestError",
        401 => "AuthenticationError",
        404 => "NotFoundError",
        413 => "RequestTooLargeError",
        429 => "RateLimitError",
        501 => "NotImplementedError",
        503 => "ServiceUnavailableError",
        s if s < 500 => "BadRequestError",
        _ => "InternalServerError",
    }
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelCard<'a>>,
}

#[derive(Serialize)]
struct ModelCard<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    root: &'a str,
    parent: Option<&'a str>,
    max_model_len: u32,
    permission: [ModelPermission; 1],
}

/// vLLM's `ModelPermission` with its defaults.
#[derive(Serialize)]
struct ModelPermission {
    id: String,
    object: &'static str,
    created: u64,
    allow_create_engine: bool,
    allow_sampling: bool,
    allow_logprobs: bool,
    allow_search_indices: bool,
    allow_view: bool,
    allow_fine_tuning: bool,
    organization: &'static str,
    group: Option<&'static str>,
    is_blocking: bool,
}

/// `GET /v1/models` body.
pub(crate) fn models_json(cfg: &MockConfig) -> Bytes {
    let created = unix_now();
    let data = cfg
        .models
        .iter()
        .map(|id| ModelCard {
            id,
            object: "model",
            created,
            owned_by: "vllm",
            root: cfg.root.as_deref().unwrap_or(id),
            parent: None,
            max_model_len: cfg.max_model_len,
            permission: [ModelPermission {
                id: format!("modelperm-{}", random_hex()),
                object: "model_permission",
                created,
                allow_create_engine: false,
                allow_sampling: true,
                allow_logprobs: true,
                allow_search_indices: false,
                allow_view: true,
                allow_fine_tuning: false,
                organization: "*",
                group: None,
                is_blocking: false,
            }],
        })
        .collect();
    let list = ModelList {
        object: "list",
        data,
    };
    serde_json::to_vec(&list).map_or_else(|_| Bytes::new(), Bytes::from)
}

/// Gauges and counters of `GET /metrics`, named as vLLM names them.
pub(crate) struct MetricValues {
    /// Scheduler state: derived from the `POST`s in flight, or the configured override.
    pub(crate) load: MockLoad,
    pub(crate) prompt_tokens: u64,
    pub(crate) generation_tokens: u64,
}

/// `GET /metrics` body in the Prometheus text format, as `prometheus_client` renders vLLM's
/// metrics (float samples, counters named with `_total` in `# HELP`/`# TYPE`).
pub(crate) fn metrics_text(model: &str, v: &MetricValues) -> String {
    let label = escape_label(model);
    let mut out = String::with_capacity(1024);
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let value = prometheus_float(value);
        // Writing to a String cannot fail.
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{model_name=\"{label}\"}} {value}\n"
        );
    };
    metric(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        v.load.running as f64,
    );
    metric(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        v.load.waiting as f64,
    );
    metric(
        "vllm:gpu_cache_usage_perc",
        "gauge",
        "GPU KV-cache usage. 1 means 100 percent usage.",
        v.load.kv_cache_usage,
    );
    metric(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        v.load.kv_cache_usage,
    );
    metric(
        "vllm:prompt_tokens_total",
        "counter",
        "Number of prefill tokens processed.",
        v.prompt_tokens as f64,
    );
    metric(
        "vllm:generation_tokens_total",
        "counter",
        "Number of generation tokens processed.",
        v.generation_tokens as f64,
    );
    out
}

/// A sample value as Python's `prometheus_client` writes it: `3.0`, `0.25`, `NaN`, `+Inf`.
fn prometheus_float(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        // `{:?}` keeps the `.0` of whole numbers, as Python's `repr(float)` does.
        format!("{value:?}")
    }
}

fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Which OpenAI endpoint a generation answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Chat,
    Completion,
}

/// Everything needed to render one generation, whole or chunk by chunk. `id` and `model` are
/// kept as JSON literals so that each chunk is a cheap concatenation.
#[derive(Debug)]
pub(crate) struct Generation {
    pub(crate) endpoint: Endpoint,
    pub(crate) id_json: String,
    pub(crate) model_json: String,
    pub(crate) created: u64,
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: usize,
    pub(crate) finish_reason: &'static str,
    pub(crate) include_usage: bool,
    /// `usage.prompt_tokens_details.cached_tokens` (prefix-cache hit), in the whole body and
    /// the stream's usage chunk. Only a simulated server knows it; `None` renders vLLM's
    /// default (`prompt_tokens_details: null`, absent from the stream's usage).
    pub(crate) cached_tokens: Option<u64>,
}

/// The text of token `k`: the stream's deltas concatenate to the non-stream content.
pub(crate) fn token_text(k: usize) -> String {
    format!("tok{k} ")
}

impl Generation {
    /// The `usage` object; `whole` for the non-stream body, which always has
    /// `prompt_tokens_details`.
    fn usage_json(&self, whole: bool) -> String {
        let completion = self.completion_tokens as u64;
        let total = self.prompt_tokens + completion;
        let details = match self.cached_tokens {
            Some(cached) => format!(",\"prompt_tokens_details\":{{\"cached_tokens\":{cached}}}"),
            None if whole => ",\"prompt_tokens_details\":null".to_owned(),
            None => String::new(),
        };
        format!(
            "{{\"prompt_tokens\":{},\"total_tokens\":{total},\"completion_tokens\":{completion}{details}}}",
            self.prompt_tokens
        )
    }

    /// The non-stream `chat.completion` / `text_completion` body.
    pub(crate) fn full_json(&self) -> Bytes {
        let mut content = String::with_capacity(self.completion_tokens * 6);
        for k in 0..self.completion_tokens {
            content.push_str(&token_text(k));
        }
        let content = json_string(&content);
        let usage = self.usage_json(true);
        let (id, model, created, finish) = (
            &self.id_json,
            &self.model_json,
            self.created,
            self.finish_reason,
        );
        let body = match self.endpoint {
            Endpoint::Chat => format!(
                "{{\"id\":{id},\"object\":\"chat.completion\",\"created\":{created},\"model\":{model},\
                 \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{content},\
                 \"refusal\":null,\"annotations\":null,\"audio\":null,\"function_call\":null,\
                 \"tool_calls\":[],\"reasoning_content\":null}},\"logprobs\":null,\
                 \"finish_reason\":\"{finish}\",\"stop_reason\":null}}],\"service_tier\":null,\
                 \"system_fingerprint\":null,\"usage\":{usage},\"prompt_logprobs\":null,\
                 \"kv_transfer_params\":null}}"
            ),
            Endpoint::Completion => format!(
                "{{\"id\":{id},\"object\":\"text_completion\",\"created\":{created},\"model\":{model},\
                 \"choices\":[{{\"index\":0,\"text\":{content},\"logprobs\":null,\
                 \"finish_reason\":\"{finish}\",\"stop_reason\":null,\"prompt_logprobs\":null}}],\
                 \"service_tier\":null,\"system_fingerprint\":null,\"usage\":{usage},\
                 \"kv_transfer_params\":null}}"
            ),
        };
        Bytes::from(body)
    }

    /// Number of SSE events of the stream, `data: [DONE]` included.
    pub(crate) fn event_count(&self) -> usize {
        let role = usize::from(self.endpoint == Endpoint::Chat);
        role + self.completion_tokens + 1 + usize::from(self.include_usage) + 1
    }

    /// What the stream's event `i` is.
    pub(crate) fn event(&self, i: usize) -> Option<Event> {
        let role = usize::from(self.endpoint == Endpoint::Chat);
        let n = self.completion_tokens;
        if i >= self.event_count() {
            None
        } else if i < role {
            Some(Event::Role)
        } else if i < role + n {
            Some(Event::Token(i - role))
        } else if i == role + n {
            Some(Event::Finish)
        } else if self.include_usage && i == role + n + 1 {
            Some(Event::Usage)
        } else {
            Some(Event::Done)
        }
    }

    /// One SSE event, `data: ...\n\n` included, shaped like vLLM's `model_dump_json` output
    /// (`exclude_unset=True` for chat chunks, all fields for completion chunks).
    pub(crate) fn render(&self, event: Event) -> Bytes {
        let (id, model, created) = (&self.id_json, &self.model_json, self.created);
        let chunk = match (self.endpoint, event) {
            (_, Event::Done) => return Bytes::from_static(b"data: [DONE]\n\n"),
            (Endpoint::Chat, Event::Role) => format!(
                "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{created},\
                 \"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\
                 \"content\":\"\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            ),
            (Endpoint::Chat, Event::Token(k)) => format!(
                "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{created},\
                 \"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{k} \"}},\
                 \"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
            ),
            (Endpoint::Chat, Event::Finish) => format!(
                "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{created},\
                 \"model\":{model},\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\
                 \"finish_reason\":\"{}\",\"stop_reason\":null}}]}}\n\n",
                self.finish_reason
            ),
            (Endpoint::Chat, Event::Usage) => format!(
                "data: {{\"id\":{id},\"object\":\"chat.completion.chunk\",\"created\":{created},\
                 \"model\":{model},\"choices\":[],\"usage\":{}}}\n\n",
                self.usage_json(false)
            ),
            // The completion endpoint has no role chunk; render it as an empty text chunk.
            (Endpoint::Completion, Event::Role) => self.completion_chunk("\"\"", "null"),
            (Endpoint::Completion, Event::Token(k)) => {
                self.completion_chunk(&format!("\"tok{k} \""), "null")
            }
            (Endpoint::Completion, Event::Finish) => {
                self.completion_chunk("\"\"", &format!("\"{}\"", self.finish_reason))
            }
            (Endpoint::Completion, Event::Usage) => format!(
                "data: {{\"id\":{id},\"object\":\"text_completion\",\"created\":{created},\
                 \"model\":{model},\"choices\":[],\"usage\":{}}}\n\n",
                self.usage_json(false)
            ),
        };
        Bytes::from(chunk)
    }

    fn completion_chunk(&self, text_json: &str, finish_json: &str) -> String {
        format!(
            "data: {{\"id\":{},\"object\":\"text_completion\",\"created\":{},\"model\":{},\
             \"choices\":[{{\"index\":0,\"text\":{text_json},\"logprobs\":null,\
             \"finish_reason\":{finish_json},\"stop_reason\":null}}],\"usage\":null}}\n\n",
            self.id_json, self.created, self.model_json
        )
    }
}

/// One SSE event of a generation stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// Chat only: `delta: {"role":"assistant","content":""}`.
    Role,
    /// Token `k`: `delta: {"content":"tokK "}` / `text: "tokK "`.
    Token(usize),
    /// Empty delta with `finish_reason`.
    Finish,
    /// `choices: []` with `usage`, when `stream_options.include_usage` is set.
    Usage,
    /// `data: [DONE]`.
    Done,
}

/// `POST /v1/embeddings` body: one small deterministic vector per input.
pub(crate) fn embeddings_json(
    id: &str,
    model: &str,
    inputs: usize,
    prompt_tokens: u64,
    created: u64,
) -> Bytes {
    const DIMENSIONS: usize = 8;
    let mut data = String::with_capacity(inputs * 96);
    for i in 0..inputs {
        if i > 0 {
            data.push(',');
        }
        let _ = write!(
            data,
            "{{\"index\":{i},\"object\":\"embedding\",\"embedding\":["
        );
        for d in 0..DIMENSIONS {
            if d > 0 {
                data.push(',');
            }
            // Small, distinct, deterministic values; not normalised, nobody computes on them.
            let value = ((i * DIMENSIONS + d) % 17) as f64 / 16.0 - 0.5;
            let _ = write!(data, "{value:?}");
        }
        data.push_str("]}");
    }
    let body = format!(
        "{{\"id\":{},\"object\":\"list\",\"created\":{created},\"model\":{},\"data\":[{data}],\
         \"usage\":{{\"prompt_tokens\":{prompt_tokens},\"total_tokens\":{prompt_tokens},\
         \"completion_tokens\":0,\"prompt_tokens_details\":null}}}}",
        json_string(id),
        json_string(model)
    );
    Bytes::from(body)
}

/// Answer of any other `POST` path: `{"object":"mock","path":..,"model":..}`.
pub(crate) fn passthrough_json(path: &str, model: &str) -> Bytes {
    Bytes::from(format!(
        "{{\"object\":\"mock\",\"path\":{},\"model\":{}}}",
        json_string(path),
        json_string(model)
    ))
}
