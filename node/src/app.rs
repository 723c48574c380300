//! The node as a whole: binds the sync and publish ports, starts Raft, serves
//! until the shutdown future resolves, then stops in order.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use herald_proto::raft::gateway_peers_server::GatewayPeersServer;
use herald_proto::raft::media_blobs_server::MediaBlobsServer;
use herald_proto::raft::raft_internal_server::RaftInternalServer;
use herald_proto::v1::cluster_server::ClusterServer;
use herald_proto::v1::gateway_server::GatewayServer;
use herald_proto::v1::messages_server::MessagesServer;
use herald_proto::v1::presence_server::PresenceServer;

use crate::api::messages::MessagesGrpc;
use crate::gateway::session::GatewayGrpc;

use crate::api::grpc::{ClusterService, PresenceGrpc, PresenceService};
use crate::api::query_route::{self, QueryRoute};
use crate::api::{http, Api};
use crate::clock::ClusterClock;
use crate::config::Config;
use crate::gateway::peer::GatewayPeerService;
use crate::listener::LimitedListener;
use crate::media::peer::BlobService;
use crate::metrics::Metrics;
use crate::peer_tls::PeerGuard;
use crate::raft::network::MAX_RAFT_MESSAGE_BYTES;
use crate::raft::service::RaftService;
use crate::raft::RaftNode;
use crate::serve::Timeouts;
use crate::tls::TlsListener;

/// Connections the sync port accepts at once: peers open a few each.
const MAX_SYNC_CONNECTIONS: usize = 256;
/// Connections the sync port accepts at once from one IP address. A peer
/// keeps a few channels to each node (Raft, media blobs, gateway peers);
/// several nodes on one host (tests, the embedded cluster) share an
/// address, so this leaves room for a dozen of them, and still leaves
/// three quarters of [`MAX_SYNC_CONNECTIONS`] to other addresses when one
/// floods the port.
const MAX_SYNC_CONNECTIONS_PER_IP: usize = 64;

/// Shared handles of a running node.
pub struct App {
    pub config: Config,
    pub node: Arc<RaftNode>,
    pub api: Arc<Api>,
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let me = config.this_server().clone();
    // Development keys are allowed in development mode only (production
    // refused them when the configuration was read), and said out loud.
    for d in config.development_keys() {
        tracing::warn!(
            "DEVELOPMENT KEY IN USE: {d}. Anyone who has read the Herald sources holds it: \
             generate your own (herald key new, a new <auth> key) before real use; \
             <security mode=\"production\"> refuses it"
        );
    }
    // TLS files first: a bad certificate or key stops startup, naming the file.
    let pub_tls = config.tls.as_ref().map(crate::tls::server_config).transpose()?;
    let peer_tls = config.tls.as_ref().map(crate::tls::client_tls).transpose()?;
    if !crate::tls::set_peer_tls(peer_tls) {
        tracing::warn!(
            "node-to-node TLS was already set in this process; keeping the first setting"
        );
    }
    // The sync port's mutual TLS (<peer-tls>): files checked, production
    // refuses plaintext peers, development warns.
    let sync_tls = crate::peer_tls::startup(&config)?;
    // Bind first: a port in use is reported before anything starts.
    let sync_l = crate::listener::bind(&me.sync_addr())
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind sync-port {}: {e}", me.sync_addr()))?;
    let pub_l = crate::listener::bind(&me.publish_addr())
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind publish-port {}: {e}", me.publish_addr()))?;

    let time_l = tokio::net::UdpSocket::bind(me.time_addr())
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind time-port {} (udp): {e}", me.time_addr()))?;

