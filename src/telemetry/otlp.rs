//! Optional span exporter: OTLP/HTTP with JSON encoding (`POST {endpoint}/v1/traces`).
//!
//! [`Exporter::record`] is called on the request path and only does a `try_send` into a bounded
//! channel: it never blocks, awaits, locks or allocates beyond the span itself; a full channel
//! drops the span and counts it. One background task per exporter (control plane) batches spans
//! (up to 512, or 1 s after the first), encodes them and POSTs them with a 5 s timeout over
//! one reused HTTP/1.1 connection. A failed batch is dropped and counted, never retried beyond
//! one fresh-connection attempt, and logged at most once per 30 s. The task flushes what is
//! queued and exits when the last [`Exporter`] clone is dropped.
//!
//! Only plain `http://` is supported (no TLS): point it at a local collector or sidecar.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::traceparent::{to_hex, TraceContext};

/// Spans queued between the request path and the export task. At 4096 a collector outage of a
/// few seconds at a few hundred requests per second is absorbed; beyond that spans are dropped
/// (and counted) rather than growing memory.
const CHANNEL_CAPACITY: usize = 4096;
/// Most spans in one POST; the OpenTelemetry SDKs' default `max_export_batch_size`.
const MAX_BATCH: usize = 512;
/// How long the first span of a batch waits for company before the batch is sent.
const BATCH_WINDOW: Duration = Duration::from_secs(1);
/// Limit on one export (connect, send, read the response); a hung collector costs one batch.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum gap between two export-failure warnings, so a dead collector does not flood logs.
const WARN_INTERVAL: Duration = Duration::from_secs(30);
/// OTLP `Span.kind` for `SPAN_KIND_SERVER`.
const SPAN_KIND_SERVER: u8 = 2;
/// OTLP `Status.code` values.
const STATUS_CODE_OK: u8 = 1;
const STATUS_CODE_ERROR: u8 = 2;
/// The instrumentation scope name in every export.
const SCOPE_NAME: &str = "modelgate";

/// One finished span, handed to [`Exporter::record`]. Exported as an OTLP SERVER span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The request's trace identity: `trace_id`, `span_id` (this span), `parent_span_id` (the
    /// caller's span, if any) and `tracestate` are exported; `flags` decides sampling.
    pub trace: TraceContext,
    /// Span name, e.g. `"POST /v1/chat/completions"` (low cardinality: no ids in it).
    pub name: Cow<'static, str>,
    /// When the request arrived.
    pub start: SystemTime,
    /// When the response finished (or failed). Clamped to `start` if earlier.
    pub end: SystemTime,
    /// Span attributes, e.g. `("http.response.status_code", AttrValue::Int(200))`.
    pub attributes: Vec<(&'static str, AttrValue)>,
    /// Exported as status code ERROR when true, OK otherwise.
    pub error: bool,
}

/// An attribute value; maps to OTLP `AnyValue` (`stringValue`, `intValue`, `boolValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// A string (`stringValue`).
    Str(String),
    /// A signed integer (`intValue`, sent as a decimal string per the OTLP JSON mapping).
    Int(i64),
    /// A boolean (`boolValue`).
    Bool(bool),
}

impl From<&str> for AttrValue {
    fn from(value: &str) -> Self {
        AttrValue::Str(value.to_owned())
    }
}

impl From<String> for AttrValue {
    fn from(value: String) -> Self {
        AttrValue::Str(value)
    }
}

impl From<i64> for AttrValue {
    fn from(value: i64) -> Self {
        AttrValue::Int(value)
    }
}

