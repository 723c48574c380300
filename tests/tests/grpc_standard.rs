//! The standard gRPC services on the publish port (issue 18): the
//! `grpc.health.v1` health service that load-balancer probes ask, and
//! server reflection (v1 and v1alpha) that grpcurl and other tools ask,
//! called with their real generated clients against real heraldd
//! processes, without a credential.

use std::time::Duration;

use anyhow::{Context, Result};
use herald_tests::{phase, Cluster, Tuning};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn channel(addr: &str) -> Result<Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

async fn check(addr: &str, service: &str) -> Result<ServingStatus, tonic::Status> {
    let ch = channel(addr).await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let r = HealthClient::new(ch)
        .check(HealthCheckRequest { service: service.into() })
        .await?
        .into_inner();
    Ok(ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown))
}

/// Health: anonymous `Check` answers SERVING for the server ("") and each
/// public service while the node knows a leader, NOT_FOUND for a service
/// it does not serve; `Watch` sends the current status at once. With two
/// of three nodes killed, the survivor has no leader and its health turns
/// NOT_SERVING (as `/healthz` turns 503) — a probe takes it out of a pool
/// — though it still names the old leader (pre-vote keeps it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_follows_the_leader() -> Result<()> {
    let mut c = Cluster::start(3, Tuning::default())?;
    let leader = tokio::task::block_in_place(|| c.wait_leader(Duration::from_secs(30)))?;
    let survivor = (1..=3).find(|&n| n != leader).unwrap();
    let addr = c.addr(survivor);

    phase("SERVING with a leader, for the server and each public service");
    for s in ["", "herald.v1.Presence", "herald.v1.Cluster", "herald.v1.Messages"] {
        let got = eventually_status(&addr, s, ServingStatus::Serving).await?;
        assert_eq!(got, ServingStatus::Serving, "service {s:?}");
    }
    let err = check(&addr, "herald.raft.Raft").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");

    phase("Watch sends the current status first");
    let mut watch = HealthClient::new(channel(&addr).await?)
        .watch(HealthCheckRequest { service: String::new() })
        .await?
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .context("no first watch frame")?
        .context("watch ended")??;
    assert_eq!(first.status, ServingStatus::Serving as i32);

    phase("two of three killed: the survivor reports NOT_SERVING");
    for n in (1..=3).filter(|&n| n != survivor) {
        c.node(n).kill9()?;
    }
    let got = eventually_status(&addr, "", ServingStatus::NotServing).await?;
    assert_eq!(got, ServingStatus::NotServing);
    let a = addr.clone();
    let (st, body) =
        tokio::task::spawn_blocking(move || herald_tests::get_json(&a, "/healthz")).await??;
    assert_eq!(st, 503, "/healthz of a node cut off from its leader: {body}");
    // The open Watch hears the change too.
    let next = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(m) = watch.next().await {
            let m = m?;
            if m.status == ServingStatus::NotServing as i32 {
                return Ok::<_, tonic::Status>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("watch did not report NOT_SERVING")??;
    assert!(next, "watch ended without reporting NOT_SERVING");
    Ok(())
}

/// Polls `Check` until it answers `want` (at most 15 s), returning the
/// last answer.
async fn eventually_status(
    addr: &str,
    service: &str,
    want: ServingStatus,
) -> Result<ServingStatus> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = check(addr, service).await;
        match got {
            Ok(s) if s == want => return Ok(s),
            _ if tokio::time::Instant::now() > deadline => {
                return got.map_err(|e| anyhow::anyhow!("{e:?}"))
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Reflection: anonymous v1 and v1alpha `ListServices` name the public
/// services (and not the sync port's internal Raft, media and gateway
/// services); `FileContainingSymbol` for `herald.v1.Presence` returns the
/// descriptor of `herald/v1/presence.proto`; the internal
/// `herald.raft.Raft` is NOT_FOUND.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_reflection_describes_the_public_api() -> Result<()> {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha as alpha;

    let c = Cluster::start(1, Tuning::default())?;
    tokio::task::block_in_place(|| c.wait_leader(Duration::from_secs(20)))?;
    let addr = c.addr(1);
    let mut client = ServerReflectionClient::new(channel(&addr).await?);
    let reqs = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("herald.v1.Presence".into()),
        MessageRequest::FileContainingSymbol("herald.raft.Raft".into()),
    ];
    let outbound = tokio_stream::iter(
        reqs.into_iter()
            .map(|m| ServerReflectionRequest { host: String::new(), message_request: Some(m) }),
    );
    let mut answers = client.server_reflection_info(outbound).await?.into_inner();
    let mut got = Vec::new();
    let mut ended = None;
    while let Some(a) = answers.next().await {
        match a {
            Ok(a) => got.push(a.message_response.context("empty reflection answer")?),
            Err(e) => {
                ended = Some(e);
                break;
            }
        }
    }
    assert_eq!(got.len(), 2, "{got:?}");

    let MessageResponse::ListServicesResponse(list) = &got[0] else { panic!("{:?}", got[0]) };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in
        ["herald.v1.Presence", "herald.v1.Cluster", "herald.v1.Messages", "herald.v1.Gateway"]
    {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(!names.iter().any(|n| n.starts_with("herald.raft")), "internal services: {names:?}");

    let MessageResponse::FileDescriptorResponse(files) = &got[1] else { panic!("{:?}", got[1]) };
    let named = files.file_descriptor_proto.iter().any(|f| {
        f.windows(b"herald/v1/presence.proto".len()).any(|w| w == b"herald/v1/presence.proto")
    });
    assert!(
        named,
        "no presence.proto descriptor among {} files",
        files.file_descriptor_proto.len()
    );

    // The sync port's services are unknown here: tonic's reflection ends
    // the stream with NOT_FOUND naming the symbol.
    let e = ended.context("the unknown symbol was answered")?;
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("herald.raft.Raft"), "{e:?}");

    // v1alpha (what many grpcurl builds ask) lists the same services.
    let mut old =
        alpha::server_reflection_client::ServerReflectionClient::new(channel(&addr).await?);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = old.server_reflection_info(tokio_stream::iter([req])).await?.into_inner();
    let a = answers.next().await.context("no v1alpha answer")??;
    let Some(alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        a.message_response
    else {
        panic!("v1alpha answered {a:?}")
    };
    assert!(list.service.iter().any(|s| s.name == "herald.v1.Presence"), "{list:?}");
    Ok(())
}
