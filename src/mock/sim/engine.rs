//! The engine task of one simulated vLLM server: receives requests from HTTP handlers, runs the
//! [`Scheduler`] one step at a time against the tokio clock, and hands each request its tokens
//! through its own `watch` channel.
//!
//! One task per server, for the server's life. Steps follow an absolute schedule (see the
//! module doc of [`super`] for lateness); between steps the task drains its command channel,
//! drops requests whose client went away (their progress receiver is closed) and publishes the
//! gauges. When there is nothing to run it waits on the channel: no polling. Must not block or
//! await anything but its channel and its step timer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::warn;

use super::metrics::SimMetrics;
use super::prompt::Prompt;
use super::scheduler::{Emitted, Scheduler, SeqId, StepOutcome};
use super::{SimConfig, LATENESS_TOLERANCE};

/// What a handler learns about its request, published after every step that touched it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Tokens generated so far.
    pub(crate) tokens: u32,
    /// Prefix-cache hit of the request's first admission; `None` until it is admitted.
    pub(crate) cached_tokens: Option<u32>,
}

/// A request for the engine.
#[derive(Debug)]
pub(crate) struct Submission {
    pub(crate) prompt: Prompt,
    /// Tokens to generate (at least 1).
    pub(crate) max_tokens: u32,
    /// `finished_reason` label it counts under when done.
    pub(crate) finish_reason: &'static str,
}

enum Command {
    Submit {
        submission: Submission,
        arrived: Instant,
        progress: watch::Sender<Progress>,
    },
    ResetPrefixCache(oneshot::Sender<usize>),
}

/// The handlers' side of one engine. Cloning is not needed: it lives in the server's shared
/// state. Dropping it (with the server) ends the engine once its requests are gone.
pub(crate) struct SimHandle {
    commands: mpsc::UnboundedSender<Command>,
    config: SimConfig,
    metrics: Arc<SimMetrics>,
}

impl SimHandle {
    /// Starts the engine of a server serving `model` on the current tokio runtime.
    pub(crate) fn start(
        config: SimConfig,
        model: &str,
    ) -> Result<(SimHandle, JoinHandle<()>), prometheus::Error> {
        let metrics = Arc::new(SimMetrics::new(model, &config)?);
        let (commands, receiver) = mpsc::unbounded_channel();
        let engine = Engine {
            scheduler: Scheduler::new(config.clone()),
            config: config.clone(),
            clients: HashMap::new(),
            commands: receiver,
            metrics: Arc::clone(&metrics),
            next_id: 0,
        };
        let task = tokio::spawn(engine.run());
        let handle = SimHandle {
            commands,
            config,
            metrics,
        };
        Ok((handle, task))
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Queues `submission`; its progress arrives on the returned receiver, whose drop aborts
    /// the request. `None` if the engine has stopped.
    pub(crate) fn submit(&self, submission: Submission) -> Option<watch::Receiver<Progress>> {
        let (progress, receiver) = watch::channel(Progress::default());
        let command = Command::Submit {
            submission,
            arrived: Instant::now(),
            progress,
        };
        self.commands.send(command).ok()?;
        Some(receiver)
    }

    /// Drops every cached block no request holds, once the current step ends. Returns how many
    /// blocks were dropped, or `None` if the engine has stopped.
    pub(crate) async fn reset_prefix_cache(&self) -> Option<usize> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::ResetPrefixCache(reply)).ok()?;
        answer.await.ok()
    }

    /// Prometheus text of the server's metrics.
    pub(crate) fn metrics_text(&self) -> String {
        self.metrics.render()
    }
}

/// Waits until `progress` shows `tokens` generated tokens. `None` if the engine dropped the
/// request (it stopped) first.
pub(crate) async fn wait_for_tokens(
    progress: &mut watch::Receiver<Progress>,
    tokens: u32,
) -> Option<Progress> {
    let seen = progress.wait_for(|p| p.tokens >= tokens).await.ok()?;
    Some(*seen)
}

/// A request in the engine, as its handler sees it.
struct Client {
    progress: watch::Sender<Progress>,
    arrived: Instant,
    finish_reason: &'static str,
}

struct Engine {
    scheduler: Scheduler,
    config: SimConfig,
    clients: HashMap<SeqId, Client>,
    commands: mpsc::UnboundedReceiver<Command>,
    metrics: Arc<SimMetrics>,
    next_id: SeqId,
}