/// Saturates at `i64::MAX` (OTLP integers are signed 64-bit).
impl From<u64> for AttrValue {
    fn from(value: u64) -> Self {
        AttrValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for AttrValue {
    fn from(value: bool) -> Self {
        AttrValue::Bool(value)
    }
}

/// Handle to a running OTLP exporter. Cloning is one `Arc` increment, so it can live in a
/// `Snapshot`; all clones feed the same task. Dropping the last clone flushes the queued spans
/// and stops the task.
#[derive(Debug, Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    tx: mpsc::Sender<SpanRecord>,
    counters: Arc<Counters>,
    endpoint: String,
    service_name: String,
}

#[derive(Debug, Default)]
struct Counters {
    dropped: AtomicU64,
    failed_batches: AtomicU64,
    exported: AtomicU64,
}

/// Tunables; only tests change them.
#[derive(Debug, Clone, Copy)]
struct Settings {
    capacity: usize,
    batch_window: Duration,
    export_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capacity: CHANNEL_CAPACITY,
            batch_window: BATCH_WINDOW,
            export_timeout: EXPORT_TIMEOUT,
        }
    }
}

impl Exporter {
    /// Validates `endpoint` and starts the export task on the current tokio runtime.
    ///
    /// `endpoint` is the collector's OTLP/HTTP base URL, `http://host[:port][/prefix]` (port 80
    /// if omitted; the usual collector port is 4318); spans go to `{endpoint}/v1/traces`, or to
    /// the URL as given if it already ends in `/v1/traces`. `https`, user info, query strings
    /// and fragments are rejected. `service_name` becomes the `service.name` resource
    /// attribute and must not be empty.
    ///
    /// Must be called inside a tokio runtime that outlives the exporter (the task runs there;
    /// if that runtime shuts down, later spans are counted as dropped). Errors are one-line
    /// messages naming the problem and the fix. No connection is made until the first batch,
    /// so an unreachable collector is not an error here.
    pub fn start(endpoint: &str, service_name: &str) -> Result<Exporter, String> {
        Exporter::start_with(endpoint, service_name, Settings::default())
    }

    fn start_with(
        endpoint: &str,
        service_name: &str,
        settings: Settings,
    ) -> Result<Exporter, String> {
        let target = Target::parse(endpoint)?;
        if service_name.trim().is_empty() {
            return Err("tracing service_name is empty; set it, e.g. \"modelgate\"".to_owned());
        }
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            "the OTLP exporter must be started inside a tokio runtime (this is a bug)".to_owned()
        })?;
        let (tx, rx) = mpsc::channel(settings.capacity);
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            target,
            service_name: service_name.to_owned(),
            rx,
            counters: Arc::clone(&counters),
            settings,
            sender: None,
            connection: None,
            last_warn: None,
            suppressed: 0,
        };
        runtime.spawn(worker.run());
        Ok(Exporter {
            shared: Arc::new(Shared {
                tx,
                counters,
                endpoint: endpoint.to_owned(),
                service_name: service_name.to_owned(),
            }),
        })
    }

    /// Queues `span` for export without blocking or awaiting. Spans whose trace is not sampled
    /// (`flags` bit 0 clear) are skipped, as a parent-based sampler would. If the queue is full
    /// (or the task has stopped), the span is dropped and [`Exporter::dropped`] grows.
    pub fn record(&self, span: SpanRecord) {
        if !span.trace.is_sampled() {
            return;
        }
        if self.shared.tx.try_send(span).is_err() {
            self.shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Spans dropped because the queue was full or the task had stopped.
    pub fn dropped(&self) -> u64 {
        self.shared.counters.dropped.load(Ordering::Relaxed)
    }

    /// Batches that failed to export (connect error, timeout, non-2xx response).
    pub fn failed_batches(&self) -> u64 {
        self.shared.counters.failed_batches.load(Ordering::Relaxed)
    }

    /// Spans the collector accepted (2xx response).
    pub fn exported(&self) -> u64 {
        self.shared.counters.exported.load(Ordering::Relaxed)
    }

    /// The endpoint as configured, e.g. to keep this exporter across a reload that did not
    /// change it.
    pub fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// The `service.name` this exporter reports.
    pub fn service_name(&self) -> &str {
        &self.shared.service_name
    }
}

/// Where batches go, validated from the endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// Host to connect to (brackets removed from IPv6 literals).
    host: String,
    port: u16,
    /// Value of the `Host` header.
    authority: String,
    /// Request path, ending in `/v1/traces`.
    path: String,
}

