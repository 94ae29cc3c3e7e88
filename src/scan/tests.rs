//! Tests for the model scanner: table-driven cases fed at every split point, and property tests
//! against `serde_json` over random documents, random chunkings and random bytes.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

use proptest::prelude::*;
use proptest::sample::Index;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::lex::find_special;
use super::*;

type Outcome = (Result<String, ScanError>, Option<Range<usize>>);

/// Feeds `body` split at `cuts` (sorted, each <= len) and checks the feed/finish contract.
fn run(body: &[u8], cuts: &[usize]) -> Outcome {
    let mut scanner = ModelScanner::new();
    let mut start = 0;
    let mut found = false;
    let mut first_error: Option<ScanError> = None;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        let chunk = &body[start..end];
        start = end;
        match scanner.feed(chunk) {
            Ok(status) => {
                assert!(first_error.is_none(), "Ok after an error");
                if status == ScanStatus::Found {
                    found = true;
                } else {
                    assert!(!found, "NeedMore after Found");
                }
                assert_eq!(scanner.model().is_some(), found);
            }
            Err(error) => match &first_error {
                Some(first) => assert_eq!(first, &error, "errors are sticky"),
                None => first_error = Some(error),
            },
        }
    }
    assert_eq!(scanner.bytes_seen(), body.len());
    let result = scanner.finish().map(str::to_owned);
    if let Some(error) = first_error {
        assert_eq!(result, Err(error));
    }
    assert_eq!(
        scanner.finish().map(str::to_owned),
        result,
        "finish is sticky"
    );
    (result, scanner.model_span())
}

/// Runs `body` whole, byte by byte, split at every index and (for short bodies) at every pair of
/// indexes; every run must give the same outcome, which is returned.
fn run_all_splits(body: &[u8]) -> Outcome {
    let whole = run(body, &[]);
    let bytewise: Vec<usize> = (1..body.len()).collect();
    assert_eq!(run(body, &bytewise), whole, "byte by byte");
    // Every split point; long bodies (which only stress the length cap) at a stride, to keep
    // debug-mode `cargo test` fast.
    let stride = if body.len() > 2048 { 7 } else { 1 };
    for i in (0..=body.len()).step_by(stride) {
        assert_eq!(run(body, &[i]), whole, "split at {i}");
    }
    if body.len() <= 64 {
        for i in 0..=body.len() {
            for j in i..=body.len() {
                assert_eq!(run(body, &[i, j]), whole, "split at {i} and {j}");
            }
        }
    }
    whole
}

fn assert_span_holds_model(body: &[u8], outcome: &Outcome) {
    if let (Ok(model), Some(span)) = outcome {
        let raw = body.get(span.clone()).expect("span inside the body");
        assert_eq!(raw.first(), Some(&b'"'));
        assert_eq!(raw.last(), Some(&b'"'));
        let decoded: String = serde_json::from_slice(raw).expect("span is a JSON string");
        assert_eq!(&decoded, model);
    }
}

fn invalid(offset: usize) -> Result<&'static str, ScanError> {
    Err(ScanError::InvalidJson { offset })
}

