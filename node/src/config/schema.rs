//! The schema: every element and every attribute `heraldd` accepts, each
//! attribute declared once, as one entry that gives its target field (and
//! type), its default, its bounds with their reason, its name in the XML and
//! its doc.
//!
//! The settings elements (`<raft>`, `<limits>`, `<time>`, `<master>`,
//! `<gateway>`, `<messages>`, `<media>`) are declared with [`section!`],
//! which generates the public struct (entry docs become field docs), its
//! `Default`, its schema entries (`ATTRS`) and its reader from the entries.
//! Elements read into a struct defined elsewhere (`<server>`, `<tls>`,
//! `<edit>`, ...) are declared with [`schema_for!`], which generates the
//! entries and the reader only. `<auth>`, whose attributes depend on its
//! mode, has a hand-written table ([`AUTH_ATTRS`], [`AUTH_MODES`]) and
//! reader (`read.rs`). [`SCHEMA`] lists every element with its attributes
//! and children; `tests.rs` checks `conf/reference.xml` against it.
//!
//! Rules that involve more than one attribute (port clashes, membership,
//! Raft timing order, body vs request size) are in `rules.rs`.

use std::path::PathBuf;

use crate::media::edit::{EditRules, OutFormat};

use super::read::{Attrs, Setting};
use super::{
    ConfigError, LogFormat, ModuleConfig, PeerTlsConfig, SecurityMode, Server, TlsConfig,
    DEFAULT_AUTH_TIMEOUT_MS, DEFAULT_MAX_TOKEN_LIFETIME_S, MAX_BODY_BYTES_CAP,
    MAX_IDS_PER_QUERY_CAP, MAX_MEDIA_BYTES_CAP, MAX_REQUEST_BYTES_CAP, MAX_RESPONSE_BYTES_CAP,
    MAX_TOKEN_LIFETIME_CAP_S,
};

// ---------------------------------------------------------------------------
// The vocabulary of the schema.

// `why`, `need`, `doc` and SCHEMA are read only by the tests (tests.rs checks
// conf/reference.xml against them); the reader needs kinds and names only.
#[cfg_attr(not(test), allow(dead_code))]
/// How an attribute's value is written and checked.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    /// A decimal integer (digits only) from `min` to `max` inclusive;
    /// `max` = [`UNBOUNDED`] means no limit beyond the field's type. `why`
    /// is the reason for the bounds.
    Int { min: u64, max: u64, why: &'static str },
    /// Exactly `true` or `false`.
    Bool,
    /// A string that is not empty or blank.
    Text,
    /// A string that is not empty or blank and has no whitespace (a host).
    Word,
    /// A path, resolved against the configuration file's directory, naming
    /// a readable regular file when the configuration is read.
    File,
    /// One of these words (listed in this order in errors).
    Choice(&'static [&'static str]),
    /// A secret key given in the attribute itself, at least
    /// [`super::MIN_HMAC_KEY_BYTES`] bytes (read by hand, see `read_key`).
    Key,
    /// A file holding a secret key (read by hand, see `read_key`).
    KeyFile,
    /// An `http://host:port/path` URL.
    HttpUrl,
}

/// An integer kind from `min` to `max`, for `why`.
pub(super) const fn int(min: u64, max: u64, why: &'static str) -> Kind {
    Kind::Int { min, max, why }
}

/// No upper bound beyond the field's own type.
pub(super) const UNBOUNDED: u64 = u64::MAX;

/// Whether an attribute must be given.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(super) enum Need {
    Required,
    /// May be left out; the function gives the default as it would be
    /// written in the XML (None: there is none to write, e.g. `<tls ca>`).
    Optional(fn() -> Option<String>),
}

/// An optional attribute without a default to write.
pub(super) const NO_DEFAULT: Need = Need::Optional(|| None);

/// One attribute of the schema.
#[cfg_attr(not(test), allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(super) struct AttrSpec {
    /// The attribute's name in the XML.
    pub name: &'static str,
    pub kind: Kind,
    pub need: Need,
    /// What it means (the field doc, for generated structs).
    pub doc: &'static str,
}

/// One element of the schema.
pub(super) struct ElemSpec {
    pub name: &'static str,
    /// Its attributes, in the order error messages list them ...
    pub attrs: &'static [AttrSpec],
    /// ... followed by these (`<media>`'s [`KEY_ATTRS`]).
    pub more_attrs: &'static [AttrSpec],
    /// The child elements it may hold.
    pub children: &'static [&'static str],
}

impl ElemSpec {
    /// Every attribute, in order.
    pub fn attrs(&self) -> impl Iterator<Item = &'static AttrSpec> {
        self.attrs.iter().chain(self.more_attrs)
    }

    /// Every attribute name, in order.
    pub fn attr_names(&self) -> Vec<&'static str> {
        self.attrs().map(|a| a.name).collect()
    }
}

