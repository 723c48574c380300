//! The wire of Herald: generated protobuf and gRPC code, and what node and
//! clients share about the wire.
//!
//! - [`v1`]: the public API (`herald.v1`): `Presence` and `Cluster` services.
//! - [`raft`]: the internal node-to-node transport (`herald.raft`), served on
//!   the sync port only.
//! - [`codes`]: the error catalog — every stable error code with its HTTP
//!   and gRPC status, shared by server and client.
//! - [`apikey`]: application API keys (hashes, scopes), made by `herald key
//!   new` and checked by nodes.
//! - [`token`]: HMAC-signed session tokens (issued by `herald token`,
//!   checked by gateway nodes).
//! - [`wire`]: the JSON types of the HTTP API, shared by node, client and
//!   the fault harness.
//! - [`date`]: UTC calendar dates of Unix times (for what people read).
//! - [`peer`]: the DNS name of a node in its sync-port certificate.

/// Public API, package `herald.v1`.
pub mod v1 {
    tonic::include_proto!("herald.v1");
}

/// Internal Raft transport, package `herald.raft`.
pub mod raft {
    tonic::include_proto!("herald.raft");
}

/// The encoded `FileDescriptorSet` of the public API (package `herald.v1`
/// and what it imports), served by gRPC server reflection on the publish
/// port.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/herald_v1_descriptor.bin"));

pub mod apikey;
pub mod codes;
pub mod date;
pub mod peer;
pub mod token;
pub mod webhook;
pub mod wire;
