//! The HTTP API's error contract: bad input gets a 4xx with a stable code and
//! writes nothing; no leader gets 503 `no_leader` within a bounded time.

use std::time::{Duration, Instant};

use anyhow::Result;
use herald_tests::*;
use serde_json::{json, Value};

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

/// Malformed JSON, wrong types, missing fields, empty and oversized requests,
/// too many ids, bad query strings and unknown paths each get their status
/// and code; none of the refused requests changes any state.
#[test]
fn http_bad_requests_get_codes_and_write_nothing() -> Result<()> {
    let c = Cluster::start(
        1,
        Tuning { max_ids_per_query: 100, max_request_bytes: 64 * 1024, ..Tuning::default() },
    )?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    let rev0 = push(&a, vec![login_event("base", 1, "web", "x")])?;

    phase("malformed JSON");
    let (st, v) =
        post_raw(&a, "/v1/presence/events", "application/json", b"{\"events\": [".to_vec())?;
    assert_eq!((st, code(&v)), (400, "malformed_json"), "{v}");
    phase("wrong type");
    let (st, v) = post_json(
        &a,
        "/v1/presence/events",
        &json!({"events":[{"type":"login","uid":"u","sid":"ten","client":"m"}]}),
    )?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    phase("unknown event type");
    let (st, v) = post_json(
        &a,
        "/v1/presence/events",
        &json!({"events":[{"type":"dance","uid":"u","sid":1}]}),
    )?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    phase("missing field (permission without accepts_strangers)");
    let (st, v) = post_json(
        &a,
        "/v1/presence/events",
        &json!({"events":[{"type":"permission","uid":"u","sid":1}]}),
    )?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    phase("one bad event in a batch refuses the whole batch");
    let (st, v) = post_json(
        &a,
        "/v1/presence/events",
        &json!({"events":[login_event("good", 2, "web", "y"), {"type":"login","uid":"","sid":3,"client":"m"}]}),
    )?;
    assert_eq!((st, code(&v)), (400, "invalid_event"), "{v}");
    phase("empty events");
    let (st, v) = post_json(&a, "/v1/presence/events", &json!({"events":[]}))?;
    assert_eq!((st, code(&v)), (400, "no_events"), "{v}");
    phase("oversized body");
    let big: Vec<Value> = (0..2000)
        .map(|i| login_event(&format!("big{i}"), i, "web", "zzzzzzzzzzzzzzzzzzzz"))
        .collect();
    let (st, v) = post_json(&a, "/v1/presence/events", &json!({ "events": big }))?;
    assert_eq!((st, code(&v)), (413, "payload_too_large"), "{v}");
    phase("wrong content type");
    let (st, v) = post_raw(&a, "/v1/presence/events", "text/plain", b"{}".to_vec())?;
    assert_eq!((st, code(&v)), (400, "unsupported_content_type"), "{v}");
    phase("too many ids");
    let ids: Vec<String> = (0..101).map(|i| format!("q{i}")).collect();
    let (st, v) = post_json(&a, "/v1/presence/query", &json!({ "uids": ids }))?;
    assert_eq!((st, code(&v)), (400, "too_many_ids"), "{v}");
    phase("bad consistency, bad sid, unknown parameter, unknown path");
    let (st, v) =
        post_json(&a, "/v1/presence/query", &json!({"uids":["a"], "consistency":"eventual"}))?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    let (st, v) = get_json(&a, "/v1/presence?sid=abc")?;
    assert_eq!((st, code(&v)), (400, "invalid_field"), "{v}");
    let (st, v) = get_json(&a, "/v1/presence?user=abc")?;
    assert_eq!((st, code(&v)), (400, "unknown_parameter"), "{v}");
    let (st, v) = get_json(&a, "/v1/nothing")?;
    assert_eq!((st, code(&v)), (404, "not_found"), "{v}");

    phase("nothing was written by the refused requests");
    let v = query(&a, &["good".into(), "u".into(), "big0".into()], "linearizable")?;
    assert_eq!(v["users"].as_array().unwrap().len(), 0, "{v}");
    let (_, cl) = get_json(&a, "/v1/cluster")?;
    assert_eq!(cl["last_log_index"].as_u64(), Some(rev0), "the log did not grow: {cl}");
    Ok(())
}

