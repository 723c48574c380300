//! Media, contacts, group-send and sharing over the HTTP API of a node's
//! publish port (contract: `docs/media.md`).
//!
//! [`MediaClient`] is **blocking** (over `ureq`); from async code run it on
//! a blocking thread (`tokio::task::spawn_blocking`).
//!
//! ```no_run
//! # fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::media::MediaClient;
//! use herald_client::ConnectOptions;
//! let c = MediaClient::new("127.0.0.1:7103", "alice", "<session token>", &ConnectOptions::default())?;
//! let up = c.upload("beach.jpg".as_ref(), None, None, |sent, total| eprintln!("{sent}/{total}"))?;
//! let key = herald_client::media::group_send_key("alice", &up.media_id, &["friends".to_string()], None);
//! let sent = c.group_send(&up.media_id, None, &["friends".to_string()], &key)?;
//! println!("{} recipients", sent.recipients.len());
//! c.download(&up.media_id, "copy.jpg".as_ref(), |_, _| {})?;
//! # Ok(()) }
//! ```
//!
//! Uploads and downloads are streamed with bounded buffers: memory does not
//! grow with the file size. Downloads resume from `<dest>.part` with a
//! `Range` request and are checked against the media id (the hex SHA-256 of
//! the stored bytes) before `<dest>` appears.
//!
//! Errors are [`ClientError`]s; what the server refuses is
//! [`ClientError::Server`] with the server's stable `code` and `message`
//! (`"<code>: <message>"`).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herald_proto::wire::media::ContactBody;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::tls::{PemItem, RootCerts, TlsConfig, TlsProvider};
use ureq::Body;

use crate::addr::normalize_addr;
use crate::client::ConnectOptions;
use crate::error::{error_chain, ClientError};

/// How long connecting (TCP and TLS) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one read or write on the connection may stall (also the wait
/// for an answer after an upload's last byte, while the node replicates).
pub const IO_TIMEOUT: Duration = Duration::from_secs(120);
/// Size of the one buffer a download or a hash streams through.
pub const STREAM_BUFFER: usize = 256 * 1024;
/// Attempts a download makes in a row without receiving a byte before it
/// gives up (the `.part` file stays for a later resume).
pub const DEFAULT_DOWNLOAD_RETRIES: u32 = 3;
/// Largest error or JSON answer read into memory.
const MAX_ANSWER_BYTES: u64 = 16 << 20;

/// The viewer header of view calls (`X-Herald-User`).
pub const VIEWER_HEADER: &str = "X-Herald-User";

// ---------------------------------------------------------------------------
// Wire types (docs/media.md)
// ---------------------------------------------------------------------------

/// The JSON of the media API, defined once with the node
/// ([`herald_proto::wire::media`]); the names this module always had.
pub use herald_proto::wire::media::{
    Contact, ContactList, GroupSendAnswer, GroupSendRequest, MediaInfo, MediaMessage,
    Removed as ContactRemoved, SharedMedia, SharedPage, UploadDone as UploadAnswer, UploadRequest,
    UploadTicket, MEDIA_MESSAGE_TYPE,
};
/// `PUT /v1/users/{uid}/contacts/{contact}` answer: `{"revision"}`.
pub use herald_proto::wire::Revision as ContactSet;

/// What [`MediaClient::download`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownloadReport {
    pub media_id: String,
    /// The file written.
    pub path: PathBuf,
    pub size: u64,
    pub content_type: String,
    /// Bytes already in the `.part` file that were kept (0 = from scratch).
    pub resumed_from: u64,
}

// ---------------------------------------------------------------------------
// Helpers that need no server
// ---------------------------------------------------------------------------

/// Extension ↔ content type of the common media kinds.
const TYPES: &[(&str, &str)] = &[
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("webp", "image/webp"),
    ("gif", "image/gif"),
    ("mp4", "video/mp4"),
    ("mov", "video/quicktime"),
    ("webm", "video/webm"),
    ("mp3", "audio/mpeg"),
    ("m4a", "audio/mp4"),
    ("pdf", "application/pdf"),
    ("txt", "text/plain"),
];

/// Content type of a file by its extension (case-insensitive);
/// `application/octet-stream` when unknown.
pub fn guess_content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    TYPES.iter().find(|(e, _)| *e == ext).map_or("application/octet-stream", |(_, t)| t)
}

/// File extension (without dot) for a content type, ignoring parameters
/// (`text/plain; charset=utf-8`); `None` when unknown.
pub fn extension_for(content_type: &str) -> Option<&'static str> {
    let t = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    TYPES.iter().find(|(_, ct)| *ct == t).map(|(e, _)| *e)
}

