//! Upstream keep-alive connections, end to end: the real binary against a raw HTTP/1.1 backend
//! that tags every answer with the id of the TCP connection it came on (`x-conn`) and tracks
//! which of its connections are still open.

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A keep-alive backend serving model `m`.
struct Backend {
    addr: SocketAddr,
    /// Ids of the connections still open (the gateway has not closed them).
    open: Arc<Mutex<HashSet<u64>>>,
}

impl Backend {
    /// `idle_close`: close a connection after this long without a request (as uvicorn's
    /// keep-alive timeout does), without saying so in the response.
    async fn start(idle_close: Option<Duration>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(Mutex::new(HashSet::new()));
        let next = Arc::new(AtomicU64::new(1));
        let conns = Arc::clone(&open);
        tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let id = next.fetch_add(1, Ordering::Relaxed);
                conns.lock().unwrap().insert(id);
                let conns = Arc::clone(&conns);
                tokio::spawn(async move {
                    serve(sock, id, idle_close).await;
                    conns.lock().unwrap().remove(&id);
                });
            }
        });
        Backend { addr, open }
    }

    fn is_open(&self, id: u64) -> bool {
        self.open.lock().unwrap().contains(&id)
    }

    /// Wait (bounded by `within`) until connection `id` is closed, by either side.
    async fn wait_closed(&self, id: u64, within: Duration, what: &str) {
        eventually(within, what, || {
            let closed = !self.is_open(id);
            async move { closed }
        })
        .await;
    }
}

/// Answer requests on one connection until the peer closes it (or it idles out).
async fn serve(mut sock: TcpStream, id: u64, idle_close: Option<Duration>) {
    let mut buf = Vec::new();
    loop {
        // Read one request: header, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let read = sock.read(&mut chunk);
            let n = match idle_close {
                Some(t) if buf.is_empty() => match tokio::time::timeout(t, read).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
                _ => read.await,
            };
            match n {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let request = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
        buf.drain(..head_end + len);
        let body = if head.starts_with("get /v1/models") {
            r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"vllm"}]}"#
                .to_string()
        } else if request.contains("\"user\":\"big") {
            big_answer()
        } else {
            r#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#.to_string()
        };
        let mut resp =
            format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-conn: {id}\r\n");
        if request.contains("\"user\":\"big-chunked\"") {
            // Chunked, in pieces of 3,000 bytes: each bigger than the gateway's held bytes.
            resp.push_str("transfer-encoding: chunked\r\n\r\n");
            for piece in body.as_bytes().chunks(3000) {
                resp.push_str(&format!("{:x}\r\n", piece.len()));
                resp.push_str(std::str::from_utf8(piece).unwrap());
                resp.push_str("\r\n");
            }
            resp.push_str("0\r\n\r\n");
        } else {
            resp.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        }
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A 200 KB answer (ASCII, so chunking it at any byte keeps UTF-8 valid).
fn big_answer() -> String {
    let content: String = (0..20_000).map(|i| format!("{:09} ", i)).collect();
    format!(
        r#"{{"id":"c","object":"chat.completion","model":"m","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}]}}"#
    )
}

fn block(b: &Backend) -> String {
    model_block(
        "m",
        &[format!(
            "      - name: \"b0\"\n        url: \"http://{}\"\n",
            b.addr
        )],
        "",
    )
}

/// One chat request through the gateway: the backend connection it used.
async fn chat_conn(gw: &Gateway) -> u64 {
    let r = gw.chat("m", false).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-modelgate-attempts"], "1");
    let id = r.headers()["x-conn"].to_str().unwrap().parse().unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_reuse_one_upstream_connection() {
    let b = Backend::start(None).await;
    // One worker thread: the idle pool is per thread, so every request meets the same pool.
    let gw = Gateway::start_ready(&block(&b), "server: {threads: 1}").await;
    let first = chat_conn(&gw).await;
    for _ in 0..30 {
        assert_eq!(chat_conn(&gw).await, first);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_backend_closed_while_idle_is_replaced_without_an_error() {
    let b = Backend::start(Some(Duration::from_millis(100))).await;
    let gw = Gateway::start_ready(&block(&b), "server: {threads: 1}").await;
    for _ in 0..3 {
        let used = chat_conn(&gw).await;
        b.wait_closed(
            used,
            Duration::from_secs(5),
            "the backend closes the idle connection",
        )
        .await;
        // The pooled connection is dead: the next request gets a fresh one, first time.
        assert_ne!(chat_conn(&gw).await, used);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_closes_upstream_connections_idle_past_the_pool_timeout() {
    let b = Backend::start(None).await;
    let gw = Gateway::start_ready(&block(&b), "server: {threads: 1}").await;
    let used = chat_conn(&gw).await;
    assert!(b.is_open(used));
    // Pool timeout 4 s plus one sweep period; nothing else touches the pool meanwhile.
    b.wait_closed(
        used,
        Duration::from_secs(10),
        "the idle upstream connection is closed",
    )
    .await;
    // And the gateway still serves, on a new connection.
    assert_ne!(chat_conn(&gw).await, used);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_arrive_intact_whether_sized_or_chunked() {
    // The gateway holds back a response's first bytes and sends them with the next write: an
    // answer bigger than what it holds must still arrive whole and in order, both ways framed.
    let b = Backend::start(None).await;
    let gw = Gateway::start_ready(&block(&b), "server: {threads: 1}").await;
    let c = client();
    let want = big_answer();
    for user in ["big", "big-chunked", "big", "big-chunked"] {
        let body = format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"user":"{user}"}}"#
        );
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r.text().await.unwrap();
        assert_eq!(got.len(), want.len(), "{user}");
        assert!(got == want, "{user}: body differs");
    }
}

/// A backend that answers the first request on each connection and closes the connection,
/// unanswered, when a second one arrives: a keep-alive connection it closes just as the gateway
/// reuses it (the race with uvicorn's keep-alive timeout, made certain).
async fn one_answer_per_connection() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut answered = false;
                loop {
                    let mut chunk = [0u8; 4096];
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    if answered {
                        return;
                    }
                    buf.drain(..end + 4);
                    let body = r#"{"object":"list","data":[{"id":"m","object":"model","owned_by":"vllm"}]}"#;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                    answered = true;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_probe_on_a_connection_the_backend_closed_retries_on_a_fresh_one() {
    let addr = one_answer_per_connection().await;
    let backend = format!("      - name: \"b0\"\n        url: \"http://{addr}\"\n");
    // Probes every 100 ms, one failure marks the backend down: every probe after the first
    // meets its pooled connection closed, and must not count as a failure.
    let gw = Gateway::start_ready(&model_block("m", &[backend], ""), "").await;
    let gw_ref = &gw;
    eventually(
        Duration::from_secs(10),
        "eight passing probes",
        || async move {
            gw_ref
                .metric("modelgate_health_checks_total", &[("result", "ok")])
                .await
                >= 8.0
        },
    )
    .await;
    assert_eq!(
        gw.metric("modelgate_health_checks_total", &[("result", "fail")])
            .await,
        0.0
    );
}
