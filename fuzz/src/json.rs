//! The `scan_json` target: [`ModelScanner`] with captures on, fed arbitrary bytes in arbitrary
//! chunkings.
//!
//! Test-harness code. Each invariant is an `assert!`, so a violation is a panic that libFuzzer
//! (or `run_stable`) reports with the input. Checked: no panic; the outcome (result, model,
//! span, captures, bytes seen) is the same for one-shot, fuzzer-chosen and byte-at-a-time
//! feeding; statuses are monotonic (`Found` stays, an error is sticky, after `Found` only
//! `DuplicateModel`); the span is inside the body, covers bytes already fed when `Found` is
//! first reported, and is a JSON string that decodes to `model()`; captures respect their caps;
//! and whenever `serde_json` accepts the body, the result is what a JSON parser says.

use std::fmt;
use std::ops::Range;

use modelgate::scan::{
    Capture, ModelScanner, ScanError, ScanStatus, MAX_MODEL_BYTES, MAX_USER_BYTES,
};
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

use crate::chunks::{bytewise, Input};

/// The prompt prefix captured, as the brief for the target asks (64 bytes).
pub const PROMPT_PREFIX: usize = 64;

/// Byte-at-a-time feeding is checked for bodies up to this size (each feed is a call).
const BYTEWISE_MAX: usize = 4096;

/// Everything observable after feeding a whole body and calling `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    result: Result<String, ScanError>,
    model: Option<String>,
    span: Option<Range<usize>>,
    user: Option<String>,
    prompt: Option<Vec<u8>>,
    captures_done_before_finish: bool,
    seen: usize,
}

/// Runs the `scan_json` target on one fuzz input (see [`crate::chunks`] for its layout).
pub fn scan_json(data: &[u8]) {
    let input = Input::parse(data);
    let body = input.body;
    let whole = run(body, &[body]);
    let chunked = run(body, &input.chunks());
    assert_eq!(chunked, whole, "chunking changed the outcome");
    if let Some(bytes) = bytewise(body, BYTEWISE_MAX) {
        assert_eq!(
            run(body, &bytes),
            whole,
            "byte-at-a-time feeding changed the outcome"
        );
    }
    check_span(body, &whole);
    check_against_serde(body, &whole.result);
}

fn scanner() -> ModelScanner {
    ModelScanner::with_capture(Capture {
        user: true,
        prompt_prefix: PROMPT_PREFIX,
        prompt_span: 0,
        members: false,
    })
}

