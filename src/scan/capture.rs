//! Optional extras that [`super::ModelScanner`] captures in the same pass as the model: the
//! top-level `"user"` string and a prefix of the first prompt text (for sticky routing).
//!
//! Request path. This file holds the capture settings, the small state machine that follows the
//! path to the first prompt text (`prompt`, `prompt[0]`, `messages[0].content`,
//! `messages[0].content[i].text`) through the scanner's structural events, and the bounded
//! buffer that decodes captured strings. It must not allocate more than the configured caps, and
//! it never fails: captures are best effort and never turn a body into an error.

/// Decoded `"user"` values are cut to at most this many bytes (at a character boundary).
///
/// OpenAI documents `user` as a short end-user id; 256 bytes keeps any real id whole while
/// bounding what is kept per request.
pub const MAX_USER_BYTES: usize = 256;

/// [`Capture::prompt_prefix`] is clamped to this many bytes.
///
/// Sticky routing hashes a prefix of a few hundred bytes; 64 KiB bounds the per-request buffer
/// whatever the configuration says.
pub const MAX_PROMPT_PREFIX_BYTES: usize = 64 << 10;

/// What [`super::ModelScanner`] captures besides the model. The default captures nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Capture the top-level `"user"` string (see [`super::ModelScanner::user`]).
    pub user: bool,
    /// Capture this many bytes of the first prompt text (see
    /// [`super::ModelScanner::prompt_prefix`]); 0 turns it off. Clamped to
    /// [`MAX_PROMPT_PREFIX_BYTES`].
    pub prompt_prefix: usize,
    /// Record where the first top-level `"messages"` or `"prompt"` value lies in the body, and
    /// read at least this many bytes of it (see [`super::ModelScanner::prompt_span`]); 0 turns
    /// it off. The raw bytes are the cache-aware policy's prompt identity.
    pub prompt_span: usize,
    /// Record where each top-level member named in [`super::MEMBERS`] lies (see
    /// [`super::ModelScanner::members`]), for the prefill/decode rewrite.
    pub members: bool,
}

/// Where the first top-level `"messages"` or `"prompt"` value lies, as the scan goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Span {
    /// Not requested, or requested and not yet seen.
    Idle,
    /// The key was read; its value starts with the next token.
    Next,
    /// The value started at this absolute offset and has not ended yet.
    Open(usize),
    /// The value spans these absolute offsets (end exclusive, trailing blanks included).
    Closed(usize, usize),
}

/// Where the search for the first prompt text stands.
///
/// Depths are the scanner's nesting depth of the tracked container: the top-level members are
/// at depth 0, so the `messages` array is depth 1, `messages[0]` depth 2, its `content` array
/// depth 3 and a content part depth 4. The first top-level `prompt` or `messages` member decides:
/// if it yields no text, the prompt is absent even if a later member would have had one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seek {
    /// Waiting for the first top-level `prompt` or `messages` member.
    Idle,
    /// Inside the top-level `prompt` array, before its first element.
    PromptFirst,
    /// Inside the top-level `messages` array, before its first element.
    MessageFirst,
    /// Inside `messages[0]`. `at_key`: the next string at this depth is a key; `wanted`: the
    /// value about to start belongs to a `content` key.
    Message { at_key: bool, wanted: bool },
    /// Inside `messages[0].content` (an array of parts), between elements.
    Parts,
    /// Inside an object element of the parts array; `wanted`: the value about to start belongs
    /// to a `text` key.
    Part { at_key: bool, wanted: bool },
    /// The prompt string is being captured.
    Capturing,
    /// Found, provably absent, or not requested.
    Done,
}

/// What the scanner does with a value that starts inside a skipped top-level value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Skip it as usual.
    Skip,
    /// It is a key the prompt search must read: collect it and report it with [`Seek::key`].
    Key,
    /// It is the prompt string: capture it.
    Capture,
}

/// Depth of `messages[0]`.
const MESSAGE_DEPTH: usize = 2;
/// Depth of a content part object.
const PART_DEPTH: usize = 4;

impl Seek {
    /// A value starts with `byte` at nesting `depth` (before any bracket it opens is counted).
    pub(super) fn value_start(&mut self, depth: usize, byte: u8) -> Action {
        match (*self, depth, byte) {
            (Seek::PromptFirst, 1, b'"') => {
                *self = Seek::Capturing;
                Action::Capture
            }
            (Seek::PromptFirst, 1, _) => {
                *self = Seek::Done;
                Action::Skip
            }
            (Seek::MessageFirst, 1, _) => {
                *self = if byte == b'{' {
                    Seek::Message {
                        at_key: true,
                        wanted: false,
                    }
                } else {
                    Seek::Done
                };
                Action::Skip
            }
            (Seek::Message { at_key: true, .. }, MESSAGE_DEPTH, b'"')
            | (Seek::Part { at_key: true, .. }, PART_DEPTH, b'"') => Action::Key,
            (
                Seek::Message {
                    at_key: false,
                    wanted: true,
                },
                MESSAGE_DEPTH,
                _,
            ) => match byte {
                b'"' => {
                    *self = Seek::Capturing;
                    Action::Capture
                }
                b'[' => {
                    *self = Seek::Parts;
                    Action::Skip
                }
                _ => {
                    *self = Seek::Done;
                    Action::Skip
                }
            },
            (Seek::Parts, 3, b'{') => {
                *self = Seek::Part {
                    at_key: true,
                    wanted: false,
                };
                Action::Skip
            }
            (
                Seek::Part {
                    at_key: false,
                    wanted: true,
                },
                PART_DEPTH,
                _,
            ) => {
                if byte == b'"' {
                    *self = Seek::Capturing;
                    Action::Capture
                } else {
                    // A non-string `text`: keep looking in the later parts.
                    *self = Seek::Part {
                        at_key: false,
                        wanted: false,
                    };
                    Action::Skip
                }
            }
            _ => Action::Skip,
        }
    }

