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

use quick_xml::events::attributes::AttrError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The default configuration compiled into the binary (one node on 127.0.0.1).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../conf/herald.xml");
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

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not well-formed XML.
    #[error("{file}:{line}:{column}: malformed XML: {message}")]
    Syntax { file: String, line: usize, column: usize, message: String },
    /// Well-formed XML that breaks the schema or a rule. `element` is how the
    /// element is shown (`<server number="2">`); `field` is an attribute name
    /// (`sync-port`) or a child element (`<servers>`).
    #[error("{file}:{line}:{column}: {element}{}: {message}", with_space(.field))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        element: String,
        field: Option<String>,
        message: String,
    },
    /// An override (see [`Config::apply_overrides`]) was refused.
    #[error("{file}: after overrides: {element} {field}: {message}")]
    Override { file: String, element: String, field: String, message: String },
}

fn with_space(field: &Option<String>) -> String {
    field.as_deref().map(|f| format!(" {f}")).unwrap_or_default()
}

impl ConfigError {
    /// The file (or source name) the error is about.
    pub fn file(&self) -> &str {
        match self {
            ConfigError::Io { file, .. }
            | ConfigError::Syntax { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Override { file, .. } => file,
        }
    }

    /// 1-based line, when the error is about a place in the file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { line, .. } | ConfigError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// 1-based column (in characters), when the error is about a place in the file.
    pub fn column(&self) -> Option<usize> {
        match self {
            ConfigError::Syntax { column, .. } | ConfigError::Invalid { column, .. } => {
                Some(*column)
            }
            _ => None,
        }
    }

    /// The field at fault: an attribute name (`sync-port`) or a child element
    /// in angle brackets (`<servers>`).
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => field.as_deref(),
            ConfigError::Override { field, .. } => Some(field),
            _ => None,
        }
    }
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
// Stage 1: text -> tree of elements with byte offsets.

struct Attr {
    name: String,
    value: String,
    at: usize,
}

struct Elem {
    name: String,
    at: usize,
    attrs: Vec<Attr>,
    children: Vec<Elem>,
}

impl Elem {
    fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// How the element is named in messages: `<servers>`, `<server number="2">`.
    fn describe(&self) -> String {
        match (self.name.as_str(), self.attr("number")) {
            ("server", Some(n)) => format!("<server number=\"{}\">", n.value),
            _ => format!("<{}>", self.name),
        }
    }
}

fn server_desc(number: u64) -> String {
    format!("<server number=\"{number}\">")
}

struct Ctx<'a> {
    file: &'a str,
    text: &'a str,
    /// Directory relative file paths are resolved against; None: the
    /// current directory.
    base_dir: Option<&'a Path>,
}

impl Ctx<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    fn line_col(&self, at: usize) -> (usize, usize) {
        let mut at = at.min(self.text.len());
        while !self.text.is_char_boundary(at) {
            at -= 1;
        }
        let before = &self.text[..at];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    /// Byte offset of `part` within the text (it must borrow from it).
    fn offset_of(&self, part: &[u8], fallback: usize) -> usize {
        let base = self.text.as_ptr() as usize;
        let p = part.as_ptr() as usize;
        if p >= base && p <= base + self.text.len() {
            p - base
        } else {
            fallback
        }
    }

    fn syntax(&self, at: usize, message: impl Into<String>) -> ConfigError {
        let (line, column) = self.line_col(at);
        ConfigError::Syntax { file: self.file.to_string(), line, column, message: message.into() }
    }

    /// `path` as given in the file, resolved against [`Ctx::base_dir`].
    fn resolve(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        match self.base_dir {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        }
    }

    fn invalid(
        &self,
        at: usize,
        element: String,
        field: Option<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        let (line, column) = self.line_col(at);
        ConfigError::Invalid {
            file: self.file.to_string(),
            line,
            column,
            element,
            field,
            message: message.into(),
        }
    }

    fn tree(&self) -> Result<Elem, ConfigError> {
        let mut reader = Reader::from_str(self.text);
        reader.config_mut().check_end_names = true;
        let mut stack: Vec<Elem> = Vec::new();
        let mut root: Option<Elem> = None;
        loop {
            let start = reader.buffer_position() as usize;
            let event = match reader.read_event() {
                Ok(e) => e,
                Err(e) => return Err(self.syntax(reader.error_position() as usize, e.to_string())),
            };
            let (opened, empty) = match &event {
                Event::Start(e) => (Some(e), false),
                Event::Empty(e) => (Some(e), true),
                _ => (None, false),
            };
            if let Some(e) = opened {
                let elem = self.element(e, start)?;
                if stack.is_empty() && root.is_some() {
                    return Err(self.syntax(
                        start,
                        format!("second root element <{}>; the document must have exactly one root <herald>", elem.name),
                    ));
                }
                if empty {
                    attach(&mut stack, &mut root, elem);
                } else {
                    stack.push(elem);
                }
                continue;
            }
            match event {
                Event::End(_) => match stack.pop() {
                    Some(done) => attach(&mut stack, &mut root, done),
                    None => return Err(self.syntax(start, "end tag without a start tag")),
                },
                Event::Text(t) => {
                    let raw: &[u8] = &t;
                    if let Some(skip) = raw.iter().position(|b| !b.is_ascii_whitespace()) {
                        return Err(self.text_error(&stack, start + skip, raw));
                    }
                }
                Event::CData(_) | Event::GeneralRef(_) => {
                    return Err(self.text_error(&stack, start, b""));
                }
                Event::Comment(_) | Event::Decl(_) => {}
                Event::PI(_) => {
                    return Err(self.syntax(start, "processing instructions are not allowed"))
                }
                Event::DocType(_) => {
                    return Err(self.syntax(start, "a DOCTYPE declaration is not allowed"))
                }
                Event::Eof => {
                    if let Some(open) = stack.last() {
                        let (line, _) = self.line_col(open.at);
                        return Err(self.syntax(
                            start,
                            format!(
                                "unexpected end of file: <{}> opened at line {line} is not closed",
                                open.name
                            ),
                        ));
                    }
                    return root
                        .ok_or_else(|| self.syntax(start, "no root element; expected <herald>"));
                }
                Event::Start(_) | Event::Empty(_) => unreachable!("handled above"),
            }
        }
    }

    fn text_error(&self, stack: &[Elem], at: usize, raw: &[u8]) -> ConfigError {
        let shown: String = String::from_utf8_lossy(raw).trim().chars().take(30).collect();
        let what = if shown.is_empty() {
            "unexpected text content".to_string()
        } else {
            format!("unexpected text {shown:?}")
        };
        match stack.last() {
            Some(parent) => self.invalid(
                at,
                parent.describe(),
                None,
                format!("{what}; this element takes attributes only"),
            ),
            None => self.syntax(at, format!("{what} outside the root element")),
        }
    }

    /// A start tag -> element with its attributes (duplicates refused here).
    fn element(&self, e: &BytesStart<'_>, start: usize) -> Result<Elem, ConfigError> {
        let buf_at = self.offset_of(e, start + 1);
        let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
        let mut elem = Elem { name, at: start, attrs: Vec::new(), children: Vec::new() };
        let mut attrs = e.attributes();
        attrs.with_checks(false);
        for a in attrs {
            let a = a.map_err(|err| {
                let (rel, message) = match err {
                    AttrError::ExpectedEq(p) => {
                        (p, "attribute name must be followed by `=`".into())
                    }
                    AttrError::ExpectedValue(p) => {
                        (p, "`=` must be followed by a quoted value".into())
                    }
                    AttrError::UnquotedValue(p) => (p, "attribute value must be quoted".into()),
                    AttrError::ExpectedQuote(p, q) => {
                        (p, format!("attribute value is missing its closing {}", q as char))
                    }
                    AttrError::Duplicated(p, _) => (p, "duplicate attribute".into()),
                };
                self.syntax(buf_at + rel, format!("in <{}>: {message}", elem.name))
            })?;
            let at = self.offset_of(a.key.as_ref(), start);
            let attr_name = String::from_utf8_lossy(a.key.as_ref()).into_owned();
            let value = a
                .unescape_value()
                .map_err(|err| {
                    self.invalid(
                        at,
                        elem.describe(),
                        Some(attr_name.clone()),
                        format!("bad value: {err}"),
                    )
                })?
                .into_owned();
            if let Some(first) = elem.attr(&attr_name) {
                let (line, _) = self.line_col(first.at);
                return Err(self.invalid(
                    at,
                    elem.describe(),
                    Some(attr_name),
                    format!("duplicate attribute (first given at line {line})"),
                ));
            }
            elem.attrs.push(Attr { name: attr_name, value, at });
        }
        Ok(elem)
    }
}

fn attach(stack: &mut [Elem], root: &mut Option<Elem>, elem: Elem) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(elem),
        None => *root = Some(elem),
    }
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

// ---------------------------------------------------------------------------
// Stage 3: rules across fields, shared by parse and apply_overrides.

enum Site {
    Node,
    Server(u64),
    Raft,
}

impl Site {
    fn describe(&self) -> String {
        match self {
            Site::Node => "<node>".into(),
            Site::Server(n) => server_desc(*n),
            Site::Raft => "<raft>".into(),
        }
    }
}

/// A broken rule: at `site`, blamed on the first of `fields` that the element
/// spells out (or the first field if it spells out none).
struct Problem {
    site: Site,
    fields: &'static [&'static str],
    message: String,
}

