//! Prefill/decode disaggregation (request path): one client request, two legs.
//!
//! For a model with `prefill:` and `decode:` backends, the whole body is read (at most
//! [`super::body::RETRY_BODY_LIMIT`]); the prefill leg ([`prefill::run`]) sends a prefill server the body
//! rewritten to ask for one token ([`body::prefill`]) and takes the `kv_transfer_params` of its
//! answer; the decode leg sends a decode server the client's body with those parameters
//! ([`body::decode`]) through the same exchange as any request ([`super::forward::forward`]):
//! streaming, usage, retries before the first byte (on the decode side only: the prefill's KV
//! blocks stay available to whichever decode server pulls them), receipts. The receipt
//! `x-modelgate-backend` names both, `prefill=p1;decode=d3`.

pub mod body;
pub mod prefill;

use std::sync::Arc;

use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::body::Upload;
use super::ctx::RequestCtx;
use super::forward::{self, Outcome};
use super::shadow::Shadows;
use super::upstream::Upstream;
use super::{headers, policy};
use crate::error::GatewayError;
use crate::routing::Pool;

/// Serves one request of a disaggregated model; `pool` is its decode side.
pub async fn forward(
    session: &mut Session,
    ctx: &mut RequestCtx,
    pool: &Arc<Pool>,
    upload: &mut Upload,
    connector: &Upstream,
    shadows: &Shadows,
) -> Outcome {
    let Some(prefill_pool) = pool.prefill.clone() else {
        return forward::forward(session, ctx, pool, upload, connector, shadows).await;
    };
    if let Err(e) = upload.read_all(session).await {
        return Outcome::Failed(e);
    }
    ctx.bytes_in = upload.read;
    ctx.prompt = policy::prompt_blocks(&prefill_pool, upload);
    let whole = upload.whole();
    // The backends may know the model under another id: splice just the value.
    let expected = pool.served_model_name.as_deref().unwrap_or(&pool.name);
    let served = (upload.model() != Some(expected))
        .then(|| serde_json::to_vec(expected).ok())
        .flatten();
    let Some(layout) = upload.layout(served.as_deref()) else {
        return Outcome::Failed(GatewayError::BadRequest(
            "a disaggregated (prefill/decode) model takes JSON bodies only",
        ));
    };
    let prefill_body = Bytes::from(body::prefill(&whole, &layout));
    let params = match prefill::run(session, ctx, &prefill_pool, &prefill_body, connector).await {
        prefill::End::Params(p) => p,
        prefill::End::Answer(header, body) => return relay(session, ctx, header, body).await,
        prefill::End::Failed(e) => return Outcome::Failed(e),
        prefill::End::ClientGone => return Outcome::Cut("client_gone"),
    };
    let decode_body = Bytes::from(body::decode(&whole, &layout, &params));
    // The decode side's policy gets its own prompt blocks (none unless it is cache_aware).
    ctx.prompt = policy::prompt_blocks(pool, upload);
    let mut decode = Upload::from_body(decode_body);
    forward::forward(session, ctx, pool, &mut decode, connector, shadows).await
}

/// Relays a prefill server's non-retryable answer (its own error, e.g. a 400) to the client.
async fn relay(
    session: &mut Session,
    ctx: &mut RequestCtx,
    mut header: Box<ResponseHeader>,
    body: Bytes,
) -> Outcome {
    let backend = ctx
        .prefill
        .as_ref()
        .map(|p| format!("prefill={}", p.backend))
        .unwrap_or_default();
    headers::downstream_response(&mut header, &backend, ctx.attempts, &ctx.request_id);
    header.remove_header("transfer-encoding");
    let _ = header.insert_header("content-length", body.len());
    headers::set_server(
        &mut header,
        ctx.snapshot
            .as_ref()
            .and_then(|s| s.server_header.as_deref()),
    );
    ctx.status = header.status.as_u16();
    ctx.response_started = true;
    ctx.first_byte = Some(std::time::Instant::now());
    ctx.bytes_out += body.len() as u64;
    if session.write_response_header(header, false).await.is_err()
        || session.write_response_body(Some(body), true).await.is_err()
    {
        return Outcome::Cut("client_gone");
    }
    Outcome::Complete
}

/// `x-modelgate-backend` of a response: the backend, or both legs' for a disaggregated one.
pub fn receipt(ctx: &RequestCtx, backend: &str) -> Option<String> {
    ctx.prefill
        .as_ref()
        .map(|p| format!("prefill={};decode={backend}", p.backend))
}
