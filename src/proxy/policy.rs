//! Per-request routing decisions above backend selection (request path): canary split and the
//! sticky key (`consistent_hash`, canary `sticky_on`).
//!
//! Keys hash with a stable function, so every replica makes the same choice for the same key.

use std::sync::Arc;

use pingora_http::RequestHeader;
use rand::Rng;

use super::body::Upload;
use crate::routing::prefix::PromptBlocks;
use crate::routing::select::key_hash;
use crate::routing::{KeySource, Policy, Pool};
use crate::state::Snapshot;

/// Canary buckets: percentages with two decimals.
const BUCKETS: u64 = 10_000;

/// The pool that serves this request: the requested one, or its canary's for the canary's share.
pub fn route<'a>(
    snapshot: &'a Snapshot,
    requested: &'a Arc<Pool>,
    req: &RequestHeader,
    upload: &Upload,
) -> &'a Arc<Pool> {
    let canary_key = requested
        .canary
        .as_ref()
        .and_then(|c| c.sticky_on.as_ref())
        .and_then(|k| key(k, req, upload, requested.lb.prompt_prefix_bytes));
    split(snapshot, requested, canary_key)
}

/// The canary decision for a request with this sticky key hash (random without one).
pub fn split<'a>(
    snapshot: &'a Snapshot,
    requested: &'a Arc<Pool>,
    canary_key: Option<u64>,
) -> &'a Arc<Pool> {
    let Some(canary) = &requested.canary else {
        return requested;
    };
    let bucket = match canary_key {
        // Salted with the model so two canaries do not pick the same users.
        Some(h) => {
            key_hash(
                &[
                    h.to_le_bytes(),
                    key_hash(requested.name.as_bytes()).to_le_bytes(),
                ]
                .concat(),
            ) % BUCKETS
        }
        None => rand::thread_rng().gen_range(0..BUCKETS),
    };
    if (bucket as f64) < canary.percent * (BUCKETS as f64) / 100.0 {
        snapshot.pool(&canary.model).unwrap_or(requested)
    } else {
        requested
    }
}

/// The `consistent_hash` key of this request for `pool`, hashed.
pub fn sticky_key(pool: &Pool, req: &RequestHeader, upload: &Upload) -> Option<u64> {
    if pool.policy != Policy::ConsistentHash {
        return None;
    }
    key(
        pool.lb.hash_on.as_ref()?,
        req,
        upload,
        pool.lb.prompt_prefix_bytes,
    )
}

/// The prompt's block hashes for a `cache_aware` pool (from the raw bytes the pre-read holds).
pub fn prompt_blocks(pool: &Pool, upload: &Upload) -> Option<PromptBlocks> {
    if pool.policy != Policy::CacheAware {
        return None;
    }
    let opts = &pool.lb.cache;
    let (pieces, total) = upload.prompt_bytes(opts.max_bytes)?;
    Some(PromptBlocks::hash(
        pieces,
        opts.block_bytes,
        opts.max_bytes,
        total,
    ))
}

/// Hash of the key named by `source`, if the request has it. The prompt prefix is cut to this
/// pool's `prompt_prefix_bytes` (the scanner captures the largest any pool asks for).
pub fn key(
    source: &KeySource,
    req: &RequestHeader,
    upload: &Upload,
    prefix_bytes: usize,
) -> Option<u64> {
    match source {
        KeySource::Header(name) => req
            .headers
            .get(name.as_str())
            .map(|v| key_hash(v.as_bytes())),
        KeySource::BodyUser => upload.user().map(|u| key_hash(u.as_bytes())),
        KeySource::PromptPrefix => upload
            .prompt_prefix()
            .map(|p| key_hash(&p[..p.len().min(prefix_bytes)])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(percent: f64) -> Snapshot {
        let yaml = format!(
            "models:\n  m:\n    backends: [{{name: a, url: \"http://127.0.0.1:8001\"}}]\n    canary: {{model: m2, percent: {percent}}}\n  m2:\n    backends: [{{name: b, url: \"http://127.0.0.1:8002\"}}]\n"
        );
        Snapshot::build(&crate::config::parse(yaml.as_bytes()).unwrap(), 1)
    }

    #[test]
    fn canary_share_is_close_to_the_percentage() {
        let s = snapshot(5.0);
        let m = s.pool("m").unwrap();
        let n = 10_000;
        let to_canary = (0..n).filter(|_| split(&s, m, None).name == "m2").count();
        let share = to_canary as f64 * 100.0 / n as f64;
        assert!(
            (4.0..=6.0).contains(&share),
            "{share}% of 10,000 went to the canary"
        );
        // Sticky: the same key always lands on the same side, and keys split ~5 %.
        let sticky = (0..n as u64)
            .filter(|k| split(&s, m, Some(key_hash(&k.to_le_bytes()))).name == "m2")
            .count();
        let share = sticky as f64 * 100.0 / n as f64;
        assert!((4.0..=6.0).contains(&share), "{share}% of 10,000 keys");
        for k in 0..100u64 {
            let h = Some(key_hash(&k.to_le_bytes()));
            let first = split(&s, m, h).name.clone();
            assert!((0..10).all(|_| split(&s, m, h).name == first));
        }
    }

    #[test]
    fn zero_and_hundred_percent_are_exact() {
        for (p, want) in [(0.0, "m"), (100.0, "m2")] {
            let s = snapshot(p);
            let m = s.pool("m").unwrap();
            assert!((0..1000).all(|_| split(&s, m, None).name == want));
        }
    }
}
