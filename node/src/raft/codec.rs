//! bincode encoding of openraft messages and stored values.

use serde::de::DeserializeOwned;
use serde::Serialize;

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, std::io::Error> {
    bincode::serde::encode_to_vec(v, config()).map_err(std::io::Error::other)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, std::io::Error> {
    bincode::serde::decode_from_slice(b, config())
        .map(|(v, _)| v)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
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
