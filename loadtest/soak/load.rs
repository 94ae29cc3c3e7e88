//! The soak's clients: long streams (each worker reconnects as its stream ends), short requests
//! at a steady rate (open loop), and a trickle of hostile requests over raw sockets. Every
//! request becomes one [`Record`] with its timing, who answered it and, when something is
//! wrong, what.
//!
//! What a record checks, besides the status:
//! - the gateway's `x-request-id` is ours, the mock's `x-mock-body-sha256` is the hash of the
//!   body we sent (the answer belongs to our request: no cross-wired connection), and
//!   `x-mock-backend` equals `x-modelgate-backend`;
//! - every SSE chunk carries our id (`chatcmpl-<x-request-id>`) and model, the role chunk
//!   comes once, tokens `tok0 .. tok{n-1}` come once each and in order, then one finish
//!   chunk, one usage chunk and one `data: [DONE]`. A second answer spliced into the first
//!   (a retry after bytes reached us) repeats the role chunk or restarts at `tok0`: such
//!   problems start with `dup:`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

/// Milliseconds since the start of the load.
#[derive(Clone, Copy, Debug)]
pub struct Clock(pub Instant);

impl Clock {
    pub fn ms(&self) -> f64 {
        self.0.elapsed().as_secs_f64() * 1000.0
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Stream,
    Short,
    Hostile,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// As expected (a hostile request: its expected 4xx).
    Ok,
    /// The gateway refused the TCP connection.
    Refused,
    /// No response: reset or closed before the response header, or timed out.
    Transport,
    /// A non-2xx answer.
    Status,
    /// A 2xx answer that broke off (no `[DONE]`, body shorter than announced, stalled).
    Cut,
    /// A complete 2xx answer with wrong content (see the module doc).
    Invalid,
    /// A hostile request answered otherwise than expected.
    HostileWrong,
}

/// One request as the client saw it.
#[derive(Serialize, Clone, Debug)]
pub struct Record {
    pub kind: Kind,
    pub id: String,
    pub model: String,
    /// Sent on a pooled keep-alive connection (else a fresh connection per request).
    pub keepalive: bool,
    pub start_ms: f64,
    /// When the response header arrived.
    pub header_ms: Option<f64>,
    pub end_ms: f64,
    pub status: Option<u16>,
    /// `x-modelgate-backend`.
    pub backend: Option<String>,
    /// `x-mock-backend`.
    pub mock_backend: Option<String>,
    /// `x-modelgate-model`.
    pub served_model: Option<String>,
    /// `x-modelgate-attempts`.
    pub attempts: Option<u32>,
    /// `error.code` of a JSON error body.
    pub error_code: Option<String>,
    pub outcome: Outcome,
    /// Why, when not `ok`.
    pub detail: String,
    /// Token chunks received (streams).
    pub chunks: u32,
    /// The hostile case.
    pub case: Option<&'static str>,
}

impl Record {
    fn new(kind: Kind, id: String, model: &str, keepalive: bool, start_ms: f64) -> Record {
        Record {
            kind,
            id,
            model: model.to_owned(),
            keepalive,
            start_ms,
            header_ms: None,
            end_ms: start_ms,
            status: None,
            backend: None,
            mock_backend: None,
            served_model: None,
            attempts: None,
            error_code: None,
            outcome: Outcome::Ok,
            detail: String::new(),
            chunks: 0,
            case: None,
        }
    }

