//! Incremental finder of the `model` form field in a `multipart/form-data` request body (the
//! audio transcription and translation endpoints).
//!
//! Runs on the request path like [`super::ModelScanner`]: fed the body in chunks split anywhere,
//! it finds the part whose `Content-Disposition` is `form-data; name="model"` and returns its
//! content. It must not buffer the body: file parts stream through with only a partial
//! delimiter carried across chunk edges (at most the boundary plus four bytes, and that is not
//! even copied: a partial match is a prefix of the delimiter), one part-header line (at most
//! [`MAX_HEADER_LINE_BYTES`]) and the model value (at most [`MAX_MODEL_BYTES`]). It never
//! recurses and never panics on any input.
//!
//! # Grammar (RFC 2046 §5.1.1, RFC 7578)
//!
//! The body is a preamble, then parts each introduced by a delimiter (`--boundary` at the very
//! start, else `CRLF--boundary`) followed by optional spaces or tabs and `CRLF`, then header
//! lines ending in `CRLF`, an empty line, and the content up to the next delimiter. A delimiter
//! followed by `--` closes the body; the epilogue after it is ignored. Because a boundary holds
//! no CR, a delimiter can only start at a CR, which is what makes the chunk-edge carry trivial.
//!
//! # Decisions
//!
//! - The model is the whole content of the part named `model` (compared exactly, after
//!   undoing quoted-pair escapes), as raw bytes that must be UTF-8: no trimming, no charset
//!   conversion. A `filename` parameter does not matter.
//! - A second part named `model` is [`ScanError::DuplicateModel`] even after `Found`, as in JSON.
//!   Other malformations after `Found` are not reported and stop the checking.
//! - [`ScanError::InvalidMultipart`]: a delimiter followed by anything but `--`, padding and
//!   `CRLF`; a header line not ending in `CRLF`; two `Content-Disposition` headers in one part
//!   or two `name` parameters in one header; a `Content-Disposition` line longer than
//!   [`MAX_HEADER_LINE_BYTES`]; an invalid boundary; a body that ends before the model part did
//!   (at the body length). Other header lines are not checked.
//! - A body that closes without a `model` part is [`ScanError::MissingModel`].

use std::ops::Range;

use memchr::memmem::Finder;
use memchr::{memchr, memrchr};

use super::{ScanError, ScanStatus, Stop, MAX_MODEL_BYTES};

/// Longest boundary accepted, from RFC 2046 §5.1.1.
pub const MAX_BOUNDARY_BYTES: usize = 70;

/// Part header lines longer than this many bytes are not kept whole; one that is a
/// `Content-Disposition` is [`ScanError::InvalidMultipart`].
///
/// Real `Content-Disposition` lines are a field name and a file name, well under 1 KiB; 2 KiB
/// leaves room for long file names while bounding what is kept.
pub const MAX_HEADER_LINE_BYTES: usize = 2048;

