//! Input generation for the stable runner: a seeded PRNG, libFuzzer-style mutations, and the
//! `.dict` files the libFuzzer targets use.
//!
//! Test-harness code. There is no coverage feedback on stable, so this is a deterministic random
//! walk around the seed corpus: stacked byte edits, dictionary tokens, splices between seeds,
//! re-chunking headers, and repeated ranges (long strings, deep nesting). The same seed and
//! corpus give the same inputs, so a failure is reproducible from the seed alone.

/// SplitMix64: small, fast, and good enough to drive mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`0` when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A length skewed to small values: mostly under 16, sometimes up to `max`.
    pub fn small_len(&mut self, max: usize) -> usize {
        match self.below(8) {
            0..=5 => self.below(16.min(max + 1)),
            6 => self.below(256.min(max + 1)),
            _ => self.below(max + 1),
        }
    }

    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len()))
    }
}

/// Bytes that matter to JSON, multipart and YAML lexers.
const INTERESTING: &[u8] =
    b"\x00\x01\x1f\x7f\x80\xbf\xc0\xed\xef\xf0\xff\"\\{}[]:,\r\n\t -0123456789eEu.+#&*!|>'%@`?=;";

/// What the generator knows about one target.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// The input starts with a chunking header (see [`crate::chunks`]).
    pub chunked: bool,
    /// Generated inputs are cut to this many bytes.
    pub max_len: usize,
}

/// Makes inputs for one target from its seeds and dictionary.
#[derive(Debug)]
pub struct Generator {
    rng: Rng,
    seeds: Vec<Vec<u8>>,
    dict: Vec<Vec<u8>>,
    /// Recent mutants, mutated again later (deeper edits than one round allows).
    pool: Vec<Vec<u8>>,
    shape: Shape,
}

const POOL_SIZE: usize = 512;

