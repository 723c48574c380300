//! The XML configuration of `heraldd`.
//!
//! The format is documented element by element in `conf/reference.xml`. The
//! reader is strict: anything it does not know, anything missing, anything of
//! the wrong type or out of range, is refused with an error naming the file,
//! the line and column, the element and the field at fault, e.g.
//!
//! ```text
//! conf/x.xml:12:41: <server number="2"> sync-port: duplicate port 7101 (also used by server 1 sync-port)
//! ```
//!
//! Parsing walks quick-xml's event reader by hand (serde would lose the
//! positions): first the text becomes a small tree of elements and attributes,
//! each with its byte offset; then the tree is read against the schema; then
//! the cross-field rules (ports, node membership, Raft timing) are checked.
//!
//! The parts:
//! * `xml.rs`: text → element tree with positions (malformed XML refused);
//! * `schema.rs`: every element and attribute, one entry per attribute
//!   (field, default, bounds and their reason, name, doc); it declares the
//!   settings structs ([`RaftTiming`], [`GatewayConfig`], ...);
//! * `read.rs`: element tree → [`Config`] against the schema;
//! * `rules.rs`: rules across fields (also run by [`Config::apply_overrides`]);
//! * `error.rs`: [`ConfigError`];
//! * `tests.rs`: the tests, including that `conf/reference.xml` documents
//!   exactly the schema.

use std::path::{Path, PathBuf};

mod error;
mod read;
mod rules;
mod schema;
mod xml;

pub use error::ConfigError;
/// The settings elements, declared in the schema (one entry per attribute).
pub use schema::{
    GatewayConfig, Limits, LogConfig, MasterPolicy, MediaConfig, MessagesConfig, ProfileSyncConfig,
    RaftTiming, ReadsConfig, Security, TimeSync, WatchConfig,
};

use rules::check;
use xml::{server_desc, Ctx};

/// The default configuration compiled into the binary (one node on 127.0.0.1).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../conf/herald.xml");
/// The `source` name used for [`EMBEDDED_DEFAULT`] in a [`Config`] and in errors.
pub const EMBEDDED_NAME: &str = "conf/herald.xml (embedded)";

/// Upper limit of `<limits max-request-bytes>` (64 MiB).
pub const MAX_REQUEST_BYTES_CAP: usize = 64 * 1024 * 1024;
/// Upper limit of `<limits max-response-bytes>` (256 MiB): an answer is
/// built whole in memory before it is sent.
pub const MAX_RESPONSE_BYTES_CAP: usize = 256 * 1024 * 1024;
/// Upper limit of `<limits max-ids-per-query>`.
pub const MAX_IDS_PER_QUERY_CAP: usize = 1_000_000;
/// Upper limit of `<messages max-body-bytes>` (1 MiB).
pub const MAX_BODY_BYTES_CAP: usize = 1024 * 1024;
/// Upper limit of `<media max-bytes>` (64 GiB).
pub const MAX_MEDIA_BYTES_CAP: u64 = 64 << 30;
/// Shortest key `<auth mode="hmac">` (and `<media>`) accepts, in bytes: 128
/// bits, the usual floor for an HMAC key.
pub const MIN_HMAC_KEY_BYTES: usize = 16;
/// Default of `<auth mode="external" timeout-ms>`.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 2_000;
/// Default of `<auth mode="hmac" max-token-lifetime-s>`: 7 days. A token
/// cannot be revoked short of changing the key, so this bounds how long a
/// leaked one works; a week lets an application refresh its users' tokens
/// on weekly use without forcing logins.
pub const DEFAULT_MAX_TOKEN_LIFETIME_S: u64 = 7 * 86_400;
/// Upper limit of `<auth max-token-lifetime-s>`: a year (a longer-lived
/// token is as good as a password that is never changed).
pub const MAX_TOKEN_LIFETIME_CAP_S: u64 = 365 * 86_400;
/// The development HMAC key of `conf/herald.xml` (the embedded default),
/// `conf/cluster-3` and `conf/reference.xml`: nodes warn when they use it
/// and `<security mode="production">` refuses it.
pub const DEVELOPMENT_HMAC_KEY: &[u8] = b"herald-dev-key-change-me-0001";
/// Longest `<api-key name>`: names show in logs and metrics labels.
pub const MAX_API_KEY_NAME_BYTES: usize = 64;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where it came from (file name, or [`EMBEDDED_NAME`]); used in messages.
    pub source: String,
    pub cluster: String,
    /// This node's number; always the number of one entry of `servers`.
    pub node: u64,
    /// Never bootstrap a cluster; wait to be added as a learner.
    pub join: bool,
    pub data_dir: PathBuf,
    /// Sorted by number; numbers are unique; no host:port is used twice.
    pub servers: Vec<Server>,
    /// `<servers zone-survival>`: the voters can form a majority without
    /// any one zone (checked when the file is read).
    pub zone_survival: bool,
    pub raft: RaftTiming,
    pub limits: Limits,
    pub time: TimeSync,
    pub master: MasterPolicy,
    pub gateway: GatewayConfig,
    pub messages: MessagesConfig,
    pub auth: AuthConfig,
    /// TLS on the publish port (MISSION M9); None = plaintext.
    pub tls: Option<TlsConfig>,
    /// Media storage, credentials and edit rules (MISSION G, S).
    pub media: MediaConfig,
    /// Development or production trust settings (issue 14).
    pub security: Security,
    /// Application API keys and who may read `/metrics` (issue 14).
    pub access: AccessConfig,
    /// Mutual TLS on the sync port (issue 14); None = plaintext peers,
    /// allowed in development only.
    pub peer_tls: Option<PeerTlsConfig>,
    /// Presence change feeds: window, progress, watcher limits (issue 15).
    pub watch: WatchConfig,
    pub reads: ReadsConfig,
    /// How the node writes its log (issue 18: JSON lines for shippers).
    pub log: LogConfig,
    /// Supported IM modules and the outbox retry policy (issue 17).
    pub profile_sync: ProfileSyncConfig,
}

