//! [`ClientError`]: what can go wrong talking to a Herald node, with the
//! stable snake_case code the server gives (or one derived from gRPC).

/// Metadata key in which the server puts the stable error code.
pub const CODE_METADATA_KEY: &str = herald_proto::codes::METADATA_KEY;

/// An error of the Herald client.
///
/// Every variant has a stable snake_case [`code`](ClientError::code); the
/// `Display` form is `"<code>: <message>"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached (refused, unresolvable, connect timeout).
    #[error("connect_failed: cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    /// The node (or the gRPC layer on the way) answered with an error.
    /// `code` is the server's `x-herald-code` (e.g. `no_leader`,
    /// `too_many_ids`, `unknown_node`), or the snake_case gRPC status code
    /// (e.g. `unavailable`) when the metadata is absent; `message` is the
    /// text without the `"<code>: "` prefix.
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// A caller's argument was refused before anything was sent.
    #[error("invalid_argument: {0}")]
    InvalidArgument(String),
    /// A local file could not be read, written or moved (`what` names it).
    #[error("io_error: {what}: {message}")]
    Io { what: String, message: String },
    /// An HTTP exchange failed after the connection was made: reset,
    /// timeout, or an answer that is not what the contract says.
    #[error("transport_error: {0}")]
    Transport(String),
    /// Downloaded bytes do not hash to the media id (nothing is kept).
    #[error("hash_mismatch: the downloaded bytes hash to {actual}, expected {expected}")]
    HashMismatch { expected: String, actual: String },
}

impl ClientError {
    /// The stable snake_case code of the error.
    pub fn code(&self) -> &str {
        match self {
            ClientError::Connect { .. } => "connect_failed",
            ClientError::Server { code, .. } => code,
            ClientError::InvalidArgument(_) => "invalid_argument",
            ClientError::Io { .. } => "io_error",
            ClientError::Transport(_) => "transport_error",
            ClientError::HashMismatch { .. } => "hash_mismatch",
        }
    }

    /// The server's code as a catalog entry (its HTTP/gRPC status and
    /// meaning), when the error came from a node and the code is known.
    pub fn catalog(&self) -> Option<herald_proto::codes::Code> {
        match self {
            ClientError::Server { code, .. } => herald_proto::codes::named(code),
            _ => None,
        }
    }

    /// Whether the same call may succeed if retried unchanged: a node that
    /// could not be reached, or a catalog code that says the cluster was
    /// busy, leaderless or slow (`no_leader`, `timeout`, …).
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { .. } | ClientError::Transport(_) => true,
            _ => self.catalog().is_some_and(|c| c.retryable()),
        }
    }

    /// The human text of the error, without the code.
    pub fn message(&self) -> String {
        match self {
            ClientError::Connect { addr, message } => {
                format!("cannot connect to {addr}: {message}")
            }
            ClientError::Server { message, .. } => message.clone(),
            ClientError::InvalidArgument(m) => m.clone(),
            ClientError::Io { what, message } => format!("{what}: {message}"),
            ClientError::Transport(m) => m.clone(),
            ClientError::HashMismatch { expected, actual } => {
                format!("the downloaded bytes hash to {actual}, expected {expected}")
            }
        }
    }

    /// An [`Io`](ClientError::Io) error about `what` (a path or an action).
    pub fn io(what: impl std::fmt::Display, err: &std::io::Error) -> Self {
        ClientError::Io { what: what.to_string(), message: err.to_string() }
    }

    /// Builds a connect error from a transport error, keeping its whole
    /// source chain (tonic's own `Display` is only "transport error").
    pub(crate) fn connect(addr: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        ClientError::Connect { addr: addr.to_string(), message: error_chain(err) }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let code = s
            .metadata()
            .get(CODE_METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .unwrap_or_else(|| grpc_code_name(s.code()).to_string());
        // Transport failures arrive as a bare "transport error"; the cause
        // is in the source chain.
        let mut raw = s.message().to_string();
        if let Some(src) = std::error::Error::source(&s) {
            let chain = error_chain(src);
            if chain.contains(&raw) {
                raw = chain;
            } else if !raw.contains(&chain) {
                raw = format!("{raw}: {chain}");
            }
        }
        let raw = raw.as_str();
        let message = raw
            .strip_prefix(code.as_str())
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|rest| rest.trim_start().to_string())
            .unwrap_or_else(|| {
                if raw.is_empty() {
                    grpc_code_name(s.code()).replace('_', " ")
                } else {
                    raw.to_string()
                }
            });
        ClientError::Server { code, message }
    }
}

