//! The messages workload: a total queue per mailbox (README "Messages and
//! sessions"; ARCHITECTURE "Data flow of a message"), checked by
//! `checker::queue`.
//!
//! - **Mailboxes** are uids `mbox0`…`mbox{N-1}`.
//! - **Writers** (plain threads, blocking HTTP from the client namespace,
//!   like the presence workers) submit `POST /v1/messages` through a random
//!   node, with a unique idempotency key `hj-<seed>-<e>`, to one mailbox or
//!   (`MULTI_PROBABILITY`) to two. Each recipient gets its own unique
//!   element `e` (a counter over the run); the body names them all:
//!   `"mbox2:17"`, `"mbox0:18,mbox3:19"`. An indeterminate attempt (5xx,
//!   timeout, reset) or one that never left (connection refused) is retried
//!   with the *same key* through another random node, at most `attempts`
//!   times in all. Per recipient, one logical `enqueue` op covers all
//!   attempts (the second recipient's on the writer's companion process):
//!   invoke `[mailbox, e]`; `ok` when an attempt answered 200 with outcome
//!   `stored`/`delivered` for that mailbox (value `[mailbox, e,
//!   {"message_id", "outcome", "duplicate", "attempts", "via"}]`); `fail`
//!   when the submission definitely stored nothing for it (every attempt
//!   400/413 or never sent, or a 200 answering `dropped`/`rejected`);
//!   otherwise `info` (the writer then continues as new processes).
//!   Sometimes (`RESUBMIT_PROBABILITY`) an acknowledged submission is sent
//!   again with the same key: a `resubmit` op whose answer must be
//!   `duplicate: true` with the same message id.
//! - **Consumers**: one thread per mailbox with its own current-thread tokio
//!   runtime (entered into the client namespace, as are its blocking-pool
//!   threads), holding `herald_client::session::Session`s with an HMAC
//!   token. Mailbox 0 keeps one session for the whole run and relies on the
//!   library's own reconnects through other nodes; the others open a fresh
//!   session for 1–5 s, close it, stay offline 0–2 s (so messages are
//!   stored and delivered on the next login) and repeat. Every delivered
//!   message is recorded as a `dequeue` op, invoke `[mailbox, nil]`, ok
//!   `[mailbox, e, {"message_id", "session", "stored"}]` (`session` names
//!   one server session: mailbox, `c` or `d` (consumer or drain) and a
//!   counter, the gateway's session id), then
//!   acknowledged with probability `ACK_PROBABILITY` (unacknowledged ones must
//!   come again in a later session). Each session start is a `session` op
//!   (`{"mailbox", "session", "node", "queued"}`), each break a `disconnect`
//!   op.
//! - **Final drain** (`drain`), after healing: per mailbox, poll
//!   `GET /v1/users/{uid}/settings` (linearizable) — a `queued` op — and
//!   while anything is queued hold a fresh session that records and
//!   acknowledges everything, until `queued` is 0 or the time is up.
//!   `queued == 0` means every stored message was acknowledged, and the
//!   harness acknowledges only messages it has recorded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use herald_client::session::{Session, SessionConfig, SessionEvent};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::client::{write_error_type, Api, ApiError};
use crate::db::{AUTH_KEY, PUBLISH_PORT};
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::rng::Rng;
use crate::workload::presence::FINAL_PROCESS_BASE;

/// Writer `i`'s `k`-th process (a new one after each `info`) is
/// `WRITER_PROCESS_BASE + k * WRITER_STRIDE + i`.
pub const WRITER_PROCESS_BASE: u64 = 200_000_000;
pub const WRITER_STRIDE: u64 = 1000;
/// A submission to two mailboxes is two `enqueue` ops: the second one is on
/// the writer's companion process, `+ WRITER_COMPANION` (same lane).
pub const WRITER_COMPANION: u64 = 500;
/// The consumer of mailbox `m` is process `CONSUMER_PROCESS_BASE + m`.
pub const CONSUMER_PROCESS_BASE: u64 = 300_000_000;
/// The final drain of mailbox `m` is process `DRAIN_PROCESS_BASE + m`
/// (in the report's `final` lane, with the presence final reads).
pub const DRAIN_PROCESS_BASE: u64 = FINAL_PROCESS_BASE + 100_000_000;
// The ranges stay apart (checked at compile time): writers (up to 100 000
// generations of 500 writers and their companions) below consumers, consumers below the status
// pollers, drains far above the presence final reads.
const _: () = assert!(WRITER_PROCESS_BASE + 100_000 * WRITER_STRIDE <= CONSUMER_PROCESS_BASE);
const _: () = assert!(2 * WRITER_COMPANION <= WRITER_STRIDE);
const _: () =
    assert!(CONSUMER_PROCESS_BASE + 1_000_000 <= crate::workload::master::STATUS_PROCESS_BASE);
