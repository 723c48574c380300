//! The gRPC `herald.v1.Messages` service: thin tonic adapters over the
//! logic in [`super`].

use std::sync::Arc;

use herald_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Submission;
use crate::api::access::Principal;
use crate::api::{Api, ApiError};

/// The principal the guard established for a gRPC call (every call
/// passes it: the guard wraps the whole publish port).
pub(crate) fn principal<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions().get::<Principal>().cloned().ok_or_else(|| {
        ApiError::new(herald_proto::codes::INTERNAL, "no principal: the call bypassed the guard")
            .to_grpc()
    })
}

/// The gRPC `herald.v1.Messages` service.
pub struct MessagesGrpc {
    pub api: Arc<Api>,
}

/// A submission from a protobuf request, sent by principal `p` (a user
/// sends as itself only; an application as anyone).
fn submission(p: &Principal, mut r: pb::SendRequest) -> Result<Submission, ApiError> {
    p.bind(&mut r.from)?;
    Ok(Submission {
        idempotency_key: r.idempotency_key,
        from: r.from,
        to: r.to,
        group: (!r.group.is_empty()).then_some(r.group),
        broadcast: r.broadcast,
        ttl_s: r.ttl_s,
        content_type: r.content_type,
        body: r.body,
        grant_media: None,
        namespace: p.namespace(),
    })
}

#[tonic::async_trait]
impl pb::messages_server::Messages for MessagesGrpc {
    async fn send(
        &self,
        req: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let p = principal(&req)?;
        let s = submission(&p, req.into_inner()).map_err(|e| e.to_grpc())?;
        let a = self.api.send(s).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::SendResponse::from(a)))
    }

    async fn send_batch(
        &self,
        req: Request<pb::SendBatchRequest>,
    ) -> Result<Response<pb::SendBatchResponse>, Status> {
        let p = principal(&req)?;
        let r = req.into_inner();
        let mut subs = Vec::with_capacity(r.messages.len());
        for m in r.messages {
            subs.push(submission(&p, m).map_err(|e| e.to_grpc())?);
        }
        let (revision, items) = self.api.send_batch(subs).await.map_err(|e| e.to_grpc())?;
        let results = items
            .into_iter()
            .map(|a| match a {
                Ok(a) => pb::SendBatchResult {
                    sent: Some(pb::SendResponse::from(a)),
                    ..Default::default()
                },
                Err(e) => pb::SendBatchResult {
                    sent: None,
                    code: e.code().to_string(),
                    message: e.to_string(),
                },
            })
            .collect();
        Ok(Response::new(pb::SendBatchResponse { revision, results }))
    }

    async fn set_group(
        &self,
        req: Request<pb::SetGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let r = req.into_inner();
        let revision =
            self.api.set_group(&r.name, r.members.clone()).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::GroupResponse { name: r.name, members: r.members, revision }))
    }

    async fn get_group(
        &self,
        req: Request<pb::GetGroupRequest>,
    ) -> Result<Response<pb::GroupResponse>, Status> {
        let r = req.into_inner();
        let (members, revision) = self.api.get_group(&r.name).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::GroupResponse { name: r.name, members, revision }))
    }

    async fn set_settings(
        &self,
        req: Request<pb::SetSettingsRequest>,
    ) -> Result<Response<pb::SettingsResponse>, Status> {
        let p = principal(&req)?;
        let mut r = req.into_inner();
        p.bind(&mut r.uid).map_err(|e| e.to_grpc())?;
        let a = self.api.set_settings(&r.uid, r.offline).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::SettingsResponse::from(a)))
    }

    async fn get_settings(
        &self,
        req: Request<pb::GetSettingsRequest>,
    ) -> Result<Response<pb::SettingsResponse>, Status> {
        let p = principal(&req)?;
        let mut r = req.into_inner();
        p.bind(&mut r.uid).map_err(|e| e.to_grpc())?;
        let a = self.api.get_settings(&r.uid).await.map_err(|e| e.to_grpc())?;
        Ok(Response::new(pb::SettingsResponse::from(a)))
    }
}
