//! TEMPORARY shim until the auth branch merges (same API).
use crate::config::AuthConfig;
pub struct Authenticator { cfg: AuthConfig }
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError { #[error("refused")] Refused }
impl AuthError { pub fn code(&self) -> &'static str { "bad_token" } }
impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> Self { Authenticator { cfg: cfg.clone() } }
    pub async fn check(&self, _uid: &str, token: &str, _client: &str, _now: u64) -> Result<(), AuthError> {
        let _ = &self.cfg;
        if token == "good" { Ok(()) } else { Err(AuthError::Refused) }
    }
}