/// The snake_case name of a gRPC status code.
pub fn grpc_code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// `"outer: inner: innermost"`, skipping repeats of the same text.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_code(grpc: tonic::Code, herald: &str, msg: &str) -> tonic::Status {
        let mut s = tonic::Status::new(grpc, msg);
        s.metadata_mut().insert(CODE_METADATA_KEY, herald.parse().unwrap());
        s
    }

    /// The stable code comes from `x-herald-code`, and the `"<code>: "`
    /// prefix the server puts in the message is not repeated.
    #[test]
    fn client_error_code_from_metadata() {
        let e = ClientError::from(status_with_code(
            tonic::Code::Unavailable,
            "no_leader",
            "no_leader: no leader elected",
        ));
        assert_eq!(e.code(), "no_leader");
        assert_eq!(e.message(), "no leader elected");
        assert_eq!(e.to_string(), "no_leader: no leader elected");
    }

    /// The client reads a server code through the shared catalog: its
    /// status and whether a retry may help (no_leader yes, too_many_ids no,
    /// a connect failure yes, a code the catalog lacks no).
    #[test]
    fn client_error_catalog_and_retryable() {
        let e = ClientError::from(status_with_code(tonic::Code::Unavailable, "no_leader", "x"));
        assert_eq!(e.catalog().map(|c| c.http), Some(503));
        assert!(e.is_retryable());
        let e =
            ClientError::from(status_with_code(tonic::Code::InvalidArgument, "too_many_ids", "x"));
        assert_eq!(e.catalog().map(|c| c.http), Some(400));
        assert!(!e.is_retryable());
        let e = ClientError::Connect { addr: "a".into(), message: "refused".into() };
        assert!(e.is_retryable() && e.catalog().is_none());
        let e = ClientError::Server { code: "from_the_future".into(), message: "x".into() };
        assert!(!e.is_retryable() && e.catalog().is_none());
    }

    /// Without `x-herald-code` the code is the snake_case gRPC code and the
    /// message is kept whole.
    #[test]
    fn client_error_code_from_grpc_code_when_metadata_absent() {
        let e =
            ClientError::from(tonic::Status::new(tonic::Code::DeadlineExceeded, "took too long"));
        assert_eq!(e.code(), "deadline_exceeded");
        assert_eq!(e.message(), "took too long");
        let e = ClientError::from(tonic::Status::new(tonic::Code::Unavailable, ""));
        assert_eq!(e.to_string(), "unavailable: unavailable");
    }

    /// A message that does not start with the code is kept as it is, and an
    /// empty metadata value falls back to the gRPC code.
    #[test]
    fn client_error_message_without_prefix_kept() {
        let e = ClientError::from(status_with_code(
            tonic::Code::NotFound,
            "unknown_node",
            "node 99 is not a member",
        ));
        assert_eq!((e.code(), e.message().as_str()), ("unknown_node", "node 99 is not a member"));
        let e = ClientError::from(status_with_code(
            tonic::Code::InvalidArgument,
            " ",
            "invalid_argument: bad",
        ));
        assert_eq!((e.code(), e.message().as_str()), ("invalid_argument", "bad"));
    }

    /// Client-side errors have fixed codes and the `code: message` display.
    #[test]
    fn client_error_local_variants_codes() {
        let e = ClientError::InvalidArgument("empty address".into());
        assert_eq!(e.code(), "invalid_argument");
        assert_eq!(e.to_string(), "invalid_argument: empty address");
        let e = ClientError::Connect { addr: "h:1".into(), message: "refused".into() };
        assert_eq!(e.code(), "connect_failed");
        assert_eq!(e.to_string(), "connect_failed: cannot connect to h:1: refused");
        let e =
            ClientError::io("/tmp/x", &std::io::Error::new(std::io::ErrorKind::NotFound, "gone"));
        assert_eq!((e.code(), e.to_string().as_str()), ("io_error", "io_error: /tmp/x: gone"));
        let e = ClientError::Transport("reset".into());
        assert_eq!((e.code(), e.message().as_str()), ("transport_error", "reset"));
        let e = ClientError::HashMismatch { expected: "aa".into(), actual: "bb".into() };
        assert_eq!(e.code(), "hash_mismatch");
        assert_eq!(e.to_string(), format!("hash_mismatch: {}", e.message()));
    }

    /// A status without a code but with a transport cause names the cause
    /// once, not a bare "transport error".
    #[test]
    fn client_error_status_source_appended() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset");
        let s = tonic::Status::from_error(Box::new(io));
        let e = ClientError::from(s);
        assert_eq!(e.code(), "unknown");
        assert!(e.message().ends_with("connection reset"), "{e}");
        assert_eq!(e.message().matches("connection reset").count(), 1, "{e}");
    }

    /// The source chain of a nested error is flattened into one line.
    #[test]
    fn client_error_chain_flattened() {
        #[derive(Debug, thiserror::Error)]
        #[error("transport error")]
        struct Outer(#[source] std::io::Error);
        let e =
            Outer(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused"));
        assert_eq!(error_chain(&e), "transport error: connection refused");
    }
}