/// Generates, for an existing struct `$name`, `ATTRS` (one [`AttrSpec`] per
/// entry) and `read` (a `$name` from an element's attributes, in entry
/// order: the first bad attribute in that order is the one reported). An
/// entry is
///
/// ```text
/// /// doc
/// field: Type = default => "attribute-name", kind;   (under `optional`)
/// field: Type => "attribute-name", kind;             (under `required`)
/// ```
///
/// Fields under `extra` are not attributes: `read` gives them their
/// default and the element's reader fills them in.
macro_rules! schema_for {
    (
        $name:ident {
            $(required {$(
                $(#[doc = $rdoc:literal])*
                $rfield:ident : $rty:ty => $rattr:literal, $rkind:expr;
            )*})?
            $(optional {$(
                $(#[doc = $odoc:literal])*
                $ofield:ident : $oty:ty = $odefault:expr => $oattr:literal, $okind:expr;
            )*})?
            $(extra {$( $xfield:ident = $xdefault:expr; )*})?
        }
    ) => {
        impl $name {
            /// The attributes, in declaration order.
            pub(super) const ATTRS: &'static [AttrSpec] = &[
                $($(AttrSpec {
                    name: $rattr,
                    kind: $rkind,
                    need: Need::Required,
                    doc: concat!($($rdoc),*),
                },)*)?
                $($(AttrSpec {
                    name: $oattr,
                    kind: $okind,
                    need: Need::Optional(|| {
                        let default: $oty = $odefault;
                        Setting::show(&default)
                    }),
                    doc: concat!($($odoc),*),
                },)*)?
            ];

            /// Reads the attributes of `a` (unknown ones were refused).
            pub(super) fn read(a: &Attrs<'_, '_>) -> Result<Self, ConfigError> {
                Ok($name {
                    $($($rfield: a.req::<$rty>($rattr, $rkind)?,)*)?
                    $($($ofield: a.opt::<$oty>($oattr, $okind, $odefault)?,)*)?
                    $($($xfield: $xdefault,)*)?
                })
            }
        }
    };
}

/// Declares a public settings struct whose fields are all optional
/// attributes, one entry each (see [`schema_for!`]); the entry docs become
/// the field docs and the defaults its `Default`. Fields in an `extra`
/// block after the struct are not attributes (see [`schema_for!`]).
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr => $attr:literal, $kind:expr;
            )*
        }
        $(extra {$(
            $(#[doc = $xdoc:literal])*
            $xfield:ident : $xty:ty = $xdefault:expr;
        )*})?
    ) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[doc = $doc])* pub $field: $ty,)*
            $($($(#[doc = $xdoc])* pub $xfield: $xty,)*)?
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* $($($xfield: $xdefault,)*)? }
            }
        }

        schema_for! {
            $name {
                optional {$(
                    $(#[doc = $doc])*
                    $field: $ty = $default => $attr, $kind;
                )*}
                $(extra {$($xfield = $xdefault;)*})?
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Units and shared bounds.

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const DAY_S: u64 = 86_400;

/// Why a timer is at least 1 ms.
const TIMER_WHY: &str = "a timer of 0 ms would fire continuously";

/// A server or node number.
const NUMBER: Kind = int(1, UNBOUNDED, "servers are numbered from 1");

/// A TCP or UDP port.
const PORT: Kind = int(
    1,
    u16::MAX as u64,
    "the port range; 0 would mean \"any free port\", which the other servers could not know",
);

// ---------------------------------------------------------------------------
// <herald>, <node>, <servers>, <server>.

/// `<herald>`'s attributes.
pub(super) struct Root {
    pub cluster: String,
}

schema_for! {
    Root {
        required {
            /// Name of the cluster.
            cluster: String => "cluster", Kind::Text;
        }
    }
}

/// `<node>`'s attributes, which become [`super::Config`]'s `node`,
/// `data_dir` and `join`.
pub(super) struct NodeAttrs {
    pub number: u64,
    pub data_dir: PathBuf,
    pub join: bool,
}

schema_for! {
    NodeAttrs {
        required {
            /// This node's number: the number of one `<server>`.
            number: u64 => "number", NUMBER;
            /// Directory of this node's state (relative: to the working directory).
            data_dir: PathBuf => "data-dir", Kind::Text;
        }
        optional {
            /// Never bootstrap a cluster; wait to be added as a learner.
            join: bool = false => "join", Kind::Bool;
        }
    }
}

schema_for! {
    Server {
        required {
            /// Unique within `<servers>`.
            number: u64 => "number", NUMBER;
            /// Host name or IP address other servers and clients reach it at.
            host: String => "host", Kind::Word;
            /// Server-to-server (Raft) traffic.
            sync_port: u16 => "sync-port", PORT;
            /// The time service (SNTP).
            time_port: u16 => "time-port", PORT;
            /// The client publish/query API.
            publish_port: u16 => "publish-port", PORT;
        }
        optional {
            /// The data center (zone) the server stands in: replicated in
            /// the membership, shown in status, used by the gateway pick
            /// and by `<servers zone-survival>`.
            zone: String = super::DEFAULT_ZONE.to_string() => "zone", Kind::Word;
            /// `voter` (counts for the Raft majority) or `replica` (a
            /// non-voting member, a Raft learner kept as one: it serves
            /// reads in its zone and never slows commits).
            role: super::ServerRole = super::ServerRole::Voter => "role", Kind::Choice(ROLES);
            /// `host:port` this node dials the server's sync port at instead
            /// of `host:sync-port` (a WAN proxy or tunnel between zones).
            /// Only this node's file matters: each node reaches the others
            /// its own way.
            sync_via: Option<String> = None => "sync-via", Kind::Word;
        }
    }
}

/// `<server role>`'s words.
const ROLES: &[&str] = &["voter", "replica"];

/// `<servers>`'s attributes.
pub(super) struct ServersAttrs {
    pub zone_survival: bool,
}

schema_for! {
    ServersAttrs {
        optional {
            /// Refuse a server list whose voters could not form a majority
            /// with any one zone lost (a data center down must not stop
            /// writes).
            zone_survival: bool = false => "zone-survival", Kind::Bool;
        }
    }
}

// ---------------------------------------------------------------------------
// The settings elements.

section! {
    /// `<raft>`: Raft timing. Every field is at least 1, and
    /// `heartbeat_ms < election_min_ms < election_max_ms` (rules.rs).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct RaftTiming {
        /// Leader heartbeat interval, milliseconds.
        heartbeat_ms: u64 = 50 => "heartbeat-ms", int(1, UNBOUNDED, TIMER_WHY);
        /// Lower bound of the randomised election timeout, milliseconds.
        election_min_ms: u64 = 200 => "election-min-ms", int(1, UNBOUNDED, TIMER_WHY);
        /// Upper bound of the randomised election timeout, milliseconds; also
        /// the leader lease. Defaults 50/200/400: kill-the-leader → first
        /// write ~0.75 s (median of 7 bench runs on 2 loaded cores, 0
        /// spurious elections); the former 100/400/800 took 1.4 s.
        election_max_ms: u64 = 400 => "election-max-ms", int(1, UNBOUNDED, TIMER_WHY);
        /// Log entries since the last snapshot that trigger a new one.
        snapshot_logs: u64 = 20_000 => "snapshot-logs",
            int(1, UNBOUNDED, "0 would mean a snapshot after every entry");
        /// How long a replicated write may take before it fails, milliseconds.
        write_timeout_ms: u64 = 5_000 => "write-timeout-ms",
            int(1, UNBOUNDED, "0 would fail every write before it is replicated");
    }
}

section! {
    /// `<limits>`: request limits. None is 0.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Limits {
        /// Most ids one query may name.
        max_ids_per_query: usize = 10_000 => "max-ids-per-query", int(
            1,
            MAX_IDS_PER_QUERY_CAP as u64,
            "0 would refuse every query; the cap bounds the answer one query builds",
        );
        /// Largest request body accepted, bytes.
        max_request_bytes: usize = 4 * 1024 * 1024 => "max-request-bytes", int(
            1,
            MAX_REQUEST_BYTES_CAP as u64,
            "0 would refuse every request; a body is buffered whole, so the cap bounds \
             the memory one request takes",
        );
        /// Most events one request may carry.
        max_events_per_request: usize = 10_000 => "max-events-per-request",
            int(1, UNBOUNDED, "0 would refuse every request that carries events");
        /// Most client connections open at once.
        max_connections: usize = 1024 => "max-connections",
            int(1, UNBOUNDED, "0 would refuse every connection");
        /// Most client connections open at once from one IP address; more
        /// are closed at once (so one address cannot take every slot).
        max_connections_per_ip: usize = 256 => "max-connections-per-ip", int(
            1,
            UNBOUNDED,
            "0 would refuse every connection; a value at or above max-connections \
             turns the per-address limit off",
        );
        /// Time a client has to send a request's headers (and a new
        /// connection its first bytes), milliseconds; then it is closed.
        header_timeout_ms: u64 = 10 * SECOND_MS => "header-timeout-ms", int(
            100,
            10 * MINUTE_MS,
            "under 100 ms an honest client on a slow link cannot send its headers; \
             above 10 minutes a half-sent request holds its connection slot for good",
        );
        /// A connection that sends and receives nothing for this long is
        /// closed, milliseconds (gRPC/HTTP/2 peers are pinged at half of it,
        /// so live ones stay open).
        idle_timeout_ms: u64 = MINUTE_MS => "idle-timeout-ms", int(
            SECOND_MS,
            HOUR_MS,
            "under a second keep-alive is pointless; above an hour an idle socket \
             holds its connection slot for good",
        );
        /// Largest answer a query or list route builds, bytes; a larger one is
        /// refused with `response_too_large` before it is built.
        max_response_bytes: usize = 16 << 20 => "max-response-bytes", int(
            64 * 1024,
            MAX_RESPONSE_BYTES_CAP as u64,
            "under 64 KiB one user's record (16 client types, 32 ext entries) may not \
             fit; an answer is built whole in memory, so the cap bounds what one \
             request takes",
        );
    }
}

section! {
    /// `<watch>`: presence change feeds (issue 15): the window of recent
    /// changes every node keeps for resuming watchers, progress frames and
    /// the watcher limits.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct WatchConfig {
        /// Most changed user records the window keeps; a watcher resuming
        /// from before the oldest gets `reset` and a fresh snapshot.
        /// 10,000 by measurement: a record in the window is an owned
        /// `Record` (~1.5 KB of heap with one client type and one ext
        /// key), so 100,000 cost 150 MB per node, 150 B per user at
        /// 1,000,000 users (`scripts/measure-memory`: 284 B/user against
        /// 134 with a window of 1); 10,000 is ~15 MB and still a minute of
        /// changes when 1 % of 1,000,000 users change per minute.
        window_changes: usize = 10_000 => "window-changes", int(
            1,
            10_000_000,
            "the window is kept in memory (a record is ~200 bytes to a few KiB), so \
             10 million bounds it to a few GB at worst; 0 would reset every resume",
        );
        /// Longest the window keeps a change, milliseconds.
        window_ms: u64 = 5 * MINUTE_MS => "window-ms", int(
            SECOND_MS,
            DAY_MS,
            "under a second no reconnect could resume; a day bounds how long a \
             change stays in memory",
        );
        /// A watcher that was sent nothing for this long gets a progress
        /// frame with the current revision, milliseconds.
        progress_ms: u64 = 5 * SECOND_MS => "progress-ms", int(
            100,
            10 * MINUTE_MS,
            "under 100 ms progress frames would outnumber changes; above 10 minutes a \
             client cannot tell an idle feed from a dead one",
        );
        /// Most watch streams open on this node at once; more are refused
        /// with `too_many_watchers`.
        max_watchers: usize = 10_000 => "max-watchers", int(
            1,
            1_000_000,
            "0 would refuse every watch; each watcher is a task and a connection, so \
             a million bounds what one node is asked to hold",
        );
        /// Most uids and sids one watcher may follow; more are refused with
        /// `too_many_watch_ids`.
        max_ids_per_watcher: usize = 10_000 => "max-ids-per-watcher", int(
            1,
            MAX_IDS_PER_QUERY_CAP as u64,
            "0 would refuse every watch; a snapshot answers the ids like a query, so \
             the query cap bounds it",
        );
    }
}