/// Fewest bytes of a `<module>` signing secret (Standard Webhooks: 24 to
/// 64 random bytes).
pub const MIN_MODULE_SECRET_BYTES: usize = 24;
/// Most bytes of a `<module>` signing secret.
pub const MAX_MODULE_SECRET_BYTES: usize = 64;
/// Largest `<module ca>` file read, bytes: a CA bundle of a few
/// certificates is a few KiB; a megabyte is far past any real one and keeps
/// a wrong path (a log, a disk image) from being read whole.
pub const MAX_MODULE_CA_BYTES: u64 = 1024 * 1024;

/// One `<module>` of `<profile-sync>`: an IM module users may bind
/// accounts of, and its third-party server.
#[derive(Clone, PartialEq, Eq)]
pub struct ModuleConfig {
    pub id: String,
    pub name: String,
    /// `http://` or `https://` URL updates are POSTed to.
    pub endpoint: String,
    /// The decoded signing secret (the bytes after `whsec_`, base64-decoded).
    pub secret: Vec<u8>,
    pub timeout_ms: u64,
    /// `ca`: the DER certificates trusted for an https:// endpoint instead
    /// of the public roots (empty: the public roots).
    pub ca: Vec<Vec<u8>>,
}

impl std::fmt::Debug for ModuleConfig {
    /// Never shows the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModuleConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("endpoint", &self.endpoint)
            .field("secret", &"<set>")
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_certificates", &self.ca.len())
            .finish()
    }
}

impl ProfileSyncConfig {
    /// The module with this id, if it is supported.
    pub fn module(&self, id: &str) -> Option<&ModuleConfig> {
        self.modules.iter().find(|m| m.id == id)
    }
}

/// `<access>`: the applications' API keys (stored hashed) and whether
/// `/metrics` needs one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccessConfig {
    /// `/metrics` answers anyone (else it needs the `metrics` scope).
    pub public_metrics: bool,
    /// Names and hashes are unique.
    pub keys: Vec<ApiKeyConfig>,
}

/// One `<api-key>`: an application, its key's SHA-256 and its scopes.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyConfig {
    pub name: String,
    pub digest: [u8; 32],
    /// Sorted, without repeats.
    pub scopes: Vec<herald_proto::apikey::Scope>,
}

impl std::fmt::Debug for ApiKeyConfig {
    /// The hash as the XML writes it (`heraldd --check` prints the config).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeyConfig")
            .field("name", &self.name)
            .field("hash", &herald_proto::apikey::digest_text(&self.digest))
            .field("scopes", &self.scopes.iter().map(|s| s.name()).collect::<Vec<_>>())
            .finish()
    }
}

impl Config {
    /// The development credentials this configuration uses, as a person
    /// reads them (empty: none): the HMAC key of the shipped files and the
    /// development API key ([`herald_proto::apikey::DEVELOPMENT_KEY`]).
    pub fn development_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        if matches!(&self.auth, AuthConfig::Hmac { key, .. } if key == DEVELOPMENT_HMAC_KEY) {
            out.push("the <auth> HMAC key is the development key of conf/herald.xml".to_string());
        }
        let dev = herald_proto::apikey::digest(herald_proto::apikey::DEVELOPMENT_KEY);
        for k in self.access.keys.iter().filter(|k| k.digest == dev) {
            out.push(format!(
                "<api-key name=\"{}\"> is the development API key of conf/herald.xml",
                k.name
            ));
        }
        out
    }
}

