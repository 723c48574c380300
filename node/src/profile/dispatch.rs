//! The outbox dispatcher: on the leader only, delivers due outbox items to
//! their module's server over HTTP(S), signed as Standard Webhooks says
//! ([`herald_proto::webhook`]), and writes every attempt's outcome back
//! through the log ([`ProfileOp::OutboxAttempted`]), so that a new leader
//! resumes every pending item with its attempt count and next time.
//!
//! - Every node runs the loop; it does nothing while the node is not the
//!   leader (the pattern of the gateway reaper), so in steady state one
//!   node delivers. A deposed leader's deliveries already in flight finish
//!   (at most [`ProfileSyncConfig::max_in_flight`] of them): receivers see
//!   them as duplicates or older revisions.
//! - At most one delivery per target `(module, account)` is in flight on
//!   the leader, and at most `max-in-flight` in all.
//! - 2xx: delivered. 410 Gone: the receiver asked for no more of this, so
//!   the item goes to the dead-letter list at once (the module is not
//!   disabled: other accounts still get theirs; an operator may resend).
//!   Anything else (another status, a refused connection, a timeout): a
//!   retry after `initial-backoff-ms * 2^attempts`, capped at
//!   `max-backoff-ms`, with jitter (a uniform draw in [half, all] of it); a
//!   `Retry-After: <seconds>` asking for longer is honoured. A retry that
//!   would fall after `horizon-ms` from the item's creation does not
//!   happen: the item goes to the dead-letter list with its last error.
//! - Delivery is at least once: the result of an attempt may be lost with
//!   the leader (the item is then sent again by the next); the webhook id
//!   stays the same, and the body's revision orders updates.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use herald_domain::profile::{Attempt, OutboxItem, ProfileOp, Target};
use herald_domain::state::Op;
use herald_proto::webhook;
use herald_proto::wire::profile::{Delivery, DeliveryData};
use http::{header, Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use crate::config::{ModuleConfig, ProfileSyncConfig};
use crate::metrics::Metrics;
use crate::raft::RaftNode;

/// How often the leader looks for due items: the delay a new item or a
/// retry waits beyond its time at most.
pub const POLL: Duration = Duration::from_millis(50);
/// Most of a receiver's answer body read (the start of it goes into the
/// last error): only the status matters, and a receiver must not make the
/// leader buffer an unbounded answer.
pub const MAX_RESPONSE_BODY_BYTES: usize = 16 * 1024;
/// Bytes of an answer body quoted in the last error.
const ERROR_BODY_QUOTE: usize = 120;
/// Longest `Retry-After` honoured, seconds (a day; the horizon caps it
/// further).
const MAX_RETRY_AFTER_S: u64 = 86_400;

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    /// `Retry-After` asked for this long.
    pub retry_after: Option<Duration>,
    /// 410 Gone.
    pub gone: bool,
}

/// The dispatcher of one node.
pub struct Dispatcher {
    node: Arc<RaftNode>,
    cfg: Arc<ProfileSyncConfig>,
    metrics: Arc<Metrics>,
    /// TLS for https:// endpoints: the public roots, or per module the
    /// private CA of its `ca` attribute.
    tls: Arc<rustls::ClientConfig>,
    module_tls: HashMap<String, Arc<rustls::ClientConfig>>,
    /// Targets with a delivery in flight from this node.
    in_flight: Mutex<HashSet<Target>>,
    slots: Arc<Semaphore>,
}

