//! Incremental finder of the top-level `"model"` string in a JSON request body.
//!
//! Runs on the request path: `proxy/body.rs` feeds it the body chunks as they arrive, split at
//! arbitrary byte boundaries, and routes on the model name before the body is forwarded. It must
//! not parse or buffer the document: its state is a few dozen bytes plus the model value itself
//! (capped at [`MAX_MODEL_BYTES`]), it never recurses (nesting is a counter, so a body of a
//! million `[` cannot overflow the stack), and it never panics on any input.
//!
//! # What is checked
//!
//! Everything the scanner needs to be *right* about is checked strictly: the top-level object's
//! grammar (keys, `:`, `,`, `}`), every string (escapes, `\uXXXX`, raw control characters),
//! numbers (the full JSON number grammar) and the literals `true`, `false`, `null`. For a valid
//! document the result is exactly what a JSON parser would say, so the gateway and the backend
//! cannot disagree on the model. Inside skipped nested values the grammar is checked loosely:
//! brackets are counted (and their kinds matched for the innermost 64 levels), strings, numbers
//! and literals are lexed strictly, but the placement of `,` and `:` and the UTF-8 validity of
//! skipped strings are not checked. Such bodies are invalid JSON that the backend rejects, so
//! accepting them here cannot route a request differently from how the backend reads it.
//!
//! # Decisions
//!
//! - A lone UTF-16 surrogate (`\uD800` without a following low surrogate, or a lone low one) in
//!   the model value is [`ScanError::ModelNotUtf8`]: the escape is syntactically valid JSON, but
//!   the value is not a Unicode string. Lone surrogates in skipped strings and keys are accepted.
//! - A UTF-8 byte order mark is invalid JSON (RFC 8259 §8.1 forbids sending one).
//! - A second top-level `"model"` key is [`ScanError::DuplicateModel`] even after `Found`
//!   (parsers disagree on which duplicate wins). Other syntax errors after `Found` are not
//!   reported: the scanner stops checking and the backend judges the rest.
//! - An empty or truncated body is [`ScanError::InvalidJson`] at the end offset, unless the
//!   model had already been found.
//!
//! # Captures
//!
//! Built with [`ModelScanner::with_capture`], the same pass also keeps the top-level `"user"`
//! string and a prefix of the first prompt text (see [`Capture`]), for sticky routing. Captures
//! never change the model result or raise an error; [`ModelScanner::captures_done`] says when
//! reading further cannot change them. `multipart.rs` holds the equivalent model finder for
//! `multipart/form-data` bodies.

use std::ops::Range;

mod capture;
mod lex;
pub mod multipart;
mod strings;

#[cfg(test)]
mod capture_tests;
#[cfg(test)]
mod multipart_tests;
#[cfg(test)]
mod tests;

use capture::{Action, Seek, Span, TextBuf, USER_BUFFER_BYTES};
pub use capture::{Capture, MAX_PROMPT_PREFIX_BYTES, MAX_USER_BYTES};
use lex::is_whitespace;

/// Decoded model names longer than this many bytes are rejected with [`ScanError::ModelTooLong`].
///
/// Real model names are well under 256 bytes; 1 KiB bounds what the scanner buffers per request.
pub const MAX_MODEL_BYTES: usize = 1024;

