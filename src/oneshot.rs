//! The one-shot upstream exchange: one request to a backend on a pooled Pingora connector, its
//! whole answer read back (control plane, and tasks spawned off the request path).
//!
//! Shared by the health probe (`GET /v1/models`), the `load_aware` scrape (`GET /metrics`) and
//! the shadow copy (the request's body, answer discarded). A connection whose answer was read to
//! its end goes back to the connector's pool, idle at most [`POOL_IDLE`]; one that failed or was
//! cut short is dropped. A pooled connection the backend closed while it idled is replaced by a
//! fresh one ([`STALE_RETRIES`]). The request path's own exchange (`proxy::forward`) has first-
//! byte, idle and total timeouts of its own and does not come here.

use std::time::Duration;

use pingora_core::connectors::http::v1::Connector;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::RequestHeader;

/// How long a connection may idle in the pool: under uvicorn's default 5 s keep-alive, so the
/// pool drops it before vLLM closes it under the next request.
pub const POOL_IDLE: Duration = Duration::from_secs(4);

/// Fresh-connection retries after a pooled keep-alive connection turned out to have been closed
/// by the backend (it failed before any response byte): nothing reached the backend's
/// application, so these are not attempts. The request path (`proxy::forward`) uses the same
/// number. Without them a probe that met a connection the backend had just closed marked a
/// healthy backend down.
pub const STALE_RETRIES: u32 = 2;

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
    let attempts = async {
        let mut stale_left = STALE_RETRIES;
        loop {
            match run(connector, peer, req.clone(), body, keep).await {
                Err(Failed { stale: true, .. }) if stale_left > 0 => stale_left -= 1,
                result => return result.map_err(|f| f.error),
            }
        }
    };
    match tokio::time::timeout(timeout, attempts).await {
        Ok(result) => result,
        Err(_) => Err(OneShotError::Timeout(timeout)),
    }
}

/// A failed exchange; `stale`: on a pooled connection, before any response byte.
struct Failed {
    error: OneShotError,
    stale: bool,
}

async fn run(
    connector: &Connector,
    peer: &HttpPeer,
    req: RequestHeader,
    body: Option<&[u8]>,
    keep: Body,
) -> Result<Answer, Failed> {
    let (mut session, reused) = connector.get_http_session(peer).await.map_err(|e| Failed {
        error: OneShotError::Connect(e.etype().as_str().to_string()),
        stale: false,
    })?;
    let request = |e: Box<pingora_error::Error>| Failed {
        error: OneShotError::Request(e.to_string()),
        stale: reused,
    };
    session
        .write_request_header(Box::new(req))
        .await
        .map_err(request)?;
    if let Some(body) = body {
        session.write_body(body).await.map_err(request)?;
    }
    session.finish_body().await.map_err(request)?;
    let status = session
        .read_resp_header_parts()
        .await
        .map_err(|e| Failed {
            error: OneShotError::Response(e.to_string()),
            stale: reused,
        })?
        .status
        .as_u16();
    let kept = read_body(&mut session, keep)
        .await
        .map_err(|error| Failed {
            error,
            stale: false,
        })?;
    // Read to its end: the connection is reusable (Pingora still checks keep-alive).
    connector
        .release_http_session(session, peer, Some(POOL_IDLE))
        .await;
    Ok(Answer { status, body: kept })
}

/// The answer's body, kept or read past per `keep`.
async fn read_body(
    session: &mut pingora_core::protocols::http::v1::client::HttpSession,
    keep: Body,
) -> Result<Vec<u8>, OneShotError> {
    let mut kept = Vec::new();
    while let Some(chunk) = session
        .read_body_bytes()
        .await
        .map_err(|e| OneShotError::Response(e.to_string()))?
    {
        if let Body::Keep(max) = keep {
            if kept.len() + chunk.len() > max {
                // Dropping the session closes the connection: the rest is never read.
                return Err(OneShotError::TooLarge(max));
            }
            kept.extend_from_slice(&chunk);
        }
    }
    Ok(kept)
}
