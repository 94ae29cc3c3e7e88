//! The public listener's request pipeline (request path): [`Gateway`] is the gateway's own
//! pingora-core [`HttpServerApp`], and each request runs typed stages in order, each consuming
//! what the one before produced:
//!
//! 1. [`head`]: read the request header (Pingora's parser); what cannot be a request is
//!    answered here with the gateway's JSON error → [`head::Head`].
//! 2. [`admit`]: load the snapshot once, count the request in flight; framing, route and API
//!    key; `GET /v1/models` is answered from the snapshot → [`admit::Admitted`].
//! 3. [`decide::preread`]: read the body until `model` is known ([`body::Upload`]).
//! 4. [`decide::decide`]: model → pool, tenant quota, canary, sticky key, prompt blocks, the
//!    `model` splice, the shadow roll → [`decide::Decided`].
//! 5. [`forward`] (through [`disagg`] for a prefill/decode model): pick, send, relay, retry
//!    before the first byte → [`forward::Exchanged`].
//! 6. [`respond::settle`] answers a failure, [`observe`] records metrics, span and access log
//!    from the [`observe::Finished`] record, [`respond::reuse`] hands the connection back.
//!
//! The gateway does the upstream exchange itself (body replay, first-byte, idle and total
//! timeouts, no retry after the first byte) on its own per-thread upstream pool
//! ([`upstream`]); Pingora's `ProxyHttp` engine is not used (ADR 0001). Nothing here locks,
//! blocks or does DNS; the connection layer (`conn`) calls [`Gateway`] once per request.

pub mod admit;
pub mod body;
pub mod decide;
pub mod disagg;
pub mod forward;
pub mod framing;
pub mod head;
pub mod headers;
pub mod models;
pub mod observe;
pub mod policy;
pub mod respond;
pub mod route;
pub mod shadow;
pub mod upstream;

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, ReusedHttpStream};
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

use crate::lifecycle::Traffic;
use crate::routing::Affinity;
use crate::state::{SharedState, Snapshot};
use crate::telemetry::Spans;
use admit::{Admission, Admitted};
use forward::{Exchanged, Leg, Outcome};
use head::Head;
use observe::{Finished, Routed};

/// The gateway's request pipeline; see the module doc.
pub struct Gateway {
    live: SharedState,
    traffic: Arc<Traffic>,
    spans: Arc<Spans>,
    upstream: upstream::Upstream,
    shadows: shadow::Shadows,
}

impl Gateway {
    pub fn new(live: SharedState, traffic: Arc<Traffic>, spans: Arc<Spans>) -> Self {
        Gateway {
            live,
            traffic,
            spans,
            upstream: upstream::Upstream::default(),
            shadows: shadow::Shadows::default(),
        }
    }

    /// Stages 2 to 5: admit, pre-read, decide, exchange. What the stages learn for the end
    /// record goes into `routed` (here only) and `out` (the exchange and the gateway's own
    /// answers).
    async fn run(
        &self,
        session: &mut ServerSession,
        head: &Head,
        snapshot: &Snapshot,
        routed: &mut Routed,
        out: &mut Exchanged,
    ) -> Outcome {
        let tenant = match admit::admit(session, snapshot) {
            Err(e) => return Outcome::Failed(e),
            Ok(Admission::Forward(tenant)) => tenant,
            Ok(Admission::Answer(tenant, answer)) => {
                routed.tenant = tenant;
                return match answer {
                    Ok(body) => respond::send_json(session, head, snapshot, body, out).await,
                    Err(e) => Outcome::Failed(e),
                };
            }
        };
        routed.tenant.clone_from(&tenant);
        let upload = match decide::preread(session, snapshot).await {
            Ok(upload) => upload,
            Err(e) => return Outcome::Failed(e),
        };
        out.bytes_in = upload.read;
        let mut decided = match decide::decide(session, snapshot, tenant.as_deref(), upload) {
            Ok(decided) => decided,
            Err(rejected) => {
                routed.unknown_model = rejected.unknown_model.is_some();
                routed.model = rejected.unknown_model;
                return Outcome::Failed(rejected.error);
            }
        };
        routed.model = Some(decided.model.clone());
        routed.pool = Some(Arc::clone(&decided.pool));
        routed.prompt_tokens = decided.prompt.as_ref().map(|p| p.tokens);
        let leg = Leg {
            head,
            snapshot,
            pool: &decided.pool,
            upstream: &self.upstream,
            shadows: &self.shadows,
            affinity: Affinity {
                key: decided.sticky_key,
                prompt: decided.prompt.as_ref(),
            },
            shadow: decided.shadow,
            deadline: head.started + decided.pool.timeouts.request,
        };
        disagg::forward(session, &leg, &mut decided.upload, out).await
    }
}

#[async_trait]
impl HttpServerApp for Gateway {
    /// One request on `session` (its header not read yet): the stages of the module doc.
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        _shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        let head = head::read(&mut session, &self.live).await?;
        let admitted = Admitted::new(&mut session, &self.live, &self.traffic);
        let snapshot = &admitted.snapshot;
        let (mut routed, mut out) = (Routed::default(), Exchanged::default());
        let outcome = self
            .run(&mut session, &head, snapshot, &mut routed, &mut out)
            .await;
        let ending = respond::settle(&mut session, &head, snapshot, outcome, &mut out).await;
        let finished = Finished {
            head: &head,
            routed: &routed,
            out: &out,
            ending,
            access_log: snapshot.access_log,
        };
        observe::finish(&session, &finished, self.spans.exporter().as_deref());
        respond::reuse(session, ending).await
    }
}
