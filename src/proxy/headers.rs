//! Header handling on the request path: request ids, hop-by-hop stripping (RFC 9110 §7.6.1),
//! the upstream request, and the route receipt on responses.
//!
//! Unknown headers pass through both ways untouched. The client's `Authorization` / `api-key`
//! reach a backend only when authentication is off or `auth.pass_authorization` is set; a
//! backend's own `api_key` replaces them ([`set_credentials`]).

use std::io::Write;
use std::net::SocketAddr;

use http::header::{self, HeaderName, HeaderValue};
use pingora_http::{RequestHeader, ResponseHeader};

/// Hop-by-hop headers never forwarded, in either direction. `transfer-encoding` and
/// `content-length` are framing: Pingora rewrites them per side, so they are kept. Names, not
/// strings: removing by name skips parsing it for every request.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// `x-modelgate-attempts` values without formatting (the attempt cap is 10).
const ATTEMPTS: [HeaderValue; 11] = [
    HeaderValue::from_static("0"),
    HeaderValue::from_static("1"),
    HeaderValue::from_static("2"),
    HeaderValue::from_static("3"),
    HeaderValue::from_static("4"),
    HeaderValue::from_static("5"),
    HeaderValue::from_static("6"),
    HeaderValue::from_static("7"),
    HeaderValue::from_static("8"),
    HeaderValue::from_static("9"),
    HeaderValue::from_static("10"),
];

/// Longest client-supplied request id we keep.
const MAX_REQUEST_ID: usize = 200;

/// The client's `x-request-id` if it is sane (1..=200 visible ASCII chars, no spaces),
/// otherwise a fresh random one.
pub fn request_id(req: &RequestHeader) -> String {
    if let Some(v) = req.headers.get("x-request-id") {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| (0x21..=0x7e).contains(c))
        {
            // Checked ASCII above, so this is valid UTF-8.
            return String::from_utf8_lossy(b).into_owned();
        }
    }
    format!("{:032x}", rand::random::<u128>())
}

/// Names listed in `Connection:` (they are hop-by-hop too). The usual `keep-alive` / `close`
/// cost no allocation.
fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case("close")
                && !t.eq_ignore_ascii_case("keep-alive")
        })
        .map(str::to_ascii_lowercase)
        .collect()
}

/// The request to send upstream: the client's, minus hop-by-hop headers and `Expect`, with the
/// backend's path prefix, `x-request-id` and `x-forwarded-for` set.
pub fn upstream_request(
    req: &RequestHeader,
    path_prefix: &str,
    request_id: &str,
    client: Option<SocketAddr>,
) -> RequestHeader {
    let mut up = req.clone();
    for name in connection_tokens(&req.headers) {
        up.remove_header(name.as_str());
    }
    for name in &HOP_BY_HOP {
        up.remove_header(name);
    }
    // We answered (or ignored) 100-continue ourselves; the body is already in hand.
    up.remove_header(&header::EXPECT);
    let _ = up.insert_header("x-request-id", request_id);
    if let Some(addr) = client {
        // "<previous>, <ip>" written once, straight into the header value's bytes.
        let prev = req
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::as_bytes);
        let mut xff = Vec::with_capacity(prev.map_or(0, |p| p.len() + 2) + 39);
        if let Some(prev) = prev {
            xff.extend_from_slice(prev);
            xff.extend_from_slice(b", ");
        }
        let _ = write!(xff, "{}", addr.ip());
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(xff)) {
            let _ = up.insert_header("x-forwarded-for", v);
        }
    }
    // Origin-form always: an absolute-form request target (`POST http://host/v1/...`) is not
    // passed on as one.
    if !path_prefix.is_empty() || req.uri.authority().is_some() {
        let pq = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if let Ok(uri) = format!("{path_prefix}{pq}").parse::<http::Uri>() {
            up.set_uri(uri);
        }
    }
    up
}