/// Lower-case hex of bytes.
pub fn to_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// Hex SHA-256 of a file, read through one [`STREAM_BUFFER`].
pub fn file_sha256(path: &Path) -> Result<String, ClientError> {
    let mut f = File::open(path).map_err(|e| ClientError::io(path.display(), &e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; STREAM_BUFFER];
    loop {
        let n = f.read(&mut buf).map_err(|e| ClientError::io(path.display(), &e))?;
        if n == 0 {
            return Ok(to_hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The idempotency key of a group-send, derived from what is sent: the
/// sender `uid`, the content (`content`: the file's hex SHA-256 or the
/// media id), the groups (order and repeats do not matter; none = all
/// contacts) and the text (`None` and `Some("")` are the same). Sending the
/// same thing again gets the same key, so the cluster answers `duplicate`
/// instead of sending twice (within its idempotency window).
///
/// Format: `gs1-` and the hex SHA-256 of the length-prefixed fields
/// (68 bytes, under the server's 128-byte limit).
pub fn group_send_key(uid: &str, content: &str, groups: &[String], text: Option<&str>) -> String {
    let mut groups: Vec<&str> = groups.iter().map(String::as_str).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_be_bytes());
        h.update(b);
    };
    field(b"herald group-send v1");
    field(uid.as_bytes());
    field(content.to_ascii_lowercase().as_bytes());
    field(&(groups.len() as u64).to_be_bytes());
    for g in groups {
        field(g.as_bytes());
    }
    field(text.unwrap_or("").as_bytes());
    format!("gs1-{}", to_hex(&h.finalize()))
}

/// `true` when `id` looks like a media id: 64 hex digits.
pub fn is_media_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `<dest>.part`: where [`MediaClient::download`] writes until the bytes
/// are verified.
pub fn part_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".part");
    PathBuf::from(s)
}

/// Percent-encodes one path segment or query value (everything but
/// `A-Z a-z 0-9 - . _ ~`).
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A reader that calls `progress(read so far, total)` after every read.
pub struct ProgressReader<R, F> {
    inner: R,
    done: u64,
    total: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64, u64)> ProgressReader<R, F> {
    /// Wraps `inner`, whose length is `total`.
    pub fn new(inner: R, total: u64, progress: F) -> Self {
        ProgressReader { inner, done: 0, total, progress }
    }

    /// Bytes read so far.
    pub fn done(&self) -> u64 {
        self.done
    }
}

impl<R: Read, F: FnMut(u64, u64)> Read for ProgressReader<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        (self.progress)(self.done, self.total);
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// The HTTP agent of this crate's blocking clients: `opts.ca_pem` as the
/// only roots for https (else the Mozilla roots), errors as answers.
pub(crate) fn agent(opts: &ConnectOptions) -> Result<ureq::Agent, ClientError> {
    let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
    if let Some(pem) = &opts.ca_pem {
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                Ok(_) => {}
                Err(e) => return Err(ClientError::InvalidArgument(format!("CA: bad PEM: {e}"))),
            }
        }
        if certs.is_empty() {
            return Err(ClientError::InvalidArgument("CA: no PEM certificate found".into()));
        }
        tls = tls.root_certs(RootCerts::Specific(Arc::new(certs)));
    }
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_per_read(Some(IO_TIMEOUT))
        .timeout_per_write(Some(IO_TIMEOUT))
        .tls_config(tls.build())
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent();
    Ok(agent)
}

/// A blocking client of the media, contacts, group-send and sharing API,
/// acting as one user (`uid`, with its session token).
///
/// Cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct MediaClient {
    base: String,
    uid: String,
    token: String,
    agent: ureq::Agent,
    retries: u32,
}

impl MediaClient {
    /// A client of the node at `node` (`host:port`, `http://host:port` or
    /// `https://host:port`, as [`normalize_addr`] accepts) acting as `uid`
    /// with session token `token`.
    ///
    /// For `https://` (and https URLs the nodes hand out) the certificates
    /// in `opts.ca_pem` are the only roots trusted; without it, the
    /// Mozilla roots. `opts.domain` is not supported by this HTTP client:
    /// the certificate is checked against the URL's host.
    pub fn new(
        node: &str,
        uid: &str,
        token: &str,
        opts: &ConnectOptions,
    ) -> Result<Self, ClientError> {
        let base = normalize_addr(node)?;
        if uid.is_empty() {
            return Err(ClientError::InvalidArgument(
                "the user id (--uid) must not be empty".into(),
            ));
        }
        let agent = agent(opts)?;
        Ok(MediaClient {
            base,
            uid: uid.to_string(),
            token: token.to_string(),
            agent,
            retries: DEFAULT_DOWNLOAD_RETRIES,
        })
    }

    /// How many attempts in a row without progress a download makes before
    /// giving up (default [`DEFAULT_DOWNLOAD_RETRIES`]; 0 = one attempt).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// `http(s)://host:port` of the node.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The user this client acts as.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A URL the server handed out; a path-only one is on this node.
    fn absolute(&self, url: &str) -> String {
        if url.starts_with('/') {
            self.url(url)
        } else {
            url.to_string()
        }
    }

