//! The human report: `report.html` (self-contained: inline SVG and CSS, no
//! scripts or external assets) and the one-screen text summary.
//!
//! Plots: a timeline of ops per worker lane (Jepsen colours: ok blue, info
//! orange, fail pink) with nemesis intervals shaded; latency over time
//! (log scale); throughput over time. Then the checker verdicts and, for each
//! anomaly, the failing window and longest partial linearization.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::history::{pair_ops, Op, OpType, Process};
use crate::workload::presence::FINAL_PROCESS_BASE;

const OK: &str = "#6DB6FE";
const OK_WRITE: &str = "#2C7BB6";
const INFO: &str = "#FFAA26";
const FAIL: &str = "#E05A9B";
const NEMESIS: &str = "rgba(120,120,120,0.18)";

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
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

fn lane(p: Process, concurrency: usize) -> usize {
    match p {
        Process::Worker(n) if n >= FINAL_PROCESS_BASE => concurrency,
        Process::Worker(n) => (n % concurrency as u64) as usize,
        Process::Nemesis => concurrency + 1,
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
        OpType::Ok if f == "read" => OK,
        OpType::Ok => OK_WRITE,
        OpType::Fail => FAIL,
        _ => INFO,
    }
}

/// Invoke indices of the ops in reported anomaly windows (outlined in red).
pub fn anomaly_ops(results: &Value) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    for kr in results["checkers"]["linear"]["failures"]
        .as_array()
        .into_iter()
        .flatten()
    {
        for o in kr["anomaly"]["window"].as_array().into_iter().flatten() {
            if let Some(i) = o["index"].as_u64() {
                out.insert(i);
            }
        }
    }
    out
}

pub fn timeline_svg(
    history: &[Op],
    concurrency: usize,
    highlight: &std::collections::HashSet<u64>,
) -> String {
    let t_end = history.last().map(|o| o.time).unwrap_or(1).max(1);
    let lanes = concurrency + 2;
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
        let name = if l < concurrency {
            format!("worker {l}")
        } else if l == concurrency {
            "final".into()
        } else {
            "nemesis".into()
        };
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
        let l = lane(inv.process, concurrency);
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
    let ny = f.top + (concurrency + 1) as f64 * lane_h + 1.0;
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
    let f = Frame {
        left: 70.0,
        top: 20.0,
        w: 1100.0,
        h: 260.0,
        t_max: t_end as f64 / 1e9,
    };
    let pairs: Vec<_> = pair_ops(history)
        .into_iter()
        .filter(|p| p.complete.is_some())
        .collect();
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
            if ms < 1.0 {
                format!("{ms}")
            } else {
                format!("{}", ms as u64)
            }
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
    let f = Frame {
        left: 70.0,
        top: 20.0,
        w: 1100.0,
        h: 200.0,
        t_max: t_end as f64 / 1e9,
    };
    let bucket_ns: u64 = 1_000_000_000;
    let nb = (t_end / bucket_ns + 1) as usize;
    let mut series: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for o in history
        .iter()
        .filter(|o| o.is_client() && o.typ != OpType::Invoke)
    {
        let key = match (o.typ, o.f.as_str()) {
            (OpType::Ok, "read") => "ok read",
            (OpType::Ok, _) => "ok write",
            (OpType::Info, _) => "info",
            _ => "fail",
        };
        series.entry(key).or_insert_with(|| vec![0; nb])[(o.time / bucket_ns) as usize] += 1;
    }
    let max = series
        .values()
        .flat_map(|v| v.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1) as f64;
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

fn verdict(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        _ => "unknown".into(),
    }
}

