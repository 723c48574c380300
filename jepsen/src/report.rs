//! The human report: `report.html` (self-contained: inline SVG and CSS, no
//! scripts or external assets) and the one-screen text summary.
//!
//! Plots: a timeline of ops per worker lane (Jepsen colours: ok blue, info
//! orange, fail pink) with nemesis intervals shaded; latency over time
//! (log scale); throughput over time. Then the checker table and each
//! checker's own section (e.g. for each linearizability anomaly the failing
//! window and longest partial linearization): the typed results render
//! their lines and sections themselves (`checker::CheckerResult`), this
//! module lays them out.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::checker::Results;
use crate::history::{pair_ops, Op, OpType, Process};
use crate::workload::master::STATUS_PROCESS_BASE;
use crate::workload::messages::{
    CONSUMER_PROCESS_BASE, WRITER_COMPANION, WRITER_PROCESS_BASE, WRITER_STRIDE,
};
use crate::workload::presence::FINAL_PROCESS_BASE;
use crate::workload::watch::WATCH_PROCESS_BASE;

const OK: &str = "#6DB6FE";
const OK_WRITE: &str = "#2C7BB6";
const INFO: &str = "#FFAA26";
const FAIL: &str = "#E05A9B";
const OK_STATUS: &str = "#7BC47F";
const NEMESIS: &str = "rgba(120,120,120,0.18)";
/// A checker's JSON in the checker table is cut to this many characters
/// (results.json has all of it).
const TABLE_JSON_CHARS: usize = 600;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A nemesis interval: from the start op to the completion of its stop/heal.
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    pub start: u64,
    pub end: u64,
    pub label: String,
}

pub fn nemesis_intervals(history: &[Op]) -> Vec<Interval> {
    let end_time = history.last().map(|o| o.time).unwrap_or(0);
    let mut out: Vec<Interval> = Vec::new();
    let mut open = false;
    let mut closing: Option<String> = None;
    for o in history.iter().filter(|o| o.process == Process::Nemesis) {
        if o.f.starts_with("start-") {
            if !open {
                out.push(Interval {
                    start: o.time,
                    end: o.time,
                    label: o.f.trim_start_matches("start-").to_string(),
                });
                open = true;
                closing = None;
            }
        } else if o.f.starts_with("stop") || o.f == "heal" {
            if open {
                out.last_mut().unwrap().end = o.time;
                open = false;
                closing = Some(o.f.clone());
            } else if closing.as_deref() == Some(o.f.as_str()) {
                out.last_mut().unwrap().end = o.time;
            }
        }
    }
    if open {
        out.last_mut().unwrap().end = end_time;
    }
    out
}

/// A message writer's lane: its processes after an `info`, and its
/// companion process (second recipient), share it.
fn writer_lane(n: u64) -> usize {
    ((n - WRITER_PROCESS_BASE) % WRITER_STRIDE % WRITER_COMPANION) as usize
}

/// Timeline lanes: presence workers (when there are any), message writers
/// and one lane per mailbox consumer (messages workload), one per watcher
/// (watch workload), one status poller per node (master workload), final
/// reads and drains, nemesis.
pub struct Lanes {
    workers: usize,
    writers: usize,
    mailboxes: usize,
    watchers: usize,
    status: usize,
}

impl Lanes {
    pub fn of(history: &[Op], concurrency: usize) -> Lanes {
        let mut l = Lanes { workers: 0, writers: 0, mailboxes: 0, watchers: 0, status: 0 };
        for o in history {
            match o.process {
                Process::Worker(n) if n >= FINAL_PROCESS_BASE => {}
                Process::Worker(n) if n >= STATUS_PROCESS_BASE => {
                    l.status = l.status.max((n - STATUS_PROCESS_BASE) as usize + 1)
                }
                Process::Worker(n) if n >= WATCH_PROCESS_BASE => {
                    l.watchers = l.watchers.max((n - WATCH_PROCESS_BASE) as usize + 1)
                }
                Process::Worker(n) if n >= CONSUMER_PROCESS_BASE => {
                    l.mailboxes = l.mailboxes.max((n - CONSUMER_PROCESS_BASE) as usize + 1)
                }
                Process::Worker(n) if n >= WRITER_PROCESS_BASE => {
                    l.writers = l.writers.max(writer_lane(n) + 1)
                }
                Process::Worker(_) => l.workers = concurrency.max(1),
                Process::Nemesis => {}
            }
        }
        l
    }

    fn clients(&self) -> usize {
        self.workers + self.writers + self.mailboxes + self.watchers + self.status
    }

    pub fn count(&self) -> usize {
        self.clients() + 2
    }

    pub fn lane(&self, p: Process) -> usize {
        let w = self.workers;
        match p {
            Process::Worker(n) if n >= FINAL_PROCESS_BASE => self.clients(),
            Process::Worker(n) if n >= STATUS_PROCESS_BASE => {
                w + self.writers
                    + self.mailboxes
                    + self.watchers
                    + (n - STATUS_PROCESS_BASE) as usize
            }
            Process::Worker(n) if n >= WATCH_PROCESS_BASE => {
                w + self.writers + self.mailboxes + (n - WATCH_PROCESS_BASE) as usize
            }
            Process::Worker(n) if n >= CONSUMER_PROCESS_BASE => {
                w + self.writers + (n - CONSUMER_PROCESS_BASE) as usize
            }
            Process::Worker(n) if n >= WRITER_PROCESS_BASE => w + writer_lane(n),
            Process::Worker(n) => (n % w.max(1) as u64) as usize,
            Process::Nemesis => self.clients() + 1,
        }
    }

