//! Results of `herald bench`: the JSON document (`--json`), the human
//! table, and `bench compare`, which lines up two systems' documents and
//! gives the ratio of every figure.

use std::collections::BTreeMap;
use std::time::Duration;

use herald_client::ClientError;
use serde::{Deserialize, Serialize};

use super::super::table::Table;
use super::super::Ctx;
use super::procs::Mem;
use super::stats::{throughput, Latency, Samples};
use super::target::{ErrorCounts, NodeInfo, System};
use super::CompareArgs;

/// How often an error code was seen, with one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub count: u64,
    pub example: String,
}

/// Memory of one node's process at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMem {
    /// Herald node number or etcd endpoint position; None for a process
    /// given by `--pids` (or found by name) that matched no node.
    pub number: Option<u64>,
    pub addr: Option<String>,
    /// leader | follower | process | killed leader (as of the run's start)
    pub role: String,
    pub pid: Option<u32>,
    pub rss_bytes: Option<u64>,
    /// VmHWM: the peak since the process started.
    pub peak_rss_bytes: Option<u64>,
    /// RssAnon: the anonymous part of the resident set (the heap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_rss_bytes: Option<u64>,
    /// RssFile: the file-backed part (the binary, mapped files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_rss_bytes: Option<u64>,
    /// memory workload: RSS growth over the load divided by the users loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_user: Option<f64>,
    /// memory workload: RssAnon growth over the load divided by the users
    /// loaded (what the users' state costs, without mapped files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anon_bytes_per_user: Option<f64>,
}

impl NodeMem {
    pub fn new(n: &NodeInfo, pid: Option<u32>, mem: Option<Mem>) -> Self {
        NodeMem {
            number: Some(n.number),
            addr: Some(n.addr.clone()),
            role: if n.leader { "leader" } else { "follower" }.into(),
            pid,
            rss_bytes: mem.map(|m| m.rss_bytes),
            peak_rss_bytes: mem.map(|m| m.peak_rss_bytes),
            anon_rss_bytes: mem.and_then(|m| m.anon_rss_bytes),
            file_rss_bytes: mem.and_then(|m| m.file_rss_bytes),
            bytes_per_user: None,
            anon_bytes_per_user: None,
        }
    }

    pub fn unmatched(pid: u32, mem: Option<Mem>) -> Self {
        NodeMem {
            number: None,
            addr: None,
            role: "process".into(),
            pid: Some(pid),
            rss_bytes: mem.map(|m| m.rss_bytes),
            peak_rss_bytes: mem.map(|m| m.peak_rss_bytes),
            anon_rss_bytes: mem.and_then(|m| m.anon_rss_bytes),
            file_rss_bytes: mem.and_then(|m| m.file_rss_bytes),
            bytes_per_user: None,
            anon_bytes_per_user: None,
        }
    }
}

/// One named figure of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measure {
    pub name: String,
    pub value: f64,
}

/// One run: one workload with one combination of settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// herald | etcd
    pub target: String,
    /// presence-write | batch-query | mixed | memory | failover | load
    pub workload: String,
    /// leader | follower | all
    pub via: String,
    /// Queries' consistency (linearizable | local), when the run queries.
    pub consistency: Option<String>,
    pub clients: usize,
    /// Events per write request (0: the run does not write).
    pub batch: usize,
    /// Ids per query (0: the run does not query).
    pub ids: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_percent: Option<u8>,
    /// Users the workload spreads over.
    pub users: u64,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Successful operations (requests).
    pub ops: u64,
    /// Failed operations (including client-side timeouts).
    pub errors: u64,
    pub error_codes: BTreeMap<String, ErrorInfo>,
    pub ops_per_s: f64,
    /// Events (writes) plus ids (queries) per second.
    pub items_per_s: f64,
    /// Latency of successful operations.
    pub latency: Latency,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reads: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writes: Option<Latency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_user: Option<f64>,
    /// failover: from the SIGKILL to the first successful write sent after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<f64>,
    /// Herald: from the kill until the lowest-numbered survivor is master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_back_ms: Option<f64>,
    /// failover: longest time without a successful answer around the kill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_pid: Option<u32>,
    /// restart: the pid of the node process the benchmark started again
    /// (left running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_pid: Option<u32>,
    /// Settings of the newer workloads that tell runs apart (e.g.
    /// `streams=2 window=8`), part of [`key`](Self::key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setting: String,
    /// Figures of the newer workloads (stream, heartbeat, messages,
    /// restart), in the order `bench compare` shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<Measure>,
    /// Memory of each node after the run.
    pub nodes: Vec<NodeMem>,
}

