//! The nemesis: carries out scheduled faults against the running cluster and
//! records each as a pair of `info` ops from process `nemesis` (invoke with
//! the planned fault, completion with what was actually done), as Jepsen.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{Api, ErrorKind};
use crate::db::{faketime_offset, write_atomic, Db};
use crate::history::{OpType, Process, Recorder};
use crate::netns;
use crate::schedule::{grudge, targets, Fault, PartMode, Target};

enum Active {
    Partition,
    Killed(Vec<usize>),
    Paused(Vec<usize>),
    Clock(Vec<usize>),
    Member(usize),
    Zone,
}

struct Strobe {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

pub struct Nemesis<'a> {
    pub db: &'a mut Db,
    rec: &'a Recorder,
    api: Api,
    active: Vec<Active>,
    strobes: Vec<Strobe>,
    removed: Option<usize>,
    current: Option<String>,
}

fn names(db: &Db, idx: &[usize]) -> Vec<String> {
    idx.iter().map(|&i| db.nodes[i].name.clone()).collect()
}

impl<'a> Nemesis<'a> {
    pub fn new(db: &'a mut Db, rec: &'a Recorder) -> Self {
        Nemesis {
            db,
            rec,
            api: Api::new(Duration::from_millis(1500)),
            active: Vec::new(),
            strobes: Vec::new(),
            removed: None,
            current: None,
        }
    }

    fn n(&self) -> usize {
        self.db.len()
    }