impl Dispatcher {
    pub fn new(
        node: Arc<RaftNode>,
        cfg: Arc<ProfileSyncConfig>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let client = |roots: rustls::RootCertStore| {
            Arc::new(
                rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
            )
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let tls = client(roots);
        let module_tls = cfg
            .modules
            .iter()
            .filter(|m| !m.ca.is_empty())
            .map(|m| {
                let mut roots = rustls::RootCertStore::empty();
                // The config reader checked each one is a usable anchor.
                let (_, bad) = roots.add_parsable_certificates(
                    m.ca.iter().map(|c| rustls_pki_types::CertificateDer::from(c.clone())),
                );
                if bad > 0 {
                    tracing::warn!(module = %m.id, bad, "CA certificates left out");
                }
                (m.id.clone(), client(roots))
            })
            .collect();
        Arc::new(Dispatcher {
            node,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight)),
            cfg,
            metrics,
            tls,
            module_tls,
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// The loop: until `stop` turns true.
    pub async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.cfg.modules.is_empty() {
            return;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if self.node.is_leader() {
                self.clone().dispatch_due();
            }
        }
    }

    /// Starts a delivery for every due item with a free slot whose target
    /// has none in flight.
    fn dispatch_due(self: Arc<Self>) {
        let free = self.slots.available_permits();
        if free == 0 {
            return;
        }
        let now = self.node.clock().now_ms();
        let due: Vec<OutboxItem> = {
            let busy = self.in_flight.lock().expect("in_flight");
            self.node.read_local(|s| {
                s.profiles
                    .pending()
                    .filter(|i| i.next_attempt_ms <= now)
                    .filter(|i| !busy.contains(&(i.module.clone(), i.account.clone())))
                    .take(free)
                    .cloned()
                    .collect()
            })
        };
        for item in due {
            let Ok(permit) = self.slots.clone().try_acquire_owned() else { return };
            self.in_flight
                .lock()
                .expect("in_flight")
                .insert((item.module.clone(), item.account.clone()));
            let this = self.clone();
            tokio::spawn(async move {
                let target = (item.module.clone(), item.account.clone());
                this.attempt(item).await;
                this.in_flight.lock().expect("in_flight").remove(&target);
                drop(permit);
            });
        }
    }

    /// One attempt of `item`, and its outcome written through the log.
    async fn attempt(&self, item: OutboxItem) {
        let span = tracing::info_span!(
            "outbox_delivery",
            id = item.id,
            module = %item.module,
            account = %item.account,
            revision = item.revision,
            attempt = item.attempts + 1,
        );
        let result = match self.cfg.module(&item.module) {
            Some(m) => {
                let now_s = self.node.clock().now_ms() / 1000;
                self.deliver(m, &item, now_s).await
            }
            None => Err(Failure {
                error: format!("module {:?} is no longer in <profile-sync>", item.module),
                retry_after: None,
                gone: false,
            }),
        };
        let now = self.node.clock().now_ms();
        let attempt = decide(&self.cfg, &item, result, now, jitter());
        match &attempt {
            Attempt::Delivered => {
                self.metrics.outbox_delivered.inc();
                tracing::info!(parent: &span, "outbox item delivered");
            }
            Attempt::Retry { next_ms, error } => {
                self.metrics.outbox_retries.inc();
                tracing::info!(parent: &span, %error, in_ms = next_ms.saturating_sub(now), "outbox delivery failed; will retry");
            }
            Attempt::Dead { error } => {
                self.metrics.outbox_dead_lettered.inc();
                tracing::warn!(parent: &span, %error, "outbox item dead-lettered");
            }
        }
        let op = Op::Profile(ProfileOp::OutboxAttempted { id: item.id, attempt });
        if let Err(e) = self.node.write(vec![op]).await {
            // The item stays as it was: the next look (here or on the next
            // leader) sends it again.
            tracing::warn!(parent: &span, error = %e, "outbox attempt not recorded; it will be sent again");
        }
    }

    /// POSTs `item` to `m`'s endpoint within its timeout.
    async fn deliver(
        &self,
        m: &ModuleConfig,
        item: &OutboxItem,
        now_s: u64,
    ) -> Result<(), Failure> {
        let body = Bytes::from(delivery_body(item));
        let id = webhook::message_id(item.id);
        let signature = webhook::sign(&m.secret, &id, now_s, &body);
        let timeout = Duration::from_millis(m.timeout_ms);
        let fail = |error: String| Failure { error, retry_after: None, gone: false };
        let uri: Uri = m.endpoint.parse().map_err(|e| fail(format!("endpoint: {e}")))?;
        let https = uri.scheme_str() == Some("https");
        let host = uri.host().ok_or_else(|| fail("endpoint has no host".into()))?.to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
        let req = Request::post(path)
            .header(header::HOST, authority)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "herald-profile-sync")
            .header(webhook::ID_HEADER, &id)
            .header(webhook::TIMESTAMP_HEADER, now_s.to_string())
            .header(webhook::SIGNATURE_HEADER, signature)
            .body(Full::new(body))
            .map_err(|e| fail(format!("request: {e}")))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| fail(format!("connect {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            if https {
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| fail(format!("server name {host:?}: {e}")))?;
                let config = self.module_tls.get(&m.id).unwrap_or(&self.tls).clone();
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| fail(format!("TLS with {host}: {e}")))?;
                send(TokioIo::new(tls), req).await
            } else {
                send(TokioIo::new(tcp), req).await
            }
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(fail(format!("no answer within {} ms", m.timeout_ms))),
        }
    }
}

