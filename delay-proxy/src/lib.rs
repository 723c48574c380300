//! A userspace TCP proxy that delays traffic, for a WAN between zones on
//! one machine (Linux `netem` is not available on this kernel).
//!
//! [`DelayProxy::start`] listens on a free 127.0.0.1 port and forwards every
//! connection to `target`. Each direction is delayed on its own: every chunk
//! read is released `delay ± jitter` after it was read, never before the
//! chunk ahead of it (TCP order is kept), so a round trip through the proxy
//! costs two one-way delays. [`DelayProxy::cut`] severs the link: open
//! connections are closed and new ones are accepted and then held without a
//! byte forwarded (a black hole, as a cut WAN link looks to TCP) until
//! [`DelayProxy::heal`], which closes them so the clients reconnect.
//!
//! Used by tests/tests/zones.rs (via `herald_tests::delay_proxy`) and by
//! the jepsen harness's zones (`jepsen/src/zones.rs`).
//!
//! The proxy runs on its own thread and tokio runtime, so synchronous tests
//! can use it; dropping it stops everything.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Bytes read at once from one side: one chunk delayed as a unit.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight per direction (delayed, not yet written): bounds the
/// memory one connection holds to ~16 MiB, and pushes back on a sender
/// that outruns the delayed link.
const CHUNKS_IN_FLIGHT: usize = 256;

/// One-way delay of each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delay {
    /// Base one-way delay, ms.
    pub ms: u64,
    /// Uniform jitter around it (±), ms.
    pub jitter_ms: u64,
}

struct Control {
    delay_ms: AtomicU64,
    jitter_ms: AtomicU64,
    cut: AtomicBool,
    /// Bumped on every cut and heal: connections of an older epoch close.
    epoch: watch::Sender<u64>,
    seed: AtomicU64,
}

impl Control {
    /// The one-way delay for the next chunk: `ms ± jitter` (xorshift; no
    /// cryptographic needs).
    fn next_delay(&self) -> Duration {
        let ms = self.delay_ms.load(Ordering::Relaxed);
        let jitter = self.jitter_ms.load(Ordering::Relaxed);
        if jitter == 0 {
            return Duration::from_millis(ms);
        }
        let mut x = self.seed.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.seed.store(x, Ordering::Relaxed);
        let span = 2 * jitter + 1;
        let off = (x % span) as i64 - jitter as i64;
        Duration::from_millis((ms as i64 + off).max(0) as u64)
    }
}

/// A running delaying proxy (see the module docs).
pub struct DelayProxy {
    addr: SocketAddr,
    control: Arc<Control>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DelayProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `target` with
    /// `delay` each way.
    pub fn start(target: SocketAddr, delay: Delay) -> anyhow::Result<DelayProxy> {
        Self::start_on("127.0.0.1:0".parse().expect("an address"), target, delay)
    }

    /// [`start`](Self::start) listening on `listen` (port 0: a free one).
    pub fn start_on(
        listen: SocketAddr,
        target: SocketAddr,
        delay: Delay,
    ) -> anyhow::Result<DelayProxy> {
        let std_listener = std::net::TcpListener::bind(listen)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let control = Arc::new(Control {
            delay_ms: AtomicU64::new(delay.ms),
            jitter_ms: AtomicU64::new(delay.jitter_ms),
            cut: AtomicBool::new(false),
            epoch: watch::channel(0).0,
            seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15 ^ u64::from(addr.port())),
        });
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let c = control.clone();
        let thread = std::thread::Builder::new()
            .name(format!("delay-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("proxy listener");
                    tokio::select! {
                        _ = accept_loop(listener, target, c) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(DelayProxy { addr, control, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Changes the delay of chunks read from now on.
    pub fn set_delay(&self, delay: Delay) {
        self.control.delay_ms.store(delay.ms, Ordering::Relaxed);
        self.control.jitter_ms.store(delay.jitter_ms, Ordering::Relaxed);
    }

    /// Severs the link: open connections close, new ones are held silent.
    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::SeqCst);
        self.control.epoch.send_modify(|e| *e += 1);
    }

    /// Restores the link: the held connections close, new ones forward.
    pub fn heal(&self) {
        self.control.cut.store(false, Ordering::SeqCst);
        self.control.epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, control: Arc<Control>) {
    loop {
        let Ok((inbound, _)) = listener.accept().await else { continue };
        let c = control.clone();
        tokio::spawn(async move {
            let mut epoch = c.epoch.subscribe();
            epoch.borrow_and_update();
            if c.cut.load(Ordering::SeqCst) {
                // A black hole until the next heal; then close.
                let _hold = inbound;
                let _ = epoch.changed().await;
                return;
            }
            let Ok(outbound) = TcpStream::connect(target).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            tokio::select! {
                _ = pump(ir, ow, c.clone()) => {}
                _ = pump(or, iw, c.clone()) => {}
                _ = epoch.changed() => {}
            }
        });
    }
}

/// One direction: read chunks, release each after its delay, in order.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<Control>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(CHUNKS_IN_FLIGHT);
    let reader = async move {
        let mut last = Instant::now();
        loop {
            let mut buf = vec![0u8; CHUNK_BYTES];
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.truncate(n);
            // Never before the chunk ahead: jitter must not reorder bytes.
            let at = (Instant::now() + control.next_delay()).max(last);
            last = at;
            if tx.send((at, buf)).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, buf)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&buf).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// An echo server behind the proxy answers a round trip no sooner than
    /// two one-way delays, and bytes arrive whole and in order despite
    /// jitter; a cut link forwards nothing; healed, it forwards again.
    #[test]
    fn delays_each_way_keeps_order_cuts_and_heals() {
        let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in echo.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let p = DelayProxy::start(target, Delay { ms: 40, jitter_ms: 10 }).unwrap();
        let mut s = std::net::TcpStream::connect(p.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let t = std::time::Instant::now();
        s.write_all(&msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).unwrap();
        let rtt = t.elapsed();
        assert_eq!(got, msg, "bytes in order");
        assert!(rtt >= Duration::from_millis(60), "round trip {rtt:?} < 2 × (40 − 10) ms");
        assert!(rtt < Duration::from_millis(1000), "round trip {rtt:?}");

        p.cut();
        let mut s2 = std::net::TcpStream::connect(p.addr()).unwrap();
        s2.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        s2.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        assert!(s2.read_exact(&mut b).is_err(), "a cut link forwarded bytes");

        p.heal();
        let mut s3 = std::net::TcpStream::connect(p.addr()).unwrap();
        s3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s3.write_all(b"pong").unwrap();
        s3.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
    }
}
