//! Bodies of the routes only a simulated server answers: the SGLang-style `GET /model_info`
//! and `/server_info` (and their `/get_*` spellings) that SGLang's and vLLM's routers probe when
//! a worker registers, and vLLM's `POST /v1/chat/completions/render` and
//! `/v1/completions/render` (the prompt's token ids, which vllm-router's `cache_aware` asks every
//! worker for and matches prefixes on). `POST /reset_prefix_cache` and `/metrics` go to the
//! engine ([`super::SimHandle`]).
//!
//! Pure functions, run per request. Must not touch the engine.

use bytes::Bytes;
use serde_json::json;

use super::prompt::{completion_texts, prompt_text, token_ids};
use super::SimConfig;
use crate::mock::responses::Endpoint;

/// One of vLLM's render routes: the request as its engine would get it, prompt tokenized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Render {
    /// `POST /v1/chat/completions/render`: one `GenerateRequest`.
    Chat,
    /// `POST /v1/completions/render`: a list, one per prompt.
    Completions,
}

impl Render {
    /// The render route at `path`, if it is one.
    pub(crate) fn of(path: &str) -> Option<Render> {
        match path {
            "/v1/chat/completions/render" => Some(Render::Chat),
            "/v1/completions/render" => Some(Render::Completions),
            _ => None,
        }
    }
}

/// The JSON body of `GET /model_info`, `/get_model_info`, `/server_info` or `/get_server_info`
/// for a server whose first model is `model`; `None` for any other path.
pub(crate) fn info_json(path: &str, model: &str, config: &SimConfig) -> Option<Bytes> {
    let body = match path {
        "/model_info" | "/get_model_info" => json!({
            "model_path": model,
            "tokenizer_path": model,
            "is_generation": true,
            "preferred_sampling_params": null,
        }),
        "/server_info" | "/get_server_info" => json!({
            "model_path": model,
            "served_model_name": model,
            "tokenizer_path": model,
            "page_size": config.block_size,
            "max_running_requests": config.max_num_seqs,
            "chunked_prefill_size": config.max_num_batched_tokens,
            "max_total_num_tokens": u64::from(config.kv_blocks) * u64::from(config.block_size),
            "disable_radix_cache": false,
            "version": "0.0.0+mock-sim",
        }),
        _ => return None,
    };
    Some(Bytes::from(body.to_string()))
}

/// The answer of the render route `kind` to a valid request `body` to `model`. The token ids
/// are the simulator's ([`token_ids`]) of the text its engine schedules; the sampling
/// parameters carry only `max_tokens`.
pub(crate) fn render_json(kind: Render, body: &[u8], model: &str) -> Bytes {
    let texts = match kind {
        Render::Chat => vec![prompt_text(Endpoint::Chat, body)],
        Render::Completions => completion_texts(body),
    };
    let fields: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let max_tokens = fields
        .get("max_completion_tokens")
        .or_else(|| fields.get("max_tokens"))
        .cloned()
        .unwrap_or_default();
    let stream = fields.get("stream").and_then(serde_json::Value::as_bool);
    let requests: Vec<serde_json::Value> = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            json!({
                "request_id": format!("render-{i}"),
                "token_ids": token_ids(text.as_bytes()),
                "features": null,
                "sampling_params": {"max_tokens": max_tokens},
                "model": model,
                "stream": stream.unwrap_or(false),
                "stream_options": null,
                "cache_salt": null,
                "priority": 0,
                "kv_transfer_params": null,
            })
        })
        .collect();
    let out = match kind {
        Render::Chat => requests.into_iter().next().unwrap_or_default(),
        Render::Completions => serde_json::Value::Array(requests),
    };
    Bytes::from(out.to_string())
}
