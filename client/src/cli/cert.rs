//! `herald cert`: the cluster CA and every node's certificate for mutual
//! TLS between peers (`<peer-tls>`), from the cluster's XML files. Talks to
//! no node; the files are made by [`herald_client::cert`].

use std::path::{Path, PathBuf};

use clap::Args;
use herald_client::cert::{issue_node, peer_tls_line, CA_FILE, CA_KEY_FILE};
use herald_client::ClientError;
use quick_xml::events::Event;
use serde::Serialize;

use super::Ctx;

/// Arguments of `herald cert`.
#[derive(Args, Debug)]
pub struct CertArgs {
    /// The nodes' XML files, one per node (e.g. conf/cluster-3/node*.xml): the cluster name, the node's number and its host are read from each.
    #[arg(required = true, value_name = "XML")]
    pub files: Vec<PathBuf>,
    /// Directory of the certificates (made if missing; an existing CA in it is used again, existing node files are kept). Default: certs/ beside the first XML file.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// What one XML file says about its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeXml {
    pub cluster: String,
    pub number: u64,
    /// The host of its own `<server>` entry, if it has one.
    pub host: Option<String>,
}

/// Reads the cluster name, `<node number>` and that server's host of a
/// Herald XML file (heraldd checks the rest when it starts).
pub fn read_node_xml(text: &str) -> Result<NodeXml, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut cluster, mut number, mut servers) = (None, None, Vec::new());
    loop {
        let e = match reader.read_event().map_err(|e| e.to_string())? {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => e,
            _ => continue,
        };
        let attr = |name: &str| -> Result<Option<String>, String> {
            for a in e.attributes() {
                let a = a.map_err(|e| e.to_string())?;
                if a.key.as_ref() == name.as_bytes() {
                    return Ok(Some(a.unescape_value().map_err(|e| e.to_string())?.into_owned()));
                }
            }
            Ok(None)
        };
        let num = |v: Option<String>, what: &str| -> Result<u64, String> {
            let v = v.ok_or_else(|| format!("<{what}> without number"))?;
            v.parse().map_err(|_| format!("<{what} number={v:?}>: not a number"))
        };
        match e.name().as_ref() {
            b"herald" => cluster = attr("cluster")?,
            b"node" => number = Some(num(attr("number")?, "node")?),
            b"server" => servers.push((num(attr("number")?, "server")?, attr("host")?)),
            _ => {}
        }
    }
    let cluster = cluster.ok_or("no <herald cluster=\"...\">")?;
    let number = number.ok_or("no <node number=\"...\">")?;
    let host = servers.into_iter().find(|(n, _)| *n == number).and_then(|(_, h)| h);
    Ok(NodeXml { cluster, number, host })
}

/// One node's result, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Made {
    file: PathBuf,
    node: u64,
    cert: PathBuf,
    key: PathBuf,
    created: bool,
    /// The element to add to `file`.
    peer_tls: String,
}

fn bad(path: &Path, message: impl std::fmt::Display) -> ClientError {
    ClientError::InvalidArgument(format!("{}: {message}", path.display()))
}

pub fn run(ctx: &Ctx, a: CertArgs) -> Result<(), ClientError> {
    let mut nodes = Vec::new();
    for f in &a.files {
        let text = std::fs::read_to_string(f).map_err(|e| bad(f, e))?;
        nodes.push((f.clone(), read_node_xml(&text).map_err(|e| bad(f, e))?));
    }
    let first = &nodes[0].1.cluster;
    if let Some((f, n)) = nodes.iter().find(|(_, n)| n.cluster != *first) {
        return Err(bad(
            f,
            format!("cluster {:?}, but {} is {first:?}", n.cluster, a.files[0].display()),
        ));
    }
    let parent = |f: &Path| f.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = a.dir.clone().unwrap_or_else(|| parent(&a.files[0]).join("certs"));
    let mut made = Vec::new();
    for (f, n) in &nodes {
        let hosts: Vec<String> = n.host.iter().cloned().collect();
        let files = issue_node(&dir, &n.cluster, n.number, &hosts)
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        made.push(Made {
            file: f.clone(),
            node: n.number,
            peer_tls: peer_tls_line(&dir, &files, &parent(f)),
            cert: files.cert,
            key: files.key,
            created: files.created,
        });
    }
    ctx.out.print(&made, |made| human(&dir, made))
}

fn human(dir: &Path, made: &[Made]) -> String {
    let mut s = format!(
        "CA: {} (its key {} signs new nodes: keep it off the nodes)\n",
        dir.join(CA_FILE).display(),
        dir.join(CA_KEY_FILE).display()
    );
    for m in made {
        let what = if m.created { "made" } else { "kept (already there)" };
        s.push_str(&format!(
            "node {}: {} and {} {what}\n  add to {}:\n  {}\n",
            m.node,
            m.cert.display(),
            m.key.display(),
            m.file.display(),
            m.peer_tls
        ));
    }
    s.push_str("Then restart each node; /v1/cluster and `herald status` show peer_tls.");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    /// The shipped cluster-3 file of node 2 reads as cluster herald-local,
    /// node 2 on 127.0.0.1 (commented-out elements are ignored).
    #[test]
    fn cli_cert_reads_node_xml() {
        let text = include_str!("../../../conf/cluster-3/node2.xml");
        assert_eq!(
            read_node_xml(text).unwrap(),
            NodeXml { cluster: "herald-local".into(), number: 2, host: Some("127.0.0.1".into()) }
        );
        let e = read_node_xml("<herald cluster=\"c\"><!-- <node number=\"1\"/> --></herald>");
        assert!(e.unwrap_err().contains("no <node"));
    }

    /// `herald cert` needs at least one XML file; --dir is optional.
    #[test]
    fn cli_parse_cert() {
        assert!(Cli::try_parse_from(["herald", "cert"]).is_err());
        assert!(Cli::try_parse_from(["herald", "cert", "a.xml", "b.xml", "--dir", "d"]).is_ok());
    }

    /// End to end on a copy of conf/cluster-3: every node gets its files
    /// under certs/ beside the XML, and the line to add names them
    /// relative to the XML file.
    #[test]
    fn cli_cert_makes_files_for_every_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for (i, t) in [
            include_str!("../../../conf/cluster-3/node1.xml"),
            include_str!("../../../conf/cluster-3/node2.xml"),
            include_str!("../../../conf/cluster-3/node3.xml"),
        ]
        .iter()
        .enumerate()
        {
            let p = dir.path().join(format!("node{}.xml", i + 1));
            std::fs::write(&p, t).unwrap();
            files.push(p);
        }
        let ctx = Ctx {
            node: String::new(),
            opts: Default::default(),
            credential: Default::default(),
            out: super::super::output::Output { json: true },
        };
        run(&ctx, CertArgs { files, dir: None }).unwrap();
        for n in 1..=3 {
            assert!(dir.path().join(format!("certs/node{n}.pem")).exists());
            assert!(dir.path().join(format!("certs/node{n}-key.pem")).exists());
        }
        assert!(dir.path().join("certs/ca.pem").exists());
    }
}
