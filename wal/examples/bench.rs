//! Append + durable, measured: sled's flush (the former Raft log), sled's
//! flush plus an explicit fdatasync of its file, and herald-wal.
//!
//! `cargo run -p herald-wal --example bench [-- SECONDS_PER_RUN]`
//! (temporary directories under `$TMPDIR`, which must be on the disk measured).
//! Every case runs 1 or 16 appender threads, each appending a batch of 1 or
//! 64 entries of 1 KiB and waiting until it is durable, for a fixed time.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use herald_wal::{Options, Wal};

/// Bytes per entry: a typical small Raft entry (a presence batch).
const ENTRY_BYTES: usize = 1024;

trait Store: Send + Sync {
    /// Appends `n` entries and returns once they are durable (as the store
    /// defines it).
    fn append_durable(&self, n: usize, payload: &[u8]);
}

struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    next: AtomicU64,
    /// With `Some`, an fdatasync of sled's data file after its flush.
    file: Option<File>,
}

impl SledStore {
    fn open(dir: &std::path::Path, fsync: bool) -> Self {
        // As herald-node opened it.
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(64 << 20)
            .mode(sled::Mode::HighThroughput)
            .open()
            .expect("sled");
        let tree = db.open_tree("log").expect("tree");
        let file = fsync.then(|| File::open(dir.join("db")).expect("sled data file"));
        SledStore { db, tree, next: AtomicU64::new(0), file }
    }
}

impl Store for SledStore {
    fn append_durable(&self, n: usize, payload: &[u8]) {
        let first = self.next.fetch_add(n as u64, Ordering::Relaxed);
        let mut batch = sled::Batch::default();
        for i in first..first + n as u64 {
            batch.insert(&i.to_be_bytes()[..], payload);
        }
        self.tree.apply_batch(batch).expect("apply");
        self.db.flush().expect("flush");
        if let Some(f) = &self.file {
            f.sync_data().expect("fdatasync");
        }
    }
}

struct WalStore {
    wal: Wal,
    next: Mutex<u64>,
}

impl Store for WalStore {
    fn append_durable(&self, n: usize, payload: &[u8]) {
        let (tx, rx) = mpsc::sync_channel(1);
        {
            // Indices are handed out under a lock, like openraft's one writer.
            let mut next = self.next.lock().unwrap();
            let recs: Vec<(u64, &[u8])> = (*next..*next + n as u64).map(|i| (i, payload)).collect();
            // The payload is borrowed only until append returns.
            self.wal.append(recs, move |r| tx.send(r).unwrap()).expect("append");
            *next += n as u64;
        }
        rx.recv().unwrap().expect("durable");
    }
}

struct Row {
    appends: u64,
    secs: f64,
    p50: Duration,
    p99: Duration,
}

fn run(store: Arc<dyn Store>, threads: usize, batch: usize, secs: f64) -> Row {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let payload = vec![0x5au8; ENTRY_BYTES];
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    store.append_durable(batch, &payload);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Row { appends: lat.len() as u64, secs, p50: pct(0.50), p99: pct(0.99) }
}

/// Runs of each case; the stores take turns, and each column reports the
/// median over the runs: the machine is shared, so a single run is noise.
const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    println!(
        "{:<24} {:>9} {:>5} {:>10} {:>10} {:>8} {:>8}",
        "store", "appenders", "batch", "appends/s", "entries/s", "p50 ms", "p99 ms"
    );
    let kinds = ["sled flush (before)", "sled flush + fdatasync", "herald-wal"];
    // (row label, appends/s, p50 ms, p99 ms) of every run.
    type Runs = (String, Vec<f64>, Vec<f64>, Vec<f64>);
    let mut rows: Vec<Runs> = Vec::new();
    for threads in [1usize, 16] {
        for batch in [1usize, 64] {
            let mut per_kind = vec![(Vec::new(), Vec::new(), Vec::new()); kinds.len()];
            for _ in 0..RUNS {
                for (k, kind) in kinds.iter().enumerate() {
                    let dir = tempfile::TempDir::new().expect("tempdir");
                    let store: Arc<dyn Store> = match *kind {
                        "herald-wal" => Arc::new(WalStore {
                            wal: Wal::open(dir.path(), Options::default()).expect("wal"),
                            next: Mutex::new(1),
                        }),
                        k => Arc::new(SledStore::open(dir.path(), k.contains("fdatasync"))),
                    };
                    let r = run(store, threads, batch, secs);
                    per_kind[k].0.push(r.appends as f64 / r.secs);
                    per_kind[k].1.push(r.p50.as_secs_f64() * 1e3);
                    per_kind[k].2.push(r.p99.as_secs_f64() * 1e3);
                }
            }
            for (k, (a, p50, p99)) in per_kind.into_iter().enumerate() {
                let name = format!("{:<24} {:>9} {:>5}", kinds[k], threads, batch);
                rows.push((name, a, p50, p99));
            }
        }
    }
    rows.sort_by_key(|r| kinds.iter().position(|k| r.0.starts_with(k)));
    for (name, a, p50, p99) in rows {
        let batch: f64 = name.split_whitespace().last().unwrap().parse().unwrap();
        let aps = median(a);
        println!(
            "{name} {:>10.0} {:>10.0} {:>8.2} {:>8.2}",
            aps,
            aps * batch,
            median(p50),
            median(p99)
        );
    }
}
