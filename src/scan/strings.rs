//! String content for [`ModelScanner`]: the string lexer (escapes, `\uXXXX`, raw control
//! bytes) and where each string's decoded content goes: the model value (strict), the captures
//! (lenient, see `capture.rs`), key buffers, or nowhere.
//!
//! Request path, the scanner's hot loop: a skipped string must cost no more than the search for
//! its closing quote, so the capture code is kept out of line. Must not allocate beyond the
//! caps of the model and the captures, and must not panic.

use super::capture::{finish_user, Span};
use super::lex::{find_special, hex_value, short_escape};
use super::{Escape, Member, ModelScanner, ScanError, Seek, State, Stop, Target, MAX_MODEL_BYTES};

impl ModelScanner {
    /// Consumes string bytes from `chunk[i..]`; returns the index of the first byte not consumed.
    pub(super) fn string(
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
    // Inlined into the string loop, where skipped strings (the hot path) reduce it to nothing;
    // as a call it cost ~10% of scan throughput on prompt-sized strings.
    #[inline(always)]
    fn emit_run(&mut self, target: Target, run: &[u8]) -> Result<(), Stop> {
        match target {
            Target::Skip => Ok(()),
            Target::Key | Target::InnerKey => {
                self.key.push(run);
                Ok(())
            }
            Target::User | Target::Prompt => {
                self.capture_run(target, run);
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
    // Inlined for the same reason as `emit_run`.
    #[inline(always)]
    fn emit_unit(&mut self, target: Target, unit: u16) -> Result<(), Stop> {
        match target {
            Target::Skip => Ok(()),
            Target::User | Target::Prompt => {
                self.capture_unit(target, unit);
                Ok(())
            }
            Target::Key | Target::InnerKey => {
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

    /// [`emit_run`](Self::emit_run) for a captured string, kept out of line so that the
    /// inlined `emit_run` stays small in the string loop.
    #[inline(never)]
    fn capture_run(&mut self, target: Target, run: &[u8]) {
        if target == Target::User && !self.user_resolved {
            self.user_text.push_run(run);
            self.check_user_full();
        } else if target == Target::Prompt && !self.prompt_found {
            self.prompt_text.push_run(run);
            self.check_prompt_full();
        }
    }

    /// [`emit_unit`](Self::emit_unit) for a captured string; out of line like `capture_run`.
    #[inline(never)]
    fn capture_unit(&mut self, target: Target, unit: u16) {
        if target == Target::User && !self.user_resolved {
            self.user_text.push_unit(unit);
            self.check_user_full();
        } else if target == Target::Prompt && !self.prompt_found {
            self.prompt_text.push_unit(unit);
            self.check_prompt_full();
        }
    }

    /// Settles the user as soon as its buffer is full: later bytes cannot change the result.
    fn check_user_full(&mut self) {
        if self.user_text.is_full() {
            self.user = Some(finish_user(self.user_text.bytes()));
            self.user_resolved = true;
        }
    }

    /// Settles the prompt prefix as soon as it has its full length.
    fn check_prompt_full(&mut self) {
        if self.prompt_text.is_full() {
            self.prompt_found = true;
            self.seek = Seek::Done;
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
                if self.capture.members {
                    self.member_now = super::MEMBERS
                        .iter()
                        .position(|m| self.key.is(m.as_bytes()));
                }
                if self.prompt_span == Span::Idle
                    && self.capture.prompt_span > 0
                    && (self.key.is(b"messages") || self.key.is(b"prompt"))
                {
                    self.prompt_span = Span::Next;
                }
                if is_model && self.model.is_some() {
                    return Err(Stop::Reject(ScanError::DuplicateModel));
                }
                self.member = if is_model {
                    Member::Model
                } else if !self.user_resolved && self.key.is(b"user") {
                    Member::User
                } else if self.seek == Seek::Idle && self.key.is(b"prompt") {
                    Member::Prompt
                } else if self.seek == Seek::Idle && self.key.is(b"messages") {
                    Member::Messages
                } else {
                    Member::Other
                };
                self.state = State::Colon;
            }
            Target::InnerKey => {
                let key = &self.key;
                self.seek.key(|name| key.is(name));
                self.state = self.after_value();
            }
            Target::User => {
                if !self.user_resolved {
                    self.user_text.end();
                    self.user = Some(finish_user(self.user_text.bytes()));
                    self.user_resolved = true;
                }
                self.state = self.after_value();
            }
            Target::Prompt => {
                if !self.prompt_found {
                    self.prompt_text.end();
                    self.prompt_found = true;
                }
                self.seek = Seek::Done;
                self.state = self.after_value();
            }
            Target::Model => {
                if self.pending_high != 0 {
                    return Err(Stop::Reject(ScanError::ModelNotUtf8));
                }
                let model = String::from_utf8(std::mem::take(&mut self.raw_model))
                    .map_err(|_| Stop::Reject(ScanError::ModelNotUtf8))?;
                self.model = Some(model);
                self.span = Some(self.span_start..end);
                self.member = Member::Other;
                self.state = State::AfterValue;
            }
        }
        Ok(())
    }
}
