//! Certificates for mutual TLS between peers (`<peer-tls>`, issue 14): a
//! cluster CA and one certificate per node, named as the node checks it
//! ([`herald_proto::peer::node_name`]: `node<N>.<cluster>.herald`). Behind
//! `herald cert`, and used by the test and fault harnesses.
//!
//! Files in one directory: `ca.pem` and `ca-key.pem` (the CA; keep the key
//! off the nodes once every node has its files), `node<N>.pem` and
//! `node<N>-key.pem`. Private keys are written with mode 0600 on Unix.
//!
//! rcgen (without its X.509 parser) cannot read a certificate back, so an
//! existing CA is used again by rebuilding its parameters from the cluster
//! name and signing with its key; every certificate issued is then checked
//! against `ca.pem` with rustls, so a CA made for another cluster name is
//! refused instead of yielding certificates no node accepts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use herald_proto::peer::node_name;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};

/// The CA certificate's file name in a certificate directory.
pub const CA_FILE: &str = "ca.pem";
/// The CA key's file name in a certificate directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// A certificate file that could not be made, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cert: {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cert: {}: {message}", path.display())]
    BadFile { path: PathBuf, message: String },
    #[error("cert: cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error(
        "cert: the CA in {} was not made for cluster {cluster:?} (its certificates would not \
         verify: {message}); use another --dir or the cluster name it was made for",
        dir.display()
    )]
    OtherCluster { dir: PathBuf, cluster: String, message: String },
}

/// One node's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFiles {
    pub number: u64,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// False when both files were already there and were kept.
    pub created: bool,
}

/// The file names of node `number`'s certificate and key.
pub fn node_file_names(number: u64) -> (String, String) {
    (format!("node{number}.pem"), format!("node{number}-key.pem"))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io { path: path.to_path_buf(), source }
}

/// Writes `text` to `path`; `secret` files get mode 0600 (on Unix) from
/// the moment they exist.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut f = o.open(path).map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The CA's parameters, rebuilt the same way from the cluster name every
/// time (see the module docs).
fn ca_params(cluster: &str) -> Result<CertificateParams, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name.push(DnType::CommonName, format!("Herald cluster CA {cluster}"));
    p.distinguished_name.push(DnType::OrganizationName, "Herald");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// The CA of `dir`: made (ca.pem, ca-key.pem) when `dir` has none, else
/// read. Returns (issuer certificate, its key, whether it was made now).
fn ca(dir: &Path, cluster: &str) -> Result<(rcgen::Certificate, KeyPair, bool), CertError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let (cert_path, key_path) = (dir.join(CA_FILE), dir.join(CA_KEY_FILE));
    if key_path.exists() {
        let pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let key = KeyPair::from_pem(&pem)
            .map_err(|e| CertError::BadFile { path: key_path.clone(), message: e.to_string() })?;
        if !cert_path.exists() {
            return Err(CertError::BadFile {
                path: cert_path,
                message: "missing (the CA key is there without its certificate)".into(),
            });
        }
        let cert = ca_params(cluster)?.self_signed(&key)?;
        return Ok((cert, key, false));
    }
    let key = KeyPair::generate()?;
    let cert = ca_params(cluster)?.self_signed(&key)?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok((cert, key, true))
}

/// Makes the CA in `dir` unless it has one; true when it was made now.
pub fn ensure_ca(dir: &Path, cluster: &str) -> Result<bool, CertError> {
    ca(dir, cluster).map(|(_, _, made)| made)
}

/// Issues node `number`'s certificate and key in `dir` (making the CA if
/// `dir` has none): valid for `node<number>.<cluster>.herald` and each of
/// `hosts` (an IP address or a DNS name), for both TLS server and client
/// use. Existing files of that node are kept as they are.
pub fn issue_node(
    dir: &Path,
    cluster: &str,
    number: u64,
    hosts: &[String],
) -> Result<NodeFiles, CertError> {
    let (issuer, issuer_key, _) = ca(dir, cluster)?;
    let (c, k) = node_file_names(number);
    let (cert_path, key_path) = (dir.join(c), dir.join(k));
    if cert_path.exists() && key_path.exists() {
        return Ok(NodeFiles { number, cert: cert_path, key: key_path, created: false });
    }
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, node_name(cluster, number));
    p.distinguished_name.push(DnType::OrganizationName, "Herald");
    let mut sans = vec![SanType::DnsName(node_name(cluster, number).try_into()?)];
    for h in hosts {
        let h = h.trim_matches(|c| c == '[' || c == ']');
        sans.push(match h.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(h.to_string().try_into()?),
        });
    }
    p.subject_alt_names = sans;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &issuer, &issuer_key)?;
    verify_against_ca(dir, cluster, cert.der())?;
    write(&key_path, &key.serialize_pem(), true)?;
    write(&cert_path, &cert.pem(), false)?;
    Ok(NodeFiles { number, cert: cert_path, key: key_path, created: true })
}