const _: () = assert!(DRAIN_PROCESS_BASE >= FINAL_PROCESS_BASE + 100_000_000);
/// The `from` of every submission (idempotency keys are per sender).
pub const SENDER: &str = "hj-writer";
/// Share of deliveries a consumer acknowledges during the main phase.
pub const ACK_PROBABILITY: f64 = 0.95;
/// Share of submissions addressed to two mailboxes at once (one stored
/// body, two inbox entries, acknowledged separately).
pub const MULTI_PROBABILITY: f64 = 0.2;
/// Share of acknowledged submissions sent again with the same key.
pub const RESUBMIT_PROBABILITY: f64 = 0.1;
/// How long a consumer waits for `Session::connect`.
const CONNECT_LIMIT: Duration = Duration::from_secs(8);

#[derive(Clone, Debug)]
pub struct Opts {
    /// (name, ip) of every node.
    pub nodes: Vec<(String, String)>,
    pub writers: usize,
    pub mailboxes: usize,
    /// Target submissions per second over all writers.
    pub rate: f64,
    pub seed: u64,
    /// HTTP timeout of one attempt.
    pub timeout: Duration,
    /// Attempts per submission (first try + retries with the same key).
    pub attempts: usize,
}

pub fn mailbox(i: usize) -> String {
    format!("mbox{i}")
}

/// The body of a submission: `mailbox:element` per recipient, comma
/// separated (`"mbox2:17"`, `"mbox0:18,mbox3:19"`).
pub fn body_of(to: &[(&str, u64)]) -> String {
    to.iter().map(|(m, e)| format!("{m}:{e}")).collect::<Vec<_>>().join(",")
}

/// The element a body names for `uid`, if the body is one of ours and
/// names that mailbox.
pub fn parse_body(b: &[u8], uid: &str) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    s.split(',').find_map(|part| {
        let (m, e) = part.rsplit_once(':')?;
        (m == uid).then(|| e.parse().ok()).flatten()
    })
}

pub fn idempotency_key(seed: u64, e: u64) -> String {
    format!("hj-{seed}-{e}")
}

/// A session token for `uid`, valid for two days of wall-clock time (more
/// than any clock fault moves a node's clock).
pub fn token(uid: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    herald_proto::token::issue(AUTH_KEY.as_bytes(), uid, now + 2 * 86_400)
}

/// What one submission attempt told us.
#[derive(Clone, Debug, PartialEq)]
pub enum Attempt {
    /// 200, stored (or delivered) for the mailbox.
    Stored { message_id: u64, duplicate: bool, outcome: String },
    /// 200, but not stored for the mailbox (`dropped`, `rejected`): the
    /// submission's fate is decided (a retry answers the same).
    NotStored { message_id: u64, outcome: String },
    /// Definitely not applied: 400/413 (`transient: false`) or the request
    /// never left (refused, connect timeout: `transient: true`).
    NotApplied { transient: bool, error: String },
    /// May or may not have been applied.
    Unknown(String),
}

impl Attempt {
    /// Worth another attempt with the same key.
    pub fn retry(&self) -> bool {
        matches!(self, Attempt::Unknown(_) | Attempt::NotApplied { transient: true, .. })
    }
}

