//! The browser transports of the presence feed (issue 15): Server-Sent
//! Events (`GET /v1/presence/watch`) and WebSocket (`GET /v1/ws`), both
//! with the JSON frames of [`frame_json`]. gRPC's `Presence.Watch` is in
//! `grpc.rs`; the watcher itself in `watch.rs`.
//!
//! - SSE: `?uid=..&sid=..&since_revision=R` (`all=true`: every user, an
//!   `admin` key); each frame is one event whose
//!   `event:` is its type and whose `id:` is its resume point, so a
//!   browser's `EventSource` resumes by itself with `Last-Event-ID` (which
//!   wins over `since_revision`: the browser reconnects with the URL it
//!   opened).
//! - WebSocket: the client's first text frame opens the watch,
//!   `{"type":"watch","uids":[..],"sids":[..],"since_revision":R}`
//!   (`"all":true`: every user, an `admin` key); then
//!   `{"type":"add",...}` / `{"type":"remove",...}` change the set. A
//!   refused open is an `error` frame, then the socket closes.
//! - WebSocket client sessions (browsers): a user's token (`?token=`), and
//!   a first frame `{"type":"hello","uid":..,"client":..}`; then
//!   `heartbeat` and `ack` frames, as `Gateway.Session` (the same session
//!   code runs it), answered by `welcome`, `message`, `heartbeat` and
//!   `error` frames.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use herald_proto::codes;
use serde::Deserialize;

use super::access::Principal;
use super::http::UserJson;
use super::routes::{Served, Verb};
use super::watch::{Control, Frame, WatchRequest};
use super::{Api, ApiError};
use herald_proto::v1 as pb;

type AppState = Arc<Api>;

/// The watch routes (who may call them: `routes::ROUTES`).
pub fn routes() -> Served<AppState> {
    Served::default().at(Verb::Get, "/v1/presence/watch", sse).at(Verb::Get, "/v1/ws", ws)
}

/// A frame's `type` (SSE: its `event:` name).
pub fn frame_type(f: &Frame) -> &'static str {
    match f {
        Frame::Snapshot { .. } => "snapshot",
        Frame::Change { .. } => "change",
        Frame::Progress { .. } => "progress",
        Frame::Reset { .. } => "reset",
        Frame::Error { .. } => "error",
    }
}

/// A frame as JSON: `{"type":..,"revision":..}` and, by type, `users`
/// (the batch query's user shape), `unknown`, `unknown_sids` and `added`
/// (snapshot), `reason` (reset), `error: {code, message}` (error).
pub fn frame_json(f: &Frame) -> serde_json::Value {
    let t = frame_type(f);
    match f {
        Frame::Snapshot { revision, users, unknown, unknown_sids, added, more } => {
            let users: Vec<UserJson> = users.iter().map(UserJson::from).collect();
            serde_json::json!({"type": t, "revision": revision, "users": users,
                "unknown": unknown, "unknown_sids": unknown_sids, "added": added, "more": more})
        }
        Frame::Change { revision, users } => {
            let users: Vec<UserJson> = users.iter().map(UserJson::from).collect();
            serde_json::json!({"type": t, "revision": revision, "users": users})
        }
        Frame::Progress { revision } => serde_json::json!({"type": t, "revision": revision}),
        Frame::Reset { revision, reason } => {
            serde_json::json!({"type": t, "revision": revision, "reason": reason})
        }
        Frame::Error { code, message } => {
            serde_json::json!({"type": t, "error": {"code": code.name, "message": message}})
        }
    }
}

fn parse_since(v: &str) -> Result<u64, ApiError> {
    v.trim().parse::<u64>().map_err(|_| {
        ApiError::new(codes::INVALID_SINCE, format!("since_revision {v:?} is not a number"))
    })
}

