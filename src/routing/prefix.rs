//! What the `cache_aware` policy knows about prompts: the chained block hashes of one request's
//! prompt ([`PromptBlocks`]), and a pool's index of which backend was last sent which block
//! ([`PrefixIndex`]), aged the way vLLM's prefix cache evicts.
//!
//! Request path: hashing and lookups read atomics and never lock or allocate beyond the one
//! block list per request. The index is a fixed-size, set-associative table of `(block,
//! backend)` entries written with relaxed atomics: two requests racing on one slot can lose an
//! entry or pair a tag with a neighbour's stamp, which costs at most one misjudged cache hit —
//! the index is an estimate of the backends' caches either way, never a source of truth.
//!
//! Block hashes are chained (each block's hash is seeded with the previous one), as vLLM keys
//! its KV blocks, so a block hash names the whole prefix up to it: finding block `i` of a
//! request under a backend means that backend was sent this prompt's first `i + 1` blocks.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Seed of the first block's hash (any constant: every replica must use the same one).
const CHAIN_SEED: u64 = 0x6361_6368_6561_7761;
/// Slots per bucket: four 16-byte slots fill one 64-byte cache line.
const WAYS: usize = 4;
/// A [`CacheClock`] capacity not set yet; also the largest (ages compare correctly below it).
const UNKNOWN: u32 = u32::MAX / 2;
/// Bytes of prompt text per token, the estimate vLLM-side tools use (llm-d, GIE, the mock).
pub const BYTES_PER_TOKEN: usize = 4;

/// The chained hashes of one prompt's full blocks, and its size in tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptBlocks {
    /// Hash of blocks `0..=i`, for each full block `i` of the indexed part of the prompt.
    pub hashes: Vec<u64>,
    /// Estimated prompt tokens (all of the prompt's bytes, not only the indexed ones).
    pub tokens: u64,
    /// Tokens per block.
    pub block_tokens: u64,
}

impl PromptBlocks {
    /// Hashes the prompt bytes in `pieces` (the raw body bytes of the prompt, possibly split
    /// across chunks) in blocks of `block_bytes`, over at most `max_bytes`; a trailing partial
    /// block is not hashed (vLLM caches full blocks only). `total_bytes` is the whole prompt's
    /// length, for the token estimate.
    pub fn hash<'a>(
        pieces: impl IntoIterator<Item = &'a [u8]>,
        block_bytes: usize,
        max_bytes: usize,
        total_bytes: usize,
    ) -> PromptBlocks {
        let block_bytes = block_bytes.max(1);
        let mut hashes = Vec::with_capacity(max_bytes.min(total_bytes) / block_bytes);
        let mut chain = CHAIN_SEED;
        let mut partial: Vec<u8> = Vec::new();
        let mut left = max_bytes;
        for piece in pieces {
            let mut piece = &piece[..piece.len().min(left)];
            left -= piece.len();
            if !partial.is_empty() {
                let take = (block_bytes - partial.len()).min(piece.len());
                partial.extend_from_slice(&piece[..take]);
                piece = &piece[take..];
                if partial.len() == block_bytes {
                    chain = xxhash_rust::xxh3::xxh3_64_with_seed(&partial, chain);
                    hashes.push(chain);
                    partial.clear();
                }
            }
            let mut blocks = piece.chunks_exact(block_bytes);
            for block in &mut blocks {
                chain = xxhash_rust::xxh3::xxh3_64_with_seed(block, chain);
                hashes.push(chain);
            }
            partial.extend_from_slice(blocks.remainder());
            if left == 0 {
                break;
            }
        }
        PromptBlocks {
            hashes,
            tokens: total_bytes.div_ceil(BYTES_PER_TOKEN) as u64,
            block_tokens: (block_bytes / BYTES_PER_TOKEN).max(1) as u64,
        }
    }
}

