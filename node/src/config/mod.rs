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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

mod error;
mod rules;
mod xml;

pub use error::ConfigError;
use rules::{check, Site};
use xml::{server_desc, Ctx, Elem};

/// The default configuration compiled into the binary (one node on 127.0.0.1).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../conf/herald.xml");
/// The `source` name used for [`EMBEDDED_DEFAULT`] in a [`Config`] and in errors.
pub const EMBEDDED_NAME: &str = "conf/herald.xml (embedded)";

/// Upper limit of `<limits max-request-bytes>` (64 MiB).
pub const MAX_REQUEST_BYTES_CAP: usize = 64 * 1024 * 1024;
/// Upper limit of `<limits max-ids-per-query>`.
pub const MAX_IDS_PER_QUERY_CAP: usize = 1_000_000;
/// Upper limit of `<messages max-body-bytes>` (1 MiB).
pub const MAX_BODY_BYTES_CAP: usize = 1024 * 1024;
/// Shortest key `<auth mode="hmac">` accepts, in bytes.
pub const MIN_HMAC_KEY_BYTES: usize = 16;
/// Default of `<auth mode="external" timeout-ms>`.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 2_000;

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
}

/// `<gateway>`: client sessions (MISSION M5, M7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Clients heartbeat at least this often (told in the Welcome frame).
    pub heartbeat_ms: u64,
    /// A session that sent nothing for heartbeat_ms * heartbeat_misses ends
    /// and its user goes offline on that client.
    pub heartbeat_misses: u32,
    /// Sessions of a gateway node that has been unreachable from the leader
    /// this long are marked offline by the cluster.
    pub grace_ms: u64,
    /// How long a submission waits for online recipients to acknowledge
    /// before answering "stored" (or "dropped") for them.
    pub push_timeout_ms: u64,
    /// Open sessions this node accepts; more are refused with `overloaded`.
    pub max_sessions: usize,
    /// How often a node asks the others for their load.
    pub load_poll_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            heartbeat_ms: 30_000,
            heartbeat_misses: 3,
            grace_ms: 60_000,
            push_timeout_ms: 2_000,
            max_sessions: 100_000,
            load_poll_ms: 1_000,
        }
    }
}

impl GatewayConfig {
    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_ms * self.heartbeat_misses as u64
    }
}

/// `<messages>`: message submission and the offline store (MISSION M1-M4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessagesConfig {
    /// Largest message body; larger is refused with 413.
    pub max_body_bytes: usize,
    /// Most messages stored for one user; beyond, new ones are rejected for
    /// that user (`quota_exceeded`), never older ones evicted.
    pub quota_per_user: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_window_s: u64,
    /// Most recipients of one submission (a `to` list or a group).
    pub max_recipients: usize,
    /// Longest lifetime (`ttl_s`) a message may ask for.
    pub max_ttl_s: u64,
}

impl Default for MessagesConfig {
    fn default() -> Self {
        MessagesConfig {
            max_body_bytes: 64 * 1024,
            quota_per_user: 1_000,
            idempotency_window_s: 86_400,
            max_recipients: 1_000,
            max_ttl_s: 7 * 86_400,
        }
    }
}

/// Upper limit of `<media max-bytes>` (64 GiB).
pub const MAX_MEDIA_BYTES_CAP: u64 = 64 << 30;

