//! A raw TCP backend for the faults an HTTP library will not produce: a response reset in the
//! middle of its header, and malformed responses. It answers the health probe (`/v1/models`),
//! `/health` and `/metrics` correctly, so the gateway keeps the backend healthy and keeps sending
//! it requests: the gateway's own error handling, not its health checks, must cope.
//!
//! Runs as tasks of the soak process on the faulty backend's port while its mock process is
//! stopped. Stopping it drops the listener and every connection.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

use super::plan::Fault;

/// Malformed answers, used in turn (one per POST). The first two and the fifth cannot be parsed
/// as a response header; the third and fourth have a valid header and a broken body.
pub const MALFORMED: [&[u8]; 5] = [
    b"HTTP/1.1 2OO OK\r\ncontent-length: 0\r\n\r\n",
    b"\x00\x01\x02 not http at all\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\nzz\r\ndata: {}\r\n\r\n",
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"cut",
    b"HTTP/1.1 200 OK\r\nbad header name: x\r\n\r\n",
];

/// Half a status line and header, then a reset.
const RESET_PREFIX: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-st";

pub struct RawBackend {
    task: JoinHandle<()>,
    posts: Arc<AtomicU64>,
}

impl RawBackend {
    /// Listen on `addr` (`SO_REUSEADDR`: the port was just freed by a killed process) and serve
    /// `model`'s probes and `fault` to every POST.
    pub async fn start(addr: SocketAddr, model: &str, fault: Fault) -> io::Result<RawBackend> {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        let posts = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&posts);
        let model: Arc<str> = Arc::from(model);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => {
                            conns.spawn(serve(stream, Arc::clone(&model), fault, Arc::clone(&counter)));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(RawBackend { task, posts })
    }

    /// Stop listening, drop every connection, and return how many POSTs were answered.
    pub async fn stop(self) -> u64 {
        self.task.abort();
        let _ = self.task.await;
        self.posts.load(Ordering::Relaxed)
    }
}

/// One request head: method, path, and the body length to skip.
struct Head {
    method: String,
    path: String,
    body: BodyLen,
}

enum BodyLen {
    Length(usize),
    Chunked,
}

fn parse_head(head: &[u8]) -> Option<Head> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let mut body = BodyLen::Length(0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            body = BodyLen::Length(value.parse().ok()?);
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            body = BodyLen::Chunked;
        }
    }
    Some(Head { method, path, body })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read until `buf` holds `want` bytes, or `None` on EOF/error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> Option<()> {
    let mut chunk = [0u8; 8192];
    while buf.len() < want {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    Some(())
}

async fn serve(mut stream: TcpStream, model: Arc<str>, fault: Fault, posts: Arc<AtomicU64>) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // The request head.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 1 << 20 {
                return;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let Some(head) = parse_head(&buf[..head_end]) else {
            return;
        };
        // Skip the body.
        let consumed = match head.body {
            BodyLen::Length(n) => {
                if fill(&mut stream, &mut buf, head_end + n).await.is_none() {
                    return;
                }
                head_end + n
            }
            BodyLen::Chunked => loop {
                if let Some(i) = find(&buf[head_end..], b"0\r\n\r\n") {
                    break head_end + i + 5;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            },
        };
        buf.drain(..consumed);
        if head.method == "POST" {
            let n = posts.fetch_add(1, Ordering::Relaxed);
            let answer: &[u8] = match fault {
                Fault::Malformed => MALFORMED[n as usize % MALFORMED.len()],
                _ => RESET_PREFIX,
            };
            let _ = stream.write_all(answer).await;
            if fault == Fault::ResetMidHeader {
                // Linger 0: close() sends a RST instead of a FIN. (Deprecated because a non-zero
                // linger blocks the thread in close(); a zero one does not.)
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
            }
            return;
        }
        let reply = probe_answer(&head.path, &model);
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Correct answers to the gateway's probes, so the backend stays healthy.
fn probe_answer(path: &str, model: &str) -> String {
    let (status, ctype, body) = match path {
        "/v1/models" => (
            "200 OK",
            "application/json",
            format!(
                "{{\"object\":\"list\",\"data\":[{{\"id\":\"{model}\",\"object\":\"model\",\"created\":0,\"owned_by\":\"vllm\",\"root\":\"{model}\",\"parent\":null,\"max_model_len\":4096}}]}}"
            ),
        ),
        "/health" => ("200 OK", "text/plain", String::new()),
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            format!(
                "vllm:num_requests_running{{model_name=\"{model}\"}} 0\nvllm:num_requests_waiting{{model_name=\"{model}\"}} 0\nvllm:kv_cache_usage_perc{{model_name=\"{model}\"}} 0\n"
            ),
        ),
        _ => ("404 Not Found", "application/json", "{\"detail\":\"Not Found\"}".to_owned()),
    };
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}