/// The one-screen summary printed at the end of a run; ends in `valid: X`.
pub fn summary(meta: &Value, history: &[Op], results: &Value, dir: &str) -> String {
    let mut s = String::new();
    let (inv, ok, fail, info) = counts(history);
    let _ = writeln!(
        s,
        "== herald-jepsen {} ==",
        meta["workload"].as_str().unwrap_or("?")
    );
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
    let _ = writeln!(
        s,
        "ops          {inv} invoked: {ok} ok, {fail} fail, {info} info"
    );
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for o in history
        .iter()
        .filter(|o| o.process == Process::Nemesis && o.f.starts_with("start-"))
    {
        *faults
            .entry(o.f.trim_start_matches("start-").to_string())
            .or_default() += 1;
    }
    let faults: Vec<String> = faults
        .iter()
        .map(|(k, v)| format!("{k}×{}", v.div_ceil(2)))
        .collect();
    let _ = writeln!(
        s,
        "faults       {}",
        if faults.is_empty() {
            "none".into()
        } else {
            faults.join(", ")
        }
    );
    if let Some(checkers) = results["checkers"].as_object() {
        for (name, r) in checkers {
            let detail = match name.as_str() {
                "linear" => format!(
                    "{} keys: {} valid, {} invalid, {} unknown; {} ops checked in {} ms",
                    r["keys"],
                    r["valid_keys"],
                    r["invalid_keys"],
                    r["unknown_keys"],
                    r["ops"],
                    r["elapsed_ms"]
                ),
                "final-reads" => format!("{}/{} keys read after heal", r["read_ok"], r["keys"]),
                "crashes" => {
                    let n = r["exits"].as_array().map(|a| a.len()).unwrap_or(0);
                    let mut d = if n == 0 {
                        "no node exited on its own".to_string()
                    } else {
                        format!("{n} unexpected exit(s): {}", r["exits"])
                    };
                    if r["unclean_shutdown"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                    {
                        d.push_str(&format!(
                            "; not exit 0 on SIGTERM: {}",
                            r["unclean_shutdown"]
                        ));
                    }
                    d
                }
                "history" => format!(
                    "{} well-formedness problems",
                    r["problems"].as_array().map(|a| a.len()).unwrap_or(0)
                ),
                "queue" => format!(
                    "lost {} unexpected {} duplicated {}",
                    r["lost_count"], r["unexpected_count"], r["duplicated_count"]
                ),
                _ => String::new(),
            };
            let _ = writeln!(s, "{:<12} {:<7} {}", name, verdict(&r["valid"]), detail);
        }
    }
    if let Some(fails) = results["checkers"]["linear"]["failures"].as_array() {
        for kr in fails.iter().take(5) {
            if let Some(a) = kr.get("anomaly") {
                let _ = writeln!(
                    s,
                    "  key {}: {} op #{} {} {} not linearizable; window of {} ops (#{}–#{})",
                    kr["key"].as_str().unwrap_or("?"),
                    a["failing_op"]["type"].as_str().unwrap_or(""),
                    a["failing_op"]["index"],
                    a["failing_op"]["f"].as_str().unwrap_or(""),
                    a["failing_op"]["value"],
                    a["window"].as_array().map(|w| w.len()).unwrap_or(0),
                    a["window_start_index"],
                    a["window_end_index"]
                );
            } else {
                let _ = writeln!(
                    s,
                    "  key {}: {}",
                    kr["key"].as_str().unwrap_or("?"),
                    verdict(&kr["valid"])
                );
            }
        }
    }
    if results["interrupted"].as_bool() == Some(true) {
        let _ = writeln!(
            s,
            "interrupted  yes: the run was stopped early (Ctrl-C/SIGTERM); history is partial"
        );
    }
    let _ = writeln!(s, "report       {dir}/report.html");
    let _ = writeln!(s, "valid: {}", verdict(&results["valid"]));
    s
}

fn op_rows(ops: &Value) -> String {
    let mut s = String::from("<table><tr><th>#</th><th>process</th><th>f</th><th>value</th><th>type</th><th>invoke</th><th>complete</th></tr>");
    for o in ops.as_array().into_iter().flatten() {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}s</td><td>{}</td></tr>",
            o["index"],
            esc(&o["process"].to_string()),
            esc(o["f"].as_str().unwrap_or("")),
            esc(&o["value"].to_string()),
            esc(o["type"].as_str().unwrap_or("")),
            o["invoke_ns"].as_f64().unwrap_or(0.0) / 1e9,
            o["complete_ns"].as_f64().map(|t| format!("{:.3}s", t / 1e9)).unwrap_or_else(|| "never".into())
        );
    }
    s.push_str("</table>");
    s
}

