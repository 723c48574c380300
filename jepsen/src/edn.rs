//! Jepsen's own history format: one EDN map per line, as Jepsen writes
//! `history.edn`, so Knossos/Elle can load it elsewhere
//! (e.g. `(map read-string (line-seq (io/reader "history.edn")))`).
//! Keys are keywords; `type` and `f` are keywords; the nemesis process is
//! `:nemesis`; per-key register values are `[key value]` tuples as produced by
//! `jepsen.independent`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

use crate::history::{Op, Process};

/// Renders a string as an EDN string literal.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A keyword if the text is a legal EDN keyword name, else None.
pub fn keyword(s: &str) -> Option<String> {
    let mut chars = s.chars();
    let first = chars.next()?;
    if first.is_ascii_digit() || first == ':' || first == '#' {
        return None;
    }
    let ok = s.chars().all(|c| c.is_ascii_alphanumeric() || "*+!-_?<>=./".contains(c));
    if ok && !s.ends_with('/') && !s.starts_with('/') {
        Some(format!(":{s}"))
    } else {
        None
    }
}

/// Converts a JSON value to EDN: null→nil, arrays→vectors, objects→maps with
/// keyword keys where legal (string keys otherwise).
pub fn value(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                if f.is_finite() {
                    let s = format!("{f:?}");
                    s
                } else {
                    "nil".into()
                }
            } else {
                n.to_string()
            }
        }
        Value::String(s) => string(s),
        Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(value).collect();
            format!("[{}]", inner.join(" "))
        }
        Value::Object(map) => {
            let inner: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{} {}", keyword(k).unwrap_or_else(|| string(k)), value(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
    }
}

/// One op as a single-line EDN map in Jepsen's field order.
pub fn op(o: &Op) -> String {
    let process = match o.process {
        Process::Worker(n) => n.to_string(),
        Process::Nemesis => ":nemesis".to_string(),
    };
    let f = keyword(&o.f).unwrap_or_else(|| string(&o.f));
    let mut s = format!(
        "{{:index {}, :time {}, :type :{}, :process {}, :f {}, :value {}",
        o.index,
        o.time,
        o.typ.as_str(),
        process,
        f,
        value(&o.value)
    );
    if let Some(n) = &o.node {
        s.push_str(&format!(", :node {}", string(n)));
    }
    if let Some(e) = &o.error {
        s.push_str(&format!(", :error {}", string(e)));
    }
    s.push('}');
    s
}

pub fn write(path: &Path, history: &[Op]) -> Result<()> {
    let mut w = BufWriter::new(File::create(path)?);
    for o in history {
        writeln!(w, "{}", op(o))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::OpType;
    use serde_json::json;

    /// Proves a client op renders exactly as Jepsen prints one (keywords for
    /// type and f, integer process, [key value] tuple, nil for null).
    #[test]
    fn history_edn_client_op_matches_jepsen_shape() {
        let o = Op {
            index: 7,
            time: 12345,
            typ: OpType::Invoke,
            process: Process::Worker(3),
            f: "read".into(),
            value: json!(["u1", null]),
            node: Some("n2".into()),
            error: None,
        };
        assert_eq!(
            op(&o),
            "{:index 7, :time 12345, :type :invoke, :process 3, :f :read, :value [\"u1\" nil], :node \"n2\"}"
        );
    }

    /// Proves nemesis ops use the :nemesis process, nested maps get keyword
    /// keys, and strings with quotes/newlines are escaped.
    #[test]
    fn history_edn_nemesis_and_escaping() {
        let o = Op {
            index: 1,
            time: 2,
            typ: OpType::Info,
            process: Process::Nemesis,
            f: "start-partition".into(),
            value: json!({"mode": "halves", "grudge": {"n1": ["n2"]}, "1bad key": 1.5}),
            node: None,
            error: Some("say \"hi\"\n".into()),
        };
        let s = op(&o);
        assert!(s.contains(":process :nemesis"), "{s}");
        assert!(s.contains(":f :start-partition"), "{s}");
        assert!(s.contains(":mode \"halves\""), "{s}");
        assert!(s.contains(":grudge {:n1 [\"n2\"]}"), "{s}");
        assert!(s.contains("\"1bad key\" 1.5"), "{s}");
        assert!(s.contains(":error \"say \\\"hi\\\"\\n\""), "{s}");
        assert!(!s.contains('\n'));
    }
}
