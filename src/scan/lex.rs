//! Byte-level JSON lexing helpers shared by the scanner: whitespace, escapes, and the fast
//! search for the end of a plain string run.
//!
//! Request path (called per string run by [`super::ModelScanner`]). Pure functions over byte
//! slices: no state, no allocation, no panics.

use memchr::memchr2;

#[inline]
pub(super) fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The byte a two-byte escape `\\<byte>` stands for (`\\u` is handled separately).
#[inline]
pub(super) fn short_escape(byte: u8) -> Option<u8> {
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

#[inline]
pub(super) fn hex_value(byte: u8) -> Option<u16> {
    char::from(byte)
        .to_digit(16)
        .and_then(|d| u16::try_from(d).ok())
}

/// Index of the first byte that ends a plain string run: `"`, `\\` or a control byte (< 0x20,
/// not allowed raw inside a JSON string).
#[inline]
pub(super) fn find_special(bytes: &[u8]) -> Option<usize> {
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
#[inline]
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
