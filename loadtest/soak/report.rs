//! The soak's analysis: classify every request, explain each failure by the schedule (a killed
//! or faulting backend, streams already running on it) or flag it, check pools against the
//! config in force, read the gateway's log and metrics, and judge the targets. Also writes
//! the raw data and renders the Markdown report.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use serde::Serialize;

use super::gateway::metric_sum;
use super::load::{Kind, Outcome, Record};
use super::plan::{Mode, Options, DRAINED, FLEET};
use super::run::{Collected, ConfigWrite, Executed, Sample};

/// How long after a config is saved the previous one may still be in force (SIGHUP applies
/// at once; the file watcher within 2 s; requests keep the snapshot they started with).
const APPLY_SLACK_MS: f64 = 2000.0;
/// A backend counts as faulting this long after its fault ends or it is restarted (a restarted
/// backend is probed healthy within ~1 s; a hung request times out after 2 s).
const AFTERMATH_MS: f64 = 3000.0;

/// One failed request and what explains it.
#[derive(Serialize, Clone, Debug)]
pub struct Failure {
    pub id: String,
    pub kind: Kind,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub error_code: Option<String>,
    pub backend: Option<String>,
    pub start_ms: f64,
    pub end_ms: f64,
    pub detail: String,
    /// The event that explains it, `None` = unexplained.
    pub explained_by: Option<String>,
}

/// A median level of the serving process over a time window.
#[derive(Serialize, Clone, Copy, Debug, Default)]
pub struct Level {
    pub warm: Option<f64>,
    pub end: Option<f64>,
}

impl Level {
    /// End level within 10 % of the warm-up level.
    pub fn within_10_percent(&self) -> Option<bool> {
        Some((self.end? - self.warm?).abs() <= 0.10 * self.warm?)
    }

    pub fn change_percent(&self) -> Option<f64> {
        Some((self.end? / self.warm? - 1.0) * 100.0)
    }
}

/// One target of the issue, judged.
#[derive(Serialize, Clone, Debug)]
pub struct Target {
    pub name: String,
    pub measured: String,
    /// `None`: not judged in this mode.
    pub met: Option<bool>,
}

/// Short-request latency in one minute.
#[derive(Serialize, Clone, Debug)]
pub struct Minute {
    pub minute: usize,
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// p99 of the requests the gateway served in one attempt (no retry after a fault).
    pub p99_first_attempt_ms: f64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct Report {
    /// Requests sent, per kind.
    pub sent: BTreeMap<String, usize>,
    pub streams_completed: usize,
    pub shorts_ok: usize,
    pub hostile_ok: usize,
    pub refused: usize,
    pub failures: Vec<Failure>,
    pub unexplained: usize,
    pub cuts: usize,
    pub cuts_unexplained: usize,
    pub wrong_pool: Vec<String>,
    pub not_in_config: Vec<String>,
    pub drained_served: Vec<String>,
    pub double_answers: Vec<String>,
    pub invalid_unexplained: usize,
    pub hostile_wrong: usize,
    pub panics: Vec<String>,
    pub error_lines: Vec<String>,
    pub rss_kib: Level,
    pub fds: Level,
    /// Descriptors with nothing in flight: before the load, and after it once the requests
    /// ended, old processes exited and upstream keep-alives expired.
    pub fds_idle: Level,
    pub minutes: Vec<Minute>,
    pub p99_ratio: Option<f64>,
    pub reloads_written: usize,
    pub reloads_applied: usize,
    pub upgrades: usize,
    pub upgrades_completed: usize,
    pub admin_failures: usize,
    /// Soak request ids the access log has more than once.
    pub logged_twice: Vec<String>,
    pub targets: Vec<Target>,
}

impl Report {
    /// Whether every judged target is met.
    pub fn all_met(&self) -> bool {
        self.targets.iter().all(|t| t.met != Some(false))
    }
}

fn model_of(backend: &str) -> Option<&'static str> {
    FLEET.iter().find(|b| b.name == backend).map(|b| b.model)
}

/// The configs that may have been in force for a request that started at `from` and got its
/// response header at `to`.
fn in_force(configs: &[ConfigWrite], from: f64, to: f64) -> Vec<&ConfigWrite> {
    configs
        .iter()
        .enumerate()
        .filter(|(i, c)| {
            let next = configs
                .get(i + 1)
                .map_or(f64::INFINITY, |n| n.t_ms + APPLY_SLACK_MS);
            c.t_ms <= to && next >= from
        })
        .map(|(_, c)| c)
        .collect()
}

