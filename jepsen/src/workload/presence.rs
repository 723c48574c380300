//! The presence register workload. Each uid is a register: a write sends one
//! presence event (login, logout or permission, chosen at random) carrying
//! `ext: {"reg": "<unique value>"}`; a read is a linearizable batch query and
//! returns `ext.reg` (nil when unknown/absent). History values are
//! `[uid, value]` tuples, as `jepsen.independent` writes them.
//!
//! Workers are split into groups of ~2×nodes; a group works on one uid until
//! `ops_per_key` invocations, then moves to a fresh uid, so each per-key
//! history stays small enough for the WGL checker.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::client::{reg_of, write_error_type, Api};
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::rng::Rng;

/// Final reads use their own processes, numbered from here.
pub const FINAL_PROCESS_BASE: u64 = 1_000_000_000;

#[derive(Clone, Debug)]
pub struct Opts {
    pub concurrency: usize,
    pub nodes: Vec<(String, String)>, // (name, ip)
    pub ops_per_key: u64,
    /// Target ops/s over all workers.
    pub rate: f64,
    pub seed: u64,
    pub timeout: Duration,
    /// Zones: a share of the reads bounded or min_revision (`zone_reads`).
    pub zone_reads: Option<super::zone_reads::ZoneReads>,
}

pub fn uid(key: u64) -> String {
    format!("k{key}")
}

pub fn group_size(concurrency: usize, nodes: usize) -> usize {
    (2 * nodes).clamp(1, concurrency.max(1))
}

pub struct Shared {
    next_key: AtomicU64,
    next_value: AtomicU64,
    groups: Vec<Mutex<(u64, u64)>>,
    keys: Mutex<BTreeSet<u64>>,
}

impl Shared {
    fn new(groups: usize) -> Shared {
        Shared {
            next_key: AtomicU64::new(groups as u64),
            next_value: AtomicU64::new(0),
            groups: (0..groups as u64).map(|g| Mutex::new((g, 0))).collect(),
            keys: Mutex::new((0..groups as u64).collect()),
        }
    }

    /// The key this group's next op goes to.
    fn key_for(&self, group: usize, ops_per_key: u64) -> u64 {
        let mut g = self.groups[group].lock().unwrap();
        if g.1 >= ops_per_key {
            g.0 = self.next_key.fetch_add(1, Ordering::SeqCst);
            g.1 = 0;
            self.keys.lock().unwrap().insert(g.0);
        }
        g.1 += 1;
        g.0
    }

    /// The key the next group to move on will get (the keys written so far
    /// are below it).
    pub fn next_key(&self) -> u64 {
        self.next_key.load(Ordering::SeqCst)
    }

    pub fn keys(&self) -> Vec<String> {
        self.keys.lock().unwrap().iter().map(|k| uid(*k)).collect()
    }
}

/// Starts `concurrency` worker threads (each enters the client namespace).
pub fn spawn(
    opts: &Opts,
    rec: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> (Arc<Shared>, Vec<JoinHandle<Result<()>>>) {
    let gsize = group_size(opts.concurrency, opts.nodes.len());
    let groups = (opts.concurrency / gsize).max(1);
    let shared = Arc::new(Shared::new(groups));
    let handles = (0..opts.concurrency)
        .map(|i| {
            let (opts, rec, stop, shared) =
                (opts.clone(), rec.clone(), stop.clone(), shared.clone());
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || worker(i, i % groups, &opts, &rec, &stop, &shared))
                .expect("spawn worker")
        })
        .collect();
    (shared, handles)
}

fn event(rng: &mut Rng, uid: &str, sid: u64, v: u64) -> Value {
    let client = *rng.pick(&["mobile", "web", "desktop"]);
    let ext = json!({ "reg": v.to_string() });
    match rng.below(3) {
        0 => {
            json!({"type": "login", "uid": uid, "sid": sid, "client": client, "accepts_strangers": rng.chance(0.5), "ext": ext})
        }
        1 => json!({"type": "logout", "uid": uid, "sid": sid, "client": client, "ext": ext}),
        _ => {
            json!({"type": "permission", "uid": uid, "sid": sid, "accepts_strangers": rng.chance(0.5), "ext": ext})
        }
    }
}