/// Checks that `cert` chains to `dir`'s ca.pem as a client certificate
/// (what a node checks of its peers).
fn verify_against_ca(
    dir: &Path,
    cluster: &str,
    cert: &CertificateDer<'_>,
) -> Result<(), CertError> {
    let ca_path = dir.join(CA_FILE);
    let pem = std::fs::read(&ca_path).map_err(io(&ca_path))?;
    let bad = |message: String| CertError::BadFile { path: ca_path.clone(), message };
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| bad(e.to_string()))?;
    verifier.verify_client_cert(cert, &[], UnixTime::now()).map(|_| ()).map_err(|e| {
        CertError::OtherCluster {
            dir: dir.to_path_buf(),
            cluster: cluster.to_string(),
            message: e.to_string(),
        }
    })
}

/// The `<peer-tls>` element for node `files`, with paths relative to
/// `xml_dir` when the files are under it (as the node resolves them).
pub fn peer_tls_line(dir: &Path, files: &NodeFiles, xml_dir: &Path) -> String {
    // A bare file name's directory is "": the current directory.
    let xml_dir = if xml_dir.as_os_str().is_empty() { Path::new(".") } else { xml_dir };
    let show = |p: &Path| -> String {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let (p_abs, x_abs) = (abs(p), abs(xml_dir));
        match p_abs.strip_prefix(&x_abs) {
            Ok(rel) => rel.display().to_string(),
            Err(_) => p_abs.display().to_string(),
        }
    };
    format!(
        "<peer-tls ca=\"{}\" cert=\"{}\" key=\"{}\"/>",
        show(&dir.join(CA_FILE)),
        show(&files.cert),
        show(&files.key)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node certificate chains to the CA written beside it and names the
    /// node and its hosts; a second call reuses the CA (the next node's
    /// certificate chains to the same ca.pem) and keeps existing node files;
    /// keys are 0600.
    #[test]
    fn cert_issue_node_chains_to_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure_ca(dir.path(), "c").unwrap());
        assert!(!ensure_ca(dir.path(), "c").unwrap());
        let ca_before = std::fs::read(dir.path().join(CA_FILE)).unwrap();
        let n1 = issue_node(dir.path(), "c", 1, &["127.0.0.1".into(), "h1".into()]).unwrap();
        assert!(n1.created);
        let n2 = issue_node(dir.path(), "c", 2, &[]).unwrap();
        assert_eq!(std::fs::read(dir.path().join(CA_FILE)).unwrap(), ca_before);
        for f in [&n1, &n2] {
            let pem = std::fs::read(&f.cert).unwrap();
            let der = CertificateDer::from_pem_slice(&pem).unwrap();
            verify_against_ca(dir.path(), "c", &der).unwrap();
        }
        let again = issue_node(dir.path(), "c", 1, &[]).unwrap();
        assert!(!again.created);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for k in [&n1.key, &dir.path().join(CA_KEY_FILE)] {
                let mode = std::fs::metadata(k).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", k.display());
            }
        }
    }

    /// A CA made for another cluster name is refused (its certificates
    /// would not verify), naming the directory.
    #[test]
    fn cert_ca_of_another_cluster_refused() {
        let dir = tempfile::tempdir().unwrap();
        ensure_ca(dir.path(), "one").unwrap();
        let e = issue_node(dir.path(), "two", 1, &[]).unwrap_err();
        assert!(matches!(e, CertError::OtherCluster { .. }), "{e}");
        assert!(!dir.path().join("node1.pem").exists());
    }

    /// The printed element uses paths relative to the XML file's directory
    /// when the certificates are under it (also for a bare file name), and
    /// absolute paths otherwise.
    #[test]
    fn cert_peer_tls_line_relative() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let files = issue_node(&certs, "c", 3, &[]).unwrap();
        assert_eq!(
            peer_tls_line(&certs, &files, dir.path()),
            r#"<peer-tls ca="certs/ca.pem" cert="certs/node3.pem" key="certs/node3-key.pem"/>"#
        );
        // A bare XML file name (its directory is ""), certificates under the
        // current directory: relative too.
        let bare = NodeFiles {
            number: 1,
            cert: "certs/node1.pem".into(),
            key: "certs/node1-key.pem".into(),
            created: true,
        };
        assert_eq!(
            peer_tls_line(Path::new("certs"), &bare, Path::new("")),
            r#"<peer-tls ca="certs/ca.pem" cert="certs/node1.pem" key="certs/node1-key.pem"/>"#
        );
        let elsewhere = tempfile::tempdir().unwrap();
        assert!(peer_tls_line(&certs, &files, elsewhere.path()).contains(&format!(
            "ca=\"{}\"",
            std::path::absolute(certs.join("ca.pem")).unwrap().display()
        )));
    }
}