section! {
    /// `<time>`: SNTP time synchronisation with the time master (MISSION P5).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct TimeSync {
        /// How often a node polls the time master.
        interval_ms: u64 = 1000 => "interval-ms", int(1, UNBOUNDED, TIMER_WHY);
        /// A node corrects its cluster clock when off by more than this.
        tolerance_ms: u64 = 5 => "tolerance-ms",
            int(1, UNBOUNDED, "0 would correct the clock after every poll, chasing jitter");
        /// Samples per poll; the one with the smallest round trip is used.
        samples: u32 = 4 => "samples", int(
            1,
            16,
            "a poll needs a sample; each is one round trip to the master, so 16 bounds \
             the burst of packets one poll sends",
        );
    }
}

section! {
    /// `<master>`: the numbered master (MISSION P6).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MasterPolicy {
        /// Move leadership to the lowest-numbered healthy, caught-up voter.
        prefer_lowest: bool = true => "prefer-lowest", Kind::Bool;
        /// How long a lower-numbered voter must be healthy and caught up before
        /// leadership moves to it (stops a flapping node making leadership flap).
        hold_down_ms: u64 = 3000 => "hold-down-ms",
            int(0, UNBOUNDED, "any wait is meaningful; 0 moves leadership at once");
    }
}

section! {
    /// `<gateway>`: client sessions (MISSION M5, M7).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct GatewayConfig {
        /// Clients heartbeat at least this often (told in the Welcome frame).
        heartbeat_ms: u64 = 30_000 => "heartbeat-ms", int(
            100,
            HOUR_MS,
            "more than 10 heartbeats a second per client only loads the gateway; with \
             more than an hour a vanished client stays online for hours",
        );
        /// A session that sent nothing for heartbeat_ms * heartbeat_misses ends
        /// and its user goes offline on that client.
        heartbeat_misses: u32 = 3 => "heartbeat-misses", int(
            1,
            100,
            "a session ends after at least one missed heartbeat; more than 100 keeps \
             dead sessions for 100 heartbeat periods",
        );
        /// Sessions of a gateway node that has been unreachable from the leader
        /// this long are marked offline by the cluster.
        grace_ms: u64 = 60_000 => "grace-ms", int(
            100,
            UNBOUNDED,
            "under 100 ms one late Raft heartbeat would take a whole node's users offline",
        );
        /// How long a submission waits for online recipients to acknowledge
        /// before answering "stored" (or "dropped") for them.
        push_timeout_ms: u64 = 2_000 => "push-timeout-ms", int(
            0,
            MINUTE_MS,
            "0 answers at once; the submitter waits this long, so at most a minute",
        );
        /// Open sessions this node accepts; more are refused with `overloaded`.
        max_sessions: usize = 100_000 => "max-sessions", int(
            1,
            10_000_000,
            "0 would refuse every session; ten million is far beyond what one node holds",
        );
        /// How often a node asks the others for their load.
        load_poll_ms: u64 = 1_000 => "load-poll-ms", int(
            50,
            MINUTE_MS,
            "more than 20 polls a second per peer is wasted traffic; over a minute \
             sessions are placed on stale load figures",
        );
    }
}