/// Why a request body was rejected by the scanner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The body is not JSON; `offset` is the absolute byte offset of the first offending byte
    /// (the body length when it was empty or truncated).
    #[error("request body is not valid JSON (at byte {offset})")]
    InvalidJson {
        /// Absolute byte offset in the body.
        offset: usize,
    },
    /// The top-level value is an array, string, number or literal.
    #[error("request body must be a JSON object")]
    NotAnObject,
    /// The top-level object closed without a `"model"` key.
    #[error("request body has no \"model\" field")]
    MissingModel,
    /// The top-level `"model"` value is a number, object, array, `null`, `true` or `false`.
    #[error("\"model\" must be a string")]
    ModelNotString,
    /// The top-level object has more than one `"model"` key (compared after decoding escapes).
    #[error("\"model\" appears more than once")]
    DuplicateModel,
    /// The decoded model value is longer than [`MAX_MODEL_BYTES`].
    #[error("\"model\" is longer than {MAX_MODEL_BYTES} bytes")]
    ModelTooLong,
    /// The model value holds invalid UTF-8 or a lone UTF-16 surrogate escape.
    #[error("\"model\" is not valid UTF-8")]
    ModelNotUtf8,
    /// The body is not `multipart/form-data` with the declared boundary (or the boundary itself
    /// is invalid); `offset` is the absolute byte offset of the first offending byte (the body
    /// length when it was empty or truncated). Only [`multipart::MultipartModelScanner`]
    /// reports it.
    #[error("request body is not valid multipart/form-data (at byte {offset})")]
    InvalidMultipart {
        /// Absolute byte offset in the body.
        offset: usize,
    },
}

/// Progress reported by [`ModelScanner::feed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanStatus {
    /// The model value has not been seen completely yet.
    NeedMore,
    /// The complete top-level model string has been seen; see [`ModelScanner::model`].
    Found,
}

/// Where the scanner is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before the top-level `{`.
    Start,
    /// After the top-level `{`: a key or `}`.
    FirstKey,
    /// After a top-level `,`: a key.
    NextKey,
    /// After a top-level key: `:`.
    Colon,
    /// After a top-level `:`: the member's value.
    Value,
    /// After a top-level member's value: `,` or `}`.
    AfterValue,
    /// Inside a skipped array or object (`depth > 0`), between tokens.
    Nested,
    /// Inside a string.
    Str { target: Target, escape: Escape },
    /// Inside a number.
    Number(Num),
    /// Inside `true`, `false` or `null`: `matched` bytes of `LITERALS[literal]` seen.
    Literal { literal: u8, matched: u8 },
    /// After the top-level `}`: whitespace only.
    Trailing,
}

/// What a string's decoded content is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A top-level key, collected to compare with `model`.
    Key,
    /// The top-level model value, collected and returned.
    Model,
    /// Anything else: validated and dropped.
    Skip,
    /// The top-level user value, captured.
    User,
    /// The first prompt text, captured up to the prefix length.
    Prompt,
    /// A key inside `messages[0]` or one of its content parts, collected for the prompt search.
    InnerKey,
}

/// Which top-level member's value comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Member {
    Model,
    /// The first top-level `user`, when captured.
    User,
    /// The first top-level `prompt`, when no `messages` came first and the prefix is captured.
    Prompt,
    /// The first top-level `messages`, likewise.
    Messages,
    Other,
}

/// Escape progress inside a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    /// Plain content.
    None,
    /// After `\`.
    Backslash,
    /// After `\u` and `digits` hex digits (0..=3) accumulated into `value`.
    Hex { digits: u8, value: u16 },
}

/// Position in the JSON number grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Num {
    /// After `-`: a digit must follow.
    Minus,
    /// A leading `0` (terminal).
    Zero,
    /// Integer digits (terminal).
    Int,
    /// After `.`: a digit must follow.
    Dot,
    /// Fraction digits (terminal).
    Frac,
    /// After `e`/`E`: a sign or digit must follow.
    Exp,
    /// After the exponent sign: a digit must follow.
    ExpSign,
    /// Exponent digits (terminal).
    ExpDigits,
}

/// The literals, indexed by `State::Literal::literal`.
const LITERALS: [&[u8]; 3] = [b"true", b"false", b"null"];

/// Levels whose container kind is remembered (one bit each in `ModelScanner::kinds`).
const KIND_BITS: usize = 64;

