//! The `cache_aware` policy (request path: atomics, the pool's [`PrefixIndex`] and the
//! backends' last load reports; no locks, one small vector of scores per pick): send a request
//! where its prompt's prefix is most likely cached, unless that backend's prefill queue costs
//! more than recomputing the prefix elsewhere.
//!
//! Each eligible backend `b` is scored in prompt tokens, lowest wins:
//!
//! ```text
//! cost(b) = (queued(b) + others(b) + miss_cost × miss(b) × (1 + full(b))
//!            + IN_FLIGHT_TOKENS × in_flight(b)) / weight(b)
//! miss(b) = prompt tokens − tokens of its prefix the index believes b still caches
//! ```
//!
//! - `queued(b)`: prompt tokens this gateway sent to `b` that have not been prefilled yet (not
//!   cached there, and no response byte back): a fresh, exact measure of `b`'s prefill backlog,
//!   the queue a new request waits behind for its first token. A slow backend drains it slowly
//!   and so gets less.
//! - `others(b)`: the rest of the fleet's traffic, from vLLM's last `/metrics` report: requests
//!   in its waiting queue that are not this gateway's (other replicas', other clients'), each
//!   counted as this request's prompt tokens. Zero while the report is stale.
//! - `full(b)`: 0 up to 90 % of vLLM's KV-cache use (`vllm:kv_cache_usage_perc`, the blocks
//!   running requests hold), 1 at 100 %: every block a request would allocate on a backend about
//!   to preempt counts twice. A hit allocates few blocks and stays; a cold prompt goes where
//!   there is room.
//! - `miss_cost` (default 8): a token to prefill costs this request its prefill time *and*
//!   copies the prefix into a second cache, evicting others there, so a warm backend keeps its
//!   prefixes until its queue is longer than a cold one's by eight times the tokens it would
//!   save. A hot prefix therefore spills to a second backend (which then warms up) once its
//!   home queues, and spreads over as many backends as its load needs.
//! - `in_flight(b)`: requests decoding there slow every step a little; a small weight that
//!   breaks ties between idle backends.
//!
//! Ties go to the backend that weighted rendezvous hashing of the prompt's first block prefers,
//! so every replica places a new prefix on the same backend without sharing state, and their
//! indexes agree. Costs within [`TIE_TOKENS`] plus `miss_cost` × the prompt's tokens × the
//! share of the backends' requests (vLLM's running and waiting) that are not this replica's
//! are a tie. Each replica sees only its own share of a backend's queue; with a narrow window
//! one replica's momentary queue would place a prefix elsewhere than the others do, and the
//! copies would then be kept warm side by side for as long as each replica uses its own (two
//! gateways kept 75 % of one gateway's hit rate with a fixed 64-token window).
//!
//! A gateway alone in front of its fleet (less than [`SHARED_FROM`] of the backends' requests
//! are not its own, or vLLM reports nothing) sees every queue and needs no agreement. A prompt
//! no backend has any of goes:
//! 1. back to the backend the index remembers having sent it, if its entries are still in the
//!    table though taken as evicted, and that backend's cost is within [`TIE_TOKENS`] of the
//!    lowest (no longer prefill queue than the others). A group back after a pause returns to
//!    its old home (vLLM may still hold it there when the index under-estimates the cache), so
//!    the partition of prefixes over backends stays as it was placed; but it does not wait
//!    behind a queue for a prefix that is most likely gone (with a window of one prompt's
//!    tokens, Zipf traffic's TTFT p99 rose by a fifth; loadtest/ROUTING.md, "Evicted prefixes
//!    go home").
//! 2. else to the backend sent the fewest new prefixes per unit of weight (its cold picks),
//!    among those whose queue (the cost without `miss_cost × miss(b)`, per weight) is within
//!    [`TIE_TOKENS`] of the shortest: no more prefill queued, and at most eight more requests
//!    decoding; ties in pool order. New prefixes go round the fleet in the order they first
//!    arrive, as SGLang's smallest tree and vllm-router place them, so each backend holds an
//!    equal share of the working set, while a backend with a longer queue (slower, or serving
//!    hotter prefixes) is passed over until it drains. A backend more than a round behind the
//!    most-placed one (new, or back from an outage) is lifted to a round behind, so it does not
//!    take every new prefix until it catches up. Placing by load alone (the lowest cost
//!    outright) left the hit rate 0.1–0.2 points under the peers' (loadtest/ROUTING.md, "New
//!    prefixes go round"). When prompts wait for their prefill on every backend (the fleet at
//!    its knee) the window is one request decoding ([`IN_FLIGHT_TOKENS`]): there the next
//!    first tokens depend on the queue more than on the partition, and without reuse (every
//!    prompt new) the wider window made TTFT p99 1.06× `least_connections`' against 1.01×
//!    (loadtest/ROUTING.md, "New prefixes' window at the knee"). The narrow window at every
//!    load cost a fleet with one slower server 1.2 points of hit rate: its longer decodes kept
//!    it out of the round.
//!
//! Each pick also says whether, and how many blocks of allocation ago, the backend was sent the
//! prompt's prefix ([`Sent`]); the response's cached tokens then tell whether it was still there
//! ([`lesson`]), which corrects the backend's cache size ([`CacheClock::learn`]).
//!
//! [`CacheClock::learn`]: super::prefix::CacheClock::learn

