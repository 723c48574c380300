//! Id lists for `presence query --file`: one id per line, `sid:N` lines are
//! sids, blank lines and `#` comments are skipped.

use std::io::Read;
use std::path::Path;

use herald_client::ClientError;

/// Uids and sids read from a list, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uids: Vec<String>,
    pub sids: Vec<u64>,
}

/// Parses an id list. Each line is trimmed; empty lines and lines starting
/// with `#` are skipped; `sid:12345` (spaces allowed after the colon) is a
/// sid; anything else is a uid. A `sid:` line that is not a number is an
/// error naming the line.
pub fn parse(text: &str, origin: &str) -> Result<Ids, ClientError> {
    let mut ids = Ids::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.strip_prefix("sid:") {
            Some(s) => {
                let sid = s.trim().parse::<u64>().map_err(|_| {
                    ClientError::InvalidArgument(format!(
                        "{origin}:{}: {line:?} is not sid:<number>",
                        n + 1
                    ))
                })?;
                ids.sids.push(sid);
            }
            None => ids.uids.push(line.to_string()),
        }
    }
    Ok(ids)
}

/// Reads and parses an id list from a file, or from stdin when `path` is
/// `-`.
pub fn read(path: &Path) -> Result<Ids, ClientError> {
    let origin = path.display().to_string();
    let text = if origin == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(|e| {
            ClientError::InvalidArgument(format!("cannot read ids from stdin: {e}"))
        })?;
        s
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot read {origin}: {e}")))?
    };
    parse(&text, &origin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Uids and `sid:` lines are told apart and kept in order; blank lines,
    /// comments and surrounding blanks (also CRLF endings) are dropped.
    #[test]
    fn cli_ids_parse_mixed_file() {
        let text = "# users to check\nalice\n\n  bob  \r\nsid:42\nsid: 7\n   # indented comment\ncarol#1\n";
        let ids = parse(text, "f").unwrap();
        assert_eq!(ids.uids, vec!["alice", "bob", "carol#1"]);
        assert_eq!(ids.sids, vec![42, 7]);
    }

    /// A malformed sid line is refused with its line number.
    #[test]
    fn cli_ids_parse_bad_sid_names_line() {
        let e = parse("a\nsid:x1\n", "ids.txt").unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.to_string().contains("ids.txt:2"), "{e}");
        assert!(parse("sid:-1", "f").is_err());
        assert!(parse("sid:", "f").is_err());
    }

    /// An empty or comment-only file yields no ids.
    #[test]
    fn cli_ids_parse_empty() {
        assert_eq!(parse("", "f").unwrap(), Ids::default());
        assert_eq!(parse("# nothing\n\n", "f").unwrap(), Ids::default());
    }

    /// A missing file is an `invalid_argument` error naming the path.
    #[test]
    fn cli_ids_read_missing_file() {
        let e = read(Path::new("/nonexistent/herald-ids.txt")).unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.to_string().contains("/nonexistent/herald-ids.txt"));
    }
}
