//! One streamed chat request as routebench times it: send, read the SSE answer, note the first
//! generated token and the end.
//!
//! Runs on the timed path of a point, once per request, in its own task. It must stay cheap
//! (one small JSON parse per event) so the load generator is never the bottleneck, and it must
//! never wait without a bound: the caller gives every exchange a deadline.
//!
//! Definitions (simulated seconds = wall-clock ÷ the time scale, measured from the request's
//! *scheduled* send time, so a late generator counts against the numbers, never for them):
//! - TTFT: until the first SSE `data:` event carrying generated text (`delta.content` for chat,
//!   `text` for completions, non-empty). Chat's role-only first chunk does not count.
//! - E2E: until `data: [DONE]`.
//! - Output tokens: events carrying generated text (the simulator sends one per token).

use std::time::{Duration, Instant};

use futures_util::StreamExt;

/// What one request produced.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Simulated seconds to the first generated token; `None` if none came.
    pub ttft: Option<f64>,
    /// Simulated seconds to `[DONE]`; `None` on any failure.
    pub e2e: Option<f64>,
    /// Why it failed (`http_503`, `timeout`, `connect`, `truncated`, ...), `None` on success.
    pub error: Option<String>,
    /// Events that carried generated text.
    pub output_tokens: u32,
    /// From the final usage chunk.
    pub prompt_tokens: Option<u64>,
    /// `usage.prompt_tokens_details.cached_tokens`.
    pub cached_tokens: Option<u64>,
    /// The serving backend as the response names it (`x-mock-backend`, else
    /// `x-modelgate-backend`).
    pub backend: Option<String>,
    /// The generated text, kept only when asked (multi-turn history).
    pub text: String,
}

/// One request to send.
pub struct Exchange<'a> {
    pub client: &'a reqwest::Client,
    /// Full URL of the chat endpoint.
    pub url: &'a str,
    pub body: Vec<u8>,
    /// `x-session-id` header, if any.
    pub session: Option<&'a str>,
    /// When the request was due; latencies are measured from here.
    pub origin: Instant,
    /// Real seconds per simulated second.
    pub scale: f64,
    /// Longest real time the whole exchange may take.
    pub timeout: Duration,
    /// Keep the generated text in [`Outcome::text`].
    pub keep_text: bool,
}

impl Exchange<'_> {
    /// Runs the exchange to its end, its failure or its deadline.
    pub async fn run(self) -> Outcome {
        let mut outcome = Outcome::default();
        let deadline = tokio::time::Instant::from_std(self.origin) + self.timeout;
        let origin = self.origin;
        let scale = self.scale;
        let keep_text = self.keep_text;
        let result = tokio::time::timeout_at(deadline, async {
            let mut request = self
                .client
                .post(self.url)
                .header("content-type", "application/json")
                .body(self.body);
            if let Some(id) = self.session {
                request = request.header("x-session-id", id);
            }
            let response = request.send().await.map_err(|e| classify(&e))?;
            let headers = response.headers();
            outcome.backend = ["x-mock-backend", "x-modelgate-backend"]
                .iter()
                .find_map(|h| headers.get(*h))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = response.status();
            if !status.is_success() {
                return Err(format!("http_{}", status.as_u16()));
            }
            let mut parser = SseParser::default();
            let mut stream = response.bytes_stream();
            let mut done = false;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| classify(&e))?;
                let now = Instant::now();
                parser.feed(&chunk, |event| match event {
                    Event::Done => done = true,
                    Event::Chunk(data) => {
                        let Ok(parsed) = serde_json::from_slice::<StreamChunk>(data) else {
                            return;
                        };
                        let mut generated = false;
                        for piece in parsed.generated() {
                            generated = true;
                            if keep_text {
                                outcome.text.push_str(piece);
                            }
                        }
                        if generated {
                            outcome.output_tokens += 1;
                            if outcome.ttft.is_none() {
                                outcome.ttft = Some(sim_seconds(origin, now, scale));
                            }
                        }
                        if let Some(usage) = parsed.usage {
                            outcome.prompt_tokens = Some(usage.prompt_tokens);
                            outcome.cached_tokens = usage
                                .prompt_tokens_details
                                .and_then(|d| d.cached_tokens)
                                .or(Some(0));
                        }
                    }
                });
                if done {
                    outcome.e2e = Some(sim_seconds(origin, now, scale));
                    return Ok(());
                }
            }
            Err("truncated".to_owned())
        })
        .await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(kind)) => outcome.error = Some(kind),
            Err(_) => outcome.error = Some("timeout".to_owned()),
        }
        if outcome.error.is_some() {
            // A failed request has no end; its TTFT stays if a token came (it did arrive), but
            // the report counts every failure as infinite anyway.
            outcome.e2e = None;
        }
        outcome
    }
}