use std::sync::Arc;

use super::pool::Reported;
use super::prefix::{PrefixIndex, PromptBlocks};
use super::BackendState;

/// KV-cache use from which `full(b)` grows (see the module doc).
const KV_FULL_FROM: f64 = 0.9;

/// Tokens of cost per request in flight on a backend (decode pressure; mostly a tie-breaker).
pub const IN_FLIGHT_TOKENS: f64 = 8.0;
/// Costs within this many tokens of the best are a tie, settled by rendezvous hashing (the
/// window widens with the traffic this replica does not see, see the module doc).
pub const TIE_TOKENS: f64 = 64.0;
/// A replica whose backends' requests are at least this share not its own (vLLM's reports)
/// shares them with other replicas or clients; below it, it is alone in front of its fleet.
pub const SHARED_FROM: f64 = 0.1;

/// Why `cache_aware` picked the backend it picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickReason {
    /// No eligible backend had any of the prompt cached.
    Cold,
    /// The pick has the longest cached prefix among the eligible backends.
    Hit,
    /// Another backend had a longer cached prefix but a longer queue.
    Spill,
}

impl PickReason {
    /// Label value in metrics and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            PickReason::Cold => "cold",
            PickReason::Hit => "hit",
            PickReason::Spill => "spill",
        }
    }
}

/// One `cache_aware` decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Choice {
    /// Index of the picked backend in the pool.
    pub index: usize,
    /// Leading blocks of the prompt believed cached on it.
    pub matched: usize,
    pub reason: PickReason,
    /// Prompt tokens it will have to prefill.
    pub miss_tokens: u64,
    /// Whether, and how long ago, the pick was sent this prompt's prefix before.
    pub sent: Option<Sent>,
}

/// The prompt's prefix as last sent to the picked backend, for learning its cache's size from
/// what the response reports cached ([`lesson`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Leading blocks of the prompt sent there (live or not, as far as the index holds them).
    pub blocks: usize,
    /// Blocks the backend has allocated since, by its [`CacheClock`](super::prefix::CacheClock).
    pub age: u32,
}

/// Prefixes shorter than this many estimated tokens teach nothing about a cache's size (a
/// vLLM block more or less is most of them).
const LESSON_MIN_TOKENS: u64 = 64;

