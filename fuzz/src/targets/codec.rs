//! The internal codec (`herald_node::raft::codec::decode`) for every type
//! a node decodes from a peer: the first byte picks the type (modulo the
//! number of types), the rest is the bincode. What decodes re-encodes to a
//! stable encoding; decoded ops and items also go through the replicated
//! state (apply, from_items), as a leader or a snapshot install would.

use herald_domain::state::{Command, Effects, Item, Op, State};
use herald_node::gateway::load::LoadInfo;
use herald_node::gateway::DeliveredReport;
use herald_node::raft::codec;
use herald_node::raft::types::{Entry, SnapshotMeta, TypeConfig, Vote};
use herald_node::raft::ForwardReply;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderError,
    TransferLeaderRequest, TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::EntryPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::values::{self, log_id, vote, AT_MS};
use super::{Seed, Target};

pub const TARGET: Target = Target {
    name: "codec",
    about: "internal codec: raft::codec::decode of every type the sync port decodes (1st byte picks it)",
    run,
    seeds,
    dict: Vec::new,
    selftest: false,
};

/// The decoded types, in selector order (`input[0] % TYPES.len()`). New
/// types go at the end: the committed corpus's first bytes name these.
pub const TYPES: [&str; 15] = [
    "forward",                  // Vec<Op>: RaftInternal.Forward request
    "forward-reply",            // ForwardReply: its answer, on the follower
    "vote-request",             // VoteRequest: Vote and PreVote
    "vote-response",            // VoteResponse
    "append-entries",           // AppendEntriesRequest
    "append-entries-response",  // AppendEntriesResponse
    "transfer-leader",          // TransferLeaderRequest
    "transfer-leader-response", // TransferLeaderResponse
    "vote",                     // Vote: first chunk of a snapshot
    "snapshot-meta",            // SnapshotMeta: first chunk of a snapshot
    "snapshot-response",        // SnapshotResponse
    "delivered-report",         // gateway DeliveredReport
    "load-info",                // gateway LoadInfo
    "item",                     // snapshot Item
    "entry",                    // log Entry (as stored)
];

/// Decodes `b` as `T`; what decodes must encode and decode back to the
/// same encoding.
fn decode<T: Serialize + DeserializeOwned>(b: &[u8]) -> Option<T> {
    let v: T = codec::decode(b).ok()?;
    let e1 = codec::encode(&v).expect("a decoded value encodes");
    let v2: T = codec::decode(&e1).expect("an encoding decodes");
    assert_eq!(codec::encode(&v2).expect("encodes"), e1, "encoding is stable");
    Some(v)
}

/// Applies ops to a fresh state, as the leader does with forwarded ones.
fn apply(ops: Vec<Op>) {
    let mut st = State::default();
    let _ = ops.iter().map(Op::payload_bytes).sum::<usize>();
    st.apply(&Command { at_ms: AT_MS, ops }, 1, &mut Effects::default());
    let _ = st.items();
}

fn run(input: &[u8]) {
    let Some((&selector, b)) = input.split_first() else { return };
    match selector as usize % TYPES.len() {
        0 => {
            if let Some(ops) = decode::<Vec<Op>>(b) {
                apply(ops);
            }
        }
        1 => drop(decode::<ForwardReply>(b)),
        2 => drop(decode::<VoteRequest<TypeConfig>>(b)),
        3 => drop(decode::<VoteResponse<TypeConfig>>(b)),
        4 => {
            if let Some(req) = decode::<AppendEntriesRequest<TypeConfig>>(b) {
                for e in req.entries {
                    if let EntryPayload::Normal(cmd) = e.payload {
                        apply(cmd.ops);
                    }
                }
            }
        }
        5 => drop(decode::<AppendEntriesResponse<TypeConfig>>(b)),
        6 => drop(decode::<TransferLeaderRequest<TypeConfig>>(b)),
        7 => drop(decode::<TransferLeaderResponse<TypeConfig>>(b)),
        8 => drop(decode::<Vote>(b)),
        9 => drop(decode::<SnapshotMeta>(b)),
        10 => drop(decode::<SnapshotResponse<TypeConfig>>(b)),
        11 => drop(decode::<DeliveredReport>(b)),
        12 => {
            if let Some(l) = decode::<LoadInfo>(b) {
                let _ = l.load();
            }
        }
        13 => {
            if let Some(item) = decode::<Item>(b) {
                let _ = item.key();
                let _ = State::from_items([item], 1).items();
            }
        }
        _ => drop(decode::<Entry>(b)),
    }
}

fn seed<T: Serialize>(kind: &str, n: usize, v: &T) -> Seed {
    let selector = TYPES.iter().position(|t| *t == kind).expect("a listed type") as u8;
    let mut bytes = vec![selector];
    bytes.extend(codec::encode(v).expect("seed encodes"));
    Seed::new(format!("{kind}-{n}"), bytes)
}

