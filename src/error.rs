//! Client-facing errors: [`GatewayError`] and its one renderer to an OpenAI-shaped JSON response.
//!
//! Runs on the request path. Every error the gateway itself produces goes through
//! [`GatewayError::response`]; backend errors are passed through untouched and never come here.
//! Messages never contain backend addresses, internal error text or panic messages: those go to
//! the log only.

use bytes::Bytes;
use pingora_http::ResponseHeader;
use serde::Serialize;

use crate::scan::ScanError;

/// Seconds a client should wait before retrying a 503 (one health-check interval or so).
pub const RETRY_AFTER_SECS: &str = "2";

/// Longest model name echoed back in an error or written to the access log.
pub const MAX_ECHOED_MODEL: usize = 256;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

/// An error the gateway answers itself.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    /// The body could not be routed (bad JSON before `model`, no `model`, wrong type, duplicate).
    #[error("{0}")]
    BadBody(ScanError),
    /// Malformed request framing or headers.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The connection broke while reading the body.
    #[error("request body could not be read")]
    BodyRead,
    /// The whole body did not arrive within `limits.body_timeout_ms`.
    #[error("request body timeout")]
    BodyTimeout,
    /// The request header did not arrive within `limits.header_timeout_ms`.
    #[error("request header timeout")]
    HeaderTimeout,
    /// The request header is over `limits.max_header_bytes` or `limits.max_headers`.
    #[error("{0}")]
    HeaderTooLarge(&'static str),
    /// The client IP already has `limits.max_connections_per_ip` connections open.
    #[error("too many connections")]
    TooManyConnections,
    /// No configured model has this name.
    #[error("model not found")]
    ModelNotFound { model: String, available: String },
    /// No route for this path.
    #[error("not found")]
    NotFound,
    /// The path exists but not for this method.
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    /// Body larger than `max_body_bytes`.
    #[error("body too large")]
    PayloadTooLarge { limit: u64 },
    /// The model's pool has no healthy backend right now.
    #[error("no healthy backend")]
    NoHealthyBackend { model: String },
    /// Authentication is on and the request has no valid API key.
    #[error("unauthorized")]
    Unauthorized,
    /// The tenant's requests/tokens per minute or in-flight cap is used up.
    #[error("quota exceeded")]
    QuotaExceeded { retry_after_secs: u64 },
    /// Every healthy backend is at `max_in_flight` and the model's queue is full or the wait
    /// timed out.
    #[error("overloaded")]
    Overloaded { model: String },
    /// Every attempt failed before a response could be relayed.
    #[error("upstream failure")]
    Upstream,
    /// A timeout expired before the first response byte.
    #[error("upstream timeout")]
    Timeout,
    /// A disaggregated request's prefill server answered something the decode leg cannot use.
    #[error("{0}")]
    BadPrefill(&'static str),
}

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: String,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// `message`, `type`, `param` and `code` of an error's JSON body.
type Fields = (
    String,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
);

impl GatewayError {
    /// HTTP status of this error.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::BadBody(_) | GatewayError::BadRequest(_) | GatewayError::BodyRead => 400,
            GatewayError::ModelNotFound { .. } | GatewayError::NotFound => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::BodyTimeout | GatewayError::HeaderTimeout => 408,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::HeaderTooLarge(_) => 431,
            GatewayError::TooManyConnections => 429,
            GatewayError::Unauthorized => 401,
            GatewayError::QuotaExceeded { .. } => 429,
            GatewayError::Overloaded { .. } => 429,
            GatewayError::Upstream | GatewayError::BadPrefill(_) => 502,
            GatewayError::NoHealthyBackend { .. } => 503,
            GatewayError::Timeout => 504,
        }
    }

    /// Short cause label for logs (stable, low cardinality).
    pub fn cause(&self) -> &'static str {
        match self {
            GatewayError::BadBody(_) => "bad_body",
            GatewayError::BadRequest(_) => "bad_request",
            GatewayError::BodyRead => "body_read",
            GatewayError::BodyTimeout => "body_timeout",
            GatewayError::HeaderTimeout => "header_timeout",
            GatewayError::HeaderTooLarge(_) => "header_too_large",
            GatewayError::TooManyConnections => "too_many_connections",
            GatewayError::ModelNotFound { .. } => "model_not_found",
            GatewayError::NotFound => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::PayloadTooLarge { .. } => "payload_too_large",
            GatewayError::NoHealthyBackend { .. } => "no_healthy_backend",
            GatewayError::Unauthorized => "unauthorized",
            GatewayError::QuotaExceeded { .. } => "quota_exceeded",
            GatewayError::Overloaded { .. } => "overloaded",
            GatewayError::Upstream => "upstream_error",
            GatewayError::Timeout => "upstream_timeout",
            GatewayError::BadPrefill(_) => "bad_prefill",
        }
    }

    fn body(&self) -> Body<'static> {
        let (message, kind, param, code) =
            self.request_body().unwrap_or_else(|| self.service_body());
        Body {
            message,
            kind,
            param,
            code,
        }
    }

    /// The fields of an error of the request itself (framing, body, route, size) or of the
    /// connection's limits, if it is one.
    fn request_body(&self) -> Option<Fields> {
        Some(match self {
            GatewayError::BadBody(e) => (
                e.to_string(),
                "invalid_request_error",
                Some("model"),
                Some(match e {
                    ScanError::MissingModel => "missing_model",
                    ScanError::InvalidJson { .. } | ScanError::NotAnObject => "invalid_json",
                    ScanError::InvalidMultipart { .. } => "invalid_multipart",
                    _ => "invalid_model",
                }),
            ),
            GatewayError::BadRequest(m) => (m.to_string(), "invalid_request_error", None, None),
            GatewayError::BodyRead => (
                "the request body could not be read completely".into(),
                "invalid_request_error",
                None,
                None,
            ),
            GatewayError::BodyTimeout => (
                "The request body did not arrive in time".into(),
                "invalid_request_error",
                None,
                Some("request_timeout"),
            ),
            GatewayError::HeaderTimeout => (
                "The request header did not arrive in time".into(),
                "invalid_request_error",
                None,
                Some("request_timeout"),
            ),
            GatewayError::HeaderTooLarge(m) => (
                format!("{m}; the connection is closed"),
                "invalid_request_error",
                None,
                Some("request_header_fields_too_large"),
            ),
            GatewayError::TooManyConnections => (
                "Too many open connections from this client address".into(),
                "rate_limit_error",
                None,
                Some("too_many_connections"),
            ),
            GatewayError::ModelNotFound { model, available } => (
                format!(
                    "The model `{}` does not exist. Available models: {available}",
                    clip(model, MAX_ECHOED_MODEL)
                ),
                "invalid_request_error",
                Some("model"),
                Some("model_not_found"),
            ),
            GatewayError::NotFound => (
                "Unknown route. The gateway serves the OpenAI API under /v1/.".into(),
                "invalid_request_error",
                None,
                Some("not_found"),
            ),
            GatewayError::MethodNotAllowed { allow } => (
                format!("Method not allowed; use {allow}"),
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
            ),
            GatewayError::PayloadTooLarge { limit } => (
                format!("Request body is larger than the limit of {limit} bytes"),
                "invalid_request_error",
                None,
                Some("request_too_large"),
            ),
            _ => return None,
        })
    }

    /// The fields of an error of authentication, quota, capacity or the backends.
    fn service_body(&self) -> Fields {
        match self {
            GatewayError::NoHealthyBackend { model } => (
                format!("No healthy backend is available for model `{model}`; retry shortly"),
                "server_error",
                None,
                Some("no_healthy_backend"),
            ),
            GatewayError::Unauthorized => (
                "Invalid or missing API key. Send Authorization: Bearer <key>.".into(),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            GatewayError::QuotaExceeded { .. } => (
                "Rate limit reached for this API key; retry after the time in Retry-After".into(),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            GatewayError::Overloaded { model } => (
                format!("Model `{model}` is at capacity; retry shortly"),
                "rate_limit_error",
                None,
                Some("rate_limit_exceeded"),
            ),
            GatewayError::Upstream => (
                "The model server failed to answer".into(),
                "server_error",
                None,
                Some("upstream_error"),
            ),
            GatewayError::Timeout => (
                "The model server did not answer in time".into(),
                "server_error",
                None,
                Some("upstream_timeout"),
            ),
            GatewayError::BadPrefill(m) => (
                m.to_string(),
                "server_error",
                None,
                Some("bad_prefill_response"),
            ),
            _ => (
                "The gateway could not answer".into(),
                "server_error",
                None,
                None,
            ),
        }
    }

    /// The JSON body `{"error":{"message","type","param","code"}}`.
    pub fn json(&self) -> Bytes {
        let envelope = Envelope { error: self.body() };
        // Serialising plain strings and options into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default())
    }

    /// Response header and body for this error, with `x-request-id` when known.
    pub fn response(&self, request_id: Option<&str>) -> (ResponseHeader, Bytes) {
        let body = self.json();
        let status = self.status();
        // `build` only fails for an invalid status code; every status above is valid.
        let mut header = ResponseHeader::build(status, Some(6))
            .or_else(|_| ResponseHeader::build(500, Some(6)))
            .expect("500 is a valid status");
        let _ = header.insert_header("content-type", "application/json");
        let _ = header.insert_header("content-length", body.len());
        if let Some(id) = request_id {
            let _ = header.insert_header("x-request-id", id);
        }
        match self {
            GatewayError::NoHealthyBackend { .. } => {
                let _ = header.insert_header("retry-after", RETRY_AFTER_SECS);
                let _ = header.insert_header("x-should-retry", "true");
            }
            GatewayError::Overloaded { .. } | GatewayError::TooManyConnections => {
                let _ = header.insert_header("retry-after", "1");
                let _ = header.insert_header("x-should-retry", "true");
            }
            GatewayError::QuotaExceeded { retry_after_secs } => {
                let _ = header.insert_header("retry-after", (*retry_after_secs).max(1));
                let _ = header.insert_header("x-should-retry", "true");
            }
            GatewayError::Unauthorized => {
                let _ = header.insert_header("www-authenticate", "Bearer");
            }
            // The gateway already retried per the pool's policy; SDK retries would multiply
            // load on a fleet that is failing or slow.
            GatewayError::Upstream | GatewayError::Timeout | GatewayError::BadPrefill(_) => {
                let _ = header.insert_header("x-should-retry", "false");
            }
            GatewayError::MethodNotAllowed { allow } => {
                let _ = header.insert_header("allow", *allow);
            }
            _ => {}
        }
        (header, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(e: &GatewayError) -> serde_json::Value {
        serde_json::from_slice(&e.json()).unwrap()
    }

    #[test]
    fn every_error_is_openai_shaped() {
        let all = [
            GatewayError::BadBody(ScanError::MissingModel),
            GatewayError::BadRequest("x"),
            GatewayError::BodyRead,
            GatewayError::BodyTimeout,
            GatewayError::HeaderTimeout,
            GatewayError::HeaderTooLarge("x"),
            GatewayError::TooManyConnections,
            GatewayError::ModelNotFound {
                model: "x\u{0}y".into(),
                available: "a, b".into(),
            },
            GatewayError::NotFound,
            GatewayError::MethodNotAllowed { allow: "POST" },
            GatewayError::PayloadTooLarge { limit: 5 },
            GatewayError::NoHealthyBackend { model: "m".into() },
            GatewayError::Overloaded { model: "m".into() },
            GatewayError::Unauthorized,
            GatewayError::QuotaExceeded {
                retry_after_secs: 3,
            },
            GatewayError::Upstream,
            GatewayError::Timeout,
        ];
        for e in all {
            let v = parse(&e);
            let err = v["error"].as_object().unwrap();
            assert!(err["message"].is_string(), "{v}");
            assert!(err["type"].is_string(), "{v}");
            assert!(err.contains_key("param") && err.contains_key("code"), "{v}");
            let (h, body) = e.response(Some("rid"));
            assert_eq!(h.status.as_u16(), e.status());
            assert_eq!(h.headers["content-length"], body.len().to_string().as_str());
            assert_eq!(h.headers["x-request-id"], "rid");
        }
    }

    #[test]
    fn model_not_found_names_model_and_lists_available() {
        let e = GatewayError::ModelNotFound {
            model: "gpt-5".into(),
            available: "mistral-7b, llama".into(),
        };
        let v = parse(&e);
        assert_eq!(e.status(), 404);
        assert_eq!(v["error"]["code"], "model_not_found");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(
            msg.contains("gpt-5") && msg.contains("mistral-7b, llama"),
            "{msg}"
        );
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let (h, _) = GatewayError::NoHealthyBackend { model: "m".into() }.response(None);
        assert_eq!(h.status.as_u16(), 503);
        assert_eq!(h.headers["retry-after"], RETRY_AFTER_SECS);
    }
}
