//! gRPC services of package `herald.v1`: `Presence` and `Cluster`.

use herald_proto::codes;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use herald_proto::v1 as pb;
use herald_proto::v1::cluster_client::ClusterClient;
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::access::Principal;
use super::messages::grpc::principal;
use super::watch::{Control, Frame, WatchRequest};
use super::{Api, ApiError, Consistency, MembershipOp, MembershipResult};
use crate::raft::Turn;
use herald_domain::presence::Event;

/// Requests of one stream being worked on at once: responses keep request
/// order, so more would only buffer.
const STREAM_RESPONSE_BUFFER: usize = 16;

/// Batches of one `PushEventsStream` in flight at once (queued on the
/// leader, answered in order). A status pool is one or a few heavy
/// producers: one batch at a time would leave it waiting a whole commit
/// round (an fsync on a majority) per batch, while a window lets the next
/// batches join the same log entry. Bounded memory: at most this many
/// decoded requests per stream, each at most `<limits max-request-bytes>`
/// (4 MiB by default, so 32 MiB per stream at worst; a typical batch is
/// tens of KB).
pub const PUSH_STREAM_WINDOW: usize = 8;

pub struct PresenceService {
    pub api: Arc<Api>,
}

pub struct ClusterService {
    pub api: Arc<Api>,
}

fn event_from_pb(i: usize, e: pb::PresenceEvent) -> Result<Event, ApiError> {
    use pb::presence_event::Kind;
    let kind = Kind::try_from(e.kind).unwrap_or(Kind::Unspecified);
    let ext = e.ext.into_iter().collect();
    Ok(match kind {
        Kind::Login => Event::Login {
            uid: e.uid,
            sid: e.sid,
            client: e.client,
            accepts_strangers: e.accepts_strangers,
            ext,
        },
        Kind::Logout => Event::Logout { uid: e.uid, sid: e.sid, client: e.client, ext },
        Kind::Permission => Event::Permission {
            uid: e.uid,
            sid: e.sid,
            accepts_strangers: e.accepts_strangers.ok_or_else(|| {
                ApiError::new(
                    codes::INVALID_EVENT,
                    format!("event {i}: permission needs accepts_strangers"),
                )
            })?,
            ext,
        },
        Kind::Unspecified => {
            return Err(ApiError::new(codes::INVALID_EVENT, format!("event {i}: kind is required")))
        }
    })
}

fn consistency_from_pb(c: i32) -> Consistency {
    match pb::Consistency::try_from(c) {
        Ok(pb::Consistency::Local) => Consistency::Local,
        Ok(pb::Consistency::Bounded) => Consistency::Bounded,
        _ => Consistency::Linearizable,
    }
}

#[cfg(test)]
pub(crate) fn query_to_pb(
    q: herald_domain::presence::QueryResult,
    info: Option<super::ReadInfo>,
) -> pb::QueryResponse {
    pb::QueryResponse {
        staleness_ms: info.and_then(|i| i.staleness_ms),
        revision: q.revision,
        users: q.users.into_iter().map(user_to_pb).collect(),
        unknown: q.unknown,
        unknown_sids: q.unknown_sids,
    }
}

impl PresenceService {
    async fn push(&self, req: pb::PushEventsRequest) -> Result<pb::PushEventsResponse, ApiError> {
        self.push_in_turn(req, Turn::free()).await
    }