/// Sends `req` over `io` (HTTP/1.1) and reads the answer (its body bounded).
async fn send<I>(io: I, req: Request<Full<Bytes>>) -> Result<(), Failure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let fail = |error: String| Failure { error, retry_after: None, gone: false };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| fail(format!("HTTP handshake: {e}")))?;
    let conn = tokio::spawn(conn);
    let answer = sender.send_request(req).await;
    let r = match answer {
        Err(e) => Err(fail(format!("HTTP: {e}"))),
        Ok(resp) => {
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BODY_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                let quote = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_QUOTE)])
                    .replace(char::is_control, " ");
                Err(Failure {
                    error: format!("HTTP {}: {}", status.as_u16(), quote.trim()),
                    retry_after,
                    gone: status == http::StatusCode::GONE,
                })
            }
        }
    };
    conn.abort();
    r
}

/// A `Retry-After` value (RFC 9110 section 10.2.3): delay-seconds, or an
/// HTTP-date (IMF-fixdate, or the obsolete RFC 850 and asctime forms a
/// recipient must accept), the wait then running from `now` (the wall
/// clock: the receiver's date is a real one) to that date, zero when it is
/// past. Capped at [`MAX_RETRY_AFTER_S`]; anything else is ignored (None).
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    let secs = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still "very long": the cap.
        v.parse::<u64>().unwrap_or(u64::MAX)
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    };
    Some(Duration::from_secs(secs.min(MAX_RETRY_AFTER_S)))
}

/// The JSON body a receiver gets for `item`.
pub fn delivery_body(item: &OutboxItem) -> Vec<u8> {
    let d = Delivery {
        kind: "profile.updated".into(),
        timestamp: herald_proto::date::utc_millis(item.created_ms),
        data: DeliveryData {
            uid: item.uid.clone(),
            module: item.module.clone(),
            account: item.account.clone(),
            source: item.source.clone(),
            revision: item.revision,
            profile: crate::api::profile::to_wire(&item.profile),
            updated_ms: item.created_ms,
        },
    };
    serde_json::to_vec(&d).expect("a delivery serializes")
}

/// A uniform draw in [0, 1) for the backoff's jitter (std's randomly
/// seeded hasher: no dependency for one number).
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    h.write_u64(now.map_or(0, |d| d.as_nanos() as u64));
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before retry number `attempts + 1`: `initial * 2^attempts`
/// capped at `max`, scaled into [half, all] of it by `jitter` in [0, 1).
pub fn backoff_ms(cfg: &ProfileSyncConfig, attempts: u32, jitter: f64) -> u64 {
    let full = cfg
        .initial_backoff_ms
        .saturating_mul(1u64.checked_shl(attempts.min(63)).unwrap_or(u64::MAX))
        .min(cfg.max_backoff_ms);
    let half = full / 2;
    half + ((full - half) as f64 * jitter.clamp(0.0, 1.0)) as u64
}