#[test]
fn table_cases_agree_at_every_split_point() {
    use ScanError::*;
    let long_ok = format!(r#"{{"model":"{}"}}"#, "a".repeat(MAX_MODEL_BYTES));
    let long_bad = format!(r#"{{"model":"{}"}}"#, "a".repeat(MAX_MODEL_BYTES + 1));
    let long_escaped_ok = format!(r#"{{"model":"{}"}}"#, r"\u00e9".repeat(MAX_MODEL_BYTES / 2));
    let long_escaped_bad = format!(
        r#"{{"model":"{}x"}}"#,
        r"\u00e9".repeat(MAX_MODEL_BYTES / 2)
    );
    let long_escaped_value = "\u{e9}".repeat(MAX_MODEL_BYTES / 2);
    let long_skipped = format!(r#"{{"a":"{}","model":"m"}}"#, "x\\n".repeat(1000));
    let cases: Vec<(&str, &[u8], Result<&str, ScanError>)> = vec![
        // Position of the model key.
        ("model first", br#"{"model":"gpt-4","messages":[]}"#, Ok("gpt-4")),
        ("model middle", br#"{"a":1,"model":"m","b":[2]}"#, Ok("m")),
        (
            "model last",
            br#"{"messages":[{"role":"user","content":"hi"}],"stream":true,"model":"m1"}"#,
            Ok("m1"),
        ),
        ("only model", br#"{"model":""}"#, Ok("")),
        // Nested model keys are not the model.
        (
            "nested model ignored",
            br#"{"a":{"model":"inner"},"b":[{"model":"x"}],"model":"outer"}"#,
            Ok("outer"),
        ),
        ("only nested model", br#"{"a":{"model":"inner"}}"#, Err(MissingModel)),
        (
            "model after deep nesting",
            br#"{"a":[[[{"b":{"model":[1,{"model":"no"}]}}]]],"model":"yes"}"#,
            Ok("yes"),
        ),
        (
            "brackets and quotes inside skipped strings",
            br#"{"a":{"b":"}]\"{[","c":["\\\"]","model"]},"model":"m"}"#,
            Ok("m"),
        ),
        // Keys are compared after decoding.
        ("escaped key", br#"{"\u006dodel":"m"}"#, Ok("m")),
        ("escaped key upper hex", br#"{"mod\u0065L":"m","mod\u0065l":"n"}"#, Ok("n")),
        ("fully escaped key", br#"{"\u006D\u006f\u0064\u0065\u006c":"m"}"#, Ok("m")),
        ("capitalised key", br#"{"Model":"m"}"#, Err(MissingModel)),
        ("prefix key", br#"{"mode":"m"}"#, Err(MissingModel)),
        ("longer key", br#"{"models":"m","modelmodel":"n"}"#, Err(MissingModel)),
        ("key with space", br#"{"model ":"m"}"#, Err(MissingModel)),
        ("non-ascii key", br#"{"m\u00f6del":"m","m\u00f6":"n"}"#, Err(MissingModel)),
        ("key with nul escape", br#"{"model\u0000":"m"}"#, Err(MissingModel)),
        // Escapes and Unicode in the value.
        (
            "short escapes in value",
            br#"{"model":"a\"b\\c\/d\b\f\n\r\t"}"#,
            Ok("a\"b\\c/d\u{8}\u{c}\n\r\t"),
        ),
        (
            "unicode escapes in value",
            br#"{"model":"caf\u00e9 \ud83d\ude00 \uFFFF"}"#,
            Ok("caf\u{e9} \u{1F600} \u{FFFF}"),
        ),
        ("raw utf-8 in value", "{\"model\":\"café😀\"}".as_bytes(), Ok("café😀")),
        // Whitespace everywhere it is allowed.
        (
            "whitespace everywhere",
            b" \n\t{ \r\n\"a\" : [ 1 , { \"b\" : null } ] ,\n \"model\" \t:\n \"m\" \n}\n ",
            Ok("m"),
        ),
        // Duplicates.
        ("duplicate model", br#"{"model":"a","model":"b"}"#, Err(DuplicateModel)),
        ("duplicate via escaped key", br#"{"model":"a","\u006dodel":"b"}"#, Err(DuplicateModel)),
        ("duplicate with other type", br#"{"model":"a","x":1,"model":2}"#, Err(DuplicateModel)),
        ("nested key after model", br#"{"model":"a","x":{"model":"b"}}"#, Ok("a")),
        // Non-string model values.
        ("model integer", br#"{"model":1}"#, Err(ModelNotString)),
        ("model negative float", br#"{"model":-1.5}"#, Err(ModelNotString)),
        ("model array", br#"{"model":["a"]}"#, Err(ModelNotString)),
        ("model object", br#"{"model":{"name":"a"}}"#, Err(ModelNotString)),
        ("model null", br#"{"model":null}"#, Err(ModelNotString)),
        ("model true", br#"{"model": true}"#, Err(ModelNotString)),
        ("model false", br#"{"model":false,"x":1}"#, Err(ModelNotString)),
        ("model garbage", br#"{"model":x}"#, invalid(9)),
        // Invalid JSON before the model.
        ("bare word value", br#"{"a": x, "model":"m"}"#, invalid(6)),
        ("double comma", br#"{"a":1,,"model":"m"}"#, invalid(7)),
        ("missing colon", br#"{"a" 1,"model":"m"}"#, invalid(5)),
        ("unquoted key", br#"{a:1,"model":"m"}"#, invalid(1)),
        ("leading zero", br#"{"a":01,"model":"m"}"#, invalid(6)),
        ("bad fraction", br#"{"a":1.,"model":"m"}"#, invalid(7)),
        ("bad exponent", br#"{"a":1e+,"model":"m"}"#, invalid(8)),
        ("lone minus", br#"{"a":-,"model":"m"}"#, invalid(6)),
        ("misspelt literal", br#"{"a":tru,"model":"m"}"#, invalid(8)),
        ("literal run-on", br#"{"a":nullx,"model":"m"}"#, invalid(9)),
        ("invalid escape", br#"{"a":"\x","model":"m"}"#, invalid(7)),
        ("invalid unicode escape", br#"{"a":"\u12g4","model":"m"}"#, invalid(10)),
        ("raw control in skipped string", b"{\"a\":\"x\x01y\",\"model\":\"m\"}", invalid(7)),
        ("raw newline in model", b"{\"model\":\"a\nb\"}", invalid(11)),
        ("raw control in key", b"{\"mo\x1fdel\":\"m\"}", invalid(4)),
        ("mismatched brackets", br#"{"a":[1},"model":"m"}"#, invalid(7)),
        ("garbage in nested value", br#"{"a":[1,x],"model":"m"}"#, invalid(8)),
        ("trailing comma before model", br#"{"a":1,}"#, invalid(7)),
        ("second document", br#"{"a":1}{"model":"m"}"#, invalid(7)),
        ("trailing garbage", br#"{"a":1} x"#, invalid(8)),
        ("byte order mark", b"\xEF\xBB\xBF{\"model\":\"m\"}", invalid(0)),
        ("leading garbage", br#"x{"model":"m"}"#, invalid(0)),
        // Syntax errors after the model are the backend's problem.
        ("trailing comma after model", br#"{"model":"m",}"#, Ok("m")),
        ("garbage after model", br#"{"model":"m","a":x,"model":"y"}"#, Ok("m")),
        ("truncated after model", br#"{"model":"m","a":[1,"#, Ok("m")),
        ("trailing garbage after model", br#"{"model":"m"} x"#, Ok("m")),
        // Missing, empty, truncated.
        ("empty object", b"{}", Err(MissingModel)),
        ("empty object with whitespace", b" { } \n", Err(MissingModel)),
        ("no model", br#"{"a":1,"b":"model"}"#, Err(MissingModel)),
        ("empty body", b"", invalid(0)),
        ("whitespace body", b"  \n", invalid(3)),
        ("truncated in key", br#"{"mod"#, invalid(5)),
        ("truncated after key", br#"{"model":"#, invalid(9)),
        ("truncated in model", br#"{"model":"ab"#, invalid(12)),
        ("truncated in escape", br#"{"model":"a\u00"#, invalid(15)),
        ("truncated in nested", br#"{"a":[1,2"#, invalid(9)),
        ("truncated number", br#"{"a":12"#, invalid(7)),
        // Not an object.
        ("top-level array", br#"[{"model":"m"}]"#, Err(NotAnObject)),
        ("top-level string", br#" "model""#, Err(NotAnObject)),
        ("top-level number", b"42", Err(NotAnObject)),
        ("top-level null", b"null", Err(NotAnObject)),
        ("top-level true", b"true", Err(NotAnObject)),
        // Length cap (decoded bytes).
        ("model at the cap", long_ok.as_bytes(), Ok(&long_ok[10..10 + MAX_MODEL_BYTES])),
        ("model over the cap", long_bad.as_bytes(), Err(ModelTooLong)),
        (
            "escaped model at the cap",
            long_escaped_ok.as_bytes(),
            Ok(long_escaped_value.as_str()),
        ),
        ("escaped model over the cap", long_escaped_bad.as_bytes(), Err(ModelTooLong)),
        ("long skipped string", long_skipped.as_bytes(), Ok("m")),
        // UTF-8 and surrogates in the model.
        ("invalid utf-8 in model", b"{\"model\":\"a\xffb\"}", Err(ModelNotUtf8)),
        ("truncated utf-8 in model", b"{\"model\":\"\xc3\"}", Err(ModelNotUtf8)),
        ("lone high surrogate", br#"{"model":"\ud800"}"#, Err(ModelNotUtf8)),
        ("lone low surrogate", br#"{"model":"\udc00"}"#, Err(ModelNotUtf8)),
        ("high then ascii escape", br#"{"model":"\ud800\u0041"}"#, Err(ModelNotUtf8)),
        ("high then raw byte", br#"{"model":"\ud800x"}"#, Err(ModelNotUtf8)),
        ("high then short escape", br#"{"model":"\ud800\n"}"#, Err(ModelNotUtf8)),
        ("two highs", br#"{"model":"\ud800\ud800"}"#, Err(ModelNotUtf8)),
        (
            "lone surrogates outside the model are accepted",
            br#"{"a":"\ud800","\udc00":1,"model":"m"}"#,
            Ok("m"),
        ),
        (
            "invalid utf-8 outside the model is not checked",
            b"{\"a\":\"\xff\",\"model\":\"m\"}",
            Ok("m"),
        ),
        // Numbers and literals before the model.
        (
            "numbers and literals",
            br#"{"a":-0.5e+10,"b":0,"c":1E5,"d":[1,2.5,-3e-2,0.0],"e":[true,false,null,{"f":null}],"model":"m"}"#,
            Ok("m"),
        ),
    ];
    for (name, body, expected) in cases {
        let outcome = std::panic::catch_unwind(|| run_all_splits(body))
            .unwrap_or_else(|_| panic!("case {name:?} panicked"));
        assert_eq!(
            outcome.0.as_deref().map_err(Clone::clone),
            expected,
            "case {name:?}"
        );
        assert_span_holds_model(body, &outcome);
    }
}

#[test]
fn model_span_covers_the_raw_quoted_value() {
    let body = br#"{"a":1, "model" : "m\u0031" }"#;
    let (result, span) = run_all_splits(body);
    assert_eq!(result.as_deref(), Ok("m1"));
    let span = span.expect("span once found");
    assert_eq!(&body[span.clone()], br#""m\u0031""#);
    assert_eq!(span, 18..27);
}

#[test]
fn found_is_reported_as_soon_as_the_value_closes() {
    let mut scanner = ModelScanner::new();
    assert_eq!(scanner.feed(br#"{"model":"m"#), Ok(ScanStatus::NeedMore));
    assert_eq!(scanner.model(), None);
    assert_eq!(scanner.feed(br#"ix""#), Ok(ScanStatus::Found));
    assert_eq!(scanner.model(), Some("mix"));
    assert_eq!(scanner.model_span(), Some(9..14));
    assert_eq!(scanner.feed(br#","messages":[]"#), Ok(ScanStatus::Found));
    assert_eq!(
        scanner.feed(br#","model":"x"}"#),
        Err(ScanError::DuplicateModel)
    );
    assert_eq!(scanner.feed(b"}"), Err(ScanError::DuplicateModel));
    assert_eq!(scanner.finish(), Err(ScanError::DuplicateModel));
    assert_eq!(scanner.bytes_seen(), 42);
}

#[test]
fn million_open_brackets_do_not_overflow_the_stack() {
    const DEPTH: usize = 1_000_000;
    let mut balanced = br#"{"a":"#.to_vec();
    balanced.extend(std::iter::repeat_n(b'[', DEPTH));
    balanced.extend(std::iter::repeat_n(b']', DEPTH));
    balanced.extend_from_slice(br#","model":"m"}"#);
    assert_eq!(find_model(&balanced).as_deref(), Ok("m"));
    let cuts: Vec<usize> = (1..balanced.len()).step_by(65_536).collect();
    assert_eq!(run(&balanced, &cuts).0.as_deref(), Ok("m"));

    let mut unbalanced = br#"{"a":"#.to_vec();
    unbalanced.extend(std::iter::repeat_n(b'[', DEPTH));
    let len = unbalanced.len();
    assert_eq!(
        find_model(&unbalanced),
        Err(ScanError::InvalidJson { offset: len })
    );

    let mut after_found = br#"{"model":"m","a":"#.to_vec();
    after_found.extend(std::iter::repeat_n(b'{', DEPTH));
    assert_eq!(find_model(&after_found).as_deref(), Ok("m"));
}

#[test]
fn errors_display_the_contract_messages() {
    assert_eq!(
        ScanError::InvalidJson { offset: 7 }.to_string(),
        "request body is not valid JSON (at byte 7)"
    );
    assert_eq!(
        ScanError::ModelTooLong.to_string(),
        "\"model\" is longer than 1024 bytes"
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// What a JSON parser says the scanner should return for a parsed document.
fn oracle(value: &Value) -> Result<String, ScanError> {
    let Value::Object(members) = value else {
        return Err(ScanError::NotAnObject);
    };
    match members.get("model") {
        Some(Value::String(model)) if model.len() > MAX_MODEL_BYTES => Err(ScanError::ModelTooLong),
        Some(Value::String(model)) => Ok(model.clone()),
        Some(_) => Err(ScanError::ModelNotString),
        None => Err(ScanError::MissingModel),
    }
}

/// Counts top-level `model` keys (serde_json's `Value` silently keeps the last duplicate).
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

/// If serde_json accepts `bytes`, the scanner must agree with it.
fn check_against_serde(
    bytes: &[u8],
    result: &Result<String, ScanError>,
) -> Result<(), TestCaseError> {
    let Ok(value) = serde_json::from_slice::<Value>(bytes) else {
        return Ok(());
    };
    if let Ok(ModelKeys(count)) = serde_json::from_slice::<ModelKeys>(bytes) {
        if count > 1 {
            // Parsers disagree on which duplicate wins; the scanner must refuse the body.
            prop_assert!(result.is_err(), "duplicate model accepted: {result:?}");
            return Ok(());
        }
    }
    prop_assert_eq!(result, &oracle(&value));
    Ok(())
}

pub(super) fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = picks.iter().map(|pick| pick.index(len + 1)).collect();
    cuts.sort_unstable();
    cuts
}

/// Text that stresses the string lexer: quotes, backslashes, braces, controls, non-ASCII.
pub(super) fn arb_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _./:-]{0,16}",
        r#"[{}\[\]"\\:,/ a-z\x00-\x1f\x7f-\xff\u{e9}\u{4e2d}\u{1F600}\u{FFFF}\u{10FFFF}]{0,16}"#,
        any::<String>(),
    ]
}

pub(super) fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(vec!["model", "Model", "mode", "models", "model ", "m\u{f6}del", "messages"])
            .prop_map(str::to_owned),
        // Keys the captures look for, as decoys inside nested values.
        1 => prop::sample::select(vec!["user", "prompt", "messages", "content", "text", "users"])
            .prop_map(str::to_owned),
        1 => "[a-z]{0,8}",
        1 => arb_text(),
    ]
}

pub(super) fn arb_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        arb_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

/// A JSON writer that escapes characters at random and (optionally) adds random whitespace.
pub(super) struct Writer {
    pub(super) out: Vec<u8>,
    pub(super) seed: u64,
    pub(super) spaced: bool,
}

impl Writer {
    fn roll(&mut self, n: u64) -> u64 {
        // splitmix64
        self.seed = self.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }

    pub(super) fn space(&mut self) {
        if self.spaced {
            for _ in 0..self.roll(3) {
                let pick = self.roll(4) as usize;
                self.out.push(b" \n\t\r"[pick]);
            }
        }
    }

    fn string(&mut self, text: &str) {
        self.out.push(b'"');
        for c in text.chars() {
            let as_unicode = self.roll(5) == 0;
            let short = match c {
                '"' => Some(b'"'),
                '\\' => Some(b'\\'),
                '\u{8}' => Some(b'b'),
                '\u{c}' => Some(b'f'),
                '\n' => Some(b'n'),
                '\r' => Some(b'r'),
                '\t' => Some(b't'),
                '/' if self.roll(2) == 0 => Some(b'/'),
                _ => None,
            };
            match short {
                Some(escape) if !as_unicode => self.out.extend_from_slice(&[b'\\', escape]),
                _ if as_unicode || c < ' ' || c == '"' || c == '\\' => {
                    for unit in c.encode_utf16(&mut [0; 2]) {
                        let hex = if self.roll(2) == 0 {
                            format!("\\u{unit:04x}")
                        } else {
                            format!("\\u{unit:04X}")
                        };
                        self.out.extend_from_slice(hex.as_bytes());
                    }
                }
                _ => self
                    .out
                    .extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
        self.out.push(b'"');
    }

    pub(super) fn members<'a>(&mut self, members: impl Iterator<Item = (&'a String, &'a Value)>) {
        self.out.push(b'{');
        self.space();
        for (i, (key, value)) in members.enumerate() {
            if i > 0 {
                self.out.push(b',');
                self.space();
            }
            self.string(key);
            self.space();
            self.out.push(b':');
            self.space();
            self.value(value);
            self.space();
        }
        self.out.push(b'}');
    }

    fn value(&mut self, value: &Value) {
        match value {
            Value::String(text) => self.string(text),
            Value::Array(items) => {
                self.out.push(b'[');
                self.space();
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                        self.space();
                    }
                    self.value(item);
                    self.space();
                }
                self.out.push(b']');
            }
            Value::Object(members) => self.members(members.iter()),
            scalar => self
                .out
                .extend_from_slice(serde_json::to_string(scalar).expect("scalar").as_bytes()),
        }
    }
}

/// A top-level object with an optional `model` member at a random position, serialized by
/// serde_json (compact or pretty) or by `Writer` (random escapes, random whitespace).
fn arb_document() -> impl Strategy<Value = Vec<u8>> {
    let model = prop_oneof![
        3 => arb_text().prop_map(Value::String),
        1 => arb_value(),
    ];
    (
        prop::collection::vec((arb_key(), arb_value()), 0..8),
        prop::option::of(model),
        any::<Index>(),
        0u8..4,
        any::<u64>(),
    )
        .prop_map(|(mut members, model, at, style, seed)| {
            let mut keys = HashSet::new();
            members.retain(|(key, _)| key != "model" && keys.insert(key.clone()));
            if let Some(model) = model {
                members.insert(at.index(members.len() + 1), ("model".to_owned(), model));
            }
            match style {
                0 | 1 => {
                    let object = Value::Object(members.into_iter().collect());
                    let text = if style == 0 {
                        serde_json::to_vec(&object)
                    } else {
                        serde_json::to_vec_pretty(&object)
                    };
                    text.expect("serializable")
                }
                _ => {
                    let mut writer = Writer {
                        out: Vec::new(),
                        seed,
                        spaced: style == 3,
                    };
                    writer.space();
                    writer.members(members.iter().map(|(key, value)| (key, value)));
                    writer.space();
                    writer.out
                }
            }
        })
}

/// Bytes that sometimes look like JSON: raw noise, or a soup of JSON-ish tokens.
fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&[u8]] = &[
        b"{",
        b"}",
        b"[",
        b"]",
        b":",
        b",",
        b" ",
        b"\n",
        b"\"",
        b"\\",
        b"\"model\"",
        b"\"\\u006dodel\"",
        b"\"a\"",
        b"\"m\"",
        b"\"x\\\"}\"",
        b"1",
        b"-0.5e3",
        b"0",
        b"true",
        b"null",
        b"fals",
        b"\"\\ud83d\\ude00\"",
        b"\"\\ud800\"",
        b"\xff",
        b"\x01",
        b"u00",
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        prop::collection::vec(prop::sample::select(TOKENS), 0..40)
            .prop_map(|tokens| tokens.concat()),
        prop::collection::vec(prop::sample::select(TOKENS), 0..40).prop_map(|tokens| {
            let mut body = b"{\"model\":\"m\",".to_vec();
            body.extend(tokens.concat());
            body
        }),
    ]
}

/// Every special byte at every position of runs up to 300 bytes: the 16-byte SIMD blocks,
/// their SWAR remainder and the hand-over to the long-run search at 128 all see each case.
#[test]
fn find_special_finds_each_special_byte_at_every_position() {
    for len in 0..300 {
        let plain: Vec<u8> = (0..len)
            .map(|i| [b'a', 0x20, 0x7f, 0x80, 0xff][i % 5])
            .collect();
        assert_eq!(find_special(&plain), None, "len {len}");
        for at in 0..len {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                let mut bytes = plain.clone();
                bytes[at] = special;
                assert_eq!(
                    find_special(&bytes),
                    Some(at),
                    "len {len}, {special:#x} at {at}"
                );
                // A second special byte later never hides the first.
                if let Some(later) = bytes.get_mut(at + 1 + (at % 17)) {
                    *later = b'"';
                }
                assert_eq!(
                    find_special(&bytes),
                    Some(at),
                    "len {len}, {special:#x} at {at}"
                );
            }
        }
    }
}

proptest! {
    #[test]
    fn find_special_matches_a_naive_search(
        bytes in prop::collection::vec(
            prop_oneof![
                40 => 0x20u8..=0xff,
                1 => prop::sample::select(b"\"\\\x00\x01\x1f\x21\x5b\x5d\x80\xff".to_vec()),
            ],
            0..400,
        ),
    ) {
        let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        prop_assert_eq!(find_special(&bytes), naive);
    }

    #[test]
    fn documents_agree_with_serde_json(
        body in arb_document(),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let value: Value = serde_json::from_slice(&body).expect("generated JSON parses");
        let expected = oracle(&value);
        let whole = run(&body, &[]);
        prop_assert_eq!(&whole.0, &expected);
        prop_assert_eq!(&run(&body, &cut_points(body.len(), &picks)), &whole);
        let bytewise: Vec<usize> = (1..body.len()).collect();
        prop_assert_eq!(&run(&body, &bytewise), &whole);
        assert_span_holds_model(&body, &whole);
    }

    #[test]
    fn mutated_documents_never_disagree_with_serde_json(
        body in arb_document(),
        edits in prop::collection::vec(
            (any::<Index>(), 0u8..3, prop::sample::select(b"{}[]\":,\\ 0a-e\x01".to_vec())),
            1..4,
        ),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let mut body = body;
        for (at, kind, byte) in edits {
            let at = at.index(body.len() + 1);
            match kind {
                0 => body.insert(at, byte),
                1 if at < body.len() => {
                    body.remove(at);
                }
                _ if at < body.len() => body[at] = byte,
                _ => body.push(byte),
            }
        }
        let whole = run(&body, &[]);
        prop_assert_eq!(&run(&body, &cut_points(body.len(), &picks)), &whole);
        check_against_serde(&body, &whole.0)?;
        assert_span_holds_model(&body, &whole);
    }

    #[test]
    fn random_bytes_never_panic_and_ignore_chunking(
        body in arb_bytes(),
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let whole = run(&body, &[]);
        prop_assert_eq!(&run(&body, &cut_points(body.len(), &picks)), &whole);
        let bytewise: Vec<usize> = (1..body.len()).collect();
        prop_assert_eq!(&run(&body, &bytewise), &whole);
        check_against_serde(&body, &whole.0)?;
    }
}
