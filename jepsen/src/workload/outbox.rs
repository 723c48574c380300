//! The profile-sync outbox workload (issue 17; `checker::outbox`).
//!
//! The nodes' XML lists `modules` `<profile-sync>` modules (`ma`, `mb`, ...)
//! whose endpoints are HTTP receivers run by the harness in the client
//! namespace (10.77.0.100, port `RECEIVER_PORT_BASE + k`): the nodes reach
//! it whatever the partition (partitions cut node-to-node traffic only), so
//! the faults are the nodes' own (partitions, kills, pauses) plus
//! receivers that refuse a share of requests with 503 (some with a
//! `Retry-After`).
//!
//! Accounts: `accounts` uids `pa0`, `pa1`, ...; worker i works on uid
//! `i % accounts` (so two workers share a uid when there are twice as many
//! workers): it first binds `<uid>@<module>` in every module (retried until
//! acknowledged: a bind is idempotent), then sets the profile from a random
//! source module through random nodes, the profile's `extra.n` being a
//! counter unique in the run. Every request a receiver gets is a
//! `profile-deliver` op; after healing, the final phase waits until the
//! outbox is empty (or `drain` passes), then a quiet period, and records an
//! `outbox-final` op.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::client::{write_error_type, Api, ErrorKind};
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::rng::Rng;

/// Receiver k listens on this port + k in the client namespace.
pub const RECEIVER_PORT_BASE: u16 = 7301;
/// The modules' signing secret (32 bytes, Standard Webhooks form below).
pub const SECRET: &[u8; 32] = b"herald-jepsen-outbox-secret-0001";
/// Receivers' processes are numbered from here (one per request).
pub const RECEIVER_PROCESS_BASE: u64 = 2_000_000_000;
/// The final outbox poll's process.
pub const FINAL_PROCESS: u64 = 2_999_999_999;
/// A request head larger than this is refused (the dispatcher's is < 1 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A body larger than this is refused (a profile is at most 8 KiB).
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Quiet period after the outbox is seen empty, before the final record.
const QUIET: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Opts {
    pub nodes: Vec<(String, String)>,
    pub writers: usize,
    pub modules: usize,
    pub accounts: usize,
    /// Target profile updates per second over all writers.
    pub rate: f64,
    /// Share of requests a receiver answers with 503.
    pub refuse: f64,
    pub seed: u64,
    pub timeout: Duration,
}

pub fn module_id(k: usize) -> String {
    format!("m{}", (b'a' + (k % 26) as u8) as char)
}

pub fn uid(k: usize) -> String {
    format!("pa{k}")
}

pub fn account(uid: &str, module: &str) -> String {
    format!("{uid}@{module}")
}

/// The `<profile-sync>` element of every node's XML: short backoffs (a run
/// lasts a minute), a horizon far past the run (nothing may go dead).
pub fn profile_sync_xml(modules: usize) -> String {
    let secret = herald_proto::webhook::secret_string(SECRET);
    let mut s = String::from("  <profile-sync initial-backoff-ms=\"100\" max-backoff-ms=\"2000\" horizon-ms=\"3600000\" max-in-flight=\"32\">\n");
    for k in 0..modules {
        s.push_str(&format!(
            "    <module id=\"{}\" name=\"Module {k}\" endpoint=\"http://{}:{}/profile\" timeout-ms=\"2000\" secret=\"{secret}\"/>\n",
            module_id(k),
            netns::CLIENT_IP,
            RECEIVER_PORT_BASE + k as u16
        ));
    }
    s.push_str("  </profile-sync>\n");
    s
}

/// The receivers: one listener thread per module, until `stop`.
pub struct Receivers {
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<Result<()>>>,
    pub requests: Arc<AtomicU64>,
}

