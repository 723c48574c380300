//! `bench stream`: a status pool (one or a few heavy producers) pushing
//! presence batches through `--streams` `PushEventsStream` connections,
//! each keeping `--window` batches in flight. Answers come back in the
//! order sent, so each stream matches its answers to a queue of send
//! instants: a batch's latency runs from its send to its answer, the time
//! it waited behind the others of the window included. A server that
//! answers one batch at a time is measured the same way (the window then
//! only queues).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use herald_client::proto as pb;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use super::report::BenchResult;
use super::run::{slice_of, Writer};
use super::stats::Samples;
use super::target::{event, herald, ErrorCounts, OpError, System, Topology};
use super::{RunArgs, Via};

/// Default stream counts: one producer, and a few.
pub const DEFAULT_STREAMS: &[usize] = &[1, 2, 4];
/// Default window: the batches one stream keeps in flight (the server's
/// window of PushEventsStream is 8).
pub const DEFAULT_WINDOW: &[usize] = &[8];

/// What one stream measured.
#[derive(Debug, Default)]
pub struct StreamOut {
    pub lat: Samples,
    pub errors: ErrorCounts,
    pub last_end: Option<Instant>,
}

/// In-order matching of answers to sends: the send instants of the batches
/// in flight, oldest first.
#[derive(Debug, Default)]
pub struct Window {
    sent: VecDeque<Instant>,
    cap: usize,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        Window { sent: VecDeque::with_capacity(cap.max(1)), cap: cap.max(1) }
    }

    /// Room for another batch?
    pub fn open(&self) -> bool {
        self.sent.len() < self.cap
    }

    pub fn sent(&mut self, at: Instant) {
        debug_assert!(self.open());
        self.sent.push_back(at);
    }

    /// An answer came: it answers the oldest batch in flight; its send time.
    pub fn answered(&mut self) -> Option<Instant> {
        self.sent.pop_front()
    }

    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }
}

/// What every stream of one run does.
#[derive(Debug, Clone)]
struct StreamCfg {
    addr: String,
    streams: usize,
    users: u64,
    batch: usize,
    window: usize,
    measure_from: Instant,
    deadline: Instant,
}

/// Stream `idx`, reopened after an error until the deadline.
async fn one_stream(cfg: StreamCfg, idx: usize) -> StreamOut {
    let StreamCfg { addr, streams, users, batch, window, measure_from, deadline } = cfg;
    let mut out = StreamOut::default();
    let mut writer = Writer::new(slice_of(idx, streams, users));
    while Instant::now() < deadline {
        if let Err(e) =
            stream_until(&addr, &mut writer, batch, window, measure_from, deadline, &mut out).await
        {
            if Instant::now() >= measure_from {
                out.errors.add(&e);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

async fn stream_until(
    addr: &str,
    writer: &mut Writer,
    batch: usize,
    window: usize,
    measure_from: Instant,
    deadline: Instant,
    out: &mut StreamOut,
) -> Result<(), OpError> {
    let mut c = herald(addr).await?.presence_client();
    let (tx, rx) = mpsc::channel::<pb::PushEventsRequest>(window.max(1));
    let mut win = Window::new(window);
    let req = |w: &mut Writer| pb::PushEventsRequest {
        events: w.next(batch).into_iter().map(|(i, on)| event(i, on)).collect(),
    };
    // Fill the window before the call: the server may answer the call's
    // headers only once it has a first batch.
    while win.open() && Instant::now() < deadline {
        let r = req(writer);
        win.sent(Instant::now());
        tx.send(r).await.map_err(|_| OpError::new("closed", "stream closed"))?;
    }
    let mut answers = c.push_events_stream(ReceiverStream::new(rx)).await?.into_inner();
    loop {
        while win.open() && Instant::now() < deadline {
            let r = req(writer);
            win.sent(Instant::now());
            tx.send(r).await.map_err(|_| OpError::new("closed", "stream closed"))?;
        }
        if win.in_flight() == 0 {
            return Ok(());
        }
        match answers.message().await {
            Ok(Some(_)) => {
                let end = Instant::now();
                if let Some(start) = win.answered() {
                    if start >= measure_from {
                        out.lat.record(end - start);
                        out.last_end = Some(end);
                    }
                }
            }
            Ok(None) => {
                return Err(OpError::new(
                    "closed",
                    format!(
                        "the server ended the stream with {} batches unanswered",
                        win.in_flight()
                    ),
                ))
            }
            Err(s) => return Err(s.into()),
        }
    }
}

/// Every (streams, window) combination is one run on the leader.
pub async fn run(topo: &Topology, a: &RunArgs, users: u64) -> Result<Vec<BenchResult>, OpError> {
    if topo.system != System::Herald {
        return Err(OpError::new(
            "unsupported",
            "stream is Herald-only (PushEventsStream); etcd's batched writes are presence-write --batch",
        ));
    }
    let leader = topo.leader().ok_or_else(|| OpError::new("no_leader", "no leader"))?;
    let batch = a.batch.max(1);
    let streams = if a.streams.is_empty() { DEFAULT_STREAMS.to_vec() } else { a.streams.clone() };
    let windows = if a.window.is_empty() { DEFAULT_WINDOW.to_vec() } else { a.window.clone() };
    let mut results = Vec::new();
    for &s in &streams {
        let s = s.max(1);
        if users / (s as u64) < batch as u64 {
            return Err(OpError::new(
                "invalid_argument",
                format!("{users} users over {s} streams is fewer than --batch {batch} per stream: raise --users"),
            ));
        }
        for &w in &windows {
            let w = w.max(1);
            let start = Instant::now() + Duration::from_millis(20);
            let measure_from = start + a.warmup;
            let deadline = measure_from + a.duration;
            let cfg = StreamCfg {
                addr: leader.addr.clone(),
                streams: s,
                users,
                batch,
                window: w,
                measure_from,
                deadline,
            };
            let mut set = JoinSet::new();
            for idx in 0..s {
                set.spawn(one_stream(cfg.clone(), idx));
            }
            let mut lat = Samples::new();
            let mut errors = ErrorCounts::default();
            let mut last = measure_from;
            while let Some(r) = set.join_next().await {
                let o = r.map_err(|e| OpError::new("internal", e.to_string()))?;
                lat.merge(o.lat);
                errors.merge(o.errors);
                if let Some(e) = o.last_end {
                    last = last.max(e);
                }
            }
            let elapsed = (last - measure_from).max(a.duration);
            let mut r = BenchResult::new(topo.system, "stream");
            r.via = Via::Leader.name().into();
            r.clients = s;
            r.batch = batch;
            r.users = users;
            r.setting = format!("streams={s} window={w}");
            r.set_mixed(Samples::new(), lat, &errors, elapsed);
            results.push(r);
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window admits `cap` batches, answers match the oldest send
    /// first (answers come in order), and it reopens as answers come.
    #[test]
    fn bench_stream_window_in_order() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut w = Window::new(2);
        assert!(w.open());
        w.sent(at(1));
        w.sent(at(2));
        assert!(!w.open());
        assert_eq!(w.answered(), Some(at(1)));
        assert!(w.open());
        w.sent(at(3));
        assert_eq!((w.answered(), w.answered(), w.answered()), (Some(at(2)), Some(at(3)), None));
        assert_eq!(Window::new(0).cap, 1, "a window holds at least one batch");
    }
}
