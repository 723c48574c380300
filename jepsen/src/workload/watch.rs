//! The watch workload (issue 15): watchers follow presence change feeds
//! (gRPC `Presence.Watch`, the raw stream, so that every frame is seen and
//! recorded) of uids the presence workload writes, through partitions,
//! kills and pauses; `checker::watch` judges them against the presence
//! writes of the same history.
//!
//! - **Watchers**: `watchers` threads, each with its own current-thread
//!   tokio runtime in the client namespace. A watcher runs *logical
//!   watches* one after the other: a watch follows a fixed set of 2–4
//!   uids chosen around the presence workload's newest key (the key being
//!   written and the next few, which the workload will write later, so a
//!   set sees unknown users appear), for 3–10 s. A watch opens on a random
//!   node without `since_revision` (a snapshot comes first); whenever its
//!   stream breaks (an error, the stream ending, nothing received for
//!   [`IDLE`]: a partitioned or paused node), and also on purpose after
//!   0.5–3 s, it reopens on a random node with `since_revision` = the last
//!   revision of a snapshot, change or progress frame it received — the
//!   resume the issue specifies.
//! - **History**: each open is a `watch-open` op (invoke `{"watch", "uids",
//!   "since"}`, `ok`/`fail` with the node's refusal); each frame a `frame`
//!   op: invoke `{"watch"}` when the watcher starts waiting, `ok` with the
//!   frame (`{"watch", "kind", "revision", "users", "unknown"}`, users as
//!   [`user_json`]) or `fail` when the stream broke instead.
//! - **Final phase** ([`final_phase`], after healing): every watcher's last
//!   watch does a linearizable batch query of its uids (`watch-final-query`
//!   op, ok `{"watch", "revision", "users", "unknown"}`), then resumes its
//!   watch from its last revision until a frame carries it to the query's
//!   revision or beyond (`watch-final` op with the cursor reached).
//!
//! The presence workload's write ops carry the revision their write was
//! acknowledged at (`[uid, value, revision]` in the ok completion), which
//! the checker needs to know which committed change each frame must show.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;
use herald_client::{ConnectOptions, Credential};
use herald_proto::v1 as pb;
use herald_proto::v1::presence_client::PresenceClient;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::client::Api;
use crate::db::{API_KEY, PUBLISH_PORT};
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::rng::Rng;
use crate::workload::presence;

/// Watcher `i`'s ops are process `WATCH_PROCESS_BASE + i` (one process per
/// watcher: its ops only ever complete `ok` or `fail`).
pub const WATCH_PROCESS_BASE: u64 = 400_000_000;

/// `<watch progress-ms>` of the harness's nodes: an idle watch hears from
/// its node at least this often.
pub const PROGRESS_MS: u64 = 1000;

/// A stream that sent nothing for this long is taken as broken (three
/// progress periods: a paused or partitioned node) and reopened elsewhere.
pub const IDLE: Duration = Duration::from_millis(3 * PROGRESS_MS);

/// How long opening a watch (connect + the node's read barrier + the first
/// answer) may take.
const OPEN_LIMIT: Duration = Duration::from_secs(3);

/// How long the final phase waits for one watch to reach the final query's
/// revision.
const FINAL_LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug)]
pub struct Opts {
    pub nodes: Vec<(String, String)>, // (name, ip)
    pub watchers: usize,
    pub seed: u64,
    pub timeout: Duration,
}

/// A watch as the final phase takes it over.
#[derive(Clone, Debug)]
pub struct Last {
    pub watcher: usize,
    pub watch: String,
    pub uids: Vec<String>,
    pub cursor: Option<u64>,
}

/// What the watchers leave for the final phase.
#[derive(Default)]
pub struct Shared {
    pub last: Mutex<Vec<Last>>,
}

/// One user of a frame or query answer as the history records it: what
/// the checker compares (the register value `ext.reg` as `reg`).
pub fn user_json(
    uid: &str,
    sid: u64,
    online: bool,
    clients: &[String],
    accepts_strangers: bool,
    reg: Option<&str>,
    revision: u64,
) -> Value {
    let mut clients = clients.to_vec();
    clients.sort();
    json!({
        "uid": uid, "sid": sid, "online": online, "clients": clients,
        "accepts_strangers": accepts_strangers,
        "reg": reg.and_then(|r| r.parse::<u64>().ok()),
        "revision": revision,
    })
}

fn pb_user(u: &pb::UserPresence) -> Value {
    user_json(
        &u.uid,
        u.sid,
        u.online,
        &u.clients,
        u.accepts_strangers,
        u.ext.get("reg").map(String::as_str),
        u.revision,
    )
}

