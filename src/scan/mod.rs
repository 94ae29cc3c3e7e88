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

use std::ops::Range;

use memchr::memchr2;

#[cfg(test)]
mod tests;

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

/// The decoded text of the current top-level key, kept only while it can still be `model`.
#[derive(Debug, Clone, Default)]
struct KeyBuf {
    bytes: [u8; 5],
    len: usize,
    /// False once the key is known not to be `model` (too long or non-ASCII).
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
            // Longer than five bytes: cannot be `model`, so stop collecting.
            None => self.possible = false,
        }
    }

    fn is_model(&self) -> bool {
        self.possible && self.bytes.get(..self.len) == Some(b"model".as_slice())
    }
}

/// Incremental scanner for the top-level `"model"` string of a JSON object.
///
/// Feed the body with [`feed`](Self::feed) in chunks split anywhere, then call
/// [`finish`](Self::finish) at the end of the body. Memory use is constant apart from the model
/// value (at most [`MAX_MODEL_BYTES`]); there is no recursion.
#[derive(Debug, Clone)]
pub struct ModelScanner {
    state: State,
    /// Nesting depth inside a skipped top-level value; 0 between the top-level members.
    depth: usize,
    /// Bit `d - 1` is set when the container at depth `d` (for `d <= KIND_BITS`) is an array.
    kinds: u64,
    key: KeyBuf,
    /// The current top-level key decoded to `model`.
    value_is_model: bool,
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
}

