//! Principals on the publish port (issue 14), against a real node: every
//! entry of the route table (`herald_node::api::routes::ROUTES`) tried
//! anonymously, with the wrong scope, as another user and as the right
//! principal; a Hello cannot take another user's sid; idempotency keys
//! are per principal; tokens beyond the lifetime cap and development keys
//! under `<security mode="production">` are refused.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use herald_node::api::routes::{Route, Rule, Verb, ROUTES};
use herald_proto::apikey::Scope;
use herald_proto::v1 as pb;
use herald_tests::*;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// An API key with `presence:write` only (the walk's second wrong-scope key).
const WRITE_KEY: &str = "hk_walk-presence-write-key-00000000000000000";

/// The walk's `<access>`: every scope, presence:read only, presence:write only.
fn walk_access() -> String {
    format!(
        "<access>\n    <api-key name=\"all\" hash=\"{}\" scopes=\"{ALL_SCOPES}\"/>\n    <api-key name=\"reader\" hash=\"{}\" scopes=\"presence:read\"/>\n    <api-key name=\"writer\" hash=\"{}\" scopes=\"presence:write\"/>\n  </access>",
        herald_proto::apikey::hash(TEST_API_KEY),
        herald_proto::apikey::hash(TEST_READ_KEY),
        herald_proto::apikey::hash(WRITE_KEY),
    )
}

/// A key that lacks the scope a route needs.
fn wrong_key(r: &Route) -> &'static str {
    match r.rule {
        Rule::Principal { app: Some(Scope::PresenceRead), .. } => WRITE_KEY,
        _ => TEST_READ_KEY,
    }
}

/// The concrete path of an HTTP entry: `{uid}` is alice, other
/// parameters a group, a contact and an unknown media id.
fn concrete(path: &str) -> String {
    let zeros = "0".repeat(64);
    let p = path
        .replace("{uid}", "alice")
        .replace("{name}", "walk-group")
        .replace("{contact}", "bob")
        .replace("{id}", &zeros);
    match path {
        "/v1/presence" | "/v1/gateway" => format!("{p}?uid=alice"),
        _ => p,
    }
}

/// A body the route's handler can read (None: no body). Admin routes get
/// one without `number`, so that even the right principal changes nothing.
fn body(path: &str) -> Option<Value> {
    Some(match path {
        "/v1/presence/events" => json!({"events": [login_event("alice", 0, "web", "walk")]}),
        "/v1/presence/query" => json!({"uids": ["alice"]}),
        p if p.starts_with("/v1/cluster/") => json!({"nope": 1}),
        "/v1/messages" => json!({"idempotency_key": "walk", "from": "alice", "to": ["bob"]}),
        "/v1/groups/{name}" => json!({"members": ["alice"]}),
        "/v1/users/{uid}/settings" => json!({"offline": true}),
        "/v1/users/{uid}/uploads" => json!({"size": 1, "content_type": "a/b", "name": "n"}),
        "/v1/users/{uid}/group-send" => json!({"media_id": "0".repeat(64), "idempotency_key": "k"}),
        "/v1/users/{uid}/contacts/{contact}" => json!({}),
        _ => return None,
    })
}

/// One HTTP call of an entry as `who`: (status, code).
fn http_call(addr: &str, r: &Route, who: As) -> Result<(u16, String)> {
    let method = match r.verb {
        Verb::Get => "GET",
        Verb::Put => "PUT",
        Verb::Post => "POST",
        Verb::Delete => "DELETE",
        Verb::Grpc => unreachable!(),
    };
    let b = match (r.verb, body(r.path)) {
        (Verb::Put | Verb::Post, Some(b)) => Some(("application/json", serde_json::to_vec(&b)?)),
        (Verb::Put | Verb::Post, None) => Some(("application/json", b"{}".to_vec())),
        _ => None,
    };
    let (st, v) = request(who, method, addr, &concrete(r.path), b)?;
    Ok((st, v["error"]["code"].as_str().unwrap_or("").to_string()))
}

