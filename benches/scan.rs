//! Throughput of the incremental model scanner against a full `serde_json` parse, on
//! chat-completions shaped bodies from 200 B to 4 MiB with `"model"` first and last.
//!
//! Benchmarks:
//! - `scanner`: `find_model` over the whole body (the proxy's contract: scan everything so a
//!   duplicate `"model"` is caught);
//! - `scanner_stop_at_found`: 16 KiB chunks, stopping at `Found` (the lower bound when the
//!   duplicate check is not needed);
//! - `serde_json`: `serde_json::from_slice::<Value>` plus the `model` lookup.
//!
//! `scan_image/1MiB`: a vision request whose content is one 1 MiB base64 `data:` URL (a run of
//! string bytes with no escape at all, the other extreme from prose).
//!
//! `scan_capture/1MiB` compares a whole-body scan with captures off and on (`user` plus a
//! 256-byte prompt prefix, as sticky routing uses them) on a 1 MiB chat body with a `user`.
//!
//! Sample counts and times are small so the whole run stays under a minute. Not on any request
//! path; nothing here is asserted.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use modelgate::scan::{find_model, Capture, ModelScanner, ScanStatus};

const SIZES: [(usize, &str); 5] = [
    (200, "200B"),
    (4 << 10, "4KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (4 << 20, "4MiB"),
];

const MODEL: &str = r#""model":"meta-llama/Llama-3.1-8B-Instruct""#;
const PARAMETERS: &str = r#""temperature":0.7,"top_p":0.95,"max_tokens":256,"stream":true"#;

/// Prompt text shaped like real prompts: lines of prose (an escaped newline every ~80 bytes),
/// the odd quoted phrase, tab and non-ASCII word.
fn prompt(len: usize) -> String {
    const LINES: [&str; 4] = [
        r"The quick brown fox jumps over the lazy dog while the model streams its answer.\n",
        r#"She said \"summarise the attached report\" and asked for three bullet points.\n"#,
        "Caf\u{e9} owners wrote a na\u{ef}ve r\u{e9}sum\u{e9} of the quarter, numbers attached.\\n",
        r"Region\tRevenue\tGrowth: north up, south flat, east down, west unchanged so far.\n",
    ];
    let mut text = String::with_capacity(len);
    for line in LINES.iter().cycle() {
        if text.len() + line.len() > len {
            break;
        }
        text.push_str(line);
    }
    while text.len() < len {
        text.push('x');
    }
    text
}

/// A chat-completions request of about `size` bytes.
fn chat_body(size: usize, model_first: bool) -> Vec<u8> {
    let build = |prompt_len: usize| {
        let messages = format!(
            r#""messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"{}"}}]"#,
            prompt(prompt_len)
        );
        if model_first {
            format!("{{{MODEL},{messages},{PARAMETERS}}}")
        } else {
            format!("{{{messages},{PARAMETERS},{MODEL}}}")
        }
    };
    let overhead = build(0).len();
    build(size.saturating_sub(overhead)).into_bytes()
}

/// The comparison: a full `serde_json` parse, then the `model` lookup.
fn serde_json_model(body: &[u8]) -> Option<usize> {
    let value: serde_json::Value = serde_json::from_slice(body).expect("valid JSON");
    value.get("model").and_then(|m| m.as_str()).map(str::len)
}

/// A group with the small sample counts and times that keep the whole run under a minute.
fn quick_group<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(600));
    group
}

fn scan_until_found(body: &[u8]) -> Option<usize> {
    let mut scanner = ModelScanner::new();
    for chunk in body.chunks(16 << 10) {
        if scanner.feed(chunk) == Ok(ScanStatus::Found) {
            return scanner.model().map(str::len);
        }
    }
    None
}

fn bench_scan(c: &mut Criterion) {
    for (size, label) in SIZES {
        let mut group = quick_group(c, &format!("scan/{label}"));
        for (position, model_first) in [("model_first", true), ("model_last", false)] {
            let body = chat_body(size, model_first);
            assert_eq!(
                find_model(&body).as_deref(),
                Ok("meta-llama/Llama-3.1-8B-Instruct"),
                "bench body must be valid"
            );
            group.throughput(Throughput::Bytes(body.len() as u64));
            group.bench_with_input(BenchmarkId::new("scanner", position), &body, |b, body| {
                b.iter(|| find_model(black_box(body)))
            });
            group.bench_with_input(
                BenchmarkId::new("scanner_stop_at_found", position),
                &body,
                |b, body| b.iter(|| scan_until_found(black_box(body))),
            );
            group.bench_with_input(
                BenchmarkId::new("serde_json", position),
                &body,
                |b, body| b.iter(|| serde_json_model(black_box(body))),
            );
        }
        group.finish();
    }
}

/// A chat request with one image as a base64 `data:` URL of about `size` bytes, model last.
fn image_body(size: usize) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let data: String = (0..size)
        .map(|i| char::from(ALPHABET[(i * 7 + i / 64) % 64]))
        .collect();
    format!(
        r#"{{"messages":[{{"role":"user","content":[{{"type":"text","text":"What is in this image?"}},{{"type":"image_url","image_url":{{"url":"data:image/png;base64,{data}"}}}}]}}],{MODEL}}}"#
    )
    .into_bytes()
}

fn bench_image(c: &mut Criterion) {
    let body = image_body(1 << 20);
    assert_eq!(
        find_model(&body).as_deref(),
        Ok("meta-llama/Llama-3.1-8B-Instruct"),
        "bench body must be valid"
    );
    let mut group = quick_group(c, "scan_image/1MiB");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_with_input("scanner", &body, |b, body| {
        b.iter(|| find_model(black_box(body)))
    });
    group.bench_with_input("serde_json", &body, |b, body| {
        b.iter(|| serde_json_model(black_box(body)))
    });
    group.finish();
}

/// Scans all of `body` (as the proxy does, for the duplicate check) with `capture`.
fn scan_with(body: &[u8], capture: Capture) -> (usize, Option<usize>) {
    let mut scanner = ModelScanner::with_capture(capture);
    for chunk in body.chunks(16 << 10) {
        let _ = scanner.feed(chunk);
    }
    let model = scanner.finish().map_or(0, str::len);
    (model, scanner.prompt_prefix().map(<[u8]>::len))
}

fn bench_capture(c: &mut Criterion) {
    let chat = chat_body(1 << 20, true);
    let body = [br#"{"user":"end-user-7f3a","#.as_slice(), &chat[1..]].concat();
    let on = Capture {
        user: true,
        prompt_prefix: 256,
        prompt_span: 0,
        members: false,
    };
    let mut check = ModelScanner::with_capture(on);
    assert!(
        check.feed(&body).is_ok() && check.finish().is_ok(),
        "bench body must be valid"
    );
    assert_eq!(check.user(), Some("end-user-7f3a"));
    assert!(check.prompt_prefix().is_some(), "bench body has a prompt");

    let mut group = quick_group(c, "scan_capture/1MiB");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_with_input("captures_off", &body, |b, body| {
        b.iter(|| scan_with(black_box(body), Capture::default()))
    });
    group.bench_with_input("captures_on", &body, |b, body| {
        b.iter(|| scan_with(black_box(body), on))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    // Plots cost more time than the measurements; the numbers are in the terminal output.
    config = Criterion::default().without_plots();
    targets = bench_scan, bench_image, bench_capture
}
criterion_main!(benches);
