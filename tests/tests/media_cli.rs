//! The `herald` CLI for media, end to end against real processes:
//! `contacts`, `media upload|download|shared` (download resumed from a
//! partial file with Range), `group-send`, and `watch-folder` (each file
//! sent once and moved, half-written files skipped, nothing sent twice
//! across runs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use herald_tests::*;
use serde_json::Value;

fn herald_path() -> PathBuf {
    let p = heraldd_path().with_file_name("herald");
    assert!(p.exists(), "{} not found: run `cargo build --workspace --bins` first", p.display());
    p
}

/// Runs `herald` as `uid` (token from the test key) against `addr`.
fn herald(addr: &str, uid: &str, args: &[&str]) -> Result<Output> {
    Command::new(herald_path())
        .arg("--node")
        .arg(addr)
        .args(args)
        .env("HERALD_UID", uid)
        .env("HERALD_TOKEN", token(uid))
        .env("HERALD_API_KEY", TEST_API_KEY)
        .output()
        .context("run herald")
}

/// Runs a command that must succeed and print one JSON document.
fn herald_json(addr: &str, uid: &str, args: &[&str]) -> Result<Value> {
    let mut a = args.to_vec();
    a.push("--json");
    let out = herald(addr, uid, &a)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("herald {args:?} failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_str(&stdout).with_context(|| format!("not JSON: {stdout}"))
}

fn queued(addr: &str, uid: &str) -> Result<u64> {
    let (s, v) = get_json(addr, &format!("/v1/users/{uid}/settings"))?;
    anyhow::ensure!(s == 200, "settings: {s} {v}");
    v["queued"].as_u64().context("queued")
}

fn bytes(seed: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Contacts from the CLI make alice and bob friends; a file uploaded with
/// `media upload` downloads identical with `media download` as bob, also
/// when resumed from a partial file; `group-send FILE --group` reaches the
/// group's contact and a re-run is answered as a duplicate.
#[test]
fn cli_media_contacts_upload_download_group_send() -> Result<()> {
    let c = Cluster::start(
        3,
        Tuning { media_xml: Some(r#"<media reserve-bytes="0"/>"#.into()), ..Tuning::default() },
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let (a, b) = (c.addr(1), c.addr(2));
    let dir = tempfile::tempdir()?;

    phase("contacts");
    herald_json(&a, "alice", &["contacts", "add", "bob", "--group", "friends"])?;
    herald_json(&a, "alice", &["contacts", "add", "carol", "--group", "family"])?;
    herald_json(&b, "bob", &["contacts", "add", "alice"])?;
    let list = herald_json(&b, "alice", &["contacts", "list"])?;
    let contacts = list["contacts"].as_array().context("contacts")?;
    let bob = contacts.iter().find(|x| x["uid"] == "bob").context("bob listed")?;
    assert_eq!(
        (bob["friend"].as_bool(), bob["groups"][0].as_str()),
        (Some(true), Some("friends")),
        "{list}"
    );
    let carol = contacts.iter().find(|x| x["uid"] == "carol").context("carol listed")?;
    assert_eq!(carol["friend"].as_bool(), Some(false));

    phase("upload, download, resume");
    let data = bytes(7, 3_000_000);
    let src = dir.path().join("clip.mp4");
    std::fs::write(&src, &data)?;
    let up = herald_json(&a, "alice", &["media", "upload", src.to_str().unwrap()])?;
    let id = up["media_id"].as_str().context("media_id")?.to_string();
    assert_eq!(up["content_type"], "video/mp4", "{up}");
    let out = dir.path().join("got.mp4");
    herald_json(&b, "bob", &["media", "download", &id, "-o", out.to_str().unwrap()])?;
    assert_eq!(std::fs::read(&out)?, data);
    let out2 = dir.path().join("resumed.mp4");
    std::fs::write(dir.path().join("resumed.mp4.part"), &data[..1_234_567])?;
    herald_json(&c.addr(3), "bob", &["media", "download", &id, "-o", out2.to_str().unwrap()])?;
    assert_eq!(std::fs::read(&out2)?, data, "resumed from the .part file");
    assert!(!dir.path().join("resumed.mp4.part").exists());
    let shared = herald_json(&b, "bob", &["media", "shared", "alice"])?;
    assert_eq!(shared["media"][0]["media_id"].as_str(), Some(id.as_str()), "{shared}");
    let o = herald(&b, "carol", &["media", "shared", "alice"])?;
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("not_a_friend"),
        "{o:?}"
    );

    phase("group-send");
    let photo = dir.path().join("photo.jpg");
    std::fs::write(&photo, bytes(9, 50_000))?;
    let ans = herald_json(
        &a,
        "alice",
        &["group-send", photo.to_str().unwrap(), "--group", "friends", "--text", "hi"],
    )?;
    let r = ans["recipients"].as_array().context("recipients")?;
    assert_eq!(r.len(), 1, "{ans}");
    assert_eq!((r[0]["uid"].as_str(), r[0]["outcome"].as_str()), (Some("bob"), Some("stored")));
    assert_eq!(queued(&a, "bob")?, 1);
    assert_eq!(queued(&a, "carol")?, 0);
    let again = herald_json(
        &a,
        "alice",
        &["group-send", photo.to_str().unwrap(), "--group", "friends", "--text", "hi"],
    )?;
    assert_eq!(again["duplicate"].as_bool(), Some(true), "{again}");
    assert_eq!(queued(&a, "bob")?, 1, "a re-run is not sent twice");
    Ok(())
}

/// `watch-folder` group-sends every ready file once and moves it to
/// sent/; dotfiles and partial names stay; a file still being written is
/// not sent until it settles; a second run and a copy of an already-sent
/// file send nothing new.
#[test]
fn cli_watch_folder_sends_each_file_once_and_moves_it() -> Result<()> {
    let c = Cluster::start(
        1,
        Tuning { media_xml: Some(r#"<media reserve-bytes="0"/>"#.into()), ..Tuning::default() },
    )?;
    c.wait_leader(Duration::from_secs(10))?;
    let a = c.addr(1);
    herald_json(&a, "alice", &["contacts", "add", "bob", "--group", "friends"])?;
    herald_json(&a, "alice", &["contacts", "add", "dave", "--group", "work"])?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("a.jpg"), bytes(1, 20_000))?;
    std::fs::write(d.join("b.pdf"), bytes(2, 30_000))?;
    std::fs::write(d.join(".hidden"), b"x")?;
    std::fs::write(d.join("c.mp4.part"), b"partial")?;
    let watch = |settle: &str| -> Result<Output> {
        herald(
            &a,
            "alice",
            &[
                "watch-folder",
                d.to_str().unwrap(),
                "--once",
                "--settle",
                settle,
                "--group",
                "friends",
            ],
        )
    };

    phase("first pass");
    let o = watch("300ms")?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        names(&d.join("sent")).into_iter().filter(|n| !n.starts_with('.')).collect::<Vec<_>>(),
        vec!["a.jpg", "b.pdf"]
    );
    assert_eq!(names(d), vec![".hidden", "c.mp4.part", "sent"]);
    assert_eq!(queued(&a, "bob")?, 2);
    assert_eq!(queued(&a, "dave")?, 0, "dave is not in friends");

    phase("a file still being written is skipped");
    let growing = d.join("growing.mov");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (p, stop) = (growing.clone(), stop.clone());
        std::thread::spawn(move || -> std::io::Result<()> {
            let mut f = std::fs::File::create(p)?;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(&[7u8; 4096])?;
                f.flush()?;
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let o = watch("1s")?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(growing.exists(), "a growing file is not sent or moved");
    assert_eq!(queued(&a, "bob")?, 2);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().expect("writer")?;

    phase("settled: sent; then nothing is sent twice");
    let o = watch("300ms")?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!growing.exists() && d.join("sent").join("growing.mov").exists());
    assert_eq!(queued(&a, "bob")?, 3);
    std::fs::write(d.join("again.jpg"), bytes(1, 20_000))?; // same bytes as a.jpg
    let o = watch("300ms")?;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!d.join("again.jpg").exists(), "an already-sent file is moved");
    assert_eq!(queued(&a, "bob")?, 3, "nothing sent twice across runs");
    Ok(())
}
