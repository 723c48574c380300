//! `herald.v1.Gateway/Session` served with its own gRPC codec: small
//! encode and decode buffers for the one long-lived stream per client.
//!
//! tonic allocates its codec buffers per RPC, eagerly: 8 KiB to decode the
//! request stream and 8 KiB to encode the response stream, kept for the
//! RPC's life. For a unary call that is nothing; for 100,000 idle sessions
//! it was 16 KiB each, over half of a session's memory (heaptrack,
//! docs/benchmarks.md "Where a session's memory goes"). Session frames are
//! small (a heartbeat and its ack are ~10 bytes, a Hello ~130, a Welcome
//! ~40, a delivery its body plus ~100), so this route starts the buffers
//! at [`SESSION_DECODE_BUFFER`] and [`SESSION_ENCODE_BUFFER`]; a bigger
//! frame grows a buffer as tonic always does. Every other service keeps tonic's defaults: this route is matched
//! before `/herald.v1.Gateway/{*method}` in the publish router, and the
//! generated `GatewayServer` still serves `Pick`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use herald_proto::v1 as pb;
use tonic::codec::{BufferSettings, Codec};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::session::{self, OutFrame};
use super::Gateway;

/// Initial size of a session's decode buffer (tonic's default is 8 KiB).
/// Every session starts with a Hello (uid, an HMAC token of ~90 bytes,
/// client type: ~130 bytes with its header), so 256 holds it and every
/// later frame of an idle session (a heartbeat is ~7 bytes); a bigger frame
/// (an Ack naming many ids) grows the buffer, by at least this much, as
/// tonic always does. Measured at 100,000 sessions: tonic's two 8 KiB
/// buffers were 16,384 B of heap per session; 512 B each were 1,024; these
/// two are 384 (docs/benchmarks.md).
pub const SESSION_DECODE_BUFFER: usize = 256;
/// Initial size of a session's encode buffer: a Welcome is ~40 bytes, a
/// heartbeat's answer ~15; a delivery bigger than this grows it.
pub const SESSION_ENCODE_BUFFER: usize = 128;
/// Encoded response bytes gathered before tonic hands them to HTTP/2 at
/// once (tonic's default, 32 KiB: an upper bound, never allocated up
/// front; it lets a burst of deliveries go out in few DATA frames).
const SESSION_YIELD_THRESHOLD: usize = 32 * 1024;

/// prost encoding of `ServerFrame`s and decoding of `ClientFrame`s with
/// [`SESSION_ENCODE_BUFFER`] and [`SESSION_DECODE_BUFFER`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionCodec;

impl Codec for SessionCodec {
    type Encode = pb::ServerFrame;
    type Decode = pb::ClientFrame;
    type Encoder = ProstEncoder<pb::ServerFrame>;
    type Decoder = ProstDecoder<pb::ClientFrame>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::new(SESSION_ENCODE_BUFFER, SESSION_YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::new(SESSION_DECODE_BUFFER, SESSION_YIELD_THRESHOLD))
    }
}

/// The session's response stream: the session's frames, unboxed.
type Frames = futures::stream::Map<
    super::queue::SessionFrames<OutFrame>,
    fn(OutFrame) -> Result<pb::ServerFrame, Status>,
>;

fn unbox(f: OutFrame) -> Result<pb::ServerFrame, Status> {
    f.map(|b| *b)
}

struct Sessions(Arc<Gateway>);

impl tonic::server::StreamingService<pb::ClientFrame> for Sessions {
    type Response = pb::ServerFrame;
    type ResponseStream = Frames;
    type Future = std::future::Ready<Result<Response<Frames>, Status>>;

    fn call(&mut self, req: Request<Streaming<pb::ClientFrame>>) -> Self::Future {
        use futures::StreamExt as _;
        let frames: Frames = session::open(self.0.clone(), req.into_inner())
            .map(unbox as fn(OutFrame) -> Result<pb::ServerFrame, Status>);
        std::future::ready(Ok(Response::new(frames)))
    }
}

/// The tower service of the route (what the generated `GatewayServer`
/// does for this method, with [`SessionCodec`]).
#[derive(Clone)]
pub struct SessionRoute {
    gw: Arc<Gateway>,
    /// Largest frame decoded or encoded, bytes (the publish router's
    /// session frame limit).
    frame_limit: usize,
}

impl SessionRoute {
    pub fn new(gw: Arc<Gateway>, frame_limit: usize) -> Self {
        SessionRoute { gw, frame_limit }
    }
}

impl tower::Service<http::Request<axum::body::Body>> for SessionRoute {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let (gw, limit) = (self.gw.clone(), self.frame_limit);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(SessionCodec)
                .apply_max_message_size_config(Some(limit), Some(limit));
            Ok(grpc.streaming(Sessions(gw), req).await)
        })
    }
}