pub fn html(meta: &Value, history: &[Op], results: &Value, dir: &str) -> String {
    let concurrency = meta["concurrency"].as_u64().unwrap_or(1).max(1) as usize;
    let v = verdict(&results["valid"]);
    let badge = match v.as_str() {
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
    let _ = write!(
        s,
        "<pre>{}</pre>",
        esc(&summary(meta, history, results, dir))
    );
    s.push_str(r##"<h2>How to read this</h2><p>Each op is a bar from invoke to completion in its worker's lane: <b>ok</b> (it happened; reads light blue, writes dark blue), <b>info</b> (unknown outcome: timeout or connection lost after sending; the worker then continues as a new process), <b>fail</b> (definitely did not happen). Ops outlined in red belong to a reported anomaly window. Grey bands are nemesis intervals (from the start of a fault to the end of its heal); marks in the <i>nemesis</i> lane are nemesis ops, red ones node crashes. Hover anything for details. The linearizability checker partitions the history by uid and searches for a legal order of each register (WGL); <i>unknown</i> means its time limit ran out.</p>"##);
    let _ = write!(
        s,
        r##"<div class="legend"><span style="background:{OK}"></span>ok read<span style="background:{OK_WRITE}"></span>ok write<span style="background:{INFO}"></span>info<span style="background:{FAIL}"></span>fail<span style="background:{NEMESIS}"></span>nemesis active</div>"##
    );
    s.push_str("<h2>Timeline</h2>");
    s.push_str(&timeline_svg(history, concurrency, &anomaly_ops(results)));
    s.push_str("<h2>Latency</h2>");
    s.push_str(&latency_svg(history));
    s.push_str("<h2>Throughput (completions per second)</h2>");
    s.push_str(&throughput_svg(history));
    s.push_str("<h2>Checkers</h2><table><tr><th>checker</th><th>valid</th><th>result</th></tr>");
    if let Some(checkers) = results["checkers"].as_object() {
        for (name, r) in checkers {
            let mut brief = r.clone();
            if let Some(o) = brief.as_object_mut() {
                o.remove("failures");
            }
            let text = serde_json::to_string(&brief).unwrap_or_default();
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(name),
                verdict(&r["valid"]),
                esc(&text.chars().take(600).collect::<String>())
            );
        }
    }
    s.push_str("</table>");
    if let Some(fails) = results["checkers"]["linear"]["failures"].as_array() {
        if !fails.is_empty() {
            s.push_str("<h2>Linearizability anomalies</h2>");
        }
        for kr in fails.iter().take(20) {
            let _ = write!(
                s,
                "<h3>key {} — valid: {}</h3>",
                esc(kr["key"].as_str().unwrap_or("?")),
                verdict(&kr["valid"])
            );
            if let Some(a) = kr.get("anomaly") {
                let _ = write!(
                    s,
                    "<p>Failing op (its completion makes the history non-linearizable):</p>{}",
                    op_rows(&Value::Array(vec![a["failing_op"].clone()]))
                );
                let _ = write!(
                    s,
                    "<p>Smallest failing window: history #{}–#{}, initial value {} ({} ops). No order of these ops is legal:</p>{}",
                    a["window_start_index"],
                    a["window_end_index"],
                    esc(a["window_initial"].as_str().unwrap_or("")),
                    a["window"].as_array().map(|w| w.len()).unwrap_or(0),
                    op_rows(&a["window"])
                );
                let _ = write!(
                    s,
                    "<p>Longest partial linearization of the window (in order; {} ops in the longest one over the whole key):</p>{}",
                    a["longest_full_len"],
                    op_rows(&a["longest_linearization"])
                );
            } else {
                s.push_str("<p>The checker ran out of time on this key.</p>");
            }
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
    for f in [
        "history.jsonl",
        "history.edn",
        "results.json",
        "test.json",
        "report.txt",
    ] {
        let _ = write!(s, r#"<li><a href="{f}">{f}</a></li>"#);
    }
    for i in 1..=meta["nodes"].as_u64().unwrap_or(0) {
        let _ = write!(
            s,
            r#"<li><a href="n{i}.log">n{i}.log</a> (<a href="n{i}.xml">config</a>)</li>"#
        );
    }
    s.push_str("</ul><h2>Test</h2>");
    let _ = write!(
        s,
        "<pre>{}</pre>",
        esc(&serde_json::to_string_pretty(meta).unwrap_or_default())
    );
    s.push_str("</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::tests::hist;
    use serde_json::json;
    use OpType::*;

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
        assert_eq!(
            iv,
            vec![Interval {
                start: 1000,
                end: 7000,
                label: "partition".into()
            }]
        );
        let open = hist(&[
            (-1, Info, "start-kill", Value::Null),
            (0, Invoke, "read", json!(["k", null])),
        ]);
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

    /// Proves the summary ends with the overall verdict line and counts ops.
    #[test]
    fn report_summary_ends_with_verdict() {
        let meta = json!({"workload": "presence", "seed": 42});
        let results = json!({"valid": "unknown", "checkers": {"linear": {"valid": "unknown"}}});
        let s = summary(&meta, &sample(), &results, "d");
        assert!(s.trim_end().ends_with("valid: unknown"), "{s}");
        assert!(s.contains("3 invoked: 1 ok, 1 fail, 1 info"), "{s}");
        assert!(s.contains("partition×1"), "{s}");
    }
}
