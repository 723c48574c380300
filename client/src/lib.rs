//! Client library of Herald, a Raft-replicated presence cluster.
//!
//! [`HeraldClient`] talks gRPC to one node's publish port: it pushes presence
//! events, queries presence (splitting large id lists into requests the
//! server accepts), and reads and changes cluster membership.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::{Consistency, Ext, HeraldClient};
//! use herald_client::Credential;
//! let c = HeraldClient::connect("127.0.0.1:7103").await?
//!     .with_credential(Credential::api_key("hk_...")?);
//! let rev = c.login("u1", 1001, "mobile", None, Ext::new()).await?;
//! let q = c.query(&["u1".to_string()], &[], Consistency::Linearizable).await?;
//! assert!(q.revision >= rev);
//! # Ok(()) }
//! ```
//!
//! Nodes serving TLS are reached at `https://host:port` with
//! [`HeraldClient::connect_with`] and a [`ConnectOptions`] holding the CA to
//! trust; [`endpoint`] opens the same kind of channel for other clients.
//!
//! Errors carry the server's stable code: [`ClientError::code`].
//!
//! - [`addr`] — node address normalisation.
//! - [`cert`] — the cluster CA and node certificates of `<peer-tls>` (`herald cert`).
//! - [`chunk`] — splitting large queries and merging the answers.
//! - [`client`] — the [`HeraldClient`], [`ConnectOptions`] and [`endpoint`].
//! - [`credential`] — the API key or session token every call carries.
//! - [`error`] — [`ClientError`] and its codes.
//! - [`media`] — blocking HTTP client of media upload/download, contacts,
//!   group-send and shared pages ([`media::MediaClient`]).
//! - [`messages`] — submitting messages, groups, offline settings, gateway choice.
//! - [`presence_watch`] — following users through the change feed, resuming across node failures.
//! - [`session`] — a client session that heartbeats, receives, acks and reconnects.
//! - [`types`] — plain request and answer types.
//! - [`watch`] — a folder watcher that group-sends each new file once.

pub mod addr;
pub mod cert;
pub mod chunk;
pub mod client;
pub mod credential;
pub mod error;
pub mod media;
pub mod messages;
pub mod presence_watch;
pub mod profile;
pub mod session;
#[cfg(test)]
mod testserver;
pub mod types;
pub mod watch;

pub use addr::{normalize_addr, DEFAULT_PUBLISH_PORT};
pub use chunk::DEFAULT_MAX_IDS_PER_QUERY;
pub use client::{endpoint, ConnectOptions, HeraldClient};
pub use credential::Credential;
pub use error::ClientError;
pub use types::{
    ClockStatus, Consistency, Event, Ext, Membership, NodeMedia, NodeStatus, QueryOptions,
    QueryResult, Status, UserPresence,
};

/// Generated protobuf types and gRPC clients, for what the wrapper does not
/// cover.
pub use herald_proto::v1 as proto;
