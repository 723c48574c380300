//! TLS on the publish port (MISSION M9): the rustls server configuration
//! from the `<tls>` PEM files, a listener that does the handshakes off the
//! accept path, and the client side for node-to-node calls to other nodes'
//! publish ports.
//!
//! Crypto is rustls with the `ring` provider, always passed explicitly:
//! nothing here depends on a process-wide default provider.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::config::TlsConfig;
use crate::listener::{LimitedListener, LimitedStream};

/// How long a client may take to finish the TLS handshake. A client that
/// connects and then stalls holds a connection slot (`max-connections`)
/// until then, so this bounds how long a slow or hostile client can keep a
/// slot without sending a request; 10 s is ample for a real handshake even
/// over a slow link.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Finished handshakes waiting for the server to take them. Small: the
/// server takes connections as fast as it spawns tasks for them; when it
/// does not, handshake tasks wait (each still holding its slot), which is
/// the back-pressure we want.
const READY_QUEUE: usize = 64;

/// How long a node waits for the TLS handshake when it calls another
/// node's publish port (the TCP connect has its own, shorter timeout).
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// A `<tls>` file that cannot be used, naming the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls: cannot read {what} file {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("tls: {what} file {}: bad PEM: {message}", path.display())]
    Pem { what: &'static str, path: PathBuf, message: String },
    #[error("tls: {what} file {}: no certificate in file (expected a PEM \"CERTIFICATE\" block)", path.display())]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("tls: key file {}: no private key in file (expected a PEM PKCS#8, RSA or EC private key)", path.display())]
    NoKey { path: PathBuf },
    #[error("tls: key file {} does not match the certificate in {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("tls: certificate {} / key {}: {message}", cert.display(), key.display())]
    Invalid { cert: PathBuf, key: PathBuf, message: String },
    /// `<peer-tls ca>` holds no usable CA certificate.
    #[error("tls: CA file {}: {message}", path.display())]
    Ca { path: PathBuf, message: String },
    /// `<peer-tls cert>` is not this node's certificate from `<peer-tls ca>`.
    #[error("tls: certificate {} is not one that CA {} issued for {name}: {message}", cert.display(), ca.display())]
    NotForNode { cert: PathBuf, ca: PathBuf, name: String, message: String },
}

pub(crate) fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
}

/// Every certificate in a PEM file; at least one.
pub(crate) fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, path: path.to_path_buf(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what, path: path.to_path_buf() });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 RSA or SEC1 EC) in a PEM file.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_path_buf() },
        e => TlsError::Pem { what: "key", path: path.to_path_buf(), message: e.to_string() },
    })
}

/// The crypto of every TLS configuration here: ring, explicitly.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What a rustls error about a certificate and its key means, naming both
/// files (the publish port's `<tls>` and the sync port's `<peer-tls>`).
pub(crate) fn pair_error<'a>(
    cert: &'a Path,
    key: &'a Path,
) -> impl Fn(rustls::Error) -> TlsError + Copy + 'a {
    move |e| match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch { cert: cert.to_path_buf(), key: key.to_path_buf() }
        }
        e => TlsError::Invalid {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            message: e.to_string(),
        },
    }
}

/// The server side of the publish port: the certificate chain and key of
/// `cfg`, ALPN `h2` (gRPC) and `http/1.1`. Fails naming the file when one
/// is unreadable, holds no certificate or key, or the key does not belong
/// to the certificate.
pub fn server_config(cfg: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("certificate", &cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let invalid = pair_error(&cfg.cert, &cfg.key);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(invalid)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client side of node-to-node calls to other nodes' publish ports:
/// trusts the certificates in `cfg.ca`, or in `cfg.cert` when there is no
/// `ca` (one self-signed certificate for the whole cluster).
pub fn client_tls(cfg: &TlsConfig) -> Result<ClientTlsConfig, TlsError> {
    let (what, path) = match &cfg.ca {
        Some(ca) => ("CA", ca),
        None => ("certificate", &cfg.cert),
    };
    // Parsed here only to fail early and clearly; tonic parses it again.
    load_certs(what, path)?;
    let pem = read(what, path)?;
    Ok(ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pem))
        .timeout(PEER_HANDSHAKE_TIMEOUT))
}

/// How this process calls other nodes' publish ports: `None` = plaintext,
/// `Some` = https with these roots. Set once at startup by [`app::run`]
/// (from `<tls>`) through [`set_peer_tls`]; read by [`publish_endpoint`].
/// Process-wide because heraldd runs one node per process and the callers
/// (request forwarding deep in the API) have no config at hand. Unset
/// means plaintext.
///
/// [`app::run`]: crate::app::run
static PEER_TLS: OnceLock<Option<ClientTlsConfig>> = OnceLock::new();