/// With two of three nodes gone, a write to the survivor fails with 503
/// `no_leader` or 504 `timeout` within the bounded write timeout instead of
/// hanging, and a linearizable read fails the same way.
#[test]
fn http_no_leader_fails_fast() -> Result<()> {
    let mut c = Cluster::start(3, Tuning { write_timeout_ms: 1500, ..Tuning::default() })?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let survivor = (1..=3).find(|n| *n != leader).unwrap();
    push(&c.addr(survivor), vec![login_event("x", 1, "web", "1")])?;
    // The write is acknowledged once a majority has it, which need not
    // include the survivor: let it apply the write before the others die,
    // so that its local read below has something to answer.
    eventually(Duration::from_secs(5), || {
        let v = query(&c.addr(survivor), &["x".into()], "local")?;
        anyhow::ensure!(v["users"].as_array().is_some_and(|u| u.len() == 1), "not applied: {v}");
        Ok(())
    })?;
    phase("kill the two other nodes");
    for n in (1..=3).filter(|n| *n != survivor) {
        c.node(n).kill9()?;
    }
    std::thread::sleep(Duration::from_millis(1000));
    let a = c.addr(survivor);
    phase("write");
    let t = Instant::now();
    let (st, v) =
        post_json(&a, "/v1/presence/events", &json!({"events":[login_event("y", 2, "web", "2")]}))?;
    let took = t.elapsed();
    assert!(st == 503 || st == 504, "{st} {v}");
    assert!(["no_leader", "timeout"].contains(&code(&v)), "{v}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    phase("linearizable read");
    let t = Instant::now();
    let (st, v) = post_json(&a, "/v1/presence/query", &json!({"uids":["x"]}))?;
    assert!(st == 503 || st == 504, "{st} {v}");
    assert!(t.elapsed() < Duration::from_secs(5));
    phase("a local read still answers");
    let v = query(&a, &["x".into()], "local")?;
    assert_eq!(v["users"].as_array().unwrap().len(), 1, "{v}");
    Ok(())
}

/// `/healthz` answers 200 with a leader, and `/metrics` is Prometheus text
/// with Raft and request metrics that move with traffic.
#[test]
fn http_healthz_and_metrics() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    let (st, v) = get_json(&a, "/healthz")?;
    assert_eq!(st, 200, "{v}");
    push(&a, vec![login_event("m1", 1, "web", "1"), login_event("m2", 2, "web", "2")])?;
    query(&a, &["m1".into()], "linearizable")?;
    let (st, v) = get_json(&a, "/metrics")?;
    assert_eq!(st, 200);
    let text = v.as_str().unwrap_or_default().to_string();
    for needle in [
        "herald_raft_term 1",
        "herald_raft_is_leader 1",
        "herald_presence_write_events_total 2",
        "herald_presence_users 2",
        "herald_presence_queries_total{consistency=\"linearizable\"} 1",
        "herald_raft_applied_index",
        "herald_presence_query_seconds_bucket",
    ] {
        assert!(text.contains(needle), "metrics lack {needle:?}:\n{text}");
    }
    Ok(())
}

/// A user is online on at most 16 client types: a push whose logins would
/// pass that (one batch naming 17, or one more after 16) is refused with
/// 400 `too_many_clients` and writes nothing; a client type already online
/// and a logout-then-login in one batch are accepted; the answer for the
/// user stays small.
#[test]
fn http_client_types_per_user_are_capped() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    let seventeen: Vec<Value> =
        (0..17).map(|i| login_event("capped", 7, &format!("c{i}"), "x")).collect();
    let (st, v) = post_json(&a, "/v1/presence/events", &json!({ "events": seventeen }))?;
    assert_eq!((st, code(&v)), (400, "too_many_clients"), "{v}");
    let q = query(&a, &["capped".into()], "linearizable")?;
    assert_eq!(q["unknown"], json!(["capped"]), "nothing written: {q}");

    let sixteen: Vec<Value> =
        (0..16).map(|i| login_event("capped", 7, &format!("c{i}"), "x")).collect();
    push(&a, sixteen)?;
    let (st, v) = post_json(
        &a,
        "/v1/presence/events",
        &json!({"events": [login_event("capped", 7, "one-more", "x")]}),
    )?;
    assert_eq!((st, code(&v)), (400, "too_many_clients"), "{v}");
    push(&a, vec![login_event("capped", 7, "c3", "again")])?;
    push(
        &a,
        vec![
            json!({"type": "logout", "uid": "capped", "sid": 7, "client": "c0"}),
            login_event("capped", 7, "swapped-in", "x"),
        ],
    )?;
    let q = query(&a, &["capped".into()], "linearizable")?;
    let clients = q["users"][0]["clients"].as_array().cloned().unwrap_or_default();
    assert_eq!(clients.len(), 16, "{q}");
    assert!(clients.contains(&json!("swapped-in")) && !clients.contains(&json!("c0")), "{q}");
    Ok(())
}
