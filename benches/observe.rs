//! What do metrics and the access log cost a request?
//!
//! Builds a snapshot from a small config (one model, two backends on IP URLs, both marked
//! healthy) and the stage records the pipeline leaves after a streamed 200 (pool, backend index,
//! endpoint, first byte, usage tail fed with a final SSE chunk, request id, trace context), then
//! measures with criterion:
//!
//! - `record_access_log_on`: `observe::record` with `log.access_log: true`: every metric plus
//!   one JSON line queued to the non-blocking writer (whose thread writes it to `/dev/null`).
//! - `record_access_log_off`: the same with `log.access_log: false` (metrics only).
//! - `access_line_serialize`: only the `serde_json` encoding of an `AccessRecord`;
//!   `access_log_write`: `logging::access` (encode + queue one line); `now_rfc3339`: the
//!   line's timestamp. All three are parts of the first.
//! - `metrics_pre_resolved`: the handle increments `record` does for this request, alone
//!   (requests counter, duration and TTFB histograms, prompt and completion token counters).
//! - `metrics_by_label_lookup`: the same five updates through `with_label_values` on the
//!   families, i.e. what they would cost without pre-resolved handles.
//! - `counter_pre_resolved` / `counter_by_label_lookup`: one `requests_total` increment each
//!   way.
//! - `tail_new_feed_2k_usage`: a fresh usage `Tail`, fed a 2 KiB chunk ending in the usage
//!   chunk and `data: [DONE]`, then parsed (once per 200 response).
//! - `tail_full_feed_150b`: feeding one 150-byte token chunk into a full tail (once per
//!   streamed chunk); `tail_usage_only`: finding and parsing `usage` in a full tail (once per
//!   200 response, inside `record`).
//!
//! The access log goes to stdout (fd 1), and so does criterion's own report. So that the log
//! neither floods the terminal nor needs a redirect, `main` points fd 1 at `/dev/null` before
//! anything runs and prints a summary (criterion's mean with its 95% interval, and median, read
//! back from its `estimates.json`) to the original stdout at the end. Criterion's full reports
//! are in `target/criterion/observe/`.
//!
//! Run: `cargo bench --bench observe` (about 45 s after the build; add a filter such as
//! `-- tail` to run a subset).

use std::fs::File;
use std::hint::black_box;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use modelgate::config;
use modelgate::logging::{self, AccessRecord};
use modelgate::metrics::usage::Tail;
use modelgate::metrics::{self, METRICS};
use modelgate::proxy::forward::Exchanged;
use modelgate::proxy::head::Head;
use modelgate::proxy::observe::{self, RequestInfo};
use modelgate::proxy::observe::{Ending, Finished, Routed};
use modelgate::state::{Publisher, Snapshot};
use modelgate::telemetry::TraceContext;

/// Criterion group name (and directory under the output directory).
const GROUP: &str = "observe";
/// Every benchmark in run order, for the summary.
const BENCHES: &[&str] = &[
    "record_access_log_on",
    "record_access_log_off",
    "access_line_serialize",
    "access_log_write",
    "now_rfc3339",
    "metrics_pre_resolved",
    "metrics_by_label_lookup",
    "counter_pre_resolved",
    "counter_by_label_lookup",
    "tail_new_feed_2k_usage",
    "tail_full_feed_150b",
    "tail_usage_only",
];
/// Request path the ctx stands for.
const PATH: &str = "/v1/chat/completions";
/// The request took this long in all; its first byte came after `TTFB`.
const DURATION: Duration = Duration::from_millis(840);
const TTFB: Duration = Duration::from_millis(35);

fn config_yaml(access_log: bool) -> String {
    format!(
        r#"listen: "127.0.0.1:19080"
admin: {{listen: "127.0.0.1:19081"}}
models:
  m:
    backends:
      - {{name: b0, url: "http://127.0.0.1:19101"}}
      - {{name: b1, url: "http://127.0.0.1:19102"}}
log: {{level: warn, format: json, access_log: {access_log}}}
"#
    )
}

fn control(access_log: bool) -> Arc<Snapshot> {
    let config = config::parse(config_yaml(access_log).as_bytes()).expect("bench config is valid");
    let snapshot = Publisher::new(&config, PathBuf::from("bench.yaml")).snapshot();
    for pool in &snapshot.pools {
        for b in &pool.backends {
            b.set_health(true);
        }
    }
    snapshot
}

/// One SSE token chunk as vLLM sends it (about 150 bytes).
fn token_chunk(i: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-9f1c2b7e4a5d4c0e\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" tok{i:03}\"}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n"
    )
}

