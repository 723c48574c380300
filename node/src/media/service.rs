//! The media service of one node: upload sessions, edit rules, replication
//! to other nodes before an upload is acknowledged, serving bytes from
//! here or from a replica, and the repair / garbage-collection loop
//! (MISSION G2, G4, S1, S2, S4).
//!
//! Flow of an upload: [`Media::begin_upload`] checks health, size, quota
//! and free space and hands out an upload id + credential;
//! [`Media::receive`] streams the body into a temp file (hashing as it
//! goes, never buffering the file), applies the edit rules, commits the
//! file under its hash, pushes it to enough other nodes (`PutBlob`, each
//! fsyncs before answering), and only then commits the metadata through
//! Raft. A failure before that point leaves no metadata; a file without
//! metadata is removed by the repair loop after the grace period.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use herald_proto::codes::{self, Code};
use herald_proto::raft::{BlobChunk, BlobRequest};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;

use super::credential::{self, Kind};
use super::edit;
use super::store::{hash_file, valid_id, BlobStore, Listed, WRITE_BUFFER_BYTES};
use crate::config::MediaConfig;
use crate::raft::{ClusterError, Consistency, RaftNode};
use herald_domain::library::{refusal, LibOp, LibResult, MAX_NAME_BYTES};
use herald_domain::state::{Op, OpResult};

/// Bytes per chunk between nodes: well under the sync port's message limit;
/// with [`STREAM_CHUNKS`] in flight this bounds memory per stream.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks buffered per stream between the file and the network.
const STREAM_CHUNKS: usize = 4;
/// The share of `<media max-uploads>` kept for users with no upload open:
/// one in this many slots (a quarter). Users who already hold an upload
/// stop at the rest, so a few heavy users cannot take every slot and a
/// user's first upload still finds one.
pub const UPLOAD_RESERVE_DIVISOR: usize = 4;
/// Longest content type accepted.
pub const MAX_CONTENT_TYPE_BYTES: usize = 128;
/// Media fetched from other nodes per repair pass: bounds the bandwidth a
/// rejoining node takes at once (the next pass continues).
const REPAIR_FETCHES_PER_PASS: usize = 8;
/// Metadata ops written per repair batch.
const REPAIR_OPS_PER_WRITE: usize = 256;
/// A file without metadata is kept at least this long, and at least the
/// upload credential's lifetime and the GC grace (it may be a replica whose
/// upload has not committed yet).
const MIN_ORPHAN_FILE_AGE_MS: u64 = 1_000;

/// Whether `uid`, holding `mine` of the node's `open` uploads, may open
/// one more: at most `max-uploads-per-user` (and `max-uploads`) each, at
/// most `max-uploads` in all, and the last [`UPLOAD_RESERVE_DIVISOR`]th of
/// them only for a user with none open.
fn check_upload_slots(
    cfg: &MediaConfig,
    open: usize,
    mine: usize,
    uid: &str,
) -> Result<(), MediaError> {
    let per_user = cfg.max_uploads_per_user.min(cfg.max_uploads);
    if mine >= per_user {
        return Err(MediaError::refused(
            codes::TOO_MANY_UPLOADS,
            format!("{uid} has {mine} uploads open on this node (<media max-uploads-per-user> {per_user}); finish or let them expire first"),
        ));
    }
    if open >= cfg.max_uploads {
        return Err(MediaError::refused(
            codes::TOO_MANY_UPLOADS,
            format!("{open} uploads are open on this node; retry later"),
        ));
    }
    let reserved = cfg.max_uploads / UPLOAD_RESERVE_DIVISOR;
    if mine > 0 && open >= cfg.max_uploads - reserved {
        return Err(MediaError::refused(
            codes::TOO_MANY_UPLOADS,
            format!("{open} uploads are open on this node and {uid} has {mine}: the last {reserved} slots are kept for users with none open; retry later"),
        ));
    }
    Ok(())
}

/// Why a media request was refused: a stable code (the catalog gives its
/// HTTP and gRPC status).
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("{message}")]
    Refused { code: Code, message: String },
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("media storage: {0}")]
    Io(#[from] io::Error),
}

impl MediaError {
    fn refused(code: Code, message: impl Into<String>) -> Self {
        MediaError::Refused { code, message: message.into() }
    }
}

impl From<credential::CredentialError> for MediaError {
    fn from(e: credential::CredentialError) -> Self {
        MediaError::refused(e.code(), e.to_string())
    }
}

/// An open upload: what was promised, until when.
#[derive(Debug, Clone)]
struct Upload {
    uid: String,
    size: u64,
    content_type: String,
    name: String,
    expires_at_ms: u64,
    busy: bool,
}

/// The answers to an upload request (S1) and to a finished upload: the
/// HTTP API's types, defined once in [`herald_proto::wire::media`].
pub use herald_proto::wire::media::{UploadDone, UploadTicket};

/// Removes an upload from the open ones when dropped.
struct UploadSlot<'a> {
    media: &'a Media,
    id: String,
}
impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.media.uploads.lock().expect("uploads lock").remove(&self.id);
    }
}