/// `<media>`: uploads, replicas, credentials, garbage collection and the
/// `<edit>` rules (MISSION G2, G4, S1–S4).
///
/// `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct MediaConfig {
    /// Largest media an upload may state; larger is refused (413).
    pub max_bytes: u64,
    /// Bytes one user may share in all (0 = no quota).
    pub quota_bytes_per_user: u64,
    /// Free disk space always kept: an upload needing it is refused (507).
    pub reserve_bytes: u64,
    /// Nodes that must hold a fsynced copy before an upload is
    /// acknowledged; 0 = a majority of the voters.
    pub replicas: usize,
    /// Lifetime of an upload credential (and of an unfinished upload).
    pub upload_ttl_ms: u64,
    /// Lifetime of a download (access) credential.
    pub access_ttl_ms: u64,
    /// Media nobody shares any more is deleted after this long.
    pub gc_grace_ms: u64,
    /// How often a node checks it holds what it should (and collects garbage).
    pub repair_interval_ms: u64,
    /// Uploads open at once on one node (each holds a temp file).
    pub max_uploads: usize,
    /// HMAC key of upload and access credentials (any node checks them);
    /// defaults to one derived from the `<auth mode="hmac">` key. None:
    /// media is not configured (503).
    pub key: Option<Vec<u8>>,
    pub edit: crate::media::edit::EditRules,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            max_bytes: 4 << 30,
            quota_bytes_per_user: 0,
            reserve_bytes: 256 << 20,
            replicas: 0,
            upload_ttl_ms: 600_000,
            access_ttl_ms: 300_000,
            gc_grace_ms: 3_600_000,
            repair_interval_ms: 5_000,
            max_uploads: 64,
            key: None,
            edit: crate::media::edit::EditRules::default(),
        }
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
            AuthConfig::Hmac { key } => {
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
    /// Built-in HMAC-SHA256 signed tokens (`herald token issue`).
    Hmac { key: Vec<u8> },
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
            AuthConfig::Hmac { key } => f
                .debug_struct("Hmac")
                .field("key", &format_args!("<{} bytes, redacted>", key.len()))
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

/// `<time>`: SNTP time synchronisation with the time master (MISSION P5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeSync {
    /// How often a node polls the time master.
    pub interval_ms: u64,
    /// A node corrects its cluster clock when off by more than this.
    pub tolerance_ms: u64,
    /// Samples per poll; the one with the smallest round trip is used.
    pub samples: u32,
}

impl Default for TimeSync {
    fn default() -> Self {
        TimeSync { interval_ms: 1000, tolerance_ms: 5, samples: 4 }
    }
}

/// `<master>`: the numbered master (MISSION P6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterPolicy {
    /// Move leadership to the lowest-numbered healthy, caught-up voter.
    pub prefer_lowest: bool,
    /// How long a lower-numbered voter must be healthy and caught up before
    /// leadership moves to it (stops a flapping node making leadership flap).
    pub hold_down_ms: u64,
}

impl Default for MasterPolicy {
    fn default() -> Self {
        MasterPolicy { prefer_lowest: true, hold_down_ms: 3000 }
    }
}

/// One `<server>` of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub number: u64,
    pub host: String,
    pub sync_port: u16,
    pub time_port: u16,
    pub publish_port: u16,
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

/// `<raft>`: Raft timing. Every field is at least 1, and
/// `heartbeat_ms < election_min_ms < election_max_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_logs: u64,
    pub write_timeout_ms: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat_ms: 100,
            election_min_ms: 400,
            election_max_ms: 800,
            snapshot_logs: 20_000,
            write_timeout_ms: 5_000,
        }
    }
}

/// `<limits>`: request limits. None is 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_ids_per_query: usize,
    pub max_request_bytes: usize,
    pub max_events_per_request: usize,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ids_per_query: 10_000,
            max_request_bytes: 4 * 1024 * 1024,
            max_events_per_request: 10_000,
            max_connections: 1024,
        }
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

// ---------------------------------------------------------------------------
// Stage 2: tree -> Config, against the schema.

/// Where an element sits, for pointing cross-field errors at it.
struct Loc {
    at: usize,
    desc: String,
    attrs: Vec<(String, usize)>,
}

impl Loc {
    fn of(e: &Elem) -> Loc {
        Loc {
            at: e.at,
            desc: e.describe(),
            attrs: e.attrs.iter().map(|a| (a.name.clone(), a.at)).collect(),
        }
    }
    fn has(&self, field: &str) -> Option<usize> {
        self.attrs.iter().find(|(n, _)| n == field).map(|(_, at)| *at)
    }
}

