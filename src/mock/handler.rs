//! Routes one mock request and builds its answer: health, models, metrics, generations
//! (whole or SSE, paced by fixed delays or by the simulated engine), embeddings, pass-through
//! `POST`s (404 on a simulated server, as vLLM), vLLM-style errors, injected failures, and the
//! simulator's own routes.
//!
//! Runs per mock request on the connection's task. Reads the config once per request from its
//! `ArcSwap`, so a runtime change (`set_fail`, ...) applies to the next request, never half of
//! one. Must not hold a lock across an `.await`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::de::IgnoredAny;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::responses::{self, Endpoint, Generation, MetricValues};
use super::sim::prompt::Prompt;
use super::sim::{self, routes, Progress, SimHandle, Submission};
use super::stats::{MockStats, PostGuard};
use super::stream::{self, MidFailure, MockBody, Pace, StreamPlan};
use super::{FailMode, MockConfig, MockLoad, MockRole};

/// State shared by every connection of one mock server.
pub(crate) struct Shared {
    pub(crate) config: ArcSwap<MockConfig>,
    pub(crate) stats: Arc<MockStats>,
    /// The simulated engine, in sim mode.
    pub(crate) sim: Option<SimHandle>,
}

const X_MOCK_BACKEND: HeaderName = HeaderName::from_static("x-mock-backend");
const X_MOCK_BODY_SHA256: HeaderName = HeaderName::from_static("x-mock-body-sha256");
const X_MOCK_BODY_LEN: HeaderName = HeaderName::from_static("x-mock-body-len");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");

/// GET paths the mock serves; other methods on them get 405, as FastAPI answers.
const GET_PATHS: [&str; 4] = ["/health", "/version", "/v1/models", "/metrics"];

/// The hyper service: never fails, every problem is an HTTP answer.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let config = shared.config.load_full();
    let request_id = req.headers().get(&X_REQUEST_ID).cloned();
    let mut response = match *req.method() {
        Method::POST => post(&shared, &config, req).await,
        Method::GET | Method::HEAD => get(&shared, &config, req.uri().path()),
        _ if GET_PATHS.contains(&req.uri().path()) => detail(StatusCode::METHOD_NOT_ALLOWED),
        _ => detail(StatusCode::NOT_FOUND),
    };
    let headers = response.headers_mut();
    // A name that is not a valid header value (control characters) just goes unreported.
    if let Ok(name) = HeaderValue::from_str(&config.name) {
        headers.insert(X_MOCK_BACKEND, name);
    }
    if let Some(id) = request_id {
        headers.insert(X_REQUEST_ID, id);
    }
    Ok(response)
}

fn get(shared: &Shared, config: &MockConfig, path: &str) -> Response<MockBody> {
    match path {
        "/health" => {
            shared.stats.count_health();
            respond(StatusCode::OK, None, Bytes::new())
        }
        "/version" => json(
            StatusCode::OK,
            Bytes::from_static(b"{\"version\":\"0.0.0+mock\"}"),
        ),
        "/v1/models" => {
            shared.stats.count_models();
            json(StatusCode::OK, responses::models_json(config))
        }
        "/metrics" => {
            shared.stats.count_metrics();
            let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
            let text = metrics_text(shared, config);
            respond(StatusCode::OK, Some(content_type), Bytes::from(text))
        }
        _ => match &shared.sim {
            Some(sim) => {
                let model = config.models.first().map_or("", String::as_str);
                match routes::info_json(path, model, sim.config()) {
                    Some(body) => json(StatusCode::OK, body),
                    None => detail(StatusCode::NOT_FOUND),
                }
            }
            None => detail(StatusCode::NOT_FOUND),
        },
    }
}

/// The simulated engine's metrics, else the load override or the one derived from the `POST`s
/// in flight.
fn metrics_text(shared: &Shared, config: &MockConfig) -> String {
    if let Some(sim) = &shared.sim {
        return sim.metrics_text();
    }
    let load = config.load.unwrap_or_else(|| {
        let running = shared.stats.in_flight();
        MockLoad {
            running,
            // The mock never queues: every POST is answered as it arrives.
            waiting: 0,
            // Pretend each running request holds 1% of the KV cache.
            kv_cache_usage: (running as f64 / 100.0).min(1.0),
        }
    });
    let values = MetricValues {
        load,
        prompt_tokens: shared.stats.prompt_tokens(),
        generation_tokens: shared.stats.generation_tokens(),
    };
    let model = config.models.first().map_or("", String::as_str);
    responses::metrics_text(model, &values)
}