section! {
    /// `<messages>`: message submission and the offline store (MISSION M1-M4).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct MessagesConfig {
        /// Largest message body; larger is refused with 413. Less than
        /// `<limits max-request-bytes>` (rules.rs).
        max_body_bytes: usize = 64 * 1024 => "max-body-bytes", int(
            1,
            MAX_BODY_BYTES_CAP as u64,
            "an empty body is not a message; a body is one replicated Raft entry, so \
             the cap bounds the entries",
        );
        /// Most messages stored for one user; beyond, new ones are rejected for
        /// that user (`quota_exceeded`), never older ones evicted.
        quota_per_user: usize = 1_000 => "quota-per-user", int(
            1,
            1_000_000,
            "0 would refuse every message; stored messages are replicated state, so the \
             cap bounds one user's share",
        );
        /// How long an idempotency key is remembered.
        idempotency_window_s: u64 = DAY_S => "idempotency-window-s", int(
            1,
            30 * DAY_S,
            "a key must be kept at least a second; keys are replicated state for the \
             whole window, so 30 days bounds them",
        );
        /// Most recipients of one submission (a `to` list or a group).
        max_recipients: usize = 1_000 => "max-recipients", int(
            1,
            100_000,
            "a submission needs a recipient; one submission is one Raft entry naming \
             every recipient",
        );
        /// Longest lifetime (`ttl_s`) a message may ask for.
        max_ttl_s: u64 = 7 * DAY_S => "max-ttl-s", int(
            1,
            365 * DAY_S,
            "a message must live at least a second; the offline store is not an \
             archive, a year at most",
        );
    }
}

