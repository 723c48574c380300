//! `bench messages`: messages end to end, Herald-only (etcd has no
//! sessions or message store).
//!
//! - `online`: each of `--clients` senders has its own recipient with a
//!   session open; a send is answered once the recipient's session has
//!   received the message and acknowledged it ("delivered"), so one send's
//!   latency is send → delivery → ack → answer.
//! - `offline`: senders send to offline recipients (each sender
//!   round-robin over its own [`OFFLINE_RECIPIENTS_PER_CLIENT`] users), a
//!   send is answered once stored ("stored"); then every recipient logs in,
//!   receives what waits for it and acknowledges it, clocked from the login
//!   until the store holds nothing more for that user.
//!
//! `--batch B` > 1 sends B messages per request through `SendBatch` (one
//! log entry; online: all to the sender's recipient, answered once each is
//! delivered; offline: to B successive recipients); ops/s counts requests,
//! messages/s messages.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herald_client::messages::{Outgoing, Recipients};
use herald_client::session::{Session, SessionConfig, SessionEvent};
use herald_client::HeraldClient;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::report::BenchResult;
use super::stats::{throughput, Samples};
use super::target::{herald, ErrorCounts, OpError, System, Topology, CLIENT_TYPE};
use super::{MsgPath, RunArgs};

/// Users each sender of the offline path sends to in turn: enough that a
/// long run stays far below the per-user store quota (1,000 by default),
/// few enough that logging them all in afterwards takes seconds.
pub const OFFLINE_RECIPIENTS_PER_CLIENT: u64 = 64;
/// Most messages stored for one recipient in the offline path (the
/// senders stop there): under the default quota of 1,000 per user.
pub const OFFLINE_MAX_PER_RECIPIENT: u64 = 500;
/// How long a drained recipient may take to show an empty store after its
/// acks before it counts as an error.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most messages per request (`--batch`): the node's batch-send limit.
const MAX_BATCH: usize = 1000;
/// Lifetime of the session tokens the benchmark issues.
const TOKEN_LIFETIME_S: u64 = 24 * 3600;
/// Who the benchmark's messages come from.
const SENDER: &str = "bench-sender";

/// A session token for `uid`, valid for [`TOKEN_LIFETIME_S`].
pub fn token(key: &[u8], uid: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    herald_proto::token::issue(key, uid, now + TOKEN_LIFETIME_S)
}

/// A run-unique prefix, so that uids and idempotency keys of two runs
/// against the same cluster never collide.
fn run_tag() -> String {
    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{:x}", ns % (1 << 40))
}

async fn session(seeds: &[String], uid: &str, key: &[u8]) -> Result<Session, OpError> {
    let mut cfg = SessionConfig::new(seeds.to_vec(), uid, token(key, uid));
    cfg.client = CLIENT_TYPE.into();
    cfg.give_up_after = Some(Duration::from_secs(10));
    Ok(Session::connect(cfg).await?)
}

fn outgoing(tag: &str, n: u64, to: &str, body: &[u8]) -> Outgoing {
    Outgoing {
        idempotency_key: format!("{tag}-{to}-{n}"),
        from: SENDER.into(),
        to: Recipients::To(vec![to.to_string()]),
        ttl_s: 0,
        content_type: "text/plain".into(),
        body: body.to_vec(),
    }
}

/// The single recipient's outcome of a send, as an error unless `want`.
fn check_outcome(a: &herald_client::messages::SendOutcome, want: &str) -> Result<(), OpError> {
    match a.recipients.first() {
        Some(r) if r.outcome == want => Ok(()),
        Some(r) => Err(OpError::new(
            &format!("outcome_{}", r.outcome),
            format!("{}: {} {}", r.uid, r.outcome, r.reason),
        )),
        None => Err(OpError::new("no_outcome", "the answer names no recipient")),
    }
}

/// Sends `batch` messages (one `Send`, or one `SendBatch` when more than
/// one) and checks each message's outcome is `want`.
async fn send_some(
    sender: &HeraldClient,
    ms: Vec<Outgoing>,
    want: &str,
    op_timeout: Duration,
) -> Result<(), OpError> {
    let answer = async {
        if ms.len() == 1 {
            let m = ms.into_iter().next().expect("one");
            return check_outcome(&sender.send(m).await?, want);
        }
        let (_, items) = sender.send_batch(ms).await?;
        for it in items {
            check_outcome(&it?, want)?;
        }
        Ok(())
    };
    tokio::time::timeout(op_timeout, answer)
        .await
        .map_err(|_| OpError::new("client_timeout", "no answer"))?
}

/// Each recipient session acknowledges everything it receives.
fn ack_all(mut s: Session) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(ev) = s.recv().await {
            if let SessionEvent::Message(m) = ev {
                s.ack(vec![m.id]).await;
            }
        }
    })
}

