//! A blocking HTTP/JSON client for Herald's publish port, and the rule that
//! turns an error into a Jepsen completion type.
//!
//! Must be used from a thread inside the client namespace (`netns::enter`).

use std::time::Duration;

use herald_proto::wire::cluster::ClusterView;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::db::PUBLISH_PORT;
use crate::history::OpType;

/// What went wrong with a request.
#[derive(Clone, Debug, PartialEq)]
pub enum ErrorKind {
    /// Non-2xx reply, with the body's `error.code` if any.
    Status(u16, Option<String>),
    /// The request certainly never reached the server (refused, connect
    /// timeout, bad address).
    NotSent,
    /// Anything else: timeout after sending, reset, broken reply.
    Unknown,
}

#[derive(Clone, Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// How a failed *write* completes: 400/413 and never-sent requests are
/// `fail` (definitely not applied); everything else (503 no_leader, 504
/// timeout, 5xx, timeouts, resets) is `info`. Reads always `fail`.
pub fn write_error_type(kind: &ErrorKind) -> OpType {
    match kind {
        ErrorKind::Status(400 | 413, _) => OpType::Fail,
        ErrorKind::NotSent => OpType::Fail,
        _ => OpType::Info,
    }
}

pub struct Api {
    agent: ureq::Agent,
}

fn classify(e: ureq::Error) -> ApiError {
    use ureq::Error as E;
    let kind = match &e {
        E::ConnectionFailed | E::HostNotFound | E::BadUri(_) => ErrorKind::NotSent,
        E::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => ErrorKind::NotSent,
        E::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NetworkUnreachable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::AddrNotAvailable
            ) =>
        {
            ErrorKind::NotSent
        }
        _ => ErrorKind::Unknown,
    };
    ApiError { kind, message: e.to_string() }
}

impl Api {
    /// `timeout`: whole-request limit. Connections are not pooled, so a node
    /// that was killed shows up as "connection refused" (definite) rather
    /// than a reset on a stale keep-alive connection (indefinite).
    pub fn new(timeout: Duration) -> Api {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .timeout_connect(Some(Duration::from_millis(1000).min(timeout)))
            .http_status_as_error(false)
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        Api { agent: config.into() }
    }

    fn url(ip: &str, path: &str) -> String {
        format!("http://{ip}:{PUBLISH_PORT}{path}")
    }

    fn finish(
        resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ApiError> {
        let mut resp = resp.map_err(classify)?;
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().map_err(classify)?;
        if (200..300).contains(&status) {
            return serde_json::from_str(&body).map_err(|e| ApiError {
                kind: ErrorKind::Unknown,
                message: format!("bad JSON reply: {e}: {body:.200}"),
            });
        }
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        let code = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/code"))
            .and_then(|c| c.as_str())
            .map(str::to_string);
        let msg = parsed
            .as_ref()
            .and_then(|v| v.pointer("/error/message"))
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| body.chars().take(200).collect());
        Err(ApiError {
            message: format!("http {status} {}: {msg}", code.clone().unwrap_or_default()),
            kind: ErrorKind::Status(status, code),
        })
    }

    /// `Authorization` of every request: the harness's API key.
    fn auth() -> String {
        format!("Bearer {}", crate::db::API_KEY)
    }

    pub fn post(&self, ip: &str, path: &str, body: &Value) -> Result<Value, ApiError> {
        Self::finish(
            self.agent
                .post(Self::url(ip, path))
                .header("authorization", Self::auth())
                .send_json(body),
        )
    }

    pub fn put(&self, ip: &str, path: &str, body: &Value) -> Result<Value, ApiError> {
        Self::finish(
            self.agent
                .put(Self::url(ip, path))
                .header("authorization", Self::auth())
                .send_json(body),
        )
    }

    pub fn get(&self, ip: &str, path: &str) -> Result<Value, ApiError> {
        Self::finish(
            self.agent.get(Self::url(ip, path)).header("authorization", Self::auth()).call(),
        )
    }

    pub fn events(&self, ip: &str, events: Value) -> Result<Value, ApiError> {
        self.post(ip, "/v1/presence/events", &json!({ "events": events }))
    }

    pub fn query(&self, ip: &str, uids: &[String]) -> Result<Value, ApiError> {
        self.post(ip, "/v1/presence/query", &json!({ "uids": uids, "consistency": "linearizable" }))
    }

    /// `GET /v1/cluster`: the node's view of the cluster (a reply that is
    /// not one is an `Unknown` error).
    pub fn cluster(&self, ip: &str) -> Result<ClusterView, ApiError> {
        let v = self.get(ip, "/v1/cluster")?;
        ClusterView::deserialize(&v).map_err(|e| ApiError {
            kind: ErrorKind::Unknown,
            message: format!("not a cluster view: {e}"),
        })
    }
}

/// The register value of `uid` in a query reply: `ext.reg`, or null when the
/// user is unknown or has no `reg`. Numeric strings become numbers (the
/// workload writes numbers).
pub fn reg_of(reply: &Value, uid: &str) -> Result<Value, String> {
    let users = reply.get("users").and_then(|u| u.as_array()).ok_or("reply has no users array")?;
    for u in users {
        if u.get("uid").and_then(|x| x.as_str()) == Some(uid) {
            return Ok(match u.pointer("/ext/reg") {
                None | Some(Value::Null) => Value::Null,
                Some(Value::String(s)) => {
                    s.parse::<u64>().map(Value::from).unwrap_or_else(|_| Value::String(s.clone()))
                }
                Some(other) => other.clone(),
            });
        }
    }
    let unknown = reply.get("unknown").and_then(|u| u.as_array());
    if unknown.is_some_and(|l| l.iter().any(|x| x.as_str() == Some(uid))) {
        return Ok(Value::Null);
    }
    Err(format!("uid {uid} neither in users nor in unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the write error rule: 400/413 and never-sent are fail, 503
    /// no_leader, 504 timeout, other 5xx and unknown transport errors are info.
    #[test]
    fn client_write_error_classification() {
        assert_eq!(
            write_error_type(&ErrorKind::Status(400, Some("bad_request".into()))),
            OpType::Fail
        );
        assert_eq!(write_error_type(&ErrorKind::Status(413, None)), OpType::Fail);
        assert_eq!(write_error_type(&ErrorKind::NotSent), OpType::Fail);
        assert_eq!(
            write_error_type(&ErrorKind::Status(503, Some("no_leader".into()))),
            OpType::Info
        );
        assert_eq!(write_error_type(&ErrorKind::Status(504, Some("timeout".into()))), OpType::Info);
        assert_eq!(write_error_type(&ErrorKind::Status(500, None)), OpType::Info);
        assert_eq!(write_error_type(&ErrorKind::Unknown), OpType::Info);
    }

    /// Proves register reads: ext.reg parsed to a number, absent reg and
    /// unknown users are nil, a reply that omits the uid is an error.
    #[test]
    fn client_reg_of_reads_ext_reg() {
        let r = json!({"revision": 5, "users": [{"uid":"u1","ext":{"reg":"17"}}, {"uid":"u2","ext":{}}], "unknown": ["u3"]});
        assert_eq!(reg_of(&r, "u1").unwrap(), json!(17));
        assert_eq!(reg_of(&r, "u2").unwrap(), Value::Null);
        assert_eq!(reg_of(&r, "u3").unwrap(), Value::Null);
        assert!(reg_of(&json!({"users": []}), "u9").is_err());
        assert!(reg_of(&json!({"users": [], "unknown": ["u1"]}), "u9").is_err());
    }
}
