//! Profile sync over HTTP (issue 17): bindings
//! (`/v1/users/{uid}/bindings`), profiles (`/v1/users/{uid}/profile`), the
//! outbox (`/v1/outbox`) and the body a module's server receives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/users/{uid}/bindings` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    pub module: String,
    pub account: String,
}

/// One bound account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub module: String,
    pub account: String,
}

/// The answer to a bind or unbind: the user's bindings after it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindingsAnswer {
    pub uid: String,
    pub bindings: Vec<Binding>,
    /// Log index of the write.
    pub revision: u64,
}

/// A profile document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default)]
    pub avatar: String,
    #[serde(default)]
    pub signature: String,
    #[serde(default)]
    pub mood: String,
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// `PUT /v1/users/{uid}/profile` body: the module the change came from and
/// the new profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    pub source: String,
    pub profile: Profile,
}

/// A user's profile, bindings and (after a PUT) the outbox items the update
/// created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileAnswer {
    pub uid: String,
    /// None: never set.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// The profile revision of the last update (after a PUT: of this
    /// update), 0: never set. Distinct for every update and growing with
    /// log order (log index × 2^16 + the update's position among the
    /// profile ops of its log entry), so it orders updates batched into one
    /// entry too; it is not a log index (bind answers give those).
    #[serde(default)]
    pub revision: u64,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub updated_ms: u64,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// PUT: the webhook ids of the items created, one per other bound account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbox: Vec<String>,
}

/// One outbox item as `GET /v1/outbox` lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: u64,
    /// The `webhook-id` of its deliveries.
    pub webhook_id: String,
    pub uid: String,
    pub module: String,
    pub account: String,
    pub source: String,
    /// The update's profile revision (see [`ProfileAnswer::revision`]).
    pub revision: u64,
    pub attempts: u32,
    pub created_ms: u64,
    pub next_attempt_ms: u64,
    #[serde(default)]
    pub last_error: String,
    #[serde(default)]
    pub dead_ms: Option<u64>,
}

/// `GET /v1/outbox[?dead=true]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxAnswer {
    pub dead: bool,
    /// Items in all (the list may be cut at `limit`).
    pub total: u64,
    pub items: Vec<OutboxItem>,
}

/// `POST /v1/outbox/{id}/resend`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResendAnswer {
    pub id: u64,
    /// Log index of the resend's write.
    pub revision: u64,
}

/// What a module's server receives: the JSON body of a delivery (its
/// headers carry the Standard Webhooks id, timestamp and signature).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Always `profile.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When the update was made, ISO 8601 UTC (`YYYY-MM-DDTHH:MM:SS.mmmZ`).
    pub timestamp: String,
    pub data: DeliveryData,
}

/// The update itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryData {
    /// The Herald identity.
    pub uid: String,
    /// The receiving module and the account there to update.
    pub module: String,
    pub account: String,
    /// The module the change was made in.
    pub source: String,
    /// The update's profile revision: distinct for every update and growing
    /// with the order Herald committed them (two updates batched into one
    /// log entry included), the same number the `PUT` that made it
    /// answered. Apply only a revision higher than the last one applied or
    /// made here (deliveries may repeat or, across a leader change, arrive
    /// out of order).
    pub revision: u64,
    pub profile: Profile,
    /// Cluster time of the update, ms since the Unix epoch.
    pub updated_ms: u64,
}
