//! herald-domain: the replicated state of a Herald cluster and the commands
//! that change it.
//!
//! Everything here is deterministic and free of I/O: no clock (the leader
//! stamps time into [`state::Command`]), no async runtime, no openraft, no
//! storage. The compiler enforces it: this crate depends on serde and
//! thiserror only. The node (`herald-node`) persists, replicates and serves
//! this state.

pub mod library;
pub mod messages;
pub mod presence;
pub mod profile;
pub mod state;
