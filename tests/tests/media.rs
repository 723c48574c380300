//! Real-process tests of media, contacts, group-send and sharing (MISSION
//! G1–G4, S1–S4; contract in docs/media.md): upload refusals and what a
//! failed upload leaves, dedup, a large file with bounded memory, edit
//! rules, group-send to a contact group, friends-only sharing with Range,
//! downloads after the receiving node dies, re-replication and GC.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use herald_client::session::{Message, Session, SessionConfig, SessionEvent};
use herald_tests::{eventually, phase, token, Cluster, Tuning, TEST_API_KEY};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into()
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

/// A request as `uid` (session token) with an optional JSON body.
fn call(method: &str, url: &str, uid: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let a = agent();
    let auth = format!("Bearer {}", token(uid));
    let mut r = match (method, body) {
        ("GET", _) => a.get(url).header("authorization", &auth).header("x-herald-user", uid).call(),
        ("DELETE", _) => a.delete(url).header("authorization", &auth).call(),
        ("PUT", b) => a
            .put(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(serde_json::to_vec(&b.cloned().unwrap_or(json!({})))?.as_slice()),
        (_, b) => a
            .post(url)
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .send(serde_json::to_vec(&b.cloned().unwrap_or(json!({})))?.as_slice()),
    }
    .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Asks for an upload; answers (status, body).
fn request_upload(addr: &str, uid: &str, size: u64, ct: &str, name: &str) -> Result<(u16, Value)> {
    call(
        "POST",
        &format!("http://{addr}/v1/users/{uid}/uploads"),
        uid,
        Some(&json!({"size": size, "content_type": ct, "name": name})),
    )
}

/// Streams `body` to an upload URL with its credential.
fn put_bytes(ticket: &Value, body: impl Read, len: u64) -> Result<(u16, Value)> {
    let url = ticket["upload_url"].as_str().context("upload_url")?;
    let cred = ticket["credential"].as_str().context("credential")?;
    let mut r = agent()
        .put(url)
        .header("authorization", &format!("Bearer {cred}"))
        .header("content-length", &len.to_string())
        .send(ureq::SendBody::from_reader(&mut { body }))
        .map_err(|e| anyhow::anyhow!("PUT {url}: {e}"))?;
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string()?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
}

/// Uploads bytes as `uid` through `addr`; answers the finished upload.
fn upload(addr: &str, uid: &str, bytes: &[u8], ct: &str, name: &str) -> Result<Value> {
    let (s, t) = request_upload(addr, uid, bytes.len() as u64, ct, name)?;
    if s != 201 {
        bail!("upload request: {s} {t}");
    }
    let (s, done) = put_bytes(&t, bytes, bytes.len() as u64)?;
    if s != 201 {
        bail!("upload: {s} {done}");
    }
    Ok(done)
}

/// Status, headers and body of an HTTP answer.
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

/// GET /v1/media/{id} as `viewer` on `addr`, then the bytes from the
/// access URL (with an optional Range); answers (status, headers, bytes).
fn download(addr: &str, id: &str, viewer: &str, range: Option<&str>) -> Result<Answer> {
    let (s, info) = call("GET", &format!("http://{addr}/v1/media/{id}"), viewer, None)?;
    if s != 200 {
        return Ok((
            s,
            vec![("code".into(), info["error"]["code"].as_str().unwrap_or_default().into())],
            Vec::new(),
        ));
    }
    let url = info["url"].as_str().context("url")?;
    let mut req = agent().get(url);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let mut resp = req.call()?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let body = resp.body_mut().with_config().limit(1 << 30).read_to_vec()?;
    Ok((status, headers, body))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Media files held under a node's data dir.
fn blob_files(data_dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let blobs = data_dir.join("media").join("blobs");
    if let Ok(shards) = std::fs::read_dir(blobs) {
        for s in shards.flatten() {
            if let Ok(files) = std::fs::read_dir(s.path()) {
                out.extend(files.flatten().map(|f| f.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    out.sort();
    out
}

fn tmp_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("media").join("tmp")).map(|d| d.count()).unwrap_or(0)
}

fn tuning(media: &str) -> Tuning {
    Tuning { media_xml: Some(media.to_string()), ..Tuning::default() }
}

/// Deterministic pseudo-random bytes.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// S1: an upload stating more than free space minus the reserve is
/// refused with 507, one over the user's quota with 403, a bad request
/// with 400/413, and no upload id is handed out for any of them.
#[test]
fn media_upload_refused_by_space_and_quota() -> Result<()> {
    phase("reserve: everything refused");
    let c = Cluster::start(1, tuning(r#"<media reserve-bytes="1000000000000000000"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);
    let (s, b) = request_upload(&a, "alice", 10, "image/jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (507, Some("insufficient_storage")), "{b}");
    drop(c);

    phase("quota and limits");
    let c = Cluster::start(
        1,
        tuning(r#"<media reserve-bytes="0" quota-bytes-per-user="1000" max-bytes="5000"/>"#),
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);
    let (s, b) = request_upload(&a, "alice", 1001, "image/jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("media_quota_exceeded")), "{b}");
    let (s, b) = request_upload(&a, "alice", 6000, "image/jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (413, Some("media_too_large")), "{b}");
    let (s, b) = request_upload(&a, "alice", 0, "image/jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_size")), "{b}");
    let (s, b) = request_upload(&a, "alice", 10, "jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_content_type")), "{b}");
    let (s, b) = call(
        "POST",
        &format!("http://{a}/v1/users/alice/uploads"),
        "bob",
        Some(&json!({"size": 1, "content_type": "a/b"})),
    )?;
    assert_eq!((s, b["error"]["code"].as_str()), (401, Some("wrong_user")), "{b}");

    phase("within the quota: accepted, then the quota counts it");
    let done = upload(&a, "alice", &noise(1, 900), "application/octet-stream", "n.bin")?;
    assert_eq!(done["size"], 900);
    let (s, b) = request_upload(&a, "alice", 101, "image/jpeg", "a.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("media_quota_exceeded")), "{b}");
    let (s, _) = request_upload(&a, "alice", 100, "image/jpeg", "a.jpg")?;
    assert_eq!(s, 201);

    phase("open uploads per user are capped (<media max-uploads-per-user>, default 4)");
    for _ in 0..4 {
        let (s, b) = request_upload(&a, "bob", 1, "image/jpeg", "b.jpg")?;
        assert_eq!(s, 201, "{b}");
    }
    let (s, b) = request_upload(&a, "bob", 1, "image/jpeg", "b.jpg")?;
    assert_eq!((s, b["error"]["code"].as_str()), (429, Some("too_many_uploads")), "{b}");
    let (s, _) = request_upload(&a, "carol", 1, "image/jpeg", "c.jpg")?;
    assert_eq!(s, 201, "another user is not affected");
    Ok(())
}

/// S2: a body shorter or longer than stated, or a stream cut mid-way,
/// leaves no media file, no temp file and no metadata; the upload id is
/// used up.
#[test]
fn media_upload_mismatch_and_broken_stream_leave_nothing() -> Result<()> {
    let mut c = Cluster::start(3, tuning(r#"<media reserve-bytes="0"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);

    phase("shorter than stated");
    let (_, t) = request_upload(&a, "alice", 1000, "application/octet-stream", "x")?;
    let (s, b) = put_bytes(&t, &noise(2, 500)[..], 500)?;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("size_mismatch")), "{b}");
    let (s, b) = put_bytes(&t, &noise(2, 1000)[..], 1000)?;
    assert_eq!(
        (s, b["error"]["code"].as_str()),
        (404, Some("unknown_upload")),
        "the id is used up: {b}"
    );

    phase("longer than stated");
    let (_, t) = request_upload(&a, "alice", 100, "application/octet-stream", "x")?;
    let (s, b) = put_bytes(&t, &noise(3, 200)[..], 200)?;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("size_mismatch")), "{b}");

    phase("stream cut mid-way");
    let (_, t) = request_upload(&a, "alice", 1 << 20, "application/octet-stream", "x")?;
    let url = t["upload_url"].as_str().unwrap();
    let path = url.split_once(&a).unwrap().1;
    let mut sock = std::net::TcpStream::connect(&a)?;
    write!(
        sock,
        "PUT {path} HTTP/1.1\r\nHost: {a}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        t["credential"].as_str().unwrap(),
        1 << 20
    )?;
    sock.write_all(&noise(4, 300_000))?;
    sock.flush()?;
    std::thread::sleep(Duration::from_millis(300));
    drop(sock);

    phase("nothing left anywhere");
    eventually(Duration::from_secs(5), || {
        for n in 1..=3 {
            let d = c.node(n).data_dir.clone();
            if !blob_files(&d).is_empty() || tmp_files(&d) != 0 {
                bail!("node {n}: files {:?}, tmp {}", blob_files(&d), tmp_files(&d));
            }
        }
        Ok(())
    })?;
    let (s, b) = call("GET", &format!("http://{a}/v1/users/alice/shared"), "alice", None)?;
    assert_eq!(s, 200);
    assert_eq!(b["media"].as_array().map(Vec::len), Some(0), "{b}");
    let (_, v) = herald_tests::get_json(&a, "/v1/cluster?local=true")?;
    assert_eq!(
        v["media"]["open_uploads"].as_u64(),
        Some(0),
        "every upload id is used up, the cut one too: {v}"
    );
    Ok(())
}

/// G2, S2: the same bytes uploaded twice (by two users) are stored once,
/// as one media on a majority of nodes; a large file (256 MiB, generated
/// here) goes up and comes back with the same hash while every node's
/// peak memory stays far below the file size.
#[test]
fn media_dedup_and_large_file_bounded_memory() -> Result<()> {
    let mut c = Cluster::start(3, tuning(r#"<media reserve-bytes="0"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(2);

    phase("dedup");
    let bytes = noise(5, 300_000);
    let first = upload(&a, "alice", &bytes, "application/octet-stream", "one.bin")?;
    let second = upload(&c.addr(3), "bob", &bytes, "application/octet-stream", "two.bin")?;
    assert_eq!(first["media_id"], second["media_id"]);
    assert_eq!(first["media_id"].as_str(), Some(sha256(&bytes).as_str()));
    assert_eq!(
        (first["duplicate"].as_bool(), second["duplicate"].as_bool()),
        (Some(false), Some(true))
    );
    let holders: usize = (1..=3).map(|n| blob_files(&c.node(n).data_dir.clone()).len()).sum();
    assert_eq!(
        holders,
        2,
        "one file on each of a majority (2 of 3) nodes: {first} {second} {:?}",
        (1..=3).map(|n| blob_files(&c.node(n).data_dir.clone())).collect::<Vec<_>>()
    );
    assert_eq!(first["replicas"].as_array().map(Vec::len), Some(2), "{first}");

    phase("status page and metrics show the media");
    let (s, v) = herald_tests::get_json(&a, "/v1/cluster")?;
    assert_eq!(s, 200);
    assert_eq!(
        (
            v["media"]["healthy"].as_bool(),
            v["media"]["media"].as_u64(),
            v["media"]["under_replicated"].as_u64()
        ),
        (Some(true), Some(1), Some(0)),
        "{v}"
    );
    assert_eq!(v["media"]["required_replicas"].as_u64(), Some(2));
    // Each member's own storage, asked of the member itself: the nodes
    // holding the file say 1 file of 300,000 bytes, the other 0; a
    // different node asked gives the same per-node answers.
    for asked in [a.clone(), c.addr(1)] {
        let (s, v) = herald_tests::get_json(&asked, "/v1/cluster")?;
        assert_eq!(s, 200);
        let per_node: Vec<(u64, u64, u64)> = v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                let m = &n["media"];
                (
                    n["number"].as_u64().unwrap(),
                    m["files"].as_u64().unwrap(),
                    m["bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        let expect: Vec<(u64, u64, u64)> = (1..=3)
            .map(|n| {
                let held = blob_files(&c.node(n).data_dir.clone()).len() as u64;
                (n, held, held * 300_000)
            })
            .collect();
        assert_eq!(per_node, expect, "each node's own media storage: {v}");
        assert!(
            v["nodes"].as_array().unwrap().iter().all(|n| n["media"]["healthy"] == true
                && n["media"]["free_bytes"].as_u64().is_some_and(|f| f > 0)),
            "{v}"
        );
    }
    let mut r = agent()
        .get(&format!("http://{a}/metrics"))
        .header("authorization", &format!("Bearer {TEST_API_KEY}"))
        .call()?;
    let text = r.body_mut().read_to_string()?;
    assert!(
        text.contains("herald_media_known 1") && text.contains("herald_media_uploads_total 1"),
        "{text}"
    );

    phase("large file: generate");
    const SIZE: u64 = 256 << 20;
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("big.bin");
    let mut h = Sha256::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        for i in 0..(SIZE >> 20) {
            let chunk = noise(100 + i, 1 << 20);
            h.update(&chunk);
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let want = hex(&h.finalize());

    phase("large file: upload");
    let t0 = Instant::now();
    let (s, t) = request_upload(&a, "alice", SIZE, "video/mp4", "big.mp4")?;
    assert_eq!(s, 201, "{t}");
    let (s, done) = put_bytes(&t, std::fs::File::open(&src)?, SIZE)?;
    assert_eq!(s, 201, "{done}");
    assert_eq!(done["media_id"].as_str(), Some(want.as_str()));
    eprintln!("256 MiB upload (2 replicas fsynced): {:?}", t0.elapsed());

    phase("large file: download through a node");
    let t0 = Instant::now();
    let (s, info) = call("GET", &format!("http://{}/v1/media/{want}", c.addr(1)), "alice", None)?;
    assert_eq!(s, 200, "{info}");
    let mut resp = agent().get(info["url"].as_str().unwrap()).call()?;
    assert_eq!(resp.status().as_u16(), 200);
    let mut r = resp.body_mut().with_config().limit(u64::MAX).reader();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got += n as u64;
        h.update(&buf[..n]);
    }
    assert_eq!(got, SIZE);
    assert_eq!(hex(&h.finalize()), want);
    eprintln!("256 MiB download: {:?}", t0.elapsed());

    phase("peak memory");
    for n in 1..=3 {
        let pid = c.node(n).pid().context("pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hwm_kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .context("VmHWM")?;
        eprintln!("node {n}: peak RSS {} MiB", hwm_kb / 1024);
        assert!(hwm_kb * 1024 < SIZE / 2, "node {n} peaked at {hwm_kb} KiB for a {SIZE}-byte file");
    }
    Ok(())
}

/// G4: an image above the configured maximum resolution is stored scaled
/// down, in the configured format; the id is the hash of the stored bytes.
#[test]
fn media_image_scaled_down_and_converted() -> Result<()> {
    let c = Cluster::start(
        1,
        tuning(
            r#"<media reserve-bytes="0"><edit max-width="640" max-height="480" format="jpeg" quality="80"/></media>"#,
        ),
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);
    let img = image::RgbImage::from_fn(1600, 1000, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
    });
    let mut png = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    let done = upload(&a, "alice", &png, "image/png", "wide.png")?;
    assert_eq!(done["content_type"], "image/jpeg", "{done}");
    assert_eq!(done["edited"], true);
    let id = done["media_id"].as_str().unwrap();
    let (s, h, bytes) = download(&a, id, "alice", None)?;
    assert_eq!(s, 200);
    assert_eq!(header(&h, "content-type"), Some("image/jpeg"));
    assert_eq!(sha256(&bytes), id, "the id is the hash of the stored (edited) bytes");
    let back = image::load_from_memory(&bytes)?;
    assert_eq!((back.width(), back.height()), (640, 400), "scaled to fit 640x480 keeping 16:10");

    phase("non-image passes unchanged");
    let raw = noise(9, 5000);
    let done = upload(&a, "alice", &raw, "application/pdf", "doc.pdf")?;
    assert_eq!(
        (done["edited"].as_bool(), done["media_id"].as_str()),
        (Some(false), Some(sha256(&raw).as_str()))
    );
    Ok(())
}

async fn session(seeds: Vec<String>, uid: &str) -> Result<Session> {
    let mut s = Session::connect(SessionConfig::new(seeds, uid, token(uid))).await?;
    match tokio::time::timeout(Duration::from_secs(10), s.recv()).await? {
        Some(SessionEvent::Connected { .. }) => Ok(s),
        other => bail!("expected Connected, got {other:?}"),
    }
}

async fn next_message(s: &mut Session, timeout: Duration) -> Option<Message> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, s.recv()).await {
            Ok(Some(SessionEvent::Message(m))) => return Some(m),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

/// G1–G3: a group-send to "friends" reaches exactly the contacts in that
/// group — the online one at once ("delivered"), the offline one when it
/// logs in — each with the media id and a link that works for it; a
/// contact outside the group gets nothing and cannot open the media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_group_send_reaches_exactly_the_group() -> Result<()> {
    // A push timeout well above a loaded CI's delivery time: bob's ack must
    // arrive within it for "delivered".
    let c = Cluster::start(
        3,
        Tuning { push_timeout_ms: 8000, ..tuning(r#"<media reserve-bytes="0"/>"#) },
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let (a, b) = (c.addr(1), c.addr(2));
    let seeds: Vec<String> = (1..=3).map(|n| format!("http://{}", c.addr(n))).collect();

    phase("contacts");
    for (who, groups) in
        [("bob", vec!["friends"]), ("carol", vec!["friends", "family"]), ("dave", vec!["family"])]
    {
        let (s, r) = call(
            "PUT",
            &format!("http://{a}/v1/users/alice/contacts/{who}"),
            "alice",
            Some(&json!({"groups": groups})),
        )?;
        assert_eq!(s, 200, "{r}");
    }
    let (s, r) =
        call("GET", &format!("http://{b}/v1/users/alice/contacts?group=friends"), "alice", None)?;
    assert_eq!(s, 200);
    let names: Vec<&str> =
        r["contacts"].as_array().unwrap().iter().map(|x| x["uid"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bob", "carol"]);

    phase("upload and group-send; bob online, carol and dave offline");
    let bytes = noise(11, 70_000);
    let done = upload(&a, "alice", &bytes, "video/mp4", "clip.mp4")?;
    let id = done["media_id"].as_str().unwrap().to_string();
    let mut bob = session(seeds.clone(), "bob").await?;
    let body =
        json!({"media_id": id, "text": "look", "groups": ["friends"], "idempotency_key": "gs-1"});
    // The answer waits (push timeout) for bob's acknowledgement: receive
    // and ack while the call is in flight.
    let call_task = tokio::task::spawn_blocking({
        let b = b.clone();
        move || call("POST", &format!("http://{b}/v1/users/alice/group-send"), "alice", Some(&body))
    });

    phase("bob got the id and a working link");
    let m = next_message(&mut bob, Duration::from_secs(5)).await.context("bob's message")?;
    bob.ack(vec![m.id]).await;
    let (s, ans) = call_task.await??;
    assert_eq!(s, 200, "{ans}");
    let mut outcomes: Vec<(String, String)> = ans["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["uid"].as_str().unwrap().into(), r["outcome"].as_str().unwrap().into()))
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![("bob".into(), "delivered".into()), ("carol".into(), "stored".into())]
    );
    assert_eq!(ans["media_id"].as_str(), Some(id.as_str()));
    assert_eq!(m.content_type, "application/vnd.herald.media+json");
    let v: Value = serde_json::from_slice(&m.body)?;
    assert_eq!(
        (v["media_id"].as_str(), v["text"].as_str(), v["from"].as_str()),
        (Some(id.as_str()), Some("look"), Some("alice"))
    );
    let link = v["link"].as_str().unwrap().to_string();
    let got = tokio::task::spawn_blocking(move || -> Result<Vec<u8>> {
        let (s, info) = call("GET", &link, "bob", None)?;
        anyhow::ensure!(s == 200, "link: {s} {info}");
        let mut r = agent().get(info["url"].as_str().unwrap()).call()?;
        Ok(r.body_mut().with_config().limit(1 << 30).read_to_vec()?)
    })
    .await??;
    assert_eq!(got, bytes);

    phase("carol gets it at login; dave gets nothing and cannot open it");
    let mut carol = session(seeds.clone(), "carol").await?;
    let m =
        next_message(&mut carol, Duration::from_secs(5)).await.context("carol's stored message")?;
    let v: Value = serde_json::from_slice(&m.body)?;
    assert_eq!(v["media_id"].as_str(), Some(id.as_str()));
    carol.ack(vec![m.id]).await;
    let mut dave = session(seeds.clone(), "dave").await?;
    assert!(
        next_message(&mut dave, Duration::from_millis(800)).await.is_none(),
        "dave is family, not friends"
    );
    let (a2, id2) = (a.clone(), id.clone());
    let (s, _, _) =
        tokio::task::spawn_blocking(move || download(&a2, &id2, "dave", None)).await??;
    assert_eq!(s, 403);

    phase("no group with contacts, not the owner");
    let (a2, id2) = (a.clone(), id.clone());
    let (s, r) = tokio::task::spawn_blocking(move || {
        call(
            "POST",
            &format!("http://{a2}/v1/users/alice/group-send"),
            "alice",
            Some(&json!({"media_id": id2, "groups": ["work"], "idempotency_key": "gs-2"})),
        )
    })
    .await??;
    assert_eq!((s, r["error"]["code"].as_str()), (400, Some("no_recipients")), "{r}");
    let (a2, id2) = (a.clone(), id.clone());
    let (s, r) = tokio::task::spawn_blocking(move || {
        call(
            "POST",
            &format!("http://{a2}/v1/users/bob/group-send"),
            "bob",
            Some(&json!({"media_id": id2, "idempotency_key": "gs-3"})),
        )
    })
    .await??;
    assert_eq!((s, r["error"]["code"].as_str()), (403, Some("not_owner")), "{r}");
    Ok(())
}

/// S3, S4: only friends (mutual contacts) see a user's shared page (JSON
/// and HTML) and download from it, including a Range request answered
/// 206 with the exact bytes; others get 403 with a code.
#[test]
fn media_shared_page_friends_only_with_range() -> Result<()> {
    let c = Cluster::start(3, tuning(r#"<media reserve-bytes="0"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let (a, b) = (c.addr(1), c.addr(3));
    let bytes = noise(12, 100_000);
    let id = upload(&a, "alice", &bytes, "audio/mpeg", "song.mp3")?["media_id"]
        .as_str()
        .unwrap()
        .to_string();
    call("PUT", &format!("http://{a}/v1/users/alice/contacts/bob"), "alice", None)?;
    call("PUT", &format!("http://{a}/v1/users/alice/contacts/eve"), "alice", None)?;

    phase("bob is not a friend until he adds alice");
    let page =
        |viewer: &str| call("GET", &format!("http://{b}/v1/users/alice/shared"), viewer, None);
    let (s, r) = page("bob")?;
    assert_eq!((s, r["error"]["code"].as_str()), (403, Some("not_a_friend")), "{r}");
    call("PUT", &format!("http://{b}/v1/users/bob/contacts/alice"), "bob", None)?;
    let (s, r) = page("bob")?;
    assert_eq!(s, 200, "{r}");
    let items = r["media"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0]["media_id"].as_str(), items[0]["name"].as_str()),
        (Some(id.as_str()), Some("song.mp3"))
    );

    phase("the listed URL streams, with Range");
    let url = items[0]["url"].as_str().unwrap();
    let mut r = agent().get(url).header("range", "bytes=1000-1999").call()?;
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(
        r.headers().get("content-range").and_then(|v| v.to_str().ok()),
        Some("bytes 1000-1999/100000")
    );
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("audio/mpeg"));
    assert_eq!(r.headers().get("content-length").and_then(|v| v.to_str().ok()), Some("1000"));
    assert_eq!(r.body_mut().read_to_vec()?, bytes[1000..2000].to_vec());
    let (s, h, tail) = download(&b, &id, "bob", Some("bytes=-10"))?;
    assert_eq!((s, header(&h, "content-range")), (206, Some("bytes 99990-99999/100000")));
    assert_eq!(tail, bytes[99_990..].to_vec());
    let (s, _, _) = download(&b, &id, "bob", Some("bytes=200000-"))?;
    assert_eq!(s, 416);

    phase("HTML for browsers");
    let mut r = agent()
        .get(&format!("http://{b}/v1/users/alice/shared?viewer=bob&token={}", token("bob")))
        .header("accept", "text/html")
        .call()?;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.body_mut().read_to_string()?;
    assert!(
        html.contains("song.mp3") && html.contains(&format!("/v1/media/{id}/content?access=")),
        "{html}"
    );

    phase("eve (one-way contact) and strangers: 403; a credential is per media");
    let (s, r) = page("eve")?;
    assert_eq!((s, r["error"]["code"].as_str()), (403, Some("not_a_friend")));
    let (s, h, _) = download(&a, &id, "eve", None)?;
    assert_eq!((s, header(&h, "code")), (403, Some("access_denied")));
    let other = url.replace(&id, &"0".repeat(64));
    let r = agent().get(&other).call()?;
    assert_eq!(r.status().as_u16(), 403, "an access credential opens only its media");
    let r = agent().get(&url.replace("access=", "access=x")).call()?;
    assert_eq!(r.status().as_u16(), 401);
    Ok(())
}

/// S2: after the node that received an upload acknowledged it and was
/// SIGKILLed, the media downloads intact from every other node.
#[test]
fn media_survives_kill_of_receiving_node() -> Result<()> {
    let mut c = Cluster::start(3, tuning(r#"<media reserve-bytes="0"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let bytes = noise(13, 2_000_000);
    let done = upload(&c.addr(2), "alice", &bytes, "video/mp4", "v.mp4")?;
    let id = done["media_id"].as_str().unwrap().to_string();
    phase("kill the receiving node");
    c.node(2).kill9()?;
    for n in [1, 3] {
        let addr = c.addr(n);
        let got = eventually(Duration::from_secs(10), || {
            let (s, _, b) = download(&addr, &id, "alice", None)?;
            anyhow::ensure!(s == 200, "node {n}: {s}");
            Ok(b)
        })?;
        assert_eq!(sha256(&got), id, "node {n}");
    }
    Ok(())
}

/// S2: a node that lost its media files (came back with an empty media
/// directory) gets its replicas back from the others; media nobody shares
/// any more is deleted from every node after the grace period.
#[test]
fn media_repair_and_garbage_collection() -> Result<()> {
    let mut c = Cluster::start(
        3,
        tuning(
            r#"<media reserve-bytes="0" repair-interval-ms="300" gc-grace-ms="500" upload-ttl-ms="3000"/>"#,
        ),
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let bytes = noise(14, 500_000);
    let done = upload(&c.addr(1), "alice", &bytes, "application/zip", "z.zip")?;
    let id = done["media_id"].as_str().unwrap().to_string();
    let holder = done["replicas"].as_array().unwrap()[1].as_u64().unwrap();

    phase("a replica loses its disk");
    c.node(holder).stop()?;
    let dir = c.node(holder).data_dir.join("media");
    std::fs::remove_dir_all(&dir)?;
    c.node(holder).start()?;
    eventually(Duration::from_secs(20), || {
        let files = blob_files(&c.node(holder).data_dir.clone());
        anyhow::ensure!(files == vec![id.clone()], "node {holder} holds {files:?}");
        Ok(())
    })?;

    phase("unshared: gone everywhere after the grace");
    let (s, r) =
        call("DELETE", &format!("http://{}/v1/users/alice/media/{id}", c.addr(1)), "alice", None)?;
    assert_eq!((s, r["removed"].as_bool()), (200, Some(true)), "{r}");
    eventually(Duration::from_secs(30), || {
        for n in 1..=3 {
            let files = blob_files(&c.node(n).data_dir.clone());
            anyhow::ensure!(files.is_empty(), "node {n} still holds {files:?}");
        }
        Ok(())
    })?;
    let (s, _, _) = download(&c.addr(1), &id, "alice", None)?;
    assert_eq!(s, 404);
    Ok(())
}

/// Each media route refuses a caller who is not its principal, with a
/// stable code, and changes nothing: without a token (upload request,
/// media info, unshare), with another user's token (unshare: `wrong_user`),
/// an upload PUT without or with a forged upload credential, the content
/// without an access credential or with a forged one. Afterwards the
/// media is still there and still downloads for its owner.
#[test]
fn media_routes_refuse_the_wrong_principal() -> Result<()> {
    let c = Cluster::start(1, tuning(r#"<media reserve-bytes="0"/>"#))?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);
    let bytes = noise(7, 4096);
    let done = upload(&a, "alice", &bytes, "application/octet-stream", "a.bin")?;
    let id = done["media_id"].as_str().context("media_id")?.to_string();
    let anon = |method: &str, url: &str, bearer: Option<&str>| -> Result<(u16, Value)> {
        let ag = agent();
        let mut r = match (method, bearer) {
            ("GET", Some(b)) => ag.get(url).header("authorization", &format!("Bearer {b}")).call(),
            ("GET", None) => ag.get(url).call(),
            ("DELETE", _) => ag.delete(url).call(),
            ("PUT", Some(b)) => {
                ag.put(url).header("authorization", &format!("Bearer {b}")).send(&b"x"[..])
            }
            ("PUT", None) => ag.put(url).send(&b"x"[..]),
            (_, _) => ag.post(url).header("content-type", "application/json").send(
                serde_json::to_vec(&json!({"size": 1, "content_type": "a/b", "name": "n"}))?
                    .as_slice(),
            ),
        }
        .map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string()?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    };
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or("<none>").to_string();

    phase("no token");
    let (s, v) = anon("POST", &format!("http://{a}/v1/users/alice/uploads"), None)?;
    assert_eq!((s, code(&v).as_str()), (401, "missing_token"), "{v}");
    let (s, v) = anon("GET", &format!("http://{a}/v1/media/{id}?viewer=alice"), None)?;
    assert_eq!((s, code(&v).as_str()), (401, "missing_token"), "{v}");
    let (s, v) = anon("DELETE", &format!("http://{a}/v1/users/alice/media/{id}"), None)?;
    assert_eq!((s, code(&v).as_str()), (401, "missing_token"), "{v}");

    phase("another user's token");
    let (s, v) = call("DELETE", &format!("http://{a}/v1/users/alice/media/{id}"), "bob", None)?;
    assert_eq!((s, code(&v).as_str()), (401, "wrong_user"), "{v}");

    phase("upload credentials");
    let (s, t) = request_upload(&a, "alice", 1, "application/octet-stream", "b.bin")?;
    assert_eq!(s, 201, "{t}");
    let url = t["upload_url"].as_str().context("upload_url")?;
    let (s, v) = anon("PUT", url, None)?;
    assert_eq!((s, code(&v).as_str()), (401, "missing_credential"), "{v}");
    let (s, v) = anon("PUT", url, Some("up1.forged.0.AAAA"))?;
    assert_eq!((s, code(&v).as_str()), (401, "bad_credential"), "{v}");

    phase("access credentials");
    let content = format!("http://{a}/v1/media/{id}/content");
    let (s, v) = anon("GET", &content, None)?;
    assert_eq!((s, code(&v).as_str()), (401, "missing_credential"), "{v}");
    let (s, v) = anon("GET", &format!("{content}?access=ac1.forged.0.AAAA"), None)?;
    assert_eq!((s, code(&v).as_str()), (401, "bad_credential"), "{v}");

    phase("nothing changed");
    let (s, _, got) = download(&a, &id, "alice", None)?;
    assert_eq!((s, sha256(&got)), (200, id.clone()));
    Ok(())
}
