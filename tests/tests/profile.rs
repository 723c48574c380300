//! Real-process tests of profile sync (issue 17; MISSION Y1, Y2): real
//! heraldd clusters deliver outbox items to real HTTP receivers started by
//! the test (axum servers on their own sockets) that fail, hang, are down
//! for a while or answer 410; every signature they received is checked by
//! the independent Python `standardwebhooks` package
//! (scripts/verify-webhooks); the leader is killed with SIGKILL while
//! hundreds of items are pending; and every refusal answers its stable
//! code and stores nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use herald_proto::webhook;
use herald_tests::*;
use serde_json::{json, Value};

const LEADER_WAIT: Duration = Duration::from_secs(20);

/// The runtime the receivers serve on (the tests themselves are blocking).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("receiver runtime")
    })
}

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// 200 (after `delay`).
    Ok { delay: Duration },
    /// 500 to the first `n` requests, then 200.
    FailFirst(usize),
    /// Holds the first `n` requests for `hold` (past the sender's
    /// timeout), then answers 200.
    HangFirst(usize, Duration),
    /// 410 Gone.
    Gone,
}

/// One request as a receiver got it.
#[derive(Debug, Clone)]
struct Recorded {
    id: String,
    timestamp: String,
    signature: String,
    body: String,
    status: u16,
}

#[derive(Debug)]
struct Inbox {
    mode: Mode,
    requests: Vec<Recorded>,
    /// account → (revision, profile) of the highest revision answered 200:
    /// what a receiver following the README applies.
    applied: HashMap<String, (u64, Value)>,
}

/// A real HTTP receiver: an axum server on 127.0.0.1.
struct Receiver {
    port: u16,
    secret: Vec<u8>,
    inbox: Arc<Mutex<Inbox>>,
}

async fn receive(
    State(inbox): State<Arc<Mutex<Inbox>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    // Recorded on arrival: a request the sender gives up on (its future is
    // dropped mid-sleep) still counts.
    let (status, delay) = {
        let mut i = inbox.lock().unwrap();
        let n = i.requests.len() + 1;
        let (status, delay) = match i.mode {
            Mode::Ok { delay } => (200, delay),
            Mode::FailFirst(k) if n <= k => (500, Duration::ZERO),
            Mode::FailFirst(_) => (200, Duration::ZERO),
            Mode::HangFirst(k, hold) if n <= k => (200, hold),
            Mode::HangFirst(..) => (200, Duration::ZERO),
            Mode::Gone => (410, Duration::ZERO),
        };
        i.requests.push(Recorded {
            id: h(webhook::ID_HEADER),
            timestamp: h(webhook::TIMESTAMP_HEADER),
            signature: h(webhook::SIGNATURE_HEADER),
            body: body.clone(),
            status,
        });
        (status, delay)
    };
    tokio::time::sleep(delay).await;
    if status == 200 {
        if let Ok(v) = serde_json::from_str::<Value>(&body) {
            let d = &v["data"];
            let account = d["account"].as_str().unwrap_or("").to_string();
            let rev = d["revision"].as_u64().unwrap_or(0);
            let mut i = inbox.lock().unwrap();
            if i.applied.get(&account).is_none_or(|(r, _)| *r < rev) {
                i.applied.insert(account, (rev, d["profile"].clone()));
            }
        }
    }
    StatusCode::from_u16(status).unwrap()
}

impl Receiver {
    /// A receiver on a free port, not listening yet (see [`Self::listen`]).
    fn new(mode: Mode, seed: u8) -> Receiver {
        Receiver {
            port: free_port(),
            secret: vec![seed; 32],
            inbox: Arc::new(Mutex::new(Inbox {
                mode,
                requests: Vec::new(),
                applied: HashMap::new(),
            })),
        }
    }

    /// Starts serving on its port.
    fn listen(&self) -> Result<()> {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse()?;
        let l = rt().block_on(tokio::net::TcpListener::bind(addr)).context("receiver bind")?;
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.inbox.clone());
        rt().spawn(async move { axum::serve(l, app).await });
        Ok(())
    }

    fn started(mode: Mode, seed: u8) -> Result<Receiver> {
        let r = Receiver::new(mode, seed);
        r.listen()?;
        Ok(r)
    }

    fn set_mode(&self, mode: Mode) {
        self.inbox.lock().unwrap().mode = mode;
    }

    fn requests(&self) -> Vec<Recorded> {
        self.inbox.lock().unwrap().requests.clone()
    }

    fn applied(&self, account: &str) -> Option<(u64, Value)> {
        self.inbox.lock().unwrap().applied.get(account).cloned()
    }

    /// The `<module>` element of this receiver.
    fn module_xml(&self, id: &str, timeout_ms: u64) -> String {
        format!(
            "<module id=\"{id}\" name=\"{id}\" endpoint=\"http://127.0.0.1:{}/hook\" timeout-ms=\"{timeout_ms}\" secret=\"{}\"/>",
            self.port,
            webhook::secret_string(&self.secret)
        )
    }
}