/// One unary gRPC call of an entry as `who`, with an empty message:
/// Ok(()) or (HTTP status of the code, code). The guard decides from the
/// path and metadata alone, before the body is read.
async fn grpc_call(addr: &str, r: &Route, who: As<'_>) -> Result<Result<(), (u16, String)>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .connect()
        .await?;
    let mut g = tonic::client::Grpc::new(ch);
    g.ready().await?;
    let mut req = tonic::Request::new(());
    match who {
        As::Anonymous => {}
        As::Bearer(b) => {
            req.metadata_mut().insert("authorization", format!("Bearer {b}").parse()?);
        }
        As::User { uid, token } => {
            req.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
            req.metadata_mut().insert("x-herald-user", uid.parse()?);
        }
    }
    let path = http::uri::PathAndQuery::from_static(r.path);
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match g.unary::<(), (), _>(req, path, codec).await {
        Ok(_) => Ok(Ok(())),
        Err(s) => {
            let code = s
                .metadata()
                .get("x-herald-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let http = herald_proto::codes::named(&code).map_or(0, |c| c.http);
            Ok(Err((http, code)))
        }
    }
}

/// (status, code) of one call, HTTP or gRPC alike (gRPC success: 200).
async fn call(addr: &str, r: &Route, who: As<'_>) -> Result<(u16, String)> {
    if r.verb == Verb::Grpc {
        return Ok(grpc_call(addr, r, who).await?.err().unwrap_or((200, String::new())));
    }
    let (addr, r) = (addr.to_string(), *r);
    let who_owned: (u8, String, String) = match who {
        As::Anonymous => (0, String::new(), String::new()),
        As::Bearer(b) => (1, b.to_string(), String::new()),
        As::User { uid, token } => (2, uid.to_string(), token.to_string()),
    };
    tokio::task::spawn_blocking(move || {
        let who = match who_owned.0 {
            0 => As::Anonymous,
            1 => As::Bearer(&who_owned.1),
            _ => As::User { uid: &who_owned.1, token: &who_owned.2 },
        };
        http_call(&addr, &r, who)
    })
    .await?
}

/// What must be answered to a caller without the right credential.
fn refusal_ok(r: &Route, who: &str, got: &(u16, String)) -> bool {
    let (st, code) = (got.0, got.1.as_str());
    match (r.rule, who) {
        (Rule::Anonymous, _) => st == 200,
        (Rule::Capability, "anonymous") => (st, code) == (401, "missing_credential"),
        // A key or token is no upload/access credential.
        (Rule::Capability, _) => st == 401,
        (Rule::Principal { app: None, .. }, "anonymous") => (st, code) == (401, "missing_token"),
        (_, "anonymous") => (st, code) == (401, "missing_credential"),
        (_, "wrong scope") => (st, code) == (403, "forbidden"),
        (Rule::Principal { user: Some(_), .. }, "another user") => {
            (st, code) == (401, "wrong_user")
        }
        (_, "another user") => (st, code) == (403, "forbidden"),
        _ => false,
    }
}

/// The node's last log index (every write is one entry or more).
fn log_index(addr: &str) -> Result<u64> {
    local_view(addr)?["last_log_index"].as_u64().context("last_log_index")
}

/// Every route of the table, tried anonymously, with a key lacking its
/// scope and as another user (alice's routes with mallory's token), is
/// refused with the stable code of its rule — 401 `missing_credential`
/// (`missing_token` on a user's own route), 403 `forbidden`, 401
/// `wrong_user` — and nothing is written: the log does not grow. Then the
/// right principal (the all-scopes key, and alice herself where users may
/// call) gets past the guard on every route: never a 401 or 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn principals_route_walk() -> Result<()> {
    let c = Cluster::start(1, Tuning { access_xml: Some(walk_access()), ..Tuning::default() })?;
    let a = c.addr(1);
    {
        let c = &c;
        tokio::task::block_in_place(|| c.wait_leader(Duration::from_secs(20)))?;
    }
    // Startup writes (the gateway's restart reset) settle first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The standard streaming gRPC services (health Watch, reflection) are
    // anonymous and never answer a unary call's one message and close:
    // grpc_standard.rs calls them with their real clients.
    let streaming = |r: &Route| {
        herald_node::api::routes::STANDARD_GRPC.contains(&r.path) && !r.path.ends_with("/Check")
    };
    let walked: Vec<&Route> =
        ROUTES.iter().filter(|r| r.rule != Rule::Hello && !streaming(r)).collect();
    assert!(walked.len() >= 40, "the table has {} entries", walked.len());
    let before = tokio::task::block_in_place(|| log_index(&a))?;

    let mallory = token("mallory");
    let mut bad = Vec::new();
    for r in &walked {
        let tries = [
            ("anonymous", As::Anonymous),
            ("wrong scope", As::Bearer(wrong_key(r))),
            ("another user", As::User { uid: "alice", token: &mallory }),
        ];
        for (who, cred) in tries {
            let got = call(&a, r, cred).await?;
            if !refusal_ok(r, who, &got) {
                bad.push(format!("{} {} {who}: {got:?}", r.verb.as_str(), r.path));
            }
        }
    }
    assert!(bad.is_empty(), "wrong answers:\n{}", bad.join("\n"));
    let after = tokio::task::block_in_place(|| log_index(&a))?;
    assert_eq!(after, before, "a refused request wrote to the log");

    phase("the right principal passes the guard everywhere");
    let alice = token("alice");
    for r in &walked {
        let mut rights = vec![("key", As::Bearer(TEST_API_KEY))];
        if let Rule::Principal { user: Some(_), .. } = r.rule {
            rights.push(("alice", As::User { uid: "alice", token: &alice }));
        }
        if matches!(r.rule, Rule::Principal { app: None, .. }) {
            rights.remove(0);
        }
        // Capabilities are the media tests' (they need an upload first);
        // the gRPC admin methods take their number from the message, and an
        // empty one (node 0) would be a real membership change: their
        // HTTP twins, with a body the handler refuses, show the key passes.
        let grpc_admin = r.verb == Verb::Grpc
            && matches!(r.rule, Rule::Principal { app: Some(Scope::Admin), .. });
        if r.rule == Rule::Capability || grpc_admin {
            continue;
        }
        for (who, cred) in rights {
            let got = call(&a, r, cred).await?;
            if got.0 == 401 || got.0 == 403 || got.1 == "not_found" {
                bad.push(format!("{} {} as {who}: {got:?}", r.verb.as_str(), r.path));
            }
        }
    }
    assert!(bad.is_empty(), "the right principal was refused:\n{}", bad.join("\n"));
    Ok(())
}

