//! Node addresses: what a person types (`host:port`, `http://host:port`,
//! `https://host:port`, `host`) turned into the URI tonic connects to.

use crate::error::ClientError;

/// Publish port of a node when the address gives none (gRPC + HTTP).
pub const DEFAULT_PUBLISH_PORT: u16 = 7103;

/// Normalises a node address into `http://host:port` or, for TLS,
/// `https://host:port`.
///
/// Accepts `host:port`, `[v6]:port`, `http://host:port`,
/// `https://host:port` (one trailing `/` allowed) and a bare `host` or
/// `[v6]` (port [`DEFAULT_PUBLISH_PORT`]); without a scheme the address is
/// plaintext `http://`. Refuses empty input, other schemes, paths and
/// non-numeric ports.
pub fn normalize_addr(addr: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::InvalidArgument(format!("node address {addr:?}: {why}"));
    let a = addr.trim();
    let (scheme, rest) = if let Some(r) = a.strip_prefix("http://") {
        ("http", r)
    } else if let Some(r) = a.strip_prefix("https://") {
        ("https", r)
    } else if a.contains("://") {
        return Err(bad("only http:// and https:// are supported"));
    } else {
        ("http", a)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.contains('/') {
        return Err(bad("must not have a path"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
        if h.is_empty() {
            return Err(bad("empty host"));
        }
        match after {
            "" => (format!("[{h}]"), None),
            p => (
                format!("[{h}]"),
                Some(p.strip_prefix(':').ok_or_else(|| bad("expected ':' after ']'"))?),
            ),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err(bad("IPv6 addresses need brackets: [addr]:port"))
            }
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("empty host"));
    }
    let port = match port {
        None => DEFAULT_PUBLISH_PORT,
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("port must be 1..=65535"))?,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `host:port` gains the `http://` scheme; `http://` input is kept.
    #[test]
    fn client_addr_host_port_gets_scheme() {
        assert_eq!(normalize_addr("127.0.0.1:7103").unwrap(), "http://127.0.0.1:7103");
        assert_eq!(normalize_addr("http://node-2:7203").unwrap(), "http://node-2:7203");
        assert_eq!(normalize_addr(" http://node-2:7203/ ").unwrap(), "http://node-2:7203");
    }

    /// `https://` is kept (TLS), with the default port when none is given.
    #[test]
    fn client_addr_https_kept() {
        assert_eq!(normalize_addr("https://node-2:7203/").unwrap(), "https://node-2:7203");
        assert_eq!(normalize_addr("https://localhost").unwrap(), "https://localhost:7103");
        assert_eq!(normalize_addr("https://[::1]:9000").unwrap(), "https://[::1]:9000");
    }

    /// A missing port means the default publish port, also for IPv6.
    #[test]
    fn client_addr_default_port() {
        assert_eq!(normalize_addr("localhost").unwrap(), "http://localhost:7103");
        assert_eq!(normalize_addr("[::1]").unwrap(), "http://[::1]:7103");
        assert_eq!(normalize_addr("[::1]:9000").unwrap(), "http://[::1]:9000");
    }

    /// Unusable addresses are refused with `invalid_argument` before any
    /// connection attempt.
    #[test]
    fn client_addr_refuses_bad_input() {
        for a in [
            "",
            "http://",
            "https://",
            "https://h:1/x",
            "grpc://h:1",
            "h:port",
            "h:0",
            "h:70000",
            "h:1/x",
            "::1",
            "[::1",
            ":7103",
        ] {
            let e = normalize_addr(a).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{a:?}");
        }
    }
}