/// A media id the repair loop leaves alone while held.
struct Pin<'a> {
    media: &'a Media,
    id: String,
}
impl Drop for Pin<'_> {
    fn drop(&mut self) {
        let mut pins = self.media.pinned.lock().expect("pins lock");
        if let Some(n) = pins.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.id);
            }
        }
    }
}

/// Removes a file when dropped unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A stream of media bytes for an HTTP body.
pub type ByteStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, io::Error>> + Send>>;

/// What this node's media storage is doing (status page and metrics): the
/// HTTP API's type (`media` of `GET /v1/cluster`), defined once in
/// [`herald_proto::wire::cluster`].
pub use herald_proto::wire::cluster::MediaStatus;

/// The media service of this node.
pub struct Media {
    pub cfg: MediaConfig,
    pub store: BlobStore,
    node: Arc<RaftNode>,
    /// `http` or `https`: how links to this cluster's publish ports read.
    scheme: &'static str,
    uploads: Mutex<HashMap<String, Upload>>,
    seq: AtomicU64,
    /// Ids being uploaded or fetched here: not garbage, whatever the state says yet.
    pinned: Mutex<HashMap<String, usize>>,
}

/// Rendezvous rank of `node` for media `id`: every node computes the same
/// order, so placement needs no coordination.
fn rank(id: &str, node: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    h.update(node.to_be_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// `nodes` in placement order for `id` (highest rank first).
pub fn placement(id: &str, nodes: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut v: Vec<u64> = nodes.into_iter().collect();
    v.sort_by_key(|n| std::cmp::Reverse(rank(id, *n)));
    v
}

/// Where the bytes of a download come from (metric `media_downloads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// This node's own replica.
    Local,
    /// A node in this node's zone.
    Zone,
    /// A node in another zone (across the WAN).
    Remote,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::Zone => "zone",
            Source::Remote => "remote",
        }
    }
}

/// `nodes` (holders of `id`, not `me`) in the order a download asks them:
/// those in `me`'s zone (by the membership `members`) first, then the
/// others, each group in placement order, so every node of a zone spreads
/// its reads the same way. A node the membership does not name counts as
/// remote.
pub fn by_zone(
    id: &str,
    nodes: &BTreeSet<u64>,
    me: u64,
    members: &[(u64, crate::raft::types::NodeAddr)],
) -> Vec<(u64, Source)> {
    let zone_of = |n: u64| members.iter().find(|(m, _)| *m == n).map(|(_, a)| a.zone.as_str());
    let mine = zone_of(me);
    let mut v: Vec<(u64, Source)> = placement(id, nodes.iter().copied())
        .into_iter()
        .map(|n| {
            let near = mine.is_some() && zone_of(n) == mine;
            (n, if near { Source::Zone } else { Source::Remote })
        })
        .collect();
    // Stable: placement order within each group.
    v.sort_by_key(|(_, s)| *s == Source::Remote);
    v
}

fn valid_content_type(ct: &str) -> bool {
    !ct.is_empty()
        && ct.len() <= MAX_CONTENT_TYPE_BYTES
        && ct.contains('/')
        && ct.bytes().all(|b| (0x20..0x7f).contains(&b))
}

fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME_BYTES && !name.contains('/') && !name.chars().any(char::is_control)
}

impl Media {
    pub fn open(
        cfg: MediaConfig,
        data_dir: &Path,
        node: Arc<RaftNode>,
        tls: bool,
    ) -> io::Result<Arc<Self>> {
        let store = BlobStore::open(data_dir)?;
        Ok(Arc::new(Media {
            cfg,
            store,
            node,
            scheme: if tls { "https" } else { "http" },
            uploads: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(0),
            pinned: Mutex::new(HashMap::new()),
        }))
    }

    fn now_ms(&self) -> u64 {
        self.node.clock().now_ms()
    }

    fn key(&self) -> Result<&[u8], MediaError> {
        self.cfg.key.as_deref().ok_or_else(|| {
            MediaError::refused(
                codes::MEDIA_NOT_CONFIGURED,
                "no media credential key: set <media key> or <auth mode=\"hmac\">",
            )
        })
    }

    /// Base URL of a node's publish port.
    pub fn base_url(&self, node: u64) -> Option<String> {
        self.node
            .members()
            .into_iter()
            .find(|(n, _)| *n == node)
            .map(|(_, a)| format!("{}://{}", self.scheme, a.publish))
    }

    /// The link group-sent messages carry: this node's `GET /v1/media/{id}`.
    pub fn link(&self, id: &str) -> String {
        format!("{}/v1/media/{id}", self.base_url(self.node.id()).unwrap_or_default())
    }

    /// A download credential for `viewer` and its URL on this node.
    pub fn access_url(&self, id: &str, viewer: &str) -> Result<(String, u64), MediaError> {
        let exp = self.now_ms() + self.cfg.access_ttl_ms;
        let cred = credential::mint(self.key()?, Kind::Access, id, viewer, exp);
        Ok((
            format!(
                "{}/v1/media/{id}/content?access={cred}",
                self.base_url(self.node.id()).unwrap_or_default()
            ),
            exp,
        ))
    }

    /// Checks an access credential for `id`; answers the viewer.
    pub fn check_access(&self, id: &str, cred: &str) -> Result<String, MediaError> {
        Ok(credential::check(self.key()?, Kind::Access, cred, id, self.now_ms())?)
    }

