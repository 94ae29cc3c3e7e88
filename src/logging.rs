//! Logging: the event log (tracing, JSON or text) and the access log (one line per request),
//! both written to stdout through one non-blocking writer.
//!
//! The writer hands lines to a background thread over a bounded queue; a slow or blocked
//! stdout (a full pipe, a stalled journald) drops lines instead of stalling the proxy. The
//! level is reloadable (`log.level`, unless `RUST_LOG` is set); the format is fixed at start.
//! Before the process exits, [`flush`] drains the queue.

use std::io::Write as _;
use std::sync::{Mutex, OnceLock};

use serde::Serialize;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

struct Logging {
    format: LogFormat,
    level: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` wins over `log.level`, at start and on reload.
    env_override: bool,
}

static LOGGING: OnceLock<Logging> = OnceLock::new();
static GUARD: Mutex<Option<WorkerGuard>> = Mutex::new(None);
/// The non-blocking writer, once [`start_writer`] ran; until then lines go straight to stdout.
static WRITER: OnceLock<NonBlocking> = OnceLock::new();

/// Where every line goes: the non-blocking writer once started, stdout directly before.
#[derive(Debug, Clone, Copy)]
pub struct Out;

impl std::io::Write for Out {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match WRITER.get() {
            Some(w) => w.clone().write(buf),
            None => std::io::stdout().lock().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match WRITER.get() {
            Some(w) => w.clone().flush(),
            None => std::io::stdout().lock().flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Out {
    type Writer = Out;

    fn make_writer(&'a self) -> Out {
        Out
    }
}

/// Start the background writer thread. Called from a service, i.e. after Pingora daemonised
/// (a thread started before the fork would not exist in the daemon).
pub fn start_writer() {
    if WRITER.get().is_some() {
        return;
    }
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    if WRITER.set(writer).is_ok() {
        if let Ok(mut g) = GUARD.lock() {
            *g = Some(guard);
        }
    }
}

/// Install the global subscriber with `level` (a tracing filter; `RUST_LOG` wins) and `format`.
/// Call once, before the server starts.
pub fn init(level: &str, format: LogFormat) {
    let writer = Out;
    let env = std::env::var("RUST_LOG").ok().filter(|v| !v.is_empty());
    let filter = env
        .as_deref()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(level));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = false;
    let json = (format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(false)
            .with_writer(writer)
    });
    let text = (format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(writer)
    });
    // `try_init` also installs tracing-subscriber's `log` bridge: Pingora's records (it logs
    // through `log`) reach the same subscriber.
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .is_ok();
    if installed {
        let _ = LOGGING.set(Logging {
            format,
            level: handle,
            env_override: env.is_some(),
        });
    }
}

/// Apply a reloaded `log.level` (a changed format needs a restart; the caller warns).
pub fn set_level(level: &str) {
    let Some(l) = LOGGING.get() else {
        return;
    };
    if l.env_override {
        return;
    }
    if let Ok(filter) = EnvFilter::try_new(level) {
        let _ = l.level.reload(filter);
    }
}

/// Write out everything queued. Call right before `std::process::exit`.
pub fn flush() {
    let guard = GUARD.lock().ok().and_then(|mut g| g.take());
    drop(guard); // joins the writer thread after it drained the queue
}

/// One access-log line.
#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub ts: String,
    pub request_id: &'a str,
    pub client: Option<String>,
    pub method: &'a str,
    pub route: &'a str,
    pub model: Option<&'a str>,
    pub backend: Option<&'a str>,
    pub policy: Option<&'static str>,
    pub attempts: u32,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub ttfb_ms: Option<f64>,
    pub duration_ms: f64,
    pub stream: bool,
    pub cut: Option<&'static str>,
    pub error: Option<&'static str>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Prompt tokens the backend served from its prefix cache (`usage`), when reported.
    pub cached_tokens: Option<u64>,
    /// `cache_aware`: why the backend was picked (`hit`, `spill`, `cold`).
    pub pick: Option<&'static str>,
    /// `cache_aware`: prompt tokens the pick was believed to have cached.
    pub pick_cached_tokens: Option<u64>,
    /// Disaggregated: the prefill backend, and the prefill leg's duration and attempts (the
    /// other fields describe the decode leg; `duration_ms` and `ttfb_ms` include the prefill).
    pub prefill_backend: Option<&'a str>,
    pub prefill_ms: Option<f64>,
    pub prefill_attempts: Option<u32>,
    pub trace_id: Option<String>,
    /// The API key's tenant, when authentication is on.
    pub tenant: Option<&'a str>,
}

/// Current time as RFC 3339 with milliseconds, UTC (log lines, `/status`, `/config`).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Queue one access-log line (never blocks; dropped if the queue is full).
pub fn access(record: &AccessRecord<'_>) {
    let Some(l) = LOGGING.get() else {
        return;
    };
    let mut line = match l.format {
        LogFormat::Json => serde_json::to_vec(record).unwrap_or_default(),
        LogFormat::Text => text_line(record).into_bytes(),
    };
    if line.is_empty() {
        return;
    }
    line.push(b'\n');
    let _ = Out.write_all(&line);
}

/// `key=value` pairs in the JSON key order, strings quoted when needed.
fn text_line(r: &AccessRecord<'_>) -> String {
    fn s(v: Option<&str>) -> String {
        match v {
            Some(v) if !v.is_empty() && !v.contains([' ', '"', '=']) => v.to_string(),
            Some(v) => serde_json::Value::from(v).to_string(),
            None => "null".to_string(),
        }
    }
    fn n<T: ToString>(v: Option<T>) -> String {
        v.map_or_else(|| "null".to_string(), |v| v.to_string())
    }
    let fields: [(&str, String); 27] = [
        ("ts", s(Some(&r.ts))),
        ("request_id", s(Some(r.request_id))),
        ("client", s(r.client.as_deref())),
        ("method", s(Some(r.method))),
        ("route", s(Some(r.route))),
        ("model", s(r.model)),
        ("backend", s(r.backend)),
        ("policy", s(r.policy)),
        ("attempts", r.attempts.to_string()),
        ("status", r.status.to_string()),
        ("bytes_in", r.bytes_in.to_string()),
        ("bytes_out", r.bytes_out.to_string()),
        ("ttfb_ms", n(r.ttfb_ms)),
        ("duration_ms", r.duration_ms.to_string()),
        ("stream", r.stream.to_string()),
        ("cut", s(r.cut)),
        ("error", s(r.error)),
        ("prompt_tokens", n(r.prompt_tokens)),
        ("completion_tokens", n(r.completion_tokens)),
        ("cached_tokens", n(r.cached_tokens)),
        ("pick", s(r.pick)),
        ("pick_cached_tokens", n(r.pick_cached_tokens)),
        ("prefill_backend", s(r.prefill_backend)),
        ("prefill_ms", n(r.prefill_ms)),
        ("prefill_attempts", n(r.prefill_attempts)),
        ("trace_id", s(r.trace_id.as_deref())),
        ("tenant", s(r.tenant)),
    ];
    let mut out = String::from("access");
    for (k, v) in fields {
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines_are_key_value() {
        let r = AccessRecord {
            ts: "2026-01-01T00:00:00.000Z".into(),
            request_id: "abc",
            client: Some("127.0.0.1:5000".into()),
            method: "POST",
            route: "/v1/chat/completions",
            model: Some("m"),
            backend: None,
            policy: Some("round_robin"),
            attempts: 1,
            status: 200,
            bytes_in: 10,
            bytes_out: 20,
            ttfb_ms: Some(1.5),
            duration_ms: 2.0,
            stream: false,
            cut: None,
            error: None,
            prompt_tokens: None,
            completion_tokens: None,
            cached_tokens: None,
            pick: None,
            pick_cached_tokens: None,
            prefill_backend: None,
            prefill_ms: None,
            prefill_attempts: None,
            trace_id: None,
            tenant: None,
        };
        let line = text_line(&r);
        assert!(
            line.starts_with("access ts=2026-01-01T00:00:00.000Z request_id=abc"),
            "{line}"
        );
        assert!(
            line.contains(" backend=null") && line.contains(" status=200"),
            "{line}"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        for key in [
            "ts",
            "request_id",
            "client",
            "method",
            "route",
            "model",
            "backend",
            "policy",
            "attempts",
            "status",
            "bytes_in",
            "bytes_out",
            "ttfb_ms",
            "duration_ms",
            "stream",
            "cut",
            "prompt_tokens",
            "completion_tokens",
        ] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