/// The upstream request's credentials: the client's API key is removed unless authentication
/// passes it on (`strip_client` false), and a backend's own `api_key` (vLLM `--api-key`)
/// replaces it.
pub fn set_credentials(req: &mut RequestHeader, strip_client: bool, backend_key: Option<&str>) {
    if strip_client {
        req.remove_header("authorization");
        req.remove_header("api-key");
    }
    if let Some(key) = backend_key {
        let _ = req.insert_header("authorization", format!("Bearer {key}"));
    }
}

/// W3C Trace Context upstream: the backend's parent is the gateway's span.
pub fn set_trace(req: &mut RequestHeader, trace: &crate::telemetry::TraceContext) {
    let _ = req.insert_header("traceparent", trace.header_value());
    match &trace.tracestate {
        Some(state) => {
            let _ = req.insert_header("tracestate", state.as_str());
        }
        None => {
            req.remove_header("tracestate");
        }
    }
}

/// Strip hop-by-hop headers from a backend response and add the route receipt.
pub fn downstream_response(
    resp: &mut ResponseHeader,
    backend: &str,
    attempts: u32,
    request_id: &str,
) {
    for name in connection_tokens(&resp.headers) {
        resp.remove_header(name.as_str());
    }
    for name in &HOP_BY_HOP {
        resp.remove_header(name);
    }
    let _ = resp.insert_header("x-modelgate-backend", backend);
    match ATTEMPTS.get(attempts as usize) {
        Some(v) => {
            let _ = resp.insert_header("x-modelgate-attempts", v.clone());
        }
        None => {
            let _ = resp.insert_header("x-modelgate-attempts", attempts);
        }
    }
    let _ = resp.insert_header("x-request-id", request_id);
}

/// Set (or remove) the `Server` header per `server_header`: the backend's own (e.g. `uvicorn`)
/// never reaches the client.
pub fn set_server(resp: &mut ResponseHeader, value: Option<&str>) {
    match value {
        Some(v) => {
            let _ = resp.insert_header("server", v);
        }
        None => {
            resp.remove_header("server");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/v1/chat/completions?a=1", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn sane_request_ids_are_kept_others_replaced() {
        assert_eq!(request_id(&req(&[("x-request-id", "abc-123")])), "abc-123");
        for bad in ["", "has space", &"x".repeat(201)] {
            let id = request_id(&req(&[("x-request-id", bad)]));
            assert_eq!(id.len(), 32, "{bad:?} -> {id}");
        }
        assert_eq!(request_id(&req(&[])).len(), 32);
    }

    #[test]
    fn hop_by_hop_is_stripped_and_rest_kept() {
        let r = req(&[
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("expect", "100-continue"),
            ("authorization", "Bearer k"),
            ("x-custom", "v"),
            ("content-length", "2"),
        ]);
        let up = upstream_request(&r, "/base", "rid", Some("10.1.2.3:5".parse().unwrap()));
        for gone in ["connection", "x-private", "keep-alive", "te", "expect"] {
            assert!(up.headers.get(gone).is_none(), "{gone}");
        }
        assert_eq!(up.headers["authorization"], "Bearer k");
        assert_eq!(up.headers["x-custom"], "v");
        assert_eq!(up.headers["content-length"], "2");
        assert_eq!(up.headers["x-request-id"], "rid");
        assert_eq!(up.headers["x-forwarded-for"], "10.1.2.3");
        assert_eq!(up.uri.to_string(), "/base/v1/chat/completions?a=1");
    }

    #[test]
    fn response_gets_receipt() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header("connection", "close").unwrap();
        resp.append_header("x-backend-thing", "1").unwrap();
        downstream_response(&mut resp, "gpu0", 2, "rid");
        assert!(resp.headers.get("connection").is_none());
        assert_eq!(resp.headers["x-backend-thing"], "1");
        assert_eq!(resp.headers["x-modelgate-backend"], "gpu0");
        assert_eq!(resp.headers["x-modelgate-attempts"], "2");
    }
}