/// A 2 KiB read from the end of a stream asked for `include_usage`: token chunks, the
/// finishing chunk, the usage chunk and `data: [DONE]`.
fn final_read_2k() -> Vec<u8> {
    let end = "data: {\"id\":\"chatcmpl-9f1c2b7e4a5d4c0e\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"},\"logprobs\":null,\"finish_reason\":\"stop\",\"stop_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-9f1c2b7e4a5d4c0e\",\"object\":\"chat.completion.chunk\",\"created\":1764000000,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":412,\"total_tokens\":668,\"completion_tokens\":256,\"prompt_tokens_details\":null}}\n\n\
data: [DONE]\n\n";
    // A read starts anywhere: take the end of a run of token chunks, then the final events.
    let tokens: String = (0..30).map(token_chunk).collect();
    let keep = 2048 - end.len();
    let mut out = tokens.as_bytes()[tokens.len() - keep..].to_vec();
    out.extend_from_slice(end.as_bytes());
    out
}

/// A request's stage records as the pipeline leaves them after streaming a 200 from backend 0.
struct Request {
    head: Head,
    routed: Routed,
    out: Exchanged,
    access_log: bool,
}

impl Request {
    fn finished(&self) -> Finished<'_> {
        Finished {
            head: &self.head,
            routed: &self.routed,
            out: &self.out,
            ending: Ending::default(),
            access_log: self.access_log,
        }
    }
}

fn request_ctx(snapshot: &Arc<Snapshot>) -> Request {
    let pool = Arc::clone(&snapshot.pools[0]);
    let started = Instant::now() - DURATION;
    let mut tail = Box::<Tail>::default();
    tail.feed(&final_read_2k());
    Request {
        head: Head {
            started,
            started_at: std::time::SystemTime::now() - DURATION,
            request_id: "5c0f1d6e2b8a4f3e9d7c6b5a4f3e2d1c".to_string(),
            trace: TraceContext::from_headers(None, None),
            endpoint: metrics::endpoint_index(PATH),
        },
        routed: Routed {
            model: Some("m".to_string()),
            pool: Some(pool),
            ..Routed::default()
        },
        out: Exchanged {
            attempts: 1,
            backend: Some(0),
            status: 200,
            response_started: true,
            stream: true,
            first_byte: Some(started + TTFB),
            bytes_in: 212,
            bytes_out: 41_377,
            tail: Some(tail),
            ..Exchanged::default()
        },
        access_log: snapshot.access_log,
    }
}

fn benches(c: &mut Criterion, client: &SocketAddr) {
    let info = RequestInfo {
        method: "POST",
        path: PATH,
        client: Some(client),
    };
    let on = control(true);
    let off = control(false);
    let ctx_on = request_ctx(&on);
    let ctx_off = request_ctx(&off);
    assert!(
        ctx_on.out.tail.as_deref().and_then(Tail::usage).is_some(),
        "the bench tail must carry usage"
    );

    let mut g = c.benchmark_group(GROUP);
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    g.bench_function("record_access_log_on", |b| {
        b.iter(|| observe::record(black_box(&ctx_on.finished()), None, black_box(info)))
    });
    g.bench_function("record_access_log_off", |b| {
        b.iter(|| observe::record(black_box(&ctx_off.finished()), None, black_box(info)))
    });

    let usage = ctx_on.out.tail.as_deref().and_then(Tail::usage);
    let record = AccessRecord {
        ts: "2026-11-26T10:00:00.000Z".to_string(),
        request_id: &ctx_on.head.request_id,
        client: Some(client.to_string()),
        method: "POST",
        route: PATH,
        model: Some("m"),
        backend: Some("b0"),
        policy: Some("round_robin"),
        attempts: 1,
        status: 200,
        bytes_in: ctx_on.out.bytes_in,
        bytes_out: ctx_on.out.bytes_out,
        ttfb_ms: Some(35.012),
        duration_ms: 840.113,
        stream: true,
        cut: None,
        error: None,
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cached_tokens: usage.and_then(|u| u.cached_tokens),
        pick: None,
        pick_cached_tokens: None,
        prefill_backend: None,
        prefill_ms: None,
        prefill_attempts: None,
        trace_id: Some(ctx_on.head.trace.trace_id_hex()),
        tenant: None,
    };
    g.bench_function("access_line_serialize", |b| {
        b.iter(|| serde_json::to_vec(black_box(&record)).unwrap_or_default())
    });
    g.bench_function("access_log_write", |b| {
        b.iter(|| logging::access(black_box(&record)))
    });
    g.bench_function("now_rfc3339", |b| b.iter(modelgate::logging::now_rfc3339));

    let pool = ctx_on
        .routed
        .pool
        .as_deref()
        .expect("the request has a pool");
    let backend = &pool.backends[0].metrics;
    let endpoint = ctx_on.head.endpoint;
    let class = metrics::status_class(200);
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    let (duration, ttfb) = (DURATION.as_secs_f64(), TTFB.as_secs_f64());
    g.bench_function("metrics_pre_resolved", |b| {
        b.iter(|| {
            backend.request(black_box(endpoint), black_box(class));
            backend.duration.observe(black_box(duration));
            backend.ttfb.observe(black_box(ttfb));
            pool.metrics.prompt_tokens.inc_by(black_box(prompt));
            pool.metrics.completion_tokens.inc_by(black_box(completion));
        })
    });
    // The same series as above, found by label values each time (hash of the values, read
    // lock on the family's map).
    let model = pool.name.as_str();
    let backend_name = pool.backends[0].config.name.as_str();
    let endpoint_label = metrics::endpoint_label(endpoint);
    let class_label = metrics::STATUS_CLASSES[class];
    let m = &*METRICS;
    g.bench_function("metrics_by_label_lookup", |b| {
        b.iter(|| {
            let mb = [black_box(model), black_box(backend_name)];
            m.requests
                .with_label_values(&[mb[0], mb[1], endpoint_label, class_label])
                .inc();
            m.duration.with_label_values(&mb).observe(duration);
            m.ttfb.with_label_values(&mb).observe(ttfb);
            m.prompt_tokens.with_label_values(&[mb[0]]).inc_by(prompt);
            m.completion_tokens
                .with_label_values(&[mb[0]])
                .inc_by(completion);
        })
    });
    g.bench_function("counter_pre_resolved", |b| {
        b.iter(|| backend.request(black_box(endpoint), black_box(class)))
    });
    g.bench_function("counter_by_label_lookup", |b| {
        b.iter(|| {
            m.requests
                .with_label_values(&[
                    black_box(model),
                    black_box(backend_name),
                    endpoint_label,
                    class_label,
                ])
                .inc()
        })
    });

    let read = final_read_2k();
    g.bench_function("tail_new_feed_2k_usage", |b| {
        b.iter(|| {
            let mut tail = Box::<Tail>::default();
            tail.feed(black_box(&read));
            tail.usage()
        })
    });
    let chunk = token_chunk(7).into_bytes();
    let mut full = Tail::default();
    for i in 0..40 {
        full.feed(token_chunk(i).as_bytes());
    }
    g.bench_function("tail_full_feed_150b", |b| {
        b.iter(|| full.feed(black_box(&chunk)))
    });
    let fed = ctx_on.out.tail.as_deref().expect("the request has a tail");
    g.bench_function("tail_usage_only", |b| b.iter(|| black_box(fed).usage()));
    g.finish();
}