/// Reads one attempt's answer (`POST /v1/messages` to `mailbox` alone).
pub fn classify(res: &Result<Value, ApiError>, mailbox: &str) -> Attempt {
    let reply = match res {
        Ok(v) => v,
        Err(e) => {
            return match write_error_type(&e.kind) {
                OpType::Fail => Attempt::NotApplied {
                    transient: !matches!(e.kind, crate::client::ErrorKind::Status(..)),
                    error: e.to_string(),
                },
                _ => Attempt::Unknown(e.to_string()),
            }
        }
    };
    let Some(message_id) = reply["message_id"].as_u64() else {
        return Attempt::Unknown(format!("200 without message_id: {reply}"));
    };
    let outcome = reply["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["uid"].as_str() == Some(mailbox))
        .and_then(|r| r["outcome"].as_str())
        .map(str::to_string);
    match outcome.as_deref() {
        Some("stored" | "delivered") => Attempt::Stored {
            message_id,
            duplicate: reply["duplicate"].as_bool().unwrap_or(false),
            outcome: outcome.unwrap_or_default(),
        },
        Some(o) => Attempt::NotStored { message_id, outcome: o.to_string() },
        None => Attempt::Unknown(format!("200 without an outcome for {mailbox}: {reply}")),
    }
}

/// How a submission's attempts complete the `enqueue` op: ok if one was
/// stored; fail if the answer said not stored, or every attempt definitely
/// did not apply; info otherwise.
pub fn completion(attempts: &[Attempt]) -> OpType {
    if attempts.iter().any(|a| matches!(a, Attempt::Stored { .. })) {
        OpType::Ok
    } else if attempts.iter().any(|a| matches!(a, Attempt::NotStored { .. }))
        || (!attempts.is_empty()
            && attempts.iter().all(|a| matches!(a, Attempt::NotApplied { .. })))
    {
        OpType::Fail
    } else {
        OpType::Info
    }
}

/// Counters for run.json (`messages_stats`).
#[derive(Default, Debug)]
pub struct Stats {
    pub submissions: AtomicU64,
    pub attempts: AtomicU64,
    pub retries: AtomicU64,
    pub sessions: AtomicU64,
    pub connect_failures: AtomicU64,
    pub disconnects: AtomicU64,
    pub deliveries: AtomicU64,
    pub acks: AtomicU64,
    pub not_acked: AtomicU64,
}

impl Stats {
    pub fn to_json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "submissions": g(&self.submissions), "attempts": g(&self.attempts),
            "retries": g(&self.retries), "sessions": g(&self.sessions),
            "connect_failures": g(&self.connect_failures), "disconnects": g(&self.disconnects),
            "deliveries": g(&self.deliveries), "acks": g(&self.acks), "not_acked": g(&self.not_acked),
        })
    }
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

pub struct Shared {
    next_element: AtomicU64,
    pub stats: Stats,
}

/// Starts the writers and one consumer per mailbox.
pub fn spawn(
    opts: &Opts,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> (Arc<Shared>, Vec<JoinHandle<Result<()>>>) {
    let shared = Arc::new(Shared { next_element: AtomicU64::new(0), stats: Stats::default() });
    let mut handles = Vec::new();
    for i in 0..opts.writers {
        let (opts, rec, stop, shared) = (opts.clone(), rec.clone(), stop.clone(), shared.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("msg-writer-{i}"))
                .spawn(move || writer(i, &opts, &rec, &stop, &shared))
                .expect("spawn writer"),
        );
    }
    for m in 0..opts.mailboxes {
        let (opts, rec, stop, shared) = (opts.clone(), rec.clone(), stop.clone(), shared.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("msg-consumer-{m}"))
                .spawn(move || {
                    netns::enter(netns::CLIENT_NS)?;
                    runtime()?.block_on(consume(m, &opts, &rec, &stop, &shared));
                    Ok(())
                })
                .expect("spawn consumer"),
        );
    }
    (shared, handles)
}

/// A current-thread runtime: its tasks run on the calling thread (already in
/// the client namespace); its blocking-pool threads enter the namespace
/// when they start.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(|| {
            if let Err(e) = netns::enter(netns::CLIENT_NS) {
                eprintln!("warning: runtime thread could not enter the client namespace: {e}");
            }
        })
        .build()?)
}

use super::sleep_unless;

/// The `enqueue` completion of one recipient from the answers of all
/// attempts (each `(node, answer)`): type, value, error.
pub fn enqueue_completion(
    mb: &str,
    e: u64,
    answers: &[(String, Result<Value, ApiError>)],
) -> (OpType, Value, Option<String>) {
    let attempts: Vec<Attempt> = answers.iter().map(|(_, r)| classify(r, mb)).collect();
    let via: Vec<&str> = answers.iter().map(|(n, _)| n.as_str()).collect();
    let t = completion(&attempts);
    let errors: Vec<&str> = attempts
        .iter()
        .filter_map(|a| match a {
            Attempt::NotApplied { error, .. } | Attempt::Unknown(error) => Some(error.as_str()),
            _ => None,
        })
        .collect();
    let error = (!errors.is_empty()).then(|| errors.join(" | "));
    let mut meta = json!({"attempts": attempts.len(), "via": via});
    let answered = attempts.iter().find_map(|a| match a {
        Attempt::Stored { message_id, duplicate, outcome } => {
            Some((*message_id, Some(*duplicate), outcome.clone()))
        }
        Attempt::NotStored { message_id, outcome } => Some((*message_id, None, outcome.clone())),
        _ => None,
    });
    if let Some((id, dup, outcome)) = answered {
        meta["message_id"] = json!(id);
        meta["outcome"] = json!(outcome);
        if let Some(d) = dup {
            meta["duplicate"] = json!(d);
        }
    }
    (t, json!([mb, e, meta]), error)
}

