//! The two bodies of a prefill/decode request, spliced from the client's (request path, pure).
//!
//! The only place the gateway rewrites JSON besides the `model` value: members are removed and
//! added by splicing the client's bytes at the spans the bounded scanner recorded
//! ([`crate::scan::MemberSpan`]); nothing else is re-serialised, so every other byte (key order,
//! whitespace, escapes, unknown fields) reaches both servers as the client sent it.
//!
//! As vLLM's own disaggregated-serving proxies do (`tests/v1/kv_connector/nixl_integration/
//! toy_proxy_server.py`):
//! - the **prefill** body asks for one token, without streaming, and tells the prefill server
//!   the decode runs elsewhere: `stream`, `stream_options`, `max_tokens`, `min_tokens`,
//!   `min_completion_tokens` and the client's `kv_transfer_params` are removed, then
//!   `"kv_transfer_params":{"do_remote_decode":true,...}`, `"stream":false`, `"max_tokens":1`
//!   and, if the client sent it, `"max_completion_tokens":1` are added;
//! - the **decode** body is the client's with `kv_transfer_params` set to what the prefill
//!   server answered.

use std::ops::Range;

use crate::scan::MemberSpan;

/// `kv_transfer_params` of the prefill leg: decode happens remotely; nothing is known yet about
/// the blocks (the prefill server fills these in its answer).
pub const PREFILL_PARAMS: &str = r#"{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null}"#;

/// Where the client's body is edited: the members it has (by [`crate::scan::MEMBERS`] index), the closing
/// brace, and the `model` value (with what replaces it, when the backends serve another id).
#[derive(Debug, Clone)]
pub struct Layout<'a> {
    pub members: &'a [MemberSpan],
    /// Offset of the top-level `}`.
    pub end: usize,
    /// The `model` value's span and its replacement (a JSON string), if it changes.
    pub model: Option<(Range<usize>, &'a [u8])>,
}

const STREAM: usize = 0;
const STREAM_OPTIONS: usize = 1;
const MAX_TOKENS: usize = 2;
const MAX_COMPLETION_TOKENS: usize = 3;
const MIN_TOKENS: usize = 4;
const MIN_COMPLETION_TOKENS: usize = 5;
const KV_TRANSFER_PARAMS: usize = 6;