/// Cross-field rules. Port clashes are reported at the later server in list
/// order, or at server `prefer` when it is one of the two.
fn check(c: &Config, prefer: Option<u64>) -> Result<(), Problem> {
    let mut used: HashMap<(String, u16), (u64, &'static str)> = HashMap::new();
    for s in &c.servers {
        let ports = [
            ("sync-port", s.sync_port),
            ("time-port", s.time_port),
            ("publish-port", s.publish_port),
        ];
        for (field, port) in ports {
            let key = (s.host.to_ascii_lowercase(), port);
            if let Some(&(other, other_field)) = used.get(&key) {
                let (at, at_field, by, by_field) = if prefer == Some(other) {
                    (other, other_field, s.number, field)
                } else {
                    (s.number, field, other, other_field)
                };
                return Err(Problem {
                    site: Site::Server(at),
                    fields: port_field(at_field),
                    message: format!("duplicate port {port} (also used by server {by} {by_field})"),
                });
            }
            used.insert(key, (s.number, field));
        }
    }

    if !c.servers.iter().any(|s| s.number == c.node) {
        let mut numbers: Vec<u64> = c.servers.iter().map(|s| s.number).collect();
        numbers.sort_unstable();
        let list: Vec<String> = numbers.iter().map(u64::to_string).collect();
        return Err(Problem {
            site: Site::Node,
            fields: &["number"],
            message: format!(
                "node {} is not in the server list (servers: {})",
                c.node,
                list.join(", ")
            ),
        });
    }

    let r = &c.raft;
    if r.election_min_ms >= r.election_max_ms {
        return Err(Problem {
            site: Site::Raft,
            fields: &["election-min-ms", "election-max-ms"],
            message: format!(
                "election-min-ms ({}) must be less than election-max-ms ({})",
                r.election_min_ms, r.election_max_ms
            ),
        });
    }
    if r.heartbeat_ms >= r.election_min_ms {
        return Err(Problem {
            site: Site::Raft,
            fields: &["heartbeat-ms", "election-min-ms"],
            message: format!(
                "heartbeat-ms ({}) must be less than election-min-ms ({})",
                r.heartbeat_ms, r.election_min_ms
            ),
        });
    }
    Ok(())
}

fn port_field(name: &str) -> &'static [&'static str] {
    match name {
        "sync-port" => &["sync-port"],
        "time-port" => &["time-port"],
        _ => &["publish-port"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE1: &str = include_str!("../../conf/cluster-3/node1.xml");
    const NODE2: &str = include_str!("../../conf/cluster-3/node2.xml");
    const NODE3: &str = include_str!("../../conf/cluster-3/node3.xml");
    const REFERENCE: &str = include_str!("../../conf/reference.xml");

    /// Every shipped file, by its path under conf/, with its text.
    const SHIPPED: &[(&str, &str)] = &[
        ("herald.xml", EMBEDDED_DEFAULT),
        ("cluster-3/node1.xml", NODE1),
        ("cluster-3/node2.xml", NODE2),
        ("cluster-3/node3.xml", NODE3),
        ("reference.xml", REFERENCE),
    ];

    /// A valid two-server file; the line numbers below refer to it.
    const BASE: &str = r#"<herald cluster="c">
  <node number="1" data-dir="./d"/>
  <servers>
    <server number="1" host="127.0.0.1" sync-port="7101" time-port="7102" publish-port="7103"/>
    <server number="2" host="127.0.0.1" sync-port="7201" time-port="7202" publish-port="7203"/>
  </servers>
</herald>
"#;

    /// BASE with the first `from` replaced by `to` (which must exist).
    fn edit(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "BASE has no {from:?}");
        BASE.replacen(from, to, 1)
    }

    /// BASE with `line` added as line 7, just before `</herald>`.
    fn with(line: &str) -> String {
        edit("</herald>", &format!("  {line}\n</herald>"))
    }

    /// Asserts `text` is refused at `line`, blaming `field`, with a message that
    /// starts with the file name and line and contains the field and `needle`.
    fn refused(text: &str, line: usize, field: Option<&str>, needle: &str) -> ConfigError {
        let err = parse(text, "t.xml").expect_err("must be refused");
        let msg = err.to_string();
        assert_eq!(err.line(), Some(line), "wrong line: {msg}");
        assert_eq!(err.field(), field, "wrong field: {msg}");
        assert!(msg.starts_with(&format!("t.xml:{line}:")), "no file:line: {msg}");
        if let Some(f) = field {
            assert!(msg.contains(f), "field not named: {msg}");
        }
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
        err
    }

    fn base() -> Config {
        parse(BASE, "t.xml").expect("BASE is valid")
    }

    // --- shipped files -----------------------------------------------------

    /// The embedded default is conf/herald.xml: one node on 127.0.0.1 with
    /// ports 7101/7102/7103, data dir ./data/node1, cluster herald-local.
    #[test]
    fn config_shipped_embedded_default() {
        let c = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).unwrap();
        assert_eq!(c.source, EMBEDDED_NAME);
        assert_eq!(c.cluster, "herald-local");
        assert_eq!(c.node, 1);
        assert!(!c.join);
        assert_eq!(c.data_dir, PathBuf::from("./data/node1"));
        assert_eq!(
            c.servers,
            vec![Server {
                number: 1,
                host: "127.0.0.1".into(),
                sync_port: 7101,
                time_port: 7102,
                publish_port: 7103,
            }]
        );
        assert_eq!(c.this_server().sync_addr(), "127.0.0.1:7101");
        assert_eq!(c.this_server().time_addr(), "127.0.0.1:7102");
        assert_eq!(c.this_server().publish_addr(), "127.0.0.1:7103");
        assert_eq!(c.raft, RaftTiming::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.gateway, GatewayConfig::default());
        assert_eq!(c.messages, MessagesConfig::default());
        assert_eq!(c.auth, dev_key());
        assert_eq!(c.tls, None);
    }

    /// The development HMAC key of the shipped files.
    fn dev_key() -> AuthConfig {
        AuthConfig::Hmac { key: b"herald-dev-key-change-me-0001".to_vec() }
    }

    /// Each cluster-3 file is node N of the same three servers (7N01/7N02/7N03)
    /// with data dir ./data/cluster-3/nodeN.
    #[test]
    fn config_shipped_cluster3_nodes() {
        let files = [NODE1, NODE2, NODE3];
        let configs: Vec<Config> = files
            .iter()
            .enumerate()
            .map(|(i, t)| parse(t, &format!("node{}.xml", i + 1)).unwrap())
            .collect();
        for (i, c) in configs.iter().enumerate() {
            let n = i as u64 + 1;
            assert_eq!(c.node, n);
            assert_eq!(c.cluster, "herald-local");
            assert!(!c.join);
            assert_eq!(c.data_dir, PathBuf::from(format!("./data/cluster-3/node{n}")));
            assert_eq!(c.servers, configs[0].servers, "same server list everywhere");
            assert_eq!(c.auth, dev_key(), "same development key everywhere");
            assert_eq!(c.this_server().number, n);
        }
        for s in &configs[0].servers {
            let base = 7000 + 100 * s.number as u16;
            assert_eq!(s.host, "127.0.0.1");
            assert_eq!((s.sync_port, s.time_port, s.publish_port), (base + 1, base + 2, base + 3));
        }
        let node2 = &configs[1];
        assert_eq!(node2.servers.len(), 3);
        assert_eq!(node2.this_server().publish_port, 7203);
        assert_eq!(node2.this_server().publish_addr(), "127.0.0.1:7203");
    }

    /// reference.xml parses, and the defaults it spells out are the real ones
    /// (<media> and its <edit> included).
    #[test]
    fn config_shipped_reference_parses() {
        let c = parse(REFERENCE, "reference.xml").unwrap();
        assert_eq!(c.raft, RaftTiming::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.time, TimeSync::default());
        assert_eq!(c.master, MasterPolicy::default());
        assert_eq!(c.gateway, GatewayConfig::default());
        assert_eq!(c.messages, MessagesConfig::default());
        assert_eq!(c.auth, dev_key(), "same key as cluster-3 node files");
        assert_eq!(c.tls, None, "<tls> is only shown in a comment");
        assert_eq!(
            c.media,
            MediaConfig {
                key: MediaConfig::derived_key(&dev_key()),
                ..MediaConfig::default()
            },
            "<media> and <edit> at their defaults; the key is derived (key-file only shown in a comment)"
        );
        assert_eq!(c.media.edit, crate::media::edit::EditRules::default());
        assert!(c.media.key.is_some());
        assert_eq!(c.servers.len(), 3);
        assert_eq!(c.node, 1);
    }

    /// Every .xml under conf/ is in SHIPPED (so is parsed by these tests), and
    /// every entry of SHIPPED matches the file on disk.
    #[test]
    fn config_shipped_all_files_covered() {
        // file!() is absolute, or relative to the workspace root while tests
        // run in the package directory (node/).
        let here = [PathBuf::from(file!()), PathBuf::from(format!("../{}", file!()))]
            .into_iter()
            .find(|p| p.exists())
            .expect("config.rs found from file!()");
        let conf = here.parent().unwrap().join("../../conf");
        let mut found = Vec::new();
        let mut dirs = vec![conf.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "xml") {
                    let rel = path.strip_prefix(&conf).unwrap();
                    found.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        found.sort();
        let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(found, listed);
        for (name, text) in SHIPPED {
            assert_eq!(std::fs::read_to_string(conf.join(name)).unwrap(), *text, "{name}");
            parse(text, name).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    // --- syntax ------------------------------------------------------------

    /// Comments (even before the root and inside lists), the XML declaration,
    /// blank lines and multi-line tags are all accepted.
    #[test]
    fn config_syntax_comments_decl_whitespace_allowed() {
        let text = format!(
            "<?xml version=\"1.0\"?>\n<!-- a -->\n\n{}<!-- end -->\n",
            edit("<servers>", "<servers>\n  <!-- list -->\n")
                .replace("<server number=\"2\"", "<server\n      number=\"2\"")
        );
        let c = parse(&text, "t.xml").unwrap();
        assert_eq!(c, Config { source: "t.xml".into(), ..base() });
    }

    /// A mismatched end tag is malformed XML, reported at its line.
    #[test]
    fn config_syntax_mismatched_end_tag() {
        let err = refused(&edit("</servers>", "</server>"), 6, None, "malformed XML");
        assert_eq!(err.column(), Some(3));
    }

    /// An unquoted attribute value is malformed XML, reported at its line.
    #[test]
    fn config_syntax_unquoted_attribute() {
        refused(&edit("sync-port=\"7201\"", "sync-port=7201"), 5, None, "must be quoted");
    }

    /// An element left open at the end of the file is reported, naming it.
    #[test]
    fn config_syntax_unclosed_element() {
        let text = BASE.replace("</herald>\n", "");
        refused(&text, 7, None, "<herald> opened at line 1 is not closed");
    }

    /// An empty document, a second root element and a wrong root are refused.
    #[test]
    fn config_syntax_root_element() {
        refused("<!-- nothing -->\n", 2, None, "no root element");
        refused(&format!("{BASE}<herald/>\n"), 8, None, "second root element");
        refused("\n<config/>\n", 2, Some("<config>"), "expected <herald>");
    }

    /// Text, CDATA or entity references inside an element are refused, naming
    /// the element; non-blank text outside the root is malformed.
    #[test]
    fn config_syntax_text_content_refused() {
        let e = refused(&edit("</servers>", "oops</servers>"), 6, None, "unexpected text \"oops\"");
        assert!(e.to_string().contains("<servers>"), "{e}");
        refused(&edit("<servers>", "<servers><![CDATA[x]]>"), 3, None, "<servers>");
        refused(&edit("<servers>", "<servers>&amp;"), 3, None, "<servers>");
        refused(&format!("{BASE}trailing\n"), 8, None, "outside the root element");
    }

    /// DOCTYPE declarations and processing instructions are refused.
    #[test]
    fn config_syntax_doctype_and_pi_refused() {
        refused(&format!("<!DOCTYPE herald>\n{BASE}"), 1, None, "DOCTYPE");
        refused(&edit("<servers>", "<servers>\n<?pi x?>"), 4, None, "processing instructions");
    }

    // --- unknown -----------------------------------------------------------

    /// An unknown element is refused at its own line, at every level.
    #[test]
    fn config_unknown_element_refused() {
        refused(&with("<cache size=\"1\"/>"), 7, Some("<cache>"), "unknown element");
        refused(
            &edit("</servers>", "  <host/>\n  </servers>"),
            6,
            Some("<host>"),
            "allowed here: <server>",
        );
        refused(
            &edit("data-dir=\"./d\"/>", "data-dir=\"./d\">\n    <x/>\n  </node>"),
            3,
            Some("<x>"),
            "<node> takes no child elements",
        );
    }

    /// An unknown attribute is refused on every element, naming it.
    #[test]
    fn config_unknown_attribute_refused() {
        refused(
            &edit("cluster=\"c\"", "cluster=\"c\" version=\"2\""),
            1,
            Some("version"),
            "unknown attribute",
        );
        refused(
            &edit("data-dir=\"./d\"", "data-dir=\"./d\" datadir=\"x\""),
            2,
            Some("datadir"),
            "<node>",
        );
        refused(&edit("<servers>", "<servers count=\"2\">"), 3, Some("count"), "<servers>");
        refused(
            &edit("host=\"127.0.0.1\"", "host=\"127.0.0.1\" port=\"1\""),
            4,
            Some("port"),
            "<server number=\"1\">",
        );
        refused(&with("<raft heartbeat=\"5\"/>"), 7, Some("heartbeat"), "<raft>");
        refused(&with("<limits max-ids=\"5\"/>"), 7, Some("max-ids"), "<limits>");
    }

    // --- missing -----------------------------------------------------------

    /// A missing required element is named, at the line of its parent.
    #[test]
    fn config_missing_element_refused() {
        let no_node = BASE.replace("  <node number=\"1\" data-dir=\"./d\"/>\n", "");
        refused(&no_node, 1, Some("<node>"), "missing required element");
        let no_servers =
            "\n<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"./d\"/>\n</herald>\n";
        refused(no_servers, 2, Some("<servers>"), "missing required element");
    }

    /// A missing required attribute is named, at the line of its element.
    #[test]
    fn config_missing_attribute_refused() {
        refused(&edit(" cluster=\"c\"", ""), 1, Some("cluster"), "missing required attribute");
        refused(&edit("number=\"1\" data-dir", "data-dir"), 2, Some("number"), "missing");
        refused(&edit(" data-dir=\"./d\"", ""), 2, Some("data-dir"), "missing");
        for field in ["number", "host", "sync-port", "time-port", "publish-port"] {
            let line5 = BASE.lines().nth(4).unwrap();
            let attr = line5.split(' ').find(|a| a.starts_with(&format!("{field}="))).unwrap();
            let text = BASE
                .replace(line5, &line5.replace(&format!(" {}", attr.trim_end_matches("/>")), ""));
            let err = refused(&text, 5, Some(field), "missing required attribute");
            assert_eq!(err.column(), Some(5), "at the element: {err}");
        }
    }

    // --- type --------------------------------------------------------------

    /// Ports must be decimal integers from 1 to 65535.
    #[test]
    fn config_type_port_refused() {
        for bad in ["abc", "0", "65536", "99999999999999999999999", "-1", "+7201", " 7201", ""] {
            let text = edit("sync-port=\"7201\"", &format!("sync-port=\"{bad}\""));
            refused(&text, 5, Some("sync-port"), "1 to 65535");
        }
        refused(&edit("time-port=\"7202\"", "time-port=\"7.2\""), 5, Some("time-port"), "\"7.2\"");
        refused(
            &edit("publish-port=\"7203\"", "publish-port=\"0x1c23\""),
            5,
            Some("publish-port"),
            "integer",
        );
        let max = parse(&edit("publish-port=\"7203\"", "publish-port=\"65535\""), "t.xml").unwrap();
        assert_eq!(max.server(2).unwrap().publish_port, 65535);
    }

    /// Server and node numbers must be integers of at least 1.
    #[test]
    fn config_type_number_refused() {
        refused(
            &edit("<server number=\"2\"", "<server number=\"0\""),
            5,
            Some("number"),
            "out of range",
        );
        refused(
            &edit("<server number=\"2\"", "<server number=\"two\""),
            5,
            Some("number"),
            "\"two\"",
        );
        refused(&edit("<node number=\"1\"", "<node number=\"0\""), 2, Some("number"), "<node>");
    }

    /// Empty or blank host, cluster and data-dir are refused, as is a host with
    /// whitespace inside.
    #[test]
    fn config_type_empty_text_refused() {
        refused(&edit("host=\"127.0.0.1\"", "host=\"\""), 4, Some("host"), "must not be empty");
        refused(&edit("host=\"127.0.0.1\"", "host=\"  \""), 4, Some("host"), "must not be empty");
        refused(&edit("host=\"127.0.0.1\"", "host=\"a b\""), 4, Some("host"), "whitespace");
        refused(&edit("cluster=\"c\"", "cluster=\"\""), 1, Some("cluster"), "must not be empty");
        refused(
            &edit("data-dir=\"./d\"", "data-dir=\"\""),
            2,
            Some("data-dir"),
            "must not be empty",
        );
    }

    /// join accepts exactly "true" or "false" and defaults to false.
    #[test]
    fn config_type_join_bool() {
        assert!(!base().join);
        let c =
            parse(&edit("data-dir=\"./d\"", "data-dir=\"./d\" join=\"true\""), "t.xml").unwrap();
        assert!(c.join);
        refused(
            &edit("data-dir=\"./d\"", "data-dir=\"./d\" join=\"yes\""),
            2,
            Some("join"),
            "\"true\" or \"false\"",
        );
    }

    /// Attribute values are unescaped; an unknown entity is refused.
    #[test]
    fn config_type_entities() {
        let c = parse(&edit("cluster=\"c\"", "cluster=\"a&amp;b\""), "t.xml").unwrap();
        assert_eq!(c.cluster, "a&b");
        refused(&edit("cluster=\"c\"", "cluster=\"a&bogus;\""), 1, Some("cluster"), "bogus");
    }

    // --- duplicate ---------------------------------------------------------

    /// Two servers with the same number are refused at the second one.
    #[test]
    fn config_duplicate_server_number_refused() {
        refused(
            &edit("<server number=\"2\"", "<server number=\"1\""),
            5,
            Some("number"),
            "duplicate server number 1 (first used at line 4)",
        );
    }

    /// The same host:port used by two servers is refused at the later one,
    /// naming the other server and field.
    #[test]
    fn config_duplicate_port_across_servers_refused() {
        let err = refused(
            &edit("sync-port=\"7201\"", "sync-port=\"7101\""),
            5,
            Some("sync-port"),
            "duplicate port 7101 (also used by server 1 sync-port)",
        );
        assert_eq!(
            err.to_string(),
            "t.xml:5:41: <server number=\"2\"> sync-port: duplicate port 7101 (also used by server 1 sync-port)"
        );
        refused(
            &edit("time-port=\"7202\"", "time-port=\"7103\""),
            5,
            Some("time-port"),
            "also used by server 1 publish-port",
        );
    }

    /// The same port twice within one server is refused too.
    #[test]
    fn config_duplicate_port_within_server_refused() {
        refused(
            &edit("publish-port=\"7203\"", "publish-port=\"7201\""),
            5,
            Some("publish-port"),
            "also used by server 2 sync-port",
        );
    }

    /// The same port on different hosts is fine; host comparison ignores case.
    #[test]
    fn config_duplicate_port_other_host_allowed() {
        let text = edit("<server number=\"2\" host=\"127.0.0.1\" sync-port=\"7201\" time-port=\"7202\" publish-port=\"7203\"",
            "<server number=\"2\" host=\"10.0.0.2\" sync-port=\"7101\" time-port=\"7102\" publish-port=\"7103\"");
        assert_eq!(parse(&text, "t.xml").unwrap().server(2).unwrap().sync_addr(), "10.0.0.2:7101");
        let text = edit("host=\"127.0.0.1\"", "host=\"LOCALHOST\"").replacen(
            "host=\"127.0.0.1\" sync-port=\"7201\"",
            "host=\"localhost\" sync-port=\"7101\"",
            1,
        );
        refused(&text, 5, Some("sync-port"), "duplicate port 7101");
    }

    /// A repeated attribute is refused at the repeat.
    #[test]
    fn config_duplicate_attribute_refused() {
        refused(
            &edit("host=\"127.0.0.1\"", "host=\"127.0.0.1\"\n       host=\"x\""),
            5,
            Some("host"),
            "duplicate attribute (first given at line 4)",
        );
    }

    /// A second <node>, <servers>, <raft> or <limits> is refused at its line.
    #[test]
    fn config_duplicate_element_refused() {
        refused(
            &with("<node number=\"2\" data-dir=\"./e\"/>"),
            7,
            Some("<node>"),
            "duplicate element (first given at line 2)",
        );
        refused(
            &with("<servers/>"),
            7,
            Some("<servers>"),
            "duplicate element (first given at line 3)",
        );
        let two_raft = with("<raft/>").replace("</herald>", "  <raft/>\n</herald>");
        refused(&two_raft, 8, Some("<raft>"), "duplicate element (first given at line 7)");
        let two_limits = with("<limits/>").replace("</herald>", "  <limits/>\n</herald>");
        refused(&two_limits, 8, Some("<limits>"), "duplicate element");
    }

    // --- membership --------------------------------------------------------

    /// <node number> must name a server of the list.
    #[test]
    fn config_membership_node_not_in_servers_refused() {
        refused(
            &edit("<node number=\"1\"", "<node number=\"3\""),
            2,
            Some("number"),
            "node 3 is not in the server list (servers: 1, 2)",
        );
    }

    /// An empty <servers> is refused at its line.
    #[test]
    fn config_membership_zero_servers_refused() {
        let text = "<herald cluster=\"c\">\n  <node number=\"1\" data-dir=\"d\"/>\n  <servers>\n  </servers>\n</herald>";
        refused(text, 3, Some("<server>"), "at least one <server>");
        refused(
            &text.replace("<servers>\n  </servers>", "<servers/>"),
            3,
            Some("<server>"),
            "at least one",
        );
    }

    /// Servers are sorted by number whatever the file order; lookups work.
    #[test]
    fn config_membership_sorted_and_lookup() {
        let text = edit("<server number=\"1\"", "<server number=\"9\"")
            .replace("<node number=\"1\"", "<node number=\"9\"");
        let c = parse(&text, "t.xml").unwrap();
        let numbers: Vec<u64> = c.servers.iter().map(|s| s.number).collect();
        assert_eq!(numbers, vec![2, 9]);
        assert_eq!(c.this_server().sync_port, 7101);
        assert_eq!(c.server(2).unwrap().time_addr(), "127.0.0.1:7202");
        assert!(c.server(1).is_none());
    }

    /// An IPv6 host is bracketed in addresses.
    #[test]
    fn config_membership_ipv6_address() {
        let c = parse(&edit("host=\"127.0.0.1\"", "host=\"::1\""), "t.xml").unwrap();
        assert_eq!(c.server(1).unwrap().sync_addr(), "[::1]:7101");
    }

    // --- time and master ---------------------------------------------------

    /// <time> and <master> values are read; bad values are refused at their line.
    #[test]
    fn config_time_master_values_read_and_checked() {
        let c = parse(&with(r#"<time interval-ms="250" tolerance-ms="2" samples="8"/>"#), "t.xml")
            .unwrap();
        assert_eq!(c.time, TimeSync { interval_ms: 250, tolerance_ms: 2, samples: 8 });
        let c =
            parse(&with(r#"<master prefer-lowest="false" hold-down-ms="0"/>"#), "t.xml").unwrap();
        assert_eq!(c.master, MasterPolicy { prefer_lowest: false, hold_down_ms: 0 });
        let e = parse(&with(r#"<time samples="17"/>"#), "t.xml").unwrap_err();
        assert_eq!(e.field(), Some("samples"));
        let e = parse(&with(r#"<master prefer-lowest="yes"/>"#), "t.xml").unwrap_err();
        assert_eq!(e.field(), Some("prefer-lowest"));
        let e = parse(&with(r#"<time period="1"/>"#), "t.xml").unwrap_err();
        assert_eq!(e.field(), Some("period"));
    }

    // --- gateway and messages ----------------------------------------------

    /// <gateway> values are read, all attributes at once.
    #[test]
    fn config_gateway_values_read() {
        let c = parse(&with(r#"<gateway heartbeat-ms="100" heartbeat-misses="100" grace-ms="100" push-timeout-ms="0" max-sessions="10000000" load-poll-ms="60000"/>"#), "t.xml").unwrap();
        assert_eq!(
            c.gateway,
            GatewayConfig {
                heartbeat_ms: 100,
                heartbeat_misses: 100,
                grace_ms: 100,
                push_timeout_ms: 0,
                max_sessions: 10_000_000,
                load_poll_ms: 60_000,
            }
        );
        assert_eq!(c.gateway.heartbeat_timeout_ms(), 10_000);
    }

    /// <messages> values are read, all attributes at once (the upper bounds).
    #[test]
    fn config_messages_values_read() {
        let c = parse(&with(r#"<messages max-body-bytes="1048576" quota-per-user="1000000" idempotency-window-s="2592000" max-recipients="100000" max-ttl-s="31536000"/>"#), "t.xml").unwrap();
        assert_eq!(
            c.messages,
            MessagesConfig {
                max_body_bytes: 1 << 20,
                quota_per_user: 1_000_000,
                idempotency_window_s: 30 * 86_400,
                max_recipients: 100_000,
                max_ttl_s: 365 * 86_400,
            }
        );
    }

    /// Every bound of <gateway> and <messages> is refused one step outside,
    /// at line 7 and naming the attribute; the bound itself is accepted.
    #[test]
    fn config_gateway_messages_bounds_refused() {
        // (element, attribute, lowest accepted, highest accepted)
        let bounds: &[(&str, &str, u64, Option<u64>)] = &[
            ("gateway", "heartbeat-ms", 100, Some(3_600_000)),
            ("gateway", "heartbeat-misses", 1, Some(100)),
            ("gateway", "grace-ms", 100, None),
            ("gateway", "push-timeout-ms", 0, Some(60_000)),
            ("gateway", "max-sessions", 1, Some(10_000_000)),
            ("gateway", "load-poll-ms", 50, Some(60_000)),
            ("messages", "max-body-bytes", 1, Some(1_048_576)),
            ("messages", "quota-per-user", 1, Some(1_000_000)),
            ("messages", "idempotency-window-s", 1, Some(2_592_000)),
            ("messages", "max-recipients", 1, Some(100_000)),
            ("messages", "max-ttl-s", 1, Some(31_536_000)),
        ];
        for &(el, field, min, max) in bounds {
            let line = |v: u64| with(&format!("<{el} {field}=\"{v}\"/>"));
            parse(&line(min), "t.xml").unwrap_or_else(|e| panic!("{e}"));
            if min > 0 {
                let e = refused(&line(min - 1), 7, Some(field), "out of range");
                assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
            }
            if let Some(max) = max {
                parse(&line(max), "t.xml").unwrap_or_else(|e| panic!("{e}"));
                refused(&line(max + 1), 7, Some(field), "out of range");
            }
        }
        refused(&with("<gateway heartbeat-ms=\"1s\"/>"), 7, Some("heartbeat-ms"), "\"1s\"");
    }

    /// max-body-bytes must be less than <limits max-request-bytes>: refused at
    /// <messages> max-body-bytes, or at <limits> when <messages> is absent.
    #[test]
    fn config_messages_body_not_below_request_refused() {
        let text = with("<limits max-request-bytes=\"1000\"/>")
            .replace("</herald>", "  <messages max-body-bytes=\"1000\"/>\n</herald>");
        let e = refused(
            &text,
            8,
            Some("max-body-bytes"),
            "max-body-bytes (1000) must be less than <limits max-request-bytes> (1000)",
        );
        assert!(e.to_string().contains("<messages>"), "{e}");
        assert!(e.to_string().contains("carries its body"), "{e}");
        let c = parse(&text.replace("=\"1000\"/>\n</herald>", "=\"999\"/>\n</herald>"), "t.xml")
            .unwrap();
        assert_eq!(c.messages.max_body_bytes, 999);
        let e = refused(
            &with("<limits max-request-bytes=\"65536\"/>"),
            7,
            Some("max-request-bytes"),
            "max-body-bytes (65536) must be less than <limits max-request-bytes> (65536)",
        );
        assert!(e.to_string().contains("<limits>"), "{e}");
    }

    // --- auth --------------------------------------------------------------

    /// <auth mode="hmac" key> gives the key's bytes.
    #[test]
    fn config_auth_hmac_key_read() {
        let c = parse(&with(r#"<auth mode="hmac" key="0123456789abcdef"/>"#), "t.xml").unwrap();
        assert_eq!(c.auth, AuthConfig::Hmac { key: b"0123456789abcdef".to_vec() });
    }

    /// Debug output (printed by `heraldd --check`) never shows the key.
    #[test]
    fn config_auth_debug_redacts_key() {
        let c = parse(&with(r#"<auth mode="hmac" key="secret-secret-secret"/>"#), "t.xml").unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("20 bytes, redacted"), "{shown}");
    }

    /// <auth mode="external"> gives url and timeout (default 2000).
    #[test]
    fn config_auth_external_read() {
        let c = parse(
            &with(
                r#"<auth mode="external" url="http://127.0.0.1:8080/check" timeout-ms="60000"/>"#,
            ),
            "t.xml",
        )
        .unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::External { url: "http://127.0.0.1:8080/check".into(), timeout_ms: 60_000 }
        );
        let c = parse(&with(r#"<auth mode="external" url="http://auth:80/"/>"#), "t.xml").unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::External { url: "http://auth:80/".into(), timeout_ms: 2_000 }
        );
    }

    /// A missing or unknown mode is refused at its line, listing the valid modes.
    #[test]
    fn config_auth_mode_refused() {
        refused(
            &with(r#"<auth key="0123456789abcdef"/>"#),
            7,
            Some("mode"),
            "missing required attribute (valid modes: \"hmac\", \"external\")",
        );
        refused(
            &with(r#"<auth mode="jwt"/>"#),
            7,
            Some("mode"),
            "unknown mode \"jwt\" (valid modes: \"hmac\", \"external\")",
        );
    }

    /// A key under 16 bytes is refused; 16 bytes is accepted.
    #[test]
    fn config_auth_key_too_short_refused() {
        refused(
            &with(r#"<auth mode="hmac" key="0123456789abcde"/>"#),
            7,
            Some("key"),
            "the key is 15 bytes; at least 16 are required",
        );
        let e = refused(&with(r#"<auth mode="hmac" key=""/>"#), 7, Some("key"), "0 bytes");
        assert!(!e.to_string().contains("0123"), "{e}");
    }

    /// key and key-file together, or neither, are refused.
    #[test]
    fn config_auth_key_and_key_file_refused() {
        refused(
            &with(r#"<auth mode="hmac" key="0123456789abcdef" key-file="k"/>"#),
            7,
            Some("key-file"),
            "either key or key-file, not both",
        );
        refused(&with(r#"<auth mode="hmac"/>"#), 7, Some("key"), "needs key or key-file");
    }

    /// Attributes of the other mode, or unknown ones, are refused.
    #[test]
    fn config_auth_attribute_of_other_mode_refused() {
        refused(
            &with(r#"<auth mode="hmac" key="0123456789abcdef" url="http://a/"/>"#),
            7,
            Some("url"),
            "not used with mode=\"hmac\" (allowed: mode, key, key-file)",
        );
        refused(
            &with(r#"<auth mode="external" url="http://a/" key="0123456789abcdef"/>"#),
            7,
            Some("key"),
            "not used with mode=\"external\"",
        );
        refused(
            &with(r#"<auth mode="hmac" colour="red"/>"#),
            7,
            Some("colour"),
            "unknown attribute",
        );
    }

    /// key-file is read relative to the config file's directory, trailing
    /// whitespace trimmed; an absolute path works from parse() too.
    #[test]
    fn config_auth_key_file_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let key_path = dir.path().join("keys/hmac.key");
        std::fs::write(&key_path, "0123456789abcdef-file \r\n\n").unwrap();
        let path = dir.path().join("n.xml");
        std::fs::write(&path, with(r#"<auth mode="hmac" key-file="keys/hmac.key"/>"#)).unwrap();
        let want = AuthConfig::Hmac { key: b"0123456789abcdef-file".to_vec() };
        assert_eq!(load(&path).unwrap().auth, want);
        let text = with(&format!("<auth mode=\"hmac\" key-file=\"{}\"/>", key_path.display()));
        assert_eq!(parse(&text, "t.xml").unwrap().auth, want);
        assert_eq!(parse(&text, EMBEDDED_NAME).unwrap().auth, want);
    }

    /// An unreadable key-file is refused naming the field and the resolved
    /// path; a key-file whose key is too short too.
    #[test]
    fn config_auth_key_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.xml");
        std::fs::write(&path, with(r#"<auth mode="hmac" key-file="missing.key"/>"#)).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(7), Some("key-file")));
        let missing = dir.path().join("missing.key");
        assert!(e.to_string().contains(&format!("cannot read {}", missing.display())), "{e}");
        std::fs::write(&missing, "short\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.field(), Some("key-file"));
        assert!(e.to_string().contains("the key is 5 bytes"), "{e}");
        refused(
            &with(r#"<auth mode="hmac" key-file=" "/>"#),
            7,
            Some("key-file"),
            "must not be empty",
        );
    }

    /// An external url that is not http:// is refused (https says why); a
    /// missing url or a timeout out of range too.
    #[test]
    fn config_auth_external_url_refused() {
        refused(
            &with(r#"<auth mode="external" url="https://auth/check"/>"#),
            7,
            Some("url"),
            "https is not supported for the auth call",
        );
        refused(
            &with(r#"<auth mode="external" url="ftp://auth/check"/>"#),
            7,
            Some("url"),
            "must start with http://",
        );
        refused(
            &with(r#"<auth mode="external" url="http://"/>"#),
            7,
            Some("url"),
            "expected http://host:port/path",
        );
        refused(&with(r#"<auth mode="external"/>"#), 7, Some("url"), "missing required attribute");
        for t in ["0", "60001"] {
            refused(
                &with(&format!("<auth mode=\"external\" url=\"http://a/\" timeout-ms=\"{t}\"/>")),
                7,
                Some("timeout-ms"),
                "from 1 to 60000",
            );
        }
    }

    // --- tls ---------------------------------------------------------------

    /// <tls> paths are resolved against the config file's directory; ca is
    /// optional.
    #[test]
    fn config_tls_read() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["cert.pem", "key.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "PEM").unwrap();
        }
        let path = dir.path().join("n.xml");
        std::fs::write(&path, with(r#"<tls cert="cert.pem" key="key.pem" ca="ca.pem"/>"#)).unwrap();
        assert_eq!(
            load(&path).unwrap().tls,
            Some(TlsConfig {
                cert: dir.path().join("cert.pem"),
                key: dir.path().join("key.pem"),
                ca: Some(dir.path().join("ca.pem")),
            })
        );
        let text = with(&format!(
            "<tls cert=\"{}\" key=\"{}\"/>",
            dir.path().join("cert.pem").display(),
            dir.path().join("key.pem").display()
        ));
        assert_eq!(
            parse(&text, "t.xml").unwrap().tls,
            Some(TlsConfig {
                cert: dir.path().join("cert.pem"),
                key: dir.path().join("key.pem"),
                ca: None,
            })
        );
    }

    /// A missing cert, key or ca file (or a directory) is refused naming the
    /// field and the path; cert and key are required.
    #[test]
    fn config_tls_missing_file_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key.pem"), "PEM").unwrap();
        let path = dir.path().join("n.xml");
        let load_with = |line: &str| {
            std::fs::write(&path, with(line)).unwrap();
            load(&path).unwrap_err()
        };
        let e = load_with(r#"<tls cert="cert.pem" key="key.pem"/>"#);
        assert_eq!((e.line(), e.field()), (Some(7), Some("cert")));
        let cert = dir.path().join("cert.pem");
        assert!(e.to_string().contains(&format!("cert: cannot read {}", cert.display())), "{e}");
        let e = load_with(r#"<tls cert="key.pem" key="key.pem" ca="nope.pem"/>"#);
        assert_eq!(e.field(), Some("ca"));
        assert!(e.to_string().contains("nope.pem"), "{e}");
        let e = load_with(r#"<tls cert="key.pem" key="."/>"#);
        assert_eq!(e.field(), Some("key"));
        assert!(e.to_string().contains("is not a regular file"), "{e}");
        refused(&with(r#"<tls key="k.pem"/>"#), 7, Some("cert"), "missing required attribute");
        refused(&with(r#"<tls cert="c.pem"/>"#), 7, Some("cert"), "cannot read c.pem");
    }

    // --- new elements: shared rules ----------------------------------------

    /// Without <gateway>, <messages>, <auth> and <tls> the defaults apply:
    /// no auth (every session refused) and plaintext; empty elements default
    /// every attribute.
    #[test]
    fn config_defaults_new_elements() {
        let c = base();
        assert_eq!(c.gateway, GatewayConfig::default());
        assert_eq!(c.messages, MessagesConfig::default());
        assert_eq!(c.auth, AuthConfig::Unconfigured);
        assert_eq!(c.tls, None);
        assert_eq!((c.gateway.heartbeat_ms, c.messages.max_body_bytes), (30_000, 65_536));
        let c =
            parse(&with("<gateway/>").replace("</herald>", "  <messages/>\n</herald>"), "t.xml")
                .unwrap();
        assert_eq!((c.gateway, c.messages), (GatewayConfig::default(), MessagesConfig::default()));
        let c = parse(&with(r#"<gateway max-sessions="5"/>"#), "t.xml").unwrap();
        assert_eq!(c.gateway, GatewayConfig { max_sessions: 5, ..GatewayConfig::default() });
    }

    /// The new elements may come anywhere among <herald>'s children.
    #[test]
    fn config_new_elements_any_position() {
        let text = edit(
            "  <node number",
            "  <auth mode=\"hmac\" key=\"0123456789abcdef\"/>\n  <messages max-ttl-s=\"5\"/>\n  <node number",
        )
        .replace("</servers>", "</servers>\n  <gateway grace-ms=\"100\"/>");
        let c = parse(&text, "t.xml").unwrap();
        assert_eq!(c.messages.max_ttl_s, 5);
        assert_eq!(c.gateway.grace_ms, 100);
        assert!(matches!(c.auth, AuthConfig::Hmac { .. }));
    }

    /// An unknown attribute of each new element is refused at its line.
    #[test]
    fn config_new_elements_unknown_attribute_refused() {
        for el in ["gateway", "messages", "tls"] {
            let e = refused(
                &with(&format!("<{el} colour=\"red\"/>")),
                7,
                Some("colour"),
                "unknown attribute (allowed: ",
            );
            assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
        }
        refused(
            &with("<messages>\n    <x/>\n  </messages>"),
            8,
            Some("<x>"),
            "<messages> takes no child elements",
        );
    }

    /// A second <gateway>, <messages>, <auth> or <tls> is refused at its line.
    #[test]
    fn config_new_elements_duplicate_refused() {
        for line in [
            "<gateway/>",
            "<messages/>",
            r#"<auth mode="hmac" key="0123456789abcdef"/>"#,
            r#"<tls cert="c" key="k"/>"#,
        ] {
            let name = line[1..].split([' ', '/']).next().unwrap();
            let text = with(line).replace("</herald>", &format!("  {line}\n</herald>"));
            refused(
                &text,
                8,
                Some(&format!("<{name}>")),
                "duplicate element (first given at line 7)",
            );
        }
    }

    // --- media -------------------------------------------------------------

    /// The <auth> line used by the media tests (a 16-byte HMAC key).
    const AUTH_HMAC: &str = r#"<auth mode="hmac" key="0123456789abcdef"/>"#;

    /// BASE with `<auth>` (when given) as line 7 and `media` from line 8 on,
    /// or `media` from line 7 on without `<auth>`.
    fn with_media(auth: Option<&str>, media: &str) -> String {
        match auth {
            Some(auth) => with(auth).replace("</herald>", &format!("  {media}\n</herald>")),
            None => with(media),
        }
    }

    /// `<media>` holding `edit` as its only child: `<media>` is line 7, the
    /// child line 8.
    fn with_edit(edit: &str) -> String {
        with(&format!("<media>\n    {edit}\n  </media>"))
    }

    /// Without <media> every attribute has its documented default and edits
    /// are off; the media key is derived from the <auth mode="hmac"> key (32
    /// bytes, not the auth key itself, the same on every node), and there is
    /// none with external auth or without <auth>.
    #[test]
    fn config_media_defaults_when_absent() {
        let c = base();
        let want = MediaConfig {
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
            edit: crate::media::edit::EditRules {
                enabled: false,
                max_width: 0,
                max_height: 0,
                format: None,
                quality: 85,
                max_pixels: 100_000_000,
            },
        };
        assert_eq!(c.media, want, "no <auth>: no media key");
        assert_eq!(MediaConfig::default(), want);

        let c = parse(&with(AUTH_HMAC), "t.xml").unwrap();
        let key = c.media.key.clone().expect("derived from the hmac key");
        assert_eq!(key.len(), 32, "an HMAC-SHA256 output");
        assert_ne!(key, b"0123456789abcdef".to_vec(), "not the auth key itself");
        assert_eq!(Some(key.clone()), MediaConfig::derived_key(&c.auth));
        assert_eq!(c.media, MediaConfig { key: Some(key.clone()), ..want.clone() });
        let again = parse(&with(AUTH_HMAC), "other.xml").unwrap();
        assert_eq!(again.media.key, Some(key.clone()), "every node derives the same key");
        let other = parse(&with(r#"<auth mode="hmac" key="0123456789abcdeX"/>"#), "t.xml").unwrap();
        assert_ne!(other.media.key, Some(key), "another auth key, another media key");

        let c = parse(&with(r#"<auth mode="external" url="http://auth:80/"/>"#), "t.xml").unwrap();
        assert_eq!(c.media, want, "external auth: no media key");
        assert_eq!(MediaConfig::derived_key(&c.auth), None);
        assert_eq!(MediaConfig::derived_key(&AuthConfig::Unconfigured), None);

        let c = parse(EMBEDDED_DEFAULT, EMBEDDED_NAME).unwrap();
        assert_eq!(c.media.key, MediaConfig::derived_key(&dev_key()));
        assert!(c.media.key.is_some(), "the embedded default can serve media");
    }

    /// An empty <media/> means the same as no <media> (derived key
    /// included); an empty <edit/> turns edits on with every other rule at
    /// its default.
    #[test]
    fn config_media_empty_elements_default() {
        let absent = parse(&with(AUTH_HMAC), "t.xml").unwrap().media;
        let c = parse(&with_media(Some(AUTH_HMAC), "<media/>"), "t.xml").unwrap();
        assert_eq!(c.media, absent);
        let c = parse(&with_media(Some(AUTH_HMAC), "<media></media>"), "t.xml").unwrap();
        assert_eq!(c.media, absent);
        let c = parse(&with_media(Some(AUTH_HMAC), "<media><edit/></media>"), "t.xml").unwrap();
        assert_eq!(
            c.media,
            MediaConfig {
                edit: crate::media::edit::EditRules {
                    enabled: true,
                    ..crate::media::edit::EditRules::default()
                },
                ..absent
            }
        );
    }

    /// Every <media> and <edit> attribute is read, all at once; an explicit
    /// key is used as given (not derived), with hmac and external auth alike.
    #[test]
    fn config_media_values_read() {
        let media = r#"<media max-bytes="1048576" quota-bytes-per-user="10485760" reserve-bytes="1073741824" replicas="2" upload-ttl-ms="1000" access-ttl-ms="86400000" gc-grace-ms="0" repair-interval-ms="100" max-uploads="10000" key="media-key-0123456789">
    <edit enabled="true" max-width="1920" max-height="1080" format="webp" quality="1" max-pixels="1000000000"/>
  </media>"#;
        let want = MediaConfig {
            max_bytes: 1 << 20,
            quota_bytes_per_user: 10 << 20,
            reserve_bytes: 1 << 30,
            replicas: 2,
            upload_ttl_ms: 1_000,
            access_ttl_ms: 86_400_000,
            gc_grace_ms: 0,
            repair_interval_ms: 100,
            max_uploads: 10_000,
            key: Some(b"media-key-0123456789".to_vec()),
            edit: crate::media::edit::EditRules {
                enabled: true,
                max_width: 1920,
                max_height: 1080,
                format: Some(crate::media::edit::OutFormat::Webp),
                quality: 1,
                max_pixels: 1_000_000_000,
            },
        };
        for auth in [AUTH_HMAC, r#"<auth mode="external" url="http://auth:80/"/>"#] {
            let c = parse(&with_media(Some(auth), media), "t.xml").unwrap();
            assert_eq!(c.media, want, "with {auth}");
        }
        let c = parse(&with_media(None, media), "t.xml").unwrap();
        assert_eq!(c.media, want, "without <auth>");

        // The other ends of each range, and the other formats.
        let c = parse(&with(r#"<media max-bytes="68719476736" replicas="15" upload-ttl-ms="86400000" access-ttl-ms="1000" gc-grace-ms="2592000000" repair-interval-ms="3600000" max-uploads="1"/>"#), "t.xml").unwrap();
        assert_eq!(
            (c.media.max_bytes, c.media.replicas, c.media.upload_ttl_ms, c.media.access_ttl_ms),
            (MAX_MEDIA_BYTES_CAP, 15, 86_400_000, 1_000)
        );
        assert_eq!(
            (c.media.gc_grace_ms, c.media.repair_interval_ms, c.media.max_uploads),
            (30 * 86_400_000, 3_600_000, 1)
        );
        use crate::media::edit::OutFormat;
        for (v, want) in [
            ("jpeg", Some(OutFormat::Jpeg)),
            ("png", Some(OutFormat::Png)),
            ("webp", Some(OutFormat::Webp)),
            ("keep", None),
        ] {
            let c = parse(&with_edit(&format!(r#"<edit format="{v}" enabled="false" quality="100" max-width="65535" max-height="0" max-pixels="1"/>"#)), "t.xml").unwrap();
            let e = &c.media.edit;
            assert_eq!(e.format, want, "format={v}");
            assert_eq!(
                (e.enabled, e.quality, e.max_width, e.max_height, e.max_pixels),
                (false, 100, 65_535, 0, 1)
            );
        }
    }

    /// Every bound of <media> and <edit> is refused one step outside, naming
    /// the attribute, its element and the range, at the attribute's line;
    /// the bound itself is accepted. A lower bound of 0 has "-1" (not an
    /// integer) outside it, and an unbounded attribute a number past u64.
    #[test]
    fn config_media_bounds_refused() {
        // (element, attribute, lowest accepted, highest accepted)
        let bounds: &[(&str, &str, u64, Option<u64>)] = &[
            ("media", "max-bytes", 1, Some(68_719_476_736)),
            ("media", "quota-bytes-per-user", 0, None),
            ("media", "reserve-bytes", 0, None),
            ("media", "replicas", 0, Some(15)),
            ("media", "upload-ttl-ms", 1_000, Some(86_400_000)),
            ("media", "access-ttl-ms", 1_000, Some(86_400_000)),
            ("media", "gc-grace-ms", 0, Some(2_592_000_000)),
            ("media", "repair-interval-ms", 100, Some(3_600_000)),
            ("media", "max-uploads", 1, Some(10_000)),
            ("edit", "max-width", 0, Some(65_535)),
            ("edit", "max-height", 0, Some(65_535)),
            ("edit", "quality", 1, Some(100)),
            ("edit", "max-pixels", 1, Some(1_000_000_000)),
        ];
        for &(el, field, min, max) in bounds {
            let (text, line): (Box<dyn Fn(&str) -> String>, usize) = if el == "media" {
                (Box::new(move |v: &str| with(&format!("<media {field}=\"{v}\"/>"))), 7)
            } else {
                (Box::new(move |v: &str| with_edit(&format!("<edit {field}=\"{v}\"/>"))), 8)
            };
            let ok = |v: u64| {
                parse(&text(&v.to_string()), "t.xml")
                    .unwrap_or_else(|e| panic!("{field}={v}: {e}"));
            };
            let out = |v: &str, needle: &str| {
                let e = refused(&text(v), line, Some(field), needle);
                assert!(e.to_string().contains(&format!("<{el}>")), "{e}");
            };
            ok(min);
            if min > 0 {
                out(
                    &(min - 1).to_string(),
                    &format!("out of range: expected an integer from {min} to"),
                );
            } else {
                out("-1", "expected an integer");
            }
            match max {
                Some(max) => {
                    ok(max);
                    out(
                        &(max + 1).to_string(),
                        &format!("out of range: expected an integer from {min} to {max}"),
                    );
                }
                None => {
                    ok(u64::MAX);
                    out("18446744073709551616", "out of range");
                }
            }
            out("1k", "\"1k\"");
        }
    }

    /// An unknown attribute of <media> or of <edit> is refused at its line,
    /// naming it and its element and listing the allowed ones; so are
    /// attributes of <auth> that <media> does not take.
    #[test]
    fn config_media_unknown_attribute_refused() {
        let e = refused(
            &with(r#"<media colour="red"/>"#),
            7,
            Some("colour"),
            "unknown attribute (allowed: max-bytes, quota-bytes-per-user, reserve-bytes, replicas, upload-ttl-ms, access-ttl-ms, gc-grace-ms, repair-interval-ms, max-uploads, key, key-file)",
        );
        assert!(e.to_string().contains("<media>"), "{e}");
        refused(&with(r#"<media mode="hmac"/>"#), 7, Some("mode"), "unknown attribute");
        // The line of the attribute, not of the element, when they differ.
        refused(
            &with("<media\n      max-bytes=\"5\"\n      ttl=\"5\"/>"),
            9,
            Some("ttl"),
            "unknown attribute",
        );
        let e = refused(
            &with_edit(r#"<edit width="100"/>"#),
            8,
            Some("width"),
            "unknown attribute (allowed: enabled, max-width, max-height, format, quality, max-pixels)",
        );
        assert!(e.to_string().contains("<edit>"), "{e}");
        refused(
            &with_edit(r#"<edit max-bytes="100"/>"#),
            8,
            Some("max-bytes"),
            "unknown attribute",
        );
    }

    /// An unknown child of <media> (only <edit> is allowed), any child of
    /// <edit>, a second <edit> and a second <media> are refused at their
    /// line, naming the element.
    #[test]
    fn config_media_unknown_child_refused() {
        refused(
            &with("<media>\n    <resize/>\n  </media>"),
            8,
            Some("<resize>"),
            "unknown element (allowed here: <edit>)",
        );
        refused(
            &with("<media>\n    <edit/>\n    <auth/>\n  </media>"),
            9,
            Some("<auth>"),
            "allowed here: <edit>",
        );
        refused(
            &with_edit("<edit>\n      <crop/>\n    </edit>"),
            9,
            Some("<crop>"),
            "<edit> takes no child elements",
        );
        refused(
            &with("<media>\n    <edit/>\n    <edit quality=\"5\"/>\n  </media>"),
            9,
            Some("<edit>"),
            "duplicate element (first given at line 8)",
        );
        refused(
            &with("<media/>\n  <media/>"),
            8,
            Some("<media>"),
            "duplicate element (first given at line 7)",
        );
        // <edit> belongs inside <media>, not directly in <herald>.
        refused(&with("<edit/>"), 7, Some("<edit>"), "unknown element");
        refused(&with("<media>x</media>"), 7, None, "unexpected text \"x\"");
    }

    /// A format other than jpeg, png, webp or keep is refused naming
    /// `format`, the value and the valid ones; a boolean other than "true"
    /// or "false" is refused naming `enabled`.
    #[test]
    fn config_media_edit_format_refused() {
        for bad in ["gif", "", "jpeg2000", "original"] {
            let e = refused(
                &with_edit(&format!(r#"<edit format="{bad}"/>"#)),
                8,
                Some("format"),
                &format!("{bad:?}: expected one of jpeg, png, webp, keep"),
            );
            assert!(e.to_string().contains("<edit>"), "{e}");
        }
        refused(
            &with_edit(r#"<edit enabled="yes"/>"#),
            8,
            Some("enabled"),
            "expected \"true\" or \"false\", got \"yes\"",
        );
    }

    /// key and key-file together are refused, at the line of <media>, naming
    /// key-file.
    #[test]
    fn config_media_key_and_key_file_refused() {
        refused(
            &with(r#"<media key="0123456789abcdef" key-file="k"/>"#),
            7,
            Some("key-file"),
            "give either key or key-file, not both",
        );
        refused(
            &with_media(Some(AUTH_HMAC), r#"<media key-file="k" key="0123456789abcdef"/>"#),
            8,
            Some("key-file"),
            "not both",
        );
    }

    /// A media key under 16 bytes is refused naming `key` (without showing
    /// it), however the auth is configured; 16 bytes is accepted.
    #[test]
    fn config_media_key_too_short_refused() {
        let e = refused(
            &with(r#"<media key="0123456789abcde"/>"#),
            7,
            Some("key"),
            "the key is 15 bytes; at least 16 are required",
        );
        assert!(!e.to_string().contains("0123"), "{e}");
        assert!(e.to_string().contains("<media>"), "{e}");
        refused(
            &with_media(Some(AUTH_HMAC), r#"<media key=""/>"#),
            8,
            Some("key"),
            "the key is 0 bytes",
        );
        let c = parse(&with(r#"<media key="0123456789abcdef"/>"#), "t.xml").unwrap();
        assert_eq!(c.media.key, Some(b"0123456789abcdef".to_vec()));
    }

    /// key-file is read relative to the config file's directory, trailing
    /// whitespace trimmed; an absolute path works from parse() too. A
    /// missing file (named by its resolved path), a short key in it, or an
    /// empty key-file are refused naming key-file.
    #[test]
    fn config_media_key_file_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("keys")).unwrap();
        let key_path = dir.path().join("keys/media.key");
        std::fs::write(&key_path, "media-key-from-file \r\n\n").unwrap();
        let path = dir.path().join("n.xml");
        std::fs::write(&path, with_media(Some(AUTH_HMAC), r#"<media key-file="keys/media.key"/>"#))
            .unwrap();
        let want = Some(b"media-key-from-file".to_vec());
        assert_eq!(load(&path).unwrap().media.key, want, "the file's key, not the derived one");
        let text = with(&format!("<media key-file=\"{}\"/>", key_path.display()));
        assert_eq!(parse(&text, "t.xml").unwrap().media.key, want);
        assert_eq!(parse(&text, EMBEDDED_NAME).unwrap().media.key, want);

        std::fs::write(&path, with(r#"<media key-file="missing.key"/>"#)).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(7), Some("key-file")));
        let missing = dir.path().join("missing.key");
        assert!(e.to_string().contains(&format!("cannot read {}", missing.display())), "{e}");
        std::fs::write(&missing, "short-key\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.field(), Some("key-file"));
        assert!(e.to_string().contains("the key is 9 bytes"), "{e}");
        assert!(!e.to_string().contains("short-key"), "{e}");
        refused(&with(r#"<media key-file=" "/>"#), 7, Some("key-file"), "must not be empty");
    }

    /// The media key is derived from <auth> wherever <media> stands among
    /// <herald>'s children (even before <auth>), and <media> may come
    /// anywhere.
    #[test]
    fn config_media_any_position() {
        let text = edit("  <node number", "  <media max-uploads=\"3\"/>\n  <node number")
            .replace("</herald>", &format!("  {AUTH_HMAC}\n</herald>"));
        let c = parse(&text, "t.xml").unwrap();
        assert_eq!(c.media.max_uploads, 3);
        assert_eq!(c.media.key, MediaConfig::derived_key(&c.auth));
        assert!(c.media.key.is_some());
    }

    /// required_replicas: 0 means a majority of the voters (1 of 1, 2 of 2,
    /// 2 of 3, 3 of 4, 3 of 5); an explicit count is clamped to the voters
    /// (2 with 1 voter is 1) and is never below 1 (even with no voters).
    #[test]
    fn config_media_required_replicas() {
        let majority = MediaConfig::default();
        assert_eq!(majority.replicas, 0);
        for (voters, want) in [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (0, 1)] {
            assert_eq!(majority.required_replicas(voters), want, "{voters} voters");
        }
        let c = parse(&with(r#"<media replicas="2"/>"#), "t.xml").unwrap();
        assert_eq!(c.media.replicas, 2);
        for (voters, want) in [(1, 1), (2, 2), (3, 2), (5, 2), (0, 1)] {
            assert_eq!(c.media.required_replicas(voters), want, "{voters} voters");
        }
        let all = MediaConfig { replicas: 15, ..MediaConfig::default() };
        assert_eq!((all.required_replicas(3), all.required_replicas(15)), (3, 15));
    }

    /// Debug output (printed by `heraldd --check`) never shows the media key,
    /// given or derived, only that one is set; nor the auth key it came from.
    #[test]
    fn config_media_debug_redacts_key() {
        let c = parse(&with(r#"<media key="media-secret-secret"/>"#), "t.xml").unwrap();
        for shown in [format!("{c:?}"), format!("{c:#?}"), format!("{:?}", c.media)] {
            assert!(!shown.contains("media-secret"), "{shown}");
            assert!(!shown.contains(&format!("{:?}", c.media.key.as_ref().unwrap())), "{shown}");
            assert!(shown.contains("\"<set>\""), "{shown}");
        }
        let c = parse(&with(r#"<auth mode="hmac" key="auth-secret-secret"/>"#), "t.xml").unwrap();
        let derived = c.media.key.clone().unwrap();
        for shown in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(!shown.contains("auth-secret"), "{shown}");
            assert!(!shown.contains(&format!("{derived:?}")), "{shown}");
            assert!(shown.contains("\"<set>\""), "{shown}");
        }
        let shown = format!("{:?}", base().media);
        assert!(shown.contains("key: None"), "{shown}");
    }

    // --- raft --------------------------------------------------------------

    /// Given <raft> values are read.
    #[test]
    fn config_raft_values_read() {
        let c = parse(&with(r#"<raft heartbeat-ms="50" election-min-ms="300" election-max-ms="600" snapshot-logs="7" write-timeout-ms="900"/>"#), "t.xml").unwrap();
        assert_eq!(
            c.raft,
            RaftTiming {
                heartbeat_ms: 50,
                election_min_ms: 300,
                election_max_ms: 600,
                snapshot_logs: 7,
                write_timeout_ms: 900
            }
        );
    }

    /// election-min-ms >= election-max-ms is refused, blaming the attribute given.
    #[test]
    fn config_raft_election_order_refused() {
        refused(
            &with("<raft election-min-ms=\"800\" election-max-ms=\"800\"/>"),
            7,
            Some("election-min-ms"),
            "must be less than election-max-ms (800)",
        );
        refused(&with("<raft election-min-ms=\"900\"/>"), 7, Some("election-min-ms"), "(900)");
        refused(&with("<raft election-max-ms=\"300\"/>"), 7, Some("election-max-ms"), "(300)");
    }

    /// heartbeat-ms >= election-min-ms is refused.
    #[test]
    fn config_raft_heartbeat_refused() {
        refused(
            &with("<raft heartbeat-ms=\"400\"/>"),
            7,
            Some("heartbeat-ms"),
            "must be less than election-min-ms (400)",
        );
        refused(
            &with("<raft election-min-ms=\"50\" election-max-ms=\"60\"/>"),
            7,
            Some("election-min-ms"),
            "heartbeat-ms (100)",
        );
    }

    /// Raft values of 0 or of the wrong type are refused.
    #[test]
    fn config_raft_type_refused() {
        refused(&with("<raft snapshot-logs=\"0\"/>"), 7, Some("snapshot-logs"), "integer >= 1");
        refused(&with("<raft write-timeout-ms=\"5s\"/>"), 7, Some("write-timeout-ms"), "\"5s\"");
    }

    // --- limits ------------------------------------------------------------

    /// Given <limits> values are read, including the upper caps themselves.
    #[test]
    fn config_limits_values_read() {
        let c = parse(&with(r#"<limits max-ids-per-query="1000000" max-request-bytes="67108864" max-events-per-request="3" max-connections="4"/>"#), "t.xml").unwrap();
        assert_eq!(
            c.limits,
            Limits {
                max_ids_per_query: 1_000_000,
                max_request_bytes: 64 << 20,
                max_events_per_request: 3,
                max_connections: 4
            }
        );
    }

    /// Any limit of 0 is refused.
    #[test]
    fn config_limits_zero_refused() {
        for field in
            ["max-ids-per-query", "max-request-bytes", "max-events-per-request", "max-connections"]
        {
            refused(&with(&format!("<limits {field}=\"0\"/>")), 7, Some(field), "out of range");
        }
    }

    /// max-request-bytes above 64 MiB and max-ids-per-query above 1,000,000 are refused.
    #[test]
    fn config_limits_caps_refused() {
        refused(
            &with("<limits max-request-bytes=\"67108865\"/>"),
            7,
            Some("max-request-bytes"),
            "from 1 to 67108864",
        );
        refused(
            &with("<limits max-ids-per-query=\"1000001\"/>"),
            7,
            Some("max-ids-per-query"),
            "from 1 to 1000000",
        );
    }

    // --- defaults ----------------------------------------------------------

    /// Without <raft> and <limits> the documented defaults apply.
    #[test]
    fn config_defaults_absent_elements() {
        let c = base();
        assert_eq!(
            c.raft,
            RaftTiming {
                heartbeat_ms: 100,
                election_min_ms: 400,
                election_max_ms: 800,
                snapshot_logs: 20_000,
                write_timeout_ms: 5_000
            }
        );
        assert_eq!(
            c.limits,
            Limits {
                max_ids_per_query: 10_000,
                max_request_bytes: 4_194_304,
                max_events_per_request: 10_000,
                max_connections: 1024
            }
        );
    }

    /// Empty <raft/> and <limits/>, or partial ones, default the missing attributes.
    #[test]
    fn config_defaults_absent_attributes() {
        let c = parse(&with("<raft/>").replace("</herald>", "  <limits/>\n</herald>"), "t.xml")
            .unwrap();
        assert_eq!((c.raft, c.limits), (RaftTiming::default(), Limits::default()));
        let c = parse(
            &with("<raft snapshot-logs=\"5\"/>")
                .replace("</herald>", "  <limits max-connections=\"9\"/>\n</herald>"),
            "t.xml",
        )
        .unwrap();
        assert_eq!(c.raft, RaftTiming { snapshot_logs: 5, ..RaftTiming::default() });
        assert_eq!(c.limits, Limits { max_connections: 9, ..Limits::default() });
    }

    // --- overrides ---------------------------------------------------------

    /// Overrides change this node's data dir and ports (and nothing else), and
    /// each one is reported.
    #[test]
    fn config_override_applied_and_reported() {
        let mut c = base();
        let lines = c
            .apply_overrides(&Overrides {
                data_dir: Some("/tmp/x".into()),
                sync_port: Some(45676),
                time_port: Some(45677),
                publish_port: Some(45678),
            })
            .unwrap();
        assert_eq!(
            lines,
            vec![
                "data-dir overridden: ./d -> /tmp/x",
                "sync-port of server 1 overridden: 7101 -> 45676",
                "time-port of server 1 overridden: 7102 -> 45677",
                "publish-port of server 1 overridden: 7103 -> 45678",
            ]
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.this_server().publish_addr(), "127.0.0.1:45678");
        assert_eq!(c.server(2), base().server(2), "other servers untouched");
    }

    /// Overrides apply to the node's own entry (node 2 here), not server 1.
    #[test]
    fn config_override_targets_this_node() {
        let mut c = parse(NODE2, "node2.xml").unwrap();
        let lines = c
            .apply_overrides(&Overrides { publish_port: Some(45678), ..Overrides::default() })
            .unwrap();
        assert_eq!(lines, vec!["publish-port of server 2 overridden: 7203 -> 45678"]);
        assert_eq!(c.server(2).unwrap().publish_port, 45678);
        assert_eq!(c.server(1).unwrap().publish_port, 7103);
    }

    /// No overrides: nothing changes and nothing is reported.
    #[test]
    fn config_override_none_is_noop() {
        let mut c = base();
        assert!(c.apply_overrides(&Overrides::default()).unwrap().is_empty());
        assert_eq!(c, base());
    }

    /// A port override that collides with another server (or this server's
    /// other port) is refused, naming both, and leaves the config unchanged.
    #[test]
    fn config_override_collision_refused() {
        let mut c = base();
        let err = c
            .apply_overrides(&Overrides { publish_port: Some(7203), ..Overrides::default() })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.xml: after overrides: <server number=\"1\"> publish-port: duplicate port 7203 (also used by server 2 publish-port)"
        );
        assert_eq!(err.field(), Some("publish-port"));
        assert_eq!(err.line(), None);
        assert_eq!(c, base(), "unchanged after a refused override");
        let err = c
            .apply_overrides(&Overrides { time_port: Some(7101), ..Overrides::default() })
            .unwrap_err();
        assert!(err.to_string().contains("duplicate port 7101"), "{err}");
    }

    /// A port override of 0 or an empty data dir is refused.
    #[test]
    fn config_override_invalid_refused() {
        let mut c = base();
        let err = c
            .apply_overrides(&Overrides { sync_port: Some(0), ..Overrides::default() })
            .unwrap_err();
        assert_eq!(err.field(), Some("sync-port"));
        let err = c
            .apply_overrides(&Overrides { data_dir: Some(PathBuf::new()), ..Overrides::default() })
            .unwrap_err();
        assert_eq!(err.field(), Some("data-dir"));
        assert_eq!(c, base());
    }

    // --- load --------------------------------------------------------------

    /// load() reads a file and names it as the source.
    #[test]
    fn config_load_reads_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.xml");
        std::fs::write(&path, NODE3).unwrap();
        let c = load(&path).unwrap();
        assert_eq!(c.source, path.display().to_string());
        assert_eq!(c.node, 3);
    }

    /// load() errors name the file: I/O failures and parse failures alike.
    #[test]
    fn config_load_errors_name_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.xml");
        let err = load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(
            err.to_string().starts_with(&format!("cannot read {}: ", missing.display())),
            "{err}"
        );
        let bad = dir.path().join("bad.xml");
        std::fs::write(&bad, with("<raft heartbeat-ms=\"x\"/>")).unwrap();
        let err = load(&bad).unwrap_err();
        assert!(err.to_string().starts_with(&format!("{}:7:", bad.display())), "{err}");
    }
}