impl Default for ModelScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelScanner {
    /// A scanner at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Start,
            depth: 0,
            kinds: 0,
            key: KeyBuf::default(),
            value_is_model: false,
            pending_high: 0,
            raw_model: Vec::new(),
            model: None,
            span_start: 0,
            span: None,
            seen: 0,
            error: None,
            unchecked: false,
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
                State::FirstKey | State::NextKey => match byte {
                    b'"' => {
                        self.key.reset();
                        self.state = State::Str {
                            target: Target::Key,
                            escape: Escape::None,
                        };
                    }
                    b'}' if self.state == State::FirstKey => self.state = State::Trailing,
                    _ => return Err(Stop::Syntax(offset)),
                },
                State::Colon => match byte {
                    b':' => self.state = State::Value,
                    _ => return Err(Stop::Syntax(offset)),
                },
                State::Value if self.value_is_model => match byte {
                    b'"' => {
                        self.span_start = offset;
                        self.raw_model.clear();
                        self.pending_high = 0;
                        self.state = State::Str {
                            target: Target::Model,
                            escape: Escape::None,
                        };
                    }
                    b'{' | b'[' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                        return Err(Stop::Reject(ScanError::ModelNotString))
                    }
                    _ => return Err(Stop::Syntax(offset)),
                },
                State::Value => self.start_value(byte, offset)?,
                State::Nested => match byte {
                    b',' | b':' => {}
                    b'}' | b']' => self.close_container(byte == b']', offset)?,
                    _ => self.start_value(byte, offset)?,
                },
                State::AfterValue => match byte {
                    b',' => self.state = State::NextKey,
                    b'}' => self.state = State::Trailing,
                    _ => return Err(Stop::Syntax(offset)),
                },
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

    /// The state after a complete value at the current depth.
    fn after_value(&self) -> State {
        if self.depth == 0 {
            State::AfterValue
        } else {
            State::Nested
        }
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

    /// Consumes string bytes from `chunk[i..]`; returns the index of the first byte not consumed.
    fn string(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        base: usize,
        target: Target,
        mut escape: Escape,
    ) -> Result<usize, Stop> {
        loop {
            // Finish the current escape byte by byte (it may have been split across chunks).
            while escape != Escape::None {
                let Some(&byte) = chunk.get(i) else {
                    self.state = State::Str { target, escape };
                    return Ok(i);
                };
                escape = self.escape_byte(target, escape, byte, base + i)?;
                i += 1;
            }
            let rest = chunk.get(i..).unwrap_or_default();
            let Some(at) = find_special(rest) else {
                self.emit_run(target, rest)?;
                self.state = State::Str { target, escape };
                return Ok(chunk.len());
            };
            // Content before a control byte counts first, so the outcome is the same however
            // the body is split.
            self.emit_run(target, rest.get(..at).unwrap_or_default())?;
            i += at;
            match rest.get(at) {
                Some(b'"') => {
                    i += 1;
                    self.close_string(target, base + i)?;
                    return Ok(i);
                }
                Some(b'\\') => match rest.get(at + 1).copied().and_then(short_escape) {
                    // The common two-byte escape, decoded here rather than byte by byte.
                    Some(decoded) => {
                        self.emit_unit(target, u16::from(decoded))?;
                        i += 2;
                    }
                    None => {
                        i += 1;
                        escape = Escape::Backslash;
                    }
                },
                // A raw control byte.
                _ => return Err(Stop::Syntax(base + i)),
            }
        }
    }

    /// Advances an escape sequence by one byte at absolute `offset`.
    fn escape_byte(
        &mut self,
        target: Target,
        escape: Escape,
        byte: u8,
        offset: usize,
    ) -> Result<Escape, Stop> {
        match escape {
            Escape::None => Ok(Escape::None),
            Escape::Backslash => {
                if byte == b'u' {
                    return Ok(Escape::Hex {
                        digits: 0,
                        value: 0,
                    });
                }
                let decoded = short_escape(byte).ok_or(Stop::Syntax(offset))?;
                self.emit_unit(target, u16::from(decoded))?;
                Ok(Escape::None)
            }
            Escape::Hex { digits, value } => {
                let digit = hex_value(byte).ok_or(Stop::Syntax(offset))?;
                let value = (value << 4) | digit;
                if digits == 3 {
                    self.emit_unit(target, value)?;
                    Ok(Escape::None)
                } else {
                    Ok(Escape::Hex {
                        digits: digits + 1,
                        value,
                    })
                }
            }
        }
    }

    /// Appends raw (unescaped, control-free) string bytes.
    fn emit_run(&mut self, target: Target, run: &[u8]) -> Result<(), Stop> {
        match target {
            Target::Skip => Ok(()),
            Target::Key => {
                self.key.push(run);
                Ok(())
            }
            Target::Model => {
                if run.is_empty() {
                    return Ok(());
                }
                if self.pending_high != 0 {
                    return Err(Stop::Reject(ScanError::ModelNotUtf8));
                }
                self.push_model(run)
            }
        }
    }

    /// Appends one UTF-16 code unit from an escape (`\n` and friends included).
    fn emit_unit(&mut self, target: Target, unit: u16) -> Result<(), Stop> {
        match target {
            Target::Skip => Ok(()),
            Target::Key => {
                match u8::try_from(unit) {
                    Ok(byte) if byte.is_ascii() => self.key.push(&[byte]),
                    // Any non-ASCII character means the key is not `model`.
                    _ => self.key.possible = false,
                }
                Ok(())
            }
            Target::Model => {
                let high = std::mem::take(&mut self.pending_high);
                let code = match (high, unit) {
                    (0, 0xD800..=0xDBFF) => {
                        self.pending_high = unit;
                        return Ok(());
                    }
                    (0, 0xDC00..=0xDFFF) => return Err(Stop::Reject(ScanError::ModelNotUtf8)),
                    (0, _) => u32::from(unit),
                    (0xD800..=0xDBFF, 0xDC00..=0xDFFF) => {
                        0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00)
                    }
                    _ => return Err(Stop::Reject(ScanError::ModelNotUtf8)),
                };
                let character =
                    char::from_u32(code).ok_or(Stop::Reject(ScanError::ModelNotUtf8))?;
                let mut utf8 = [0; 4];
                self.push_model(character.encode_utf8(&mut utf8).as_bytes())
            }
        }
    }

    fn push_model(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if self.raw_model.len() + bytes.len() > MAX_MODEL_BYTES {
            return Err(Stop::Reject(ScanError::ModelTooLong));
        }
        self.raw_model.extend_from_slice(bytes);
        Ok(())
    }

    /// Handles a closing quote; `end` is the absolute offset just past it.
    fn close_string(&mut self, target: Target, end: usize) -> Result<(), Stop> {
        match target {
            Target::Skip => self.state = self.after_value(),
            Target::Key => {
                let is_model = self.key.is_model();
                if is_model && self.model.is_some() {
                    return Err(Stop::Reject(ScanError::DuplicateModel));
                }
                self.value_is_model = is_model;
                self.state = State::Colon;
            }
            Target::Model => {
                if self.pending_high != 0 {
                    return Err(Stop::Reject(ScanError::ModelNotUtf8));
                }
                let model = String::from_utf8(std::mem::take(&mut self.raw_model))
                    .map_err(|_| Stop::Reject(ScanError::ModelNotUtf8))?;
                self.model = Some(model);
                self.span = Some(self.span_start..end);
                self.value_is_model = false;
                self.state = State::AfterValue;
            }
        }
        Ok(())
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

fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The byte a two-byte escape `\\<byte>` stands for (`\\u` is handled separately).
fn short_escape(byte: u8) -> Option<u8> {
    match byte {
        b'"' | b'\\' | b'/' => Some(byte),
        b'b' => Some(0x08),
        b'f' => Some(0x0c),
        b'n' => Some(b'\n'),
        b'r' => Some(b'\r'),
        b't' => Some(b'\t'),
        _ => None,
    }
}

fn hex_value(byte: u8) -> Option<u16> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u16::try_from(d).ok())
}

