//! Mutual TLS between peers on the sync port (issue 14).
//!
//! With `<peer-tls>` every node presents a certificate issued by the
//! cluster's CA for its DNS name `node<N>.<cluster>.herald`
//! ([`herald_proto::peer::node_name`]; `herald cert` writes them):
//!
//! * the server side ([`server_config`]) refuses in the TLS handshake any
//!   client without a certificate the CA issued, so no RPC runs for it;
//! * each handler then asks the [`PeerGuard`] who called: RPCs that carry
//!   the sender's number (Raft's vote, append-entries, snapshot and
//!   transfer-leader: the leader id in their vote) are refused unless the
//!   certificate names that number ([`codes::PEER_WRONG_NUMBER`]); the
//!   others (forward, read index, media blobs, gateway peers) unless it
//!   names a member of the cluster ([`codes::PEER_NOT_MEMBER`]);
//! * the client side ([`PeerClientTls::for_node`]) presents this node's
//!   certificate and accepts the server only with the name of the node it
//!   means to reach, so one member cannot stand in for another.
//!
//! Without `<peer-tls>` the sync port is plaintext and the guard lets every
//! call through: development only (`app::run` warns, production refuses).
//! Crypto is rustls with `ring`, passed explicitly as in [`crate::tls`].

use std::sync::Arc;
use std::time::Duration;

use herald_proto::codes::{self, Code};
use herald_proto::peer::node_name;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{RootCertStore, ServerConfig};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::{Request, Status};

use crate::config::{Config, PeerTlsConfig, SecurityMode};
use crate::tls::{load_certs, load_key, provider, read, TlsError};

/// How long a node waits for the TLS handshake when it calls a peer's sync
/// port (the TCP connect has its own timeout, the election minimum): a
/// handshake between members takes milliseconds; 2 s covers a loaded
/// machine without holding a Raft call for long.
const PEER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// The CA file of `cfg` as a root store (every certificate in it).
fn roots(cfg: &PeerTlsConfig) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs("CA", &cfg.ca)? {
        roots.add(c).map_err(|e| TlsError::Ca { path: cfg.ca.clone(), message: e.to_string() })?;
    }
    Ok(Arc::new(roots))
}

/// The server side of the sync port with `<peer-tls>`: presents `cert`,
/// requires a client certificate issued by `ca`, ALPN `h2` (gRPC only).
/// Also checks at start that `cert` itself was issued by `ca` for node
/// `node` of `cluster`, so a mix-up of files stops the node with a clear
/// error instead of failing every peer call.
pub fn server_config(
    cfg: &PeerTlsConfig,
    cluster: &str,
    node: u64,
) -> Result<Arc<ServerConfig>, TlsError> {
    let roots = roots(cfg)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Ca { path: cfg.ca.clone(), message: e.to_string() })?;
    let certs = load_certs("certificate", &cfg.cert)?;
    let key = load_key(&cfg.key)?;
    let expected = node_name(cluster, node);
    let not_for = |message: String| TlsError::NotForNode {
        cert: cfg.cert.clone(),
        ca: cfg.ca.clone(),
        name: expected.clone(),
        message,
    };
    verifier
        .verify_client_cert(&certs[0], &certs[1..], UnixTime::now())
        .map_err(|e| not_for(e.to_string()))?;
    if !names_node(&certs[0], cluster, node) {
        return Err(not_for("the certificate does not hold that name".into()));
    }
    let invalid = crate::tls::pair_error(&cfg.cert, &cfg.key);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(invalid)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Why a node does not start with its peer settings.
#[derive(Debug, thiserror::Error)]
pub enum PeerStartError {
    #[error(
        "{source_name}: <security mode=\"production\"> refuses plaintext peers: add \
         <peer-tls ca=\"..\" cert=\"..\" key=\"..\"/> (`herald cert` makes the files)"
    )]
    PlaintextInProduction { source_name: String },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The sync port's TLS at start: `Some` server config with `<peer-tls>`;
/// without it `None` (plaintext) and a loud warning in development, or an
/// error in production.
pub fn startup(config: &Config) -> Result<Option<Arc<ServerConfig>>, PeerStartError> {
    match &config.peer_tls {
        Some(cfg) => Ok(Some(server_config(cfg, &config.cluster, config.node)?)),
        None if config.security.mode == SecurityMode::Production => {
            Err(PeerStartError::PlaintextInProduction { source_name: config.source.clone() })
        }
        None => {
            tracing::warn!(
                source = %config.source,
                "PLAINTEXT PEERS: the sync port has no <peer-tls>, so anyone who can reach it \
                 can act as a member of the cluster (read and change every user's data); \
                 development only: run `herald cert` and add <peer-tls> (production refuses \
                 to start like this)"
            );
            Ok(None)
        }
    }
}

/// The client side of calls to peers' sync ports with `<peer-tls>`: this
/// node's certificate and the cluster's CA, loaded once.
#[derive(Clone, Debug)]
pub struct PeerClientTls {
    cluster: String,
    ca: Certificate,
    identity: Identity,
}

