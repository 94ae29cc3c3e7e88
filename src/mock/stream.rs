//! Response bodies of the mock: whole bodies, SSE generation streams, and the bodies that
//! inject mid-answer failures (cut connection, silence).
//!
//! Runs per mock request. A stream is generated lazily as hyper polls it, one chunk per frame,
//! so a chunk is flushed before the next one is produced, and a client that goes away drops
//! the stream (and stops generation) at once. Must not buffer a whole stream.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

use super::responses::{Event, Generation};
use super::stats::PostGuard;

/// Body type of every mock response.
pub(crate) type MockBody = UnsyncBoxBody<Bytes, MockBodyError>;

/// Why a mock body ended early. hyper answers a body error by dropping the connection, which
/// is exactly the injected failure.
#[derive(Debug, thiserror::Error)]
pub enum MockBodyError {
    /// [`FailMode::CloseMidStream`](super::FailMode::CloseMidStream) cut the answer.
    #[error("mock backend closed the connection mid-answer (injected failure)")]
    InjectedClose,
}

/// A failure to inject part-way through a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MidFailure {
    /// Drop the connection.
    Close,
    /// Send nothing more, keep the connection open.
    Hang,
}

/// A whole body sent at once.
pub(crate) fn full(bytes: Bytes) -> MockBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

/// A non-stream answer cut after half its bytes. The caller sets `content-length` to the full
/// length so the client sees a truncated message. `guard` stays in flight until the cut (or,
/// for [`MidFailure::Hang`], until the client goes away: an abort).
pub(crate) fn half_then(bytes: Bytes, failure: MidFailure, guard: PostGuard) -> MockBody {
    let half = bytes.slice(..bytes.len() / 2);
    let state = (Some(half), Some(guard));
    let body = stream::unfold(state, move |(half, guard)| async move {
        let mut guard = guard?;
        if let Some(half) = half {
            return Some((Ok(Frame::data(half)), (None, Some(guard))));
        }
        match failure {
            MidFailure::Close => {
                // hyper drops its write buffer with the connection on a body error: let it
                // flush the half body first.
                tokio::task::yield_now().await;
                guard.finish();
                Some((Err(MockBodyError::InjectedClose), (None, None)))
            }
            MidFailure::Hang => {
                std::future::pending::<()>().await;
                None
            }
        }
    });
    StreamBody::new(body).boxed_unsync()
}

/// Timing and failure of one SSE stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamPlan {
    /// Delay before the first event.
    pub(crate) ttft: Duration,
    /// Delay before each token after the first.
    pub(crate) itl: Duration,
    /// Events sent before the failure, and which failure.
    pub(crate) fail: Option<(usize, MidFailure)>,
}

struct StreamState {
    generation: Generation,
    plan: StreamPlan,
    next: usize,
    guard: PostGuard,
}

/// The SSE body of `generation`: `data: {json}\n\n` events, one frame each, ending with
/// `data: [DONE]\n\n` unless `plan.fail` cuts it first (never later than just before
/// `[DONE]`).
pub(crate) fn sse(generation: Generation, plan: StreamPlan, guard: PostGuard) -> MockBody {
    let state = StreamState {
        generation,
        plan,
        next: 0,
        guard,
    };
    let body = stream::unfold(state, |mut st| async move {
        let i = st.next;
        let event = st.generation.event(i)?;
        if let Some((after, failure)) = st.plan.fail {
            let last_before_done = st.generation.event_count().saturating_sub(1);
            if i == after.min(last_before_done) {
                match failure {
                    MidFailure::Close => {
                        // hyper drops its write buffer with the connection on a body error:
                        // let it flush the chunks sent so far first.
                        tokio::task::yield_now().await;
                        st.guard.finish();
                        // Past the end: the next poll (if any) ends the stream.
                        st.next = usize::MAX;
                        return Some((Err(MockBodyError::InjectedClose), st));
                    }
                    MidFailure::Hang => {
                        std::future::pending::<()>().await;
                        return None;
                    }
                }
            }
        }
        match event {
            _ if i == 0 => sleep_or_yield(st.plan.ttft).await,
            Event::Token(k) if k > 0 => sleep_or_yield(st.plan.itl).await,
            // Yield so that hyper flushes the previous chunk as its own write.
            _ => tokio::task::yield_now().await,
        }
        match event {
            Event::Token(_) => st.guard.stats().add_generation_tokens(1),
            Event::Done => st.guard.finish_stream(),
            _ => {}
        }
        st.next = i + 1;
        let chunk = st.generation.render(event);
        Some((Ok(Frame::data(chunk)), st))
    });
    StreamBody::new(body).boxed_unsync()
}

async fn sleep_or_yield(delay: Duration) {
    if delay.is_zero() {
        tokio::task::yield_now().await;
    } else {
        tokio::time::sleep(delay).await;
    }
}