    pub fn name(&self, l: usize) -> String {
        let (w, wr, mb, wa) = (self.workers, self.writers, self.mailboxes, self.watchers);
        if l < w {
            format!("worker {l}")
        } else if l < w + wr {
            format!("writer {}", l - w)
        } else if l < w + wr + mb {
            format!("mbox{}", l - w - wr)
        } else if l < w + wr + mb + wa {
            format!("watcher {}", l - w - wr - mb)
        } else if l < self.clients() {
            format!("status n{}", l - w - wr - mb - wa + 1)
        } else if l == self.clients() {
            "final".into()
        } else {
            "nemesis".into()
        }
    }
}

fn nice_step(span: f64, target: usize) -> f64 {
    let raw = span / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * mag >= raw {
            return m * mag;
        }
    }
    10.0 * mag
}

struct Frame {
    left: f64,
    top: f64,
    w: f64,
    h: f64,
    t_max: f64, // seconds
}

impl Frame {
    fn x(&self, ns: u64) -> f64 {
        self.left + (ns as f64 / 1e9) / self.t_max * self.w
    }
}

fn time_axis(s: &mut String, f: &Frame) {
    let step = nice_step(f.t_max, 10);
    let mut t = 0.0;
    let y = f.top + f.h;
    let _ = write!(
        s,
        r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#444"/>"##,
        f.left,
        f.left + f.w
    );
    while t <= f.t_max + 1e-9 {
        let x = f.left + t / f.t_max * f.w;
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="10" text-anchor="middle">{t}s</text>"##,
            f.top,
            y,
            y + 12.0
        );
        t += step;
    }
}

fn shade(s: &mut String, f: &Frame, iv: &[Interval], labels: bool) {
    for i in iv {
        let x0 = f.x(i.start);
        let x1 = f.x(i.end).max(x0 + 1.0);
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{NEMESIS}"><title>{} {:.1}s–{:.1}s</title></rect>"##,
            f.top,
            x1 - x0,
            f.h,
            esc(&i.label),
            i.start as f64 / 1e9,
            i.end as f64 / 1e9
        );
        if labels {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#555">{}</text>"##,
                x0 + 2.0,
                f.top - 3.0,
                esc(&i.label)
            );
        }
    }
}

fn color(f: &str, t: OpType) -> &'static str {
    match t {
        OpType::Ok if f == "read" || f == "dequeue" || f == "queued" || f == "frame" => OK,
        OpType::Ok if f == "status" => OK_STATUS,
        OpType::Ok => OK_WRITE,
        OpType::Fail => FAIL,
        _ => INFO,
    }
}

/// Invoke indices of the ops in reported anomaly windows (outlined in red).
pub fn anomaly_ops(results: &Results) -> std::collections::HashSet<u64> {
    results.checkers.linear.as_ref().map(|l| l.anomaly_ops()).unwrap_or_default()
}

pub fn timeline_svg(
    history: &[Op],
    concurrency: usize,
    highlight: &std::collections::HashSet<u64>,
) -> String {
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let layout = Lanes::of(history, concurrency);
    let lanes = layout.count();
    let lane_h = 14.0;
    let f = Frame {
        left: 70.0,
        top: 20.0,
        w: 1100.0,
        h: lanes as f64 * lane_h,
        t_max: t_end as f64 / 1e9,
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"##,
        f.left + f.w + 20.0,
        f.top + f.h + 30.0
    );
    shade(&mut s, &f, &nemesis_intervals(history), true);
    for l in 0..lanes {
        let y = f.top + l as f64 * lane_h;
        let name = layout.name(l);
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{name}</text>"##,
            f.left - 4.0,
            y + lane_h - 4.0
        );
    }
    for p in pair_ops(history) {
        let inv = p.invoke;
        let (end, t) = match p.complete {
            Some(c) => (c.time, c.typ),
            None => (t_end, OpType::Info),
        };
        let l = layout.lane(inv.process);
        let x0 = f.x(inv.time);
        let w = (f.x(end) - x0).max(1.0);
        let y = f.top + l as f64 * lane_h + 1.0;
        let val = p.complete.map(|c| &c.value).unwrap_or(&inv.value);
        let title = format!(
            "#{} p{} {} {} {} {:.1}ms node {}{}",
            inv.index,
            match inv.process {
                Process::Worker(n) => n.to_string(),
                Process::Nemesis => "nemesis".into(),
            },
            inv.f,
            val,
            t.as_str(),
            (end - inv.time) as f64 / 1e6,
            inv.node.as_deref().unwrap_or("-"),
            p.complete
                .and_then(|c| c.error.as_ref())
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
        let _ = write!(
            s,
            r##"<rect x="{x0:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{}"{}><title>{}</title></rect>"##,
            lane_h - 2.0,
            color(&inv.f, t),
            if highlight.contains(&inv.index) {
                r##" stroke="#d00" stroke-width="2""##
            } else {
                ""
            },
            esc(&title)
        );
    }
    let ny = f.top + layout.lane(Process::Nemesis) as f64 * lane_h + 1.0;
    for o in history.iter().filter(|o| o.process == Process::Nemesis) {
        let c = if o.f == "crash" { "#d00" } else { "#555" };
        let _ = write!(
            s,
            r##"<rect x="{:.1}" y="{ny:.1}" width="2" height="{:.1}" fill="{c}"><title>{}</title></rect>"##,
            f.x(o.time),
            lane_h - 2.0,
            esc(&format!("#{} {} {}", o.index, o.f, o.value))
        );
    }
    time_axis(&mut s, &f);
    s.push_str("</svg>");
    s
}