/// What an attempt's `result` means for `item` at cluster time `now`.
pub fn decide(
    cfg: &ProfileSyncConfig,
    item: &OutboxItem,
    result: Result<(), Failure>,
    now: u64,
    jitter: f64,
) -> Attempt {
    let f = match result {
        Ok(()) => return Attempt::Delivered,
        Err(f) => f,
    };
    if f.gone {
        return Attempt::Dead { error: format!("{} (410: the receiver wants no more)", f.error) };
    }
    let mut wait = backoff_ms(cfg, item.attempts, jitter);
    if let Some(ra) = f.retry_after {
        wait = wait.max(ra.as_millis() as u64);
    }
    let next = now.saturating_add(wait);
    let horizon = item.created_ms.saturating_add(cfg.horizon_ms);
    if next > horizon {
        return Attempt::Dead {
            error: format!(
                "{} (gave up after {} attempts: the next would pass the {} ms horizon)",
                f.error,
                item.attempts + 1,
                cfg.horizon_ms
            ),
        };
    }
    Attempt::Retry { next_ms: next, error: f.error }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(attempts: u32, created_ms: u64) -> OutboxItem {
        OutboxItem {
            id: 7,
            uid: "u".into(),
            module: "msn".into(),
            account: "a".into(),
            source: "qq".into(),
            revision: 9,
            profile: Default::default(),
            created_ms,
            attempts,
            next_attempt_ms: created_ms,
            last_error: String::new(),
            dead_ms: None,
        }
    }

    fn failure(retry_after: Option<u64>, gone: bool) -> Result<(), Failure> {
        Err(Failure {
            error: "HTTP 500: x".into(),
            retry_after: retry_after.map(Duration::from_secs),
            gone,
        })
    }

    /// Backoff doubles from initial-backoff-ms up to max-backoff-ms, and
    /// jitter keeps it within [half, all] of that.
    #[test]
    fn dispatch_backoff_doubles_with_jitter_and_a_cap() {
        let cfg = ProfileSyncConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            ..Default::default()
        };
        assert_eq!(backoff_ms(&cfg, 0, 0.999_999), 99);
        assert_eq!(backoff_ms(&cfg, 0, 0.0), 50);
        assert_eq!(backoff_ms(&cfg, 2, 0.0), 200);
        assert_eq!(backoff_ms(&cfg, 3, 0.5), 600);
        assert_eq!(backoff_ms(&cfg, 4, 0.0), 500, "capped at max, then jittered");
        assert_eq!(backoff_ms(&cfg, 200, 0.0), 500, "no overflow");
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j));
        }
    }

    /// 2xx delivers; 410 dead-letters at once; a failure retries after the
    /// backoff, or after a longer Retry-After; a retry past the horizon
    /// dead-letters with the last error.
    #[test]
    fn dispatch_decides_retry_dead_and_horizon() {
        let cfg = ProfileSyncConfig {
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
            horizon_ms: 10_000,
            ..Default::default()
        };
        let now = 5_000;
        assert_eq!(decide(&cfg, &item(0, 0), Ok(()), now, 0.0), Attempt::Delivered);
        let Attempt::Dead { error } = decide(&cfg, &item(0, 0), failure(None, true), now, 0.0)
        else {
            panic!()
        };
        assert!(error.contains("410") && error.contains("HTTP 500"));
        assert_eq!(
            decide(&cfg, &item(1, 0), failure(None, false), now, 0.0),
            Attempt::Retry { next_ms: now + 100, error: "HTTP 500: x".into() }
        );
        assert_eq!(
            decide(&cfg, &item(1, 0), failure(Some(3), false), now, 0.0),
            Attempt::Retry { next_ms: now + 3000, error: "HTTP 500: x".into() }
        );
        let Attempt::Dead { error } = decide(&cfg, &item(1, 0), failure(Some(6), false), now, 0.0)
        else {
            panic!()
        };
        assert!(error.contains("horizon") && error.contains("HTTP 500"), "{error}");
        let r = decide(&cfg, &item(5, 0), failure(None, false), 9_600, 0.0);
        assert!(matches!(r, Attempt::Dead { .. }), "{r:?}");
    }

    /// Proves `Retry-After` is understood in both RFC 9110 forms:
    /// delay-seconds, and an HTTP-date in each of its three formats (the
    /// wait is measured from now; a past date waits nothing), capped at a
    /// day; garbage is ignored.
    #[test]
    fn dispatch_retry_after_seconds_and_http_dates() {
        use std::time::{SystemTime, UNIX_EPOCH};
        // Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example.
        let date = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let now = date - Duration::from_secs(120);
        let s = |v: &str, now: SystemTime| parse_retry_after(v, now).map(|d| d.as_secs());
        assert_eq!(s("120", now), Some(120));
        assert_eq!(s(" 7 ", now), Some(7));
        assert_eq!(s("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(120));
        assert_eq!(s("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(120));
        assert_eq!(s("Sun Nov  6 08:49:37 1994", now), Some(120));
        let half = now + Duration::from_millis(500);
        assert_eq!(s("Sun, 06 Nov 1994 08:49:37 GMT", half), Some(120), "rounded up");
        assert_eq!(s("Sun, 06 Nov 1994 08:49:37 GMT", date + Duration::from_secs(5)), Some(0));
        assert_eq!(s("99999999999999999999999", now), Some(MAX_RETRY_AFTER_S));
        assert_eq!(s("Mon, 06 Nov 1995 08:49:37 GMT", now), Some(MAX_RETRY_AFTER_S));
        assert_eq!(s("soon", now), None);
        assert_eq!(s("-5", now), None);
        assert_eq!(s("", now), None);
        // Through decide: a date two minutes ahead beats a short backoff.
        let f = Failure {
            error: "HTTP 503".into(),
            retry_after: parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            gone: false,
        };
        let cfg = ProfileSyncConfig::default();
        match decide(&cfg, &item(0, 0), Err(f), 1_000, 0.0) {
            Attempt::Retry { next_ms, .. } => assert_eq!(next_ms, 121_000),
            other => panic!("{other:?}"),
        }
    }

    /// The body a receiver gets names the target, the source, the revision
    /// and the profile, and parses as the wire type.
    #[test]
    fn dispatch_body_is_the_wire_delivery() {
        let mut it = item(0, 1_700_000_000_000);
        it.profile.mood = "happy".into();
        let d: Delivery = serde_json::from_slice(&delivery_body(&it)).unwrap();
        assert_eq!(d.kind, "profile.updated");
        assert_eq!(d.timestamp, "2023-11-14T22:13:20.000Z");
        assert_eq!((d.data.module.as_str(), d.data.account.as_str()), ("msn", "a"));
        assert_eq!((d.data.source.as_str(), d.data.revision), ("qq", 9));
        assert_eq!(d.data.profile.mood, "happy");
    }
}
