//! Step-by-step tests of the simulated scheduler: batch composition, chunked prefill, admission,
//! prefix hits, preemption and step time, with no clock involved.

use std::time::Duration;

use super::*;
use crate::mock::sim::StepCost;

/// A prompt of `tokens` tokens (4 bytes each) whose text is `tag` repeated.
fn prompt(tokens: usize, tag: u8) -> Prompt {
    Prompt::from_text(&vec![tag; tokens * 4], 16)
}

fn config(kv_blocks: u32, max_num_seqs: u32, budget: u32) -> SimConfig {
    SimConfig {
        kv_blocks,
        block_size: 16,
        max_num_seqs,
        max_num_batched_tokens: budget,
        ..SimConfig::default()
    }
}

fn step(s: &mut Scheduler) -> StepOutcome {
    s.step().expect("work to do")
}

fn ids(outcome: &StepOutcome) -> Vec<SeqId> {
    outcome.emitted.iter().map(|e| e.id).collect()
}

#[test]
fn first_token_ends_the_prefill_step_then_one_token_per_step() {
    let mut s = Scheduler::new(config(100, 8, 8192));
    s.add(1, prompt(100, b'a'), 3);
    let first = step(&mut s);
    assert_eq!((first.prefill_tokens, first.decode_tokens), (100, 0));
    assert_eq!(first.emitted[0].index, 1);
    assert!(!first.emitted[0].finished);
    let second = step(&mut s);
    assert_eq!((second.prefill_tokens, second.decode_tokens), (0, 1));
    assert_eq!(second.emitted[0].index, 2);
    let third = step(&mut s);
    assert!(third.emitted[0].finished, "exactly max_tokens tokens");
    assert!(s.is_idle());
    assert_eq!(s.kv_usage(), 0.0, "finished requests hold no block");
    assert!(s.step().is_none(), "nothing left to do");
}

#[test]
fn chunked_prefill_spends_the_token_budget_over_several_steps() {
    let mut s = Scheduler::new(config(2000, 8, 8192));
    s.add(1, prompt(20_000, b'a'), 2);
    let chunks: Vec<u32> = (0..3).map(|_| step(&mut s).prefill_tokens).collect();
    assert_eq!(chunks, [8192, 8192, 3616]);
    assert_eq!(s.running(), 1);
}

#[test]
fn decodes_are_scheduled_before_prefill_chunks() {
    let mut s = Scheduler::new(config(2000, 8, 100));
    s.add(1, prompt(10, b'a'), 5);
    step(&mut s); // request 1 is now decoding
    s.add(2, prompt(1000, b'b'), 5);
    let outcome = step(&mut s);
    // Budget 100: 1 decode, then 99 tokens of request 2's prefill.
    assert_eq!((outcome.decode_tokens, outcome.prefill_tokens), (1, 99));
    assert_eq!(ids(&outcome), [1]);
}

#[test]
fn admission_is_first_come_first_served_and_a_blocked_head_blocks_the_queue() {
    // 10 blocks: request 1 takes 7, request 2 (5 blocks) must wait, and so must the tiny 3.
    let mut s = Scheduler::new(config(10, 8, 8192));
    s.add(1, prompt(112, b'a'), 4);
    s.add(2, prompt(80, b'b'), 2);
    s.add(3, prompt(4, b'c'), 2);
    let outcome = step(&mut s);
    assert_eq!(ids(&outcome), [1]);
    assert_eq!((s.running(), s.waiting()), (1, 2));
}

#[test]
fn max_num_seqs_caps_the_running_batch() {
    let mut s = Scheduler::new(config(100, 2, 8192));
    for id in 1..=3 {
        s.add(id, prompt(10, b'a' + id as u8), 5);
    }
    let outcome = step(&mut s);
    assert_eq!(ids(&outcome), [1, 2]);
    assert_eq!((s.running(), s.waiting()), (2, 1));
}

