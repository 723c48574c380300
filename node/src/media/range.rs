//! HTTP `Range` requests for media downloads (RFC 9110 §14), single range
//! only.
//!
//! [`parse`] turns a `Range` header and the size of the stored file into a
//! [`RangeAnswer`]: the whole body (`200`), one byte range (`206` with the
//! `Content-Range` made by [`content_range`]), or `416` (with
//! `Content-Range: bytes */size`).
//!
//! RFC 9110 lets a server ignore `Range` (§14.2), so whatever this module does
//! not support — another unit, a header it cannot parse, several ranges — is
//! answered with the whole body rather than an error. Only a well-formed
//! single `bytes` range that selects nothing is refused (§14.1.1: "a range-set
//! is satisfiable if it contains an int-range with first-pos less than the
//! current length, or a suffix-range with a non-zero suffix-length").

/// What to serve for a download, given its `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Serve the whole body (no Range header, unparseable/unsupported unit,
    /// or a multi-range request — RFC 9110 allows ignoring Range).
    Full,
    /// Serve bytes start..=end (206, Content-Range: bytes start-end/size).
    Partial { start: u64, end: u64 },
    /// 416 with Content-Range: bytes */size.
    Unsatisfiable,
}

/// Decides what to serve of a body of `size` bytes for the `Range` header
/// `header` (its value, if the request had one).
///
/// Accepted forms, with optional whitespace around the parts and the unit
/// matched case-insensitively (§14.1: range units are case-insensitive):
///
/// - `bytes=a-b`: bytes `a..=b`, `b` clamped to `size - 1`; `a > b` is
///   invalid syntax and ignored ([`RangeAnswer::Full`]).
/// - `bytes=a-`: bytes `a..` to the end.
/// - `bytes=-n`: the last `n` bytes (the whole body when `n >= size`);
///   `-0` selects nothing.
///
/// A first byte at or past the end, or `-0`, is
/// [`RangeAnswer::Unsatisfiable`]. An empty body has no byte a `206` could
/// name: a non-zero suffix range is satisfiable for it per §14.1.1 and is
/// answered with the (empty) whole body, any other range is unsatisfiable.
/// Numbers too large for a `u64` saturate (a huge first byte is past the end,
/// a huge last byte or suffix covers the rest of the body).
pub fn parse(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(header) = header else {
        return RangeAnswer::Full;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return RangeAnswer::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return RangeAnswer::Full;
    }
    if set.contains(',') {
        // Several ranges (a multipart/byteranges answer) are not supported.
        return RangeAnswer::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeAnswer::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    match (first.is_empty(), last.is_empty()) {
        // `-n`: suffix range.
        (true, false) => {
            let Some(suffix) = number(last) else {
                return RangeAnswer::Full;
            };
            if suffix == 0 {
                RangeAnswer::Unsatisfiable
            } else if size == 0 {
                RangeAnswer::Full
            } else {
                RangeAnswer::Partial { start: size.saturating_sub(suffix), end: size - 1 }
            }
        }
        // `a-` or `a-b`: int range.
        (false, open) => {
            let Some(start) = number(first) else {
                return RangeAnswer::Full;
            };
            let end = if open {
                u64::MAX
            } else {
                match number(last) {
                    Some(end) if end >= start => end,
                    // Invalid (`a > b` or not a number): ignore the header.
                    _ => return RangeAnswer::Full,
                }
            };
            if start >= size {
                RangeAnswer::Unsatisfiable
            } else {
                RangeAnswer::Partial { start, end: end.min(size - 1) }
            }
        }
        // `-` alone.
        (true, true) => RangeAnswer::Full,
    }
}

/// The `Content-Range` value of a `206` carrying bytes `start..=end` of a
/// body of `size` bytes: `bytes 0-99/1000`.
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{end}/{size}")
}