impl BenchResult {
    /// memory workload: the largest node's RssAnon growth per user.
    pub fn anon_bytes_per_user(&self) -> Option<f64> {
        self.nodes.iter().filter_map(|m| m.anon_bytes_per_user).reduce(f64::max)
    }

    pub fn new(system: System, workload: &str) -> Self {
        BenchResult {
            target: system.name().into(),
            workload: workload.into(),
            via: String::new(),
            consistency: None,
            clients: 0,
            batch: 0,
            ids: 0,
            read_percent: None,
            users: 0,
            elapsed_s: 0.0,
            ops: 0,
            errors: 0,
            error_codes: BTreeMap::new(),
            ops_per_s: 0.0,
            items_per_s: 0.0,
            latency: Latency::default(),
            reads: None,
            writes: None,
            bytes_per_user: None,
            failover_ms: None,
            master_back_ms: None,
            max_gap_ms: None,
            killed_pid: None,
            restarted_pid: None,
            setting: String::new(),
            measures: Vec::new(),
            nodes: Vec::new(),
        }
    }

    /// Adds a figure of a newer workload.
    pub fn measure(&mut self, name: &str, value: f64) {
        self.measures.push(Measure { name: name.into(), value });
    }

    /// Fills counts, throughput and latency from the samples of successful
    /// reads and writes (set `batch` and `ids` first: they weigh the items).
    pub fn set_mixed(
        &mut self,
        reads: Samples,
        writes: Samples,
        errors: &ErrorCounts,
        elapsed: Duration,
    ) {
        let (nr, nw) = (reads.len() as u64, writes.len() as u64);
        let mut all = Samples::new();
        all.merge(reads.clone());
        all.merge(writes.clone());
        self.ops = nr + nw;
        self.errors = errors.total();
        self.error_codes = errors
            .by_code
            .iter()
            .map(|(c, (n, m))| (c.clone(), ErrorInfo { count: *n, example: m.clone() }))
            .collect();
        self.elapsed_s = elapsed.as_secs_f64();
        self.ops_per_s = throughput(self.ops, elapsed);
        self.items_per_s = throughput(nr * self.ids as u64 + nw * self.batch as u64, elapsed);
        self.latency = all.summary();
        if nr > 0 && nw > 0 {
            self.reads = Some(reads.summary());
            self.writes = Some(writes.summary());
        }
    }

    /// What identifies "the same run" across systems in `bench compare`.
    pub fn key(&self) -> String {
        match self.workload.as_str() {
            // The two systems load with their own best batch size.
            "load" | "memory" => format!("{} users={}", self.workload, self.users),
            "failover" => format!("failover clients={} batch={}", self.clients, self.batch),
            _ => {
                let mut k = format!("{} via={}", self.workload, self.via);
                if let Some(c) = &self.consistency {
                    k.push_str(&format!(" {c}"));
                }
                k.push_str(&format!(" clients={}", self.clients));
                if self.batch > 0 {
                    k.push_str(&format!(" batch={}", self.batch));
                }
                if self.ids > 0 {
                    k.push_str(&format!(" ids={}", self.ids));
                }
                if let Some(p) = self.read_percent {
                    k.push_str(&format!(" reads={p}%"));
                }
                if !self.setting.is_empty() {
                    k.push(' ');
                    k.push_str(&self.setting);
                }
                k
            }
        }
    }