/// A path the table does not list, or a listed path with another method,
/// is refused `not_found` before any handler, whatever the credential.
#[test]
fn principals_unlisted_routes_refused() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    for (who, method, path) in [
        (ADMIN, "GET", "/v1/secret"),
        (ADMIN, "DELETE", "/v1/presence/events"),
        (As::Anonymous, "POST", "/healthz"),
    ] {
        let (st, v) = request(who, method, &a, path, None)?;
        assert_eq!((st, v["error"]["code"].as_str()), (404, Some("not_found")), "{method} {path}");
    }
    Ok(())
}

/// With `<access public-metrics="true">` anyone reads `/metrics`, and
/// every other route still needs its principal; without it (the default,
/// see the route walk) `/metrics` needs the `metrics` scope.
#[test]
fn principals_public_metrics() -> Result<()> {
    let access = access_xml().replace("<access>", "<access public-metrics=\"true\">");
    let c = Cluster::start(1, Tuning { access_xml: Some(access), ..Tuning::default() })?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    let (st, v) = request(As::Anonymous, "GET", &a, "/metrics", None)?;
    assert!(st == 200 && v.as_str().is_some_and(|t| t.contains("herald_")), "{st} {v}");
    let (st, v) = get_json_as(As::Anonymous, &a, "/v1/cluster")?;
    assert_eq!((st, v["error"]["code"].as_str()), (401, Some("missing_credential")), "{v}");
    Ok(())
}

