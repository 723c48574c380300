//! Profile sync across bound IM modules (issue 17; MISSION Y1, Y2): binding
//! accounts, setting and reading profiles, the outbox. Thin axum handlers
//! over the domain's [`herald_domain::profile`]; the leader's dispatcher
//! ([`crate::profile::dispatch`]) delivers what the updates commit.
//!
//! Every check that can refuse happens before the write (supported module
//! from `<profile-sync>`, bounds) or in apply (one identity per account,
//! bound source module), and a refusal writes nothing.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::Json;
use herald_domain::profile::{
    self as domain, check_target, OutboxItem, ProfileOp, ProfileResult, UserProfile,
};
use herald_domain::state::{Op, OpResult};
use herald_proto::codes;
use herald_proto::webhook;
use herald_proto::wire::profile::{
    BindBody, Binding, BindingsAnswer, OutboxAnswer, Profile, ProfileAnswer, ProfileBody,
    ResendAnswer,
};
use serde::Deserialize;

use super::access::Principal;
use super::messages::check_uid;
use super::routes::{Served, Verb};
use super::{Api, ApiError, Consistency};

/// Most items one `GET /v1/outbox` lists (`?limit=` up to this): an answer
/// is built whole in memory; the total is always given.
pub const MAX_OUTBOX_LIST: usize = 10_000;
/// Items listed when `?limit=` is not given.
pub const DEFAULT_OUTBOX_LIST: usize = 1_000;

type AppState = Arc<Api>;

/// Routes of this module, merged into the HTTP router.
pub fn routes() -> Served<AppState> {
    use Verb::*;
    Served::default()
        .at(Post, "/v1/users/{uid}/bindings", post_binding)
        .at(Delete, "/v1/users/{uid}/bindings/{module}/{account}", delete_binding)
        .at(Put, "/v1/users/{uid}/profile", put_profile)
        .at(Get, "/v1/users/{uid}/profile", get_profile)
        .at(Get, "/v1/outbox", get_outbox)
        .at(Post, "/v1/outbox/{id}/resend", post_resend)
}

pub(crate) fn to_domain(p: Profile) -> domain::Profile {
    domain::Profile { avatar: p.avatar, signature: p.signature, mood: p.mood, extra: p.extra }
}

pub(crate) fn to_wire(p: &domain::Profile) -> Profile {
    Profile {
        avatar: p.avatar.clone(),
        signature: p.signature.clone(),
        mood: p.mood.clone(),
        extra: p.extra.clone(),
    }
}

fn bindings_of(u: Option<&UserProfile>) -> Vec<Binding> {
    u.map(|u| {
        u.bindings.iter().map(|(m, a)| Binding { module: m.clone(), account: a.clone() }).collect()
    })
    .unwrap_or_default()
}

fn answer_of(uid: &str, u: Option<&UserProfile>) -> ProfileAnswer {
    ProfileAnswer {
        uid: uid.to_owned(),
        profile: u.and_then(|u| u.profile.as_ref()).map(to_wire),
        revision: u.map_or(0, |u| u.revision),
        source: u.map(|u| u.source.clone()).unwrap_or_default(),
        updated_ms: u.map_or(0, |u| u.updated_ms),
        bindings: bindings_of(u),
        outbox: Vec::new(),
    }
}

fn item_json(i: &OutboxItem) -> herald_proto::wire::profile::OutboxItem {
    herald_proto::wire::profile::OutboxItem {
        id: i.id,
        webhook_id: webhook::message_id(i.id),
        uid: i.uid.clone(),
        module: i.module.clone(),
        account: i.account.clone(),
        source: i.source.clone(),
        revision: i.revision,
        attempts: i.attempts,
        created_ms: i.created_ms,
        next_attempt_ms: i.next_attempt_ms,
        last_error: i.last_error.clone(),
        dead_ms: i.dead_ms,
    }
}