/// The schedule event that explains a failed request on `backend`, if any.
fn explain(rec: &Record, backend: &str, ex: &Executed) -> Option<String> {
    let (start, end) = (rec.start_ms, rec.end_ms);
    for o in ex.outages.iter().filter(|o| o.backend == backend) {
        let explained = match rec.outcome {
            // A stream already running on it when it was killed.
            Outcome::Cut => end >= o.from_ms - 200.0 && end <= o.from_ms + AFTERMATH_MS,
            _ => start <= o.until_ms + AFTERMATH_MS && end >= o.from_ms - 200.0,
        };
        if explained {
            return Some(format!("{backend} killed at {:.1} s", o.from_ms / 1000.0));
        }
    }
    for w in ex.faults.iter().filter(|w| w.backend == backend) {
        let overlaps = start <= w.until_ms + AFTERMATH_MS && end >= w.from_ms - 200.0;
        let explained = match rec.outcome {
            Outcome::Cut => {
                let replaced = w.replaces_process
                    && end >= w.from_ms - 200.0
                    && end <= w.from_ms + AFTERMATH_MS;
                replaced || (w.fault == "malformed" && overlaps)
            }
            Outcome::Invalid => w.replaces_process && overlaps,
            _ => overlaps,
        };
        if explained {
            return Some(format!(
                "{backend} {} from {:.1} s",
                w.fault,
                w.from_ms / 1000.0
            ));
        }
    }
    None
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

/// Median RSS and descriptors of the serving process over `[from, to)`.
fn level(samples: &[Sample], from: f64, to: f64) -> (Option<f64>, Option<f64>) {
    let window: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.current && s.t_ms >= from && s.t_ms < to)
        .collect();
    (
        median(window.iter().map(|s| s.rss_kib as f64).collect()),
        median(window.iter().map(|s| s.fds as f64).collect()),
    )
}

/// One access-log line, the fields the soak uses.
#[derive(Clone, Debug)]
pub struct Access {
    pub backend: Option<String>,
    pub attempts: u64,
    pub status: u64,
    pub cut: Option<String>,
    pub error: Option<String>,
}

/// Access-log lines by request id, panic lines, ERROR lines, WARN messages with counts.
pub struct LogSummary {
    pub access: HashMap<String, Vec<Access>>,
    pub panics: Vec<String>,
    pub errors: Vec<String>,
    pub warns: BTreeMap<String, usize>,
    pub access_lines: usize,
}

