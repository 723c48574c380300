//! The numbered master (MISSION P6): the leader hands leadership to the
//! lowest-numbered voter that is healthy and has the leader's whole log, once
//! that voter has stayed so for the hold-down. Raft alone decides safety
//! (the target still has to win an election); the numbers only choose among
//! candidates that are safe.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{Instant as _, ServerState};

use super::RaftNode;
use crate::config::MasterPolicy;

/// Runs on every node; acts only while this node is the leader.
pub async fn run(node: Arc<RaftNode>, policy: MasterPolicy, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when each lower-numbered voter has been healthy and caught up,
    // as seen by this leader.
    let mut good_since: HashMap<u64, Instant> = HashMap::new();
    let mut last_leader = None;
    let mut last_transfer: Option<Instant> = None;
    // The leader's last log index at the previous tick: a voter that holds
    // it keeps pace (under a steady write load nobody ever holds the very
    // last index at the instant of a tick, so requiring that restarted the
    // hold-down at every tick and the master came back only once writes
    // stopped). The transfer target waits for the rest of the log before
    // it stands (openraft's TransferLeader), so a lag of one tick is safe.
    let mut prev_last: Option<u64> = None;
    loop {
        tick.tick().await;
        let m = node.raft.metrics().borrow_watched().clone();
        if m.current_leader != last_leader {
            if m.current_leader.is_some() {
                node.master_changes.fetch_add(1, Ordering::Relaxed);
                tracing::info!(master = ?m.current_leader, term = m.current_term, "master changed");
            }
            last_leader = m.current_leader;
            good_since.clear();
        }
        if !policy.prefer_lowest || m.state != ServerState::Leader {
            good_since.clear();
            prev_last = None;
            continue;
        }
        let last_index = m.last_log_index.unwrap_or(0);
        let keep_pace = prev_last.replace(last_index).unwrap_or(last_index).min(last_index);
        let voters: Vec<u64> =
            m.membership_config.membership().voter_ids().filter(|v| *v < node.id).collect();
        let now = Instant::now();
        for v in &voters {
            let hb = m.heartbeat.as_ref().and_then(|h| h.get(v).cloned().flatten());
            let healthy = hb.map(|t| t.elapsed() < node.health_window).unwrap_or(false);
            let matched =
                m.replication.as_ref().and_then(|r| r.get(v).cloned().flatten()).map(|l| l.index());
            if healthy && matched.is_some_and(|i| i >= keep_pace) {
                good_since.entry(*v).or_insert(now);
            } else {
                good_since.remove(v);
            }
        }
        good_since.retain(|k, _| voters.contains(k));
        let hold = Duration::from_millis(policy.hold_down_ms);
        let target = voters
            .iter()
            .copied()
            .filter(|v| good_since.get(v).is_some_and(|s| now.duration_since(*s) >= hold))
            .min();
        // One attempt per election timeout: a transfer that fails (the target
        // lost the election) is retried, not hammered.
        let cooled = last_transfer.is_none_or(|t| now.duration_since(t) >= node.leader_wait);
        if let (Some(t), true) = (target, cooled) {
            tracing::info!(
                from = node.id,
                to = t,
                "handing leadership to the lower-numbered voter"
            );
            last_transfer = Some(now);
            if let Err(e) = node.raft.trigger().transfer_leader(t).await {
                tracing::warn!(error = %e, "transfer_leader");
            }
        }
    }
}
