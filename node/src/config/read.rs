//! Stage 2: the element tree becomes a [`Config`], read against the schema
//! (`schema.rs`); then the cross-field rules (`rules.rs`) are checked.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::media::edit::{EditRules, OutFormat};

use super::rules::{self, check, Site};
use super::schema::{
    AccessAttrs, ApiKeyAttrs, ElemSpec, Kind, NodeAttrs, Root, ServersAttrs, ACCESS, API_KEY, AUTH,
    AUTH_MAX_LIFETIME, AUTH_MODES, AUTH_TIMEOUT, AUTH_URL, EDIT, GATEWAY, HERALD, LIMITS, LOG,
    MASTER, MEDIA, MESSAGES, NODE, PEER_TLS, RAFT, READS, SECURITY, SERVER, SERVERS, TIME, TLS,
    WATCH,
};
use super::schema::{ModuleAttrs, MODULE, PROFILE_SYNC};
use super::xml::{Ctx, Elem};
use super::{
    AccessConfig, ApiKeyConfig, AuthConfig, Config, ConfigError, GatewayConfig, Limits, LogConfig,
    LogFormat, MasterPolicy, MediaConfig, MessagesConfig, PeerTlsConfig, RaftTiming, ReadsConfig,
    Security, SecurityMode, Server, TimeSync, TlsConfig, WatchConfig, DEFAULT_AUTH_TIMEOUT_MS,
    DEFAULT_MAX_TOKEN_LIFETIME_S, DEVELOPMENT_HMAC_KEY, MAX_API_KEY_NAME_BYTES, MIN_HMAC_KEY_BYTES,
};
use super::{
    ModuleConfig, ProfileSyncConfig, MAX_MODULE_CA_BYTES, MAX_MODULE_SECRET_BYTES,
    MIN_MODULE_SECRET_BYTES,
};

/// Longest key file read. A key is a few dozen bytes; 4 KiB leaves room
/// for any key and its whitespace, while a key-file naming `/dev/zero` or a
/// huge file is refused instead of read until memory runs out (the fuzz
/// regression fuzz/regressions/config/key-file-dev-zero.xml).
const MAX_KEY_FILE_BYTES: u64 = 4096;

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
pub(super) struct Attrs<'c, 'e> {
    ctx: &'c Ctx<'c>,
    el: &'e Elem,
}

impl<'c> Ctx<'c> {
    /// `el`'s attributes; a name that `spec` does not list is refused.
    fn attrs<'e>(&'c self, el: &'e Elem, spec: &ElemSpec) -> Result<Attrs<'c, 'e>, ConfigError> {
        let allowed = spec.attr_names();
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
    pub fn err(&self, name: &str, message: impl Into<String>) -> ConfigError {
        let at = self.el.attr(name).map_or(self.el.at, |a| a.at);
        self.ctx.invalid(at, self.el.describe(), Some(name.to_string()), message)
    }

    /// The value of attribute `name`, if given.
    fn value(&self, name: &str) -> Option<&str> {
        self.el.attr(name).map(|a| a.value.as_str())
    }

    /// The required attribute `name`, read as `kind` says.
    pub fn req<T: Setting>(&self, name: &str, kind: Kind) -> Result<T, ConfigError> {
        let v = self.value(name).ok_or_else(|| self.err(name, "missing required attribute"))?;
        T::parse(self, name, kind, v)
    }