/// Why scanning stopped inside a chunk.
enum Stop {
    /// A JSON syntax error at this absolute offset.
    Syntax(usize),
    /// A semantic rejection, reported even after `Found` (only `DuplicateModel` can occur then).
    Reject(ScanError),
}

/// The decoded text of the current key, kept only while it can still be one the scanner looks
/// for (`model`, `user`, `prompt`, `messages`, `content`, `text`, and the [`MEMBERS`]: at most
/// [`KEY_BYTES`] ASCII bytes).
#[derive(Debug, Clone, Default)]
struct KeyBuf {
    bytes: [u8; KEY_BYTES],
    len: usize,
    /// False once the key is known to be none of them (too long or non-ASCII).
    possible: bool,
}

impl KeyBuf {
    fn reset(&mut self) {
        self.len = 0;
        self.possible = true;
    }

    fn push(&mut self, run: &[u8]) {
        if !self.possible || run.is_empty() {
            return;
        }
        let end = self.len.saturating_add(run.len());
        match self.bytes.get_mut(self.len..end) {
            Some(slot) => {
                slot.copy_from_slice(run);
                self.len = end;
            }
            // Longer than any key looked for, so stop collecting.
            None => self.possible = false,
        }
    }

    fn is(&self, name: &[u8]) -> bool {
        self.possible && self.bytes.get(..self.len) == Some(name)
    }

    fn is_model(&self) -> bool {
        self.is(b"model")
    }
}

/// The longest key the scanner compares (`max_completion_tokens`).
const KEY_BYTES: usize = 24;

/// Top-level members whose place in the body [`Capture::members`] records, for the
/// prefill/decode rewrite: the index in this list is [`MemberSpan::which`].
pub const MEMBERS: [&str; 7] = [
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "min_tokens",
    "min_completion_tokens",
    "kv_transfer_params",
];

/// Where one top-level member named in [`MEMBERS`] lies in the body (absolute offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSpan {
    /// Index of its key in [`MEMBERS`].
    pub which: usize,
    /// The key's opening quote.
    pub start: usize,
    /// The `,` or `}` after the value (the value and trailing blanks end here).
    pub end: usize,
}

/// Incremental scanner for the top-level `"model"` string of a JSON object.
///
/// Feed the body with [`feed`](Self::feed) in chunks split anywhere, then call
/// [`finish`](Self::finish) at the end of the body. Memory use is constant apart from the model
/// value (at most [`MAX_MODEL_BYTES`]) and the captures (at most [`MAX_USER_BYTES`] + 4 and
/// [`Capture::prompt_prefix`]); there is no recursion.
///
/// ```
/// use modelgate::scan::{Capture, ModelScanner, ScanStatus};
///
/// let mut s = ModelScanner::with_capture(Capture { user: true, prompt_prefix: 8, ..Capture::default() });
/// s.feed(br#"{"messages":[{"role":"user","content":"Bonjour \u00e0 tous"}],"#).unwrap();
/// assert_eq!(s.prompt_prefix(), Some("Bonjour ".as_bytes()));
/// assert!(!s.captures_done(), "a top-level user may still come");
/// assert_eq!(s.feed(br#""user":"u-42","model":"m"}"#), Ok(ScanStatus::Found));
/// assert_eq!(s.user(), Some("u-42"));
/// assert!(s.captures_done());
/// ```
#[derive(Debug, Clone)]
pub struct ModelScanner {
    state: State,
    /// Nesting depth inside a skipped top-level value; 0 between the top-level members.
    depth: usize,
    /// Bit `d - 1` is set when the container at depth `d` (for `d <= KIND_BITS`) is an array.
    kinds: u64,
    key: KeyBuf,
    /// What the current top-level key is, for its value.
    member: Member,
    /// A high surrogate from `\uD800`..`\uDBFF` in the model value waiting for its low half; 0
    /// when none (0 is not a surrogate).
    pending_high: u16,
    /// The model value decoded so far (UTF-8 checked when it closes).
    raw_model: Vec<u8>,
    model: Option<String>,
    /// Absolute offset of the model value's opening quote.
    span_start: usize,
    span: Option<Range<usize>>,
    seen: usize,
    error: Option<ScanError>,
    /// The model was found and later bytes were not JSON: stop looking at the body.
    unchecked: bool,
    /// `finish` was called.
    finished: bool,
    capture: Capture,
    /// The top-level `user` is found, absent (first one not a string) or not requested.
    user_resolved: bool,
    user_text: TextBuf,
    user: Option<String>,
    seek: Seek,
    prompt_text: TextBuf,
    prompt_found: bool,
    prompt_span: Span,
    /// [`Capture::members`]: the spans found so far, the [`MEMBERS`] index of the member whose
    /// value is being read, the offset of its key, and the closing `}`.
    members: Vec<MemberSpan>,
    member_now: Option<usize>,
    key_at: usize,
    object_end: Option<usize>,
}

