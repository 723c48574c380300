//! bincode encoding of openraft messages and stored values.
//!
//! Decoding is bounded: every decode may claim at most [`MAX_DECODE_BYTES`]
//! in total (lengths of strings, vectors and maps are checked against the
//! budget before anything is allocated), so a peer's few bytes claiming a
//! 1 TiB string, or a length of 2^64-1, are refused with an error instead of
//! aborting or panicking the node.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest message accepted on the sync port (one AppendEntries batch).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// The most one decoded value may claim: the largest message the sync port
/// accepts (an AppendEntries batch, a forwarded write), so nothing a peer
/// can send legitimately is refused and nothing larger is ever allocated.
pub const MAX_DECODE_BYTES: usize = MAX_RAFT_MESSAGE_BYTES;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_DECODE_BYTES>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_DECODE_BYTES>()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    bincode::serde::encode_to_vec(v, config()).map_err(std::io::Error::other)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, std::io::Error> {
    bincode::serde::decode_from_slice(b, config())
        .map(|(v, _)| v)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The length of `v` encoded, without allocating it (sizes a batch before
/// it is encoded once).
pub fn encoded_len<T: Serialize>(v: &T) -> Result<usize, std::io::Error> {
    let mut w = bincode::enc::write::SizeWriter::default();
    bincode::serde::encode_into_writer(v, &mut w, config()).map_err(std::io::Error::other)?;
    Ok(w.bytes_written)
}

/// Streams a value into a writer (snapshots: no whole-file buffer).
pub fn encode_into<T: Serialize, W: std::io::Write>(
    v: &T,
    w: &mut W,
) -> Result<(), std::io::Error> {
    bincode::serde::encode_into_std_write(v, w, config()).map(|_| ()).map_err(std::io::Error::other)
}

/// Reads one value from a reader.
pub fn decode_from<T: DeserializeOwned, R: std::io::Read>(r: &mut R) -> Result<T, std::io::Error> {
    bincode::serde::decode_from_std_read(r, config())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value that claims more than the budget is refused with an error:
    /// a 21-byte message whose string claims 1 TiB, and one whose length is
    /// 2^64-1 (which used to abort the process or panic), and a vector of a
    /// billion strings. Values within the budget still round-trip.
    #[test]
    fn codec_refuses_lengths_beyond_the_limit() {
        // Varint u64 marker 0xFD then 8 bytes little-endian, then padding.
        let mut tib = vec![0xFDu8];
        tib.extend_from_slice(&(1u64 << 40).to_le_bytes());
        tib.extend_from_slice(&[b'x'; 12]);
        assert_eq!(tib.len(), 21);
        assert!(decode::<String>(&tib).is_err());
        assert!(decode::<Vec<u8>>(&tib).is_err());
        let mut max = vec![0xFDu8];
        max.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode::<String>(&max).is_err());
        assert!(decode::<Vec<String>>(&max).is_err());
        let mut billion = vec![0xFDu8];
        billion.extend_from_slice(&1_000_000_000u64.to_le_bytes());
        assert!(decode::<Vec<String>>(&billion).is_err());
        assert!(decode_from::<Vec<String>, _>(&mut &billion[..]).is_err());
        let v: Vec<String> = vec!["a".into(); 1000];
        assert_eq!(decode::<Vec<String>>(&encode(&v).unwrap()).unwrap(), v);
    }
}
