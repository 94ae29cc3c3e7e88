//! One DNS resolution of a discover target with hickory-resolver (control plane only; never
//! called from the request path).
//!
//! With a port: A and AAAA records, asked in parallel. Without: SRV records, then the A/AAAA
//! records of each SRV target (SRV priority and weight are not used: every target is one
//! backend with the entry's weight). "No such records" for one address family is an empty
//! answer for that family; any other failure fails the whole resolution, so a half-answered
//! query never removes backends. The resolver's cache is cleared before each resolution so
//! that `refresh_ms` really asks the server; the answer's TTL is reported for scheduling.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::discover::DiscoverTarget;

/// Wait for one DNS answer at most this long (per attempt); a server that takes longer is down.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a resolution kept the last good set.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The server answered with an error, or did not answer.
    #[error("resolving {name} failed: {message}")]
    Failed { name: String, message: String },
    /// The name exists but has no usable records (or does not exist).
    #[error("{name} resolves to no address")]
    Empty { name: String },
    /// The system resolver configuration could not be read.
    #[error("cannot read the system DNS configuration: {0}")]
    Config(String),
}

impl DiscoveryError {
    /// `result` label of `modelgate_discovery_resolutions_total`.
    pub fn label(&self) -> &'static str {
        match self {
            DiscoveryError::Empty { .. } => "empty",
            DiscoveryError::Failed { .. } | DiscoveryError::Config(_) => "error",
        }
    }
}

/// A good answer: the addresses and when the shortest-lived record expires.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub addrs: Vec<SocketAddr>,
    pub valid_until: Option<Instant>,
}

/// A resolver for `target`: its `nameserver` when set (hosts file ignored), else the
/// system's resolv.conf.
pub fn resolver(target: &DiscoverTarget) -> Result<TokioResolver, DiscoveryError> {
    let provider = TokioConnectionProvider::default();
    let mut builder = match target.nameserver {
        Some(ns) => {
            let group = NameServerConfigGroup::from_ips_clear(&[ns.ip()], ns.port(), true);
            let mut b = TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, vec![], group),
                provider,
            );
            b.options_mut().use_hosts_file = ResolveHosts::Never;
            b
        }
        None => {
            TokioResolver::builder(provider).map_err(|e| DiscoveryError::Config(e.to_string()))?
        }
    };
    let opts: &mut ResolverOpts = builder.options_mut();
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 2;
    Ok(builder.build())
}

/// Resolve `target` once.
pub async fn resolve(
    resolver: &TokioResolver,
    target: &DiscoverTarget,
) -> Result<Resolution, DiscoveryError> {
    resolver.clear_cache();
    let name = target.dns.as_str();
    let failed = |e: ResolveError| DiscoveryError::Failed {
        name: name.to_string(),
        message: e.to_string(),
    };
    let mut out = Resolution {
        addrs: Vec::new(),
        valid_until: None,
    };
    match target.port {
        Some(port) => {
            let (ips, until) = addresses(resolver, name).await.map_err(failed)?;
            out.addrs = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            out.valid_until = until;
        }
        None => {
            let srv = match resolver.srv_lookup(name).await {
                Ok(s) => s,
                Err(e) if is_absent(&e) => {
                    return Err(DiscoveryError::Empty {
                        name: name.to_string(),
                    })
                }
                Err(e) => return Err(failed(e)),
            };
            out.valid_until = Some(srv.as_lookup().valid_until());
            let targets: Vec<(String, u16)> = srv
                .iter()
                .map(|r| (r.target().to_ascii(), r.port()))
                .collect();
            let answers = futures_util::future::join_all(
                targets.iter().map(|(host, _)| addresses(resolver, host)),
            )
            .await;
            for ((_, port), answer) in targets.iter().zip(answers) {
                let (ips, until) = answer.map_err(failed)?;
                out.addrs
                    .extend(ips.into_iter().map(|ip| SocketAddr::new(ip, *port)));
                out.valid_until = earliest(out.valid_until, until);
            }
        }
    }
    if out.addrs.is_empty() {
        return Err(DiscoveryError::Empty {
            name: name.to_string(),
        });
    }
    Ok(out)
}

/// A and AAAA records of `name`, asked in parallel; "no records" is an empty family.
async fn addresses(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<IpAddr>, Option<Instant>), ResolveError> {
    let (v4, v6) = tokio::join!(resolver.ipv4_lookup(name), resolver.ipv6_lookup(name));
    let v4 = v4.map(|l| (l.iter().map(|a| IpAddr::V4(a.0)).collect(), l.valid_until()));
    let v6 = v6.map(|l| (l.iter().map(|a| IpAddr::V6(a.0)).collect(), l.valid_until()));
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut until = None;
    for family in [v4, v6] {
        match family {
            Ok((found, valid_until)) => {
                let found: Vec<IpAddr> = found;
                ips.extend(found);
                until = earliest(until, Some(valid_until));
            }
            Err(e) if is_absent(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((ips, until))
}

/// The name or this record type does not exist (NXDOMAIN, or NOERROR without answers). Hickory
/// reports SERVFAIL and REFUSED as "no records" too; those are failures here.
fn is_absent(e: &ResolveError) -> bool {
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        })
    )
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