/// A decimal number of one or more ASCII digits (RFC 9110 `1*DIGIT`: no sign,
/// no inner spaces), saturating at `u64::MAX`.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Only digits, so the only possible failure is overflow.
    Some(s.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeAnswer::{Full, Partial, Unsatisfiable};

    /// No `Range` header means the whole body.
    #[test]
    fn no_header_is_full() {
        assert_eq!(parse(None, 1000), Full);
        assert_eq!(parse(None, 0), Full);
    }

    /// `bytes=a-b` inside the body is served exactly.
    #[test]
    fn closed_range() {
        assert_eq!(parse(Some("bytes=0-99"), 1000), Partial { start: 0, end: 99 });
        assert_eq!(parse(Some("bytes=500-500"), 1000), Partial { start: 500, end: 500 });
        assert_eq!(parse(Some("bytes=0-999"), 1000), Partial { start: 0, end: 999 });
    }

    /// A last byte past the end is clamped to `size - 1` (RFC 9110 §14.1.2).
    #[test]
    fn last_byte_is_clamped() {
        assert_eq!(parse(Some("bytes=990-2000"), 1000), Partial { start: 990, end: 999 });
        assert_eq!(
            parse(Some("bytes=0-99999999999999999999999"), 1000),
            Partial { start: 0, end: 999 }
        );
    }

    /// `bytes=a-` runs to the end of the body.
    #[test]
    fn open_range() {
        assert_eq!(parse(Some("bytes=0-"), 1000), Partial { start: 0, end: 999 });
        assert_eq!(parse(Some("bytes=999-"), 1000), Partial { start: 999, end: 999 });
    }

    /// `bytes=-n` is the last n bytes; more than the body is the whole body as
    /// a 206; `-0` selects nothing.
    #[test]
    fn suffix_range() {
        assert_eq!(parse(Some("bytes=-100"), 1000), Partial { start: 900, end: 999 });
        assert_eq!(parse(Some("bytes=-1000"), 1000), Partial { start: 0, end: 999 });
        assert_eq!(parse(Some("bytes=-5000"), 1000), Partial { start: 0, end: 999 });
        assert_eq!(
            parse(Some("bytes=-99999999999999999999999"), 1000),
            Partial { start: 0, end: 999 }
        );
        assert_eq!(parse(Some("bytes=-0"), 1000), Unsatisfiable);
    }

    /// A first byte at or past the end is unsatisfiable (416).
    #[test]
    fn start_past_end_is_unsatisfiable() {
        assert_eq!(parse(Some("bytes=1000-"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=1000-1001"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=5000-6000"), 1000), Unsatisfiable);
        assert_eq!(parse(Some("bytes=99999999999999999999999-"), 1000), Unsatisfiable);
    }

    /// `a > b` is invalid syntax, which RFC 9110 says to ignore: whole body.
    #[test]
    fn reversed_range_is_ignored() {
        assert_eq!(parse(Some("bytes=10-5"), 1000), Full);
        // Even when both ends are past the end of the body.
        assert_eq!(parse(Some("bytes=3000-2000"), 1000), Full);
    }

    /// Whitespace around the header, the unit, the range and its numbers is
    /// tolerated, and the unit is case-insensitive.
    #[test]
    fn whitespace_and_case() {
        assert_eq!(parse(Some("  bytes=0-99  "), 1000), Partial { start: 0, end: 99 });
        assert_eq!(parse(Some("bytes = 0 - 99"), 1000), Partial { start: 0, end: 99 });
        assert_eq!(parse(Some("bytes= -100"), 1000), Partial { start: 900, end: 999 });
        assert_eq!(parse(Some("\tbytes=10-\t"), 1000), Partial { start: 10, end: 999 });
        assert_eq!(parse(Some("Bytes=0-0"), 1000), Partial { start: 0, end: 0 });
        assert_eq!(parse(Some("BYTES=0-0"), 1000), Partial { start: 0, end: 0 });
    }

    /// Several ranges are not supported: whole body, as RFC 9110 allows —
    /// even when some of them would be unsatisfiable.
    #[test]
    fn multi_range_is_full() {
        assert_eq!(parse(Some("bytes=0-1,5-6"), 1000), Full);
        assert_eq!(parse(Some("bytes=0-1, 5-6"), 1000), Full);
        assert_eq!(parse(Some("bytes=-5,0-1"), 1000), Full);
        assert_eq!(parse(Some("bytes=2000-3000,4000-5000"), 1000), Full);
    }

    /// Other units and malformed headers are ignored: whole body.
    #[test]
    fn unsupported_or_malformed_is_full() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=5",
            "bytes=a-b",
            "bytes=1-b",
            "bytes=+1-2",
            "bytes=1-+2",
            "bytes=-+5",
            "bytes=--5",
            "bytes=1 0-20",
            "bytes=0x10-20",
            "items=0-1",
            "bytesx=0-1",
            "0-1",
        ] {
            assert_eq!(parse(Some(header), 1000), Full, "{header:?}");
        }
    }

    /// An empty body: an int range or `-0` is unsatisfiable, while a
    /// non-zero suffix range is satisfiable (RFC 9110 §14.1.1) but names no
    /// byte a 206 could carry, so the (empty) whole body is served.
    #[test]
    fn empty_body() {
        assert_eq!(parse(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-99"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-1"), 0), Full);
        assert_eq!(parse(Some("bytes=-100"), 0), Full);
        // Invalid syntax is still ignored.
        assert_eq!(parse(Some("bytes=5-1"), 0), Full);
    }

    /// A one-byte body: every satisfiable form selects byte 0.
    #[test]
    fn one_byte_body() {
        for header in ["bytes=0-0", "bytes=0-", "bytes=0-5", "bytes=-1", "bytes=-9"] {
            assert_eq!(parse(Some(header), 1), Partial { start: 0, end: 0 }, "{header:?}");
        }
        assert_eq!(parse(Some("bytes=1-"), 1), Unsatisfiable);
    }

    /// The Content-Range value has the RFC 9110 §14.4 form.
    #[test]
    fn content_range_format() {
        assert_eq!(content_range(0, 99, 1000), "bytes 0-99/1000");
        assert_eq!(content_range(999, 999, 1000), "bytes 999-999/1000");
    }
}
