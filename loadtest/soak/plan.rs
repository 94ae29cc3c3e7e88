//! What the soak runs: its options (full or CI mode), the fleet layout, the config generated at
//! each reload, and the fault schedule.
//!
//! Pure data, no I/O: the same plan drives `loadtest/soak.sh` (full mode, release binaries)
//! and `tests/soak.rs` (CI mode, the binaries `cargo test` built).

use std::path::PathBuf;
use std::time::Duration;

/// Full (≥ 10 minutes, 500 streams) or CI (60 s, 50 streams).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Ci,
}

/// Everything a run needs; [`Options::full`] and [`Options::ci`] are the two documented modes,
/// every field can be changed afterwards (`loadtest/soak.sh` passes its environment through).
#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// The `modelgate` binary (re-executed by itself on `SIGUSR2`).
    pub gateway_bin: PathBuf,
    /// The `modelgate-mock` binary.
    pub mock_bin: PathBuf,
    /// Where logs, raw data and the report go (created).
    pub out_dir: PathBuf,
    /// How long the load and the schedule run.
    pub duration: Duration,
    /// Long streams kept open at once (each reconnects as it finishes).
    pub streams: usize,
    /// Short non-stream requests per second (open loop: sent whether or not earlier ones ended).
    pub short_rate: f64,
    /// One hostile request this often.
    pub hostile_every: Duration,
    /// Tokens per long stream (and the mocks' `--tokens`).
    pub stream_tokens: usize,
    /// Mock inter-token latency.
    pub itl_ms: u64,
    /// Mock time to first token.
    pub ttft_ms: u64,
    /// Tokens of a short request.
    pub short_tokens: usize,
    /// The level RSS and descriptors are compared with is taken over the last 10 s before this.
    pub warmup: Duration,
    /// RSS / descriptor sampling period.
    pub sample_every: Duration,
    /// `server.threads` of the gateway (0 = one per CPU).
    pub threads: u32,
    /// The command line to quote in the report (empty: none).
    pub command: String,
}

impl Options {
    /// The full soak: 11 minutes (so that the first and the last minute see the same events:
    /// neither has a binary upgrade, both have every other fault), 500 streams of ~10 s,
    /// 30 short requests/s.
    pub fn full(gateway_bin: PathBuf, mock_bin: PathBuf, out_dir: PathBuf) -> Options {
        Options {
            mode: Mode::Full,
            gateway_bin,
            mock_bin,
            out_dir,
            duration: Duration::from_secs(660),
            streams: 500,
            short_rate: 30.0,
            hostile_every: Duration::from_secs(1),
            stream_tokens: 200,
            itl_ms: 50,
            ttft_ms: 10,
            short_tokens: 8,
            warmup: Duration::from_secs(60),
            sample_every: Duration::from_secs(2),
            threads: 0,
            command: String::new(),
        }
    }

    /// The CI soak: one 60-second cycle of the schedule (every kind of event once), 50 streams
    /// of ~5 s, 20 short requests/s.
    pub fn ci(gateway_bin: PathBuf, mock_bin: PathBuf, out_dir: PathBuf) -> Options {
        Options {
            mode: Mode::Ci,
            gateway_bin,
            mock_bin,
            out_dir,
            duration: Duration::from_secs(60),
            streams: 50,
            short_rate: 20.0,
            hostile_every: Duration::from_secs(1),
            stream_tokens: 100,
            itl_ms: 50,
            ttft_ms: 10,
            short_tokens: 8,
            warmup: Duration::from_secs(20),
            sample_every: Duration::from_secs(1),
            threads: 0,
            command: String::new(),
        }
    }

    /// Expected length of one long stream.
    pub fn stream_length(&self) -> Duration {
        Duration::from_millis(self.ttft_ms + self.itl_ms * self.stream_tokens as u64)
    }
}

/// One mock backend: its name (the config's backend name and the mock's `x-mock-backend`) and
/// the one model it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: &'static str,
    pub model: &'static str,
}

