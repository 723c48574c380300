//! TLS on the publish port with a real heraldd (MISSION M9): the XML
//! `<tls cert key/>` element switches the publish port to https, which only
//! the gRPC client with the cluster's CA can use.
//!
//! The harness's HTTP helpers speak plaintext, so everything here goes
//! through `herald_client` over gRPC.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use herald_client::messages::{Outgoing, Recipients};
use herald_client::session::{Session, SessionConfig, SessionEvent};
use herald_client::{ConnectOptions, Consistency, Ext, HeraldClient};
use herald_tests::{generate_tls, phase, test_credential, Cluster, Tuning};

/// Proves that a node started from XML with `<tls>` serves its publish
/// port over TLS only: `connect_with("https://127.0.0.1:PORT")` trusting
/// the cluster certificate elects, pushes a login and reads it back
/// linearizably; a plaintext client on the same port gets no answer; an
/// https client without the CA, or trusting another certificate, cannot
/// connect; a client session over TLS receives a message.
#[test]
fn tls_single_node_serves_grpc_over_https_only() -> Result<()> {
    let certs = tempfile::tempdir()?;
    let files = generate_tls(certs.path())?;
    let c = Cluster::start(1, Tuning { tls: Some(files.clone()), ..Tuning::default() })?;
    let port = c.nodes[0].ports.publish;
    let https = format!("https://127.0.0.1:{port}");
    let opts = files.connect_options();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        phase("leader over https");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            match HeraldClient::connect_with(&https, &opts).await {
                Ok(cl) => match cl.with_credential(test_credential()).status().await {
                    Ok(s) if s.leader == Some(1) => {
                        break HeraldClient::connect_with(&https, &opts)
                            .await?
                            .with_credential(test_credential())
                    }
                    _ => {}
                },
                Err(e) if Instant::now() > deadline => {
                    bail!("no leader over https: {e}\n{}", c.logs_tail())
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!("no leader over https within 20 s\n{}", c.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        phase("push and query over https");
        let rev = client.login("tls-user", 4242, "mobile", Some(true), Ext::new()).await?;
        let q = client.query(&["tls-user".to_string()], &[], Consistency::Linearizable).await?;
        assert!(q.revision >= rev, "{q:?}");
        assert!(q.users.iter().any(|u| u.uid == "tls-user" && u.online && u.sid == 4242), "{q:?}");

        phase("plaintext and untrusted clients are refused");
        let plain = match HeraldClient::connect(&format!("127.0.0.1:{port}")).await {
            Ok(cl) => cl.status().await.map(|_| ()),
            Err(e) => Err(e),
        };
        assert!(plain.is_err(), "a plaintext client got an answer from a TLS port");
        let e = HeraldClient::connect_with(&https, &ConnectOptions::default()).await.unwrap_err();
        assert_eq!(e.code(), "invalid_argument", "{e}");
        let other = tempfile::tempdir()?;
        let wrong = generate_tls(other.path())?.connect_options();
        let e = HeraldClient::connect_with(&https, &wrong).await.unwrap_err();
        assert_eq!(e.code(), "connect_failed", "{e}");

        phase("a session and a message over TLS");
        let mut cfg =
            SessionConfig::new(vec![https.clone()], "tls-s", herald_tests::token("tls-s"));
        cfg.tls = opts.clone();
        let mut s = Session::connect(cfg).await?;
        let sent = client
            .send(Outgoing {
                idempotency_key: "tls-1".into(),
                from: "app".into(),
                to: Recipients::To(vec!["tls-s".into()]),
                ttl_s: 0,
                content_type: "text/plain".into(),
                body: b"secret".to_vec(),
            })
            .await?;
        let got = loop {
            match tokio::time::timeout(Duration::from_secs(10), s.recv()).await? {
                Some(SessionEvent::Message(m)) => break m,
                Some(_) => continue,
                None => bail!("session ended"),
            }
        };
        assert_eq!((got.id, got.body.as_slice()), (sent.message_id, &b"secret"[..]));
        Ok(())
    })
}
