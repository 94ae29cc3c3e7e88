//! Open connections per client IP, for `limits.max_connections_per_ip`.
//!
//! Counted at accept and on close only (never per request), in 64 shards so two accepts
//! rarely meet on one lock; an IP with no open connection takes no memory.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

const SHARDS: usize = 64;

/// The per-IP connection counts.
pub struct PerIp {
    inner: Arc<Shards>,
}

struct Shards {
    hasher: RandomState,
    shards: Vec<Mutex<HashMap<IpAddr, u32>>>,
}

impl Default for PerIp {
    fn default() -> Self {
        PerIp {
            inner: Arc::new(Shards {
                hasher: RandomState::new(),
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            }),
        }
    }
}

impl Shards {
    fn shard(&self, ip: &IpAddr) -> Option<&Mutex<HashMap<IpAddr, u32>>> {
        let i = (self.hasher.hash_one(ip) as usize) % SHARDS;
        self.shards.get(i)
    }
}

/// One open connection of `ip`; released on drop.
#[derive(Debug)]
pub struct Slot {
    shards: Arc<Shards>,
    ip: IpAddr,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shards")
    }
}

impl PerIp {
    /// Count a new connection of `ip`, unless it already has `cap` open.
    pub fn acquire(&self, ip: IpAddr, cap: u32) -> Option<Slot> {
        let shard = self.inner.shard(&ip)?;
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= cap {
            if *n == 0 {
                map.remove(&ip);
            }
            return None;
        }
        *n += 1;
        Some(Slot {
            shards: Arc::clone(&self.inner),
            ip,
        })
    }

    /// Open connections of `ip`.
    #[cfg(test)]
    fn open(&self, ip: IpAddr) -> u32 {
        self.inner.shard(&ip).map_or(0, |s| {
            s.lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&ip)
                .copied()
                .unwrap_or(0)
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shard) = self.shards.shard(&self.ip) else {
            return;
        };
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_ip_and_releases_on_drop() {
        let p = PerIp::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let s1 = p.acquire(a, 2).unwrap();
        let s2 = p.acquire(a, 2).unwrap();
        assert!(p.acquire(a, 2).is_none());
        let _other = p.acquire(b, 2).unwrap();
        drop(s1);
        assert_eq!(p.open(a), 1);
        let _s3 = p.acquire(a, 2).unwrap();
        drop(s2);
        drop(_s3);
        assert_eq!(p.open(a), 0);
        assert_eq!(
            p.inner
                .shards
                .iter()
                .map(|s| s.lock().unwrap().len())
                .sum::<usize>(),
            1
        );
    }
}
