//! Tests for the scanner's captures (`user`, prompt prefix, `captures_done`): table cases fed at
//! every split point, and property tests against an oracle built from the generated members.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;

use super::tests::{arb_key, arb_text, arb_value, cut_points, Writer};
use super::*;

/// What one run of the scanner with captures reports.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Captured {
    model: Result<String, ScanError>,
    span: Option<Range<usize>>,
    user: Option<String>,
    prompt: Option<Vec<u8>>,
    /// Bytes fed when `captures_done` first held (0: before any), or `None` if only at finish.
    done_at: Option<usize>,
}

/// Feeds `body` split at `cuts` and checks the capture contract along the way: `captures_done`
/// never goes back to false, captured values never change once set, and what was captured when
/// `captures_done` first held is the final answer.
fn run(body: &[u8], cuts: &[usize], capture: Capture) -> Captured {
    let mut scanner = ModelScanner::with_capture(capture);
    let mut done_at = scanner.captures_done().then_some(0);
    let mut at_done = done_at.map(|_| snapshot(&scanner));
    let mut user_seen: Option<String> = None;
    let mut prompt_seen: Option<Vec<u8>> = None;
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&body.len())) {
        let _ = scanner.feed(&body[start..end]);
        start = end;
        if let Some(user) = &user_seen {
            assert_eq!(scanner.user(), Some(user.as_str()), "user changed once set");
        }
        if let Some(prompt) = &prompt_seen {
            assert_eq!(
                scanner.prompt_prefix(),
                Some(prompt.as_slice()),
                "prompt changed"
            );
        }
        user_seen = scanner.user().map(str::to_owned);
        prompt_seen = scanner.prompt_prefix().map(<[u8]>::to_vec);
        if scanner.captures_done() {
            if done_at.is_none() {
                done_at = Some(end);
                at_done = Some(snapshot(&scanner));
            }
        } else {
            assert!(done_at.is_none(), "captures_done went back to false");
        }
    }
    let model = scanner.finish().map(str::to_owned);
    assert!(scanner.captures_done(), "captures_done after finish");
    let captured = Captured {
        model,
        span: scanner.model_span(),
        user: scanner.user().map(str::to_owned),
        prompt: scanner.prompt_prefix().map(<[u8]>::to_vec),
        done_at,
    };
    if let Some(at_done) = at_done {
        assert_eq!(
            at_done,
            (captured.user.clone(), captured.prompt.clone()),
            "captures changed after captures_done"
        );
    }
    captured
}

fn snapshot(scanner: &ModelScanner) -> (Option<String>, Option<Vec<u8>>) {
    (
        scanner.user().map(str::to_owned),
        scanner.prompt_prefix().map(<[u8]>::to_vec),
    )
}

/// Runs `body` whole, byte by byte and split at every index (and every pair of indexes for
/// short bodies). All must agree; `done_at` must be the first chunk end at or past the
/// byte-by-byte one. Returns the byte-by-byte run (whose `done_at` is exact).
fn run_all_splits(body: &[u8], capture: Capture) -> Captured {
    let bytewise: Vec<usize> = (1..body.len()).collect();
    let exact = run(body, &bytewise, capture);
    let same = |cuts: &[usize], what: &str| {
        let other = run(body, cuts, capture);
        let expected_done = exact.done_at.map(|at| {
            if at == 0 {
                0
            } else {
                cuts.iter()
                    .copied()
                    .chain(std::iter::once(body.len()))
                    .find(|&end| end >= at)
                    .unwrap_or(body.len())
            }
        });
        assert_eq!(
            other,
            Captured {
                done_at: expected_done,
                ..exact.clone()
            },
            "{what}"
        );
    };
    same(&[], "whole");
    for i in 0..=body.len() {
        same(&[i], &format!("split at {i}"));
    }
    if body.len() <= 48 {
        for i in 0..=body.len() {
            for j in i..=body.len() {
                same(&[i, j], &format!("split at {i} and {j}"));
            }
        }
    }
    exact
}

fn both(prompt_prefix: usize) -> Capture {
    Capture {
        user: true,
        prompt_prefix,
        prompt_span: 0,
        members: false,
    }
}