pub fn read_log(log: &str) -> LogSummary {
    let mut s = LogSummary {
        access: HashMap::new(),
        panics: Vec::new(),
        errors: Vec::new(),
        warns: BTreeMap::new(),
        access_lines: 0,
    };
    for line in log.lines() {
        if line.contains("panicked at") {
            s.panics.push(line.to_owned());
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if let (Some(id), true) = (v["request_id"].as_str(), v.get("duration_ms").is_some()) {
            s.access_lines += 1;
            s.access.entry(id.to_owned()).or_default().push(Access {
                backend: v["backend"].as_str().map(str::to_owned),
                attempts: v["attempts"].as_u64().unwrap_or(0),
                status: v["status"].as_u64().unwrap_or(0),
                cut: v["cut"].as_str().map(str::to_owned),
                error: v["error"].as_str().map(str::to_owned),
            });
            continue;
        }
        match v["level"].as_str() {
            Some("ERROR") => s.errors.push(line.to_owned()),
            Some("WARN") => {
                let msg = v["message"].as_str().unwrap_or("?").to_owned();
                *s.warns.entry(msg).or_default() += 1;
            }
            _ => {}
        }
    }
    s
}

pub fn analyze(opts: &Options, c: &Collected) -> Report {
    let mut r = Report::default();
    let log = read_log(&c.gateway_log);
    let ex = &c.executed;
    for rec in &c.records {
        let kind = format!("{:?}", rec.kind).to_lowercase();
        *r.sent.entry(kind).or_default() += 1;
        if rec.outcome == Outcome::Refused {
            r.refused += 1;
        }
        match (rec.kind, rec.outcome) {
            (Kind::Stream, Outcome::Ok) => r.streams_completed += 1,
            (Kind::Short, Outcome::Ok) => r.shorts_ok += 1,
            (Kind::Hostile, Outcome::Ok) => r.hostile_ok += 1,
            _ => {}
        }
        if rec.kind == Kind::Hostile && rec.outcome == Outcome::HostileWrong {
            r.hostile_wrong += 1;
        }
        // Pools, whatever the outcome, for every answer a backend gave.
        if rec.kind != Kind::Hostile {
            if let Some(b) = rec.mock_backend.as_deref().or(rec.backend.as_deref()) {
                let what = format!(
                    "{} {} for {} answered by {b} at {:.1} s",
                    rec.id,
                    rec.status.unwrap_or(0),
                    rec.model,
                    rec.start_ms / 1000.0
                );
                if model_of(b).is_some_and(|m| m != rec.model) {
                    r.wrong_pool.push(what.clone());
                }
                let header = rec.header_ms.unwrap_or(rec.end_ms);
                let configs = in_force(&ex.configs, rec.start_ms, header);
                let allowed = configs
                    .iter()
                    .any(|c| c.state.pool(&rec.model).contains(&b));
                if model_of(b) == Some(rec.model.as_str()) && !allowed {
                    r.not_in_config.push(what.clone());
                }
                if b == DRAINED && !configs.is_empty() && configs.iter().all(|c| c.state.drained) {
                    r.drained_served.push(what);
                }
            }
        }
        if rec.is_double_answer() {
            r.double_answers.push(format!("{}: {}", rec.id, rec.detail));
        }
        let failed = match rec.kind {
            Kind::Hostile => matches!(rec.outcome, Outcome::Refused | Outcome::Transport),
            _ => rec.outcome != Outcome::Ok,
        };
        if !failed {
            continue;
        }
        let backend = rec.backend.clone().or_else(|| {
            log.access
                .get(&rec.id)
                .and_then(|a| a.last())
                .and_then(|a| a.backend.clone())
        });
        let explained_by = match rec.outcome {
            // Never explained: the targets are absolute.
            Outcome::Refused => None,
            _ if rec.is_double_answer() => None,
            _ => backend.as_deref().and_then(|b| explain(rec, b, ex)),
        };
        if rec.outcome == Outcome::Cut {
            r.cuts += 1;
            if explained_by.is_none() {
                r.cuts_unexplained += 1;
            }
        }
        if rec.outcome == Outcome::Invalid && explained_by.is_none() {
            r.invalid_unexplained += 1;
        }
        if explained_by.is_none() {
            r.unexplained += 1;
        }
        r.failures.push(Failure {
            id: rec.id.clone(),
            kind: rec.kind,
            outcome: rec.outcome,
            status: rec.status,
            error_code: rec.error_code.clone(),
            backend,
            start_ms: rec.start_ms,
            end_ms: rec.end_ms,
            detail: rec.detail.clone(),
            explained_by,
        });
    }

    // Latency of short requests per minute (by start time).
    let mut per_minute: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for rec in c
        .records
        .iter()
        .filter(|r| r.kind == Kind::Short && r.outcome == Outcome::Ok)
    {
        if rec.start_ms >= c.load_end_ms {
            continue;
        }
        let e = per_minute
            .entry((rec.start_ms / 60_000.0) as usize)
            .or_default();
        let latency = rec.end_ms - rec.start_ms;
        e.0.push(latency);
        if rec.attempts == Some(1) {
            e.1.push(latency);
        }
    }
    for (minute, (mut all, mut first)) in per_minute {
        all.sort_by(f64::total_cmp);
        first.sort_by(f64::total_cmp);
        r.minutes.push(Minute {
            minute: minute + 1,
            count: all.len(),
            p50_ms: percentile(&all, 0.50),
            p99_ms: percentile(&all, 0.99),
            max_ms: all.last().copied().unwrap_or(0.0),
            p99_first_attempt_ms: percentile(&first, 0.99),
        });
    }
    if r.minutes.len() >= 2 {
        let (first, last) = (&r.minutes[0], &r.minutes[r.minutes.len() - 1]);
        r.p99_ratio = Some(last.p99_ms / first.p99_ms);
    }

    // RSS and descriptors of the serving process: the last 10 s of the warm-up vs the last
    // 10 s of the load.
    let warm_end = opts.warmup.as_secs_f64() * 1000.0;
    let (rss_warm, fds_warm) = level(&c.watched.samples, warm_end - 10_000.0, warm_end);
    let (rss_end, fds_end) = level(&c.watched.samples, c.load_end_ms - 10_000.0, c.load_end_ms);
    r.rss_kib = Level {
        warm: rss_warm,
        end: rss_end,
    };
    r.fds = Level {
        warm: fds_warm,
        end: fds_end,
    };
    r.fds_idle = Level {
        warm: c.idle_before.map(|(_, fds)| fds as f64),
        end: c.idle_after.map(|(_, fds)| fds as f64),
    };

    // Reloads: each saved config seen in force (in /status) within 3 s.
    for w in ex.configs.iter().filter(|w| w.k > 0) {
        r.reloads_written += 1;
        let applied = c.watched.status_changes.iter().any(|(t, _, _, sha)| {
            *sha == w.sha256 && *t >= w.t_ms - 250.0 && *t <= w.t_ms + 3000.0
        });
        if applied {
            r.reloads_applied += 1;
        }
    }
    r.upgrades = ex.upgrades.len();
    r.upgrades_completed = ex
        .upgrades
        .iter()
        .filter(|u| u.new_pid.is_some() && u.old_exit_ms.is_some())
        .count();
    r.admin_failures = c.watched.admin_failures.len();
    r.panics = log.panics.clone();
    r.error_lines = log.errors.clone();
    r.logged_twice = log
        .access
        .iter()
        .filter(|(id, lines)| id.starts_with("soak-") && lines.len() > 1)
        .map(|(id, _)| id.clone())
        .collect();
    r.logged_twice.sort();

    let count = |n: usize| n.to_string();
    let non_2xx_unexplained = r
        .failures
        .iter()
        .filter(|f| {
            f.explained_by.is_none() && f.outcome != Outcome::Cut && f.outcome != Outcome::Refused
        })
        .count();
    let non_2xx_explained = r
        .failures
        .iter()
        .filter(|f| f.explained_by.is_some() && f.outcome != Outcome::Cut)
        .count();
    r.targets = vec![
        Target {
            name: "refused connections = 0".into(),
            measured: count(r.refused),
            met: Some(r.refused == 0),
        },
        Target {
            name: "non-2xx / failed requests not explained by a killed or faulting backend = 0"
                .into(),
            measured: format!("{non_2xx_unexplained} (explained: {non_2xx_explained})"),
            met: Some(non_2xx_unexplained == 0),
        },
        Target {
            name: "cut streams not explained by a killed or faulting backend = 0".into(),
            measured: format!("{} of {} cut", r.cuts_unexplained, r.cuts),
            met: Some(r.cuts_unexplained == 0),
        },
        Target {
            name: "wrong-pool answers = 0".into(),
            measured: count(r.wrong_pool.len()),
            met: Some(r.wrong_pool.is_empty()),
        },
        Target {
            name: "requests answered twice = 0".into(),
            measured: format!(
                "{} spliced answers, {} request ids logged twice",
                r.double_answers.len(),
                r.logged_twice.len()
            ),
            met: Some(r.double_answers.is_empty() && r.logged_twice.is_empty()),
        },
        Target {
            name: "hostile requests get their 4xx".into(),
            measured: format!(
                "{} wrong of {}",
                r.hostile_wrong,
                r.sent.get("hostile").unwrap_or(&0)
            ),
            met: Some(r.hostile_wrong == 0),
        },
        Target {
            name: "RSS back within 10 % of its level after warm-up".into(),
            measured: level_text(&r.rss_kib, "MiB", 1.0 / 1024.0),
            met: r.rss_kib.within_10_percent(),
        },
        Target {
            name: "open file descriptors back within 10 % of their level after warm-up".into(),
            measured: level_text(&r.fds, "", 1.0),
            // Under load the count follows the faults on at the time (hung requests hold
            // connections, malformed answers close them). The full mode's two windows are 10
            // minutes apart at the same point of the schedule; the 60-second mode has no two
            // such windows, so there the idle comparison below is the judged one.
            met: match opts.mode {
                Mode::Full => r.fds.within_10_percent(),
                Mode::Ci => None,
            },
        },
        Target {
            name: "open file descriptors, idle after the load within 10 % of idle before it".into(),
            measured: level_text(&r.fds_idle, "", 1.0),
            met: r.fds_idle.within_10_percent(),
        },
        Target {
            name: "no panic".into(),
            measured: count(r.panics.len()),
            met: Some(r.panics.is_empty()),
        },
        Target {
            name: "p99 of short requests, last minute ≤ 1.5 × first minute".into(),
            measured: match (r.minutes.first(), r.minutes.last(), r.p99_ratio) {
                (Some(f), Some(l), Some(ratio)) => {
                    format!("{:.1} ms vs {:.1} ms = {ratio:.2} ×", l.p99_ms, f.p99_ms)
                }
                _ => "n/a (one minute)".into(),
            },
            met: match opts.mode {
                Mode::Full => r.p99_ratio.map(|x| x <= 1.5),
                Mode::Ci => None,
            },
        },
        Target {
            // Both minutes have the same faults; a hung backend costs its requests the 2 s
            // first-byte timeout before the retry, which then sets p99. This row is the same
            // comparison without them (requests served in one attempt), shown, not judged.
            name: "(shown) p99 of short requests served in one attempt, last ÷ first minute".into(),
            measured: match (r.minutes.first(), r.minutes.last()) {
                (Some(f), Some(l)) if r.minutes.len() >= 2 => format!(
                    "{:.1} ms vs {:.1} ms = {:.2} ×",
                    l.p99_first_attempt_ms,
                    f.p99_first_attempt_ms,
                    l.p99_first_attempt_ms / f.p99_first_attempt_ms
                ),
                _ => "n/a (one minute)".into(),
            },
            met: None,
        },
    ];
    r
}

fn level_text(l: &Level, unit: &str, scale: f64) -> String {
    match (l.warm, l.end, l.change_percent()) {
        (Some(w), Some(e), Some(p)) => {
            format!(
                "{:.1}{unit} → {:.1}{unit} ({p:+.1} %)",
                w * scale,
                e * scale
            )
        }
        _ => "no samples".into(),
    }
}

/// Raw data: every request (`records.jsonl`), RSS/fds samples (`samples.csv`), the schedule
/// as carried out (`executed.json`), `/status` changes (`status.csv`), the last metrics of
/// each gateway process (`metrics-<pid>.txt`).
pub fn write_raw(opts: &Options, c: &Collected) -> Result<(), String> {
    let dir = &opts.out_dir;
    let err = |e: std::io::Error| e.to_string();
    let mut records = String::new();
    for rec in &c.records {
        records.push_str(&serde_json::to_string(rec).map_err(|e| e.to_string())?);
        records.push('\n');
    }
    std::fs::write(dir.join("records.jsonl"), records).map_err(err)?;
    let mut samples = String::from("t_s,pid,current,rss_kib,fds,cpu_s\n");
    for s in &c.watched.samples {
        let _ = writeln!(
            samples,
            "{:.1},{},{},{},{},{:.2}",
            s.t_ms / 1000.0,
            s.pid,
            s.current,
            s.rss_kib,
            s.fds,
            s.cpu_s
        );
    }
    std::fs::write(dir.join("samples.csv"), samples).map_err(err)?;
    let executed = serde_json::to_string_pretty(&c.executed).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("executed.json"), executed).map_err(err)?;
    let mut status = String::from("t_s,pid,generation,config_sha256\n");
    for (t, pid, generation, sha) in &c.watched.status_changes {
        let _ = writeln!(status, "{:.2},{pid},{generation},{sha}", t / 1000.0);
    }
    std::fs::write(dir.join("status.csv"), status).map_err(err)?;
    for (pid, (_, text)) in &c.watched.metrics {
        std::fs::write(dir.join(format!("metrics-{pid}.txt")), text).map_err(err)?;
    }
    Ok(())
}

