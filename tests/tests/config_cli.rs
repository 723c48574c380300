//! heraldd's start-up contract for configuration: the shipped files check
//! out, and a bad file stops start-up with file, line and field.

use std::process::Command;

use anyhow::Result;
use herald_tests::heraldd_path;

fn conf(p: &str) -> String {
    format!("{}/../conf/{p}", env!("CARGO_MANIFEST_DIR"))
}

/// `heraldd --check` accepts the embedded default and every shipped file.
#[test]
fn config_cli_shipped_files_check() -> Result<()> {
    let out = Command::new(heraldd_path()).arg("--check").output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("herald-local"));
    for f in [
        "herald.xml",
        "reference.xml",
        "cluster-3/node1.xml",
        "cluster-3/node2.xml",
        "cluster-3/node3.xml",
    ] {
        let out = Command::new(heraldd_path()).args(["--check", "--config", &conf(f)]).output()?;
        assert!(out.status.success(), "{f}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A config with an unknown attribute and one with a duplicate port make
/// heraldd exit non-zero with file:line and the field in the message.
#[test]
fn config_cli_bad_file_refused_with_location() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.xml");
    std::fs::write(
        &bad,
        "<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"d\"/>\n  <servers>\n    <server number=\"1\" host=\"127.0.0.1\" sync-port=\"7101\" time-port=\"7101\" publish-port=\"7103\"/>\n  </servers>\n</herald>\n",
    )?;
    let out = Command::new(heraldd_path()).args(["--config"]).arg(&bad).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.xml:4:") && err.contains("time-port"), "{err}");

    std::fs::write(
        &bad,
        "<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"d\" colour=\"red\"/>\n  <servers>\n    <server number=\"1\" host=\"127.0.0.1\" sync-port=\"7101\" time-port=\"7102\" publish-port=\"7103\"/>\n  </servers>\n</herald>\n",
    )?;
    let out = Command::new(heraldd_path()).args(["--config"]).arg(&bad).output()?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.xml:2:") && err.contains("colour"), "{err}");
    Ok(())
}

/// `<log format="json"/>`: every line heraldd writes while it starts, wins
/// its election and serves is one JSON object carrying the cluster name
/// and the node number (what a log shipper indexes by), with a level.
#[test]
fn config_cli_json_log_lines_carry_cluster_and_node() -> Result<()> {
    use herald_tests::{Cluster, Tuning, CLUSTER_NAME};
    let tuning = Tuning { extra_xml: "<log format=\"json\"/>".into(), ..Tuning::default() };
    let mut c = Cluster::start(1, tuning)?;
    c.wait_leader(std::time::Duration::from_secs(20))?;
    c.node(1).stop()?;
    let text = std::fs::read_to_string(&c.node(1).log)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "too few log lines: {text}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).map_err(|e| anyhow::anyhow!("not JSON ({e}): {l}"))?;
        assert_eq!(v["cluster"], CLUSTER_NAME, "{l}");
        assert_eq!(v["node"], 1, "{l}");
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    assert!(text.contains("heraldd serving"), "{text}");
    Ok(())
}