/// Opens a raw session as `uid` naming `sid`; the first error code, if
/// the server refused.
async fn hello(addr: &str, uid: &str, sid: u64) -> Result<Option<String>> {
    let mut c = pb::gateway_client::GatewayClient::connect(format!("http://{addr}")).await?;
    let (tx, rx) = mpsc::channel(8);
    let h = pb::Hello { uid: uid.into(), token: token(uid), client: "mobile".into(), sid };
    tx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Hello(h)) }).await?;
    let mut frames = c.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), frames.message()).await;
    Ok(match first {
        Ok(Ok(Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Error(e)) }))) => {
            Some(e.code)
        }
        Ok(Ok(Some(_))) => None,
        Ok(Err(s)) => {
            s.metadata().get("x-herald-code").and_then(|v| v.to_str().ok()).map(Into::into)
        }
        other => bail!("no answer to the Hello: {other:?}"),
    })
}

/// A Hello with a valid token for mallory and victim's sid is refused
/// with `sid_taken`, and the sid still resolves to victim; a Hello with
/// one's own sid opens the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn principals_hello_cannot_take_another_users_sid() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    let a = c.addr(1);
    tokio::task::block_in_place(|| -> Result<()> {
        c.wait_leader(Duration::from_secs(20))?;
        push(&a, vec![login_event("victim", 777, "web", "v")])?;
        Ok(())
    })?;
    assert_eq!(hello(&a, "mallory", 777).await?.as_deref(), Some("sid_taken"));
    let (st, v) = tokio::task::block_in_place(|| get_json(&a, "/v1/presence?sid=777"))?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["users"][0]["uid"], "victim", "{v}");
    assert_eq!(hello(&a, "victim", 777).await?, None, "the owner's own sid is fine");
    Ok(())
}

/// Idempotency keys are per principal: a key an application used does not
/// turn a user's message with the same key into a duplicate (nor reveal the
/// first message's recipients), while each principal's own retry is one.
/// A user sends only as itself (`wrong_user` for another `from`).
#[test]
fn principals_idempotency_keys_are_per_principal() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let a = c.addr(1);
    let alice = token("alice");
    let me = As::User { uid: "alice", token: &alice };
    let msg = |to: &str| json!({"idempotency_key": "same", "from": "alice", "to": [to]});
    let (st, first) = post_json(&a, "/v1/messages", &msg("secret-recipient"))?;
    assert_eq!(st, 200, "{first}");
    let (st, mine) = post_json_as(me, &a, "/v1/messages", &msg("bob"))?;
    assert_eq!(st, 200, "{mine}");
    assert_eq!(mine["duplicate"], false, "{mine}");
    assert_eq!(mine["recipients"][0]["uid"], "bob", "{mine}");
    assert!(!mine.to_string().contains("secret-recipient"), "{mine}");
    let (_, again) = post_json_as(me, &a, "/v1/messages", &msg("bob"))?;
    assert_eq!(
        (again["duplicate"].as_bool(), &again["message_id"]),
        (Some(true), &mine["message_id"])
    );
    let (_, retry) = post_json(&a, "/v1/messages", &msg("secret-recipient"))?;
    assert_eq!(
        (retry["duplicate"].as_bool(), &retry["message_id"]),
        (Some(true), &first["message_id"])
    );
    let forged = json!({"idempotency_key": "f", "from": "bob", "to": ["carol"]});
    let (st, v) = post_json_as(me, &a, "/v1/messages", &forged)?;
    assert_eq!((st, v["error"]["code"].as_str()), (401, Some("wrong_user")), "{v}");
    Ok(())
}

