//! Prometheus metrics, served as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::raft::LocalStatus;
use crate::time::ClockStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsistencyLabel {
    pub consistency: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// Where a media download's bytes came from: `local`, `zone`, `remote`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Gateway and message-store figures sampled at render time.
#[derive(Debug, Default, Clone, Copy)]
pub struct GatewayFigures {
    pub sessions: u64,
    pub sessions_opened: u64,
    pub sessions_refused: u64,
    pub pushes: u64,
    pub stored_messages: u64,
    pub inboxes: u64,
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
    /// Bounded reads too stale here that went through the leader.
    pub bounded_forwarded: Counter,
    /// Staleness of the state queries were answered from (issue 16).
    pub read_staleness_seconds: Histogram,
    pub errors: Family<CodeLabel, Counter>,
    pub messages_sent: Counter,
    pub message_outcomes: Family<OutcomeLabel, Counter>,
    pub media_uploads_requested: Counter,
    pub media_uploads: Counter,
    pub media_upload_bytes: Counter,
    pub media_download_bytes: Counter,
    /// Downloads served, by where the bytes came from (issue 16).
    pub media_downloads: Family<SourceLabel, Counter>,
    pub media_group_sends: Counter,
    media_healthy: Gauge,
    media_free_bytes: Gauge,
    media_files: Gauge,
    media_known: Gauge,
    media_under_replicated: Gauge,
    media_open_uploads: Gauge,
    sessions: Gauge,
    sessions_opened: Gauge,
    sessions_refused: Gauge,
    pushes: Gauge,
    stored_messages: Gauge,
    inboxes: Gauge,
    term: Gauge,
    leader: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    users: Gauge,
    online_users: Gauge,
    clock_offset_ms: Gauge<f64, std::sync::atomic::AtomicU64>,
    clock_rtt_ms: Gauge<f64, std::sync::atomic::AtomicU64>,
    clock_in_tolerance: Gauge,
    clock_corrections: Gauge,
    master_changes: Gauge,
    /// Profile outbox (issue 17): counted by the dispatcher on the leader.
    pub outbox_delivered: Counter,
    pub outbox_retries: Counter,
    pub outbox_dead_lettered: Counter,
    outbox_pending: Gauge,
    outbox_dead: Gauge,
    outbox_oldest_pending_age_ms: Gauge,
    /// Change feed (issue 15): resets sent by this node's watchers.
    pub watch_resets: Counter,
    watchers: Gauge,
    watch_followed_uids: Gauge,
    watch_followed_sids: Gauge,
    watch_all_watchers: Gauge,
    watch_window_records: Gauge,
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
            bounded_forwarded: Counter::default(),
            read_staleness_seconds: latency_histogram(),
            errors: Family::default(),
            messages_sent: Counter::default(),
            message_outcomes: Family::default(),
            media_uploads_requested: Counter::default(),
            media_uploads: Counter::default(),
            media_upload_bytes: Counter::default(),
            media_download_bytes: Counter::default(),
            media_downloads: Family::default(),
            media_group_sends: Counter::default(),
            media_healthy: Gauge::default(),
            media_free_bytes: Gauge::default(),
            media_files: Gauge::default(),
            media_known: Gauge::default(),
            media_under_replicated: Gauge::default(),
            media_open_uploads: Gauge::default(),
            sessions: Gauge::default(),
            sessions_opened: Gauge::default(),
            sessions_refused: Gauge::default(),
            pushes: Gauge::default(),
            stored_messages: Gauge::default(),
            inboxes: Gauge::default(),
            term: Gauge::default(),
            leader: Gauge::default(),
            is_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            users: Gauge::default(),
            online_users: Gauge::default(),
            clock_offset_ms: Gauge::default(),
            clock_rtt_ms: Gauge::default(),
            clock_in_tolerance: Gauge::default(),
            clock_corrections: Gauge::default(),
            master_changes: Gauge::default(),
            outbox_delivered: Counter::default(),
            outbox_retries: Counter::default(),
            outbox_dead_lettered: Counter::default(),
            outbox_pending: Gauge::default(),
            outbox_dead: Gauge::default(),
            outbox_oldest_pending_age_ms: Gauge::default(),
            watch_resets: Counter::default(),
            watchers: Gauge::default(),
            watch_followed_uids: Gauge::default(),
            watch_followed_sids: Gauge::default(),
            watch_all_watchers: Gauge::default(),
            watch_window_records: Gauge::default(),
            registry: Registry::default(),
        };
        r.register(
            "presence_write_requests",
            "Presence write requests committed",
            m.write_requests.clone(),
        );
        r.register("presence_write_events", "Presence events committed", m.write_events.clone());
        r.register(
            "presence_write_seconds",
            "Latency of committed presence writes",
            m.write_seconds.clone(),
        );
        r.register("presence_queries", "Batch presence queries answered", m.queries.clone());
        r.register("presence_query_ids", "Ids asked for in batch queries", m.query_ids.clone());
        r.register("presence_query_seconds", "Latency of batch queries", m.query_seconds.clone());
        r.register(
            "presence_bounded_forwarded",
            "Bounded queries too stale on this node, served through the leader",
            m.bounded_forwarded.clone(),
        );
        r.register(
            "presence_read_staleness_seconds",
            "Measured staleness of the state queries were answered from",
            m.read_staleness_seconds.clone(),
        );
        r.register("api_errors", "Requests answered with an error, by code", m.errors.clone());
        r.register("messages_sent", "Message submissions answered", m.messages_sent.clone());
        r.register(
            "message_recipient_outcomes",
            "Per-recipient outcomes of submissions (delivered, stored, dropped, rejected)",
            m.message_outcomes.clone(),
        );
        r.register(
            "media_uploads_requested",
            "Upload requests accepted (upload ids issued)",
            m.media_uploads_requested.clone(),
        );
        r.register(
            "media_uploads",
            "Uploads stored on enough nodes and committed",
            m.media_uploads.clone(),
        );
        r.register(
            "media_upload_bytes",
            "Bytes of committed uploads (as stored)",
            m.media_upload_bytes.clone(),
        );
        r.register(
            "media_download_bytes",
            "Media bytes served by this node",
            m.media_download_bytes.clone(),
        );
        r.register(
            "media_downloads",
            "Media downloads served, by where the bytes came from (local, zone, remote)",
            m.media_downloads.clone(),
        );
        r.register("media_group_sends", "Group-sends answered", m.media_group_sends.clone());
        r.register(
            "media_storage_healthy",
            "1 when the last write probe of the media directory succeeded",
            m.media_healthy.clone(),
        );
        r.register(
            "media_free_bytes",
            "Free bytes on the media file system",
            m.media_free_bytes.clone(),
        );
        r.register(
            "media_files",
            "Media files held by this node (last repair pass)",
            m.media_files.clone(),
        );
        r.register(
            "media_known",
            "Media the cluster knows (shared by someone)",
            m.media_known.clone(),
        );
        r.register(
            "media_under_replicated",
            "Known media with fewer live replicas than required",
            m.media_under_replicated.clone(),
        );
        r.register("media_open_uploads", "Uploads open on this node", m.media_open_uploads.clone());
        r.register("gateway_sessions", "Client sessions open on this node", m.sessions.clone());
        r.register(
            "gateway_sessions_opened",
            "Sessions opened on this node since start",
            m.sessions_opened.clone(),
        );
        r.register(
            "gateway_sessions_refused",
            "Sessions refused (token, limits) since start",
            m.sessions_refused.clone(),
        );
        r.register(
            "gateway_pushes",
            "Messages sent to sessions on this node since start",
            m.pushes.clone(),
        );
        r.register(
            "messages_stored",
            "Message bodies in the offline store",
            m.stored_messages.clone(),
        );
        r.register("messages_inboxes", "Users with stored messages", m.inboxes.clone());
        r.register("raft_term", "Current Raft term", m.term.clone());
        r.register("raft_leader", "Number of the known leader (0 = none)", m.leader.clone());
        r.register("raft_is_leader", "1 when this node is the leader", m.is_leader.clone());
        r.register("raft_last_log_index", "Last log index on this node", m.last_log_index.clone());
        r.register(
            "raft_commit_index",
            "Committed log index known to this node",
            m.commit_index.clone(),
        );
        r.register(
            "raft_applied_index",
            "Last log index applied to the state machine",
            m.applied_index.clone(),
        );
        r.register("presence_users", "Users with a presence record", m.users.clone());
        r.register(
            "presence_online_users",
            "Users online on at least one client",
            m.online_users.clone(),
        );
        r.register(
            "clock_offset_ms",
            "Cluster clock error against the time master at the last poll",
            m.clock_offset_ms.clone(),
        );
        r.register(
            "clock_rtt_ms",
            "Round trip to the time master at the last poll",
            m.clock_rtt_ms.clone(),
        );
        r.register(
            "clock_in_tolerance",
            "1 when the cluster clock is within tolerance of the time master",
            m.clock_in_tolerance.clone(),
        );
        r.register(
            "clock_corrections",
            "Cluster clock corrections since start",
            m.clock_corrections.clone(),
        );
        r.register(
            "master_changes",
            "Master (leader) changes seen by this node since start",
            m.master_changes.clone(),
        );
        r.register(
            "outbox_delivered",
            "Profile updates delivered (2xx) by this node's dispatcher",
            m.outbox_delivered.clone(),
        );
        r.register(
            "outbox_retries",
            "Failed profile deliveries scheduled for a retry by this node",
            m.outbox_retries.clone(),
        );
        r.register(
            "outbox_dead_lettered",
            "Profile updates this node moved to the dead-letter list (410 or horizon)",
            m.outbox_dead_lettered.clone(),
        );
        r.register(
            "outbox_pending",
            "Profile updates waiting for delivery",
            m.outbox_pending.clone(),
        );
        r.register("outbox_dead", "Profile updates in the dead-letter list", m.outbox_dead.clone());
        r.register(
            "outbox_oldest_pending_age_ms",
            "Age of the oldest pending profile update, cluster milliseconds (0: none)",
            m.outbox_oldest_pending_age_ms.clone(),
        );
        r.register(
            "watch_resets",
            "Reset frames sent by this node's watchers (resume point or pending changes out of the window)",
            m.watch_resets.clone(),
        );
        r.register("watchers", "Open watch streams on this node", m.watchers.clone());
        r.register(
            "watch_followed_uids",
            "Uids followed by at least one watcher on this node (the feed's index)",
            m.watch_followed_uids.clone(),
        );
        r.register(
            "watch_followed_sids",
            "Sids followed by at least one watcher on this node (the feed's index)",
            m.watch_followed_sids.clone(),
        );
        r.register(
            "watch_all_watchers",
            "Watchers of every user on this node",
            m.watch_all_watchers.clone(),
        );
        r.register(
            "watch_window_records",
            "Records in this node's change-feed window",
            m.watch_window_records.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Refreshes the outbox gauges (before [`Metrics::render`]).
    pub fn set_outbox(&self, pending: usize, dead: usize, oldest_age_ms: u64) {
        self.outbox_pending.set(pending as i64);
        self.outbox_dead.set(dead as i64);
        self.outbox_oldest_pending_age_ms.set(oldest_age_ms.min(i64::MAX as u64) as i64);
    }

    /// Refreshes the change-feed gauges (before [`Metrics::render`]).
    pub fn set_feed(&self, feed: &crate::feed::Feed) {
        let (uids, sids, all) = feed.followed();
        self.watchers.set(feed.watchers() as i64);
        self.watch_followed_uids.set(uids as i64);
        self.watch_followed_sids.set(sids as i64);
        self.watch_all_watchers.set(all as i64);
        self.watch_window_records.set(feed.window_records() as i64);
    }

    /// Refreshes the media gauges (before [`Metrics::render`]).
    pub fn set_media(&self, m: &crate::media::service::MediaStatus) {
        self.media_healthy.set(m.healthy as i64);
        self.media_free_bytes.set(m.free_bytes.min(i64::MAX as u64) as i64);
        self.media_files.set(m.files_here as i64);
        self.media_known.set(m.media as i64);
        self.media_under_replicated.set(m.under_replicated as i64);
        self.media_open_uploads.set(m.open_uploads as i64);
    }

    /// Registers the node's count of ReadIndex RPCs sent to the leader
    /// (the Raft node exists before the metrics; the counter is shared).
    pub fn with_read_index_rpcs(mut self, rpcs: Counter) -> Self {
        self.registry.register(
            "read_index_rpcs",
            "ReadIndex round trips this node made to the leader for linearizable reads",
            rpcs,
        );
        self
    }

    /// Renders the text exposition, after refreshing the gauges.
    pub fn render(
        &self,
        st: &LocalStatus,
        users: usize,
        online: usize,
        clock: &ClockStatus,
        master_changes: u64,
        gw: GatewayFigures,
    ) -> String {
        self.sessions.set(gw.sessions as i64);
        self.sessions_opened.set(gw.sessions_opened as i64);
        self.sessions_refused.set(gw.sessions_refused as i64);
        self.pushes.set(gw.pushes as i64);
        self.stored_messages.set(gw.stored_messages as i64);
        self.inboxes.set(gw.inboxes as i64);
        self.clock_offset_ms.set(clock.offset_ms);
        self.clock_rtt_ms.set(clock.rtt_ms);
        self.clock_in_tolerance.set(clock.in_tolerance as i64);
        self.clock_corrections.set(clock.corrections as i64);
        self.master_changes.set(master_changes as i64);
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
