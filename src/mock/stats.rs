//! Counters of one mock backend, shared between its connections and the test that owns it.
//!
//! Updated on every mock request (atomics, plus one short `Mutex` for the last `POST`'s body
//! digest and headers; the mock is not the gateway's hot path). Must not block or allocate
//! beyond what the last-request record needs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Counters readable by tests. All counts start at zero when the server starts.
#[derive(Debug, Default)]
pub struct MockStats {
    requests: AtomicU64,
    models_requests: AtomicU64,
    health_requests: AtomicU64,
    metrics_requests: AtomicU64,
    stream_requests: AtomicU64,
    completed_streams: AtomicU64,
    aborted: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    prompt_tokens: AtomicU64,
    generation_tokens: AtomicU64,
    last: Mutex<LastPost>,
}

/// What the last `POST` looked like.
#[derive(Debug, Default)]
struct LastPost {
    body: Option<bytes::Bytes>,
    body_sha256: Option<String>,
    body_len: usize,
    headers: Vec<(String, String)>,
    path: Option<String>,
}

impl MockStats {
    /// Every `POST` received (chat, completions, embeddings, pass-through), whatever its outcome.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `GET /v1/models` requests.
    pub fn models_requests(&self) -> u64 {
        self.models_requests.load(Ordering::Relaxed)
    }

    /// `GET /health` requests.
    pub fn health_requests(&self) -> u64 {
        self.health_requests.load(Ordering::Relaxed)
    }

    /// `GET /metrics` requests.
    pub fn metrics_requests(&self) -> u64 {
        self.metrics_requests.load(Ordering::Relaxed)
    }

    /// `POST`s answered with an SSE stream (the head was sent).
    pub fn stream_requests(&self) -> u64 {
        self.stream_requests.load(Ordering::Relaxed)
    }

    /// Streams that produced their `data: [DONE]`.
    pub fn completed_streams(&self) -> u64 {
        self.completed_streams.load(Ordering::Relaxed)
    }

    /// `POST`s whose client went away before the answer ended: a stream whose connection closed
    /// before `[DONE]`, a hung request that was dropped, or a body upload cut short. Injected
    /// closes ([`FailMode::CloseMidStream`](super::FailMode::CloseMidStream)) do not count;
    /// connections killed by [`MockServer::stop`](super::MockServer::stop) do.
    pub fn aborted(&self) -> u64 {
        self.aborted.load(Ordering::Relaxed)
    }

    /// `POST`s currently being answered (body read, generation, or streaming). This is also
    /// `vllm:num_requests_running` in `/metrics`, unless a [`MockLoad`](super::MockLoad)
    /// override is set.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Most `POST`s ever in flight at once (since the start or the last [`MockStats::reset_peak`]).
    /// Exact, not sampled: every `POST` raises it as it starts. Load tests use it to check a
    /// concurrency limit or how a policy spread the load.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Restarts the peak from the `POST`s in flight now (not from zero: requests still being
    /// answered keep counting). A `POST` starting concurrently is never lost from the new peak.
    pub fn reset_peak(&self) {
        // Zero first, then raise to the current count: a `POST` that starts in between raises
        // the peak itself (its `fetch_max` comes after our store), and one that started before
        // the store is in `in_flight` when we read it.
        self.peak_in_flight.store(0, Ordering::SeqCst);
        self.peak_in_flight
            .fetch_max(self.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Prompt tokens counted so far (request body bytes / 4 per generation request).
    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens.load(Ordering::Relaxed)
    }

    /// Completion tokens generated so far (streamed tokens count as they are produced).
    pub fn generation_tokens(&self) -> u64 {
        self.generation_tokens.load(Ordering::Relaxed)
    }

    /// Lowercase hex SHA-256 of the last `POST` body, `None` before the first `POST`.
    pub fn last_body_sha256(&self) -> Option<String> {
        self.last().body_sha256.clone()
    }

    /// The last `POST` body, as received.
    pub fn last_body(&self) -> Option<bytes::Bytes> {
        self.last().body.clone()
    }

    /// Length in bytes of the last `POST` body (0 before the first).
    pub fn last_body_len(&self) -> usize {
        self.last().body_len
    }

    /// Headers of the last `POST`, names lowercase, in the order received (values decoded
    /// lossily as UTF-8).
    pub fn last_headers(&self) -> Vec<(String, String)> {
        self.last().headers.clone()
    }

    /// Value of one header of the last `POST` (name compared case-insensitively).
    pub fn last_header(&self, name: &str) -> Option<String> {
        self.last()
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }

    /// Path (without query) of the last `POST`.
    pub fn last_path(&self) -> Option<String> {
        self.last().path.clone()
    }

    fn last(&self) -> MutexGuard<'_, LastPost> {
        // A panic while holding this lock can only come from a failing test; the data is still
        // a consistent snapshot of plain values, so keep serving it.
        self.last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn count_models(&self) {
        self.models_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_health(&self) {
        self.health_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_metrics(&self) {
        self.metrics_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_stream(&self) {
        self.stream_requests.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_prompt_tokens(&self, n: u64) {
        self.prompt_tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn add_generation_tokens(&self, n: u64) {
        self.generation_tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_post(
        &self,
        path: &str,
        body: bytes::Bytes,
        body_sha256: String,
        headers: Vec<(String, String)>,
    ) {
        let mut last = self.last();
        last.body_sha256 = Some(body_sha256);
        last.body_len = body.len();
        last.body = Some(body);
        last.headers = headers;
        last.path = Some(path.to_owned());
    }
}

/// Counts one `POST` as in flight until dropped. Dropped without [`PostGuard::finish`] means the
/// client went away (or the connection was killed) first, which counts as aborted.
#[derive(Debug)]
pub(crate) struct PostGuard {
    stats: Arc<MockStats>,
    finished: bool,
}

impl PostGuard {
    /// Counts a new `POST` (total and in flight).
    pub(crate) fn start(stats: Arc<MockStats>) -> PostGuard {
        stats.requests.fetch_add(1, Ordering::Relaxed);
        // The value this increment produced is exact (each RMW sees the one before it), so the
        // maximum of them is the true peak, with no sampling gap.
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        PostGuard {
            stats,
            finished: false,
        }
    }

    /// The answer is complete (or deliberately cut by the mock): not an abort.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }

    /// The stream reached `data: [DONE]`.
    pub(crate) fn finish_stream(&mut self) {
        self.stats.completed_streams.fetch_add(1, Ordering::Relaxed);
        self.finished = true;
    }

    pub(crate) fn stats(&self) -> &MockStats {
        &self.stats
    }
}

impl Drop for PostGuard {
    fn drop(&mut self) {
        // Count the abort before leaving in-flight, so a test that waits for in_flight() == 0
        // then reads aborted() sees it.
        if !self.finished {
            self.stats.aborted.fetch_add(1, Ordering::SeqCst);
        }
        self.stats.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
