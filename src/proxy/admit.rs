//! Stage 2, admit (request path): take the snapshot this request is served with, count it in
//! flight, and decide what kind of request it is: refused (framing, route, API key), answered
//! by the gateway (`GET /v1/models[/{id}]`), or to be forwarded by model.
//!
//! Reads the snapshot and the request header only; never touches the body or a backend.

use std::sync::Arc;

use pingora_core::protocols::http::ServerSession;

use super::route::{self, Route};
use super::{framing, models};
use crate::auth::Tenant;
use crate::error::GatewayError;
use crate::lifecycle::{RequestGuard, Traffic};
use crate::state::{SharedState, Snapshot};

/// The snapshot a request is served with, and its place in the in-flight count (held until the
/// request's end is recorded).
#[derive(Debug)]
pub struct Admitted {
    pub snapshot: Arc<Snapshot>,
    _in_flight: RequestGuard,
}

impl Admitted {
    /// Load the snapshot once for this request and count it in flight (graceful exit waits for
    /// the count to reach zero). A client that stops reading must not pin a backend slot: its
    /// writes time out. A process going away ends every connection after its response.
    pub fn new(session: &mut ServerSession, live: &SharedState, traffic: &Traffic) -> Admitted {
        let admitted = Admitted {
            snapshot: live.load_full(),
            _in_flight: traffic.track_request(),
        };
        session.set_write_timeout(Some(admitted.snapshot.limits.client_write_timeout));
        if traffic.is_closing() {
            session.set_keepalive(None);
        }
        admitted
    }
}

/// What the request is, once admitted (for the API key's tenant when authentication is on).
#[derive(Debug)]
pub enum Admission {
    /// Forward by model (the body names it).
    Forward(Option<Arc<Tenant>>),
    /// Answered by the gateway from the snapshot: this JSON (200), or this error.
    Answer(Option<Arc<Tenant>>, Result<bytes::Bytes, GatewayError>),
}

/// Check the request's framing, route and API key. `Err`: answer with this error.
pub fn admit(session: &ServerSession, snapshot: &Snapshot) -> Result<Admission, GatewayError> {
    let req = session.req_header();
    // Debug builds only (the test suite): a fault hook proving that a panic in one request's
    // task ends that connection and nothing else.
    #[cfg(debug_assertions)]
    if req.headers.contains_key("x-modelgate-debug-panic") {
        panic!("x-modelgate-debug-panic: deliberate test fault");
    }
    refuse_ambiguous_framing(session)?;
    let route = route::classify(&req.method, req.uri.path())?;
    let tenant = match &snapshot.tenants {
        None => None,
        Some(tenants) => Some(
            crate::auth::bearer(&req.headers)
                .and_then(|key| tenants.authenticate(key))
                .ok_or(GatewayError::Unauthorized)?,
        ),
    };
    let visible = |model: &str| tenant.as_ref().is_none_or(|t| t.allows(model));
    let answer = match route {
        Route::Forward => return Ok(Admission::Forward(tenant)),
        Route::ListModels => Ok(models::list(snapshot, visible)),
        Route::RetrieveModel(id) => models::retrieve(snapshot, id)
            .filter(|_| visible(id))
            .ok_or_else(|| GatewayError::ModelNotFound {
                model: id.to_string(),
                available: visible_models(snapshot, tenant.as_deref()),
            }),
    };
    Ok(Admission::Answer(tenant, answer))
}

/// A request whose body length could be read two ways is refused before anything else
/// ([`framing`]); only requests carrying `Transfer-Encoding` need the raw header read.
fn refuse_ambiguous_framing(session: &ServerSession) -> Result<(), GatewayError> {
    let req = session.req_header();
    if !req.headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Ok(());
    }
    match session.as_http1() {
        Some(h1) => framing::check(&h1.get_headers_raw_bytes()).map_err(GatewayError::BadRequest),
        None => Ok(()),
    }
}

/// "a, b" of the models this request may see (all, or the API key's): a 404 never names a
/// model the key may not use, and reads the same for a forbidden and a missing model.
pub fn visible_models(snapshot: &Snapshot, tenant: Option<&Tenant>) -> String {
    let Some(tenant) = tenant else {
        return snapshot.model_list.clone();
    };
    snapshot
        .pools
        .iter()
        .map(|p| p.name.as_str())
        .chain(snapshot.aliases.iter().map(|(a, _)| a.as_str()))
        .filter(|m| tenant.allows(m))
        .collect::<Vec<_>>()
        .join(", ")
}