/// A user of an HTTP query answer (the same fields).
fn http_user(u: &Value) -> Value {
    let clients: Vec<String> = u["clients"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str().map(str::to_string)).collect())
        .unwrap_or_default();
    user_json(
        u["uid"].as_str().unwrap_or_default(),
        u["sid"].as_u64().unwrap_or(0),
        u["online"].as_bool().unwrap_or(false),
        &clients,
        u["accepts_strangers"].as_bool().unwrap_or(false),
        u.pointer("/ext/reg").and_then(|r| r.as_str()),
        u["revision"].as_u64().unwrap_or(0),
    )
}

fn kind_name(k: i32) -> &'static str {
    use pb::watch_frame::Kind;
    match Kind::try_from(k) {
        Ok(Kind::Snapshot) => "snapshot",
        Ok(Kind::Change) => "change",
        Ok(Kind::Progress) => "progress",
        Ok(Kind::Reset) => "reset",
        Ok(Kind::Error) => "error",
        _ => "unspecified",
    }
}

/// The frame as the history records it.
pub fn frame_json(watch: &str, f: &pb::WatchFrame) -> Value {
    json!({
        "watch": watch,
        "kind": kind_name(f.kind),
        "revision": f.revision,
        "users": f.users.iter().map(pb_user).collect::<Vec<_>>(),
        "unknown": f.unknown,
        "added": f.added,
        "code": f.code,
    })
}

/// The revision a frame moves the resume point to (snapshot, change,
/// progress), as the proto documents.
fn resume_point(f: &pb::WatchFrame) -> Option<u64> {
    use pb::watch_frame::Kind;
    match Kind::try_from(f.kind) {
        Ok(Kind::Snapshot | Kind::Change | Kind::Progress) => Some(f.revision),
        _ => None,
    }
}

/// The uids of a new watch: 2–4 distinct keys from the two before the
/// presence workload's next key to the four after it.
pub fn pick_uids(rng: &mut Rng, next_key: u64) -> Vec<String> {
    let lo = next_key.saturating_sub(2);
    let span = next_key + 4 - lo;
    let n = 2 + rng.below(3);
    let mut keys = std::collections::BTreeSet::new();
    while (keys.len() as u64) < n.min(span) {
        keys.insert(lo + rng.below(span));
    }
    keys.into_iter().map(presence::uid).collect()
}

