//! API keys, tenants and secrets (request path and admin): the one Bearer parser
//! ([`bearer`]), constant-time comparison ([`secret_eq`]), tenants and their lock-free quotas
//! ([`Tenants`], [`Gcra`]), built per snapshot from [`AuthConfig`].
//!
//! Secrets are hashed with SHA-256 first and the digests compared with a fold over every byte,
//! so the time taken depends neither on where the inputs first differ nor on their lengths.
//! Nothing here locks, does I/O or reads the config.

use sha2::{Digest, Sha256};

/// Whether `given` equals `expected`, in time independent of their content.
pub fn secret_eq(given: &[u8], expected: &[u8]) -> bool {
    digest_eq(
        &Sha256::digest(given).into(),
        &Sha256::digest(expected).into(),
    )
}

/// Constant-time equality of two SHA-256 digests.
pub fn digest_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal() {
        assert!(secret_eq(b"s3cret-token-0123", b"s3cret-token-0123"));
        assert!(!secret_eq(b"s3cret-token-0124", b"s3cret-token-0123"));
        assert!(!secret_eq(b"", b"s3cret-token-0123"));
        assert!(!secret_eq(b"s3cret-token-0123x", b"s3cret-token-0123"));
    }
}

// ---- API keys and tenants -------------------------------------------------------------------

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// API keys and their tenants (`auth:`), as the control plane built them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    pub keys: Vec<ApiKey>,
    /// Forward the client's `Authorization` upstream (default: strip it).
    pub pass_authorization: bool,
}

/// One API key of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub tenant: String,
    /// SHA-256 of the bearer key.
    pub sha256: [u8; 32],
    /// Model globs (`*`, `?`); empty = every model.
    pub models: Vec<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_in_flight: Option<u64>,
}

/// Burst allowance of every per-minute limit: a full minute's worth.
const BURST: Duration = Duration::from_secs(60);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_us() -> u64 {
    u64::try_from(EPOCH.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// A lock-free rate limiter (GCRA: one atomic "theoretical arrival time").
#[derive(Debug, Default)]
pub struct Gcra {
    tat_us: AtomicU64,
}

impl Gcra {
    /// Take `cost` units at `per_minute`; `Err(wait)` when that would exceed a minute's burst.
    pub fn take(&self, cost: u64, per_minute: u64) -> Result<(), Duration> {
        let interval = 60_000_000 / per_minute.max(1);
        let burst = BURST.as_micros() as u64;
        let now = now_us();
        let mut tat = self.tat_us.load(Ordering::Acquire);
        loop {
            let new = tat.max(now).saturating_add(interval.saturating_mul(cost));
            if new > now.saturating_add(burst) {
                return Err(Duration::from_micros(new - now - burst));
            }
            match self
                .tat_us
                .compare_exchange_weak(tat, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(()),
                Err(t) => tat = t,
            }
        }
    }

    /// Charge `cost` units after the fact (never refused; may push into debt).
    pub fn charge(&self, cost: u64, per_minute: u64) {
        let interval = 60_000_000 / per_minute.max(1);
        let now = now_us();
        let _ = self
            .tat_us
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
                Some(tat.max(now).saturating_add(interval.saturating_mul(cost)))
            });
    }

    /// `Err(wait)` while the budget is in debt beyond the burst.
    pub fn check(&self) -> Result<(), Duration> {
        let now = now_us();
        let tat = self.tat_us.load(Ordering::Acquire);
        let burst = BURST.as_micros() as u64;
        if tat > now.saturating_add(burst) {
            return Err(Duration::from_micros(tat - now - burst));
        }
        Ok(())
    }
}

/// A tenant's live counters, kept across reloads (by tenant name).
#[derive(Debug, Default)]
pub struct TenantLive {
    pub requests: Gcra,
    pub tokens: Gcra,
    pub in_flight: AtomicU64,
}

/// One tenant as configured, with its live counters.
#[derive(Debug)]
pub struct Tenant {
    pub name: String,
    pub models: Vec<String>,
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub live: Arc<TenantLive>,
}

/// Why a tenant's request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A per-minute budget or the concurrency cap; retry after this long.
    Quota(Duration),
}

/// Releases a tenant's in-flight slot on drop.
#[derive(Debug)]
pub struct TenantGuard(Arc<TenantLive>);

