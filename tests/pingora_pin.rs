//! What the gateway still relies on from Pingora, pinned to pingora-core 0.9.1 (ADR 0001). On
//! an upgrade the version check fails first and loudly: re-read these behaviours in the new
//! sources (and re-run ADR 0001's prototype comparison), then move the pin.
//!
//! - `proxy::head`: `read_request` fails with `InvalidHTTPHeader` for a request it cannot parse
//!   (the gateway answers its JSON 400), with another error when the stream breaks (the header
//!   guard has answered; nothing more is written), and parses `CONNECT` (answered 405); a
//!   response can be written on a session whose read failed.
//! - `proxy::framing`: with `Transfer-Encoding`, Pingora drops `Content-Length` from the parsed
//!   header but keeps it in `get_headers_raw_bytes`.
//! - `config` bounds `limits.max_headers` by Pingora's own 256 header lines.
//! - `conn` and `proxy::respond`: a finished keep-alive session hands its stream back.

use std::time::Duration;

use pingora_core::protocols::http::ServerSession;
use pingora_error::ErrorType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The pingora-core version these behaviours were read from.
const PINNED: &str = "0.9.1";

#[test]
fn pingora_core_is_the_pinned_version() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"pingora-core\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string());
    assert_eq!(
        version.as_deref(),
        Some(PINNED),
        "pingora-core moved: re-check every behaviour tests/pingora_pin.rs lists (and ADR 0001's \
         contracts), then update PINNED"
    );
}

/// A server session on one end of a TCP pair; the other end has sent `bytes` (and is closed
/// when `close`).
async fn session_after(bytes: &[u8], close: bool) -> (ServerSession, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    client.write_all(bytes).await.unwrap();
    if close {
        client.shutdown().await.unwrap();
    }
    let stream = pingora_core::protocols::l4::stream::Stream::from(server);
    (ServerSession::new_http1(Box::new(stream)), client)
}

async fn read_error(bytes: &[u8], close: bool) -> ErrorType {
    let (mut session, _client) = session_after(bytes, close).await;
    let read = tokio::time::timeout(Duration::from_secs(5), session.read_request())
        .await
        .expect("read_request returns");
    read.expect_err("the read fails").etype().clone()
}

#[tokio::test]
async fn a_request_pingora_cannot_parse_is_invalid_http_header_and_a_broken_one_is_not() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"POST / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(
            read_error(bad, false).await,
            ErrorType::InvalidHTTPHeader,
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let broken = read_error(b"POST / HTTP/1.1\r\nHost: x\r\n", true).await;
    assert_ne!(broken, ErrorType::InvalidHTTPHeader);
    // 257 header lines: over Pingora's own cap, which bounds `limits.max_headers`.
    let many: String = (0..257).map(|i| format!("X-H{i}: v\r\n")).collect();
    let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
    assert_eq!(
        read_error(req.as_bytes(), false).await,
        ErrorType::InvalidHTTPHeader
    );
}

#[tokio::test]
async fn connect_parses_and_an_answer_can_follow_a_failed_read() {
    let (mut session, _client) = session_after(b"CONNECT x:443 HTTP/1.1\r\n\r\n", false).await;
    assert!(session.read_request().await.unwrap());
    assert_eq!(session.req_header().method, http::Method::CONNECT);

    let (mut session, mut client) = session_after(b"GARBAGE\r\n\r\n", false).await;
    assert!(session.read_request().await.is_err());
    session.set_keepalive(None);
    let mut header = pingora_http::ResponseHeader::build(400, None).unwrap();
    header.insert_header("content-length", "2").unwrap();
    session
        .write_response_header(Box::new(header))
        .await
        .unwrap();
    session
        .write_response_body(bytes::Bytes::from_static(b"{}"), true)
        .await
        .unwrap();
    session.shutdown().await;
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.ends_with("{}"), "{answer}");
}

#[tokio::test]
async fn raw_header_bytes_keep_a_content_length_the_parsed_header_dropped() {
    let req =
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (mut session, _client) = session_after(req, false).await;
    assert!(session.read_request().await.unwrap());
    assert!(session.req_header().headers.get("content-length").is_none());
    let raw = session.as_http1().unwrap().get_headers_raw_bytes();
    assert_eq!(&raw[..], &req[..]);
}

#[tokio::test]
async fn a_finished_keep_alive_session_hands_its_stream_back() {
    let req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let (mut session, _client) = session_after(req, false).await;
    assert!(session.read_request().await.unwrap());
    let mut header = pingora_http::ResponseHeader::build(200, None).unwrap();
    header.insert_header("content-length", "0").unwrap();
    session
        .write_response_header(Box::new(header))
        .await
        .unwrap();
    session
        .write_response_body(bytes::Bytes::new(), true)
        .await
        .unwrap();
    assert!(session.finish().await.unwrap().is_some());
}