    /// The figures `bench compare` shows for this run: (name, value).
    pub fn figures(&self) -> Vec<(String, f64)> {
        let mut f = Vec::new();
        let lat = |f: &mut Vec<(String, f64)>, l: &Latency| {
            f.push(("p50 ms".into(), l.p50_ms));
            f.push(("p99 ms".into(), l.p99_ms));
            f.push(("p99.9 ms".into(), l.p999_ms));
        };
        match self.workload.as_str() {
            "memory" => {
                f.push((
                    "RSS per node, max (MB)".into(),
                    max_mb(self.nodes.iter().filter_map(|n| n.rss_bytes)),
                ));
                f.push((
                    "peak RSS per node, max (MB)".into(),
                    max_mb(self.nodes.iter().filter_map(|n| n.peak_rss_bytes)),
                ));
                if let Some(b) = self.bytes_per_user {
                    f.push(("bytes per user".into(), b));
                }
                if let Some(b) = self.anon_bytes_per_user() {
                    f.push(("RssAnon bytes per user".into(), b));
                }
                f.push(("load events/s".into(), self.items_per_s));
            }
            "failover" => {
                if let Some(ms) = self.failover_ms {
                    f.push(("kill → first write ms".into(), ms));
                }
                if let Some(ms) = self.max_gap_ms {
                    f.push(("longest write gap ms".into(), ms));
                }
                if let Some(ms) = self.master_back_ms {
                    f.push(("kill → numbered master back ms".into(), ms));
                }
                f.push(("errors".into(), self.errors as f64));
            }
            // Only their own figures: their operations are not requests
            // of one kind (sessions, restarts).
            "heartbeat" | "restart" => {
                f.extend(self.measures.iter().map(|m| (m.name.clone(), m.value)));
            }
            _ => {
                f.push(("ops/s".into(), self.ops_per_s));
                if self.workload == "messages" {
                    f.push(("messages/s".into(), self.items_per_s));
                } else if self.workload == "load" || (self.ids == 0 && self.batch > 1) {
                    f.push(("events/s".into(), self.items_per_s));
                } else if self.batch == 0 && self.ids > 1 {
                    f.push(("ids/s".into(), self.items_per_s));
                }
                lat(&mut f, &self.latency);
                f.push(("errors".into(), self.errors as f64));
                f.extend(self.measures.iter().map(|m| (m.name.clone(), m.value)));
            }
        }
        f
    }
}

fn max_mb(v: impl Iterator<Item = u64>) -> f64 {
    v.max().map(|b| b as f64 / (1 << 20) as f64).unwrap_or(0.0)
}

/// What one `herald bench` prints with `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub target: String,
    /// How the system under test makes an acknowledged write durable.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub durability: String,
    pub results: Vec<BenchResult>,
    /// Memory of each node at the end (peak: since it started).
    pub nodes: Vec<NodeMem>,
}

impl Report {
    pub fn new(system: System) -> Self {
        Report {
            target: system.name().into(),
            durability: String::new(),
            results: Vec::new(),
            nodes: Vec::new(),
        }
    }
}

fn mb(b: Option<u64>) -> String {
    b.map(|b| format!("{:.1}", b as f64 / (1 << 20) as f64)).unwrap_or_else(|| "-".into())
}