    async fn push_in_turn(
        &self,
        req: pb::PushEventsRequest,
        turn: Turn,
    ) -> Result<pb::PushEventsResponse, ApiError> {
        let events = req
            .events
            .into_iter()
            .enumerate()
            .map(|(i, e)| event_from_pb(i, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(pb::PushEventsResponse { revision: self.api.push_events_in_turn(events, turn).await? })
    }

    /// The encoded `QueryResponse` of a query, written from the state
    /// under its lock ([`super::answer::query_pb`]); the publish router
    /// sends these bytes as they are ([`super::query_route`]).
    pub(crate) async fn query_encoded(&self, req: pb::QueryRequest) -> Result<Bytes, ApiError> {
        let spec = super::ReadSpec {
            consistency: consistency_from_pb(req.consistency),
            max_staleness_ms: req.max_staleness_ms,
            min_revision: req.min_revision,
        };
        self.api
            .query(&req.uids, &req.sids, spec, |q, info, max| {
                super::answer::query_pb(q, info.staleness_ms, max)
            })
            .await
    }

    /// The same answer decoded, for the generated `PresenceServer`'s
    /// `Query` and `QueryStream`: the publish router serves both methods
    /// through [`super::query_route`] instead, so these run only where the
    /// generated server is used on its own.
    async fn query(&self, req: pb::QueryRequest) -> Result<pb::QueryResponse, ApiError> {
        let bytes = self.query_encoded(req).await?;
        prost::Message::decode(bytes)
            .map_err(|e| ApiError::new(codes::INTERNAL, format!("query answer: {e}")))
    }
}

pub(crate) type RespStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Runs `f` on each request of a stream, in order, answering each.
pub(crate) fn map_stream<Req, Resp, F, Fut>(
    svc: Arc<PresenceService>,
    input: Streaming<Req>,
    f: F,
) -> RespStream<Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(Arc<PresenceService>, Req) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Resp, ApiError>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(STREAM_RESPONSE_BUFFER);
    tokio::spawn(async move {
        let mut input = input;
        while let Some(item) = input.next().await {
            let out = match item {
                Ok(req) => f(svc.clone(), req).await.map_err(|e| e.to_grpc()),
                Err(s) => Err(s),
            };
            if tx.send(out).await.is_err() {
                break;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Answers a stream of pushes with up to [`PUSH_STREAM_WINDOW`] in flight,
/// applied and answered in the order sent (each takes its [`Turn`]).
fn push_window(
    svc: Arc<PresenceService>,
    input: Streaming<pb::PushEventsRequest>,
) -> RespStream<pb::PushEventsResponse> {
    let mut next_turn = Turn::sequence();
    let answers = futures::StreamExt::map(input, move |item| {
        let svc = svc.clone();
        let turn = next_turn();
        async move {
            match item {
                Ok(req) => svc.push_in_turn(req, turn).await.map_err(|e| e.to_grpc()),
                Err(s) => Err(s),
            }
        }
    });
    Box::pin(futures::StreamExt::buffered(answers, PUSH_STREAM_WINDOW))
}

/// A user's record as protobuf.
fn user_to_pb(r: herald_domain::presence::Record) -> pb::UserPresence {
    pb::UserPresence {
        online: r.online(),
        uid: r.uid,
        sid: r.sid,
        clients: r.clients.into_iter().collect(),
        accepts_strangers: r.accepts_strangers,
        ext: r.ext.into_iter().collect(),
        changed_at_ms: r.changed_at_ms,
        revision: r.revision,
    }
}

/// A watch frame as protobuf.
pub(crate) fn frame_to_pb(f: Frame) -> pb::WatchFrame {
    use pb::watch_frame::Kind;
    let mut out = pb::WatchFrame::default();
    match f {
        Frame::Snapshot { revision, users, unknown, unknown_sids, added, more } => {
            out.kind = Kind::Snapshot as i32;
            out.revision = revision;
            out.users = users.into_iter().map(user_to_pb).collect();
            out.unknown = unknown;
            out.unknown_sids = unknown_sids;
            out.added = added;
            out.more = more;
        }
        Frame::Change { revision, users } => {
            out.kind = Kind::Change as i32;
            out.revision = revision;
            out.users = users.into_iter().map(user_to_pb).collect();
        }
        Frame::Progress { revision } => {
            out.kind = Kind::Progress as i32;
            out.revision = revision;
        }
        Frame::Reset { revision, reason } => {
            out.kind = Kind::Reset as i32;
            out.revision = revision;
            out.code = "reset".into();
            out.message = reason.into();
        }
        Frame::Error { code, message } => {
            out.kind = Kind::Error as i32;
            out.code = code.name.into();
            out.message = message;
        }
    }
    out
}

/// `Presence.Watch`: the first request opens the watch; later ones add
/// and remove ids (see presence.proto).
async fn open_watch(
    api: Arc<Api>,
    caller: Principal,
    mut input: Streaming<pb::WatchRequest>,
) -> Result<RespStream<pb::WatchFrame>, Status> {
    let first = input
        .message()
        .await?
        .ok_or_else(|| ApiError::new(codes::BAD_REQUEST, "a watch needs its request").to_grpc())?;
    let req = WatchRequest {
        uids: first.uids,
        sids: first.sids,
        since: first.since_revision,
        all: first.all,
    };
    let w = api.watch(req, &caller).await.map_err(|e| e.to_grpc())?;
    let control = w.control;
    tokio::spawn(async move {
        while let Some(Ok(m)) = input.next().await {
            let add = !m.uids.is_empty() || !m.sids.is_empty();
            if add && control.send(Control::Add { uids: m.uids, sids: m.sids }).await.is_err() {
                break;
            }
            if !m.remove_uids.is_empty() || !m.remove_sids.is_empty() {
                let c = Control::Remove { uids: m.remove_uids, sids: m.remove_sids };
                if control.send(c).await.is_err() {
                    break;
                }
            }
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(w.frames);
    Ok(Box::pin(frames.map(|f| Ok(frame_to_pb(f)))))
}

/// Wraps the service so streaming methods can share it.
pub struct PresenceGrpc(pub Arc<PresenceService>);

#[tonic::async_trait]
impl pb::presence_server::Presence for PresenceGrpc {
    async fn push_events(
        &self,
        req: Request<pb::PushEventsRequest>,
    ) -> Result<Response<pb::PushEventsResponse>, Status> {
        self.0.push(req.into_inner()).await.map(Response::new).map_err(|e| e.to_grpc())
    }

    type PushEventsStreamStream = RespStream<pb::PushEventsResponse>;

    async fn push_events_stream(
        &self,
        req: Request<Streaming<pb::PushEventsRequest>>,
    ) -> Result<Response<Self::PushEventsStreamStream>, Status> {
        Ok(Response::new(push_window(self.0.clone(), req.into_inner())))
    }

    async fn query(
        &self,
        req: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        self.0.query(req.into_inner()).await.map(Response::new).map_err(|e| e.to_grpc())
    }

    type QueryStreamStream = RespStream<pb::QueryResponse>;

    type WatchStream = RespStream<pb::WatchFrame>;

    async fn watch(
        &self,
        req: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = crate::api::messages::grpc::principal(&req)?;
        open_watch(self.0.api.clone(), caller, req.into_inner()).await.map(Response::new)
    }

    async fn query_stream(
        &self,
        req: Request<Streaming<pb::QueryRequest>>,
    ) -> Result<Response<Self::QueryStreamStream>, Status> {
        Ok(Response::new(map_stream(self.0.clone(), req.into_inner(), |s, r| async move {
            s.query(r).await
        })))
    }
}

/// How long connecting to another node's publish port may take: members
/// sit on one network (milliseconds); a node that cannot be reached in
/// half a second is shown as unknown rather than holding up the status call.
pub const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// A client of another node's public Cluster service (https when the
/// cluster has `<tls>`, see [`crate::tls::publish_endpoint`]).
pub async fn cluster_client(
    publish_addr: &str,
) -> Result<ClusterClient<Channel>, tonic::transport::Error> {
    let ch = crate::tls::publish_endpoint(publish_addr)?
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .connect()
        .await?;
    Ok(ClusterClient::new(ch))
}

/// A request to another node carrying the caller's API key (its
/// `authorization` metadata), so the other node checks the same principal.
pub fn with_key<T>(msg: T, caller: &Principal) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(v) = caller.key().and_then(|k| format!("Bearer {k}").parse().ok()) {
        req.metadata_mut().insert("authorization", v);
    }
    req
}

/// Sends a membership change to the leader's publish port.
pub async fn forward_membership(
    addr: &str,
    op: MembershipOp,
    caller: &Principal,
) -> Result<MembershipResult, ApiError> {
    let unavailable = |e: String| ApiError::Cluster(crate::raft::ClusterError::Unavailable(e));
    let mut c = cluster_client(addr).await.map_err(|e| unavailable(e.to_string()))?;
    let r = match op {
        MembershipOp::AddLearner { number, sync, publish, zone, replica } => {
            let req = pb::AddLearnerRequest { number, sync, publish, zone, replica };
            c.add_learner(with_key(req, caller)).await
        }
        MembershipOp::Promote { number } => {
            c.promote(with_key(pb::PromoteRequest { number }, caller)).await
        }
        MembershipOp::Remove { number } => {
            c.remove(with_key(pb::RemoveRequest { number }, caller)).await
        }
    };
    match r {
        Ok(r) => {
            let r = r.into_inner();
            Ok(MembershipResult::from(r))
        }
        Err(s) => Err(status_to_api(s)),
    }
}

/// Sends a leader transfer to the leader's publish port.
pub async fn forward_transfer(
    addr: &str,
    number: u64,
    caller: &Principal,
) -> Result<u64, ApiError> {
    let mut c = cluster_client(addr)
        .await
        .map_err(|e| ApiError::Cluster(crate::raft::ClusterError::Unavailable(e.to_string())))?;
    match c.transfer_leader(with_key(pb::TransferLeaderRequest { number }, caller)).await {
        Ok(r) => Ok(r.into_inner().leader),
        Err(s) => Err(status_to_api(s)),
    }
}

/// Turns a gRPC error from another node back into our error, keeping the
/// stable code and message the other node gave.
fn status_to_api(s: Status) -> ApiError {
    let Some(code) =
        s.metadata().get(codes::METADATA_KEY).and_then(|v| v.to_str().ok()).map(str::to_string)
    else {
        return ApiError::Cluster(crate::raft::ClusterError::Unavailable(s.message().to_string()));
    };
    let prefix = format!("{code}: ");
    let message = s.message().strip_prefix(&prefix).unwrap_or(s.message()).to_string();
    // The catalog knows every code a node answers; the gRPC status only
    // decides for a code from a newer node this one does not know yet.
    let status = codes::named(&code).map(|c| c.http).unwrap_or(match s.code() {
        tonic::Code::InvalidArgument => 400,
        tonic::Code::ResourceExhausted => 413,
        tonic::Code::NotFound => 404,
        tonic::Code::FailedPrecondition => 409,
        tonic::Code::Unavailable => 503,
        tonic::Code::DeadlineExceeded => 504,
        _ => 500,
    });
    ApiError::Forwarded { code, status, message }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let p = principal(&req)?;
        let v = self.api.cluster_view(req.into_inner().local, &p).await;
        Ok(Response::new(pb::StatusResponse::from(v)))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let p = principal(&req)?;
        let leader =
            self.api.transfer_leader(req.into_inner().number, &p).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::TransferLeaderResponse { leader }))
    }

    async fn add_learner(
        &self,
        req: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let op = MembershipOp::AddLearner {
            number: r.number,
            sync: r.sync,
            publish: r.publish,
            zone: r.zone,
            replica: r.replica,
        };
        self.api
            .membership(op, &p)
            .await
            .map(|r| Response::new(pb::MembershipResponse::from(r)))
            .map_err(|e| e.to_grpc())
    }

    async fn promote(
        &self,
        req: Request<pb::PromoteRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let p = principal(&req)?;
        let op = MembershipOp::Promote { number: req.into_inner().number };
        self.api
            .membership(op, &p)
            .await
            .map(|r| Response::new(pb::MembershipResponse::from(r)))
            .map_err(|e| e.to_grpc())
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        let p = principal(&req)?;
        let op = MembershipOp::Remove { number: req.into_inner().number };
        self.api
            .membership(op, &p)
            .await
            .map(|r| Response::new(pb::MembershipResponse::from(r)))
            .map_err(|e| e.to_grpc())
    }
}