impl Default for ModelScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelScanner {
    /// A scanner at the start of a body that captures nothing but the model.
    pub fn new() -> Self {
        Self::with_capture(Capture::default())
    }

    /// A scanner at the start of a body that also captures what `capture` asks for.
    /// `capture.prompt_prefix` is clamped to [`MAX_PROMPT_PREFIX_BYTES`].
    pub fn with_capture(capture: Capture) -> Self {
        let capture = Capture {
            prompt_prefix: capture.prompt_prefix.min(MAX_PROMPT_PREFIX_BYTES),
            ..capture
        };
        Self {
            state: State::Start,
            depth: 0,
            kinds: 0,
            key: KeyBuf::default(),
            member: Member::Other,
            pending_high: 0,
            raw_model: Vec::new(),
            model: None,
            span_start: 0,
            span: None,
            seen: 0,
            error: None,
            unchecked: false,
            finished: false,
            capture,
            user_resolved: !capture.user,
            user_text: TextBuf::default(),
            user: None,
            seek: if capture.prompt_prefix == 0 {
                Seek::Done
            } else {
                Seek::Idle
            },
            prompt_text: TextBuf::default(),
            prompt_found: false,
            prompt_span: Span::Idle,
            members: Vec::new(),
            member_now: None,
            key_at: 0,
            object_end: None,
        }
    }