/// The attributes of one element, with unknown names already refused.
struct Attrs<'c, 'e> {
    ctx: &'c Ctx<'c>,
    el: &'e Elem,
}

impl<'c> Ctx<'c> {
    fn attrs<'e>(&'c self, el: &'e Elem, allowed: &[&str]) -> Result<Attrs<'c, 'e>, ConfigError> {
        if let Some(bad) = el.attrs.iter().find(|a| !allowed.contains(&a.name.as_str())) {
            return Err(self.invalid(
                bad.at,
                el.describe(),
                Some(bad.name.clone()),
                format!("unknown attribute (allowed: {})", allowed.join(", ")),
            ));
        }
        Ok(Attrs { ctx: self, el })
    }
}

impl Attrs<'_, '_> {
    /// An error about attribute `name`: at the attribute if given, else at the element.
    fn err(&self, name: &str, message: impl Into<String>) -> ConfigError {
        let at = self.el.attr(name).map_or(self.el.at, |a| a.at);
        self.ctx.invalid(at, self.el.describe(), Some(name.to_string()), message)
    }

    fn req(&self, name: &str) -> Result<&str, ConfigError> {
        self.el
            .attr(name)
            .map(|a| a.value.as_str())
            .ok_or_else(|| self.err(name, "missing required attribute"))
    }

    /// A required string that is not empty or blank.
    fn req_text(&self, name: &str) -> Result<String, ConfigError> {
        let v = self.req(name)?;
        if v.trim().is_empty() {
            return Err(self.err(name, "must not be empty"));
        }
        Ok(v.to_string())
    }

    /// A decimal integer in `min..=max`.
    fn int(&self, name: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
        let range = if max == u64::MAX {
            format!("an integer >= {min}")
        } else {
            format!("an integer from {min} to {max}")
        };
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.err(name, format!("expected {range}, got {v:?}")));
        }
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.err(name, format!("{v} is out of range: expected {range}"))),
        }
    }

    fn req_u64(&self, name: &str, min: u64) -> Result<u64, ConfigError> {
        self.int(name, self.req(name)?, min, u64::MAX)
    }

    fn req_port(&self, name: &str) -> Result<u16, ConfigError> {
        let n = self.int(name, self.req(name)?, 1, u16::MAX.into())?;
        Ok(u16::try_from(n).expect("range checked"))
    }

    fn opt_u64(&self, name: &str, default: u64, min: u64) -> Result<u64, ConfigError> {
        self.opt_u64_in(name, default, min, u64::MAX)
    }

    /// An optional integer in `min..=max`.
    fn opt_u64_in(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        match self.el.attr(name) {
            None => Ok(default),
            Some(a) => self.int(name, &a.value, min, max),
        }
    }

    /// The file named by the required attribute `name`, resolved against the
    /// configuration file's directory; it must be a readable regular file.
    fn req_file(&self, name: &str) -> Result<PathBuf, ConfigError> {
        let path = self.ctx.resolve(&self.req_text(name)?);
        match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(self.err(name, format!("{} is not a regular file", path.display()))),
            Err(e) => Err(self.err(name, format!("cannot read {}: {e}", path.display()))),
        }
    }

    /// Like [`Attrs::req_file`], for an optional attribute.
    fn opt_file(&self, name: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.el.attr(name) {
            None => Ok(None),
            Some(_) => self.req_file(name).map(Some),
        }
    }

    fn opt_usize(
        &self,
        name: &str,
        default: usize,
        min: usize,
        max: usize,
    ) -> Result<usize, ConfigError> {
        match self.el.attr(name) {
            None => Ok(default),
            Some(a) => {
                let n = self.int(name, &a.value, min as u64, max as u64)?;
                Ok(usize::try_from(n).expect("range checked"))
            }
        }
    }

    fn opt_bool(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        match self.el.attr(name).map(|a| a.value.as_str()) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(v) => Err(self.err(name, format!("expected \"true\" or \"false\", got {v:?}"))),
        }
    }
}

