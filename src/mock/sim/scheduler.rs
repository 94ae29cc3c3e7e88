//! vLLM v1's scheduler for one simulated engine: the waiting queue (first come, first served),
//! the running batch, and one call per engine step that composes the batch (decodes, chunked
//! prefills, admissions, preemptions), advances every scheduled request and reports the
//! tokens it produced and the step's simulated duration.
//!
//! Clock-free and deterministic: [`Scheduler::step`] does not sleep or read a clock, so unit
//! tests drive it step by step and the engine task times the steps. Must not do I/O.

use std::collections::VecDeque;
use std::time::Duration;

use super::blocks::{BlockId, BlockPool};
use super::prompt::Prompt;
use super::SimConfig;

/// Engine-wide id of a request.
pub(crate) type SeqId = u64;

/// One request as the scheduler tracks it (vLLM's `Request`).
#[derive(Debug)]
struct Sequence {
    id: SeqId,
    prompt: Prompt,
    /// Tokens to generate; the request finishes after the last.
    max_tokens: u32,
    /// Tokens generated so far.
    output: u32,
    /// Tokens whose KV is computed (prefix hits included).
    computed: u32,
    blocks: Vec<BlockId>,
    /// Leading blocks whose keys are in the prefix cache (hit or cached by this request).
    keyed: usize,
    /// Prefill done since the last (re)admission: the request now decodes.
    prefilled: bool,
    /// Prefix hit of the first admission, in tokens.
    cached_tokens: Option<u32>,
    /// Tokens scheduled in the step being composed.
    scheduled: u32,
}

impl Sequence {
    /// Prompt plus generated tokens: what a (re)computation must cover.
    fn num_tokens(&self) -> u32 {
        self.prompt.tokens + self.output
    }
}

/// A token produced by a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Emitted {
    pub(crate) id: SeqId,
    /// 1 for the first token of the request.
    pub(crate) index: u32,
    /// The request's prefix hit at its first admission, in tokens.
    pub(crate) cached_tokens: u32,
    /// The request's prompt tokens.
    pub(crate) prompt_tokens: u32,
    /// This was the request's last token; it has left the scheduler.
    pub(crate) finished: bool,
}

/// What one step did (vLLM's `SchedulerStats` and `IterationStats` of the step).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StepOutcome {
    /// Prompt (or recomputed) tokens computed in the step.
    pub(crate) prefill_tokens: u32,
    /// Requests that decoded one token in the step.
    pub(crate) decode_tokens: u32,
    /// Simulated duration of the step, slowdown included.
    pub(crate) duration: Duration,
    /// Tokens produced at the end of the step, in batch order.
    pub(crate) emitted: Vec<Emitted>,
    /// Requests preempted while composing the step.
    pub(crate) preempted: u32,
    /// Tokens of the requests admitted in the step (prefix-cache queries).
    pub(crate) prefix_queries: u64,
    /// Of those, tokens found in the prefix cache.
    pub(crate) prefix_hits: u64,
}

/// The scheduler of one simulated engine.
#[derive(Debug)]
pub(crate) struct Scheduler {
    config: SimConfig,
    pool: BlockPool,
    waiting: VecDeque<Sequence>,
    /// In admission order: the last is preempted first.
    running: Vec<Sequence>,
}

impl Scheduler {
    pub(crate) fn new(config: SimConfig) -> Scheduler {
        Scheduler {
            pool: BlockPool::new(config.kv_blocks),
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
        }
    }

    /// Queues a request; it is considered for admission at the next step.
    pub(crate) fn add(&mut self, id: SeqId, prompt: Prompt, max_tokens: u32) {
        self.waiting.push_back(Sequence {
            id,
            prompt,
            max_tokens: max_tokens.max(1),
            output: 0,
            computed: 0,
            blocks: Vec::new(),
            keyed: 0,
            prefilled: false,
            cached_tokens: None,
            scheduled: 0,
        });
    }