pub fn latency_svg(history: &[Op]) -> String {
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let f = Frame { left: 70.0, top: 20.0, w: 1100.0, h: 260.0, t_max: t_end as f64 / 1e9 };
    let pairs: Vec<_> = pair_ops(history).into_iter().filter(|p| p.complete.is_some()).collect();
    let lat = |p: &crate::history::Pair| (p.complete.unwrap().time - p.invoke.time) as f64 / 1e6;
    let max_ms = pairs.iter().map(lat).fold(1.0f64, f64::max);
    let lo = 0.1f64.log10();
    let hi = max_ms.max(10.0).log10().ceil();
    let y = |ms: f64| f.top + f.h - ((ms.max(0.1).log10() - lo) / (hi - lo)) * f.h;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"##,
        f.left + f.w + 20.0,
        f.top + f.h + 30.0
    );
    shade(&mut s, &f, &nemesis_intervals(history), false);
    let mut e = -1i32;
    while (e as f64) <= hi {
        let ms = 10f64.powi(e);
        let yy = y(ms);
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{} ms</text>"##,
            f.left,
            f.left + f.w,
            f.left - 4.0,
            yy + 3.0,
            if ms < 1.0 { format!("{ms}") } else { format!("{}", ms as u64) }
        );
        e += 1;
    }
    for p in &pairs {
        let c = p.complete.unwrap();
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="1.6" fill="{}"/>"##,
            f.x(p.invoke.time),
            y(lat(p)),
            color(&p.invoke.f, c.typ)
        );
    }
    time_axis(&mut s, &f);
    s.push_str("</svg>");
    s
}

pub fn throughput_svg(history: &[Op]) -> String {
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let f = Frame { left: 70.0, top: 20.0, w: 1100.0, h: 200.0, t_max: t_end as f64 / 1e9 };
    let bucket_ns: u64 = 1_000_000_000;
    let nb = (t_end / bucket_ns + 1) as usize;
    let mut series: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for o in history.iter().filter(|o| o.is_client() && o.typ != OpType::Invoke) {
        let key = match (o.typ, o.f.as_str()) {
            (OpType::Ok, "read" | "dequeue" | "queued" | "frame") => "ok read",
            (OpType::Ok, "status") => "ok status",
            (OpType::Ok, _) => "ok write",
            (OpType::Info, _) => "info",
            _ => "fail",
        };
        series.entry(key).or_insert_with(|| vec![0; nb])[(o.time / bucket_ns) as usize] += 1;
    }
    let max = series.values().flat_map(|v| v.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"##,
        f.left + f.w + 20.0,
        f.top + f.h + 30.0
    );
    shade(&mut s, &f, &nemesis_intervals(history), false);
    let step = nice_step(max, 5);
    let mut v = 0.0;
    while v <= max + 1e-9 {
        let yy = f.top + f.h - v / max * f.h;
        let _ = write!(
            s,
            r##"<line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{v}/s</text>"##,
            f.left,
            f.left + f.w,
            f.left - 4.0,
            yy + 3.0
        );
        v += step;
    }
    for (name, counts) in &series {
        let c = match *name {
            "ok read" => OK,
            "ok status" => OK_STATUS,
            "ok write" => OK_WRITE,
            "info" => INFO,
            _ => FAIL,
        };
        let pts: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "{:.1},{:.1}",
                    f.x(i as u64 * bucket_ns + bucket_ns / 2),
                    f.top + f.h - *n as f64 / max * f.h
                )
            })
            .collect();
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{}"><title>{name}</title></polyline>"##,
            pts.join(" ")
        );
    }
    time_axis(&mut s, &f);
    s.push_str("</svg>");
    s
}

/// Counts of client completions by type.
pub fn counts(history: &[Op]) -> (usize, usize, usize, usize) {
    let mut c = (0, 0, 0, 0);
    for o in history.iter().filter(|o| o.is_client()) {
        match o.typ {
            OpType::Invoke => c.0 += 1,
            OpType::Ok => c.1 += 1,
            OpType::Fail => c.2 += 1,
            OpType::Info => c.3 += 1,
        }
    }
    c
}