impl Engine {
    async fn run(mut self) {
        // Planned wall-clock end of the last step, while steps run back to back.
        let mut last_end: Option<Instant> = None;
        loop {
            while let Ok(command) = self.commands.try_recv() {
                self.apply(command);
            }
            self.drop_abandoned();
            let step = self.scheduler.step();
            // After scheduling, as vLLM records its scheduler stats.
            self.publish_gauges();
            let Some(outcome) = step else {
                if !self.scheduler.is_idle() {
                    warn!("simulated engine has waiting requests it cannot schedule");
                }
                last_end = None;
                match self.commands.recv().await {
                    Some(command) => self.apply(command),
                    None => return,
                }
                continue;
            };
            let start = self.step_start(last_end, Instant::now());
            let end = start + outcome.duration.mul_f64(self.config.time_scale);
            tokio::time::sleep_until(end).await;
            self.deliver(&outcome, end);
            last_end = Some(end);
        }
    }

    fn apply(&mut self, command: Command) {
        match command {
            Command::Submit {
                submission,
                arrived,
                progress,
            } => {
                let id = self.next_id;
                self.next_id += 1;
                let Submission {
                    prompt,
                    max_tokens,
                    finish_reason,
                } = submission;
                self.scheduler.add(id, prompt, max_tokens);
                let client = Client {
                    progress,
                    arrived,
                    finish_reason,
                };
                self.clients.insert(id, client);
            }
            Command::ResetPrefixCache(reply) => {
                // The handler may be gone; the reset happened anyway.
                let _ = reply.send(self.scheduler.reset_prefix_cache());
            }
        }
    }

    /// Aborts the requests whose handler dropped its receiver (the client went away).
    fn drop_abandoned(&mut self) {
        let scheduler = &mut self.scheduler;
        let success = &self.metrics.success;
        self.clients.retain(|&id, client| {
            if !client.progress.is_closed() {
                return true;
            }
            scheduler.abort(id);
            success.with_label_values(&["abort"]).inc();
            false
        });
    }

    /// When the next step starts: on schedule (the previous step's planned end) unless the
    /// engine woke later than [`LATENESS_TOLERANCE`] after it; then now, and the gap is
    /// counted as lateness rather than made up by running later steps short.
    fn step_start(&self, last_end: Option<Instant>, now: Instant) -> Instant {
        let Some(planned) = last_end else {
            return now;
        };
        let late = now.saturating_duration_since(planned);
        if late <= LATENESS_TOLERANCE {
            return planned;
        }
        self.metrics.late_steps.inc();
        let late = self.config.simulated_seconds(late);
        self.metrics.late_seconds.inc_by(late);
        now
    }

    /// Hands out the tokens of a step that ended at `end` (wall clock) and records its stats.
    fn deliver(&mut self, outcome: &StepOutcome, end: Instant) {
        let m = &self.metrics;
        m.steps.inc();
        m.busy_seconds.inc_by(outcome.duration.as_secs_f64());
        m.preemptions.inc_by(u64::from(outcome.preempted));
        m.prefix_queries.inc_by(outcome.prefix_queries);
        m.prefix_hits.inc_by(outcome.prefix_hits);
        m.generation_tokens.inc_by(outcome.emitted.len() as u64);
        for emitted in &outcome.emitted {
            self.deliver_token(emitted, end);
        }
    }

    fn deliver_token(&mut self, emitted: &Emitted, end: Instant) {
        let Some(client) = self.clients.get(&emitted.id) else {
            return;
        };
        let since_arrival = self
            .config
            .simulated_seconds(end.saturating_duration_since(client.arrived));
        let m = &self.metrics;
        if emitted.index == 1 {
            m.prompt_tokens.inc_by(u64::from(emitted.prompt_tokens));
            m.ttft.observe(since_arrival);
        }
        client.progress.send_modify(|p| {
            p.tokens = emitted.index;
            p.cached_tokens = Some(emitted.cached_tokens);
        });
        if emitted.finished {
            m.e2e.observe(since_arrival);
            m.success.with_label_values(&[client.finish_reason]).inc();
            self.clients.remove(&emitted.id);
        }
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.running.set(self.scheduler.running() as f64);
        m.waiting.set(self.scheduler.waiting() as f64);
        let usage = self.scheduler.kv_usage();
        m.kv_usage.set(usage);
        m.gpu_cache_usage.set(usage);
    }
}
