//! Coverage-less mutations: each input is a corpus entry changed by a few
//! stacked mutations — bit and byte flips, range deletes, inserts,
//! duplicates and repeats, splices of two corpus entries, interesting
//! integers (binary and decimal), the target's dictionary tokens, words and
//! quoted values replaced by tokens (text that stays well-formed), and
//! bincode varint length markers that claim huge lengths.

use crate::rng::Rng;

/// Largest input the mutator makes: three times the largest seed
/// (`conf/reference.xml`, 20 KiB), room to grow while keeping the fuzzer's
/// time on structure rather than bulk. Also the size of the shared page's
/// input buffer ([`crate::shm`]).
pub const MAX_INPUT_BYTES: usize = 64 << 10;

/// Most mutations stacked on one input: enough to move far from a seed in
/// one step, few enough that most inputs stay close to valid.
const MAX_STACKED: usize = 6;

/// Longest range a delete, insert or duplicate touches.
const MAX_RANGE: usize = 64;

/// Most repetitions of one repeat mutation: deep nesting (`[[[[…`,
/// `<a><a>…`) for recursion limits, still far below [`MAX_INPUT_BYTES`].
const MAX_REPEAT: usize = 2048;

/// Most tokens taken from a corpus into the automatic dictionary.
const MAX_AUTO_TOKENS: usize = 1024;

/// Integers at the edges of the common widths.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    1 << 40,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
];

/// The same, as text (JSON numbers, XML attribute values, Range headers).
const INTERESTING_TEXT: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "255",
    "256",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999999999",
    "-9223372036854775809",
    "1e309",
    "1.5",
    "0x10",
    "1_000",
    "+1",
    " 1",
];

/// bincode's varint markers (0xFB: u16, 0xFC: u32, 0xFD: u64, 0xFE: u128
/// follows) — a length written with one of these can claim anything.
const VARINT_MARKERS: &[u8] = &[0xFB, 0xFC, 0xFD, 0xFE];

/// Makes inputs for one target from its corpus and dictionary.
pub struct Mutator {
    corpus: Vec<Vec<u8>>,
    dict: Vec<Vec<u8>>,
}

impl Mutator {
    /// `corpus` must not be empty (an empty input is added if it is);
    /// `dict` is extended with the identifiers found in the corpus.
    pub fn new(mut corpus: Vec<Vec<u8>>, mut dict: Vec<Vec<u8>>) -> Self {
        if corpus.is_empty() {
            corpus.push(Vec::new());
        }
        for c in &mut corpus {
            c.truncate(MAX_INPUT_BYTES);
        }
        dict.extend(auto_tokens(&corpus));
        dict.retain(|t| !t.is_empty());
        dict.sort();
        dict.dedup();
        Mutator { corpus, dict }
    }

    pub fn corpus(&self) -> &[Vec<u8>] {
        &self.corpus
    }

    /// A new input: one corpus entry with 1..=[`MAX_STACKED`] mutations.
    pub fn mutate(&self, rng: &mut Rng) -> Vec<u8> {
        let mut v = rng.pick(&self.corpus).clone();
        for _ in 0..rng.between(1, MAX_STACKED) {
            self.mutate_once(&mut v, rng);
        }
        v.truncate(MAX_INPUT_BYTES);
        v
    }