    /// What this node's media storage is doing.
    pub fn status(&self) -> MediaStatus {
        let voters: BTreeSet<u64> = self.node.voters().into_iter().collect();
        let required = self.cfg.required_replicas(voters.len());
        let (media, media_bytes, under_replicated) = self.node.read_local(|st| {
            let mut n = 0u64;
            let mut bytes = 0u64;
            let mut under = 0u64;
            for m in st.lib.all_media().filter(|m| m.orphan_since_ms.is_none()) {
                n += 1;
                bytes += m.size;
                if m.replicas.iter().filter(|r| voters.contains(r)).count() < required {
                    under += 1;
                }
            }
            (n, bytes, under)
        });
        MediaStatus {
            healthy: self.store.healthy(),
            free_bytes: self.store.free_bytes().unwrap_or(0),
            reserve_bytes: self.cfg.reserve_bytes,
            files_here: self.store.held().0,
            bytes_here: self.store.held().1,
            media,
            media_bytes,
            under_replicated,
            open_uploads: self.uploads.lock().expect("uploads lock").len() as u64,
            required_replicas: required as u64,
        }
    }

    /// S1: checks that `size` bytes of `content_type` can be stored for
    /// `uid`; answers an upload id, URL and credential.
    #[tracing::instrument(level = "info", skip(self), err(Display))]
    pub fn begin_upload(
        &self,
        uid: &str,
        size: u64,
        content_type: &str,
        name: &str,
    ) -> Result<UploadTicket, MediaError> {
        let key = self.key()?.to_vec();
        if size == 0 {
            return Err(MediaError::refused(
                codes::INVALID_SIZE,
                "size is required and must be at least 1 byte",
            ));
        }
        if size > self.cfg.max_bytes {
            return Err(MediaError::refused(
                codes::MEDIA_TOO_LARGE,
                format!(
                    "{size} bytes; media may be at most {} bytes (<media max-bytes>)",
                    self.cfg.max_bytes
                ),
            ));
        }
        if !valid_content_type(content_type) {
            return Err(MediaError::refused(
                codes::INVALID_CONTENT_TYPE,
                format!("{content_type:?} is not a content type like image/jpeg"),
            ));
        }
        if !valid_name(name) {
            return Err(MediaError::refused(
                codes::INVALID_NAME,
                format!(
                    "a name is at most {MAX_NAME_BYTES} bytes, without '/' or control characters"
                ),
            ));
        }
        if !self.store.healthy() {
            return Err(MediaError::refused(
                codes::STORAGE_UNHEALTHY,
                "this node's media storage failed its write probe",
            ));
        }
        if self.cfg.quota_bytes_per_user > 0 {
            let used = self.node.read_local(|st| st.lib.usage(uid));
            if used.saturating_add(size) > self.cfg.quota_bytes_per_user {
                return Err(MediaError::refused(
                    codes::MEDIA_QUOTA_EXCEEDED,
                    format!(
                        "{uid} shares {used} bytes; {size} more would exceed the quota of {} bytes",
                        self.cfg.quota_bytes_per_user
                    ),
                ));
            }
        }
        let now = self.now_ms();
        let mut uploads = self.uploads.lock().expect("uploads lock");
        uploads.retain(|_, u| u.busy || u.expires_at_ms > now);
        let promised: u64 = uploads.values().map(|u| u.size).sum();
        let free = self.store.free_bytes()?;
        let room = free.saturating_sub(self.cfg.reserve_bytes).saturating_sub(promised);
        if size > room {
            return Err(MediaError::refused(codes::INSUFFICIENT_STORAGE,
                format!("{size} bytes do not fit: {free} free, {} reserved, {promised} promised to open uploads", self.cfg.reserve_bytes),
            ));
        }
        let mine = uploads.values().filter(|u| u.uid == uid).count();
        check_upload_slots(&self.cfg, uploads.len(), mine, uid)?;
        let mut h = Sha256::new();
        h.update(self.node.id().to_be_bytes());
        h.update(crate::clock::wall_us().to_be_bytes());
        h.update(self.seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        h.update(uid.as_bytes());
        h.update(&key);
        let upload_id = format!("u{}", &super::store::hex(&h.finalize())[..32]);
        let expires_at_ms = now + self.cfg.upload_ttl_ms;
        uploads.insert(
            upload_id.clone(),
            Upload {
                uid: uid.into(),
                size,
                content_type: content_type.into(),
                name: name.into(),
                expires_at_ms,
                busy: false,
            },
        );
        let credential = credential::mint(&key, Kind::Upload, &upload_id, uid, expires_at_ms);
        let upload_url =
            format!("{}/v1/uploads/{upload_id}", self.base_url(self.node.id()).unwrap_or_default());
        Ok(UploadTicket { upload_id, upload_url, credential, expires_at_ms })
    }

    /// S2: receives the bytes of an upload, stores them on enough nodes,
    /// commits the metadata. The upload id is used up whatever happens.
    #[tracing::instrument(level = "info", skip(self, cred, body), fields(uid, size), err(Display))]
    pub async fn receive<S, E>(
        &self,
        upload_id: &str,
        cred: &str,
        mut body: S,
    ) -> Result<UploadDone, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let uid = credential::check(self.key()?, Kind::Upload, cred, upload_id, self.now_ms())?;
        let up = {
            let mut uploads = self.uploads.lock().expect("uploads lock");
            let u = uploads.get_mut(upload_id).ok_or_else(|| {
                MediaError::refused(codes::UNKNOWN_UPLOAD, format!("no open upload {upload_id} on this node (used, expired, or issued by another node)"))
            })?;
            if u.busy {
                return Err(MediaError::refused(
                    codes::UPLOAD_IN_PROGRESS,
                    "this upload is already receiving its bytes",
                ));
            }
            if u.uid != uid {
                return Err(MediaError::refused(
                    codes::CREDENTIAL_SCOPE,
                    "credential is for another user",
                ));
            }
            u.busy = true;
            u.clone()
        };
        tracing::Span::current().record("uid", up.uid.as_str()).record("size", up.size);
        // The upload id is used up however this ends, also when the
        // request is dropped mid-way (client gone): a guard, not a line
        // after the await.
        let _slot = UploadSlot { media: self, id: upload_id.to_owned() };
        self.receive_inner(&up, &mut body).await
    }