/// `<profile-sync>` with fast retries (100 ms doubling to 1 s) and these
/// modules.
fn profile_sync_xml(modules: &[String], horizon_ms: u64, max_in_flight: usize) -> String {
    format!(
        "<profile-sync initial-backoff-ms=\"100\" max-backoff-ms=\"1000\" horizon-ms=\"{horizon_ms}\" max-in-flight=\"{max_in_flight}\">\n    {}\n  </profile-sync>",
        modules.join("\n    ")
    )
}

/// Runs scripts/verify-webhooks (Python `standardwebhooks`) over every
/// request the receivers recorded; Ok(number verified).
fn verify_with_python(receivers: &[&Receiver], dir: &std::path::Path) -> Result<usize> {
    let mut lines = String::new();
    let mut n = 0;
    for r in receivers {
        let secret = webhook::secret_string(&r.secret);
        for q in r.requests() {
            let rec = json!({
                "secret": secret,
                "headers": {
                    "webhook-id": q.id,
                    "webhook-timestamp": q.timestamp,
                    "webhook-signature": q.signature,
                },
                "body": q.body,
            });
            lines.push_str(&rec.to_string());
            lines.push('\n');
            n += 1;
        }
    }
    let file = dir.join("deliveries.jsonl");
    std::fs::write(&file, lines)?;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/verify-webhooks");
    let out = std::process::Command::new("python3").arg(script).arg(&file).output().context(
        "run python3 scripts/verify-webhooks (scripts/setup-test-deps installs standardwebhooks)",
    )?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("verify-webhooks failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(stdout.trim(), format!("verified {n}"), "every delivery verified");
    Ok(n)
}

fn bind(addr: &str, uid: &str, module: &str, account: &str) -> Result<(u16, Value)> {
    post_json(
        addr,
        &format!("/v1/users/{uid}/bindings"),
        &json!({"module": module, "account": account}),
    )
}

/// [`bind`], retrying a transient failure (a write timeout on a loaded
/// machine): binding the same account to the same user again is a no-op.
fn bind_retrying(addr: &str, uid: &str, module: &str, account: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match bind(addr, uid, module, account) {
            Ok((200, _)) => return Ok(()),
            Ok((st, v)) if st < 500 => bail!("bind refused: {st} {v}"),
            r if Instant::now() >= deadline => bail!("bind failed: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn set_profile(addr: &str, uid: &str, source: &str, mood: &str) -> Result<(u16, Value)> {
    let body = json!({"source": source, "profile": {"mood": mood, "signature": format!("sig of {uid}"), "extra": {"lang": "zh"}}});
    put_json(addr, &format!("/v1/users/{uid}/profile"), &body)
}

/// Like [`set_profile`], retrying transient failures (no leader, timeout)
/// through any of `addrs` until `patience` passes; Ok(revision) of the
/// acknowledged update.
fn set_profile_retrying(
    addrs: &[String],
    uid: &str,
    source: &str,
    mood: &str,
    patience: Duration,
) -> Result<u64> {
    let deadline = Instant::now() + patience;
    let mut i = 0;
    loop {
        let addr = &addrs[i % addrs.len()];
        i += 1;
        match set_profile(addr, uid, source, mood) {
            Ok((200, v)) => return v["revision"].as_u64().context("revision"),
            Ok((st, v)) if st < 500 => bail!("set refused: {st} {v}"),
            r if Instant::now() >= deadline => bail!("set failed: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn ok(r: Result<(u16, Value)>) -> Result<Value> {
    match r? {
        (200, v) => Ok(v),
        (st, v) => Err(anyhow!("{st}: {v}")),
    }
}

fn outbox(addr: &str, dead: bool) -> Result<Value> {
    ok(get_json(addr, &format!("/v1/outbox?dead={dead}")))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(true) => return Ok(()),
            r if Instant::now() > deadline => bail!("{what}: not within {timeout:?} ({r:?})"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// One update from module `src` reaches four other modules' servers:
/// one answers 500 three times then 200 (four attempts with one stable
/// webhook id), one holds requests past the module's timeout twice, one is
/// not listening for 3 s, one answers 410 (the item goes to the
/// dead-letter list with that error; resent after the receiver is fixed,
/// it is delivered). After a second update every receiver ends with the
/// latest profile (by revision), the outbox is empty, the metrics count
/// what happened, and the Python `standardwebhooks` package verifies the
/// signature of every request any receiver got.
#[test]
fn profile_deliveries_survive_receiver_failures() -> Result<()> {
    let flaky = Receiver::started(Mode::FailFirst(3), 1)?;
    let slow = Receiver::started(Mode::HangFirst(2, Duration::from_millis(1500)), 2)?;
    let late = Receiver::new(Mode::Ok { delay: Duration::ZERO }, 3);
    let gone = Receiver::started(Mode::Gone, 4)?;
    let src = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 5)?;
    let modules = vec![
        src.module_xml("src", 1000),
        flaky.module_xml("flaky", 1000),
        slow.module_xml("slow", 300),
        late.module_xml("late", 1000),
        gone.module_xml("gone", 1000),
    ];
    let tuning = Tuning { extra_xml: profile_sync_xml(&modules, 120_000, 8), ..Tuning::default() };
    let c = Cluster::start(3, tuning)?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(leader);
    for (m, acct) in
        [("src", "u-src"), ("flaky", "u-f"), ("slow", "u-s"), ("late", "u-l"), ("gone", "u-g")]
    {
        ok(bind(&a, "u", m, acct))?;
    }
    phase("first update");
    let v = ok(set_profile(&a, "u", "src", "first"))?;
    let first = v["revision"].as_u64().context("revision")?;
    assert_eq!(v["outbox"].as_array().map(Vec::len), Some(4), "one item per other module: {v}");
    let flaky_id = {
        let o = outbox(&a, false)?;
        let items = o["items"].as_array().context("items")?;
        let it = items.iter().find(|i| i["module"] == "flaky").context("flaky item")?;
        it["webhook_id"].as_str().context("webhook id")?.to_string()
    };
    wait_for("flaky gets it on the 4th attempt", Duration::from_secs(20), || {
        Ok(flaky.applied("u-f").is_some_and(|(r, _)| r == first))
    })?;
    let fr = flaky.requests();
    assert_eq!(fr.iter().map(|r| r.status).collect::<Vec<_>>(), vec![500, 500, 500, 200]);
    assert!(
        fr.iter().all(|r| r.id == flaky_id),
        "the webhook id is stable across attempts: {fr:?}"
    );
    wait_for("slow gets it after two timeouts", Duration::from_secs(20), || {
        Ok(slow.requests().len() >= 3 && slow.applied("u-s").is_some_and(|(r, _)| r == first))
    })?;
    phase("the dead letter of the 410");
    wait_for("410 → dead letter", Duration::from_secs(20), || {
        let d = outbox(&a, true)?;
        Ok(d["items"].as_array().is_some_and(|i| {
            i.iter().any(|x| {
                x["module"] == "gone" && x["last_error"].as_str().unwrap_or("").contains("410")
            })
        }))
    })?;
    assert_eq!(gone.requests().len(), 1, "410 is not retried");
    assert!(late.requests().is_empty());
    std::thread::sleep(Duration::from_secs(2));
    phase("the late receiver comes up");
    late.listen()?;
    wait_for("late gets it", Duration::from_secs(20), || {
        Ok(late.applied("u-l").is_some_and(|(r, _)| r == first))
    })?;

    phase("second update; the 410 receiver is fixed and its item resent");
    let second = ok(set_profile(&c.addr((leader % 3) + 1), "u", "src", "second"))?["revision"]
        .as_u64()
        .context("revision")?;
    assert!(second > first);
    wait_for("gone's second item dead too", Duration::from_secs(20), || {
        let d = outbox(&a, true)?;
        Ok(d["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["module"] == "gone" && x["revision"] == second)))
    })?;
    let d = outbox(&a, true)?;
    assert_eq!(d["total"], 1, "the newer update replaced the older dead letter: {d}");
    gone.set_mode(Mode::Ok { delay: Duration::ZERO });
    let dead_id = d["items"][0]["webhook_id"].as_str().context("id")?.to_string();
    ok(post_json(&a, &format!("/v1/outbox/{dead_id}/resend"), &json!({})))?;
    for (r, acct) in [(&flaky, "u-f"), (&slow, "u-s"), (&late, "u-l"), (&gone, "u-g")] {
        wait_for(&format!("{acct} ends with the latest"), Duration::from_secs(20), || {
            Ok(r.applied(acct).is_some_and(|(rev, p)| rev == second && p["mood"] == "second"))
        })?;
    }
    assert!(src.requests().is_empty(), "the source module gets nothing");
    wait_for("outbox empty", Duration::from_secs(10), || {
        Ok(outbox(&a, false)?["total"] == 0 && outbox(&a, true)?["total"] == 0)
    })?;
    // The counters are the delivering node's: the leader may have moved
    // (the numbered master), so they are summed over the nodes.
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.publish()).collect();
    let total = |name: &str| -> Result<f64> { addrs.iter().map(|a| metric(a, name)).sum() };
    assert!(total("herald_outbox_delivered_total")? >= 5.0);
    assert!(
        total("herald_outbox_retries_total")? >= 5.0,
        "3 failures, 2 timeouts, refused connections"
    );
    assert!(total("herald_outbox_dead_lettered_total")? >= 2.0);
    let la = c.addr(c.wait_leader(LEADER_WAIT)?);
    assert_eq!(metric(&la, "herald_outbox_pending")?, 0.0);

    phase("signatures, checked by Python standardwebhooks");
    let n = verify_with_python(&[&flaky, &slow, &late, &gone, &src], c.path())?;
    assert!(n >= 12, "{n} deliveries verified");
    Ok(())
}

/// Issue 17's last defect, case 1: module a holds a pending item of an
/// older update of u (made in b) because a's receiver is down, with failed
/// attempts recorded; u then changes the profile in a itself. The update
/// from a drops a's own older item (the outbox holds none for a), its
/// revision is above the older one's, and when a's receiver comes back it
/// never receives the older value (nothing at all: a made the newest),
/// while b and c end on a's newest update and the outbox drains.
#[test]
fn profile_update_in_a_module_supersedes_its_pending_older_item() -> Result<()> {
    let ra = Receiver::new(Mode::Ok { delay: Duration::ZERO }, 11);
    let rb = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 12)?;
    let rc = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 13)?;
    let modules = vec![ra.module_xml("a", 500), rb.module_xml("b", 500), rc.module_xml("c", 500)];
    let tuning = Tuning { extra_xml: profile_sync_xml(&modules, 120_000, 8), ..Tuning::default() };
    let c = Cluster::start(3, tuning)?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let addr = c.addr(leader);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.publish()).collect();
    for m in ["a", "b", "c"] {
        bind_retrying(&addr, "u", m, &format!("u@{m}"))?;
    }
    phase("an update made in b; a's receiver is down");
    let older = set_profile_retrying(&addrs, "u", "b", "older", Duration::from_secs(20))?;
    wait_for("c applies the older update", Duration::from_secs(20), || {
        Ok(rc.applied("u@c").is_some_and(|(r, _)| r == older))
    })?;
    wait_for("a's item of it has failed attempts", Duration::from_secs(20), || {
        let o = outbox(&addr, false)?;
        Ok(o["items"].as_array().is_some_and(|i| {
            i.iter().any(|x| {
                x["module"] == "a" && x["revision"] == older && x["attempts"].as_u64() >= Some(2)
            })
        }))
    })?;
    phase("u changes the profile in a itself");
    let newest = set_profile_retrying(&addrs, "u", "a", "newest", Duration::from_secs(20))?;
    assert!(newest > older, "revisions grow: {older} then {newest}");
    let o = outbox(&addr, false)?;
    let items = o["items"].as_array().context("items")?;
    assert!(
        items.iter().all(|x| x["module"] != "a"),
        "a's own older item is gone once a made a newer update: {o}"
    );
    phase("a's receiver comes back");
    ra.listen()?;
    for (r, acct) in [(&rb, "u@b"), (&rc, "u@c")] {
        wait_for(&format!("{acct} ends on the newest"), Duration::from_secs(20), || {
            Ok(r.applied(acct).is_some_and(|(rev, p)| rev == newest && p["mood"] == "newest"))
        })?;
    }
    wait_for("outbox empty", Duration::from_secs(10), || {
        Ok(outbox(&addr, false)?["total"] == 0 && outbox(&addr, true)?["total"] == 0)
    })?;
    // Longer than the largest backoff (1 s) plus a delivery: an item still
    // held for a would have reached it by now.
    std::thread::sleep(Duration::from_secs(3));
    let got = ra.requests();
    assert!(got.is_empty(), "a never receives the older value (nor its own): {got:?}");
    let p = ok(get_json(&addr, "/v1/users/u/profile"))?;
    assert_eq!((p["revision"].as_u64(), p["source"].as_str()), (Some(newest), Some("a")), "{p}");
    verify_with_python(&[&rb, &rc], c.path())?;
    Ok(())
}

/// 200 users bound to a source module and three receivers: 200 updates
/// (600 outbox items) are acknowledged while the receivers answer slowly
/// (500 ms),
/// then the leader is killed with SIGKILL with most items still pending.
/// The new leader resumes them: every receiver gets every user's
/// acknowledged update at least once; then 50 users update again through
/// the new leader and each receiver's final profile of every user is the
/// last one set; the outbox drains to empty.
#[test]
fn profile_outbox_survives_leader_kill() -> Result<()> {
    // Slow while the updates are made, so most items are pending at the kill.
    let slow = Mode::Ok { delay: Duration::from_millis(500) };
    let rs: Vec<Receiver> =
        (0..3).map(|i| Receiver::started(slow, 10 + i)).collect::<Result<_>>()?;
    let mut modules: Vec<String> =
        rs.iter().enumerate().map(|(i, r)| r.module_xml(&format!("m{i}"), 2000)).collect();
    let src = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 9)?;
    modules.push(src.module_xml("src", 1000));
    let tuning = Tuning { extra_xml: profile_sync_xml(&modules, 600_000, 4), ..Tuning::default() };
    let mut c = Cluster::start(3, tuning)?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.publish()).collect();
    const USERS: usize = 200;
    phase("bind 200 users");
    std::thread::scope(|s| -> Result<()> {
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let addrs = &addrs;
                s.spawn(move || -> Result<()> {
                    for u in (t..USERS).step_by(4) {
                        let a = &addrs[u % 3];
                        for m in ["src", "m0", "m1", "m2"] {
                            bind_retrying(a, &format!("user{u}"), m, &format!("{m}-acct{u}"))?;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap())
    })?;
    phase("200 updates");
    let mut acked: HashMap<usize, (u64, String)> = HashMap::new();
    for u in 0..USERS {
        let mood = format!("r1-{u}");
        let rev = set_profile_retrying(
            &addrs,
            &format!("user{u}"),
            "src",
            &mood,
            Duration::from_secs(10),
        )?;
        acked.insert(u, (rev, mood));
    }
    let pending = outbox(&c.addr(leader), false)?["total"].as_u64().unwrap_or(0);
    assert!(pending >= 300, "most of the 600 items are still pending at the kill: {pending}");
    phase("SIGKILL the leader");
    let killed_at = Instant::now();
    c.node(leader).kill9()?;
    let new_leader = c.wait_leader(LEADER_WAIT)?;
    assert_ne!(new_leader, leader);
    for r in &rs {
        r.set_mode(Mode::Ok { delay: Duration::from_millis(10) });
    }
    let live: Vec<String> =
        c.nodes.iter().filter(|n| n.is_running()).map(|n| n.publish()).collect();
    phase("50 more updates through the new leader");
    for u in 0..50 {
        let mood = format!("r2-{u}");
        let rev = set_profile_retrying(
            &live,
            &format!("user{u}"),
            "src",
            &mood,
            Duration::from_secs(10),
        )?;
        acked.insert(u, (rev, mood));
    }
    phase("every receiver converges to the last update of every user");
    wait_for("all delivered", Duration::from_secs(90), || {
        Ok(rs.iter().enumerate().all(|(i, r)| {
            (0..USERS).all(|u| {
                let (rev, _) = &acked[&u];
                r.applied(&format!("m{i}-acct{u}")).is_some_and(|(got, _)| got == *rev)
            })
        }))
    })?;
    for (i, r) in rs.iter().enumerate() {
        for u in 0..USERS {
            let (rev, mood) = &acked[&u];
            let (got, p) = r.applied(&format!("m{i}-acct{u}")).unwrap();
            assert_eq!(
                (got, p["mood"].as_str()),
                (*rev, Some(mood.as_str())),
                "receiver m{i} user{u}"
            );
        }
        // Every round-1 update reached the receiver at least once (users 50..
        // kept it as their last; users 0..50 received it before or were
        // replaced by round 2 while still pending: coalescing).
        let revs: std::collections::HashSet<u64> = r
            .requests()
            .iter()
            .filter_map(|q| serde_json::from_str::<Value>(&q.body).ok())
            .filter_map(|v| v["data"]["revision"].as_u64())
            .collect();
        for u in 50..USERS {
            assert!(revs.contains(&acked[&u].0), "m{i} never got user{u}'s update");
        }
    }
    wait_for("outbox drained", Duration::from_secs(20), || {
        Ok(outbox(&live[0], false)?["total"] == 0)
    })?;
    eprintln!(
        "figures: {pending} items pending at the kill; every receiver converged and the outbox drained {:.1} s after it",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(src.requests().is_empty(), "the source module gets nothing");
    let n = verify_with_python(&rs.iter().collect::<Vec<_>>(), c.path())?;
    eprintln!("figures: {n} deliveries verified by standardwebhooks");
    assert!(n >= 3 * USERS, "{n}");
    Ok(())
}

/// A refusal case: what, the answer, the status and code it must have.
type Case<'a> = (&'a str, Result<(u16, Value)>, u16, &'a str);

/// The node's last log index.
fn log_index(addr: &str) -> Result<u64> {
    local_view(addr)?["last_log_index"].as_u64().context("last_log_index")
}

/// Refusals, each with its stable code and HTTP status, none of which
/// writes anything (the log does not grow, the profile and outbox are as
/// before): a module `<profile-sync>` does not list (`unsupported_module`),
/// an account bound to another identity (`account_bound_elsewhere`), an
/// oversize profile (`profile_too_large`), an update from a module the
/// user has not bound (`module_not_bound`), a bad session token
/// (`bad_token`); a user's own token binds and updates its own profile.
#[test]
fn profile_refusals_store_nothing() -> Result<()> {
    let r = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 20)?;
    let modules =
        vec![r.module_xml("qq", 1000), r.module_xml("msn", 1000), r.module_xml("icq", 1000)];
    let c = Cluster::start(
        1,
        Tuning { extra_xml: profile_sync_xml(&modules, 60_000, 4), ..Tuning::default() },
    )?;
    c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(1);
    let alice = token("alice");
    let as_alice = As::User { uid: "alice", token: &alice };
    let (st, v) = request(
        as_alice,
        "POST",
        &a,
        "/v1/users/alice/bindings",
        Some(("application/json", br#"{"module":"qq","account":"111"}"#.to_vec())),
    )?;
    assert_eq!(st, 200, "{v}");
    ok(bind(&a, "alice", "msn", "alice@msn"))?;
    let body = json!({"source": "qq", "profile": {"mood": "ok"}});
    let (st, v) = request(
        as_alice,
        "PUT",
        &a,
        "/v1/users/alice/profile",
        Some(("application/json", serde_json::to_vec(&body)?)),
    )?;
    assert_eq!(st, 200, "{v}");
    wait_for("delivered", Duration::from_secs(10), || Ok(r.applied("alice@msn").is_some()))?;
    wait_for("outbox empty", Duration::from_secs(10), || Ok(outbox(&a, false)?["total"] == 0))?;
    std::thread::sleep(Duration::from_millis(500));
    let before_profile = ok(get_json(&a, "/v1/users/alice/profile"))?;
    let before = log_index(&a)?;

    let big = json!({"source": "qq", "profile": {"signature": "s".repeat(5000)}});
    let cases: Vec<Case> = vec![
        ("unsupported module", bind(&a, "alice", "aim", "x"), 400, "unsupported_module"),
        ("bound elsewhere", bind(&a, "bob", "qq", "111"), 409, "account_bound_elsewhere"),
        (
            "oversize profile",
            put_json(&a, "/v1/users/alice/profile", &big),
            413,
            "profile_too_large",
        ),
        ("unbound module", set_profile(&a, "alice", "icq", "x"), 409, "module_not_bound"),
        ("unsupported source", set_profile(&a, "alice", "aim", "x"), 400, "unsupported_module"),
        (
            "bad token",
            request(
                As::User { uid: "alice", token: "v1.bad.1.sig" },
                "PUT",
                &a,
                "/v1/users/alice/profile",
                Some(("application/json", serde_json::to_vec(&body)?)),
            ),
            401,
            "bad_token",
        ),
        ("unbind of another's", ok_delete(&a, "/v1/users/bob/bindings/qq/111"), 404, "not_bound"),
        (
            "resend unknown",
            post_json(&a, "/v1/outbox/msg_999/resend", &json!({})),
            404,
            "unknown_outbox_item",
        ),
    ];
    for (what, got, status, code) in cases {
        let (st, v) = got?;
        assert_eq!((st, v["error"]["code"].as_str()), (status, Some(code)), "{what}: {v}");
    }
    assert_eq!(log_index(&a)?, before, "a refusal wrote to the log");
    assert_eq!(ok(get_json(&a, "/v1/users/alice/profile"))?, before_profile);
    assert_eq!(ok(get_json(&a, "/v1/users/bob/profile"))?["bindings"], json!([]));
    assert_eq!(outbox(&a, false)?["total"], 0);
    assert_eq!(outbox(&a, true)?["total"], 0);
    assert_eq!(r.requests().len(), 1, "nothing more was sent");
    Ok(())
}

fn ok_delete(addr: &str, path: &str) -> Result<(u16, Value)> {
    request(ADMIN, "DELETE", addr, path, None)
}

use herald_tests::{herald_cli as herald, herald_cli_json as herald_json};

/// The CLI end to end: `herald profile bind` as the user (its token) and
/// with the API key, `profile set` and `get`, an unsupported module exits
/// non-zero with its code, `outbox list --dead` shows the item a 410
/// receiver dead-lettered, and `outbox resend` delivers it once the
/// receiver is fixed.
#[test]
fn profile_cli_end_to_end() -> Result<()> {
    let gone = Receiver::started(Mode::Gone, 30)?;
    let src = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 31)?;
    let modules = vec![src.module_xml("qq", 1000), gone.module_xml("msn", 1000)];
    let c = Cluster::start(
        1,
        Tuning { extra_xml: profile_sync_xml(&modules, 60_000, 4), ..Tuning::default() },
    )?;
    c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(1);
    let tok = token("carol");
    let v = herald_json(&a, &["profile", "bind", "qq", "555", "--uid", "carol", "--token", &tok])?;
    assert_eq!(v["bindings"], json!([{"module": "qq", "account": "555"}]), "{v}");
    herald_json(&a, &["profile", "bind", "msn", "carol@msn", "--uid", "carol"])?;
    let out = herald(&a, &["profile", "bind", "aim", "x", "--uid", "carol"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported_module"), "{err}");
    let v = herald_json(
        &a,
        &[
            "profile", "set", "qq", "--mood", "calm", "--extra", "lang=en", "--uid", "carol",
            "--token", &tok,
        ],
    )?;
    assert_eq!(
        (v["profile"]["mood"].as_str(), v["outbox"].as_array().map(Vec::len)),
        (Some("calm"), Some(1)),
        "{v}"
    );
    let v = herald_json(&a, &["profile", "get", "--uid", "carol"])?;
    assert_eq!(v["profile"]["extra"]["lang"], "en", "{v}");
    wait_for("dead letter", Duration::from_secs(15), || {
        Ok(herald_json(&a, &["outbox", "list", "--dead"])?["total"] == 1)
    })?;
    let dead = herald_json(&a, &["outbox", "list", "--dead"])?;
    let id = dead["items"][0]["webhook_id"].as_str().context("webhook id")?.to_string();
    assert!(dead["items"][0]["last_error"].as_str().unwrap_or("").contains("410"), "{dead}");
    let human = herald(&a, &["outbox", "list", "--dead"])?;
    assert!(String::from_utf8_lossy(&human.stdout).contains(&id), "the table lists the id");
    gone.set_mode(Mode::Ok { delay: Duration::ZERO });
    herald_json(&a, &["outbox", "resend", &id])?;
    wait_for("resent and delivered", Duration::from_secs(15), || {
        Ok(gone.applied("carol@msn").is_some_and(|(_, p)| p["mood"] == "calm"))
    })?;
    assert_eq!(herald_json(&a, &["outbox", "list"])?["total"], 0);
    Ok(())
}

/// Bindings, profiles and pending outbox items with their attempt counts
/// are in snapshots: with a snapshot every 20 entries and the receiver
/// down, 30 updates and their failed attempts are written, every node is
/// stopped and started again (state = snapshot + log replay), and the
/// profiles, bindings and pending items (attempts not reset) are as
/// before; once the receiver listens, each user's latest update arrives.
#[test]
fn profile_outbox_survives_snapshot_and_full_restart() -> Result<()> {
    let down = Receiver::new(Mode::Ok { delay: Duration::ZERO }, 40);
    let src = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 41)?;
    let modules = vec![src.module_xml("src", 1000), down.module_xml("dst", 500)];
    let tuning = Tuning {
        snapshot_logs: 20,
        extra_xml: profile_sync_xml(&modules, 600_000, 4),
        ..Tuning::default()
    };
    let mut c = Cluster::start(3, tuning)?;
    let leader = c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(leader);
    let mut last = HashMap::new();
    for u in 0..10 {
        let uid = format!("s{u}");
        bind_retrying(&a, &uid, "src", &format!("src-{u}"))?;
        bind_retrying(&a, &uid, "dst", &format!("dst-{u}"))?;
    }
    for round in 0..3 {
        for u in 0..10 {
            let uid = format!("s{u}");
            let mood = format!("m{round}");
            last.insert(
                u,
                set_profile_retrying(
                    std::slice::from_ref(&a),
                    &uid,
                    "src",
                    &mood,
                    Duration::from_secs(10),
                )?,
            );
        }
    }
    wait_for("failed attempts recorded", Duration::from_secs(20), || {
        let o = outbox(&a, false)?;
        Ok(o["total"] == 10
            && o["items"]
                .as_array()
                .is_some_and(|i| i.iter().all(|x| x["attempts"].as_u64() >= Some(2))))
    })?;
    let before = outbox(&a, false)?;
    let profile_before = ok(get_json(&a, "/v1/users/s3/profile"))?;
    phase("stop and start every node");
    for n in 1..=3 {
        c.node(n).stop()?;
    }
    for n in 1..=3 {
        c.node(n).start()?;
    }
    let leader = c.wait_leader(LEADER_WAIT)?;
    let a = c.addr(leader);
    assert_eq!(ok(get_json(&a, "/v1/users/s3/profile"))?, profile_before);
    let after = outbox(&a, false)?;
    assert_eq!(after["total"], 10);
    for (b, x) in before["items"].as_array().unwrap().iter().zip(after["items"].as_array().unwrap())
    {
        assert_eq!((&b["id"], &b["revision"]), (&x["id"], &x["revision"]));
        assert!(x["attempts"].as_u64() >= b["attempts"].as_u64(), "attempts kept: {b} → {x}");
    }
    let snaps = c
        .nodes
        .iter()
        .filter(|n| {
            std::fs::read_dir(n.data_dir.join("snapshots")).is_ok_and(|mut d| d.next().is_some())
        })
        .count();
    assert!(snaps >= 1, "a snapshot was taken");
    phase("the receiver comes up");
    down.listen()?;
    wait_for("latest delivered", Duration::from_secs(30), || {
        Ok((0..10).all(|u| {
            down.applied(&format!("dst-{u}"))
                .is_some_and(|(r, p)| r == last[&u] && p["mood"] == "m2")
        }))
    })?;
    Ok(())
}

/// A private CA and a certificate for 127.0.0.1 it signs (rcgen): (CA PEM,
/// certificate PEM, key PEM).
fn private_ca() -> Result<(String, String, String)> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "receiver test CA");
    let ca_key = rcgen::KeyPair::generate()?;
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?;
    let key = rcgen::KeyPair::generate()?;
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

/// Serves `r` over TLS with this certificate: each connection's one
/// request (head, Content-Length body) goes through [`receive`], as the
/// plain receivers' do.
fn listen_tls(r: &Receiver, cert_pem: &str, key_pem: &str) -> Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let certs = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes())?];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())?;
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let addr: SocketAddr = format!("127.0.0.1:{}", r.port).parse()?;
    let l = rt().block_on(tokio::net::TcpListener::bind(addr)).context("receiver bind")?;
    let inbox = r.inbox.clone();
    rt().spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let (acceptor, inbox) = (acceptor.clone(), inbox.clone());
            tokio::spawn(async move {
                // A handshake the sender refuses ends here: nothing recorded.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let mut s = tokio::io::BufReader::new(tls);
                let mut headers = HeaderMap::new();
                let mut len = 0usize;
                let mut line = String::new();
                // Request line, then headers up to the empty line (16 KiB at most).
                for _ in 0..100 {
                    line.clear();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = l.split_once(':') {
                        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_string());
                        if k == "content-length" {
                            len = v.parse().unwrap_or(0).min(64 * 1024);
                        }
                        if let (Ok(k), Ok(v)) = (
                            axum::http::HeaderName::try_from(k),
                            axum::http::HeaderValue::try_from(v),
                        ) {
                            headers.insert(k, v);
                        }
                    }
                }
                let mut body = vec![0; len];
                if s.read_exact(&mut body).await.is_err() {
                    return;
                }
                let body = String::from_utf8_lossy(&body).into_owned();
                let status = receive(State(inbox), headers, body).await;
                let answer = format!(
                    "HTTP/1.1 {} OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    status.as_u16()
                );
                let _ = s.get_mut().write_all(answer.as_bytes()).await;
                let _ = s.get_mut().shutdown().await;
            });
        }
    });
    Ok(())
}

