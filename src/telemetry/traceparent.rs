//! W3C Trace Context (`traceparent` / `tracestate`, <https://www.w3.org/TR/trace-context/>).
//!
//! Runs on the request path, once per request: parses the client's headers into a
//! [`TraceContext`] (continuing a valid trace or starting a new one) and renders the
//! `traceparent` the gateway sends upstream. It must not panic on any input, must not allocate
//! while parsing (only the kept `tracestate` is copied), and does no I/O.

use rand::Rng;

/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
const TRACEPARENT_LEN: usize = 55;
/// The `tracestate` size limit the spec asks vendors to propagate at least; longer values are
/// dropped rather than truncated, because truncating could cut a list member in half.
const MAX_TRACESTATE_LEN: usize = 512;
/// The `sampled` bit of `trace-flags`.
const FLAG_SAMPLED: u8 = 0x01;

/// One request's trace identity: the trace it belongs to, the caller's span (if any) and the
/// gateway's own span.
///
/// Build it with [`TraceContext::from_headers`]; send [`TraceContext::header_value`] upstream
/// as `traceparent` and `tracestate` unchanged, so the backend's spans become children of the
/// gateway's span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span id from a valid incoming `traceparent`; `None` when the gateway
    /// started the trace.
    pub parent_span_id: Option<[u8; 8]>,
    /// The gateway's own span id for this request (random, never all zero).
    pub span_id: [u8; 8],
    /// `trace-flags`: bit 0 is `sampled`. Copied from the caller, or `01` for a new trace.
    pub flags: u8,
    /// The caller's `tracestate`, kept only with a valid `traceparent` and when it is at most
    /// 512 bytes of printable ASCII.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// All-zero placeholder (invalid on the wire) until a request's context is built.
    pub const EMPTY: TraceContext = TraceContext {
        trace_id: [0; 16],
        parent_span_id: None,
        span_id: [0; 8],
        flags: 0,
        tracestate: None,
    };

    /// Continues the caller's trace if `traceparent` is valid, else starts a new one.
    ///
    /// Valid means, per the spec: a 2-hex-digit version other than `ff`; for version `00`
    /// exactly 55 characters; for a later version at least 55, where the first 55 follow the
    /// version-00 layout and the 56th (if any) is `-`. All hex is lowercase; neither the trace
    /// id nor the parent id may be all zero. Leading and trailing spaces/tabs are ignored.
    ///
    /// A continued trace keeps the trace id and flags (for a later version only the `sampled`
    /// bit, since the other bits' meaning is unknown), takes the caller's span as parent and
    /// gets a fresh span id. A new trace gets a random trace id, no parent, a fresh span id and
    /// flags `01` (sampled). `tracestate` is kept only when `traceparent` was valid. Never
    /// panics.
    pub fn from_headers(traceparent: Option<&[u8]>, tracestate: Option<&[u8]>) -> TraceContext {
        let mut rng = rand::thread_rng();
        match traceparent.and_then(parse_traceparent) {
            Some(parsed) => TraceContext {
                trace_id: parsed.trace_id,
                parent_span_id: Some(parsed.parent_id),
                span_id: random_nonzero(&mut rng),
                flags: parsed.flags,
                tracestate: tracestate.and_then(valid_tracestate),
            },
            None => TraceContext {
                trace_id: random_nonzero(&mut rng),
                parent_span_id: None,
                span_id: random_nonzero(&mut rng),
                flags: FLAG_SAMPLED,
                tracestate: None,
            },
        }
    }

    /// A new trace with no parent, sampled; the same as `from_headers(None, None)`.
    pub fn new_root() -> TraceContext {
        TraceContext::from_headers(None, None)
    }

    /// The `traceparent` to send upstream: `00-{trace_id}-{span_id}-{flags}`, lowercase hex.
    /// The gateway's span id is in the parent position, so the backend sees it as its parent.
    /// Always version `00`, whatever version the caller sent.
    pub fn header_value(&self) -> String {
        let mut out = String::with_capacity(TRACEPARENT_LEN);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }

    /// Whether the `sampled` flag is set (the caller, or the gateway for a new trace, asks for
    /// this trace to be recorded).
    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The trace id as 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        to_hex(&self.trace_id)
    }

    /// The gateway's span id as 16 lowercase hex digits.
    pub fn span_id_hex(&self) -> String {
        to_hex(&self.span_id)
    }

    /// The caller's span id as 16 lowercase hex digits, if the trace was continued.
    pub fn parent_span_id_hex(&self) -> Option<String> {
        self.parent_span_id.as_ref().map(|id| to_hex(id))
    }
}

/// The fields of a valid `traceparent`.
struct Parsed {
    trace_id: [u8; 16],
    parent_id: [u8; 8],
    flags: u8,
}