    async fn receive_inner<S, E>(&self, up: &Upload, body: &mut S) -> Result<UploadDone, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut tmp = self.store.temp().await?;
        // The upload's lifetime ends at its credential's expiry; each chunk
        // must also come within body-timeout-ms of the last.
        let left = Duration::from_millis(up.expires_at_ms.saturating_sub(self.now_ms()));
        let end = tokio::time::Instant::now() + left;
        let stall = Duration::from_millis(self.cfg.body_timeout_ms);
        loop {
            let deadline = end.min(tokio::time::Instant::now() + stall);
            let Ok(next) = tokio::time::timeout_at(deadline, body.next()).await else {
                let why = if deadline == end {
                    "the upload ran past its lifetime (<media upload-ttl-ms> after it was requested)"
                } else {
                    "the upload body sent nothing for <media body-timeout-ms>"
                };
                return Err(MediaError::refused(codes::UPLOAD_TIMEOUT, why));
            };
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| {
                MediaError::refused(
                    codes::UPLOAD_INTERRUPTED,
                    format!("the upload stream broke: {e}"),
                )
            })?;
            if tmp.len() + chunk.len() as u64 > up.size {
                return Err(MediaError::refused(
                    codes::SIZE_MISMATCH,
                    format!("more than the stated {} bytes were sent", up.size),
                ));
            }
            tmp.write(&chunk).await?;
        }
        if tmp.len() != up.size {
            return Err(MediaError::refused(
                codes::SIZE_MISMATCH,
                format!("{} bytes were sent; {} were stated", tmp.len(), up.size),
            ));
        }
        let (mut id, mut size) = tmp.finish().await?;
        // Armed until the file is committed or deliberately dropped.
        let mut path = RemoveOnDrop(Some(tmp.keep()));
        let mut content_type = up.content_type.clone();
        let mut edited = false;
        if self.cfg.edit.enabled && edit::is_editable(&content_type) {
            let input = path.0.clone().expect("armed");
            let output = input.with_extension("edit");
            let guard = RemoveOnDrop(Some(output.clone()));
            let (rules, ct, o) = (self.cfg.edit.clone(), content_type.clone(), output.clone());
            let res = tokio::task::spawn_blocking(move || edit::apply(&rules, &ct, &input, &o))
                .await
                .map_err(io::Error::other)?;
            match res {
                Ok(None) => {}
                Ok(Some(e)) => {
                    tracing::info!(from = %content_type, to = %e.content_type, w = e.width, h = e.height, ow = e.original_width, oh = e.original_height, "image edited");
                    (id, size) = hash_file(&output).await?;
                    content_type = e.content_type;
                    edited = true;
                    path = guard;
                }
                Err(e) => return Err(MediaError::refused(e.code(), e.to_string())),
            }
        }
        // From here until the metadata is committed, the repair loop must
        // not delete this id's file here.
        let _pin = self.pin(&id);
        // Identical content already stored on enough nodes: no new copy
        // (read after a barrier: it may have been committed through another node).
        let voters: BTreeSet<u64> = self.node.voters().into_iter().collect();
        let required = self.cfg.required_replicas(voters.len());
        let existing: Option<Vec<u64>> = self
            .node
            .read(Consistency::Linearizable, |st| {
                st.lib
                    .media(&id)
                    .filter(|m| {
                        m.orphan_since_ms.is_none()
                            && m.replicas.iter().filter(|r| voters.contains(r)).count() >= required
                    })
                    .map(|m| m.replicas.iter().copied().collect())
            })
            .await?;
        let mut outcome = None;
        if let Some(replicas) = existing {
            match self.commit_meta(up, &id, size, &content_type, replicas, true).await? {
                Some(done) => outcome = Some(done),
                None => {
                    tracing::info!(media = %id, "deduplicated media was collected meanwhile; storing the bytes again")
                }
            }
        }
        let (index, duplicate) = match outcome {
            Some(x) => x,
            None => {
                let file = path.0.clone().expect("armed");
                self.store.commit(&file, &id).await?;
                path.0 = None;
                let replicas = self.replicate(&id, size).await?;
                self.commit_meta(up, &id, size, &content_type, replicas, false).await?.ok_or_else(
                    || {
                        MediaError::Io(io::Error::other(
                            "media_gone answered to a non-dedup commit",
                        ))
                    },
                )?
            }
        };
        drop(path);
        self.node.wait_applied(index).await?;
        let (replicas, content_type) = self.node.read_local(|st| match st.lib.media(&id) {
            Some(m) => (m.replicas.iter().copied().collect(), m.content_type.clone()),
            None => (Vec::new(), content_type),
        });
        Ok(UploadDone {
            link: self.link(&id),
            sha256: id.clone(),
            media_id: id,
            size,
            content_type,
            replicas,
            edited,
            duplicate,
        })
    }

    /// Commits the metadata of an upload; `Ok(None)` when a dedup commit
    /// found the media collected meanwhile (`media_gone`).
    async fn commit_meta(
        &self,
        up: &Upload,
        id: &str,
        size: u64,
        content_type: &str,
        replicas: Vec<u64>,
        expect_existing: bool,
    ) -> Result<Option<(u64, bool)>, MediaError> {
        let op = Op::Lib(LibOp::MediaCommit {
            id: id.to_owned(),
            size,
            content_type: content_type.to_owned(),
            owner: up.uid.clone(),
            name: up.name.clone(),
            replicas,
            quota_bytes: self.cfg.quota_bytes_per_user,
            expect_existing,
        });
        let (index, results) = self.node.write(vec![op]).await?;
        match results.into_iter().next() {
            Some(OpResult::Lib(LibResult::Committed { duplicate })) => Ok(Some((index, duplicate))),
            Some(OpResult::Lib(LibResult::Refused(code))) if code == refusal::MEDIA_GONE => {
                Ok(None)
            }
            Some(OpResult::Lib(LibResult::Refused(code))) if code == "media_quota_exceeded" => {
                Err(MediaError::refused(
                    codes::MEDIA_QUOTA_EXCEEDED,
                    format!("{} would exceed the quota", up.uid),
                ))
            }
            other => {
                Err(MediaError::Io(io::Error::other(format!("unexpected commit result {other:?}"))))
            }
        }
    }

    /// Keeps the repair loop away from `id`'s local file until dropped.
    fn pin(&self, id: &str) -> Pin<'_> {
        *self.pinned.lock().expect("pins lock").entry(id.to_owned()).or_insert(0) += 1;
        Pin { media: self, id: id.to_owned() }
    }

    fn is_pinned(&self, id: &str) -> bool {
        self.pinned.lock().expect("pins lock").contains_key(id)
    }

    /// Pushes the local file `id` to other voters until the required number
    /// of nodes (this one included) hold it; answers who holds it.
    async fn replicate(&self, id: &str, size: u64) -> Result<Vec<u64>, MediaError> {
        let me = self.node.id();
        let voters = self.node.voters();
        let required = self.cfg.required_replicas(voters.len());
        let mut holders = vec![me];
        let others = placement(id, voters.into_iter().filter(|n| *n != me));
        let mut next = others.into_iter();
        while holders.len() < required {
            let want = required - holders.len();
            let batch: Vec<u64> = next.by_ref().take(want).collect();
            if batch.is_empty() {
                break;
            }
            let results =
                futures::future::join_all(batch.iter().map(|n| self.push(*n, id, size))).await;
            for (n, r) in batch.into_iter().zip(results) {
                match r {
                    Ok(()) => holders.push(n),
                    Err(e) => {
                        tracing::warn!(node = n, media = id, error = %e, "replica push failed; trying another node")
                    }
                }
            }
        }
        if holders.len() < required {
            return Err(MediaError::refused(
                codes::REPLICATION_FAILED,
                format!(
                    "the media reached {} of the {required} nodes required; nothing was committed",
                    holders.len()
                ),
            ));
        }
        holders.sort_unstable();
        Ok(holders)
    }

    /// Streams the local file `id` to `peer` (`PutBlob`); the peer fsyncs
    /// before answering.
    async fn push(&self, peer: u64, id: &str, size: u64) -> Result<(), String> {
        let mut client = super::peer::client(&self.node, peer).map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel::<BlobChunk>(STREAM_CHUNKS);
        let path = self.store.path(id);
        let id_owned = id.to_owned();
        let reader = tokio::spawn(async move {
            let mut f = tokio::fs::File::open(path).await?;
            let mut first = true;
            loop {
                let mut buf = vec![0u8; CHUNK_BYTES];
                let n = read_full(&mut f, &mut buf).await?;
                buf.truncate(n);
                if n == 0 && !first {
                    break;
                }
                let c = BlobChunk {
                    id: if first { id_owned.clone() } else { String::new() },
                    size,
                    data: buf,
                };
                first = false;
                if tx.send(c).await.is_err() || n < CHUNK_BYTES {
                    break;
                }
            }
            Ok::<(), io::Error>(())
        });
        let res = client.put_blob(ReceiverStream::new(rx)).await;
        reader.abort();
        res.map(|_| ()).map_err(|s| format!("{}: {}", s.code(), s.message()))
    }

    /// The sync-port side of `PutBlob`: stores a replica (fsynced). Answers
    /// whether the node already had it.
    pub async fn accept_replica<S>(&self, mut stream: S) -> Result<bool, tonic::Status>
    where
        S: Stream<Item = Result<BlobChunk, tonic::Status>> + Unpin,
    {
        let stall = Duration::from_millis(self.cfg.body_timeout_ms);
        let first = tokio::time::timeout(stall, stream.next())
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded("no replica chunk within body-timeout-ms")
            })?
            .ok_or_else(|| tonic::Status::invalid_argument("empty blob stream"))??;
        let (id, size) = (first.id.clone(), first.size);
        if !valid_id(&id) {
            return Err(tonic::Status::invalid_argument("not a media id"));
        }
        if self.store.has(&id) {
            // Fresh mtime: the repair loop treats it as a new replica.
            let _ = self.store.touch(&id);
            return Ok(true);
        }
        if !self.store.healthy() {
            return Err(tonic::Status::unavailable("storage_unhealthy"));
        }
        let _pin = self.pin(&id);
        if size > self.cfg.max_bytes.max(1) {
            return Err(tonic::Status::resource_exhausted("larger than <media max-bytes>"));
        }
        let free = self.store.free_bytes().map_err(|e| tonic::Status::internal(e.to_string()))?;
        if free.saturating_sub(self.cfg.reserve_bytes) < size {
            return Err(tonic::Status::resource_exhausted("insufficient_storage"));
        }
        let mut tmp =
            self.store.temp().await.map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut chunk = Some(first);
        while let Some(c) = chunk.take() {
            if tmp.len() + c.data.len() as u64 > size {
                return Err(tonic::Status::invalid_argument("more bytes than stated"));
            }
            tmp.write(&c.data).await.map_err(|e| tonic::Status::internal(e.to_string()))?;
            // A stalled peer does not hold the temporary file for good.
            let next = tokio::time::timeout(stall, stream.next()).await.map_err(|_| {
                tonic::Status::deadline_exceeded(
                    "the replica stream sent nothing for body-timeout-ms",
                )
            })?;
            chunk = next.transpose()?;
        }
        let (hash, len) = tmp.finish().await.map_err(|e| tonic::Status::internal(e.to_string()))?;
        if len != size || hash != id {
            return Err(tonic::Status::data_loss(format!(
                "received {len} bytes hashing to {hash}; expected {size} bytes of {id}"
            )));
        }
        let mut path = RemoveOnDrop(Some(tmp.keep()));
        self.store
            .commit(path.0.as_ref().expect("armed"), &id)
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        path.0 = None;
        tracing::debug!(media = %id, size, "replica stored");
        Ok(false)
    }

    /// The sync-port side of `GetBlob`: a slice of a local file as chunks.
    pub async fn read_blob(
        &self,
        req: BlobRequest,
    ) -> Result<ReceiverStream<Result<BlobChunk, tonic::Status>>, tonic::Status> {
        let size = self
            .store
            .len(&req.id)
            .ok_or_else(|| tonic::Status::not_found("no replica of this media here"))?;
        if req.offset > size {
            return Err(tonic::Status::out_of_range("offset past the end"));
        }
        let len =
            if req.length == 0 { size - req.offset } else { req.length.min(size - req.offset) };
        let mut f = tokio::fs::File::open(self.store.path(&req.id))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        f.seek(io::SeekFrom::Start(req.offset))
            .await
            .map_err(|e| tonic::Status::internal(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_CHUNKS);
        tokio::spawn(async move {
            let mut left = len;
            let mut f = f.take(len);
            while left > 0 {
                let mut buf = vec![0u8; CHUNK_BYTES.min(left as usize)];
                match read_full(&mut f, &mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        left -= n as u64;
                        if tx
                            .send(Ok(BlobChunk { id: String::new(), size, data: buf }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                        return;
                    }
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }

    /// Bytes `start..start+len` of media `id`: from the local file, or
    /// streamed from a node that holds a replica, one in this node's zone
    /// first (issue 16: a download does not cross the WAN while a replica
    /// is near). Says where the bytes come from.
    pub async fn open_bytes(
        &self,
        id: &str,
        start: u64,
        len: u64,
        replicas: &BTreeSet<u64>,
    ) -> Result<(ByteStream, Source), MediaError> {
        if self.store.has(id) {
            let mut f = tokio::fs::File::open(self.store.path(id)).await?;
            f.seek(io::SeekFrom::Start(start)).await?;
            let s = tokio_util::io::ReaderStream::with_capacity(f.take(len), WRITE_BUFFER_BYTES);
            return Ok((Box::pin(s), Source::Local));
        }
        let me = self.node.id();
        self.open_remote(id, start, len, &replicas.iter().copied().filter(|n| *n != me).collect())
            .await
    }

    /// Fetches the whole media `id` from a replica into the local store.
    async fn fetch(&self, id: &str, size: u64, replicas: &BTreeSet<u64>) -> Result<(), MediaError> {
        let free = self.store.free_bytes()?;
        if free.saturating_sub(self.cfg.reserve_bytes) < size {
            return Err(MediaError::refused(
                codes::INSUFFICIENT_STORAGE,
                "no room for this replica above the reserve",
            ));
        }
        let _pin = self.pin(id);
        let me = self.node.id();
        let (mut s, _) = self
            .open_remote(id, 0, 0, &replicas.iter().copied().filter(|n| *n != me).collect())
            .await?;
        let mut tmp = self.store.temp().await?;
        while let Some(chunk) = s.next().await {
            tmp.write(&chunk?).await?;
        }
        let (hash, len) = tmp.finish().await?;
        if hash != id || len != size {
            return Err(MediaError::Io(io::Error::other(format!(
                "fetched {len} bytes hashing to {hash}, not {id}"
            ))));
        }
        let mut p = RemoveOnDrop(Some(tmp.keep()));
        self.store.commit(p.0.as_ref().expect("armed"), id).await?;
        p.0 = None;
        Ok(())
    }

    /// Bytes `start..start+len` (0 = to the end) of `id` streamed from the
    /// first of `nodes` that answers: those in this node's zone first, each
    /// group in placement order ([`by_zone`]).
    async fn open_remote(
        &self,
        id: &str,
        start: u64,
        len: u64,
        nodes: &BTreeSet<u64>,
    ) -> Result<(ByteStream, Source), MediaError> {
        let mut last = String::from("no other node holds a replica");
        for (n, source) in by_zone(id, nodes, self.node.id(), &self.node.members()) {
            let Ok(mut c) = super::peer::client(&self.node, n) else { continue };
            match c.get_blob(BlobRequest { id: id.into(), offset: start, length: len }).await {
                Ok(resp) => {
                    let s = resp.into_inner().map(|r| {
                        r.map(|c| Bytes::from(c.data))
                            .map_err(|s| io::Error::other(s.message().to_string()))
                    });
                    tracing::debug!(media = %id, node = n, source = source.label(), "media from a peer");
                    return Ok((Box::pin(s), source));
                }
                Err(s) => last = format!("node {n}: {}", s.message()),
            }
        }
        Err(MediaError::refused(
            codes::MEDIA_UNAVAILABLE,
            format!("no reachable node holds media {id}: {last}"),
        ))
    }

    /// Every `repair-interval-ms` until `stop`: probe storage, hold the
    /// replicas this node should hold, drop metadata of media nobody has
    /// owned for the grace period (leader), delete files nothing refers to.
    pub async fn run_repair(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        self.store.probe().await;
        let every = Duration::from_millis(self.cfg.repair_interval_ms);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            self.store.probe().await;
            if let Err(e) = self.repair_pass().await {
                tracing::warn!(error = %e, "media repair pass failed; retrying next interval");
            }
        }
    }

    /// One repair pass (see [`Media::run_repair`]).
    pub async fn repair_pass(&self) -> Result<(), MediaError> {
        // Decide from a state at least as new as every acknowledged write:
        // a node that is behind must not take a replica whose commit it has
        // not applied yet for garbage. No leader: skip the pass.
        let metas: Vec<(String, u64, BTreeSet<u64>, Option<u64>)> = self
            .node
            .read(Consistency::Linearizable, |st| {
                st.lib
                    .all_media()
                    .map(|m| (m.id.clone(), m.size, m.replicas.clone(), m.orphan_since_ms))
                    .collect()
            })
            .await?;
        let me = self.node.id();
        let now = self.now_ms();
        let voters: BTreeSet<u64> = self.node.voters().into_iter().collect();
        let members: BTreeSet<u64> = self.node.members().into_iter().map(|(n, _)| n).collect();
        let required = self.cfg.required_replicas(voters.len());
        let leader = self.node.is_leader();
        let known: BTreeSet<&str> = metas.iter().map(|m| m.0.as_str()).collect();
        let mut ops = Vec::new();
        let mut fetches = 0;
        for (id, size, replicas, orphan_since) in &metas {
            let have = self.store.has(id);
            let listed = replicas.contains(&me);
            if let Some(t) = orphan_since {
                if leader && t.saturating_add(self.cfg.gc_grace_ms) <= now {
                    ops.push(Op::Lib(LibOp::MediaGc {
                        id: id.clone(),
                        grace_ms: self.cfg.gc_grace_ms,
                    }));
                }
                continue;
            }
            if leader {
                for r in replicas.iter().filter(|r| !members.contains(r)) {
                    ops.push(Op::Lib(LibOp::MediaDropReplica { id: id.clone(), node: *r }));
                }
            }
            if have && !listed {
                ops.push(Op::Lib(LibOp::MediaAddReplica { id: id.clone(), node: me }));
                continue;
            }
            let live = replicas.iter().filter(|r| voters.contains(r)).count();
            let should_fetch = if listed {
                !have
            } else {
                // Short of replicas: the best-ranked voters without a copy fetch one.
                live < required
                    && voters.contains(&me)
                    && placement(id, voters.iter().copied().filter(|v| !replicas.contains(v)))
                        .iter()
                        .take(required - live)
                        .any(|n| *n == me)
            };
            if should_fetch && fetches < REPAIR_FETCHES_PER_PASS {
                fetches += 1;
                match self.fetch(id, *size, replicas).await {
                    Ok(()) => {
                        tracing::info!(media = %id, size, "replica restored from another node");
                        if !listed {
                            ops.push(Op::Lib(LibOp::MediaAddReplica { id: id.clone(), node: me }));
                        }
                    }
                    Err(e) => tracing::warn!(media = %id, error = %e, "cannot fetch a replica"),
                }
            }
        }
        // A replica may arrive (PutBlob) before its upload commits; the
        // upload must commit within its credential's lifetime.
        let min_age = Duration::from_millis(
            self.cfg.gc_grace_ms.max(self.cfg.upload_ttl_ms).max(MIN_ORPHAN_FILE_AGE_MS),
        );
        let files = self.store.list()?;
        self.store.recount(&files);
        for Listed { id, mtime, .. } in files {
            if !known.contains(id.as_str()) && mtime.elapsed().unwrap_or_default() >= min_age {
                // Fetches above may have taken a while: look again now.
                let referenced = self.node.read_local(|st| st.lib.media(&id).is_some());
                if referenced || self.is_pinned(&id) {
                    continue;
                }
                if self.store.remove(&id).await? {
                    tracing::info!(media = %id, "deleted a media file nothing refers to");
                }
            }
        }
        for batch in ops.chunks(REPAIR_OPS_PER_WRITE) {
            self.node.write(batch.to_vec()).await?;
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the end; answers the bytes read.
async fn read_full<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let k = r.read(&mut buf[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upload slots are fair: a user stops at max-uploads-per-user; users
    /// with an upload open stop a quarter of max-uploads short of it, so the
    /// default 64 slots take at least 28 users to fill (not 8), and a user
    /// with none open gets one until the node is full.
    #[test]
    fn upload_slots_keep_a_reserve_for_new_users() {
        let cfg = MediaConfig::default();
        assert_eq!((cfg.max_uploads, cfg.max_uploads_per_user), (64, 4));
        let may = |open: usize, mine: usize| check_upload_slots(&cfg, open, mine, "u").is_ok();
        assert!(may(0, 0) && may(10, 3) && !may(10, 4), "per-user cap");
        assert!(may(47, 1) && !may(48, 1), "the last 16 are for users with none");
        assert!(may(48, 0) && may(63, 0) && !may(64, 0), "until the node is full");
        // Greedy users first (4 each up to the reserve), then one each.
        let mut open = 0;
        let mut users = 0;
        loop {
            let mut mine = 0;
            while may(open, mine) {
                (open, mine) = (open + 1, mine + 1);
            }
            if mine == 0 {
                break;
            }
            users += 1;
        }
        assert_eq!((open, users), (64, 28));
        // A per-user cap above the node's: the node's applies.
        let small = MediaConfig { max_uploads: 2, max_uploads_per_user: 10, ..cfg.clone() };
        let code = check_upload_slots(&small, 1, 2, "u").unwrap_err();
        assert!(code.to_string().contains("max-uploads-per-user"), "{code}");
    }

    /// Placement is a deterministic order of the given nodes that differs
    /// between media (so replicas spread).
    #[test]
    fn media_placement_is_deterministic_and_spreads() {
        let a = placement("aa", [1, 2, 3, 4, 5]);
        assert_eq!(a, placement("aa", [5, 4, 3, 2, 1]));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, vec![1, 2, 3, 4, 5]);
        let firsts: BTreeSet<u64> =
            (0..64).map(|i| placement(&format!("m{i}"), [1, 2, 3])[0]).collect();
        assert_eq!(firsts.len(), 3, "every node is first for some media");
    }

    /// A download asks the holders in its own zone first, then the others,
    /// each group in placement order; with no zone known for itself every
    /// holder counts as remote (issue 16).
    #[test]
    fn downloads_ask_own_zone_holders_first() {
        use crate::raft::types::NodeAddr;
        let addr = |zone: &str| NodeAddr { zone: zone.into(), ..Default::default() };
        let members = vec![(1, addr("dc1")), (2, addr("dc1")), (3, addr("dc2")), (4, addr("dc2"))];
        let holders: BTreeSet<u64> = [1, 2, 3].into();
        for i in 0..32 {
            let id = format!("m{i}");
            let order = by_zone(&id, &holders, 4, &members);
            assert_eq!(order[0], (3, Source::Zone), "{id}: the one dc2 holder first");
            let rest: Vec<u64> = order[1..].iter().map(|(n, _)| *n).collect();
            assert_eq!(rest, placement(&id, [1, 2]), "{id}: then dc1 in placement order");
            assert!(order[1..].iter().all(|(_, s)| *s == Source::Remote));
            let from_dc1 = by_zone(&id, &[2, 3, 4].into(), 1, &members);
            assert_eq!(from_dc1[0], (2, Source::Zone));
        }
        let unknown = by_zone("m", &holders, 9, &members);
        assert!(unknown.iter().all(|(_, s)| *s == Source::Remote));
        assert_eq!(unknown.len(), 3);
    }

    /// Content types and names are checked before anything is promised.
    #[test]
    fn media_request_field_checks() {
        assert!(valid_content_type("image/jpeg") && valid_content_type("video/mp4; codecs=avc1"));
        assert!(
            !valid_content_type("") && !valid_content_type("jpeg") && !valid_content_type("a/b\n")
        );
        assert!(valid_name("beach.jpg") && valid_name(""));
        assert!(!valid_name("../x") && !valid_name("a\u{0}b") && !valid_name(&"x".repeat(256)));
    }
}