fn sim_seconds(origin: Instant, now: Instant, scale: f64) -> f64 {
    now.saturating_duration_since(origin).as_secs_f64() / scale
}

/// Short, stable error kinds for the report.
fn classify(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".to_owned()
    } else if e.is_connect() {
        "connect".to_owned()
    } else if e.is_body() || e.is_decode() {
        "body".to_owned()
    } else {
        "request".to_owned()
    }
}

#[derive(serde::Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

impl StreamChunk {
    /// The non-empty generated pieces of this chunk (none for chat's role-only chunk, the
    /// finish chunk and the usage chunk).
    fn generated(&self) -> impl Iterator<Item = &str> {
        self.choices.iter().filter_map(|choice| {
            let piece = choice
                .delta
                .as_ref()
                .and_then(|d| d.content.as_deref())
                .or(choice.text.as_deref())?;
            (!piece.is_empty()).then_some(piece)
        })
    }
}

#[derive(serde::Deserialize)]
struct Choice {
    delta: Option<Delta>,
    text: Option<String>,
}

#[derive(serde::Deserialize)]
struct Delta {
    content: Option<String>,
}

#[derive(serde::Deserialize)]
struct Usage {
    prompt_tokens: u64,
    prompt_tokens_details: Option<Details>,
}

#[derive(serde::Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

/// One SSE event's data.
#[derive(Debug, PartialEq)]
pub enum Event<'a> {
    /// `data: [DONE]`.
    Done,
    /// Any other data (JSON).
    Chunk(&'a [u8]),
}

/// Splits an SSE byte stream into events at blank lines, across chunk boundaries.
#[derive(Default)]
pub struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    /// Appends `bytes` and calls `on_event` with the data of each event completed.
    pub fn feed(&mut self, bytes: &[u8], mut on_event: impl FnMut(Event<'_>)) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(end) = find_blank_line(&self.buf[start..]) {
            let event = &self.buf[start..start + end.0];
            for line in event.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(data) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let data = data.strip_prefix(b" ").unwrap_or(data);
                if data == b"[DONE]" {
                    on_event(Event::Done);
                } else if !data.is_empty() {
                    on_event(Event::Chunk(data));
                }
            }
            start += end.1;
        }
        self.buf.drain(..start);
    }
}

/// (end of the event, start of the next) for the first `\n\n` or `\r\n\r\n`.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let i = memchr::memmem::find(buf, b"\n\n");
    let j = memchr::memmem::find(buf, b"\r\n\r\n");
    match (i, j) {
        (Some(i), Some(j)) if j < i => Some((j, j + 4)),
        (Some(i), _) => Some((i, i + 2)),
        (None, Some(j)) => Some((j, j + 4)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&[u8]]) -> Vec<String> {
        let mut parser = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            parser.feed(c, |e| {
                out.push(match e {
                    Event::Done => "DONE".to_owned(),
                    Event::Chunk(d) => String::from_utf8_lossy(d).into_owned(),
                })
            });
        }
        out
    }

    #[test]
    fn sse_events_across_chunk_boundaries() {
        let all: &[u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\r\n\r\n: comment\n\ndata: [DONE]\n\n";
        let whole = events(&[all]);
        assert_eq!(whole, ["{\"a\":1}", "{\"b\":2}", "DONE"]);
        for cut in 1..all.len() {
            assert_eq!(events(&[&all[..cut], &all[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn role_chunk_is_not_a_token() {
        let role = br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        let token = br#"{"choices":[{"index":0,"delta":{"content":"tok0 "}}]}"#;
        let text = br#"{"choices":[{"index":0,"text":"x"}]}"#;
        let has = |d: &[u8]| {
            let c: StreamChunk = serde_json::from_slice(d).unwrap();
            c.generated().count() > 0
        };
        assert!(!has(role));
        assert!(has(token));
        assert!(has(text));
        let usage = br#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":2,"total_tokens":12,"prompt_tokens_details":{"cached_tokens":8}}}"#;
        let c: StreamChunk = serde_json::from_slice(usage).unwrap();
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.prompt_tokens_details.unwrap().cached_tokens
            ),
            (10, Some(8))
        );
    }
}