/// Reads the body, records it, and answers (or fails as configured).
async fn post(shared: &Shared, config: &MockConfig, req: Request<Incoming>) -> Response<MockBody> {
    let guard = PostGuard::start(Arc::clone(&shared.stats));
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The client went away mid-upload (or sent broken framing); `guard` counts an abort.
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("error reading request body: {e}"),
                None,
            )
        }
    };
    let sha256 = responses::hex(&Sha256::digest(&body));
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
            (name.as_str().to_owned(), value)
        })
        .collect();
    let sha_header = HeaderValue::from_str(&sha256);
    shared
        .stats
        .record_post(&path, body.clone(), sha256, headers);
    let body_len = body.len();

    let mut response = answer(shared, config, &path, &parts.headers, body, guard).await;
    let headers = response.headers_mut();
    if let Ok(sha) = sha_header {
        headers.insert(X_MOCK_BODY_SHA256, sha);
    }
    headers.insert(X_MOCK_BODY_LEN, HeaderValue::from(body_len));
    response
}

/// What a successful `POST` produces before failures and delays are applied.
enum Answer {
    Whole(Bytes),
    Stream(Generation, Pace),
    /// A non-stream generation queued in the simulated engine: answered once it is done.
    Simulated(Generation, tokio::sync::watch::Receiver<Progress>),
}

/// Applies the failure mode, then routes by path. Whole answers wait `ttft` before their head;
/// streams send their head at once and wait inside the body. `guard` ends up either finished
/// here or owned by the body, so in-flight and abort counts follow the body's life.
async fn answer(
    shared: &Shared,
    config: &MockConfig,
    path: &str,
    headers: &HeaderMap,
    body: Bytes,
    mut guard: PostGuard,
) -> Response<MockBody> {
    let mid_failure = match config.fail {
        FailMode::None => None,
        FailMode::Status(code) => {
            guard.finish();
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let message = format!("mock backend failure injected: status {}", status.as_u16());
            return error(status, &message, None);
        }
        FailMode::Hang => {
            // Dropped with the connection when the client gives up: `guard` counts an abort.
            std::future::pending::<()>().await;
            return detail(StatusCode::INTERNAL_SERVER_ERROR);
        }
        FailMode::CloseMidStream { after_chunks } => Some((after_chunks, MidFailure::Close)),
        FailMode::HangMidStream { after_chunks } => Some((after_chunks, MidFailure::Hang)),
    };
    let sim = shared.sim.as_ref();
    if let (Some(sim), "/reset_prefix_cache") = (sim, path) {
        guard.finish();
        return reset_prefix_cache(sim).await;
    }

    let stats = guard.stats();
    let request_id = headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let result = match path {
        "/v1/chat/completions" => generation(config, sim, Endpoint::Chat, &body, request_id, stats),
        "/v1/completions" => {
            generation(config, sim, Endpoint::Completion, &body, request_id, stats)
        }
        "/v1/embeddings" => embeddings(config, &body, request_id),
        _ if sim.is_none() => passthrough(config, path, &body),
        _ => match routes::Render::of(path) {
            Some(kind) => render(config, kind, &body),
            None => {
                // A simulated server is vLLM: a path it does not serve is FastAPI's 404.
                guard.finish();
                return detail(StatusCode::NOT_FOUND);
            }
        },
    };
    let answer = match result {
        Ok(answer) => answer,
        Err(rejection) => {
            guard.finish();
            return rejection.into_response();
        }
    };
    deliver(answer, config.ttft, mid_failure, guard).await
}

/// Sends `answer`: a stream at once (paced inside its body), a whole body after `ttft` (or,
/// simulated, once the engine is done), either cut by `mid_failure` if set.
async fn deliver(
    answer: Answer,
    ttft: Duration,
    mid_failure: Option<(usize, MidFailure)>,
    mut guard: PostGuard,
) -> Response<MockBody> {
    match answer {
        Answer::Stream(generation, pace) => {
            guard.stats().count_stream();
            let plan = StreamPlan {
                pace,
                fail: mid_failure,
            };
            let mut response = Response::new(stream::sse(generation, plan, guard));
            response.headers_mut().insert(CONTENT_TYPE, EVENT_STREAM);
            response
        }
        Answer::Whole(bytes) => whole(bytes, ttft, mid_failure, guard).await,
        Answer::Simulated(mut generation, mut progress) => {
            let tokens = u32::try_from(generation.completion_tokens).unwrap_or(u32::MAX);
            let Some(done) = sim::wait_for_tokens(&mut progress, tokens).await else {
                guard.finish();
                return error(StatusCode::SERVICE_UNAVAILABLE, ENGINE_STOPPED, None);
            };
            generation.cached_tokens = done.cached_tokens.map(u64::from);
            guard.stats().add_generation_tokens(u64::from(tokens));
            whole(generation.full_json(), Duration::ZERO, mid_failure, guard).await
        }
    }
}