    /// Whether a `dup:` problem (a second answer in the same response) was seen.
    pub fn is_double_answer(&self) -> bool {
        self.outcome == Outcome::Invalid && self.detail.contains("dup:")
    }
}

/// What the load generators share.
pub struct Load {
    pub clock: Clock,
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub stream_tokens: usize,
    pub short_tokens: usize,
    pub stop: AtomicBool,
    seq: AtomicU64,
    records: UnboundedSender<Record>,
}

impl Load {
    pub fn new(
        clock: Clock,
        port: u16,
        stream_tokens: usize,
        short_tokens: usize,
        records: UnboundedSender<Record>,
    ) -> Load {
        Load {
            clock,
            url: format!("http://127.0.0.1:{port}/v1/chat/completions"),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            stream_tokens,
            short_tokens,
            stop: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            records,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn next_id(&self, prefix: &str) -> String {
        format!("soak-{prefix}-{}", self.seq.fetch_add(1, Ordering::Relaxed))
    }

    fn send(&self, record: Record) {
        // The collector outlives every generator; a closed channel only happens at teardown.
        let _ = self.records.send(record);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn chat_body(id: &str, model: &str, max_tokens: usize, stream: bool) -> String {
    let extra = if stream {
        r#","stream_options":{"include_usage":true}"#
    } else {
        ""
    };
    format!(
        r#"{{"model":"{model}","messages":[{{"role":"user","content":"soak {id}"}}],"max_tokens":{max_tokens},"stream":{stream}{extra}}}"#
    )
}

/// The cause chain of an error, for the record.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = s.source();
    }
    false
}

/// Send a chat request; fill in the header fields and header checks. `Err` = no response.
async fn send(
    load: &Load,
    client: &reqwest::Client,
    rec: &mut Record,
    body: String,
    timeout: Duration,
) -> Option<reqwest::Response> {
    let sha = hex(&Sha256::digest(body.as_bytes()));
    let sent = client
        .post(&load.url)
        .header("content-type", "application/json")
        .header("x-request-id", &rec.id)
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            rec.end_ms = load.clock.ms();
            rec.outcome = if is_refused(&e) {
                Outcome::Refused
            } else {
                Outcome::Transport
            };
            rec.detail = chain(&e);
            return None;
        }
    };
    rec.header_ms = Some(load.clock.ms());
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    rec.status = Some(resp.status().as_u16());
    rec.backend = header("x-modelgate-backend");
    rec.mock_backend = header("x-mock-backend");
    rec.served_model = header("x-modelgate-model");
    rec.attempts = header("x-modelgate-attempts").and_then(|v| v.parse().ok());
    let mut problems = Vec::new();
    if header("x-request-id").as_deref() != Some(rec.id.as_str()) {
        problems.push(format!("x-request-id {:?}", header("x-request-id")));
    }
    if resp.status().is_success() {
        if header("x-mock-body-sha256").as_deref() != Some(sha.as_str()) {
            problems.push("x-mock-body-sha256 is not our body's: another request's answer".into());
        }
        if rec.mock_backend != rec.backend {
            problems.push(format!(
                "x-mock-backend {:?} != x-modelgate-backend {:?}",
                rec.mock_backend, rec.backend
            ));
        }
        if rec.served_model.as_deref() != Some(rec.model.as_str()) {
            problems.push(format!("x-modelgate-model {:?}", rec.served_model));
        }
    }
    if !problems.is_empty() {
        rec.outcome = Outcome::Invalid;
        rec.detail = problems.join("; ");
    }
    Some(resp)
}

/// A non-2xx answer: its body's `error.code`, bounded.
async fn non_2xx(load: &Load, rec: &mut Record, resp: reqwest::Response) {
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await;
    rec.end_ms = load.clock.ms();
    let text = match body {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
        _ => String::new(),
    };
    rec.error_code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            let code = &v["error"]["code"];
            code.as_str()
                .map(str::to_owned)
                .or_else(|| code.as_u64().map(|c| c.to_string()))
        });
    rec.outcome = Outcome::Status;
    let mut snippet: String = text.chars().take(200).collect();
    if !rec.detail.is_empty() {
        snippet = format!("{}; {snippet}", rec.detail);
    }
    rec.detail = snippet;
}

/// Checks an SSE stream event by event (see the module doc).
struct SseCheck {
    id: String,
    model: String,
    tokens: usize,
    buf: Vec<u8>,
    roles: u32,
    next_token: usize,
    finishes: u32,
    usages: u32,
    dones: u32,
    problems: Vec<String>,
}

impl SseCheck {
    fn new(id: &str, model: &str, tokens: usize) -> SseCheck {
        SseCheck {
            id: format!("chatcmpl-{id}"),
            model: model.to_owned(),
            tokens,
            buf: Vec::new(),
            roles: 0,
            next_token: 0,
            finishes: 0,
            usages: 0,
            dones: 0,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 5 {
            self.problems.push(p);
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(pos) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..pos + 2).collect();
            self.event(&event[..pos]);
        }
    }

