//! Listeners with a bound on open connections, shared by both ports: plain
//! TCP for the sync port and the publish port without TLS, and the TCP
//! layer under [`crate::tls::TlsListener`].
//!
//! Three limits keep a flood of half-open connections from starving the
//! port (issue 14): a cap on connections open at once (accepting waits for
//! a free slot), a cap per remote IP address (more are closed at once, so
//! one address cannot take every slot), and a deadline for a connection's
//! first bytes (a socket that connects and sends nothing is closed). The
//! kernel's queue of connections not yet accepted is bounded by
//! [`ACCEPT_BACKLOG`] ([`bind`]).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Connections the kernel queues for a port before `accept` takes them
/// (listen(2)'s backlog; Linux caps it at `net.core.somaxconn`). While every
/// slot is taken, new connections wait here; beyond it the kernel drops
/// their SYNs and the clients retry. 1024 is the queue a burst of clients
/// reconnecting at once (a node restart) fills, not more: a longer queue
/// only makes waiting clients wait longer for an answer they will time out on.
pub const ACCEPT_BACKLOG: u32 = 1024;

/// Binds `addr` (`host:port`, every resolved address tried in turn) with a
/// backlog of [`ACCEPT_BACKLOG`].
pub async fn bind(addr: &str) -> io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        match bind_one(a) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other(format!("{addr} resolves to no address"))))
}

fn bind_one(a: SocketAddr) -> io::Result<TcpListener> {
    let s = if a.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // As std's TcpListener::bind does: a restarted node rebinds at once.
    s.set_reuseaddr(true)?;
    s.bind(a)?;
    s.listen(ACCEPT_BACKLOG)
}

/// Open connections per remote address, shared by a listener and its
/// streams (each stream gives its count back when dropped).
#[derive(Debug)]
struct PerIp {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerIp {
    /// Counts a connection from `ip`, unless `ip` holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().expect("per-ip lock");
        let n = open.entry(ip).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(IpSlot { table: self.clone(), ip })
    }

    fn count(&self, ip: IpAddr) -> usize {
        self.open.lock().expect("per-ip lock").get(&ip.to_canonical()).copied().unwrap_or(0)
    }
}

/// One connection counted against its address.
#[derive(Debug)]
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().expect("per-ip lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A TCP listener that holds at most `max` connections open: accepting waits
/// for a free slot (back-pressure, as in mini-redis). [`crate::tls::TlsListener`] wraps
/// it for the publish port with TLS. Optionally ([`per_ip`](Self::per_ip),
/// [`first_bytes_within`](Self::first_bytes_within)) it also caps the
/// connections of one address and closes connections that send nothing.
pub struct LimitedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    first_bytes: Option<Duration>,
}

impl LimitedListener {
    /// At most `max` connections at once; no per-address cap and no
    /// first-bytes deadline until they are set.
    pub fn new(inner: TcpListener, max: usize) -> Self {
        LimitedListener {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            per_ip: Arc::new(PerIp { max: usize::MAX, open: Mutex::default() }),
            first_bytes: None,
        }
    }

    /// At most `max` connections at once from one IP address: a connection
    /// beyond it is closed as soon as it is accepted.
    pub fn per_ip(mut self, max: usize) -> Self {
        self.per_ip = Arc::new(PerIp { max, open: Mutex::default() });
        self
    }

    /// A connection that has sent no byte `within` after it was accepted
    /// fails its reads with `TimedOut` (so the server closes it).
    pub fn first_bytes_within(mut self, within: Duration) -> Self {
        self.first_bytes = Some(within);
        self
    }

