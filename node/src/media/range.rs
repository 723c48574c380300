//! PLACEHOLDER replaced at merge by the wt-edit branch (HTTP Range).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer { Full, Partial { start: u64, end: u64 }, Unsatisfiable }
pub fn parse(_header: Option<&str>, _size: u64) -> RangeAnswer { RangeAnswer::Full }
pub fn content_range(start: u64, end: u64, size: u64) -> String { format!("bytes {start}-{end}/{size}") }
