//! The replicated state as one deterministic value: presence, messages and
//! the media library,
//! and the log command that changes it.
//!
//! [`State::apply`] is the only way the replicated state changes. It uses
//! nothing but the command (cluster time stamped by the leader) and the log
//! index, so every replica ends equal (Architecture Invariant: no I/O, no
//! clock in apply).

use serde::{Deserialize, Serialize};

use crate::library::{LibOp, LibResult, Library};
use crate::messages::{MsgOp, MsgResult, MsgState, Notice};
use crate::presence::{Event, PresenceState, Touched};

/// One operation in a log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// A status-pool event (MISSION P1).
    Presence(Event),
    /// A gateway session started: the user is online on `client` through
    /// `gateway` (MISSION M7). `sid` 0 keeps the user's sid.
    SessionLogin { uid: String, sid: u64, client: String, gateway: u64 },
    /// A gateway session ended; ignored when the user's `client` is held by
    /// another gateway by now.
    SessionLogout { uid: String, client: String, gateway: u64 },
    /// Every session held by `gateway` is gone (it restarted, or it has been
    /// unreachable longer than the grace period).
    GatewayReset { gateway: u64 },
    /// Messages, inboxes, groups, subscriptions.
    Msg(MsgOp),
    /// Media metadata and contacts.
    Lib(LibOp),
}

impl Op {
    /// Bytes of bulk payload (message bodies) the op carries, to bound
    /// log entries.
    pub fn payload_bytes(&self) -> usize {
        match self {
            Op::Msg(MsgOp::Send(s)) => s.body.len() + s.to.len() * 16,
            Op::Msg(MsgOp::SetGroup { members, .. }) => members.len() * 16,
            Op::Lib(LibOp::MediaGrant { uids, .. }) => uids.len() * 16,
            _ => 0,
        }
    }
}

/// A batch of operations as written to the Raft log: the leader stamps the
/// cluster time once for the whole batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Cluster time in ms since the Unix epoch, stamped by the leader.
    pub at_ms: u64,
    pub ops: Vec<Op>,
}

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command(at_ms={}, ops={})", self.at_ms, self.ops.len())
    }
}

/// What applying one [`Op`] answers its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// Presence operations answer only the revision (the entry's index).
    Ok,
    Msg(MsgResult),
    Lib(LibResult),
}

/// Everything the Raft group holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    pub presence: PresenceState,
    pub msgs: MsgState,
    pub lib: Library,
}

/// What one [`State::apply`] produced besides the results.
#[derive(Debug, Default)]
pub struct Effects {
    /// Presence uids and sids changed (to persist).
    pub touched: Touched,
    /// What gateways should push.
    pub notices: Vec<Notice>,
}

impl State {
    /// Applies a committed command at log index `index`.
    pub fn apply(&mut self, cmd: &Command, index: u64, fx: &mut Effects) -> Vec<OpResult> {
        let mut results = Vec::with_capacity(cmd.ops.len());
        for op in &cmd.ops {
            let r = match op {
                Op::Presence(ev) => {
                    self.presence.apply_event(ev, cmd.at_ms, index, &mut fx.touched);
                    OpResult::Ok
                }
                Op::SessionLogin { uid, sid, client, gateway } => {
                    self.presence.session_login(
                        uid,
                        *sid,
                        client,
                        *gateway,
                        cmd.at_ms,
                        index,
                        &mut fx.touched,
                    );
                    OpResult::Ok
                }
                Op::SessionLogout { uid, client, gateway } => {
                    self.presence.session_logout(
                        uid,
                        client,
                        *gateway,
                        cmd.at_ms,
                        index,
                        &mut fx.touched,
                    );
                    OpResult::Ok
                }
                Op::GatewayReset { gateway } => {
                    self.presence.gateway_reset(*gateway, cmd.at_ms, index, &mut fx.touched);
                    OpResult::Ok
                }
                Op::Msg(m) => OpResult::Msg(self.msgs.apply(m, cmd.at_ms, &mut fx.notices)),
                Op::Lib(l) => OpResult::Lib(self.lib.apply(l, cmd.at_ms)),
            };
            results.push(r);
        }
        self.presence.set_applied(index);
        results
    }

    /// Notes that an entry without commands (blank, membership) was applied.
    pub fn set_applied(&mut self, index: u64) {
        self.presence.set_applied(index);
    }

    pub fn applied(&self) -> u64 {
        self.presence.applied()
    }
}
