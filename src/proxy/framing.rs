//! Request framing the gateway refuses (request path, pure, no allocation): a request whose body
//! length two parties could read differently is answered 400 and its connection closed, never
//! forwarded (request smuggling, RFC 9112 §6.1 and §6.3).
//!
//! Pingora 0.9 already answers a final transfer coding other than `chunked` and `Transfer-Encoding`
//! on HTTP/1.0 with its own 400. It *accepts* `Content-Length` beside `Transfer-Encoding` (it drops
//! `Content-Length` from the parsed header and closes after the response) and any coding list that
//! ends in `chunked` (`gzip, chunked`, `chunked, chunked`, two `Transfer-Encoding` fields). The
//! gateway is stricter, as nginx is: `Transfer-Encoding` must be one field whose value is exactly
//! `chunked`, and then `Content-Length` must be absent. Since the parsed header no longer shows a
//! removed `Content-Length`, the check reads the raw header bytes Pingora kept, and only when a
//! `Transfer-Encoding` field is present (requests without one cost nothing here).

/// Why a request's framing is refused; the text is the client-facing message.
pub const BOTH_LENGTHS: &str = "Content-Length and Transfer-Encoding must not both be set";
/// See [`BOTH_LENGTHS`].
pub const BAD_CODING: &str = "Transfer-Encoding must be sent once, with the value `chunked`";
/// See [`BOTH_LENGTHS`].
pub const FOLDED: &str = "obsolete line folding is not allowed in a request header";

/// Checks the raw request header (request line, fields, blank line) for framing the gateway
/// refuses. `Ok` for a request without `Transfer-Encoding`. Never panics on any bytes.
pub fn check(raw: &[u8]) -> Result<(), &'static str> {
    let mut codings = 0usize;
    let mut chunked = true;
    let mut lengths = 0usize;
    // The request line is not a field.
    for line in raw.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            return Err(FOLDED);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            codings += 1;
            chunked &= value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
        }
    }
    match (codings, lengths) {
        (0, _) => Ok(()),
        (_, 1..) => Err(BOTH_LENGTHS),
        (1, 0) if chunked => Ok(()),
        _ => Err(BAD_CODING),
    }
}

/// `value` without leading and trailing spaces and tabs (optional whitespace).
fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |i| i + 1);
    &value[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(fields: &str) -> Vec<u8> {
        format!("POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn one_chunked_coding_or_a_length_alone_is_accepted() {
        for fields in [
            "",
            "Content-Length: 12\r\n",
            "Transfer-Encoding: chunked\r\n",
            "transfer-encoding:CHUNKED \r\n",
            "Transfer-Encoding: \tchunked\t\r\n",
        ] {
            assert_eq!(check(&head(fields)), Ok(()), "{fields:?}");
        }
        // Bare LF line ends, as httparse accepts them.
        assert_eq!(
            check(b"POST / HTTP/1.1\nTransfer-Encoding: chunked\n\n"),
            Ok(())
        );
    }

    #[test]
    fn every_ambiguous_framing_is_refused() {
        let cases = [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                BOTH_LENGTHS,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                BOTH_LENGTHS,
            ),
            (
                "Transfer-Encoding: chunked\r\ncontent-length: 0\r\n",
                BOTH_LENGTHS,
            ),
            (
                "Transfer-Encoding: gzip\r\nContent-Length: 5\r\n",
                BOTH_LENGTHS,
            ),
            ("Transfer-Encoding: chunked, identity\r\n", BAD_CODING),
            ("Transfer-Encoding: xchunked\r\n", BAD_CODING),
            ("Transfer-Encoding: gzip, chunked\r\n", BAD_CODING),
            ("Transfer-Encoding: chunked, chunked\r\n", BAD_CODING),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                BAD_CODING,
            ),
            ("Transfer-Encoding: \r\n", BAD_CODING),
            ("Transfer-Encoding: chunked\r\n identity\r\n", FOLDED),
            ("X-A: 1\r\n\tTransfer-Encoding: chunked\r\n", FOLDED),
        ];
        for (fields, want) in cases {
            assert_eq!(check(&head(fields)), Err(want), "{fields:?}");
        }
    }

    #[test]
    fn fields_after_the_header_and_odd_bytes_are_ignored() {
        // The body is not part of the header: a `Content-Length:` line in it means nothing.
        let mut raw = head("Transfer-Encoding: chunked\r\n");
        raw.extend_from_slice(b"Content-Length: 5\r\n");
        assert_eq!(check(&raw), Ok(()));
        for raw in [&b""[..], b"\n", b"\xff\xfe\r\n:\r\n\r\n", b"GET\r\n\t\r\n"] {
            let _ = check(raw);
        }
    }
}