/// The fleet: `m1` on four backends, `m2` on two plus `m2-g`, which reloads add and remove.
pub const FLEET: [BackendSpec; 7] = [
    BackendSpec {
        name: "m1-a",
        model: "m1",
    },
    BackendSpec {
        name: "m1-b",
        model: "m1",
    },
    BackendSpec {
        name: "m1-c",
        model: "m1",
    },
    BackendSpec {
        name: "m1-d",
        model: "m1",
    },
    BackendSpec {
        name: "m2-e",
        model: "m2",
    },
    BackendSpec {
        name: "m2-f",
        model: "m2",
    },
    BackendSpec {
        name: "m2-g",
        model: "m2",
    },
];

/// The backend reloads drain and undrain.
pub const DRAINED: &str = "m1-b";
/// The backend reloads add and remove.
pub const TOGGLED: &str = "m2-g";
/// The backend killed (`SIGKILL`) and restarted.
pub const KILLED: &str = "m2-e";
/// The backend that answers 503, hangs, resets mid-header and sends malformed responses.
pub const FAULTY: &str = "m1-d";

/// `m1` policies, one after the other (one step at :20 and :50 of each minute).
pub const M1_POLICIES: [&str; 5] = [
    "round_robin",
    "least_outstanding",
    "power_of_two",
    "load_aware",
    "random",
];

/// The config of reload `k` (0 = the one the gateway starts with; one every 10 s): every
/// reload changes something, so the file watcher sees a change as well as `SIGHUP`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigState {
    pub k: u32,
    /// [`TOGGLED`] is in `m2` (the first 30 s of each minute).
    pub toggled_present: bool,
    /// [`DRAINED`] has `drain: true` (:10 to :40 of each minute).
    pub drained: bool,
    pub m1_policy: &'static str,
    pub m2_policy: &'static str,
}

impl ConfigState {
    pub fn at(k: u32) -> ConfigState {
        let phase = k % 6;
        ConfigState {
            k,
            toggled_present: phase < 3,
            drained: (1..=3).contains(&phase),
            m1_policy: M1_POLICIES[((k + 1) / 3) as usize % M1_POLICIES.len()],
            m2_policy: if (k + 1) / 6 % 2 == 0 {
                "round_robin"
            } else {
                "random"
            },
        }
    }

    /// The backends of `model`'s pool in this config (draining ones included).
    pub fn pool(&self, model: &str) -> Vec<&'static str> {
        FLEET
            .iter()
            .filter(|b| b.model == model)
            .filter(|b| b.name != TOGGLED || self.toggled_present)
            .map(|b| b.name)
            .collect()
    }

    /// What changed from `prev`, for the event log.
    pub fn describe(&self, prev: &ConfigState) -> String {
        let mut changes = Vec::new();
        if self.toggled_present != prev.toggled_present {
            changes.push(format!(
                "{} {TOGGLED}",
                if self.toggled_present {
                    "add"
                } else {
                    "remove"
                }
            ));
        }
        if self.drained != prev.drained {
            changes.push(format!(
                "{} {DRAINED}",
                if self.drained { "drain" } else { "undrain" }
            ));
        }
        if self.m1_policy != prev.m1_policy {
            changes.push(format!("m1 policy {}", self.m1_policy));
        }
        if self.m2_policy != prev.m2_policy {
            changes.push(format!("m2 policy {}", self.m2_policy));
        }
        changes.join(", ")
    }
}

/// A failure mode of [`FAULTY`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every generation answers 503 (mock `--fail-file`).
    Status503,
    /// Every generation hangs before its response header (mock `--fail-file`).
    Hang,
    /// The mock process is replaced by a raw responder that sends half a status line and
    /// resets the connection.
    ResetMidHeader,
    /// The mock process is replaced by a raw responder that sends malformed responses.
    Malformed,
}

impl Fault {
    /// Whether the fault replaces the mock process (and so cuts the streams running on it).
    pub fn replaces_process(self) -> bool {
        matches!(self, Fault::ResetMidHeader | Fault::Malformed)
    }

    pub fn name(self) -> &'static str {
        match self {
            Fault::Status503 => "503",
            Fault::Hang => "hang",
            Fault::ResetMidHeader => "reset_mid_header",
            Fault::Malformed => "malformed",
        }
    }
}