impl Receivers {
    pub fn start(opts: &Opts, rec: Arc<Recorder>) -> Result<Receivers> {
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU64::new(0));
        let mut handles = Vec::new();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for k in 0..opts.modules {
            let (stop, rec, requests, ready) =
                (stop.clone(), rec.clone(), requests.clone(), ready_tx.clone());
            let mut rng = Rng::new(opts.seed).fork(5000 + k as u64);
            let refuse = opts.refuse;
            handles.push(
                std::thread::Builder::new()
                    .name(format!("receiver-{k}"))
                    .spawn(move || -> Result<()> {
                        netns::enter(netns::CLIENT_NS)?;
                        let port = RECEIVER_PORT_BASE + k as u16;
                        let l = TcpListener::bind((netns::CLIENT_IP, port))
                            .with_context(|| format!("bind receiver port {port}"));
                        let ok = l.is_ok();
                        let _ = ready.send(l.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                        if !ok {
                            return Ok(());
                        }
                        let l = l?;
                        l.set_nonblocking(true)?;
                        let module = module_id(k);
                        while !stop.load(Ordering::SeqCst) {
                            match l.accept() {
                                Ok((c, _)) => {
                                    let n = requests.fetch_add(1, Ordering::SeqCst);
                                    let status = if rng.chance(refuse) { 503 } else { 200 };
                                    let retry_after = status == 503 && rng.chance(0.5);
                                    serve(c, &module, &rec, n, status, retry_after);
                                }
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                    std::thread::sleep(Duration::from_millis(5));
                                }
                                Err(_) => std::thread::sleep(Duration::from_millis(20)),
                            }
                        }
                        Ok(())
                    })
                    .expect("spawn receiver"),
            );
        }
        for _ in 0..opts.modules {
            if let Ok(Err(e)) = ready_rx.recv_timeout(Duration::from_secs(5)) {
                anyhow::bail!("receiver: {e}");
            }
        }
        Ok(Receivers { stop, handles, requests })
    }

    pub fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::SeqCst);
        self.handles
            .into_iter()
            .filter_map(|h| match h.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("receiver panicked".into()),
            })
            .collect()
    }
}

/// A parsed request: the three webhook headers and the body.
#[derive(Debug, Default, PartialEq)]
pub struct Request {
    pub id: String,
    pub timestamp: u64,
    pub signature: String,
    pub body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head and Content-Length body, both bounded).
pub fn read_request(r: &mut impl BufRead) -> Result<Request, String> {
    let mut req = Request::default();
    let mut head = 0;
    let mut len = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
        head += n;
        if n == 0 || head > MAX_HEAD_BYTES {
            return Err("incomplete or oversize head".into());
        }
        let line = line.trim_end();
        if first {
            first = false;
            if !line.starts_with("POST ") {
                return Err(format!("not a POST: {line:.80}"));
            }
            continue;
        }
        if line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = v.trim();
        match k.trim().to_ascii_lowercase().as_str() {
            "content-length" => len = v.parse().map_err(|_| "bad content-length")?,
            "webhook-id" => req.id = v.to_string(),
            "webhook-timestamp" => req.timestamp = v.parse().unwrap_or(0),
            "webhook-signature" => req.signature = v.to_string(),
            _ => {}
        }
    }
    if len > MAX_BODY_BYTES {
        return Err(format!("body of {len} bytes"));
    }
    req.body = vec![0; len];
    r.read_exact(&mut req.body).map_err(|e| format!("body: {e}"))?;
    Ok(req)
}

/// The `profile-deliver` op value of a request to `module`.
pub fn delivery_value(module: &str, req: &Request, status: u16) -> Value {
    let sig_ok = herald_proto::webhook::verify(
        SECRET,
        &req.id,
        req.timestamp,
        &req.body,
        &req.signature,
        // The nodes' clocks may be faked: check the HMAC, not the age.
        req.timestamp,
    );
    let d: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
    let data = &d["data"];
    json!({
        "module": module,
        "uid": data["uid"],
        "account": data["account"],
        "target_module": data["module"],
        "source": data["source"],
        "revision": data["revision"],
        "value": data.pointer("/profile/extra/n").and_then(|v| v.as_str()).and_then(|v| v.parse::<u64>().ok()),
        "webhook_id": req.id,
        "sig_ok": sig_ok && data["module"] == json!(module),
        "status": status,
    })
}

