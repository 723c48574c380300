//! Inputs that cannot wedge or crash a node (issue 14), against real
//! heraldd processes: floods of half-open connections on both ports,
//! answers over `max-response-bytes`, oversize inputs, and uploads that
//! stall or break.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use herald_tests::{get_json, login_event, phase, push, Cluster, Tuning};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The header timeout of these tests' nodes.
const HEADER_TIMEOUT: Duration = Duration::from_millis(3000);
/// The per-address cap of these tests' publish ports.
const PER_IP: usize = 64;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

fn tuning() -> Tuning {
    Tuning {
        limits_attrs: format!(
            "max-connections-per-ip=\"{PER_IP}\" header-timeout-ms=\"{}\"",
            HEADER_TIMEOUT.as_millis()
        ),
        ..Tuning::default()
    }
}

fn sock(addr: &str) -> SocketAddr {
    addr.parse().unwrap()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(format!("{from}:0").parse().unwrap())?;
    s.connect(to).await
}

/// `GET /healthz` over a fresh connection from `from`: the status line, or
/// an error if the connection was closed without an answer or nothing came
/// within 3 s.
async fn healthz_from(from: &str, to: SocketAddr) -> Result<String> {
    let fut = async {
        let mut c = connect_from(from, to).await?;
        c.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
        let mut out = String::new();
        c.read_to_string(&mut out).await?;
        anyhow::Ok(out)
    };
    let out =
        tokio::time::timeout(Duration::from_secs(3), fut).await.context("no answer in 3 s")??;
    match out.lines().next() {
        Some(l) if l.starts_with("HTTP/1.1") => Ok(l.to_string()),
        _ => bail!("closed without an answer: {out:?}"),
    }
}