    let clock = Arc::new(ClusterClock::new());
    let node = RaftNode::start(&config, clock.clone()).await?;
    let time = crate::time::TimeService::new(
        config.node,
        clock,
        config.time.clone(),
        config.servers.clone(),
    );
    let (n1, n2) = (node.clone(), node.clone());
    tokio::spawn(time.clone().serve(time_l, move || n1.leader_id()));
    tokio::spawn(time.clone().sync_loop(move || (n2.leader_id(), n2.lowest_voter())));
    let metrics = Arc::new(Metrics::new().with_read_index_rpcs(node.read_rounds.rpcs.clone()));
    let gateway = crate::gateway::Gateway::new(
        node.clone(),
        config.gateway.clone(),
        config.messages.clone(),
        crate::gateway::auth::Authenticator::new(&config.auth),
        me.publish_addr(),
    );
    gateway.start();
    let media = crate::media::Media::open(
        config.media.clone(),
        &config.data_dir,
        node.clone(),
        config.tls.is_some(),
    )
    .map_err(|e| {
        anyhow::anyhow!("cannot open the media directory under {}: {e}", config.data_dir.display())
    })?;
    let api = Arc::new(Api {
        cluster: config.cluster.clone(),
        servers: config.servers.clone(),
        node: node.clone(),
        limits: config.limits.clone(),
        metrics,
        time,
        gateway: gateway.clone(),
        media: media.clone(),
        access: crate::api::access::Access::new(&config.access),
        profile: Arc::new(config.profile_sync.clone()),
    });
    let app = App { config, node, api };
    tracing::info!(
        cluster = %app.config.cluster,
        node = app.config.node,
        sync = %me.sync_addr(),
        publish = %me.publish_addr(),
        tls = pub_tls.is_some(),
        peer_tls = app.node.peer_tls(),
        data_dir = %app.config.data_dir.display(),
        "heraldd serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(media.clone().run_repair(stop_rx.clone()));
    // The outbox dispatcher (issue 17): delivers on the leader only.
    let dispatcher = crate::profile::dispatch::Dispatcher::new(
        app.node.clone(),
        app.api.profile.clone(),
        app.api.metrics.clone(),
    );
    tokio::spawn(dispatcher.run(stop_rx.clone()));
    let stop_for_sync = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    // The sync port: three services side by side, each beside the code it
    // serves (Raft transport, media blobs, gateway peers). One message-size
    // bound for all: the largest is an AppendEntries batch.
    // With <peer-tls> every handler asks the guard who called: members only,
    // and who they claim to be (see peer_tls).
    let peers = match sync_tls {
        None => PeerGuard::plaintext(),
        Some(_) => {
            let xml: Vec<u64> = app.config.servers.iter().map(|s| s.number).collect();
            let node = app.node.clone();
            let members = move || {
                let current = node.members().into_iter().map(|(n, _)| n).collect();
                crate::peer_tls::member_numbers(current, &xml)
            };
            PeerGuard::mutual_tls(&app.config.cluster, Arc::new(members))
        }
    };
    let raft_svc = RaftInternalServer::new(RaftService {
        node: app.node.clone(),
        peers: peers.clone(),
        stopping: stop_for_sync,
    })
    .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let blob_svc = MediaBlobsServer::new(BlobService { media, peers: peers.clone() })
        .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let gateway_svc =
        GatewayPeersServer::new(GatewayPeerService { gateway: gateway.clone(), peers })
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    let timeouts = Timeouts::from_limits(&app.config.limits);
    let sync_incoming = LimitedListener::new(sync_l, MAX_SYNC_CONNECTIONS)
        .per_ip(MAX_SYNC_CONNECTIONS_PER_IP)
        .first_bytes_within(timeouts.header);
    let sync_router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(timeouts.idle))
        .http2_keepalive_timeout(Some(crate::serve::KEEPALIVE_TIMEOUT))
        .add_service(raft_svc)
        .add_service(blob_svc)
        .add_service(gateway_svc);
    // With <peer-tls> handshakes run off the accept path (TlsListener); a
    // client without a certificate of the cluster CA fails its handshake and
    // never reaches a handler.
    let sync_task = match sync_tls {
        Some(tls) => tokio::spawn(sync_router.serve_with_incoming_shutdown(
            TlsListener::new(sync_incoming, tls)?.into_stream(),
            stopped(),
        )),
        None => tokio::spawn(
            sync_router.serve_with_incoming_shutdown(sync_incoming.into_stream(), stopped()),
        ),
    };