fn seeds() -> Vec<Seed> {
    let mut out = Vec::new();
    for (i, (_, ops)) in values::op_batches().iter().enumerate() {
        out.push(seed("forward", i, ops));
    }
    let ok: ForwardReply = Ok((12, vec![herald_domain::state::OpResult::Ok]));
    let err: ForwardReply = Err(herald_node::raft::ClusterError::NotLeader(2));
    out.push(seed("forward-reply", 0, &ok));
    out.push(seed("forward-reply", 1, &err));
    let v = vote(3, 2, false);
    out.push(seed("vote-request", 0, &VoteRequest::<TypeConfig>::new(v, Some(log_id(2, 20)))));
    out.push(seed("vote-request", 1, &VoteRequest::<TypeConfig>::new(v, None)));
    out.push(seed(
        "vote-response",
        0,
        &VoteResponse::<TypeConfig>::new(v, Some(log_id(2, 20)), true),
    ));
    let entries = values::entries();
    let leader = vote(2, 1, true);
    let append = |entries: Vec<Entry>| AppendEntriesRequest::<TypeConfig> {
        vote: leader,
        prev_log_id: Some(log_id(2, 9)),
        entries,
        leader_commit: Some(log_id(2, 9)),
    };
    out.push(seed("append-entries", 0, &append(Vec::new())));
    out.push(seed("append-entries", 1, &append(entries.clone())));
    out.push(seed("append-entries-response", 0, &AppendEntriesResponse::<TypeConfig>::Success));
    out.push(seed(
        "append-entries-response",
        1,
        &AppendEntriesResponse::<TypeConfig>::PartialSuccess(Some(log_id(2, 12))),
    ));
    out.push(seed(
        "append-entries-response",
        2,
        &AppendEntriesResponse::<TypeConfig>::HigherVote(v),
    ));
    out.push(seed(
        "transfer-leader",
        0,
        &TransferLeaderRequest::<TypeConfig>::new(leader, 2, Some(log_id(2, 20))),
    ));
    let refused: TransferLeaderResponse<TypeConfig> = Err(TransferLeaderError::LogNotFlushed {
        expected: Some(log_id(2, 20)),
        actual: Some(log_id(2, 18)),
    });
    out.push(seed("transfer-leader-response", 0, &refused));
    out.push(seed("transfer-leader-response", 1, &Ok::<(), TransferLeaderError<TypeConfig>>(())));
    out.push(seed("vote", 0, &leader));
    out.push(seed("snapshot-meta", 0, &values::snapshot_meta()));
    out.push(seed("snapshot-response", 0, &SnapshotResponse::<TypeConfig>::new(leader)));
    let report = DeliveredReport { reports: vec![(42, "alice".into()), (43, "bob".into())] };
    out.push(seed("delivered-report", 0, &report));
    let load = LoadInfo {
        node: 2,
        publish: "127.0.0.1:7422".into(),
        sessions: 50,
        max_sessions: 100,
        cpu: 0.25,
    };
    out.push(seed("load-info", 0, &load));
    for (i, item) in values::items().iter().enumerate() {
        out.push(seed("item", i, item));
    }
    for (i, e) in entries.iter().enumerate() {
        out.push(seed("entry", i, e));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every seed decodes to the type its selector names (the seeds are
    /// real values, not noise), and every type has at least one seed.
    #[test]
    fn codec_seeds_are_real_values() {
        let seeds = seeds();
        for (i, kind) in TYPES.iter().enumerate() {
            let of_kind: Vec<&Seed> = seeds.iter().filter(|s| s.bytes[0] as usize == i).collect();
            assert!(!of_kind.is_empty(), "no seed for {kind}");
            for s in of_kind {
                assert!(s.name.starts_with(kind), "{} under {kind}", s.name);
            }
        }
        let items = seeds.iter().filter(|s| s.name.starts_with("item-")).count();
        assert!(items >= 4, "the seed state has users, sids, messages and media: {items} items");
        for s in &seeds {
            let b = &s.bytes[1..];
            let ok = match TYPES[s.bytes[0] as usize] {
                "forward" => codec::decode::<Vec<Op>>(b).is_ok(),
                "append-entries" => codec::decode::<AppendEntriesRequest<TypeConfig>>(b).is_ok(),
                "item" => codec::decode::<Item>(b).is_ok(),
                "entry" => codec::decode::<Entry>(b).is_ok(),
                "snapshot-meta" => codec::decode::<SnapshotMeta>(b).is_ok(),
                _ => true,
            };
            assert!(ok, "seed {} does not decode", s.name);
        }
    }
}