fn writer(i: usize, opts: &Opts, rec: &Recorder, stop: &AtomicBool, shared: &Shared) -> Result<()> {
    netns::enter(netns::CLIENT_NS)?;
    let api = Api::new(opts.timeout);
    let mut rng = Rng::new(opts.seed).fork(5000 + i as u64);
    let mut generation = 0u64;
    let mean = Duration::from_secs_f64(opts.writers as f64 / opts.rate.max(0.001));
    let random_node =
        |rng: &mut Rng| opts.nodes[rng.below(opts.nodes.len() as u64) as usize].clone();
    while !stop.load(Ordering::SeqCst) {
        sleep_unless(stop, mean.mul_f64(2.0 * rng.unit()));
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // One recipient, or (sometimes) two: then each recipient's element
        // is its own enqueue op, on the writer's process and its companion.
        let n_to = if opts.mailboxes >= 2 && rng.chance(MULTI_PROBABILITY) { 2 } else { 1 };
        let mut to: Vec<(String, u64, Process)> = Vec::new();
        while to.len() < n_to {
            let mb = mailbox(rng.below(opts.mailboxes.max(1) as u64) as usize);
            if to.iter().any(|(m, _, _)| *m == mb) {
                continue;
            }
            let e = shared.next_element.fetch_add(1, Ordering::SeqCst) + 1;
            let p = WRITER_PROCESS_BASE
                + generation * WRITER_STRIDE
                + (to.len() as u64) * WRITER_COMPANION
                + i as u64;
            to.push((mb, e, Process::Worker(p)));
        }
        let key = idempotency_key(opts.seed, to[0].1);
        let pairs: Vec<(&str, u64)> = to.iter().map(|(m, e, _)| (m.as_str(), *e)).collect();
        let req = json!({"idempotency_key": key, "from": SENDER,
                         "to": to.iter().map(|(m, _, _)| m).collect::<Vec<_>>(),
                         "body": body_of(&pairs)});
        inc(&shared.stats.submissions);
        let (mut node, mut ip) = random_node(&mut rng);
        for (mb, e, p) in &to {
            rec.record(OpType::Invoke, *p, "enqueue", json!([mb, e]), Some(&node), None);
        }
        let mut answers: Vec<(String, Result<Value, ApiError>)> = Vec::new();
        loop {
            inc(&shared.stats.attempts);
            let res = api.post(&ip, "/v1/messages", &req);
            let again = classify(&res, &to[0].0).retry();
            answers.push((node.clone(), res));
            if !again || answers.len() >= opts.attempts || stop.load(Ordering::SeqCst) {
                break;
            }
            inc(&shared.stats.retries);
            sleep_unless(stop, Duration::from_millis(200 * answers.len() as u64));
            (node, ip) = random_node(&mut rng);
        }
        let mut completions = Vec::new();
        for (mb, e, p) in &to {
            let (t, v, err) = enqueue_completion(mb, *e, &answers);
            rec.record(t, *p, "enqueue", v, Some(&node), err);
            completions.push(t);
        }
        if completions.contains(&OpType::Info) {
            generation += 1;
            continue;
        }
        if completions[0] == OpType::Ok
            && rng.chance(RESUBMIT_PROBABILITY)
            && !stop.load(Ordering::SeqCst)
        {
            let (mb, e, p) = &to[0];
            let (node, ip) = random_node(&mut rng);
            rec.record(OpType::Invoke, *p, "resubmit", json!([mb, e]), Some(&node), None);
            let res = api.post(&ip, "/v1/messages", &req);
            let (t, v, err) = match classify(&res, mb) {
                Attempt::Stored { message_id, duplicate, outcome } => (
                    OpType::Ok,
                    json!([mb, e, {"message_id": message_id, "duplicate": duplicate, "outcome": outcome}]),
                    None,
                ),
                Attempt::NotStored { message_id, outcome } => (
                    OpType::Ok,
                    json!([mb, e, {"message_id": message_id, "outcome": outcome}]),
                    Some(format!("resubmission of a stored message answered {outcome}")),
                ),
                Attempt::NotApplied { error, .. } => (OpType::Fail, json!([mb, e]), Some(error)),
                Attempt::Unknown(error) => (OpType::Info, json!([mb, e]), Some(error)),
            };
            rec.record(t, *p, "resubmit", v, Some(&node), err);
            if t == OpType::Info {
                generation += 1;
            }
        }
    }
    Ok(())
}

fn seeds(opts: &Opts, rng: &mut Rng) -> Vec<String> {
    let mut s: Vec<String> =
        opts.nodes.iter().map(|(_, ip)| format!("{ip}:{PUBLISH_PORT}")).collect();
    rng.shuffle(&mut s);
    s
}

