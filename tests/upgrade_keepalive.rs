//! A keep-alive connection whose stream spans a binary upgrade: when the stream ends, the old
//! process must still answer the next request sent on that connection (with
//! `Connection: close`, so the client moves to the new process), as README "Binary upgrade"
//! promises ("answers its remaining requests with Connection: close").
//!
//! Found by the soak (`loadtest/soak.sh`, full mode): 5 s after each hand-off the old process
//! gets its shutdown broadcast, and it used to drop a kept-alive connection as soon as its
//! response ended. A stream that started before the hand-off went out without
//! `Connection: close`, so its client reused the connection at once and the request was lost
//! (24 of ~125 such streams in a 2-minute soak). Now such a connection lingers 2 s for that
//! request (`conn::Front`), and the process's exit waits for it.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn stream_request(max_tokens: u32) -> Vec<u8> {
    let body =
        chat_body("m", true).replace("\"max_tokens\":8", &format!("\"max_tokens\":{max_tokens}"));
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Read until `end` has arrived (or EOF/error); what came.
async fn read_until(s: &mut TcpStream, end: &[u8], within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(within, async {
        while !out.ends_with(end) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keepalive_connection_whose_stream_spans_an_upgrade_gets_its_next_request_answered() {
    // Tokens 250 ms apart: the first stream lasts 12 s, the second 15 s.
    let a = mock_with("a0", "m", |c| {
        c.tokens = 60;
        c.itl = Duration::from_millis(250);
    })
    .await;
    let mut gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    let old_pid = gw.pid();
    let mut first = TcpStream::connect(gw.addr()).await.unwrap();
    first.write_all(&stream_request(48)).await.unwrap();
    let mut second = TcpStream::connect(gw.addr()).await.unwrap();
    second.write_all(&stream_request(60)).await.unwrap();
    let head = read_until(&mut first, b"data: ", Duration::from_secs(5)).await;
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert!(!String::from_utf8_lossy(&head)
        .to_ascii_lowercase()
        .contains("connection: close"));

    gw.signal(Signal::SIGUSR2);
    // The old process's shutdown broadcast (5 s after the hand-off), with both streams on.
    eventually(
        Duration::from_secs(20),
        "the old process's shutdown broadcast",
        || {
            let seen = gw
                .log()
                .contains("listeners closed; exiting when the last in-flight request ends");
            async move { seen }
        },
    )
    .await;
    let new_pid = gw.status().await["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, old_pid);
    gw.extra_pids.push(new_pid);

    let rest = read_until(&mut first, b"0\r\n\r\n", Duration::from_secs(20)).await;
    assert!(
        String::from_utf8_lossy(&rest).contains("data: [DONE]"),
        "the first stream completes after the broadcast"
    );
    // A client pool reuses the connection for its next request.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = chat_body("m", false);
    let next = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = first.write_all(next.as_bytes()).await;
    let answer = read_until(&mut first, b"}", Duration::from_secs(10)).await;
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(
        answer.starts_with("http/1.1 200"),
        "the next request is answered: {answer:?}"
    );
    assert!(
        answer.contains("connection: close"),
        "and told to reconnect: {answer:?}"
    );

    let rest = read_until(&mut second, b"0\r\n\r\n", Duration::from_secs(20)).await;
    assert!(String::from_utf8_lossy(&rest).contains("data: [DONE]"));
    let _ = gw.wait_exit(Duration::from_secs(30)).await;
}