/// `<log format>`: how heraldd writes its log lines to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    #[default]
    Text,
    /// One JSON object per line, each with `cluster` and `node` (for log
    /// shippers).
    Json,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `<security mode>`: whether development keys and plaintext peers are
/// allowed (with a warning) or refused at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityMode {
    #[default]
    Development,
    Production,
}

impl SecurityMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityMode::Development => "development",
            SecurityMode::Production => "production",
        }
    }
}

impl GatewayConfig {
    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_ms * self.heartbeat_misses as u64
    }
}

impl std::fmt::Debug for MediaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaConfig")
            .field("max_bytes", &self.max_bytes)
            .field("quota_bytes_per_user", &self.quota_bytes_per_user)
            .field("reserve_bytes", &self.reserve_bytes)
            .field("replicas", &self.replicas)
            .field("upload_ttl_ms", &self.upload_ttl_ms)
            .field("access_ttl_ms", &self.access_ttl_ms)
            .field("gc_grace_ms", &self.gc_grace_ms)
            .field("repair_interval_ms", &self.repair_interval_ms)
            .field("max_uploads", &self.max_uploads)
            .field("max_uploads_per_user", &self.max_uploads_per_user)
            .field("body_timeout_ms", &self.body_timeout_ms)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("edit", &self.edit)
            .finish()
    }
}

impl MediaConfig {
    /// The media key derived from an HMAC auth key (HMAC of a fixed label),
    /// so a session token key never doubles as a credential key.
    pub fn derived_key(auth: &AuthConfig) -> Option<Vec<u8>> {
        match auth {
            AuthConfig::Hmac { key, .. } => {
                Some(crate::media::credential::derive_key(key, b"herald media credentials v1"))
            }
            _ => None,
        }
    }

    /// Replicas an upload needs with `voters` voters.
    pub fn required_replicas(&self, voters: usize) -> usize {
        let n = if self.replicas == 0 { voters / 2 + 1 } else { self.replicas };
        n.clamp(1, voters.max(1))
    }
}

/// `<auth>`: how session tokens are checked (MISSION M6).
///
/// `Debug` never shows the HMAC key (`heraldd --check` prints the config).
#[derive(Clone, PartialEq, Eq, Default)]
pub enum AuthConfig {
    /// Built-in HMAC-SHA256 signed tokens (`herald token issue`); tokens
    /// expiring more than `max_token_lifetime_s` ahead are refused.
    Hmac { key: Vec<u8>, max_token_lifetime_s: u64 },
    /// An external service: POST {url} with JSON {uid, token, client};
    /// 2xx accepts, 401/403 refuses.
    External { url: String, timeout_ms: u64 },
    /// No `<auth>` element: every session is refused (`auth_not_configured`).
    #[default]
    Unconfigured,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthConfig::Hmac { key, max_token_lifetime_s } => f
                .debug_struct("Hmac")
                .field("key", &format_args!("<{} bytes, redacted>", key.len()))
                .field("max_token_lifetime_s", max_token_lifetime_s)
                .finish(),
            AuthConfig::External { url, timeout_ms } => f
                .debug_struct("External")
                .field("url", url)
                .field("timeout_ms", timeout_ms)
                .finish(),
            AuthConfig::Unconfigured => f.write_str("Unconfigured"),
        }
    }
}

/// `<tls>`: certificate and key (PEM) for the publish port. The paths are
/// resolved against the configuration file's directory and were readable
/// files when the configuration was parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Roots this node trusts when it calls other nodes' publish ports;
    /// defaults to `cert` (one self-signed cluster certificate).
    pub ca: Option<PathBuf>,
}

/// `<peer-tls>`: mutual TLS between peers on the sync port. Every node
/// presents `cert` (issued by `ca` for `node<N>.<cluster>.herald`, see
/// `herald cert`) and accepts only peers whose certificate `ca` issued. The
/// paths are resolved like `<tls>` paths and were readable files when the
/// configuration was parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerTlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `<server>` of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub number: u64,
    pub host: String,
    pub sync_port: u16,
    pub time_port: u16,
    pub publish_port: u16,
    /// The data center (zone) the server stands in (issue 16).
    pub zone: String,
    /// Voter, or replica: a Raft learner kept as one (never promoted by
    /// the cluster itself; it serves local, bounded and min-revision reads).
    pub role: ServerRole,
    /// Where this node dials that server's sync port, when not at
    /// `host:sync-port` (a WAN proxy or tunnel between zones): only this
    /// node's own file says it, so each node can reach the others its own
    /// way; the certificate checked is still that server's.
    pub sync_via: Option<String>,
}

/// `<reads when-stale>`: what a `bounded` read does when this node is too
/// stale even after waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhenStale {
    /// Answer `too_stale`.
    Fail,
    /// Serve it as a linearizable read (read index from the leader).
    #[default]
    Forward,
}

