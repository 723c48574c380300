//! Measures the replicated state in one process (issue 13, "Compact
//! records"): RssAnon growth per user for `USERS` users online on one
//! client type with one ext key each (the uid and sid indexes included),
//! and how long taking a snapshot holds writes and queries up.
//!
//! `cargo run --release -p herald-domain --example presence_memory [USERS]`
//!
//! A writer thread applies 100-event batches to users spread over the
//! whole state (so that, during a snapshot, writes hit shared chunks), a
//! query thread reads one user at a time; both record their longest wait
//! (lock plus work) before and while a snapshot is taken and written out.
//! Linux only (reads `/proc/self/status`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use herald_domain::presence::Event;
use herald_domain::state::{Command, Effects, Op, State};

/// Users loaded when no count is given: the target size.
const DEFAULT_USERS: u64 = 1_000_000;
/// Events per applied command while loading (the bench's batch).
const LOAD_BATCH: u64 = 1000;
/// Events per command of the writer thread while measuring stalls.
const WRITE_BATCH: u64 = 100;
/// Repetitions of each single-threaded measurement.
const REPEATS: u64 = 7;

fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
}

fn login(i: u64, value: &str) -> Op {
    let mut ext = BTreeMap::new();
    ext.insert("k".to_string(), value.to_string());
    Op::Presence(Event::Login {
        uid: format!("u{i}"),
        sid: i + 1,
        client: "mobile".into(),
        accepts_strangers: None,
        ext,
    })
}

/// Takes what a snapshot takes under the state lock, and answers the work
/// done without it (building every item, as the snapshot writer does).
fn take_snapshot(st: &State) -> impl FnOnce() -> u64 + Send + 'static {
    let view = st.snapshot();
    move || {
        let mut bytes = 0u64;
        view.try_for_each(|it| {
            bytes += it.key().len() as u64;
            Ok::<_, ()>(())
        })
        .expect("no error");
        bytes
    }
}

/// Longest wait seen by a thread since the last reset, in microseconds.
#[derive(Default)]
struct Worst(AtomicU64);

impl Worst {
    fn note(&self, d: Duration) {
        self.0.fetch_max(d.as_micros() as u64, Ordering::Relaxed);
    }
    fn take(&self) -> u64 {
        self.0.swap(0, Ordering::Relaxed)
    }
}

fn main() {
    let users: u64 = std::env::args().nth(1).map_or(DEFAULT_USERS, |a| a.parse().expect("USERS"));
    let anon0 = status_kb("RssAnon:");
    let mut st = State::default();
    let t = Instant::now();
    let mut fx = Effects::default();
    let mut slowest = (Duration::ZERO, 0);
    for (n, lo) in (0..users).step_by(LOAD_BATCH as usize).enumerate() {
        let ops = (lo..(lo + LOAD_BATCH).min(users)).map(|i| login(i, "v")).collect();
        let b = Instant::now();
        st.apply(&Command { at_ms: 1, ops }, n as u64 + 1, &mut fx);
        slowest = slowest.max((b.elapsed(), lo));
        fx.touched = Default::default();
    }
    let load = t.elapsed();
    println!(
        "slowest load batch: {:.1} ms, at {} users (index tables grow there)",
        slowest.0.as_secs_f64() * 1e3,
        slowest.1
    );
    let anon1 = status_kb("RssAnon:");
    let grown = (anon1 - anon0) * 1024;
    println!(
        "users {users}: RssAnon {} -> {} MiB, {:.1} bytes/user (load {:.1} s)",
        anon0 / 1024,
        anon1 / 1024,
        grown as f64 / users as f64,
        load.as_secs_f64()
    );

    // Single-threaded, repeated (the minimum filters out preemption on a
    // shared machine): what taking a snapshot holds the lock for, and what
    // a 1000-event batch over 1000 different chunks costs right after a
    // snapshot was taken (each event's chunk copied first) and without one.
    let spread = |k: u64| -> Vec<Op> {
        (0..LOAD_BATCH).map(|j| login((j * (users / LOAD_BATCH) + k) % users, "w")).collect()
    };
    let (mut held, mut plain, mut shared) = (vec![], vec![], vec![]);
    let mut index = users;
    for k in 0..REPEATS {
        let t = Instant::now();
        st.apply(&Command { at_ms: 3, ops: spread(2 * k) }, index, &mut Effects::default());
        plain.push(t.elapsed());
        let t = Instant::now();
        let work = take_snapshot(&st);
        held.push(t.elapsed());
        let t = Instant::now();
        st.apply(&Command { at_ms: 3, ops: spread(2 * k + 1) }, index + 1, &mut Effects::default());
        shared.push(t.elapsed());
        drop(work);
        index += 2;
    }
    let ms = |v: &mut Vec<Duration>| {
        v.sort();
        format!(
            "min {:.3} ms, median {:.3} ms",
            v[0].as_secs_f64() * 1e3,
            v[v.len() / 2].as_secs_f64() * 1e3
        )
    };
    println!("snapshot: lock held {}", ms(&mut held));
    println!(
        "1000-event batch over 1000 chunks: {} alone; {} right after a snapshot was taken",
        ms(&mut plain),
        ms(&mut shared)
    );

    let state = Arc::new(RwLock::new(st));
    let stop = Arc::new(AtomicBool::new(false));
    let (w_worst, q_worst) = (Arc::new(Worst::default()), Arc::new(Worst::default()));
    let writer = {
        let (state, stop, worst) = (state.clone(), stop.clone(), w_worst.clone());
        std::thread::spawn(move || {
            let mut index = 1_000_000_000u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let ops = (0..WRITE_BATCH)
                    .map(|j| {
                        login(
                            (i + j * 9973) % users,
                            if index.is_multiple_of(2) { "a" } else { "b" },
                        )
                    })
                    .collect();
                let cmd = Command { at_ms: 2, ops };
                let t = Instant::now();
                let mut fx = Effects::default();
                state.write().unwrap().apply(&cmd, index, &mut fx);
                worst.note(t.elapsed());
                index += 1;
                i += 7919;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let reader = {
        let (state, stop, worst) = (state.clone(), stop.clone(), q_worst.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let uid = format!("u{}", i % users);
                let t = Instant::now();
                let found = state.read().unwrap().presence.get(&uid).is_some();
                worst.note(t.elapsed());
                assert!(found);
                i += 104_729;
                std::thread::sleep(Duration::from_micros(100));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "no snapshot: longest write batch {} us, longest query {} us",
        w_worst.take(),
        q_worst.take()
    );
    for round in 0..2 {
        let (w0, q0) = (w_worst.take(), q_worst.take());
        let t = Instant::now();
        let work = {
            let st = state.read().unwrap();
            take_snapshot(&st)
        };
        let held = t.elapsed();
        let anon_before = status_kb("RssAnon:");
        let t = Instant::now();
        let bytes = work();
        let built = t.elapsed();
        let anon_after = status_kb("RssAnon:");
        println!(
            "snapshot {round}: lock held {} us, items built in {:.2} s ({bytes} key bytes); \
             while it ran: longest write batch {} us, longest query {} us (before: {w0}/{q0} us); \
             RssAnon {:+} MiB",
            held.as_micros(),
            built.as_secs_f64(),
            w_worst.take(),
            q_worst.take(),
            (anon_after as i64 - anon_before as i64) / 1024
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    reader.join().unwrap();
}