/// The boundary of a `multipart/form-data` Content-Type header value, without the leading `--`.
///
/// The media type must be `multipart/form-data` (case-insensitive), and exactly one `boundary`
/// parameter (name case-insensitive) must be present, as a token or a quoted string
/// (quoted-pair escapes undone). The boundary must be 1 to [`MAX_BOUNDARY_BYTES`] printable
/// ASCII bytes (space allowed, not last); otherwise `None`.
///
/// ```
/// use modelgate::scan::multipart::boundary;
///
/// assert_eq!(boundary(b"multipart/form-data; boundary=abc").as_deref(), Some(&b"abc"[..]));
/// assert_eq!(
///     boundary(b"Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\"").as_deref(),
///     Some(&b"a b:c"[..])
/// );
/// assert_eq!(boundary(b"application/json"), None);
/// ```
pub fn boundary(content_type: &[u8]) -> Option<Vec<u8>> {
    let mut params = Params::new(content_type);
    let media_type = params.token();
    if !trim(media_type).eq_ignore_ascii_case(b"multipart/form-data") {
        return None;
    }
    let mut found = None;
    while let Some((name, value)) = params.next_param().ok()? {
        if name.eq_ignore_ascii_case(b"boundary") {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found.filter(|value| is_valid_boundary(value))
}

/// Whether `boundary` can delimit parts: 1 to 70 bytes of printable ASCII, not ending in a space.
///
/// RFC 2046 allows fewer characters (`bchars`); any printable byte is accepted here because
/// every byte other than CR and LF works for matching, and refusing a boundary a backend
/// accepts would reject the request for nothing.
fn is_valid_boundary(boundary: &[u8]) -> bool {
    (1..=MAX_BOUNDARY_BYTES).contains(&boundary.len())
        && boundary.iter().all(|&b| (0x20..0x7f).contains(&b))
        && boundary.last() != Some(&b' ')
}

/// Where the scanner is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    /// Before the first delimiter; bytes are ignored.
    Preamble,
    /// Right after a delimiter's boundary.
    AfterDelimiter(After),
    /// In a part's header lines.
    Headers,
    /// In a part's content.
    Content,
    /// After the close delimiter; bytes are ignored.
    Epilogue,
}

/// Progress through what follows a delimiter: `--`, or padding then CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Start,
    /// One `-` seen.
    Dash,
    /// Spaces or tabs seen.
    Padding,
    /// CR seen.
    Cr,
}

/// The part being read.
#[derive(Debug, Clone, Default)]
struct Field {
    /// A `Content-Disposition` header was seen in this part.
    has_disposition: bool,
    is_model: bool,
    /// The model value so far (only while `is_model`).
    value: Vec<u8>,
    /// Absolute offset of the first content byte.
    start: usize,
}

impl Field {
    fn push(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        if !self.is_model || bytes.is_empty() {
            return Ok(());
        }
        if self.value.len() + bytes.len() > MAX_MODEL_BYTES {
            return Err(Stop::Reject(ScanError::ModelTooLong));
        }
        self.value.extend_from_slice(bytes);
        Ok(())
    }
}

/// Incremental scanner for the `model` field of a `multipart/form-data` body.
///
/// The same contract as [`super::ModelScanner`]: [`feed`](Self::feed) chunks split anywhere,
/// [`finish`](Self::finish) at the end, sticky errors, and the result does not depend on the
/// chunking. Memory: the delimiter, one header line and the model value, all capped.
///
/// ```
/// use modelgate::scan::multipart::{boundary, MultipartModelScanner};
/// use modelgate::scan::ScanStatus;
///
/// let b = boundary(b"multipart/form-data; boundary=XyZ").unwrap();
/// let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\
///     Content-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ\r\n\
///     Content-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
/// let mut s = MultipartModelScanner::new(&b);
/// let (head, tail) = body.split_at(100);
/// assert_eq!(s.feed(head), Ok(ScanStatus::NeedMore));
/// assert_eq!(s.feed(tail), Ok(ScanStatus::Found));
/// assert_eq!(s.finish(), Ok("whisper-1"));
/// assert_eq!(&body[s.model_span().unwrap()], b"whisper-1");
/// ```
#[derive(Debug, Clone)]
pub struct MultipartModelScanner {
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    section: Section,
    /// Bytes of `delimiter` matched at the end of the input so far and not yet known to be
    /// content: they are `delimiter[..matched]`, so they need no buffer.
    matched: usize,
    /// Absolute offset where the partial delimiter match starts.
    match_start: usize,
    field: Field,
    /// The current header line, up to [`MAX_HEADER_LINE_BYTES`].
    line: Vec<u8>,
    /// The current header line's full length and last byte.
    line_len: usize,
    line_last: u8,
    /// Absolute offset of the current header line.
    line_start: usize,
    model: Option<String>,
    span: Option<Range<usize>>,
    seen: usize,
    error: Option<ScanError>,
    /// The model was found and later bytes were malformed: stop looking at the body.
    unchecked: bool,
}