fn worker(
    i: usize,
    group: usize,
    opts: &Opts,
    rec: &Recorder,
    stop: &AtomicBool,
    shared: &Shared,
) -> Result<()> {
    netns::enter(netns::CLIENT_NS)?;
    let api = Api::new(opts.timeout);
    let mut rng = Rng::new(opts.seed).fork(1000 + i as u64);
    let mut process = i as u64;
    let (node, ip) = opts.nodes[i % opts.nodes.len()].clone();
    let mean = Duration::from_secs_f64(opts.concurrency as f64 / opts.rate.max(0.001));
    while !stop.load(Ordering::SeqCst) {
        let pause = mean.mul_f64(2.0 * rng.unit());
        super::sleep_unless(stop, pause);
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let key = shared.key_for(group, opts.ops_per_key);
        let u = uid(key);
        let p = Process::Worker(process);
        if rng.chance(0.5) {
            if let Some(z) = opts.zone_reads.as_ref().filter(|z| rng.chance(z.share)) {
                z.read(&api, rec, p, &node, &ip, &u, &mut rng);
                continue;
            }
            rec.record(OpType::Invoke, p, "read", json!([u, null]), Some(&node), None);
            let (t, v, err) = match api.query(&ip, std::slice::from_ref(&u)) {
                Ok(reply) => match reg_of(&reply, &u) {
                    Ok(v) => (OpType::Ok, v, None),
                    Err(e) => (OpType::Fail, Value::Null, Some(e)),
                },
                Err(e) => (OpType::Fail, Value::Null, Some(e.to_string())),
            };
            rec.record(t, p, "read", json!([u, v]), Some(&node), err);
        } else {
            let v = shared.next_value.fetch_add(1, Ordering::SeqCst) + 1;
            let ev = event(&mut rng, &u, 10_000 + key, v);
            rec.record(OpType::Invoke, p, "write", json!([u, v]), Some(&node), None);
            // An acknowledged write's completion also carries the revision
            // (log index) it was committed at, for the watch checker.
            let (t, done, err) = match api.events(&ip, json!([ev])) {
                Ok(r) => {
                    if let Some(z) = &opts.zone_reads {
                        z.note(&u, &r["revision"]);
                    }
                    (OpType::Ok, json!([u, v, r["revision"]]), None)
                }
                Err(e) => (write_error_type(&e.kind), json!([u, v]), Some(e.to_string())),
            };
            rec.record(t, p, "write", done, Some(&node), err);
            if t == OpType::Info {
                process += opts.concurrency as u64;
            }
        }
    }
    Ok(())
}

/// run.json `final_reads`. (`serde(default)`: run.json of older runs may
/// lack newer fields.)
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct FinalReads {
    pub keys: usize,
    pub read_ok: usize,
    pub attempts: usize,
    pub unread: Vec<String>,
}

/// After healing: reads every key once (batch queries of up to 500 uids),
/// retrying failed batches on other nodes until `deadline`.
pub fn final_reads(
    rec: &Recorder,
    keys: &[String],
    nodes: &[(String, String)],
    timeout: Duration,
    deadline: Instant,
) -> FinalReads {
    let run = || {
        let api = Api::new(timeout);
        let mut pending: Vec<(usize, String)> = keys.iter().cloned().enumerate().collect();
        let mut attempts = 0;
        while !pending.is_empty() && Instant::now() < deadline {
            let (node, ip) = &nodes[attempts % nodes.len()];
            attempts += 1;
            let mut still = Vec::new();
            for chunk in pending.chunks(500) {
                let uids: Vec<String> = chunk.iter().map(|(_, u)| u.clone()).collect();
                for (i, u) in chunk {
                    rec.record(
                        OpType::Invoke,
                        Process::Worker(FINAL_PROCESS_BASE + *i as u64),
                        "read",
                        json!([u, null]),
                        Some(node),
                        None,
                    );
                }
                let reply = api.query(ip, &uids);
                for (i, u) in chunk {
                    let p = Process::Worker(FINAL_PROCESS_BASE + *i as u64);
                    match reply.as_ref().map_err(|e| e.to_string()).and_then(|r| reg_of(r, u)) {
                        Ok(v) => {
                            rec.record(OpType::Ok, p, "read", json!([u, v]), Some(node), None);
                        }
                        Err(e) => {
                            rec.record(
                                OpType::Fail,
                                p,
                                "read",
                                json!([u, null]),
                                Some(node),
                                Some(e),
                            );
                            still.push((*i, u.clone()));
                        }
                    }
                }
            }
            if !still.is_empty() {
                std::thread::sleep(Duration::from_millis(500));
            }
            pending = still;
        }
        FinalReads {
            keys: keys.len(),
            read_ok: keys.len() - pending.len(),
            attempts,
            unread: pending.into_iter().map(|(_, u)| u).collect(),
        }
    };
    netns::run_in(netns::CLIENT_NS, run).unwrap_or(FinalReads {
        keys: keys.len(),
        read_ok: 0,
        attempts: 0,
        unread: keys.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves groups are ~2×nodes workers and keys rotate after the cap, each
    /// group getting fresh keys.
    #[test]
    fn workload_presence_groups_and_key_rotation() {
        assert_eq!(group_size(10, 3), 6);
        assert_eq!(group_size(10, 5), 10);
        assert_eq!(group_size(4, 5), 4);
        let s = Shared::new(2);
        let a: Vec<u64> = (0..5).map(|_| s.key_for(0, 2)).collect();
        assert_eq!(a, vec![0, 0, 2, 2, 3]);
        assert_eq!(s.key_for(1, 2), 1);
        assert_eq!(s.keys(), vec!["k0", "k1", "k2", "k3"]);
    }

    /// Proves every write event carries the register value in ext.reg and
    /// the uid/sid, whatever its type.
    #[test]
    fn workload_presence_events_carry_register_value() {
        let mut rng = Rng::new(3);
        let mut types = BTreeSet::new();
        for v in 0..50 {
            let e = event(&mut rng, "k1", 10_001, v);
            assert_eq!(e["ext"]["reg"], json!(v.to_string()));
            assert_eq!(e["uid"], json!("k1"));
            assert_eq!(e["sid"], json!(10_001));
            types.insert(e["type"].as_str().unwrap().to_string());
        }
        assert_eq!(types.len(), 3);
    }
}