    /// The optional attribute `name`, read as `kind` says; `default` when absent.
    pub fn opt<T: Setting>(&self, name: &str, kind: Kind, default: T) -> Result<T, ConfigError> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => T::parse(self, name, kind, v),
        }
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

    /// A string that is not empty or blank.
    fn text(&self, name: &str, v: &str) -> Result<String, ConfigError> {
        if v.trim().is_empty() {
            return Err(self.err(name, "must not be empty"));
        }
        Ok(v.to_string())
    }

    /// The file named by `v`, resolved against the configuration file's
    /// directory; it must be a readable regular file.
    fn file(&self, name: &str, v: &str) -> Result<PathBuf, ConfigError> {
        let path = self.ctx.resolve(&self.text(name, v)?);
        match std::fs::File::open(&path).and_then(|f| f.metadata()) {
            Ok(m) if m.is_file() => Ok(path),
            Ok(_) => Err(self.err(name, format!("{} is not a regular file", path.display()))),
            Err(e) => Err(self.err(name, format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// A field type an attribute can be read into.
pub(super) trait Setting: Sized {
    /// Reads the value `v` of attribute `name` as `kind` says.
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError>;
    /// The value as it is written in the XML; None: it is not written.
    fn show(&self) -> Option<String>;
}

/// A field whose type does not fit its schema entry's kind: a bug in the schema.
fn wrong_kind(name: &str, kind: Kind, ty: &str) -> ! {
    panic!("schema entry {name:?}: kind {kind:?} cannot be read into {ty}")
}

macro_rules! integer_setting {
    ($($ty:ty),*) => {$(
        impl Setting for $ty {
            fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
                let Kind::Int { min, max, .. } = kind else {
                    wrong_kind(name, kind, stringify!($ty))
                };
                let n = a.int(name, v, min, max.min(<$ty>::MAX as u64))?;
                Ok(<$ty>::try_from(n).expect("range checked"))
            }
            fn show(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
integer_setting!(u8, u16, u32, u64, usize);

impl Setting for bool {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Bool = kind else { wrong_kind(name, kind, "bool") };
        match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(a.err(name, format!("expected \"true\" or \"false\", got {v:?}"))),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.to_string())
    }
}

impl Setting for String {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let text = a.text(name, v)?;
        match kind {
            Kind::Text => Ok(text),
            Kind::Word if text.chars().any(char::is_whitespace) => {
                Err(a.err(name, format!("must not contain whitespace, got {text:?}")))
            }
            Kind::Word => Ok(text),
            Kind::HttpUrl => http_url(a, name, text),
            _ => wrong_kind(name, kind, "String"),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.clone())
    }
}

/// `url`, which must be `http://host...` (the auth call has no TLS).
fn http_url(a: &Attrs, name: &str, url: String) -> Result<String, ConfigError> {
    if url.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("https://")) {
        return Err(a.err(
            name,
            format!("{url:?}: https is not supported for the auth call; use an http:// URL (e.g. a local sidecar)"),
        ));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| a.err(name, format!("{url:?}: must start with http://")))?;
    if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
        return Err(a.err(name, format!("{url:?}: expected http://host:port/path")));
    }
    Ok(url)
}

impl Setting for PathBuf {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        match kind {
            // As written: relative to heraldd's working directory.
            Kind::Text => Ok(PathBuf::from(a.text(name, v)?)),
            Kind::File => a.file(name, v),
            _ => wrong_kind(name, kind, "PathBuf"),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.display().to_string())
    }
}

impl Setting for Option<PathBuf> {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        PathBuf::parse(a, name, kind, v).map(Some)
    }
    fn show(&self) -> Option<String> {
        self.as_ref().and_then(Setting::show)
    }
}

/// `<edit format>`: "keep" is None.
impl Setting for Option<OutFormat> {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Choice(choices) = kind else { wrong_kind(name, kind, "Option<OutFormat>") };
        if v == "keep" {
            return Ok(None);
        }
        OutFormat::parse(v)
            .map(Some)
            .ok_or_else(|| a.err(name, format!("{v:?}: expected one of {}", choices.join(", "))))
    }
    fn show(&self) -> Option<String> {
        Some(self.map_or("keep", OutFormat::as_str).to_string())
    }
}

impl Setting for Option<String> {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        String::parse(a, name, kind, v).map(Some)
    }
    fn show(&self) -> Option<String> {
        self.clone()
    }
}

/// `<reads when-stale>`.
impl Setting for super::WhenStale {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Choice(choices) = kind else { wrong_kind(name, kind, "WhenStale") };
        match v {
            "fail" => Ok(super::WhenStale::Fail),
            "forward" => Ok(super::WhenStale::Forward),
            _ => Err(a.err(name, format!("{v:?}: expected one of {}", choices.join(", ")))),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.as_str().to_string())
    }
}