section! {
    /// `<media>`: uploads, replicas, credentials, garbage collection and the
    /// `<edit>` rules (MISSION G2, G4, S1–S4).
    ///
    /// `Debug` never shows the key.
    #[derive(Clone, PartialEq, Eq)]
    pub struct MediaConfig {
        /// Largest media an upload may state; larger is refused (413).
        max_bytes: u64 = 4 << 30 => "max-bytes", int(
            1,
            MAX_MEDIA_BYTES_CAP,
            "an empty upload has nothing to store; every replica keeps the whole file",
        );
        /// Bytes one user may share in all (0 = no quota).
        quota_bytes_per_user: u64 = 0 => "quota-bytes-per-user",
            int(0, UNBOUNDED, "0 means no quota; any byte count is meaningful");
        /// Free disk space always kept: an upload needing it is refused (507).
        reserve_bytes: u64 = 256 << 20 => "reserve-bytes",
            int(0, UNBOUNDED, "0 keeps no reserve; any byte count is meaningful");
        /// Nodes that must hold a fsynced copy before an upload is
        /// acknowledged; 0 = a majority of the voters.
        replicas: usize = 0 => "replicas", int(
            0,
            15,
            "0 means a majority; a count above the voters means every voter, and a \
             Herald cluster has a handful of voters, so more than 15 is a mistake",
        );
        /// Lifetime of an upload credential (and of an unfinished upload).
        upload_ttl_ms: u64 = 10 * MINUTE_MS => "upload-ttl-ms", int(
            SECOND_MS,
            DAY_MS,
            "under a second no client can start sending; a credential good for more \
             than a day is a standing secret",
        );
        /// Lifetime of a download (access) credential.
        access_ttl_ms: u64 = 5 * MINUTE_MS => "access-ttl-ms", int(
            SECOND_MS,
            DAY_MS,
            "under a second no client can use the URL; a credential good for more than \
             a day is a standing secret",
        );
        /// Media nobody shares any more is deleted after this long.
        gc_grace_ms: u64 = HOUR_MS => "gc-grace-ms", int(
            0,
            30 * DAY_MS,
            "0 deletes at once; keeping unshared media more than 30 days is a disk leak",
        );
        /// How often a node checks it holds what it should (and collects garbage).
        repair_interval_ms: u64 = 5 * SECOND_MS => "repair-interval-ms", int(
            100,
            HOUR_MS,
            "each pass walks the media store, so at most 10 a second; a missing copy \
             must not stay missing for more than an hour",
        );
        /// Uploads open at once on one node (each holds a temp file).
        max_uploads: usize = 64 => "max-uploads", int(
            1,
            10_000,
            "0 would refuse every upload; each open upload holds a temporary file",
        );
        /// Uploads one user may have open at once on one node (at most
        /// max-uploads); a user with one open may not take the last quarter
        /// of max-uploads, kept for users with none.
        max_uploads_per_user: usize = 4 => "max-uploads-per-user", int(
            1,
            10_000,
            "0 would refuse every upload; a person sends a few files at once, and \
             above max-uploads the node's own cap applies",
        );
        /// An upload (or a replica pushed by a peer) whose body sends nothing
        /// for this long is cut and its temporary file removed, milliseconds.
        body_timeout_ms: u64 = 30 * SECOND_MS => "body-timeout-ms", int(
            SECOND_MS,
            10 * MINUTE_MS,
            "under a second a client on a slow link stalls between writes; above 10 \
             minutes a stalled upload holds its slot and temporary file for good",
        );
    }
    // Not attributes: read_media fills them in.
    extra {
        /// HMAC key of upload and access credentials (any node checks them);
        /// defaults to one derived from the `<auth mode="hmac">` key. None:
        /// media is not configured (503).
        key: Option<Vec<u8>> = None;
        edit: EditRules = EditRules::default();
    }
}

/// `key` and `key-file` of `<media>` (at most one) and of `<auth
/// mode="hmac">` (exactly one).
pub(super) const KEY_ATTRS: &[AttrSpec] = &[
    AttrSpec {
        name: "key",
        kind: Kind::Key,
        need: NO_DEFAULT,
        doc: "The key itself, at least MIN_HMAC_KEY_BYTES bytes.",
    },
    AttrSpec {
        name: "key-file",
        kind: Kind::KeyFile,
        need: NO_DEFAULT,
        doc: "A file holding the key (resolved like <tls> paths); trailing whitespace \
              is removed; at least MIN_HMAC_KEY_BYTES bytes remain.",
    },
];