/// Whether the server closed `c` (EOF or reset) within `within`.
async fn closed_within(c: &mut TcpStream, within: Duration) -> bool {
    let mut b = [0u8; 256];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, c.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // hyper may answer 408 before it closes: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The issue's flood, on the publish port: 300 half-sent HTTP requests
/// from 127.0.0.1 (more than `max-connections-per-ip`) do not keep
/// `/healthz` from answering another address (127.0.0.2) at once; the
/// connections beyond the cap are closed at once, the held ones after the
/// header timeout, and then 127.0.0.1 is served again.
#[test]
fn half_sent_requests_do_not_starve_healthz() -> Result<()> {
    let c = Cluster::start(1, tuning())?;
    c.wait_leader(Duration::from_secs(20))?;
    let publish = sock(&c.nodes[0].publish());
    rt().block_on(async {
        phase("flood the publish port with half-sent requests");
        let mut flood = Vec::new();
        let flooded = Instant::now();
        for _ in 0..300 {
            let mut s = connect_from("127.0.0.1", publish).await?;
            // A request line and one header, never the blank line.
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n").await?;
            flood.push(s);
        }
        let started = Instant::now();
        let st = healthz_from("127.0.0.2", publish).await?;
        assert!(st.contains("200"), "{st}");
        assert!(started.elapsed() < Duration::from_secs(2), "healthz took {:?}", started.elapsed());
        assert!(
            healthz_from("127.0.0.1", publish).await.is_err(),
            "127.0.0.1 holds its {PER_IP} connections: one more is closed"
        );
        // Beyond the cap: closed at once (well before the header timeout).
        let mut closed_now = 0;
        for s in flood.iter_mut() {
            if closed_within(s, Duration::from_millis(5)).await {
                closed_now += 1;
            }
        }
        if flooded.elapsed() < HEADER_TIMEOUT {
            assert_eq!(closed_now, 300 - PER_IP, "connections beyond the per-address cap");
        } else {
            // A very slow machine: some held ones may have timed out already.
            assert!(closed_now >= 300 - PER_IP, "{closed_now} closed at once");
        }

        phase("the held ones are closed after the header timeout");
        let mut held = 0;
        for s in flood.iter_mut() {
            if closed_within(s, HEADER_TIMEOUT + Duration::from_secs(2)).await {
                held += 1;
            }
        }
        assert_eq!(held, 300, "every half-sent request's connection is closed");
        let st = healthz_from("127.0.0.1", publish).await?;
        assert!(st.contains("200"), "{st}");
        anyhow::Ok(())
    })
}

/// The issue's flood, on the sync port: 300 idle sockets from 127.0.0.2 on
/// every node's sync port do not stop Raft: a write succeeds and reaches
/// every follower, a fresh gRPC call from 127.0.0.1 is answered, and the
/// idle sockets are closed after the header timeout.
#[test]
fn idle_sockets_do_not_block_the_sync_port() -> Result<()> {
    let c = Cluster::start(3, tuning())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let syncs: Vec<SocketAddr> =
        c.nodes.iter().map(|n| sock(&format!("127.0.0.1:{}", n.ports.sync))).collect();
    let leader_addr = c.addr(leader);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.publish()).collect();
    let rt = rt();
    phase("flood every sync port with idle sockets");
    let mut flood = rt.block_on(async {
        let mut flood = Vec::new();
        for s in &syncs {
            for _ in 0..300 {
                flood.push(connect_from("127.0.0.2", *s).await?);
            }
        }
        anyhow::Ok(flood)
    })?;
    phase("a write commits and replicates");
    let started = Instant::now();
    let rev = push(&leader_addr, vec![login_event("flood-u", 1, "web", "x")])?;
    assert!(started.elapsed() < Duration::from_secs(3), "write took {:?}", started.elapsed());
    for a in &addrs {
        herald_tests::eventually(Duration::from_secs(5), || {
            let (st, v) = get_json(a, "/v1/presence?uid=flood-u&consistency=local")?;
            match v["revision"].as_u64() {
                Some(r) if st == 200 && r >= rev && v["users"][0]["online"] == true => Ok(()),
                _ => Err(anyhow!("{a}: {st} {v}")),
            }
        })?;
    }
    rt.block_on(async {
        phase("a fresh gRPC call on a flooded sync port is answered");
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", syncs[0]))?;
        let mut client = herald_proto::raft::media_blobs_client::MediaBlobsClient::new(
            endpoint.connect().await?,
        );
        let req = herald_proto::raft::BlobRequest { id: "not-an-id".into(), ..Default::default() };
        match tokio::time::timeout(Duration::from_secs(3), client.get_blob(req)).await? {
            Ok(_) => bail!("a bogus blob id was served"),
            Err(s) => assert_ne!(s.code(), tonic::Code::Unavailable, "{s}"),
        }

        phase("the idle sockets are closed after the header timeout");
        let mut closed = 0;
        for s in flood.iter_mut() {
            if closed_within(s, HEADER_TIMEOUT + Duration::from_secs(2)).await {
                closed += 1;
            }
        }
        assert_eq!(closed, flood.len(), "every idle socket is closed");
        anyhow::Ok(())
    })
}

/// `max-response-bytes` of these tests' nodes (the smallest allowed).
const MAX_RESPONSE: usize = 64 * 1024;

/// A node with the smallest `max-response-bytes`.
fn small_answers() -> Tuning {
    Tuning { limits_attrs: format!("max-response-bytes=\"{MAX_RESPONSE}\""), ..Tuning::default() }
}

/// A login of `uid` with 8 ext entries of 1,000 bytes (about 8 KB of answer).
fn fat_login(uid: &str, sid: u64) -> serde_json::Value {
    let ext: serde_json::Map<String, serde_json::Value> =
        (0..8).map(|i| (format!("k{i}"), "x".repeat(1000).into())).collect();
    serde_json::json!({"type": "login", "uid": uid, "sid": sid, "client": "web", "ext": ext})
}