/// HTTPS receivers with a private CA (`<module ca>`): a receiver serving
/// TLS with a certificate signed by a CA the test makes gets the update
/// through the module whose `ca` names that CA, its signature valid (Python
/// standardwebhooks); the same receiver through a module without `ca`
/// (the public roots) is refused at the handshake: that item stays pending
/// with a TLS error and the receiver never sees a request for it.
#[test]
fn profile_https_receiver_with_a_private_ca() -> Result<()> {
    let (ca_pem, cert_pem, key_pem) = private_ca()?;
    let tls = Receiver::new(Mode::Ok { delay: Duration::ZERO }, 21);
    listen_tls(&tls, &cert_pem, &key_pem)?;
    let src = Receiver::started(Mode::Ok { delay: Duration::ZERO }, 22)?;
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("receiver-ca.pem");
    std::fs::write(&ca_file, &ca_pem)?;
    let https = tls.module_xml("priv", 2000).replace("http://", "https://");
    let modules = vec![
        src.module_xml("src", 1000),
        https.replace("/>", &format!(" ca=\"{}\"/>", ca_file.display())),
        https.replace("id=\"priv\" name=\"priv\"", "id=\"pub\" name=\"pub\""),
    ];
    let tuning = Tuning { extra_xml: profile_sync_xml(&modules, 120_000, 4), ..Tuning::default() };
    let c = Cluster::start(1, tuning)?;
    let a = c.addr(c.wait_leader(LEADER_WAIT)?);
    for (m, acct) in [("src", "t-src"), ("priv", "t-priv"), ("pub", "t-pub")] {
        bind_retrying(&a, "t", m, acct)?;
    }
    let rev = set_profile_retrying(
        std::slice::from_ref(&a),
        "t",
        "src",
        "over tls",
        Duration::from_secs(20),
    )?;
    wait_for("the private-CA receiver gets it", Duration::from_secs(20), || {
        Ok(tls.applied("t-priv").is_some_and(|(r, p)| r == rev && p["mood"] == "over tls"))
    })?;
    wait_for("the public-roots item fails at the handshake", Duration::from_secs(20), || {
        let o = outbox(&a, false)?;
        Ok(o["items"].as_array().is_some_and(|i| {
            i.iter().any(|x| {
                x["module"] == "pub"
                    && x["attempts"].as_u64().unwrap_or(0) >= 1
                    && x["last_error"].as_str().unwrap_or("").contains("TLS")
            })
        }))
    })?;
    let got = tls.requests();
    assert!(
        got.iter().all(|q| q.body.contains("\"t-priv\"")),
        "only the private-CA module's deliveries arrive: {got:?}"
    );
    assert!(src.requests().is_empty(), "the source module gets nothing");
    let n = verify_with_python(&[&tls], c.path())?;
    assert!(n >= 1, "{n} deliveries verified");
    Ok(())
}
