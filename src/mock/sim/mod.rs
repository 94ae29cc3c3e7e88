//! Simulated vLLM engine behind the mock's HTTP surface (`modelgate-mock --sim`): one discrete
//! step loop per mock server, with vLLM v1's continuous-batching scheduler, chunked prefill,
//! automatic prefix caching over 16-token blocks and recompute preemption, timed by a linear
//! step-cost model. It exists to judge routers (prefix-cache-aware versus round-robin, ...)
//! without a GPU, so every behaviour a router can observe follows vLLM: time to first token,
//! inter-token latency, queueing, `usage.prompt_tokens_details.cached_tokens` and `/metrics`.
//!
//! Test infrastructure, never on the gateway's request path. The engine task owns all scheduler
//! state; HTTP handlers talk to it through channels only and must not block it.
//!
//! # Model and constants
//!
//! Every default describes Llama-3.1-8B on one H100 (TP1) running vLLM with prefix caching and
//! chunked prefill; sources are in `/work/shared/ROUTING.md` section 2.2.
//!
//! - **Tokens.** 1 token = 4 bytes of prompt text, rounded up ([`BYTES_PER_TOKEN`]); a prompt
//!   has at least 1 token. The router and the engine then agree on text-to-token alignment the
//!   way a real deployment roughly does, with no tokenizer on either side.
//! - **Prompt text** (`prompt.rs`): completions use `prompt` (the first element of an array of
//!   strings; token-id arrays count as empty); chat concatenates, for each message in order,
//!   `"<|" + role + "|>\n" + content + "\n"`, where `content` is the string or the concatenation
//!   of its parts' `text`.
//! - **Blocks** (`blocks.rs`): [`DEFAULT_BLOCK_SIZE`] = 16 tokens (vLLM's default; 64 bytes of
//!   text). Block `i`'s key is `xxh3_64_with_seed(text of block i, seed = key of block i - 1)`,
//!   seed 0 for the first, so a key names the whole prefix. Only full prompt blocks are keyed
//!   and cacheable; blocks holding generated tokens never are (the router cannot see where
//!   generated tokens fall, and it keeps the model small).
//! - **KV capacity**: [`DEFAULT_KV_BLOCKS`] = 29,205 blocks (467k tokens), BLIS's measured
//!   `total_kv_blocks` for Llama-3.1-8B / H100 (inference-sim `defaults.yaml` @1a6eb353;
//!   consistent with 128 KiB of KV per token in ~55-64 GB).
//! - **Prefix hit** = the longest run of leading prompt blocks already cached, capped below the
//!   prompt's last token (vLLM's `max_cache_hit_length = num_tokens - 1`: the last token is
//!   always recomputed for its logits), so a repeated prompt of `16k` tokens hits `16(k-1)`.
//!   `vllm:prefix_cache_queries_total` grows by the prompt's tokens and
//!   `vllm:prefix_cache_hits_total` by the hit, at every admission (re-admissions after a
//!   preemption too, as vLLM v1 counts them); `cached_tokens` reports the first admission's hit.
//! - **Eviction**: blocks of finished (or preempted, or aborted) requests stay cached with
//!   reference count 0 until a new block is needed; then uncached free blocks go first, then
//!   cached ones least recently freed first. A request's blocks are freed last-block-first, so
//!   its shared prefix outlives its tail (vLLM's `free_blocks` order).
//! - **Scheduler** (`scheduler.rs`), per step: (a) every running request that finished its
//!   prefill decodes 1 token; (b) running requests still in prefill continue (chunked) within
//!   the token budget; (c) waiting requests are admitted first-come first-served while
//!   `running < max_num_seqs` ([`DEFAULT_MAX_NUM_SEQS`] = 256), budget remains
//!   ([`DEFAULT_MAX_NUM_BATCHED_TOKENS`] = 8,192 tokens a step, a decode costs 1) and the
//!   request's new blocks can be allocated (cached prefix blocks are reused; only uncached
//!   tokens need prefill and blocks); a head that does not fit blocks the queue. When a running
//!   request needs a block and none is free, the most recently admitted running request is
//!   preempted (recompute: its blocks are freed and it goes back to the front of the queue;
//!   `vllm:num_preemptions_total`). These are vLLM v1's defaults for an H100.
//! - **Step time** ([`StepCost`]) = 5,752.7 us + 17.25 us per prefill token + 6.0 us per decode
//!   token ([`DEFAULT_STEP_BASE_US`], [`DEFAULT_STEP_PREFILL_US`], [`DEFAULT_STEP_DECODE_US`]),
//!   BLIS's blackbox fit for Llama-3.1-8B / H100 on vLLM 0.8.4: a full 8,192-token prefill step
//!   takes ~147 ms, a decode step of 64 requests ~6.1 ms. A server's slowdown factor multiplies
//!   the whole step (`--sim-slowdown`, for "one server 2x slower" fleets).
//! - **Tokens out**: a request's first token is emitted at the end of the step that completes
//!   its prefill, then one per step; it always generates exactly `max_tokens` (or
//!   `max_completion_tokens`) tokens, as with `ignore_eos`, finishing with `length`; without a
//!   cap it generates the mock's `tokens` (default 16) and finishes with `stop`. A request whose
//!   prompt plus output could never fit the KV cache is refused with 400, as vLLM refuses one
//!   longer than its context.
//!
//! # Time
//!
//! Simulated seconds run `time_scale` times slower in wall-clock time (`--time-scale 2` halves
//! the simulator's pace so a run fits a loaded machine); every duration reported (`/metrics`
//! histograms) is in simulated seconds, and a client converts wall-clock by dividing by the
//! scale. The engine sleeps until each step's end on an absolute schedule (each end is the
//! previous planned end plus the step's duration), so timer jitter does not accumulate (up to
//! 2 ms of it is absorbed). When it wakes more than
//! [`LATENESS_TOLERANCE`] after a step's planned end (an overloaded machine), it does not run
//! later steps short to catch up: the next step starts when the engine got going again, and the
//! gap is counted in `modelgate_mock_sim_late_seconds_total` and
//! `modelgate_mock_sim_late_steps_total` (simulated time, as if the GPU had stalled). A run whose
//! late seconds are not small next to `modelgate_mock_sim_busy_seconds_total` was throttled by
//! the host and should be rerun with a larger time scale. An idle engine waits on its channel
//! and does not poll.
//!
//! # Cost
//!
//! `loadtest/sim_cpu.py` (4 servers, ~48.5 streamed completions a simulated second, 2,300-token
//! prompts over 64 shared prefixes, 128 output tokens, release build, on the shared 2-core
//! development machine): the whole mock process used 10.9 % of one core at `--time-scale 1` and
//! 7.4 % at `--time-scale 2` (user + system time from `/proc/PID/stat`). README section
//! "Simulated vLLM fleet" has the command and the full table.
//!
//! # Deviations from vLLM
//!
//! `POST /reset_prefix_cache` drops every cached block that no running request holds and
//! answers 200; vLLM refuses the whole reset (still 200, with a warning) while any block is in
//! use. Decodes are scheduled before prefills; vLLM v1 walks its running queue in admission
//! order, which differs only when a step's token budget runs out. Prefix-cache stats are counted
//! once per admission, not per scheduling attempt. The render routes (`routes.rs`) give the
//! simulator's token ids (4 bytes each, under its chat template) and only `max_tokens` of the
//! sampling parameters, where vLLM applies the model's template and tokenizer and returns them
//! all; `/tokenize` and `/detokenize` are not served (404).