    let router = publish_router(&app.api);
    let pub_incoming = LimitedListener::new(pub_l, app.config.limits.max_connections)
        .per_ip(app.config.limits.max_connections_per_ip)
        .first_bytes_within(timeouts.header);
    let pub_task = match pub_tls {
        Some(tls) => {
            let l = TlsListener::new(pub_incoming, tls)?;
            tokio::spawn(crate::serve::serve(l, router, timeouts, stopped()))
        }
        None => tokio::spawn(crate::serve::serve(pub_incoming, router, timeouts, stopped())),
    };

    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // In-flight requests get a bounded time to finish.
    let grace = std::time::Duration::from_secs(5);
    let t0 = std::time::Instant::now();
    let closed = tokio::time::timeout(grace, pub_task).await.is_ok();
    tracing::info!(closed, took_ms = t0.elapsed().as_millis() as u64, "publish port stopped");
    let t0 = std::time::Instant::now();
    let closed = tokio::time::timeout(grace, sync_task).await.is_ok();
    tracing::info!(closed, took_ms = t0.elapsed().as_millis() as u64, "sync port stopped");
    app.node.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// HTTP routes plus the two public gRPC services, on one port.
pub fn publish_router(api: &Arc<Api>) -> Router {
    let limit = api.limits.max_request_bytes;
    let presence_svc = Arc::new(PresenceService { api: api.clone() });
    let presence = PresenceServer::new(PresenceGrpc(presence_svc.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(api.limits.max_response_bytes);
    let cluster = ClusterServer::new(ClusterService { api: api.clone() });
    let messages = MessagesServer::new(MessagesGrpc { api: api.clone() })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Session frames carry at most one message body each.
    let frame_limit = api.gateway.msgs.max_body_bytes + 64 * 1024;
    let gateway = GatewayServer::new(GatewayGrpc { gw: api.gateway.clone() })
        .max_decoding_message_size(frame_limit)
        .max_encoding_message_size(frame_limit);
    let (health, health_svc) = tonic_health::server::health_reporter();
    tokio::spawn(report_health(api.clone(), health));
    // Reflection describes the public API only (herald.v1); both protocol
    // versions, since grpcurl and other tools still ask v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(herald_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the public descriptors decode");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the public descriptors decode");
    let grpc = tonic::service::Routes::new(presence)
        .add_service(cluster)
        .add_service(messages)
        .add_service(gateway)
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    // The guard wraps everything (HTTP, gRPC, the fallback): no request
    // reaches a handler without passing its rule in api::routes::ROUTES.
    http::router(api.clone())
        // Matched before the wildcard: the two query methods send answers
        // encoded from the state (api::query_route).
        .route_service(
            "/herald.v1.Presence/Query",
            QueryRoute::new(presence_svc.clone(), query_route::Method::Query),
        )
        .route_service(
            "/herald.v1.Presence/QueryStream",
            QueryRoute::new(presence_svc, query_route::Method::QueryStream),
        )
        .route_service("/herald.v1.Presence/{*method}", grpc.clone())
        .route_service("/herald.v1.Cluster/{*method}", grpc.clone())
        .route_service("/herald.v1.Messages/{*method}", grpc.clone())
        // Matched before the wildcard below: the session stream with its own
        // small codec buffers (gateway::session_route); Pick goes on to the
        // generated GatewayServer.
        .route_service(
            "/herald.v1.Gateway/Session",
            crate::gateway::session_route::SessionRoute::new(api.gateway.clone(), frame_limit),
        )
        .route_service("/herald.v1.Gateway/{*method}", grpc.clone())
        .route_service("/grpc.health.v1.Health/{*method}", grpc.clone())
        .route_service("/grpc.reflection.v1.ServerReflection/{*method}", grpc.clone())
        .route_service("/grpc.reflection.v1alpha.ServerReflection/{*method}", grpc)
        .layer(axum::middleware::from_fn_with_state(api.clone(), crate::api::access::guard))
}

/// How often the gRPC health service re-reads whether this node knows a
/// leader: a load balancer's probe sees a lost leader within this.
const HEALTH_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// Keeps `grpc.health.v1` true to `/healthz`: the whole server ("") and
/// each public service are SERVING while this node is in touch with a live
/// leader (it can take writes and linearizable reads), NOT_SERVING
/// otherwise. Runs for
/// the life of the process (the publish router is built once).
async fn report_health(api: Arc<Api>, health: tonic_health::server::HealthReporter) {
    use tonic_health::ServingStatus;
    const SERVICES: [&str; 5] =
        ["", "herald.v1.Presence", "herald.v1.Cluster", "herald.v1.Messages", "herald.v1.Gateway"];
    let mut last = None;
    let mut tick = tokio::time::interval(HEALTH_REFRESH);
    loop {
        tick.tick().await;
        let ok = api.node.leader_is_live();
        if last != Some(ok) {
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            for s in SERVICES {
                health.set_service_status(s, status).await;
            }
            last = Some(ok);
        }
    }
}
