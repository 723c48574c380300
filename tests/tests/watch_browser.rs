//! The example page `docs/presence-badges.html` (live presence badges over
//! SSE, issue 15) in a real headless Chromium, against a real heraldd.
//!
//! The page is served by a small stand-in for a web platform's server (in
//! this test process): it serves the page and forwards
//! `/v1/presence/watch` to the node, adding the API key, as a platform
//! would (the key never reaches the browser). The test reads the page's
//! DOM through the DevTools protocol (`--remote-debugging-port`).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use herald_tests::browser::Browser;
use herald_tests::{phase, push, Cluster, Tuning, TEST_API_KEY};
use serde_json::{json, Value};

const PAGE: &str = include_str!("../../docs/presence-badges.html");

/// The platform's server: the page at `/`, `/v1/presence/watch` forwarded.
struct Platform {
    addr: String,
    /// Open forwarded streams (browser side, node side), to cut them.
    open: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    /// The request heads of every forwarded watch, in order.
    watches: Arc<Mutex<Vec<String>>>,
}

fn read_head(r: &mut BufReader<TcpStream>) -> Result<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed in the request head");
        }
        if line == "\r\n" {
            return Ok(head);
        }
        head.push_str(&line);
    }
}

impl Platform {
    fn start(node: String) -> Result<Platform> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?.to_string();
        let p = Platform { addr, open: Arc::default(), watches: Arc::default() };
        let (open, watches) = (p.open.clone(), p.watches.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (node, open, watches) = (node.clone(), open.clone(), watches.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &node, &open, &watches);
                });
            }
        });
        Ok(p)
    }

    /// Cuts every forwarded stream (as a network failure would).
    fn cut(&self) {
        for (a, b) in self.open.lock().unwrap().drain(..) {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }
}

type Open = Mutex<Vec<(TcpStream, TcpStream)>>;

fn serve(conn: TcpStream, node: &str, open: &Open, watches: &Mutex<Vec<String>>) -> Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let head = read_head(&mut r)?;
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut conn = conn;
    if path.starts_with("/v1/presence/watch") {
        watches.lock().unwrap().push(head.clone());
        let mut up = TcpStream::connect(node)?;
        let mut req = String::new();
        for line in head.lines() {
            let lower = line.to_ascii_lowercase();
            if !lower.starts_with("authorization:") && !lower.starts_with("connection:") {
                req.push_str(line);
                req.push_str("\r\n");
            }
        }
        req.push_str(&format!("Authorization: Bearer {TEST_API_KEY}\r\nConnection: close\r\n\r\n"));
        up.write_all(req.as_bytes())?;
        open.lock().unwrap().push((conn.try_clone()?, up.try_clone()?));
        let mut down = up.try_clone()?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut down);
            let _ = down.shutdown(Shutdown::Both);
        });
        let _ = std::io::copy(&mut up, &mut conn);
        let _ = conn.shutdown(Shutdown::Both);
        return Ok(());
    }
    let (status, body) = if path == "/" || path.starts_with("/?") {
        ("200 OK", PAGE)
    } else {
        ("404 Not Found", "")
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(())
}

/// The example page's badges, read from its DOM.
trait BadgePage {
    fn badges(&mut self) -> Result<Value>;
    fn wait_for(&mut self, a: &str, b: &str, within: Duration) -> Result<Value>;
}

impl BadgePage for Browser {
    /// The badges' states and the page's revision, as the DOM shows them.
    fn badges(&mut self) -> Result<Value> {
        let expr = "JSON.stringify({a: document.getElementById('badge-a')?.dataset.state, \
                    b: document.getElementById('badge-b')?.dataset.state, \
                    revision: Number(document.body.dataset.revision)})";
        // Before the page has loaded, the expression throws: no value yet.
        match self.eval(expr)? {
            Some(Value::String(v)) => Ok(serde_json::from_str(&v)?),
            other => Ok(json!({"not_loaded": other})),
        }
    }

    /// Waits until the badges of a and b show `a` and `b`.
    fn wait_for(&mut self, a: &str, b: &str, within: Duration) -> Result<Value> {
        let deadline = Instant::now() + within;
        loop {
            let v = self.badges()?;
            if v["a"] == a && v["b"] == b {
                return Ok(v);
            }
            ensure!(Instant::now() < deadline, "badges {v}, waiting for a={a} b={b}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn event(kind: &str, uid: &str) -> Value {
    json!({"type": kind, "uid": uid, "sid": 0, "client": "web"})
}

/// The example page in headless Chromium: its badges show the snapshot
/// (a online, b unknown), then follow each change live (a goes offline, b
/// comes online); after the platform's connection is cut and b goes
/// offline meanwhile, the browser's EventSource reconnects by itself with
/// `Last-Event-ID` = the last revision it saw, and the badge catches up
/// with the change it missed.
#[test]
fn watch_example_page_shows_live_badges_in_chromium() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let node = c.nodes[0].publish();
    push(&node, vec![event("login", "a")])?;
    let platform = Platform::start(node.clone())?;
    let mut b = Browser::open(&format!("http://{}/?uids=a,b", platform.addr))?;

    phase("snapshot");
    b.wait_for("online", "unknown", Duration::from_secs(60))?;
    phase("live changes");
    push(&node, vec![event("logout", "a")])?;
    b.wait_for("offline", "unknown", Duration::from_secs(20))?;
    let rev = push(&node, vec![event("login", "b")])?;
    let v = b.wait_for("offline", "online", Duration::from_secs(20))?;
    ensure!(v["revision"] == rev, "page at {v}, last change at {rev}");

    phase("cut, change meanwhile, the browser resumes");
    platform.cut();
    let missed = push(&node, vec![event("logout", "b")])?;
    let v = b.wait_for("offline", "offline", Duration::from_secs(30))?;
    ensure!(v["revision"].as_u64() >= Some(missed), "{v}");
    let watches = platform.watches.lock().unwrap().clone();
    ensure!(watches.len() >= 2, "one watch request only: {watches:?}");
    let resumed = watches[1].to_ascii_lowercase();
    let id = resumed
        .lines()
        .find_map(|l| l.strip_prefix("last-event-id:"))
        .and_then(|v| v.trim().parse::<u64>().ok());
    ensure!(id.is_some_and(|id| id >= rev && id < missed), "resume request:\n{resumed}");
    Ok(())
}
