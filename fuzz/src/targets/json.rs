//! Every JSON body the HTTP API accepts, through `serde_json::from_slice`
//! as axum's `Json` extractor does, then the node's own pure validation
//! (presence events). What parses must survive a serialize/parse round trip.

use herald_domain::presence::Event;
use herald_proto::wire::cluster::MembershipBody;
use herald_proto::wire::media::{ContactBody, GroupSendRequest, UploadRequest};
use herald_proto::wire::messages::{GroupBody, SendBody, SettingsBody};
use herald_proto::wire::presence::{self as wp, EventsBody, QueryBody};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{words, Seed, Target};

pub const TARGET: Target = Target {
    name: "json",
    about:
        "JSON request bodies: every HTTP body type via serde_json, event validation, round trips",
    run,
    seeds,
    dict,
    selftest: false,
};

/// Parses `input` as `T`; what parses serializes and parses back equal.
fn body<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(input: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(input).ok()?;
    let text = serde_json::to_vec(&v).expect("a parsed body serializes");
    let back: T = serde_json::from_slice(&text).expect("a serialized body parses");
    assert_eq!(back, v, "round trip of {}", String::from_utf8_lossy(&text));
    Some(v)
}

/// The domain event of a wire event, as `POST /v1/presence/events` maps it.
fn event(e: wp::Event) -> Event {
    match e {
        wp::Event::Login { uid, sid, client, accepts_strangers, ext } => {
            Event::Login { uid, sid, client, accepts_strangers, ext }
        }
        wp::Event::Logout { uid, sid, client, ext } => Event::Logout { uid, sid, client, ext },
        wp::Event::Permission { uid, sid, accepts_strangers, ext } => {
            Event::Permission { uid, sid, accepts_strangers, ext }
        }
    }
}

fn run(input: &[u8]) {
    if let Some(b) = body::<EventsBody>(input) {
        for (i, e) in b.events.into_iter().enumerate() {
            let _ = event(e).validate(i);
        }
    }
    if let Some(q) = body::<QueryBody>(input) {
        let _ = herald_node::api::Consistency::from(q.consistency);
    }
    body::<SendBody>(input);
    body::<GroupBody>(input);
    body::<SettingsBody>(input);
    body::<ContactBody>(input);
    body::<UploadRequest>(input);
    body::<GroupSendRequest>(input);
    body::<MembershipBody>(input);
}

fn seeds() -> Vec<Seed> {
    [
        ("events-login.json", r#"{"events":[{"type":"login","uid":"alice","sid":7,"client":"mobile","accepts_strangers":true,"ext":{"nick":"Al"}}]}"#),
        ("events-mixed.json", r#"{"events":[{"type":"logout","uid":"alice","sid":7,"client":"mobile"},{"type":"permission","uid":"bob","sid":8,"accepts_strangers":false}]}"#),
        ("query.json", r#"{"uids":["alice","bob"],"sids":[7,8],"consistency":"local"}"#),
        ("query-empty.json", "{}"),
        ("send-direct.json", r#"{"idempotency_key":"k1","from":"app","to":["alice","bob"],"ttl_s":60,"content_type":"text/plain","body":"hi"}"#),
        ("send-group.json", r#"{"idempotency_key":"k2","from":"app","group":"team","body_base64":"aGVsbG8="}"#),
        ("send-broadcast.json", r#"{"idempotency_key":"k3","from":"app","broadcast":true,"body":"all"}"#),
        ("group.json", r#"{"members":["alice","bob","carol"]}"#),
        ("settings.json", r#"{"offline":true}"#),
        ("contact.json", r#"{"groups":["family","work"]}"#),
        ("upload.json", r#"{"size":1048576,"content_type":"image/png","name":"cat.png"}"#),
        ("group-send.json", r#"{"media_id":"m1","text":"look","groups":["family"],"idempotency_key":"g1"}"#),
        ("membership.json", r#"{"number":4,"sync":"127.0.0.1:7401","publish":"127.0.0.1:7402"}"#),
        ("membership-number.json", r#"{"number":2}"#),
    ]
    .iter()
    .map(|(n, b)| Seed::new(*n, *b))
    .collect()
}

fn dict() -> Vec<Vec<u8>> {
    words(&[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "true",
        "false",
        "\"\"",
        "\\u0000",
        "\\ud800",
        "\\udc00\\ud800",
        "\\\"",
        "\\\\",
        "1e999",
        "-0.0",
        "1.0",
        "18446744073709551616",
        "-1",
        " ",
        "\n",
        "\u{feff}",
        "\"type\":",
        "\"login\"",
        "\"logout\"",
        "\"permission\"",
        "\"linearizable\"",
        "\"local\"",
    ])
}
