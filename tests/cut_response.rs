//! A response the backend breaks off after its header: the client gets what the backend sent
//! (status, header, the body so far) and then the close, as the retry contract says ("a
//! failure after the first byte ends the response"), never a connection closed with nothing
//! at all. Found by the soak (`loadtest/soak.sh`, malformed-response window): with a
//! `Content-Length` answer the gateway logged `status 200, bytes_out 10, cut backend_error`
//! while the client received no byte and saw "connection closed before message completed",
//! which HTTP clients and the OpenAI SDKs treat as a connection failure and retry.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the backend sends to every POST before closing: a header announcing 1000 bytes and
/// the first 10 of them.
const CUT_ANSWER: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"id\":\"cut";

/// A backend that passes the health probe (`/v1/models` lists `m`) and answers every POST with
/// [`CUT_ANSWER`], then closes.
async fn cutting_backend() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(serve(stream));
        }
    });
    format!("http://{addr}")
}

async fn serve(mut stream: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        if head.starts_with("post ") {
            let _ = stream.write_all(CUT_ANSWER).await;
            return;
        }
        let models = r#"{"object":"list","data":[{"id":"m","object":"model","root":"m","max_model_len":4096}]}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{models}",
            models.len()
        );
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_content_length_answer_cut_by_the_backend_reaches_the_client_as_far_as_it_got() {
    let url = cutting_backend().await;
    let backends = [format!("      - name: \"cut\"\n        url: \"{url}\"\n")];
    let gw = Gateway::start_ready(&model_block("m", &backends, ""), "").await;

    let mut s = TcpStream::connect(gw.addr()).await.unwrap();
    let body = chat_body("m", false);
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);

    assert!(
        closed.is_ok(),
        "the gateway closes the connection: {text:?}"
    );
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "the status reaches the client: {text:?}"
    );
    assert!(
        text.ends_with("{\"id\":\"cut"),
        "and the body as far as it got: {text:?}"
    );
    // The gateway's own record of it says the same: 200, 10 bytes, cut by the backend.
    gw.wait_log("\"cut\":\"backend_error\"").await;
    let line = gw
        .access_log()
        .into_iter()
        .find(|l| l["route"] == "/v1/chat/completions")
        .expect("an access-log line");
    assert_eq!(
        (line["status"].as_u64(), line["bytes_out"].as_u64()),
        (Some(200), Some(10))
    );
}
