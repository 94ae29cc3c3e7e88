//! Stages 3 and 4, pre-read and decide (request path): read the body until `model` is known,
//! then pick the pool and everything the backend pick needs (canary split, sticky key, prompt
//! blocks, tenant quota, the `model` splice, the shadow roll).
//!
//! Reads the snapshot, the request and the pre-read bytes; never contacts a backend.

use std::sync::Arc;

use pingora_core::protocols::http::ServerSession;

use super::admit::visible_models;
use super::body::Upload;
use super::{policy, shadow};
use crate::auth::{Refusal, Tenant, TenantGuard};
use crate::error::{clip, GatewayError, MAX_ECHOED_MODEL};
use crate::routing::prefix::PromptBlocks;
use crate::routing::Pool;
use crate::scan::ScanError;
use crate::state::Snapshot;

/// The request routed to a pool (stage 4's output): what the exchange sends and how it picks.
#[derive(Debug)]
pub struct Decided {
    /// The model the request named (or the path's, or `default_model`).
    pub model: String,
    /// The pool that serves it: the requested one, or its canary's.
    pub pool: Arc<Pool>,
    /// The body as far as read, `model` spliced to the name the pool's backends serve.
    pub upload: Upload,
    /// Hash of the `consistent_hash` key, when the request has one.
    pub sticky_key: Option<u64>,
    /// The prompt's block hashes (`cache_aware`).
    pub prompt: Option<PromptBlocks>,
    /// A shadow copy is due once the body has been sent.
    pub shadow: bool,
    /// The tenant's in-flight slot, held until the request ends.
    _tenant_slot: Option<TenantGuard>,
}

/// Why a request was not routed; for a model no pool serves (or the key may not use), its
/// name clipped for the log and the `__unknown__` metric label.
#[derive(Debug)]
pub struct Rejected {
    pub error: GatewayError,
    pub unknown_model: Option<String>,
}

/// Stage 3: read the body until `model` is known (see [`Upload::preread`]).
pub async fn preread(
    session: &mut ServerSession,
    snapshot: &Snapshot,
) -> Result<Upload, GatewayError> {
    Upload::preread(
        session,
        snapshot.max_body_bytes,
        snapshot.capture,
        snapshot.limits.body_timeout,
    )
    .await
}

/// Stage 4: the pool for the model the body (or the path, or `default_model`) names, if the
/// tenant may use it and has quota left, and how its backend is to be picked.
pub fn decide(
    session: &ServerSession,
    snapshot: &Snapshot,
    tenant: Option<&Tenant>,
    mut upload: Upload,
) -> Result<Decided, Rejected> {
    let req = session.req_header();
    let model = match upload.model() {
        Some(m) => m.to_string(),
        // No `model` in the body: a model named in the path (OpenAI's legacy
        // `/v1/engines/{model}/completions`), else `default_model`, else 400.
        None => model_in_path(snapshot, req.uri.path())
            .or_else(|| snapshot.default_model.clone())
            .ok_or(Rejected {
                error: GatewayError::BadBody(ScanError::MissingModel),
                unknown_model: None,
            })?,
    };
    // A model the key may not use looks like one that does not exist (no name leaks).
    let requested = snapshot
        .pool(&model)
        .filter(|_| tenant.is_none_or(|t| t.allows(&model)));
    let Some(requested) = requested else {
        return Err(Rejected {
            unknown_model: Some(clip(&model, MAX_ECHOED_MODEL).to_string()),
            error: GatewayError::ModelNotFound {
                available: visible_models(snapshot, tenant),
                model,
            },
        });
    };
    let tenant_slot = match tenant.map(Tenant::admit).transpose() {
        Ok(slot) => slot.flatten(),
        Err(Refusal::Quota(wait)) => {
            return Err(Rejected {
                error: GatewayError::QuotaExceeded {
                    retry_after_secs: wait.as_secs() + 1,
                },
                unknown_model: None,
            })
        }
    };
    let pool = policy::route(snapshot, requested, req, &upload);
    let sticky_key = policy::sticky_key(pool, req, &upload);
    let prompt = policy::prompt_blocks(pool, &upload);
    // The backends may know the model under another id (alias, served_model_name, canary):
    // splice just the value. (A disaggregated request splices its two bodies itself.)
    let expected = pool.served_model_name.as_deref().unwrap_or(&pool.name);
    if pool.prefill.is_none() && upload.model().is_some_and(|m| m != expected) {
        upload.rewrite_model(expected);
    }
    Ok(Decided {
        shadow: shadow::roll(pool),
        pool: Arc::clone(pool),
        model,
        upload,
        sticky_key,
        prompt,
        _tenant_slot: tenant_slot,
    })
}

/// The first path segment that names a configured model or alias, if any.
fn model_in_path(snapshot: &Snapshot, path: &str) -> Option<String> {
    path.split('/')
        .filter(|seg| !seg.is_empty() && *seg != "v1")
        .find(|seg| snapshot.pool(seg).is_some())
        .map(str::to_string)
}
