//! `PushEventsStream` with a real heraldd: a status pool keeps a window of
//! batches in flight on one stream, and they still apply and are answered
//! in the order sent. `Query` and `QueryStream` answer as HTTP does.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use herald_proto::v1 as pb;
use herald_tests::{phase, test_credential, Cluster, Tuning};

/// The Presence gRPC client of the node at `addr`, with the test key.
async fn presence_client(
    addr: &str,
) -> Result<pb::presence_client::PresenceClient<herald_client::credential::AuthChannel>> {
    Ok(herald_client::HeraldClient::connect(addr)
        .await?
        .with_credential(test_credential())
        .presence_client())
}

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
        let mut client = presence_client(&addr).await?;
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

/// `Query` and `QueryStream` (served from bytes encoded in place, issue 13)
/// answer what HTTP answers for the same users: every field of each user
/// (uid, sid, online, sorted clients, strangers, a three-entry ext, time
/// and revision), unknown uids and sids in request order, a user named
/// twice (by uid and by sid) once; the stream gives the unary answer for
/// the same request and answers each of its requests in order.
#[test]
fn query_and_query_stream_answer_like_http() -> Result<()> {
    let c = Cluster::start(1, Tuning::default())?;
    c.wait_leader(Duration::from_secs(20))?;
    let publish = c.nodes[0].publish();
    let addr = format!("http://{publish}");
    let ext = |i: u64| {
        [("a", format!("x{i}")), ("b", "é\"\n".to_string()), ("c", String::new())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let login = |uid: &str, sid: u64, client: &str| pb::PresenceEvent {
        kind: pb::presence_event::Kind::Login as i32,
        uid: uid.into(),
        sid,
        client: client.into(),
        accepts_strangers: Some(sid.is_multiple_of(2)),
        ext: ext(sid),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        let mut client = presence_client(&addr).await?;
        phase("three users, one on two client types");
        let events = vec![
            login("q1", 11, "web"),
            login("q1", 11, "mobile"),
            login("q2", 12, "web"),
            login("q3", 13, "desk"),
        ];
        client.push_events(pb::PushEventsRequest { events }).await?;
        let uids: Vec<String> =
            ["q1", "nobody", "q3", "q2"].iter().map(|s| s.to_string()).collect();
        let sids = vec![12, 999, 13];
        let req = |uids: &[String], sids: &[u64]| pb::QueryRequest {
            uids: uids.to_vec(),
            sids: sids.to_vec(),
            consistency: pb::Consistency::Linearizable as i32,
            ..Default::default()
        };

        phase("unary Query against HTTP");
        let q = client.query(req(&uids, &sids)).await?.into_inner();
        let body = serde_json::json!({ "uids": uids, "sids": sids });
        let (st, http) = herald_tests::post_json(&publish, "/v1/presence/query", &body)?;
        ensure!(st == 200, "{http}");
        let http: herald_proto::wire::presence::QueryAnswer = serde_json::from_value(http)?;
        ensure!(q.unknown == ["nobody"] && q.unknown_sids == [999], "{q:?}");
        ensure!(
            (q.unknown.clone(), q.unknown_sids.clone())
                == (http.unknown.clone(), http.unknown_sids.clone())
        );
        ensure!(q.staleness_ms == Some(0) && http.staleness_ms == Some(0), "{q:?}");
        let users: Vec<herald_proto::wire::presence::UserPresence> =
            q.users.iter().cloned().map(Into::into).collect();
        ensure!(users == http.users, "gRPC {users:?}\nHTTP {:?}", http.users);
        let names: Vec<&str> = users.iter().map(|u| u.uid.as_str()).collect();
        ensure!(names == ["q1", "q3", "q2"], "{names:?}");
        let q1 = &q.users[0];
        ensure!(q1.online && q1.clients == ["mobile", "web"] && q1.sid == 11, "{q1:?}");
        ensure!(
            !q1.accepts_strangers && q1.ext == ext(11) && q1.revision > 0 && q1.changed_at_ms > 0,
            "{q1:?}"
        );

        phase("QueryStream: the same answer, then each request in order");
        let many: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
        let reqs = vec![req(&uids, &sids), req(&uids[..1], &[]), req(&many, &[]), req(&[], &[13])];
        let answers = client.query_stream(tokio_stream::iter(reqs)).await?.into_inner();
        let answers: Vec<_> = tokio_stream::StreamExt::collect::<Vec<_>>(answers).await;
        ensure!(answers.len() == 4, "{} answers", answers.len());
        let a: Vec<pb::QueryResponse> = answers.into_iter().collect::<Result<_, _>>()?;
        ensure!(
            a[0].users == q.users
                && a[0].unknown == q.unknown
                && a[0].unknown_sids == q.unknown_sids,
            "{:?}",
            a[0]
        );
        ensure!(a[1].users.len() == 1 && a[1].users[0].uid == "q1", "{:?}", a[1]);
        ensure!(a[2].users.is_empty() && a[2].unknown == many, "{:?}", a[2]);
        ensure!(a[3].users.len() == 1 && a[3].users[0].uid == "q3", "{:?}", a[3]);
        anyhow::Ok(())
    })
    .context("query and query stream")?;
    Ok(())
}
