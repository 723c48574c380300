//! Messages for applications (MISSION M1–M4): submit one-to-one, group and
//! broadcast messages, manage recipient groups and users' offline-storage
//! subscription, and ask which gateway a client should use.

use herald_proto::v1 as pb;
use herald_proto::v1::gateway_client::GatewayClient;
use herald_proto::v1::messages_client::MessagesClient;

use crate::client::{HeraldClient, MAX_MESSAGE_BYTES};
use crate::error::ClientError;

/// Who a message goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipients {
    /// These users (one = one-to-one).
    To(Vec<String>),
    /// The members of a named recipient group.
    Group(String),
    /// Every user: online ones only, or with a lifetime also those who log
    /// in before it ends.
    Broadcast,
}

/// A message to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Retrying with the same key (and `from`) never stores it twice.
    pub idempotency_key: String,
    pub from: String,
    pub to: Recipients,
    /// Broadcasts only: lifetime in seconds (0 = online users only).
    pub ttl_s: u64,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// What happened for one recipient, the answer to a submission, a user's
/// offline-storage setting, one gateway and the gateway choice: the HTTP
/// API's JSON types ([`herald_proto::wire::messages`]), converted from the
/// gRPC answers.
pub use herald_proto::wire::messages::{
    GatewayChoice, GatewayInfo, RecipientOutcome, SendAnswer as SendOutcome,
    SettingsAnswer as Settings,
};

impl HeraldClient {
    fn messages_client(&self) -> MessagesClient<crate::credential::AuthChannel> {
        MessagesClient::new(self.auth_channel())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Submits a message; answers once every recipient's outcome is decided
    /// and durable.
    pub async fn send(&self, m: Outgoing) -> Result<SendOutcome, ClientError> {
        let r = self.messages_client().send(send_request(m)).await?.into_inner();
        Ok(SendOutcome::from(r))
    }

    /// Submits many messages in one request and one log entry (at most
    /// 1,000, at most 4 MiB of bodies); answers the entry's revision and,
    /// in order, each message's outcome or the stable code apply refused
    /// it with. A bad message refuses the whole batch (nothing stored).
    pub async fn send_batch(
        &self,
        ms: Vec<Outgoing>,
    ) -> Result<(u64, Vec<Result<SendOutcome, ClientError>>), ClientError> {
        let messages = ms.into_iter().map(send_request).collect();
        let r = self
            .messages_client()
            .send_batch(pb::SendBatchRequest { messages })
            .await?
            .into_inner();
        let items = r
            .results
            .into_iter()
            .map(|x| match x.sent {
                Some(s) if x.code.is_empty() => Ok(SendOutcome::from(s)),
                _ if x.code.is_empty() => Err(ClientError::Transport(
                    "a batch result with neither answer nor code".into(),
                )),
                _ => Err(ClientError::Server { code: x.code, message: x.message }),
            })
            .collect();
        Ok((r.revision, items))
    }

    /// Creates or replaces a recipient group; no members deletes it.
    pub async fn set_group(&self, name: &str, members: Vec<String>) -> Result<u64, ClientError> {
        let r = self
            .messages_client()
            .set_group(pb::SetGroupRequest { name: name.into(), members })
            .await?;
        Ok(r.into_inner().revision)
    }

    /// A group's members.
    pub async fn group(&self, name: &str) -> Result<Vec<String>, ClientError> {
        let r = self.messages_client().get_group(pb::GetGroupRequest { name: name.into() }).await?;
        Ok(r.into_inner().members)
    }

    /// Subscribes (true) or unsubscribes a user from offline storage.
    pub async fn set_offline(&self, uid: &str, offline: bool) -> Result<Settings, ClientError> {
        let r = self
            .messages_client()
            .set_settings(pb::SetSettingsRequest { uid: uid.into(), offline })
            .await?
            .into_inner();
        Ok(Settings::from(r))
    }

    /// A user's setting and how many messages wait for it.
    pub async fn settings(&self, uid: &str) -> Result<Settings, ClientError> {
        let r = self
            .messages_client()
            .get_settings(pb::GetSettingsRequest { uid: uid.into() })
            .await?
            .into_inner();
        Ok(Settings::from(r))
    }

    /// The gateway the cluster recommends for `uid`.
    pub async fn pick_gateway(
        &self,
        uid: &str,
        client: &str,
    ) -> Result<GatewayChoice, ClientError> {
        let mut c = GatewayClient::new(self.auth_channel());
        let r = c
            .pick(pb::PickGatewayRequest {
                uid: uid.into(),
                client: client.into(),
                zone: String::new(),
            })
            .await?
            .into_inner();
        Ok(GatewayChoice::from(r))
    }
}

/// A fresh idempotency key (random, 128 bits, hex) for callers that do not
/// keep their own.
pub fn new_idempotency_key() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut out = String::with_capacity(32);
    for i in 0..2u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// The protobuf submission of `m`.
fn send_request(m: Outgoing) -> pb::SendRequest {
    let (to, group, broadcast) = match m.to {
        Recipients::To(v) => (v, String::new(), false),
        Recipients::Group(g) => (Vec::new(), g, false),
        Recipients::Broadcast => (Vec::new(), String::new(), true),
    };
    pb::SendRequest {
        idempotency_key: m.idempotency_key,
        from: m.from,
        to,
        group,
        broadcast,
        ttl_s: m.ttl_s,
        content_type: m.content_type,
        body: m.body,
    }
}