    fn event(&mut self, event: &[u8]) {
        if self.dones > 0 {
            self.problem("dup: an event after data: [DONE]".into());
        }
        let Some(data) = event.strip_prefix(b"data: ") else {
            let text = String::from_utf8_lossy(event)
                .chars()
                .take(80)
                .collect::<String>();
            self.problem(format!("not a data event: {text:?}"));
            return;
        };
        if data == b"[DONE]" {
            self.dones += 1;
            if self.dones > 1 {
                self.problem("dup: a second data: [DONE]".into());
            }
            return;
        }
        let v: serde_json::Value = match serde_json::from_slice(data) {
            Ok(v) => v,
            Err(e) => {
                self.problem(format!("chunk is not JSON: {e}"));
                return;
            }
        };
        if v["id"] != self.id.as_str() {
            self.problem(format!("chunk id {} (another request's)", v["id"]));
        }
        if v["model"] != self.model.as_str() {
            self.problem(format!("chunk model {}", v["model"]));
        }
        let choices = v["choices"].as_array().cloned().unwrap_or_default();
        if choices.is_empty() {
            self.usages += 1;
            if self.usages > 1 {
                self.problem("dup: a second usage chunk".into());
            }
            if v["usage"]["completion_tokens"] != self.tokens {
                self.problem(format!("usage {}", v["usage"]));
            }
            return;
        }
        let choice = &choices[0];
        let delta = &choice["delta"];
        if delta.get("role").is_some() {
            self.roles += 1;
            if self.roles > 1 {
                self.problem("dup: a second role chunk (a second answer)".into());
            }
        }
        if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            let want = format!("tok{} ", self.next_token);
            if text != want {
                let kind = if text == "tok0 " { "dup: " } else { "" };
                self.problem(format!("{kind}token {text:?} where {want:?} was due"));
            }
            self.next_token += 1;
        }
        if !choice["finish_reason"].is_null() {
            self.finishes += 1;
            if self.finishes > 1 {
                self.problem("dup: a second finish chunk".into());
            }
        }
    }

    /// Problems of a stream that reached its end.
    fn complete(&mut self) {
        if self.roles != 1
            || self.next_token != self.tokens
            || self.finishes != 1
            || self.usages != 1
        {
            let p = format!(
                "{} role, {} of {} tokens, {} finish, {} usage chunks",
                self.roles, self.next_token, self.tokens, self.finishes, self.usages
            );
            self.problem(p);
        }
    }
}

/// One long stream.
async fn one_stream(load: &Load, client: &reqwest::Client, model: &str, keepalive: bool) -> Record {
    let id = load.next_id("s");
    let mut rec = Record::new(Kind::Stream, id.clone(), model, keepalive, load.clock.ms());
    let body = chat_body(&id, model, load.stream_tokens, true);
    let Some(resp) = send(load, client, &mut rec, body, Duration::from_secs(90)).await else {
        return rec;
    };
    if !resp.status().is_success() {
        non_2xx(load, &mut rec, resp).await;
        return rec;
    }
    let mut check = SseCheck::new(&id, model, load.stream_tokens);
    let mut body = resp.bytes_stream();
    let mut broke = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(bytes) => check.feed(&bytes),
            Err(e) => {
                broke = Some(chain(&e));
                break;
            }
        }
    }
    rec.end_ms = load.clock.ms();
    rec.chunks = check.next_token as u32;
    let cut = broke.or_else(|| (check.dones == 0).then(|| "ended without data: [DONE]".to_owned()));
    if let Some(why) = cut {
        rec.outcome = Outcome::Cut;
        rec.detail = format!(
            "{why} after {} of {} tokens",
            check.next_token, check.tokens
        );
        return rec;
    }
    check.complete();
    if !check.problems.is_empty() {
        rec.outcome = Outcome::Invalid;
        let mut detail = check.problems.join("; ");
        if !rec.detail.is_empty() {
            detail = format!("{}; {detail}", rec.detail);
        }
        rec.detail = detail;
    }
    rec
}

