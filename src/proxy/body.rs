//! The request body: bounded pre-read until `model` is known, then streamed upstream
//! (request path).
//!
//! The body is read only until the scanner has the complete top-level `model`; the bytes read so
//! far are kept and written upstream first, byte-exact, and the rest streams from the client
//! straight to the backend while the scanner keeps watching for a second `model` key. Bytes are
//! kept for a retry only up to [`RETRY_BODY_LIMIT`]; a longer body can still be retried after a
//! connection failure (nothing of it was consumed beyond what we hold) but not after it streamed.
//! Because we write the body ourselves, Pingora's 64 KiB retry-buffer replay is never used.

use std::time::Duration;

use bytes::Bytes;
use pingora_core::protocols::http::ServerSession;

use super::disagg::body::Layout;
use crate::error::GatewayError;
use crate::scan::multipart::{self, MultipartModelScanner};
use crate::scan::{Capture, ModelScanner, ScanError, ScanStatus};

/// The body scanner: JSON (the OpenAI API) or `multipart/form-data` (audio uploads).
#[derive(Debug)]
enum Scanner {
    Json(Box<ModelScanner>),
    Multipart(Box<MultipartModelScanner>),
}

impl Scanner {
    fn feed(&mut self, chunk: &[u8]) -> Result<ScanStatus, ScanError> {
        match self {
            Scanner::Json(s) => s.feed(chunk),
            Scanner::Multipart(s) => s.feed(chunk),
        }
    }

    fn finish(&mut self) -> Result<(), ScanError> {
        match self {
            Scanner::Json(s) => s.finish().map(|_| ()),
            Scanner::Multipart(s) => s.finish().map(|_| ()),
        }
    }

    fn model(&self) -> Option<&str> {
        match self {
            Scanner::Json(s) => s.model(),
            Scanner::Multipart(s) => s.model(),
        }
    }

    fn model_span(&self) -> Option<std::ops::Range<usize>> {
        match self {
            Scanner::Json(s) => s.model_span(),
            Scanner::Multipart(s) => s.model_span(),
        }
    }

    fn captures_done(&self) -> bool {
        match self {
            Scanner::Json(s) => s.captures_done(),
            Scanner::Multipart(_) => true,
        }
    }

    /// The value as it must appear in the body: a JSON string, or raw form-field bytes.
    fn encode(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Scanner::Json(_) => serde_json::to_vec(name).ok(),
            Scanner::Multipart(_) => Some(name.as_bytes().to_vec()),
        }
    }
}

/// The pre-read keeps reading for a sticky key (`user`, prompt prefix) at most this far.
const CAPTURE_READ_LIMIT: u64 = RETRY_BODY_LIMIT;

/// Bytes of request body kept for replay on another backend.
pub const RETRY_BODY_LIMIT: u64 = 4 * 1024 * 1024;

/// The request body as far as it has been read.
#[derive(Debug)]
pub struct Upload {
    scanner: Scanner,
    /// Every byte read so far while `replayable`, else only what is not yet sent upstream.
    chunks: Vec<Bytes>,
    /// Total bytes read from the client.
    pub read: u64,
    /// The client's body is fully read.
    pub done: bool,
    /// `chunks` holds the whole body read so far, so another attempt can resend it.
    pub replayable: bool,
    limit: u64,
    /// Bytes added (or removed, negative) by rewriting `model`: the upstream Content-Length
    /// changes by this much.
    pub length_delta: i64,
    /// `limits.body_timeout_ms` from the start of the body: the whole body must be in by then.
    body_deadline: tokio::time::Instant,
    /// The body sent upstream is the gateway's own (a disaggregated leg) of exactly this many
    /// bytes: it goes with `Content-Length`, whatever the client's framing was.
    pub fixed_length: Option<u64>,
}

