//! Message submission, recipient groups, offline-storage settings and the
//! gateway choice (MISSION M1–M5): the request logic on [`Api`], shared by
//! the HTTP routes ([`http`]) and the gRPC `herald.v1.Messages` service
//! ([`grpc`]).

pub mod grpc;
pub mod http;

pub use grpc::MessagesGrpc;

use herald_proto::codes;
use std::collections::HashSet;
use std::time::Duration;

use herald_proto::v1 as pb;

use super::{Api, ApiError, Consistency};
use herald_domain::messages::{
    Kind, MsgOp, MsgResult, Origin, SendOp, Stored, MAX_CONTENT_TYPE_BYTES, MAX_GROUP_MEMBERS,
    MAX_GROUP_NAME_BYTES, MAX_IDEMPOTENCY_KEY_BYTES,
};
use herald_domain::presence::MAX_UID_BYTES;
use herald_domain::state::{Op, OpResult};

/// A submission, as HTTP and gRPC both hand it over.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub idempotency_key: String,
    pub from: String,
    pub to: Vec<String>,
    pub group: Option<String>,
    pub broadcast: bool,
    pub ttl_s: u64,
    pub content_type: String,
    pub body: Vec<u8>,
    /// Group-send: the recipients are granted access to this media in the
    /// same log entry (not settable over the wire).
    pub grant_media: Option<String>,
    /// The sending principal's idempotency namespace
    /// ([`super::access::Principal::namespace`]): the key is remembered as
    /// `<namespace>/<key>` (with `from`), so one principal's key never
    /// answers another's message as a duplicate.
    pub namespace: String,
}

/// Most messages in one batch send: they share one log entry and one
/// answer, which waits for every online recipient's acknowledgement (each
/// within the push timeout); 1,000 keeps that answer and the entry small.
pub const MAX_SEND_BATCH: usize = 1000;
/// Most body bytes in one batch send: half of a log entry's payload limit
/// (8 MiB), so a batch always fits one entry beside other writes.
pub const MAX_SEND_BATCH_BODY_BYTES: usize = 4 << 20;

/// A checked submission: its log ops and the waiter of its acknowledgements.
struct Prepared {
    ops: Vec<Op>,
    req: u64,
    waiter: std::sync::Arc<crate::gateway::Waiter>,
}

/// The idempotency key as the log keeps it: the principal's namespace
/// (which holds no `/`) before the key the caller chose.
fn namespaced_key(namespace: &str, key: &str) -> String {
    format!("{namespace}/{key}")
}

/// The outcome for one recipient, the answer to a submission and a
/// user's settings: the HTTP API's types, defined once in
/// [`herald_proto::wire::messages`] (gRPC converts them to protobuf).
pub use herald_proto::wire::messages::{RecipientOutcome, SendAnswer, SettingsAnswer};

/// A user's settings as the given state holds them.
fn settings_of(st: &herald_domain::state::State, uid: &str) -> SettingsAnswer {
    SettingsAnswer {
        uid: uid.to_owned(),
        offline: st.msgs.offline_enabled(uid),
        queued: st.msgs.queued(uid) as u64,
        revision: st.applied(),
    }
}

pub(super) fn check_uid(field: &'static str, uid: &str) -> Result<(), ApiError> {
    if uid.is_empty() || uid.len() > MAX_UID_BYTES {
        return Err(ApiError::new(
            codes::INVALID_UID,
            format!("{field}: a uid is 1..={MAX_UID_BYTES} bytes, got {:?}", uid),
        ));
    }
    Ok(())
}