/// Feeds `chunks` (which concatenate to `body`), checking the per-call invariants.
fn run(body: &[u8], chunks: &[&[u8]]) -> Outcome {
    let mut s = scanner();
    let mut last: Option<Result<ScanStatus, ScanError>> = None;
    for chunk in chunks {
        let status = s.feed(chunk);
        match (&last, &status) {
            (Some(Err(before)), now) => {
                assert_eq!(now, &Err(before.clone()), "an error must be sticky");
            }
            (Some(Ok(ScanStatus::Found)), Ok(now)) => {
                assert_eq!(*now, ScanStatus::Found, "Found must stay Found");
            }
            (Some(Ok(ScanStatus::Found)), Err(e)) => {
                assert_eq!(
                    *e,
                    ScanError::DuplicateModel,
                    "after Found only a duplicate is an error"
                );
            }
            _ => {}
        }
        if status == Ok(ScanStatus::Found) && last != Some(Ok(ScanStatus::Found)) {
            // The proxy rewrites the span in the bytes it holds: they must already be there.
            let span = s.model_span().expect("Found implies a span");
            assert!(
                span.end <= s.bytes_seen(),
                "span {span:?} past bytes fed {}",
                s.bytes_seen()
            );
            assert!(s.model().is_some(), "Found implies a model");
        }
        if status.is_ok() {
            assert_eq!(status == Ok(ScanStatus::Found), s.model().is_some());
        }
        last = Some(status);
    }
    assert_eq!(s.bytes_seen(), body.len());
    let captures_done_before_finish = s.captures_done();
    let model = s.model().map(str::to_owned);
    let span = s.model_span();
    let user = s.user().map(str::to_owned);
    let prompt = s.prompt_prefix().map(<[u8]>::to_vec);
    let result = s.finish().map(str::to_owned);
    match (&last, &result) {
        (Some(Err(e)), r) => assert_eq!(r, &Err(e.clone()), "finish must repeat the feed error"),
        (Some(Ok(ScanStatus::Found)), r) => {
            assert_eq!(
                r.as_deref().ok(),
                model.as_deref(),
                "finish after Found returns the model"
            );
        }
        _ => {}
    }
    assert_eq!(s.finish().map(str::to_owned), result, "finish is sticky");
    assert!(s.captures_done(), "captures are done after finish");
    if let Err(ScanError::InvalidJson { offset }) = &result {
        assert!(*offset <= body.len(), "error offset {offset} past the body");
    }
    if let Some(m) = &model {
        assert!(m.len() <= MAX_MODEL_BYTES);
    }
    if let Some(u) = &user {
        assert!(u.len() <= MAX_USER_BYTES);
    }
    if let Some(p) = &prompt {
        assert!(p.len() <= PROMPT_PREFIX);
    }
    Outcome {
        result,
        model,
        span,
        user,
        prompt,
        captures_done_before_finish,
        seen: s.bytes_seen(),
    }
}

/// The span holds the raw model value, quotes included, and decodes to `model()`.
fn check_span(body: &[u8], outcome: &Outcome) {
    assert_eq!(
        outcome.span.is_some(),
        outcome.model.is_some(),
        "span iff model"
    );
    let (Some(span), Some(model)) = (&outcome.span, &outcome.model) else {
        return;
    };
    let raw = body
        .get(span.clone())
        .unwrap_or_else(|| panic!("span {span:?} outside a body of {} bytes", body.len()));
    assert!(raw.len() >= 2 && raw.first() == Some(&b'"') && raw.last() == Some(&b'"'));
    let decoded: String = serde_json::from_slice(raw)
        .unwrap_or_else(|e| panic!("span {span:?} is not a JSON string: {e}"));
    assert_eq!(&decoded, model, "span decodes to a different model");
}

/// When `serde_json` parses the body, the scanner must agree with it (and must refuse
/// duplicate `model` keys, on which parsers disagree).
fn check_against_serde(body: &[u8], result: &Result<String, ScanError>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if let Ok(ModelKeys(count)) = serde_json::from_slice::<ModelKeys>(body) {
        if count > 1 {
            assert!(result.is_err(), "duplicate model accepted: {result:?}");
            return;
        }
    }
    assert_eq!(result, &oracle(&value), "disagrees with serde_json");
}

/// What a JSON parser says the routing outcome is.
fn oracle(value: &Value) -> Result<String, ScanError> {
    let Value::Object(members) = value else {
        return Err(ScanError::NotAnObject);
    };
    match members.get("model") {
        Some(Value::String(m)) if m.len() > MAX_MODEL_BYTES => Err(ScanError::ModelTooLong),
        Some(Value::String(m)) => Ok(m.clone()),
        Some(_) => Err(ScanError::ModelNotString),
        None => Err(ScanError::MissingModel),
    }
}

/// Counts top-level `model` keys (`serde_json::Value` silently keeps the last duplicate).
struct ModelKeys(usize);

impl<'de> Deserialize<'de> for ModelKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> Visitor<'de> for Count {
            type Value = ModelKeys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ModelKeys, A::Error> {
                let mut count = 0;
                while let Some(key) = map.next_key::<String>()? {
                    count += usize::from(key == "model");
                    map.next_value::<IgnoredAny>()?;
                }
                Ok(ModelKeys(count))
            }
        }
        deserializer.deserialize_map(Count)
    }
}
