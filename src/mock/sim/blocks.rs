//! The simulated KV cache: a fixed pool of blocks with reference counts, the prefix cache
//! (block key to block) and the free queue that evicts cached blocks least recently freed first.
//!
//! Owned by one engine's scheduler and touched only on its task, between steps. Pure
//! bookkeeping: no clock, no I/O. Must keep every block in exactly one place: held (reference
//! count > 0), free and uncached, or free and cached.

use std::collections::{BTreeMap, HashMap};

/// Index of a block in the pool.
pub(crate) type BlockId = u32;

#[derive(Clone, Copy, Debug, Default)]
struct Block {
    /// Requests holding the block.
    ref_count: u32,
    /// Its key while it is in the prefix cache.
    hash: Option<u64>,
    /// Its place in the eviction order while it is free and cached.
    freed_at: Option<u64>,
}

/// vLLM's `BlockPool`, reduced to what scheduling and the prefix cache need.
#[derive(Debug)]
pub(crate) struct BlockPool {
    blocks: Vec<Block>,
    /// Prefix cache: key to the one block holding it.
    by_hash: HashMap<u64, BlockId>,
    /// Free blocks without a key: handed out first.
    free_plain: Vec<BlockId>,
    /// Free blocks with a key, by the order they were freed: the first is evicted first.
    free_cached: BTreeMap<u64, BlockId>,
    /// Next value of `freed_at`.
    clock: u64,
}

