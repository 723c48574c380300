//! Presence change feeds (issue 15) against real heraldd processes: gRPC
//! `Presence.Watch` through the client library, SSE and WebSocket.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use herald_client::presence_watch::{PresenceWatch, WatchConfig, WatchEvent};
use herald_proto::v1 as pb;
use herald_tests::{phase, push, query, test_credential, Cluster, Tuning, TEST_API_KEY};
use serde_json::{json, Value};

/// A login of `uid` on "web" whose ext `v` is `value`.
fn login(uid: &str, value: &str) -> Value {
    json!({"type": "login", "uid": uid, "sid": 0, "client": "web", "ext": {"v": value}})
}

/// Tuning with quick progress frames and `<watch>` attributes `attrs`.
fn tuning(attrs: &str) -> Tuning {
    Tuning { extra_xml: format!("<watch progress-ms=\"500\" {attrs}/>"), ..Tuning::default() }
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?)
}

/// The next event of a watch within `within`, or an error.
async fn next(w: &mut PresenceWatch, within: Duration) -> Result<WatchEvent> {
    tokio::time::timeout(within, w.recv()).await?.ok_or_else(|| anyhow!("the watch ended"))
}

/// The next event that is not a progress frame or a reconnect notice.
async fn next_frame(w: &mut PresenceWatch, within: Duration) -> Result<WatchEvent> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next(w, left).await? {
            WatchEvent::Progress { .. } | WatchEvent::Reconnecting { .. } => continue,
            e => return Ok(e),
        }
    }
}

fn ext_v(u: &herald_client::UserPresence) -> String {
    u.ext.get("v").cloned().unwrap_or_default()
}

/// One watch over gRPC: the first frame is a snapshot at a revision with
/// the known user's record and the unknown uid listed; then each push to a
/// watched user arrives as one change at exactly the push's revision, in
/// order, carrying the pushed value, while pushes to an unwatched user
/// produce nothing; a progress frame follows when idle, at the last
/// revision; and the record of the last change equals a linearizable
/// batch query's.
#[test]
fn watch_snapshot_then_changes_in_order() -> Result<()> {
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let r0 = push(&addr, vec![login("a", "0")])?;
    rt()?.block_on(async {
        let cfg = WatchConfig::new(vec![addr.clone()], test_credential());
        let mut w = PresenceWatch::open(cfg, vec!["a".into(), "b".into()], vec![], None).await?;
        phase("snapshot");
        match next_frame(&mut w, Duration::from_secs(10)).await? {
            WatchEvent::Snapshot { revision, users, unknown, added: false, .. } => {
                ensure!(revision >= r0, "snapshot at {revision} before the push at {r0}");
                ensure!(users.len() == 1 && users[0].uid == "a" && ext_v(&users[0]) == "0");
                ensure!(unknown == vec!["b".to_string()], "unknown {unknown:?}");
            }
            e => bail!("first frame {e:?}"),
        }
        phase("changes in order");
        let mut want = Vec::new();
        for i in 1..=20 {
            let uid = ["a", "b", "c"][i % 3];
            let rev = push(&addr, vec![login(uid, &i.to_string())])?;
            if uid != "c" {
                want.push((rev, uid.to_string(), i.to_string()));
            }
        }
        let mut got = Vec::new();
        while got.len() < want.len() {
            match next_frame(&mut w, Duration::from_secs(10)).await? {
                WatchEvent::Change { revision, users } => {
                    for u in users {
                        got.push((revision, u.uid.clone(), ext_v(&u)));
                    }
                }
                e => bail!("unexpected {e:?}"),
            }
        }
        ensure!(got == want, "changes\n got {got:?}\nwant {want:?}");
        phase("progress when idle");
        let last = want.last().unwrap().0;
        match next(&mut w, Duration::from_secs(5)).await? {
            WatchEvent::Progress { revision } => {
                ensure!(revision >= last, "progress {revision} < {last}")
            }
            e => bail!("expected progress, got {e:?}"),
        }
        let q = query(&addr, &["b".to_string()], "linearizable")?;
        ensure!(
            q["users"][0]["ext"]["v"] == json!(want.iter().rev().find(|w| w.1 == "b").unwrap().2)
        );
        Ok(())
    })
}

/// An SSE stream (`GET /v1/presence/watch`) read line by line.
struct Sse {
    lines: std::io::Lines<BufReader<Box<dyn Read + Send>>>,
}