/// What a finished request teaches about its backend's cache: the age of the prefix the pick
/// was last sent, and whether the response found it still cached (at least half of it, as a
/// share of the prompt: `estimated` is the gateway's token estimate, `prompt` and `cached` the
/// response's `usage`). `None` when it teaches nothing.
pub fn lesson(
    choice: &Choice,
    block_tokens: u64,
    estimated: u64,
    prompt: u64,
    cached: u64,
) -> Option<(u32, bool)> {
    let sent = choice.sent?;
    let sent_tokens = sent.blocks as u64 * block_tokens;
    if sent_tokens < LESSON_MIN_TOKENS || estimated == 0 || prompt == 0 {
        return None;
    }
    let expected = sent_tokens as f64 / estimated as f64;
    let seen = cached as f64 / prompt as f64;
    Some((sent.age, 2.0 * seen >= expected.min(1.0)))
}

/// One eligible backend's score.
struct Scored {
    index: usize,
    matched: usize,
    miss: u64,
    cost: f64,
    /// The cost without `miss_cost × miss(b) / weight(b)`: the backend's queue, per weight.
    queue: f64,
    /// Whether prompts wait there for their prefill (this gateway's or, by vLLM, others').
    waiting: bool,
    rank: f64,
    /// What vLLM reports there: requests not this replica's, and all of them.
    others: f64,
    total: f64,
}

/// One backend's score (see the module doc); `anchor` is the tie-break key.
fn score(
    index: usize,
    b: &BackendState,
    prompt: &PromptBlocks,
    table: &PrefixIndex,
    miss_cost: f64,
    r: Reported,
    anchor: Option<u64>,
) -> Scored {
    let matched = table.matched(&prompt.hashes, b.cache_id, b.cache_clock());
    let miss = prompt
        .tokens
        .saturating_sub(matched as u64 * prompt.block_tokens);
    let weight = f64::from(b.config.weight.max(1));
    let queue = (b.prefill_backlog() as f64
        + r.others_waiting * (prompt.tokens as f64).max(IN_FLIGHT_TOKENS)
        + miss_cost * miss as f64 * full(r.kv_cache_usage)
        + IN_FLIGHT_TOKENS * b.in_flight() as f64)
        / weight;
    let rank = match anchor {
        Some(a) => super::select::rendezvous(a, b),
        None => rand::random::<f64>(),
    };
    Scored {
        index,
        matched,
        miss,
        cost: queue + miss_cost * miss as f64 / weight,
        queue,
        waiting: b.prefill_backlog() > 0 || r.others_waiting > 0.0,
        rank,
        others: r.others,
        total: r.total,
    }
}

/// Scores every eligible backend and returns the cheapest (see the module doc). `reported`
/// gives what vLLM's last fresh report adds for the backend at an index.
pub fn choose(
    backends: &[Arc<BackendState>],
    eligible: impl Fn(usize) -> bool,
    prompt: &PromptBlocks,
    index: &PrefixIndex,
    miss_cost: f64,
    reported: impl Fn(usize) -> Reported,
) -> Option<Choice> {
    // The tie-break key: the prompt's first block; a prompt shorter than a block has none and
    // ties are broken at random.
    let anchor = prompt.hashes.first().copied();
    let scored: Vec<Scored> = (0..backends.len())
        .filter(|&i| eligible(i))
        .map(|i| {
            score(
                i,
                &backends[i],
                prompt,
                index,
                miss_cost,
                reported(i),
                anchor,
            )
        })
        .collect();
    let lowest = scored.iter().map(|s| s.cost).reduce(f64::min)?;
    let longest = scored.iter().map(|s| s.matched).max().unwrap_or(0);
    let (others, total) = scored
        .iter()
        .fold((0.0, 0.0), |(o, t), s| (o + s.others, t + s.total));
    let unseen = if total > 0.0 { others / total } else { 0.0 };
    let pick = if longest == 0 && unseen < SHARED_FROM {
        place_alone(&scored, lowest, backends, prompt, index)
    } else {
        let tie = tie_window(prompt.tokens, unseen, miss_cost);
        let near = scored.iter().filter(|s| s.cost <= lowest + tie);
        near.max_by(|a, b| a.rank.total_cmp(&b.rank))
    }?;
    let reason = match longest {
        0 => PickReason::Cold,
        l if pick.matched == l => PickReason::Hit,
        _ => PickReason::Spill,
    };
    let b = &backends[pick.index];
    let sent = index
        .remembered_at(&prompt.hashes, b.cache_id)
        .map(|(blocks, stamp)| Sent {
            blocks,
            age: b.cache_clock().age(stamp),
        });
    Some(Choice {
        index: pick.index,
        matched: pick.matched,
        reason,
        miss_tokens: pick.miss,
        sent,
    })
}

