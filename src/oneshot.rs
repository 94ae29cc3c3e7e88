//! The one-shot upstream exchange: one request to a backend on a pooled Pingora connector, its
//! whole answer read back (control plane, and tasks spawned off the request path).
//!
//! Shared by the health probe (`GET /v1/models`), the `load_aware` scrape (`GET /metrics`) and
//! the shadow copy (the request's body, answer discarded). A connection whose answer was read to
//! its end goes back to the connector's pool, idle at most [`POOL_IDLE`]; one that failed or was
//! cut short is dropped. The request path's own exchange (`proxy::forward`) has first-
//! byte, idle and total timeouts of its own and does not come here.

use std::time::Duration;

use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

/// How long a connection may idle in the pool: under uvicorn's default 5 s keep-alive, so the
/// pool drops it before vLLM closes it under the next request.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// What to do with the answer's body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// Keep it, failing past this many bytes (the connection is then dropped unread).
    Keep(usize),
    /// Read it to its end and drop it (a shadow copy's answer).
    Discard,
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Empty for [`Body::Discard`].
    pub body: Vec<u8>,
}

/// Why an exchange failed (for the log; never sent to a client).
#[derive(Debug, thiserror::Error)]
pub enum OneShotError {
    #[error("connect failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
    #[error("response failed: {0}")]
    Response(String),
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// Send `req` with `body` (none: an empty body) to `peer` and read the answer, all within
/// `timeout`.
pub async fn exchange(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    body: Option<&[u8]>,
    keep: Body,
    timeout: Duration,
) -> Result<Answer, OneShotError> {
    match tokio::time::timeout(timeout, run(connector, peer, req, body, keep)).await {
        Ok(result) => result,
        Err(_) => Err(OneShotError::Timeout(timeout)),
    }
}

async fn run(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    body: Option<&[u8]>,
    keep: Body,
) -> Result<Answer, OneShotError> {
    let (mut session, _reused) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| OneShotError::Connect(e.etype().as_str().to_string()))?;
    let request = |e: Box<pingora_error::Error>| OneShotError::Request(e.to_string());
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(request)?;
    if let Some(body) = body {
        session.write_body(body).await.map_err(request)?;
    }
    session.finish_body().await.map_err(request)?;
    let response = |e: Box<pingora_error::Error>| OneShotError::Response(e.to_string());
    let status = session
        .read_resp_header_parts()
        .await
        .map_err(response)?
        .status
        .as_u16();
    let mut kept = Vec::new();
    while let Some(chunk) = session.read_body_bytes().await.map_err(response)? {
        if let Body::Keep(max) = keep {
            if kept.len() + chunk.len() > max {
                // Dropping the session closes the connection: the rest is never read.
                return Err(OneShotError::TooLarge(max));
            }
            kept.extend_from_slice(&chunk);
        }
    }
    // Read to its end: the connection is reusable (Pingora still checks keep-alive).
    connector
        .release_http_session(session, peer, Some(POOL_IDLE))
        .await;
    Ok(Answer { status, body: kept })
}
