//! `herald presence ...`: push presence events and query presence.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand, ValueEnum};
use herald_client::{ClientError, Consistency, Event, Ext, QueryResult};
use serde::Serialize;

use super::output::{format_ms, yes_no};
use super::table::Table;
use super::{ids, Ctx};

#[derive(Subcommand, Debug)]
pub enum PresenceCommand {
    /// Record that a user came online on a client type; prints the revision.
    Login(LoginArgs),
    /// Record that a user went offline on a client type; prints the revision.
    Logout(LogoutArgs),
    /// Change whether strangers may open sessions with a user; prints the revision.
    Permission(PermissionArgs),
    /// Look up users by uid and/or sid (any number of ids; sent in batches the server accepts).
    Query(QueryArgs),
    /// Follow users' presence: a snapshot, then one line per change, resuming by itself
    /// (through --also nodes too) when the node fails.
    Watch(WatchArgs),
}

/// `presence watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Uids to watch.
    #[arg(value_name = "ID", required_unless_present = "all")]
    pub uids: Vec<String>,
    /// Watch every user (a key with the admin scope); the snapshot comes in pages.
    #[arg(long, conflicts_with = "uids")]
    pub all: bool,
    /// Resume after this revision (exact changes after it, or a reset and a snapshot).
    #[arg(long, value_name = "R")]
    pub since: Option<u64>,
    /// Another node to resume through when --node fails (repeatable).
    #[arg(long = "also", value_name = "ADDR")]
    pub also: Vec<String>,
    /// Stop after printing this many change lines (default: never).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
}

/// `presence login`.
#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Internal user id (1..=128 bytes).
    #[arg(long)]
    pub uid: String,
    /// Public service number of the user.
    #[arg(long)]
    pub sid: u64,
    /// Client type, e.g. mobile, web, pc.
    #[arg(long)]
    pub client: String,
    /// Also set whether strangers may open sessions with the user.
    #[arg(long, value_name = "true|false")]
    pub accepts_strangers: Option<bool>,
    /// Extra key=value merged into the user's record (repeatable).
    #[arg(long = "ext", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub ext: Vec<(String, String)>,
}

/// `presence logout`.
#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Internal user id.
    #[arg(long)]
    pub uid: String,
    /// Public service number of the user.
    #[arg(long)]
    pub sid: u64,
    /// Client type the user leaves.
    #[arg(long)]
    pub client: String,
    /// Extra key=value merged into the user's record (repeatable).
    #[arg(long = "ext", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub ext: Vec<(String, String)>,
}

/// `presence permission`.
#[derive(Args, Debug)]
pub struct PermissionArgs {
    /// Internal user id.
    #[arg(long)]
    pub uid: String,
    /// Public service number of the user.
    #[arg(long)]
    pub sid: u64,
    /// Whether strangers may open sessions with the user.
    #[arg(long, value_name = "true|false", action = ArgAction::Set, required = true)]
    pub accepts_strangers: bool,
    /// Extra key=value merged into the user's record (repeatable).
    #[arg(long = "ext", value_name = "KEY=VALUE", value_parser = parse_kv)]
    pub ext: Vec<(String, String)>,
}

/// Read consistency, as typed on the command line.
#[derive(ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConsistencyArg {
    /// Confirmed with the leader: sees every write acknowledged before.
    #[default]
    Linearizable,
    /// The node's own state, no round trip; may be stale.
    Local,
    /// The node's own state if no staler than --max-staleness-ms (measured); else it waits, forwards or fails.
    Bounded,
}

impl From<ConsistencyArg> for Consistency {
    fn from(c: ConsistencyArg) -> Self {
        match c {
            ConsistencyArg::Linearizable => Consistency::Linearizable,
            ConsistencyArg::Local => Consistency::Local,
            ConsistencyArg::Bounded => Consistency::Bounded,
        }
    }
}

/// `presence query`.
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// Uids to look up.
    #[arg(value_name = "UID")]
    pub uids: Vec<String>,
    /// A sid to look up (repeatable).
    #[arg(long = "sid", value_name = "N")]
    pub sids: Vec<u64>,
    /// Read ids from a file ('-' for stdin): one per line, `sid:N` for sids, blank lines and `#` comments skipped.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Read consistency.
    #[arg(long, value_enum, default_value_t = ConsistencyArg::Linearizable)]
    pub consistency: ConsistencyArg,
    /// With --consistency bounded: the most staleness accepted, ms [default: the node's <reads max-staleness-ms>].
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_staleness_ms: Option<u64>,
    /// Serve only once the node has applied this revision (a write's answer): read-your-writes.
    #[arg(long, value_name = "R")]
    pub min_revision: Option<u64>,
}

/// `KEY=VALUE` into a pair; the key must not be empty, the value may be.
fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The answer of a write, as printed.
#[derive(Serialize)]
struct Written {
    revision: u64,
}

