//! Which gateway behaviour a method + path gets (request path, pure, no allocation).
//!
//! `GET /v1/models[/{id}]` is answered by the gateway; `POST` to any `/v1/...` path or to one of
//! vLLM's extra top-level routes is forwarded by model, with no per-endpoint code. Everything
//! else is a 404 or 405, so no client path outside these ever reaches a backend.

use http::Method;

use crate::api::EXTRA_ROUTES;
use crate::error::GatewayError;

/// What to do with a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /v1/models`.
    ListModels,
    /// `GET /v1/models/{id}`.
    RetrieveModel(&'a str),
    /// Forward to the pool named by the body's `model`.
    Forward,
}

/// Classify a request by method and path (the query string is ignored).
pub fn classify<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, GatewayError> {
    let path = path.split('?').next().unwrap_or(path);
    if !path.starts_with('/') || path.split('/').any(|seg| seg == ".." || seg == ".") {
        return Err(GatewayError::BadRequest(
            "request path must be absolute and must not contain dot segments",
        ));
    }
    // An encoded dot, slash or backslash could become a dot segment or another path after a
    // backend decodes it: no OpenAI route needs one.
    if path.contains('\\') || has_encoded_separator(path) {
        return Err(GatewayError::BadRequest(
            "request path must not contain encoded '.', '/' or '\\'",
        ));
    }
    let is_get = method == Method::GET || method == Method::HEAD;
    if path == "/v1/models" || path == "/v1/models/" {
        return if is_get {
            Ok(Route::ListModels)
        } else {
            Err(GatewayError::MethodNotAllowed { allow: "GET" })
        };
    }
    if let Some(id) = path.strip_prefix("/v1/models/") {
        return if is_get {
            Ok(Route::RetrieveModel(id))
        } else {
            Err(GatewayError::MethodNotAllowed { allow: "GET" })
        };
    }
    let routable = (path.starts_with("/v1/") && path.len() > 4) || EXTRA_ROUTES.contains(&path);
    if !routable {
        return Err(GatewayError::NotFound);
    }
    if method == Method::POST {
        Ok(Route::Forward)
    } else {
        Err(GatewayError::MethodNotAllowed { allow: "POST" })
    }
}

/// `%2e`, `%2f` or `%5c` (any case) in `path`.
fn has_encoded_separator(path: &str) -> bool {
    memchr::memchr_iter(b'%', path.as_bytes()).any(|i| {
        matches!(
            path.as_bytes().get(i + 1..i + 3),
            Some(b"2e" | b"2E" | b"2f" | b"2F" | b"5c" | b"5C")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let post = Method::POST;
        let get = Method::GET;
        assert!(matches!(
            classify(&get, "/v1/models"),
            Ok(Route::ListModels)
        ));
        assert!(matches!(
            classify(&get, "/v1/models?x=1"),
            Ok(Route::ListModels)
        ));
        assert!(matches!(
            classify(&get, "/v1/models/m-7b"),
            Ok(Route::RetrieveModel("m-7b"))
        ));
        for p in [
            "/v1/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/score",
            "/v1/rerank",
            "/tokenize",
            "/v2/rerank",
        ] {
            assert!(matches!(classify(&post, p), Ok(Route::Forward)), "{p}");
        }
        assert_eq!(
            classify(&get, "/v1/chat/completions").unwrap_err().status(),
            405
        );
        assert_eq!(classify(&post, "/v1/models").unwrap_err().status(), 405);
        assert_eq!(classify(&post, "/admin").unwrap_err().status(), 404);
        assert_eq!(classify(&get, "/health").unwrap_err().status(), 404);
        assert_eq!(classify(&get, "/ready").unwrap_err().status(), 404);
        assert_eq!(classify(&post, "/v1/").unwrap_err().status(), 404);
        assert_eq!(classify(&post, "/v1/../admin").unwrap_err().status(), 400);
        assert_eq!(
            classify(&post, "http://x/v1/chat").unwrap_err().status(),
            400
        );
    }
}