const ENGINE_STOPPED: &str = "the simulated engine has stopped";

/// A whole answer after `delay`, or its first half then the injected failure.
async fn whole(
    bytes: Bytes,
    delay: Duration,
    mid_failure: Option<(usize, MidFailure)>,
    mut guard: PostGuard,
) -> Response<MockBody> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match mid_failure {
        None => {
            guard.finish();
            json(StatusCode::OK, bytes)
        }
        Some((_, failure)) => {
            let len = bytes.len();
            let mut response = Response::new(stream::half_then(bytes, failure, guard));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, APPLICATION_JSON);
            headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
            response
        }
    }
}

/// vLLM's dev endpoint: 200 with an empty body once the engine dropped its free cached blocks.
async fn reset_prefix_cache(sim: &SimHandle) -> Response<MockBody> {
    match sim.reset_prefix_cache().await {
        Some(_) => respond(StatusCode::OK, None, Bytes::new()),
        None => error(StatusCode::SERVICE_UNAVAILABLE, ENGINE_STOPPED, None),
    }
}

/// The fields of a chat or text completion request the mock acts on; the rest is ignored, as
/// vLLM ignores (and logs) unknown fields.
#[derive(Deserialize)]
struct GenerationRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    messages: Option<IgnoredAny>,
    #[serde(default)]
    prompt: Option<IgnoredAny>,
    #[serde(default)]
    kv_transfer_params: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamOptions {
    /// vLLM defaults this to true once `stream_options` is given.
    #[serde(default)]
    include_usage: Option<bool>,
}

fn generation(
    config: &MockConfig,
    sim: Option<&SimHandle>,
    endpoint: Endpoint,
    body: &[u8],
    request_id: Option<String>,
    stats: &MockStats,
) -> Result<Answer, Rejection> {
    let req: GenerationRequest = parse(body)?;
    let model = resolve_model(config, req.model.as_deref())?;
    match endpoint {
        Endpoint::Chat if req.messages.is_none() => {
            return Err(validation_error("messages", "Field required"));
        }
        Endpoint::Completion if req.prompt.is_none() => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "Either prompt or prompt_embeds must be provided and non-empty.",
                None,
            ));
        }
        _ => {}
    }
    let stream = req.stream.unwrap_or(false);
    if req.stream_options.is_some() && !stream {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "Stream options can only be defined when `stream=True`.",
            Some("stream_options"),
        ));
    }
    let max_tokens = match endpoint {
        Endpoint::Chat => req.max_completion_tokens.or(req.max_tokens),
        Endpoint::Completion => req.max_tokens,
    };
    if max_tokens == Some(0) {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "max_tokens must be at least 1, got 0.",
            Some("max_tokens"),
        ));
    }
    let kv_transfer_params = check_role(config, &req, stream, max_tokens)?;
    let (completion_tokens, finish_reason) = completion_length(config, sim, max_tokens);
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let id = format!(
        "{prefix}-{}",
        request_id.unwrap_or_else(responses::random_hex)
    );
    let prompt = sim.map(|s| Prompt::from_body(endpoint, body, s.config().block_size));
    let generation = Generation {
        endpoint,
        id_json: responses::json_string(&id),
        model_json: responses::json_string(model),
        created: responses::unix_now(),
        prompt_tokens: prompt
            .as_ref()
            .map_or_else(|| prompt_tokens(body), |p| u64::from(p.tokens)),
        completion_tokens,
        finish_reason,
        include_usage: req
            .stream_options
            .is_some_and(|o| o.include_usage.unwrap_or(true)),
        cached_tokens: None,
        kv_transfer_params,
    };
    stats.add_prompt_tokens(generation.prompt_tokens);
    match (sim, prompt) {
        (Some(sim), Some(prompt)) => simulate(sim, generation, prompt, stream),
        _ if stream => {
            // Generation tokens are counted as the stream produces them.
            let pace = Pace::Fixed {
                ttft: config.ttft,
                itl: config.itl,
            };
            Ok(Answer::Stream(generation, pace))
        }
        _ => {
            stats.add_generation_tokens(completion_tokens as u64);
            Ok(Answer::Whole(generation.full_json()))
        }
    }
}