fn yes(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "n/a",
    }
}

/// The Markdown report.
pub fn markdown(opts: &Options, c: &Collected, r: &Report) -> String {
    let mut m = String::new();
    let ex = &c.executed;
    let _ = writeln!(
        m,
        "### Soak, {} mode, {} s\n",
        match opts.mode {
            Mode::Full => "full",
            Mode::Ci => "CI",
        },
        opts.duration.as_secs()
    );
    if !opts.command.is_empty() {
        let _ = writeln!(m, "- command: `{}`", opts.command);
    }
    let _ = writeln!(
        m,
        "- load: {} long streams ({} tokens, {} ms apart: ~{:.0} s each, reconnecting), {}/s short requests, 1 hostile request every {:.0} s; fleet `m1` = m1-a..d, `m2` = m2-e, m2-f (+ m2-g added/removed)",
        opts.streams,
        opts.stream_tokens,
        opts.itl_ms,
        opts.stream_length().as_secs_f64(),
        opts.short_rate,
        opts.hostile_every.as_secs_f64()
    );
    let _ = writeln!(
        m,
        "- load average: start {}, end {}",
        c.load_average.0, c.load_average.1
    );
    let _ = writeln!(
        m,
        "- CPU over the run: gateway processes {:.0} s, mock processes {:.0} s, driver (clients) {:.0} s, for {:.0} s of load ({:.2} cores in all)",
        c.cpu.2,
        c.cpu.1,
        c.cpu.0,
        c.load_end_ms / 1000.0,
        (c.cpu.0 + c.cpu.1 + c.cpu.2) / (c.load_end_ms / 1000.0)
    );
    let _ = writeln!(
        m,
        "- schedule carried out: {} config saves + SIGHUP ({} seen in force within 3 s), {} upgrades ({} completed: new pid and old one exited), {} kills, {} fault windows; `/status` unanswered {} times",
        r.reloads_written,
        r.reloads_applied,
        r.upgrades,
        r.upgrades_completed,
        ex.outages.len(),
        ex.faults.len(),
        r.admin_failures
    );
    let _ = writeln!(m, "\n| target | measured | verdict |\n|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(m, "| {} | {} | {} |", t.name, t.measured, yes(t.met));
    }

    let _ = writeln!(m, "\n#### Requests\n\n| kind | sent | ok | non-2xx | no response | refused | cut | invalid | hostile wrong |\n|---|---|---|---|---|---|---|---|---|");
    for kind in [Kind::Stream, Kind::Short, Kind::Hostile] {
        let of: Vec<&Record> = c.records.iter().filter(|x| x.kind == kind).collect();
        let n = |o: Outcome| of.iter().filter(|x| x.outcome == o).count();
        let _ = writeln!(
            m,
            "| {kind:?} | {} | {} | {} | {} | {} | {} | {} | {} |",
            of.len(),
            n(Outcome::Ok),
            n(Outcome::Status),
            n(Outcome::Transport),
            n(Outcome::Refused),
            n(Outcome::Cut),
            n(Outcome::Invalid),
            n(Outcome::HostileWrong)
        );
    }

    // Failures by cause.
    let mut causes: BTreeMap<(String, String, String, String), usize> = BTreeMap::new();
    for f in &r.failures {
        let what = match f.outcome {
            Outcome::Status => format!(
                "{} {}",
                f.status.unwrap_or(0),
                f.error_code.clone().unwrap_or_default()
            ),
            Outcome::Transport => "no response".into(),
            o => format!("{o:?}").to_lowercase(),
        };
        let key = (
            format!("{:?}", f.kind).to_lowercase(),
            what,
            f.backend.clone().unwrap_or_else(|| "-".into()),
            f.explained_by
                .as_deref()
                .map(|e| {
                    e.split(" at ")
                        .next()
                        .unwrap_or(e)
                        .split(" from ")
                        .next()
                        .unwrap_or(e)
                        .to_owned()
                })
                .unwrap_or_else(|| "**unexplained**".into()),
        );
        *causes.entry(key).or_default() += 1;
    }
    let _ = writeln!(m, "\n#### Failures by cause\n\n| kind | failure | backend | explained by | count |\n|---|---|---|---|---|");
    if causes.is_empty() {
        let _ = writeln!(m, "| – | none | | | 0 |");
    }
    for ((kind, what, backend, by), n) in &causes {
        let _ = writeln!(m, "| {kind} | {what} | {backend} | {by} | {n} |");
    }
    let unexplained: Vec<&Failure> = r
        .failures
        .iter()
        .filter(|f| f.explained_by.is_none())
        .collect();
    if !unexplained.is_empty() {
        let _ = writeln!(
            m,
            "\nUnexplained failures ({}; first 20):\n",
            unexplained.len()
        );
        for f in unexplained.iter().take(20) {
            let _ = writeln!(
                m,
                "- {:.2}–{:.2} s {} {:?} {:?} status {:?} backend {:?}: {}",
                f.start_ms / 1000.0,
                f.end_ms / 1000.0,
                f.id,
                f.kind,
                f.outcome,
                f.status,
                f.backend,
                f.detail
            );
        }
    }
    let _ = writeln!(
        m,
        "\nPools: {} wrong-pool answers, {} answers by a backend not in the config in force, {} new requests served by the drained backend ({DRAINED}); {} spliced (double) answers; {} soak request ids in the access log twice.",
        r.wrong_pool.len(),
        r.not_in_config.len(),
        r.drained_served.len(),
        r.double_answers.len(),
        r.logged_twice.len()
    );
    for line in r
        .wrong_pool
        .iter()
        .chain(&r.not_in_config)
        .chain(&r.drained_served)
        .chain(&r.double_answers)
        .take(10)
    {
        let _ = writeln!(m, "- {line}");
    }

    // Hostile cases.
    let mut cases: BTreeMap<&str, (usize, usize, BTreeMap<u16, usize>)> = BTreeMap::new();
    for rec in c.records.iter().filter(|x| x.kind == Kind::Hostile) {
        let e = cases.entry(rec.case.unwrap_or("?")).or_default();
        e.0 += 1;
        if rec.outcome == Outcome::Ok {
            e.1 += 1;
        }
        *e.2.entry(rec.status.unwrap_or(0)).or_default() += 1;
    }
    let _ = writeln!(m, "\n#### Hostile requests\n\n| case | sent | as expected | statuses (0 = closed, no response) |\n|---|---|---|---|");
    for (case, (n, ok, statuses)) in &cases {
        let st: Vec<String> = statuses.iter().map(|(s, k)| format!("{s} ×{k}")).collect();
        let _ = writeln!(m, "| {case} | {n} | {ok} | {} |", st.join(", "));
    }

    let _ = writeln!(m, "\n#### Short requests: latency per minute (ms)\n\n| minute | requests ok | p50 | p99 | max | p99, one attempt |\n|---|---|---|---|---|---|");
    for x in &r.minutes {
        let _ = writeln!(
            m,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            x.minute, x.count, x.p50_ms, x.p99_ms, x.max_ms, x.p99_first_attempt_ms
        );
    }

    // RSS and fds over time: one row per 30 s (the serving process), plus the totals.
    let _ = writeln!(m, "\n#### Gateway RSS and open descriptors (serving process; all processes in brackets)\n\n| t (s) | pid | RSS MiB | fds | processes |\n|---|---|---|---|---|");
    let step = if opts.mode == Mode::Full {
        30_000.0
    } else {
        5_000.0
    };
    let mut next = 0.0;
    let samples = &c.watched.samples;
    for (i, s) in samples.iter().enumerate() {
        if !s.current || s.t_ms < next {
            continue;
        }
        next = s.t_ms + step;
        let same_time: Vec<&Sample> = samples[i.saturating_sub(4)..(i + 5).min(samples.len())]
            .iter()
            .filter(|o| (o.t_ms - s.t_ms).abs() < 500.0)
            .collect();
        let total_rss: u64 = same_time.iter().map(|o| o.rss_kib).sum();
        let total_fds: u64 = same_time.iter().map(|o| o.fds).sum();
        let _ = writeln!(
            m,
            "| {:.0} | {} | {:.1} ({:.1}) | {} ({}) | {} |",
            s.t_ms / 1000.0,
            s.pid,
            s.rss_kib as f64 / 1024.0,
            total_rss as f64 / 1024.0,
            s.fds,
            total_fds,
            same_time.len()
        );
    }
    let idle = |x: Option<(u64, u64)>| match x {
        Some((rss, fds)) => format!("{:.1} MiB, {fds} fds", rss as f64 / 1024.0),
        None => "n/a".into(),
    };
    let _ = writeln!(
        m,
        "\nIdle (no load): before {}; after the load, requests done and upstream keep-alives expired: {}.",
        idle(c.idle_before),
        idle(c.idle_after)
    );

    let _ = writeln!(m, "\n#### Upgrades\n\n| SIGUSR2 at (s) | old pid | new pid | hand-off after (ms) | old process exited after hand-off (s) |\n|---|---|---|---|---|");
    for u in &ex.upgrades {
        let _ = writeln!(
            m,
            "| {:.1} | {} | {} | {} | {} |",
            u.signal_ms / 1000.0,
            u.old_pid,
            u.new_pid.map_or("–".into(), |p| p.to_string()),
            u.handoff_ms
                .map_or("–".into(), |h| format!("{:.0}", h - u.signal_ms)),
            match (u.handoff_ms, u.old_exit_ms) {
                (Some(h), Some(e)) => format!("{:.1}", (e - h) / 1000.0),
                _ => "–".into(),
            }
        );
    }

    let _ = writeln!(m, "\n#### Fault windows of {}\n\n| fault | from (s) | to (s) | POSTs the raw responder answered |\n|---|---|---|---|", super::plan::FAULTY);
    for w in ex.faults.iter().take(12) {
        let _ = writeln!(
            m,
            "| {} | {:.1} | {:.1} | {} |",
            w.fault,
            w.from_ms / 1000.0,
            w.until_ms / 1000.0,
            if w.replaces_process {
                w.raw_posts.to_string()
            } else {
                "–".into()
            }
        );
    }
    if ex.faults.len() > 12 {
        let _ = writeln!(m, "| … {} more | | | |", ex.faults.len() - 12);
    }

    // The gateway's own view.
    let log = read_log(&c.gateway_log);
    let mut cut_causes: BTreeMap<String, usize> = BTreeMap::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut retried = 0;
    for a in log.access.values().flatten() {
        if let Some(cut) = &a.cut {
            *cut_causes
                .entry(format!("{cut} ({})", a.backend.as_deref().unwrap_or("-")))
                .or_default() += 1;
        }
        if let Some(e) = &a.error {
            *errors.entry(format!("{} {e}", a.status)).or_default() += 1;
        }
        if a.attempts > 1 {
            retried += 1;
        }
    }
    let _ = writeln!(m, "\n#### The gateway's view\n\nAccess log: {} lines, {} requests retried (attempts > 1, all before a byte reached the client by the retry contract).", log.access_lines, retried);
    let _ = writeln!(
        m,
        "- cut responses by cause (backend): {}",
        join_counts(&cut_causes)
    );
    let _ = writeln!(m, "- gateway error answers: {}", join_counts(&errors));
    let mut metrics: BTreeMap<String, f64> = BTreeMap::new();
    for (_, text) in c.watched.metrics.values() {
        for (name, label, values) in [
            (
                "modelgate_config_reloads_total",
                "result",
                &["ok", "error"][..],
            ),
            (
                "modelgate_streams_cut_total",
                "cause",
                &[
                    "client_gone",
                    "backend_error",
                    "idle_timeout",
                    "request_timeout",
                ][..],
            ),
            (
                "modelgate_upstream_retries_total",
                "cause",
                &["connection_failure", "timeout", "http_5xx", "http_429"][..],
            ),
        ] {
            for v in values {
                *metrics
                    .entry(format!("{name}{{{label}=\"{v}\"}}"))
                    .or_default() += metric_sum(text, name, &[(label, v)]);
            }
        }
    }
    let _ = writeln!(m, "- metrics (last scrape of each process, summed; a process's last seconds after its hand-off are not scraped): {}", metrics.iter().filter(|(_, v)| **v > 0.0).map(|(k, v)| format!("`{k}` {v}")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(
        m,
        "- panics: {}; ERROR lines: {}",
        r.panics.len(),
        r.error_lines.len()
    );
    for line in r.panics.iter().chain(&r.error_lines).take(5) {
        let _ = writeln!(m, "  - `{}`", line.chars().take(300).collect::<String>());
    }
    let mut warns: Vec<(&String, &usize)> = log.warns.iter().collect();
    warns.sort_by(|a, b| b.1.cmp(a.1));
    let _ = writeln!(
        m,
        "- WARN lines by message: {}",
        warns
            .iter()
            .take(8)
            .map(|(k, v)| format!("\"{k}\" ×{v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    m
}

fn join_counts(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, v)| format!("{k} ×{v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