pub(super) fn check_group_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > MAX_GROUP_NAME_BYTES {
        return Err(ApiError::new(
            codes::INVALID_GROUP,
            format!("a group name is 1..={MAX_GROUP_NAME_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl Api {
    /// Validates a submission, commits it (stored for subscribed
    /// recipients before any push), then waits up to the push timeout for
    /// online recipients to acknowledge; answers per recipient.
    #[tracing::instrument(level = "info", skip_all, fields(from = %s.from, key = %s.idempotency_key, to = s.to.len(), group = ?s.group, broadcast = s.broadcast))]
    pub async fn send(&self, s: Submission) -> Result<SendAnswer, ApiError> {
        let r = self.send_inner(s).await;
        self.count_send(&r);
        r
    }

    /// Counts one submission's answer in the metrics.
    fn count_send(&self, r: &Result<SendAnswer, ApiError>) {
        match r {
            Ok(a) => {
                self.metrics.messages_sent.inc();
                for o in &a.recipients {
                    self.metrics
                        .message_outcomes
                        .get_or_create(&crate::metrics::OutcomeLabel { outcome: o.outcome.clone() })
                        .inc();
                }
            }
            Err(e) => self.count_error(e),
        }
    }

    fn validate(&self, s: &Submission) -> Result<(), ApiError> {
        let cfg = &self.gateway.msgs;
        if s.idempotency_key.is_empty() || s.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(ApiError::new(codes::INVALID_IDEMPOTENCY_KEY,
                format!("idempotency_key is required, 1..={MAX_IDEMPOTENCY_KEY_BYTES} bytes (a retry with the same key is not stored twice)"),
            ));
        }
        check_uid("from", &s.from)?;
        let ways = (!s.to.is_empty()) as u8 + s.group.is_some() as u8 + s.broadcast as u8;
        if ways != 1 {
            return Err(ApiError::new(
                codes::INVALID_RECIPIENTS,
                "name recipients in exactly one way: a `to` list, a `group`, or `broadcast`",
            ));
        }
        if s.to.len() > cfg.max_recipients {
            return Err(ApiError::new(
                codes::TOO_MANY_RECIPIENTS,
                format!("{} recipients; at most {}", s.to.len(), cfg.max_recipients),
            ));
        }
        for u in &s.to {
            check_uid("to", u)?;
        }
        if let Some(g) = &s.group {
            check_group_name(g)?;
        }
        if s.ttl_s > 0 && !s.broadcast {
            return Err(ApiError::new(codes::TTL_NOT_SUPPORTED,
                "ttl_s applies to broadcasts; a directed message is stored until its recipient acknowledges it",
            ));
        }
        if s.ttl_s > cfg.max_ttl_s {
            return Err(ApiError::new(
                codes::INVALID_TTL,
                format!("ttl_s {} is over the maximum of {}", s.ttl_s, cfg.max_ttl_s),
            ));
        }
        if s.content_type.len() > MAX_CONTENT_TYPE_BYTES {
            return Err(ApiError::new(
                codes::INVALID_CONTENT_TYPE,
                format!("content_type is at most {MAX_CONTENT_TYPE_BYTES} bytes"),
            ));
        }
        if s.body.len() > cfg.max_body_bytes {
            return Err(ApiError::too_large(cfg.max_body_bytes));
        }
        Ok(())
    }

    async fn send_inner(&self, s: Submission) -> Result<SendAnswer, ApiError> {
        let p = self.prepare(s).await?;
        let written = self.node.write(p.ops.clone()).await;
        let (revision, results) = match written {
            Ok(x) => x,
            Err(e) => {
                self.gateway.forget(p.req);
                return Err(e.into());
            }
        };
        self.finish(p.req, &p.waiter, revision, results).await
    }

    /// Many submissions in one request and one log entry (a producer that
    /// sends a stream of messages): all are checked first and a bad one
    /// refuses the whole batch, naming it, with nothing stored; then each
    /// is answered as [`send`](Self::send) would (what apply decided for
    /// it, and who acknowledged it), in order, beside the entry's revision.
    #[tracing::instrument(level = "info", skip_all, fields(messages = subs.len()))]
    pub async fn send_batch(
        &self,
        subs: Vec<Submission>,
    ) -> Result<(u64, Vec<Result<SendAnswer, ApiError>>), ApiError> {
        let r = self.send_batch_inner(subs).await;
        match &r {
            Ok((_, items)) => items.iter().for_each(|a| self.count_send(a)),
            Err(e) => self.count_error(e),
        }
        r
    }

    async fn send_batch_inner(
        &self,
        subs: Vec<Submission>,
    ) -> Result<(u64, Vec<Result<SendAnswer, ApiError>>), ApiError> {
        if subs.is_empty() {
            return Err(ApiError::new(
                codes::NO_MESSAGES,
                "a batch send needs at least one message",
            ));
        }
        if subs.len() > MAX_SEND_BATCH {
            return Err(ApiError::new(
                codes::TOO_MANY_MESSAGES,
                format!("{} messages in one batch; at most {MAX_SEND_BATCH}", subs.len()),
            ));
        }
        let bytes: usize = subs.iter().map(|s| s.body.len()).sum();
        if bytes > MAX_SEND_BATCH_BODY_BYTES {
            return Err(ApiError::new(
                codes::PAYLOAD_TOO_LARGE,
                format!("{bytes} body bytes in one batch; at most {MAX_SEND_BATCH_BODY_BYTES}"),
            ));
        }
        let mut prepared: Vec<Prepared> = Vec::with_capacity(subs.len());
        for (i, s) in subs.into_iter().enumerate() {
            match self.prepare(s).await {
                Ok(p) => prepared.push(p),
                Err(e) => {
                    for p in &prepared {
                        self.gateway.forget(p.req);
                    }
                    return Err(e.prefixed(&format!("message {i}")));
                }
            }
        }
        let ops: Vec<Op> = prepared.iter().flat_map(|p| p.ops.iter().cloned()).collect();
        let (revision, results) = match self.node.write(ops).await {
            Ok(x) => x,
            Err(e) => {
                for p in &prepared {
                    self.gateway.forget(p.req);
                }
                return Err(e.into());
            }
        };
        let mut results = results.into_iter();
        let mut mine = Vec::with_capacity(prepared.len());
        for p in &prepared {
            mine.push(results.by_ref().take(p.ops.len()).collect::<Vec<_>>());
        }
        let answers = futures::future::join_all(
            prepared.iter().zip(mine).map(|(p, r)| self.finish(p.req, &p.waiter, revision, r)),
        )
        .await;
        Ok((revision, answers))
    }

    /// Checks a submission and builds its log ops, registering a waiter for
    /// its acknowledgements (forgotten by [`finish`](Self::finish), or by
    /// the caller when the write fails).
    async fn prepare(&self, s: Submission) -> Result<Prepared, ApiError> {
        self.validate(&s)?;
        // Fast refusal of an unknown group from this node's state; apply
        // decides for good (a group created meanwhile is fine).
        if let Some(g) = &s.group {
            let known = self.node.read_local(|st| st.msgs.group(g).is_some());
            if !known
                && !self
                    .node
                    .read(Consistency::Linearizable, |st| st.msgs.group(g).is_some())
                    .await?
            {
                return Err(ApiError::new(
                    codes::UNKNOWN_GROUP,
                    format!("no recipient group named {g:?}"),
                ));
            }
        }
        let cfg = &self.gateway.msgs;
        let (req, waiter) = self.gateway.waiter();
        let grant = s.grant_media;
        let op = SendOp {
            idempotency_key: namespaced_key(&s.namespace, &s.idempotency_key),
            from: s.from,
            to: s.to,
            group: s.group,
            broadcast: s.broadcast,
            ttl_ms: s.ttl_s.saturating_mul(1000),
            content_type: if s.content_type.is_empty() {
                "text/plain".into()
            } else {
                s.content_type
            },
            body: s.body,
            origin: Origin { node: self.node.id, req },
            quota: cfg.quota_per_user.min(u32::MAX as usize) as u32,
            idempotency_window_ms: cfg.idempotency_window_s.saturating_mul(1000),
        };
        let mut ops = Vec::with_capacity(2);
        if let Some(id) = &grant {
            ops.push(Op::Lib(herald_domain::library::LibOp::MediaGrant {
                id: id.clone(),
                uids: op.to.clone(),
            }));
        }
        ops.push(Op::Msg(MsgOp::Send(op)));
        Ok(Prepared { ops, req, waiter })
    }

    /// Answers a committed submission from its ops' results: what apply
    /// decided, then (directed messages) who acknowledged it within the
    /// push timeout.
    async fn finish(
        &self,
        req: u64,
        waiter: &crate::gateway::Waiter,
        revision: u64,
        results: Vec<OpResult>,
    ) -> Result<SendAnswer, ApiError> {
        let r = match results.into_iter().last() {
            Some(OpResult::Msg(MsgResult::Sent(Ok(r)))) => r,
            Some(OpResult::Msg(MsgResult::Sent(Err(e)))) => {
                self.gateway.forget(req);
                return Err(ApiError::named(e.code(), e.to_string()));
            }
            other => {
                self.gateway.forget(req);
                return Err(ApiError::Cluster(crate::raft::ClusterError::Internal(format!(
                    "unexpected apply result {other:?}"
                ))));
            }
        };
        if r.kind == Kind::Broadcast {
            self.gateway.forget(req);
            return Ok(SendAnswer {
                message_id: r.id,
                revision,
                duplicate: r.duplicate,
                recipients: Vec::new(),
                broadcast: Some(if r.expires_at_ms > 0 { "stored" } else { "online_only" }.into()),
                expires_at_ms: r.expires_at_ms,
            });
        }
        // Wait for online recipients (a retry is answered from the log:
        // what was stored, not who acknowledged). Who is online is read
        // from this node's state once it has applied the message itself, so
        // a session login committed before it is seen here too (otherwise a
        // follower that is behind answers "stored" for an online user).
        let online: HashSet<String> = if r.duplicate {
            HashSet::new()
        } else {
            if let Err(e) = self.node.wait_applied(revision).await {
                self.gateway.forget(req);
                return Err(e.into());
            }
            self.node.read_local(|st| {
                r.outcomes
                    .iter()
                    .filter(|(u, _)| st.presence.get(u).is_some_and(|p| p.online()))
                    .map(|(u, _)| u.clone())
                    .collect()
            })
        };
        if !online.is_empty() {
            let deadline = tokio::time::Instant::now()
                + Duration::from_millis(self.gateway.cfg.push_timeout_ms);
            loop {
                let n = waiter.notify.notified();
                tokio::pin!(n);
                n.as_mut().enable();
                if online.iter().all(|u| waiter.delivered.lock().expect("delivered").contains(u)) {
                    break;
                }
                if tokio::time::timeout_at(deadline, n).await.is_err() {
                    break;
                }
            }
        }
        self.gateway.forget(req);
        let delivered = waiter.delivered.lock().expect("delivered").clone();
        let recipients = r
            .outcomes
            .iter()
            .map(|(uid, st)| {
                let (outcome, reason) = if delivered.contains(uid) {
                    ("delivered", "")
                } else {
                    match st {
                        Stored::Stored => ("stored", ""),
                        Stored::NotSubscribed => ("dropped", "not_subscribed"),
                        Stored::QuotaExceeded => ("rejected", "quota_exceeded"),
                    }
                };
                RecipientOutcome {
                    uid: uid.clone(),
                    outcome: outcome.into(),
                    reason: reason.into(),
                }
            })
            .collect();
        Ok(SendAnswer {
            message_id: r.id,
            revision,
            duplicate: r.duplicate,
            recipients,
            broadcast: None,
            expires_at_ms: 0,
        })
    }

    /// Replaces (or with no members deletes) a recipient group.
    pub async fn set_group(&self, name: &str, members: Vec<String>) -> Result<u64, ApiError> {
        check_group_name(name)?;
        if members.len() > MAX_GROUP_MEMBERS.min(self.gateway.msgs.max_recipients) {
            let max = MAX_GROUP_MEMBERS.min(self.gateway.msgs.max_recipients);
            return Err(ApiError::new(
                codes::TOO_MANY_RECIPIENTS,
                format!("{} members; at most {max}", members.len()),
            ));
        }
        for m in &members {
            check_uid("members", m)?;
        }
        let (rev, _) = self
            .node
            .write(vec![Op::Msg(MsgOp::SetGroup { name: name.to_owned(), members })])
            .await?;
        Ok(rev)
    }

    /// A group's members (linearizable).
    pub async fn get_group(&self, name: &str) -> Result<(Vec<String>, u64), ApiError> {
        check_group_name(name)?;
        let found = self
            .node
            .read(Consistency::Linearizable, |st| {
                st.msgs.group(name).map(|m| (m.to_vec(), st.applied()))
            })
            .await?;
        match found {
            Some(m) => Ok(m),
            None => Err(ApiError::new(
                codes::UNKNOWN_GROUP,
                format!("no recipient group named {name:?}"),
            )),
        }
    }

    /// Subscribes or unsubscribes a user from offline storage.
    pub async fn set_settings(&self, uid: &str, offline: bool) -> Result<SettingsAnswer, ApiError> {
        check_uid("uid", uid)?;
        let (rev, _) = self
            .node
            .write(vec![Op::Msg(MsgOp::SetOffline { uid: uid.to_owned(), enabled: offline })])
            .await?;
        self.node.wait_applied(rev).await?;
        let mut a = self.settings_now(uid);
        a.revision = rev;
        Ok(a)
    }

    /// A user's settings and queue length (linearizable).
    pub async fn get_settings(&self, uid: &str) -> Result<SettingsAnswer, ApiError> {
        check_uid("uid", uid)?;
        Ok(self.node.read(Consistency::Linearizable, |st| settings_of(st, uid)).await?)
    }

    fn settings_now(&self, uid: &str) -> SettingsAnswer {
        self.node.read_local(|st| settings_of(st, uid))
    }

    /// The best gateway for a client.
    pub fn pick_gateway(&self, uid: &str, zone: &str) -> Result<pb::PickGatewayResponse, ApiError> {
        let r = self.gateway.load.pick(&self.node, uid, zone);
        if r.best.is_none() {
            return Err(ApiError::new(codes::NO_GATEWAY, "no healthy gateway is known"));
        }
        Ok(r)
    }
}