    fn user_path(&self, rest: &str) -> String {
        self.url(&format!("/v1/users/{}{rest}", encode_component(&self.uid)))
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Uploads a file: asks for an upload (`POST /v1/users/{uid}/uploads`),
    /// then streams the file to the upload URL with `Content-Length`,
    /// calling `progress(sent, total)` as bytes go out.
    ///
    /// `content_type` defaults to [`guess_content_type`], `name` to the
    /// file's name.
    pub fn upload(
        &self,
        path: &Path,
        content_type: Option<&str>,
        name: Option<&str>,
        progress: impl FnMut(u64, u64),
    ) -> Result<UploadAnswer, ClientError> {
        let file = File::open(path).map_err(|e| ClientError::io(path.display(), &e))?;
        let meta = file.metadata().map_err(|e| ClientError::io(path.display(), &e))?;
        if !meta.is_file() {
            return Err(ClientError::InvalidArgument(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        let size = meta.len();
        let content_type = content_type
            .map(str::to_string)
            .unwrap_or_else(|| guess_content_type(path).to_string());
        let name = match name {
            Some(n) => n.to_string(),
            None => path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let ticket =
            self.create_upload(&UploadRequest { size, content_type: content_type.clone(), name })?;
        // Never more than `size` bytes, even if the file grows meanwhile; a
        // file that shrank ends short and the node refuses (size_mismatch).
        let mut body = ProgressReader::new(file.take(size), size, progress);
        let url = self.absolute(&ticket.upload_url);
        let r = self
            .agent
            .put(&url)
            .header("Authorization", format!("Bearer {}", ticket.credential))
            .header("Content-Type", &content_type)
            .header("Content-Length", size.to_string())
            .send(ureq::SendBody::from_reader(&mut body));
        finish(&url, r)
    }

    /// Step 1 of an upload alone: `POST /v1/users/{uid}/uploads`.
    pub fn create_upload(&self, req: &UploadRequest) -> Result<UploadTicket, ClientError> {
        let url = self.user_path("/uploads");
        finish(&url, self.agent.post(&url).header("Authorization", self.bearer()).send_json(req))
    }

    /// `GET /v1/media/{id}` as `viewer` (default: this client's user): the
    /// media and a download URL.
    pub fn info(&self, media_id: &str, viewer: Option<&str>) -> Result<MediaInfo, ClientError> {
        let url = self.url(&format!("/v1/media/{}", encode_component(media_id)));
        let r = self
            .agent
            .get(&url)
            .header("Authorization", self.bearer())
            .header(VIEWER_HEADER, viewer.unwrap_or(&self.uid))
            .header("Accept", "application/json")
            .call();
        finish(&url, r)
    }

    /// Downloads a media into `dest`, resumably: bytes go to
    /// [`part_path`]`(dest)`; if that file exists its bytes are kept and
    /// only the rest is asked for (`Range: bytes=<len>-`). A server that
    /// answers 200 (ignoring the range) restarts it from 0; a 206 must start
    /// where asked. An expired access credential (401
    /// `credential_expired`) is renewed by asking [`info`](Self::info)
    /// again. A broken transfer is retried from where it stopped (up to
    /// [`with_retries`](Self::with_retries) attempts without progress).
    ///
    /// When all bytes are there, their SHA-256 must equal `media_id` (a
    /// resumed file that does not match is downloaded once more from
    /// scratch); then the `.part` file is renamed to `dest` (replacing
    /// it). On a mismatch nothing is kept and the error is
    /// [`ClientError::HashMismatch`]. `progress(done, total)` is called as
    /// bytes arrive. Memory use is one [`STREAM_BUFFER`].
    pub fn download(
        &self,
        media_id: &str,
        dest: &Path,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<DownloadReport, ClientError> {
        if !is_media_id(media_id) {
            return Err(ClientError::InvalidArgument(format!(
                "{media_id:?} is not a media id (64 hex digits)"
            )));
        }
        let media_id = media_id.to_ascii_lowercase();
        let part = part_path(dest);
        let pd = part.display();
        let mut info = self.info(&media_id, None)?;
        let total = info.size;
        let mut url = self.absolute(&info.url);
        let mut buf = vec![0u8; STREAM_BUFFER];
        let mut resumed_from: Option<u64> = None;
        let mut fresh_retry_done = false;
        let mut stalled = 0u32; // attempts in a row that got no byte
        let mut renewals = 0u32;
        let mut last_err: Option<ClientError> = None;
        loop {
            if stalled > self.retries {
                return Err(last_err.unwrap_or_else(|| {
                    ClientError::Transport(format!("download of {media_id} made no progress"))
                }));
            }
            if stalled > 0 {
                std::thread::sleep(Duration::from_millis(200 * u64::from(stalled)));
            }
            let mut file = File::options()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&part)
                .map_err(|e| ClientError::io(&pd, &e))?;
            let mut offset = file.metadata().map_err(|e| ClientError::io(&pd, &e))?.len();
            if offset > total {
                offset = 0;
            }
            file.set_len(offset).map_err(|e| ClientError::io(&pd, &e))?;
            resumed_from.get_or_insert(offset);
            let mut hasher = Sha256::new();
            if offset < total {
                let mut req = self.agent.get(&url);
                if offset > 0 {
                    req = req.header("Range", format!("bytes={offset}-"));
                }
                let mut resp = match req.call() {
                    Ok(r) => r,
                    Err(e) => {
                        last_err = Some(classify(&url, e));
                        stalled += 1;
                        continue;
                    }
                };
                match resp.status().as_u16() {
                    200 => offset = 0,
                    206 => {
                        let cr = resp
                            .headers()
                            .get("content-range")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("");
                        match parse_content_range(cr) {
                            Some((start, _, size))
                                if start == offset && size.is_none_or(|s| s == total) => {}
                            _ => {
                                // Not the part asked for: start again from 0.
                                last_err = Some(ClientError::Transport(format!(
                                    "206 with Content-Range {cr:?} for bytes={offset}-"
                                )));
                                drop(resp);
                                file.set_len(0).map_err(|e| ClientError::io(&pd, &e))?;
                                stalled += 1;
                                continue;
                            }
                        }
                    }
                    416 => {
                        // The part file does not fit this media: start again.
                        last_err = Some(server_error(&url, &mut resp));
                        file.set_len(0).map_err(|e| ClientError::io(&pd, &e))?;
                        stalled += 1;
                        continue;
                    }
                    401 => {
                        let e = server_error(&url, &mut resp);
                        if e.code() != "credential_expired" || renewals >= 2 + self.retries {
                            return Err(e);
                        }
                        renewals += 1;
                        info = self.info(&media_id, None)?;
                        url = self.absolute(&info.url);
                        continue;
                    }
                    _ => return Err(server_error(&url, &mut resp)),
                }
                file.set_len(offset).map_err(|e| ClientError::io(&pd, &e))?;
                hash_prefix(&mut file, offset, &mut hasher, &mut buf)
                    .map_err(|e| ClientError::io(&pd, &e))?;
                file.seek(SeekFrom::Start(offset)).map_err(|e| ClientError::io(&pd, &e))?;
                progress(offset, total);
                let start = offset;
                let mut reader = resp.body_mut().as_reader();
                let mut broke = None;
                while offset < total {
                    let want = buf.len().min((total - offset).min(usize::MAX as u64) as usize);
                    match reader.read(&mut buf[..want]) {
                        Ok(0) => break,
                        Ok(n) => {
                            file.write_all(&buf[..n]).map_err(|e| ClientError::io(&pd, &e))?;
                            hasher.update(&buf[..n]);
                            offset += n as u64;
                            progress(offset, total);
                        }
                        Err(e) => {
                            broke = Some(ClientError::Transport(format!(
                                "download from {url} broke at byte {offset}: {}",
                                error_chain(&e)
                            )));
                            break;
                        }
                    }
                }
                file.sync_all().map_err(|e| ClientError::io(&pd, &e))?;
                if offset < total {
                    stalled = if offset > start { 1 } else { stalled + 1 };
                    last_err = Some(broke.unwrap_or_else(|| {
                        ClientError::Transport(format!(
                            "download from {url} ended at byte {offset} of {total}"
                        ))
                    }));
                    continue;
                }
            } else {
                hash_prefix(&mut file, offset, &mut hasher, &mut buf)
                    .map_err(|e| ClientError::io(&pd, &e))?;
                progress(offset, total);
            }
            drop(file);
            let actual = to_hex(&hasher.finalize());
            if actual != media_id {
                std::fs::remove_file(&part).map_err(|e| ClientError::io(&pd, &e))?;
                if resumed_from.is_some_and(|r| r > 0) && !fresh_retry_done {
                    // The kept bytes may be what is wrong: once from scratch.
                    fresh_retry_done = true;
                    resumed_from = Some(0);
                    continue;
                }
                return Err(ClientError::HashMismatch { expected: media_id, actual });
            }
            std::fs::rename(&part, dest)
                .map_err(|e| ClientError::io(format!("rename {} to {}", pd, dest.display()), &e))?;
            return Ok(DownloadReport {
                media_id,
                path: dest.to_path_buf(),
                size: total,
                content_type: info.content_type,
                resumed_from: resumed_from.unwrap_or(0),
            });
        }
    }

    /// `POST /v1/users/{uid}/group-send`: sends a message about the media
    /// to the contacts in `groups` (empty = all contacts). Resending with
    /// the same `idempotency_key` is answered `duplicate` (see
    /// [`group_send_key`]).
    pub fn group_send(
        &self,
        media_id: &str,
        text: Option<&str>,
        groups: &[String],
        idempotency_key: &str,
    ) -> Result<GroupSendAnswer, ClientError> {
        let req = GroupSendRequest {
            media_id: media_id.to_string(),
            text: text.unwrap_or("").to_string(),
            groups: groups.to_vec(),
            idempotency_key: idempotency_key.to_string(),
        };
        let url = self.user_path("/group-send");
        finish(&url, self.agent.post(&url).header("Authorization", self.bearer()).send_json(&req))
    }

    /// `PUT /v1/users/{uid}/contacts/{contact}`: adds a contact, or
    /// replaces its groups. With no groups the body is `{}` (the node keeps
    /// or clears them as it defines).
    pub fn contacts_add(
        &self,
        contact: &str,
        groups: &[String],
    ) -> Result<ContactSet, ClientError> {
        let url = self.user_path(&format!("/contacts/{}", encode_component(contact)));
        let body = ContactBody { groups: groups.to_vec() };
        finish(&url, self.agent.put(&url).header("Authorization", self.bearer()).send_json(&body))
    }

    /// `DELETE /v1/users/{uid}/contacts/{contact}`.
    pub fn contacts_remove(&self, contact: &str) -> Result<ContactRemoved, ClientError> {
        let url = self.user_path(&format!("/contacts/{}", encode_component(contact)));
        finish(&url, self.agent.delete(&url).header("Authorization", self.bearer()).call())
    }

    /// `GET /v1/users/{uid}/contacts[?group=G]`.
    pub fn contacts_list(&self, group: Option<&str>) -> Result<ContactList, ClientError> {
        let mut url = self.user_path("/contacts");
        if let Some(g) = group {
            url.push_str(&format!("?group={}", encode_component(g)));
        }
        finish(&url, self.agent.get(&url).header("Authorization", self.bearer()).call())
    }

    /// `GET /v1/users/{of_uid}/shared` with this client's user as the
    /// viewer: what `of_uid` shares (the viewer must be `of_uid` or a
    /// friend).
    pub fn shared(&self, of_uid: &str) -> Result<SharedPage, ClientError> {
        let url = self.url(&format!("/v1/users/{}/shared", encode_component(of_uid)));
        let r = self
            .agent
            .get(&url)
            .header("Authorization", self.bearer())
            .header(VIEWER_HEADER, &self.uid)
            .header("Accept", "application/json")
            .call();
        finish(&url, r)
    }

    /// `DELETE /v1/users/{uid}/media/{id}`: this user no longer shares it.
    /// Any 2xx is success (the body, if any, is returned as JSON, `null`
    /// when empty or not JSON).
    pub fn delete_media(&self, media_id: &str) -> Result<serde_json::Value, ClientError> {
        let url = self.user_path(&format!("/media/{}", encode_component(media_id)));
        let mut resp = self
            .agent
            .delete(&url)
            .header("Authorization", self.bearer())
            .call()
            .map_err(|e| classify(&url, e))?;
        if !resp.status().is_success() {
            return Err(server_error(&url, &mut resp));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER_BYTES)
            .read_to_string()
            .unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

/// Feeds the first `len` bytes of `file` to `hasher`.
fn hash_prefix(
    file: &mut File,
    len: u64,
    hasher: &mut Sha256,
    buf: &mut [u8],
) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(left.min(usize::MAX as u64) as usize);
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file shrank while being read",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(())
}

/// `bytes a-b/size` (size `*` = unknown) → (a, b, size).
pub fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (range, size) = rest.split_once('/')?;
    let (a, b) = range.trim().split_once('-')?;
    let (a, b) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    let size = match size.trim() {
        "*" => None,
        s => Some(s.parse().ok()?),
    };
    (a <= b).then_some((a, b, size))
}

/// A 2xx answer's JSON, or the error the answer or the transport gives.
pub(crate) fn finish<T: DeserializeOwned>(
    url: &str,
    r: Result<Response<Body>, ureq::Error>,
) -> Result<T, ClientError> {
    let mut resp = r.map_err(|e| classify(url, e))?;
    if !resp.status().is_success() {
        return Err(server_error(url, &mut resp));
    }
    let text =
        resp.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_string().map_err(|e| {
            ClientError::Transport(format!("reading the answer of {}: {e}", redact(url)))
        })?;
    serde_json::from_str(&text).map_err(|e| {
        let head: String = text.chars().take(200).collect();
        ClientError::Transport(format!("unexpected answer from {}: {e}: {head}", redact(url)))
    })
}

/// The [`ClientError::Server`] of a non-2xx answer: `code` and `message`
/// from its JSON body `{"code","message"}` (also accepted nested as
/// `{"error": {...}}`, the shape of the node's older HTTP API); without
/// them the code is `http_<status>`.
fn server_error(url: &str, resp: &mut Response<Body>) -> ClientError {
    let status = resp.status();
    let text = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
    error_from_body(status.as_u16(), status.canonical_reason().unwrap_or(""), &text, url)
}

/// See [`server_error`].
fn error_from_body(status: u16, reason: &str, text: &str, url: &str) -> ClientError {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
    let obj = if v.get("code").is_some() {
        Some(&v)
    } else {
        v.get("error").filter(|e| e.get("code").is_some())
    };
    let field = |o: &serde_json::Value, k: &str| {
        o.get(k).and_then(|c| c.as_str()).map(str::trim).unwrap_or("").to_string()
    };
    if let Some(o) = obj {
        let code = field(o, "code");
        if !code.is_empty() {
            let msg = field(o, "message");
            let msg = msg
                .strip_prefix(&format!("{code}:"))
                .map(|m| m.trim_start().to_string())
                .unwrap_or(msg);
            let message = if msg.is_empty() { format!("HTTP {status} {reason}") } else { msg };
            return ClientError::Server { code, message };
        }
    }
    let head: String = text.trim().chars().take(200).collect();
    let message = if head.is_empty() {
        format!("HTTP {status} {reason} from {}", redact(url))
    } else {
        format!("HTTP {status} from {}: {head}", redact(url))
    };
    ClientError::Server { code: format!("http_{status}"), message }
}

/// A URL without its query (which may carry a credential), for messages.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// Maps a transport error: failing to reach the node is
/// [`ClientError::Connect`], anything later [`ClientError::Transport`].
fn classify(url: &str, e: ureq::Error) -> ClientError {
    use std::io::ErrorKind as K;
    use ureq::Error as E;
    let connect = match &e {
        E::ConnectionFailed | E::HostNotFound | E::Tls(_) | E::Rustls(_) | E::Pem(_) => true,
        E::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => true,
        E::Io(io) => {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::NetworkUnreachable
                    | K::HostUnreachable
                    | K::AddrNotAvailable
            ) || io.get_ref().is_some_and(|inner| inner.is::<rustls::Error>())
        }
        _ => false,
    };
    let message = error_chain(&e);
    if connect {
        let addr = url.split('/').take(3).collect::<Vec<_>>().join("/");
        ClientError::Connect { addr, message }
    } else {
        ClientError::Transport(format!("{}: {message}", redact(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testserver::{serve_range, Req, Resp, Server};
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "herald-media-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Deterministic pseudo-random bytes.
    fn data(n: usize) -> Vec<u8> {
        let mut x: u32 = 0x1234_5678;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    fn sha(b: &[u8]) -> String {
        to_hex(&Sha256::digest(b))
    }

    fn client(s: &Server) -> MediaClient {
        MediaClient::new(&s.base, "alice", "tok-a", &ConnectOptions::default()).unwrap()
    }

    /// A media server for downloads: info at /v1/media/{id} with a content
    /// URL on the same server, content served by `content`.
    fn media_server(
        bytes: Vec<u8>,
        id: String,
        content: impl Fn(&Req, &[u8]) -> Resp + Send + Sync + 'static,
    ) -> Server {
        Server::start(move |r| {
            if r.path() == format!("/v1/media/{id}") {
                Resp::json(
                    200,
                    json!({"media_id": id, "size": bytes.len(), "content_type": "image/png", "created_ms": 1,
                    "owners": ["alice"], "replicas": [1], "url": format!("/v1/media/{id}/content?access=a1"), "expires_at_ms": 2}),
                )
            } else if r.path() == format!("/v1/media/{id}/content") {
                content(r, &bytes)
            } else {
                Resp::error(404, "not_found", "no such path")
            }
        })
    }

    /// The extension table maps both ways, case-insensitively, and unknown
    /// extensions are application/octet-stream.
    #[test]
    fn media_content_type_guess() {
        assert_eq!(guess_content_type(Path::new("a/b.JPG")), "image/jpeg");
        assert_eq!(guess_content_type(Path::new("x.jpeg")), "image/jpeg");
        assert_eq!(guess_content_type(Path::new("x.mov")), "video/quicktime");
        assert_eq!(guess_content_type(Path::new("x.m4a")), "audio/mp4");
        assert_eq!(guess_content_type(Path::new("x.tar.gz")), "application/octet-stream");
        assert_eq!(guess_content_type(Path::new("noext")), "application/octet-stream");
        assert_eq!(extension_for("image/jpeg"), Some("jpg"));
        assert_eq!(extension_for("text/plain; charset=utf-8"), Some("txt"));
        assert_eq!(extension_for("application/x-nope"), None);
    }

    /// The group-send key depends only on what is sent: same inputs give
    /// the same key; group order and repeats do not matter, None text is
    /// empty text; any change of uid, content, groups or text changes it;
    /// content hex case does not matter; it fits the server's 128 bytes.
    #[test]
    fn media_group_send_key_stable() {
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let id = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let k = group_send_key("alice", id, &g(&["friends", "family"]), Some("hi"));
        assert_eq!(
            k,
            group_send_key(
                "alice",
                &id.to_lowercase(),
                &g(&["family", "friends", "family"]),
                Some("hi")
            )
        );
        assert_eq!(k.len(), 68);
        assert!(k.starts_with("gs1-"));
        // Pinned: the derivation must not change between versions, or a
        // re-run after an upgrade would send twice.
        assert_eq!(
            group_send_key("alice", "ab", &[], None),
            group_send_key("alice", "ab", &[], Some(""))
        );
        assert_eq!(
            group_send_key("alice", "ab", &[], None),
            "gs1-".to_string()
                + &{
                    let mut h = Sha256::new();
                    for f in
                        [&b"herald group-send v1"[..], b"alice", b"ab", &0u64.to_be_bytes(), b""]
                    {
                        h.update((f.len() as u64).to_be_bytes());
                        h.update(f);
                    }
                    to_hex(&h.finalize())
                }
        );
        for other in [
            group_send_key("bob", id, &g(&["friends", "family"]), Some("hi")),
            group_send_key("alice", "00", &g(&["friends", "family"]), Some("hi")),
            group_send_key("alice", id, &g(&["friends"]), Some("hi")),
            group_send_key("alice", id, &g(&["friends", "family"]), Some("hi!")),
            group_send_key("alice", id, &g(&["friendsfamily"]), Some("hi")),
        ] {
            assert_ne!(k, other);
        }
    }

    /// Content-Range values parse, including an unknown size; nonsense is
    /// refused.
    #[test]
    fn media_parse_content_range() {
        assert_eq!(parse_content_range("bytes 10-99/100"), Some((10, 99, Some(100))));
        assert_eq!(parse_content_range("bytes 0-0/*"), Some((0, 0, None)));
        for bad in ["", "bytes */100", "items 1-2/3", "bytes 5-1/10", "bytes a-b/1"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    /// Server errors surface as `<code>: <message>` from `{"code","message"}`
    /// (and from the nested `{"error":{...}}` shape), a repeated code prefix
    /// is dropped, and a non-JSON body gives `http_<status>`.
    #[test]
    fn media_server_error_shapes() {
        let e = error_from_body(
            403,
            "Forbidden",
            r#"{"code":"not_owner","message":"alice does not own it"}"#,
            "http://h/x",
        );
        assert_eq!(e.to_string(), "not_owner: alice does not own it");
        let e = error_from_body(
            400,
            "",
            r#"{"error":{"code":"invalid_uid","message":"invalid_uid: bad"}}"#,
            "http://h/x",
        );
        assert_eq!((e.code(), e.message().as_str()), ("invalid_uid", "bad"));
        let e =
            error_from_body(502, "Bad Gateway", "<html>oops</html>", "http://h/x?access=secret");
        assert_eq!(e.code(), "http_502");
        assert!(e.message().contains("oops"), "{e}");
        let e = error_from_body(500, "Internal Server Error", "", "http://h/x?access=secret");
        assert!(!e.message().contains("secret"), "{e}");
    }

    /// Path segments and query values are percent-encoded.
    #[test]
    fn media_encode_component() {
        assert_eq!(encode_component("bob"), "bob");
        assert_eq!(encode_component("a b/c?d&é"), "a%20b%2Fc%3Fd%26%C3%A9");
    }

    /// Upload asks for an upload as the user (bearer token, size, guessed
    /// type, file name), then PUTs the file to the upload URL with the
    /// upload credential and a `Content-Length` equal to the file size; the
    /// server receives exactly the file's bytes and progress reaches the
    /// total.
    #[test]
    fn media_upload_streams_with_content_length_and_progress() {
        let body = data(3 * STREAM_BUFFER + 123);
        let dir = tmpdir("upload");
        let path = dir.join("beach.JPG");
        std::fs::write(&path, &body).unwrap();
        let expect_sha = sha(&body);
        let s = Server::start(move |r| match (r.method.as_str(), r.path()) {
            ("POST", "/v1/users/alice/uploads") => Resp::json(
                201,
                json!({"upload_id": "u-1", "upload_url": "/v1/uploads/u-1", "credential": "cred-1", "expires_at_ms": 5}),
            ),
            ("PUT", "/v1/uploads/u-1") => Resp::json(
                201,
                json!({"media_id": sha(&r.body), "size": r.body_len, "content_type": "image/jpeg", "sha256": sha(&r.body),
                    "replicas": [1, 3], "edited": false, "duplicate": false, "link": "http://x/v1/media/1"}),
            ),
            _ => Resp::error(404, "not_found", "no"),
        });
        let mut seen = Vec::new();
        let a =
            client(&s).upload(&path, None, None, |sent, total| seen.push((sent, total))).unwrap();
        assert_eq!(a.media_id, expect_sha);
        assert_eq!(a.size, body.len() as u64);
        assert_eq!(a.replicas, vec![1, 3]);
        let reqs = s.requests();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].header("authorization"), Some("Bearer tok-a"));
        assert_eq!(
            reqs[0].json(),
            json!({"size": body.len(), "content_type": "image/jpeg", "name": "beach.JPG"})
        );
        let put = &reqs[1];
        assert_eq!(put.header("authorization"), Some("Bearer cred-1"));
        assert_eq!(put.header("content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(put.header("transfer-encoding"), None);
        assert_eq!(put.body_len, body.len() as u64);
        assert_eq!(put.body, body);
        assert_eq!(seen.last(), Some(&(body.len() as u64, body.len() as u64)));
        assert!(seen.len() > 2, "progress came in steps: {seen:?}");
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A refusal of the upload request surfaces as `<code>: <message>` and
    /// no PUT is made; an explicit type and name are what is sent.
    #[test]
    fn media_upload_refusal_surfaces_code() {
        let dir = tmpdir("upload-refused");
        let path = dir.join("f.bin");
        std::fs::write(&path, b"abc").unwrap();
        let s =
            Server::start(|_| Resp::error(413, "media_too_large", "3 bytes over the 2 byte limit"));
        let e = client(&s).upload(&path, Some("video/mp4"), Some("clip"), |_, _| {}).unwrap_err();
        assert_eq!(e.to_string(), "media_too_large: 3 bytes over the 2 byte limit");
        let reqs = s.requests();
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].json(), json!({"size": 3, "content_type": "video/mp4", "name": "clip"}));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A download interrupted after N bytes (the connection closes early,
    /// no retries allowed) fails but keeps the N bytes in `.part`; running
    /// it again asks for `Range: bytes=N-`, appends, verifies the SHA-256
    /// against the media id and renames `.part` to the destination.
    #[test]
    fn media_download_resumes_after_interruption() {
        let bytes = data(700_000);
        let id = sha(&bytes);
        let cut = Arc::new(AtomicUsize::new(1));
        let cut2 = cut.clone();
        let s = media_server(bytes.clone(), id.clone(), move |r, d| {
            let mut resp = serve_range(r, d, true);
            if cut2.fetch_sub(1, Ordering::SeqCst) == 1 {
                resp.cut_after = Some(300_000);
            }
            resp
        });
        let dir = tmpdir("resume");
        let dest = dir.join("out.png");
        let c = client(&s).with_retries(0);
        let e = c.download(&id, &dest, |_, _| {}).unwrap_err();
        assert_eq!(e.code(), "transport_error", "{e}");
        assert!(!dest.exists());
        assert_eq!(std::fs::read(part_path(&dest)).unwrap(), bytes[..300_000]);

        let mut last = (0, 0);
        let rep = c.download(&id, &dest, |d, t| last = (d, t)).unwrap();
        assert_eq!(rep.resumed_from, 300_000);
        assert_eq!((rep.size, rep.content_type.as_str()), (700_000, "image/png"));
        assert_eq!(last, (700_000, 700_000));
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(!part_path(&dest).exists());
        let ranges: Vec<Option<String>> = s
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/content"))
            .map(|r| r.header("range").map(str::to_string))
            .collect();
        assert_eq!(ranges, vec![None, Some("bytes=300000-".to_string())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Within one call, a transfer that breaks is continued from where it
    /// stopped (Range), and the result is complete and verified.
    #[test]
    fn media_download_retries_broken_transfer_in_call() {
        let bytes = data(500_000);
        let id = sha(&bytes);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let s = media_server(bytes.clone(), id.clone(), move |r, d| {
            let mut resp = serve_range(r, d, true);
            if n2.fetch_add(1, Ordering::SeqCst) < 2 {
                resp.cut_after = Some(100_000);
            }
            resp
        });
        let dir = tmpdir("retry");
        let dest = dir.join("out");
        let rep = client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(rep.resumed_from, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        let ranges: Vec<Option<String>> = s
            .requests()
            .iter()
            .filter(|r| r.path().ends_with("/content"))
            .map(|r| r.header("range").map(str::to_string))
            .collect();
        assert_eq!(ranges, vec![None, Some("bytes=100000-".into()), Some("bytes=200000-".into())]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A server that ignores Range (answers 200 with the whole body) makes
    /// the client start over from byte 0 rather than append: the result is
    /// the exact file.
    #[test]
    fn media_download_server_ignoring_range_restarts() {
        let bytes = data(400_000);
        let id = sha(&bytes);
        let s = media_server(bytes.clone(), id.clone(), |r, d| serve_range(r, d, false));
        let dir = tmpdir("norange");
        let dest = dir.join("out");
        std::fs::write(part_path(&dest), &bytes[..1000]).unwrap();
        let rep = client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(rep.resumed_from, 1000);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        let r = s.requests().into_iter().find(|r| r.path().ends_with("/content")).unwrap();
        assert_eq!(r.header("range"), Some("bytes=1000-"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A 206 that does not start where asked is not appended: the client
    /// downloads again from 0 and the result is exact.
    #[test]
    fn media_download_wrong_content_range_start_restarts() {
        let bytes = data(200_000);
        let id = sha(&bytes);
        let s = media_server(bytes.clone(), id.clone(), |r, d| {
            if r.header("range").is_some() {
                Resp { status: 206, body: d[10..].to_vec(), ..Resp::default() }
                    .with("Content-Range", format!("bytes 10-{}/{}", d.len() - 1, d.len()))
            } else {
                serve_range(r, d, true)
            }
        });
        let dir = tmpdir("badrange");
        let dest = dir.join("out");
        std::fs::write(part_path(&dest), &bytes[..5000]).unwrap();
        client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// An access credential that expired (401 credential_expired) is
    /// renewed by asking for the info again; the download continues with
    /// the new URL from the bytes it had.
    #[test]
    fn media_download_renews_expired_credential() {
        let bytes = data(300_000);
        let id = sha(&bytes);
        let infos = Arc::new(AtomicUsize::new(0));
        let (infos2, bytes2, id2) = (infos.clone(), bytes.clone(), id.clone());
        let s = Server::start(move |r| {
            if r.path() == format!("/v1/media/{id2}") {
                let n = infos2.fetch_add(1, Ordering::SeqCst) + 1;
                Resp::json(
                    200,
                    json!({"media_id": id2, "size": bytes2.len(), "content_type": "image/png",
                    "url": format!("/v1/media/{id2}/content?access=a{n}")}),
                )
            } else if r.query("access") == Some("a1") {
                Resp::error(401, "credential_expired", "the access credential expired")
            } else {
                serve_range(r, &bytes2, true)
            }
        });
        let dir = tmpdir("expired");
        let dest = dir.join("out");
        std::fs::write(part_path(&dest), &bytes[..1234]).unwrap();
        client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert_eq!(infos.load(Ordering::SeqCst), 2);
        let last = s.requests().into_iter().rfind(|r| r.path().ends_with("/content")).unwrap();
        assert_eq!((last.query("access"), last.header("range")), (Some("a2"), Some("bytes=1234-")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Bytes that do not hash to the media id are not kept: the error is
    /// hash_mismatch and neither the destination nor `.part` remains; a
    /// resumed `.part` with wrong bytes is discarded and downloaded once
    /// more from scratch, which then succeeds.
    #[test]
    fn media_download_verifies_hash() {
        let bytes = data(100_000);
        let wrong_id = sha(b"something else");
        let s = media_server(bytes.clone(), wrong_id.clone(), |r, d| serve_range(r, d, true));
        let dir = tmpdir("hash");
        let dest = dir.join("out");
        let e = client(&s).download(&wrong_id, &dest, |_, _| {}).unwrap_err();
        assert_eq!(e.code(), "hash_mismatch");
        assert!(!dest.exists() && !part_path(&dest).exists());

        let id = sha(&bytes);
        let s = media_server(bytes.clone(), id.clone(), |r, d| serve_range(r, d, true));
        let mut bad = bytes[..5000].to_vec();
        bad[10] ^= 0xff;
        std::fs::write(part_path(&dest), &bad).unwrap();
        let rep = client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(rep.resumed_from, 0);
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A `.part` that already holds every byte is verified and renamed
    /// without fetching content; one longer than the media starts over.
    #[test]
    fn media_download_complete_or_oversized_part() {
        let bytes = data(50_000);
        let id = sha(&bytes);
        let s = media_server(bytes.clone(), id.clone(), |r, d| serve_range(r, d, true));
        let dir = tmpdir("complete");
        let dest = dir.join("out");
        std::fs::write(part_path(&dest), &bytes).unwrap();
        client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        assert!(s.requests().iter().all(|r| !r.path().ends_with("/content")));

        let mut long = bytes.clone();
        long.extend_from_slice(b"junk");
        std::fs::write(part_path(&dest), &long).unwrap();
        client(&s).download(&id, &dest, |_, _| {}).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), bytes);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Group-send, contacts, shared and delete use the documented paths,
    /// methods, bodies and headers (bearer token; viewer header on view
    /// calls) and decode the documented answers.
    #[test]
    fn media_json_calls_follow_contract() {
        let s = Server::start(|r| match (r.method.as_str(), r.path()) {
            ("POST", "/v1/users/alice/group-send") => Resp::json(
                200,
                json!({"message_id": 17, "media_id": "m", "duplicate": false, "revision": 88,
                "recipients": [{"uid": "bob", "outcome": "delivered"}, {"uid": "carol", "outcome": "stored"}]}),
            ),
            ("PUT", "/v1/users/alice/contacts/bob%20b") => Resp::json(200, json!({"revision": 42})),
            ("DELETE", "/v1/users/alice/contacts/bob") => {
                Resp::json(200, json!({"revision": 43, "removed": true}))
            }
            ("GET", "/v1/users/alice/contacts") => Resp::json(
                200,
                json!({"uid": "alice", "contacts": [{"uid": "bob", "groups": ["friends"], "friend": true}]}),
            ),
            ("GET", "/v1/users/bob/shared") => Resp::json(
                200,
                json!({"uid": "bob", "media": [{"media_id": "m", "name": "b.jpg", "size": 5,
                "content_type": "image/jpeg", "created_ms": 1, "url": "http://x/c?access=1", "expires_at_ms": 2}]}),
            ),
            ("DELETE", "/v1/users/alice/media/m") => Resp { status: 204, ..Resp::default() },
            _ => Resp::error(404, "not_found", "no"),
        });
        let c = client(&s);
        let g = c.group_send("m", Some("hi"), &["friends".to_string()], "k1").unwrap();
        assert_eq!(
            (g.message_id, g.recipients.len(), g.recipients[1].outcome.as_str()),
            (17, 2, "stored")
        );
        assert_eq!(
            c.contacts_add("bob b", &["friends".into(), "family".into()]).unwrap().revision,
            42
        );
        assert_eq!(
            c.contacts_remove("bob").unwrap(),
            ContactRemoved { revision: 43, removed: true }
        );
        let l = c.contacts_list(Some("friends")).unwrap();
        assert_eq!(
            l.contacts,
            vec![Contact { uid: "bob".into(), groups: vec!["friends".into()], friend: true }]
        );
        let p = c.shared("bob").unwrap();
        assert_eq!((p.uid.as_str(), p.media[0].name.as_str()), ("bob", "b.jpg"));
        assert_eq!(c.delete_media("m").unwrap(), serde_json::Value::Null);
        let e = c.contacts_remove("nobody").unwrap_err();
        assert_eq!(e.to_string(), "not_found: no");

        let reqs = s.requests();
        assert!(reqs.iter().all(|r| r.header("authorization") == Some("Bearer tok-a")));
        assert_eq!(
            reqs[0].json(),
            json!({"media_id": "m", "text": "hi", "groups": ["friends"], "idempotency_key": "k1"})
        );
        assert_eq!(reqs[1].json(), json!({"groups": ["friends", "family"]}));
        assert_eq!(reqs[3].target, "/v1/users/alice/contacts?group=friends");
        assert_eq!(reqs[4].header("x-herald-user"), Some("alice"));
    }

    /// An unreachable node is connect_failed; a non-hex id is refused
    /// before any request.
    #[test]
    fn media_connect_failure_and_bad_id() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = MediaClient::new(
            &format!("127.0.0.1:{port}"),
            "alice",
            "t",
            &ConnectOptions::default(),
        )
        .unwrap();
        assert_eq!(c.contacts_list(None).unwrap_err().code(), "connect_failed");
        assert_eq!(
            c.download("xyz", Path::new("/nonexistent/x"), |_, _| {}).unwrap_err().code(),
            "invalid_argument"
        );
        assert_eq!(
            MediaClient::new("h:1", "", "t", &ConnectOptions::default()).unwrap_err().code(),
            "invalid_argument"
        );
        let bad_ca = ConnectOptions { ca_pem: Some(b"not a pem".to_vec()), domain: None };
        assert_eq!(
            MediaClient::new("https://h:1", "a", "t", &bad_ca).unwrap_err().code(),
            "invalid_argument"
        );
    }

    /// Over https:// the client trusts the CA given in ConnectOptions (a
    /// self-signed certificate here) with the ring provider, and refuses a
    /// server whose certificate it does not trust.
    #[test]
    fn media_https_with_custom_ca() {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let (cert, key) = (ck.cert.pem(), ck.key_pair.serialize_pem());
        let s = Server::start_tls(&cert, &key, |_| {
            Resp::json(200, json!({"uid": "alice", "contacts": []}))
        });
        let opts = ConnectOptions { ca_pem: Some(cert.into_bytes()), domain: None };
        let c = MediaClient::new(&s.base, "alice", "t", &opts).unwrap();
        assert_eq!(c.contacts_list(None).unwrap().contacts, vec![]);

        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let opts = ConnectOptions { ca_pem: Some(other.cert.pem().into_bytes()), domain: None };
        let e = MediaClient::new(&s.base, "alice", "t", &opts)
            .unwrap()
            .contacts_list(None)
            .unwrap_err();
        assert_eq!(e.code(), "connect_failed", "{e}");
    }
}
