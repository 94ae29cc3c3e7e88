//! Tests for the OTLP exporter against an in-test OTLP/HTTP receiver on `127.0.0.1:0`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::mock::eventually;

/// How long a test waits for a condition before failing.
const DEADLINE: Duration = Duration::from_secs(10);

/// Short windows so tests do not wait a second per batch.
fn fast() -> Settings {
    Settings {
        capacity: CHANNEL_CAPACITY,
        batch_window: Duration::from_millis(20),
        export_timeout: Duration::from_secs(5),
    }
}

/// One POST the receiver got.
struct Received {
    path: String,
    content_type: Option<String>,
    body: Value,
}

impl Received {
    fn spans(&self) -> Vec<Value> {
        self.body["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A minimal OTLP/HTTP receiver answering every POST with `status`.
async fn receiver(status: StatusCode) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let (addr, rx, _) = receiver_with(status, true).await;
    (addr, rx)
}

/// A receiver that can close each connection after one response; also counts connections.
async fn receiver_with(
    status: StatusCode,
    keep_alive: bool,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Received>,
    Arc<AtomicU64>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let connections = Arc::new(AtomicU64::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::Relaxed);
            let tx = tx.clone();
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let tx = tx.clone();
                async move {
                    let path = req.uri().path().to_owned();
                    let content_type = req
                        .headers()
                        .get(hyper::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let bytes = req.into_body().collect().await.unwrap().to_bytes();
                    let body = serde_json::from_slice(&bytes).unwrap();
                    let _ = tx.send(Received {
                        path,
                        content_type,
                        body,
                    });
                    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            });
            tokio::spawn(
                http1::Builder::new()
                    .keep_alive(keep_alive)
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    (addr, rx, connections)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .expect("the receiver should get a POST before the deadline")
        .expect("the receiver task is alive")
}

/// An address nothing listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

fn span(traceparent: &str, name: &'static str) -> SpanRecord {
    let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
    SpanRecord {
        trace: TraceContext::from_headers(Some(traceparent.as_bytes()), Some(b"congo=t61rcWkgMzE")),
        name: Cow::Borrowed(name),
        start,
        end: start + Duration::from_millis(250),
        attributes: vec![
            ("http.request.method", "POST".into()),
            ("http.response.status_code", AttrValue::Int(200)),
            ("modelgate.model", "llama-3-8b".into()),
            ("gen_ai.usage.output_tokens", 17u64.into()),
            ("modelgate.retried", false.into()),
        ],
        error: false,
    }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn exports_span_with_ids_name_and_attributes() {
    let (addr, mut rx) = receiver(StatusCode::OK).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "gw-test", fast()).unwrap();
    let record = span(TRACEPARENT, "POST /v1/chat/completions");
    let span_id = record.trace.span_id_hex();
    exporter.record(record);

    let got = next(&mut rx).await;
    assert_eq!(got.path, "/v1/traces");
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    let resource = &got.body["resourceSpans"][0]["resource"]["attributes"][0];
    assert_eq!(
        resource,
        &json!({"key": "service.name", "value": {"stringValue": "gw-test"}})
    );
    assert_eq!(
        got.body["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
        "modelgate"
    );
    let spans = got.spans();
    assert_eq!(spans.len(), 1);
    let s = &spans[0];
    assert_eq!(s["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(s["spanId"], span_id.as_str());
    assert_eq!(s["parentSpanId"], "00f067aa0ba902b7");
    assert_eq!(s["traceState"], "congo=t61rcWkgMzE");
    assert_eq!(s["name"], "POST /v1/chat/completions");
    assert_eq!(s["kind"], 2);
    assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
    assert_eq!(s["endTimeUnixNano"], "1700000000373456789");
    assert_eq!(s["status"], json!({"code": 1}));
    assert_eq!(
        s["attributes"],
        json!([
            {"key": "http.request.method", "value": {"stringValue": "POST"}},
            {"key": "http.response.status_code", "value": {"intValue": "200"}},
            {"key": "modelgate.model", "value": {"stringValue": "llama-3-8b"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "17"}},
            {"key": "modelgate.retried", "value": {"boolValue": false}},
        ])
    );
    eventually(DEADLINE, "exporter.exported() == 1", || {
        std::future::ready(exporter.exported() == 1)
    })
    .await;
    assert_eq!(exporter.failed_batches(), 0);
    assert_eq!(exporter.dropped(), 0);
}

#[tokio::test]
async fn root_span_omits_parent_and_error_sets_status() {
    let (addr, mut rx) = receiver(StatusCode::OK).await;
    let exporter =
        Exporter::start_with(&format!("http://{addr}/otlp/"), "modelgate", fast()).unwrap();
    let mut record = span("not a traceparent", "POST /v1/completions");
    record.error = true;
    exporter.record(record);

    let got = next(&mut rx).await;
    assert_eq!(got.path, "/otlp/v1/traces");
    let s = &got.spans()[0];
    assert!(s.get("parentSpanId").is_none(), "{s}");
    assert!(s.get("traceState").is_none(), "{s}");
    assert_eq!(s["status"], json!({"code": 2}));
}

#[tokio::test]
async fn unsampled_spans_are_not_exported() {
    let (addr, mut rx) = receiver(StatusCode::OK).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    let unsampled = "00-11111111111111111111111111111111-00f067aa0ba902b7-00";
    exporter.record(span(unsampled, "unsampled"));
    exporter.record(span(TRACEPARENT, "sampled"));

    let got = next(&mut rx).await;
    let spans = got.spans();
    assert_eq!(spans.len(), 1, "only the sampled span is exported");
    assert_eq!(spans[0]["name"], "sampled");
    assert_eq!(exporter.dropped(), 0);
}

#[tokio::test]
async fn batches_are_capped_at_512_spans() {
    let (addr, mut rx) = receiver(StatusCode::OK).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    // The current-thread runtime does not run the export task until this test awaits, so all
    // 600 spans are queued before the first batch is taken.
    for _ in 0..600 {
        exporter.record(span(TRACEPARENT, "s"));
    }
    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    assert_eq!(first.spans().len(), MAX_BATCH);
    assert_eq!(second.spans().len(), 600 - MAX_BATCH);
    eventually(DEADLINE, "exporter.exported() == 600", || {
        std::future::ready(exporter.exported() == 600)
    })
    .await;
}

#[tokio::test]
async fn keeps_the_connection_across_batches() {
    let (addr, mut rx, connections) = receiver_with(StatusCode::OK, true).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    for round in 1..=3u64 {
        exporter.record(span(TRACEPARENT, "s"));
        next(&mut rx).await;
        eventually(DEADLINE, "exporter.exported() == round", || {
            std::future::ready(exporter.exported() == round)
        })
        .await;
    }
    assert_eq!(exporter.failed_batches(), 0);
    assert_eq!(connections.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn reconnects_when_the_collector_closes_the_connection() {
    let (addr, mut rx, connections) = receiver_with(StatusCode::OK, false).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    for round in 1..=3u64 {
        exporter.record(span(TRACEPARENT, "s"));
        next(&mut rx).await;
        eventually(DEADLINE, "exporter.exported() == round", || {
            std::future::ready(exporter.exported() == round)
        })
        .await;
    }
    assert_eq!(exporter.failed_batches(), 0);
    assert_eq!(connections.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn dropping_the_last_handle_flushes_queued_spans() {
    let (addr, mut rx) = receiver(StatusCode::OK).await;
    let settings = Settings {
        batch_window: Duration::from_secs(3600),
        ..fast()
    };
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", settings).unwrap();
    let clone = exporter.clone();
    clone.record(span(TRACEPARENT, "flushed"));
    drop(clone);
    drop(exporter);
    // Without the flush this would wait for the hour-long batch window.
    let got = next(&mut rx).await;
    assert_eq!(got.spans()[0]["name"], "flushed");
}

#[tokio::test]
async fn dead_endpoint_neither_blocks_nor_panics_and_counts_failures() {
    let addr = dead_addr().await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    for _ in 0..10_000 {
        exporter.record(span(TRACEPARENT, "s"));
    }
    eventually(DEADLINE, "exporter.failed_batches() >= 1", || {
        std::future::ready(exporter.failed_batches() >= 1)
    })
    .await;
    // A failed batch is dropped, not retried forever: the task keeps taking new spans.
    let before = exporter.failed_batches();
    exporter.record(span(TRACEPARENT, "later"));
    eventually(DEADLINE, "exporter.failed_batches() > before", || {
        std::future::ready(exporter.failed_batches() > before)
    })
    .await;
    assert_eq!(exporter.exported(), 0);
}

#[tokio::test]
async fn collector_error_status_counts_a_failed_batch() {
    let (addr, mut rx) = receiver(StatusCode::SERVICE_UNAVAILABLE).await;
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", fast()).unwrap();
    exporter.record(span(TRACEPARENT, "s"));
    next(&mut rx).await;
    eventually(DEADLINE, "exporter.failed_batches() == 1", || {
        std::future::ready(exporter.failed_batches() == 1)
    })
    .await;
    assert_eq!(exporter.exported(), 0);
}

#[tokio::test]
async fn hung_collector_times_out_and_counts_a_failed_batch() {
    // Accepts connections and never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let settings = Settings {
        export_timeout: Duration::from_millis(100),
        ..fast()
    };
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", settings).unwrap();
    exporter.record(span(TRACEPARENT, "s"));
    eventually(DEADLINE, "exporter.failed_batches() == 1", || {
        std::future::ready(exporter.failed_batches() == 1)
    })
    .await;
    hold.abort();
}

#[tokio::test]
async fn full_channel_drops_and_counts() {
    let addr = dead_addr().await;
    let settings = Settings {
        capacity: 4,
        ..fast()
    };
    let exporter = Exporter::start_with(&format!("http://{addr}"), "modelgate", settings).unwrap();
    // No await in between: on the current-thread runtime the task cannot drain the queue.
    for _ in 0..10 {
        exporter.record(span(TRACEPARENT, "s"));
    }
    assert_eq!(exporter.dropped(), 6);
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    let err = Exporter::start("http://127.0.0.1:4318", "modelgate").unwrap_err();
    assert!(err.contains("tokio runtime"), "{err}");
}

#[test]
fn endpoint_validation() {
    let ok = [
        ("http://127.0.0.1:4318", "127.0.0.1", 4318, "/v1/traces"),
        ("http://collector:4318/", "collector", 4318, "/v1/traces"),
        ("http://collector", "collector", 80, "/v1/traces"),
        ("http://[::1]:4318", "::1", 4318, "/v1/traces"),
        ("http://c:4318/otlp", "c", 4318, "/otlp/v1/traces"),
        ("http://c:4318/v1/traces", "c", 4318, "/v1/traces"),
    ];
    for (endpoint, host, port, path) in ok {
        let target = Target::parse(endpoint).unwrap();
        assert_eq!(
            (target.host.as_str(), target.port, target.path.as_str()),
            (host, port, path),
            "{endpoint}"
        );
    }
    let bad = [
        ("https://c:4318", "https is not supported"),
        ("ftp://c:4318", "scheme must be http"),
        ("c:4318", "scheme must be http"),
        ("", "not a URL"),
        ("http://", "not a URL"),
        ("http://u:p@c:4318", "user info"),
        ("http://c:4318/?x=1", "query strings"),
        ("http://c:4318/#frag", "query strings"),
        ("http://c:99999", "port must be 1-65535"),
        ("http://c:0", "port must be 1-65535"),
        ("http://c:/x", "port must be 1-65535"),
        ("http://c :4318", "not a URL"),
    ];
    for (endpoint, why) in bad {
        let err = Target::parse(endpoint).unwrap_err();
        assert!(err.contains(why), "{endpoint:?}: {err}");
        assert!(err.contains("http://host:port"), "{endpoint:?}: {err}");
    }
}

#[test]
fn empty_service_name_is_rejected() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let err = Exporter::start("http://127.0.0.1:4318", " ").unwrap_err();
    assert!(err.contains("service_name"), "{err}");
}

#[test]
fn encode_follows_the_otlp_json_mapping() {
    let mut record = span(TRACEPARENT, "POST /v1/embeddings");
    // An end before the start is clamped rather than exported as a negative duration.
    record.end = UNIX_EPOCH;
    record.attributes = vec![("n", AttrValue::Int(-3)), ("big", u64::MAX.into())];
    let body: Value = serde_json::from_slice(&encode("svc", &[record.clone()])).unwrap();
    let expected = json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
            "scopeSpans": [{
                "scope": {"name": "modelgate", "version": env!("CARGO_PKG_VERSION")},
                "spans": [{
                    "traceId": "4bf92f3577b34da6a3ce929d0e0e4736",
                    "spanId": record.trace.span_id_hex(),
                    "parentSpanId": "00f067aa0ba902b7",
                    "traceState": "congo=t61rcWkgMzE",
                    "name": "POST /v1/embeddings",
                    "kind": 2,
                    "startTimeUnixNano": "1700000000123456789",
                    "endTimeUnixNano": "1700000000123456789",
                    "attributes": [
                        {"key": "n", "value": {"intValue": "-3"}},
                        {"key": "big", "value": {"intValue": i64::MAX.to_string()}},
                    ],
                    "status": {"code": 1},
                }],
            }],
        }],
    });
    assert_eq!(body, expected);
}