fn serve(c: TcpStream, module: &str, rec: &Recorder, n: u64, status: u16, retry_after: bool) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let mut w = match c.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut r = BufReader::new(c);
    let p = Process::Worker(RECEIVER_PROCESS_BASE + n);
    let (status, value, err) = match read_request(&mut r) {
        Ok(req) => (status, delivery_value(module, &req, status), None),
        // The sender went away before a whole request (killed, paused
        // past its timeout): recorded without a webhook id, not judged.
        Err(e) => (0, json!({"module": module, "status": 0}), Some(e)),
    };
    rec.record(OpType::Invoke, p, "profile-deliver", json!({"module": module}), None, None);
    let reason = if status == 200 { "OK" } else { "Service Unavailable" };
    let extra = if retry_after { "Retry-After: 1\r\n" } else { "" };
    let answer = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
    );
    // Recorded before answering: what the receiver applied, it applied
    // whether or not the answer reaches the node.
    rec.record(OpType::Ok, p, "profile-deliver", value, None, err);
    if status == 0 {
        return;
    }
    let _ = w.write_all(answer.as_bytes());
    let _ = w.flush();
}

/// Starts the writers (each enters the client namespace).
pub fn spawn(
    opts: &Opts,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<JoinHandle<Result<()>>> {
    let next = Arc::new(AtomicU64::new(0));
    (0..opts.writers)
        .map(|i| {
            let (opts, rec, stop, next) = (opts.clone(), rec.clone(), stop.clone(), next.clone());
            std::thread::Builder::new()
                .name(format!("outbox-{i}"))
                .spawn(move || writer(i, &opts, &rec, &stop, &next))
                .expect("spawn outbox writer")
        })
        .collect()
}

fn writer(
    i: usize,
    opts: &Opts,
    rec: &Recorder,
    stop: &AtomicBool,
    next: &AtomicU64,
) -> Result<()> {
    netns::enter(netns::CLIENT_NS)?;
    let api = Api::new(opts.timeout);
    let mut rng = Rng::new(opts.seed).fork(4000 + i as u64);
    let stride = opts.writers as u64;
    let mut process = 3_000_000 + i as u64;
    let u = uid(i % opts.accounts.max(1));
    let modules: Vec<String> = (0..opts.modules).map(module_id).collect();
    let mut bound = vec![false; modules.len()];
    let mean = Duration::from_secs_f64(opts.writers as f64 / opts.rate.max(0.001));
    while !stop.load(Ordering::SeqCst) {
        let pause = mean.mul_f64(2.0 * rng.unit());
        super::sleep_unless(stop, pause);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let (node, ip) = rng.pick(&opts.nodes).clone();
        let p = Process::Worker(process);
        let (f, value, result) = if let Some(k) = bound.iter().position(|b| !b) {
            let v = json!({"uid": u, "module": modules[k], "account": account(&u, &modules[k])});
            rec.record(OpType::Invoke, p, "profile-bind", v.clone(), Some(&node), None);
            let body = json!({"module": modules[k], "account": account(&u, &modules[k])});
            let r = api.post(&ip, &format!("/v1/users/{u}/bindings"), &body);
            if r.is_ok() {
                bound[k] = true;
            }
            ("profile-bind", v, r.map(|_| None))
        } else {
            let n = next.fetch_add(1, Ordering::SeqCst) + 1;
            let source = rng.pick(&modules).clone();
            let v = json!({"uid": u, "source": source, "value": n});
            rec.record(OpType::Invoke, p, "profile-set", v.clone(), Some(&node), None);
            let body = json!({"source": source, "profile": {"mood": "jepsen", "extra": {"n": n.to_string()}}});
            let r = api.put(&ip, &format!("/v1/users/{u}/profile"), &body);
            ("profile-set", v, r.map(|a| a.get("revision").and_then(|x| x.as_u64())))
        };
        let (t, done, err) = match result {
            Ok(rev) => {
                let mut done = value;
                if let Some(rev) = rev {
                    done["revision"] = json!(rev);
                }
                (OpType::Ok, done, None)
            }
            Err(e) => {
                // A refusal with a code (4xx) definitely stored nothing.
                let t = match &e.kind {
                    ErrorKind::Status(400..=499, Some(_)) => OpType::Fail,
                    k => write_error_type(k),
                };
                (t, value, Some(e.to_string()))
            }
        };
        rec.record(t, p, f, done, Some(&node), err);
        if t == OpType::Info {
            process += stride;
        }
    }
    Ok(())
}

/// run.json-free final phase: polls `GET /v1/outbox` (pending, then dead)
/// through the nodes in turn until a node answers an empty pending list,
/// or `limit` passes; waits the quiet period; records `outbox-final`.
pub fn final_phase(rec: &Recorder, opts: &Opts, limit: Duration) -> Option<(u64, u64)> {
    let deadline = Instant::now() + limit;
    let run = || {
        let api = Api::new(Duration::from_secs(2));
        let p = Process::Worker(FINAL_PROCESS);
        let mut k = 0;
        let mut last = None;
        while Instant::now() < deadline {
            let (node, ip) = &opts.nodes[k % opts.nodes.len()];
            k += 1;
            let total = |dead: bool| {
                api.get(ip, &format!("/v1/outbox?dead={dead}"))
                    .ok()
                    .and_then(|a| a.get("total").and_then(|t| t.as_u64()))
            };
            if let (Some(pending), Some(dead)) = (total(false), total(true)) {
                last = Some((pending, dead, node.clone()));
                if pending == 0 {
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        std::thread::sleep(QUIET);
        rec.record(OpType::Invoke, p, "outbox-final", Value::Null, None, None);
        match &last {
            Some((pending, dead, node)) => rec.record(
                OpType::Ok,
                p,
                "outbox-final",
                json!({"pending": pending, "dead": dead, "node": node}),
                Some(node),
                None,
            ),
            None => rec.record(
                OpType::Fail,
                p,
                "outbox-final",
                Value::Null,
                None,
                Some("no node answered GET /v1/outbox".into()),
            ),
        };
        last.map(|(p, d, _)| (p, d))
    };
    netns::run_in(netns::CLIENT_NS, run).ok().flatten()
}

/// Seconds since the epoch (for the test's own signing).
#[cfg(test)]
fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the receiver parses a signed delivery the way the node sends
    /// it and records module, uid, revision, value and a valid signature;
    /// a tampered body or a delivery meant for another module is flagged.
    #[test]
    fn workload_outbox_receiver_parses_and_verifies_a_delivery() {
        let body = br#"{"type":"profile.updated","timestamp":"x","data":{"uid":"pa1","module":"mb","account":"pa1@mb","source":"ma","revision":42,"profile":{"avatar":"","signature":"","mood":"jepsen","extra":{"n":"17"}},"updated_ms":1}}"#;
        let ts = now_s();
        let sig = herald_proto::webhook::sign(SECRET, "msg_9", ts, body);
        let raw = |body: &[u8]| {
            let mut r = format!("POST /profile HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nwebhook-id: msg_9\r\nwebhook-timestamp: {ts}\r\nwebhook-signature: {sig}\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            r.extend_from_slice(body);
            r
        };
        let req = read_request(&mut &raw(body)[..]).unwrap();
        assert_eq!((req.id.as_str(), req.timestamp), ("msg_9", ts));
        let v = delivery_value("mb", &req, 200);
        assert_eq!(v["uid"], json!("pa1"));
        assert_eq!(v["revision"], json!(42));
        assert_eq!(v["value"], json!(17));
        assert_eq!(v["sig_ok"], json!(true));
        assert_eq!(delivery_value("mc", &req, 200)["sig_ok"], json!(false));
        let tampered = String::from_utf8_lossy(body).replace("\"17\"", "\"18\"");
        let req = read_request(&mut &raw(tampered.as_bytes())[..]).unwrap();
        assert_eq!(delivery_value("mb", &req, 200)["sig_ok"], json!(false));
        assert!(read_request(&mut &b"GET / HTTP/1.1\r\n\r\n"[..]).is_err());
    }

    /// Proves the `<profile-sync>` element lists one module per receiver,
    /// at the client namespace's address, with the harness's secret.
    #[test]
    fn workload_outbox_profile_sync_xml_lists_the_receivers() {
        let x = profile_sync_xml(3);
        assert_eq!(x.matches("<module ").count(), 3);
        assert!(x.contains("id=\"mc\""));
        assert!(x.contains(&format!(
            "http://{}:{}/profile",
            netns::CLIENT_IP,
            RECEIVER_PORT_BASE + 2
        )));
        assert!(x.contains(&herald_proto::webhook::secret_string(SECRET)));
    }
}
