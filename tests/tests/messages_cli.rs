//! The `herald` CLI for messages, end to end against real processes:
//! `token issue`, `send` (to users and a group), `connect` (prints JSON
//! lines, acknowledges), `settings`, `groups`, `gateway`.

use std::time::Duration;

use anyhow::{bail, Result};
use herald_tests::*;
use serde_json::Value;

use herald_tests::{herald_cli as herald, herald_cli_json as herald_json};

/// A token from `herald token issue` opens a session with `herald connect`,
/// which prints the stored messages in order as JSON lines and acknowledges
/// them (the queue empties); a bad token exits non-zero with its code; a
/// group send and the gateway table work from the CLI.
#[test]
fn cli_send_connect_token_groups() -> Result<()> {
    let c = Cluster::start(3, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(2);
    phase("herald token issue");
    let out =
        herald(&a, &["token", "issue", "--uid", "cli-u", "--ttl", "1h", "--key", TEST_AUTH_KEY])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tok = String::from_utf8(out.stdout)?.trim().to_string();
    assert!(tok.starts_with("v1."), "{tok}");

    phase("herald send to an offline user, twice");
    for text in ["first", "second"] {
        let v = herald_json(&a, &["send", "--from", "app", "--to", "cli-u", text])?;
        assert_eq!(v["recipients"][0]["outcome"], "stored", "{v}");
    }
    phase("herald groups set + send --group");
    herald_json(&a, &["groups", "set", "crew", "cli-u", "other"])?;
    let v = herald_json(&a, &["send", "--from", "app", "--group", "crew", "third"])?;
    assert_eq!(v["recipients"].as_array().map(|r| r.len()), Some(2), "{v}");

    phase("herald connect --count 3 prints them in order and acks");
    let out = herald(&c.addr(3), &["connect", "--uid", "cli-u", "--token", &tok, "--count", "3"])?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let bodies: Vec<&str> = lines.iter().map(|l| l["body"].as_str().unwrap()).collect();
    assert_eq!(bodies, vec!["first", "second", "third"]);
    assert_eq!(lines[2]["kind"], "group");
    eventually(Duration::from_secs(10), || {
        let v = herald_json(&a, &["settings", "--uid", "cli-u"])?;
        if v["queued"] != 0 {
            bail!("queued {v}");
        }
        Ok(())
    })?;

    phase("a bad token is refused with its code");
    let out = herald(&a, &["connect", "--uid", "cli-u", "--token", "v1.nope", "--count", "1"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad_token"), "{err}");

    phase("herald gateway lists the nodes");
    let v = herald_json(&a, &["gateway", "--uid", "cli-u"])?;
    assert_eq!(v["candidates"].as_array().map(|c| c.len()), Some(3), "{v}");
    assert!(v["best"]["node"].as_u64().is_some());
    Ok(())
}
