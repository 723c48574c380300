//! Printing results: one JSON document (`--json`) or human text, and the
//! small formatting helpers the human text shares.

use std::io::Write;

use herald_client::{ClientError, NodeStatus};
use serde::Serialize;

use super::table::Table;

/// Where and how results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints `value` as pretty JSON with `--json`, else the text `human`
    /// builds.
    pub fn print<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> Result<(), ClientError> {
        let text = if self.json {
            serde_json::to_string_pretty(value)
                .map_err(|e| ClientError::InvalidArgument(format!("cannot encode JSON: {e}")))?
        } else {
            human(value)
        };
        emit(&text);
        Ok(())
    }
}

/// Writes `text` and a final newline to stdout; a closed pipe (`| head`) is
/// not an error.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if !text.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

pub fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The members table of `status` and the membership commands.
pub fn nodes_table(nodes: &[NodeStatus]) -> String {
    let mut t = Table::new([
        "NUMBER",
        "SYNC",
        "PUBLISH",
        "ROLE",
        "ZONE",
        "HEALTHY",
        "MATCHED",
        "LAG",
        "LAG MS",
        "CLOCK OFFSET",
        "RTT",
        "IN TOL",
        "LAST SYNC",
        "MEDIA",
    ]);
    for n in nodes {
        let c = n.clock.as_ref();
        t.row([
            n.number.to_string(),
            n.sync.clone(),
            n.publish.clone(),
            n.role.clone(),
            if n.zone.is_empty() { "-".into() } else { n.zone.clone() },
            yes_no(n.healthy).to_string(),
            n.matched_index.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            n.lag_entries.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            n.lag_ms.map(|m| m.to_string()).unwrap_or_else(|| "-".into()),
            c.map(|c| format!("{:+.3} ms", c.offset_ms)).unwrap_or_else(|| "-".into()),
            c.map(|c| format!("{:.3} ms", c.rtt_ms)).unwrap_or_else(|| "-".into()),
            c.map(|c| yes_no(c.in_tolerance).to_string()).unwrap_or_else(|| "-".into()),
            c.map(|c| format_ms(c.last_sync_ms)).unwrap_or_else(|| "-".into()),
            n.media.as_ref().map(media_cell).unwrap_or_else(|| "-".into()),
        ]);
    }
    t.to_string()
}

/// A member's media storage in one cell: files, bytes, free space, and a
/// warning when its storage probe failed.
fn media_cell(m: &herald_client::NodeMedia) -> String {
    format!(
        "{}{} files, {} B, {} B free",
        if m.healthy { "" } else { "UNHEALTHY " },
        m.files,
        m.bytes,
        m.free_bytes
    )
}

/// Milliseconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`; 0 (never
/// changed) as `-`.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    herald_proto::date::utc_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known instants format as UTC ISO-8601 with milliseconds, including a
    /// leap day; 0 means "never" and prints `-`.
    #[test]
    fn cli_output_format_ms() {
        assert_eq!(format_ms(0), "-");
        assert_eq!(format_ms(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(format_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    /// The members table shows every field, `-` for an unknown matched
    /// index.
    #[test]
    fn cli_output_nodes_table() {
        let n = |number: u64, role: &str, m: Option<u64>| NodeStatus {
            number,
            sync: format!("127.0.0.1:7{number}01"),
            publish: format!("127.0.0.1:7{number}03"),
            role: role.into(),
            healthy: m.is_some(),
            matched_index: m,
            clock: m.map(|_| herald_client::ClockStatus {
                offset_ms: -0.25,
                rtt_ms: 0.125,
                last_sync_ms: 1_000,
                in_tolerance: true,
                time_master: Some(1),
                error: None,
                corrections: 0,
            }),
            gateway: None,
            zone: if m.is_some() { "dc1".into() } else { String::new() },
            replica: false,
            lag_entries: m.map(|_| 0),
            lag_ms: m.map(|_| 7),
            media: m.map(|_| herald_client::NodeMedia {
                healthy: false,
                files: 3,
                bytes: 900,
                free_bytes: 10_000,
                open_uploads: 1,
            }),
        };
        let t = nodes_table(&[n(1, "leader", Some(42)), n(2, "learner", None)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "NUMBER  SYNC            PUBLISH         ROLE     ZONE  HEALTHY  MATCHED  LAG  LAG MS  CLOCK OFFSET  RTT       IN TOL  LAST SYNC                 MEDIA");
        assert_eq!(lines[1], "1       127.0.0.1:7101  127.0.0.1:7103  leader   dc1   yes      42       0    7       -0.250 ms     0.125 ms  yes     1970-01-01T00:00:01.000Z  UNHEALTHY 3 files, 900 B, 10000 B free");
        assert_eq!(lines[2], "2       127.0.0.1:7201  127.0.0.1:7203  learner  -     no       -        -    -       -             -         -       -                         -");
    }
}
