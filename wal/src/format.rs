//! On-disk format: segment header, records, meta frames. Little endian throughout.
//!
//! Segment file `<first-index:020>.wal`:
//! `[magic 8][version u32][header crc u32][first index u64]` then records
//! `[len u32][crc u32][index u64][payload: len bytes]`, where the record's crc is
//! CRC-32 (IEEE) over `len`, `index` and the payload, so a flipped bit in any field
//! of a record is caught.

/// Identifies a Herald log segment (and is never a valid record prefix).
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"HRLDWAL\0";
/// Identifies a Herald meta file (vote, committed, purge point).
pub(crate) const META_MAGIC: [u8; 8] = *b"HRLDMETA";
/// Bumped on any incompatible change; an unknown version refuses to open.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// Bytes of a segment header.
pub(crate) const SEGMENT_HEADER_LEN: u64 = 24;
/// Bytes of a record header (len, crc, index).
pub(crate) const RECORD_HEADER_LEN: u64 = 16;
/// Bytes of a meta frame header (magic, version, len, crc).
pub(crate) const META_HEADER_LEN: usize = 20;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

pub(crate) fn segment_header(first_index: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_index.to_le_bytes());
    let crc = header_crc(&h);
    h[12..16].copy_from_slice(&crc.to_le_bytes());
    h
}

fn header_crc(h: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&h[0..12]);
    c.update(&h[16..24]);
    c.finalize()
}

/// Checks a segment header; returns its first index, or what is wrong with it.
pub(crate) fn parse_segment_header(b: &[u8]) -> Result<u64, String> {
    if b.len() < SEGMENT_HEADER_LEN as usize {
        return Err(format!("header is {} bytes, expected {SEGMENT_HEADER_LEN}", b.len()));
    }
    if b[0..8] != SEGMENT_MAGIC {
        return Err("not a Herald log segment (bad magic)".into());
    }
    if header_crc(b) != u32_at(b, 12) {
        return Err("header checksum mismatch".into());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
    }
    Ok(u64_at(b, 16))
}

fn record_crc(len: u32, index: u64, payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&len.to_le_bytes());
    c.update(&index.to_le_bytes());
    c.update(payload);
    c.finalize()
}

/// Appends one record to `out`.
pub(crate) fn encode_record(out: &mut Vec<u8>, index: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("record size checked against MAX_RECORD_BYTES");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&record_crc(len, index, payload).to_le_bytes());
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(payload);
}

/// One record found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rec {
    pub index: u64,
    pub payload_len: u32,
}

impl Rec {
    pub fn total_len(&self) -> u64 {
        RECORD_HEADER_LEN + self.payload_len as u64
    }
}

/// Why the bytes at an offset are not a whole, valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecError {
    /// Fewer bytes than the record needs: the file ends inside it.
    Short,
    /// The length field exceeds the record size limit.
    TooLong(u32),
    /// The checksum does not match.
    Checksum,
}

impl std::fmt::Display for RecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecError::Short => write!(f, "the file ends inside the record"),
            RecError::TooLong(n) => {
                write!(f, "length field {n} exceeds the limit of {}", crate::MAX_RECORD_BYTES)
            }
            RecError::Checksum => write!(f, "checksum mismatch"),
        }
    }
}

/// Parses the record at the start of `b` (which runs to the end of the data).
pub(crate) fn parse_record(b: &[u8]) -> Result<Rec, RecError> {
    if b.len() < RECORD_HEADER_LEN as usize {
        return Err(RecError::Short);
    }
    let len = u32_at(b, 0);
    if len as usize > crate::MAX_RECORD_BYTES {
        return Err(RecError::TooLong(len));
    }
    let end = RECORD_HEADER_LEN as usize + len as usize;
    if b.len() < end {
        return Err(RecError::Short);
    }
    let index = u64_at(b, 8);
    if record_crc(len, index, &b[RECORD_HEADER_LEN as usize..end]) != u32_at(b, 4) {
        return Err(RecError::Checksum);
    }
    Ok(Rec { index, payload_len: len })
}