/// A number for humans: integers above 100, else up to 3 significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if (v == v.trunc() && v.abs() < 1e15) || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The human form: one row per run, then the nodes' memory, then notes.
pub fn human(r: &Report) -> String {
    let mut t = Table::new([
        "WORKLOAD",
        "VIA",
        "CONSISTENCY",
        "CLIENTS",
        "BATCH",
        "IDS",
        "OPS",
        "OPS/S",
        "ITEMS/S",
        "P50 MS",
        "P99 MS",
        "P99.9 MS",
        "ERRORS",
    ]);
    let mut notes = Vec::new();
    if !r.durability.is_empty() {
        notes.push(format!("durability ({}): {}", r.target, r.durability));
    }
    for x in &r.results {
        let dash0 = |n: usize| if n == 0 { "-".to_string() } else { n.to_string() };
        t.row([
            if x.setting.is_empty() {
                format!("{} ({})", x.workload, x.target)
            } else {
                format!("{} ({}) {}", x.workload, x.target, x.setting)
            },
            x.via.clone(),
            x.consistency.clone().unwrap_or_else(|| "-".into()),
            x.clients.to_string(),
            dash0(x.batch),
            dash0(x.ids),
            x.ops.to_string(),
            num(x.ops_per_s),
            num(x.items_per_s),
            num(x.latency.p50_ms),
            num(x.latency.p99_ms),
            num(x.latency.p999_ms),
            x.errors.to_string(),
        ]);
        for (code, e) in &x.error_codes {
            notes.push(format!("{}: {} × {code}: {}", x.workload, e.count, e.example));
        }
        if !x.measures.is_empty() {
            let m: Vec<String> =
                x.measures.iter().map(|m| format!("{} {}", m.name, num(m.value))).collect();
            let setting =
                if x.setting.is_empty() { String::new() } else { format!(" ({})", x.setting) };
            notes.push(format!("{}{setting}: {}", x.workload, m.join(", ")));
        }
        if let Some(b) = x.bytes_per_user {
            notes.push(format!(
                "memory: {} users, {} bytes per user (RSS growth of the largest node)",
                x.users,
                num(b)
            ));
        }
        if let Some(b) = x.anon_bytes_per_user() {
            notes.push(format!(
                "memory: {} users, {} bytes per user of RssAnon growth (largest node)",
                x.users,
                num(b)
            ));
        }
        if x.workload == "failover" {
            let f =
                x.failover_ms.map(|v| format!("{} ms", num(v))).unwrap_or_else(|| "never".into());
            let g = x.max_gap_ms.map(|v| format!("{} ms", num(v))).unwrap_or_else(|| "-".into());
            notes.push(format!(
                "failover: SIGKILL of pid {} → first successful write sent after it: {f}; longest time without a successful write: {g}",
                x.killed_pid.unwrap_or(0)
            ));
            if let Some(ms) = x.master_back_ms {
                notes.push(format!(
                    "failover: numbered master (lowest surviving number) back {} ms after the kill",
                    num(ms)
                ));
            }
        }
    }
    let mut n =
        Table::new(["NODE", "ADDR", "ROLE", "PID", "RSS MB", "PEAK RSS MB", "ANON MB", "FILE MB"]);
    for m in &r.nodes {
        n.row([
            m.number.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            m.addr.clone().unwrap_or_else(|| "-".into()),
            m.role.clone(),
            m.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            mb(m.rss_bytes),
            mb(m.peak_rss_bytes),
            mb(m.anon_rss_bytes),
            mb(m.file_rss_bytes),
        ]);
    }
    let mut s = format!("{t}\n\n{n}");
    for line in notes {
        s.push('\n');
        s.push_str(&line);
    }
    s
}

/// Reads one or more concatenated `--json` documents.
pub fn read_reports(text: &str) -> Result<Vec<Report>, String> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<Report>()
        .map(|r| r.map_err(|e| e.to_string()))
        .collect()
}

/// One row of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    pub run: String,
    pub figure: String,
    pub left: Option<f64>,
    pub right: Option<f64>,
    /// left / right.
    pub ratio: Option<f64>,
}