/// Sends start after `--warmup` from now and stop after `--duration`.
fn timing(a: &RunArgs, op_timeout: Duration) -> Timing {
    let measure_from = Instant::now() + Duration::from_millis(20) + a.warmup;
    Timing { measure_from, deadline: measure_from + a.duration, op_timeout }
}

struct Timing {
    measure_from: Instant,
    deadline: Instant,
    op_timeout: Duration,
}

async fn online(
    topo: &Topology,
    a: &RunArgs,
    key: &[u8],
    clients: usize,
    t: &Timing,
) -> Result<BenchResult, OpError> {
    let seeds: Vec<String> = topo.nodes.iter().map(|n| n.addr.clone()).collect();
    let tag = run_tag();
    let body = vec![b'x'; a.body_bytes];
    let batch = a.batch.clamp(1, MAX_BATCH);
    let mut acks = Vec::new();
    let mut pairs = Vec::new();
    for k in 0..clients {
        let uid = format!("mon-{tag}-{k}");
        acks.push(ack_all(session(&seeds, &uid, key).await?));
        pairs.push((uid, herald(&seeds[k % seeds.len()]).await?));
    }
    // The clock starts once every recipient is online.
    let t = &timing(a, t.op_timeout);
    let mut set = JoinSet::new();
    for (uid, sender) in pairs {
        let body = body.clone();
        let tag = tag.clone();
        let (measure_from, deadline, op_timeout) = (t.measure_from, t.deadline, t.op_timeout);
        set.spawn(async move {
            let mut lat = Samples::new();
            let mut errors = ErrorCounts::default();
            let mut last = None;
            let mut n = 0u64;
            tokio::time::sleep_until(measure_from.into()).await;
            while Instant::now() < deadline {
                let ms: Vec<Outgoing> = (0..batch)
                    .map(|_| {
                        n += 1;
                        outgoing(&tag, n, &uid, &body)
                    })
                    .collect();
                let start = Instant::now();
                let r = send_some(&sender, ms, "delivered", op_timeout).await;
                match r {
                    Ok(()) => lat.record(start.elapsed()),
                    Err(e) => errors.add(&e),
                }
                last = Some(Instant::now());
            }
            (lat, errors, last)
        });
    }
    let (lat, errors, last) = gather(&mut set).await?;
    for h in acks {
        h.abort();
    }
    let mut r = BenchResult::new(System::Herald, "messages");
    r.via = "all".into();
    r.clients = clients;
    r.batch = batch;
    r.setting = "path=online".into();
    let elapsed = last.map(|l| l - t.measure_from).unwrap_or(a.duration).max(a.duration);
    r.set_mixed(Samples::new(), lat, &errors, elapsed);
    Ok(r)
}

type Gathered = (Samples, ErrorCounts, Option<Instant>);

async fn gather(set: &mut JoinSet<Gathered>) -> Result<Gathered, OpError> {
    let mut lat = Samples::new();
    let mut errors = ErrorCounts::default();
    let mut last: Option<Instant> = None;
    while let Some(x) = set.join_next().await {
        let (l, e, t) = x.map_err(|e| OpError::new("internal", e.to_string()))?;
        lat.merge(l);
        errors.merge(e);
        last = last.max(t);
    }
    Ok((lat, errors, last))
}

