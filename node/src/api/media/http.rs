//! Media, contacts, group-send and the shared page over HTTP: the axum
//! routes and handlers (contract: docs/media.md).

use herald_proto::codes;
use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use herald_proto::wire::media::{
    Contact, ContactBody, ContactList, GroupSendAnswer, GroupSendRequest, MediaInfo, MediaMessage,
    Removed, SharedMedia, SharedPage, UploadRequest,
};
use herald_proto::wire::Revision;
use serde::Deserialize;

use super::{bearer, check_media_id, media_in, write_lib, MAX_TEXT_BYTES, MEDIA_MESSAGE_TYPE};
use crate::api::access::Principal;
use crate::api::messages::{check_group_name, check_uid, Submission};
use crate::api::routes::{Served, Verb};
use crate::api::{Api, ApiError, Consistency};
use crate::media::range::{self, RangeAnswer};
use crate::metrics::SourceLabel;
use herald_domain::library::{LibOp, LibResult, MAX_GROUPS_PER_CONTACT};

type AppState = std::sync::Arc<Api>;

/// Routes of this module, merged into the HTTP router.
pub fn routes() -> Served<AppState> {
    use Verb::*;
    Served::default()
        .at(Post, "/v1/users/{uid}/uploads", post_upload)
        .at(Put, "/v1/uploads/{id}", put_upload)
        .at(Get, "/v1/media/{id}", get_media)
        .at(Get, "/v1/media/{id}/content", get_content)
        .at(Delete, "/v1/users/{uid}/media/{id}", delete_media)
        .at(Get, "/v1/users/{uid}/contacts", get_contacts)
        .at(Put, "/v1/users/{uid}/contacts/{contact}", put_contact)
        .at(Delete, "/v1/users/{uid}/contacts/{contact}", delete_contact)
        .at(Post, "/v1/users/{uid}/group-send", post_group_send)
        .at(Get, "/v1/users/{uid}/shared", get_shared)
}

/// Query parameters any of these routes may carry.
#[derive(Debug, Default, Deserialize)]
struct Params {
    /// `?token=` and `?viewer=` are read by the guard (api/access.rs).
    #[allow(dead_code)]
    token: Option<String>,
    #[allow(dead_code)]
    viewer: Option<String>,
    access: Option<String>,
    format: Option<String>,
    group: Option<String>,
}

