//! Bodies of the routes only a simulated server answers: the SGLang-style `GET /model_info`
//! and `/server_info` (and their `/get_*` spellings) that SGLang's and vLLM's routers probe when
//! a worker registers. `POST /reset_prefix_cache` and `/metrics` go to the engine
//! ([`super::SimHandle`]).
//!
//! Pure functions, run per request. Must not touch the engine.

use bytes::Bytes;
use serde_json::json;

use super::SimConfig;

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