impl WhenStale {
    pub fn as_str(self) -> &'static str {
        match self {
            WhenStale::Fail => "fail",
            WhenStale::Forward => "forward",
        }
    }
}

/// The zone of a `<server>` that names none.
pub const DEFAULT_ZONE: &str = "default";

/// `<server role>`: voter (counts for the majority) or replica (a learner
/// that stays one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerRole {
    #[default]
    Voter,
    Replica,
}

impl ServerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ServerRole::Voter => "voter",
            ServerRole::Replica => "replica",
        }
    }
}

impl Server {
    /// `host:sync-port` (an IPv6 host is bracketed).
    pub fn sync_addr(&self) -> String {
        host_port(&self.host, self.sync_port)
    }
    /// `host:publish-port` (an IPv6 host is bracketed).
    pub fn publish_addr(&self) -> String {
        host_port(&self.host, self.publish_port)
    }
    /// Where this node dials the server's sync port: `sync-via` when the
    /// file gives one, else `host:sync-port`.
    pub fn dial_sync_addr(&self) -> String {
        self.sync_via.clone().unwrap_or_else(|| self.sync_addr())
    }
    /// `host:time-port` (an IPv6 host is bracketed).
    pub fn time_addr(&self) -> String {
        host_port(&self.host, self.time_port)
    }
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl Config {
    /// This node's own entry of the server list.
    pub fn this_server(&self) -> &Server {
        self.server(self.node).expect("validated: <node number> is in the server list")
    }

    /// The server with this number, if any.
    pub fn server(&self, number: u64) -> Option<&Server> {
        self.servers.iter().find(|s| s.number == number)
    }

    /// Applies command-line style overrides to this node's own server entry
    /// and data directory, then re-validates. Returns one human-readable line
    /// per override applied (for the caller to log; an override is never
    /// silent). On error `self` is left unchanged.
    pub fn apply_overrides(&mut self, o: &Overrides) -> Result<Vec<String>, ConfigError> {
        let mut next = self.clone();
        let mut lines = Vec::new();
        let node = next.node;
        let refuse = |element: String, field: &str, message: String| ConfigError::Override {
            file: self.source.clone(),
            element,
            field: field.to_string(),
            message,
        };

        if let Some(dir) = &o.data_dir {
            if dir.as_os_str().is_empty() {
                return Err(refuse("<node>".into(), "data-dir", "must not be empty".into()));
            }
            lines.push(format!(
                "data-dir overridden: {} -> {}",
                next.data_dir.display(),
                dir.display()
            ));
            next.data_dir = dir.clone();
        }

        let Some(me) = next.servers.iter_mut().find(|s| s.number == node) else {
            return Err(refuse(
                "<node>".into(),
                "number",
                format!("node {node} is not in the server list"),
            ));
        };
        let ports: [(&str, Option<u16>, &mut u16); 3] = [
            ("sync-port", o.sync_port, &mut me.sync_port),
            ("time-port", o.time_port, &mut me.time_port),
            ("publish-port", o.publish_port, &mut me.publish_port),
        ];
        for (field, new, slot) in ports {
            let Some(new) = new else { continue };
            if new == 0 {
                return Err(refuse(
                    server_desc(node),
                    field,
                    "port 0 is not allowed (1 to 65535)".into(),
                ));
            }
            lines.push(format!("{field} of server {node} overridden: {} -> {new}", *slot));
            *slot = new;
        }

        if let Err(p) = check(&next, Some(node)) {
            return Err(refuse(p.site.describe(), p.fields[0], p.message));
        }
        *self = next;
        Ok(lines)
    }
}

/// Values that replace parts of the loaded configuration (e.g. from the
/// command line). Ports apply to this node's own `<server>` entry.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub sync_port: Option<u16>,
    pub time_port: Option<u16>,
    pub publish_port: Option<u16>,
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Io { file: file.clone(), source })?;
    parse(&text, &file)
}

/// Parses and validates a configuration; `source` names it in errors and
/// becomes [`Config::source`].
///
/// Relative file paths in the configuration (`<auth key-file>`, `<tls>`) are
/// resolved against the directory of `source` when it is a file path, and
/// against the current directory for [`EMBEDDED_NAME`] or a bare file name.
pub fn parse(text: &str, source: &str) -> Result<Config, ConfigError> {
    let base_dir = (source != EMBEDDED_NAME)
        .then(|| Path::new(source).parent())
        .flatten()
        .filter(|d| !d.as_os_str().is_empty());
    let ctx = Ctx { file: source, text, base_dir };
    let root = ctx.tree()?;
    ctx.read_config(&root)
}

#[cfg(test)]
mod tests;