impl Generator {
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>, dict: Vec<Vec<u8>>, shape: Shape) -> Self {
        Generator {
            rng: Rng::new(seed),
            seeds,
            dict,
            pool: Vec::new(),
            shape,
        }
    }

    /// The next input.
    pub fn next_input(&mut self) -> Vec<u8> {
        let mut data = match self.rng.below(32) {
            0..=1 => self.random_bytes(),
            2..=5 => self.token_soup(),
            6..=15 if !self.pool.is_empty() => {
                let i = self.rng.below(self.pool.len());
                self.pool[i].clone()
            }
            _ => match self.rng.pick(&self.seeds) {
                Some(s) => s.clone(),
                None => self.token_soup(),
            },
        };
        let rounds = 1 + self.rng.small_len(15);
        for _ in 0..rounds {
            self.mutate(&mut data);
        }
        data.truncate(self.shape.max_len);
        if self.rng.one_in(4) {
            if self.pool.len() < POOL_SIZE {
                self.pool.push(data.clone());
            } else {
                let i = self.rng.below(POOL_SIZE);
                self.pool[i] = data.clone();
            }
        }
        data
    }

    fn random_bytes(&mut self) -> Vec<u8> {
        let len = self.rng.small_len(512);
        (0..len).map(|_| self.rng.byte()).collect()
    }

    /// A chunking header, then dictionary tokens mixed with interesting bytes.
    fn token_soup(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.shape.chunked {
            out.extend(self.header());
        }
        for _ in 0..self.rng.small_len(64) {
            match self.rng.below(4) {
                0 => out.push(*self.rng.pick(INTERESTING).unwrap_or(&b' ')),
                _ => {
                    if let Some(t) = self.rng.pick(&self.dict) {
                        out.extend_from_slice(t);
                    }
                }
            }
        }
        out
    }

    /// A random chunking header: count byte then that many lengths, mostly small.
    fn header(&mut self) -> Vec<u8> {
        let n = self.rng.below(8);
        let mut h = vec![b'0' + n as u8];
        for _ in 0..n {
            let len = if self.rng.one_in(3) {
                self.rng.byte()
            } else {
                self.rng.below(9) as u8
            };
            h.push(len);
        }
        h
    }

    fn mutate(&mut self, data: &mut Vec<u8>) {
        let len = data.len();
        match self.rng.below(14) {
            0 if len > 0 => {
                let i = self.rng.below(len);
                data[i] ^= 1 << self.rng.below(8);
            }
            1 if len > 0 => {
                let i = self.rng.below(len);
                data[i] = self.rng.byte();
            }
            2 if len > 0 => {
                let i = self.rng.below(len);
                data[i] = *self.rng.pick(INTERESTING).unwrap_or(&0);
            }
            3 => {
                let i = self.rng.below(len + 1);
                let b = if self.rng.one_in(2) {
                    *self.rng.pick(INTERESTING).unwrap_or(&0)
                } else {
                    self.rng.byte()
                };
                data.insert(i, b);
            }
            4 if len > 0 => {
                let i = self.rng.below(len);
                let n = 1 + self.rng.small_len(len - i - 1);
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                // Copy a range elsewhere.
                let i = self.rng.below(len);
                let n = 1 + self.rng.small_len(len - i - 1);
                let piece = data[i..i + n].to_vec();
                let at = self.rng.below(len + 1);
                data.splice(at..at, piece);
            }
            6 | 7 => {
                if let Some(t) = self.rng.pick(&self.dict).cloned() {
                    let at = self.rng.below(len + 1);
                    data.splice(at..at, t);
                }
            }
            8 if len > 0 => {
                if let Some(t) = self.rng.pick(&self.dict).cloned() {
                    let at = self.rng.below(len);
                    let end = (at + t.len()).min(len);
                    data.splice(at..end, t);
                }
            }
            9 => {
                // Splice: our head, another seed's tail.
                if let Some(other) = self.rng.pick(&self.seeds).cloned() {
                    let cut = self.rng.below(len + 1);
                    let from = self.rng.below(other.len() + 1);
                    data.truncate(cut);
                    data.extend_from_slice(&other[from..]);
                }
            }
            10 if len > 0 => {
                let cut = self.rng.below(len);
                data.truncate(cut);
            }
            11 if self.shape.chunked => {
                // New cut points for the same body.
                let old = usize::from(data.first().copied().unwrap_or(0) & 7);
                let skip = (1 + old).min(len);
                let header = self.header();
                data.splice(0..skip, header);
            }
            12 if len > 0 => {
                // Repeat a short range: long strings, long digit runs, deep nesting.
                let i = self.rng.below(len);
                let n = 1 + self.rng.small_len((len - i - 1).min(7));
                let times = 1 + self.rng.small_len(2000);
                let piece = data[i..i + n].repeat(times);
                data.splice(i..i, piece);
            }
            13 if len > 1 => {
                // Swap two bytes.
                let (a, b) = (self.rng.below(len), self.rng.below(len));
                data.swap(a, b);
            }
            _ => {
                let at = self.rng.below(len + 1);
                let b = self.rng.byte();
                data.insert(at, b);
            }
        }
        data.truncate(self.shape.max_len);
    }
}

/// The tokens of a libFuzzer dictionary (`name="value"` or `"value"` lines; `#` comments;
/// escapes `\\`, `\"` and `\xNN`). Malformed lines are skipped.
pub fn parse_dict(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let start = line.find('"')? + 1;
            let end = line.rfind('"')?;
            (end >= start).then(|| unescape(&line.as_bytes()[start..end]))
        })
        .collect()
}

fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        match raw.get(i + 1) {
            Some(b'x') => {
                let hex = raw
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 4;
                    }
                    None => {
                        out.push(b'\\');
                        i += 1;
                    }
                }
            }
            Some(&c) => {
                out.push(c);
                i += 2;
            }
            None => {
                out.push(b'\\');
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_lines_unescape() {
        let d = parse_dict("# c\nkw=\"model\"\n\"\\x0d\\x0a--\"\n\"a\\\\b\\\"c\"\n\nbad\n");
        assert_eq!(
            d,
            vec![b"model".to_vec(), b"\r\n--".to_vec(), b"a\\b\"c".to_vec()]
        );
    }

    #[test]
    fn generation_is_deterministic_and_bounded() {
        let shape = Shape {
            chunked: true,
            max_len: 300,
        };
        let make = || {
            Generator::new(
                7,
                vec![b"0{\"model\":\"m\"}".to_vec()],
                vec![b"\"x\"".to_vec()],
                shape,
            )
        };
        let (mut a, mut b) = (make(), make());
        for _ in 0..2000 {
            let x = a.next_input();
            assert!(x.len() <= 300);
            assert_eq!(x, b.next_input());
        }
    }
}
