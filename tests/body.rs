//! Request bodies: byte-exact forwarding at every size and `model` position, Content-Length and
//! chunked, `Expect: 100-continue`, and every kind of bad body with its status and error JSON.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A chat body of exactly `size` bytes with `model` first or last.
fn body_of(size: usize, model_first: bool) -> Vec<u8> {
    let head_first = r#"{"model":"m","messages":[{"role":"user","content":""#;
    let tail_first = r#""}],"max_tokens":4}"#;
    let head_last = r#"{"messages":[{"role":"user","content":""#;
    let tail_last = r#""}],"max_tokens":4,"model":"m"}"#;
    let (head, tail) = if model_first {
        (head_first, tail_first)
    } else {
        (head_last, tail_last)
    };
    let fill = size - head.len() - tail.len();
    // Vary the filler so a shifted or truncated body cannot hash the same.
    let filler: String = (0..fill).map(|i| (b'a' + (i % 23) as u8) as char).collect();
    let body = format!("{head}{filler}{tail}").into_bytes();
    assert_eq!(body.len(), size);
    body
}

async fn gateway_with_one_backend() -> (MockServer, Gateway) {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(&model_block("m", &[backend("a0", &a)], ""), "").await;
    (a, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_reach_the_backend_byte_exact_at_every_size_and_position() {
    let (a, gw) = gateway_with_one_backend().await;
    let c = client();
    let sizes = [1024, 65535, 65536, 65537, 100 * 1024, 4 * 1024 * 1024];
    for size in sizes {
        for model_first in [true, false] {
            for chunked in [false, true] {
                let body = body_of(size, model_first);
                let want = sha256_hex(&body);
                let req = c
                    .post(gw.url("/v1/chat/completions"))
                    .header("content-type", "application/json");
                let req = if chunked {
                    // 7 KiB pieces so chunk boundaries fall inside keys and values.
                    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
                        body.chunks(7 * 1024).map(|c| Ok(c.to_vec())).collect();
                    req.body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                        pieces,
                    )))
                } else {
                    req.body(body.clone())
                };
                let r = req.send().await.unwrap();
                let what = format!("size {size} model_first {model_first} chunked {chunked}");
                assert_eq!(r.status(), 200, "{what}");
                assert_eq!(
                    r.headers()["x-mock-body-sha256"].to_str().unwrap(),
                    want,
                    "{what}"
                );
                assert_eq!(
                    r.headers()["x-mock-body-len"].to_str().unwrap(),
                    size.to_string(),
                    "{what}"
                );
                let _ = r.bytes().await.unwrap();
            }
        }
    }
    assert_eq!(a.stats().requests(), (sizes.len() * 4) as u64);
}

