//! The JSON types of the HTTP API (`/v1/...` on the publish port), defined
//! once: the node (herald-node) serializes its answers and parses request
//! bodies with them, the client library (herald-client) parses the answers
//! and builds the bodies, and the fault harness (herald-jepsen) reads the
//! cluster status with them. The contract is README.md and docs/media.md.
//!
//! - [`presence`]: events and queries (`/v1/presence/...`).
//! - [`cluster`]: `GET /v1/cluster` and its clock and media views,
//!   membership changes, `/healthz`.
//! - [`messages`]: messages, recipient groups, settings, gateway choice.
//! - [`media`]: uploads, media info, contacts, group-send, shared pages.
//!
//! How the types keep the node's wire behaviour:
//!
//! - **Request bodies** (`*Body`, `*Request`) parse exactly as strictly as
//!   the node always parsed them: the same required fields, the same
//!   defaults, `deny_unknown_fields` where the node denied them. (A field
//!   that defaults, like the group-send `idempotency_key`, reaches the
//!   node's own validation and its specific code, e.g.
//!   `invalid_idempotency_key`; a required field that is missing is
//!   axum's `invalid_field`.) Serializing them is for clients; empty
//!   optional fields are left out.
//! - **Answers** serialize exactly as the node writes them: field names,
//!   which fields are left out when empty, and field order. Answers the
//!   node used to build with `serde_json::json!` came out with their keys
//!   in alphabetical order (serde_json sorts object keys without its
//!   `preserve_order` feature), so their fields are declared in
//!   alphabetical order and the bytes did not change. Answers parse
//!   tolerantly: a field a reply may lack defaults (`#[serde(default)]`).
//! - Conversions from and to the protobuf messages of [`crate::v1`] (the
//!   gRPC API answers the same things) live here too, where both types are.

pub mod cluster;
pub mod media;
pub mod messages;
pub mod presence;
pub mod profile;

use serde::{Deserialize, Serialize};

/// `{"revision": N}`: the log index a write was committed at
/// (`POST /v1/presence/events`, `PUT /v1/users/{uid}/contacts/{contact}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Log index of the write.
    pub revision: u64,
}

/// The body of every HTTP error answer: `{"error": {"code", "message"}}`.
/// The code is one of the catalog's ([`crate::codes`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The stable code and the message of an error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable snake_case code (what clients match on).
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

/// `skip_serializing_if` of counters left out when zero.
pub(crate) fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error body and the revision answer are byte-for-byte what the
    /// node writes, and parse back to the same value.
    #[test]
    fn wire_error_and_revision_round_trip() {
        let node = r#"{"error":{"code":"no_leader","message":"no leader is known"}}"#;
        let e: ErrorBody = serde_json::from_str(node).unwrap();
        assert_eq!(e, ErrorBody::new("no_leader", "no leader is known"));
        assert_eq!(serde_json::to_string(&e).unwrap(), node);
        let node = r#"{"revision":42}"#;
        let r: Revision = serde_json::from_str(node).unwrap();
        assert_eq!(r, Revision { revision: 42 });
        assert_eq!(serde_json::to_string(&r).unwrap(), node);
    }
}