/// A presence query whose answer would pass `max-response-bytes` is
/// refused with `response_too_large` over HTTP (POST and GET) and gRPC,
/// while a smaller query of the same users is answered; a read route's
/// list over the limit (a group's members) is refused the same way, and
/// the write that made the group is not.
#[test]
fn answers_over_max_response_bytes_are_refused() -> Result<()> {
    let c = Cluster::start(1, small_answers())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let addr = c.addr(leader);
    let uids: Vec<String> = (0..10).map(|i| format!("fat{i}")).collect();
    push(&addr, uids.iter().enumerate().map(|(i, u)| fat_login(u, 100 + i as u64)).collect())?;

    phase("HTTP: 10 users (~80 KB) refused, 5 (~40 KB) answered");
    let (st, v) =
        herald_tests::post_json(&addr, "/v1/presence/query", &serde_json::json!({ "uids": uids }))?;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("response_too_large")), "{v}");
    let v = herald_tests::query(&addr, &uids[..5], "linearizable")?;
    assert_eq!(v["users"].as_array().map(Vec::len), Some(5));
    let q: String = uids.iter().map(|u| format!("uid={u}&")).collect();
    let (st, v) = get_json(&addr, &format!("/v1/presence?{q}"))?;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("response_too_large")), "{v}");

    phase("gRPC: the same");
    rt().block_on(async {
        let mut client = herald_client::HeraldClient::connect(&addr)
            .await?
            .with_credential(herald_tests::test_credential())
            .presence_client();
        let req = |uids: &[String]| herald_proto::v1::QueryRequest {
            uids: uids.to_vec(),
            ..Default::default()
        };
        let e = client.query(req(&uids)).await.expect_err("over the limit");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
        let code = e.metadata().get("x-herald-code").and_then(|v| v.to_str().ok());
        assert_eq!(code, Some("response_too_large"), "{e}");
        let ok = client.query(req(&uids[..5])).await?.into_inner();
        assert_eq!(ok.users.len(), 5);
        anyhow::Ok(())
    })?;

    phase("a group of 1,000 members of 100 bytes: the write is answered, the read refused");
    let members: Vec<String> = (0..1000).map(|i| format!("{i:0>100}")).collect();
    let (st, v) = herald_tests::put_json(
        &addr,
        "/v1/groups/big",
        &serde_json::json!({ "members": members }),
    )?;
    assert_eq!(st, 200, "{v}");
    let (st, v) = get_json(&addr, "/v1/groups/big")?;
    assert_eq!((st, v["error"]["code"].as_str()), (400, Some("response_too_large")), "{v}");
    Ok(())
}

/// An HTTP DELETE: (status, body as JSON or string).
fn delete(addr: &str, path: &str) -> Result<(u16, serde_json::Value)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "DELETE {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("{out:?}"))?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(serde_json::Value::String(body.into()))))
}

/// The node's last log index.
fn last_log_index(addr: &str) -> Result<u64> {
    let v = herald_tests::local_view(addr)?;
    v["last_log_index"].as_u64().ok_or_else(|| anyhow!("no last_log_index in {v}"))
}

/// Oversize and malformed inputs are refused with a 400 and their stable
/// code before anything reaches the log (the last log index does not
/// move): ext entries over the per-user cap, an oversize ext value, a
/// malformed media id to unshare, an oversize contact to remove and an
/// add-learner address that is not host:port; the user's record keeps its
/// ext.
#[test]
fn oversize_inputs_are_refused_before_the_log() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let addr = c.addr(leader);
    let ext = |keys: std::ops::Range<usize>| -> serde_json::Value {
        keys.map(|i| (format!("k{i}"), serde_json::Value::from("v"))).collect()
    };
    let event = |ext: serde_json::Value| serde_json::json!({"type": "login", "uid": "ext-u", "sid": 7, "client": "web", "ext": ext});
    push(&addr, vec![event(ext(0..30))])?;
    // Let the leader's own entries (if any) settle before counting.
    std::thread::sleep(Duration::from_millis(300));
    let before = last_log_index(&addr)?;
    let tok = herald_tests::token("ext-u");
    let code =
        |(st, v): (u16, serde_json::Value)| (st, v["error"]["code"].as_str().map(String::from));
    let refusals: Vec<(&str, (u16, serde_json::Value))> = vec![
        (
            "too_many_ext",
            herald_tests::post_json(
                &addr,
                "/v1/presence/events",
                &serde_json::json!({"events": [event(ext(28..33))]}),
            )?,
        ),
        (
            "invalid_event",
            herald_tests::post_json(
                &addr,
                "/v1/presence/events",
                &serde_json::json!({"events": [event(serde_json::json!({"big": "x".repeat(1025)}))]}),
            )?,
        ),
        (
            "invalid_media_id",
            delete(&addr, &format!("/v1/users/ext-u/media/{}?token={tok}", "Z".repeat(64)))?,
        ),
        (
            "invalid_uid",
            delete(&addr, &format!("/v1/users/ext-u/contacts/{}?token={tok}", "c".repeat(129)))?,
        ),
        (
            "invalid_address",
            herald_tests::post_json(
                &addr,
                "/v1/cluster/add-learner",
                &serde_json::json!({"number": 9, "sync": "x".repeat(300), "publish": "h:1"}),
            )?,
        ),
    ];
    for (want, answer) in refusals {
        assert_eq!(code(answer), (400, Some(want.to_string())), "{want}");
    }
    assert_eq!(last_log_index(&addr)?, before, "a refused input reached the log");
    let v = herald_tests::query(&addr, &["ext-u".to_string()], "linearizable")?;
    assert_eq!(v["users"][0]["ext"].as_object().map(|m| m.len()), Some(30), "{v}");
    Ok(())
}