schema_for! {
    EditRules {
        optional {
            /// Whether the rules apply; giving `<edit>` turns them on.
            enabled: bool = true => "enabled", Kind::Bool;
            /// Largest stored width, pixels; 0 = no limit.
            max_width: u32 = 0 => "max-width", int(0, EDIT_MAX_SIDE, EDIT_SIDE_WHY);
            /// Largest stored height, pixels; 0 = no limit.
            max_height: u32 = 0 => "max-height", int(0, EDIT_MAX_SIDE, EDIT_SIDE_WHY);
            /// Format images are stored in; "keep" = the one they came in.
            format: Option<OutFormat> = None => "format", Kind::Choice(EDIT_FORMATS);
            /// JPEG encoder quality (the media::edit default).
            quality: u8 = EditRules::default().quality => "quality",
                int(1, 100, "the JPEG encoder's quality scale");
            /// Images with more pixels are refused before decoding (the
            /// media::edit default).
            max_pixels: u64 = EditRules::default().max_pixels => "max-pixels", int(
                1,
                1_000_000_000,
                "the decoder may use 8 bytes a pixel (media::edit::apply), so a billion \
                 pixels is 8 GB; 0 (no check) is not offered",
            );
        }
    }
}

/// Largest `<edit max-width>` and `max-height`.
const EDIT_MAX_SIDE: u64 = 65_535;
/// Why [`EDIT_MAX_SIDE`].
const EDIT_SIDE_WHY: &str = "0 means no limit; 65535 is the largest side a JPEG can have";
/// The values of `<edit format>`, as errors list them.
pub(super) const EDIT_FORMATS: &[&str] = &["jpeg", "png", "webp", "keep"];

// ---------------------------------------------------------------------------
// <profile-sync> and <module> (issue 17).

section! {
    /// `<profile-sync>`: the IM modules users may bind accounts of, and how
    /// the leader's dispatcher retries delivering profile updates to their
    /// servers (MISSION Y1, Y2). Absent: no module is supported (every bind
    /// is refused with `unsupported_module`).
    ///
    /// `Debug` never shows the modules' secrets.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ProfileSyncConfig {
        /// Wait before the first retry, milliseconds; each retry doubles it
        /// (with jitter) up to max-backoff-ms.
        initial_backoff_ms: u64 = SECOND_MS => "initial-backoff-ms", int(
            10,
            HOUR_MS,
            "under 10 ms a failing receiver is hammered; a first retry more than an \
             hour late leaves a blip unrepaired for that long",
        );
        /// Longest wait between two attempts, milliseconds (a Retry-After
        /// answer may ask for longer, up to the horizon).
        max_backoff_ms: u64 = HOUR_MS => "max-backoff-ms", int(
            100,
            DAY_MS,
            "under 100 ms retries never back off; over a day a receiver that came \
             back waits a day for its updates",
        );
        /// How long an item is retried before it goes to the dead-letter
        /// list, milliseconds from its creation (3 days, as Stripe retries).
        horizon_ms: u64 = 3 * DAY_MS => "horizon-ms", int(
            SECOND_MS,
            30 * DAY_MS,
            "under a second nothing survives a restart of the receiver; pending items \
             are replicated state, so 30 days bounds how long they are kept",
        );
        /// Deliveries in flight at once on the leader.
        max_in_flight: usize = 32 => "max-in-flight", int(
            1,
            1024,
            "0 would deliver nothing; each delivery holds a connection and a task, so \
             1024 bounds what one leader opens",
        );
    }
    // Not attributes: read_profile_sync fills it in.
    extra {
        /// The `<module>` children, ids unique.
        modules: Vec<ModuleConfig> = Vec::new();
    }
}

/// `<module>`'s attributes other than its secret (read by hand).
pub(super) struct ModuleAttrs {
    pub id: String,
    pub name: String,
    pub endpoint: String,
    pub timeout_ms: u64,
    pub ca: Option<PathBuf>,
}

schema_for! {
    ModuleAttrs {
        required {
            /// The module id accounts are bound with (`qq`, `msn`), unique.
            id: String => "id", Kind::Word;
            /// Display name.
            name: String => "name", Kind::Text;
            /// The third-party server's URL updates are POSTed to (http:// or https://).
            endpoint: String => "endpoint", Kind::Word;
        }
        optional {
            /// How long one delivery may take (connect, send, answer), milliseconds.
            timeout_ms: u64 = 10 * SECOND_MS => "timeout-ms", int(
                1,
                MINUTE_MS,
                "0 would time out every delivery; a slow receiver holds a delivery slot, \
                 a minute at most",
            );
            /// A PEM file of the CA certificate(s) that sign an https://
            /// endpoint's certificate (a private CA): when given, only these
            /// are trusted for this module, not the public roots.
            ca: Option<PathBuf> = None => "ca", Kind::File;
        }
    }
}

/// `secret` and `secret-file` of `<module>` (exactly one).
pub(super) const SECRET_ATTRS: &[AttrSpec] = &[
    AttrSpec {
        name: "secret",
        kind: Kind::Key,
        need: NO_DEFAULT,
        doc: "The signing secret in Standard Webhooks form: whsec_ and the base64 of \
              24 to 64 random bytes.",
    },
    AttrSpec {
        name: "secret-file",
        kind: Kind::KeyFile,
        need: NO_DEFAULT,
        doc: "A file holding the secret in that form (resolved like <tls> paths); \
              trailing whitespace is removed.",
    },
];

// ---------------------------------------------------------------------------
// <auth> and <tls>.

/// `<auth>`'s attributes; which of them a mode takes is [`AUTH_MODES`].
pub(super) const AUTH_ATTRS: &[AttrSpec] = &[
    AttrSpec {
        name: "mode",
        kind: Kind::Choice(&["hmac", "external"]),
        need: Need::Required,
        doc: "How session tokens are checked.",
    },
    KEY_ATTRS[0],
    KEY_ATTRS[1],
    AUTH_MAX_LIFETIME,
    AUTH_URL,
    AUTH_TIMEOUT,
];