/// The one-screen summary printed at the end of a run; ends in `valid: X`.
pub fn summary(meta: &Value, history: &[Op], results: &Results, dir: &str) -> String {
    let mut s = String::new();
    let (inv, ok, fail, info) = counts(history);
    let _ = writeln!(s, "== herald-jepsen {} ==", meta["workload"].as_str().unwrap_or("?"));
    let _ = writeln!(s, "store        {dir}");
    let _ = writeln!(s, "command      {}", meta["command"].as_str().unwrap_or(""));
    let _ = writeln!(
        s,
        "seed {}  nodes {}  time-limit {}s  concurrency {}  nemesis {}  commit {}",
        meta["seed"],
        meta["nodes"],
        meta["time_limit"],
        meta["concurrency"],
        meta["nemesis"].as_str().unwrap_or("?"),
        meta["commit"].as_str().unwrap_or("?")
    );
    let _ = writeln!(s, "ops          {inv} invoked: {ok} ok, {fail} fail, {info} info");
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for o in history.iter().filter(|o| o.process == Process::Nemesis && o.f.starts_with("start-")) {
        *faults.entry(o.f.trim_start_matches("start-").to_string()).or_default() += 1;
    }
    let faults: Vec<String> =
        faults.iter().map(|(k, v)| format!("{k}×{}", v.div_ceil(2))).collect();
    let _ = writeln!(
        s,
        "faults       {}",
        if faults.is_empty() { "none".into() } else { faults.join(", ") }
    );
    let c = &results.checkers;
    for r in c.all() {
        let _ = writeln!(s, "{:<15} {:<7} {}", r.name(), r.verdict().as_str(), r.summary_line());
    }
    for r in c.client().into_iter().chain(c.master()) {
        for l in r.anomaly_lines() {
            let _ = writeln!(s, "  {l}");
        }
    }
    if results.interrupted {
        let _ = writeln!(
            s,
            "interrupted  yes: the run was stopped early (Ctrl-C/SIGTERM); history is partial"
        );
    }
    let _ = writeln!(s, "report       {dir}/report.html");
    let _ = writeln!(s, "valid: {}", results.valid.as_str());
    s
}

/// A duration in ms for the summary: "150 ms", "12.4 s", or "never".
pub fn ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x >= 1000.0 => format!("{:.1} s", x / 1000.0),
        Some(x) => format!("{x:.0} ms"),
        None => "never".into(),
    }
}

/// A value as compact JSON, as results.json has it (maps with sorted keys).
pub fn json_text<T: Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_value(v).map(|v| v.to_string()).unwrap_or_default()
}

/// A colour per node number (leader colours in the master plots).
fn node_color(n: u64) -> &'static str {
    const P: [&str; 8] =
        ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
    P[(n.saturating_sub(1) % P.len() as u64) as usize]
}

/// Leadership as each node saw it: one lane per node, coloured by the
/// leader it named (grey: none, pink: no answer); a black tick above the
/// bar when the node itself said it was leader. Hover for term and state.
pub fn master_svg(history: &[Op]) -> String {
    use crate::checker::status::observations;
    let obs = observations(history);
    let nodes = obs.iter().map(|o| o.node).max().unwrap_or(0) as usize;
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let lane_h = 18.0;
    let f = Frame {
        left: 70.0,
        top: 20.0,
        w: 1100.0,
        h: nodes.max(1) as f64 * lane_h,
        t_max: t_end as f64 / 1e9,
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"##,
        f.left + f.w + 20.0,
        f.top + f.h + 30.0
    );
    shade(&mut s, &f, &nemesis_intervals(history), true);
    for n in 1..=nodes {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">n{n}</text>"##,
            f.left - 4.0,
            f.top + n as f64 * lane_h - 5.0
        );
    }
    // Each answer lasts until the node's next answer (at most 1 s).
    let mut next: std::collections::HashMap<u64, u64> = Default::default();
    let mut ends = vec![0u64; obs.len()];
    for (i, o) in obs.iter().enumerate().rev() {
        let t = o.time();
        ends[i] = next.get(&o.node).copied().unwrap_or(t_end).min(t + 1_000_000_000);
        next.insert(o.node, t);
    }
    for (o, end) in obs.iter().zip(ends) {
        let y = f.top + (o.node as f64 - 1.0) * lane_h + 4.0;
        let x0 = f.x(o.time());
        let w = (f.x(end) - x0).max(0.8);
        let (c, title) = match &o.status {
            Some(st) => (
                st.leader.map(node_color).unwrap_or("#ccc"),
                format!(
                    "n{}: term {} leader {} state {} time master {} in tolerance {} offset {} ms",
                    st.node,
                    st.term,
                    st.leader.map(|l| format!("n{l}")).unwrap_or("none".into()),
                    st.state,
                    st.time_master.map(|l| format!("n{l}")).unwrap_or("none".into()),
                    st.in_tolerance.map(|b| b.to_string()).unwrap_or("?".into()),
                    st.offset_ms.map(|x| format!("{x:.3}")).unwrap_or("?".into())
                ),
            ),
            None => (FAIL, format!("n{}: no answer", o.node)),
        };
        let _ = write!(
            s,
            r##"<rect x="{x0:.2}" y="{y:.1}" width="{w:.2}" height="{:.1}" fill="{c}"><title>{}</title></rect>"##,
            lane_h - 8.0,
            esc(&title)
        );
        if o.status.as_ref().is_some_and(|st| st.is_leader()) {
            let _ = write!(
                s,
                r##"<rect x="{x0:.2}" y="{:.1}" width="{w:.2}" height="2" fill="#000"/>"##,
                y - 3.0
            );
        }
    }
    time_axis(&mut s, &f);
    s.push_str("</svg>");
    s
}