/// A disaggregated role's checks of what a router sent, as vLLM's KV connectors expect it, and
/// the answer's `kv_transfer_params`: a prefill server wants `do_remote_decode` and one
/// unstreamed token and answers where its blocks are; a decode server wants those parameters
/// back (`do_remote_prefill`) and answers none.
fn check_role(
    config: &MockConfig,
    req: &GenerationRequest,
    stream: bool,
    max_tokens: Option<u64>,
) -> Result<Option<String>, Rejection> {
    let kv = req.kv_transfer_params.as_ref();
    let flag = |name: &str| {
        kv.and_then(|k| k.get(name))
            .and_then(serde_json::Value::as_bool)
    };
    let bad = |m: &str| reject(StatusCode::BAD_REQUEST, m, Some("kv_transfer_params"));
    match config.role {
        MockRole::Plain => Ok(None),
        MockRole::Prefill => {
            if flag("do_remote_decode") != Some(true) || flag("do_remote_prefill") != Some(false) {
                return Err(bad(
                    "prefill server: kv_transfer_params must ask for do_remote_decode",
                ));
            }
            if stream || max_tokens != Some(1) || req.stream_options.is_some() {
                return Err(reject(
                    StatusCode::BAD_REQUEST,
                    "prefill server: expected stream false, max_tokens 1 and no stream_options",
                    Some("max_tokens"),
                ));
            }
            Ok((!config.omit_kv_params).then(|| {
                format!(
                    "{{\"do_remote_prefill\":true,\"do_remote_decode\":false,\"remote_block_ids\":[1,2,3],\"remote_engine_id\":{},\"remote_host\":\"127.0.0.1\",\"remote_port\":5600,\"tp_size\":1}}",
                    responses::json_string(&config.name)
                )
            }))
        }
        MockRole::Decode => {
            let engine = kv
                .and_then(|k| k.get("remote_engine_id"))
                .and_then(|v| v.as_str());
            if flag("do_remote_prefill") != Some(true) || engine.is_none() {
                return Err(bad(
                    "decode server: kv_transfer_params from a prefill server are missing",
                ));
            }
            Ok(None)
        }
    }
}

/// Completion tokens and `finish_reason`. The plain mock generates `config.tokens`, cut to
/// `max_tokens` (`length`) or not (`stop`); a simulated engine ignores EOS and generates exactly
/// `max_tokens` (`length`), or `config.tokens` without a cap (`stop`).
fn completion_length(
    config: &MockConfig,
    sim: Option<&SimHandle>,
    max_tokens: Option<u64>,
) -> (usize, &'static str) {
    let cap = max_tokens.map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    match (sim, max_tokens) {
        (Some(_), Some(_)) => (cap, "length"),
        (Some(_), None) => (config.tokens, "stop"),
        (None, _) if cap <= config.tokens => (cap, "length"),
        (None, _) => (config.tokens, "stop"),
    }
}