/// `<server role>`.
impl Setting for super::ServerRole {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Choice(choices) = kind else { wrong_kind(name, kind, "ServerRole") };
        match v {
            "voter" => Ok(super::ServerRole::Voter),
            "replica" => Ok(super::ServerRole::Replica),
            _ => Err(a.err(name, format!("{v:?}: expected one of {}", choices.join(", ")))),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.as_str().to_string())
    }
}

/// `<log format>`.
impl Setting for LogFormat {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Choice(choices) = kind else { wrong_kind(name, kind, "LogFormat") };
        match v {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(a.err(name, format!("{v:?}: expected one of {}", choices.join(", ")))),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.as_str().to_string())
    }
}

/// `<security mode>`.
impl Setting for SecurityMode {
    fn parse(a: &Attrs, name: &str, kind: Kind, v: &str) -> Result<Self, ConfigError> {
        let Kind::Choice(choices) = kind else { wrong_kind(name, kind, "SecurityMode") };
        match v {
            "development" => Ok(SecurityMode::Development),
            "production" => Ok(SecurityMode::Production),
            _ => Err(a.err(name, format!("{v:?}: expected one of {}", choices.join(", ")))),
        }
    }
    fn show(&self) -> Option<String> {
        Some(self.as_str().to_string())
    }
}

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

    /// An element read by `read` after its children and attributes are
    /// checked against `spec`.
    fn read_element<T>(
        &self,
        el: &Elem,
        spec: &ElemSpec,
        read: fn(&Attrs) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        self.only_children(el, spec.children)?;
        read(&self.attrs(el, spec)?)
    }

    /// A settings element: its defaults when absent.
    fn section<T: Default>(
        &self,
        el: Option<&Elem>,
        spec: &ElemSpec,
        read: fn(&Attrs) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        el.map_or_else(|| Ok(T::default()), |el| self.read_element(el, spec, read))
    }

    pub(super) fn read_config(&self, root: &Elem) -> Result<Config, ConfigError> {
        if root.name != HERALD.name {
            return Err(self.invalid(
                root.at,
                format!("<{}>", root.name),
                Some(format!("<{}>", root.name)),
                "unknown root element; expected <herald>",
            ));
        }
        let Root { cluster } = Root::read(&self.attrs(root, &HERALD)?)?;
        self.only_children(root, HERALD.children)?;
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
        let security_el = self.at_most_one(root, "security")?;
        let access_el = self.at_most_one(root, "access")?;
        let peer_tls_el = self.at_most_one(root, "peer-tls")?;
        let watch_el = self.at_most_one(root, "watch")?;
        let log_el = self.at_most_one(root, "log")?;
        let profile_sync_el = self.at_most_one(root, "profile-sync")?;
        let reads_el = self.at_most_one(root, "reads")?;

        let NodeAttrs { number: node, data_dir, join } =
            self.read_element(node_el, &NODE, NodeAttrs::read)?;

        // <servers>
        let ServersAttrs { zone_survival } =
            ServersAttrs::read(&self.attrs(servers_el, &SERVERS)?)?;
        self.only_children(servers_el, SERVERS.children)?;
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
            let server = self.read_element(el, &SERVER, Server::read)?;
            let number = server.number;
            if let Some(first) = server_locs.insert(number, Loc::of(el)) {
                let (line, _) = self.line_col(first.at);
                return Err(Attrs { ctx: self, el }.err(
                    "number",
                    format!("duplicate server number {number} (first used at line {line})"),
                ));
            }
            servers.push(server);
        }
        if let Some(problem) = rules::voters(&servers, zone_survival) {
            let a = Attrs { ctx: self, el: servers_el };
            return Err(if zone_survival && servers_el.attr("zone-survival").is_some() {
                a.err("zone-survival", problem)
            } else {
                a.err("server", problem)
            });
        }

        let raft = self.section(raft_el, &RAFT, RaftTiming::read)?;
        let limits = self.section(limits_el, &LIMITS, Limits::read)?;
        let time = self.section(time_el, &TIME, TimeSync::read)?;
        let master = self.section(master_el, &MASTER, MasterPolicy::read)?;
        let gateway = self.section(gateway_el, &GATEWAY, GatewayConfig::read)?;
        let watch = self.section(watch_el, &WATCH, WatchConfig::read)?;
        let log = self.section(log_el, &LOG, LogConfig::read)?;
        let profile_sync = match profile_sync_el {
            None => ProfileSyncConfig::default(),
            Some(el) => self.read_profile_sync(el)?,
        };
        let reads = self.section(reads_el, &READS, ReadsConfig::read)?;

        // <messages>, then its body limit against <limits max-request-bytes>:
        // blamed on <messages max-body-bytes>, or on <limits> when <messages>
        // is absent (so the default body limit is in force).
        let messages = self.section(messages_el, &MESSAGES, MessagesConfig::read)?;
        if let Some(problem) = rules::body_vs_request(&messages, &limits) {
            return Err(match messages_el {
                Some(el) => Attrs { ctx: self, el }.err("max-body-bytes", problem),
                None => Attrs { ctx: self, el: limits_el.unwrap_or(root) }.err(
                    "max-request-bytes",
                    format!(
                        "{problem} (<messages> is absent, so max-body-bytes is its default {})",
                        messages.max_body_bytes
                    ),
                ),
            });
        }

        let auth = match auth_el {
            None => AuthConfig::Unconfigured,
            Some(el) => self.read_auth(el)?,
        };
        let tls = match tls_el {
            None => None,
            Some(el) => Some(self.read_element(el, &TLS, TlsConfig::read)?),
        };
        // <media> after <auth>: its key defaults to one derived from the HMAC key.
        let media = match media_el {
            None => MediaConfig { key: MediaConfig::derived_key(&auth), ..MediaConfig::default() },
            Some(el) => self.read_media(el, &auth)?,
        };

        let security = self.section(security_el, &SECURITY, Security::read)?;
        let peer_tls = match peer_tls_el {
            None => None,
            Some(el) => Some(self.read_element(el, &PEER_TLS, PeerTlsConfig::read)?),
        };
        let access = match access_el {
            None => AccessConfig::default(),
            Some(el) => self.read_access(el)?,
        };
        // <security mode="production"> refuses the shipped development keys.
        if security.mode == SecurityMode::Production {
            let refuse = |el: &Elem, field: &str, what: &str| {
                Attrs { ctx: self, el }.err(
                    field,
                    format!(
                        "{what} is the development key shipped in conf/herald.xml, which \
                         <security mode=\"production\"> refuses: generate your own"
                    ),
                )
            };
            if let (Some(el), AuthConfig::Hmac { key, .. }) = (auth_el, &auth) {
                if key == DEVELOPMENT_HMAC_KEY {
                    let field = if el.attr("key").is_some() { "key" } else { "key-file" };
                    return Err(refuse(el, field, "the HMAC key (herald token --key)"));
                }
            }
            let dev = herald_proto::apikey::digest(herald_proto::apikey::DEVELOPMENT_KEY);
            if let Some(i) = access.keys.iter().position(|k| k.digest == dev) {
                let el = &access_el.expect("keys come from <access>").children[i];
                return Err(refuse(el, "hash", "this API key"));
            }
        }

        let mut config = Config {
            source: self.file.to_string(),
            cluster,
            node,
            join,
            data_dir,
            servers,
            zone_survival,
            raft,
            limits,
            time,
            master,
            gateway,
            messages,
            auth,
            tls,
            media,
            security,
            access,
            peer_tls,
            watch,
            log,
            profile_sync,
            reads,
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
                let path = self.resolve(&a.req::<String>("key-file", Kind::Text)?);
                let mut key = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| {
                        use std::io::Read as _;
                        f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut key)
                    })
                    .map_err(|e| {
                        a.err("key-file", format!("cannot read {}: {e}", path.display()))
                    })?;
                if key.len() as u64 > MAX_KEY_FILE_BYTES {
                    return Err(a.err(
                        "key-file",
                        format!("{} is longer than {MAX_KEY_FILE_BYTES} bytes", path.display()),
                    ));
                }
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
        self.only_children(el, MEDIA.children)?;
        let a = self.attrs(el, &MEDIA)?;
        let key = match self.read_key(&a, el)? {
            Some(k) => Some(k),
            None => MediaConfig::derived_key(auth),
        };
        let edit = match self.at_most_one(el, "edit")? {
            None => EditRules::default(),
            Some(e) => self.read_element(e, &EDIT, EditRules::read)?,
        };
        Ok(MediaConfig { key, edit, ..MediaConfig::read(&a)? })
    }

    /// `<auth>`: `mode` picks the variant and the attributes allowed with it.
    fn read_auth(&self, el: &Elem) -> Result<AuthConfig, ConfigError> {
        self.only_children(el, AUTH.children)?;
        let a = self.attrs(el, &AUTH)?;
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
                let max_token_lifetime_s = a.opt(
                    AUTH_MAX_LIFETIME.name,
                    AUTH_MAX_LIFETIME.kind,
                    DEFAULT_MAX_TOKEN_LIFETIME_S,
                )?;
                Ok(AuthConfig::Hmac { key, max_token_lifetime_s })
            }
            _ => {
                let url: String = a.req(AUTH_URL.name, AUTH_URL.kind)?;
                let timeout_ms =
                    a.opt(AUTH_TIMEOUT.name, AUTH_TIMEOUT.kind, DEFAULT_AUTH_TIMEOUT_MS)?;
                Ok(AuthConfig::External { url, timeout_ms })
            }
        }
    }

    /// `<access>` and its `<api-key>` children: names are words of at most
    /// [`MAX_API_KEY_NAME_BYTES`] and unique, hashes `sha256:<64 hex>` and
    /// unique (one key is one application), scopes known names.
    fn read_access(&self, el: &Elem) -> Result<AccessConfig, ConfigError> {
        let AccessAttrs { public_metrics } = self.read_element(el, &ACCESS, AccessAttrs::read)?;
        let mut keys: Vec<ApiKeyConfig> = Vec::new();
        for k in &el.children {
            let attrs = ApiKeyAttrs::read(&self.attrs(k, &API_KEY)?)?;
            self.only_children(k, API_KEY.children)?;
            let a = Attrs { ctx: self, el: k };
            let name_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
            if attrs.name.len() > MAX_API_KEY_NAME_BYTES || !attrs.name.chars().all(name_ok) {
                return Err(a.err(
                    "name",
                    format!(
                        "{:?}: at most {MAX_API_KEY_NAME_BYTES} letters, digits, '.', '_' or '-'",
                        attrs.name
                    ),
                ));
            }
            let digest = herald_proto::apikey::parse_hash(&attrs.hash).ok_or_else(|| {
                a.err("hash", "expected sha256:<64 hex digits> (herald key new prints it)")
            })?;
            let scopes = herald_proto::apikey::parse_scopes(&attrs.scopes)
                .map_err(|e| a.err("scopes", e.to_string()))?;
            if keys.iter().any(|o| o.name == attrs.name) {
                return Err(a.err("name", format!("duplicate api-key name {:?}", attrs.name)));
            }
            if keys.iter().any(|o| o.digest == digest) {
                return Err(a.err("hash", "the same key is listed twice"));
            }
            keys.push(ApiKeyConfig { name: attrs.name, digest, scopes });
        }
        Ok(AccessConfig { public_metrics, keys })
    }
    /// `<profile-sync>` and its `<module>` children: ids unique, an
    /// `http://` or `https://` endpoint, exactly one of `secret` and
    /// `secret-file` holding a `whsec_` secret of
    /// [`MIN_MODULE_SECRET_BYTES`]..=[`MAX_MODULE_SECRET_BYTES`] bytes.
    fn read_profile_sync(&self, el: &Elem) -> Result<ProfileSyncConfig, ConfigError> {
        let mut cfg = self.read_element(el, &PROFILE_SYNC, ProfileSyncConfig::read)?;
        if cfg.initial_backoff_ms > cfg.max_backoff_ms {
            return Err(Attrs { ctx: self, el }.err(
                "initial-backoff-ms",
                format!(
                    "{} is above max-backoff-ms {}",
                    cfg.initial_backoff_ms, cfg.max_backoff_ms
                ),
            ));
        }
        for m in &el.children {
            self.only_children(m, MODULE.children)?;
            let a = self.attrs(m, &MODULE)?;
            let ModuleAttrs { id, name, endpoint, timeout_ms, ca } = ModuleAttrs::read(&a)?;
            if id.len() > herald_domain::profile::MAX_MODULE_BYTES {
                return Err(a.err(
                    "id",
                    format!("at most {} bytes", herald_domain::profile::MAX_MODULE_BYTES),
                ));
            }
            if cfg.modules.iter().any(|o| o.id == id) {
                return Err(a.err("id", format!("duplicate module id {id:?}")));
            }
            let lower = endpoint.to_ascii_lowercase();
            let rest = lower.strip_prefix("http://").or_else(|| lower.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return Err(a.err(
                    "endpoint",
                    format!("{endpoint:?}: expected http://host:port/path or https://..."),
                ));
            }
            let secret = self.read_module_secret(&a, m)?;
            let ca = match ca {
                Some(path) => read_module_ca(&path).map_err(|e| a.err("ca", e))?,
                None => Vec::new(),
            };
            cfg.modules.push(ModuleConfig { id, name, endpoint, secret, timeout_ms, ca });
        }
        Ok(cfg)
    }

    /// `secret` or `secret-file` (exactly one) of a `<module>`, decoded.
    fn read_module_secret(&self, a: &Attrs, el: &Elem) -> Result<Vec<u8>, ConfigError> {
        let (field, text) = match (el.attr("secret"), el.attr("secret-file")) {
            (Some(_), Some(_)) => {
                return Err(a.err("secret-file", "give either secret or secret-file, not both"))
            }
            (None, None) => {
                return Err(a.err("secret", "missing required attribute: secret or secret-file"))
            }
            (Some(s), None) => ("secret", s.value.clone()),
            (None, Some(_)) => {
                let path = self.resolve(&a.req::<String>("secret-file", Kind::Text)?);
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|f| {
                        use std::io::Read as _;
                        f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes)
                    })
                    .map_err(|e| {
                        a.err("secret-file", format!("cannot read {}: {e}", path.display()))
                    })?;
                if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
                    return Err(a.err(
                        "secret-file",
                        format!("{} is longer than {MAX_KEY_FILE_BYTES} bytes", path.display()),
                    ));
                }
                let text = String::from_utf8(bytes)
                    .map_err(|_| a.err("secret-file", "the secret is not UTF-8"))?;
                ("secret-file", text.trim_end().to_string())
            }
        };
        use base64::Engine as _;
        let decoded = text
            .strip_prefix("whsec_")
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .ok_or_else(|| a.err(field, "expected whsec_ followed by base64"))?;
        if !(MIN_MODULE_SECRET_BYTES..=MAX_MODULE_SECRET_BYTES).contains(&decoded.len()) {
            return Err(a.err(
                field,
                format!(
                    "the secret is {} bytes; {MIN_MODULE_SECRET_BYTES} to \
                     {MAX_MODULE_SECRET_BYTES} are required",
                    decoded.len()
                ),
            ));
        }
        Ok(decoded)
    }
}

/// The certificates of a `<module ca>` PEM file (DER), at most
/// [`MAX_MODULE_CA_BYTES`] read, at least one certificate, each one a
/// trust anchor rustls accepts.
fn read_module_ca(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use rustls::pki_types::pem::PemObject;
    use std::io::Read;
    let mut pem = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MODULE_CA_BYTES + 1).read_to_end(&mut pem))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_MODULE_CA_BYTES {
        return Err(format!("{} is over {MAX_MODULE_CA_BYTES} bytes", path.display()));
    }
    let mut roots = rustls::RootCertStore::empty();
    let mut certs = Vec::new();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: not PEM certificates: {e}", path.display()))?;
        roots.add(c.clone()).map_err(|e| format!("{}: not a usable CA: {e}", path.display()))?;
        certs.push(c.to_vec());
    }
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}