/// Starts the watcher threads.
pub fn spawn(
    opts: &Opts,
    keys: Arc<presence::Shared>,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> (Arc<Shared>, Vec<JoinHandle<Result<()>>>) {
    let shared = Arc::new(Shared::default());
    let handles = (0..opts.watchers)
        .map(|i| {
            let (opts, keys, rec, stop, shared) =
                (opts.clone(), keys.clone(), rec.clone(), stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("watcher-{i}"))
                .spawn(move || {
                    netns::enter(netns::CLIENT_NS)?;
                    let last = runtime()?.block_on(watcher(i, &opts, &keys, &rec, &stop));
                    shared.last.lock().unwrap().extend(last);
                    Ok(())
                })
                .expect("spawn watcher")
        })
        .collect();
    (shared, handles)
}

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

/// An open watch stream.
struct Stream {
    frames: tonic::Streaming<pb::WatchFrame>,
    /// Kept open: the server reads control frames from it.
    _requests: mpsc::Sender<pb::WatchRequest>,
}

async fn open(ip: &str, uids: &[String], since: Option<u64>) -> Result<Stream, String> {
    let attempt = async {
        let ep =
            herald_client::endpoint(&format!("{ip}:{PUBLISH_PORT}"), &ConnectOptions::default())
                .map_err(|e| e.to_string())?;
        let ch = ep.connect().await.map_err(|e| format!("connect: {e}"))?;
        let cred = Credential::api_key(API_KEY).map_err(|e| e.to_string())?;
        let mut c = PresenceClient::with_interceptor(ch, cred);
        let (tx, rx) = mpsc::channel(4);
        tx.send(pb::WatchRequest {
            uids: uids.to_vec(),
            since_revision: since,
            ..Default::default()
        })
        .await
        .map_err(|_| "request channel closed".to_string())?;
        let frames = c
            .watch(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok(Stream { frames, _requests: tx })
    };
    match tokio::time::timeout(OPEN_LIMIT, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("open timed out after {OPEN_LIMIT:?}")),
    }
}

/// The node's frame, or why the stream is over.
async fn next_frame(s: &mut Stream, idle: Duration) -> Result<pb::WatchFrame, String> {
    match tokio::time::timeout(idle, s.frames.message()).await {
        Err(_) => Err(format!("nothing received for {idle:?}")),
        Ok(Err(st)) => Err(format!("{:?}: {}", st.code(), st.message())),
        Ok(Ok(None)) => Err("the stream ended".into()),
        Ok(Ok(Some(f))) => Ok(f),
    }
}

/// One logical watch's place: its id, uids and resume point.
struct Logical {
    id: String,
    uids: Vec<String>,
    cursor: Option<u64>,
}

/// Opens (or reopens) `w` on `node` and records frames until `until`, the
/// stream breaks, or `stop`. Answers whether the open succeeded.
#[allow(clippy::too_many_arguments)]
async fn follow(
    w: &mut Logical,
    (node, ip): &(String, String),
    p: Process,
    rec: &Recorder,
    until: Instant,
    stop: &dyn Fn() -> bool,
    target: Option<u64>,
) -> bool {
    rec.record(
        OpType::Invoke,
        p,
        "watch-open",
        json!({"watch": w.id, "uids": w.uids, "since": w.cursor}),
        Some(node),
        None,
    );
    let mut s = match open(ip, &w.uids, w.cursor).await {
        Ok(s) => {
            rec.record(OpType::Ok, p, "watch-open", json!({"watch": w.id}), Some(node), None);
            s
        }
        Err(e) => {
            rec.record(OpType::Fail, p, "watch-open", json!({"watch": w.id}), Some(node), Some(e));
            return false;
        }
    };
    while !stop() && Instant::now() < until && target.is_none_or(|t| w.cursor < Some(t)) {
        rec.record(OpType::Invoke, p, "frame", json!({"watch": w.id}), Some(node), None);
        let left = until.saturating_duration_since(Instant::now());
        match next_frame(&mut s, IDLE.min(left)).await {
            Ok(f) => {
                rec.record(OpType::Ok, p, "frame", frame_json(&w.id, &f), Some(node), None);
                if let Some(r) = resume_point(&f) {
                    w.cursor = Some(r);
                }
            }
            Err(e) => {
                // Our own deadline ended a quiet wait: not a break.
                let e = if left < IDLE && e.starts_with("nothing received") {
                    "closed by the watcher".to_string()
                } else {
                    e
                };
                rec.record(OpType::Fail, p, "frame", json!({"watch": w.id}), Some(node), Some(e));
                break;
            }
        }
    }
    true
}

async fn watcher(
    i: usize,
    opts: &Opts,
    keys: &presence::Shared,
    rec: &Recorder,
    stop: &AtomicBool,
) -> Option<Last> {
    let mut rng = Rng::new(opts.seed).fork(9000 + i as u64);
    let p = Process::Worker(WATCH_PROCESS_BASE + i as u64);
    let stopped = || stop.load(Ordering::SeqCst);
    let mut n = 0u64;
    let mut last = None;
    while !stopped() {
        n += 1;
        let mut w = Logical {
            id: format!("w{i}.{n}"),
            uids: pick_uids(&mut rng, keys.next_key()),
            cursor: None,
        };
        let end = Instant::now() + Duration::from_millis(3000 + rng.below(7000));
        while !stopped() && Instant::now() < end {
            let node = opts.nodes[rng.below(opts.nodes.len() as u64) as usize].clone();
            // Break off on purpose now and then, to resume elsewhere.
            let until = end.min(Instant::now() + Duration::from_millis(500 + rng.below(2500)));
            if !follow(&mut w, &node, p, rec, until, &stopped, None).await {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        last = Some(Last { watcher: i, watch: w.id, uids: w.uids, cursor: w.cursor });
    }
    last
}

/// run.json `watch_final`: how the final phase went.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FinalSummary {
    pub watches: usize,
    pub queried: usize,
    pub reached: usize,
    pub elapsed_ms: u64,
}

/// After healing: each last watch queries its uids (linearizable), then
/// resumes until its cursor reaches the query's revision.
pub fn final_phase(rec: &Recorder, opts: &Opts, last: Vec<Last>) -> FinalSummary {
    let start = std::time::Instant::now();
    let watches = last.len();
    let results: Vec<(bool, bool)> = std::thread::scope(|sc| {
        let hs: Vec<_> = last
            .into_iter()
            .map(|l| {
                sc.spawn(move || -> (bool, bool) {
                    if netns::enter(netns::CLIENT_NS).is_err() {
                        return (false, false);
                    }
                    match runtime() {
                        Ok(rt) => rt.block_on(final_one(rec, opts, l)),
                        Err(_) => (false, false),
                    }
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or((false, false))).collect()
    });
    FinalSummary {
        watches,
        queried: results.iter().filter(|r| r.0).count(),
        reached: results.iter().filter(|r| r.1).count(),
        elapsed_ms: start.elapsed().as_millis() as u64,
    }
}

/// (queried, reached)
async fn final_one(rec: &Recorder, opts: &Opts, l: Last) -> (bool, bool) {
    let p = Process::Worker(WATCH_PROCESS_BASE + l.watcher as u64);
    let deadline = Instant::now() + FINAL_LIMIT;
    let mut rng = Rng::new(opts.seed).fork(9500 + l.watcher as u64);
    let Some(_) = l.cursor else {
        // Never got a snapshot: nothing to rebuild.
        return (false, false);
    };
    let mut target = None;
    let mut k = 0;
    while target.is_none() && Instant::now() < deadline {
        let (node, ip) = opts.nodes[k % opts.nodes.len()].clone();
        k += 1;
        rec.record(
            OpType::Invoke,
            p,
            "watch-final-query",
            json!({"watch": l.watch, "uids": l.uids}),
            Some(&node),
            None,
        );
        let (uids, timeout) = (l.uids.clone(), opts.timeout);
        let ip2 = ip.clone();
        let reply = tokio::task::spawn_blocking(move || Api::new(timeout).query(&ip2, &uids))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match reply {
            Ok(r) => {
                let q = r["revision"].as_u64().unwrap_or(0);
                let users: Vec<Value> = r["users"]
                    .as_array()
                    .map(|a| a.iter().map(http_user).collect())
                    .unwrap_or_default();
                rec.record(
                    OpType::Ok,
                    p,
                    "watch-final-query",
                    json!({"watch": l.watch, "revision": q, "users": users, "unknown": r["unknown"]}),
                    Some(&node),
                    None,
                );
                target = Some(q);
            }
            Err(e) => {
                rec.record(
                    OpType::Fail,
                    p,
                    "watch-final-query",
                    json!({"watch": l.watch}),
                    Some(&node),
                    Some(e),
                );
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
    let Some(t) = target else { return (false, false) };
    let mut w = Logical { id: l.watch.clone(), uids: l.uids.clone(), cursor: l.cursor };
    let never = || false;
    while w.cursor < Some(t) && Instant::now() < deadline {
        let node = opts.nodes[rng.below(opts.nodes.len() as u64) as usize].clone();
        if !follow(&mut w, &node, p, rec, deadline, &never, Some(t)).await {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let reached = w.cursor >= Some(t);
    rec.record(OpType::Invoke, p, "watch-final", json!({"watch": w.id}), None, None);
    rec.record(
        OpType::Ok,
        p,
        "watch-final",
        json!({"watch": w.id, "target": t, "cursor": w.cursor, "reached": reached}),
        None,
        None,
    );
    (true, reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves a watch's uids are 2–4 distinct keys between two before and
    /// four after the presence workload's next key.
    #[test]
    fn workload_watch_picks_uids_around_the_next_key() {
        let mut rng = Rng::new(5);
        for next in [0u64, 1, 7, 40] {
            for _ in 0..50 {
                let u = pick_uids(&mut rng, next);
                assert!((2..=4).contains(&u.len()), "{u:?}");
                let mut keys: Vec<u64> = u.iter().map(|s| s[1..].parse().unwrap()).collect();
                keys.dedup();
                assert_eq!(keys.len(), u.len());
                assert!(keys.iter().all(|k| *k + 2 >= next && *k < next + 4), "{next}: {keys:?}");
            }
        }
    }

    /// Proves a frame is recorded with its kind, revision and users as
    /// `user_json` (reg as a number, clients sorted).
    #[test]
    fn workload_watch_records_frames() {
        let f = pb::WatchFrame {
            kind: pb::watch_frame::Kind::Change as i32,
            revision: 12,
            users: vec![pb::UserPresence {
                uid: "k3".into(),
                sid: 10_003,
                online: true,
                clients: vec!["web".into(), "mobile".into()],
                accepts_strangers: true,
                ext: [("reg".to_string(), "41".to_string())].into_iter().collect(),
                changed_at_ms: 1,
                revision: 12,
            }],
            ..Default::default()
        };
        let v = frame_json("w0.1", &f);
        assert_eq!(v["kind"], "change");
        assert_eq!(v["revision"], 12);
        assert_eq!(
            v["users"][0],
            json!({"uid": "k3", "sid": 10_003, "online": true, "clients": ["mobile", "web"],
                   "accepts_strangers": true, "reg": 41, "revision": 12})
        );
        assert_eq!(resume_point(&f), Some(12));
        let reset = pb::WatchFrame {
            kind: pb::watch_frame::Kind::Reset as i32,
            revision: 3,
            ..Default::default()
        };
        assert_eq!(resume_point(&reset), None);
    }
}