pub(crate) mod blocks;
pub(crate) mod engine;
mod metrics;
pub(crate) mod prompt;
pub(crate) mod routes;
pub(crate) mod scheduler;

#[cfg(test)]
mod http_tests;

use std::time::Duration;

pub(crate) use engine::{wait_for_tokens, Progress, SimHandle, Submission};

/// Bytes of prompt text per simulated token (rounded up).
pub const BYTES_PER_TOKEN: usize = 4;
/// Tokens per KV block: vLLM's `--block-size` default.
pub const DEFAULT_BLOCK_SIZE: u32 = 16;
/// KV-cache capacity in blocks: BLIS's measured `total_kv_blocks` for Llama-3.1-8B on one H100.
pub const DEFAULT_KV_BLOCKS: u32 = 29_205;
/// vLLM's `--max-num-seqs` default: requests in the running batch at most.
pub const DEFAULT_MAX_NUM_SEQS: u32 = 256;
/// vLLM's `--max-num-batched-tokens` default with chunked prefill on an H100: tokens per step.
pub const DEFAULT_MAX_NUM_BATCHED_TOKENS: u32 = 8_192;
/// Fixed cost of one step, microseconds (BLIS blackbox fit, Llama-3.1-8B / H100).
pub const DEFAULT_STEP_BASE_US: f64 = 5_752.7;
/// Cost of each prefill token in a step, microseconds (same fit).
pub const DEFAULT_STEP_PREFILL_US: f64 = 17.25;
/// Cost of each decode token in a step, microseconds (same fit).
pub const DEFAULT_STEP_DECODE_US: f64 = 6.0;
/// Wall-clock lateness absorbed silently at a step's end: tokio's timer wheel has a 1 ms tick,
/// so wake-ups land up to ~1 ms late even on an idle machine.
pub const LATENESS_TOLERANCE: Duration = Duration::from_millis(2);