/// Sets how this process calls other nodes' publish ports (see
/// [`PEER_TLS`]). The first call wins; returns false when it had already
/// been set (e.g. a second node started in the same process).
pub fn set_peer_tls(tls: Option<ClientTlsConfig>) -> bool {
    PEER_TLS.set(tls).is_ok()
}

/// Whether node-to-node publish calls use TLS.
pub fn peer_tls_enabled() -> bool {
    matches!(PEER_TLS.get(), Some(Some(_)))
}

/// The endpoint of another node's publish port `addr` (`host:port`):
/// `https://` with the cluster's roots when TLS is on, `http://` otherwise.
/// Every node-to-node call to a publish port should open its channel here.
/// With TLS the certificate must be valid for `host` as written in the
/// server list (a DNS name or an IP address SAN).
pub fn publish_endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    endpoint_with(addr, PEER_TLS.get().and_then(Option::as_ref))
}

fn endpoint_with(
    addr: &str,
    tls: Option<&ClientTlsConfig>,
) -> Result<Endpoint, tonic::transport::Error> {
    match tls {
        Some(tls) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone()),
        None => Endpoint::from_shared(format!("http://{addr}")),
    }
}

/// A TLS connection on the publish port; holds its connection slot until
/// dropped.
pub type TlsStream = tokio_rustls::server::TlsStream<LimitedStream>;

/// The publish port with TLS: accepts TCP through a [`LimitedListener`]
/// (so the `max-connections` slot is taken at TCP accept and held through
/// the handshake and the connection's life) and hands out connections whose
/// handshake finished.
///
/// Handshakes never block accepting: a background task accepts and spawns
/// one task per handshake, bounded by [`HANDSHAKE_TIMEOUT`]; finished
/// streams queue in a bounded channel for [`accept`](axum::serve::Listener::accept).
/// Failed or timed-out handshakes are logged at debug and dropped. Dropping
/// the listener stops the background task.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream, SocketAddr)>,
    local_addr: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `inner` with `config`. Needs a Tokio runtime.
    pub fn new(inner: LimitedListener, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local_addr = axum::serve::Listener::local_addr(&inner)?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        let acceptor = tokio::spawn(accept_loop(inner, TlsAcceptor::from(config), tx));
        Ok(TlsListener { ready, local_addr, acceptor })
    }
}

impl TlsListener {
    /// As a stream of connections whose handshake finished, for tonic (the
    /// sync port with `<peer-tls>`). Each connection's certificates reach
    /// the handlers through tonic's `TlsConnectInfo` (`Request::peer_certs`).
    pub fn into_stream(self) -> impl tokio_stream::Stream<Item = io::Result<TlsStream>> {
        futures::stream::unfold(self, |mut l| async move {
            let (s, _) = axum::serve::Listener::accept(&mut l).await;
            Some((Ok(s), l))
        })
    }
}