impl MultipartModelScanner {
    /// A scanner at the start of a body whose parts are delimited by `boundary` (as returned by
    /// [`boundary`], without the leading `--`). An invalid boundary (see [`boundary`]) makes
    /// every call report `InvalidMultipart { offset: 0 }`.
    pub fn new(boundary: &[u8]) -> Self {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary);
        let error =
            (!is_valid_boundary(boundary)).then_some(ScanError::InvalidMultipart { offset: 0 });
        Self {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter,
            section: Section::Preamble,
            // The first delimiter may open the body without the CRLF: pretend it was there.
            matched: 2,
            match_start: 0,
            field: Field::default(),
            line: Vec::new(),
            line_len: 0,
            line_last: 0,
            line_start: 0,
            model: None,
            span: None,
            seen: 0,
            error,
            unchecked: false,
        }
    }

    /// Feeds the next chunk of the body (any length, split anywhere, empty allowed).
    ///
    /// `Found` once the whole model part has been seen (its closing delimiter included), and
    /// from then on unless an error shows up; after `Found`, only a second `model` part is
    /// reported (`Err(DuplicateModel)`). Before `Found`, a malformed body is
    /// `Err(InvalidMultipart { offset })`; an over-long or non-UTF-8 value is `ModelTooLong` or
    /// `ModelNotUtf8`. After an `Err`, every later call returns the same `Err`.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<ScanStatus, ScanError> {
        let base = self.seen;
        self.seen = self.seen.saturating_add(chunk.len());
        if self.error.is_none() && !self.unchecked {
            match self.scan(chunk, base) {
                Ok(()) => {}
                Err(Stop::Syntax(_)) if self.model.is_some() => self.unchecked = true,
                Err(Stop::Syntax(offset)) => {
                    self.error = Some(ScanError::InvalidMultipart { offset })
                }
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
    /// `MissingModel` if the body closed (`--boundary--`) without a model part, or
    /// `InvalidMultipart` at the body length if it ended before that. The outcome is sticky.
    pub fn finish(&mut self) -> Result<&str, ScanError> {
        if let Some(error) = &self.error {
            return Err(error.clone());
        }
        if let Some(model) = &self.model {
            return Ok(model);
        }
        let error = if self.section == Section::Epilogue {
            ScanError::MissingModel
        } else {
            ScanError::InvalidMultipart { offset: self.seen }
        };
        self.error = Some(error.clone());
        Err(error)
    }

    /// The model value once found. It stays set if a later error (such as `DuplicateModel`) is
    /// reported, so check the result of `feed`/`finish` first.
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// The absolute byte range of the model part's content in the body, once found: exactly
    /// the value's bytes (no quotes; the CRLF before the next delimiter is not included), so
    /// replacing this range with another name keeps the body well-formed.
    pub fn model_span(&self) -> Option<Range<usize>> {
        self.span.clone()
    }

    /// Total bytes fed so far.
    pub fn bytes_seen(&self) -> usize {
        self.seen
    }

    /// Heap bytes held (for the bounded-memory test).
    #[cfg(test)]
    pub(super) fn retained_bytes(&self) -> usize {
        self.delimiter.capacity() + self.line.capacity() + self.field.value.capacity()
    }

    /// Runs the state machine over `chunk`, whose first byte is at absolute offset `base`.
    fn scan(&mut self, chunk: &[u8], base: usize) -> Result<(), Stop> {
        let mut i = 0;
        while i < chunk.len() {
            i = match self.section {
                Section::Preamble | Section::Content => self.content(chunk, i, base)?,
                Section::AfterDelimiter(after) => self.after_delimiter(chunk, i, base, after)?,
                Section::Headers => self.header_bytes(chunk, i, base)?,
                Section::Epilogue => chunk.len(),
            };
        }
        Ok(())
    }

    /// Consumes content (or preamble) from `chunk[i..]` up to and including the next delimiter;
    /// returns the index of the first byte not consumed.
    fn content(&mut self, chunk: &[u8], mut i: usize, base: usize) -> Result<usize, Stop> {
        if self.matched > 0 {
            let need = self.delimiter.get(self.matched..).unwrap_or_default();
            let avail = chunk.get(i..).unwrap_or_default();
            let n = need.len().min(avail.len());
            if need.get(..n) == avail.get(..n) {
                self.matched += n;
                if self.matched < self.delimiter.len() {
                    return Ok(i + n);
                }
                self.matched = 0;
                self.end_part(self.match_start)?;
                return Ok(i + n);
            }
            // The held bytes were content. The delimiter has its only CR first, so no delimiter
            // starts inside them; one may start in `avail`, which is searched below.
            let held = self.delimiter.get(..self.matched).unwrap_or_default();
            if self.section == Section::Content {
                self.field.push(held)?;
            }
            self.matched = 0;
        }
        let rest = chunk.get(i..).unwrap_or_default();
        if let Some(at) = self.finder.find(rest) {
            self.content_run(rest.get(..at).unwrap_or_default())?;
            self.end_part(base + i + at)?;
            i += at + self.delimiter.len();
            return Ok(i);
        }
        // Keep back a tail that may begin a delimiter: it starts at the last CR, if that is
        // within the last `delimiter.len() - 1` bytes.
        let tail_from = rest.len().saturating_sub(self.delimiter.len() - 1);
        let partial = rest
            .get(tail_from..)
            .and_then(|tail| memrchr(b'\r', tail))
            .map(|r| tail_from + r)
            .filter(|&r| {
                self.delimiter
                    .starts_with(rest.get(r..).unwrap_or_default())
            });
        let content_end = partial.unwrap_or(rest.len());
        self.content_run(rest.get(..content_end).unwrap_or_default())?;
        if let Some(r) = partial {
            self.matched = rest.len() - r;
            self.match_start = base + i + r;
        }
        Ok(chunk.len())
    }

    fn content_run(&mut self, run: &[u8]) -> Result<(), Stop> {
        if self.section == Section::Content {
            self.field.push(run)?;
        }
        Ok(())
    }

    /// A delimiter starting at absolute offset `at` ends the preamble or the current part.
    fn end_part(&mut self, at: usize) -> Result<(), Stop> {
        let field = std::mem::take(&mut self.field);
        if self.section == Section::Content && field.is_model {
            let model = String::from_utf8(field.value)
                .map_err(|_| Stop::Reject(ScanError::ModelNotUtf8))?;
            self.model = Some(model);
            self.span = Some(field.start..at);
        }
        self.section = Section::AfterDelimiter(After::Start);
        Ok(())
    }

    /// Consumes what follows a delimiter's boundary from `chunk[i..]`.
    fn after_delimiter(
        &mut self,
        chunk: &[u8],
        mut i: usize,
        base: usize,
        mut after: After,
    ) -> Result<usize, Stop> {
        while let Some(&byte) = chunk.get(i) {
            after = match (after, byte) {
                (After::Start, b'-') => After::Dash,
                (After::Dash, b'-') => {
                    self.section = Section::Epilogue;
                    return Ok(i + 1);
                }
                (After::Start | After::Padding, b' ' | b'\t') => After::Padding,
                (After::Start | After::Padding, b'\r') => After::Cr,
                (After::Cr, b'\n') => {
                    self.section = Section::Headers;
                    self.line_start = base + i + 1;
                    return Ok(i + 1);
                }
                _ => return Err(Stop::Syntax(base + i)),
            };
            i += 1;
        }
        self.section = Section::AfterDelimiter(after);
        Ok(i)
    }

    /// Consumes header bytes from `chunk[i..]` up to the end of the current line.
    fn header_bytes(&mut self, chunk: &[u8], i: usize, base: usize) -> Result<usize, Stop> {
        let rest = chunk.get(i..).unwrap_or_default();
        let newline = memchr(b'\n', rest);
        let part = rest
            .get(..newline.unwrap_or(rest.len()))
            .unwrap_or_default();
        if let Some(&last) = part.last() {
            let room = MAX_HEADER_LINE_BYTES.saturating_sub(self.line.len());
            self.line
                .extend_from_slice(part.get(..room).unwrap_or(part));
            self.line_len = self.line_len.saturating_add(part.len());
            self.line_last = last;
        }
        let Some(at) = newline else {
            return Ok(chunk.len());
        };
        let next = i + at + 1;
        self.header_line(base + i + at)?;
        self.line.clear();
        self.line_len = 0;
        self.line_last = 0;
        self.line_start = base + next;
        Ok(next)
    }

    /// Handles a complete header line; `newline` is the absolute offset of its LF.
    fn header_line(&mut self, newline: usize) -> Result<(), Stop> {
        if self.line_last != b'\r' {
            return Err(Stop::Syntax(newline));
        }
        if self.line_len == 1 {
            // The empty line: the content starts after it.
            self.section = Section::Content;
            self.field.start = newline + 1;
            return Ok(());
        }
        let content_len = self.line_len.saturating_sub(1);
        let kept = self.line.len().min(content_len);
        let line = self.line.get(..kept).unwrap_or_default();
        let Some(colon) = memchr(b':', line) else {
            // Not a header this scanner needs; the backend judges it.
            return Ok(());
        };
        let (name, value) = line.split_at(colon);
        if !name.eq_ignore_ascii_case(b"content-disposition") {
            return Ok(());
        }
        if content_len > MAX_HEADER_LINE_BYTES || self.field.has_disposition {
            return Err(Stop::Syntax(self.line_start));
        }
        self.field.has_disposition = true;
        let value = value.get(1..).unwrap_or_default();
        let name = field_name(value).map_err(|()| Stop::Syntax(self.line_start))?;
        if name.as_deref() == Some(b"model".as_slice()) {
            if self.model.is_some() {
                return Err(Stop::Reject(ScanError::DuplicateModel));
            }
            self.field.is_model = true;
        }
        Ok(())
    }
}

/// The `name` parameter of a `form-data` Content-Disposition value, if any.
fn field_name(value: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut params = Params::new(value);
    if !trim(params.token()).eq_ignore_ascii_case(b"form-data") {
        return Ok(None);
    }
    let mut found = None;
    while let Some((name, value)) = params.next_param()? {
        if name.eq_ignore_ascii_case(b"name") {
            if found.is_some() {
                return Err(());
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// A parameter's name (as written) and value (unquoted).
type Param<'a> = (&'a [u8], Vec<u8>);

/// A reader of `type; name=value; name="quoted value"` header values (RFC 9110 §5.6.6).
struct Params<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Params<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.at += 1;
        }
    }

    /// Bytes up to the next `;`, `=` or the end (untrimmed).
    fn token(&mut self) -> &'a [u8] {
        let start = self.at;
        while !matches!(self.peek(), None | Some(b';' | b'=')) {
            self.at += 1;
        }
        self.bytes.get(start..self.at).unwrap_or_default()
    }

    /// The next `; name=value`, with the name trimmed and the value unquoted; `Ok(None)` at the
    /// end (a trailing `;` is allowed), `Err` when the text is not a parameter list.
    fn next_param(&mut self) -> Result<Option<Param<'a>>, ()> {
        self.skip_space();
        match self.peek() {
            None => return Ok(None),
            Some(b';') => self.at += 1,
            Some(_) => return Err(()),
        }
        self.skip_space();
        if self.peek().is_none() {
            return Ok(None);
        }
        let name = trim(self.token());
        if name.is_empty() || self.peek() != Some(b'=') {
            return Err(());
        }
        self.at += 1;
        self.skip_space();
        let value = if self.peek() == Some(b'"') {
            self.at += 1;
            self.quoted()
        } else {
            let start = self.at;
            while !matches!(self.peek(), None | Some(b';' | b' ' | b'\t')) {
                self.at += 1;
            }
            self.bytes.get(start..self.at).unwrap_or_default().to_vec()
        };
        Ok(Some((name, value)))
    }

    /// The rest of a quoted string after its opening quote, with quoted pairs undone. An
    /// unterminated string runs to the end: browsers do not escape a trailing `\` in file
    /// names, and that must not make the `name` before it unreadable.
    fn quoted(&mut self) -> Vec<u8> {
        let mut value = Vec::new();
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        self.at += 1;
                        value.push(escaped);
                    }
                }
                _ => value.push(byte),
            }
        }
        value
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |at| at + 1);
    bytes.get(start..end).unwrap_or_default()
}