impl Upload {
    /// Read the body until `model` is known (or the body ends), and, when `capture` asks for
    /// sticky keys, until they are known too (at most `CAPTURE_READ_LIMIT` bytes). Answers
    /// 100-continue first. A body without `model` is not an error here: the caller may route
    /// it by the path or `default_model`. A `multipart/form-data` body is routed by its `model`
    /// form field.
    pub async fn preread(
        session: &mut ServerSession,
        limit: u64,
        capture: Capture,
        body_timeout: Duration,
    ) -> Result<Upload, GatewayError> {
        let boundary = session
            .req_header()
            .headers
            .get("content-type")
            .filter(|v| {
                v.as_bytes()
                    .get(..19)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"multipart/form-data"))
            })
            .and_then(|v| multipart::boundary(v.as_bytes()));
        let scanner = match boundary {
            Some(b) => Scanner::Multipart(Box::new(MultipartModelScanner::new(&b))),
            None => Scanner::Json(Box::new(ModelScanner::with_capture(capture))),
        };
        let mut up = Upload {
            scanner,
            chunks: Vec::new(),
            read: 0,
            done: false,
            replayable: true,
            limit,
            length_delta: 0,
            body_deadline: tokio::time::Instant::now() + body_timeout,
            fixed_length: None,
        };
        if let Some(len) = content_length(session)? {
            if len > limit {
                return Err(GatewayError::PayloadTooLarge { limit });
            }
        }
        if expects_continue(session) {
            session
                .write_continue_response()
                .await
                .map_err(|_| GatewayError::BodyRead)?;
        }
        let mut found = false;
        loop {
            match up.next_chunk(session).await? {
                Some(chunk) => {
                    let status = up.scanner.feed(&chunk).map_err(GatewayError::BadBody)?;
                    up.chunks.push(chunk);
                    found |= status == ScanStatus::Found;
                    if found && (up.scanner.captures_done() || up.read >= CAPTURE_READ_LIMIT) {
                        return Ok(up);
                    }
                }
                None => return up.finish_scan().map(|()| up),
            }
        }
    }

    /// A body the gateway made (a disaggregated leg): whole, replayable, sent with
    /// `Content-Length`.
    pub fn from_body(body: Bytes) -> Upload {
        // Scanned once so that the end of the body finds the scan complete.
        let mut scanner = ModelScanner::new();
        let _ = scanner.feed(&body);
        Upload {
            scanner: Scanner::Json(Box::new(scanner)),
            read: body.len() as u64,
            done: true,
            replayable: true,
            limit: u64::MAX,
            length_delta: 0,
            body_deadline: tokio::time::Instant::now(),
            fixed_length: Some(body.len() as u64),
            chunks: vec![body],
        }
    }

    /// Reads the rest of the body into the held bytes (a disaggregated request needs all of it
    /// twice); more than [`RETRY_BODY_LIMIT`] is a 413.
    pub async fn read_all(&mut self, session: &mut ServerSession) -> Result<(), GatewayError> {
        let too_large = GatewayError::PayloadTooLarge {
            limit: RETRY_BODY_LIMIT,
        };
        if !self.replayable {
            return Err(too_large);
        }
        while let Some(chunk) = self.next_chunk(session).await? {
            self.scanner.feed(&chunk).map_err(GatewayError::BadBody)?;
            if self.read > RETRY_BODY_LIMIT {
                return Err(too_large);
            }
            self.chunks.push(chunk);
        }
        self.finish_scan()
    }

    /// The whole body as read (after [`read_all`](Self::read_all)).
    pub fn whole(&self) -> Bytes {
        match self.chunks.as_slice() {
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        }
    }

    /// Where the disaggregated legs' bodies are edited: the top-level members the scanner
    /// placed ([`crate::scan::MEMBERS`]), the closing brace, and the `model` value with
    /// `served` (a JSON string) in its place when given. `None` for a body that is not JSON.
    pub fn layout<'a>(&'a self, served: Option<&'a [u8]>) -> Option<Layout<'a>> {
        let Scanner::Json(s) = &self.scanner else {
            return None;
        };
        let (members, end) = s.members();
        Some(Layout {
            members,
            end: end?,
            model: s.model_span().zip(served),
        })
    }

    /// The top-level `user`, when the scanner captured it.
    pub fn user(&self) -> Option<&str> {
        match &self.scanner {
            Scanner::Json(s) => s.user(),
            Scanner::Multipart(_) => None,
        }
    }

    /// The first bytes of the prompt, when the scanner captured them.
    pub fn prompt_prefix(&self) -> Option<&[u8]> {
        match &self.scanner {
            Scanner::Json(s) => s.prompt_prefix(),
            Scanner::Multipart(_) => None,
        }
    }

    /// The raw bytes of the first top-level `messages` or `prompt` value that the pre-read
    /// holds (at most `max` of them, possibly split over chunks), and the value's whole length
    /// as far as known (the bytes read so far when it has not ended). `None` when the body has
    /// no such member or the scanner was not asked for it. Call before
    /// [`rewrite_model`](Self::rewrite_model), which moves the bytes.
    pub fn prompt_bytes(&self, max: usize) -> Option<(impl Iterator<Item = &[u8]>, usize)> {
        let Scanner::Json(s) = &self.scanner else {
            return None;
        };
        let span = s.prompt_span()?;
        let total = span.len();
        let end = span.end.min(span.start.saturating_add(max));
        let mut at = 0usize;
        let pieces = self.chunks.iter().filter_map(move |c| {
            let (from, to) = (at, at + c.len());
            at = to;
            let (lo, hi) = (span.start.max(from), end.min(to));
            (lo < hi).then(|| &c[lo - from..hi - from])
        });
        Some((pieces, total))
    }

    /// The whole body with the `model` value replaced by `name`, if the whole body is held
    /// (read to its end and kept for replay). For shadow copies.
    pub fn body_with_model(&self, name: &str) -> Option<Bytes> {
        if !self.done || !self.replayable {
            return None;
        }
        let span = self.scanner.model_span()?;
        let start = span.start;
        let end = usize::try_from(span.end as i64 + self.length_delta).ok()?;
        let mut body = Vec::with_capacity(self.read as usize + name.len());
        for c in &self.chunks {
            body.extend_from_slice(c);
        }
        if end > body.len() || start > end {
            return None;
        }
        let value = self.scanner.encode(name)?;
        body.splice(start..end, value);
        Some(Bytes::from(body))
    }

    /// Replace the `model` value's bytes (quotes included) with `name` as a JSON string; nothing
    /// else in the body changes. The value lies within the pre-read bytes, which are all held.
    pub fn rewrite_model(&mut self, name: &str) -> bool {
        let Some(span) = self.scanner.model_span() else {
            return false;
        };
        let held: usize = self.chunks.iter().map(Bytes::len).sum();
        if span.end > held || !self.replayable {
            return false;
        }
        let Some(value) = self.scanner.encode(name) else {
            return false;
        };
        let mut body = Vec::with_capacity(held + value.len());
        for c in &self.chunks {
            body.extend_from_slice(c);
        }
        body.splice(span.clone(), value.iter().copied());
        self.length_delta += value.len() as i64 - (span.end - span.start) as i64;
        self.chunks = vec![Bytes::from(body)];
        true
    }

    fn finish_scan(&mut self) -> Result<(), GatewayError> {
        match self.scanner.finish() {
            Ok(()) => Ok(()),
            // Routed by the path or `default_model`, or refused by the caller.
            Err(ScanError::MissingModel) => Ok(()),
            Err(e) => Err(GatewayError::BadBody(e)),
        }
    }

    /// The model named by the body.
    pub fn model(&self) -> Option<&str> {
        self.scanner.model()
    }

    async fn next_chunk(
        &mut self,
        session: &mut ServerSession,
    ) -> Result<Option<Bytes>, GatewayError> {
        loop {
            if self.done {
                return Ok(None);
            }
            let read =
                tokio::time::timeout_at(self.body_deadline, session.read_request_body()).await;
            match read {
                // Pingora can hand out an empty piece of a chunked body (a chunk header read
                // without its data). Written upstream, an empty piece is the chunked terminator:
                // the backend would see the body end early. Skip it.
                Ok(Ok(Some(chunk))) if chunk.is_empty() => continue,
                Ok(Ok(Some(chunk))) => {
                    self.read += chunk.len() as u64;
                    if self.read > self.limit {
                        return Err(GatewayError::PayloadTooLarge { limit: self.limit });
                    }
                    return Ok(Some(chunk));
                }
                Ok(Ok(None)) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Err(_)) => return Err(GatewayError::BodyRead),
                Err(_) => return Err(GatewayError::BodyTimeout),
            }
        }
    }

    /// The bytes to send first on a new attempt (all of the body read so far).
    pub fn held(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Read the next chunk of the rest of the body for streaming upstream; keeps it for replay
    /// while under [`RETRY_BODY_LIMIT`]. A second top-level `model` is a 400.
    pub async fn next_for_upstream(
        &mut self,
        session: &mut ServerSession,
    ) -> Result<Option<Bytes>, GatewayError> {
        let Some(chunk) = self.next_chunk(session).await? else {
            self.finish_scan()?;
            return Ok(None);
        };
        self.scanner.feed(&chunk).map_err(GatewayError::BadBody)?;
        if self.replayable && self.read <= RETRY_BODY_LIMIT {
            self.chunks.push(chunk.clone());
        } else {
            self.replayable = false;
            self.chunks = Vec::new();
        }
        Ok(Some(chunk))
    }

    /// Whether another attempt can resend the whole body.
    pub fn can_replay(&self) -> bool {
        self.replayable
    }

    /// Drop the held bytes once a response has started (no more retries possible).
    pub fn release(&mut self) {
        self.chunks = Vec::new();
        self.replayable = false;
    }
}

fn content_length(session: &ServerSession) -> Result<Option<u64>, GatewayError> {
    let req = session.req_header();
    let mut values = req.headers.get_all("content-length").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(GatewayError::BadRequest(
            "duplicate Content-Length headers are not allowed",
        ));
    }
    if req.headers.contains_key("transfer-encoding") {
        return Err(GatewayError::BadRequest(
            "Content-Length and Transfer-Encoding must not both be set",
        ));
    }
    first
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or(GatewayError::BadRequest("invalid Content-Length"))
}

fn expects_continue(session: &ServerSession) -> bool {
    session
        .req_header()
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
