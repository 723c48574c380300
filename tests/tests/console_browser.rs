//! The web console (`/console`, issue 18) in a real headless Chromium
//! against a real 3-node cluster: login refused and accepted, the cluster
//! with the right leader, the new leader after a SIGKILL, transfer-leader
//! from the console, 1,000 ids looked up and followed live, logout.
//! Screenshots of the cluster and presence pages go to
//! `$CARGO_TARGET_TMPDIR/console-*.png` (README shows copies of them).

use std::time::Duration;

use anyhow::{ensure, Result};
use herald_tests::browser::Browser;
use herald_tests::{generate_tls, phase, push, Cluster, Tuning, TEST_API_KEY};
use serde_json::{json, Value};

/// Types `key` into the login form and submits it, once the console's
/// script has attached its handlers (before that, a submit would be the
/// browser's own form submission: a reload).
fn log_in(b: &mut Browser, key: &str) -> Result<()> {
    dataset(b, "ready", Duration::from_secs(60), |r| r == "true")?;
    let expr = format!(
        "document.getElementById('key').value = {}; \
         document.getElementById('login-form').requestSubmit(); true",
        json!(key)
    );
    b.wait_until(&expr, Duration::from_secs(60), |v| v == &json!(true))?;
    Ok(())
}

fn dataset(
    b: &mut Browser,
    field: &str,
    within: Duration,
    ok: impl Fn(&str) -> bool,
) -> Result<String> {
    let v = b.wait_until(&format!("document.body.dataset.{field} || ''"), within, |v| {
        v.as_str().is_some_and(&ok)
    })?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

fn login_event(uid: &str) -> Value {
    json!({"type": "login", "uid": uid, "sid": 0, "client": "web"})
}

/// An operator's session in the console, end to end: a wrong key gets
/// the login page with the node's refusal and no data; the right key shows
/// all three nodes and the leader the cluster elected; after the leader is
/// SIGKILLed the console shows the new leader within a few seconds;
/// transfer-leader from the console (confirmed) moves leadership where it
/// asked; the killed node removed from the console leaves two rows; the
/// charts gather samples (of /v1/cluster and of /metrics); the messages tab lists the longest offline
/// queues first; the outbox tab answers; 1,000 ids looked up show 500 online and 500 unknown badges, and
/// followed live, a login of one of them turns its badge online; logging
/// out clears every table.
#[test]
fn console_in_chromium_shows_the_cluster_and_acts() -> Result<()> {
    // Leadership stays where elections and the console put it (the
    // numbered master would otherwise move it to the lowest number).
    let mut c = Cluster::start(3, Tuning { prefer_lowest: false, ..Tuning::default() })?;
    let leader = c.wait_leader(Duration::from_secs(30))?;
    // The console's node: not the leader (it is killed below).
    let here = (1..=3).find(|&n| n != leader).unwrap();
    let addr = c.addr(here);
    let mut b = Browser::open(&format!("http://{addr}/console"))?;
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));

    phase("a wrong key: the login page, the refusal, no data");
    log_in(&mut b, "hk_not-a-key-of-this-cluster-000000000000000")?;
    let err = b.wait_until(
        "document.getElementById('login-error').textContent",
        Duration::from_secs(20),
        |v| v.as_str().is_some_and(|s| !s.is_empty()),
    )?;
    ensure!(err.as_str().unwrap().contains("bad_key"), "login error {err}");
    let rows = b.eval("document.querySelectorAll('#nodes tbody tr').length")?;
    ensure!(rows == Some(json!(0)), "data shown without a credential: {rows:?}");
    ensure!(b.eval("document.body.dataset.view")? == Some(json!("login")));

    phase("the right key: three nodes, the elected leader");
    log_in(&mut b, TEST_API_KEY)?;
    dataset(&mut b, "leader", Duration::from_secs(20), |l| l == leader.to_string())?;
    let led = b.wait_until(
        "[...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node + ':' + r.dataset.role).join(',')",
        Duration::from_secs(10),
        |v| v.as_str().is_some_and(|s| s.split(',').count() == 3),
    )?;
    ensure!(led.as_str().unwrap().contains(&format!("{leader}:leader")), "{led}");
    // Each node's media storage, as the node itself reports it.
    let media = b.wait_until(
        "[...document.querySelectorAll('#nodes tbody tr')].map(r => r.dataset.node + ':' + (r.dataset.mediaFiles ?? '?')).join(',')",
        Duration::from_secs(10),
        |v| v.as_str().is_some_and(|s| !s.contains('?')),
    )?;
    ensure!(
        media.as_str().unwrap().split(',').all(|x| x.ends_with(":0")),
        "media per node: {media}"
    );

    phase("the leader is SIGKILLed: the console shows the new one");
    c.node(leader).kill9()?;
    let shown = dataset(&mut b, "leader", Duration::from_secs(15), |l| {
        !l.is_empty() && l != leader.to_string()
    })?;
    let elected = c.wait_leader(Duration::from_secs(20))?;
    ensure!(shown == elected.to_string(), "console shows {shown}, cluster elected {elected}");
    // The killed node cannot say what its storage holds: unknown, not 0.
    b.wait_until(
        &format!("document.querySelector('#nodes tbody tr[data-node=\"{leader}\"]')?.dataset.mediaFiles ?? 'unknown'"),
        Duration::from_secs(10),
        |v| v == &json!("unknown"),
    )?;

    phase("transfer-leader from the console");
    let to = (1..=3).find(|&n| n != leader && n != elected).unwrap();
    b.wait_until(
        &format!(
            "window.confirm = () => true; \
             const s = document.getElementById('transfer-to'); \
             [...s.options].some(o => o.value === '{to}') && (s.value = '{to}', \
             document.getElementById('transfer-form').requestSubmit(), true)"
        ),
        Duration::from_secs(10),
        |v| v == &json!(true),
    )?;
    dataset(&mut b, "actionStatus", Duration::from_secs(20), |s| !s.is_empty())?;
    ensure!(b.eval("document.body.dataset.actionStatus")? == Some(json!("200")));
    dataset(&mut b, "leader", Duration::from_secs(20), |l| l == to.to_string())?;

    phase("remove the killed node from the console; the charts have samples");
    b.wait_until(
        &format!(
            "window.confirm = () => true; document.body.dataset.actionStatus = ''; \
             document.getElementById('member-number').value = '{leader}'; \
             document.getElementById('member-form').requestSubmit( \
               document.querySelector('#member-form button[data-op=\"remove\"]')); true"
        ),
        Duration::from_secs(10),
        |v| v == &json!(true),
    )?;
    dataset(&mut b, "actionStatus", Duration::from_secs(20), |s| !s.is_empty())?;
    let st = b.eval("document.body.dataset.actionStatus + ' ' + document.getElementById('action-result').textContent")?;
    ensure!(
        st.as_ref().and_then(|v| v.as_str()).is_some_and(|s| s.starts_with("200")),
        "remove: {st:?}"
    );
    b.wait_until(
        "document.querySelectorAll('#nodes tbody tr').length",
        Duration::from_secs(20),
        |v| v == &json!(2),
    )?;
    dataset(&mut b, "samples", Duration::from_secs(30), |n| {
        n.parse::<u32>().is_ok_and(|n| n >= 8)
    })?;
    dataset(&mut b, "metricsSamples", Duration::from_secs(30), |n| {
        n.parse::<u32>().is_ok_and(|n| n >= 3)
    })?;
    b.screenshot(&shots.join("console-cluster.png"))?;

    phase("the messages tab: the longest offline queue first");
    for (i, to) in [["q1", "q2"], ["q1", "q3"], ["q1", "q2"]].iter().enumerate() {
        let body =
            json!({"idempotency_key": format!("c{i}"), "from": "app", "to": to, "body": "hi"});
        let (st, v) = herald_tests::post_json(&addr, "/v1/messages", &body)?;
        ensure!(st == 200, "send: {st} {v}");
    }
    b.wait_until("location.hash = '#messages'; true", Duration::from_secs(5), |v| {
        v == &json!(true)
    })?;
    b.wait_until(
        "[...document.querySelectorAll('#queues tbody tr')].map(r => r.dataset.uid + '=' + r.children[1].textContent).join(',')",
        Duration::from_secs(20),
        |v| v == &json!("q1=3,q2=2,q3=1"),
    )?;

    phase("the outbox tab answers (no module configured: nothing pending)");
    b.wait_until("location.hash = '#outbox'; true", Duration::from_secs(5), |v| v == &json!(true))?;
    dataset(&mut b, "outboxTotal", Duration::from_secs(20), |t| t == "0")?;

    phase("1,000 ids looked up, then followed live");
    let online: Vec<Value> = (0..500).map(|i| login_event(&format!("u{i}"))).collect();
    push(&addr, online)?;
    let ids: Vec<String> = (0..1000).map(|i| format!("u{i}")).collect();
    b.wait_until(
        &format!(
            "location.hash = '#presence'; document.getElementById('ids').value = {}; \
             document.getElementById('live').checked = true; \
             document.getElementById('lookup-form').requestSubmit(); true",
            json!(ids.join("\n"))
        ),
        Duration::from_secs(10),
        |v| v == &json!(true),
    )?;
    let counts = "(() => { const r = [...document.querySelectorAll('#badges tbody tr')]; \
                  return r.length + '/' + r.filter(x => x.dataset.state === 'online').length + '/' + \
                  r.filter(x => x.dataset.state === 'unknown').length; })()";
    b.wait_until(counts, Duration::from_secs(30), |v| v == &json!("1000/500/500"))?;
    dataset(&mut b, "watching", Duration::from_secs(20), |w| w == "true")?;
    push(&addr, vec![login_event("u999")])?;
    b.wait_until(
        "document.querySelector('#badges tr[data-uid=\"u999\"]')?.dataset.state",
        Duration::from_secs(20),
        |v| v == &json!("online"),
    )?;
    b.screenshot(&shots.join("console-presence.png"))?;

    phase("log out: the login page, nothing left on screen");
    b.wait_until("document.getElementById('logout').click(); true", Duration::from_secs(5), |v| {
        v == &json!(true)
    })?;
    let left = b.wait_until(
        "document.body.dataset.view + ':' + document.querySelectorAll('tbody tr').length",
        Duration::from_secs(10),
        |v| v == &json!("login:0"),
    )?;
    ensure!(left == json!("login:0"));
    Ok(())
}

/// With `<tls>` on the publish port the console is served over HTTPS and
/// works the same: a wrong key gets the login page, the right one shows
/// the node as leader (Chromium told to accept the test's self-signed
/// certificate).
#[test]
fn console_in_chromium_over_tls() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let tls = generate_tls(certs.path())?;
    let c = Cluster::start(1, Tuning { tls: Some(tls), ..Tuning::default() })?;
    let mut b = Browser::open_with(
        &format!("https://{}/console", c.addr(1)),
        &["--ignore-certificate-errors"],
    )?;
    log_in(&mut b, "hk_not-a-key-of-this-cluster-000000000000000")?;
    b.wait_until(
        "document.getElementById('login-error').textContent",
        Duration::from_secs(20),
        |v| v.as_str().is_some_and(|s| s.contains("bad_key")),
    )?;
    log_in(&mut b, TEST_API_KEY)?;
    dataset(&mut b, "leader", Duration::from_secs(30), |l| l == "1")?;
    let proto = b.eval("location.protocol")?;
    ensure!(proto == Some(json!("https:")), "{proto:?}");
    Ok(())
}
