//! `herald.v1.Presence/Query` and `/QueryStream` served with a codec that
//! sends answers already encoded (issue 13): the `QueryResponse` bytes are
//! written from the state under its lock ([`super::answer::query_pb`]), so
//! there is no `pb::QueryResponse` of owned records for prost to encode.
//! Requests are decoded by prost as the generated server does. These
//! routes are matched before `/herald.v1.Presence/{*method}` in the publish
//! router (static paths win over the wildcard); the generated
//! `PresenceServer` still serves every other method, with the same limits
//! (`max-request-bytes` to decode, `max-response-bytes` to encode).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes};
use herald_proto::v1 as pb;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstDecoder;

use super::grpc::{map_stream, PresenceService, RespStream};

/// Writes an already encoded message into tonic's frame buffer.
#[derive(Debug, Clone, Copy, Default)]
pub struct EncodedEncoder;

impl Encoder for EncodedEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// Decodes `QueryRequest`s with prost; sends encoded `QueryResponse`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryCodec;

impl Codec for QueryCodec {
    type Encode = Bytes;
    type Decode = pb::QueryRequest;
    type Encoder = EncodedEncoder;
    type Decoder = ProstDecoder<pb::QueryRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(BufferSettings::default())
    }
}

struct Unary(Arc<PresenceService>);

impl tonic::server::UnaryService<pb::QueryRequest> for Unary {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, req: Request<pb::QueryRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            svc.query_encoded(req.into_inner()).await.map(Response::new).map_err(|e| e.to_grpc())
        })
    }
}

struct Streamed(Arc<PresenceService>);

impl tonic::server::StreamingService<pb::QueryRequest> for Streamed {
    type Response = Bytes;
    type ResponseStream = RespStream<Bytes>;
    type Future = std::future::Ready<Result<Response<RespStream<Bytes>>, Status>>;

    fn call(&mut self, req: Request<Streaming<pb::QueryRequest>>) -> Self::Future {
        let answers =
            map_stream(
                self.0.clone(),
                req.into_inner(),
                |s, r| async move { s.query_encoded(r).await },
            );
        std::future::ready(Ok(Response::new(answers)))
    }
}

/// Which of the two methods a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Query,
    QueryStream,
}

/// The tower service of one route (what the generated `PresenceServer`
/// does for the method, with [`QueryCodec`]).
#[derive(Clone)]
pub struct QueryRoute {
    svc: Arc<PresenceService>,
    method: Method,
}

impl QueryRoute {
    pub fn new(svc: Arc<PresenceService>, method: Method) -> Self {
        QueryRoute { svc, method }
    }
}

impl tower::Service<http::Request<axum::body::Body>> for QueryRoute {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let (svc, method) = (self.svc.clone(), self.method);
        let limits = &svc.api.limits;
        let (decode, encode) = (limits.max_request_bytes, limits.max_response_bytes);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(QueryCodec)
                .apply_max_message_size_config(Some(decode), Some(encode));
            Ok(match method {
                Method::Query => grpc.unary(Unary(svc), req).await,
                Method::QueryStream => grpc.streaming(Streamed(svc), req).await,
            })
        })
    }
}