/// `<auth mode="hmac" max-token-lifetime-s>`.
pub(super) const AUTH_MAX_LIFETIME: AttrSpec = AttrSpec {
    name: "max-token-lifetime-s",
    kind: int(
        60,
        MAX_TOKEN_LIFETIME_CAP_S,
        "a token cannot be revoked, so its lifetime bounds how long a leaked one works: a \
         year at most; under a minute no client could use a token before it expires",
    ),
    need: Need::Optional(|| Some(DEFAULT_MAX_TOKEN_LIFETIME_S.to_string())),
    doc: "mode=\"hmac\": tokens expiring further ahead than this many seconds are refused.",
};

/// `<auth mode="external" url>`.
pub(super) const AUTH_URL: AttrSpec = AttrSpec {
    name: "url",
    kind: Kind::HttpUrl,
    need: Need::Required,
    doc: "mode=\"external\": the service tokens are POSTed to (http:// only).",
};

/// `<auth mode="external" timeout-ms>`.
pub(super) const AUTH_TIMEOUT: AttrSpec = AttrSpec {
    name: "timeout-ms",
    kind: int(
        1,
        MINUTE_MS,
        "0 would time out every call; a session's opening waits on it, a minute at most",
    ),
    need: Need::Optional(|| Some(DEFAULT_AUTH_TIMEOUT_MS.to_string())),
    doc: "mode=\"external\": how long to wait for the service's answer, milliseconds.",
};

/// The valid values of `<auth mode>`, with the attributes each allows.
pub(super) const AUTH_MODES: &[(&str, &[&str])] = &[
    ("hmac", &["mode", "key", "key-file", "max-token-lifetime-s"]),
    ("external", &["mode", "url", "timeout-ms"]),
];

schema_for! {
    TlsConfig {
        required {
            /// The certificate chain (PEM).
            cert: PathBuf => "cert", Kind::File;
            /// The private key of cert (PEM).
            key: PathBuf => "key", Kind::File;
        }
        optional {
            /// Roots trusted when calling other nodes' publish ports; default: cert.
            ca: Option<PathBuf> = None => "ca", Kind::File;
        }
    }
}

schema_for! {
    PeerTlsConfig {
        required {
            /// The cluster's CA certificate (PEM): peers must present a certificate it issued.
            ca: PathBuf => "ca", Kind::File;
            /// This node's certificate (PEM), issued by ca for node<N>.<cluster>.herald.
            cert: PathBuf => "cert", Kind::File;
            /// The private key of cert (PEM).
            key: PathBuf => "key", Kind::File;
        }
    }
}

// ---------------------------------------------------------------------------
// <security>.

section! {
    /// `<security>`: how strict the node is about its own trust settings
    /// (issue 14). In `development` (the default, so the embedded node runs
    /// with two commands) development keys and plaintext peers are allowed,
    /// each with a warning at start; `production` refuses to start with them.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Security {
        /// "development" or "production".
        mode: SecurityMode = SecurityMode::Development => "mode", Kind::Choice(SECURITY_MODES);
    }
}

section! {
    /// `<log>`: the node's own log on stderr (issue 18).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct LogConfig {
        /// "text" (human-readable lines) or "json" (one object per line,
        /// each carrying `cluster` and `node`, for log shippers).
        format: LogFormat = LogFormat::Text => "format", Kind::Choice(LOG_FORMATS);
    }
}

/// The values of `<log format>`, as errors list them.
pub(super) const LOG_FORMATS: &[&str] = &["text", "json"];

/// The values of `<security mode>`, as errors list them.
pub(super) const SECURITY_MODES: &[&str] = &["development", "production"];

section! {
    /// `<reads>`: reads served from this node's own copy (issue 16):
    /// `bounded` staleness, `min_revision` (read-your-writes) and the
    /// leader's time ticks that make staleness measurable.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ReadsConfig {
        /// `max_staleness_ms` of a `bounded` query that gives none,
        /// milliseconds.
        max_staleness_ms: u64 = 1_000 => "max-staleness-ms", int(
            1,
            DAY_MS,
            "0 could never be met (the newest entry is already in the past); a day \
             is no longer a bound worth asking for",
        );
        /// While idle, the leader appends an empty entry stamped with its
        /// cluster time this often, milliseconds: a replica's staleness is
        /// measured from the newest stamp it applied, so an idle cluster's
        /// replicas are at most about this stale.
        tick_ms: u64 = 100 => "tick-ms", int(
            10,
            MINUTE_MS,
            "under 10 ms the ticks alone would be over 100 log entries a second; \
             above a minute an idle replica could not answer any bound under a minute",
        );
        /// How long a `bounded` read waits for a fresh enough entry before
        /// it forwards or fails, milliseconds.
        stale_wait_ms: u64 = 200 => "stale-wait-ms", int(
            0,
            MINUTE_MS,
            "0 decides at once; a read held for more than a minute is a stuck client",
        );
        /// What a `bounded` read does when the node is still too stale after
        /// `stale-wait-ms`: `fail` (`too_stale`) or `forward` (a
        /// linearizable read through the leader).
        when_stale: super::WhenStale = super::WhenStale::Forward => "when-stale",
            Kind::Choice(WHEN_STALE);
        /// How long a query with `min_revision` waits for this node to apply
        /// that revision before it fails with `revision_not_reached`,
        /// milliseconds.
        min_revision_wait_ms: u64 = 2_000 => "min-revision-wait-ms", int(
            0,
            MINUTE_MS,
            "0 fails at once when the revision is not applied; a read held for more \
             than a minute is a stuck client",
        );
    }
}