async fn offline(
    topo: &Topology,
    a: &RunArgs,
    key: &[u8],
    clients: usize,
    t: &Timing,
) -> Result<BenchResult, OpError> {
    let seeds: Vec<String> = topo.nodes.iter().map(|n| n.addr.clone()).collect();
    let tag = run_tag();
    let body = vec![b'y'; a.body_bytes];
    let batch = a.batch.clamp(1, MAX_BATCH);
    // Messages stored per recipient, to check the drain against.
    let counts: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let mut senders = Vec::new();
    for k in 0..clients {
        senders.push(herald(&seeds[k % seeds.len()]).await?);
    }
    let t = &timing(a, t.op_timeout);
    let mut set = JoinSet::new();
    for (k, sender) in senders.into_iter().enumerate() {
        let (body, tag, counts) = (body.clone(), tag.clone(), counts.clone());
        let (measure_from, deadline, op_timeout) = (t.measure_from, t.deadline, t.op_timeout);
        set.spawn(async move {
            let mut lat = Samples::new();
            let mut errors = ErrorCounts::default();
            let mut last = None;
            let mut n = 0u64;
            tokio::time::sleep_until(measure_from.into()).await;
            while Instant::now() < deadline
                && n + batch as u64 <= OFFLINE_RECIPIENTS_PER_CLIENT * OFFLINE_MAX_PER_RECIPIENT
            {
                let mut uids = Vec::with_capacity(batch);
                let ms: Vec<Outgoing> = (0..batch)
                    .map(|_| {
                        let uid = format!("moff-{tag}-{k}-{}", n % OFFLINE_RECIPIENTS_PER_CLIENT);
                        n += 1;
                        let m = outgoing(&tag, n, &uid, &body);
                        uids.push(uid);
                        m
                    })
                    .collect();
                let start = Instant::now();
                let r = send_some(&sender, ms, "stored", op_timeout).await;
                match r {
                    Ok(()) => {
                        lat.record(start.elapsed());
                        let mut c = counts.lock().await;
                        for uid in uids {
                            *c.entry(uid).or_default() += 1;
                        }
                    }
                    Err(e) => errors.add(&e),
                }
                last = Some(Instant::now());
            }
            (lat, errors, last)
        });
    }
    let (lat, mut errors, last) = gather(&mut set).await?;
    let elapsed = last.map(|l| l - t.measure_from).unwrap_or(a.duration).max(a.duration);
    let stored: u64 = lat.len() as u64 * batch as u64;
    // Drain: every recipient logs in, takes what waits, acknowledges it.
    let users: Vec<(String, u64)> = counts.lock().await.clone().into_iter().collect();
    let queue = Arc::new(Mutex::new(users));
    let drain_start = Instant::now();
    let mut set = JoinSet::new();
    for k in 0..clients {
        let (queue, seeds, key) = (queue.clone(), seeds.clone(), key.to_vec());
        let checker = herald(&seeds[k % seeds.len()]).await?;
        set.spawn(async move {
            let mut lat = Samples::new();
            let mut errors = ErrorCounts::default();
            let mut last = None;
            loop {
                let Some((uid, want)) = queue.lock().await.pop() else { break };
                let start = Instant::now();
                match drain_one(&seeds, &uid, want, &key, &checker).await {
                    Ok(()) => lat.record(start.elapsed()),
                    Err(e) => errors.add(&e),
                }
                last = Some(Instant::now());
            }
            (lat, errors, last)
        });
    }
    let (drain_lat, drain_errors, drain_last) = gather(&mut set).await?;
    let drain_elapsed = drain_last.map(|l| l - drain_start).unwrap_or_default();
    errors.merge(drain_errors);
    let mut r = BenchResult::new(System::Herald, "messages");
    r.via = "all".into();
    r.clients = clients;
    r.batch = batch;
    r.setting = "path=offline".into();
    r.set_mixed(Samples::new(), lat, &errors, elapsed);
    let d = drain_lat.summary();
    r.measure("recipients", d.count as f64);
    r.measure("login → all acked p50 ms", d.p50_ms);
    r.measure("login → all acked p99 ms", d.p99_ms);
    r.measure("drained msgs/s", throughput(stored, drain_elapsed));
    Ok(r)
}

/// Logs `uid` in, receives the `want` messages stored for it, acknowledges
/// them and waits until the store holds none for it.
async fn drain_one(
    seeds: &[String],
    uid: &str,
    want: u64,
    key: &[u8],
    checker: &HeraldClient,
) -> Result<(), OpError> {
    let mut s = session(seeds, uid, key).await?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut got = 0u64;
    while got < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => {
                got += 1;
                s.ack(vec![m.id]).await;
            }
            Ok(Some(_)) => {}
            Ok(None) => return Err(OpError::new("session_ended", format!("{uid}: session ended"))),
            Err(_) => {
                return Err(OpError::new(
                    "drain_timeout",
                    format!("{uid}: {got} of {want} stored messages delivered"),
                ))
            }
        }
    }
    loop {
        if checker.settings(uid).await?.queued == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(OpError::new("drain_timeout", format!("{uid}: acks not applied")));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The key to issue session tokens with: `--auth-key` or `--auth-key-file`.
pub fn auth_key(a: &RunArgs) -> Result<Vec<u8>, OpError> {
    if let Some(k) = &a.auth_key {
        return Ok(k.as_bytes().to_vec());
    }
    if let Some(p) = &a.auth_key_file {
        let k = std::fs::read_to_string(p).map_err(|e| {
            OpError::new("invalid_argument", format!("cannot read {}: {e}", p.display()))
        })?;
        return Ok(k.trim().as_bytes().to_vec());
    }
    Err(OpError::new(
        "invalid_argument",
        "sessions need tokens: pass the cluster's <auth mode=\"hmac\" key=..> key with --auth-key (or HERALD_AUTH_KEY) or --auth-key-file",
    ))
}

pub async fn run(
    topo: &Topology,
    a: &RunArgs,
    op_timeout: Duration,
) -> Result<Vec<BenchResult>, OpError> {
    if topo.system != System::Herald {
        return Err(OpError::new(
            "unsupported",
            "messages is Herald-only (etcd has no sessions or message store)",
        ));
    }
    let key = auth_key(a)?;
    let clients = a.clients.first().copied().unwrap_or(16).max(1);
    let paths =
        if a.path.is_empty() { vec![MsgPath::Online, MsgPath::Offline] } else { a.path.clone() };
    let mut out = Vec::new();
    for p in paths {
        let t = timing(a, op_timeout);
        out.push(match p {
            MsgPath::Online => online(topo, a, &key, clients, &t).await?,
            MsgPath::Offline => offline(topo, a, &key, clients, &t).await?,
        });
    }
    Ok(out)
}