/// Queues a generation in the simulated engine, refusing one that could never fit its KV cache.
fn simulate(
    sim: &SimHandle,
    generation: Generation,
    prompt: Prompt,
    stream: bool,
) -> Result<Answer, Rejection> {
    let completion = generation.completion_tokens as u64;
    let config = sim.config();
    if !config.fits(u64::from(prompt.tokens), completion) {
        let capacity = u64::from(config.kv_blocks) * u64::from(config.block_size);
        let message = format!(
            "This request needs {} tokens of KV cache ({} in the prompt, {completion} in the \
             completion), but the simulated server holds {capacity} ({} blocks of {} tokens). \
             Please reduce the length of the prompt or completion.",
            u64::from(prompt.tokens) + completion,
            prompt.tokens,
            config.kv_blocks,
            config.block_size,
        );
        return Err(reject(StatusCode::BAD_REQUEST, &message, None));
    }
    let submission = Submission {
        prompt,
        max_tokens: u32::try_from(completion).unwrap_or(u32::MAX),
        finish_reason: generation.finish_reason,
    };
    let Some(progress) = sim.submit(submission) else {
        return Err(reject(
            StatusCode::SERVICE_UNAVAILABLE,
            ENGINE_STOPPED,
            None,
        ));
    };
    Ok(if stream {
        Answer::Stream(generation, Pace::Engine(progress))
    } else {
        Answer::Simulated(generation, progress)
    })
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

fn embeddings(
    config: &MockConfig,
    body: &[u8],
    request_id: Option<String>,
) -> Result<Answer, Rejection> {
    let req: EmbeddingRequest = parse(body)?;
    let model = resolve_model(config, req.model.as_deref())?;
    let inputs = match req.input {
        Some(serde_json::Value::String(_)) => 1,
        // A list of token ids is one input; a list of strings or of token lists is many.
        Some(serde_json::Value::Array(items)) if items.iter().all(|v| v.is_number()) => 1,
        Some(serde_json::Value::Array(items)) => items.len(),
        _ => return Err(validation_error("input", "Field required")),
    };
    let id = format!("embd-{}", request_id.unwrap_or_else(responses::random_hex));
    let bytes = responses::embeddings_json(
        &id,
        model,
        inputs,
        prompt_tokens(body),
        responses::unix_now(),
    );
    Ok(Answer::Whole(bytes))
}

#[derive(Deserialize)]
struct AnyRequest {
    #[serde(default)]
    model: Option<String>,
}

/// Any other `POST`: checks the model (default when absent or when the body is not JSON, so
/// that non-JSON endpoints pass) and names the path.
fn passthrough(config: &MockConfig, path: &str, body: &[u8]) -> Result<Answer, Rejection> {
    let requested = serde_json::from_slice::<AnyRequest>(body)
        .ok()
        .and_then(|r| r.model);
    let model = resolve_model(config, requested.as_deref())?;
    Ok(Answer::Whole(responses::passthrough_json(path, model)))
}

/// vLLM's render routes on a simulated server: the model checked like a generation's, then
/// the prompt's token ids ([`routes::render_json`]).
fn render(config: &MockConfig, kind: routes::Render, body: &[u8]) -> Result<Answer, Rejection> {
    let request: AnyRequest = parse(body)?;
    let model = resolve_model(config, request.model.as_deref())?;
    Ok(Answer::Whole(routes::render_json(kind, body, model)))
}

/// vLLM counts real tokens; a quarter of the body's bytes is close enough, and never zero.
fn prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64 / 4).max(1)
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Rejection> {
    // serde would accept a JSON array for a struct; FastAPI wants an object.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "JSON decode error: the request body must be a JSON object",
            None,
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            &format!("JSON decode error: {e}"),
            None,
        )
    })
}

/// vLLM's model check: absent or empty means the default (first served) model.
fn resolve_model<'c>(
    config: &'c MockConfig,
    requested: Option<&str>,
) -> Result<&'c str, Rejection> {
    let found = match requested {
        None | Some("") => config.models.first(),
        Some(name) => config.models.iter().find(|m| m.as_str() == name),
    };
    found.map(String::as_str).ok_or_else(|| {
        let message = format!("The model `{}` does not exist.", requested.unwrap_or(""));
        reject(StatusCode::NOT_FOUND, &message, Some("model"))
    })
}

fn validation_error(field: &str, problem: &str) -> Rejection {
    let message = format!("1 validation error: body.{field}: {problem}");
    reject(StatusCode::BAD_REQUEST, &message, None)
}

/// A request the mock refuses, rendered by [`Rejection::into_response`] as vLLM's error JSON.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {message}")]
struct Rejection {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
}

impl Rejection {
    fn into_response(self) -> Response<MockBody> {
        error(self.status, &self.message, self.param)
    }
}

fn reject(status: StatusCode, message: &str, param: Option<&'static str>) -> Rejection {
    Rejection {
        status,
        message: message.to_owned(),
        param,
    }
}

fn error(status: StatusCode, message: &str, param: Option<&str>) -> Response<MockBody> {
    let code = status.as_u16();
    let body = responses::error_json(code, responses::error_kind(code), message, param);
    json(status, body)
}

/// FastAPI's `{"detail": "<reason>"}` for unknown routes and methods.
fn detail(status: StatusCode) -> Response<MockBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!("{{\"detail\":{}}}", responses::json_string(reason));
    json(status, Bytes::from(body))
}

fn json(status: StatusCode, body: Bytes) -> Response<MockBody> {
    respond(status, Some(APPLICATION_JSON), body)
}

fn respond(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
) -> Response<MockBody> {
    let mut response = Response::new(stream::full(body));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response.headers_mut().insert(CONTENT_TYPE, content_type);
    }
    response
}