/// `<reads when-stale>`'s words.
const WHEN_STALE: &[&str] = &["fail", "forward"];

// ---------------------------------------------------------------------------
// <access> and <api-key>.

/// `<access>`'s attributes (its `<api-key>` children are read by hand).
pub(super) struct AccessAttrs {
    pub public_metrics: bool,
}

schema_for! {
    AccessAttrs {
        optional {
            /// `/metrics` answers without a credential (else it needs an
            /// API key with the `metrics` scope).
            public_metrics: bool = false => "public-metrics", Kind::Bool;
        }
    }
}

/// `<api-key>`'s attributes, checked further by `read_access`.
pub(super) struct ApiKeyAttrs {
    pub name: String,
    pub hash: String,
    pub scopes: String,
}

schema_for! {
    ApiKeyAttrs {
        required {
            /// The application's name, unique within `<access>`.
            name: String => "name", Kind::Word;
            /// `sha256:<64 hex>` of the key (`herald key new` prints it).
            hash: String => "hash", Kind::Word;
            /// Space-separated scopes.
            scopes: String => "scopes", Kind::Text;
        }
    }
}

// ---------------------------------------------------------------------------
// The element tree.

pub(super) const HERALD: ElemSpec = ElemSpec {
    name: "herald",
    attrs: Root::ATTRS,
    more_attrs: &[],
    children: &[
        "node",
        "servers",
        "raft",
        "limits",
        "time",
        "master",
        "gateway",
        "messages",
        "auth",
        "tls",
        "media",
        "security",
        "peer-tls",
        "access",
        "watch",
        "profile-sync",
        "log",
        "reads",
    ],
};
pub(super) const NODE: ElemSpec = leaf("node", NodeAttrs::ATTRS);
pub(super) const SERVERS: ElemSpec = ElemSpec {
    name: "servers",
    attrs: ServersAttrs::ATTRS,
    more_attrs: &[],
    children: &["server"],
};
pub(super) const SERVER: ElemSpec = leaf("server", Server::ATTRS);
pub(super) const RAFT: ElemSpec = leaf("raft", RaftTiming::ATTRS);
pub(super) const LIMITS: ElemSpec = leaf("limits", Limits::ATTRS);
pub(super) const TIME: ElemSpec = leaf("time", TimeSync::ATTRS);
pub(super) const WATCH: ElemSpec = leaf("watch", WatchConfig::ATTRS);
pub(super) const LOG: ElemSpec = leaf("log", LogConfig::ATTRS);
pub(super) const READS: ElemSpec = leaf("reads", ReadsConfig::ATTRS);
pub(super) const MASTER: ElemSpec = leaf("master", MasterPolicy::ATTRS);
pub(super) const GATEWAY: ElemSpec = leaf("gateway", GatewayConfig::ATTRS);
pub(super) const MESSAGES: ElemSpec = leaf("messages", MessagesConfig::ATTRS);
pub(super) const AUTH: ElemSpec = leaf("auth", AUTH_ATTRS);
pub(super) const TLS: ElemSpec = leaf("tls", TlsConfig::ATTRS);
pub(super) const MEDIA: ElemSpec = ElemSpec {
    name: "media",
    attrs: MediaConfig::ATTRS,
    more_attrs: KEY_ATTRS,
    children: &["edit"],
};
pub(super) const EDIT: ElemSpec = leaf("edit", EditRules::ATTRS);
pub(super) const SECURITY: ElemSpec = leaf("security", Security::ATTRS);
pub(super) const PEER_TLS: ElemSpec = leaf("peer-tls", PeerTlsConfig::ATTRS);
pub(super) const ACCESS: ElemSpec =
    ElemSpec { name: "access", attrs: AccessAttrs::ATTRS, more_attrs: &[], children: &["api-key"] };
pub(super) const API_KEY: ElemSpec = leaf("api-key", ApiKeyAttrs::ATTRS);
pub(super) const PROFILE_SYNC: ElemSpec = ElemSpec {
    name: "profile-sync",
    attrs: ProfileSyncConfig::ATTRS,
    more_attrs: &[],
    children: &["module"],
};
pub(super) const MODULE: ElemSpec =
    ElemSpec { name: "module", attrs: ModuleAttrs::ATTRS, more_attrs: SECRET_ATTRS, children: &[] };

/// Every element, parents before children.
#[cfg_attr(not(test), allow(dead_code))]
pub(super) const SCHEMA: &[ElemSpec] = &[
    HERALD,
    NODE,
    SERVERS,
    SERVER,
    RAFT,
    LIMITS,
    TIME,
    MASTER,
    GATEWAY,
    MESSAGES,
    AUTH,
    TLS,
    MEDIA,
    EDIT,
    SECURITY,
    PEER_TLS,
    ACCESS,
    API_KEY,
    WATCH,
    PROFILE_SYNC,
    MODULE,
    LOG,
    READS,
];

/// An element with attributes and no children.
const fn leaf(name: &'static str, attrs: &'static [AttrSpec]) -> ElemSpec {
    ElemSpec { name, attrs, more_attrs: &[], children: &[] }
}