/// Temporary files of uploads and replicas being received.
fn tmp_files(c: &Cluster) -> usize {
    let dir = c.nodes[0].data_dir.join("media").join("tmp");
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Asks for an upload of `size` bytes as `uid` (its session token; the
/// route is the user's own): (status, body).
fn request_upload(addr: &str, uid: &str, size: u64) -> Result<(u16, serde_json::Value)> {
    let token = herald_tests::token(uid);
    herald_tests::post_json_as(
        herald_tests::As::User { uid, token: &token },
        addr,
        &format!("/v1/users/{uid}/uploads"),
        &serde_json::json!({"size": size, "content_type": "application/octet-stream", "name": "x"}),
    )
}

/// Starts the PUT of an upload stating `size` bytes; the body is the
/// caller's to send.
fn start_put(addr: &str, ticket: &serde_json::Value, size: u64) -> Result<std::net::TcpStream> {
    use std::io::Write;
    let id = ticket["upload_id"].as_str().context("upload_id")?;
    let cred = ticket["credential"].as_str().context("credential")?;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "PUT /v1/uploads/{id} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {cred}\r\ncontent-length: {size}\r\n\r\n"
    )?;
    Ok(s)
}

/// The status and error code of the answer on `s`.
fn answer(s: &mut std::net::TcpStream) -> Result<(u16, String)> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body is complete (or the connection closes).
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if out.ends_with(b"}}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    let status = text.get(9..12).and_then(|c| c.parse().ok()).ok_or_else(|| anyhow!("{text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    Ok((status, format!("{} {}", v["error"]["code"].as_str().unwrap_or(""), v["error"]["message"])))
}

/// Upload slots are fair and uploads in progress expire: a user stops at
/// `max-uploads-per-user`, users with one open stop short of the reserve
/// kept for users with none, and the node stops at `max-uploads`; a body
/// that stalls for `body-timeout-ms` and one that drips past the upload's
/// lifetime (`upload-ttl-ms`) are cut with 408 `upload_timeout` and leave
/// no temporary file; expired uploads give their slots back.
#[test]
fn upload_slots_are_fair_and_uploads_expire() -> Result<()> {
    use std::io::Write;
    let media = r#"<media reserve-bytes="0" max-uploads="8" max-uploads-per-user="3" body-timeout-ms="1000" upload-ttl-ms="4000"/>"#;
    let c = Cluster::start(1, Tuning { media_xml: Some(media.into()), ..Tuning::default() })?;
    let leader = c.wait_leader(Duration::from_secs(20))?;
    let addr = c.addr(leader);
    let t0 = Instant::now();
    phase("slots: 3 per user, 2 of 8 kept for users with none");
    let mut tickets = Vec::new();
    for (uid, opened, refused) in
        [("alice", 3, true), ("bob", 3, true), ("carol", 1, true), ("dave", 1, false)]
    {
        for _ in 0..opened {
            let (st, t) = request_upload(&addr, uid, 1000)?;
            assert_eq!(st, 201, "{uid}: {t}");
            tickets.push(t);
        }
        if refused {
            let (st, v) = request_upload(&addr, uid, 1000)?;
            assert_eq!((st, v["error"]["code"].as_str()), (429, Some("too_many_uploads")), "{uid}");
        }
    }
    let (st, v) = request_upload(&addr, "erin", 1000)?;
    assert_eq!((st, v["error"]["code"].as_str()), (429, Some("too_many_uploads")), "full: {v}");

    phase("a stalled body is cut after body-timeout-ms");
    let mut s = start_put(&addr, &tickets[0], 1000)?;
    s.write_all(&[7u8; 100])?;
    herald_tests::eventually(Duration::from_secs(1), || match tmp_files(&c) {
        1 => Ok(()),
        n => bail!("{n} temporary files while receiving"),
    })?;
    let started = Instant::now();
    let (st, why) = answer(&mut s)?;
    assert_eq!(st, 408, "{why}");
    assert!(why.starts_with("upload_timeout") && why.contains("body-timeout-ms"), "{why}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert_eq!(tmp_files(&c), 0, "the temporary file is removed");

    phase("a body dripping under the body timeout is cut at the upload's lifetime");
    let mut s = start_put(&addr, &tickets[3], 1000)?;
    let mut sent = 0;
    while sent < 900 && s.write_all(&[1u8; 10]).is_ok() {
        sent += 10;
        std::thread::sleep(Duration::from_millis(300));
        if t0.elapsed() > Duration::from_secs(8) {
            break;
        }
    }
    let (st, why) = answer(&mut s)?;
    assert_eq!(st, 408, "{why}");
    assert!(why.starts_with("upload_timeout") && why.contains("lifetime"), "{why}");
    assert!(t0.elapsed() < Duration::from_secs(7), "cut at the lifetime: {:?}", t0.elapsed());
    assert_eq!(tmp_files(&c), 0, "the temporary file is removed");

    phase("expired uploads give their slots back");
    herald_tests::eventually(Duration::from_secs(8), || {
        match request_upload(&addr, "erin", 10)? {
            (201, _) => Ok(()),
            (st, v) => bail!("{st} {v}"),
        }
    })?;
    Ok(())
}

/// A replica stream from a peer (`PutBlob` on the sync port) that breaks
/// mid-way, or stalls for `body-timeout-ms`, leaves no temporary file.
#[test]
fn broken_and_stalled_blob_streams_leave_no_temp_file() -> Result<()> {
    use herald_proto::raft::media_blobs_client::MediaBlobsClient;
    use herald_proto::raft::BlobChunk;
    let media = r#"<media reserve-bytes="0" body-timeout-ms="1000"/>"#;
    let c = Cluster::start(1, Tuning { media_xml: Some(media.into()), ..Tuning::default() })?;
    c.wait_leader(Duration::from_secs(20))?;
    rt().block_on(async {
        let client = MediaBlobsClient::new(c.peer_channel(1, 1).await?);
        let chunk = BlobChunk { id: "ab".repeat(32), size: 1000, data: vec![5; 100] };
        for broken in [true, false] {
            phase(if broken { "a stream cut mid-way" } else { "a stream that stalls" });
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            tx.send(chunk.clone()).await?;
            let mut client = client.clone();
            let call = tokio::spawn(async move {
                client.put_blob(tokio_stream::wrappers::ReceiverStream::new(rx)).await
            });
            let t = Instant::now();
            while tmp_files(&c) != 1 {
                assert!(t.elapsed() < Duration::from_secs(2), "no temporary file while receiving");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if broken {
                call.abort();
            } else {
                let r = tokio::time::timeout(Duration::from_secs(3), call).await??;
                let e = r.expect_err("a stalled stream fails");
                assert_eq!(e.code(), tonic::Code::DeadlineExceeded, "{e}");
            }
            let t = Instant::now();
            while tmp_files(&c) != 0 {
                assert!(t.elapsed() < Duration::from_secs(3), "the temporary file stayed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            drop(tx);
        }
        anyhow::Ok(())
    })
}