/// One `(block, backend)` entry: `tag` is their mixed hash (0 = empty); `stamp` holds the pool
/// clock of the last write (high half, for replacement) and the backend's cache clock then (low
/// half, for eviction).
#[derive(Debug, Default)]
struct Slot {
    tag: AtomicU64,
    stamp: AtomicU64,
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Bucket([Slot; WAYS]);

/// Which backend was sent which prompt blocks, for one pool. Fixed size: 16 bytes per entry.
#[derive(Debug)]
pub struct PrefixIndex {
    buckets: Box<[Bucket]>,
    /// Bits of a tag that pick the bucket (`buckets.len() - 1`).
    mask: u64,
    /// Ticks once per recorded request: the age used to pick a slot to overwrite.
    clock: AtomicU32,
}

impl PrefixIndex {
    /// An index of at least `entries` entries (rounded up to a power of two, at least 64).
    pub fn new(entries: usize) -> PrefixIndex {
        let buckets = (entries.max(64) / WAYS).next_power_of_two();
        PrefixIndex {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            mask: buckets as u64 - 1,
            clock: AtomicU32::new(0),
        }
    }

    /// Entries the index holds.
    pub fn capacity(&self) -> usize {
        self.buckets.len() * WAYS
    }

    /// Memory the table takes, in bytes.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    /// Entries in use (control plane: `/status`; reads the whole table).
    pub fn used(&self) -> usize {
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter())
            .filter(|s| s.tag.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Empties the table (tests, benches). One backend's entries are dropped lazily instead, by
    /// [`CacheClock::forget`].
    pub fn clear(&self) {
        for slot in self.buckets.iter().flat_map(|b| b.0.iter()) {
            slot.tag.store(0, Ordering::Relaxed);
        }
    }

    fn tag(block: u64, backend: u64) -> u64 {
        // Multiply-mix so that nearby backend ids spread over buckets; never 0 (empty).
        (block ^ backend.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
    }

    fn bucket(&self, tag: u64) -> &Bucket {
        // The high bits are the best mixed by the multiply.
        &self.buckets[((tag >> 40) & self.mask) as usize]
    }

    /// The backend-clock stamp of `(block, backend)`, if the entry is present.
    fn stamp(&self, block: u64, backend: u64) -> Option<u32> {
        let tag = Self::tag(block, backend);
        self.bucket(tag)
            .0
            .iter()
            .find(|s| s.tag.load(Ordering::Relaxed) == tag)
            .map(|s| s.stamp.load(Ordering::Relaxed) as u32)
    }

    /// How many leading blocks of `blocks` `backend` is believed to still cache: the longest
    /// prefix whose last block is present and live per `clock`. Binary search (chained hashes
    /// make presence monotone up to evictions): about log2(blocks) probes, one when the first
    /// block is absent.
    pub fn matched(&self, blocks: &[u64], backend: u64, clock: &CacheClock) -> usize {
        self.longest(blocks, backend, |stamp| clock.is_live(stamp))
    }

    /// How many leading blocks of `blocks` were ever sent to `backend`, as far as the table
    /// still holds them, live or not: where a prefix lived before it was (probably) evicted.
    pub fn remembered(&self, blocks: &[u64], backend: u64) -> usize {
        self.longest(blocks, backend, |_| true)
    }

    /// [`remembered`](Self::remembered) with the backend-clock stamp of the last of those
    /// blocks (when the prefix was last sent there); `None` if none was.
    pub fn remembered_at(&self, blocks: &[u64], backend: u64) -> Option<(usize, u32)> {
        let n = self.remembered(blocks, backend);
        let stamp = self.stamp(*blocks.get(n.checked_sub(1)?)?, backend)?;
        Some((n, stamp))
    }

    /// The longest prefix of `blocks` whose last block is present with a stamp `keep` accepts.
    fn longest(&self, blocks: &[u64], backend: u64, keep: impl Fn(u32) -> bool) -> usize {
        let live = |i: usize| self.stamp(blocks[i], backend).is_some_and(&keep);
        if blocks.is_empty() || !live(0) {
            return 0;
        }
        let (mut lo, mut hi) = (1, blocks.len());
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if live(mid - 1) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// Records that `backend` was sent `blocks` (all refreshed or added), and that it will
    /// allocate `new_blocks` blocks of KV cache for them: its cache clock advances that much.
    pub fn record(&self, blocks: &[u64], backend: u64, clock: &CacheClock, new_blocks: u64) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let stamp_at = clock.advance(new_blocks.min(u64::from(u32::MAX / 4)) as u32);
        let stamp = (u64::from(now) << 32) | u64::from(stamp_at);
        for &block in blocks {
            self.put(Self::tag(block, backend), stamp, now);
        }
    }

    fn put(&self, tag: u64, stamp: u64, now: u32) {
        let slots = &self.bucket(tag).0;
        let age = |s: &Slot| {
            if s.tag.load(Ordering::Relaxed) == 0 {
                u32::MAX
            } else {
                now.wrapping_sub((s.stamp.load(Ordering::Relaxed) >> 32) as u32)
            }
        };
        let slot = slots
            .iter()
            .find(|s| s.tag.load(Ordering::Relaxed) == tag)
            .or_else(|| slots.iter().max_by_key(|s| age(s)))
            .unwrap_or(&slots[0]);
        slot.stamp.store(stamp, Ordering::Relaxed);
        slot.tag.store(tag, Ordering::Relaxed);
    }
}

/// One backend's prefix-cache clock: counts the blocks the gateway believes the backend has
/// allocated since it started, so an entry stamped more than `capacity` blocks ago is taken as
/// evicted (vLLM evicts the least recently used free blocks first). Lives with the backend's
/// other live state and survives reloads.
///
/// The capacity starts at what the backend reports (`num_gpu_blocks`) or the config says, and
/// grows past it by what the backend's responses show ([`CacheClock::learn`]): a cache that
/// holds more (KV offload to CPU memory or LMCache, a `kv_cache_tokens` set too low) is learnt
/// in the clock's own units. It never falls below the report: taking a live prefix for evicted
/// moves it off its home (a miss, and a copy in a second cache), while taking an evicted one for
/// live costs only the miss it would have had anyway.
#[derive(Debug)]
pub struct CacheClock {
    now: AtomicU32,
    /// Blocks (of the index's size) the backend's KV cache is believed to hold.
    capacity: AtomicU32,
    /// What the backend reported, or the config set, in the same blocks.
    reported: AtomicU32,
}

impl Default for CacheClock {
    fn default() -> Self {
        CacheClock {
            now: AtomicU32::new(0),
            capacity: AtomicU32::new(UNKNOWN),
            reported: AtomicU32::new(UNKNOWN),
        }
    }
}

/// A learnt capacity stays under this many times the reported one.
const LEARN_RANGE: u32 = 16;
/// Each lesson moves the capacity this fraction (1/n) of the way to the age it saw.
const LEARN_STEP: i64 = 4;
/// Misses younger than this fraction (1/n) of the capacity teach nothing: the prefix was most
/// likely still being prefilled by the request that sent it (vLLM caches a block once it has
/// been computed), not evicted.
const LEARN_YOUNG: u32 = 8;

impl CacheClock {
    /// Whether an entry stamped at `stamp` is still within the cache.
    pub fn is_live(&self, stamp: u32) -> bool {
        self.age(stamp) < self.capacity.load(Ordering::Relaxed)
    }

    /// Blocks allocated since `stamp`.
    pub fn age(&self, stamp: u32) -> u32 {
        self.now.load(Ordering::Relaxed).wrapping_sub(stamp)
    }

    /// Advances by `blocks`; returns the time after the advance (the new entries' stamp).
    pub fn advance(&self, blocks: u32) -> u32 {
        self.now
            .fetch_add(blocks, Ordering::Relaxed)
            .wrapping_add(blocks)
    }

    /// Sets the reported capacity, in index blocks; what was learnt restarts from it when it
    /// changes, and is kept when it does not (a poll or a reload repeating the same value).
    pub fn set_reported(&self, blocks: u64) {
        let blocks = blocks.clamp(1, u64::from(UNKNOWN - 1)) as u32;
        if self.reported.swap(blocks, Ordering::Relaxed) != blocks {
            self.capacity.store(blocks, Ordering::Relaxed);
        }
    }

    /// [`set_reported`](Self::set_reported) unless a capacity was reported already.
    pub fn set_reported_if_unknown(&self, blocks: u64) {
        let blocks = blocks.clamp(1, u64::from(UNKNOWN - 1)) as u32;
        let unknown =
            self.reported
                .compare_exchange(UNKNOWN, blocks, Ordering::Relaxed, Ordering::Relaxed);
        if unknown.is_ok() {
            self.capacity.store(blocks, Ordering::Relaxed);
        }
    }

    /// The capacity, in index blocks.
    pub fn capacity(&self) -> u32 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// The reported (or configured) capacity, in index blocks; `None` before either.
    pub fn reported(&self) -> Option<u32> {
        Some(self.reported.load(Ordering::Relaxed)).filter(|&r| r != UNKNOWN)
    }

    /// A response showed whether a prefix last sent `age` blocks ago was still `cached`. Only
    /// what contradicts the capacity teaches: a hit at least `capacity` old raises it, a miss
    /// younger than it (but not very young) lowers it, each a quarter of the way to `age`;
    /// never below the reported capacity nor above `LEARN_RANGE` times it.
    pub fn learn(&self, age: u32, cached: bool) {
        let Some(reported) = self.reported() else {
            return;
        };
        let capacity = self.capacity();
        let wrong = match cached {
            true => age >= capacity,
            false => age < capacity && age >= capacity / LEARN_YOUNG,
        };
        if !wrong {
            return;
        }
        let step = (i64::from(age) - i64::from(capacity)) / LEARN_STEP;
        let step = step + i64::from(cached) - i64::from(!cached);
        let high = reported.saturating_mul(LEARN_RANGE).min(UNKNOWN - 1);
        let next = (i64::from(capacity) + step).clamp(i64::from(reported), i64::from(high)) as u32;
        // A racing lesson wins; this one is dropped (lessons are many and small).
        let _ =
            self.capacity
                .compare_exchange(capacity, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Everything recorded so far is evicted (the backend restarted or lost its cache).
    pub fn forget(&self) {
        self.advance(self.capacity());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocks(text: &[u8], block: usize) -> Vec<u64> {
        PromptBlocks::hash([text], block, usize::MAX, text.len()).hashes
    }

    #[test]
    fn hashes_are_chained_over_full_blocks_and_independent_of_chunking() {
        let text: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let whole = PromptBlocks::hash([&text[..]], 64, usize::MAX, text.len());
        assert_eq!(whole.hashes.len(), 1000 / 64);
        assert_eq!(whole.tokens, 250);
        assert_eq!(whole.block_tokens, 16);
        for cut in [1, 63, 64, 65, 500, 999] {
            let (a, b) = text.split_at(cut);
            let split = PromptBlocks::hash([a, b], 64, usize::MAX, text.len());
            assert_eq!(split, whole, "cut at {cut}");
        }
        // Same prefix, same leading hashes; a change in block 3 changes every hash from 3 on.
        let mut other = text.clone();
        other[3 * 64 + 5] ^= 1;
        let o = blocks(&other, 64);
        assert_eq!(o[..3], whole.hashes[..3]);
        assert!(o[3..].iter().zip(&whole.hashes[3..]).all(|(x, y)| x != y));
        // Only `max_bytes` are indexed; the token estimate still counts everything.
        let capped = PromptBlocks::hash([&text[..]], 64, 200, text.len());
        assert_eq!(capped.hashes, whole.hashes[..3]);
        assert_eq!(capped.tokens, 250);
    }

    #[test]
    fn matched_finds_the_longest_recorded_prefix_per_backend() {
        let index = PrefixIndex::new(4096);
        let clock = CacheClock::default();
        let a = blocks(&[7u8; 64 * 10], 64);
        let mut b = a.clone();
        b.truncate(6);
        index.record(&b, 1, &clock, 6);
        assert_eq!(index.matched(&a, 1, &clock), 6);
        assert_eq!(index.matched(&a, 2, &clock), 0, "another backend");
        assert_eq!(index.matched(&[], 1, &clock), 0);
        index.record(&a, 1, &clock, 4);
        assert_eq!(index.matched(&a, 1, &clock), 10);
        assert_eq!(clock.advance(0), 10, "6 new blocks, then 4 more");
    }

    #[test]
    fn entries_older_than_the_backend_capacity_are_evicted() {
        let index = PrefixIndex::new(1 << 14);
        let clock = CacheClock::default();
        clock.set_reported(100);
        let old: Vec<u64> = (0..50).map(|i| i * 7919 + 1).collect();
        index.record(&old, 9, &clock, 50);
        assert_eq!(index.matched(&old, 9, &clock), 50);
        // 60 more blocks: still within a capacity of 100 blocks.
        let newer: Vec<u64> = (0..60).map(|i| i * 104_729 + 3).collect();
        index.record(&newer, 9, &clock, 60);
        assert_eq!(index.matched(&old, 9, &clock), 50);
        // 50 more: the old ones are 110 blocks old, past the capacity.
        let third: Vec<u64> = (0..50).map(|i| i * 15_485_863 + 5).collect();
        index.record(&third, 9, &clock, 50);
        assert_eq!(index.matched(&old, 9, &clock), 0);
        assert_eq!(index.matched(&newer, 9, &clock), 60);
        // Refreshing keeps a prefix alive (LRU, not FIFO).
        index.record(&newer, 9, &clock, 0);
        clock.advance(80);
        assert_eq!(index.matched(&newer, 9, &clock), 60);
        clock.forget();
        assert_eq!(index.matched(&newer, 9, &clock), 0);
    }

    #[test]
    fn an_evicted_prefix_is_still_remembered_where_it_was_sent() {
        let index = PrefixIndex::new(1024);
        let clock = CacheClock::default();
        clock.set_reported(10);
        let a = blocks(&[7u8; 256], 64);
        index.record(&a, 1, &clock, 4);
        clock.advance(20);
        assert_eq!(index.matched(&a, 1, &clock), 0, "evicted by the clock");
        assert_eq!(index.remembered(&a, 1), 4);
        assert_eq!(index.remembered(&a, 2), 0, "never sent there");
    }

    #[test]
    fn the_capacity_learns_from_hits_past_it_and_misses_within_it() {
        let clock = CacheClock::default();
        clock.learn(5000, true);
        assert_eq!(
            clock.capacity(),
            UNKNOWN,
            "nothing reported: nothing to correct"
        );
        clock.set_reported(1000);
        // A hit 2,000 blocks back: the cache holds more; a quarter of the way there.
        clock.learn(2000, true);
        assert_eq!(clock.capacity(), 1251);
        // A hit within the capacity and a miss past it agree with it: no change.
        clock.learn(800, true);
        clock.learn(1500, false);
        assert_eq!(clock.capacity(), 1251);
        // A miss within it: it holds less.
        clock.learn(651, false);
        assert_eq!(clock.capacity(), 1100);
        // A very young miss is a prefix still being prefilled, not an eviction.
        clock.learn(100, false);
        assert_eq!(clock.capacity(), 1100);
        // The same report again (the next poll, a reload) keeps what was learnt.
        clock.set_reported(1000);
        assert_eq!(clock.capacity(), 1100);
        // Misses lower it down to the report, never below.
        clock.learn(651, false);
        assert_eq!(clock.capacity(), 1000);
        clock.learn(500, false);
        assert_eq!(clock.capacity(), 1000);
        // A new report starts over from it.
        clock.set_reported(3000);
        assert_eq!(clock.capacity(), 3000);
    }

    #[test]
    fn the_learnt_capacity_converges_between_the_report_and_sixteen_times_it() {
        let clock = CacheClock::default();
        clock.set_reported(100);
        for _ in 0..100 {
            clock.learn(400, true);
        }
        assert!(
            (390..=401).contains(&clock.capacity()),
            "{}",
            clock.capacity()
        );
        for _ in 0..1000 {
            clock.learn(u32::MAX / 4, true);
        }
        assert_eq!(clock.capacity(), 1600, "at most 16 times the report");
        for _ in 0..1000 {
            let age = clock.capacity() / 2;
            clock.learn(age, false);
        }
        assert_eq!(clock.capacity(), 100, "never below the report");
    }

    #[test]
    fn remembered_at_gives_the_stamp_of_the_last_block_sent() {
        let index = PrefixIndex::new(1024);
        let clock = CacheClock::default();
        let a = blocks(&[7u8; 64 * 6], 64);
        assert_eq!(index.remembered_at(&a, 1), None);
        index.record(&a[..4], 1, &clock, 4);
        clock.advance(30);
        let (n, stamp) = index.remembered_at(&a, 1).unwrap();
        assert_eq!((n, clock.age(stamp)), (4, 30));
    }

    #[test]
    fn a_full_table_overwrites_its_oldest_entries_and_stays_bounded() {
        let index = PrefixIndex::new(256);
        assert_eq!(index.capacity(), 256);
        assert_eq!(index.memory_bytes(), 256 * 16);
        let clock = CacheClock::default();
        for r in 0..1000u64 {
            let chain: Vec<u64> = (0..8).map(|i| r * 1_000_003 + i).collect();
            index.record(&chain, 1, &clock, 8);
        }
        assert!(index.used() <= 256);
        let last: Vec<u64> = (0..8).map(|i| 999 * 1_000_003 + i).collect();
        assert_eq!(index.matched(&last, 1, &clock), 8, "the newest survive");
    }
}