pub async fn run(ctx: &Ctx, cmd: PresenceCommand) -> Result<(), ClientError> {
    let ext = |kv: Vec<(String, String)>| kv.into_iter().collect::<Ext>();
    let event = match cmd {
        PresenceCommand::Query(a) => return query(ctx, a).await,
        PresenceCommand::Watch(a) => return watch(ctx, a).await,
        PresenceCommand::Login(a) => Event::Login {
            uid: a.uid,
            sid: a.sid,
            client: a.client,
            accepts_strangers: a.accepts_strangers,
            ext: ext(a.ext),
        },
        PresenceCommand::Logout(a) => {
            Event::Logout { uid: a.uid, sid: a.sid, client: a.client, ext: ext(a.ext) }
        }
        PresenceCommand::Permission(a) => Event::Permission {
            uid: a.uid,
            sid: a.sid,
            accepts_strangers: a.accepts_strangers,
            ext: ext(a.ext),
        },
    };
    let revision = ctx.connect().await?.push_events(vec![event]).await?;
    ctx.out.print(&Written { revision }, |w| format!("revision {}", w.revision))
}

async fn query(ctx: &Ctx, a: QueryArgs) -> Result<(), ClientError> {
    let mut uids = a.uids;
    let mut sids = a.sids;
    if let Some(path) = &a.file {
        let from_file = ids::read(path)?;
        uids.extend(from_file.uids);
        sids.extend(from_file.sids);
    }
    if uids.is_empty() && sids.is_empty() {
        return Err(ClientError::InvalidArgument(
            "nothing to query: give UIDs, --sid N or --file PATH".into(),
        ));
    }
    let opts = herald_client::QueryOptions {
        consistency: a.consistency.into(),
        max_staleness_ms: a.max_staleness_ms,
        min_revision: a.min_revision,
    };
    let r = ctx.connect().await?.query_with(&uids, &sids, opts).await?;
    ctx.out.print(&r, human_query)
}

/// One user of a watch as a line: `<revision> <uid> online|offline <clients>`.
fn watch_line(kind: &str, revision: u64, u: &herald_client::UserPresence) -> String {
    let clients = if u.clients.is_empty() { "-".to_string() } else { u.clients.join(",") };
    let state = if u.online { "online" } else { "offline" };
    format!("{kind} {revision} {} {state} {clients}", u.uid)
}

async fn watch(ctx: &Ctx, a: WatchArgs) -> Result<(), ClientError> {
    use herald_client::presence_watch::{PresenceWatch, WatchConfig, WatchEvent};
    let mut seeds = vec![ctx.node.clone()];
    seeds.extend(a.also);
    let cfg =
        WatchConfig { tls: ctx.opts.clone(), ..WatchConfig::new(seeds, ctx.credential.clone()) };
    let mut w = if a.all {
        PresenceWatch::open_all(cfg, a.since).await?
    } else {
        PresenceWatch::open(cfg, a.uids, vec![], a.since).await?
    };
    let mut changes = 0u64;
    let done = |n: u64| a.count.is_some_and(|c| n >= c);
    while let Some(ev) = w.recv().await {
        if ctx.out.json {
            println!("{}", watch_json(&ev));
        } else {
            match &ev {
                WatchEvent::Snapshot { revision, users, unknown, .. } => {
                    for u in users {
                        println!("{}", watch_line("snapshot", *revision, u));
                    }
                    for u in unknown {
                        println!("snapshot {revision} {u} unknown -");
                    }
                }
                WatchEvent::Change { revision, users } => {
                    for u in users {
                        println!("{}", watch_line("change", *revision, u));
                    }
                }
                WatchEvent::Progress { .. } => {}
                WatchEvent::Reset { revision } => println!("reset {revision}"),
                WatchEvent::Refused { code, message } => eprintln!("refused: {code}: {message}"),
                WatchEvent::Reconnecting { node, since, error } => {
                    eprintln!("reconnecting (from {node}, since {since:?}): {error}")
                }
                WatchEvent::Stopped { code, message } => {
                    return Err(ClientError::Server {
                        code: code.clone(),
                        message: message.clone(),
                    })
                }
            }
        }
        if let WatchEvent::Change { users, .. } = &ev {
            changes += users.len() as u64;
        }
        if let WatchEvent::Stopped { code, message } = ev {
            return Err(ClientError::Server { code, message });
        }
        if done(changes) {
            return Ok(());
        }
    }
    Ok(())
}