impl Drop for TenantGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tenant {
    /// Whether this tenant may use `model` (globs; none = all).
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty()
            || self
                .models
                .iter()
                .any(|g| glob(g.as_bytes(), model.as_bytes()))
    }

    /// Admit one request: requests/minute, tokens/minute debt, then the in-flight cap.
    pub fn admit(&self) -> Result<Option<TenantGuard>, Refusal> {
        if self.tokens_per_minute.is_some() {
            self.live.tokens.check().map_err(Refusal::Quota)?;
        }
        if let Some(rpm) = self.requests_per_minute {
            self.live.requests.take(1, rpm).map_err(Refusal::Quota)?;
        }
        match self.max_in_flight {
            None => Ok(None),
            Some(max) => {
                self.live
                    .in_flight
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .map_err(|_| Refusal::Quota(Duration::from_secs(1)))?;
                Ok(Some(TenantGuard(Arc::clone(&self.live))))
            }
        }
    }

    /// Charge the tokens a finished request used.
    pub fn charge_tokens(&self, tokens: u64) {
        if let Some(tpm) = self.tokens_per_minute {
            self.live.tokens.charge(tokens, tpm);
        }
    }
}

/// Every configured key, built per snapshot.
#[derive(Debug)]
pub struct Tenants {
    keys: Vec<([u8; 32], Arc<Tenant>)>,
    /// Forward the client's `Authorization` upstream.
    pub pass_authorization: bool,
}

impl Tenants {
    /// Build from config, keeping the live counters of tenants in `old`.
    pub fn build(config: &AuthConfig, old: Option<&Tenants>) -> Tenants {
        let mut lives: HashMap<&str, Arc<TenantLive>> = HashMap::new();
        if let Some(o) = old {
            for (_, t) in &o.keys {
                lives
                    .entry(t.name.as_str())
                    .or_insert_with(|| Arc::clone(&t.live));
            }
        }
        let mut fresh: HashMap<String, Arc<TenantLive>> = HashMap::new();
        let keys = config
            .keys
            .iter()
            .map(|k| {
                let live = lives
                    .get(k.tenant.as_str())
                    .cloned()
                    .or_else(|| fresh.get(&k.tenant).cloned())
                    .unwrap_or_else(|| {
                        let l = Arc::new(TenantLive::default());
                        fresh.insert(k.tenant.clone(), Arc::clone(&l));
                        l
                    });
                (
                    k.sha256,
                    Arc::new(Tenant {
                        name: k.tenant.clone(),
                        models: k.models.clone(),
                        requests_per_minute: k.requests_per_minute,
                        tokens_per_minute: k.tokens_per_minute,
                        max_in_flight: k.max_in_flight,
                        live,
                    }),
                )
            })
            .collect();
        Tenants {
            keys,
            pass_authorization: config.pass_authorization,
        }
    }

    /// The tenant whose key is `bearer`. Every key is compared, in constant time each, so the
    /// time taken does not depend on which key (if any) matched.
    pub fn authenticate(&self, bearer: &[u8]) -> Option<Arc<Tenant>> {
        let digest: [u8; 32] = Sha256::digest(bearer).into();
        let mut found = None;
        for (k, t) in &self.keys {
            if digest_eq(&digest, k) && found.is_none() {
                found = Some(Arc::clone(t));
            }
        }
        found
    }
}

/// `*` (any run) and `?` (one byte) glob match, iterative (no recursion, no backtracking blowup).
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some(p);
                mark = t;
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some(s) => {
                    p = s + 1;
                    mark += 1;
                    t = mark;
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// The bearer token of a request (`Authorization: Bearer <key>`, or OpenAI's `api-key` header
/// as Azure clients send it).
pub fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("authorization") {
        let b = v.as_bytes();
        if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") {
            return Some(b[7..].trim_ascii());
        }
        return None;
    }
    headers.get("api-key").map(|v| v.as_bytes().trim_ascii())
}

#[cfg(test)]
mod tenant_tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(b"mistral-*", b"mistral-7b"));
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"m?", b"m1"));
        assert!(!glob(b"mistral-*", b"llama-3"));
        assert!(!glob(b"m?", b"m12"));
        assert!(glob(b"*-7b*", b"mistral-7b@v2"));
        assert!(glob(b"a*b*c", b"aXbYc") && !glob(b"a*b*c", b"aXbY"));
    }

    #[test]
    fn gcra_allows_a_minute_burst_then_refuses_with_a_wait() {
        let g = Gcra::default();
        for _ in 0..60 {
            assert!(g.take(1, 60).is_ok());
        }
        let wait = g.take(1, 60).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        let t = Gcra::default();
        assert!(t.check().is_ok());
        t.charge(1_000_000, 1000);
        assert!(t.check().is_err(), "deep in debt");
    }
}
