//! Prometheus metrics, served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::raft::LocalStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsistencyLabel {
    pub consistency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// All metrics of one node.
pub struct Metrics {
    registry: Registry,
    pub write_requests: Counter,
    pub write_events: Counter,
    pub write_seconds: Histogram,
    pub queries: Family<ConsistencyLabel, Counter>,
    pub query_ids: Counter,
    pub query_seconds: Family<ConsistencyLabel, Histogram>,
    pub errors: Family<CodeLabel, Counter>,
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    users: Gauge,
    online_users: Gauge,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~52 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("herald");
        let m = Metrics {
            write_requests: Counter::default(),
            write_events: Counter::default(),
            write_seconds: latency_histogram(),
            queries: Family::default(),
            query_ids: Counter::default(),
            query_seconds: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            is_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            users: Gauge::default(),
            online_users: Gauge::default(),
            registry: Registry::default(),
        };
        r.register("presence_write_requests", "Presence write requests committed", m.write_requests.clone());
        r.register("presence_write_events", "Presence events committed", m.write_events.clone());
        r.register("presence_write_seconds", "Latency of committed presence writes", m.write_seconds.clone());
        r.register("presence_queries", "Batch presence queries answered", m.queries.clone());
        r.register("presence_query_ids", "Ids asked for in batch queries", m.query_ids.clone());
        r.register("presence_query_seconds", "Latency of batch queries", m.query_seconds.clone());
        r.register("api_errors", "Requests answered with an error, by code", m.errors.clone());
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register("raft_leader", "Number of the known leader (0 = none)", m.leader.clone());
        r.register("raft_is_leader", "1 when this node is the leader", m.is_leader.clone());
        r.register("raft_last_log_index", "Last log index on this node", m.last_log_index.clone());
        r.register("raft_commit_index", "Committed log index known to this node", m.commit_index.clone());
        r.register("raft_applied_index", "Last log index applied to the state machine", m.applied_index.clone());
        r.register("presence_users", "Users with a presence record", m.users.clone());
        r.register("presence_online_users", "Users online on at least one client", m.online_users.clone());
        Metrics { registry: r, ..m }
    }

    /// Renders the text exposition, after refreshing the gauges.
    pub fn render(&self, st: &LocalStatus, users: usize, online: usize) -> String {
        self.term.set(st.term as i64);
        self.leader.set(st.leader.unwrap_or(0) as i64);
        self.is_leader.set((st.leader == Some(st.node)) as i64);
        self.last_log_index.set(st.last_log_index as i64);
        self.commit_index.set(st.commit_index as i64);
        self.applied_index.set(st.applied_index as i64);
        self.users.set(users as i64);
        self.online_users.set(online as i64);
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
