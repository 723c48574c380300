//! The error catalog: every stable error code that crosses the wire, once,
//! with its HTTP status, its gRPC status and what it means (in the manner of
//! etcd's `rpctypes`). Server (herald-node) and client (herald-client) share
//! it; README.md's table of codes is generated from [`ALL`] and checked
//! against it by a test (`readme_table_matches_the_catalog`).
//!
//! On HTTP a refusal is `{"error":{"code":"…","message":"…"}}` with
//! [`Code::http`]; on gRPC it is [`Code::grpc`] with the code in the
//! `x-herald-code` metadata (see [`METADATA_KEY`]) and as the message prefix.

use std::fmt;

/// Metadata key in which gRPC answers carry the stable code.
pub const METADATA_KEY: &str = "x-herald-code";

/// One stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// The stable snake_case name (what clients match on).
    pub name: &'static str,
    /// HTTP status it is answered with.
    pub http: u16,
    /// gRPC status it is answered with.
    pub grpc: tonic::Code,
    /// When it is answered (one line; README's table shows it).
    pub meaning: &'static str,
}

impl Code {
    /// Whether a client may retry the same request unchanged (with its
    /// idempotency key for writes): the cluster was busy, leaderless or
    /// slow, not the request wrong.
    pub fn retryable(&self) -> bool {
        matches!(self.http, 503 | 504 | 429)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.name == *other
    }
}

impl PartialEq<str> for Code {
    fn eq(&self, other: &str) -> bool {
        self.name == other
    }
}

macro_rules! catalog {
    ($( $konst:ident = ($name:literal, $http:literal, $grpc:ident, $meaning:literal); )*) => {
        $(
            #[doc = $meaning]
            pub const $konst: Code =
                Code { name: $name, http: $http, grpc: tonic::Code::$grpc, meaning: $meaning };
        )*
        /// Every code, in the order README's table lists them.
        pub const ALL: &[Code] = &[$($konst),*];
    };
}

