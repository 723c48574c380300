//! Media: content-addressed files, edit rules, replication (MISSION G, S).
//!
//! - [`store`]: the files of one node (fsynced, content-addressed).
//! - [`edit`]: image edit rules applied before storing.
//! - [`range`]: HTTP Range for downloads.
//! - [`credential`]: upload and access credentials any node can check.
//! - [`service`]: the upload flow, replication between nodes, serving
//!   bytes from here or a replica, and the repair/garbage-collection loop.
//! - [`peer`]: the `MediaBlobs` service on the sync port (replicas in, ranges out).
//!
//! The Raft state holds only metadata ([`herald_domain::library`]); bytes travel
//! node to node over the sync port (`PutBlob`, `GetBlob`), never through
//! the log.
pub mod credential;
pub mod edit;
pub mod peer;
pub mod range;
pub mod service;
pub mod store;

pub use service::{Media, MediaError};