/// The prefill leg's body.
pub fn prefill(body: &[u8], layout: &Layout<'_>) -> Vec<u8> {
    let has = |which: usize| layout.members.iter().any(|m| m.which == which);
    let mut added =
        format!(r#""kv_transfer_params":{PREFILL_PARAMS},"stream":false,"max_tokens":1"#);
    if has(MAX_COMPLETION_TOKENS) {
        added.push_str(r#","max_completion_tokens":1"#);
    }
    let removed = [
        STREAM,
        STREAM_OPTIONS,
        MAX_TOKENS,
        MAX_COMPLETION_TOKENS,
        MIN_TOKENS,
        MIN_COMPLETION_TOKENS,
        KV_TRANSFER_PARAMS,
    ];
    splice(body, layout, &removed, added.as_bytes())
}

/// The decode leg's body: the client's, with `kv_transfer_params` set to `params` (raw JSON).
pub fn decode(body: &[u8], layout: &Layout<'_>, params: &[u8]) -> Vec<u8> {
    let mut added = br#""kv_transfer_params":"#.to_vec();
    added.extend_from_slice(params);
    splice(body, layout, &[KV_TRANSFER_PARAMS], &added)
}

/// `body` without the members in `removed` (by [`crate::scan::MEMBERS`] index), with `added` (one or more
/// `"key":value` members) before the closing brace, and the model value replaced.
fn splice(body: &[u8], layout: &Layout<'_>, removed: &[usize], added: &[u8]) -> Vec<u8> {
    let mut cuts = merged(
        layout
            .members
            .iter()
            .filter(|m| removed.contains(&m.which))
            .map(|m| member_cut(body, m))
            .collect(),
    );
    // A removed run that reaches the closing brace also takes the comma before the run.
    if let Some(last) = cuts.last_mut().filter(|c| c.end == layout.end) {
        let before = body[..last.start]
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
        if let Some(i) = before.filter(|&i| body[i] == b',') {
            last.start = i;
        }
    }
    // A comma before the added members unless nothing is left in the object.
    let left = (1..layout.end)
        .filter(|i| !cuts.iter().any(|c| c.contains(i)))
        .any(|i| !matches!(body[i], b' ' | b'\t' | b'\r' | b'\n'));
    let mut insert = if left { b",".to_vec() } else { Vec::new() };
    insert.extend_from_slice(added);
    let mut edits: Vec<(Range<usize>, &[u8])> = cuts.into_iter().map(|c| (c, &b""[..])).collect();
    if let Some((span, value)) = &layout.model {
        edits.push((span.clone(), value));
    }
    edits.push((layout.end..layout.end, &insert));
    edits.sort_by_key(|(r, _)| (r.start, r.end));
    let mut out = Vec::with_capacity(body.len() + insert.len());
    let mut at = 0;
    for (range, with) in edits {
        out.extend_from_slice(&body[at..range.start.max(at)]);
        out.extend_from_slice(with);
        at = at.max(range.end);
    }
    out.extend_from_slice(&body[at..]);
    out
}

/// The bytes to cut to remove member `m`: through the `,` after it (the last member's leading
/// comma is taken by the caller).
fn member_cut(body: &[u8], m: &MemberSpan) -> Range<usize> {
    m.start..m.end + usize::from(body.get(m.end) == Some(&b','))
}

/// `ranges` sorted, with overlapping or touching ones joined (two removed neighbours share the
/// comma between them).
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::scan::{Capture, ModelScanner};

    fn layout_of(body: &str) -> (Vec<MemberSpan>, usize, Range<usize>) {
        let mut s = ModelScanner::with_capture(Capture {
            members: true,
            ..Capture::default()
        });
        s.feed(body.as_bytes()).unwrap();
        s.finish().unwrap();
        let (m, end) = s.members();
        (m.to_vec(), end.unwrap(), s.model_span().unwrap())
    }

    fn both(body: &str, model: Option<&str>) -> (Value, Value) {
        let (members, end, span) = layout_of(body);
        let value = model.map(|m| serde_json::to_vec(m).unwrap());
        let layout = Layout {
            members: &members,
            end,
            model: value.as_deref().map(|v| (span, v)),
        };
        let p = prefill(body.as_bytes(), &layout);
        let d = decode(
            body.as_bytes(),
            &layout,
            br#"{"remote_block_ids":[1,2],"remote_engine_id":"e"}"#,
        );
        (
            serde_json::from_slice(&p)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&p))),
            serde_json::from_slice(&d)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&d))),
        )
    }

    #[test]
    fn prefill_asks_for_one_unstreamed_token_and_decode_carries_the_params() {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true,"stream_options":{"include_usage":true},"max_tokens":50,"min_tokens":3,"temperature":0.5}"#;
        let (p, d) = both(body, None);
        assert_eq!(
            p,
            json!({"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0.5,
                "kv_transfer_params":{"do_remote_decode":true,"do_remote_prefill":false,"remote_engine_id":null,"remote_block_ids":null,"remote_host":null,"remote_port":null},
                "stream":false,"max_tokens":1})
        );
        let mut want: Value = serde_json::from_str(body).unwrap();
        want["kv_transfer_params"] = json!({"remote_block_ids":[1,2],"remote_engine_id":"e"});
        assert_eq!(d, want);
    }

    #[test]
    fn every_position_order_and_duplicate_is_handled() {
        for body in [
            r#"{"stream":true,"model":"m","prompt":"x"}"#,
            r#"{"model":"m","prompt":"x","stream":true}"#,
            r#"{ "max_tokens" : 5 , "model" : "m" , "stream" : true , "prompt" : "x" }"#,
            r#"{"model":"m","max_completion_tokens":9,"prompt":"x","kv_transfer_params":{"a":1}}"#,
            r#"{"model":"m","stream":true,"stream":false,"prompt":"x"}"#,
            r#"{"model":"m","prompt":"x","stream":true,"max_tokens":5}"#,
            r#"{"stream":true,"max_tokens":5,"prompt":"x","min_tokens":1,"model":"m"}"#,
            "{\n  \"model\": \"m\",\n  \"prompt\": \"x\",\n  \"stream\": true\n}\n",
        ] {
            let (p, d) = both(body, None);
            let client: Value = serde_json::from_str(body).unwrap();
            assert_eq!(p["stream"], false, "{body}");
            assert_eq!(p["max_tokens"], 1, "{body}");
            assert_eq!(p["kv_transfer_params"]["do_remote_decode"], true, "{body}");
            assert_eq!(p["prompt"], "x");
            assert_eq!(
                p.get("max_completion_tokens").is_some(),
                client.get("max_completion_tokens").is_some(),
                "{body}"
            );
            assert_eq!(d["kv_transfer_params"]["remote_engine_id"], "e", "{body}");
            assert_eq!(d["model"], "m");
            // The decode body keeps everything else as sent.
            for (k, v) in client.as_object().unwrap() {
                if k != "kv_transfer_params" && k != "stream" {
                    assert_eq!(&d[k], v, "{body}: {k}");
                }
            }
        }
    }

    #[test]
    fn an_object_left_empty_gets_no_leading_comma() {
        let body = r#"{"stream":true, "max_tokens":3}"#;
        let mut s = ModelScanner::with_capture(Capture {
            members: true,
            ..Capture::default()
        });
        s.feed(body.as_bytes()).unwrap();
        let (members, end) = s.members();
        let layout = Layout {
            members,
            end: end.unwrap(),
            model: None,
        };
        let p: Value = serde_json::from_slice(&prefill(body.as_bytes(), &layout)).unwrap();
        assert_eq!(p["max_tokens"], 1);
        assert_eq!(p.as_object().unwrap().len(), 3);
    }

    #[test]
    fn the_model_value_is_spliced_and_other_bytes_kept() {
        let body = r#"{"model":"alias","messages":[{"role":"user","content":"caf\u00e9  "}],"stream":true}"#;
        let (members, end, span) = layout_of(body);
        let layout = Layout {
            members: &members,
            end,
            model: Some((span, br#""served""#)),
        };
        let d = decode(body.as_bytes(), &layout, b"{}");
        assert_eq!(
            String::from_utf8(d).unwrap(),
            r#"{"model":"served","messages":[{"role":"user","content":"caf\u00e9  "}],"stream":true,"kv_transfer_params":{}}"#
        );
    }
}