/// A session token expiring beyond `<auth max-token-lifetime-s>` (the
/// year-2096 expiry jepsen once used) is refused with `token_lifetime` on
/// a user's route and on a Hello; one within it works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn principals_token_lifetime_capped() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    let a = c.addr(1);
    tokio::task::block_in_place(|| c.wait_leader(Duration::from_secs(20)))?;
    let long = herald_proto::token::issue(TEST_AUTH_KEY.as_bytes(), "alice", 4_000_000_000);
    let who = As::User { uid: "alice", token: &long };
    let (st, v) = tokio::task::block_in_place(|| get_json_as(who, &a, "/v1/users/alice/contacts"))?;
    assert_eq!((st, v["error"]["code"].as_str()), (401, Some("token_lifetime")), "{v}");
    let ok = token("alice");
    let who = As::User { uid: "alice", token: &ok };
    let (st, v) = tokio::task::block_in_place(|| get_json_as(who, &a, "/v1/users/alice/contacts"))?;
    assert_eq!(st, 200, "{v}");

    let mut g = pb::gateway_client::GatewayClient::connect(format!("http://{a}")).await?;
    let (tx, rx) = mpsc::channel(8);
    let h = pb::Hello { uid: "alice".into(), token: long, client: "web".into(), sid: 0 };
    tx.send(pb::ClientFrame { frame: Some(pb::client_frame::Frame::Hello(h)) }).await?;
    let mut frames = g.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    match tokio::time::timeout(Duration::from_secs(10), frames.message()).await {
        Ok(Ok(Some(pb::ServerFrame { frame: Some(pb::server_frame::Frame::Error(e)) }))) => {
            assert_eq!(e.code, "token_lifetime")
        }
        other => bail!("expected a token_lifetime refusal, got {other:?}"),
    }
    Ok(())
}

/// A node whose XML holds the development HMAC key says so loudly at start;
/// the same XML under `<security mode="production">` does not start, and
/// the error names the key.
#[test]
fn principals_development_keys_warned_and_refused_in_production() -> Result<()> {
    let dev = "<auth mode=\"hmac\" key=\"herald-dev-key-change-me-0001\"/>".to_string();
    let c = Cluster::start(1, Tuning { auth_xml: Some(dev.clone()), ..Tuning::default() })?;
    c.wait_leader(Duration::from_secs(20))?;
    let log = std::fs::read_to_string(&c.nodes[0].log)?;
    assert!(log.contains("DEVELOPMENT KEY IN USE") && log.contains("WARN"), "{log}");

    let prod = Tuning {
        auth_xml: Some(format!("{dev}\n  <security mode=\"production\"/>")),
        ..Tuning::default()
    };
    let p = Cluster::configure(1, prod)?;
    let out = std::process::Command::new(heraldd_path())
        .arg("--config")
        .arg(&p.nodes[0].config)
        .output()?;
    assert!(!out.status.success(), "a production node started with the development key");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("development key") && err.contains("production"), "{err}");
    Ok(())
}

/// `herald key new` prints a key and an `<api-key>` line; a node listing
/// that line accepts the key with its scopes and refuses it elsewhere.
#[test]
fn principals_key_new_round_trip() -> Result<()> {
    let herald = heraldd_path().with_file_name("herald");
    let out = std::process::Command::new(&herald)
        .args(["key", "new", "--name", "reader2", "--scopes", "presence:read", "--json"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let (key, xml) = (v["key"].as_str().context("key")?, v["xml"].as_str().context("xml")?);
    let c = Cluster::start(
        1,
        Tuning { access_xml: Some(format!("<access>{xml}</access>")), ..Tuning::default() },
    )?;
    let a = c.addr(1);
    eventually(Duration::from_secs(20), || {
        let (st, v) =
            post_json_as(As::Bearer(key), &a, "/v1/presence/query", &json!({"uids": ["u"]}))?;
        if st != 200 {
            bail!("{st} {v}");
        }
        Ok(())
    })?;
    let (st, v) = post_json_as(As::Bearer(key), &a, "/v1/presence/events", &json!({"events": []}))?;
    assert_eq!((st, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (st, v) = get_json_as(As::Bearer("hk_unknown"), &a, "/v1/presence?uid=u")?;
    assert_eq!((st, v["error"]["code"].as_str()), (401, Some("bad_key")), "{v}");
    Ok(())
}
