//! The openraft type configuration of Herald.

use std::fmt;

use serde::{Deserialize, Serialize};

use herald_domain::state::{Command, OpResult};

/// Addresses of one member, as stored in the Raft membership.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddr {
    /// host:port of Raft traffic.
    pub sync: String,
    /// host:port of client gRPC + HTTP.
    pub publish: String,
    /// The member's data center (XML `<server zone>`), replicated with the
    /// membership so every node knows every node's zone (issue 16).
    pub zone: String,
    /// A replica: a learner kept as one (XML `role="replica"`, `herald
    /// cluster add-replica`); nothing in the cluster promotes it.
    pub replica: bool,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{sync:{}, publish:{}, zone:{}{}}}",
            self.sync,
            self.publish,
            self.zone,
            if self.replica { ", replica" } else { "" }
        )
    }
}

/// What applying one entry answers to the writer: its index and one result
/// per operation, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub revision: u64,
    pub results: Vec<OpResult>,
}

openraft::declare_raft_types!(
    /// Herald's Raft types: presence command batches, u64 node numbers.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = u64,
        Node = NodeAddr,
        // Standard Raft: at most one leader per term (the numbered master is
        // unique per term; the harness checks it).
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

pub type Raft = openraft::Raft<TypeConfig, super::state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, NodeAddr>;
