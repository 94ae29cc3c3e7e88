//! Token usage from a response without buffering it (request path).
//!
//! vLLM puts `usage` at the end: the last keys of a non-stream JSON body, and the last chunk
//! before `data: [DONE]` of a stream asked for `stream_options.include_usage`. [`Tail`] keeps
//! only the last few KiB of the body as it streams by; at the end the last `"usage"` object in
//! it is read for `prompt_tokens` and `completion_tokens`.

use std::sync::LazyLock;

use memchr::memmem;

// Searchers built once: building one per search cost more than the search itself.
static USAGE: LazyLock<memmem::FinderRev<'static>> =
    LazyLock::new(|| memmem::FinderRev::new(b"\"usage\""));
static PROMPT: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"prompt_tokens\""));
static COMPLETION: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"completion_tokens\""));
static CACHED: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"cached_tokens\""));

/// Bytes kept from the end of a response: a usage object is ~200 bytes, the closing keys of a
/// vLLM body (`prompt_logprobs`, `kv_transfer_params`…) a few hundred more.
const KEEP: usize = 4096;

/// The last few KiB of a response body.
#[derive(Debug, Default)]
pub struct Tail {
    buf: Vec<u8>,
}

/// Token counts a backend reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// `prompt_tokens_details.cached_tokens` (vLLM with `--enable-prompt-tokens-details`): the
    /// prompt tokens served from the prefix cache. `None` when not reported.
    pub cached_tokens: Option<u64>,
}

impl Tail {
    /// Remember the end of `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.len() >= KEEP {
            self.buf.clear();
            self.buf.extend_from_slice(&chunk[chunk.len() - KEEP..]);
            return;
        }
        let overflow = (self.buf.len() + chunk.len()).saturating_sub(KEEP);
        if overflow > 0 {
            self.buf.drain(..overflow);
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The usage reported in the last `"usage"` object seen, if any.
    pub fn usage(&self) -> Option<Usage> {
        let at = USAGE.rfind(&self.buf)?;
        let rest = &self.buf[at + 7..];
        let rest = skip_ws(rest).strip_prefix(b":")?;
        let rest = skip_ws(rest);
        if !rest.starts_with(b"{") {
            return None; // `"usage": null`
        }
        let obj = &rest[..object_end(rest)];
        Some(Usage {
            prompt_tokens: number_after(obj, &PROMPT)?,
            completion_tokens: number_after(obj, &COMPLETION).unwrap_or(0),
            cached_tokens: number_after(obj, &CACHED),
        })
    }
}

/// Length of the object `obj` starts with (through its closing brace), counting nested braces
/// (usage holds `prompt_tokens_details`, and no strings); all of `obj` if it never closes.
fn object_end(obj: &[u8]) -> usize {
    let mut depth = 0usize;
    for (i, &b) in obj.iter().enumerate() {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    obj.len()
}

fn skip_ws(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &b[n..]
}

fn number_after(obj: &[u8], key: &memmem::Finder<'static>) -> Option<u64> {
    let at = key.find(obj)?;
    let rest = skip_ws(&obj[at + key.needle().len()..]).strip_prefix(b":")?;
    let rest = skip_ws(rest);
    let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 18 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage_of(parts: &[&[u8]]) -> Option<Usage> {
        let mut t = Tail::default();
        for p in parts {
            t.feed(p);
        }
        t.usage()
    }

    #[test]
    fn non_stream_body() {
        let body = br#"{"id":"x","choices":[{"index":0}],"usage":{"prompt_tokens":9,"total_tokens":25,"completion_tokens":16,"prompt_tokens_details":null},"prompt_logprobs":null}"#;
        let u = usage_of(&[body]).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (9, 16));
    }

    #[test]
    fn final_stream_chunk_split_across_reads() {
        let s = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\": {\"prompt_tokens\": 12, \"completion_tokens\": 7, \"total_tokens\": 19}}\n\ndata: [DONE]\n\n";
        for cut in 0..s.len() {
            let u = usage_of(&[&s[..cut], &s[cut..]]).unwrap();
            assert_eq!(
                (u.prompt_tokens, u.completion_tokens),
                (12, 7),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn cached_tokens_are_read_from_prompt_tokens_details() {
        let body = br#"{"usage":{"prompt_tokens":2304,"total_tokens":2432,"completion_tokens":128,"prompt_tokens_details":{"cached_tokens":2048}},"kv_transfer_params":null}"#;
        let u = usage_of(&[body]).unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.cached_tokens),
            (2304, 128, Some(2048))
        );
        // Details after the counts, or null: the counts are still read.
        let body = br#"{"usage":{"prompt_tokens_details":{"cached_tokens":0},"prompt_tokens":5,"completion_tokens":1}}"#;
        assert_eq!(usage_of(&[body]).unwrap().cached_tokens, Some(0));
        assert_eq!(usage_of(&[body]).unwrap().prompt_tokens, 5);
        let body =
            br#"{"usage":{"prompt_tokens":5,"completion_tokens":1,"prompt_tokens_details":null}}"#;
        assert_eq!(usage_of(&[body]).unwrap().cached_tokens, None);
    }

    #[test]
    fn absent_or_null_usage() {
        assert_eq!(
            usage_of(&[b"data: {\"usage\":null}\n\ndata: [DONE]\n\n"]),
            None
        );
        assert_eq!(usage_of(&[b"{\"choices\":[]}"]), None);
        assert_eq!(usage_of(&[b""]), None);
    }

    #[test]
    fn only_the_tail_is_kept() {
        let mut t = Tail::default();
        let big = vec![b'x'; 100_000];
        t.feed(br#"{"usage":{"prompt_tokens":1,"completion_tokens":1}}"#);
        t.feed(&big);
        assert!(t.buf.len() <= KEEP);
        assert_eq!(
            t.usage(),
            None,
            "usage far before the end is not the final one"
        );
        for _ in 0..100 {
            t.feed(b"0123456789");
        }
        assert_eq!(t.buf.len(), KEEP);
    }
}
