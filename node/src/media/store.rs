//! Media files on one node: content-addressed, fsynced, never in sled and
//! never in the Raft log (MISSION S2, G2).
//!
//! Layout under `<data>/media/`:
//!
//! ```text
//! blobs/<first two hex digits>/<64 hex digits>   one file per media id
//! tmp/<n>.part                                   uploads and replicas being received
//! probe                                          the health probe (written, fsynced, removed)
//! ```
//!
//! A file reaches `blobs/` only complete: written under `tmp/`, fsynced,
//! renamed, and the directories fsynced, so after a crash a blob is either
//! whole or absent. `tmp/` is emptied at start.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Buffer of the streaming writers: memory per upload or replica stream.
pub const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// A media id: 64 lowercase hex digits (SHA-256).
pub fn valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Hex of a SHA-256 digest.
pub fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// One file of `blobs/` as [`BlobStore::list`] found it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub mtime: SystemTime,
    pub len: u64,
}

/// The media files of this node.
pub struct BlobStore {
    root: PathBuf,
    blobs: PathBuf,
    tmp: PathBuf,
    seq: AtomicU64,
    healthy: AtomicBool,
    /// Files and bytes in `blobs/` (status page): counted at open, kept by
    /// commit and remove, recounted by [`BlobStore::recount`] (the repair
    /// pass) so a race between two commits of one id cannot drift it.
    files: AtomicU64,
    bytes: AtomicU64,
}

impl BlobStore {
    /// Opens (creating) `<data_dir>/media`, removing unfinished temp files.
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("media");
        let blobs = root.join("blobs");
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&blobs)?;
        std::fs::create_dir_all(&tmp)?;
        // Every shard directory exists (and is durable) before any blob is
        // committed, so a commit only has to fsync its shard after the rename.
        for i in 0..=255u8 {
            std::fs::create_dir_all(blobs.join(format!("{i:02x}")))?;
        }
        for d in [&blobs, &root, &tmp] {
            std::fs::File::open(d)?.sync_all()?;
        }
        if let Some(parent) = root.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        for e in std::fs::read_dir(&tmp)? {
            let p = e?.path();
            let _ = std::fs::remove_file(&p);
        }
        let s = BlobStore {
            root,
            blobs,
            tmp,
            seq: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        s.recount(&s.list()?);
        Ok(s)
    }

    /// Media files held here and their bytes.
    pub fn held(&self) -> (u64, u64) {
        (self.files.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    /// Sets the held counts from a listing of `blobs/`.
    pub fn recount(&self, listing: &[Listed]) {
        self.files.store(listing.len() as u64, Ordering::Relaxed);
        self.bytes.store(listing.iter().map(|l| l.len).sum(), Ordering::Relaxed);
    }

    /// Where media `id` lives (whether or not it is there).
    pub fn path(&self, id: &str) -> PathBuf {
        self.blobs.join(&id[..2.min(id.len())]).join(id)
    }

    /// Size of the local copy of `id`, if this node holds one.
    pub fn len(&self, id: &str) -> Option<u64> {
        if !valid_id(id) {
            return None;
        }
        std::fs::metadata(self.path(id)).ok().filter(|m| m.is_file()).map(|m| m.len())
    }

    pub fn has(&self, id: &str) -> bool {
        self.len(id).is_some()
    }

    /// A new temporary file for bytes being received.
    pub async fn temp(&self) -> io::Result<TempBlob> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let path = self.tmp.join(format!("{}-{n}.part", std::process::id()));
        let file = tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await?;
        Ok(TempBlob {
            path,
            out: Some(tokio::io::BufWriter::with_capacity(WRITE_BUFFER_BYTES, file)),
            hasher: Sha256::new(),
            len: 0,
        })
    }

    /// Makes a complete, fsynced temp file the blob `id` (fsyncing the
    /// directories). If `id` is already there the temp file is dropped.
    pub async fn commit(&self, tmp: &Path, id: &str) -> io::Result<()> {
        if !valid_id(id) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a media id"));
        }
        let dst = self.path(id);
        if self.has(id) {
            let _ = tokio::fs::remove_file(tmp).await;
            // A fresh mtime: the repair loop treats the file as just stored.
            let _ = self.touch(id);
            return Ok(());
        }
        let shard = dst.parent().expect("blob paths have a shard directory").to_path_buf();
        let (tmp, blobs) = (tmp.to_path_buf(), self.blobs.clone());
        let len = tokio::task::spawn_blocking(move || -> io::Result<u64> {
            let f = std::fs::File::open(&tmp)?;
            f.sync_all()?;
            let len = f.metadata()?.len();
            if !shard.exists() {
                std::fs::create_dir_all(&shard)?;
                std::fs::File::open(&blobs)?.sync_all()?;
            }
            std::fs::rename(&tmp, &dst)?;
            std::fs::File::open(&shard)?.sync_all()?;
            Ok(len)
        })
        .await
        .map_err(io::Error::other)??;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Sets the modification time of `id`'s file to now.
    pub fn touch(&self, id: &str) -> io::Result<()> {
        std::fs::File::options().write(true).open(self.path(id))?.set_modified(SystemTime::now())
    }

    /// Deletes the local copy of `id` (and fsyncs its directory).
    pub async fn remove(&self, id: &str) -> io::Result<bool> {
        if !valid_id(id) {
            return Ok(false);
        }
        let p = self.path(id);
        let len = self.len(id).unwrap_or(0);
        match tokio::fs::remove_file(&p).await {
            Ok(()) => {
                let _ = self.files.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
                let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(len))
                });
                if let Some(d) = p.parent() {
                    let d = d.to_path_buf();
                    let _ = tokio::task::spawn_blocking(move || {
                        std::fs::File::open(d).and_then(|f| f.sync_all())
                    })
                    .await;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every media file held here.
    pub fn list(&self) -> io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        for shard in std::fs::read_dir(&self.blobs)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for e in std::fs::read_dir(shard.path())? {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                if valid_id(&name) {
                    let meta = e.metadata()?;
                    let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                    out.push(Listed { id: name, mtime, len: meta.len() });
                }
            }
        }
        Ok(out)
    }

    /// Writes, fsyncs and removes a probe file; remembers the outcome.
    pub async fn probe(&self) -> bool {
        let p = self.root.join("probe");
        let r = async {
            let mut f = tokio::fs::File::create(&p).await?;
            f.write_all(b"herald media probe").await?;
            f.sync_all().await?;
            tokio::fs::remove_file(&p).await
        }
        .await;
        if let Err(e) = &r {
            tracing::error!(error = %e, dir = %self.root.display(), "media storage probe failed");
        }
        self.healthy.store(r.is_ok(), Ordering::Relaxed);
        r.is_ok()
    }

    /// Whether the last probe succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Bytes available to this process on the media file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let c =
            std::ffi::CString::new(self.root.as_os_str().as_bytes()).map_err(io::Error::other)?;
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is a valid NUL-terminated path and `st` a valid out pointer.
        let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// Bytes being received into a temp file, hashed as they arrive.