/// Pairs the runs of two systems by [`BenchResult::key`], in the left
/// side's order (right-only runs at the end), and every figure with its
/// ratio left/right. A last row gives the peak RSS of any node over all
/// runs.
pub fn compare_rows(left: &[Report], right: &[Report]) -> Vec<CompareRow> {
    let flat =
        |rs: &[Report]| -> Vec<BenchResult> { rs.iter().flat_map(|r| r.results.clone()).collect() };
    let (l, r) = (flat(left), flat(right));
    let mut keys: Vec<String> = Vec::new();
    for x in l.iter().chain(&r) {
        if !keys.contains(&x.key()) {
            keys.push(x.key());
        }
    }
    let mut rows = Vec::new();
    for k in keys {
        let a = l.iter().find(|x| x.key() == k);
        let b = r.iter().find(|x| x.key() == k);
        let mut names: Vec<String> = Vec::new();
        for x in a.iter().chain(b.iter()) {
            for (n, _) in x.figures() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        let get = |x: Option<&BenchResult>, n: &str| {
            x.and_then(|x| x.figures().into_iter().find(|(m, _)| m == n).map(|f| f.1))
        };
        for n in names {
            let (lv, rv) = (get(a, &n), get(b, &n));
            rows.push(CompareRow {
                run: k.clone(),
                figure: n,
                left: lv,
                right: rv,
                ratio: ratio(lv, rv),
            });
        }
    }
    let peak = |rs: &[Report]| {
        let v = rs
            .iter()
            .flat_map(|r| r.nodes.iter().chain(r.results.iter().flat_map(|x| x.nodes.iter())))
            .filter_map(|n| n.peak_rss_bytes)
            .max();
        v.map(|b| b as f64 / (1 << 20) as f64)
    };
    let (lp, rp) = (peak(left), peak(right));
    rows.push(CompareRow {
        run: "all runs".into(),
        figure: "peak RSS of any node (MB)".into(),
        left: lp,
        right: rp,
        ratio: ratio(lp, rp),
    });
    rows
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => Some(a / b),
        _ => None,
    }
}

/// The comparison as a markdown table.
pub fn compare_markdown(lname: &str, rname: &str, rows: &[CompareRow]) -> String {
    let cell = |v: Option<f64>| v.map(num).unwrap_or_else(|| "–".into());
    let mut s = format!(
        "| run | figure | {lname} | {rname} | {lname}/{rname} |\n|---|---|---:|---:|---:|\n"
    );
    let mut last = "";
    for r in rows {
        let run = if r.run == last { " ".to_string() } else { format!(" `{}` ", r.run) };
        last = &r.run;
        let ratio = r.ratio.map(|x| format!("{}×", num(x))).unwrap_or_else(|| "–".into());
        s.push_str(&format!(
            "|{run}| {} | {} | {} | {ratio} |\n",
            r.figure,
            cell(r.left),
            cell(r.right)
        ));
    }
    s
}

