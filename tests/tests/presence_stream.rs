//! `PushEventsStream` with a real heraldd: a status pool keeps a window of
//! batches in flight on one stream, and they still apply and are answered
//! in the order sent.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_proto::v1 as pb;
use herald_tests::{phase, test_credential, Cluster, Tuning};

/// Batches of one user's logins on one stream, all sent before any answer
/// is read, each setting the user's ext key `seq` to the batch's number.
/// Proves: every batch is answered, in order (revisions never go down);
/// the user ends with the last batch's `seq` (applied in the order sent:
/// any reordering would leave an earlier number); and several batches
/// were in flight at once — consecutive batches share a log entry, which
/// a stream served one batch at a time can never do (each batch waits for
/// its own commit before the next is read).
#[test]
fn push_stream_keeps_a_window_in_flight_and_applies_in_order() -> Result<()> {
    const BATCHES: usize = 200;
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let addr = format!("http://{}", c.nodes[0].publish());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut client = herald_client::HeraldClient::connect(&addr)
            .await?
            .with_credential(test_credential())
            .presence_client();
        phase("send every batch, then read the answers");
        let reqs: Vec<pb::PushEventsRequest> = (0..BATCHES)
            .map(|i| pb::PushEventsRequest {
                events: vec![pb::PresenceEvent {
                    kind: pb::presence_event::Kind::Login as i32,
                    uid: "pool-user".into(),
                    sid: 77,
                    client: "web".into(),
                    accepts_strangers: None,
                    ext: [("seq".to_string(), i.to_string())].into(),
                }],
            })
            .collect();
        let answers = client.push_events_stream(tokio_stream::iter(reqs)).await?.into_inner();
        let revisions: Vec<u64> = tokio_stream::StreamExt::collect::<Vec<_>>(answers)
            .await
            .into_iter()
            .map(|r| r.map(|a| a.revision))
            .collect::<Result<_, _>>()?;
        ensure!(revisions.len() == BATCHES, "{} answers for {BATCHES} batches", revisions.len());
        ensure!(revisions.windows(2).all(|w| w[0] <= w[1]), "out of order: {revisions:?}");
        let shared = revisions.windows(2).filter(|w| w[0] == w[1]).count();
        ensure!(shared > 0, "no two batches shared an entry: one at a time? {revisions:?}");

        phase("the last batch won");
        let q = client
            .query(pb::QueryRequest {
                uids: vec!["pool-user".into()],
                sids: vec![],
                consistency: pb::Consistency::Linearizable as i32,
                ..Default::default()
            })
            .await?
            .into_inner();
        let user = q.users.first().context("pool-user unknown")?;
        ensure!(
            user.ext.get("seq").map(String::as_str) == Some(&*(BATCHES - 1).to_string()),
            "ext {:?}",
            user.ext
        );
        eprintln!("{BATCHES} batches in {} log entries", {
            let mut r = revisions.clone();
            r.dedup();
            r.len()
        });
        Ok(())
    })
}