catalog! {
    // Malformed or out-of-bounds requests: nothing is written.
    MALFORMED_JSON = ("malformed_json", 400, InvalidArgument, "the body is not valid JSON for this route");
    INVALID_FIELD = ("invalid_field", 400, InvalidArgument, "a JSON field has the wrong type or an unknown name");
    BAD_REQUEST = ("bad_request", 400, InvalidArgument, "the request could not be read (other body errors)");
    UNSUPPORTED_CONTENT_TYPE = ("unsupported_content_type", 400, InvalidArgument, "the body is not application/json");
    INVALID_QUERY_STRING = ("invalid_query_string", 400, InvalidArgument, "the query string could not be parsed");
    UNKNOWN_PARAMETER = ("unknown_parameter", 400, InvalidArgument, "a query parameter this route does not take");
    INVALID_EVENT = ("invalid_event", 400, InvalidArgument, "a presence event is out of bounds (uid, client, ext)");
    TOO_MANY_CLIENTS = ("too_many_clients", 400, InvalidArgument, "a login would put the user online on more than 16 client types");
    NO_EVENTS = ("no_events", 400, InvalidArgument, "a push without events");
    TOO_MANY_EVENTS = ("too_many_events", 400, InvalidArgument, "more events than max-events-per-request");
    TOO_MANY_IDS = ("too_many_ids", 400, InvalidArgument, "more ids than max-ids-per-query");
    INVALID_CONSISTENCY = ("invalid_consistency", 400, InvalidArgument, "consistency is not linearizable, local or bounded");
    MISSING_ADDRESS = ("missing_address", 400, InvalidArgument, "add-learner without sync and publish addresses");
    INVALID_ADDRESS = ("invalid_address", 400, InvalidArgument, "an add-learner address that is not host:port (at most 255 bytes)");
    RESPONSE_TOO_LARGE = ("response_too_large", 400, InvalidArgument, "the answer would be larger than max-response-bytes; ask for fewer ids");
    TOO_MANY_EXT = ("too_many_ext", 400, InvalidArgument, "the events would leave a user with more than 32 ext entries");
    // Messages, groups and settings: nothing is stored.
    INVALID_IDEMPOTENCY_KEY = ("invalid_idempotency_key", 400, InvalidArgument, "idempotency_key missing or too long");
    INVALID_RECIPIENTS = ("invalid_recipients", 400, InvalidArgument, "not exactly one of to, group, broadcast");
    TOO_MANY_RECIPIENTS = ("too_many_recipients", 400, InvalidArgument, "more recipients than max-recipients");
    INVALID_UID = ("invalid_uid", 400, InvalidArgument, "a uid is empty or too long");
    INVALID_GROUP = ("invalid_group", 400, InvalidArgument, "a group name is empty or too long");
    UNKNOWN_GROUP = ("unknown_group", 404, NotFound, "no recipient group of that name");
    NO_RECIPIENTS = ("no_recipients", 400, InvalidArgument, "the message or group-send reaches nobody");
    NO_MEMBERS = ("no_members", 400, InvalidArgument, "a group set without members (DELETE removes one)");
    TTL_NOT_SUPPORTED = ("ttl_not_supported", 400, InvalidArgument, "ttl_s on a message that is not a broadcast");
    INVALID_TTL = ("invalid_ttl", 400, InvalidArgument, "ttl_s above the configured maximum");
    INVALID_CONTENT_TYPE = ("invalid_content_type", 400, InvalidArgument, "content_type empty, too long or not printable");
    INVALID_BODY = ("invalid_body", 400, InvalidArgument, "body and body_base64 both given, or bad base64");
    PAYLOAD_TOO_LARGE = ("payload_too_large", 413, ResourceExhausted, "body over max-request-bytes or a message over max-body-bytes");
    NO_MESSAGES = ("no_messages", 400, InvalidArgument, "a batch send without messages");
    TOO_MANY_MESSAGES = ("too_many_messages", 400, InvalidArgument, "more than 1,000 messages in one batch send");
    NO_GATEWAY = ("no_gateway", 503, Unavailable, "no healthy gateway is known");
    NOT_FOUND = ("not_found", 404, NotFound, "no such route");
    // Users, tokens and credentials.
    MISSING_TOKEN = ("missing_token", 401, Unauthenticated, "a user route without a session token");
    BAD_TOKEN = ("bad_token", 401, Unauthenticated, "the session token is malformed or its signature is wrong");
    TOKEN_EXPIRED = ("token_expired", 401, Unauthenticated, "the session token has expired");
    WRONG_USER = ("wrong_user", 401, Unauthenticated, "the session token is another user's");
    AUTH_DENIED = ("auth_denied", 401, Unauthenticated, "the external authentication service refused the session");
    AUTH_UNAVAILABLE = ("auth_unavailable", 503, Unavailable, "the external authentication service could not be asked");
    AUTH_NOT_CONFIGURED = ("auth_not_configured", 503, Unavailable, "this node has no <auth>: every session is refused");
    MISSING_VIEWER = ("missing_viewer", 400, InvalidArgument, "a media route without X-Herald-User (or ?viewer=)");
    MISSING_CREDENTIAL = ("missing_credential", 401, Unauthenticated, "a route without its credential: an API key or session token, or an upload or download credential");
    BAD_KEY = ("bad_key", 401, Unauthenticated, "an API key (hk_...) this cluster's <access> does not list");
    TOKEN_LIFETIME = ("token_lifetime", 401, Unauthenticated, "the session token expires further ahead than <auth max-token-lifetime-s>");
    FORBIDDEN = ("forbidden", 403, PermissionDenied, "the credential is valid but not for this route: a key without its scope, or a session token on an application route");
    BAD_CREDENTIAL = ("bad_credential", 401, Unauthenticated, "the credential is malformed or its signature is wrong");
    CREDENTIAL_EXPIRED = ("credential_expired", 401, Unauthenticated, "the credential has expired");
    CREDENTIAL_SCOPE = ("credential_scope", 403, PermissionDenied, "the credential is for another media, upload or viewer");
    // Media, contacts and sharing (docs/media.md says when each is answered).
    ACCESS_DENIED = ("access_denied", 403, PermissionDenied, "the viewer is not an owner, friend of an owner or recipient");
    NOT_A_FRIEND = ("not_a_friend", 403, PermissionDenied, "a shared page asked by someone who is not a friend");
    NOT_OWNER = ("not_owner", 403, PermissionDenied, "a group-send of media the sender does not share");
    MEDIA_QUOTA_EXCEEDED = ("media_quota_exceeded", 403, PermissionDenied, "the upload would exceed the user's quota");
    INVALID_MEDIA_ID = ("invalid_media_id", 400, InvalidArgument, "a media id that is not 64 lowercase hex digits");
    UNKNOWN_MEDIA = ("unknown_media", 404, NotFound, "no media with that id");
    UNKNOWN_UPLOAD = ("unknown_upload", 404, NotFound, "no open upload with that id (expired or finished)");
    UPLOAD_IN_PROGRESS = ("upload_in_progress", 409, FailedPrecondition, "the upload's body is already being received");
    SELF_CONTACT = ("self_contact", 400, InvalidArgument, "a user added as its own contact");
    TOO_MANY_CONTACTS = ("too_many_contacts", 409, FailedPrecondition, "a user with more contacts than allowed");
    TOO_MANY_GROUPS = ("too_many_groups", 409, FailedPrecondition, "a contact in more groups than allowed");
    REFUSED = ("refused", 409, FailedPrecondition, "the media library refused the change for another reason");
    MEDIA_TOO_LARGE = ("media_too_large", 413, ResourceExhausted, "the upload is larger than <media max-bytes>");
    INVALID_SIZE = ("invalid_size", 400, InvalidArgument, "an upload request with size 0");
    INVALID_NAME = ("invalid_name", 400, InvalidArgument, "a media name too long or with control characters");
    INVALID_TEXT = ("invalid_text", 400, InvalidArgument, "a group-send text over its limit");
    SIZE_MISMATCH = ("size_mismatch", 400, InvalidArgument, "the body is shorter or longer than the size announced");
    UPLOAD_INTERRUPTED = ("upload_interrupted", 400, InvalidArgument, "the body stream broke before its end");
    UPLOAD_TIMEOUT = ("upload_timeout", 408, DeadlineExceeded, "the upload body stalled for body-timeout-ms or ran past upload-lifetime-ms");
    RANGE_NOT_SATISFIABLE = ("range_not_satisfiable", 416, OutOfRange, "the Range lies outside the media");
    INVALID_IMAGE = ("invalid_image", 422, InvalidArgument, "an image the edit rules cannot decode");
    IMAGE_TOO_LARGE = ("image_too_large", 422, InvalidArgument, "an image over the edit rules' max-pixels");
    TOO_MANY_UPLOADS = ("too_many_uploads", 429, ResourceExhausted, "too many open uploads on this node or for this user");
    MEDIA_NOT_CONFIGURED = ("media_not_configured", 503, Unavailable, "this node stores no media");
    STORAGE_UNHEALTHY = ("storage_unhealthy", 503, Unavailable, "this node's media storage failed its write probe");
    REPLICATION_FAILED = ("replication_failed", 503, Unavailable, "too few nodes stored a replica");
    MEDIA_UNAVAILABLE = ("media_unavailable", 503, Unavailable, "no node holding the media could be reached");
    INSUFFICIENT_STORAGE = ("insufficient_storage", 507, ResourceExhausted, "not enough free space for the upload");
    STORAGE_ERROR = ("storage_error", 500, Internal, "a disk error on this node");
    // Gateway sessions (refused with an error frame carrying the code).
    EXPECTED_HELLO = ("expected_hello", 400, InvalidArgument, "a session's first frame was not Hello");
    INVALID_HELLO = ("invalid_hello", 400, InvalidArgument, "Hello with a uid or client out of bounds");
    UNEXPECTED_FRAME = ("unexpected_frame", 400, InvalidArgument, "a second Hello on a session");
    SID_TAKEN = ("sid_taken", 403, PermissionDenied, "a Hello names a sid that belongs to another user");
    HELLO_TIMEOUT = ("hello_timeout", 504, DeadlineExceeded, "no Hello within the hello timeout");
    HEARTBEAT_TIMEOUT = ("heartbeat_timeout", 504, DeadlineExceeded, "no heartbeat for heartbeat-ms × misses");
    OVERLOADED = ("overloaded", 503, Unavailable, "the gateway holds max-sessions; ask /v1/gateway for another");
    NOT_READY = ("not_ready", 503, Unavailable, "the gateway has not finished its restart reset");
    // Presence change feeds (watch streams).
    TOO_MANY_WATCHERS = ("too_many_watchers", 429, ResourceExhausted, "this node has <watch max-watchers> streams open; watch through another node or later");
    NO_WATCH_IDS = ("no_watch_ids", 400, InvalidArgument, "a watch opened without uids or sids");
    TOO_MANY_WATCH_IDS = ("too_many_watch_ids", 400, InvalidArgument, "a watch would follow more uids and sids than <watch max-ids-per-watcher>");
    INVALID_SINCE = ("invalid_since", 400, InvalidArgument, "since_revision is not a number, or is ahead of everything the cluster committed");
    // Profile sync across bound IM modules (issue 17): nothing is stored.
    UNSUPPORTED_MODULE = ("unsupported_module", 400, InvalidArgument, "a module id that <profile-sync> does not list");
    INVALID_BINDING = ("invalid_binding", 400, InvalidArgument, "a module id or account empty, too long or with control characters");
    ACCOUNT_BOUND_ELSEWHERE = ("account_bound_elsewhere", 409, FailedPrecondition, "the module account is bound to another identity");
    TOO_MANY_BINDINGS = ("too_many_bindings", 409, FailedPrecondition, "the user holds 16 bindings already");
    NOT_BOUND = ("not_bound", 404, NotFound, "an unbind of a module account the user has not bound");
    MODULE_NOT_BOUND = ("module_not_bound", 409, FailedPrecondition, "a profile update from a module the user has not bound");
    PROFILE_TOO_LARGE = ("profile_too_large", 413, ResourceExhausted, "a profile field, its extra keys or the whole document over its bound");
    UNKNOWN_OUTBOX_ITEM = ("unknown_outbox_item", 404, NotFound, "no pending or dead outbox item with that id");
    // Reads across zones (bounded staleness, read-your-writes).
    TOO_STALE = ("too_stale", 503, Unavailable, "a bounded read: this node applied nothing the leader stamped within max_staleness_ms (cut off from the leader?); ask another node, or later");
    REVISION_NOT_REACHED = ("revision_not_reached", 504, DeadlineExceeded, "this node did not apply min_revision within <reads min-revision-wait-ms>; ask the leader's zone, or later");
    // The cluster.
    NO_LEADER = ("no_leader", 503, Unavailable, "no leader is known (electing, or the majority is lost)");
    NOT_LEADER = ("not_leader", 503, Unavailable, "this node is not the leader (internal; clients see it only on races)");
    LEADER_UNAVAILABLE = ("leader_unavailable", 503, Unavailable, "the leader could not be reached");
    TIMEOUT = ("timeout", 504, DeadlineExceeded, "not finished within write-timeout-ms; may or may not have been applied");
    MEMBERSHIP_REFUSED = ("membership_refused", 409, FailedPrecondition, "a membership change refused (e.g. one is in progress)");
    UNKNOWN_NODE = ("unknown_node", 404, NotFound, "no member with that number");
    NOT_A_VOTER = ("not_a_voter", 400, InvalidArgument, "transfer-leader to a learner, which cannot lead");
    // The sync port (mutual TLS between peers).
    PEER_NOT_MEMBER = ("peer_not_member", 403, PermissionDenied, "a sync-port call whose certificate names no member of the cluster");
    PEER_WRONG_NUMBER = ("peer_wrong_number", 403, PermissionDenied, "a sync-port call claiming another node number than its certificate's");
    INTERNAL = ("internal", 500, Internal, "a bug or an unexpected failure; the log says more");
}