/// A watch event as one JSON line (`--json`): the node's frame shapes.
fn watch_json(ev: &herald_client::presence_watch::WatchEvent) -> serde_json::Value {
    use herald_client::presence_watch::WatchEvent as E;
    use serde_json::json;
    match ev {
        E::Snapshot { revision, users, unknown, unknown_sids, added, more } => {
            json!({"type": "snapshot",
            "revision": revision, "users": users, "unknown": unknown,
            "unknown_sids": unknown_sids, "added": added, "more": more})
        }
        E::Change { revision, users } => {
            json!({"type": "change", "revision": revision, "users": users})
        }
        E::Progress { revision } => json!({"type": "progress", "revision": revision}),
        E::Reset { revision } => json!({"type": "reset", "revision": revision}),
        E::Refused { code, message } => {
            json!({"type": "error", "error": {"code": code, "message": message}})
        }
        E::Reconnecting { node, since, error } => {
            json!({"type": "reconnecting", "node": node, "since": since, "error": error})
        }
        E::Stopped { code, message } => {
            json!({"type": "stopped", "error": {"code": code, "message": message}})
        }
    }
}

/// Users as a table, then the unknown ids and a summary line.
fn human_query(r: &QueryResult) -> String {
    let with_ext = r.users.iter().any(|u| !u.ext.is_empty());
    let mut header =
        vec!["UID", "SID", "ONLINE", "CLIENTS", "ACCEPTS_STRANGERS", "CHANGED_AT", "REVISION"];
    if with_ext {
        header.push("EXT");
    }
    let mut t = Table::new(header);
    for u in &r.users {
        let mut row = vec![
            u.uid.clone(),
            u.sid.to_string(),
            yes_no(u.online).to_string(),
            if u.clients.is_empty() { "-".to_string() } else { u.clients.join(",") },
            yes_no(u.accepts_strangers).to_string(),
            format_ms(u.changed_at_ms),
            u.revision.to_string(),
        ];
        if with_ext {
            row.push(u.ext.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","));
        }
        t.row(row);
    }
    let mut s = if r.users.is_empty() { String::new() } else { format!("{t}\n") };
    s.push_str(&unknown_line("uids", &r.unknown));
    let sids: Vec<String> = r.unknown_sids.iter().map(u64::to_string).collect();
    s.push_str(&unknown_line("sids", &sids));
    let online = r.users.iter().filter(|u| u.online).count();
    s.push_str(&format!(
        "revision {}: {} found ({} online), {} unknown",
        r.revision,
        r.users.len(),
        online,
        r.unknown.len() + r.unknown_sids.len()
    ));
    if let Some(ms) = r.staleness_ms {
        s.push_str(&format!(", staleness {ms} ms"));
    }
    s
}

/// Unknown ids the human output lists before it only counts the rest.
const MAX_UNKNOWN_LISTED: usize = 100;