/// Records a completed instantaneous op (invoke and ok at once).
fn record_now(rec: &Recorder, p: Process, f: &str, invoke: Value, ok: Value, node: Option<&str>) {
    rec.record(OpType::Invoke, p, f, invoke, node, None);
    rec.record(OpType::Ok, p, f, ok, node, None);
}

/// One server session's name in the history: unique over the run (the
/// gateway's own session ids restart with the node, so the name adds who
/// opened it — `c` the consumer, `d` the final drain — and that one's
/// counter).
fn session_name(uid: &str, who: char, n: u64, server_session: &str) -> String {
    format!("{uid}#{who}{n}@{server_session}")
}

/// The value of a delivery: `[mailbox, element, meta]`; a body that is not
/// ours becomes the element as a string (the checker reports it unexpected).
pub fn dequeue_value(uid: &str, m: &herald_client::session::Message, session: &str) -> Value {
    let element = match parse_body(&m.body, uid) {
        Some(e) => json!(e),
        None => json!(String::from_utf8_lossy(&m.body)),
    };
    json!([uid, element, {"message_id": m.id, "session": session, "stored": m.stored}])
}

/// Handles one session event; returns false when the session is over for
/// good. `ack`: whether to acknowledge this delivery.
#[allow(clippy::too_many_arguments)]
async fn on_event(
    ev: SessionEvent,
    s: &Session,
    uid: &str,
    p: Process,
    rec: &Recorder,
    who: char,
    n: &mut u64,
    cur: &mut String,
    ack: bool,
    stats: &Stats,
) -> bool {
    match ev {
        SessionEvent::Connected { node, session, queued } => {
            *n += 1;
            *cur = session_name(uid, who, *n, &session);
            inc(&stats.sessions);
            let name = format!("n{node}");
            record_now(
                rec,
                p,
                "session",
                json!({"mailbox": uid}),
                json!({"mailbox": uid, "session": cur, "node": node, "queued": queued}),
                Some(&name),
            );
            true
        }
        SessionEvent::Message(m) => {
            inc(&stats.deliveries);
            let name = format!("n{}", m.node);
            record_now(
                rec,
                p,
                "dequeue",
                json!([uid, null]),
                dequeue_value(uid, &m, cur),
                Some(&name),
            );
            if ack {
                inc(&stats.acks);
                s.ack(vec![m.id]).await;
            } else {
                inc(&stats.not_acked);
            }
            true
        }
        SessionEvent::Disconnected { code, message, fatal } => {
            inc(&stats.disconnects);
            record_now(
                rec,
                p,
                "disconnect",
                json!({"mailbox": uid}),
                json!({"mailbox": uid, "session": cur, "code": code, "message": message, "fatal": fatal}),
                None,
            );
            !fatal
        }
    }
}

/// `f`'s output, or None as soon as `stop` is set (checked every 100 ms).
async fn or_stop<F: std::future::Future>(f: F, stop: &AtomicBool) -> Option<F::Output> {
    tokio::pin!(f);
    loop {
        tokio::select! {
            r = &mut f => return Some(r),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                if stop.load(Ordering::SeqCst) {
                    return None;
                }
            }
        }
    }
}