    /// The leader as reported by the live node with the highest term.
    pub fn leader(&self) -> Option<usize> {
        let ips: Vec<(usize, String)> = (0..self.n())
            .filter(|&i| self.db.running(i) && !self.db.is_paused(i))
            .map(|i| (i, self.db.nodes[i].ip.clone()))
            .collect();
        let api = &self.api;
        let views = netns::run_in(netns::CLIENT_NS, || {
            ips.iter()
                .filter_map(|(_, ip)| api.cluster(ip).ok())
                .filter_map(|v| Some((v.term, v.leader?)))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
        views
            .into_iter()
            .max()
            .and_then(|(_, l)| (l as usize).checked_sub(1))
            .filter(|&i| i < self.n())
    }

    fn record(&self, f: &str, value: Value) {
        self.rec.record(OpType::Info, Process::Nemesis, f, value, None, None);
    }

    /// Starts a fault (stopping nothing: the schedule alternates start/stop).
    pub fn start(&mut self, fault: &Fault) {
        let f = format!("start-{}", fault.name());
        self.record(&f, serde_json::to_value(fault).unwrap_or(Value::Null));
        let done = self.apply(fault);
        self.record(&f, done);
        self.current = Some(fault.name());
    }

    fn apply(&mut self, fault: &Fault) -> Value {
        match fault {
            Fault::Partition { mode, order } => {
                let leader = if *mode == PartMode::IsolateLeader { self.leader() } else { None };
                let g = grudge(*mode, order, self.n(), leader);
                let res = netns::apply_grudge(&g);
                self.active.push(Active::Partition);
                let mut view = serde_json::Map::new();
                for (i, d) in g.iter().enumerate() {
                    view.insert(self.db.nodes[i].name.clone(), json!(names(self.db, d)));
                }
                json!({"mode": mode, "drops": view, "error": res.err().map(|e| e.to_string())})
            }
            Fault::Kill { target, order } => {
                let leader = if *target == Target::Leader { self.leader() } else { None };
                let t = targets(*target, order, leader);
                let killed: Vec<usize> = t.into_iter().filter(|&i| self.db.kill(i)).collect();
                let v = json!({"target": target, "killed": names(self.db, &killed)});
                self.active.push(Active::Killed(killed));
                v
            }
            Fault::Pause { target, order } => {
                let leader = if *target == Target::Leader { self.leader() } else { None };
                let t = targets(*target, order, leader);
                let paused: Vec<usize> = t.into_iter().filter(|&i| self.db.pause(i)).collect();
                let v = json!({"target": target, "paused": names(self.db, &paused)});
                self.active.push(Active::Paused(paused));
                v
            }
            Fault::ClockBump { nodes, offsets_ms } => {
                let mut done = serde_json::Map::new();
                for (&i, &off) in nodes.iter().zip(offsets_ms) {
                    let r = self.db.set_clock(i, off);
                    done.insert(
                        self.db.nodes[i].name.clone(),
                        json!(if r.is_ok() { faketime_offset(off) } else { format!("{r:?}") }),
                    );
                }
                self.active.push(Active::Clock(nodes.clone()));
                json!({"offsets": done, "faketime": self.db.faketime.is_some()})
            }
            Fault::ClockStrobe { nodes, delta_ms, period_ms } => {
                let files: Vec<_> =
                    nodes.iter().map(|&i| self.db.nodes[i].faketime_file.clone()).collect();
                let stop = Arc::new(AtomicBool::new(false));
                let (s2, delta, period) = (stop.clone(), *delta_ms, *period_ms);
                let handle = std::thread::spawn(move || {
                    let mut on = false;
                    while !s2.load(Ordering::SeqCst) {
                        on = !on;
                        let text = format!("{}\n", faketime_offset(if on { delta } else { 0 }));
                        for f in &files {
                            let _ = write_atomic(f, &text);
                        }
                        std::thread::sleep(Duration::from_millis(period));
                    }
                });
                self.strobes.push(Strobe { stop, handle });
                self.active.push(Active::Clock(nodes.clone()));
                json!({"strobe": names(self.db, nodes), "delta": faketime_offset(*delta_ms), "period_ms": period_ms, "faketime": self.db.faketime.is_some()})
            }
            Fault::Member { order } => {
                if let Some(r) = self.removed {
                    return json!({"skipped": format!("{} is still removed", self.db.nodes[r].name)});
                }
                let t = order[0];
                let number = self.db.nodes[t].number;
                match self.admin("/v1/cluster/remove", number) {
                    Ok(v) => {
                        self.removed = Some(t);
                        self.db.exit_ok[t] = true;
                        self.active.push(Active::Member(t));
                        json!({"removed": self.db.nodes[t].name, "reply": v})
                    }
                    Err(e) => {
                        json!({"removed": Value::Null, "node": self.db.nodes[t].name, "error": e})
                    }
                }
            }
            Fault::Zone { order } => {
                let Some(wan) = self.db.wan.as_ref() else {
                    return json!({"skipped": "no zones (--zones)"});
                };
                let z = wan.layout.zone_of(order[0]);
                let g = wan.layout.cut_grudge(z, self.n());
                let members = names(self.db, &wan.layout.members(z, self.n()));
                let zone = wan.layout.zone_name(order[0]);
                let links = wan.cut_zone(z);
                let res = netns::apply_grudge(&g);
                self.active.push(Active::Zone);
                json!({"zone": zone, "nodes": members, "proxies-cut": links, "error": res.err().map(|e| e.to_string())})
            }
            Fault::Composite { faults } => {
                Value::Array(faults.iter().map(|f| self.apply(f)).collect())
            }
        }
    }

    /// An admin call, sent to the leader first, then any live node; retried
    /// for a few seconds on indeterminate errors.
    fn admin(&self, path: &str, number: u32) -> Result<Value, String> {
        let leader = self.leader();
        let mut order: Vec<usize> = leader.into_iter().collect();
        order.extend(
            (0..self.n())
                .filter(|&i| Some(i) != leader && self.db.running(i) && !self.db.is_paused(i)),
        );
        let ips: Vec<String> = order.iter().map(|&i| self.db.nodes[i].ip.clone()).collect();
        let api = &self.api;
        netns::run_in(netns::CLIENT_NS, || {
            let deadline = Instant::now() + Duration::from_secs(8);
            let mut last = String::from("no live node");
            while Instant::now() < deadline {
                for ip in &ips {
                    match api.post(ip, path, &json!({ "number": number })) {
                        Ok(v) => return Ok(v),
                        Err(e) => {
                            if matches!(e.kind, ErrorKind::Status(400..=499, _)) {
                                return Err(format!("{ip}: {e}"));
                            }
                            last = format!("{ip}: {e}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
            }
            Err(last)
        })
        .unwrap_or_else(|e| Err(e.to_string()))
    }

    /// Undoes every active fault, newest first, recorded as one stop op.
    pub fn stop(&mut self) {
        if self.active.is_empty() {
            return;
        }
        let label = format!("stop-{}", self.current.take().unwrap_or_else(|| "all".into()));
        self.record(&label, Value::Null);
        let mut done = Vec::new();
        while let Some(a) = self.active.pop() {
            done.push(self.undo(a));
        }
        self.record(&label, Value::Array(done));
    }

    fn undo(&mut self, a: Active) -> Value {
        match a {
            Active::Partition => {
                let r = netns::heal(self.n());
                json!({"healed": "network", "error": r.err().map(|e| e.to_string())})
            }
            Active::Zone => {
                let r = netns::heal(self.n());
                if let Some(w) = self.db.wan.as_ref() {
                    w.heal();
                }
                json!({"healed": "zone", "error": r.err().map(|e| e.to_string())})
            }
            Active::Killed(nodes) => {
                let mut restarted = Vec::new();
                let mut errors = Vec::new();
                for i in nodes {
                    match self.db.start(i) {
                        Ok(()) => restarted.push(self.db.nodes[i].name.clone()),
                        Err(e) => errors.push(format!("{}: {e}", self.db.nodes[i].name)),
                    }
                }
                json!({"restarted": restarted, "errors": errors})
            }
            Active::Paused(nodes) => {
                for &i in &nodes {
                    self.db.resume(i);
                }
                json!({"resumed": names(self.db, &nodes)})
            }
            Active::Clock(nodes) => {
                for s in self.strobes.drain(..) {
                    s.stop.store(true, Ordering::SeqCst);
                    let _ = s.handle.join();
                }
                for &i in &nodes {
                    let _ = self.db.set_clock(i, 0);
                }
                json!({"clock-reset": names(self.db, &nodes)})
            }
            Active::Member(t) => {
                let name = self.db.nodes[t].name.clone();
                let mut v = json!({"re-added": name});
                if !self.db.running(t) {
                    v["restarted"] = json!(self.db.start(t).is_ok());
                }
                let number = self.db.nodes[t].number;
                v["add-learner"] = result_json(self.admin("/v1/cluster/add-learner", number));
                // The learner has to catch up before it can be promoted.
                let deadline = Instant::now() + Duration::from_secs(15);
                let promote = loop {
                    let r = self.admin("/v1/cluster/promote", number);
                    if r.is_ok() || Instant::now() > deadline {
                        break r;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                };
                v["promote"] = result_json(promote);
                self.removed = None;
                self.db.exit_ok[t] = false;
                v
            }
        }
    }

    /// Heals everything: every active fault, then the network, paused and
    /// dead nodes and clocks regardless of what we think is active.
    pub fn heal_all(&mut self) {
        self.stop();
        self.record("heal", Value::Null);
        let net = netns::heal(self.n()).err().map(|e| e.to_string());
        if let Some(w) = self.db.wan.as_ref() {
            w.heal();
        }
        let mut restarted = Vec::new();
        for i in 0..self.n() {
            self.db.resume(i);
            let _ = self.db.set_clock(i, 0);
            if !self.db.running(i) && self.db.start(i).is_ok() {
                restarted.push(self.db.nodes[i].name.clone());
            }
        }
        self.record("heal", json!({"network-error": net, "restarted": restarted}));
    }

    /// Notes nodes that exited on their own as `crash` info ops.
    pub fn watch_crashes(&mut self) {
        let before = self.db.unexpected_exits.len();
        self.db.reap();
        let new: Vec<_> = self.db.unexpected_exits[before..].to_vec();
        for e in new {
            self.record("crash", json!({"node": e.node, "status": e.status}));
        }
    }
}

fn result_json(r: Result<Value, String>) -> Value {
    match r {
        Ok(v) => json!({"ok": v}),
        Err(e) => json!({"error": e}),
    }
}

impl Drop for Nemesis<'_> {
    fn drop(&mut self) {
        for s in self.strobes.drain(..) {
            s.stop.store(true, Ordering::SeqCst);
            let _ = s.handle.join();
        }
    }
}