impl Api {
    /// Refuses a module `<profile-sync>` does not list.
    fn supported(&self, module: &str) -> Result<(), ApiError> {
        if self.profile.module(module).is_none() {
            return Err(ApiError::new(
                codes::UNSUPPORTED_MODULE,
                format!(
                    "module {:?} is not supported (<profile-sync> lists: {})",
                    super::media::trim_for_message(module),
                    self.profile
                        .modules
                        .iter()
                        .map(|m| m.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Commits one profile op; a domain refusal becomes its code. The
    /// refusal is asked of the linearizable state first, so a refused
    /// request writes nothing to the log (apply still decides for good).
    async fn write_profile(&self, op: ProfileOp) -> Result<(u64, ProfileResult), ApiError> {
        if let Some(code) =
            self.node.read(Consistency::Linearizable, |s| s.profiles.refusal(&op)).await?
        {
            return Err(profile_refusal(code));
        }
        let (rev, results) = self.node.write(vec![Op::Profile(op)]).await?;
        match results.into_iter().next() {
            Some(OpResult::Profile(ProfileResult::Refused(code))) => Err(profile_refusal(&code)),
            Some(OpResult::Profile(r)) => Ok((rev, r)),
            other => Err(ApiError::Cluster(crate::raft::ClusterError::Internal(format!(
                "unexpected apply result {other:?}"
            )))),
        }
    }

    /// Binds `(module, account)` to `uid`.
    #[tracing::instrument(level = "info", skip(self), err(Display))]
    pub async fn bind(
        &self,
        uid: &str,
        module: &str,
        account: &str,
    ) -> Result<BindingsAnswer, ApiError> {
        check_uid("uid", uid)?;
        check_target(module, account).map_err(|m| ApiError::new(codes::INVALID_BINDING, m))?;
        self.supported(module)?;
        let op =
            ProfileOp::Bind { uid: uid.into(), module: module.into(), account: account.into() };
        self.bindings_after(uid, op).await
    }

    /// Unbinds it (its pending and dead outbox items go too).
    #[tracing::instrument(level = "info", skip(self), err(Display))]
    pub async fn unbind(
        &self,
        uid: &str,
        module: &str,
        account: &str,
    ) -> Result<BindingsAnswer, ApiError> {
        check_uid("uid", uid)?;
        check_target(module, account).map_err(|m| ApiError::new(codes::INVALID_BINDING, m))?;
        let op =
            ProfileOp::Unbind { uid: uid.into(), module: module.into(), account: account.into() };
        self.bindings_after(uid, op).await
    }

    async fn bindings_after(&self, uid: &str, op: ProfileOp) -> Result<BindingsAnswer, ApiError> {
        let (revision, _) = self.write_profile(op).await?;
        self.node.wait_applied(revision).await?;
        let bindings = self.node.read_local(|s| bindings_of(s.profiles.user(uid)));
        Ok(BindingsAnswer { uid: uid.to_owned(), bindings, revision })
    }

    /// A profile update from `source`: committed with one outbox item per
    /// other bound account.
    #[tracing::instrument(level = "info", skip(self, profile), err(Display))]
    pub async fn set_profile(
        &self,
        uid: &str,
        source: &str,
        profile: Profile,
    ) -> Result<ProfileAnswer, ApiError> {
        check_uid("uid", uid)?;
        let profile = to_domain(profile);
        profile.check().map_err(|m| ApiError::new(codes::PROFILE_TOO_LARGE, m))?;
        check_target(source, "-").map_err(|m| ApiError::new(codes::INVALID_BINDING, m))?;
        self.supported(source)?;
        let op = ProfileOp::SetProfile { uid: uid.into(), source: source.into(), profile };
        let (index, r) = self.write_profile(op).await?;
        let ProfileResult::Set { revision, items, .. } = r else {
            return Err(ApiError::Cluster(crate::raft::ClusterError::Internal(format!(
                "unexpected profile result {r:?}"
            ))));
        };
        self.node.wait_applied(index).await?;
        let mut a = self.node.read_local(|s| answer_of(uid, s.profiles.user(uid)));
        // The answer is this update's (its own profile revision, not the
        // entry's index), even if a newer one applied since.
        a.revision = revision;
        a.outbox = items.into_iter().map(webhook::message_id).collect();
        Ok(a)
    }

    /// A user's profile and bindings (linearizable).
    pub async fn get_profile(&self, uid: &str) -> Result<ProfileAnswer, ApiError> {
        check_uid("uid", uid)?;
        Ok(self
            .node
            .read(Consistency::Linearizable, |s| answer_of(uid, s.profiles.user(uid)))
            .await?)
    }

    /// The pending (or dead) outbox items, oldest first (linearizable).
    pub async fn outbox(&self, dead: bool, limit: usize) -> Result<OutboxAnswer, ApiError> {
        Ok(self
            .node
            .read(Consistency::Linearizable, |s| {
                let p = &s.profiles;
                let (total, items): (usize, Vec<_>) = if dead {
                    (p.dead_count(), p.dead().take(limit).map(item_json).collect())
                } else {
                    (p.pending_count(), p.pending().take(limit).map(item_json).collect())
                };
                OutboxAnswer { dead, total: total as u64, items }
            })
            .await?)
    }

    /// Sends item `id` again now (a dead one goes back to pending).
    #[tracing::instrument(level = "info", skip(self), err(Display))]
    pub async fn resend(&self, id: u64) -> Result<ResendAnswer, ApiError> {
        let (revision, _) = self.write_profile(ProfileOp::OutboxResend { id }).await?;
        Ok(ResendAnswer { id, revision })
    }
}

/// The answer to a domain refusal.
fn profile_refusal(code: &str) -> ApiError {
    let message = match code {
        domain::refusal::ACCOUNT_BOUND_ELSEWHERE => {
            "the account is bound to another identity; unbind it there first"
        }
        domain::refusal::TOO_MANY_BINDINGS => "the user holds too many bindings",
        domain::refusal::NOT_BOUND => "the user has not bound that account",
        domain::refusal::MODULE_NOT_BOUND => {
            "the update comes from a module the user has not bound"
        }
        domain::refusal::UNKNOWN_OUTBOX_ITEM => "no outbox item with that id",
        domain::refusal::PROFILE_TOO_LARGE => "the profile is over its bounds",
        _ => "refused",
    };
    ApiError::named(code, message)
}

fn body<T>(api: &Api, b: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    b.map(|Json(x)| x).map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))
}

async fn post_binding(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    b: Result<Json<BindBody>, JsonRejection>,
) -> Result<Json<BindingsAnswer>, ApiError> {
    p.act_as(&uid)?;
    let b = body(&api, b)?;
    let r = api.bind(&uid, &b.module, &b.account).await;
    count(&api, r).map(Json)
}

async fn delete_binding(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((uid, module, account)): Path<(String, String, String)>,
) -> Result<Json<BindingsAnswer>, ApiError> {
    p.act_as(&uid)?;
    let r = api.unbind(&uid, &module, &account).await;
    count(&api, r).map(Json)
}

async fn put_profile(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    b: Result<Json<ProfileBody>, JsonRejection>,
) -> Result<Json<ProfileAnswer>, ApiError> {
    p.act_as(&uid)?;
    let b = body(&api, b)?;
    let r = api.set_profile(&uid, &b.source, b.profile).await;
    count(&api, r).map(Json)
}

async fn get_profile(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
) -> Result<Json<ProfileAnswer>, ApiError> {
    p.act_as(&uid)?;
    Ok(Json(api.get_profile(&uid).await?))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    #[serde(default)]
    dead: bool,
    #[serde(default)]
    limit: Option<usize>,
}

async fn get_outbox(
    State(api): State<AppState>,
    q: Result<Query<OutboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OutboxAnswer>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_OUTBOX_LIST).min(MAX_OUTBOX_LIST);
    Ok(Json(api.outbox(q.dead, limit).await?))
}

async fn post_resend(
    State(api): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ResendAnswer>, ApiError> {
    let n = id.strip_prefix("msg_").unwrap_or(&id);
    let id: u64 = n.parse().map_err(|_| {
        ApiError::new(
            codes::UNKNOWN_OUTBOX_ITEM,
            format!("{:?} is not an outbox id", super::media::trim_for_message(&id)),
        )
    })?;
    let r = api.resend(id).await;
    count(&api, r).map(Json)
}

fn count<T>(api: &Api, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &r {
        api.count_error(e);
    }
    r
}
