//! TLS on the publish port end to end, in process: two real nodes
//! (`app::run`) with `Config::tls` set directly (independent of the XML
//! `<tls>` element), reached with the herald client over `https://`.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use herald_client::{ConnectOptions, Consistency, Credential, Ext, HeraldClient};
use herald_node::config::{self, TlsConfig};

/// The API key of the test nodes (`<access>`: every scope), which a
/// follower forwards to the leader with the membership call.
const KEY: &str = "hk_tls-cluster-test-key-00000000000000000000";

fn api_key() -> Credential {
    Credential::api_key(KEY).unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The config of node `number`; `ports` are (sync, time, publish) of nodes
/// 1, 2, ...
fn node_config(
    dir: &Path,
    number: u64,
    ports: &[(u16, u16, u16)],
    tls: &TlsConfig,
) -> config::Config {
    let servers: String = ports
        .iter()
        .enumerate()
        .map(|(i, (s, t, p))| {
            format!("<server number=\"{}\" host=\"127.0.0.1\" sync-port=\"{s}\" time-port=\"{t}\" publish-port=\"{p}\"/>\n", i + 1)
        })
        .collect();
    let xml = format!(
        "<herald cluster=\"tls\">\n<node number=\"{number}\" data-dir=\"{}\"/>\n<servers>\n{servers}</servers>\n\
         <raft heartbeat-ms=\"50\" election-min-ms=\"300\" election-max-ms=\"600\"/>\n\
         <access><api-key name=\"t\" hash=\"{}\" scopes=\"presence:write presence:read cluster:read admin\"/></access>\n</herald>\n",
        dir.join(format!("node{number}")).display(),
        herald_proto::apikey::hash(KEY)
    );
    let mut cfg = config::parse(&xml, "tls-test.xml").expect("config");
    cfg.tls = Some(tls.clone());
    cfg
}

/// Proves the whole TLS path of a node: `app::run` serves the publish port
/// over TLS when `Config::tls` is set; the client reaches it at `https://`
/// trusting the cluster certificate (Cluster and Presence services, i.e.
/// gRPC over h2 negotiated by ALPN); a plaintext client and a client
/// without the right CA are refused; and a follower forwards a membership
/// call to the leader's publish port over TLS (node-to-node
/// `publish_endpoint`, with the caller's API key): the leader's own
/// `unknown_node` answer comes back, not `unavailable` or `missing_credential`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_publish_port_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let tls = TlsConfig { cert, key, ca: None };

    let ports: Vec<(u16, u16, u16)> =
        (0..2).map(|_| (free_port(), free_port(), free_port())).collect();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut nodes = Vec::new();
    for n in 1..=2 {
        let cfg = node_config(dir.path(), n, &ports, &tls);
        let mut rx = stop_rx.clone();
        nodes.push(tokio::spawn(herald_node::app::run(cfg, async move {
            let _ = rx.wait_for(|s| *s).await;
        })));
    }
    let addr = |n: usize| format!("https://127.0.0.1:{}", ports[n - 1].2);
    let opts = ConnectOptions { ca_pem: Some(ck.cert.pem().into_bytes()), domain: None };

    // Both nodes agree on a leader.
    let deadline = Instant::now() + Duration::from_secs(20);
    let leader = loop {
        let mut seen = Vec::new();
        for n in 1..=2 {
            let l = match HeraldClient::connect_with(&addr(n), &opts).await {
                Ok(c) => c.with_credential(api_key()).status().await.ok().and_then(|s| s.leader),
                Err(_) => None,
            };
            seen.push(l);
        }
        if let [Some(a), Some(b)] = seen[..] {
            if a == b {
                break a as usize;
            }
        }
        assert!(Instant::now() < deadline, "no leader over TLS: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let follower = 3 - leader;

    // Presence over TLS.
    let c =
        HeraldClient::connect_with(&addr(leader), &opts).await.unwrap().with_credential(api_key());
    assert!(c.addr().starts_with("https://"));
    let rev = c.login("u1", 1001, "mobile", None, Ext::new()).await.unwrap();
    let q = c.query(&["u1".to_string()], &[], Consistency::Linearizable).await.unwrap();
    assert!(q.revision >= rev);
    assert!(q.users.iter().any(|u| u.uid == "u1" && u.online), "{q:?}");

    // Node-to-node over TLS: the follower forwards to the leader.
    let f = HeraldClient::connect_with(&addr(follower), &opts)
        .await
        .unwrap()
        .with_credential(api_key());
    let e = f.promote(99).await.unwrap_err();
    assert_eq!(e.code(), "unknown_node", "{e}");

    // Plaintext and untrusted clients are refused.
    let plain = format!("127.0.0.1:{}", ports[leader - 1].2);
    let plain_result = match HeraldClient::connect(&plain).await {
        Ok(c) => c.status().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(plain_result.is_err(), "plaintext client got an answer");
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let wrong = ConnectOptions { ca_pem: Some(other.cert.pem().into_bytes()), domain: None };
    let e = HeraldClient::connect_with(&addr(leader), &wrong).await.unwrap_err();
    assert_eq!(e.code(), "connect_failed", "{e}");

    let _ = stop_tx.send(true);
    for n in nodes {
        let r = tokio::time::timeout(Duration::from_secs(20), n)
            .await
            .expect("node stops")
            .expect("no panic");
        r.expect("node ran cleanly");
    }
}