/// One short non-stream request.
async fn one_short(load: &Load, client: &reqwest::Client, model: &str, keepalive: bool) -> Record {
    let id = load.next_id("q");
    let mut rec = Record::new(Kind::Short, id.clone(), model, keepalive, load.clock.ms());
    let body = chat_body(&id, model, load.short_tokens, false);
    let Some(resp) = send(load, client, &mut rec, body, Duration::from_secs(30)).await else {
        return rec;
    };
    if !resp.status().is_success() {
        non_2xx(load, &mut rec, resp).await;
        return rec;
    }
    let body = resp.bytes().await;
    rec.end_ms = load.clock.ms();
    let bytes = match body {
        Ok(b) => b,
        Err(e) => {
            rec.outcome = Outcome::Cut;
            rec.detail = chain(&e);
            return rec;
        }
    };
    let mut problems = Vec::new();
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Err(e) => problems.push(format!("body is not JSON ({e}), {} bytes", bytes.len())),
        Ok(v) => {
            if v["id"] != format!("chatcmpl-{id}").as_str() {
                problems.push(format!("id {} (another request's)", v["id"]));
            }
            if v["model"] != model {
                problems.push(format!("model {}", v["model"]));
            }
            let want: String = (0..load.short_tokens).map(|k| format!("tok{k} ")).collect();
            if v["choices"][0]["message"]["content"] != want.as_str() {
                problems.push("content is not ours".into());
            }
            if v["usage"]["completion_tokens"] != load.short_tokens {
                problems.push(format!("usage {}", v["usage"]));
            }
        }
    }
    if !problems.is_empty() {
        rec.outcome = Outcome::Invalid;
        if !rec.detail.is_empty() {
            problems.insert(0, rec.detail.clone());
        }
        rec.detail = problems.join("; ");
    }
    rec
}

/// The model a request goes to: 7 in 10 to `m1` (four backends), 3 in 10 to `m2`.
fn model_for(n: u64) -> &'static str {
    if n % 10 < 7 {
        "m1"
    } else {
        "m2"
    }
}