async fn consume(i: usize, opts: &Opts, rec: &Recorder, stop: &AtomicBool, shared: &Shared) {
    let uid = mailbox(i);
    let token = token(&uid);
    let p = Process::Worker(CONSUMER_PROCESS_BASE + i as u64);
    let mut rng = Rng::new(opts.seed).fork(7000 + i as u64);
    let persistent = i == 0;
    let stopped = || stop.load(Ordering::SeqCst);
    let (mut n, mut cur) = (0u64, String::new());
    while !stopped() {
        let cfg = SessionConfig::new(seeds(opts, &mut rng), uid.clone(), token.clone());
        let connect = tokio::time::timeout(CONNECT_LIMIT, Session::connect(cfg));
        let mut s = match or_stop(connect, stop).await {
            None => break,
            Some(Ok(Ok(s))) => s,
            Some(_) => {
                inc(&shared.stats.connect_failures);
                tokio::time::sleep(Duration::from_millis(300)).await;
                continue;
            }
        };
        let until = (!persistent)
            .then(|| tokio::time::Instant::now() + Duration::from_millis(1000 + rng.below(4000)));
        while !stopped() && until.is_none_or(|u| tokio::time::Instant::now() < u) {
            match tokio::time::timeout(Duration::from_millis(100), s.recv()).await {
                Err(_) => {}
                Ok(None) => break,
                Ok(Some(ev)) => {
                    let ack = rng.chance(ACK_PROBABILITY);
                    if !on_event(ev, &s, &uid, p, rec, 'c', &mut n, &mut cur, ack, &shared.stats)
                        .await
                    {
                        break;
                    }
                }
            }
        }
        // Dropping the session ends it; what it did not acknowledge stays
        // stored and comes again in the next one.
        drop(s);
        if !persistent && !stopped() {
            let until = tokio::time::Instant::now() + Duration::from_millis(rng.below(2000));
            while tokio::time::Instant::now() < until && !stopped() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// What the final drain saw for one mailbox.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainMailbox {
    pub mailbox: String,
    /// `queued` reached 0 before the deadline.
    pub drained: bool,
    /// The first and the last `queued` the cluster answered.
    pub queued_first: Option<u64>,
    pub queued_last: Option<u64>,
    /// Deliveries recorded during the drain (redeliveries included).
    pub delivered: u64,
    pub sessions: u64,
    /// From the start of the drain to `queued == 0`.
    pub after_ms: Option<f64>,
    pub last_error: Option<String>,
}

impl DrainMailbox {
    /// A mailbox whose drain could not run.
    fn failed(m: usize, error: String) -> Self {
        DrainMailbox {
            mailbox: mailbox(m),
            drained: false,
            queued_first: None,
            queued_last: None,
            delivered: 0,
            sessions: 0,
            after_ms: None,
            last_error: Some(error),
        }
    }
}

/// run.json `messages_final`: the drain of every mailbox after healing.
/// (`serde(default)`: run.json of older runs may lack newer fields.)
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DrainSummary {
    pub mailboxes: Vec<DrainMailbox>,
    pub limit_ms: u64,
    pub elapsed_ms: f64,
}

/// After healing: drains every mailbox in parallel (one thread each), for
/// at most `limit`.
pub fn drain(rec: &Recorder, opts: &Opts, stats: &Stats, limit: Duration) -> DrainSummary {
    let start = Instant::now();
    let deadline = start + limit;
    let mailboxes = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..opts.mailboxes)
            .map(|m| {
                sc.spawn(move || {
                    let run = || -> Result<DrainMailbox> {
                        netns::enter(netns::CLIENT_NS)?;
                        Ok(runtime()?.block_on(drain_one(m, opts, rec, stats, deadline)))
                    };
                    run().unwrap_or_else(|e| DrainMailbox::failed(m, e.to_string()))
                })
            })
            .collect();
        hs.into_iter()
            .enumerate()
            .map(|(m, h)| {
                h.join().unwrap_or_else(|_| DrainMailbox::failed(m, "drain thread panicked".into()))
            })
            .collect()
    });
    DrainSummary {
        mailboxes,
        limit_ms: limit.as_millis() as u64,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    }
}

/// `GET /v1/users/{uid}/settings` through node `k mod n`, recorded as a
/// `queued` op; the answer's `queued`.
async fn queued(
    opts: &Opts,
    rec: &Recorder,
    p: Process,
    uid: &str,
    k: usize,
) -> Result<u64, String> {
    let (node, ip) = opts.nodes[k % opts.nodes.len()].clone();
    rec.record(OpType::Invoke, p, "queued", json!({"mailbox": uid}), Some(&node), None);
    let (path, timeout) = (format!("/v1/users/{uid}/settings"), opts.timeout);
    let res = tokio::task::spawn_blocking(move || Api::new(timeout).get(&ip, &path))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .and_then(|v| v["queued"].as_u64().ok_or_else(|| format!("no queued in {v}")));
    match &res {
        Ok(q) => rec.record(
            OpType::Ok,
            p,
            "queued",
            json!({"mailbox": uid, "queued": q}),
            Some(&node),
            None,
        ),
        Err(e) => rec.record(
            OpType::Fail,
            p,
            "queued",
            json!({"mailbox": uid}),
            Some(&node),
            Some(e.clone()),
        ),
    };
    res
}