/// One SSE event: its `event:`, `id:` and `data:` as JSON.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    id: Option<u64>,
    data: Value,
}

fn sse_open(addr: &str, query: &str, last_event_id: Option<u64>) -> Result<Sse> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent
        .get(format!("http://{addr}/v1/presence/watch?{query}"))
        .header("authorization", format!("Bearer {TEST_API_KEY}"));
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id.to_string());
    }
    let r = req.call()?;
    ensure!(r.status() == 200, "watch → {}", r.status());
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
    ensure!(ct.starts_with("text/event-stream"), "content-type {ct}");
    let reader: Box<dyn Read + Send> = Box::new(r.into_body().into_reader());
    Ok(Sse { lines: BufReader::new(reader).lines() })
}

impl Sse {
    fn next(&mut self) -> Result<SseEvent> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        loop {
            let line = self.lines.next().context("the SSE stream ended")??;
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Ok(SseEvent { event, id, data: serde_json::from_str(&data)? });
            }
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = Some(v.trim().parse()?);
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
    }

    /// The next event that is not a progress frame.
    fn next_frame(&mut self) -> Result<SseEvent> {
        loop {
            let e = self.next()?;
            if e.event != "progress" {
                return Ok(e);
            }
        }
    }
}

/// (revision, uid, ext v) of an SSE change event's users.
fn sse_changes(e: &SseEvent) -> Vec<(u64, String, String)> {
    let rev = e.data["revision"].as_u64().unwrap_or(0);
    e.data["users"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|u| {
            (
                rev,
                u["uid"].as_str().unwrap_or("").into(),
                u["ext"]["v"].as_str().unwrap_or("").into(),
            )
        })
        .collect()
}

/// SSE resumes exactly after the stream is cut: the first stream's
/// snapshot and changes carry `id:` = their revision; after the
/// connection is dropped and more changes are committed, a new request
/// with `Last-Event-ID` = the last id seen gets no snapshot and exactly the
/// changes after it (none repeated, none missing, in order), and
/// `since_revision` in the URL does the same (Last-Event-ID winning over
/// it, as a browser reconnects with the URL it opened).
#[test]
fn watch_sse_resumes_with_last_event_id_after_the_stream_is_cut() -> Result<()> {
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    push(&addr, vec![login("a", "0")])?;
    let mut s = sse_open(&addr, "uid=a&uid=b", None)?;
    let snap = s.next_frame()?;
    ensure!(snap.event == "snapshot" && snap.id == snap.data["revision"].as_u64(), "{snap:?}");
    let mut seen = Vec::new();
    let mut last_id = snap.id.context("snapshot id")?;
    for i in 1..=3 {
        let rev = push(&addr, vec![login("a", &i.to_string())])?;
        let e = s.next_frame()?;
        ensure!(e.event == "change" && e.id == Some(rev), "{e:?} for push at {rev}");
        seen.extend(sse_changes(&e));
        last_id = rev;
    }
    phase("cut the stream, commit more");
    drop(s);
    let mut want = Vec::new();
    for i in 4..=9 {
        let uid = if i % 2 == 0 { "a" } else { "b" };
        let rev = push(&addr, vec![login(uid, &i.to_string())])?;
        want.push((rev, uid.to_string(), i.to_string()));
    }
    phase("resume with Last-Event-ID (over a stale since_revision)");
    let mut s = sse_open(&addr, "uid=a&uid=b&since_revision=1", Some(last_id))?;
    let mut got = Vec::new();
    while got.len() < want.len() {
        let e = s.next_frame()?;
        ensure!(e.event == "change", "resume sent {e:?}");
        got.extend(sse_changes(&e));
    }
    ensure!(got == want, "after Last-Event-ID {last_id}\n got {got:?}\nwant {want:?}");
    drop(s);
    phase("resume with since_revision");
    let mut s = sse_open(&addr, &format!("uid=a&uid=b&since_revision={last_id}"), None)?;
    let mut again = Vec::new();
    while again.len() < want.len() {
        again.extend(sse_changes(&s.next_frame()?));
    }
    ensure!(again == want, "since_revision: {again:?}");
    Ok(())
}

