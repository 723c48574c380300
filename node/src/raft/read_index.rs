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
    /// RPCs sent (metric `read_index_rpcs`; tests: fewer than the reads
    /// under load, and none for a gateway login, issue 16).
    pub rpcs: prometheus_client::metrics::counter::Counter,
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
        let alone = {
            let mut p = self.pending.lock().expect("read index lock");
            match p.in_flight.as_deref() {
                // The leader changed under a round in flight: ask alone.
                Some(a) if a != leader_addr => Some(client),
                Some(_) => {
                    p.waiting.push(tx);
                    None
                }
                None => {
                    p.in_flight = Some(leader_addr.to_owned());
                    p.waiting.push(tx);
                    tokio::spawn(self.clone().drive(client));
                    None
                }
            }
        };
        if let Some(client) = alone {
            return self.one(client).await;
        }
        rx.await.unwrap_or_else(|_| Err(ClusterError::Unavailable("read index round lost".into())))
    }

    async fn one(&self, mut client: RaftInternalClient<Channel>) -> Result<u64, ClusterError> {
        self.rpcs.inc();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    /// 64 concurrent follower reads share a few ReadIndex RPCs instead of
    /// sending 64; every read gets an answer; and a read that starts while
    /// a round is in flight is answered by a later round (an RPC sent after
    /// it began: its index is higher than the in-flight round's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_index_rounds_are_shared_and_never_stale() {
        // A leader whose read index is the number of ReadIndex calls begun
        // so far, each taking 50 ms.
        let (leader, addr) = crate::raft::fake_peer::FakePeer::start().await;
        let ch = crate::raft::network::channel(&addr, Duration::from_secs(1), None).unwrap();
        let client = RaftInternalClient::new(ch);
        let rounds = Arc::new(ReadIndexRounds::default());

        // One read alone starts round 1.
        let first = {
            let (r, c, a) = (rounds.clone(), client.clone(), addr.clone());
            tokio::spawn(async move { r.read_index(&a, c).await })
        };
        tokio::time::sleep(Duration::from_millis(15)).await; // round 1 in flight
        let reads: Vec<_> = (0..64)
            .map(|_| {
                let (r, c, a) = (rounds.clone(), client.clone(), addr.clone());
                tokio::spawn(async move { r.read_index(&a, c).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap(), 1);
        for r in reads {
            let index = r.await.unwrap().unwrap();
            assert!(index >= 2, "a read begun during round 1 got its index {index}");
        }
        let rpcs = rounds.rpcs.get();
        assert!((2..=4).contains(&rpcs), "{rpcs} RPCs for 65 reads");
        assert_eq!(leader.calls.load(Ordering::SeqCst), rpcs);
    }
}