impl PeerClientTls {
    /// Loads `cfg`'s files (checked here so a bad file is reported at start,
    /// naming it; tonic parses them again per connection).
    pub fn load(cfg: &PeerTlsConfig, cluster: &str) -> Result<Self, TlsError> {
        load_certs("CA", &cfg.ca)?;
        load_certs("certificate", &cfg.cert)?;
        load_key(&cfg.key)?;
        Ok(PeerClientTls {
            cluster: cluster.to_string(),
            ca: Certificate::from_pem(read("CA", &cfg.ca)?),
            identity: Identity::from_pem(read("certificate", &cfg.cert)?, read("key", &cfg.key)?),
        })
    }

    /// The TLS settings of a connection to node `number`: its certificate
    /// must be issued by the CA for `node<number>.<cluster>.herald`.
    pub fn for_node(&self, number: u64) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .identity(self.identity.clone())
            .domain_name(node_name(&self.cluster, number))
            .timeout(PEER_HANDSHAKE_TIMEOUT)
    }
}

/// Whether the end-entity certificate `cert` names node `number` of
/// `cluster`. Only the name: the chain was checked in the handshake.
pub fn names_node(cert: &CertificateDer<'_>, cluster: &str, number: u64) -> bool {
    let Ok(parsed) = ParsedCertificate::try_from(cert) else { return false };
    let Ok(name) = ServerName::try_from(node_name(cluster, number)) else { return false };
    rustls::client::verify_server_name(&parsed, &name).is_ok()
}

/// The first of `candidates` that `cert` names, if any.
pub fn named_member(
    cert: &CertificateDer<'_>,
    cluster: &str,
    candidates: impl IntoIterator<Item = u64>,
) -> Option<u64> {
    candidates.into_iter().find(|n| names_node(cert, cluster, *n))
}

/// The numbers a certificate may name to count as a member (see
/// [`member_numbers`]), asked at every call.
pub type Members = Arc<dyn Fn() -> Vec<u64> + Send + Sync>;

/// Who counts as a member: the current Raft membership (voters and
/// learners), so a removed node is refused once its removal is applied
/// here; while this node has no membership yet (`join="true"`, waiting to
/// be added) the servers of its XML file.
pub fn member_numbers(current: Vec<u64>, xml: &[u64]) -> Vec<u64> {
    if current.is_empty() {
        xml.to_vec()
    } else {
        current
    }
}

/// The check every sync-port handler makes before it acts (see the module
/// docs). Plaintext: every call passes.
#[derive(Clone)]
pub struct PeerGuard {
    mtls: Option<(String, Members)>,
}

/// Who called, as far as the connection says: its certificate chain.
#[derive(Clone)]
pub struct Caller {
    certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

fn refused(code: Code, message: String) -> Status {
    crate::api::grpc_status(code.grpc, code.name, &message)
}

impl PeerGuard {
    /// No `<peer-tls>`: every call passes.
    pub fn plaintext() -> Self {
        PeerGuard { mtls: None }
    }

    /// `<peer-tls>` on: callers must be members and who they claim to be.
    pub fn mutual_tls(cluster: &str, members: Members) -> Self {
        PeerGuard { mtls: Some((cluster.to_string(), members)) }
    }

    /// Whether peers must present certificates.
    pub fn enabled(&self) -> bool {
        self.mtls.is_some()
    }

    /// The caller of `req` (take it before consuming a streaming request).
    pub fn caller<T>(&self, req: &Request<T>) -> Caller {
        Caller { certs: req.peer_certs() }
    }

    fn end_entity<'c>(&self, caller: &'c Caller) -> Result<&'c CertificateDer<'static>, Status> {
        caller.certs.as_deref().and_then(|c| c.first()).ok_or_else(|| {
            refused(codes::PEER_NOT_MEMBER, "no client certificate on the sync port".into())
        })
    }

    /// Passes when the caller's certificate names a member; answers that
    /// member's number (None in plaintext).
    pub fn member(&self, caller: &Caller) -> Result<Option<u64>, Status> {
        let Some((cluster, members)) = &self.mtls else { return Ok(None) };
        let cert = self.end_entity(caller)?;
        match named_member(cert, cluster, members()) {
            Some(n) => Ok(Some(n)),
            None => Err(refused(
                codes::PEER_NOT_MEMBER,
                format!("the client certificate names no member of cluster {cluster}"),
            )),
        }
    }