/// Falling out of the window: with `<watch window-changes="5">`, a watch
/// resumed from before 20 newer changes gets an explicit reset, then a
/// fresh full snapshot holding the latest record, then the changes after
/// it — never an error, never a silent gap.
#[test]
fn watch_resets_when_the_resume_point_left_the_window() -> Result<()> {
    let c = Cluster::start(1, tuning("window-changes=\"5\""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let r0 = push(&addr, vec![login("a", "0")])?;
    for i in 1..=20 {
        push(&addr, vec![login("a", &i.to_string())])?;
    }
    rt()?.block_on(async {
        let cfg = WatchConfig::new(vec![addr.clone()], test_credential());
        let mut w = PresenceWatch::open(cfg, vec!["a".into()], vec![], Some(r0)).await?;
        match next_frame(&mut w, Duration::from_secs(10)).await? {
            WatchEvent::Reset { .. } => {}
            e => bail!("expected reset, got {e:?}"),
        }
        let snap_rev = match next_frame(&mut w, Duration::from_secs(10)).await? {
            WatchEvent::Snapshot { revision, users, added: false, .. } => {
                ensure!(users.len() == 1 && ext_v(&users[0]) == "20", "{users:?}");
                revision
            }
            e => bail!("expected a snapshot, got {e:?}"),
        };
        let rev = push(&addr, vec![login("a", "21")])?;
        match next_frame(&mut w, Duration::from_secs(10)).await? {
            WatchEvent::Change { revision, users } => {
                ensure!(revision == rev && revision > snap_rev && ext_v(&users[0]) == "21")
            }
            e => bail!("expected the change, got {e:?}"),
        }
        Ok(())
    })
}

/// The node serving a watch is SIGKILLed while a writer keeps changing
/// the watched users through another node: the client library reopens
/// the watch on the next seed with `since_revision`, and the changes it
/// hands over are exactly the committed ones, each once, in revision
/// order — none lost across the kill, none repeated after the resume
/// point — ending at the values a final linearizable query answers.
#[test]
fn watch_resumes_through_another_node_after_sigkill() -> Result<()> {
    const WRITES: usize = 90;
    // Leadership stays where it is (no move to the lowest number), so the
    // node killed is a follower and the writes go on through the kill.
    let mut c = Cluster::start(3, Tuning { prefer_lowest: false, ..tuning("") })?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let victim = (1..=3).find(|n| *n != leader).unwrap();
    let other = (1..=3).find(|n| *n != leader && *n != victim).unwrap();
    let (leader_addr, victim_addr, other_addr) = (c.addr(leader), c.addr(victim), c.addr(other));
    push(&leader_addr, vec![login("a", "0"), login("b", "0")])?;
    let rt = rt()?;
    let mut w = rt.block_on(async {
        let cfg =
            WatchConfig::new(vec![victim_addr.clone(), other_addr.clone()], test_credential());
        PresenceWatch::open(cfg, vec!["a".into(), "b".into()], vec![], None).await
    })?;
    let first = rt.block_on(next_frame(&mut w, Duration::from_secs(10)))?;
    let WatchEvent::Snapshot { revision: snap, .. } = first else { bail!("first {first:?}") };

    phase("write while the watch's node is killed");
    let writer = {
        let leader_addr = leader_addr.clone();
        std::thread::spawn(move || -> Result<Vec<(u64, String, String)>> {
            let mut done = Vec::new();
            for i in 1..=WRITES {
                let uid = if i % 2 == 0 { "a" } else { "b" };
                let rev = push_unambiguous(&leader_addr, login(uid, &i.to_string()))?;
                done.push((rev, uid.to_string(), i.to_string()));
                std::thread::sleep(Duration::from_millis(30));
            }
            Ok(done)
        })
    };
    let mut got: Vec<(u64, String, String)> = Vec::new();
    let mut reconnects = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut writer = Some(writer);
    let mut done = None;
    while got.last().map(|g| g.2.as_str()) != Some(&*WRITES.to_string()) {
        if writer.as_ref().is_some_and(|w| w.is_finished()) {
            let w = writer.take().unwrap();
            // A writer that failed is the reason, not the watch.
            done = Some(w.join().map_err(|_| anyhow!("writer panicked"))??);
        }
        ensure!(Instant::now() < deadline, "stuck after {got:?}");
        if !killed && got.len() >= WRITES / 3 {
            c.node(victim).kill9()?;
            killed = true;
        }
        match rt.block_on(next(&mut w, Duration::from_secs(20)))? {
            WatchEvent::Change { revision, users } => {
                for u in users {
                    got.push((revision, u.uid.clone(), ext_v(&u)));
                }
            }
            WatchEvent::Reconnecting { .. } => reconnects += 1,
            WatchEvent::Progress { .. } => {}
            e => bail!("unexpected {e:?}"),
        }
    }
    let done = match (done, writer) {
        (Some(d), _) => d,
        (None, Some(w)) => w.join().map_err(|_| anyhow!("writer panicked"))??,
        (None, None) => unreachable!("the writer is joined once"),
    };
    ensure!(killed && reconnects >= 1, "killed {killed}, reconnects {reconnects}");
    let want: Vec<_> = done.into_iter().filter(|d| d.0 > snap).collect();
    ensure!(got == want, "across the kill\n got {got:?}\nwant {want:?}");
    let q = query(&leader_addr, &["a".to_string(), "b".to_string()], "linearizable")?;
    let last_of = |uid: &str| want.iter().rev().find(|w| w.1 == uid).map(|w| w.2.clone());
    for u in q["users"].as_array().context("users")? {
        let uid = u["uid"].as_str().unwrap_or("");
        ensure!(u["ext"]["v"].as_str().map(str::to_owned) == last_of(uid), "{uid}: {u}");
    }
    Ok(())
}

/// Pushes one event, retrying only refusals that say it was not applied
/// (no leader yet, the leader unreachable): a loaded machine may see an
/// election, and a retry after an ambiguous `timeout` could commit twice.
fn push_unambiguous(addr: &str, event: Value) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match push(addr, vec![event.clone()]) {
            Ok(rev) => return Ok(rev),
            Err(e) => {
                let msg = e.to_string();
                let retry = ["no_leader", "leader_unavailable", "not_leader"]
                    .iter()
                    .any(|c| msg.contains(&format!("\"{c}\"")));
                if !retry || Instant::now() > deadline {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Resident memory of a process, KiB (Linux).
fn rss_kib(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}

/// A slow reader: a gRPC watch that reads nothing while 300 changes of
/// ~32 KiB records are committed (about 10 MB of frames, more than the
/// HTTP/2 and socket buffers hold), then reads. It gets far fewer frames
/// than changes (they were coalesced to the latest record per user), in
/// increasing revision order, no reset (the window still held them), the
/// last frame holding the last value; and the node's resident memory grew
/// by less than a queue of every frame for the watcher would take on top
/// of the window's own records.
#[test]
fn watch_coalesces_for_a_slow_reader_with_bounded_memory() -> Result<()> {
    const CHANGES: usize = 300;
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let pid = c.nodes[0].pid().context("pid")?;
    let big = |i: usize| {
        let ext: BTreeMap<String, String> = (0..31)
            .map(|k| (format!("k{k}"), "x".repeat(1000)))
            .chain([("v".into(), i.to_string())])
            .collect();
        json!({"type": "login", "uid": "a", "sid": 0, "client": "web", "ext": ext})
    };
    push(&addr, vec![big(0)])?;
    let rt = rt()?;
    rt.block_on(async {
        let mut client = herald_client::HeraldClient::connect(&format!("http://{addr}"))
            .await?
            .with_credential(test_credential())
            .presence_client()
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::WatchRequest { uids: vec!["a".into()], ..Default::default() }).await?;
        let mut frames =
            client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        let snap = frames.message().await?.context("snapshot")?;
        ensure!(snap.kind == pb::watch_frame::Kind::Snapshot as i32);
        let before = rss_kib(pid)?;
        phase("commit while the reader reads nothing");
        let mut last_rev = 0;
        for i in 1..=CHANGES {
            last_rev = push(&addr, vec![big(i)])?;
        }
        let after_writes = rss_kib(pid)?;
        phase("read");
        let mut count = 0;
        let mut prev = snap.revision;
        loop {
            let f = tokio::time::timeout(Duration::from_secs(10), frames.message())
                .await??
                .context("stream ended")?;
            if f.kind == pb::watch_frame::Kind::Progress as i32 {
                if f.revision >= last_rev {
                    break;
                }
                continue;
            }
            ensure!(f.kind == pb::watch_frame::Kind::Change as i32, "frame kind {}", f.kind);
            ensure!(f.revision > prev, "revision {} after {prev}", f.revision);
            prev = f.revision;
            count += 1;
            if f.revision == last_rev {
                ensure!(f.users[0].ext.get("v").map(String::as_str) == Some(&*CHANGES.to_string()));
            }
        }
        ensure!(prev == last_rev, "the last frame is at {prev}, the last change at {last_rev}");
        ensure!(count < CHANGES / 2, "{count} frames for {CHANGES} changes: not coalesced");
        let grown_mib = after_writes.saturating_sub(before) / 1024;
        eprintln!("{count} frames for {CHANGES} changes; RSS +{grown_mib} MiB while not reading");
        // The window holds the 300 records (~10 MB); a per-watcher queue of
        // every frame would add as much again, and more with every change.
        ensure!(grown_mib < 64, "RSS grew {grown_mib} MiB while the reader did not read");
        Ok(())
    })
}

/// A WebSocket session on `/v1/ws` (tungstenite), JSON text frames.
struct Ws {
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
}

impl Ws {
    fn open(addr: &str) -> Result<Ws> {
        Self::open_as(addr, "", Some(TEST_API_KEY))
    }

    /// Opens `/v1/ws{query}` with `Authorization: Bearer <bearer>` if given.
    fn open_as(addr: &str, query: &str, bearer: Option<&str>) -> Result<Ws> {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/v1/ws{query}").into_client_request()?;
        if let Some(b) = bearer {
            req.headers_mut().insert("authorization", format!("Bearer {b}").parse()?);
        }
        let (ws, resp) = tungstenite::connect(req)?;
        ensure!(resp.status() == 101, "upgrade → {}", resp.status());
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
        }
        Ok(Ws { ws })
    }

    fn send(&mut self, v: Value) -> Result<()> {
        self.ws.send(tungstenite::Message::Text(v.to_string().into()))?;
        Ok(())
    }

    /// The next frame that is not progress.
    fn next_frame(&mut self) -> Result<Value> {
        loop {
            match self.ws.read()? {
                tungstenite::Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str())?;
                    if v["type"] != "progress" {
                        return Ok(v);
                    }
                }
                tungstenite::Message::Close(c) => bail!("closed: {c:?}"),
                _ => {}
            }
        }
    }

    /// Waits for a progress frame at `rev` or later, failing on any other
    /// frame: nothing was sent for the watched set up to `rev`.
    fn quiet_until(&mut self, rev: u64) -> Result<()> {
        loop {
            if let tungstenite::Message::Text(t) = self.ws.read()? {
                let v: Value = serde_json::from_str(t.as_str())?;
                ensure!(v["type"] == "progress", "expected quiet, got {v}");
                if v["revision"].as_u64().unwrap_or(0) >= rev {
                    return Ok(());
                }
            }
        }
    }
}

/// The watched set changes on an open WebSocket: a user outside the set
/// sends nothing; after `add` a snapshot of just the added user arrives
/// (`added`), then its changes; after `remove` the removed user's changes
/// stop while the others' go on; a second `watch` frame and a malformed
/// frame are refused with error frames and the stream goes on.
#[test]
fn watch_set_grows_and_shrinks_over_websocket() -> Result<()> {
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    push(&addr, vec![login("a", "0"), login("b", "0")])?;
    let mut ws = Ws::open(&addr)?;
    ws.send(json!({"type": "watch", "uids": ["a"]}))?;
    let snap = ws.next_frame()?;
    ensure!(snap["type"] == "snapshot" && snap["users"][0]["uid"] == "a", "{snap}");
    ensure!(snap["added"] == false, "{snap}");

    phase("b is not watched yet");
    let rev = push(&addr, vec![login("b", "1")])?;
    ws.quiet_until(rev)?;

    phase("add b");
    ws.send(json!({"type": "add", "uids": ["b"]}))?;
    let added = ws.next_frame()?;
    ensure!(added["type"] == "snapshot" && added["added"] == true, "{added}");
    ensure!(added["users"].as_array().map(Vec::len) == Some(1), "{added}");
    ensure!(added["users"][0]["uid"] == "b" && added["users"][0]["ext"]["v"] == "1", "{added}");
    let rev = push(&addr, vec![login("b", "2")])?;
    let ch = ws.next_frame()?;
    ensure!(
        ch["type"] == "change" && ch["revision"] == rev && ch["users"][0]["uid"] == "b",
        "{ch}"
    );

    phase("remove a");
    ws.send(json!({"type": "remove", "uids": ["a"]}))?;
    // The remove is taken before the next frame the watcher sends.
    let rev_a = push(&addr, vec![login("a", "3")])?;
    let rev_b = push(&addr, vec![login("b", "4")])?;
    let ch = ws.next_frame()?;
    ensure!(ch["type"] == "change" && ch["revision"] == rev_b, "{ch} (a changed at {rev_a})");
    ensure!(ch["users"].as_array().map(Vec::len) == Some(1) && ch["users"][0]["uid"] == "b");

    phase("refused frames");
    ws.send(json!({"type": "watch", "uids": ["c"]}))?;
    let e = ws.next_frame()?;
    ensure!(e["type"] == "error" && e["error"]["code"] == "invalid_field", "{e}");
    ws.send(json!({"type": "nonsense"}))?;
    let e = ws.next_frame()?;
    ensure!(e["type"] == "error", "{e}");
    let rev = push(&addr, vec![login("b", "5")])?;
    let ch = ws.next_frame()?;
    ensure!(ch["type"] == "change" && ch["revision"] == rev, "{ch}");
    Ok(())
}

/// Limits and refusals: more ids than `<watch max-ids-per-watcher>` is
/// refused with `too_many_watch_ids` (HTTP 400) before any frame, none
/// with `no_watch_ids`; a watch
/// beyond `max-watchers` with `too_many_watchers` (429) while the others
/// stay open; a `since_revision` ahead of the cluster with
/// `invalid_since`; and a watch without a credential with
/// `missing_credential`.
#[test]
fn watch_limits_have_stable_codes() -> Result<()> {
    let c = Cluster::start(1, tuning("max-watchers=\"2\" max-ids-per-watcher=\"3\""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let get = |q: &str| herald_tests::get_json(&addr, &format!("/v1/presence/watch?{q}"));
    let (st, v) = get("uid=a&uid=b&uid=c&sid=1")?;
    ensure!(st == 400 && v["error"]["code"] == "too_many_watch_ids", "{st} {v}");
    let (st, v) = get("")?;
    ensure!(st == 400 && v["error"]["code"] == "no_watch_ids", "{st} {v}");
    let (st, v) = get("uid=a&since_revision=999999")?;
    ensure!(st == 400 && v["error"]["code"] == "invalid_since", "{st} {v}");
    let mut one = sse_open(&addr, "uid=a", None)?;
    let mut two = sse_open(&addr, "uid=a", None)?;
    ensure!(one.next()?.event == "snapshot" && two.next()?.event == "snapshot");
    let (st, v) = get("uid=a")?;
    ensure!(st == 429 && v["error"]["code"] == "too_many_watchers", "{st} {v}");
    drop(one);
    // The place is given back once the node notices the closed stream.
    herald_tests::eventually(Duration::from_secs(10), || {
        let mut s = sse_open(&addr, "uid=a", None)?;
        ensure!(s.next()?.event == "snapshot");
        Ok(())
    })?;
    drop(two);
    let (st, v) =
        herald_tests::get_json_as(herald_tests::As::Anonymous, &addr, "/v1/presence/watch?uid=a")?;
    ensure!(st == 401 && v["error"]["code"] == "missing_credential", "{st} {v}");
    Ok(())
}

/// A watch of every user (`all`, admin scope): a key with presence:read
/// but not admin is refused with the stable `forbidden` code over gRPC
/// (the client library's `open_all`) and SSE (`?all=true`, 403); with the
/// admin key the first frames are the snapshot of every user in several
/// pages (`<limits max-response-bytes>` at its 64 KiB floor, 400 users of
/// ~1 KiB), all at one revision, `more` on all but the last, each user
/// once; then a change to a user the watch never named arrives, at its
/// push's revision, with its record; SSE `?all=true` starts with the same
/// paged snapshot.
#[test]
fn watch_all_needs_admin_and_follows_users_it_never_named() -> Result<()> {
    let t = Tuning { limits_attrs: "max-response-bytes=\"65536\"".into(), ..tuning("") };
    let c = Cluster::start(1, t)?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let pad = "x".repeat(900);
    let users: Vec<Value> = (0..400)
        .map(|i| json!({"type": "login", "uid": format!("all{i:03}"), "sid": 0, "client": "web", "ext": {"v": "0", "pad": pad}}))
        .collect();
    let r0 = push(&addr, users)?;
    phase("refused without admin");
    let reader = herald_client::Credential::api_key(herald_tests::TEST_READ_KEY)?;
    let (st, v) = herald_tests::get_json_as(
        herald_tests::As::Bearer(herald_tests::TEST_READ_KEY),
        &addr,
        "/v1/presence/watch?all=true",
    )?;
    ensure!(st == 403 && v["error"]["code"] == "forbidden", "{st} {v}");
    rt()?.block_on(async {
        let cfg = WatchConfig::new(vec![addr.clone()], reader);
        match PresenceWatch::open_all(cfg, None).await {
            Err(e) => ensure!(e.code() == "forbidden", "refusal {e}"),
            Ok(_) => bail!("a presence:read key opened a watch of every user"),
        }
        phase("admin: paged snapshot of every user");
        let cfg = WatchConfig::new(vec![addr.clone()], test_credential());
        let mut w = PresenceWatch::open_all(cfg, None).await?;
        let (mut seen, mut pages, mut rev) = (Vec::new(), 0, None);
        loop {
            match next_frame(&mut w, Duration::from_secs(10)).await? {
                WatchEvent::Snapshot { revision, users, more, added: false, .. } => {
                    ensure!(rev.is_none_or(|r| r == revision), "pages at {rev:?} and {revision}");
                    ensure!(revision >= r0, "snapshot at {revision} before the push at {r0}");
                    rev = Some(revision);
                    pages += 1;
                    seen.extend(users.into_iter().map(|u| u.uid));
                    if !more {
                        break;
                    }
                }
                e => bail!("expected a snapshot page, got {e:?}"),
            }
        }
        let want: Vec<String> = (0..400).map(|i| format!("all{i:03}")).collect();
        ensure!(seen == want, "snapshot users: {} (first {:?})", seen.len(), seen.first());
        ensure!(pages >= 5, "400 records of ~1 KiB in {pages} page(s) under a 64 KiB limit");
        phase("a change to a user never named");
        let r1 = push(&addr, vec![login("never-named", "7")])?;
        match next_frame(&mut w, Duration::from_secs(10)).await? {
            WatchEvent::Change { revision, users } => {
                ensure!(revision == r1, "change at {revision}, push at {r1}");
                ensure!(
                    users.len() == 1 && users[0].uid == "never-named" && ext_v(&users[0]) == "7"
                );
                ensure!(users[0].online && users[0].clients == vec!["web".to_string()]);
            }
            e => bail!("expected the change, got {e:?}"),
        }
        Ok(())
    })?;
    phase("SSE ?all=true");
    let mut s = sse_open(&addr, "all=true", None)?;
    let first = s.next_frame()?;
    ensure!(first.event == "snapshot" && first.data["more"] == json!(true), "{:?}", first.event);
    ensure!(first.id.is_none(), "a page that is not the last is no resume point");
    Ok(())
}

/// A browser's client session over the same WebSocket endpoint, with the
/// user's token in the URL (a browser cannot set headers on a WebSocket):
/// hello → welcome (the gateway's heartbeat settings), the user is online
/// on that client type; heartbeats are answered and give a watch of the
/// user no frame but progress; a message sent to the user
/// is delivered as a `message` frame, and once acknowledged it is no longer
/// stored (queued 0); a session token cannot open a presence watch
/// (`forbidden`); and a bad token is refused before the upgrade.
#[test]
fn websocket_session_receives_and_acks_messages() -> Result<()> {
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let token = herald_tests::token("carol");
    let mut ws = Ws::open_as(&addr, &format!("?token={token}"), None)?;
    ws.send(json!({"type": "hello", "uid": "carol", "client": "browser"}))?;
    let w = ws.next_frame()?;
    ensure!(w["type"] == "welcome" && w["heartbeat_ms"].as_u64().is_some(), "{w}");
    let q = query(&addr, &["carol".to_string()], "linearizable")?;
    ensure!(q["users"][0]["clients"] == json!(["browser"]), "{q}");

    phase("heartbeats: answered, and never a feed frame");
    let mut watcher = Ws::open(&addr)?;
    watcher.send(json!({"type": "watch", "uids": ["carol"]}))?;
    let snap = watcher.next_frame()?;
    ensure!(snap["type"] == "snapshot" && snap["users"][0]["online"] == true, "{snap}");
    let at = snap["revision"].as_u64().context("revision")?;
    for seq in 1..=7 {
        ws.send(json!({"type": "heartbeat", "seq": seq}))?;
        let h = ws.next_frame()?;
        ensure!(h["type"] == "heartbeat" && h["seq"] == seq, "{h}");
    }
    // Every heartbeat was answered: the watch's next frame is progress.
    watcher.quiet_until(at)?;

    phase("a message, then its ack");
    let body = json!({"idempotency_key": "ws-1", "from": "app", "to": ["carol"], "body": "hello"});
    let sender = {
        let addr = addr.clone();
        std::thread::spawn(move || herald_tests::post_json(&addr, "/v1/messages", &body))
    };
    let m = ws.next_frame()?;
    ensure!(m["type"] == "message" && m["body"] == "hello" && m["stored"] == true, "{m}");
    let id = m["id"].as_u64().context("id")?;
    ws.send(json!({"type": "ack", "ids": [id]}))?;
    let (st, v) = sender.join().map_err(|_| anyhow!("sender panicked"))??;
    ensure!(st == 200, "send {st} {v}");
    herald_tests::eventually(Duration::from_secs(10), || {
        let (st, v) = herald_tests::get_json(&addr, "/v1/users/carol/settings")?;
        ensure!(st == 200 && v["queued"] == 0, "{st} {v}");
        Ok(())
    })?;

    phase("a session token cannot watch; a bad token cannot connect");
    let mut w2 = Ws::open_as(&addr, &format!("?token={token}"), None)?;
    w2.send(json!({"type": "watch", "uids": ["carol"]}))?;
    let e = w2.next_frame()?;
    ensure!(e["type"] == "error" && e["error"]["code"] == "forbidden", "{e}");
    match Ws::open_as(&addr, "?token=nope", None) {
        Err(e) => ensure!(e.to_string().contains("401"), "{e}"),
        Ok(_) => bail!("a bad token opened a WebSocket"),
    }
    Ok(())
}

/// `herald presence watch` prints one line per watched user in the
/// snapshot (an unknown uid as `unknown`), then one line per change with
/// its revision, in order, and stops after `--count` change lines; with
/// `--since R` it prints only the changes after R (no snapshot), and with
/// `--json` one frame per line.
#[test]
fn watch_cli_prints_one_line_per_change() -> Result<()> {
    let c = Cluster::start(1, tuning(""))?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = c.nodes[0].publish();
    let herald = herald_tests::heraldd_path().with_file_name("herald");
    ensure!(herald.exists(), "{}: run `cargo build --workspace --bins`", herald.display());
    let r0 = push(&addr, vec![login("a", "0")])?;
    let run = |args: &[&str]| {
        std::process::Command::new(&herald)
            .arg("--node")
            .arg(&addr)
            .args(["presence", "watch"])
            .args(args)
            .env("HERALD_API_KEY", TEST_API_KEY)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
    };
    let mut child = run(&["a", "b", "--count", "2"])?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut stdout = String::new();
    // The snapshot is printed before anything is written.
    for _ in 0..2 {
        stdout.push_str(&lines.next().context("no snapshot line")??);
        stdout.push('\n');
    }
    let logout = json!({"type": "logout", "uid": "a", "sid": 0, "client": "web"});
    let r1 = push(&addr, vec![logout])?;
    let r2 = push(&addr, vec![login("b", "2")])?;
    for l in lines {
        stdout.push_str(&l?);
        stdout.push('\n');
    }
    let st = child.wait()?;
    ensure!(st.success(), "{stdout}");
    let want = format!(
        "snapshot {r0} a online web\nsnapshot {r0} b unknown -\nchange {r1} a offline -\nchange {r2} b online web\n"
    );
    ensure!(stdout == want, "printed\n{stdout}\nwanted\n{want}");

    let out = run(&["a", "b", "--since", &r0.to_string(), "--count", "2", "--json"])?
        .wait_with_output()?;
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let changes: Vec<(u64, &str)> = lines
        .iter()
        .filter(|l| l["type"] == "change")
        .map(|l| (l["revision"].as_u64().unwrap_or(0), l["users"][0]["uid"].as_str().unwrap_or("")))
        .collect();
    ensure!(changes == vec![(r1, "a"), (r2, "b")], "{lines:?}");
    ensure!(
        lines.iter().all(|l| l["type"] != "snapshot"),
        "a resume printed a snapshot: {lines:?}"
    );
    Ok(())
}