async fn accept_loop(
    mut inner: LimitedListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream, SocketAddr)>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            c = inner.next() => c,
            _ = tx.closed() => return,
        };
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Err: the listener is gone; the connection just closes.
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "tls handshake timed out")
                }
            }
        });
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task only returns once this receiver is gone, so
            // this means it panicked: nothing more will come.
            None => {
                tracing::error!(
                    "tls accept task died; the publish port accepts no more connections"
                );
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::routing::get;
    use axum::Router;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// A self-signed certificate for `localhost` and 127.0.0.1: (cert PEM,
    /// key PEM).
    fn self_signed() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsConfig {
        let (cp, kp) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cp, cert).unwrap();
        std::fs::write(&kp, key).unwrap();
        TlsConfig { cert: cp, key: kp, ca: None }
    }

    /// A matching certificate and key load, and the server offers h2 (for
    /// gRPC) and http/1.1 by ALPN.
    #[test]
    fn tls_server_config_loads_and_offers_h2() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cfg = write_pair(dir.path(), &cert, &key);
        let sc = server_config(&cfg).unwrap();
        assert_eq!(sc.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        client_tls(&cfg).unwrap();
    }

    /// Unusable files are refused with an error that names the file and
    /// says what is wrong: missing file, empty certificate file, a key file
    /// without a key, a key of another certificate, broken PEM.
    #[test]
    fn tls_server_config_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cfg = write_pair(dir.path(), &cert, &key);

        let missing = TlsConfig { cert: dir.path().join("nope.pem"), ..cfg.clone() };
        let e = server_config(&missing).unwrap_err();
        assert!(matches!(e, TlsError::Read { what: "certificate", .. }), "{e}");
        assert!(e.to_string().contains("nope.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = server_config(&TlsConfig { cert: empty.clone(), ..cfg.clone() }).unwrap_err();
        assert!(matches!(&e, TlsError::NoCertificate { path, .. } if *path == empty), "{e}");
        assert!(
            e.to_string().contains("empty.pem") && e.to_string().contains("no certificate"),
            "{e}"
        );
        // The CA file of client_tls is checked the same way.
        let e = client_tls(&TlsConfig { ca: Some(empty.clone()), ..cfg.clone() }).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificate { what: "CA", .. }), "{e}");

        // A certificate where the key should be: no key.
        let e = server_config(&TlsConfig { key: cfg.cert.clone(), ..cfg.clone() }).unwrap_err();
        assert!(matches!(&e, TlsError::NoKey { path } if *path == cfg.cert), "{e}");
        assert!(
            e.to_string().contains("cert.pem") && e.to_string().contains("no private key"),
            "{e}"
        );

        // The key of another certificate.
        let other = dir.path().join("other-key.pem");
        std::fs::write(&other, self_signed().1).unwrap();
        let e = server_config(&TlsConfig { key: other.clone(), ..cfg.clone() }).unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
        assert!(
            e.to_string().contains("other-key.pem") && e.to_string().contains("does not match"),
            "{e}"
        );

        // A PEM block that never ends.
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN PRIVATE KEY-----\nMIIB\n").unwrap();
        let e = server_config(&TlsConfig { key: broken, ..cfg.clone() }).unwrap_err();
        assert!(matches!(e, TlsError::Pem { what: "key", .. }), "{e}");
    }

    /// A client TLS config trusting `cert_pem`.
    fn connector(cert_pem: &str) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(cfg))
    }

    /// GET /healthz over TLS with HTTP/1.1; the whole response.
    async fn https_get(addr: SocketAddr, cert_pem: &str) -> io::Result<String> {
        let tcp = TcpStream::connect(addr).await?;
        let mut tls =
            connector(cert_pem).connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        tls.read_to_string(&mut out).await?;
        Ok(out)
    }

    async fn serve_tls(max_connections: usize) -> (SocketAddr, String) {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let cfg = write_pair(dir.path(), &cert, &key);
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(
            LimitedListener::new(tcp, max_connections),
            server_config(&cfg).unwrap(),
        )
        .unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let router = Router::new().route("/healthz", get(|| async { "ok" }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, cert)
    }

    /// End to end over a real socket: an HTTPS client trusting the
    /// certificate gets 200 from /healthz; a plaintext HTTP request on the
    /// same port gets no HTTP answer; and a client that connects and never
    /// starts its handshake does not keep the next client from being
    /// served.
    #[tokio::test]
    async fn tls_listener_serves_https_and_refuses_plaintext() {
        let (addr, cert) = serve_tls(16).await;

        let r = https_get(addr, &cert).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.ends_with("ok"), "{r}");

        // Plaintext: the server expects a ClientHello, answers with at
        // most a TLS alert and closes; never an HTTP response.
        let mut plain = TcpStream::connect(addr).await.unwrap();
        plain.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
            .await
            .expect("server closes");
        assert!(!buf.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&buf));

        // Stalled handshakes (connected, silent) do not block accepting.
        let mut stalled = Vec::new();
        for _ in 0..3 {
            stalled.push(TcpStream::connect(addr).await.unwrap());
        }
        let r = tokio::time::timeout(Duration::from_secs(5), https_get(addr, &cert))
            .await
            .expect("not blocked")
            .unwrap();
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    }

    /// A client that does not trust the server's certificate fails the
    /// handshake (the listener keeps serving others).
    #[tokio::test]
    async fn tls_listener_untrusted_client_fails() {
        let (addr, cert) = serve_tls(16).await;
        let (other, _) = self_signed();
        assert!(https_get(addr, &other).await.is_err());
        assert!(https_get(addr, &cert).await.unwrap().starts_with("HTTP/1.1 200"));
    }

    /// gRPC-style clients get h2 by ALPN.
    #[tokio::test]
    async fn tls_listener_negotiates_h2() {
        let (addr, cert) = serve_tls(16).await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()).unwrap();
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    }

    /// Node-to-node endpoints are `https://` with the peer TLS config and
    /// `http://` without; an unset peer TLS means plaintext.
    #[test]
    fn tls_publish_endpoint_scheme_follows_peer_tls() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed();
        let tls = client_tls(&write_pair(dir.path(), &cert, &key)).unwrap();
        assert_eq!(
            endpoint_with("127.0.0.1:7103", Some(&tls)).unwrap().uri().to_string(),
            "https://127.0.0.1:7103/"
        );
        assert_eq!(
            endpoint_with("127.0.0.1:7103", None).unwrap().uri().to_string(),
            "http://127.0.0.1:7103/"
        );
        // No test sets the process-wide PEER_TLS.
        assert!(!peer_tls_enabled());
        assert_eq!(
            publish_endpoint("node-2:7203").unwrap().uri().to_string(),
            "http://node-2:7203/"
        );
    }
}