/// Clock error over time, symmetric log scale (ms): filled dots the error
/// each node reported against its time master, hollow circles the skew
/// the harness measured over SNTP against the master the node followed.
pub fn clock_svg(history: &[Op]) -> String {
    use crate::checker::status::observations;
    let obs: Vec<_> =
        observations(history).into_iter().filter_map(|o| Some((o.time(), o.status?))).collect();
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let f = Frame { left: 70.0, top: 20.0, w: 1100.0, h: 260.0, t_max: t_end as f64 / 1e9 };
    let sl = |x: f64| x.signum() * (1.0 + x.abs()).log10();
    let mut max_abs = 10.0f64;
    let mut pts: Vec<(u64, u64, f64, bool)> = Vec::new(); // (t, node, ms, measured)
    let mut by_node: std::collections::HashMap<u64, Vec<(u64, f64)>> = Default::default();
    for (t, st) in &obs {
        if let Some(sn) = st.sntp {
            by_node.entry(st.node).or_default().push((*t, sn.offset_ms));
        }
    }
    for (t, st) in &obs {
        if let Some(o) = st.offset_ms {
            pts.push((*t, st.node, o, false));
        }
        let m = st.time_master.filter(|m| *m != st.node);
        if let (Some(m), Some(sn)) = (m, st.sntp) {
            let near = by_node.get(&m).and_then(|v| {
                v.iter()
                    .filter(|(tm, _)| tm.abs_diff(*t) <= 300_000_000)
                    .min_by_key(|(tm, _)| tm.abs_diff(*t))
            });
            if let Some((_, mo)) = near {
                pts.push((*t, st.node, sn.offset_ms - mo, true));
            }
        }
    }
    for p in &pts {
        max_abs = max_abs.max(p.2.abs());
    }
    let hi = sl(max_abs).ceil();
    let y = |ms: f64| f.top + f.h / 2.0 - sl(ms) / hi * (f.h / 2.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{:.0}" height="{:.0}" font-family="sans-serif">"##,
        f.left + f.w + 20.0,
        f.top + f.h + 30.0
    );
    shade(&mut s, &f, &nemesis_intervals(history), false);
    let mut e = 0;
    while e as f64 <= hi {
        let v = if e == 0 { 0.0 } else { 10f64.powi(e) - 1.0 };
        let label = if e == 0 { 0 } else { 10i64.pow(e as u32) };
        for sign in [1.0, -1.0] {
            if e == 0 && sign < 0.0 {
                continue;
            }
            let yy = y(sign * v.max(if e == 0 { 0.0 } else { 1.0 }));
            let _ = write!(
                s,
                r##"<line x1="{:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{}"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}{label} ms</text>"##,
                f.left,
                f.left + f.w,
                if e == 0 { "#aaa" } else { "#eee" },
                f.left - 4.0,
                yy + 3.0,
                if sign < 0.0 { "-" } else { "" }
            );
        }
        e += 1;
    }
    for (t, n, v, measured) in &pts {
        let c = node_color(*n);
        let _ = if *measured {
            write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="2.2" fill="none" stroke="{c}" stroke-width="0.8"><title>n{n} measured {v:.3} ms</title></circle>"##,
                f.x(*t),
                y(*v)
            )
        } else {
            write!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="1.4" fill="{c}"><title>n{n} reported {v:.3} ms</title></circle>"##,
                f.x(*t),
                y(*v)
            )
        };
    }
    time_axis(&mut s, &f);
    s.push_str("</svg>");
    s
}

