//! The node's own log on stderr: human-readable lines, or (`<log
//! format="json">`, issue 18) one JSON object per line for log shippers,
//! each tagged with the cluster and the node number — spawned tasks do not
//! inherit a span, so the tags are written by the formatter into every
//! line rather than carried by a root span.

use std::fmt;

use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, JsonFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// The filter when `HERALD_LOG` is not set: the node's own info lines, the
/// libraries' warnings.
pub const DEFAULT_FILTER: &str = "info,openraft=warn,sled=warn,h2=warn,tower=warn";

/// Installs the global subscriber: `format` on stderr, filtered by
/// `HERALD_LOG` (else [`DEFAULT_FILTER`]).
pub fn init(format: LogFormat, cluster: &str, node: u64) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HERALD_LOG")
        .unwrap_or_else(|_| DEFAULT_FILTER.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
        LogFormat::Json => builder
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(Tagged::new(format::format().json(), cluster, node))
            .init(),
    }
}

/// A JSON event format whose objects start with `"cluster"` and `"node"`.
pub struct Tagged<F> {
    inner: F,
    /// `{"cluster":"…","node":N,` — the inner object's `{` is replaced by it.
    prefix: String,
}

impl<F> Tagged<F> {
    pub fn new(inner: F, cluster: &str, node: u64) -> Self {
        let cluster = serde_json::to_string(cluster).expect("a string serializes");
        Tagged { inner, prefix: format!("{{\"cluster\":{cluster},\"node\":{node},") }
    }
}

impl<S, N, F> FormatEvent<S, N> for Tagged<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            // An empty object would leave a trailing comma: never the case
            // (the JSON format always writes timestamp and level).
            Some(rest) if !rest.starts_with('}') => {
                writer.write_str(&self.prefix)?;
                writer.write_str(rest)
            }
            _ => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Every JSON line parses as one object with the cluster (escaped as
    /// JSON), the node number, the level and the event's own fields, inside
    /// a span and outside one.
    #[test]
    fn logging_json_lines_carry_cluster_and_node() {
        let buf = Buf::default();
        let w = buf.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(Tagged::new(format::format().json(), "dc \"one\"", 3))
            .finish();
        tracing::subscriber::with_default(sub, || {
            tracing::info!(uid = "u1", "logged in");
            let span = tracing::info_span!("apply", index = 7);
            let _g = span.enter();
            tracing::warn!("slow");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        for l in &lines {
            assert_eq!(l["cluster"], "dc \"one\"");
            assert_eq!(l["node"], 3);
        }
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["fields"]["uid"], "u1");
        assert_eq!(lines[0]["fields"]["message"], "logged in");
        assert_eq!(lines[1]["span"]["index"], 7);
    }
}