#[test]
fn repeated_prompt_hits_all_full_blocks_but_the_last_token_is_recomputed() {
    let mut s = Scheduler::new(config(100, 8, 8192));
    s.add(1, prompt(64, b'a'), 1);
    let miss = step(&mut s);
    assert_eq!((miss.prefix_queries, miss.prefix_hits), (64, 0));
    assert_eq!(miss.emitted[0].cached_tokens, 0);
    s.add(2, prompt(64, b'a'), 1);
    let hit = step(&mut s);
    // 4 full blocks cached, but the hit stops before token 64: 3 blocks.
    assert_eq!((hit.prefix_queries, hit.prefix_hits), (64, 48));
    assert_eq!(hit.prefill_tokens, 16);
    assert_eq!(hit.emitted[0].cached_tokens, 48);
    s.add(3, prompt(70, b'a'), 1);
    assert_eq!(
        step(&mut s).emitted[0].cached_tokens,
        64,
        "a longer prompt hits all 4"
    );
}

#[test]
fn blocks_are_cached_when_their_chunk_is_scheduled() {
    let mut s = Scheduler::new(config(2000, 8, 8192));
    s.add(1, prompt(10_000, b'a'), 1);
    step(&mut s); // the first 8,192 tokens: 512 blocks keyed
    s.add(2, prompt(10_000, b'a'), 1);
    let outcome = step(&mut s);
    // Request 1's last chunk is scheduled first and keys its remaining full blocks (625 in
    // all), so request 2, admitted in the same step, hits all but the block of its last token.
    assert_eq!(outcome.prefix_hits, 624 * 16);
}

#[test]
fn reset_prefix_cache_turns_the_next_request_into_a_miss() {
    let mut s = Scheduler::new(config(100, 8, 8192));
    s.add(1, prompt(64, b'a'), 1);
    step(&mut s);
    assert_eq!(s.reset_prefix_cache(), 4);
    s.add(2, prompt(64, b'a'), 1);
    assert_eq!(step(&mut s).prefix_hits, 0);
}

#[test]
fn kv_exhaustion_preempts_the_most_recently_admitted_request() {
    // 4 blocks. Two 32-token prompts take 2 blocks each; the first decode token of each needs
    // a third block, so request 2 (admitted last) is preempted to let request 1 grow.
    let mut s = Scheduler::new(config(4, 8, 8192));
    s.add(1, prompt(32, b'a'), 3);
    s.add(2, prompt(32, b'b'), 3);
    let prefill = step(&mut s);
    assert_eq!(ids(&prefill), [1, 2]);
    let outcome = step(&mut s);
    assert_eq!(outcome.preempted, 1);
    assert_eq!(ids(&outcome), [1]);
    assert_eq!((s.running(), s.waiting()), (1, 1));
    // Request 1 finishes, then request 2 recomputes prompt + its one token and goes on.
    assert!(step(&mut s).emitted[0].finished);
    let resumed = step(&mut s);
    assert_eq!(
        resumed.prefill_tokens,
        33 - 16,
        "block 1 of its prompt is still cached"
    );
    assert_eq!(resumed.emitted[0].index, 2, "no token is produced twice");
    assert_eq!(
        resumed.emitted[0].cached_tokens, 0,
        "reports its first admission's hit"
    );
}

#[test]
fn abort_frees_the_request_and_its_blocks() {
    let mut s = Scheduler::new(config(100, 8, 8192));
    s.add(1, prompt(100, b'a'), 10);
    step(&mut s);
    assert!(s.kv_usage() > 0.0);
    assert!(s.abort(1));
    assert!(s.is_idle());
    assert_eq!(s.kv_usage(), 0.0);
    assert!(!s.abort(1));
}

#[test]
fn step_time_follows_the_cost_model_and_the_slowdown() {
    let cost = StepCost {
        base_us: 1000.0,
        prefill_us: 10.0,
        decode_us: 100.0,
    };
    let mut s = Scheduler::new(SimConfig {
        step: cost,
        slowdown: 2.0,
        ..config(100, 8, 8192)
    });
    s.add(1, prompt(50, b'a'), 2);
    // (1000 + 10 x 50) x 2 us, then (1000 + 100 x 1) x 2 us.
    assert_eq!(step(&mut s).duration, Duration::from_micros(3000));
    assert_eq!(step(&mut s).duration, Duration::from_micros(2200));
}