    fn mutate_once(&self, v: &mut Vec<u8>, rng: &mut Rng) {
        let n = v.len();
        match rng.below(18) {
            // Flip one bit.
            0 if n > 0 => {
                let i = rng.below(n);
                v[i] ^= 1 << rng.below(8);
            }
            // Set one byte to anything.
            1 if n > 0 => {
                let i = rng.below(n);
                v[i] = rng.next_u64() as u8;
            }
            // Nudge one byte up or down a little.
            2 if n > 0 => {
                let i = rng.below(n);
                let d = rng.between(1, 35) as u8;
                v[i] = if rng.one_in(2) { v[i].wrapping_add(d) } else { v[i].wrapping_sub(d) };
            }
            // Delete a range.
            3 if n > 0 => {
                let (a, len) = range(rng, n);
                v.drain(a..a + len);
            }
            // Insert random bytes.
            4 => {
                let len = rng.between(1, MAX_RANGE.min(16));
                let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
                insert(v, rng.below(n + 1), &bytes);
            }
            // Duplicate a range somewhere else.
            5 if n > 0 => {
                let (a, len) = range(rng, n);
                let part = v[a..a + len].to_vec();
                insert(v, rng.below(n + 1), &part);
            }
            // Overwrite a range with another part of the input.
            6 if n > 1 => {
                let (a, len) = range(rng, n);
                let part = v[a..a + len].to_vec();
                overwrite(v, rng.below(n), &part);
            }
            // Splice: a prefix of this input and a suffix of another entry.
            7 => {
                let other = rng.pick(&self.corpus);
                let cut = rng.below(n + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            // An interesting integer, 1/2/4/8 bytes, either endianness.
            8 => {
                let x = *rng.pick(INTERESTING);
                let width = *rng.pick(&[1usize, 2, 4, 8]);
                let mut bytes = x.to_le_bytes()[..width].to_vec();
                if rng.one_in(2) {
                    bytes.reverse();
                }
                put(v, rng, &bytes);
            }
            // An interesting number as text.
            9 => {
                let t = rng.pick(INTERESTING_TEXT).as_bytes().to_vec();
                put(v, rng, &t);
            }
            // A dictionary token.
            10 | 11 if !self.dict.is_empty() => {
                let t = rng.pick(&self.dict).clone();
                put(v, rng, &t);
            }
            // A bincode varint claiming a huge (or the largest) length.
            12 => {
                let marker = *rng.pick(VARINT_MARKERS);
                let mut bytes = vec![marker];
                let x = *rng.pick(INTERESTING);
                match marker {
                    0xFB => bytes.extend_from_slice(&(x as u16).to_le_bytes()),
                    0xFC => bytes.extend_from_slice(&(x as u32).to_le_bytes()),
                    0xFD => bytes.extend_from_slice(&x.to_le_bytes()),
                    _ => bytes.extend_from_slice(&(x as u128).to_le_bytes()),
                }
                put(v, rng, &bytes);
            }
            // Repeat a short range (or a token) many times: deep nesting.
            13 => {
                let unit = if n > 0 && rng.one_in(2) {
                    let a = rng.below(n);
                    let len = rng.between(1, (n - a).min(8));
                    v[a..a + len].to_vec()
                } else if !self.dict.is_empty() {
                    rng.pick(&self.dict).clone()
                } else {
                    vec![rng.next_u64() as u8]
                };
                let times = rng.between(2, MAX_REPEAT);
                let mut bytes = Vec::with_capacity(unit.len() * times);
                for _ in 0..times {
                    bytes.extend_from_slice(&unit);
                    if bytes.len() >= MAX_INPUT_BYTES {
                        break;
                    }
                }
                insert(v, rng.below(n + 1), &bytes);
            }
            // Truncate.
            14 if n > 0 => v.truncate(rng.below(n)),
            // Replace a word (element, attribute or key name, enum value)
            // with a dictionary token: the text stays well-formed, so the
            // input gets past the syntax to the validation behind it.
            15 | 16 if n > 0 && !self.dict.is_empty() => {
                if let Some((a, b)) = word_at(v, rng.below(n)) {
                    let t = rng.pick(&self.dict).clone();
                    v.splice(a..b, t);
                }
            }
            // Replace a quoted value with a token or a number.
            17 if n > 0 => {
                if let Some((a, b)) = quoted_at(v, rng.below(n)) {
                    let t = if self.dict.is_empty() || rng.one_in(2) {
                        rng.pick(INTERESTING_TEXT).as_bytes().to_vec()
                    } else {
                        rng.pick(&self.dict).clone()
                    };
                    v.splice(a..b, t);
                }
            }
            // The chosen mutation did not apply (empty input): flip a coin
            // byte onto the end instead.
            _ => v.push(rng.next_u64() as u8),
        }
        v.truncate(MAX_INPUT_BYTES);
    }
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// The word (identifier run) around `i`, or the next one after it.
fn word_at(v: &[u8], i: usize) -> Option<(usize, usize)> {
    let start = (i..v.len()).find(|&j| is_word(v[j]))?;
    let a = (0..start).rev().find(|&j| !is_word(v[j])).map_or(0, |j| j + 1);
    let b = (start..v.len()).find(|&j| !is_word(v[j])).unwrap_or(v.len());
    Some((a, b))
}

/// The inside of the quoted string (`"…"`) that starts at or after `i`.
fn quoted_at(v: &[u8], i: usize) -> Option<(usize, usize)> {
    let open = (i..v.len()).find(|&j| v[j] == b'"')? + 1;
    let close = (open..v.len()).find(|&j| v[j] == b'"')?;
    Some((open, close))
}

/// A random non-empty range `a..a+len` of a buffer of `n > 0` bytes.
fn range(rng: &mut Rng, n: usize) -> (usize, usize) {
    let a = rng.below(n);
    let len = rng.between(1, (n - a).min(MAX_RANGE));
    (a, len)
}

fn insert(v: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(v.len());
    v.splice(at..at, bytes.iter().copied());
}

fn overwrite(v: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(v.len());
    let end = (at + bytes.len()).min(v.len());
    v.splice(at..end, bytes.iter().copied());
}

/// Inserts or overwrites at a random place.
fn put(v: &mut Vec<u8>, rng: &mut Rng, bytes: &[u8]) {
    let at = rng.below(v.len() + 1);
    if rng.one_in(2) {
        insert(v, at, bytes);
    } else {
        overwrite(v, at, bytes);
    }
}

/// Identifier-like runs (letters, digits, `_`, `-`; 2..=32 bytes) of the
/// corpus: XML element and attribute names, JSON keys, enum tags.
fn auto_tokens(corpus: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for c in corpus {
        for word in c.split(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')) {
            if (2..=32).contains(&word.len()) && word.iter().any(u8::is_ascii_alphabetic) {
                out.push(word.to_vec());
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_AUTO_TOKENS);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same seed gives the same inputs; inputs change the seed entry
    /// (mostly) and never exceed the size cap, even from a full-size seed.
    #[test]
    fn mutations_are_deterministic_and_bounded() {
        let corpus = vec![b"{\"events\":[]}".to_vec(), vec![b'x'; MAX_INPUT_BYTES]];
        let m = Mutator::new(corpus.clone(), vec![b"uid".to_vec()]);
        let make = |seed| {
            let mut rng = Rng::new(seed);
            (0..2000).map(|_| m.mutate(&mut rng)).collect::<Vec<_>>()
        };
        let a = make(9);
        assert_eq!(a, make(9));
        assert!(a.iter().all(|v| v.len() <= MAX_INPUT_BYTES));
        let changed = a.iter().filter(|v| !corpus.contains(v)).count();
        assert!(changed > 1900, "only {changed} of 2000 inputs differ from the corpus");
    }

    /// Words and quoted values are found where the structure-keeping
    /// mutations replace them.
    #[test]
    fn words_and_quoted_values_are_located() {
        let v = b"<auth key=\"secret\"/>";
        assert_eq!(word_at(v, 0), Some((1, 5)), "the next word: auth");
        assert_eq!(word_at(v, 7), Some((6, 9)), "the word around: key");
        assert_eq!(quoted_at(v, 0), Some((11, 17)), "secret");
        assert_eq!(quoted_at(v, 12), None, "no quote opens after the value's start");
        assert_eq!(word_at(b"<>", 0), None);
    }

    /// The dictionary is fed from the corpus (XML names, JSON keys), and
    /// the huge-length varint marker reaches inputs.
    #[test]
    fn corpus_identifiers_and_varint_markers_reach_inputs() {
        let m = Mutator::new(vec![b"<server number=\"1\"/>".to_vec()], Vec::new());
        assert!(m.dict.contains(&b"server".to_vec()) && m.dict.contains(&b"number".to_vec()));
        let mut rng = Rng::new(1);
        let inputs: Vec<Vec<u8>> = (0..5000).map(|_| m.mutate(&mut rng)).collect();
        let has =
            |needle: &[u8]| inputs.iter().any(|v| v.windows(needle.len()).any(|w| w == needle));
        assert!(has(&[0xFD, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
        assert!(has(b"18446744073709551616"));
        let count = |v: &Vec<u8>, t: &[u8]| v.windows(t.len()).filter(|w| *w == t).count();
        assert!(
            inputs.iter().any(|v| count(v, b"server") >= 3),
            "tokens are inserted and repeated"
        );
    }
}