/// Stream worker `i` of `n`: starts staggered over one stream length, then runs streams back
/// to back until stopped. Even workers keep their connection alive between streams; odd ones
/// open a new connection for each.
pub async fn stream_worker(load: Arc<Load>, i: usize, n: usize, stagger: Duration) {
    let keepalive = i % 2 == 0;
    let mut builder = reqwest::Client::builder();
    if !keepalive {
        builder = builder.pool_max_idle_per_host(0);
    }
    let client = builder.build().expect("stream client");
    let model = model_for(i as u64);
    tokio::time::sleep(stagger.mul_f64(i as f64 / n.max(1) as f64)).await;
    while !load.stopped() {
        let rec = one_stream(&load, &client, model, keepalive).await;
        let failed = rec.outcome != Outcome::Ok;
        load.send(rec);
        if failed {
            // Do not spin on a persistent failure.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Short requests at `rate` per second until stopped; 4 in 5 on one shared keep-alive client,
/// 1 in 5 on a new connection each. Returns when the last one ended.
pub async fn short_generator(load: Arc<Load>, rate: f64) {
    let pooled = reqwest::Client::builder().build().expect("short client");
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("short client");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while !load.stopped() {
        tick.tick().await;
        n += 1;
        let keepalive = n % 5 != 0;
        let client = if keepalive {
            pooled.clone()
        } else {
            fresh.clone()
        };
        let l = Arc::clone(&load);
        tasks.spawn(async move {
            let rec = one_short(&l, &client, model_for(n / 5), keepalive).await;
            l.send(rec);
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One hostile case: its name, the bytes sent, the statuses it may get (0 = the gateway closes
/// the connection without a response), and how long to wait for that.
pub struct Hostile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
    pub expect: &'static [u16],
    /// Send the bytes one per second (slowloris).
    pub trickle: bool,
}

fn post(extra_headers: &str, body: &str, id: &str) -> Vec<u8> {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nx-request-id: {id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `n`-th hostile request (cases in turn).
pub fn hostile_case(n: u64, id: &str) -> Hostile {
    let ok = r#"{"model":"m1","messages":[{"role":"user","content":"hi"}],"max_tokens":2}"#;
    let case = |name, bytes, expect| Hostile {
        name,
        bytes,
        expect,
        trickle: false,
    };
    match n % 10 {
        0 => case(
            "invalid_json",
            post("", r#"{"messages":[}],"model":"m1"}"#, id),
            &[400],
        ),
        1 => {
            let chunked = format!("{:x}\r\n{ok}\r\n0\r\n\r\n", ok.len());
            let bytes = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nx-request-id: {id}\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}",
                chunked.len()
            );
            case("cl_and_te", bytes.into_bytes(), &[400])
        }
        2 => {
            let big = format!("x-big: {}\r\n", "a".repeat(70 * 1024));
            case("oversized_header", post(&big, ok, id), &[431])
        }
        3 => case(
            "unknown_model",
            post("Connection: close\r\n", r#"{"model":"no-such-model","messages":[]}"#, id),
            &[404],
        ),
        4 => case("missing_model", post("", r#"{"messages":[]}"#, id), &[400]),
        5 => case(
            "wrong_method",
            format!("GET /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nx-request-id: {id}\r\nConnection: close\r\n\r\n").into_bytes(),
            &[405],
        ),
        6 => {
            let mut bytes = post("", ok, id);
            let line = b"POST /v1/chat/completions";
            bytes.splice(..line.len(), b"POST /v1/../v1/chat/completions".iter().copied());
            case("dot_segment", bytes, &[400])
        }
        7 => {
            let bytes = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nx-request-id: {id}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{ok}\r\n0\r\n\r\n"
            );
            case("bad_chunk_size", bytes.into_bytes(), &[400])
        }
        8 => {
            // Announces 200 bytes, sends 20, then half-closes: the body never completes.
            let mut bytes = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nx-request-id: {id}\r\nContent-Length: 200\r\n\r\n"
            )
            .into_bytes();
            bytes.extend_from_slice(&ok.as_bytes()[..20]);
            case("truncated_body", bytes, &[400, 0])
        }
        _ => Hostile {
            name: "slow_header",
            bytes: b"POST /v1/chat/completions HTTP/1.1\r\nHost: soak\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_vec(),
            // limits.header_timeout_ms (10 s): 408, or a quiet close.
            expect: &[408, 0],
            trickle: true,
        },
    }
}

/// Run one hostile case over a raw connection: what status came back (0 = none).
async fn one_hostile(load: &Load, n: u64) -> Record {
    let id = load.next_id("h");
    let case = hostile_case(n, &id);
    let mut rec = Record::new(Kind::Hostile, id, "", false, load.clock.ms());
    rec.case = Some(case.name);
    let stream = match TcpStream::connect(load.addr).await {
        Ok(s) => s,
        Err(e) => {
            rec.end_ms = load.clock.ms();
            rec.outcome = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                Outcome::Refused
            } else {
                Outcome::Transport
            };
            rec.detail = e.to_string();
            return rec;
        }
    };
    let (mut rd, mut wr) = stream.into_split();
    let trickle = case.trickle;
    let bytes = case.bytes;
    let writer = tokio::spawn(async move {
        if trickle {
            for b in bytes {
                if wr.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } else {
            let _ = wr.write_all(&bytes).await;
            let _ = wr.shutdown().await;
        }
        // Keep the write half open (the trickle) until the reader is done.
        std::future::pending::<()>().await;
    });
    let within = if trickle {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(10)
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16384];
    let closed = tokio::time::timeout(within, async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    writer.abort();
    rec.end_ms = load.clock.ms();
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    rec.status = Some(status);
    if !case.expect.contains(&status) {
        rec.outcome = Outcome::HostileWrong;
        rec.detail = format!(
            "expected {:?}, got {status}: {:?}",
            case.expect,
            text.chars().take(160).collect::<String>()
        );
    } else if !closed {
        // Every case either breaks the framing (the gateway must close) or asks for
        // `Connection: close`.
        rec.outcome = Outcome::HostileWrong;
        rec.detail = format!("{status}, but the connection stayed open");
    }
    rec
}

/// One hostile request every `every` until stopped; the slow ones run alongside.
pub async fn hostile_generator(load: Arc<Load>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0;
    while !load.stopped() {
        tick.tick().await;
        let l = Arc::clone(&load);
        let k = n;
        tasks.spawn(async move {
            let rec = one_hostile(&l, k).await;
            l.send(rec);
        });
        n += 1;
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}