fn prompt_only(prompt_prefix: usize) -> Capture {
    Capture {
        user: false,
        prompt_prefix,
        prompt_span: 0,
        members: false,
    }
}

fn user_only() -> Capture {
    Capture {
        user: true,
        prompt_prefix: 0,
        prompt_span: 0,
        members: false,
    }
}

/// When `captures_done` is expected to become true.
#[derive(Debug, Clone, Copy)]
enum Done<'a> {
    /// Right after the first occurrence of this text in the body.
    After(&'a str),
    /// After this many bytes.
    At(usize),
    /// At the last byte (the top-level `}`).
    End,
    /// Only at `finish`.
    Finish,
}

struct Case<'a> {
    name: &'a str,
    body: &'a [u8],
    capture: Capture,
    user: Option<&'a str>,
    prompt: Option<&'a [u8]>,
    done: Done<'a>,
}

#[test]
fn table_cases_agree_at_every_split_point() {
    let long_user = format!(r#"{{"user":"{}","model":"m"}}"#, "a".repeat(300));
    let long_user_done = format!(r#""user":"{}"#, "a".repeat(USER_BUFFER_BYTES));
    let long_user_value = "a".repeat(MAX_USER_BYTES);
    let accents = format!(r#"{{"user":"{}","model":"m"}}"#, "\u{e9}".repeat(200));
    let accents_value = "\u{e9}".repeat(MAX_USER_BYTES / 2);
    let escaped_accents = format!(r#"{{"model":"m","user":"{}"}}"#, r"\u00e9".repeat(200));
    let emoji = format!(r#"{{"user":"{}","model":"m"}}"#, "\u{1F600}".repeat(70));
    let emoji_value = "\u{1F600}".repeat(MAX_USER_BYTES / 4);
    let shifted_emoji = format!(r#"{{"user":"a{}","model":"m"}}"#, "\u{1F600}".repeat(70));
    let shifted_emoji_value = format!("a{}", "\u{1F600}".repeat(MAX_USER_BYTES / 4 - 1));
    let invalid_tail = {
        let mut body = br#"{"user":""#.to_vec();
        body.extend(std::iter::repeat_n(b'a', MAX_USER_BYTES - 3));
        body.extend_from_slice(b"\xf0\x9f\x98\"");
        body.extend_from_slice(br#","model":"m"}"#);
        body
    };
    let invalid_tail_value = format!("{}\u{FFFD}", "a".repeat(MAX_USER_BYTES - 3));
    let chat = br#"{"model":"m","user":"u1","messages":[{"role":"system","content":"You are a helpful bot"}],"stream":true}"#;
    let cases = vec![
        // The common shapes.
        Case {
            name: "chat, model first",
            body: chat,
            capture: both(8),
            user: Some("u1"),
            prompt: Some(b"You are "),
            done: Done::After(r#""You are "#),
        },
        Case {
            name: "user after messages",
            body: br#"{"messages":[{"role":"user","content":"hi"}],"model":"m","user":"u2"}"#,
            capture: both(8),
            user: Some("u2"),
            prompt: Some(b"hi"),
            done: Done::After(r#""u2""#),
        },
        Case {
            name: "no user",
            body: br#"{"messages":[{"role":"user","content":"hi"}],"model":"m"}"#,
            capture: both(8),
            user: None,
            prompt: Some(b"hi"),
            done: Done::End,
        },
        Case {
            name: "captures done before the model",
            body: br#"{"user":"u","prompt":"p","model":"m"}"#,
            capture: both(8),
            user: Some("u"),
            prompt: Some(b"p"),
            done: Done::After(r#""p""#),
        },
        Case {
            name: "nothing requested",
            body: chat,
            capture: Capture::default(),
            user: None,
            prompt: None,
            done: Done::After(""),
        },
        Case {
            name: "prompt off",
            body: chat,
            capture: user_only(),
            user: Some("u1"),
            prompt: None,
            done: Done::After(r#""u1""#),
        },
        Case {
            name: "user off",
            body: chat,
            capture: prompt_only(3),
            user: None,
            prompt: Some(b"You"),
            done: Done::After(r#""You"#),
        },
        Case {
            name: "whitespace everywhere",
            body: b" { \"user\" : \"u\" ,\n \"messages\" : [ { \"content\" : [ { \"text\" :\t\"t\" } ] } ] , \"model\" : \"m\" } ",
            capture: both(8),
            user: Some("u"),
            prompt: Some(b"t"),
            done: Done::After("\"t\""),
        },
        Case {
            name: "escaped keys",
            body: br#"{"\u0075ser":"u","\u006dessages":[{"cont\u0065nt":[{"t\u0065xt":"c"}]}],"model":"m"}"#,
            capture: both(8),
            user: Some("u"),
            prompt: Some(b"c"),
            done: Done::After(r#""c""#),
        },
        // User value decoding, duplicates and types.
        Case {
            name: "user escapes",
            body: br#"{"user":"a\"b\\\/\u00e9\ud83d\ude00\n","model":"m"}"#,
            capture: user_only(),
            user: Some("a\"b\\/\u{e9}\u{1F600}\n"),
            prompt: None,
            done: Done::After(r#"\n""#),
        },
        Case {
            name: "user lone surrogates",
            body: br#"{"user":"\ud800x\udc00\ud83d","model":"m"}"#,
            capture: user_only(),
            user: Some("\u{FFFD}x\u{FFFD}\u{FFFD}"),
            prompt: None,
            done: Done::After(r#"\ud83d""#),
        },
        Case {
            name: "user high surrogate then escape",
            body: br#"{"user":"\ud800\n\ud800\ud83d\ude00","model":"m"}"#,
            capture: user_only(),
            user: Some("\u{FFFD}\n\u{FFFD}\u{1F600}"),
            prompt: None,
            done: Done::After(r#"\ude00""#),
        },
        Case {
            name: "user raw invalid utf-8",
            body: b"{\"user\":\"a\xffb\",\"model\":\"m\"}",
            capture: user_only(),
            user: Some("a\u{FFFD}b"),
            prompt: None,
            done: Done::After("b\""),
        },
        Case {
            name: "first user wins",
            body: br#"{"user":"a","model":"m","user":"b"}"#,
            capture: user_only(),
            user: Some("a"),
            prompt: None,
            done: Done::After(r#""a""#),
        },
        Case {
            name: "first user not a string decides",
            body: br#"{"user":1,"user":"b","model":"m"}"#,
            capture: user_only(),
            user: None,
            prompt: None,
            done: Done::After(r#""user":1"#),
        },
        Case {
            name: "user null",
            body: br#"{"user":null,"model":"m"}"#,
            capture: user_only(),
            user: None,
            prompt: None,
            done: Done::After(r#""user":n"#),
        },
        Case {
            name: "empty user",
            body: br#"{"user":"","model":"m"}"#,
            capture: user_only(),
            user: Some(""),
            prompt: None,
            done: Done::After(r#""user":"""#),
        },
        // User length cap: whole characters within 256 bytes, settled after 260 bytes.
        Case {
            name: "long user",
            body: long_user.as_bytes(),
            capture: user_only(),
            user: Some(&long_user_value),
            prompt: None,
            done: Done::After(&long_user_done),
        },
        Case {
            name: "long user of two-byte characters",
            body: accents.as_bytes(),
            capture: user_only(),
            user: Some(&accents_value),
            prompt: None,
            done: Done::At(9 + USER_BUFFER_BYTES),
        },
        Case {
            name: "long escaped user",
            body: escaped_accents.as_bytes(),
            capture: user_only(),
            user: Some(&accents_value),
            prompt: None,
            done: Done::At(21 + 6 * USER_BUFFER_BYTES / 2),
        },
        Case {
            name: "long user of four-byte characters",
            body: emoji.as_bytes(),
            capture: user_only(),
            user: Some(&emoji_value),
            prompt: None,
            done: Done::At(9 + USER_BUFFER_BYTES),
        },
        Case {
            name: "long user cut before a character",
            body: shifted_emoji.as_bytes(),
            capture: user_only(),
            user: Some(&shifted_emoji_value),
            prompt: None,
            done: Done::At(9 + USER_BUFFER_BYTES),
        },
        Case {
            name: "user with a truncated character at the cap",
            body: &invalid_tail,
            capture: user_only(),
            user: Some(&invalid_tail_value),
            prompt: None,
            done: Done::At(invalid_tail.len() - r#","model":"m"}"#.len()),
        },
        // Nested decoys are never captured.
        Case {
            name: "nested decoys",
            body: br#"{"metadata":{"user":"x","prompt":"p","messages":[{"content":"c"}]},"tools":[{"type":"function","function":{"name":"user","parameters":{"user":{"type":"string"}}}}],"model":"m"}"#,
            capture: both(8),
            user: None,
            prompt: None,
            done: Done::End,
        },
        Case {
            name: "content decoy inside messages[0]",
            body: br#"{"messages":[{"role":"user","meta":{"content":"decoy"},"content":"real"},{"content":"second"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: Some(b"real"),
            done: Done::After(r#""real""#),
        },
        Case {
            name: "content key as a value is not a key",
            body: br#"{"messages":[{"role":"content","x":["content"],"content":"real"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: Some(b"real"),
            done: Done::After(r#""real""#),
        },
        // Content parts.
        Case {
            name: "content parts",
            body: br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:x","text":"decoy"}},{"type":"text","text":"look at this"}]}]}"#,
            capture: prompt_only(64),
            user: None,
            prompt: Some(b"look at this"),
            done: Done::After(r#""look at this""#),
        },
        Case {
            name: "text found past odd parts",
            body: br#"{"messages":[{"content":[{"type":"x","data":{"text":"decoy"}},{"text":1},"text",["text"],{"text":"yes"}]}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: Some(b"yes"),
            done: Done::After(r#""yes""#),
        },
        Case {
            name: "parts without text",
            body: br#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"u"}}]},{"content":"x"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After("}}]"),
        },
        Case {
            name: "content null",
            body: br#"{"messages":[{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"x"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#""content":n"#),
        },
        Case {
            name: "first content key decides",
            body: br#"{"messages":[{"content":1,"content":"x"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#""content":1"#),
        },
        Case {
            name: "no content in messages[0]",
            body: br#"{"messages":[{"role":"user"},{"content":"x"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#"{"role":"user"}"#),
        },
        Case {
            name: "empty messages",
            body: br#"{"messages":[],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After("[]"),
        },
        Case {
            name: "messages not an array",
            body: br#"{"messages":"hi","model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#""messages":""#),
        },
        Case {
            name: "messages[0] not an object",
            body: br#"{"messages":["hi",{"content":"x"}],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#"[""#),
        },
        // Completions prompts.
        Case {
            name: "prompt string",
            body: br#"{"model":"m","prompt":"Once upon a time","max_tokens":5}"#,
            capture: prompt_only(4),
            user: None,
            prompt: Some(b"Once"),
            done: Done::After(r#""Once"#),
        },
        Case {
            name: "prompt array of strings",
            body: br#"{"prompt":["first","second"],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: Some(b"first"),
            done: Done::After(r#""first""#),
        },
        Case {
            name: "prompt token ids",
            body: br#"{"prompt":[[1,2,3]],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After("[["),
        },
        Case {
            name: "prompt numbers",
            body: br#"{"prompt":[1,"x"],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After("[1"),
        },
        Case {
            name: "prompt empty array",
            body: br#"{"prompt":[],"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After("[]"),
        },
        Case {
            name: "prompt null",
            body: br#"{"prompt":null,"model":"m"}"#,
            capture: prompt_only(8),
            user: None,
            prompt: None,
            done: Done::After(r#""prompt":n"#),
        },
        Case {
            name: "prompt escapes decoded",
            body: br#"{"prompt":"a\nb\u00e9\ud83d\ude00\"\ud800","model":"m"}"#,
            capture: prompt_only(64),
            user: None,
            prompt: Some("a\nb\u{e9}\u{1F600}\"\u{FFFD}".as_bytes()),
            done: Done::After(r#"\ud800""#),
        },
        Case {
            name: "raw prompt",
            body: "{\"prompt\":\"caf\u{e9} au lait\",\"model\":\"m\"}".as_bytes(),
            capture: prompt_only(5),
            user: None,
            prompt: Some("caf\u{e9}".as_bytes()),
            done: Done::After("caf\u{e9}"),
        },
        Case {
            name: "escaped prompt gives the same prefix",
            body: br#"{"prompt":"caf\u00e9 au lait","model":"m"}"#,
            capture: prompt_only(5),
            user: None,
            prompt: Some("caf\u{e9}".as_bytes()),
            done: Done::After(r"\u00e9"),
        },
        Case {
            name: "prefix cut inside a character",
            body: "{\"prompt\":\"abc\u{e9}\",\"model\":\"m\"}".as_bytes(),
            capture: prompt_only(4),
            user: None,
            prompt: Some(b"abc\xc3"),
            // Full at the first byte of the character.
            done: Done::At(r#"{"prompt":"abc"#.len() + 1),
        },
        Case {
            name: "empty prompt",
            body: br#"{"prompt":"","model":"m"}"#,
            capture: prompt_only(4),
            user: None,
            prompt: Some(b""),
            done: Done::After(r#""prompt":"""#),
        },
        Case {
            name: "prompt before messages wins",
            body: br#"{"prompt":"p","messages":[{"content":"c"}],"model":"m"}"#,
            capture: prompt_only(4),
            user: None,
            prompt: Some(b"p"),
            done: Done::After(r#""p""#),
        },
        Case {
            name: "messages before prompt wins",
            body: br#"{"messages":[{"content":"c"}],"prompt":"p","model":"m"}"#,
            capture: prompt_only(4),
            user: None,
            prompt: Some(b"c"),
            done: Done::After(r#""c""#),
        },
        Case {
            name: "first prompt member decides",
            body: br#"{"messages":[],"prompt":"late","model":"m"}"#,
            capture: prompt_only(4),
            user: None,
            prompt: None,
            done: Done::After("[]"),
        },
        // Errors and truncation stop the captures.
        Case {
            name: "model error",
            body: br#"{"model":1,"user":"u"}"#,
            capture: both(4),
            user: None,
            prompt: None,
            done: Done::After(r#""model":1"#),
        },
        Case {
            name: "syntax error after the model",
            body: br#"{"model":"m","prompt":x,"user":"u"}"#,
            capture: both(4),
            user: None,
            prompt: None,
            done: Done::After(r#""prompt":x"#),
        },
        Case {
            name: "duplicate model",
            body: br#"{"model":"m","user":"u","model":"n","prompt":"p"}"#,
            capture: both(4),
            user: Some("u"),
            prompt: None,
            done: Done::After(r#","model""#),
        },
        Case {
            name: "truncated in the prompt",
            body: br#"{"model":"m","user":"u","prompt":"abc"#,
            capture: both(4),
            user: Some("u"),
            prompt: None,
            done: Done::Finish,
        },
        Case {
            name: "truncated after a full prefix",
            body: br#"{"model":"m","user":"u","prompt":"abcdef"#,
            capture: both(4),
            user: Some("u"),
            prompt: Some(b"abcd"),
            done: Done::After("abcd"),
        },
    ];
    for case in cases {
        let outcome = std::panic::catch_unwind(|| run_all_splits(case.body, case.capture))
            .unwrap_or_else(|_| panic!("case {:?} panicked", case.name));
        let name = case.name;
        assert_eq!(
            outcome.model,
            find_model(case.body),
            "case {name:?}: captures changed the model result"
        );
        assert_eq!(outcome.user.as_deref(), case.user, "case {name:?}: user");
        assert_eq!(
            outcome.prompt.as_deref(),
            case.prompt,
            "case {name:?}: prompt"
        );
        let done_at = match case.done {
            Done::After(text) => {
                let text = text.as_bytes();
                let at = (0..=case.body.len())
                    .find(|&i| case.body[i..].starts_with(text))
                    .unwrap_or_else(|| panic!("case {name:?}: marker not in body"));
                Some(at + text.len())
            }
            Done::At(at) => Some(at),
            Done::End => Some(case.body.len()),
            Done::Finish => None,
        };
        assert_eq!(outcome.done_at, done_at, "case {name:?}: captures_done");
    }
}

#[test]
fn captures_done_lets_the_reader_stop_early_on_a_large_body() {
    let tail = "x".repeat(1 << 20);
    let body = format!(
        r#"{{"model":"m","user":"u-7","messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"{tail}"}}]}}"#
    );
    let mut scanner = ModelScanner::with_capture(both(256));
    let mut read = 0;
    for chunk in body.as_bytes().chunks(4096) {
        scanner.feed(chunk).expect("valid body");
        read += chunk.len();
        if scanner.model().is_some() && scanner.captures_done() {
            break;
        }
    }
    assert_eq!(read, 4096, "stopped in the first chunk");
    assert_eq!(scanner.user(), Some("u-7"));
    assert_eq!(scanner.prompt_prefix(), Some(&b"You are terse."[..]));
}

#[test]
fn prompt_prefix_is_clamped() {
    let scanner = ModelScanner::with_capture(both(usize::MAX));
    assert_eq!(scanner.capture().prompt_prefix, MAX_PROMPT_PREFIX_BYTES);
    let body = format!(
        r#"{{"prompt":"{}","model":"m"}}"#,
        "y".repeat(MAX_PROMPT_PREFIX_BYTES + 10)
    );
    let mut scanner = ModelScanner::with_capture(both(usize::MAX));
    scanner.feed(body.as_bytes()).expect("valid body");
    assert_eq!(
        scanner.prompt_prefix().map(<[u8]>::len),
        Some(MAX_PROMPT_PREFIX_BYTES)
    );
}

#[test]
fn million_open_brackets_in_messages_do_not_overflow_the_stack() {
    const DEPTH: usize = 1_000_000;
    let mut body = br#"{"messages":[{"content":[{"x":"#.to_vec();
    body.extend(std::iter::repeat_n(b'[', DEPTH));
    body.extend(std::iter::repeat_n(b']', DEPTH));
    body.extend_from_slice(br#","text":"deep"}]}],"model":"m"}"#);
    let mut scanner = ModelScanner::with_capture(both(8));
    assert_eq!(scanner.feed(&body), Ok(ScanStatus::Found));
    assert_eq!(scanner.prompt_prefix(), Some(&b"deep"[..]));
}

// ---------------------------------------------------------------------------------------------
// Property tests.

/// `text` cut to the longest prefix of whole characters within [`MAX_USER_BYTES`].
fn cut_user(text: &str) -> String {
    let mut end = text.len().min(MAX_USER_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// What the captures should be for top-level `members` in document order.
fn oracle(members: &[(String, Value)], prompt_prefix: usize) -> (Option<String>, Option<Vec<u8>>) {
    let user = members
        .iter()
        .find(|(key, _)| key == "user")
        .and_then(|(_, value)| value.as_str().map(cut_user));
    let text = members
        .iter()
        .find(|(key, _)| key == "prompt" || key == "messages")
        .and_then(|(key, value)| {
            if key == "prompt" {
                match value {
                    Value::Array(items) => items.first()?.as_str(),
                    other => other.as_str(),
                }
            } else {
                match value.as_array()?.first()?.as_object()?.get("content")? {
                    Value::Array(parts) => parts
                        .iter()
                        .find_map(|part| part.as_object()?.get("text")?.as_str()),
                    other => other.as_str(),
                }
            }
        });
    let prompt = text.map(|text| {
        let bytes = text.as_bytes();
        bytes[..bytes.len().min(prompt_prefix)].to_vec()
    });
    (user, prompt)
}

fn arb_string_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => arb_text().prop_map(Value::String),
        1 => "[a\u{e9}\u{1F600}]{60,140}".prop_map(Value::String),
    ]
}

fn arb_part() -> impl Strategy<Value = Value> {
    let text = prop_oneof![3 => arb_string_value(), 1 => arb_value()];
    (
        prop::option::weighted(0.7, text),
        prop::sample::select(vec!["text", "image_url", "input_audio"]),
        prop::collection::vec((arb_key(), arb_value()), 0..3),
    )
        .prop_map(|(text, kind, extra)| {
            let mut part: serde_json::Map<String, Value> = extra.into_iter().collect();
            part.insert("type".to_owned(), Value::String(kind.to_owned()));
            if let Some(text) = text {
                part.insert("text".to_owned(), text);
            }
            Value::Object(part)
        })
}

fn arb_message() -> impl Strategy<Value = Value> {
    let content = prop_oneof![
        4 => arb_string_value(),
        2 => prop::collection::vec(prop_oneof![4 => arb_part(), 1 => arb_value()], 0..4)
            .prop_map(Value::Array),
        1 => arb_value(),
    ];
    (
        prop::option::weighted(0.9, content),
        prop::collection::vec((arb_key(), arb_value()), 0..3),
    )
        .prop_map(|(content, extra)| {
            let mut message: serde_json::Map<String, Value> = extra.into_iter().collect();
            message.remove("content");
            message.insert("role".to_owned(), Value::String("user".to_owned()));
            if let Some(content) = content {
                message.insert("content".to_owned(), content);
            }
            Value::Object(message)
        })
}

fn arb_member() -> impl Strategy<Value = (String, Value)> {
    let user = prop_oneof![4 => arb_string_value(), 1 => arb_value()];
    let prompt = prop_oneof![
        3 => arb_string_value(),
        2 => prop::collection::vec(prop_oneof![3 => arb_string_value(), 1 => arb_value()], 0..3)
            .prop_map(Value::Array),
        1 => arb_value(),
    ];
    let messages = prop_oneof![
        6 => prop::collection::vec(prop_oneof![6 => arb_message(), 1 => arb_value()], 0..4)
            .prop_map(Value::Array),
        1 => arb_value(),
    ];
    prop_oneof![
        2 => user.prop_map(|value| ("user".to_owned(), value)),
        2 => prompt.prop_map(|value| ("prompt".to_owned(), value)),
        3 => messages.prop_map(|value| ("messages".to_owned(), value)),
        3 => (arb_key(), arb_value()),
    ]
}

/// Top-level members in document order (duplicates of the captured keys allowed, one `model`),
/// and the body `Writer` makes of them.
fn arb_request() -> impl Strategy<Value = (Vec<(String, Value)>, Vec<u8>)> {
    (
        prop::collection::vec(arb_member(), 0..6),
        any::<Index>(),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(|(mut members, at, seed, spaced)| {
            members.retain(|(key, _)| key != "model");
            members.insert(
                at.index(members.len() + 1),
                ("model".to_owned(), Value::String("m".to_owned())),
            );
            let mut writer = Writer {
                out: Vec::new(),
                seed,
                spaced,
            };
            writer.space();
            writer.members(members.iter().map(|(key, value)| (key, value)));
            writer.space();
            (members, writer.out)
        })
}

proptest! {
    #[test]
    fn captures_agree_with_the_oracle_at_any_chunking(
        (members, body) in arb_request(),
        user in any::<bool>(),
        prompt_prefix in prop_oneof![0usize..40, Just(256usize)],
        picks in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let capture = Capture {
            user,
            prompt_prefix,
            prompt_span: 0,
            members: false,
        };
        let bytewise: Vec<usize> = (1..body.len()).collect();
        let exact = run(&body, &bytewise, capture);
        let (expected_user, expected_prompt) = oracle(&members, prompt_prefix);
        prop_assert_eq!(&exact.user, &expected_user.filter(|_| user));
        prop_assert_eq!(&exact.prompt, &expected_prompt.filter(|_| prompt_prefix > 0));
        prop_assert_eq!(&exact.model, &Ok("m".to_owned()));
        prop_assert!(exact.done_at.is_some_and(|at| at <= body.len()), "done by the end");
        let whole = run(&body, &[], capture);
        prop_assert_eq!((&whole.model, &whole.span, &whole.user, &whole.prompt),
            (&exact.model, &exact.span, &exact.user, &exact.prompt));
        let cut = run(&body, &cut_points(body.len(), &picks), capture);
        prop_assert_eq!((&cut.model, &cut.span, &cut.user, &cut.prompt),
            (&exact.model, &exact.span, &exact.user, &exact.prompt));
    }

    #[test]
    fn captures_never_change_the_model_result(
        (_, body) in arb_request(),
        edits in prop::collection::vec(
            (any::<Index>(), 0u8..3, prop::sample::select(b"{}[]\":,\\ 0a-e\x01".to_vec())),
            0..4,
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
        let plain = run(&body, &[], Capture::default());
        let captured = run(&body, &[], both(32));
        prop_assert_eq!((&plain.model, &plain.span), (&captured.model, &captured.span));
        let cut = run(&body, &cut_points(body.len(), &picks), both(32));
        prop_assert_eq!((&cut.model, &cut.span, &cut.user, &cut.prompt),
            (&captured.model, &captured.span, &captured.user, &captured.prompt));
    }
}

fn span_only(prompt_span: usize) -> Capture {
    Capture {
        user: false,
        prompt_prefix: 0,
        prompt_span,
        members: false,
    }
}

/// The prompt span and the byte count at which `captures_done` first held, fed byte by byte
/// (the span must not depend on the chunking: checked against one whole feed).
fn span_of(body: &str, want: usize) -> (Option<Range<usize>>, Option<usize>) {
    let mut whole = ModelScanner::with_capture(span_only(want));
    let _ = whole.feed(body.as_bytes());
    let mut s = ModelScanner::with_capture(span_only(want));
    let mut done_at = None;
    for (i, b) in body.bytes().enumerate() {
        let _ = s.feed(&[b]);
        if done_at.is_none() && s.captures_done() {
            done_at = Some(i + 1);
        }
    }
    assert_eq!(s.prompt_span(), whole.prompt_span(), "{body}");
    (s.prompt_span(), done_at)
}

#[test]
fn prompt_span_is_the_raw_value_of_the_first_messages_or_prompt_member() {
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi \"x\""}],"max_tokens":2}"#;
    let start = chat.find("[{").unwrap();
    let end = chat.find(",\"max_tokens").unwrap();
    assert_eq!(span_of(chat, 1 << 20), (Some(start..end), Some(end + 1)));
    // Model after the prompt, blanks around the value, a string prompt.
    let late = r#"{ "prompt" : "abc" , "model":"m"}"#;
    let s = late.find("\"abc\"").unwrap();
    let (span, _) = span_of(late, 1 << 20);
    assert_eq!(span, Some(s..late.find(", \"model").unwrap()));
    assert_eq!(&late[span.unwrap()], "\"abc\" ");
    // The first of the two decides; a nested `messages` is not the member.
    let nested = r#"{"x":{"messages":[1]},"prompt":[1,2],"messages":"later"}"#;
    let (span, _) = span_of(nested, 1 << 20);
    assert_eq!(&nested[span.unwrap()], "[1,2]");
    // Absent: settled when the object closes, no span.
    assert_eq!(span_of(r#"{"model":"m"}"#, 64), (None, Some(13)));
    // Off: nothing recorded, done at once.
    let mut off = ModelScanner::with_capture(span_only(0));
    let _ = off.feed(chat.as_bytes());
    assert_eq!(off.prompt_span(), None);
}

#[test]
fn prompt_span_is_settled_after_the_requested_bytes_of_a_long_value() {
    let body = format!(
        r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(1000)
    );
    let start = body.find("[{").unwrap();
    let (span, done) = span_of(&body, 100);
    // Read on to the end here (byte by byte), the span covers the whole value...
    assert_eq!(span, Some(start..body.len() - 1));
    // ...but the pre-read could stop once 100 bytes of it were in.
    assert_eq!(done, Some(start + 100));
    // While open, the span ends at the bytes seen.
    let mut s = ModelScanner::with_capture(span_only(100));
    let _ = s.feed(&body.as_bytes()[..start + 10]);
    assert_eq!(s.prompt_span(), Some(start..start + 10));
}