/// `herald bench compare`.
pub fn compare(ctx: &Ctx, a: &CompareArgs) -> Result<(), ClientError> {
    let load = |paths: &[std::path::PathBuf]| -> Result<Vec<Report>, ClientError> {
        let mut out = Vec::new();
        for p in paths {
            let text = std::fs::read_to_string(p).map_err(|e| {
                ClientError::InvalidArgument(format!("cannot read {}: {e}", p.display()))
            })?;
            out.extend(
                read_reports(&text)
                    .map_err(|e| ClientError::InvalidArgument(format!("{}: {e}", p.display())))?,
            );
        }
        Ok(out)
    };
    let (l, r) = (load(&a.left)?, load(&a.right)?);
    let name =
        |rs: &[Report], d: &str| rs.first().map(|r| r.target.clone()).unwrap_or_else(|| d.into());
    let (ln, rn) = (name(&l, "left"), name(&r, "right"));
    let rows = compare_rows(&l, &r);
    ctx.out.print(&rows, |rows| compare_markdown(&ln, &rn, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(
        target: &str,
        workload: &str,
        clients: usize,
        ops_per_s: f64,
        p99: f64,
    ) -> BenchResult {
        let mut r = BenchResult::new(System::Herald, workload);
        r.target = target.into();
        r.via = "leader".into();
        r.clients = clients;
        r.batch = 1;
        r.ops_per_s = ops_per_s;
        r.latency.p99_ms = p99;
        r
    }

    /// set_mixed counts reads and writes, weighs items by ids and batch,
    /// and summarises all latencies together.
    #[test]
    fn bench_report_set_mixed_counts_items() {
        let mut r = BenchResult::new(System::Herald, "mixed");
        r.ids = 1000;
        r.batch = 1;
        let mut reads = Samples::new();
        let mut writes = Samples::new();
        for _ in 0..9 {
            reads.record(Duration::from_millis(2));
        }
        writes.record(Duration::from_millis(10));
        let mut e = ErrorCounts::default();
        e.add(&super::super::target::OpError::new("timeout", "slow"));
        r.set_mixed(reads, writes, &e, Duration::from_secs(2));
        assert_eq!((r.ops, r.errors), (10, 1));
        assert_eq!(r.ops_per_s, 5.0);
        assert_eq!(r.items_per_s, (9.0 * 1000.0 + 1.0) / 2.0);
        assert_eq!((r.latency.p50_ms, r.latency.max_ms), (2.0, 10.0));
        assert_eq!(r.reads.unwrap().count, 9);
        assert_eq!(r.error_codes["timeout"].count, 1);
    }

    /// Runs pair up by their settings, not their position; the ratio is
    /// left/right; a run only one side has shows "–".
    #[test]
    fn bench_report_compare_pairs_by_key() {
        let mut h = Report::new(System::Herald);
        h.results = vec![
            result("herald", "presence-write", 1, 1000.0, 2.0),
            result("herald", "presence-write", 64, 50_000.0, 4.0),
        ];
        let mut e = Report::new(System::Etcd);
        e.results = vec![
            result("etcd", "presence-write", 64, 5_000.0, 8.0),
            result("etcd", "presence-write", 256, 9_000.0, 30.0),
        ];
        let rows = compare_rows(&[h], &[e]);
        let find = |run: &str, fig: &str| {
            rows.iter().find(|r| r.run == run && r.figure == fig).unwrap().clone()
        };
        let r = find("presence-write via=leader clients=64 batch=1", "ops/s");
        assert_eq!((r.left, r.right, r.ratio), (Some(50_000.0), Some(5_000.0), Some(10.0)));
        assert_eq!(find("presence-write via=leader clients=64 batch=1", "p99 ms").ratio, Some(0.5));
        let only_left = find("presence-write via=leader clients=1 batch=1", "ops/s");
        assert_eq!((only_left.right, only_left.ratio), (None, None));
        let md = compare_markdown("herald", "etcd", &rows);
        assert!(
            md.contains(
                "| `presence-write via=leader clients=64 batch=1` | ops/s | 50000 | 5000 | 10× |"
            ),
            "{md}"
        );
        assert!(md.contains("| | p99 ms | 4 | 8 | 0.500× |"), "{md}");
        assert!(md.contains("| | p99.9 ms | 0 | 0 | – |"), "{md}");
        assert!(md.contains("| ops/s | 1000 | – | – |"), "{md}");
    }

    /// Concatenated pretty JSON documents read back as several reports.
    #[test]
    fn bench_report_reads_concatenated_json() {
        let mut a = Report::new(System::Herald);
        a.results.push(result("herald", "mixed", 16, 1.0, 1.0));
        let b = Report::new(System::Herald);
        let text = format!(
            "{}\n{}\n",
            serde_json::to_string_pretty(&a).unwrap(),
            serde_json::to_string_pretty(&b).unwrap()
        );
        let back = read_reports(&text).unwrap();
        assert_eq!(back, vec![a, b]);
        assert!(read_reports("{").is_err());
    }
}