impl Target {
    fn parse(endpoint: &str) -> Result<Target, String> {
        let invalid = |why: &str| {
            format!(
                "invalid tracing otlp_endpoint {endpoint:?}: {why}; \
                 expected http://host:port, e.g. http://127.0.0.1:4318"
            )
        };
        let uri: hyper::Uri = endpoint.parse().map_err(|_| invalid("not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported by the built-in exporter; \
                     send to a local collector over http",
                ))
            }
            _ => return Err(invalid("the scheme must be http://")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("the host is missing"))?;
        if authority.as_str().contains('@') {
            return Err(invalid("user info is not supported"));
        }
        let port = match authority
            .as_str()
            .strip_prefix(authority.host())
            .and_then(|rest| rest.strip_prefix(':'))
        {
            // `http::Uri` accepts any digits as a port, so check the range here.
            Some(digits) => match digits.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(invalid("the port must be 1-65535")),
            },
            None => 80,
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("the host is missing"));
        }
        if uri.query().is_some() || endpoint.contains('#') {
            return Err(invalid("query strings and fragments are not supported"));
        }
        let base = uri.path().trim_end_matches('/');
        let path = if base.ends_with("/v1/traces") {
            base.to_owned()
        } else {
            format!("{base}/v1/traces")
        };
        Ok(Target {
            host: host.to_owned(),
            port,
            authority: authority.as_str().to_owned(),
            path,
        })
    }
}

/// Why one export failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    #[error("HTTP error: {0}")]
    Http(#[from] hyper::Error),
    #[error("request could not be built: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("collector answered {0}")]
    Status(StatusCode),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
}

/// The export task's state.
struct Worker {
    target: Target,
    service_name: String,
    rx: mpsc::Receiver<SpanRecord>,
    counters: Arc<Counters>,
    settings: Settings,
    /// The kept-alive connection to the collector, if one is open.
    sender: Option<SendRequest<Full<Bytes>>>,
    /// The task driving that connection; aborted when the connection is replaced.
    connection: Option<JoinHandle<()>>,
    last_warn: Option<Instant>,
    /// Failures not logged since the last warning.
    suppressed: u64,
}