pub struct TempBlob {
    pub path: PathBuf,
    out: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    len: u64,
}

impl TempBlob {
    pub async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let out =
            self.out.as_mut().ok_or_else(|| io::Error::other("temp blob already finished"))?;
        out.write_all(data).await?;
        self.hasher.update(data);
        self.len += data.len() as u64;
        Ok(())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Flushes and fsyncs; answers (hex SHA-256, length).
    pub async fn finish(&mut self) -> io::Result<(String, u64)> {
        let mut out =
            self.out.take().ok_or_else(|| io::Error::other("temp blob already finished"))?;
        out.flush().await?;
        out.get_mut().sync_all().await?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        Ok((hex(&digest), self.len))
    }

    /// Gives up the path: the caller commits or removes it.
    pub fn keep(mut self) -> PathBuf {
        self.out = None;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempBlob {
    /// An abandoned temp file (a broken stream, a refusal) is removed.
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Hex SHA-256 and length of a file, read in bounded chunks.
pub async fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> io::Result<(String, u64)> {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; WRITE_BUFFER_BYTES];
        let mut len = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            len += n as u64;
        }
        Ok((hex(&h.finalize()), len))
    })
    .await
    .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob written through a temp file is committed under its hash,
    /// listed, sized and removed; an abandoned temp file disappears; the
    /// store reports free space and a healthy probe.
    #[tokio::test]
    async fn store_commit_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let s = BlobStore::open(dir.path()).unwrap();
        let mut t = s.temp().await.unwrap();
        t.write(b"hello ").await.unwrap();
        t.write(b"world").await.unwrap();
        let (id, len) = t.finish().await.unwrap();
        assert_eq!(id, "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(len, 11);
        let p = t.keep();
        s.commit(&p, &id).await.unwrap();
        assert!(!p.exists());
        assert_eq!(s.len(&id), Some(11));
        assert_eq!(hash_file(&s.path(&id)).await.unwrap(), (id.clone(), 11));
        assert_eq!(
            s.list().unwrap().into_iter().map(|l| (l.id, l.len)).collect::<Vec<_>>(),
            vec![(id.clone(), 11)]
        );
        assert_eq!(s.held(), (1, 11), "commit counts the file and its bytes");
        s.commit(&p, &id).await.unwrap();
        assert_eq!(s.held(), (1, 11), "a second commit of the same id counts nothing");
        let abandoned = s.temp().await.unwrap();
        let ap = abandoned.path.clone();
        assert!(ap.exists());
        drop(abandoned);
        assert!(!ap.exists());
        assert!(s.probe().await && s.healthy());
        assert!(s.free_bytes().unwrap() > 0);
        assert!(s.remove(&id).await.unwrap());
        assert!(!s.has(&id));
        assert_eq!(s.held(), (0, 0), "remove uncounts it");
        assert_eq!(BlobStore::open(dir.path()).unwrap().held(), (0, 0));
        assert!(!valid_id("../etc/passwd") && !s.has("../x"));
    }
}
