//! `GET /v1/models` and `GET /v1/models/{id}`, answered by the gateway from probe results
//! (request path; reads atomics and `ArcSwap`s only, never contacts a backend).
//!
//! A model is listed while at least one of its backends is healthy, with the fields that backend
//! reported (`max_model_len`, `root`, ...). It never fails because a backend is down.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::routing::Pool;
use crate::state::Snapshot;

/// The card shown for a pool under `id` (its name or an alias): its first healthy backend's own
/// entry, or a minimal one.
fn card(pool: &Pool, id: &str) -> Option<Value> {
    let healthy = pool.backends.iter().find(|b| b.is_healthy())?;
    let mut card = healthy
        .card()
        .map(|c| (*c).clone())
        .unwrap_or_else(|| json!({"object": "model", "owned_by": "modelgate"}));
    if let Some(obj) = card.as_object_mut() {
        obj.insert("id".into(), Value::String(id.to_string()));
        if id != pool.name {
            obj.insert("root".into(), Value::String(pool.name.clone()));
        }
        obj.entry("object")
            .or_insert_with(|| Value::String("model".into()));
    }
    Some(card)
}

/// The OpenAI model list of every model with a healthy backend, then its aliases; only the
/// names `visible` accepts (an API key's allowed models).
pub fn list(snapshot: &Snapshot, visible: impl Fn(&str) -> bool) -> Bytes {
    let data: Vec<Value> = snapshot
        .pools
        .iter()
        .filter(|p| visible(&p.name))
        .filter_map(|p| card(p, &p.name))
        .chain(
            snapshot
                .aliases
                .iter()
                .filter(|(alias, _)| visible(alias))
                .filter_map(|(alias, target)| card(snapshot.pool(target)?, alias)),
        )
        .collect();
    Bytes::from(serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default())
}

/// One model's card, if it is configured and has a healthy backend.
pub fn retrieve(snapshot: &Snapshot, id: &str) -> Option<Bytes> {
    let card = card(snapshot.pool(id)?, id)?;
    Some(Bytes::from(serde_json::to_vec(&card).unwrap_or_default()))
}