/// The bit remembering the container kind at `depth`, if that level is tracked.
fn kind_bit(depth: usize) -> Option<u64> {
    match depth {
        1..=KIND_BITS => Some(1 << (depth - 1)),
        _ => None,
    }
}

/// Index of the first byte that ends a plain string run: `"`, `\\` or a control byte (< 0x20,
/// not allowed raw inside a JSON string).
fn find_special(bytes: &[u8]) -> Option<usize> {
    // Prompts hit an escape every few dozen bytes, where memchr's per-call setup and the tail
    // of the control-byte check dominate, so look at the first 128 bytes eight at a time (SWAR;
    // 128 measured best on chat-shaped bodies). Longer runs (long lines, base64 images) then go
    // to memchr2, which uses the widest SIMD the CPU has.
    let head_len = bytes.len().min(128);
    // `head_len <= len`, so the split succeeds; scanning it all with SWAR would also be right.
    let (head, tail) = bytes.split_at_checked(head_len).unwrap_or((bytes, &[]));
    if let Some(at) = find_special_swar(head) {
        return Some(at);
    }
    let hit = memchr2(b'"', b'\\', tail);
    let run = tail.get(..hit.unwrap_or(tail.len())).unwrap_or_default();
    // A min-reduction vectorizes, so the common case (no control byte) stays fast; only a run
    // that has one pays for the position search.
    let control = if run.iter().fold(u8::MAX, |min, &b| min.min(b)) < 0x20 {
        run.iter().position(|&b| b < 0x20)
    } else {
        None
    };
    control.or(hit).map(|at| head_len + at)
}

/// [`find_special`] eight bytes at a time with word arithmetic.
fn find_special_swar(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let word = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // Classic "has zero byte" / "has byte less than n" tricks. They can flag false
        // positives only above a true one, so the lowest flagged byte is exact.
        let flags = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (word.wrapping_sub(ONES * 0x20) & !word))
            & HIGHS;
        if flags != 0 {
            // Little-endian: the lowest set bit is the first byte; at most 63 / 8 = 7.
            return Some(offset + (flags.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .map(|at| offset + at)
}
