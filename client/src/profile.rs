//! A blocking client of profile sync (issue 17): binding module accounts,
//! setting and reading profiles, listing and resending outbox items. It
//! acts with one credential: a user's session token (its own routes) or an
//! application's API key (`profile` scope; `admin` to resend).

use herald_proto::wire::profile::{
    BindBody, BindingsAnswer, OutboxAnswer, Profile, ProfileAnswer, ProfileBody, ResendAnswer,
};

use crate::media::{agent, encode_component, finish};
use crate::{normalize_addr, ClientError, ConnectOptions, Credential};

/// See the module doc. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ProfileClient {
    base: String,
    credential: Credential,
    agent: ureq::Agent,
}

impl ProfileClient {
    /// A client of the node at `node` (as [`normalize_addr`] accepts) with
    /// `credential`.
    pub fn new(
        node: &str,
        credential: Credential,
        opts: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        Ok(ProfileClient { base: normalize_addr(node)?, credential, agent: agent(opts)? })
    }

    fn auth(&self) -> String {
        self.credential.http_header().unwrap_or("").to_string()
    }

    fn user_url(&self, uid: &str, rest: &str) -> String {
        format!("{}/v1/users/{}{rest}", self.base, encode_component(uid))
    }

    /// `POST /v1/users/{uid}/bindings`.
    pub fn bind(
        &self,
        uid: &str,
        module: &str,
        account: &str,
    ) -> Result<BindingsAnswer, ClientError> {
        let url = self.user_url(uid, "/bindings");
        let body = BindBody { module: module.into(), account: account.into() };
        finish(&url, self.agent.post(&url).header("Authorization", self.auth()).send_json(&body))
    }

    /// `DELETE /v1/users/{uid}/bindings/{module}/{account}`.
    pub fn unbind(
        &self,
        uid: &str,
        module: &str,
        account: &str,
    ) -> Result<BindingsAnswer, ClientError> {
        let url = self.user_url(
            uid,
            &format!("/bindings/{}/{}", encode_component(module), encode_component(account)),
        );
        finish(&url, self.agent.delete(&url).header("Authorization", self.auth()).call())
    }

    /// `PUT /v1/users/{uid}/profile`: an update from `source`.
    pub fn set(
        &self,
        uid: &str,
        source: &str,
        profile: Profile,
    ) -> Result<ProfileAnswer, ClientError> {
        let url = self.user_url(uid, "/profile");
        let body = ProfileBody { source: source.into(), profile };
        finish(&url, self.agent.put(&url).header("Authorization", self.auth()).send_json(&body))
    }

    /// `GET /v1/users/{uid}/profile`.
    pub fn get(&self, uid: &str) -> Result<ProfileAnswer, ClientError> {
        let url = self.user_url(uid, "/profile");
        finish(&url, self.agent.get(&url).header("Authorization", self.auth()).call())
    }

    /// `GET /v1/outbox[?dead=true]&limit=N`.
    pub fn outbox(&self, dead: bool, limit: usize) -> Result<OutboxAnswer, ClientError> {
        let url = format!("{}/v1/outbox?dead={dead}&limit={limit}", self.base);
        finish(&url, self.agent.get(&url).header("Authorization", self.auth()).call())
    }

    /// `POST /v1/outbox/{id}/resend` (`id` as listed, or its webhook id).
    pub fn resend(&self, id: &str) -> Result<ResendAnswer, ClientError> {
        let url = format!("{}/v1/outbox/{}/resend", self.base, encode_component(id));
        finish(&url, self.agent.post(&url).header("Authorization", self.auth()).send_empty())
    }
}