    /// Removes a request (its client went away), freeing its blocks. False if unknown.
    pub(crate) fn abort(&mut self, id: SeqId) -> bool {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            // Waiting requests hold no blocks: preemption freed them.
            self.waiting.remove(i);
            return true;
        }
        let Some(i) = self.running.iter().position(|s| s.id == id) else {
            return false;
        };
        let seq = self.running.remove(i);
        self.pool.release(&seq.blocks);
        true
    }

    /// Drops every cached block no request holds; returns how many.
    pub(crate) fn reset_prefix_cache(&mut self) -> usize {
        self.pool.reset_prefix_cache()
    }

    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Share of KV blocks held by requests.
    pub(crate) fn kv_usage(&self) -> f64 {
        self.pool.usage()
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Composes and runs one step. `None` when nothing could be scheduled (idle).
    pub(crate) fn step(&mut self) -> Option<StepOutcome> {
        let mut outcome = StepOutcome::default();
        let mut budget = self.config.max_num_batched_tokens;
        self.schedule_running(true, &mut budget, &mut outcome);
        self.schedule_running(false, &mut budget, &mut outcome);
        self.admit_waiting(&mut budget, &mut outcome);
        if self.running.iter().all(|s| s.scheduled == 0) {
            return None;
        }
        self.complete(&mut outcome);
        let cost = self.config.step;
        let duration = cost.duration(outcome.prefill_tokens, outcome.decode_tokens);
        outcome.duration = duration.mul_f64(self.config.slowdown);
        Some(outcome)
    }

    /// Schedules the running requests that decode (`decoding`) or are still in prefill, in
    /// admission order, within `budget`.
    fn schedule_running(&mut self, decoding: bool, budget: &mut u32, outcome: &mut StepOutcome) {
        let mut i = 0;
        while i < self.running.len() && *budget > 0 {
            let seq = &self.running[i];
            if seq.prefilled != decoding || seq.scheduled > 0 {
                i += 1;
                continue;
            }
            let tokens = (seq.num_tokens() - seq.computed).min(*budget);
            let target = seq.computed + tokens;
            if !self.reserve(i, target, budget, outcome) {
                // The request itself was preempted: nothing after it is left.
                break;
            }
            self.running[i].scheduled = tokens;
            *budget -= tokens;
            self.key_full_blocks(i);
            i += 1;
        }
    }

    /// Gives `running[i]` blocks for `tokens` tokens, preempting the most recently admitted
    /// running requests while too few are free. False if `running[i]` was preempted itself.
    fn reserve(&mut self, i: usize, tokens: u32, budget: &mut u32, out: &mut StepOutcome) -> bool {
        let needed = self
            .blocks_for(tokens)
            .saturating_sub(self.running[i].blocks.len());
        loop {
            if let Some(new) = self.pool.allocate(needed) {
                self.running[i].blocks.extend(new);
                return true;
            }
            let last = self.running.len() - 1;
            self.preempt_last(budget, out);
            if last == i {
                return false;
            }
        }
    }

    /// Recompute preemption of the most recently admitted running request: its blocks are
    /// freed (cached ones stay cached), its scheduled tokens go back to the budget, and it
    /// returns to the front of the waiting queue.
    fn preempt_last(&mut self, budget: &mut u32, outcome: &mut StepOutcome) {
        let Some(mut seq) = self.running.pop() else {
            return;
        };
        *budget += seq.scheduled;
        self.pool.release(&seq.blocks);
        seq.blocks.clear();
        seq.scheduled = 0;
        seq.computed = 0;
        seq.keyed = 0;
        seq.prefilled = false;
        self.waiting.push_front(seq);
        outcome.preempted += 1;
    }

    /// Admits waiting requests in order while there is room: a seat in the batch, token
    /// budget, and blocks for the uncached part of the first chunk. Stops at the first that
    /// does not fit (first come, first served).
    fn admit_waiting(&mut self, budget: &mut u32, outcome: &mut StepOutcome) {
        let max_seqs = usize::try_from(self.config.max_num_seqs).unwrap_or(usize::MAX);
        while *budget > 0 && self.running.len() < max_seqs {
            let Some(seq) = self.waiting.front() else {
                return;
            };
            let num_tokens = seq.num_tokens();
            let block_size = self.config.block_size;
            // The last token is always recomputed, so a hit stops short of it.
            let max_hit = usize::try_from((num_tokens - 1) / block_size).unwrap_or(0);
            let hashes = &seq.prompt.block_hashes;
            let hits = self
                .pool
                .longest_prefix(&hashes[..max_hit.min(hashes.len())]);
            let hit_tokens = u32::try_from(hits.len()).unwrap_or(0) * block_size;
            let tokens = (num_tokens - hit_tokens).min(*budget);
            let new_blocks = self.blocks_for(hit_tokens + tokens) - hits.len();
            if new_blocks + self.pool.count_free(&hits) > self.pool.free() {
                return;
            }
            let Some(mut seq) = self.waiting.pop_front() else {
                return;
            };
            self.pool.acquire(&hits);
            let Some(new) = self.pool.allocate(new_blocks) else {
                // Cannot happen after the check above; undo and wait for room anyway.
                self.pool.release(&hits);
                self.waiting.push_front(seq);
                return;
            };
            seq.keyed = hits.len();
            seq.blocks = hits;
            seq.blocks.extend(new);
            seq.computed = hit_tokens;
            seq.cached_tokens.get_or_insert(hit_tokens);
            seq.scheduled = tokens;
            *budget -= tokens;
            outcome.prefix_queries += u64::from(num_tokens);
            outcome.prefix_hits += u64::from(hit_tokens);
            self.running.push(seq);
            self.key_full_blocks(self.running.len() - 1);
        }
    }

    /// Puts the prompt blocks that `running[i]`'s scheduled tokens fill in the prefix cache.
    fn key_full_blocks(&mut self, i: usize) {
        let block_size = self.config.block_size;
        let seq = &mut self.running[i];
        let filled = (seq.computed + seq.scheduled).min(seq.prompt.tokens) / block_size;
        let filled = usize::try_from(filled)
            .unwrap_or(0)
            .min(seq.prompt.block_hashes.len());
        for j in seq.keyed..filled {
            if let Some(&id) = seq.blocks.get(j) {
                self.pool.cache(id, seq.prompt.block_hashes[j]);
            }
        }
        seq.keyed = seq.keyed.max(filled);
    }

    /// Runs the composed batch: scheduled tokens become computed; a request that caught up
    /// samples a token, and one that sampled its last leaves and frees its blocks.
    fn complete(&mut self, outcome: &mut StepOutcome) {
        let mut i = 0;
        while i < self.running.len() {
            let seq = &mut self.running[i];
            let scheduled = std::mem::take(&mut seq.scheduled);
            if scheduled == 0 {
                i += 1;
                continue;
            }
            if seq.prefilled {
                outcome.decode_tokens += 1;
            } else {
                outcome.prefill_tokens += scheduled;
            }
            seq.computed += scheduled;
            if seq.computed < seq.num_tokens() {
                i += 1;
                continue;
            }
            seq.prefilled = true;
            seq.output += 1;
            let finished = seq.output >= seq.max_tokens;
            outcome.emitted.push(Emitted {
                id: seq.id,
                index: seq.output,
                cached_tokens: seq.cached_tokens.unwrap_or(0),
                prompt_tokens: seq.prompt.tokens,
                finished,
            });
            if finished {
                let seq = self.running.remove(i);
                self.pool.release(&seq.blocks);
            } else {
                i += 1;
            }
        }
    }

    fn blocks_for(&self, tokens: u32) -> usize {
        usize::try_from(tokens.div_ceil(self.config.block_size)).unwrap_or(usize::MAX)
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