const HERALD_CHILDREN: &[&str] = &[
    "node", "servers", "raft", "limits", "time", "master", "gateway", "messages", "auth", "tls",
    "media",
];

/// The valid values of `<auth mode>`, with the attributes each allows.
const AUTH_MODES: &[(&str, &[&str])] =
    &[("hmac", &["mode", "key", "key-file"]), ("external", &["mode", "url", "timeout-ms"])];

impl Ctx<'_> {
    /// Refuses children not in `allowed` (an empty list: no children at all).
    fn only_children(&self, el: &Elem, allowed: &[&str]) -> Result<(), ConfigError> {
        if let Some(bad) = el.children.iter().find(|c| !allowed.contains(&c.name.as_str())) {
            let message = if allowed.is_empty() {
                format!("unknown element; {} takes no child elements", el.describe())
            } else {
                let list: Vec<String> = allowed.iter().map(|a| format!("<{a}>")).collect();
                format!("unknown element (allowed here: {})", list.join(", "))
            };
            return Err(self.invalid(
                bad.at,
                el.describe(),
                Some(format!("<{}>", bad.name)),
                message,
            ));
        }
        Ok(())
    }

    /// The child `name` if present; a second one is refused.
    fn at_most_one<'e>(&self, el: &'e Elem, name: &str) -> Result<Option<&'e Elem>, ConfigError> {
        let mut found = el.children.iter().filter(|c| c.name == name);
        let first = found.next();
        if let (Some(first), Some(dup)) = (first, found.next()) {
            let (line, _) = self.line_col(first.at);
            return Err(self.invalid(
                dup.at,
                el.describe(),
                Some(format!("<{name}>")),
                format!("duplicate element (first given at line {line}); at most one is allowed"),
            ));
        }
        Ok(first)
    }

    fn exactly_one<'e>(&self, el: &'e Elem, name: &str) -> Result<&'e Elem, ConfigError> {
        self.at_most_one(el, name)?.ok_or_else(|| {
            self.invalid(
                el.at,
                el.describe(),
                Some(format!("<{name}>")),
                "missing required element",
            )
        })
    }

    fn read_config(&self, root: &Elem) -> Result<Config, ConfigError> {
        if root.name != "herald" {
            return Err(self.invalid(
                root.at,
                format!("<{}>", root.name),
                Some(format!("<{}>", root.name)),
                "unknown root element; expected <herald>",
            ));
        }
        let a = self.attrs(root, &["cluster"])?;
        let cluster = a.req_text("cluster")?;
        self.only_children(root, HERALD_CHILDREN)?;
        let node_el = self.exactly_one(root, "node")?;
        let servers_el = self.exactly_one(root, "servers")?;
        let raft_el = self.at_most_one(root, "raft")?;
        let limits_el = self.at_most_one(root, "limits")?;
        let time_el = self.at_most_one(root, "time")?;
        let master_el = self.at_most_one(root, "master")?;
        let gateway_el = self.at_most_one(root, "gateway")?;
        let messages_el = self.at_most_one(root, "messages")?;
        let auth_el = self.at_most_one(root, "auth")?;
        let tls_el = self.at_most_one(root, "tls")?;
        let media_el = self.at_most_one(root, "media")?;

        // <node>
        self.only_children(node_el, &[])?;
        let a = self.attrs(node_el, &["number", "data-dir", "join"])?;
        let node = a.req_u64("number", 1)?;
        let data_dir = PathBuf::from(a.req_text("data-dir")?);
        let join = a.opt_bool("join", false)?;

        // <servers>
        self.attrs(servers_el, &[])?;
        self.only_children(servers_el, &["server"])?;
        if servers_el.children.is_empty() {
            return Err(self.invalid(
                servers_el.at,
                "<servers>".into(),
                Some("<server>".into()),
                "at least one <server> is required",
            ));
        }
        let mut servers = Vec::new();
        let mut server_locs = HashMap::new();
        for el in &servers_el.children {
            self.only_children(el, &[])?;
            let a =
                self.attrs(el, &["number", "host", "sync-port", "time-port", "publish-port"])?;
            let number = a.req_u64("number", 1)?;
            let host = a.req_text("host")?;
            if host.chars().any(char::is_whitespace) {
                return Err(a.err("host", format!("must not contain whitespace, got {host:?}")));
            }
            let server = Server {
                number,
                host,
                sync_port: a.req_port("sync-port")?,
                time_port: a.req_port("time-port")?,
                publish_port: a.req_port("publish-port")?,
            };
            if let Some(first) = server_locs.insert(number, Loc::of(el)) {
                let (line, _) = self.line_col(first.at);
                return Err(a.err(
                    "number",
                    format!("duplicate server number {number} (first used at line {line})"),
                ));
            }
            servers.push(server);
        }

        // <raft>
        let raft = match raft_el {
            None => RaftTiming::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = RaftTiming::default();
                let a = self.attrs(
                    el,
                    &[
                        "heartbeat-ms",
                        "election-min-ms",
                        "election-max-ms",
                        "snapshot-logs",
                        "write-timeout-ms",
                    ],
                )?;
                RaftTiming {
                    heartbeat_ms: a.opt_u64("heartbeat-ms", d.heartbeat_ms, 1)?,
                    election_min_ms: a.opt_u64("election-min-ms", d.election_min_ms, 1)?,
                    election_max_ms: a.opt_u64("election-max-ms", d.election_max_ms, 1)?,
                    snapshot_logs: a.opt_u64("snapshot-logs", d.snapshot_logs, 1)?,
                    write_timeout_ms: a.opt_u64("write-timeout-ms", d.write_timeout_ms, 1)?,
                }
            }
        };

        // <limits>
        let limits = match limits_el {
            None => Limits::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = Limits::default();
                let a = self.attrs(
                    el,
                    &[
                        "max-ids-per-query",
                        "max-request-bytes",
                        "max-events-per-request",
                        "max-connections",
                    ],
                )?;
                Limits {
                    max_ids_per_query: a.opt_usize(
                        "max-ids-per-query",
                        d.max_ids_per_query,
                        1,
                        MAX_IDS_PER_QUERY_CAP,
                    )?,
                    max_request_bytes: a.opt_usize(
                        "max-request-bytes",
                        d.max_request_bytes,
                        1,
                        MAX_REQUEST_BYTES_CAP,
                    )?,
                    max_events_per_request: a.opt_usize(
                        "max-events-per-request",
                        d.max_events_per_request,
                        1,
                        usize::MAX,
                    )?,
                    max_connections: a.opt_usize(
                        "max-connections",
                        d.max_connections,
                        1,
                        usize::MAX,
                    )?,
                }
            }
        };

        // <time>
        let time = match time_el {
            None => TimeSync::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = TimeSync::default();
                let a = self.attrs(el, &["interval-ms", "tolerance-ms", "samples"])?;
                TimeSync {
                    interval_ms: a.opt_u64("interval-ms", d.interval_ms, 1)?,
                    tolerance_ms: a.opt_u64("tolerance-ms", d.tolerance_ms, 1)?,
                    samples: a.opt_usize("samples", d.samples as usize, 1, 16)? as u32,
                }
            }
        };

        // <master>
        let master = match master_el {
            None => MasterPolicy::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = MasterPolicy::default();
                let a = self.attrs(el, &["prefer-lowest", "hold-down-ms"])?;
                MasterPolicy {
                    prefer_lowest: a.opt_bool("prefer-lowest", d.prefer_lowest)?,
                    hold_down_ms: a.opt_u64("hold-down-ms", d.hold_down_ms, 0)?,
                }
            }
        };

        // <gateway>
        let gateway = match gateway_el {
            None => GatewayConfig::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = GatewayConfig::default();
                let a = self.attrs(
                    el,
                    &[
                        "heartbeat-ms",
                        "heartbeat-misses",
                        "grace-ms",
                        "push-timeout-ms",
                        "max-sessions",
                        "load-poll-ms",
                    ],
                )?;
                GatewayConfig {
                    heartbeat_ms: a.opt_u64_in("heartbeat-ms", d.heartbeat_ms, 100, 3_600_000)?,
                    heartbeat_misses: a.opt_usize(
                        "heartbeat-misses",
                        d.heartbeat_misses as usize,
                        1,
                        100,
                    )? as u32,
                    grace_ms: a.opt_u64("grace-ms", d.grace_ms, 100)?,
                    push_timeout_ms: a.opt_u64_in(
                        "push-timeout-ms",
                        d.push_timeout_ms,
                        0,
                        60_000,
                    )?,
                    max_sessions: a.opt_usize("max-sessions", d.max_sessions, 1, 10_000_000)?,
                    load_poll_ms: a.opt_u64_in("load-poll-ms", d.load_poll_ms, 50, 60_000)?,
                }
            }
        };

        // <messages>, then its body limit against <limits max-request-bytes>.
        let body_vs_request = |body: usize| {
            format!(
                "max-body-bytes ({body}) must be less than <limits max-request-bytes> ({}): \
                 the JSON or gRPC request that submits a message carries its body",
                limits.max_request_bytes
            )
        };
        let messages = match messages_el {
            None => MessagesConfig::default(),
            Some(el) => {
                self.only_children(el, &[])?;
                let d = MessagesConfig::default();
                let a = self.attrs(
                    el,
                    &[
                        "max-body-bytes",
                        "quota-per-user",
                        "idempotency-window-s",
                        "max-recipients",
                        "max-ttl-s",
                    ],
                )?;
                let messages = MessagesConfig {
                    max_body_bytes: a.opt_usize(
                        "max-body-bytes",
                        d.max_body_bytes,
                        1,
                        MAX_BODY_BYTES_CAP,
                    )?,
                    quota_per_user: a.opt_usize(
                        "quota-per-user",
                        d.quota_per_user,
                        1,
                        1_000_000,
                    )?,
                    idempotency_window_s: a.opt_u64_in(
                        "idempotency-window-s",
                        d.idempotency_window_s,
                        1,
                        30 * 86_400,
                    )?,
                    max_recipients: a.opt_usize("max-recipients", d.max_recipients, 1, 100_000)?,
                    max_ttl_s: a.opt_u64_in("max-ttl-s", d.max_ttl_s, 1, 365 * 86_400)?,
                };
                if messages.max_body_bytes >= limits.max_request_bytes {
                    return Err(a.err("max-body-bytes", body_vs_request(messages.max_body_bytes)));
                }
                messages
            }
        };
        if messages.max_body_bytes >= limits.max_request_bytes {
            // No <messages>: the default body limit, so <limits> lowered the
            // request limit below it (the default request limit is larger).
            let el = limits_el.unwrap_or(root);
            return Err(Attrs { ctx: self, el }.err(
                "max-request-bytes",
                format!(
                    "{} (<messages> is absent, so max-body-bytes is its default {})",
                    body_vs_request(messages.max_body_bytes),
                    messages.max_body_bytes
                ),
            ));
        }

        // <auth>
        let auth = match auth_el {
            None => AuthConfig::Unconfigured,
            Some(el) => self.read_auth(el)?,
        };

        // <tls>
        let tls = match tls_el {
            None => None,
            Some(el) => {
                self.only_children(el, &[])?;
                let a = self.attrs(el, &["cert", "key", "ca"])?;
                Some(TlsConfig {
                    cert: a.req_file("cert")?,
                    key: a.req_file("key")?,
                    ca: a.opt_file("ca")?,
                })
            }
        };

        // <media> (after <auth>: its key defaults to one derived from the HMAC key)
        let media = match media_el {
            None => MediaConfig { key: MediaConfig::derived_key(&auth), ..MediaConfig::default() },
            Some(el) => self.read_media(el, &auth)?,
        };

        let mut config = Config {
            source: self.file.to_string(),
            cluster,
            node,
            join,
            data_dir,
            servers,
            raft,
            limits,
            time,
            master,
            gateway,
            messages,
            auth,
            tls,
            media,
        };
        // Checked in document order, so a clash is reported at the later entry.
        if let Err(p) = check(&config, None) {
            let loc = match p.site {
                Site::Node => Loc::of(node_el),
                Site::Raft => raft_el.map_or_else(|| Loc::of(root), Loc::of),
                Site::Server(n) => server_locs.remove(&n).expect("every server has a location"),
            };
            let field =
                p.fields.iter().copied().find(|f| loc.has(f).is_some()).unwrap_or(p.fields[0]);
            let at = loc.has(field).unwrap_or(loc.at);
            return Err(self.invalid(at, loc.desc, Some(field.to_string()), p.message));
        }
        config.servers.sort_by_key(|s| s.number);
        Ok(config)
    }
}