    /// Feeds the next chunk of the body (any length, split anywhere, empty allowed).
    ///
    /// Returns `Found` once the complete top-level model string has been seen, and keeps
    /// returning it on later calls unless an error shows up. After `Found`, later chunks are
    /// scanned only to detect a second top-level `"model"` key (`Err(DuplicateModel)`); a syntax
    /// error after `Found` is not reported and stops all checking. Before `Found`, a syntax error
    /// is `Err(InvalidJson { offset })` with the absolute byte offset. After an `Err`, every later
    /// call returns the same `Err`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<ScanStatus, ScanError> {
        let base = self.seen;
        self.seen = self.seen.saturating_add(chunk.len());
        if self.error.is_none() && !self.unchecked {
            match self.scan(chunk, base) {
                Ok(()) => {}
                Err(Stop::Syntax(_)) if self.model.is_some() => self.unchecked = true,
                Err(Stop::Syntax(offset)) => self.error = Some(ScanError::InvalidJson { offset }),
                Err(Stop::Reject(error)) => self.error = Some(error),
            }
        }
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        Ok(if self.model.is_some() {
            ScanStatus::Found
        } else {
            ScanStatus::NeedMore
        })
    }

    /// Ends the body and returns the model.
    ///
    /// `Ok` if the model was found and no duplicate was seen (even if the body was truncated
    /// after it). Otherwise the error already reported by [`feed`](Self::feed), or
    /// `MissingModel` if the top-level object closed without a model, or `InvalidJson` at the
    /// body length if the body was empty or truncated. The outcome is sticky.
    pub fn finish(&mut self) -> Result<&str, ScanError> {
        self.finished = true;
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if let Some(model) = &self.model {
            return Ok(model);
        }
        let error = if self.state == State::Trailing {
            ScanError::MissingModel
        } else {
            ScanError::InvalidJson { offset: self.seen }
        };
        self.error = Some(error.clone());
        Err(error)
    }

    /// The decoded model value (escapes resolved) once found. It stays set if a later error
    /// (such as `DuplicateModel`) is reported, so check the result of `feed`/`finish` first.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The absolute byte range of the raw model value in the body, quotes included, once found.
    pub fn model_span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// Total bytes fed so far.
    pub fn bytes_seen(&self) -> usize {
        self.seen
    }

    /// What this scanner captures (with the prompt prefix clamped).
    pub fn capture(&self) -> Capture {
        self.capture
    }

    /// The first top-level `"user"` value, if captured ([`Capture::user`]) and it is a string.
    ///
    /// Escapes are resolved; invalid UTF-8 and lone surrogate escapes become U+FFFD; the result
    /// is cut to the longest prefix of whole characters within [`MAX_USER_BYTES`]. Later
    /// `"user"` keys are ignored (no error), and a first `"user"` that is not a string means
    /// none. `user` keys inside nested values are never used. Set as soon as the value is
    /// known, which may be before its closing quote when it is long.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The first [`Capture::prompt_prefix`] bytes of the first prompt text, once known.
    ///
    /// The prompt text is the first of these, from the first top-level `"prompt"` or
    /// `"messages"` member (a later one is not consulted, even if the first yields nothing):
    /// - `"prompt"`: the string itself, or its first element if it is an array that starts with
    ///   a string (token-id prompts have no text);
    /// - `"messages"`: the `"content"` of `messages[0]` if it is a string; if it is an array of
    ///   parts, the first string `"text"` member of an object element (the `{"type":"text",
    ///   "text":...}` part; image and audio parts have none).
    ///
    /// The bytes are the *decoded* string (escapes resolved to UTF-8, lone surrogate escapes as
    /// U+FFFD, raw bytes as sent), so `"\u00e9"` and `"é"` give the same prefix; the cut at
    /// `prompt_prefix` bytes may fall inside a character. The result depends only on the body,
    /// not on its chunking. `Some` (possibly shorter than asked, even empty) once that many bytes
    /// were seen or the string closed; `None` when absent, not requested, or the body ended
    /// first.
    pub fn prompt_prefix(&self) -> Option<&[u8]> {
        self.prompt_found.then(|| self.prompt_text.bytes())
    }

    /// Where the first top-level `"messages"` or `"prompt"` value lies in the body (absolute
    /// offsets), when [`Capture::prompt_span`] is on: the whole value once it has ended (up to the
    /// `,` or `}` after it, so trailing blanks are included), else from its start to the bytes
    /// seen so far. `None` until the value starts, or when not requested. The bytes are the body
    /// as sent (escapes not decoded): the same prompt sent by the same client gives the same
    /// bytes, which is all a prefix-cache index needs.
    pub fn prompt_span(&self) -> Option<Range<usize>> {
        match self.prompt_span {
            Span::Open(start) => Some(start..self.seen),
            Span::Closed(start, end) => Some(start..end),
            Span::Idle | Span::Next => None,
        }
    }

    /// The top-level members named in [`MEMBERS`] seen so far, in body order (duplicates
    /// included), when [`Capture::members`] is on; and the offset of the top-level object's
    /// closing `}` once seen. Complete once the body is.
    pub fn members(&self) -> (&[MemberSpan], Option<usize>) {
        (&self.members, self.object_end)
    }

    /// Whether the prompt span needs no more bytes: not requested, closed, or read for
    /// [`Capture::prompt_span`] bytes.
    fn span_settled(&self) -> bool {
        match self.prompt_span {
            Span::Idle => self.capture.prompt_span == 0,
            Span::Next => false,
            Span::Open(start) => self.seen >= start.saturating_add(self.capture.prompt_span),
            Span::Closed(..) => true,
        }
    }

    /// Whether reading more of the body can no longer change [`user`](Self::user) or
    /// [`prompt_prefix`](Self::prompt_prefix): each requested capture is found or provably
    /// absent (its deciding member was seen, or the top-level object closed), or scanning
    /// stopped (an error, [`finish`](Self::finish), or a syntax error after the model was
    /// found). True from the start when nothing is requested. It says nothing about the model:
    /// read until `feed` returns `Found` *and* this is true.
    pub fn captures_done(&self) -> bool {
        (self.user_resolved && self.seek == Seek::Done && self.span_settled())
            || self.state == State::Trailing
            || self.error.is_some()
            || self.unchecked
            || self.finished
    }

    /// Runs the state machine over `chunk`, whose first byte is at absolute offset `base`.
    fn scan(&mut self, chunk: &[u8], base: usize) -> Result<(), Stop> {
        let mut i = 0;
        while let Some(&byte) = chunk.get(i) {
            let offset = base + i;
            match self.state {
                State::Str { target, escape } => {
                    i = self.string(chunk, i, base, target, escape)?;
                    continue;
                }
                State::Number(num) => {
                    i = self.number(chunk, i, base, num)?;
                    continue;
                }
                _ if is_whitespace(byte) && !matches!(self.state, State::Literal { .. }) => {}
                State::Start => match byte {
                    b'{' => self.state = State::FirstKey,
                    b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                        return Err(Stop::Reject(ScanError::NotAnObject))
                    }
                    _ => return Err(Stop::Syntax(offset)),
                },
                State::FirstKey | State::NextKey => self.key_start(byte, offset)?,
                State::Colon => match byte {
                    b':' => self.state = State::Value,
                    _ => return Err(Stop::Syntax(offset)),
                },
                State::Value if self.member == Member::Model => self.model_value(byte, offset)?,
                State::Value => self.start_member_value(byte, offset)?,
                State::Nested => match byte {
                    b',' => self.seek.comma(self.depth),
                    b':' => {}
                    b'}' | b']' => {
                        let depth = self.depth;
                        self.close_container(byte == b']', offset)?;
                        self.seek.closed(depth);
                    }
                    _ => match self.seek.value_start(self.depth, byte) {
                        Action::Skip => self.start_value(byte, offset)?,
                        Action::Key => self.start_string(Target::InnerKey),
                        Action::Capture => self.start_string(Target::Prompt),
                    },
                },
                State::AfterValue => self.after_member(byte, offset)?,
                State::Literal { literal, matched } => {
                    let expected = LITERALS.get(usize::from(literal)).copied().unwrap_or(b"");
                    if expected.get(usize::from(matched)) != Some(&byte) {
                        return Err(Stop::Syntax(offset));
                    }
                    let matched = matched + 1;
                    self.state = if usize::from(matched) == expected.len() {
                        self.after_value()
                    } else {
                        State::Literal { literal, matched }
                    };
                }
                State::Trailing => return Err(Stop::Syntax(offset)),
            }
            i += 1;
        }
        Ok(())
    }

    /// A byte where a top-level key (or the closing brace of an empty object) may start.
    #[inline]
    fn key_start(&mut self, byte: u8, offset: usize) -> Result<(), Stop> {
        match byte {
            b'"' => {
                self.key_at = offset;
                self.key.reset();
                self.state = State::Str {
                    target: Target::Key,
                    escape: Escape::None,
                };
            }
            b'}' if self.state == State::FirstKey => self.close_object(offset),
            _ => return Err(Stop::Syntax(offset)),
        }
        Ok(())
    }

    /// The top-level object closed at `offset`: only whitespace may follow.
    #[inline]
    fn close_object(&mut self, offset: usize) {
        self.object_end = Some(offset);
        self.state = State::Trailing;
    }

    /// The first byte of the top-level `model` value: it must open a string.
    #[inline]
    fn model_value(&mut self, byte: u8, offset: usize) -> Result<(), Stop> {
        match byte {
            b'"' => {
                self.span_start = offset;
                self.raw_model.clear();
                self.pending_high = 0;
                self.state = State::Str {
                    target: Target::Model,
                    escape: Escape::None,
                };
                Ok(())
            }
            b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                Err(Stop::Reject(ScanError::ModelNotString))
            }
            _ => Err(Stop::Syntax(offset)),
        }
    }

    /// The byte after a top-level member's value: `,` or the closing brace.
    #[inline]
    fn after_member(&mut self, byte: u8, offset: usize) -> Result<(), Stop> {
        if let Span::Open(start) = self.prompt_span {
            self.prompt_span = Span::Closed(start, offset);
        }
        self.end_member(offset);
        match byte {
            b',' => self.state = State::NextKey,
            b'}' => self.close_object(offset),
            _ => return Err(Stop::Syntax(offset)),
        }
        Ok(())
    }

    /// A top-level member's value ended at `offset` (its `,` or `}`): record it if wanted.
    fn end_member(&mut self, offset: usize) {
        if let Some(which) = self.member_now.take() {
            self.members.push(MemberSpan {
                which,
                start: self.key_at,
                end: offset,
            });
        }
    }

    /// The state after a complete value at the current depth.
    fn after_value(&self) -> State {
        if self.depth == 0 {
            State::AfterValue
        } else {
            State::Nested
        }
    }

    /// Starts the value of a top-level member other than `model`.
    fn start_member_value(&mut self, byte: u8, offset: usize) -> Result<(), Stop> {
        if self.prompt_span == Span::Next {
            self.prompt_span = Span::Open(offset);
        }
        match (std::mem::replace(&mut self.member, Member::Other), byte) {
            (Member::User, b'"') => {
                self.start_string(Target::User);
                Ok(())
            }
            (Member::Prompt, b'"') => {
                self.seek = Seek::Capturing;
                self.start_string(Target::Prompt);
                Ok(())
            }
            (member, _) => {
                match member {
                    // The first `user` decides: not a string means no user.
                    Member::User => self.user_resolved = true,
                    Member::Prompt if byte == b'[' => self.seek = Seek::PromptFirst,
                    Member::Messages if byte == b'[' => self.seek = Seek::MessageFirst,
                    Member::Prompt | Member::Messages => self.seek = Seek::Done,
                    Member::Model | Member::Other => {}
                }
                self.start_value(byte, offset)
            }
        }
    }

    /// Enters a string whose content goes to `target` (the opening quote is consumed).
    fn start_string(&mut self, target: Target) {
        match target {
            Target::User => self.user_text.start(USER_BUFFER_BYTES),
            Target::Prompt => self.prompt_text.start(self.capture.prompt_prefix),
            Target::Key | Target::InnerKey => self.key.reset(),
            Target::Model | Target::Skip => {}
        }
        self.state = State::Str {
            target,
            escape: Escape::None,
        };
    }

    /// Starts a value that is not the model value (top-level member or nested element).
    fn start_value(&mut self, byte: u8, offset: usize) -> Result<(), Stop> {
        self.state = match byte {
            b'"' => State::Str {
                target: Target::Skip,
                escape: Escape::None,
            },
            b'{' | b'[' => return self.open_container(byte == b'[', offset),
            b'-' => State::Number(Num::Minus),
            b'0' => State::Number(Num::Zero),
            b'1'..=b'9' => State::Number(Num::Int),
            b't' => State::Literal {
                literal: 0,
                matched: 1,
            },
            b'f' => State::Literal {
                literal: 1,
                matched: 1,
            },
            b'n' => State::Literal {
                literal: 2,
                matched: 1,
            },
            _ => return Err(Stop::Syntax(offset)),
        };
        Ok(())
    }

    fn open_container(&mut self, is_array: bool, offset: usize) -> Result<(), Stop> {
        self.depth = self.depth.checked_add(1).ok_or(Stop::Syntax(offset))?;
        if let Some(bit) = kind_bit(self.depth) {
            if is_array {
                self.kinds |= bit;
            } else {
                self.kinds &= !bit;
            }
        }
        self.state = State::Nested;
        Ok(())
    }

    fn close_container(&mut self, is_array: bool, offset: usize) -> Result<(), Stop> {
        if let Some(bit) = kind_bit(self.depth) {
            if (self.kinds & bit != 0) != is_array {
                return Err(Stop::Syntax(offset));
            }
        }
        // `Nested` implies depth >= 1; the checked form keeps a broken invariant from panicking.
        self.depth = self.depth.checked_sub(1).ok_or(Stop::Syntax(offset))?;
        self.state = self.after_value();
        Ok(())
    }

    /// Consumes number bytes from `chunk[i..]`; returns the index of the first byte not consumed.
    fn number(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        base: usize,
        mut num: Num,
    ) -> Result<usize, Stop> {
        while let Some(&byte) = chunk.get(i) {
            num = match (num, byte) {
                (Num::Minus, b'0') => Num::Zero,
                (Num::Minus, b'1'..=b'9') => Num::Int,
                (Num::Int, b'0'..=b'9') => Num::Int,
                (Num::Zero | Num::Int, b'.') => Num::Dot,
                (Num::Dot | Num::Frac, b'0'..=b'9') => Num::Frac,
                (Num::Zero | Num::Int | Num::Frac, b'e' | b'E') => Num::Exp,
                (Num::Exp, b'+' | b'-') => Num::ExpSign,
                (Num::Exp | Num::ExpSign | Num::ExpDigits, b'0'..=b'9') => Num::ExpDigits,
                (Num::Zero | Num::Int | Num::Frac | Num::ExpDigits, _) => {
                    // The number ended at a complete state; this byte belongs to what follows.
                    self.state = self.after_value();
                    return Ok(i);
                }
                (Num::Minus | Num::Dot | Num::Exp | Num::ExpSign, _) => {
                    return Err(Stop::Syntax(base + i))
                }
            };
            i += 1;
        }
        self.state = State::Number(num);
        Ok(i)
    }
}