impl Worker {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            // Zero means the channel is closed and empty: every Exporter clone is gone.
            if self.rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
            let deadline = Instant::now() + self.settings.batch_window;
            let mut closed = false;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(deadline, self.rx.recv_many(&mut batch, room)).await {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            self.export(&batch).await;
            batch.clear();
            if closed {
                break;
            }
        }
        if let Some(connection) = self.connection.take() {
            connection.abort();
        }
        debug!(endpoint = %self.target.authority, "OTLP exporter stopped");
    }

    async fn export(&mut self, batch: &[SpanRecord]) {
        let body = Bytes::from(encode(&self.service_name, batch));
        let timeout = self.settings.export_timeout;
        let outcome = match tokio::time::timeout(timeout, self.post(body)).await {
            Ok(outcome) => outcome,
            Err(_) => {
                // The request may be half-sent; never reuse that connection.
                self.sender = None;
                Err(ExportError::Timeout(timeout))
            }
        };
        match outcome {
            Ok(()) => {
                let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
                self.counters.exported.fetch_add(count, Ordering::Relaxed);
            }
            Err(error) => self.fail(&error, batch.len()),
        }
    }

    async fn post(&mut self, body: Bytes) -> Result<(), ExportError> {
        if let Some(mut sender) = self.sender.take() {
            if let Ok(status) = self.send_once(&mut sender, body.clone()).await {
                self.sender = Some(sender);
                return check_status(status);
            }
            // The collector may have closed the idle keep-alive connection; one fresh attempt.
        }
        let mut sender = self.connect().await?;
        let status = self.send_once(&mut sender, body).await?;
        self.sender = Some(sender);
        check_status(status)
    }

    async fn send_once(
        &self,
        sender: &mut SendRequest<Full<Bytes>>,
        body: Bytes,
    ) -> Result<StatusCode, ExportError> {
        sender.ready().await?;
        let request = hyper::Request::post(self.target.path.as_str())
            .header(hyper::header::HOST, self.target.authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read the (small) response to the end so the connection can be reused.
        response.into_body().collect().await?;
        Ok(status)
    }

    async fn connect(&mut self) -> Result<SendRequest<Full<Bytes>>, ExportError> {
        if let Some(old) = self.connection.take() {
            old.abort();
        }
        let stream = TcpStream::connect((self.target.host.as_str(), self.target.port))
            .await
            .map_err(ExportError::Connect)?;
        if let Err(e) = stream.set_nodelay(true) {
            debug!(error = %e, "OTLP exporter could not set TCP_NODELAY");
        }
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        self.connection = Some(tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "OTLP collector connection ended with an error");
            }
        }));
        Ok(sender)
    }

    fn fail(&mut self, error: &ExportError, spans: usize) {
        let failed = self.counters.failed_batches.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|last| now.duration_since(last) >= WARN_INTERVAL)
        {
            warn!(
                endpoint = %self.target.authority,
                error = %error,
                spans,
                failed_batches = failed,
                failures_not_logged = self.suppressed,
                "OTLP span export failed; batch dropped"
            );
            self.last_warn = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

fn check_status(status: StatusCode) -> Result<(), ExportError> {
    if status.is_success() {
        Ok(())
    } else {
        Err(ExportError::Status(status))
    }
}

/// Encodes `spans` as one OTLP `ExportTraceServiceRequest` in the protobuf JSON mapping: ids as
/// lowercase hex, 64-bit integers as decimal strings, enums as integers, lowerCamelCase keys.
fn encode(service_name: &str, spans: &[SpanRecord]) -> Vec<u8> {
    let spans: Vec<Value> = spans.iter().map(encode_span).collect();
    let request = json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [{
                    "key": "service.name",
                    "value": { "stringValue": service_name },
                }],
            },
            "scopeSpans": [{
                "scope": { "name": SCOPE_NAME, "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    });
    request.to_string().into_bytes()
}

fn encode_span(span: &SpanRecord) -> Value {
    let start = unix_nanos(span.start);
    let end = unix_nanos(span.end).max(start);
    let attributes: Vec<Value> = span
        .attributes
        .iter()
        .map(|(key, value)| json!({ "key": key, "value": encode_value(value) }))
        .collect();
    let status = if span.error {
        STATUS_CODE_ERROR
    } else {
        STATUS_CODE_OK
    };
    let mut out = json!({
        "traceId": to_hex(&span.trace.trace_id),
        "spanId": to_hex(&span.trace.span_id),
        "name": span.name,
        "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": start.to_string(),
        "endTimeUnixNano": end.to_string(),
        "attributes": attributes,
        "status": { "code": status },
    });
    if let Value::Object(fields) = &mut out {
        if let Some(parent) = &span.trace.parent_span_id {
            fields.insert("parentSpanId".to_owned(), Value::from(to_hex(parent)));
        }
        if let Some(state) = &span.trace.tracestate {
            fields.insert("traceState".to_owned(), Value::from(state.as_str()));
        }
    }
    out
}

fn encode_value(value: &AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => json!({ "stringValue": s }),
        AttrValue::Int(i) => json!({ "intValue": i.to_string() }),
        AttrValue::Bool(b) => json!({ "boolValue": b }),
    }
}

/// Nanoseconds since the Unix epoch; 0 before the epoch, saturating far in the future.
fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