fn parse_traceparent(raw: &[u8]) -> Option<Parsed> {
    let raw = trim_ows(raw);
    if raw.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = decode_hex::<1>(&raw[0..2])?[0];
    if version == 0xff {
        return None;
    }
    if version == 0x00 {
        if raw.len() != TRACEPARENT_LEN {
            return None;
        }
    } else if raw.len() > TRACEPARENT_LEN && raw[TRACEPARENT_LEN] != b'-' {
        // A later version may append fields, but only after another dash.
        return None;
    }
    if raw[2] != b'-' || raw[35] != b'-' || raw[52] != b'-' {
        return None;
    }
    let trace_id = decode_hex::<16>(&raw[3..35])?;
    let parent_id = decode_hex::<8>(&raw[36..52])?;
    let mut flags = decode_hex::<1>(&raw[53..55])?[0];
    if trace_id == [0; 16] || parent_id == [0; 8] {
        return None;
    }
    if version != 0x00 {
        flags &= FLAG_SAMPLED;
    }
    Some(Parsed {
        trace_id,
        parent_id,
        flags,
    })
}

/// Keeps `tracestate` when it is non-empty, at most 512 bytes, and printable ASCII (space and
/// tab allowed, as list separators may carry optional whitespace).
fn valid_tracestate(raw: &[u8]) -> Option<String> {
    let raw = trim_ows(raw);
    if raw.is_empty() || raw.len() > MAX_TRACESTATE_LEN {
        return None;
    }
    if !raw
        .iter()
        .all(|&b| b == b'\t' || (0x20..=0x7e).contains(&b))
    {
        return None;
    }
    // Checked above: every byte is ASCII, so this is valid UTF-8.
    std::str::from_utf8(raw).ok().map(str::to_owned)
}

fn trim_ows(mut raw: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = raw {
        raw = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = raw {
        raw = rest;
    }
    raw
}

/// Decodes exactly `2 * N` lowercase hex digits; `None` on any other input.
fn decode_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    if digits.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0])? << 4) | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        _ => None,
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Appends `bytes` as lowercase hex.
fn push_hex(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        out.push(char::from(HEX_DIGITS[usize::from(b >> 4)]));
        out.push(char::from(HEX_DIGITS[usize::from(b & 0x0f)]));
    }
}

/// `bytes` as lowercase hex (also used by the OTLP encoder).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    push_hex(&mut out, bytes);
    out
}