    /// Passes when the caller's certificate names node `claimed`, the
    /// sender's number the request carries.
    pub fn claim(&self, caller: &Caller, claimed: u64) -> Result<(), Status> {
        let Some((cluster, _)) = &self.mtls else { return Ok(()) };
        let cert = self.end_entity(caller)?;
        if names_node(cert, cluster, claimed) {
            return Ok(());
        }
        Err(refused(
            codes::PEER_WRONG_NUMBER,
            format!(
                "the request claims node {claimed}, but the client certificate is not {}",
                node_name(cluster, claimed)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// A CA and a function issuing node certificates from it.
    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl Ca {
        fn new(name: &str) -> Ca {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            Ca { cert, key }
        }

        /// (cert PEM, key PEM) for these DNS names.
        fn issue(&self, names: &[String]) -> (String, String) {
            let p = rcgen::CertificateParams::new(names.to_vec()).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
            (cert.pem(), key.serialize_pem())
        }
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn write(dir: &Path, ca: &Ca, cert: &str, key: &str) -> PeerTlsConfig {
        let cfg = PeerTlsConfig {
            ca: dir.join("ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node-key.pem"),
        };
        std::fs::write(&cfg.ca, ca.cert.pem()).unwrap();
        std::fs::write(&cfg.cert, cert).unwrap();
        std::fs::write(&cfg.key, key).unwrap();
        cfg
    }

    /// A certificate names exactly the node numbers of its SANs in its own
    /// cluster: node 2's names node 2, not node 3 nor node 2 of another
    /// cluster, and `named_member` finds it among the candidates (or not).
    #[test]
    fn peer_tls_certificate_names_its_node_only() {
        let ca = Ca::new("c CA");
        let (cert, _) = ca.issue(&[node_name("c", 2), "127.0.0.1".into()]);
        let cert = der(&cert);
        assert!(names_node(&cert, "c", 2));
        assert!(!names_node(&cert, "c", 3));
        assert!(!names_node(&cert, "other", 2));
        assert_eq!(named_member(&cert, "c", [1, 2, 3]), Some(2));
        assert_eq!(named_member(&cert, "c", [1, 3]), None);
    }

    /// The guard: plaintext lets everything pass; with mutual TLS a call
    /// without a certificate is refused as not a member, a member's
    /// certificate passes the member check and a claim of its own number,
    /// and a claim of another number is refused with `peer_wrong_number`.
    #[test]
    fn peer_tls_guard_checks_member_and_claim() {
        let ca = Ca::new("c CA");
        let (cert, _) = ca.issue(&[node_name("c", 2)]);
        let with_cert = Caller { certs: Some(Arc::new(vec![der(&cert)])) };
        let none = Caller { certs: None };

        let plain = PeerGuard::plaintext();
        assert!(!plain.enabled());
        assert_eq!(plain.member(&none).unwrap(), None);
        plain.claim(&none, 3).unwrap();

        let g = PeerGuard::mutual_tls("c", Arc::new(|| vec![1, 2, 3]));
        assert!(g.enabled());
        let e = g.member(&none).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(e.message().starts_with("peer_not_member"), "{e:?}");
        assert_eq!(g.member(&with_cert).unwrap(), Some(2));
        g.claim(&with_cert, 2).unwrap();
        let e = g.claim(&with_cert, 3).unwrap_err();
        assert!(e.message().starts_with("peer_wrong_number"), "{e:?}");
        assert!(e.message().contains("node3.c.herald"), "{e:?}");

        // Node 2 removed from the cluster: no longer a member.
        let g = PeerGuard::mutual_tls("c", Arc::new(|| vec![1, 3]));
        assert!(g.member(&with_cert).unwrap_err().message().starts_with("peer_not_member"));
    }

    /// Members are the current membership (a node removed from it is no
    /// longer one, even if the XML still lists it); before this node has a
    /// membership, the XML servers.
    #[test]
    fn peer_tls_members_are_the_membership_else_the_xml() {
        assert_eq!(member_numbers(vec![1, 3], &[1, 2, 3]), vec![1, 3]);
        assert_eq!(member_numbers(vec![1, 2, 3, 4], &[1, 2, 3]), vec![1, 2, 3, 4]);
        assert_eq!(member_numbers(vec![], &[1, 2, 3, 4]), vec![1, 2, 3, 4]);
    }

    /// At start the node's own files are checked: a certificate of the CA
    /// for this node loads; one for another node, one from another CA and a
    /// key of another certificate are refused naming the files.
    #[test]
    fn peer_tls_server_config_checks_own_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("c CA");
        let (cert, key) = ca.issue(&[node_name("c", 1)]);
        let cfg = write(dir.path(), &ca, &cert, &key);
        let sc = server_config(&cfg, "c", 1).unwrap();
        assert_eq!(sc.alpn_protocols, vec![b"h2".to_vec()]);
        PeerClientTls::load(&cfg, "c").unwrap();

        let e = server_config(&cfg, "c", 2).unwrap_err();
        assert!(matches!(e, TlsError::NotForNode { .. }), "{e}");
        assert!(e.to_string().contains("node2.c.herald") && e.to_string().contains("node.pem"));

        let other = Ca::new("other CA");
        let (ocert, okey) = other.issue(&[node_name("c", 1)]);
        let cfg = write(dir.path(), &ca, &ocert, &okey);
        let e = server_config(&cfg, "c", 1).unwrap_err();
        assert!(matches!(e, TlsError::NotForNode { .. }), "{e}");
        assert!(e.to_string().contains("ca.pem"), "{e}");

        let (_, key2) = ca.issue(&[node_name("c", 1)]);
        let cfg = write(dir.path(), &ca, &cert, &key2);
        assert!(matches!(server_config(&cfg, "c", 1), Err(TlsError::KeyMismatch { .. })));
    }
}