    /// The next connection, once a slot is free; the slot is held by the
    /// stream until it is dropped. Connections from an address at its cap
    /// are closed here and not returned.
    pub(crate) async fn next(&mut self) -> (LimitedStream, SocketAddr) {
        let permit = self.slots.clone().acquire_owned().await.expect("semaphore never closed");
        loop {
            match self.inner.accept().await {
                Ok((s, a)) => {
                    let Some(ip_slot) = self.per_ip.take(a.ip()) else {
                        tracing::debug!(peer = %a, max = self.per_ip.max, "connection closed: its address holds max-connections-per-ip");
                        drop(s);
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let first_bytes = self.first_bytes.map(|d| Box::pin(tokio::time::sleep(d)));
                    let stream =
                        LimitedStream { inner: s, _permit: permit, _ip: ip_slot, first_bytes };
                    return (stream, a);
                }
                Err(e) => {
                    // EMFILE and friends: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Connections open from `ip` now (for tests and diagnostics).
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_ip.count(ip)
    }

    /// As a stream of connections, for tonic.
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<LimitedStream>> {
        futures::stream::unfold(self, |mut l| async move {
            let (s, _) = l.next().await;
            Some((Ok(s), l))
        })
    }
}

impl axum::serve::Listener for LimitedListener {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection holding its slots (the listener's and its address's) until
/// dropped.
pub struct LimitedStream {
    inner: TcpStream,
    _permit: OwnedSemaphorePermit,
    _ip: IpSlot,
    /// Until the first byte is read: when it fires, reads fail.
    first_bytes: Option<Pin<Box<Sleep>>>,
}

impl LimitedStream {
    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl tonic::transport::server::Connected for LimitedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.first_bytes = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                if let Some(d) = self.first_bytes.as_mut() {
                    if d.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no bytes within header-timeout-ms of connecting",
                        )));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn listener() -> (LimitedListener, SocketAddr) {
        let l = bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (LimitedListener::new(l, 100), a)
    }

    /// Beyond `per_ip` connections from one address, the next ones are
    /// closed on accept while another address is still served; a dropped
    /// connection gives its address's count back.
    #[tokio::test]
    async fn per_ip_cap_closes_extra_connections_of_one_address() {
        let (l, addr) = listener().await;
        let mut l = l.per_ip(2);
        let c1 = TcpStream::connect(addr).await.unwrap();
        let c2 = TcpStream::connect(addr).await.unwrap();
        let mut c3 = TcpStream::connect(addr).await.unwrap();
        let other = TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let _c4 = other.connect(addr).await.unwrap();
        let (s1, _) = l.next().await;
        let (s2, _) = l.next().await;
        // c3 is closed; the next connection handed out is c4's.
        let (s4, a4) = l.next().await;
        assert_eq!(a4.ip(), "127.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(l.open_from("127.0.0.1".parse().unwrap()), 2);
        let mut b = [0u8; 1];
        assert_eq!(c3.read(&mut b).await.unwrap_or(0), 0, "the third connection is closed");
        drop((s1, c1));
        assert_eq!(l.open_from("127.0.0.1".parse().unwrap()), 1);
        let _c5 = TcpStream::connect(addr).await.unwrap();
        let (_s5, a5) = l.next().await;
        assert_eq!(a5.ip(), "127.0.0.1".parse::<IpAddr>().unwrap());
        drop((s2, s4, c2));
    }

    /// A connection that sends nothing fails its read with `TimedOut` after
    /// the first-bytes deadline; one that sends in time reads normally
    /// and is not cut later by that deadline.
    #[tokio::test]
    async fn silent_connection_times_out_and_a_talking_one_does_not() {
        let (l, addr) = listener().await;
        let mut l = l.first_bytes_within(Duration::from_millis(200));
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.next().await;
        let mut b = [0u8; 4];
        let t = std::time::Instant::now();
        let e = s.read(&mut b).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(150), "{:?}", t.elapsed());

        let mut talk = TcpStream::connect(addr).await.unwrap();
        let (mut s, _) = l.next().await;
        talk.write_all(b"hi").await.unwrap();
        assert_eq!(s.read(&mut b).await.unwrap(), 2);
        let reader = tokio::spawn(async move { s.read(&mut b).await.map(|n| (n, b)) });
        tokio::time::sleep(Duration::from_millis(400)).await;
        talk.write_all(b"yo").await.unwrap();
        let (n, b) = reader.await.unwrap().unwrap();
        assert_eq!(&b[..n], b"yo");
    }

    /// `bind` listens on the address it was given, resolving a host name.
    #[tokio::test]
    async fn bind_resolves_and_listens() {
        let l = bind("localhost:0").await.unwrap();
        let a = l.local_addr().unwrap();
        assert!(a.ip().is_loopback());
        let _c = TcpStream::connect(a).await.unwrap();
        l.accept().await.unwrap();
    }
}
