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

use std::time::Instant;

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;
use pingora_http::ResponseHeader;

use super::body::Upload;
use super::forward::{self, Exchanged, Leg, Outcome};
use super::{headers, policy};
use crate::error::GatewayError;
use crate::routing::Affinity;

/// Serves one request: a plain one with [`forward::forward`], a disaggregated model's with its
/// two legs (`leg.pool` is its decode side).
pub async fn forward(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    upload: &mut Upload,
    out: &mut Exchanged,
) -> Outcome {
    let Some(prefill_pool) = leg.pool.prefill.as_ref() else {
        return forward::forward(session, leg, upload, out).await;
    };
    if let Err(e) = upload.read_all(session).await {
        return Outcome::Failed(e);
    }
    out.bytes_in = upload.read;
    let whole = upload.whole();
    // The backends may know the model under another id: splice just the value.
    let pool = leg.pool;
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
    let prompt = policy::prompt_blocks(prefill_pool, upload);
    let prefill_leg = Leg {
        pool: prefill_pool,
        affinity: Affinity {
            key: None,
            prompt: prompt.as_ref(),
        },
        ..*leg
    };
    let params = match prefill::run(session, &prefill_leg, &prefill_body, out).await {
        prefill::End::Params(p) => p,
        prefill::End::Answer(header, body) => return relay(session, leg, out, header, body).await,
        prefill::End::Failed(e) => return Outcome::Failed(e),
        prefill::End::ClientGone => return Outcome::Cut("client_gone"),
    };
    let decode_body = Bytes::from(body::decode(&whole, &layout, &params));
    // The decode side's policy gets its own prompt blocks (none unless it is cache_aware), and
    // its own budget, from the prefill leg's end.
    let prompt = policy::prompt_blocks(pool, upload);
    let prefill_took = out.prefill.as_ref().map(|p| p.duration).unwrap_or_default();
    let decode_leg = Leg {
        affinity: Affinity {
            key: leg.affinity.key,
            prompt: prompt.as_ref(),
        },
        deadline: leg.head.started + prefill_took + pool.timeouts.request,
        ..*leg
    };
    let mut decode = Upload::from_body(decode_body);
    forward::forward(session, &decode_leg, &mut decode, out).await
}

/// Relays a prefill server's non-retryable answer (its own error, e.g. a 400) to the client.
async fn relay(
    session: &mut ServerSession,
    leg: &Leg<'_>,
    out: &mut Exchanged,
    mut header: Box<ResponseHeader>,
    body: Bytes,
) -> Outcome {
    let backend = out
        .prefill
        .as_ref()
        .map(|p| format!("prefill={}", p.backend))
        .unwrap_or_default();
    headers::downstream_response(&mut header, &backend, out.attempts, &leg.head.request_id);
    header.remove_header("transfer-encoding");
    let _ = header.insert_header("content-length", body.len());
    headers::set_server(&mut header, leg.snapshot.server_header.as_deref());
    out.status = header.status.as_u16();
    out.response_started = true;
    out.first_byte = Some(Instant::now());
    out.bytes_out += body.len() as u64;
    if session.write_response_header(header).await.is_err()
        || session.write_response_body(body, true).await.is_err()
    {
        return Outcome::Cut("client_gone");
    }
    Outcome::Complete
}

/// `x-modelgate-backend` of a response: the backend, or both legs' for a disaggregated one.
pub fn receipt(out: &Exchanged, backend: &str) -> Option<String> {
    out.prefill
        .as_ref()
        .map(|p| format!("prefill={};decode={backend}", p.backend))
}
