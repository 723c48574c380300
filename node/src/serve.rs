//! Serving the publish port's router over HTTP/1 and HTTP/2 with the
//! timeouts `axum::serve` does not have (issue 14): each connection is
//! served by hyper-util's `auto` builder with a header-read timeout for
//! HTTP/1 (which also closes a kept-alive connection idle between requests)
//! and keep-alive pings for HTTP/2 (gRPC), and shut down gracefully.

use std::future::Future;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

use crate::config::Limits;

/// Time an HTTP/2 keep-alive ping may go unanswered before the connection
/// is closed: a peer that answers nothing this long is gone or stalled
/// (hyper's default, the same as gRPC's).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// The connection timeouts of both ports, from `<limits>`.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For a new connection's first bytes and for an HTTP/1 request's
    /// headers (including the wait for the next request on a kept-alive
    /// connection).
    pub header: Duration,
    /// An HTTP/2 connection silent this long is pinged; unanswered within
    /// [`KEEPALIVE_TIMEOUT`], it is closed.
    pub idle: Duration,
}

impl Timeouts {
    pub fn from_limits(l: &Limits) -> Self {
        Timeouts {
            header: Duration::from_millis(l.header_timeout_ms),
            idle: Duration::from_millis(l.idle_timeout_ms),
        }
    }
}

/// The hyper-util builder with the timeouts.
fn builder(t: Timeouts) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1().timer(TokioTimer::new()).header_read_timeout(t.header).keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(t.idle)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    b
}

/// Serves `router` on the connections of `listener` until `shutdown`
/// resolves; then stops accepting, asks every open connection to finish
/// (HTTP/1 after its current request, HTTP/2 with GOAWAY) and returns when
/// all have closed. The caller bounds that wait.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    t: Timeouts,
    shutdown: impl Future<Output = ()> + Send,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let builder = builder(t);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            c = listener.accept() => c,
            _ = &mut shutdown => break,
        };
        let svc = router.clone().map_request(|r: http::Request<Incoming>| r.map(Body::new));
        let svc = TowerToHyperService::new(svc);
        let (builder, mut stop) = (builder.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            let stopping = async move {
                let _ = stop.wait_for(|s| *s).await;
                stop
            };
            let r = tokio::select! {
                r = conn.as_mut() => r,
                _stop = stopping => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = r {
                tracing::debug!(?peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(stop_rx);
    // Every connection task holds a receiver: closed() returns when all are gone.
    stop_tx.closed().await;
}