async fn post_upload(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    body: Result<Json<UploadRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    p.act_as(&uid)?;
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    let t = api.media.begin_upload(&uid, b.size, &b.content_type, &b.name)?;
    api.metrics.media_uploads_requested.inc();
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn put_upload(
    State(api): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let cred = bearer(&headers).ok_or_else(|| ApiError::Refused {
        code: codes::MISSING_CREDENTIAL,
        message: "the upload credential is required: Authorization: Bearer <credential>".into(),
    })?;
    let r = api.media.receive(&id, cred, body.into_data_stream()).await;
    match r {
        Ok(done) => {
            api.metrics.media_uploads.inc();
            api.metrics.media_upload_bytes.inc_by(done.size);
            Ok((StatusCode::CREATED, Json(done)).into_response())
        }
        Err(e) => {
            let e = ApiError::from(e);
            api.count_error(&e);
            Err(e)
        }
    }
}

/// The viewer of a view call: the user whose session token the guard
/// checked for the viewer the request names (`X-Herald-User` or
/// `?viewer=`, see [`crate::api::routes::UserFrom::Viewer`]).
fn viewer(p: &Principal) -> Result<String, ApiError> {
    p.user().map(str::to_owned).ok_or_else(|| {
        ApiError::new(codes::MISSING_TOKEN, "a media view needs the viewer's session token")
    })
}

async fn get_media(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<MediaInfo>, ApiError> {
    // The guard checked the session token for the viewer the request names.
    let v = viewer(&p)?;
    check_media_id(&id)?;
    let (m, owners) = api
        .node
        .read(Consistency::Linearizable, |st| {
            let m = media_in(st, &id)?;
            if !st.lib.may_view(&id, &v) {
                return Err(ApiError::new(
                    codes::ACCESS_DENIED,
                    format!(
                        "{v} is not an owner, a friend of an owner, or a recipient of this media"
                    ),
                ));
            }
            // Owners the viewer may know of: itself and its friends
            // (identical bytes shared by a stranger are not revealed).
            let owners: Vec<String> = m
                .owners
                .keys()
                .filter(|o| **o == v || st.lib.are_friends(o, &v))
                .cloned()
                .collect();
            Ok((m, owners))
        })
        .await??;
    let (url, expires_at_ms) = api.media.access_url(&id, &v)?;
    Ok(Json(MediaInfo {
        media_id: m.id,
        size: m.size,
        content_type: m.content_type,
        created_ms: m.created_ms,
        owners,
        replicas: m.replicas.iter().copied().collect(),
        url,
        expires_at_ms,
    }))
}

async fn get_content(
    State(api): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<Params>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cred =
        q.access.as_deref().or_else(|| bearer(&headers)).ok_or_else(|| ApiError::Refused {
            code: codes::MISSING_CREDENTIAL,
            message:
                "an access credential is required: ?access=<credential> (from GET /v1/media/{id})"
                    .into(),
        })?;
    let viewer = api.media.check_access(&id, cred)?;
    let m = api.media_meta(&id).await?;
    let size = m.size;
    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, len) = match range::parse(range_header, size) {
        RangeAnswer::Full => (StatusCode::OK, 0, size),
        RangeAnswer::Partial { start, end } => {
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeAnswer::Unsatisfiable => {
            let mut r =
                ApiError::new(codes::RANGE_NOT_SATISFIABLE, format!("the media has {size} bytes"))
                    .into_response();
            if let Ok(v) = format!("bytes */{size}").parse() {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
    };
    tracing::debug!(media = %id, %viewer, start, len, "serving media");
    let body = if method == Method::HEAD || len == 0 {
        Body::empty()
    } else {
        let (s, source) = api.media.open_bytes(&id, start, len, &m.replicas).await?;
        api.metrics.media_download_bytes.inc_by(len);
        api.metrics.media_downloads.get_or_create(&SourceLabel { source: source.label() }).inc();
        Body::from_stream(s)
    };
    let mut r = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, m.content_type.as_str())
        .header(header::CONTENT_LENGTH, len)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{}\"", m.id))
        .header(header::CACHE_CONTROL, "private, max-age=31536000, immutable")
        // Uploaded bytes never run as a page of this origin.
        .header("x-content-type-options", "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    let inline = ["image/", "audio/", "video/"].iter().any(|p| m.content_type.starts_with(p));
    if !inline {
        r = r.header(header::CONTENT_DISPOSITION, "attachment");
    }
    if status == StatusCode::PARTIAL_CONTENT {
        r = r.header(header::CONTENT_RANGE, range::content_range(start, start + len - 1, size));
    }
    r.body(body).map_err(|e| ApiError::new(codes::INTERNAL, e.to_string()))
}

async fn delete_media(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((uid, id)): Path<(String, String)>,
) -> Result<Json<Removed>, ApiError> {
    p.act_as(&uid)?;
    check_media_id(&id)?;
    let (revision, r) = write_lib(&api, LibOp::MediaUnshare { id, owner: uid }).await?;
    Ok(Json(Removed { removed: r == LibResult::Done(true), revision }))
}

async fn get_contacts(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    Query(q): Query<Params>,
) -> Result<Json<ContactList>, ApiError> {
    p.act_as(&uid)?;
    let contacts: Vec<Contact> = api
        .node
        .read(Consistency::Linearizable, |st| {
            st.lib
                .contacts(&uid)
                .map(|c| {
                    c.iter()
                        .filter(|(_, gs)| q.group.as_ref().is_none_or(|g| gs.contains(g)))
                        .map(|(u, gs)| Contact {
                            uid: u.clone(),
                            groups: gs.iter().cloned().collect(),
                            friend: st.lib.are_friends(&uid, u),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
        .await?;
    Ok(Json(ContactList { contacts, uid }))
}

async fn put_contact(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((uid, contact)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Revision>, ApiError> {
    p.act_as(&uid)?;
    check_uid("contact", &contact)?;
    let b: ContactBody = if body.iter().all(u8::is_ascii_whitespace) {
        ContactBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(codes::MALFORMED_JSON, e.to_string()))?
    };
    if b.groups.len() > MAX_GROUPS_PER_CONTACT {
        return Err(ApiError::new(
            codes::TOO_MANY_GROUPS,
            format!("a contact is in at most {MAX_GROUPS_PER_CONTACT} groups"),
        ));
    }
    for g in &b.groups {
        check_group_name(g)?;
    }
    let (revision, _) =
        write_lib(&api, LibOp::ContactSet { uid, contact, groups: b.groups }).await?;
    Ok(Json(Revision { revision }))
}

async fn delete_contact(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((uid, contact)): Path<(String, String)>,
) -> Result<Json<Removed>, ApiError> {
    p.act_as(&uid)?;
    check_uid("contact", &contact)?;
    let (revision, r) = write_lib(&api, LibOp::ContactRemove { uid, contact }).await?;
    Ok(Json(Removed { removed: r == LibResult::Done(true), revision }))
}

async fn post_group_send(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    body: Result<Json<GroupSendRequest>, JsonRejection>,
) -> Result<Json<GroupSendAnswer>, ApiError> {
    p.act_as(&uid)?;
    let Json(b) =
        body.map_err(|r| crate::api::http::json_error(r, api.limits.max_request_bytes))?;
    if b.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            codes::INVALID_TEXT,
            format!("text is at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    for g in &b.groups {
        check_group_name(g)?;
    }
    check_media_id(&b.media_id)?;
    let (m, to) = api
        .node
        .read(Consistency::Linearizable, |st| {
            let m = media_in(st, &b.media_id)?;
            if !m.owners.contains_key(&uid) {
                return Err(ApiError::new(
                    codes::NOT_OWNER,
                    format!("{uid} does not share media {}; upload it first", m.id),
                ));
            }
            Ok((m, st.lib.recipients(&uid, &b.groups)))
        })
        .await??;
    if to.is_empty() {
        return Err(ApiError::new(
            codes::NO_RECIPIENTS,
            if b.groups.is_empty() {
                "the user has no contacts".to_string()
            } else {
                format!("no contact is in the groups {:?}", b.groups)
            },
        ));
    }
    let name = m.owners.get(&uid).map(|o| o.name.clone()).unwrap_or_default();
    let msg = MediaMessage {
        content_type: m.content_type.clone(),
        from: uid.clone(),
        link: api.media.link(&m.id),
        media_id: m.id.clone(),
        name,
        size: m.size,
        text: b.text,
        kind: "media".into(),
    };
    let body =
        serde_json::to_vec(&msg).map_err(|e| ApiError::new(codes::INTERNAL, e.to_string()))?;
    let s = Submission {
        idempotency_key: b.idempotency_key,
        from: uid,
        to,
        content_type: MEDIA_MESSAGE_TYPE.into(),
        body,
        grant_media: Some(m.id.clone()),
        namespace: p.namespace(),
        ..Submission::default()
    };
    let a = api.send(s).await?;
    api.metrics.media_group_sends.inc();
    Ok(Json(GroupSendAnswer {
        message_id: a.message_id,
        media_id: m.id,
        duplicate: a.duplicate,
        revision: a.revision,
        recipients: a.recipients,
    }))
}

fn wants_html(headers: &HeaderMap, q: &Params) -> bool {
    match q.format.as_deref() {
        Some("html") => true,
        Some(_) => false,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html")),
    }
}

fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

async fn get_shared(
    State(api): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(uid): Path<String>,
    Query(q): Query<Params>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_uid("uid", &uid)?;
    let v = viewer(&p)?;
    let items: Vec<SharedMedia> = api
        .node
        .read(Consistency::Linearizable, |st| {
            if v != uid && !st.lib.are_friends(&uid, &v) {
                return Err(ApiError::new(
                    codes::NOT_A_FRIEND,
                    format!("{uid}'s shared media is visible to {uid}'s friends only"),
                ));
            }
            let mut out = Vec::new();
            for m in st.lib.shared_by(&uid) {
                let (url, expires_at_ms) = api.media.access_url(&m.id, &v)?;
                out.push(SharedMedia {
                    media_id: m.id.clone(),
                    name: m.owners.get(&uid).map(|o| o.name.clone()).unwrap_or_default(),
                    size: m.size,
                    content_type: m.content_type.clone(),
                    created_ms: m.created_ms,
                    url,
                    expires_at_ms,
                });
            }
            Ok::<_, ApiError>(out)
        })
        .await??;
    if wants_html(&headers, &q) {
        let mut h = format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Shared by {u}</title></head>\n<body>\n<h1>Shared by {u}</h1>\n",
            u = escape(&uid)
        );
        if items.is_empty() {
            h.push_str("<p>Nothing shared yet.</p>\n");
        } else {
            h.push_str("<ul>\n");
            for i in &items {
                let label = if i.name.is_empty() { &i.media_id } else { &i.name };
                h.push_str(&format!(
                    "<li><a href=\"{}\">{}</a> — {} · {} bytes</li>\n",
                    escape(&i.url),
                    escape(label),
                    escape(&i.content_type),
                    i.size
                ));
            }
            h.push_str("</ul>\n");
        }
        h.push_str("</body></html>\n");
        return Ok(Html(h).into_response());
    }
    let ids: BTreeSet<&str> = items.iter().map(|i| i.media_id.as_str()).collect();
    tracing::debug!(%uid, viewer = %v, items = ids.len(), "shared page");
    Ok(Json(SharedPage { media: items, uid }).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// HTML output escapes what users control.
    #[test]
    fn media_html_escape() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    /// The answers the node built with `serde_json::json!` (contacts,
    /// removals, the shared page, the group-send message) are byte-for-byte
    /// what it wrote before they were wire types.
    #[test]
    fn media_answers_keep_their_bytes() {
        #[derive(Serialize)]
        struct ContactOut {
            uid: String,
            groups: Vec<String>,
            friend: bool,
        }
        #[derive(Serialize)]
        struct SharedItem {
            media_id: String,
            name: String,
            size: u64,
            content_type: String,
            created_ms: u64,
            url: String,
            expires_at_ms: u64,
        }
        let old = serde_json::json!({ "uid": "alice", "contacts": [ContactOut {
            uid: "bob".into(), groups: vec!["friends".into(), "a\"b".into()], friend: true }] });
        let new = ContactList {
            contacts: vec![Contact {
                friend: true,
                groups: vec!["friends".into(), "a\"b".into()],
                uid: "bob".into(),
            }],
            uid: "alice".into(),
        };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        for removed in [true, false] {
            let old = serde_json::json!({ "revision": 9, "removed": removed });
            let new = Removed { removed, revision: 9 };
            assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        }
        let old = serde_json::json!({ "uid": "bob", "media": [SharedItem {
            media_id: "ab".into(), name: "b é.jpg".into(), size: 5, content_type: "image/jpeg".into(),
            created_ms: 1, url: "http://x/c?access=1".into(), expires_at_ms: 2 }] });
        let new = SharedPage {
            media: vec![SharedMedia {
                content_type: "image/jpeg".into(),
                created_ms: 1,
                expires_at_ms: 2,
                media_id: "ab".into(),
                name: "b é.jpg".into(),
                size: 5,
                url: "http://x/c?access=1".into(),
            }],
            uid: "bob".into(),
        };
        assert_eq!(serde_json::to_string(&new).unwrap(), old.to_string());
        let old = serde_json::json!({
            "type": "media", "from": "alice", "media_id": "ab", "name": "a.png", "size": 3,
            "content_type": "image/png", "text": "hi <there>", "link": "http://h/v1/media/ab",
        });
        let new = MediaMessage {
            content_type: "image/png".into(),
            from: "alice".into(),
            link: "http://h/v1/media/ab".into(),
            media_id: "ab".into(),
            name: "a.png".into(),
            size: 3,
            text: "hi <there>".into(),
            kind: "media".into(),
        };
        assert_eq!(serde_json::to_vec(&new).unwrap(), old.to_string().into_bytes());
    }
}