/// `GET /v1/presence/watch?uid=u1&uid=u2&sid=10001[&since_revision=R]`
/// (or `?all=true`).
async fn sse(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::new(codes::INVALID_QUERY_STRING, e.to_string()))?;
    let mut req = WatchRequest::default();
    for (k, v) in pairs {
        match k.as_str() {
            "uid" => req.uids.push(v),
            "sid" => req.sids.push(v.parse::<u64>().map_err(|_| {
                ApiError::new(codes::INVALID_FIELD, format!("sid {v:?} is not a number"))
            })?),
            "since_revision" => req.since = Some(parse_since(&v)?),
            "all" => {
                req.all = v.parse::<bool>().map_err(|_| {
                    ApiError::new(codes::INVALID_FIELD, format!("all {v:?} is not true or false"))
                })?
            }
            // A session token may come in the URL (access.rs reads it).
            "token" => {}
            other => {
                return Err(ApiError::new(
                    codes::UNKNOWN_PARAMETER,
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    if let Some(v) = headers.get("last-event-id").and_then(|v| v.to_str().ok()) {
        if !v.trim().is_empty() {
            req.since = Some(parse_since(v)?);
        }
    }
    let w = api.watch(req, &p).await?;
    let events = tokio_stream::wrappers::ReceiverStream::new(w.frames).map(|f| {
        let mut e = Event::default().event(frame_type(&f)).data(frame_json(&f).to_string());
        if let Some(r) = f.resume_point() {
            e = e.id(r.to_string());
        }
        Ok::<_, Infallible>(e)
    });
    // The control sender is dropped: an SSE stream's set is fixed (reopen
    // with the new set and since_revision to change it).
    drop(w.control);
    Ok(Sse::new(events).into_response())
}

/// A client frame on `/v1/ws`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientFrame {
    Watch {
        #[serde(default)]
        uids: Vec<String>,
        #[serde(default)]
        sids: Vec<u64>,
        #[serde(default)]
        since_revision: Option<u64>,
        /// Every user (an `admin` key).
        #[serde(default)]
        all: bool,
    },
    Add {
        #[serde(default)]
        uids: Vec<String>,
        #[serde(default)]
        sids: Vec<u64>,
    },
    Remove {
        #[serde(default)]
        uids: Vec<String>,
        #[serde(default)]
        sids: Vec<u64>,
    },
    /// Opens a client session (as `Gateway.Session`'s Hello); the token
    /// may be left out when the URL's `?token=` carries it.
    Hello {
        uid: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        client: Option<String>,
        #[serde(default)]
        sid: u64,
    },
    /// A session heartbeat.
    Heartbeat {
        #[serde(default)]
        seq: u64,
    },
    /// Acknowledges delivered messages: by id and/or every id <= up_to.
    Ack {
        #[serde(default)]
        ids: Vec<u64>,
        #[serde(default)]
        up_to: u64,
    },
}

/// Longest client frame on `/v1/ws`, bytes: a watch of the most ids
/// (10,000 uids of 128 bytes, quoted) fits, with room.
const MAX_WS_FRAME_BYTES: usize = 2 << 20;

/// Client frames of a browser session not yet taken by the session.
const WS_SESSION_IN_QUEUE: usize = 16;

/// Refusals of client frames not yet written (a client sending junk
/// faster than it reads waits for them).
const WS_ERROR_QUEUE: usize = 4;

/// `GET /v1/ws`: a WebSocket of JSON frames — a watch (an application's
/// key with `presence:read`), or a browser's client session (a user's
/// token, `?token=` since a browser cannot set headers on a WebSocket).
async fn ws(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    RawQuery(q): RawQuery,
    up: WebSocketUpgrade,
) -> Response {
    let token: Option<String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(q.as_deref().unwrap_or(""))
            .ok()
            .and_then(|v| v.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    up.max_message_size(MAX_WS_FRAME_BYTES).on_upgrade(move |s| ws_session(api, p, token, s))
}

fn error_text(e: &ApiError) -> String {
    serde_json::json!({"type": "error", "error": {"code": e.code(), "message": e.to_string()}})
        .to_string()
}

fn parse_client(m: &str) -> Result<ClientFrame, ApiError> {
    serde_json::from_str(m).map_err(|e| ApiError::new(codes::INVALID_FIELD, e.to_string()))
}

async fn ws_session(api: AppState, p: Principal, token: Option<String>, socket: WebSocket) {
    let (mut tx, mut rx) = socket.split();
    // The first frame opens the watch or the session.
    let first = loop {
        match rx.next().await {
            Some(Ok(Message::Text(t))) => break parse_client(t.as_str()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return,
        }
    };
    let req = match first {
        Ok(ClientFrame::Watch { .. }) if p.user().is_some() => {
            let e = ApiError::new(
                codes::FORBIDDEN,
                "watching presence takes an API key with presence:read, not a session token",
            );
            let _ = tx.send(Message::Text(error_text(&e).into())).await;
            return;
        }
        Ok(ClientFrame::Watch { uids, sids, since_revision, all }) => {
            WatchRequest { uids, sids, since: since_revision, all }
        }
        Ok(ClientFrame::Hello { uid, token: hello_token, client, sid }) => {
            let token = hello_token.or(token).unwrap_or_default();
            let hello = pb::Hello { uid, token, client: client.unwrap_or_default(), sid };
            return browser_session(api, hello, tx, rx).await;
        }
        Ok(_) => {
            let e = ApiError::new(codes::INVALID_FIELD, "the first frame must be watch or hello");
            let _ = tx.send(Message::Text(error_text(&e).into())).await;
            return;
        }
        Err(e) => {
            let _ = tx.send(Message::Text(error_text(&e).into())).await;
            return;
        }
    };
    let w = match api.watch(req, &p).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx.send(Message::Text(error_text(&e).into())).await;
            let _ = tx.close().await;
            return;
        }
    };
    let (mut frames, control) = (w.frames, w.control);
    // Refusals of the client's frames, written between the watch's frames.
    let (err_tx, mut errors) = tokio::sync::mpsc::channel::<String>(WS_ERROR_QUEUE);
    let reader = async {
        while let Some(Ok(m)) = rx.next().await {
            let c = match m {
                Message::Text(t) => parse_client(t.as_str()),
                Message::Close(_) => break,
                _ => continue,
            };
            let c = match c {
                Ok(ClientFrame::Add { uids, sids }) => Control::Add { uids, sids },
                Ok(ClientFrame::Remove { uids, sids }) => Control::Remove { uids, sids },
                Ok(ClientFrame::Watch { .. }) => {
                    let e = ApiError::new(
                        codes::INVALID_FIELD,
                        "the watch is open already: send add or remove",
                    );
                    let _ = err_tx.send(error_text(&e)).await;
                    continue;
                }
                Ok(
                    ClientFrame::Hello { .. }
                    | ClientFrame::Heartbeat { .. }
                    | ClientFrame::Ack { .. },
                ) => {
                    let e = ApiError::new(
                        codes::INVALID_FIELD,
                        "this WebSocket is a watch: send add or remove",
                    );
                    let _ = err_tx.send(error_text(&e)).await;
                    continue;
                }
                Err(e) => {
                    let _ = err_tx.send(error_text(&e)).await;
                    continue;
                }
            };
            if control.send(c).await.is_err() {
                break;
            }
        }
    };
    let writer = async {
        loop {
            let text = tokio::select! {
                f = frames.recv() => match f {
                    Some(f) => frame_json(&f).to_string(),
                    None => break,
                },
                Some(e) = errors.recv() => e,
            };
            if tx.send(Message::Text(text.into())).await.is_err() {
                break;
            }
        }
    };
    // Either side ending ends the session (dropping the frames ends the
    // watcher).
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

/// A server frame of a client session as JSON: `welcome`, `message` (the
/// body as text, and as `body_base64`), `heartbeat`, `error`.
fn server_json(f: pb::ServerFrame) -> Option<serde_json::Value> {
    use base64::Engine;
    use herald_proto::v1::server_frame::Frame as F;
    Some(match f.frame? {
        F::Welcome(w) => serde_json::json!({"type": "welcome", "session": w.session,
            "node": w.node, "heartbeat_ms": w.heartbeat_ms,
            "heartbeat_timeout_ms": w.heartbeat_timeout_ms, "queued": w.queued}),
        F::Message(m) => serde_json::json!({"type": "message", "id": m.id, "from": m.from,
            "kind": m.kind, "content_type": m.content_type,
            "body": String::from_utf8_lossy(&m.body),
            "body_base64": base64::engine::general_purpose::STANDARD.encode(&m.body),
            "sent_at_ms": m.sent_at_ms, "stored": m.stored,
            "expires_at_ms": m.expires_at_ms, "group": m.group}),
        F::Heartbeat(h) => {
            serde_json::json!({"type": "heartbeat", "seq": h.seq, "now_ms": h.now_ms})
        }
        F::Error(e) => {
            serde_json::json!({"type": "error", "error": {"code": e.code, "message": e.message}})
        }
    })
}

/// A browser's client session over the WebSocket: the gateway's own
/// session (`gateway::session::open`, the same Hello check, heartbeats,
/// window, acks and codes as `Gateway.Session`) with JSON frames.
async fn browser_session(
    api: AppState,
    hello: pb::Hello,
    mut tx: futures::stream::SplitSink<WebSocket, Message>,
    mut rx: futures::stream::SplitStream<WebSocket>,
) {
    use herald_proto::v1::client_frame::Frame as C;
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(WS_SESSION_IN_QUEUE);
    let _ = in_tx.send(Ok(pb::ClientFrame { frame: Some(C::Hello(hello)) })).await;
    let mut out = crate::gateway::session::open(
        api.gateway.clone(),
        tokio_stream::wrappers::ReceiverStream::new(in_rx),
    );
    let reader = async {
        while let Some(Ok(m)) = rx.next().await {
            let f = match m {
                Message::Text(t) => parse_client(t.as_str()),
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = match f {
                Ok(ClientFrame::Heartbeat { seq }) => C::Heartbeat(pb::Heartbeat { seq }),
                Ok(ClientFrame::Ack { ids, up_to }) => C::Ack(pb::Ack { ids, up_to }),
                // A second Hello is refused by the session itself.
                Ok(ClientFrame::Hello { uid, token, client, sid }) => C::Hello(pb::Hello {
                    uid,
                    token: token.unwrap_or_default(),
                    client: client.unwrap_or_default(),
                    sid,
                }),
                // Watch frames and junk: a session has no use for them.
                Ok(_) | Err(_) => break,
            };
            if in_tx.send(Ok(pb::ClientFrame { frame: Some(frame) })).await.is_err() {
                break;
            }
        }
    };
    let writer = async {
        // The session ends its stream with an Err status after a refusal.
        while let Some(Ok(f)) = out.next().await {
            let Some(v) = server_json(*f) else { continue };
            if tx.send(Message::Text(v.to_string().into())).await.is_err() {
                return;
            }
        }
        let _ = tx.close().await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}
