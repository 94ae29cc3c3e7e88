//! How a fuzz input is cut into the chunks a scanner is fed.
//!
//! Test-harness code, never on a request path. The first byte of an input is a header: its low
//! three bits say how many control bytes follow it (0 to 7), and each control byte is one chunk
//! length (0 = an empty chunk). The rest of the input is the body, fed in chunks of those lengths
//! in turn, cycling, until it is used up. A header of `0` (`0x30` also works: only the low three
//! bits count) feeds the whole body as one chunk after an empty one.
//!
//! This lets libFuzzer's mutations move the cut points with single-byte edits, and lets the
//! seed files stay readable: `3!@~{"model":...` is header `3`, chunk lengths 33, 64, 126.

/// A fuzz input split into its chunk plan and the body.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// Chunk lengths, used in turn and cycled; empty means "one chunk".
    pub lengths: &'a [u8],
    /// The request body (or config file) under test.
    pub body: &'a [u8],
}

impl<'a> Input<'a> {
    /// Splits `data` into header, control bytes and body. Never fails: missing control bytes
    /// shorten the plan, an empty input is an empty body.
    pub fn parse(data: &'a [u8]) -> Self {
        let Some((&header, rest)) = data.split_first() else {
            return Input {
                lengths: &[],
                body: &[],
            };
        };
        let n = usize::from(header & 0x07).min(rest.len());
        let (lengths, body) = rest.split_at(n);
        Input { lengths, body }
    }

    /// The chunks of the body in order: concatenated, they are exactly the body. An all-zero
    /// plan feeds empty chunks once round, then the rest in one piece.
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        let mut rest = self.body;
        out.push(&rest[..0]);
        if self.lengths.is_empty() {
            out.push(rest);
            return out;
        }
        let mut idle = 0;
        for &len in self.lengths.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            if len == 0 {
                out.push(&rest[..0]);
                idle += 1;
                if idle >= self.lengths.len() {
                    out.push(rest);
                    break;
                }
                continue;
            }
            idle = 0;
            let (head, tail) = rest.split_at(usize::from(len).min(rest.len()));
            out.push(head);
            rest = tail;
        }
        out
    }
}

/// One chunk per byte (after an empty one), for bodies up to `max` bytes; `None` above that, to
/// keep each input cheap.
pub fn bytewise(body: &[u8], max: usize) -> Option<Vec<&[u8]>> {
    (body.len() <= max).then(|| std::iter::once(&body[..0]).chain(body.chunks(1)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_the_body() {
        for data in [
            &b""[..],
            b"0",
            b"0abc",
            b"2\x01\x02abcdefg",
            b"2\x00\x00abc",
            b"1\x00abc",
            b"7\x01",
            b"3!@~{\"model\":\"m\"}",
        ] {
            let input = Input::parse(data);
            let joined: Vec<u8> = input.chunks().concat();
            assert_eq!(joined, input.body, "{data:?}");
        }
        let input = Input::parse(b"2\x01\x02abcdef");
        assert_eq!(input.chunks(), vec![&b""[..], b"a", b"bc", b"d", b"ef"]);
    }
}