/// Looks for any whole, valid record starting after `from` whose index is at
/// least `min_index`: evidence that a bad record is not a torn tail but damage
/// in the middle of acknowledged data. Returns its offset.
pub(crate) fn find_valid_record(b: &[u8], from: usize, min_index: u64) -> Option<usize> {
    let hl = RECORD_HEADER_LEN as usize;
    // A record needs at least its header; more records than bytes cannot follow.
    let max_index = min_index.saturating_add(b.len() as u64);
    let mut pos = from;
    while pos + hl <= b.len() {
        let len = u32_at(b, pos) as usize;
        let index = u64_at(b, pos + 8);
        // Cheap filters first; the checksum only for plausible candidates.
        if len <= crate::MAX_RECORD_BYTES
            && pos + hl + len <= b.len()
            && (min_index..=max_index).contains(&index)
            && parse_record(&b[pos..]).is_ok()
        {
            return Some(pos);
        }
        pos += 1;
    }
    None
}

/// A meta frame: `[magic 8][version u32][len u32][crc u32][payload]`, crc over
/// the payload and len.
pub(crate) fn encode_meta(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("meta payload checked against MAX_META_BYTES");
    let mut out = Vec::with_capacity(META_HEADER_LEN + payload.len());
    out.extend_from_slice(&META_MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&meta_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn meta_crc(len: u32, payload: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&len.to_le_bytes());
    c.update(payload);
    c.finalize()
}

pub(crate) fn parse_meta(b: &[u8]) -> Result<&[u8], String> {
    if b.len() < META_HEADER_LEN {
        return Err(format!("{} bytes, shorter than the {META_HEADER_LEN}-byte header", b.len()));
    }
    if b[0..8] != META_MAGIC {
        return Err("not a Herald meta file (bad magic)".into());
    }
    let version = u32_at(b, 8);
    if version != FORMAT_VERSION {
        return Err(format!("format version {version}, this build reads {FORMAT_VERSION}"));
    }
    let len = u32_at(b, 12);
    let payload = &b[META_HEADER_LEN..];
    if payload.len() != len as usize {
        return Err(format!("payload is {} bytes, header says {len}", payload.len()));
    }
    if meta_crc(len, payload) != u32_at(b, 16) {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record round-trips, and flipping any single byte of it is detected.
    #[test]
    fn record_roundtrip_and_every_flip_detected() {
        let mut b = Vec::new();
        encode_record(&mut b, 42, b"hello world");
        assert_eq!(parse_record(&b), Ok(Rec { index: 42, payload_len: 11 }));
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(parse_record(&c).is_err(), "flip at byte {i} not detected");
        }
    }

    /// A segment header round-trips; a damaged one is refused with a reason.
    #[test]
    fn segment_header_roundtrip() {
        let h = segment_header(7);
        assert_eq!(parse_segment_header(&h), Ok(7));
        let mut bad = h;
        bad[20] ^= 1;
        assert!(parse_segment_header(&bad).unwrap_err().contains("checksum"));
        assert!(parse_segment_header(&h[..10]).is_err());
    }

    /// A zero-filled tail (what a crash can leave after a size extension) is
    /// not mistaken for a record.
    #[test]
    fn zeros_are_not_a_record() {
        let z = vec![0u8; 4096];
        assert!(parse_record(&z).is_err());
        assert_eq!(find_valid_record(&z, 0, 0), None);
    }

    /// A meta frame round-trips; truncation and flips are refused.
    #[test]
    fn meta_roundtrip() {
        let m = encode_meta(b"vote");
        assert_eq!(parse_meta(&m), Ok(&b"vote"[..]));
        assert!(parse_meta(&m[..m.len() - 1]).is_err());
        let mut f = m.clone();
        f[META_HEADER_LEN] ^= 1;
        assert!(parse_meta(&f).unwrap_err().contains("checksum"));
    }
}