/// Send raw bytes and read the response head (and what follows, until `until` appears or the
/// connection closes).
async fn raw(gw: &Gateway, bytes: &[u8], until: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if String::from_utf8_lossy(&out).contains(until) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_not_forwarded() {
    let (a, gw) = gateway_with_one_backend().await;
    let body = body_of(100 * 1024, false);
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    // The gateway must say 100 Continue before we send anything (curl would wait 1 s otherwise).
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let interim = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    s.write_all(&body).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&out).contains("chat.completion") {
                break;
            }
        }
    })
    .await;
    let resp = String::from_utf8_lossy(&out).to_string();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert_eq!(a.stats().last_body_sha256().unwrap(), sha256_hex(&body));
    assert!(
        a.stats().last_header("expect").is_none(),
        "Expect must not be forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_with_openai_error_and_never_reach_a_backend() {
    let (a, gw) = gateway_with_one_backend().await;
    let c = client();
    let cases: &[(&str, &str)] = &[
        (r#"{"messages": [}, "model": "m"}"#, "invalid_json"),
        (r#"{"messages": []}"#, "missing_model"),
        (r#"{"model": 7}"#, "invalid_model"),
        (r#"{"model": ["m"]}"#, "invalid_model"),
        (r#"{"model": null}"#, "invalid_model"),
        (r#"{"model": "m", "x": 1, "model": "m"}"#, "invalid_model"),
        (r#"["model", "m"]"#, "invalid_json"),
        ("", "invalid_json"),
        ("not json at all", "invalid_json"),
    ];
    for (body, code) in cases {
        let r = c
            .post(gw.url("/v1/chat/completions"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let v = expect_error(r, 400, Some(code)).await;
        assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
    }
    // Invalid UTF-8 bytes inside the model string.
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(b"{\"model\": \"m\xff\"}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(a.stats().requests(), 0);
    // A duplicate model far beyond the pre-read is still caught before the backend answers:
    // the upload is aborted, so the backend never sees a complete request.
    let mut big = body_of(200 * 1024, true);
    big.truncate(big.len() - 1);
    big.extend_from_slice(br#","model":"m"}"#);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(big)
        .send()
        .await
        .unwrap();
    expect_error(r, 400, Some("invalid_model")).await;
    assert!(a.stats().last_body_sha256().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_is_404_naming_it_and_listing_available() {
    let (_a, gw) = gateway_with_one_backend().await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(chat_body("gpt-9", false))
        .send()
        .await
        .unwrap();
    let v = expect_error(r, 404, Some("model_not_found")).await;
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("gpt-9") && msg.contains("m"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_by_header_and_by_stream() {
    let a = mock("a0", "m").await;
    let gw = Gateway::start_ready(
        &model_block("m", &[backend("a0", &a)], ""),
        "max_body_bytes: 4096",
    )
    .await;
    let c = client();
    let mut body = br#"{"messages":""#.to_vec();
    body.extend(std::iter::repeat_n(b'x', 5000));
    body.extend_from_slice(br#"","model":"m"}"#);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, 413, Some("request_too_large")).await;
    // Chunked: no Content-Length to check up front; the limit applies while reading.
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )))
        .send()
        .await
        .unwrap();
    expect_error(r, 413, Some("request_too_large")).await;
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_and_bad_methods_are_rejected() {
    let (a, gw) = gateway_with_one_backend().await;
    // Bodies the backend would accept: only the framing can be what is refused.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let both = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    let both = raw(&gw, both.as_bytes(), "\r\n\r\n").await;
    assert!(both.starts_with("HTTP/1.1 400"), "{both}");
    let dup = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\r\n{body}",
        body.len()
    );
    let dup = raw(&gw, dup.as_bytes(), "\r\n\r\n").await;
    assert!(dup.starts_with("HTTP/1.1 400"), "{dup}");
    let r = client()
        .get(gw.url("/v1/chat/completions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    expect_error(r, 405, Some("method_not_allowed")).await;
    let r = client().get(gw.url("/nowhere")).send().await.unwrap();
    expect_error(r, 404, Some("not_found")).await;
    assert_eq!(a.stats().requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunk_headers_arriving_without_their_data_do_not_end_the_body_early() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (a, gw) = gateway_with_one_backend().await;
    let head = br#"{"model":"m","messages":[{"role":"user","content":""#;
    let filler = vec![b'x'; 1024];
    let tail = br#""}]}"#;
    let mut body = Vec::new();
    body.extend_from_slice(head);
    body.extend_from_slice(&filler);
    body.extend_from_slice(tail);
    let mut s = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
    s.set_nodelay(true).unwrap();
    let hdr = "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    s.write_all(hdr.as_bytes()).await.unwrap();
    s.write_all(format!("{:X}\r\n", head.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(head).await.unwrap();
    s.write_all(b"\r\n").await.unwrap();
    // Chunk headers sent alone, their data later: the gateway may read a header with no data.
    for piece in filler.chunks(256) {
        s.write_all(format!("{:X}\r\n", piece.len()).as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        s.write_all(piece).await.unwrap();
        s.write_all(b"\r\n").await.unwrap();
    }
    s.write_all(format!("{:X}\r\n", tail.len()).as_bytes())
        .await
        .unwrap();
    s.write_all(tail).await.unwrap();
    s.write_all(b"\r\n0\r\n\r\n").await.unwrap();
    let mut resp = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&resp[..n]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(a.stats().last_body_sha256().unwrap(), sha256_hex(&body));
}