/// The catalog entry of a name, if it is one.
pub fn named(name: &str) -> Option<Code> {
    ALL.iter().copied().find(|c| c.name == name)
}

/// README.md's table of codes, as generated from the catalog (the test
/// compares the README with this text).
pub fn markdown_table() -> String {
    let mut s = String::from("| code | HTTP | gRPC | when |\n|---|---|---|---|\n");
    for c in ALL {
        s.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.name,
            c.http,
            grpc_name(c.grpc),
            c.meaning
        ));
    }
    s
}

/// The upper-case gRPC status name (as grpcurl prints it).
pub fn grpc_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Each code appears once, is snake_case, and its gRPC status agrees
    /// with its HTTP status class (a 4xx is never UNAVAILABLE, a 503 never
    /// INVALID_ARGUMENT, …).
    #[test]
    fn catalog_is_consistent() {
        let mut seen = HashSet::new();
        for c in ALL {
            assert!(seen.insert(c.name), "{} listed twice", c.name);
            assert!(
                !c.name.is_empty() && c.name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{} is not snake_case",
                c.name
            );
            assert!(!c.meaning.is_empty(), "{} has no meaning", c.name);
            use tonic::Code as G;
            let ok = match c.http {
                400 | 422 => c.grpc == G::InvalidArgument,
                401 => c.grpc == G::Unauthenticated,
                403 => c.grpc == G::PermissionDenied,
                404 => c.grpc == G::NotFound,
                409 => c.grpc == G::FailedPrecondition,
                413 | 429 | 507 => c.grpc == G::ResourceExhausted,
                416 => c.grpc == G::OutOfRange,
                500 => c.grpc == G::Internal,
                503 => c.grpc == G::Unavailable,
                408 | 504 => c.grpc == G::DeadlineExceeded,
                _ => false,
            };
            assert!(ok, "{}: HTTP {} with gRPC {:?}", c.name, c.http, c.grpc);
        }
        assert_eq!(named("no_leader"), Some(NO_LEADER));
        assert_eq!(named("nope"), None);
        assert!(NO_LEADER.retryable() && TIMEOUT.retryable() && !TOO_MANY_IDS.retryable());
    }

    /// README.md's table of codes is exactly the one generated from the
    /// catalog (between the `codes:begin`/`codes:end` markers): a code added
    /// or changed here without the README fails this test, and the failure
    /// prints the table to paste.
    #[test]
    fn readme_table_matches_the_catalog() {
        let readme = include_str!("../../README.md");
        let begin = "<!-- codes:begin (generated from proto/src/codes.rs; a test checks it) -->\n";
        let end = "<!-- codes:end -->";
        let i = readme.find(begin).expect("README has the codes:begin marker") + begin.len();
        let j = readme[i..].find(end).expect("README has the codes:end marker") + i;
        let expected = markdown_table();
        assert!(
            readme[i..j] == expected,
            "README.md's table of codes differs from the catalog; replace it with:\n{expected}"
        );
    }
}