impl BlockPool {
    /// A pool of `size` free, uncached blocks.
    pub(crate) fn new(size: u32) -> BlockPool {
        BlockPool {
            blocks: vec![Block::default(); usize::try_from(size).unwrap_or(0)],
            by_hash: HashMap::new(),
            free_plain: (0..size).rev().collect(),
            free_cached: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Blocks no request holds (cached ones included: they can be evicted).
    pub(crate) fn free(&self) -> usize {
        self.free_plain.len() + self.free_cached.len()
    }

    /// Blocks in the prefix cache, held or not.
    #[cfg(test)]
    pub(crate) fn cached(&self) -> usize {
        self.by_hash.len()
    }

    /// Share of blocks held by requests, as vLLM's `kv_cache_usage_perc` (free cached blocks
    /// do not count).
    pub(crate) fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.free() as f64 / self.blocks.len() as f64
    }

    /// The cached blocks of the longest run of leading `hashes` in the prefix cache.
    pub(crate) fn longest_prefix(&self, hashes: &[u64]) -> Vec<BlockId> {
        hashes
            .iter()
            .map_while(|hash| self.by_hash.get(hash).copied())
            .collect()
    }

    /// How many of `ids` nobody holds: taking them removes them from the free count.
    pub(crate) fn count_free(&self, ids: &[BlockId]) -> usize {
        ids.iter()
            .filter(|&&id| self.block(id).is_some_and(|b| b.ref_count == 0))
            .count()
    }

    /// Takes a reference on each of `ids` (prefix-cache hits), taking free ones off the queue.
    pub(crate) fn acquire(&mut self, ids: &[BlockId]) {
        for &id in ids {
            let Some(block) = self.block_mut(id) else {
                continue;
            };
            block.ref_count += 1;
            if let Some(stamp) = block.freed_at.take() {
                self.free_cached.remove(&stamp);
            }
        }
    }

    /// `n` new blocks held once each, or `None` (and nothing changed) when fewer are free.
    /// Uncached blocks go first; then cached ones are evicted, least recently freed first.
    pub(crate) fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free() {
            return None;
        }
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = match self.free_plain.pop() {
                Some(id) => id,
                None => self.evict_oldest()?,
            };
            if let Some(block) = self.block_mut(id) {
                block.ref_count = 1;
            }
            ids.push(id);
        }
        Some(ids)
    }

    /// Puts block `id`, now filled with the tokens keyed `hash`, in the prefix cache. A key
    /// already cached on another block stays there (this block then stays uncached).
    pub(crate) fn cache(&mut self, id: BlockId, hash: u64) {
        if self.by_hash.contains_key(&hash) {
            return;
        }
        if let Some(block) = self.block_mut(id) {
            block.hash = Some(hash);
            self.by_hash.insert(hash, id);
        }
    }

    /// Drops one reference on each of `ids`, last first, so a request's leading (most shared)
    /// blocks are the last of its blocks to be evicted.
    pub(crate) fn release(&mut self, ids: &[BlockId]) {
        for &id in ids.iter().rev() {
            let stamp = self.clock;
            let Some(block) = self.block_mut(id) else {
                continue;
            };
            block.ref_count = block.ref_count.saturating_sub(1);
            if block.ref_count > 0 {
                continue;
            }
            if block.hash.is_some() {
                block.freed_at = Some(stamp);
                self.free_cached.insert(stamp, id);
                self.clock += 1;
            } else {
                self.free_plain.push(id);
            }
        }
    }

    /// Empties the prefix cache of every block nobody holds; returns how many were dropped.
    pub(crate) fn reset_prefix_cache(&mut self) -> usize {
        let dropped = std::mem::take(&mut self.free_cached);
        for &id in dropped.values() {
            self.uncache(id);
            self.free_plain.push(id);
        }
        dropped.len()
    }

    fn evict_oldest(&mut self) -> Option<BlockId> {
        let (_, id) = self.free_cached.pop_first()?;
        self.uncache(id);
        Some(id)
    }

    fn uncache(&mut self, id: BlockId) {
        let Some(block) = self.block_mut(id) else {
            return;
        };
        block.freed_at = None;
        if let Some(hash) = block.hash.take() {
            self.by_hash.remove(&hash);
        }
    }

    fn block(&self, id: BlockId) -> Option<&Block> {
        self.blocks.get(usize::try_from(id).ok()?)
    }

    fn block_mut(&mut self, id: BlockId) -> Option<&mut Block> {
        self.blocks.get_mut(usize::try_from(id).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pool whose blocks `ids` hold keys `hashes` and were then freed (cached, ref 0).
    fn pool_with_cached(size: u32, hashes: &[u64]) -> (BlockPool, Vec<BlockId>) {
        let mut pool = BlockPool::new(size);
        let ids = pool.allocate(hashes.len()).expect("room");
        for (&id, &hash) in ids.iter().zip(hashes) {
            pool.cache(id, hash);
        }
        pool.release(&ids);
        (pool, ids)
    }

    #[test]
    fn freed_blocks_stay_cached_with_no_reference() {
        let (pool, ids) = pool_with_cached(4, &[10, 11]);
        assert_eq!(pool.free(), 4, "cached blocks count as free");
        assert_eq!(pool.usage(), 0.0);
        assert_eq!(pool.longest_prefix(&[10, 11, 12]), ids);
    }

    #[test]
    fn prefix_hit_stops_at_first_missing_key() {
        let (pool, ids) = pool_with_cached(4, &[10, 11, 12]);
        assert_eq!(pool.longest_prefix(&[10, 99, 12]), ids[..1]);
        assert!(pool.longest_prefix(&[99, 10]).is_empty());
    }

    #[test]
    fn acquiring_a_hit_takes_it_off_the_free_queue() {
        let (mut pool, ids) = pool_with_cached(4, &[10, 11]);
        assert_eq!(pool.count_free(&ids), 2);
        pool.acquire(&ids[..1]);
        assert_eq!(pool.free(), 3);
        assert_eq!(pool.count_free(&ids), 1);
        assert_eq!(pool.usage(), 0.25);
    }

    #[test]
    fn allocation_uses_uncached_blocks_before_evicting() {
        let (mut pool, _) = pool_with_cached(4, &[10, 11]);
        pool.allocate(2).expect("two uncached blocks");
        assert_eq!(pool.cached(), 2, "nothing evicted yet");
        pool.allocate(1).expect("one evicted block");
        assert_eq!(pool.cached(), 1);
        assert!(pool.allocate(2).is_none(), "only one block left");
        assert_eq!(pool.free(), 1, "a failed allocation changes nothing");
    }

    #[test]
    fn eviction_is_least_recently_freed_first_and_tail_before_head() {
        let mut pool = BlockPool::new(4);
        let first = pool.allocate(2).expect("room");
        pool.cache(first[0], 1);
        pool.cache(first[1], 2);
        let second = pool.allocate(2).expect("room");
        pool.cache(second[0], 3);
        pool.cache(second[1], 4);
        pool.release(&first);
        pool.release(&second);
        // Freed order: 2, 1 (tail first), then 4, 3. Evict two: keys 2 and 1 go.
        pool.allocate(2).expect("evict two");
        assert!(pool.longest_prefix(&[1]).is_empty());
        assert_eq!(pool.longest_prefix(&[3, 4]).len(), 2);
        // Evict one more: of the second request, its tail (key 4) goes before its head (3).
        pool.allocate(1).expect("evict one");
        assert_eq!(pool.longest_prefix(&[3, 4]).len(), 1);
    }

    #[test]
    fn a_key_stays_on_the_first_block_that_cached_it() {
        let mut pool = BlockPool::new(2);
        let ids = pool.allocate(2).expect("room");
        pool.cache(ids[0], 7);
        pool.cache(ids[1], 7);
        assert_eq!(pool.cached(), 1);
        assert_eq!(pool.longest_prefix(&[7]), ids[..1]);
    }

    #[test]
    fn held_blocks_are_never_evicted() {
        let mut pool = BlockPool::new(2);
        let ids = pool.allocate(2).expect("room");
        pool.cache(ids[0], 7);
        assert!(pool.allocate(1).is_none());
        assert_eq!(pool.usage(), 1.0);
    }

    #[test]
    fn reset_drops_free_cached_blocks_and_keeps_held_ones() {
        let (mut pool, _) = pool_with_cached(4, &[10]);
        let held = pool.allocate(1).expect("room");
        pool.cache(held[0], 20);
        assert_eq!(pool.reset_prefix_cache(), 1);
        assert!(pool.longest_prefix(&[10]).is_empty());
        assert_eq!(pool.longest_prefix(&[20]), held);
        assert_eq!(pool.free(), 3);
    }
}