/// A table of objects: one column per key (in order of appearance), floats
/// to 3 decimals. Rows that are not objects are left out.
pub fn json_table<T: Serialize>(rows: &[T]) -> String {
    let rows: Vec<Value> =
        rows.iter().map(|r| serde_json::to_value(r).unwrap_or_default()).collect();
    let rows: Vec<&serde_json::Map<String, Value>> =
        rows.iter().filter_map(|r| r.as_object()).collect();
    let mut cols: Vec<&String> = Vec::new();
    for r in &rows {
        for k in r.keys() {
            if !cols.contains(&k) {
                cols.push(k);
            }
        }
    }
    let mut s = String::from("<table><tr>");
    for c in &cols {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr>");
    for r in rows {
        s.push_str("<tr>");
        for c in &cols {
            let v = r.get(*c).map(|v| match v {
                Value::String(x) => x.clone(),
                Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
                other => other.to_string(),
            });
            let _ = write!(s, "<td>{}</td>", esc(&v.unwrap_or_default()));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

pub fn html(meta: &Value, history: &[Op], results: &Results, dir: &str) -> String {
    let concurrency = meta["concurrency"].as_u64().unwrap_or(1).max(1) as usize;
    let v = results.valid.as_str();
    let badge = match v {
        "true" => "#2a2",
        "false" => "#d22",
        _ => "#d90",
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r##"<!DOCTYPE html><html><head><meta charset="utf-8"><title>herald-jepsen {wl} {v}</title>
<style>body{{font-family:sans-serif;margin:20px;color:#222}} table{{border-collapse:collapse;font-size:12px;margin:6px 0}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} pre{{background:#f6f6f6;padding:8px;font-size:12px;overflow-x:auto}}
.badge{{color:#fff;background:{badge};padding:2px 10px;border-radius:4px}} .legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}}
svg{{border:1px solid #eee;margin:4px 0}}</style></head><body>
<h1>herald-jepsen: {wl} <span class="badge">valid: {v}</span></h1>"##,
        wl = esc(meta["workload"].as_str().unwrap_or("?"))
    );
    let _ = write!(s, "<pre>{}</pre>", esc(&summary(meta, history, results, dir)));
    s.push_str(r##"<h2>How to read this</h2><p>Each op is a bar from invoke to completion in its worker's lane: <b>ok</b> (it happened; reads light blue, writes dark blue), <b>info</b> (unknown outcome: timeout or connection lost after sending; the worker then continues as a new process), <b>fail</b> (definitely did not happen). Ops outlined in red belong to a reported anomaly window. Grey bands are nemesis intervals (from the start of a fault to the end of its heal); marks in the <i>nemesis</i> lane are nemesis ops, red ones node crashes. Hover anything for details. The linearizability checker partitions the history by uid and searches for a legal order of each register (WGL); <i>unknown</i> means its time limit ran out. Lanes <i>status nN</i> are the master workload's polls of node N (green: it answered; details under <i>Master and clocks</i>). Lanes <i>writer N</i> are the messages workload's submissions (one bar per submission, retries included), lanes <i>mboxN</i> its mailbox consumers (thin light-blue ticks: deliveries, recorded as they arrive; dark ticks: session starts); the queue checker (Jepsen's total queue) is in the checker table and the summary.</p>"##);
    let _ = write!(
        s,
        r##"<div class="legend"><span style="background:{OK}"></span>ok read<span style="background:{OK_WRITE}"></span>ok write<span style="background:{OK_STATUS}"></span>ok status<span style="background:{INFO}"></span>info<span style="background:{FAIL}"></span>fail<span style="background:{NEMESIS}"></span>nemesis active</div>"##
    );
    s.push_str("<h2>Timeline</h2>");
    s.push_str(&timeline_svg(history, concurrency, &anomaly_ops(results)));
    s.push_str("<h2>Latency</h2>");
    s.push_str(&latency_svg(history));
    s.push_str("<h2>Throughput (completions per second)</h2>");
    s.push_str(&throughput_svg(history));
    s.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>valid</th><th>result</th></tr>");
    let c = &results.checkers;
    for r in c.all() {
        let text = r.table_json().to_string();
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(r.name()),
            r.verdict().as_str(),
            esc(&text.chars().take(TABLE_JSON_CHARS).collect::<String>())
        );
    }
    s.push_str("</table>");
    for r in c.client() {
        s.push_str(&r.html_section());
    }
    if history.iter().any(|o| o.f == "status") {
        s.push_str("<h2>Master and clocks</h2><p>Leadership as each node reported it (its own view, <code>GET /v1/cluster?local=true</code>): bars coloured by the leader it named ");
        for n in 1..=meta["nodes"].as_u64().unwrap_or(0) {
            let _ = write!(s, r#"<span style="color:{}">■ n{n}</span> "#, node_color(n));
        }
        s.push_str("(grey: none, pink: no answer); a black line above a bar: the node said it was leader.</p>");
        s.push_str(&master_svg(history));
        s.push_str("<p>Clock error, symmetric log scale: dots are the error each node reported against its time master (<code>clock.offset_ms</code>, positive: the master is ahead); circles are the skew the harness measured itself over SNTP (node − the master it followed).</p>");
        s.push_str(&clock_svg(history));
        for r in c.master() {
            s.push_str(&r.html_section());
        }
    }
    s.push_str("<h2>Nemesis</h2><table><tr><th>#</th><th>time</th><th>f</th><th>value</th></tr>");
    for o in history.iter().filter(|o| o.process == Process::Nemesis) {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{:.3}s</td><td>{}</td><td><code>{}</code></td></tr>",
            o.index,
            o.time as f64 / 1e9,
            esc(&o.f),
            esc(&o.value.to_string())
        );
    }
    s.push_str("</table>");
    s.push_str("<h2>Files</h2><ul>");
    for f in ["history.jsonl", "history.edn", "results.json", "test.json", "report.txt"] {
        let _ = write!(s, r#"<li><a href="{f}">{f}</a></li>"#);
    }
    for i in 1..=meta["nodes"].as_u64().unwrap_or(0) {
        let _ = write!(
            s,
            r#"<li><a href="n{i}.log">n{i}.log</a> (<a href="n{i}.xml">config</a>)</li>"#
        );
    }
    s.push_str("</ul><h2>Test</h2>");
    let _ =
        write!(s, "<pre>{}</pre>", esc(&serde_json::to_string_pretty(meta).unwrap_or_default()));
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use serde_json::json;
    use OpType::*;

    /// Results as a test writes them, in results.json's JSON.
    fn typed(results: Value) -> Results {
        serde_json::from_value(results).expect("results.json shape")
    }

    fn sample() -> Vec<Op> {
        hist(&[
            (0, Invoke, "write", json!(["k0", 1])),
            (-1, Info, "start-partition", json!({"mode": "halves"})),
            (-1, Info, "start-partition", json!({"drops": {}})),
            (0, Ok, "write", json!(["k0", 1])),
            (1, Invoke, "read", json!(["k0", null])),
            (1, Info, "read", json!(["k0", null])),
            (-1, Info, "stop-partition", Value::Null),
            (-1, Info, "stop-partition", json!([])),
            (2, Invoke, "write", json!(["k0", 2])),
            (2, Fail, "write", json!(["k0", 2])),
        ])
    }

    /// Proves nemesis intervals run from a start op to the completion of its
    /// stop, and an unstopped fault runs to the end of the history.
    #[test]
    fn report_nemesis_intervals() {
        let iv = nemesis_intervals(&sample());
        assert_eq!(iv, vec![Interval { start: 1000, end: 7000, label: "partition".into() }]);
        let open =
            hist(&[(-1, Info, "start-kill", Value::Null), (0, Invoke, "read", json!(["k", null]))]);
        assert_eq!(nemesis_intervals(&open)[0].end, 1000);
    }

    /// Proves the HTML is self-contained (no scripts, no external URLs), has
    /// the three plots, shaded nemesis bands, one bar per op and the verdict.
    #[test]
    fn report_html_is_self_contained_with_plots() {
        let meta = json!({"workload": "presence", "concurrency": 3, "nodes": 3, "seed": 1, "time_limit": 1, "nemesis": "partition", "commit": "x", "command": "c"});
        let results = json!({"valid": false, "checkers": {"linear": {"valid": false, "keys": 1, "valid_keys": 0, "invalid_keys": 1, "unknown_keys": 0, "ops": 2, "elapsed_ms": 1, "failures": [
            {"key": "k0", "valid": false, "anomaly": {"failing_op": {"index": 4, "process": 1, "f": "read", "value": 9, "type": "ok", "invoke_ns": 4000, "complete_ns": 5000},
             "window_start_index": 0, "window_end_index": 5, "window_initial": "nil", "window": [], "longest_linearization": [], "longest_full_len": 1}}]}}});
        let results = typed(results);
        let h = html(&meta, &sample(), &results, "store/x");
        assert!(!h.contains("<script"));
        assert!(!h.contains("src=\"http"));
        assert!(!h.contains("href=\"http"));
        assert_eq!(h.matches("<svg").count(), 3);
        assert!(h.contains(NEMESIS));
        assert!(h.contains("valid: false"));
        assert!(h.contains("key k0"));
        // 3 client ops in the timeline, titled with their index
        assert!(h.contains("#0 p0 write") && h.contains("#4 p1 read") && h.contains("#8 p2 write"));
    }

    /// Proves a master-workload history gets status lanes, the two master
    /// plots, the final-phase tables, the summary lines of the three master
    /// checkers, and the witnesses of a term with two leaders.
    #[test]
    fn report_master_sections_and_summary() {
        use crate::checker::status::tests::{status_hist, sv};
        let mut h = status_hist(&[
            (0, 1, Some(sv(1, 3, Some(1), "leader"))),
            (1, 2, Some(sv(2, 3, Some(2), "leader"))),
            (2, 3, None),
        ]);
        for o in h.iter_mut() {
            if let Process::Worker(p) = o.process {
                o.process = Process::Worker(STATUS_PROCESS_BASE + p - 101);
            }
        }
        let meta = json!({"workload": "master", "concurrency": 10, "nodes": 3, "seed": 7});
        let results = json!({"valid": false, "checkers": {
            "master-term": serde_json::to_value(crate::checker::master_term::check(&h)).unwrap(),
            "master-final": {"valid": true, "leader": 1, "settled_after_ms": 150.0, "deadline_after_ms": 12400.0,
                             "reason": "settled in time and stayed so", "final_views": [{"node": 1, "leader": 1}]},
            "clock-final": {"valid": false, "reason": "not settled at the deadline", "last_unsettled": "n2 not in tolerance (offset -40.0 ms)",
                            "deadline_after_ms": 22400.0, "converged_after_ms": {"n1": 100.0, "n2": null},
                            "final_clocks": []},
            "clock-report": {"valid": false, "count": 12, "persistent_streaks": 1, "longest_streak_ms": 1800.0, "max_measured_skew_ms": 5500.0,
                             "streaks": [{"first": {"node": 3, "time_ns": 11960067208u64, "reported_offset_ms": -0.006, "measured_skew_ms": 88593.1}, "lasted_ms": 1800.0}]}}});
        let results = typed(results);
        let sum = summary(&meta, &h, &results, "d");
        assert!(sum.contains("master-term     false   2 status answers, 1 terms with a leader (max term 3), 1 terms with two leaders"), "{sum}");
        assert!(sum.contains("n1 (lowest running voter) leads, all agree: settled 150 ms after heal (deadline 12.4 s)"), "{sum}");
        assert!(
            sum.contains(
                "last: n2 not in tolerance (offset -40.0 ms) (deadline 22.4 s after heal)"
            ),
            "{sum}"
        );
        assert!(sum.contains("1 times a node kept saying in tolerance while measured >1 s off, for >=1 s (longest 1800 ms, max skew 5500 ms); first: n3 at 11.960 s, reported -0.006 ms, measured +88593 ms"), "{sum}");
        assert!(sum.contains("term 3: n1, n2 each reported state=leader in term 3"), "{sum}");
        let html = html(&meta, &h, &results, "d");
        assert!(html.contains("status n1") && html.contains("status n3"));
        assert!(!html.contains("worker 0"), "no presence lanes without presence ops");
        assert!(html.contains("<h2>Master and clocks</h2>"));
        assert!(html.contains("Terms with more than one leader"));
        assert!(html.contains("After healing: clocks"));
        assert_eq!(html.matches("<svg").count(), 5);
        assert!(!html.contains("<script"));
    }

    /// Proves the summary ends with the overall verdict line and counts ops.
    #[test]
    fn report_summary_ends_with_verdict() {
        let meta = json!({"workload": "presence", "seed": 42});
        let results = json!({"valid": "unknown", "checkers": {"linear": {"valid": "unknown"}}});
        let results = typed(results);
        let s = summary(&meta, &sample(), &results, "d");
        assert!(s.trim_end().ends_with("valid: unknown"), "{s}");
        assert!(s.contains("3 invoked: 1 ok, 1 fail, 1 info"), "{s}");
        assert!(s.contains("partition×1"), "{s}");
    }

    /// Proves a history mixing every workload gets one lane group each, in
    /// order — presence workers, message writers (a writer's later processes
    /// and its companion stay in its lane), one lane per mailbox consumer, status pollers —
    /// then `final` (final reads and mailbox drains) and `nemesis`; and that
    /// the summary prints the queue and drain lines with a lost message.
    #[test]
    fn report_lanes_and_summary_for_messages() {
        use crate::workload::messages::DRAIN_PROCESS_BASE;
        let mut h =
            hist(&[(0, Invoke, "write", json!(["k0", 1])), (0, Ok, "write", json!(["k0", 1]))]);
        let w = |n: u64| Process::Worker(n);
        for (p, f) in [
            (w(WRITER_PROCESS_BASE + 1), "enqueue"),
            (w(WRITER_PROCESS_BASE + 3 * WRITER_STRIDE + 1), "enqueue"),
            (w(WRITER_PROCESS_BASE + WRITER_COMPANION + 1), "enqueue"),
            (w(CONSUMER_PROCESS_BASE + 4), "dequeue"),
            (w(STATUS_PROCESS_BASE + 2), "status"),
            (w(DRAIN_PROCESS_BASE), "queued"),
        ] {
            let mut o = h[0].clone();
            o.process = p;
            o.f = f.into();
            h.push(o);
        }
        let l = Lanes::of(&h, 3);
        // 3 workers, 2 writers, 5 mailboxes, 3 status, final, nemesis
        assert_eq!(l.count(), 15);
        assert_eq!(l.lane(w(WRITER_PROCESS_BASE + 3 * WRITER_STRIDE + 1)), 4);
        assert_eq!(l.name(4), "writer 1");
        assert_eq!(l.lane(w(WRITER_PROCESS_BASE + WRITER_COMPANION + 1)), 4);
        assert_eq!(l.lane(w(CONSUMER_PROCESS_BASE + 4)), 9);
        assert_eq!(l.name(9), "mbox4");
        assert_eq!(l.name(l.lane(w(STATUS_PROCESS_BASE + 2))), "status n3");
        assert_eq!(l.name(l.lane(w(DRAIN_PROCESS_BASE))), "final");
        assert_eq!(l.name(l.lane(Process::Nemesis)), "nemesis");
        let meta = json!({"workload": "messages", "seed": 1});
        let results = json!({"valid": false, "checkers": {
            "queue": {"valid": false, "acknowledged_count": 2, "delivered_count": 1, "delivery_count": 1, "sessions": 1,
                      "lost_count": 1, "unexpected_count": 0, "misdelivered_count": 0, "duplicated_count": 0, "recovered_count": 0,
                      "id_conflict_count": 0, "delivered_unseen_count": 0, "order_violation_count": 0, "session_order_violation_count": 0,
                      "resubmits": 0, "resubmits_duplicate": 0,
                      "lost_ops": [{"mailbox": "mbox2", "element": 7, "message_id": 31, "invoke_index": 40, "ok_index": 44}]},
            "messages-final": {"valid": false, "elapsed_ms": 30000.0, "mailboxes": [
                {"mailbox": "mbox0", "drained": true, "delivered": 3, "queued_last": 0},
                {"mailbox": "mbox2", "drained": false, "delivered": 0, "queued_last": 4}]}}});
        let results = typed(results);
        let sum = summary(&meta, &h, &results, "d");
        assert!(
            sum.contains("2 acknowledged, 1 delivered (1 deliveries, 1 sessions); lost 1"),
            "{sum}"
        );
        assert!(sum.contains("lost: mbox2 element 7 (message id 31), enqueue #40 acknowledged at #44, never delivered"), "{sum}");
        assert!(sum.contains("1/2 mailboxes drained to queued=0 after heal in 30.0 s (3 deliveries); not drained: mbox2 queued 4"), "{sum}");
    }
}
