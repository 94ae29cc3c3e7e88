//! The public listener: `impl ProxyHttp` for [`Gateway`] (request path).
//!
//! Phases delegate. `request_filter` classifies the route, pre-reads the body until `model` is
//! known, picks the pool from the snapshot loaded once for this request, and runs the upstream
//! exchange itself (`forward`), so body replay, first-byte and total timeouts, and the
//! no-retry-after-first-byte rule are all under our control rather than Pingora's 64 KiB retry
//! buffer. Nothing here locks, blocks or does DNS.

pub mod body;
pub mod ctx;
pub mod disagg;
pub mod forward;
pub mod framing;
pub mod headers;
pub mod models;
pub mod observe;
pub mod policy;
pub mod route;
pub mod shadow;
pub mod upstream;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::control::Control;
use crate::error::GatewayError;
use body::Upload;
use ctx::RequestCtx;
use forward::Outcome;
use route::Route;

/// The gateway's proxy logic.
pub struct Gateway {
    control: Arc<Control>,
    upstream: upstream::Upstream,
    shadows: shadow::Shadows,
}

impl Gateway {
    pub fn new(control: Arc<Control>) -> Self {
        Gateway {
            control,
            upstream: upstream::Upstream::default(),
            shadows: shadow::Shadows::default(),
        }
    }

    /// Route and answer one request. Returns the error to render if nothing was sent yet.
    async fn handle(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<(), Outcome> {
        let snapshot = self.control.state.load_full();
        ctx.snapshot = Some(Arc::clone(&snapshot));
        // A client that stops reading must not pin a backend slot: writes to it time out.
        session
            .downstream_session
            .set_write_timeout(Some(snapshot.limits.client_write_timeout));
        ctx.endpoint = crate::metrics::endpoint_index(session.req_header().uri.path());
        refuse_ambiguous_framing(session).map_err(Outcome::Failed)?;
        let route = {
            let req = session.req_header();
            route::classify(&req.method, req.uri.path())
        };
        let route = route.map_err(Outcome::Failed)?;
        if let Some(tenants) = &snapshot.tenants {
            let tenant = crate::auth::bearer(&session.req_header().headers)
                .and_then(|key| tenants.authenticate(key))
                .ok_or(Outcome::Failed(GatewayError::Unauthorized))?;
            ctx.tenant = Some(tenant);
        }
        let allowed =
            |ctx: &RequestCtx, model: &str| ctx.tenant.as_ref().is_none_or(|t| t.allows(model));
        match route {
            Route::ListModels => {
                let body = models::list(&snapshot, |m| allowed(ctx, m));
                return send_json(session, ctx, 200, body).await;
            }
            Route::RetrieveModel(id) => {
                let id = id.to_string();
                let visible = allowed(ctx, &id);
                return match models::retrieve(&snapshot, &id).filter(|_| visible) {
                    Some(body) => send_json(session, ctx, 200, body).await,
                    None => Err(Outcome::Failed(GatewayError::ModelNotFound {
                        model: id,
                        available: visible_models(&snapshot, ctx),
                    })),
                };
            }
            Route::Forward => {}
        }
        let mut upload = Upload::preread(
            session,
            snapshot.max_body_bytes,
            snapshot.capture,
            snapshot.limits.body_timeout,
        )
        .await
        .map_err(Outcome::Failed)?;
        ctx.bytes_in = upload.read;
        let model = match upload.model() {
            Some(m) => m.to_string(),
            // No `model` in the body: a model named in the path (OpenAI's legacy
            // `/v1/engines/{model}/completions`), else `default_model`, else 400.
            None => model_in_path(&snapshot, session.req_header().uri.path())
                .or_else(|| snapshot.default_model.clone())
                .ok_or(Outcome::Failed(GatewayError::BadBody(
                    crate::scan::ScanError::MissingModel,
                )))?,
        };
        let Some(requested) = snapshot.pool(&model) else {
            ctx.unknown_model = true;
            ctx.model =
                Some(crate::error::clip(&model, crate::error::MAX_ECHOED_MODEL).to_string());
            return Err(Outcome::Failed(GatewayError::ModelNotFound {
                model,
                available: visible_models(&snapshot, ctx),
            }));
        };
        // A model the key may not use looks like one that does not exist (no name leaks).
        if !allowed(ctx, &model) {
            ctx.unknown_model = true;
            ctx.model =
                Some(crate::error::clip(&model, crate::error::MAX_ECHOED_MODEL).to_string());
            return Err(Outcome::Failed(GatewayError::ModelNotFound {
                model,
                available: visible_models(&snapshot, ctx),
            }));
        }
        if let Some(tenant) = &ctx.tenant {
            match tenant.admit() {
                Ok(guard) => ctx.tenant_slot = guard,
                Err(crate::auth::Refusal::Quota(wait)) => {
                    return Err(Outcome::Failed(GatewayError::QuotaExceeded {
                        retry_after_secs: wait.as_secs() + 1,
                    }));
                }
            }
        }
        let pool = policy::route(&snapshot, requested, session.req_header(), &upload);
        ctx.sticky_key = policy::sticky_key(pool, session.req_header(), &upload);
        ctx.prompt = policy::prompt_blocks(pool, &upload);
        // The backends may know the model under another id (alias, served_model_name, canary):
        // splice just the value.
        let expected = pool.served_model_name.as_deref().unwrap_or(&pool.name);
        // (A disaggregated request splices its two bodies itself.)
        if pool.prefill.is_none() && upload.model().is_some_and(|m| m != expected) {
            upload.rewrite_model(expected);
        }
        ctx.shadow = shadow::roll(pool);
        ctx.model = Some(model);
        ctx.pool = Some(Arc::clone(pool));
        let pool = &Arc::clone(pool);
        match disagg::forward(
            session,
            ctx,
            pool,
            &mut upload,
            &self.upstream,
            &self.shadows,
        )
        .await
        {
            Outcome::Complete => Ok(()),
            other => Err(other),
        }
    }
}

/// A request whose body length could be read two ways is refused before anything else
/// ([`framing`]); only requests carrying `Transfer-Encoding` need the raw header read.
fn refuse_ambiguous_framing(session: &Session) -> Result<(), GatewayError> {
    let req = session.req_header();
    if !req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Ok(());
    }
    match session.as_downstream().as_http1() {
        Some(h1) => framing::check(&h1.get_headers_raw_bytes()).map_err(GatewayError::BadRequest),
        None => Ok(()),
    }
}

