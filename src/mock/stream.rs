//! Response bodies of the mock: whole bodies, SSE generation streams, and the bodies that
//! inject mid-answer failures (cut connection, silence).
//!
//! Runs per mock request. A stream is generated lazily as hyper polls it, one chunk per frame,
//! so a chunk is flushed before the next one is produced, and a client that goes away drops
//! the stream (and stops generation) at once. Its pace is either fixed delays or, on a
//! simulated server, the engine's progress. Must not buffer a whole stream.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::sync::watch;

use super::responses::{Event, Generation};
use super::sim::{self, Progress};
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
    /// The simulated engine stopped (its server is shutting down) before the answer ended.
    #[error("simulated engine stopped mid-answer")]
    EngineStopped,
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

/// What paces the events of one SSE stream.
#[derive(Debug)]
pub(crate) enum Pace {
    /// `ttft` before the first event, `itl` before each token after the first.
    Fixed { ttft: Duration, itl: Duration },
    /// Each event waits until the simulated engine has produced the tokens it shows.
    Engine(watch::Receiver<Progress>),
}

/// Timing and failure of one SSE stream.
#[derive(Debug)]
pub(crate) struct StreamPlan {
    pub(crate) pace: Pace,
    /// Events sent before the failure, and which failure.
    pub(crate) fail: Option<(usize, MidFailure)>,
}

struct StreamState {
    generation: Generation,
    plan: StreamPlan,
    next: usize,
    guard: PostGuard,
}

impl StreamState {
    /// Waits until event `i` may be sent.
    async fn pace(&mut self, i: usize, event: Event) -> Result<(), MockBodyError> {
        match &mut self.plan.pace {
            Pace::Fixed { ttft, itl } => {
                match event {
                    _ if i == 0 => sleep_or_yield(*ttft).await,
                    Event::Token(k) if k > 0 => sleep_or_yield(*itl).await,
                    // Yield so that hyper flushes the previous chunk as its own write.
                    _ => tokio::task::yield_now().await,
                }
                Ok(())
            }
            Pace::Engine(progress) => {
                let needed = tokens_shown(event, self.generation.completion_tokens);
                if progress.borrow().tokens >= needed {
                    // Already produced: still flush the previous chunk as its own write.
                    tokio::task::yield_now().await;
                }
                let seen = sim::wait_for_tokens(progress, needed)
                    .await
                    .ok_or(MockBodyError::EngineStopped)?;
                self.generation.cached_tokens = seen.cached_tokens.map(u64::from);
                Ok(())
            }
        }
    }
}

/// Generated tokens an event needs to exist: the role chunk comes with the first token (as
/// vLLM sends it), token `k` needs `k + 1`, and the end needs them all.
fn tokens_shown(event: Event, completion_tokens: usize) -> u32 {
    let tokens = match event {
        Event::Role => 1,
        Event::Token(k) => k + 1,
        Event::Finish | Event::Usage | Event::Done => completion_tokens,
    };
    u32::try_from(tokens).unwrap_or(u32::MAX)
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
        if let Err(e) = st.pace(i, event).await {
            // Past the end: the next poll (if any) ends the stream.
            st.next = usize::MAX;
            return Some((Err(e), st));
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
