//! The node's OpenAPI document (`GET /v1/openapi.json`, issue 18), fetched
//! anonymously from a real heraldd and checked by an independent
//! validator (Python's openapi-spec-validator, installed by
//! scripts/setup-test-deps).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use herald_node::api::routes::{Verb, ROUTES};
use herald_tests::{get_json, Cluster, Tuning};

/// The served document is valid OpenAPI 3.1 by an independent validator,
/// answers without a credential, and has an operation for every HTTP
/// route of the route table, each with its security and its stable codes
/// (a key route lists `forbidden`, a JSON route `malformed_json`).
#[test]
fn openapi_document_is_valid_and_complete() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let (st, doc) = get_json(&c.addr(1), "/v1/openapi.json")?;
    assert_eq!(st, 200, "{doc}");

    let mut py = Command::new("python3")
        .args([
            "-c",
            "import json,sys\nfrom openapi_spec_validator import validate\nvalidate(json.load(sys.stdin))\nprint('valid')",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("python3 (scripts/setup-test-deps installs openapi-spec-validator)")?;
    py.stdin.take().unwrap().write_all(doc.to_string().as_bytes())?;
    let out = py.wait_with_output()?;
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("valid"),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut n = 0;
    for r in ROUTES.iter().filter(|r| r.verb != Verb::Grpc) {
        let op = &doc["paths"][r.path][r.verb.as_str().to_lowercase()];
        assert!(op.is_object(), "{} {} is not in the document", r.verb.as_str(), r.path);
        assert!(
            op["x-herald-codes"].as_array().is_some_and(
                |c| !c.is_empty() || r.rule == herald_node::api::routes::Rule::Anonymous
            ),
            "{}",
            r.path
        );
        n += 1;
    }
    assert!(n >= 30, "{n} HTTP routes");
    let codes = |p: &str, m: &str| doc["paths"][p][m]["x-herald-codes"].to_string();
    assert!(codes("/v1/presence/query", "post").contains("\"forbidden\""));
    assert!(codes("/v1/presence/query", "post").contains("\"malformed_json\""));
    assert!(codes("/v1/presence/query", "post").contains("\"too_many_ids\""));
    assert_eq!(
        doc["paths"]["/v1/presence/query"]["post"]["security"][0]["apiKey"][0],
        "presence:read"
    );
    Ok(())
}