/// "a, b" of the models this request may see (all, or the API key's): a 404 never names a
/// model the key may not use, and reads the same for a forbidden and a missing model.
fn visible_models(snapshot: &crate::state::Snapshot, ctx: &RequestCtx) -> String {
    let Some(tenant) = &ctx.tenant else {
        return snapshot.model_list.clone();
    };
    snapshot
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .chain(snapshot.aliases.iter().map(|(a, _)| a.as_str()))
        .filter(|m| tenant.allows(m))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first path segment that names a configured model or alias, if any.
fn model_in_path(snapshot: &crate::state::Snapshot, path: &str) -> Option<String> {
    path.split('/')
        .filter(|seg| !seg.is_empty() && *seg != "v1")
        .find(|seg| snapshot.pool(seg).is_some())
        .map(str::to_string)
}

/// The request's trace context from its `traceparent` / `tracestate` (several `traceparent`
/// headers: start a new trace).
fn trace_context(req: &pingora_http::RequestHeader) -> crate::telemetry::TraceContext {
    let mut parents = req.headers.get_all("traceparent").iter();
    let parent = match (parents.next(), parents.next()) {
        (Some(one), None) => Some(one.as_bytes()),
        _ => None,
    };
    let state = req.headers.get("tracestate").map(|v| v.as_bytes());
    crate::telemetry::TraceContext::from_headers(parent, state)
}

/// Write a complete JSON response from the gateway itself.
async fn send_json(
    session: &mut Session,
    ctx: &mut RequestCtx,
    status: u16,
    body: Bytes,
) -> Result<(), Outcome> {
    let mut header = pingora_http::ResponseHeader::build(status, Some(4))
        .map_err(|_| Outcome::Failed(GatewayError::Upstream))?;
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", body.len());
    let _ = header.insert_header("x-request-id", ctx.request_id.as_str());
    headers::set_server(
        &mut header,
        ctx.snapshot
            .as_ref()
            .and_then(|s| s.server_header.as_deref()),
    );
    ctx.status = status;
    ctx.response_started = true;
    ctx.first_byte = Some(std::time::Instant::now());
    let head_only = session.req_header().method == http::Method::HEAD;
    session
        .write_response_header(Box::new(header), head_only)
        .await
        .map_err(|_| Outcome::Cut("client_gone"))?;
    if !head_only {
        ctx.bytes_out += body.len() as u64;
        session
            .write_response_body(Some(body), true)
            .await
            .map_err(|_| Outcome::Cut("client_gone"))?;
    }
    Ok(())
}

/// Send what a cut response already wrote, then close the write side (FIN). Pingora buffers a
/// `Content-Length` response's header and body until the body ends, and a session dropped on
/// an error is not flushed: without this a non-stream answer the backend breaks off reaches
/// the client as nothing at all, which clients take for a connection failure and retry.
/// Bounded by the client write timeout (the client may not be reading).
async fn flush_cut_response(session: &mut Session, ctx: &RequestCtx) {
    let limit = ctx
        .snapshot
        .as_ref()
        .map_or(std::time::Duration::from_secs(1), |s| {
            s.limits.client_write_timeout
        });
    let _ = pingora_timeout::timeout(limit, session.downstream_session.shutdown()).await;
}

/// Render a gateway error to the client. The connection is closed afterwards when the request
/// body was not read to its end (so no stray body bytes are parsed as the next request).
async fn send_error(session: &mut Session, ctx: &mut RequestCtx, error: &GatewayError) {
    let (mut header, body) = error.response(Some(&ctx.request_id));
    headers::set_server(
        &mut header,
        ctx.snapshot
            .as_ref()
            .map_or(Some("modelgate"), |s| s.server_header.as_deref()),
    );
    ctx.status = error.status();
    ctx.cause = Some(error.cause());
    // A body not read to its end, or framing that could not be trusted: stray bytes must never
    // be parsed as the next request.
    let untrusted = matches!(
        error,
        GatewayError::BadRequest(_)
            | GatewayError::BodyRead
            | GatewayError::BodyTimeout
            | GatewayError::PayloadTooLarge { .. }
    );
    if untrusted || !session.is_body_done() {
        session.set_keepalive(None);
    }
    if session
        .write_response_header(Box::new(header), false)
        .await
        .is_ok()
    {
        ctx.bytes_out += body.len() as u64;
        let _ = session.write_response_body(Some(body), true).await;
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    /// None. Pingora's default is a disabled compression module, whose per-request context is
    /// still allocated and called on every header and body chunk; the gateway never compresses
    /// (vLLM's JSON and SSE pass through byte for byte).
    fn init_downstream_modules(&self, _modules: &mut pingora_core::modules::http::HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        crate::conn::request_started();
        // Counted until the context drops: graceful exit waits for this to reach zero.
        ctx.in_flight = Some(self.control.track_request());
        // Debug builds only (the test suite): a fault hook proving that a panic in one
        // request's task ends that connection and nothing else.
        #[cfg(debug_assertions)]
        if session
            .req_header()
            .headers
            .contains_key("x-modelgate-debug-panic")
        {
            panic!("x-modelgate-debug-panic: deliberate test fault");
        }
        if self.control.is_closing() {
            session.set_keepalive(None);
        }
        ctx.request_id = headers::request_id(session.req_header());
        ctx.trace = trace_context(session.req_header());
        match self.handle(session, ctx).await {
            Ok(()) => Ok(true),
            Err(Outcome::Failed(e)) => {
                send_error(session, ctx, &e).await;
                Ok(true)
            }
            Err(Outcome::Cut(cause)) => {
                // Bytes may already have gone out: end by closing the connection, never with an
                // error body or a clean terminator (fail_to_proxy writes nothing then).
                if ctx.response_started && cause != "client_gone" {
                    flush_cut_response(session, ctx).await;
                }
                ctx.cause = Some(cause);
                ctx.cut = true;
                if ctx.status == 0 {
                    // Nothing was sent: log it the way nginx does a client that went away.
                    ctx.status = 499;
                }
                Err(Error::explain(ErrorType::WriteError, cause))
            }
            // `handle` maps Complete to Ok; kept total for the compiler.
            Err(Outcome::Complete) => Ok(true),
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // request_filter always answers; Pingora's own upstream path is never taken.
        Error::e_explain(
            ErrorType::InternalError,
            "no upstream: request_filter answers",
        )
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        _e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        if !ctx.response_started && session.response_written().is_none() {
            send_error(session, ctx, &GatewayError::Upstream).await;
        }
        FailToProxy {
            error_code: ctx.status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _error: &Error) -> bool {
        // Every failure is logged by us with its cause, model and backend.
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Self::CTX) {
        observe::finish(session, ctx, &self.control);
        crate::conn::request_finished();
    }
}