/// The linear step-time model: `base + prefill x prefill tokens + decode x decode tokens`,
/// all in microseconds of simulated time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCost {
    /// Fixed cost of a step (kernel launches, scheduling, sampling).
    pub base_us: f64,
    /// Cost of each prompt token computed in the step.
    pub prefill_us: f64,
    /// Cost of each decode token (one per decoding request) in the step.
    pub decode_us: f64,
}

impl Default for StepCost {
    fn default() -> Self {
        StepCost {
            base_us: DEFAULT_STEP_BASE_US,
            prefill_us: DEFAULT_STEP_PREFILL_US,
            decode_us: DEFAULT_STEP_DECODE_US,
        }
    }
}

impl StepCost {
    /// Simulated duration of a step with these token counts, before any slowdown.
    pub fn duration(&self, prefill_tokens: u32, decode_tokens: u32) -> Duration {
        let us = self.base_us
            + self.prefill_us * f64::from(prefill_tokens)
            + self.decode_us * f64::from(decode_tokens);
        // Whole nanoseconds, rounded, so equal token counts give equal durations exactly.
        Duration::from_nanos((us.max(0.0) * 1e3).round() as u64)
    }
}

/// One simulated vLLM server's engine settings. Fixed for the server's life.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// KV-cache capacity in blocks (vLLM's `num_gpu_blocks`). At least 1.
    pub kv_blocks: u32,
    /// Tokens per block. At least 1.
    pub block_size: u32,
    /// Most requests in the running batch. At least 1.
    pub max_num_seqs: u32,
    /// Token budget of one step (prefill chunks plus one per decode). At least 1.
    pub max_num_batched_tokens: u32,
    /// Step-time model.
    pub step: StepCost,
    /// Every step of this server takes this many times longer (1 = nominal). Positive.
    pub slowdown: f64,
    /// Wall-clock seconds per simulated second (1 = real time, 2 = twice as slow). Positive.
    pub time_scale: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            kv_blocks: DEFAULT_KV_BLOCKS,
            block_size: DEFAULT_BLOCK_SIZE,
            max_num_seqs: DEFAULT_MAX_NUM_SEQS,
            max_num_batched_tokens: DEFAULT_MAX_NUM_BATCHED_TOKENS,
            step: StepCost::default(),
            slowdown: 1.0,
            time_scale: 1.0,
        }
    }
}

impl SimConfig {
    /// Whether a request of `prompt_tokens` that generates `max_tokens` could ever hold all its
    /// blocks at once (the KV of its last generated token is never computed).
    pub fn fits(&self, prompt_tokens: u64, max_tokens: u64) -> bool {
        let tokens = (prompt_tokens + max_tokens).saturating_sub(1);
        tokens.div_ceil(u64::from(self.block_size.max(1))) <= u64::from(self.kv_blocks)
    }

    /// Simulated seconds of a wall-clock duration.
    pub(crate) fn simulated_seconds(&self, wall: Duration) -> f64 {
        wall.as_secs_f64() / self.time_scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_cost_defaults_match_blis_fit() {
        let cost = StepCost::default();
        assert_eq!(cost.duration(0, 0), Duration::from_nanos(5_752_700));
        // A full chunk: 5,752.7 + 17.25 x 8,192 = 147,064.7 us.
        assert_eq!(cost.duration(8_192, 0), Duration::from_nanos(147_064_700));
        // 64 decodes: 5,752.7 + 6 x 64 = 6,136.7 us.
        assert_eq!(cost.duration(0, 64), Duration::from_nanos(6_136_700));
    }

    #[test]
    fn fits_counts_blocks_of_prompt_and_all_but_last_output_token() {
        let sim = SimConfig {
            kv_blocks: 2,
            block_size: 16,
            ..SimConfig::default()
        };
        assert!(sim.fits(30, 3), "32 tokens of KV = 2 blocks");
        assert!(!sim.fits(30, 4), "33 tokens need a third block");
    }
}