/// One-shot convenience over a complete body: [`ModelScanner::feed`] then
/// [`ModelScanner::finish`].
///
/// ```
/// use modelgate::scan::{find_model, ModelScanner, ScanError, ScanStatus};
///
/// let body = br#"{"messages":[{"model":"inner"}],"model":"mistral-7b","stream":true}"#;
/// assert_eq!(find_model(body).unwrap(), "mistral-7b");
/// assert_eq!(find_model(br#"{"model":1}"#), Err(ScanError::ModelNotString));
///
/// // Chunked: the split may fall anywhere, even inside the value.
/// let mut s = ModelScanner::new();
/// assert_eq!(s.feed(br#"{"mod"#).unwrap(), ScanStatus::NeedMore);
/// assert_eq!(s.feed(br#"el":"mistral"#).unwrap(), ScanStatus::NeedMore);
/// assert_eq!(s.feed(br#"-7b","messages":[]}"#).unwrap(), ScanStatus::Found);
/// assert_eq!(s.model(), Some("mistral-7b"));
/// ```
pub fn find_model(body: &[u8]) -> Result<String, ScanError> {
    let mut scanner = ModelScanner::new();
    scanner.feed(body)?;
    scanner.finish().map(str::to_owned)
}

/// The bit remembering the container kind at `depth`, if that level is tracked.
fn kind_bit(depth: usize) -> Option<u64> {
    match depth {
        1..=KIND_BITS => Some(1 << (depth - 1)),
        _ => None,
    }
}
