//! The HTTP API surface the public listener knows (request path, pure, no allocation): the
//! vLLM routes outside `/v1/` that are forwarded by model, and the `endpoint` metric label
//! each path counts under.
//!
//! Shared by `proxy::route` (what is forwarded) and `metrics` (label values), so neither needs
//! the other. Owns no state and imports nothing from the crate.

/// vLLM routes outside `/v1/` that carry a `model` in a JSON body.
pub const EXTRA_ROUTES: &[&str] = &[
    "/tokenize",
    "/detokenize",
    "/pooling",
    "/classify",
    "/score",
    "/rerank",
    "/v2/rerank",
    "/invocations",
];

/// OpenAI-style endpoints with their own `endpoint` label value; vLLM's extra top-level
/// routes ([`EXTRA_ROUTES`]) get theirs too, and any other path counts as `other`.
const V1_ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/models",
    "/v1/score",
    "/v1/rerank",
    "/v1/audio/transcriptions",
    "/v1/audio/translations",
];

/// Number of distinct `endpoint` label values.
pub const N_ENDPOINTS: usize = V1_ENDPOINTS.len() + EXTRA_ROUTES.len() + 1;

/// The `endpoint` label value of an index from [`endpoint_index`].
pub fn endpoint_label(i: usize) -> &'static str {
    V1_ENDPOINTS
        .get(i)
        .or_else(|| EXTRA_ROUTES.get(i.wrapping_sub(V1_ENDPOINTS.len())))
        .copied()
        .unwrap_or("other")
}

/// Index of `path`'s `endpoint` label (query ignored, `/v1/models/{id}` counted as
/// `/v1/models`).
pub fn endpoint_index(path: &str) -> usize {
    let path = path.split('?').next().unwrap_or(path);
    let path = if path.starts_with("/v1/models/") {
        "/v1/models"
    } else {
        path
    };
    V1_ENDPOINTS
        .iter()
        .position(|e| *e == path)
        .or_else(|| {
            EXTRA_ROUTES
                .iter()
                .position(|e| *e == path)
                .map(|i| i + V1_ENDPOINTS.len())
        })
        .unwrap_or(N_ENDPOINTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_bounded_and_normalised() {
        let i = endpoint_index("/v1/chat/completions?x=1");
        assert_eq!(endpoint_label(i), "/v1/chat/completions");
        assert_eq!(
            endpoint_label(endpoint_index("/v1/models/m-7b")),
            "/v1/models"
        );
        assert_eq!(endpoint_label(endpoint_index("/tokenize")), "/tokenize");
        assert_eq!(endpoint_label(endpoint_index("/v1/anything/else")), "other");
        assert_eq!(endpoint_index("/v1/anything/else"), N_ENDPOINTS - 1);
        let labels: std::collections::HashSet<_> = (0..N_ENDPOINTS).map(endpoint_label).collect();
        assert_eq!(labels.len(), N_ENDPOINTS);
    }
}