/// One scheduled action.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Save config `k` and send `SIGHUP`.
    Reload(u32),
    /// `SIGUSR2`: binary upgrade.
    Upgrade,
    /// `SIGKILL` a backend's mock process.
    Kill(&'static str),
    /// Start it again on the same port.
    Restart(&'static str),
    /// Start a fault on [`FAULTY`].
    FaultStart(Fault),
    /// End it.
    FaultEnd(Fault),
}

/// An action at an offset from the start of the load.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub at: Duration,
    pub action: Action,
}

/// The schedule, one 60-second cycle per minute of `duration`:
///
/// | offset | action |
/// |---|---|
/// | :00 :10 :20 :30 :40 :50 | save a changed config + `SIGHUP` (add/drain/policy/remove/undrain/policy) |
/// | :02–:07 | `m1-d` answers 503 |
/// | :12–:17 | `m1-d` hangs |
/// | :22, :25 | `m2-e` killed (`SIGKILL`), restarted |
/// | :33 | `SIGUSR2` binary upgrade, in odd minutes (every 2 minutes), and once in CI mode |
/// | :42–:47 | `m1-d` resets mid-header |
/// | :52–:57 | `m1-d` sends malformed responses |
pub fn schedule(mode: Mode, duration: Duration) -> Vec<Step> {
    let mut steps = Vec::new();
    let s = |secs: u64| Duration::from_secs(secs);
    let minutes = duration.as_secs().div_ceil(60);
    for m in 0..minutes {
        let base = m * 60;
        for i in 0..6u64 {
            // Reload 0 is the config the gateway starts with.
            if m > 0 || i > 0 {
                steps.push(Step {
                    at: s(base + i * 10),
                    action: Action::Reload((m * 6 + i) as u32),
                });
            }
        }
        let faults = [
            (2, Fault::Status503),
            (12, Fault::Hang),
            (42, Fault::ResetMidHeader),
            (52, Fault::Malformed),
        ];
        for (offset, fault) in faults {
            steps.push(Step {
                at: s(base + offset),
                action: Action::FaultStart(fault),
            });
            steps.push(Step {
                at: s(base + offset + 5),
                action: Action::FaultEnd(fault),
            });
        }
        steps.push(Step {
            at: s(base + 22),
            action: Action::Kill(KILLED),
        });
        steps.push(Step {
            at: s(base + 25),
            action: Action::Restart(KILLED),
        });
        let upgrade = match mode {
            Mode::Ci => m == 0,
            Mode::Full => m % 2 == 1,
        };
        if upgrade {
            steps.push(Step {
                at: s(base + 33),
                action: Action::Upgrade,
            });
        }
    }
    steps.retain(|step| step.at < duration);
    steps.sort_by_key(|step| step.at);
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reload_changes_the_config() {
        for k in 1..120 {
            let (prev, next) = (ConfigState::at(k - 1), ConfigState::at(k));
            assert!(!next.describe(&prev).is_empty(), "reload {k}");
        }
    }

    #[test]
    fn the_ci_schedule_has_every_kind_of_event_once() {
        let steps = schedule(Mode::Ci, Duration::from_secs(60));
        let count = |f: &dyn Fn(&Action) -> bool| steps.iter().filter(|s| f(&s.action)).count();
        assert_eq!(count(&|a| matches!(a, Action::Reload(_))), 5);
        assert_eq!(count(&|a| *a == Action::Upgrade), 1);
        assert_eq!(count(&|a| matches!(a, Action::Kill(_))), 1);
        assert_eq!(count(&|a| matches!(a, Action::FaultStart(_))), 4);
    }

    #[test]
    fn the_full_schedule_upgrades_every_two_minutes_but_not_in_the_first_or_last_minute() {
        let steps = schedule(Mode::Full, Duration::from_secs(660));
        let upgrades: Vec<u64> = steps
            .iter()
            .filter(|s| s.action == Action::Upgrade)
            .map(|s| s.at.as_secs())
            .collect();
        assert_eq!(upgrades, [93, 213, 333, 453, 573]);
    }
}