/// `unknown <what> (N): a b c\n`, at most [`MAX_UNKNOWN_LISTED`] ids, or
/// nothing when there are none.
fn unknown_line(what: &str, ids: &[String]) -> String {
    if ids.is_empty() {
        return String::new();
    }
    let shown = &ids[..ids.len().min(MAX_UNKNOWN_LISTED)];
    let more = match ids.len() - shown.len() {
        0 => String::new(),
        n => format!(" ... and {n} more (--json lists all)"),
    };
    format!("unknown {what} ({}): {}{more}\n", ids.len(), shown.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;
    use herald_client::UserPresence;

    fn parse(args: &[&str]) -> Result<PresenceCommand, clap::Error> {
        let mut v = vec!["herald", "presence"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v)?.command {
            Command::Presence(p) => Ok(p),
            other => panic!("not presence: {other:?}"),
        }
    }

    /// `watch` takes one or more uids, `--since R`, repeated `--also ADDR`
    /// and `--count N`; without a uid it is refused.
    #[test]
    fn cli_parse_watch() {
        let p = parse(&["watch", "a", "b", "--since", "5", "--also", "n2:7203", "--count", "3"]);
        match p.unwrap() {
            PresenceCommand::Watch(w) => {
                assert_eq!(w.uids, vec!["a".to_string(), "b".to_string()]);
                assert_eq!((w.since, w.count), (Some(5), Some(3)));
                assert_eq!(w.also, vec!["n2:7203".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(&["watch"]).is_err());
    }

    /// `login` takes uid, sid, client, an optional true/false permission and
    /// repeated `--ext k=v`.
    #[test]
    fn cli_parse_login_full() {
        let p = parse(&[
            "login",
            "--uid",
            "u1",
            "--sid",
            "1001",
            "--client",
            "mobile",
            "--accepts-strangers",
            "false",
            "--ext",
            "a=1",
            "--ext",
            "b=x=y",
        ])
        .unwrap();
        let PresenceCommand::Login(a) = p else { panic!("{p:?}") };
        assert_eq!(
            (a.uid.as_str(), a.sid, a.client.as_str(), a.accepts_strangers),
            ("u1", 1001, "mobile", Some(false))
        );
        assert_eq!(a.ext, vec![("a".into(), "1".into()), ("b".into(), "x=y".into())]);
    }

    /// Without `--accepts-strangers` a login leaves the permission alone;
    /// uid, sid and client are required.
    #[test]
    fn cli_parse_login_defaults_and_required() {
        let PresenceCommand::Login(a) =
            parse(&["login", "--uid", "u", "--sid", "1", "--client", "web"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(a.accepts_strangers, None);
        assert!(a.ext.is_empty());
        assert!(parse(&["login", "--uid", "u", "--sid", "1"]).is_err());
        assert!(parse(&["login", "--uid", "u", "--sid", "x", "--client", "web"]).is_err());
        assert!(parse(&[
            "login",
            "--uid",
            "u",
            "--sid",
            "1",
            "--client",
            "web",
            "--accepts-strangers",
            "maybe"
        ])
        .is_err());
    }

    /// `permission` requires an explicit true/false value.
    #[test]
    fn cli_parse_permission_needs_value() {
        let PresenceCommand::Permission(a) =
            parse(&["permission", "--uid", "u", "--sid", "1", "--accepts-strangers", "true"])
                .unwrap()
        else {
            panic!()
        };
        assert!(a.accepts_strangers);
        assert!(parse(&["permission", "--uid", "u", "--sid", "1"]).is_err());
        assert!(parse(&["permission", "--uid", "u", "--sid", "1", "--accepts-strangers"]).is_err());
    }

    /// `--ext` without `=` or with an empty key is refused.
    #[test]
    fn cli_parse_ext_malformed() {
        assert!(parse(&[
            "logout", "--uid", "u", "--sid", "1", "--client", "w", "--ext", "novalue"
        ])
        .is_err());
        assert!(
            parse(&["logout", "--uid", "u", "--sid", "1", "--client", "w", "--ext", "=v"]).is_err()
        );
        assert_eq!(parse_kv("k="), Ok(("k".into(), String::new())));
    }

    /// `query` collects positional uids, repeated `--sid`, a file and the
    /// consistency (linearizable unless told).
    #[test]
    fn cli_parse_query() {
        let PresenceCommand::Query(q) =
            parse(&["query", "a", "b", "--sid", "5", "--sid", "6", "--file", "ids.txt"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(q.uids, vec!["a", "b"]);
        assert_eq!(q.sids, vec![5, 6]);
        assert_eq!(q.file.as_deref(), Some(std::path::Path::new("ids.txt")));
        assert_eq!(q.consistency, ConsistencyArg::Linearizable);
        let PresenceCommand::Query(q) = parse(&["query", "--consistency", "local", "a"]).unwrap()
        else {
            panic!()
        };
        assert_eq!(Consistency::from(q.consistency), Consistency::Local);
        assert!(parse(&["query", "--consistency", "stale", "a"]).is_err());
    }

    /// The human query output lists users, then unknown uids and sids, then
    /// a summary with the revision (and the staleness when the answer
    /// carries one).
    #[test]
    fn cli_output_query_human() {
        let mut r = QueryResult {
            revision: 9,
            staleness_ms: None,
            users: vec![UserPresence {
                uid: "u1".into(),
                sid: 1001,
                online: true,
                clients: vec!["mobile".into(), "web".into()],
                accepts_strangers: false,
                ext: Default::default(),
                changed_at_ms: 1_700_000_000_123,
                revision: 8,
            }],
            unknown: vec!["x".into(), "y".into()],
            unknown_sids: vec![77],
        };
        let h = human_query(&r);
        let lines: Vec<&str> = h.lines().collect();
        assert_eq!(
            lines[0],
            "UID  SID   ONLINE  CLIENTS     ACCEPTS_STRANGERS  CHANGED_AT                REVISION"
        );
        assert_eq!(
            lines[1],
            "u1   1001  yes     mobile,web  no                 2023-11-14T22:13:20.123Z  8"
        );
        assert_eq!(lines[2], "unknown uids (2): x y");
        assert_eq!(lines[3], "unknown sids (1): 77");
        assert_eq!(lines[4], "revision 9: 1 found (1 online), 3 unknown");
        r.staleness_ms = Some(42);
        let h = human_query(&r);
        assert_eq!(
            h.lines().nth(4),
            Some("revision 9: 1 found (1 online), 3 unknown, staleness 42 ms")
        );
    }

    /// Long unknown lists are cut after the first ids in human output, with
    /// the full count and a pointer to `--json`.
    #[test]
    fn cli_output_unknown_list_truncated() {
        let ids: Vec<String> = (0..150).map(|i| format!("m{i}")).collect();
        let line = unknown_line("uids", &ids);
        assert!(line.starts_with("unknown uids (150): m0 m1 "), "{line}");
        assert!(line.ends_with(" m99 ... and 50 more (--json lists all)\n"), "{line}");
        assert_eq!(unknown_line("sids", &[]), "");
    }
}