    /// A key collected after [`Action::Key`] closed; `key` is its decoded text (or as much of it
    /// as the scanner's key buffer keeps).
    pub(super) fn key(&mut self, is_key: impl Fn(&[u8]) -> bool) {
        match self {
            Seek::Message { at_key, wanted } => {
                *at_key = false;
                *wanted = is_key(b"content");
            }
            Seek::Part { at_key, wanted } => {
                *at_key = false;
                *wanted = is_key(b"text");
            }
            _ => {}
        }
    }

    /// A `,` at nesting `depth`.
    pub(super) fn comma(&mut self, depth: usize) {
        match self {
            Seek::Message { at_key, wanted } if depth == MESSAGE_DEPTH => {
                *at_key = true;
                *wanted = false;
            }
            Seek::Part { at_key, wanted } if depth == PART_DEPTH => {
                *at_key = true;
                *wanted = false;
            }
            _ => {}
        }
    }

    /// The container at nesting `depth` closed.
    pub(super) fn closed(&mut self, depth: usize) {
        let tracked = match self {
            Seek::PromptFirst | Seek::MessageFirst => 1,
            Seek::Message { .. } => MESSAGE_DEPTH,
            Seek::Parts => 3,
            Seek::Part { .. } => PART_DEPTH,
            Seek::Idle | Seek::Capturing | Seek::Done => return,
        };
        if depth == PART_DEPTH && tracked == PART_DEPTH {
            // One part ends; the next may hold the text.
            *self = Seek::Parts;
        } else if depth <= tracked {
            // The tracked container (or, in broken JSON, an outer one) closed without a text.
            *self = Seek::Done;
        }
    }
}

/// A bounded buffer for a captured JSON string, decoded leniently.
///
/// Escapes are resolved to UTF-8; a lone UTF-16 surrogate escape becomes U+FFFD. Raw bytes are
/// kept as they are (even invalid UTF-8). Bytes past `limit` are dropped, so a capture may end
/// inside a character. The result depends only on the string, not on how it was chunked.
#[derive(Debug, Clone, Default)]
pub(super) struct TextBuf {
    bytes: Vec<u8>,
    limit: usize,
    /// A high surrogate waiting for its low half; 0 when none.
    pending_high: u16,
}

impl TextBuf {
    /// Starts a new string, keeping at most `limit` bytes.
    pub(super) fn start(&mut self, limit: usize) {
        self.bytes.clear();
        self.limit = limit;
        self.pending_high = 0;
    }

    /// Appends raw (unescaped, control-free) string bytes.
    pub(super) fn push_run(&mut self, run: &[u8]) {
        // An empty run must not flush a pending surrogate: chunk edges produce empty runs
        // between `\ud83d` and `\ude00`.
        if run.is_empty() {
            return;
        }
        self.flush_high();
        self.push(run);
    }

    /// Appends one UTF-16 code unit from an escape.
    pub(super) fn push_unit(&mut self, unit: u16) {
        let high = std::mem::take(&mut self.pending_high);
        let code = match (high, unit) {
            (0, 0xD800..=0xDBFF) => {
                self.pending_high = unit;
                return;
            }
            (0, _) => u32::from(unit),
            (_, 0xDC00..=0xDFFF) => {
                0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00)
            }
            _ => {
                // The high surrogate was lone; the unit after it stands on its own.
                self.push_char(char::REPLACEMENT_CHARACTER);
                self.push_unit(unit);
                return;
            }
        };
        // Only a lone low surrogate fails here.
        self.push_char(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER));
    }

    /// Ends the string (flushes a lone trailing high surrogate).
    pub(super) fn end(&mut self) {
        self.flush_high();
    }

    /// Whether the buffer holds `limit` bytes (later content is dropped).
    pub(super) fn is_full(&self) -> bool {
        self.bytes.len() >= self.limit
    }

    pub(super) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn flush_high(&mut self) {
        if std::mem::take(&mut self.pending_high) != 0 {
            self.push_char(char::REPLACEMENT_CHARACTER);
        }
    }

    fn push_char(&mut self, character: char) {
        let mut utf8 = [0; 4];
        self.push(character.encode_utf8(&mut utf8).as_bytes());
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(bytes.get(..room).unwrap_or(bytes));
    }
}

/// The final `user` value from the first bytes of its decoded string: invalid UTF-8 replaced by
/// U+FFFD, then cut to the longest prefix of whole characters within [`MAX_USER_BYTES`].
///
/// `bytes` may be cut at [`USER_BUFFER_BYTES`]: the result is the same as for the whole string,
/// because replacement never shrinks the text and UTF-8 decides a character from at most four
/// bytes, so the first `MAX_USER_BYTES` output bytes depend on at most `MAX_USER_BYTES + 3`
/// input bytes.
pub(super) fn finish_user(bytes: &[u8]) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    let mut end = text.len().min(MAX_USER_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

/// Decoded `user` bytes kept before [`finish_user`]; see there why this is enough.
pub(super) const USER_BUFFER_BYTES: usize = MAX_USER_BYTES + 4;