/// Random bytes that are not all zero (all-zero ids are invalid in W3C and OTLP).
fn random_nonzero<const N: usize, R: Rng>(rng: &mut R) -> [u8; N] {
    loop {
        let mut id = [0u8; N];
        rng.fill(&mut id[..]);
        if id != [0u8; N] {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const PARENT: &str = "00f067aa0ba902b7";

    fn ctx(traceparent: &str) -> TraceContext {
        TraceContext::from_headers(Some(traceparent.as_bytes()), Some(b"congo=t61rcWkgMzE"))
    }

    fn is_continued(c: &TraceContext) -> bool {
        c.trace_id_hex() == TRACE && c.parent_span_id_hex().as_deref() == Some(PARENT)
    }

    #[test]
    fn valid_traceparents_continue_the_trace() {
        let cases = [
            // (header, expected flags)
            (format!("00-{TRACE}-{PARENT}-01"), 0x01),
            (format!("00-{TRACE}-{PARENT}-00"), 0x00),
            // Unknown flag bits of version 00 are kept (level 2 defines `random`, 0x02).
            (format!("00-{TRACE}-{PARENT}-03"), 0x03),
            (format!("  00-{TRACE}-{PARENT}-01\t"), 0x01),
            // A later version: parse the version-00 prefix, keep only the sampled bit.
            (format!("01-{TRACE}-{PARENT}-03"), 0x01),
            (format!("cc-{TRACE}-{PARENT}-02-whatever"), 0x00),
        ];
        for (header, flags) in cases {
            let c = ctx(&header);
            assert!(is_continued(&c), "{header:?} should continue the trace");
            assert_eq!(c.flags, flags, "{header:?}");
            assert_eq!(c.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
            assert_ne!(c.span_id_hex(), PARENT, "the gateway gets its own span id");
            assert_ne!(c.span_id, [0; 8]);
        }
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace() {
        let cases = [
            String::new(),
            "garbage".to_owned(),
            format!("ff-{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}-01-extra"),
            format!("00-{TRACE}-{PARENT}-1"),
            format!("00-{}-{PARENT}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{}-01", PARENT.to_uppercase()),
            format!("00-{TRACE}-{PARENT}-0G"),
            format!("0A-{TRACE}-{PARENT}-01"),
            format!("00-{}-{PARENT}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00_{TRACE}-{PARENT}-01"),
            format!("00-{TRACE}_{PARENT}-01"),
            format!("00-{TRACE}-{PARENT}_01"),
            format!("01-{TRACE}-{PARENT}-01x"),
            format!("01-{TRACE}-{PARENT}-"),
            format!("00-{TRACE}0-{PARENT}-01"),
        ];
        for header in cases {
            let c = ctx(&header);
            assert_eq!(c.parent_span_id, None, "{header:?} should be rejected");
            assert_ne!(c.trace_id_hex(), TRACE, "{header:?}");
            assert_ne!(c.trace_id, [0; 16]);
            assert_ne!(c.span_id, [0; 8]);
            assert_eq!(c.flags, 0x01, "a new trace is sampled");
            assert_eq!(c.tracestate, None, "tracestate needs a valid traceparent");
        }
    }

    #[test]
    fn missing_traceparent_starts_a_sampled_root() {
        let c = TraceContext::from_headers(None, Some(b"a=b"));
        assert_eq!(c.parent_span_id_hex(), None);
        assert!(c.is_sampled());
        assert_eq!(c.tracestate, None);
        assert_ne!(TraceContext::new_root().trace_id, c.trace_id);
    }

    #[test]
    fn tracestate_is_kept_only_when_short_printable_ascii() {
        let tp = format!("00-{TRACE}-{PARENT}-01");
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN - 1));
        let cases: [(&[u8], Option<&str>); 7] = [
            (
                b"rojo=00f067aa0ba902b7, congo=t61rcWkgMzE",
                Some("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE"),
            ),
            (b" a=b ", Some("a=b")),
            (
                &long.as_bytes()[..MAX_TRACESTATE_LEN],
                Some(&long[..MAX_TRACESTATE_LEN]),
            ),
            (long.as_bytes(), None),
            (b"", None),
            (b"a=\x01", None),
            ("a=\u{e9}".as_bytes(), None),
        ];
        for (state, expected) in cases {
            let c = TraceContext::from_headers(Some(tp.as_bytes()), Some(state));
            assert_eq!(c.tracestate.as_deref(), expected, "{state:?}");
        }
    }

    #[test]
    fn header_value_puts_the_gateway_span_in_the_parent_position() {
        let c = ctx(&format!("00-{TRACE}-{PARENT}-01"));
        let header = c.header_value();
        assert_eq!(header, format!("00-{TRACE}-{}-01", c.span_id_hex()));
        assert_eq!(header.len(), TRACEPARENT_LEN);
        // What the gateway sends upstream is itself a valid traceparent of the same trace.
        let upstream = TraceContext::from_headers(Some(header.as_bytes()), None);
        assert_eq!(upstream.trace_id, c.trace_id);
        assert_eq!(upstream.parent_span_id, Some(c.span_id));
    }

    #[test]
    fn later_version_is_downgraded_to_00_upstream() {
        let c = ctx(&format!("7f-{TRACE}-{PARENT}-01-more"));
        assert!(c.header_value().starts_with("00-"));
    }

    #[test]
    fn hex_helpers_are_lowercase_and_fixed_width() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xab, 0xff]), "000fabff");
        assert_eq!(decode_hex::<2>(b"0fab"), Some([0x0f, 0xab]));
        assert_eq!(decode_hex::<2>(b"0fAB"), None);
        assert_eq!(decode_hex::<2>(b"0fa"), None);
    }

    fn lower_hex(len: usize) -> impl Strategy<Value = String> {
        proptest::string::string_regex(&format!("[0-9a-f]{{{len}}}"))
            .expect("the regex is a constant and valid")
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(
            tp in proptest::collection::vec(any::<u8>(), 0..80),
            ts in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let c = TraceContext::from_headers(Some(&tp), Some(&ts));
            prop_assert_ne!(c.trace_id, [0; 16]);
            prop_assert_ne!(c.span_id, [0; 8]);
            prop_assert_eq!(c.header_value().len(), TRACEPARENT_LEN);
        }

        #[test]
        fn near_valid_strings_never_panic(
            s in "[0-9a-fA-F-]{50,60}",
        ) {
            let c = TraceContext::from_headers(Some(s.as_bytes()), None);
            prop_assert_eq!(c.header_value().len(), TRACEPARENT_LEN);
        }

        #[test]
        fn valid_traceparent_round_trips_trace_id_and_flags(
            trace in lower_hex(32),
            parent in lower_hex(16),
            flags in any::<u8>(),
        ) {
            prop_assume!(trace != "0".repeat(32) && parent != "0".repeat(16));
            let header = format!("00-{trace}-{parent}-{flags:02x}");
            let c = TraceContext::from_headers(Some(header.as_bytes()), None);
            prop_assert_eq!(c.trace_id_hex(), trace.clone());
            prop_assert_eq!(c.parent_span_id_hex(), Some(parent));
            prop_assert_eq!(c.flags, flags);
            let expected = format!("00-{trace}-{}-{flags:02x}", c.span_id_hex());
            prop_assert_eq!(c.header_value(), expected);
        }
    }
}