async fn drain_one(
    m: usize,
    opts: &Opts,
    rec: &Recorder,
    stats: &Stats,
    deadline: Instant,
) -> DrainMailbox {
    let uid = mailbox(m);
    let token = token(&uid);
    let p = Process::Worker(DRAIN_PROCESS_BASE + m as u64);
    let mut rng = Rng::new(opts.seed).fork(9000 + m as u64);
    let start = Instant::now();
    let mut r = DrainMailbox {
        mailbox: uid.clone(),
        drained: false,
        queued_first: None,
        queued_last: None,
        delivered: 0,
        sessions: 0,
        after_ms: None,
        last_error: None,
    };
    let (mut n, mut cur) = (0u64, String::new());
    let mut polls = m;
    let mut session: Option<Session> = None;
    let mut next_poll = Instant::now();
    while Instant::now() < deadline {
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + Duration::from_millis(500);
            polls += 1;
            match queued(opts, rec, p, &uid, polls).await {
                Ok(q) => {
                    r.queued_first.get_or_insert(q);
                    r.queued_last = Some(q);
                    if q == 0 {
                        r.drained = true;
                        r.after_ms = Some(start.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                }
                Err(e) => r.last_error = Some(e),
            }
        }
        let Some(s) = session.as_mut() else {
            let cfg = SessionConfig::new(seeds(opts, &mut rng), uid.clone(), token.clone());
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(CONNECT_LIMIT.min(left), Session::connect(cfg)).await {
                Ok(Ok(s)) => session = Some(s),
                Ok(Err(e)) => r.last_error = Some(e.to_string()),
                Err(_) => r.last_error = Some("session connect timed out".into()),
            }
            continue;
        };
        match tokio::time::timeout(Duration::from_millis(100), s.recv()).await {
            Err(_) => {}
            Ok(None) => session = None,
            Ok(Some(ev)) => {
                let delivery = matches!(ev, SessionEvent::Message(_));
                let before = n;
                let s = session.as_ref().expect("session");
                if !on_event(ev, s, &uid, p, rec, 'd', &mut n, &mut cur, true, stats).await {
                    session = None;
                }
                r.sessions += n - before;
                if delivery {
                    r.delivered += 1;
                }
            }
        }
    }
    drop(session);
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ErrorKind;

    fn err(kind: ErrorKind) -> Result<Value, ApiError> {
        Err(ApiError { kind, message: "x".into() })
    }

    /// Proves how one attempt's answer is read: 200 stored/delivered for the
    /// mailbox is stored (with the message id and duplicate flag),
    /// dropped/rejected is decided-not-stored, 400 is not applied for good,
    /// never-sent is not applied but worth a retry, 503/504/timeouts and a
    /// 200 that does not name the mailbox are unknown.
    #[test]
    fn workload_messages_classify_attempts() {
        let ok = |outcome: &str, dup: bool| -> Result<Value, ApiError> {
            Ok(json!({"message_id": 7, "revision": 3, "duplicate": dup,
                      "recipients": [{"uid": "mbox1", "outcome": outcome}]}))
        };
        assert_eq!(
            classify(&ok("stored", false), "mbox1"),
            Attempt::Stored { message_id: 7, duplicate: false, outcome: "stored".into() }
        );
        assert_eq!(
            classify(&ok("delivered", true), "mbox1"),
            Attempt::Stored { message_id: 7, duplicate: true, outcome: "delivered".into() }
        );
        assert_eq!(
            classify(&ok("rejected", false), "mbox1"),
            Attempt::NotStored { message_id: 7, outcome: "rejected".into() }
        );
        assert!(matches!(classify(&ok("stored", false), "mbox2"), Attempt::Unknown(_)));
        assert!(matches!(classify(&Ok(json!({"x": 1})), "mbox1"), Attempt::Unknown(_)));
        let bad = classify(&err(ErrorKind::Status(400, Some("invalid_uid".into()))), "m");
        assert!(matches!(bad, Attempt::NotApplied { transient: false, .. }));
        assert!(!bad.retry());
        let refused = classify(&err(ErrorKind::NotSent), "m");
        assert!(matches!(refused, Attempt::NotApplied { transient: true, .. }));
        assert!(refused.retry());
        for k in [
            ErrorKind::Status(503, Some("no_leader".into())),
            ErrorKind::Status(504, Some("timeout".into())),
            ErrorKind::Unknown,
        ] {
            let a = classify(&err(k), "m");
            assert!(matches!(a, Attempt::Unknown(_)) && a.retry());
        }
    }

    /// Proves the completion rule over a submission's attempts: any stored
    /// attempt makes it ok (also after unknown ones); a not-stored answer or
    /// only definite non-applications make it fail; an unknown attempt
    /// followed only by refusals stays info (the first may have been
    /// applied), as does a submission with no answer at all.
    #[test]
    fn workload_messages_completion_of_retries() {
        let stored = Attempt::Stored { message_id: 1, duplicate: true, outcome: "stored".into() };
        let unknown = Attempt::Unknown("504".into());
        let refused = Attempt::NotApplied { transient: true, error: "refused".into() };
        let bad = Attempt::NotApplied { transient: false, error: "400".into() };
        let dropped = Attempt::NotStored { message_id: 1, outcome: "rejected".into() };
        assert_eq!(completion(&[unknown.clone(), stored.clone()]), OpType::Ok);
        assert_eq!(completion(&[refused.clone(), stored]), OpType::Ok);
        assert_eq!(completion(&[refused.clone(), refused.clone()]), OpType::Fail);
        assert_eq!(completion(&[bad]), OpType::Fail);
        assert_eq!(completion(&[unknown.clone(), dropped]), OpType::Fail);
        assert_eq!(completion(&[unknown.clone(), refused]), OpType::Info);
        assert_eq!(completion(&[unknown]), OpType::Info);
        assert_eq!(completion(&[]), OpType::Info);
    }

    /// Proves bodies name each recipient's element and parse back per
    /// mailbox, that a body not addressed to a mailbox (or not ours) yields
    /// no element, and that keys are unique per element and seed.
    #[test]
    fn workload_messages_bodies_and_keys() {
        assert_eq!(body_of(&[("mbox3", 41)]), "mbox3:41");
        let two = body_of(&[("mbox0", 7), ("mbox3", 8)]);
        assert_eq!(two, "mbox0:7,mbox3:8");
        assert_eq!(parse_body(b"mbox3:41", "mbox3"), Some(41));
        assert_eq!(parse_body(two.as_bytes(), "mbox0"), Some(7));
        assert_eq!(parse_body(two.as_bytes(), "mbox3"), Some(8));
        assert_eq!(parse_body(two.as_bytes(), "mbox1"), None, "not addressed to mbox1");
        assert_eq!(parse_body(b"hello", "mbox3"), None);
        assert_eq!(parse_body(b"mbox3:x", "mbox3"), None);
        assert_eq!(parse_body(&[0xff, b':', b'1'], "mbox3"), None);
        assert_ne!(idempotency_key(1, 2), idempotency_key(1, 3));
        assert_ne!(idempotency_key(1, 2), idempotency_key(2, 2));
    }

    /// Proves a delivery is recorded as `[mailbox, element, meta]` with the
    /// message id and session (what the queue checker reads), that a body
    /// that is not ours becomes a string element (reported unexpected), and
    /// that consumer and drain sessions never share a name (the gateway's
    /// own ids restart with the node).
    #[test]
    fn workload_messages_dequeue_value() {
        let mut m = herald_client::session::Message {
            id: 12,
            from: SENDER.into(),
            kind: "direct".into(),
            content_type: "text/plain".into(),
            body: b"mbox1:5".to_vec(),
            sent_at_ms: 0,
            stored: true,
            expires_at_ms: 0,
            group: String::new(),
            node: 2,
        };
        let v = dequeue_value("mbox1", &m, "mbox1#c1@2-3");
        assert_eq!(
            v,
            json!(["mbox1", 5, {"message_id": 12, "session": "mbox1#c1@2-3", "stored": true}])
        );
        m.body = b"spam".to_vec();
        assert_eq!(dequeue_value("mbox1", &m, "s")[1], json!("spam"));
        assert_eq!(session_name("mbox1", 'c', 4, "2-9"), "mbox1#c4@2-9");
        assert_ne!(session_name("mbox1", 'c', 1, "2-9"), session_name("mbox1", 'd', 1, "2-9"));
    }

    /// Proves a submission to two mailboxes completes each recipient's
    /// enqueue from its own outcome in the same answers: stored for one
    /// (ok, with the shared message id and the retry's duplicate flag),
    /// rejected for the other (fail); an unanswered attempt followed by the
    /// answer still counts the attempts and the nodes tried.
    #[test]
    fn workload_messages_two_recipients_complete_separately() {
        let answers = vec![
            ("n1".to_string(), err(ErrorKind::Status(504, Some("timeout".into())))),
            (
                "n3".to_string(),
                Ok(json!({"message_id": 40, "duplicate": true, "recipients": [
                    {"uid": "mbox0", "outcome": "stored"},
                    {"uid": "mbox3", "outcome": "rejected", "reason": "quota_exceeded"}]})),
            ),
        ];
        let (t, v, e) = enqueue_completion("mbox0", 7, &answers);
        assert_eq!(t, OpType::Ok);
        assert_eq!(
            v,
            json!(["mbox0", 7, {"attempts": 2, "via": ["n1", "n3"], "message_id": 40,
                                "outcome": "stored", "duplicate": true}])
        );
        assert_eq!(e.as_deref(), Some("x"));
        let (t, v, _) = enqueue_completion("mbox3", 8, &answers);
        assert_eq!(t, OpType::Fail);
        assert_eq!(v[2]["outcome"], json!("rejected"));
        assert_eq!(v[2]["message_id"], json!(40));
    }
}
