//! Follower reads share read-index round trips (issue 13, "Reads").
//!
//! A linearizable read on a follower needs the leader's read index, one
//! `ReadIndex` RPC. Concurrent reads share it: the first read that finds no
//! round in flight starts one (a spawned task, so a cancelled caller never
//! strands the others) and every read that arrives while it is in flight
//! waits for the *next* round. A round's RPC is sent after every read it
//! answers had started, so the index it returns covers every write
//! acknowledged before each of those reads began: linearizable, as one RPC
//! per read was. Rounds follow each other back to back while reads keep
//! arriving, so under load there is at most one RPC in flight per follower
//! and each read waits at most about two round trips.

use std::sync::Mutex;

use herald_proto::raft::raft_internal_client::RaftInternalClient;
use herald_proto::raft::ReadIndexRequest;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::ClusterError;

type Reply = oneshot::Sender<Result<u64, ClusterError>>;

#[derive(Default)]
struct Pending {
    /// The leader the round in flight asks (sync address), if any.
    in_flight: Option<String>,
    /// Reads waiting for the next round to that leader. Bounded by the
    /// reads in progress, which the publish port's connection limit bounds.
    waiting: Vec<Reply>,
}

/// The read-index rounds of one node.
#[derive(Default)]
pub struct ReadIndexRounds {
    pending: Mutex<Pending>,
    /// RPCs sent (metrics and tests: fewer than the reads under load).
    pub rpcs: std::sync::atomic::AtomicU64,
}

impl ReadIndexRounds {
    /// The leader's read index for a read that starts now, through `client`
    /// (the leader at `leader_addr`), shared with concurrent reads.
    pub async fn read_index(
        self: &std::sync::Arc<Self>,
        leader_addr: &str,
        client: RaftInternalClient<Channel>,
    ) -> Result<u64, ClusterError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().expect("read index lock");
            match p.in_flight.as_deref() {
                Some(a) if a != leader_addr => {
                    // The leader changed under a round in flight: ask alone.
                    drop(p);
                    return self.one(client).await;
                }
                Some(_) => p.waiting.push(tx),
                None => {
                    p.in_flight = Some(leader_addr.to_owned());
                    p.waiting.push(tx);
                    tokio::spawn(self.clone().drive(client));
                }
            }
        }
        rx.await.unwrap_or_else(|_| Err(ClusterError::Unavailable("read index round lost".into())))
    }

    async fn one(&self, mut client: RaftInternalClient<Channel>) -> Result<u64, ClusterError> {
        self.rpcs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match client.read_index(ReadIndexRequest {}).await {
            Ok(r) => Ok(r.into_inner().index),
            Err(s) => Err(ClusterError::Unavailable(s.message().to_string())),
        }
    }

    /// Runs rounds until no read is waiting.
    async fn drive(self: std::sync::Arc<Self>, client: RaftInternalClient<Channel>) {
        loop {
            let batch = {
                let mut p = self.pending.lock().expect("read index lock");
                if p.waiting.is_empty() {
                    p.in_flight = None;
                    return;
                }
                std::mem::take(&mut p.waiting)
            };
            let r = self.one(client.clone()).await;
            for tx in batch {
                let _ = tx.send(r.clone());
            }
        }
    }
}
