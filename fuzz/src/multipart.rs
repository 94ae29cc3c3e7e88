//! The `scan_multipart` target: [`MultipartModelScanner`] with a fixed boundary, fed arbitrary
//! bytes in arbitrary chunkings; plus [`boundary`] on the same bytes as a Content-Type value.
//!
//! Test-harness code. Checked: no panic; the outcome (result, model, span, bytes seen) is the
//! same for one-shot, fuzzer-chosen and byte-at-a-time feeding; statuses are monotonic (`Found`
//! stays, an error is sticky, after `Found` only `DuplicateModel`); the span is inside the body,
//! covers bytes already fed when `Found` is first reported, and holds exactly the model's bytes;
//! and a boundary that [`boundary`] returns is one the scanner accepts (1 to 70 printable ASCII
//! bytes, not ending in a space).

use std::ops::Range;

use modelgate::scan::multipart::{boundary, MultipartModelScanner, MAX_BOUNDARY_BYTES};
use modelgate::scan::{ScanError, ScanStatus, MAX_MODEL_BYTES};

use crate::chunks::{bytewise, Input};

/// The boundary every `scan_multipart` body is scanned with (seeds and dictionary use it).
pub const BOUNDARY: &[u8] = b"XyZzy-7MA4YWxkTrZu0gW";

/// Byte-at-a-time feeding is checked for bodies up to this size.
const BYTEWISE_MAX: usize = 4096;

/// Everything observable after feeding a whole body and calling `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    result: Result<String, ScanError>,
    model: Option<String>,
    span: Option<Range<usize>>,
    seen: usize,
}

/// Runs the `scan_multipart` target on one fuzz input (see [`crate::chunks`] for its layout).
pub fn scan_multipart(data: &[u8]) {
    let input = Input::parse(data);
    let body = input.body;
    let whole = run(body, &[body]);
    assert_eq!(
        run(body, &input.chunks()),
        whole,
        "chunking changed the outcome"
    );
    if let Some(bytes) = bytewise(body, BYTEWISE_MAX) {
        assert_eq!(
            run(body, &bytes),
            whole,
            "byte-at-a-time feeding changed the outcome"
        );
    }
    assert_eq!(
        whole.span.is_some(),
        whole.model.is_some(),
        "span iff model"
    );
    if let (Some(span), Some(model)) = (&whole.span, &whole.model) {
        let raw = body
            .get(span.clone())
            .unwrap_or_else(|| panic!("span {span:?} outside a body of {} bytes", body.len()));
        assert_eq!(
            raw,
            model.as_bytes(),
            "span holds different bytes than the model"
        );
    }
    check_boundary(body);
}

/// Feeds `chunks` (which concatenate to `body`), checking the per-call invariants.
fn run(body: &[u8], chunks: &[&[u8]]) -> Outcome {
    let mut s = MultipartModelScanner::new(BOUNDARY);
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
            let span = s.model_span().expect("Found implies a span");
            assert!(
                span.end <= s.bytes_seen(),
                "span {span:?} past bytes fed {}",
                s.bytes_seen()
            );
        }
        if status.is_ok() {
            assert_eq!(status == Ok(ScanStatus::Found), s.model().is_some());
        }
        last = Some(status);
    }
    assert_eq!(s.bytes_seen(), body.len());
    let model = s.model().map(str::to_owned);
    let span = s.model_span();
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
    if let Err(ScanError::InvalidMultipart { offset }) = &result {
        assert!(*offset <= body.len(), "error offset {offset} past the body");
    }
    if let Some(m) = &model {
        assert!(m.len() <= MAX_MODEL_BYTES);
    }
    Outcome {
        result,
        model,
        span,
        seen: s.bytes_seen(),
    }
}

/// `boundary` on arbitrary bytes: no panic, and what it returns is a usable boundary.
fn check_boundary(bytes: &[u8]) {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    for candidate in [bytes, line] {
        if let Some(b) = boundary(candidate) {
            assert!(
                (1..=MAX_BOUNDARY_BYTES).contains(&b.len()),
                "boundary length {}",
                b.len()
            );
            assert!(
                b.iter().all(|&c| (0x20..0x7f).contains(&c)),
                "unprintable boundary byte"
            );
            assert_ne!(b.last(), Some(&b' '), "boundary ends in a space");
            let mut s = MultipartModelScanner::new(&b);
            assert_ne!(
                s.feed(b""),
                Err(ScanError::InvalidMultipart { offset: 0 }),
                "the scanner refuses a boundary that boundary() returned"
            );
        }
    }
}