impl Ctx<'_> {
    /// `<auth>`: `mode` picks the variant and the attributes allowed with it.
    /// `key` or `key-file` (not both) of `el`: at least
    /// [`MIN_HMAC_KEY_BYTES`]; None when neither is given.
    fn read_key(&self, a: &Attrs, el: &Elem) -> Result<Option<Vec<u8>>, ConfigError> {
        let short =
            |n: usize| format!("the key is {n} bytes; at least {MIN_HMAC_KEY_BYTES} are required");
        match (el.attr("key"), el.attr("key-file")) {
            (Some(_), Some(_)) => Err(a.err("key-file", "give either key or key-file, not both")),
            (None, None) => Ok(None),
            (Some(k), None) => {
                let key = k.value.as_bytes().to_vec();
                if key.len() < MIN_HMAC_KEY_BYTES {
                    return Err(a.err("key", short(key.len())));
                }
                Ok(Some(key))
            }
            (None, Some(_)) => {
                let path = self.resolve(&a.req_text("key-file")?);
                let mut key = std::fs::read(&path).map_err(|e| {
                    a.err("key-file", format!("cannot read {}: {e}", path.display()))
                })?;
                let end = key.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
                key.truncate(end);
                if key.len() < MIN_HMAC_KEY_BYTES {
                    return Err(
                        a.err("key-file", format!("{} in {}", short(key.len()), path.display()))
                    );
                }
                Ok(Some(key))
            }
        }
    }

    /// `<media>` and its `<edit>` child.
    fn read_media(&self, el: &Elem, auth: &AuthConfig) -> Result<MediaConfig, ConfigError> {
        self.only_children(el, &["edit"])?;
        let d = MediaConfig::default();
        let a = self.attrs(
            el,
            &[
                "max-bytes",
                "quota-bytes-per-user",
                "reserve-bytes",
                "replicas",
                "upload-ttl-ms",
                "access-ttl-ms",
                "gc-grace-ms",
                "repair-interval-ms",
                "max-uploads",
                "key",
                "key-file",
            ],
        )?;
        let key = match self.read_key(&a, el)? {
            Some(k) => Some(k),
            None => MediaConfig::derived_key(auth),
        };
        let edit = match self.at_most_one(el, "edit")? {
            None => d.edit.clone(),
            Some(e) => {
                self.only_children(e, &[])?;
                let ea = self.attrs(
                    e,
                    &["enabled", "max-width", "max-height", "format", "quality", "max-pixels"],
                )?;
                let de = crate::media::edit::EditRules::default();
                let format = match e.attr("format").map(|x| x.value.as_str()) {
                    None | Some("keep") => None,
                    Some(v) => Some(crate::media::edit::OutFormat::parse(v).ok_or_else(|| {
                        ea.err("format", format!("{v:?}: expected one of jpeg, png, webp, keep"))
                    })?),
                };
                crate::media::edit::EditRules {
                    enabled: ea.opt_bool("enabled", true)?,
                    max_width: ea.opt_u64_in("max-width", 0, 0, 65_535)? as u32,
                    max_height: ea.opt_u64_in("max-height", 0, 0, 65_535)? as u32,
                    format,
                    quality: ea.opt_u64_in("quality", de.quality.into(), 1, 100)? as u8,
                    max_pixels: ea.opt_u64_in("max-pixels", de.max_pixels, 1, 1_000_000_000)?,
                }
            }
        };
        let m = MediaConfig {
            max_bytes: a.opt_u64_in("max-bytes", d.max_bytes, 1, MAX_MEDIA_BYTES_CAP)?,
            quota_bytes_per_user: a.opt_u64_in(
                "quota-bytes-per-user",
                d.quota_bytes_per_user,
                0,
                u64::MAX,
            )?,
            reserve_bytes: a.opt_u64_in("reserve-bytes", d.reserve_bytes, 0, u64::MAX)?,
            replicas: a.opt_u64_in("replicas", 0, 0, 15)? as usize,
            upload_ttl_ms: a.opt_u64_in("upload-ttl-ms", d.upload_ttl_ms, 1_000, 86_400_000)?,
            access_ttl_ms: a.opt_u64_in("access-ttl-ms", d.access_ttl_ms, 1_000, 86_400_000)?,
            gc_grace_ms: a.opt_u64_in("gc-grace-ms", d.gc_grace_ms, 0, 30 * 86_400_000)?,
            repair_interval_ms: a.opt_u64_in(
                "repair-interval-ms",
                d.repair_interval_ms,
                100,
                3_600_000,
            )?,
            max_uploads: a.opt_usize("max-uploads", d.max_uploads, 1, 10_000)?,
            key,
            edit,
        };
        Ok(m)
    }

    fn read_auth(&self, el: &Elem) -> Result<AuthConfig, ConfigError> {
        self.only_children(el, &[])?;
        let mut every: Vec<&str> = Vec::new();
        for name in AUTH_MODES.iter().flat_map(|(_, a)| a.iter().copied()) {
            if !every.contains(&name) {
                every.push(name);
            }
        }
        let a = self.attrs(el, &every)?;
        let modes: Vec<String> = AUTH_MODES.iter().map(|(m, _)| format!("{m:?}")).collect();
        let modes = modes.join(", ");
        let mode = match el.attr("mode") {
            Some(m) => m.value.as_str(),
            None => {
                return Err(
                    a.err("mode", format!("missing required attribute (valid modes: {modes})"))
                )
            }
        };
        let Some((mode, allowed)) = AUTH_MODES.iter().find(|(m, _)| *m == mode) else {
            return Err(a.err("mode", format!("unknown mode {mode:?} (valid modes: {modes})")));
        };
        if let Some(bad) = el.attrs.iter().find(|x| !allowed.contains(&x.name.as_str())) {
            return Err(a.err(
                &bad.name,
                format!("not used with mode=\"{mode}\" (allowed: {})", allowed.join(", ")),
            ));
        }
        match *mode {
            "hmac" => {
                let key = self.read_key(&a, el)?.ok_or_else(|| {
                    a.err("key", "missing required attribute: mode=\"hmac\" needs key or key-file")
                })?;
                Ok(AuthConfig::Hmac { key })
            }
            _ => {
                let url = a.req_text("url")?;
                if url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://")) {
                    return Err(a.err(
                        "url",
                        format!("{url:?}: https is not supported for the auth call; use an http:// URL (e.g. a local sidecar)"),
                    ));
                }
                let rest = url
                    .strip_prefix("http://")
                    .ok_or_else(|| a.err("url", format!("{url:?}: must start with http://")))?;
                if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace)
                {
                    return Err(a.err("url", format!("{url:?}: expected http://host:port/path")));
                }
                Ok(AuthConfig::External {
                    url,
                    timeout_ms: a.opt_u64_in("timeout-ms", DEFAULT_AUTH_TIMEOUT_MS, 1, 60_000)?,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests;