/// Where criterion writes (and the summary reads): `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` in the package.
fn output_directory() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// `(mean, low, high, median)` in ns of one benchmark, if it ran since `since`.
fn estimates(dir: &Path, name: &str, since: SystemTime) -> Option<(f64, f64, f64, f64)> {
    let path = dir
        .join(GROUP)
        .join(name)
        .join("new")
        .join("estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None; // left from an earlier run (filtered out this time)
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let num = |stat: &str, key: &[&str]| {
        key.iter()
            .try_fold(&json[stat], |v, k| v.get(*k))
            .and_then(serde_json::Value::as_f64)
    };
    Some((
        num("mean", &["point_estimate"])?,
        num("mean", &["confidence_interval", "lower_bound"])?,
        num("mean", &["confidence_interval", "upper_bound"])?,
        num("median", &["point_estimate"])?,
    ))
}

fn main() {
    // Send fd 1 (the access log's writer and criterion's report) to /dev/null; keep the real
    // stdout for the summary.
    let _ = std::io::stdout().flush();
    let stdout = nix::unistd::dup(std::io::stdout()).expect("dup stdout");
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .expect("open /dev/null");
    nix::unistd::dup2_stdout(&null).expect("point stdout at /dev/null");
    let mut out = File::from(stdout);

    let settings = config::parse(config_yaml(true).as_bytes())
        .expect("bench config is valid")
        .log;
    logging::init(&settings.level, settings.format);
    logging::start_writer();

    let dir = output_directory();
    // No plots: they take longer than the measurements and nobody reads them here.
    let mut c = Criterion::default()
        .output_directory(&dir)
        .without_plots()
        .configure_from_args();
    let client: SocketAddr = "10.1.2.3:53412".parse().expect("valid address");
    let started = Instant::now();
    let since = SystemTime::now();
    benches(&mut c, &client);
    c.final_summary();
    logging::flush();

    let _ = writeln!(
        out,
        "{GROUP}: criterion estimates per iteration (full reports in {})",
        dir.join(GROUP).display()
    );
    let _ = writeln!(
        out,
        "{:<26} {:>10} {:>23} {:>10}",
        "benchmark", "mean", "95% interval", "median"
    );
    for name in BENCHES {
        match estimates(&dir, name, since) {
            Some((mean, low, high, median)) => {
                let _ = writeln!(
                    out,
                    "{name:<26} {mean:>8.1}ns {:>23} {median:>8.1}ns",
                    format!("[{low:.1}, {high:.1}]")
                );
            }
            None => {
                let _ = writeln!(out, "{name:<26} (not run)");
            }
        }
    }
    let _ = writeln!(out, "took {:.0?}", started.elapsed());
}