/// A gateway alone, a prompt no backend has (see the module doc): the backend the index
/// remembers having sent the longest part of the prompt (evicted since, as far as the index can
/// tell), if its cost is within [`TIE_TOKENS`] of the lowest; else [`new_prefix`], among the
/// queues within [`TIE_TOKENS`] of the shortest, or within one request decoding
/// ([`IN_FLIGHT_TOKENS`]) when prompts wait for their prefill on every backend.
fn place_alone<'a>(
    scored: &'a [Scored],
    lowest: f64,
    backends: &[Arc<BackendState>],
    prompt: &PromptBlocks,
    index: &PrefixIndex,
) -> Option<&'a Scored> {
    let home = scored
        .iter()
        .filter(|s| s.cost <= lowest + TIE_TOKENS)
        .map(|s| {
            (
                s,
                index.remembered(&prompt.hashes, backends[s.index].cache_id),
            )
        })
        .filter(|&(_, remembered)| remembered > 0)
        .max_by(|(a, ra), (b, rb)| ra.cmp(rb).then(b.cost.total_cmp(&a.cost)));
    if let Some((s, _)) = home {
        return Some(s);
    }
    let shortest = scored.iter().map(|s| s.queue).fold(f64::INFINITY, f64::min);
    let window = if scored.iter().all(|s| s.waiting) {
        IN_FLIGHT_TOKENS
    } else {
        TIE_TOKENS
    };
    new_prefix(scored, shortest + window, backends)
}

/// A gateway alone, a new prefix (see the module doc): of the backends whose queue is within
/// `within`, the one sent the fewest new prefixes per unit of weight, ties in pool order. Every
/// eligible backend more than a round behind the most-placed one is first lifted to a round
/// behind.
fn new_prefix<'a>(
    scored: &'a [Scored],
    within: f64,
    backends: &[Arc<BackendState>],
) -> Option<&'a Scored> {
    let weight = |s: &Scored| f64::from(backends[s.index].config.weight.max(1));
    let share = |s: &Scored| backends[s.index].cold_picks() as f64 / weight(s);
    let top = scored.iter().map(share).fold(0.0, f64::max);
    for s in scored.iter().filter(|s| share(s) < top - 1.0) {
        backends[s.index].lift_cold_picks(((top - 1.0) * weight(s)).ceil() as u64);
    }
    scored
        .iter()
        .filter(|s| s.queue <= within)
        .min_by(|a, b| share(a).total_cmp(&share(b)).then(a.index.cmp(&b.index)))
}

/// Costs within this many tokens of the lowest are a tie (see the module doc). `unseen`: the
/// share of the backends' requests (running or waiting, by vLLM's reports) that are not this
/// replica's, 0 for a gateway alone in front of its fleet.
fn tie_window(prompt_tokens: u64, unseen: f64, miss_cost: f64) -> f64 {
    TIE_TOKENS + unseen.clamp(0.0, 1.0) * miss_cost * prompt_tokens as f64
}

