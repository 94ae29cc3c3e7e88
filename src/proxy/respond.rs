//! The gateway's own answers and the end of a request's session (request path): a JSON body
//! for `GET /v1/models`, the OpenAI-shaped error for every [`GatewayError`], and whether the
//! connection carries another request.

use bytes::Bytes;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;

use super::forward::{Exchanged, Outcome};
use super::head::Head;
use super::headers;
use super::observe::Ending;
use crate::error::GatewayError;
use crate::state::Snapshot;

/// Write a complete JSON response (200) from the gateway itself.
pub async fn send_json(
    session: &mut ServerSession,
    head: &Head,
    snapshot: &Snapshot,
    body: Bytes,
    out: &mut Exchanged,
) -> Outcome {
    let Ok(mut header) = pingora_http::ResponseHeader::build(200, Some(4)) else {
        return Outcome::Failed(GatewayError::Upstream);
    };
    let _ = header.insert_header("content-type", "application/json");
    let _ = header.insert_header("content-length", body.len());
    let _ = header.insert_header("x-request-id", head.request_id.as_str());
    headers::set_server(&mut header, snapshot.server_header.as_deref());
    out.status = 200;
    out.response_started = true;
    out.first_byte = Some(std::time::Instant::now());
    let head_only = session.req_header().method == http::Method::HEAD;
    if session
        .write_response_header(Box::new(header))
        .await
        .is_err()
    {
        return Outcome::Cut("client_gone");
    }
    if !head_only {
        out.bytes_out += body.len() as u64;
        if session.write_response_body(body, true).await.is_err() {
            return Outcome::Cut("client_gone");
        }
    }
    Outcome::Complete
}

/// Answer what the exchange left unanswered: a failure gets its error response; a cut gets
/// nothing (bytes may already have gone out: the connection is closed, never given an error
/// body or a clean terminator). Returns how the request ended, for the log.
pub async fn settle(
    session: &mut ServerSession,
    head: &Head,
    snapshot: &Snapshot,
    outcome: Outcome,
    out: &mut Exchanged,
) -> Ending {
    match outcome {
        Outcome::Complete => Ending::default(),
        Outcome::Failed(e) => {
            send_error(session, head, snapshot, &e, out).await;
            Ending {
                cause: Some(e.cause()),
                cut: false,
            }
        }
        Outcome::Cut(cause) => {
            if out.response_started && cause != "client_gone" {
                flush_cut_response(session, snapshot).await;
            }
            if out.status == 0 {
                // Nothing was sent: log it the way nginx does a client that went away.
                out.status = 499;
            }
            Ending {
                cause: Some(cause),
                cut: true,
            }
        }
    }
}

/// Send what a cut response already wrote, then close the write side (FIN). A `Content-Length`
/// response's header and first bytes may still be held (write coalescing), and a session
/// dropped on an error is not flushed: without this a non-stream answer the backend breaks off
/// reaches the client as nothing at all, which clients take for a connection failure and retry.
/// Bounded by the client write timeout (the client may not be reading).
async fn flush_cut_response(session: &mut ServerSession, snapshot: &Snapshot) {
    let limit = snapshot.limits.client_write_timeout;
    let _ = pingora_timeout::timeout(limit, session.shutdown()).await;
}

/// Render a gateway error to the client. The connection is closed afterwards when the request
/// body was not read to its end (so no stray body bytes are parsed as the next request).
async fn send_error(
    session: &mut ServerSession,
    head: &Head,
    snapshot: &Snapshot,
    error: &GatewayError,
    out: &mut Exchanged,
) {
    let (mut header, body) = error.response(Some(&head.request_id));
    headers::set_server(&mut header, snapshot.server_header.as_deref());
    out.status = error.status();
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
        .write_response_header(Box::new(header))
        .await
        .is_ok()
    {
        out.bytes_out += body.len() as u64;
        let _ = session.write_response_body(body, true).await;
    }
}

/// The end of the request's session: the stream back for the next request when the response
/// is complete and the connection may be kept (the keep-alive loop goes on), else `None`.
pub async fn reuse(session: ServerSession, ending: Ending) -> Option<ReusedHttpStream> {
    if ending.cut {
        return None;
    }
    let settings = HttpPersistentSettings::for_session(&session);
    let reusable = session.finish().await.ok().flatten()?;
    Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
}