/// `full(b)` of the module doc: 0 up to [`KV_FULL_FROM`] of the KV cache in use, 1 when full.
fn full(kv_cache_usage: f64) -> f64 {
    ((kv_cache_usage - KV_FULL_FROM).max(0.0) / (1.0 - KV_FULL_FROM)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use crate::routing::{Affinity, Pool};

    use super::*;

    /// A healthy cache_aware pool with these weights (64-byte blocks).
    fn pool(weights: &[u32]) -> Pool {
        crate::routing::select::tests::pool("cache_aware", weights, ", prefix_block_bytes: 64")
    }

    /// A prompt of `len` bytes: `group`'s shared prefix of `shared` bytes, then a tail unique
    /// to `id`.
    fn prompt(group: u32, id: u32, shared: usize, len: usize) -> PromptBlocks {
        let mut text: Vec<u8> = (0..shared)
            .map(|i| (group as usize * 31 + i) as u8)
            .collect();
        text.extend((shared..len).map(|i| (id as usize * 7 + i * 13) as u8));
        PromptBlocks::hash([&text[..]], 64, 1 << 20, text.len())
    }

    /// Pick for `p` and hold the slot like the proxy does; returns the pick and its slot.
    fn send(pool: &Pool, p: &PromptBlocks) -> (Choice, crate::routing::InFlightGuard) {
        let affinity = Affinity {
            key: None,
            prompt: Some(p),
        };
        let pick = pool.choose(&[], &affinity, true).unwrap();
        let mut guard = pool.backends[pick.index].try_track().unwrap();
        pool.record_pick(&pick, &affinity, &mut guard);
        (pick.cache.unwrap(), guard)
    }

    #[test]
    fn a_shared_prefix_returns_to_the_backend_that_has_it() {
        let p = pool(&[1, 1, 1, 1]);
        let (first, mut slot) = send(&p, &prompt(1, 0, 8192, 8192 + 512));
        assert_eq!(first.reason, PickReason::Cold);
        assert_eq!(first.miss_tokens, (8192 + 512) / 4);
        slot.first_byte();
        drop(slot);
        for id in 1..20 {
            let (c, _slot) = send(&p, &prompt(1, id, 8192, 8192 + 512));
            assert_eq!(c.index, first.index, "request {id}");
            assert_eq!(c.reason, PickReason::Hit);
            // The 128 shared blocks of 64 bytes are cached: only the tail is prefilled.
            assert_eq!(c.matched, 128);
            assert_eq!(c.miss_tokens, 512 / 4);
        }
    }

    #[test]
    fn new_prefixes_spread_over_the_backends_the_same_way_on_every_replica() {
        let (a, b) = (pool(&[1, 1, 1, 1]), pool(&[1, 1, 1, 1]));
        let mut counts = [0usize; 4];
        for g in 0..400 {
            let pr = prompt(g, 0, 1024, 1100);
            let (x, _) = send(&a, &pr);
            let (y, _) = send(&b, &pr);
            assert_eq!(x.index, y.index, "group {g}: replicas disagree");
            counts[x.index] += 1;
        }
        assert!(
            counts.iter().all(|&c| (70..=130).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn alone_new_prefixes_go_round_the_backends_per_unit_of_weight() {
        let p = pool(&[1, 1, 2]);
        // Requests decoding unevenly (first byte back, nothing queued): 3, 1 and none.
        let mut held: Vec<_> = [0, 0, 0, 1]
            .iter()
            .map(|&i| {
                let mut g = p.backends[i].track();
                g.first_byte();
                g
            })
            .collect();
        // Whatever backend the hash prefers, new prefixes go round in pool order, the backend
        // of weight 2 taking two of every four; each one's prefill is done before the next.
        let picks: Vec<usize> = (0..8)
            .map(|g| {
                let (c, mut slot) = send(&p, &prompt(100 + g, 0, 2048, 2304));
                assert_eq!(c.reason, PickReason::Cold, "group {g}");
                slot.first_byte();
                held.push(slot);
                c.index
            })
            .collect();
        assert_eq!(picks, [0, 1, 2, 2, 0, 1, 2, 2]);
        assert_eq!(p.backends[2].cold_picks(), 4);
    }

    #[test]
    fn at_the_knee_a_new_prefix_passes_over_a_backend_two_requests_busier() {
        let p = pool(&[1, 1]);
        // The same prefill queued on both (one prompt of 576 tokens), and two requests more
        // decoding on backend 0, first in pool order.
        let mut held: Vec<_> = [0, 1]
            .iter()
            .map(|&i| {
                let mut g = p.backends[i].track();
                g.add_prefill(576);
                g
            })
            .collect();
        for _ in 0..2 {
            let mut g = p.backends[0].track();
            g.first_byte();
            held.push(g);
        }
        let (c, _slot) = send(&p, &prompt(300, 0, 2048, 2304));
        assert_eq!((c.index, c.reason), (1, PickReason::Cold));
    }

    #[test]
    fn alone_a_backend_with_a_queue_is_passed_over_and_rejoins_a_round_behind() {
        let p = pool(&[1, 1]);
        let pr = |g: u32| prompt(200 + g, 0, 2048, 2304);
        // One prompt (576 tokens) queued on backend 0, none on backend 1.
        let mut queued = p.backends[0].track();
        queued.add_prefill(576);
        for g in 0..10 {
            assert_eq!(send(&p, &pr(g)).0.index, 1, "group {g}");
        }
        drop(queued);
        // Its queue drained, backend 0 takes one new prefix more than backend 1 (it was lifted
        // to a round behind), not the ten it missed; then they alternate.
        let picks: Vec<usize> = (10..15).map(|g| send(&p, &pr(g)).0.index).collect();
        assert_eq!(picks, [0, 0, 1, 0, 1]);
    }

    #[test]
    fn alone_an_evicted_prefix_goes_back_to_where_it_was() {
        let p = pool(&[1, 1, 1, 1]);
        let pr = prompt(3, 0, 2048, 2304);
        let (first, slot) = send(&p, &pr);
        drop(slot);
        // Its home has since turned its whole cache over twice (the index takes the prefix as
        // evicted), and it is busier than the others by a request decoding.
        let home = &p.backends[first.index];
        home.cache_clock()
            .advance(2 * home.cache_clock().capacity());
        let mut decoding = home.track();
        decoding.first_byte();
        let (again, _) = send(&p, &prompt(3, 1, 2048, 2304));
        assert_eq!((again.index, again.reason), (first.index, PickReason::Cold));
    }

    #[test]
    fn a_response_that_finds_an_evicted_prefix_cached_teaches_a_bigger_cache() {
        let p = pool(&[1]);
        let clock = p.backends[0].cache_clock();
        let reported = clock.capacity();
        let (first, slot) = send(&p, &prompt(5, 0, 2048, 2304));
        drop(slot);
        assert_eq!(first.sent, None, "never sent before");
        // Twice the cache's size allocated since: the index takes the prefix as evicted.
        clock.advance(2 * reported);
        let (again, _) = send(&p, &prompt(5, 1, 2048, 2304));
        assert_eq!(again.matched, 0);
        let sent = again.sent.unwrap();
        // 2,048 bytes of shared prefix are 32 blocks; the first request's 4 more are its own.
        assert_eq!(sent.blocks, 32);
        assert_eq!(sent.age, 2 * reported, "blocks allocated there since");
        // vLLM found it cached (512 of 576 tokens): the cache holds more than reported.
        p.learn_cache(&again, 576, 576, 512);
        assert!(clock.capacity() > reported, "{}", clock.capacity());
    }

    #[test]
    fn a_lesson_compares_shares_of_the_prompt() {
        let choice = |blocks, age| Choice {
            index: 0,
            matched: 0,
            reason: PickReason::Cold,
            miss_tokens: 0,
            sent: Some(Sent { blocks, age }),
        };
        // 64 blocks of 16 estimated tokens sent, of a 1,100-token estimate (93 %); vLLM counts
        // 1,200 tokens with its tokenizer.
        assert_eq!(
            lesson(&choice(64, 9), 16, 1100, 1200, 1024),
            Some((9, true))
        );
        assert_eq!(lesson(&choice(64, 9), 16, 1100, 1200, 560), Some((9, true)));
        assert_eq!(
            lesson(&choice(64, 9), 16, 1100, 1200, 544),
            Some((9, false))
        );
        assert_eq!(lesson(&choice(64, 9), 16, 1100, 1200, 0), Some((9, false)));
        // Too short to tell, or nothing sent before: no lesson.
        assert_eq!(lesson(&choice(3, 9), 16, 1100, 1200, 0), None);
        let never = Choice {
            sent: None,
            ..choice(0, 0)
        };
        assert_eq!(lesson(&never, 16, 1100, 1200, 0), None);
    }

    #[test]
    fn alone_an_evicted_prefix_does_not_wait_behind_its_old_homes_queue() {
        let p = pool(&[1, 1]);
        let pr = |id| prompt(4, id, 2048, 2304);
        let (first, slot) = send(&p, &pr(0));
        drop(slot);
        let home = &p.backends[first.index];
        home.cache_clock()
            .advance(2 * home.cache_clock().capacity());
        // A question's worth of prefill queued at home (more than the tie window): the prefix
        // is most likely gone, so it goes to the idle backend.
        let mut queued = home.track();
        queued.add_prefill(128);
        let (away, _) = send(&p, &pr(1));
        assert_eq!(
            (away.index, away.reason),
            (1 - first.index, PickReason::Cold)
        );
        drop(queued);
    }

    #[test]
    fn replicas_with_different_queues_place_a_new_prefix_alike() {
        let pr = prompt(11, 0, 4096, 4096 + 256);
        // One of two replicas: vLLM reports as many requests on each backend as this replica
        // has there, and as many again that are the other's.
        let replica = || {
            let p = pool(&[1, 1, 1, 1]);
            let held: Vec<_> = p.backends.iter().map(|b| b.track()).collect();
            for b in &p.backends {
                b.set_load(2.0, 0.0, None);
            }
            (p, held)
        };
        let (a, _held_a) = replica();
        let (home, _) = send(&a, &pr);
        assert_eq!(home.reason, PickReason::Cold);
        // The other replica has requests of its own waiting there, a few prompts' worth more
        // than elsewhere: still a tie (1 + 4 prompts wide), so the same backend.
        let (b, _held_b) = replica();
        let mut queued = b.backends[home.index].track();
        queued.add_prefill(3 * pr.tokens);
        assert_eq!(send(&b, &pr).0.index, home.index);
        // Alone in front of the fleet, a queue longer than the shortest is passed over.
        let c = pool(&[1, 1, 1, 1]);
        let mut more = c.backends[home.index].track();
        more.add_prefill(pr.tokens / 4);
        assert_ne!(send(&c, &pr).0.index, home.index);
        drop((queued, more));
    }

    #[test]
    fn the_tie_window_widens_with_what_this_replica_does_not_see() {
        // Alone in front of the fleet: 64 tokens.
        assert_eq!(tie_window(2000, 0.0, 8.0), TIE_TOKENS);
        // One of two replicas: half the queues are the other's, the hash weighs more.
        assert_eq!(tie_window(2000, 0.5, 8.0), TIE_TOKENS + 8000.0);
        assert_eq!(tie_window(2000, 7.0, 8.0), TIE_TOKENS + 16000.0);
        assert_eq!(full(0.5), 0.0);
        assert!((full(0.95) - 0.5).abs() < 1e-9);
        assert_eq!(full(1.2), 1.0);
    }

    #[test]
    fn other_replicas_queues_and_a_full_kv_cache_count_from_vllms_report() {
        let pr = |id| prompt(5, id, 4096, 4096 + 256);
        let home = send(&pool(&[1, 1]), &pr(0)).0.index;
        // vLLM reports twelve waiting requests there that are not this replica's. All the
        // traffic it reports being others', the tie window is 8 prompts wide (the replicas
        // should agree); twelve prompts' worth is more: a new prefix goes to the other backend.
        let p = pool(&[1, 1]);
        p.backends[home].set_load(0.0, 12.0, None);
        let (c, _) = send(&p, &pr(0));
        assert_eq!((c.index, c.reason), (1 - home, PickReason::Cold));
        // Once they are gone, the prefix stays where it is warm.
        p.backends[home].set_load(0.0, 0.0, None);
        let warm = c.index;
        let (c, _) = send(&p, &pr(1));
        assert_eq!((c.index, c.reason), (warm, PickReason::Hit));
        // Its KV cache full (running requests' blocks): the hit allocates little and stays.
        p.backends[warm].set_load(0.0, 0.0, Some(1.0));
        assert_eq!(send(&p, &pr(2)).0.index, warm);
        // A new prefix goes where its blocks fit: to the other backend, although it is busier
        // by half a prompt (its rendezvous home or not).
        let fresh = prompt(6, 0, 4096, 4096 + 256);
        let mut busy = p.backends[1 - warm].track();
        busy.add_prefill(fresh.tokens / 2);
        let (c, _) = send(&p, &fresh);
        assert_eq!((c.index, c.reason), (1 - warm, PickReason::Cold));
        drop(busy);
    }

    #[test]
    fn a_warm_backend_with_a_long_queue_spills_to_a_cold_one() {
        let p = pool(&[1, 1]);
        let (home, slot) = send(&p, &prompt(7, 0, 8192, 8192 + 256));
        let home = home.index;
        // Its first request has not started: 2,112 tokens queued there. A second request
        // saves 2,048 tokens at home (cost 2,112 + 8 × 64) against 8 × 2,112 elsewhere.
        let (c, _held) = send(&p, &prompt(7, 1, 8192, 8192 + 256));
        assert_eq!((c.index, c.reason), (home, PickReason::Hit));
        // Pile more uncached work on the home backend: the next one goes elsewhere and says so.
        let mut queued = p.backends[home].track();
        queued.add_prefill(30_000);
        let (c, _spilled) = send(&p, &prompt(7, 2, 8192, 8192 + 256));
        assert_ne!(c.index, home);
        assert_eq!(c.reason, PickReason::Spill);
        // Once the home queue drains, the prefix goes home again (both now hold it).
        drop((queued, slot, _held));
        let (c, _) = send(&p, &prompt(7, 3, 8192, 8192 + 256));
        assert_eq!(c.reason, PickReason::Hit);
    }

    #[test]
    fn without_a_prompt_the_shortest_prefill_queue_wins_per_unit_of_weight() {
        let p = pool(&[1, 1, 2]);
        let mut a = p.backends[0].track();
        a.add_prefill(1_000);
        let mut c = p.backends[2].track();
        c.add_prefill(1_500);
        for _ in 0..20 {
            assert_eq!(p.select(&[], None, true), Some(1));
        }
        let mut b = p.backends[1].track();
        b.add_prefill(1_000);
        // 1,500 / 2 beats 1,000 / 1.
        assert_eq!(p.select(&[], None, true), Some(2));
        b.first_byte();
        assert_eq!(p.backends[1].prefill_backlog(), 0);
        drop((a, b, c));
        assert!(p.backends.iter().all(|b| b.prefill_backlog() == 0));
    }

    #[test]
    fn only_eligible_backends_are_scored() {
        let p = pool(&[1, 1, 1]);
        let pr = prompt(3, 0, 4096, 4200);
        let (home, _) = send(&p, &pr);
        p.backends[home.index].set_health(false);
        let (c, _) = send(&p, &prompt(3, 1, 4096, 4200));
        assert_ne!(c.index, home.index);
        assert_eq!(c.reason, PickReason::Cold, "the warm backend is out");
    }
}
