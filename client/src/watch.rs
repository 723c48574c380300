//! Watching a folder: every new file in it is group-sent **once**, then
//! moved to its `sent/` subdirectory (`herald watch-folder`).
//!
//! - Only regular files directly in the folder are considered; dotfiles,
//!   names ending in `.part`, `.tmp`, `.crdownload`, `.partial` or `~`, and
//!   the `sent` subdirectory are skipped ([`is_candidate_name`]).
//! - A file is *ready* when its (size, mtime) did not change between two
//!   observations at least [`WatchConfig::settle`] apart, so half-written
//!   files are not sent. Each [`Watcher::pass`] observes, and when some
//!   files were not seen unchanged before, waits the settle time and
//!   observes again, so one pass is enough (`--once`).
//! - Exactly-once across restarts and crashes: a journal
//!   (`sent/.herald-watch.jsonl`, appended and fsynced) records
//!   `{name, size, sha256, idempotency_key, state}` with state `sending`
//!   before a send and `sent` after it. A file whose SHA-256 has a `sent`
//!   entry is only moved; one with a `sending` entry is sent again with
//!   the journal's idempotency key, so the cluster answers `duplicate`
//!   rather than sending twice. The key of a new file is
//!   [`group_send_key`] of (uid, file SHA-256, groups, text).
//!
//! What "send" means is a [`FileSender`] (in `herald`: upload, then
//! group-send), so the logic is tested without a server.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::media::{file_sha256, group_send_key};

/// The subdirectory sent files are moved to.
pub const SENT_DIR: &str = "sent";
/// The journal's file name, inside [`SENT_DIR`].
pub const JOURNAL_FILE: &str = ".herald-watch.jsonl";
/// Default time a file must stay unchanged before it is sent.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);
/// Name endings of files still being written by other programs.
pub const SKIPPED_SUFFIXES: &[&str] = &[".part", ".tmp", ".crdownload", ".partial", "~"];

/// Parses a duration made of `<n><unit>` terms, unit `ms`, `s`, `m`, `h`
/// or `d`, optionally separated by spaces: `500ms`, `30s`, `10m`, `1h`,
/// `1h30m`, `2m 30s`. Zero is allowed (callers refuse it where it makes no
/// sense); fractions, signs, missing units and overflow are refused.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: use e.g. 500ms, 30s, 10m, 1h, 1h30m");
    let b = s.trim().as_bytes();
    if b.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let n: u64 =
            s.trim()[start..i].parse().map_err(|_| format!("{s:?} is too long a duration"))?;
        let ustart = i;
        while i < b.len() && b[i].is_ascii_alphabetic() {
            i += 1;
        }
        let mult: u64 = match &s.trim()[ustart..i] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        total_ms = n
            .checked_mul(mult)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("{s:?} is too long a duration"))?;
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
    }
    Ok(Duration::from_millis(total_ms))
}

/// Whether a directory entry's name may be sent: not a dotfile, not a
/// partial download or temporary file ([`SKIPPED_SUFFIXES`],
/// case-insensitive), not [`SENT_DIR`].
pub fn is_candidate_name(name: &OsStr) -> bool {
    let n = name.to_string_lossy();
    if n.is_empty() || n.starts_with('.') || n == SENT_DIR {
        return false;
    }
    let lower = n.to_lowercase();
    !SKIPPED_SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// State of a journal entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalState {
    /// About to be sent (or being sent when the process stopped).
    Sending,
    /// The cluster accepted the send.
    Sent,
}

/// One line of the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    pub idempotency_key: String,
    pub state: JournalState,
    /// The media id, once sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_id: Option<String>,
    /// When the entry was written, ms since the Unix epoch.
    #[serde(default)]
    pub at_ms: u64,
}

/// The append-only journal, and what it says per file content.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    /// sha256 → (sent?, idempotency key of the first send attempt).
    by_sha: HashMap<String, (JournalState, String)>,
}

impl Journal {
    /// Opens (creating) the journal at `path` and reads it. Lines that do
    /// not parse (a line torn by a crash) are ignored; a `sent` entry is
    /// final; the first `sending` entry's key is the one kept.
    pub fn open(path: &Path) -> Result<Journal, ClientError> {
        let pd = path.display();
        let mut file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| ClientError::io(&pd, &e))?;
        let mut by_sha: HashMap<String, (JournalState, String)> = HashMap::new();
        let mut ends_with_newline = true;
        {
            let mut r = BufReader::new(&file);
            let mut line = String::new();
            loop {
                line.clear();
                // Invalid UTF-8 (a torn write) ends the read; the rest is
                // ignored like any unparsable line.
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                ends_with_newline = line.ends_with('\n');
                let Ok(e) = serde_json::from_str::<JournalEntry>(line.trim()) else { continue };
                let slot =
                    by_sha.entry(e.sha256.clone()).or_insert((e.state, e.idempotency_key.clone()));
                if e.state == JournalState::Sent {
                    slot.0 = JournalState::Sent;
                }
            }
        }
        if !ends_with_newline {
            // A torn last line: start the next entry on its own line.
            file.write_all(b"\n").map_err(|e| ClientError::io(&pd, &e))?;
        }
        Ok(Journal { path: path.to_path_buf(), file, by_sha })
    }

    /// What the journal says about content with this SHA-256: its state
    /// and idempotency key.
    pub fn lookup(&self, sha256: &str) -> Option<(JournalState, &str)> {
        self.by_sha.get(sha256).map(|(s, k)| (*s, k.as_str()))
    }

    /// Appends an entry and fsyncs it before returning.
    pub fn append(&mut self, e: &JournalEntry) -> Result<(), ClientError> {
        let mut line = serde_json::to_string(e)
            .map_err(|e| ClientError::InvalidArgument(format!("journal entry: {e}")))?;
        line.push('\n');
        let pd = self.path.display();
        self.file.write_all(line.as_bytes()).map_err(|e| ClientError::io(&pd, &e))?;
        self.file.sync_data().map_err(|e| ClientError::io(&pd, &e))?;
        let slot =
            self.by_sha.entry(e.sha256.clone()).or_insert((e.state, e.idempotency_key.clone()));
        if e.state == JournalState::Sent {
            slot.0 = JournalState::Sent;
        }
        Ok(())
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What a successful send of one file gave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub media_id: String,
    /// How many recipients the message went to.
    pub recipients: usize,
    /// The cluster answered from an earlier send with the same key.
    pub duplicate: bool,
}

/// Sends one file with the given idempotency key (in `herald`: upload it,
/// then group-send it). Any `FnMut(&Path, &str) -> Result<Delivery, _>`
/// is one.
pub trait FileSender {
    /// Sends `path`; must pass `idempotency_key` to the group-send.
    fn send(&mut self, path: &Path, idempotency_key: &str) -> Result<Delivery, ClientError>;
}

impl<F: FnMut(&Path, &str) -> Result<Delivery, ClientError>> FileSender for F {
    fn send(&mut self, path: &Path, idempotency_key: &str) -> Result<Delivery, ClientError> {
        self(path, idempotency_key)
    }
}

/// What to watch and how to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchConfig {
    /// The folder watched (not recursively).
    pub dir: PathBuf,
    /// The sender's uid (part of the idempotency key).
    pub uid: String,
    /// Groups to send to; empty = all contacts.
    pub groups: Vec<String>,
    /// Text sent with each file.
    pub text: Option<String>,
    /// How long a file's size and mtime must stay unchanged.
    pub settle: Duration,
}

/// Something that happened to one file during a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Sent now (or answered `duplicate` for an interrupted earlier send),
    /// then moved.
    Sent { name: String, media_id: String, recipients: usize, duplicate: bool, moved_to: PathBuf },
    /// The journal says this content was sent already: only moved.
    AlreadySent { name: String, moved_to: PathBuf },
    /// The send failed; the file stays and is tried again next pass with
    /// the same idempotency key.
    Failed { name: String, error: ClientError },
}

/// Counts of one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub sent: usize,
    pub already_sent: usize,
    pub failed: usize,
    /// Files seen but not ready yet (still changing, or not yet seen twice).
    pub waiting: usize,
    /// The pass ended early because of the stop flag.
    pub stopped: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Observation {
    size: u64,
    mtime: Option<SystemTime>,
    /// When it was first seen with this size and mtime.
    since: Instant,
}

impl Observation {
    fn same(&self, o: &Observation) -> bool {
        self.size == o.size && self.mtime == o.mtime
    }
}

/// The folder watcher; see the [module docs](self).
pub struct Watcher<S> {
    cfg: WatchConfig,
    sender: S,
    journal: Journal,
    seen: HashMap<OsString, Observation>,
}

impl<S: FileSender> Watcher<S> {
    /// Creates `dir/sent/` if needed and opens the journal.
    pub fn open(cfg: WatchConfig, sender: S) -> Result<Self, ClientError> {
        let meta =
            std::fs::metadata(&cfg.dir).map_err(|e| ClientError::io(cfg.dir.display(), &e))?;
        if !meta.is_dir() {
            return Err(ClientError::InvalidArgument(format!(
                "{} is not a directory",
                cfg.dir.display()
            )));
        }
        let sent = cfg.dir.join(SENT_DIR);
        std::fs::create_dir_all(&sent).map_err(|e| ClientError::io(sent.display(), &e))?;
        let journal = Journal::open(&sent.join(JOURNAL_FILE))?;
        sync_dir(&sent);
        Ok(Watcher { cfg, sender, journal, seen: HashMap::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &WatchConfig {
        &self.cfg
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Current (size, mtime) of every candidate regular file.
    fn scan(&self) -> Result<HashMap<OsString, Observation>, ClientError> {
        let now = Instant::now();
        let mut out = HashMap::new();
        let rd = std::fs::read_dir(&self.cfg.dir)
            .map_err(|e| ClientError::io(self.cfg.dir.display(), &e))?;
        for entry in rd {
            let entry = entry.map_err(|e| ClientError::io(self.cfg.dir.display(), &e))?;
            let name = entry.file_name();
            if !is_candidate_name(&name) {
                continue;
            }
            // file_type does not follow symlinks: only regular files.
            let Ok(ft) = entry.file_type() else { continue };
            if !ft.is_file() {
                continue;
            }
            let Ok(m) = entry.metadata() else { continue };
            out.insert(name, Observation { size: m.len(), mtime: m.modified().ok(), since: now });
        }
        Ok(out)
    }

    /// Merges a scan into what was seen; returns the names that are ready
    /// (unchanged for at least the settle time, seen at least twice).
    fn observe(&mut self, now: HashMap<OsString, Observation>) -> Vec<OsString> {
        self.seen.retain(|n, _| now.contains_key(n));
        let mut ready = Vec::new();
        for (name, o) in now {
            match self.seen.get(&name) {
                Some(prev) if prev.same(&o) => {
                    if o.since.duration_since(prev.since) >= self.cfg.settle {
                        ready.push(name);
                    }
                }
                _ => {
                    self.seen.insert(name, o);
                }
            }
        }
        ready.sort();
        ready
    }

    /// One pass: observe the folder; if some files are not ready yet, call
    /// `wait(settle)` (it sleeps; `false` = stop) and observe again; then
    /// send every ready file in name order, calling `on_event` for each.
    /// Stops between files when `stop` is set. Errors of single files are
    /// events ([`WatchEvent::Failed`]); an error reading the folder or
    /// writing the journal ends the pass.
    pub fn pass(
        &mut self,
        wait: &mut dyn FnMut(Duration) -> bool,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(&WatchEvent),
    ) -> Result<PassReport, ClientError> {
        let mut report = PassReport::default();
        let first = self.scan()?;
        let total = first.len();
        let mut ready = self.observe(first);
        if ready.len() < total {
            if !wait(self.cfg.settle) || stop.load(Ordering::SeqCst) {
                report.stopped = true;
                return Ok(report);
            }
            let second = self.scan()?;
            ready = self.observe(second);
            report.waiting = self.seen.len() - ready.len();
        }
        for name in ready {
            if stop.load(Ordering::SeqCst) {
                report.stopped = true;
                break;
            }
            let Some(obs) = self.seen.get(&name).copied() else { continue };
            match self.send_one(&name, obs)? {
                Some(ev) => {
                    match &ev {
                        WatchEvent::Sent { .. } => report.sent += 1,
                        WatchEvent::AlreadySent { .. } => report.already_sent += 1,
                        WatchEvent::Failed { .. } => report.failed += 1,
                    }
                    on_event(&ev);
                }
                None => report.waiting += 1,
            }
        }
        Ok(report)
    }

    /// Sends (or just moves) one ready file. `None`: it changed after all.
    fn send_one(
        &mut self,
        name: &OsStr,
        obs: Observation,
    ) -> Result<Option<WatchEvent>, ClientError> {
        let path = self.cfg.dir.join(name);
        let lossy = name.to_string_lossy().into_owned();
        if std::fs::symlink_metadata(&path).is_err() {
            // Gone (moved or deleted by someone else) since the scan.
            self.seen.remove(name);
            return Ok(None);
        }
        let sha256 = match file_sha256(&path) {
            Ok(s) => s,
            Err(error) => {
                self.seen.remove(name);
                return Ok(Some(WatchEvent::Failed { name: lossy, error }));
            }
        };
        // Changed while hashing: not ready after all; observed afresh.
        let after = std::fs::symlink_metadata(&path).ok();
        if after.as_ref().is_none_or(|m| m.len() != obs.size || m.modified().ok() != obs.mtime) {
            self.seen.remove(name);
            return Ok(None);
        }
        let key = match self.journal.lookup(&sha256) {
            Some((JournalState::Sent, _)) => {
                let moved_to = self.move_to_sent(name)?;
                self.seen.remove(name);
                return Ok(Some(WatchEvent::AlreadySent { name: lossy, moved_to }));
            }
            Some((JournalState::Sending, key)) => key.to_string(),
            None => {
                group_send_key(&self.cfg.uid, &sha256, &self.cfg.groups, self.cfg.text.as_deref())
            }
        };
        let mut entry = JournalEntry {
            name: lossy.clone(),
            size: obs.size,
            sha256,
            idempotency_key: key.clone(),
            state: JournalState::Sending,
            media_id: None,
            at_ms: now_ms(),
        };
        self.journal.append(&entry)?;
        match self.sender.send(&path, &key) {
            Ok(d) => {
                entry.state = JournalState::Sent;
                entry.media_id = Some(d.media_id.clone());
                entry.at_ms = now_ms();
                self.journal.append(&entry)?;
                let moved_to = self.move_to_sent(name)?;
                self.seen.remove(name);
                Ok(Some(WatchEvent::Sent {
                    name: lossy,
                    media_id: d.media_id,
                    recipients: d.recipients,
                    duplicate: d.duplicate,
                    moved_to,
                }))
            }
            Err(error) => Ok(Some(WatchEvent::Failed { name: lossy, error })),
        }
    }

    /// Moves `dir/name` to `dir/sent/`, adding `-1`, `-2`, ... before the
    /// extension when the name is taken.
    fn move_to_sent(&self, name: &OsStr) -> Result<PathBuf, ClientError> {
        let sent = self.cfg.dir.join(SENT_DIR);
        let dest = unique_path(&sent, name);
        let from = self.cfg.dir.join(name);
        std::fs::rename(&from, &dest).map_err(|e| {
            ClientError::io(format!("move {} to {}", from.display(), dest.display()), &e)
        })?;
        sync_dir(&sent);
        sync_dir(&self.cfg.dir);
        Ok(dest)
    }

    /// Runs passes every `period` until `stop` is set (checked at least
    /// every 100 ms while waiting). Pass errors are given to `on_error`
    /// and the watcher carries on at the next period; with `once`, one
    /// pass and its error is returned.
    pub fn run(
        &mut self,
        period: Duration,
        once: bool,
        stop: &AtomicBool,
        on_event: &mut dyn FnMut(&WatchEvent),
        on_error: &mut dyn FnMut(&ClientError),
    ) -> Result<PassReport, ClientError> {
        let mut total = PassReport::default();
        let mut wait = |d: Duration| sleep_unless_stopped(d, stop);
        loop {
            match self.pass(&mut wait, stop, on_event) {
                Ok(r) => {
                    total.sent += r.sent;
                    total.already_sent += r.already_sent;
                    total.failed += r.failed;
                    total.waiting = r.waiting;
                    total.stopped = r.stopped;
                }
                Err(e) if once => return Err(e),
                Err(e) => on_error(&e),
            }
            if once || stop.load(Ordering::SeqCst) || !sleep_unless_stopped(period, stop) {
                total.stopped |= !once;
                return Ok(total);
            }
        }
    }
}

/// Sleeps `d`, waking every 100 ms to check `stop`; `false` if stopped.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// `dir/name`, or `dir/<stem>-<n>.<ext>` for the first free `n`.
fn unique_path(dir: &Path, name: &OsStr) -> PathBuf {
    let first = dir.join(name);
    if std::fs::symlink_metadata(&first).is_err() {
        return first;
    }
    let p = Path::new(name);
    let stem = p.file_stem().unwrap_or(name).to_string_lossy().into_owned();
    let ext = p.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    (1u64..)
        .map(|n| dir.join(format!("{stem}-{n}{ext}")))
        .find(|c| std::fs::symlink_metadata(c).is_err())
        .expect("a free name")
}

/// fsyncs a directory (so a rename or a new file in it survives a crash);
/// best effort.
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::to_hex;
    use sha2::{Digest, Sha256};
    use std::cell::RefCell;
    use std::rc::Rc;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("herald-watch-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn cfg(dir: &Path) -> WatchConfig {
        WatchConfig {
            dir: dir.to_path_buf(),
            uid: "alice".into(),
            groups: vec!["friends".into()],
            text: None,
            settle: Duration::from_millis(30),
        }
    }

    /// Sends recorded as (file name, key, bytes); answers media id = sha.
    type Log = Rc<RefCell<Vec<(String, String, Vec<u8>)>>>;

    fn recorder(log: Log) -> impl FnMut(&Path, &str) -> Result<Delivery, ClientError> {
        move |p: &Path, key: &str| {
            let bytes = std::fs::read(p).unwrap();
            let media_id = to_hex(&Sha256::digest(&bytes));
            log.borrow_mut().push((
                p.file_name().unwrap().to_string_lossy().into_owned(),
                key.to_string(),
                bytes,
            ));
            Ok(Delivery { media_id, recipients: 2, duplicate: false })
        }
    }

    fn sleep_wait() -> impl FnMut(Duration) -> bool {
        |d| {
            std::thread::sleep(d);
            true
        }
    }

    fn pass<S: FileSender>(w: &mut Watcher<S>) -> (PassReport, Vec<WatchEvent>) {
        let mut evs = Vec::new();
        let r = w
            .pass(&mut sleep_wait(), &AtomicBool::new(false), &mut |e| evs.push(e.clone()))
            .unwrap();
        (r, evs)
    }

    fn sent_names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir.join(SENT_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn journal_lines(dir: &Path) -> Vec<JournalEntry> {
        std::fs::read_to_string(dir.join(SENT_DIR).join(JOURNAL_FILE))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Units, compound terms and spaces parse; zero is allowed; garbage,
    /// fractions, signs, unknown units and overflow are refused.
    #[test]
    fn watch_parse_duration() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 2m 30s "), Ok(Duration::from_secs(150)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "m",
            "1.5h",
            "-1s",
            "+1s",
            "10 m",
            "5x",
            "1hh",
            "s10",
            "99999999999999999999d",
            "213503982334602d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    /// Dotfiles, partial/temporary names (any case) and `sent` are not
    /// candidates; ordinary names are.
    #[test]
    fn watch_candidate_names() {
        for ok in ["a.jpg", "IMG_0001.HEIC", "notes.txt", "partial.jpg", "sent.jpg"] {
            assert!(is_candidate_name(OsStr::new(ok)), "{ok}");
        }
        for no in [
            ".hidden",
            ".herald-watch.jsonl",
            "a.part",
            "a.PART",
            "b.tmp",
            "c.crdownload",
            "d.partial",
            "e.txt~",
            "sent",
            "",
        ] {
            assert!(!is_candidate_name(OsStr::new(no)), "{no}");
        }
    }

    /// Each ready file is sent once with the derived key and moved to
    /// sent/; a second pass sends nothing; journal has sending+sent per
    /// file; dotfiles, partial names and subdirectories are left alone.
    #[test]
    fn watch_sends_each_ready_file_once_and_moves_it() {
        let dir = tmpdir("once");
        std::fs::write(dir.join("a.jpg"), b"aaa").unwrap();
        std::fs::write(dir.join("b.txt"), b"bbbb").unwrap();
        std::fs::write(dir.join(".hidden"), b"h").unwrap();
        std::fs::write(dir.join("c.jpg.part"), b"p").unwrap();
        std::fs::write(dir.join("d.crdownload"), b"p").unwrap();
        std::fs::write(dir.join("e~"), b"p").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub").join("x.jpg"), b"x").unwrap();
        let log: Log = Rc::default();
        let mut w = Watcher::open(cfg(&dir), recorder(log.clone())).unwrap();
        let (r, evs) = pass(&mut w);
        assert_eq!((r.sent, r.failed, r.already_sent), (2, 0, 0));
        let sent: Vec<_> = log.borrow().iter().map(|(n, k, _)| (n.clone(), k.clone())).collect();
        let key = |b: &[u8]| {
            group_send_key("alice", &to_hex(&Sha256::digest(b)), &["friends".into()], None)
        };
        assert_eq!(sent, vec![("a.jpg".into(), key(b"aaa")), ("b.txt".into(), key(b"bbbb"))]);
        assert!(matches!(&evs[0], WatchEvent::Sent { name, recipients: 2, .. } if name == "a.jpg"));
        assert_eq!(sent_names(&dir), vec![".herald-watch.jsonl", "a.jpg", "b.txt"]);
        for left in [".hidden", "c.jpg.part", "d.crdownload", "e~", "sub/x.jpg"] {
            assert!(dir.join(left).exists(), "{left}");
        }
        let states: Vec<_> =
            journal_lines(&dir).iter().map(|e| (e.name.clone(), e.state)).collect();
        assert_eq!(
            states,
            vec![
                ("a.jpg".into(), JournalState::Sending),
                ("a.jpg".into(), JournalState::Sent),
                ("b.txt".into(), JournalState::Sending),
                ("b.txt".into(), JournalState::Sent)
            ]
        );
        let (r, _) = pass(&mut w);
        assert_eq!(r.sent, 0);
        assert_eq!(log.borrow().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file that grows between the two observations of a pass is not
    /// sent (half-written); once it stops changing a later pass sends it,
    /// with its final content.
    #[test]
    fn watch_skips_half_written_file() {
        let dir = tmpdir("growing");
        std::fs::write(dir.join("big.mp4"), b"part one").unwrap();
        let log: Log = Rc::default();
        let mut w = Watcher::open(cfg(&dir), recorder(log.clone())).unwrap();
        let path = dir.join("big.mp4");
        let mut grow = |d: Duration| {
            std::thread::sleep(d);
            let mut f = File::options().append(true).open(&path).unwrap();
            f.write_all(b" and more").unwrap();
            true
        };
        let r = w.pass(&mut grow, &AtomicBool::new(false), &mut |_| {}).unwrap();
        assert_eq!((r.sent, r.waiting), (0, 1));
        assert!(log.borrow().is_empty());
        // Unchanged since the last observation and the settle time passed.
        std::thread::sleep(Duration::from_millis(40));
        let (r, _) = pass(&mut w);
        assert_eq!(r.sent, 1);
        assert_eq!(log.borrow()[0].2, b"part one and more");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// After a crash between the `sending` entry and the send's end, the
    /// file is sent again with the SAME key as in the journal (even if the
    /// configured text changed, which would derive another key), and then
    /// marked sent and moved.
    #[test]
    fn watch_resends_sending_entry_with_same_key() {
        let dir = tmpdir("crash");
        std::fs::write(dir.join("a.jpg"), b"content").unwrap();
        let sha = to_hex(&Sha256::digest(b"content"));
        // The crashed run: journal written, send never finished.
        {
            std::fs::create_dir_all(dir.join(SENT_DIR)).unwrap();
            let mut j = Journal::open(&dir.join(SENT_DIR).join(JOURNAL_FILE)).unwrap();
            let e = JournalEntry {
                name: "a.jpg".into(),
                size: 7,
                sha256: sha.clone(),
                idempotency_key: "gs1-old-key".into(),
                state: JournalState::Sending,
                media_id: None,
                at_ms: 1,
            };
            j.append(&e).unwrap();
        }
        let log: Log = Rc::default();
        let mut c = cfg(&dir);
        c.text = Some("changed".into());
        let mut w = Watcher::open(c, recorder(log.clone())).unwrap();
        let (r, _) = pass(&mut w);
        assert_eq!(r.sent, 1);
        assert_eq!(log.borrow()[0].1, "gs1-old-key");
        assert_eq!(sent_names(&dir), vec![".herald-watch.jsonl", "a.jpg"]);
        let last = journal_lines(&dir).pop().unwrap();
        assert_eq!(
            (last.state, last.idempotency_key.as_str(), last.media_id.as_deref()),
            (JournalState::Sent, "gs1-old-key", Some(sha.as_str()))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A file whose content has a `sent` entry (crash after sending, before
    /// moving; or the same content dropped again) is only moved, with a
    /// suffix when sent/ has that name already; nothing is sent.
    #[test]
    fn watch_sent_entry_only_moves() {
        let dir = tmpdir("sent-entry");
        std::fs::create_dir_all(dir.join(SENT_DIR)).unwrap();
        std::fs::write(dir.join(SENT_DIR).join("a.jpg"), b"older").unwrap();
        std::fs::write(dir.join("a.jpg"), b"content").unwrap();
        {
            let mut j = Journal::open(&dir.join(SENT_DIR).join(JOURNAL_FILE)).unwrap();
            let sha = to_hex(&Sha256::digest(b"content"));
            for state in [JournalState::Sending, JournalState::Sent] {
                j.append(&JournalEntry {
                    name: "a.jpg".into(),
                    size: 7,
                    sha256: sha.clone(),
                    idempotency_key: "k".into(),
                    state,
                    media_id: None,
                    at_ms: 1,
                })
                .unwrap();
            }
        }
        let log: Log = Rc::default();
        let mut w = Watcher::open(cfg(&dir), recorder(log.clone())).unwrap();
        let (r, evs) = pass(&mut w);
        assert_eq!((r.sent, r.already_sent), (0, 1));
        assert!(log.borrow().is_empty());
        assert_eq!(sent_names(&dir), vec![".herald-watch.jsonl", "a-1.jpg", "a.jpg"]);
        assert_eq!(std::fs::read(dir.join(SENT_DIR).join("a-1.jpg")).unwrap(), b"content");
        assert!(
            matches!(&evs[0], WatchEvent::AlreadySent { moved_to, .. } if moved_to.ends_with("a-1.jpg"))
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A failed send leaves the file in place with a `sending` entry; the
    /// next pass retries it with the same key and then moves it.
    #[test]
    fn watch_failed_send_retried_with_same_key() {
        let dir = tmpdir("fail");
        std::fs::write(dir.join("a.jpg"), b"x").unwrap();
        let keys: Rc<RefCell<Vec<String>>> = Rc::default();
        let k2 = keys.clone();
        let mut fail = true;
        let sender = move |_: &Path, key: &str| {
            k2.borrow_mut().push(key.to_string());
            if std::mem::replace(&mut fail, false) {
                Err(ClientError::Server {
                    code: "replication_failed".into(),
                    message: "1 of 2 nodes".into(),
                })
            } else {
                Ok(Delivery { media_id: "m".into(), recipients: 1, duplicate: true })
            }
        };
        let mut w = Watcher::open(cfg(&dir), sender).unwrap();
        let (r, evs) = pass(&mut w);
        assert_eq!(r.failed, 1);
        assert!(
            matches!(&evs[0], WatchEvent::Failed { error, .. } if error.code() == "replication_failed")
        );
        assert!(dir.join("a.jpg").exists());
        std::thread::sleep(Duration::from_millis(40));
        let (r, _) = pass(&mut w);
        assert_eq!(r.sent, 1);
        let k = keys.borrow();
        assert_eq!(k.len(), 2);
        assert_eq!(k[0], k[1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The journal survives a torn last line: the entries before it count,
    /// and the next entry starts on a new line.
    #[test]
    fn watch_journal_torn_line() {
        let dir = tmpdir("torn");
        let p = dir.join("j.jsonl");
        let good = JournalEntry {
            name: "a".into(),
            size: 1,
            sha256: "s1".into(),
            idempotency_key: "k1".into(),
            state: JournalState::Sent,
            media_id: None,
            at_ms: 0,
        };
        std::fs::write(
            &p,
            format!("{}\n{{\"name\":\"b\",\"si", serde_json::to_string(&good).unwrap()),
        )
        .unwrap();
        let mut j = Journal::open(&p).unwrap();
        assert_eq!(j.lookup("s1"), Some((JournalState::Sent, "k1")));
        j.append(&JournalEntry {
            sha256: "s2".into(),
            state: JournalState::Sending,
            idempotency_key: "k2".into(),
            ..good.clone()
        })
        .unwrap();
        let j = Journal::open(&p).unwrap();
        assert_eq!(j.lookup("s2"), Some((JournalState::Sending, "k2")));
        assert_eq!(j.lookup("s1"), Some((JournalState::Sent, "k1")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The stop flag ends a pass between files: nothing is sent after it
    /// is set, and `run` returns promptly.
    #[test]
    fn watch_stop_between_files() {
        let dir = tmpdir("stop");
        for n in ["a", "b", "c"] {
            std::fs::write(dir.join(n), n).unwrap();
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let count = Rc::new(RefCell::new(0));
        let c2 = count.clone();
        let sender = move |_: &Path, _: &str| {
            *c2.borrow_mut() += 1;
            s2.store(true, Ordering::SeqCst);
            Ok(Delivery { media_id: "m".into(), recipients: 1, duplicate: false })
        };
        let mut w = Watcher::open(cfg(&dir), sender).unwrap();
        let t = Instant::now();
        let r = w.run(Duration::from_secs(3600), false, &stop, &mut |_| {}, &mut |_| {}).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(*count.borrow(), 1);
        assert!(r.stopped);
        assert_eq!(r.sent, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `run` with `once` does both observations in its single pass: a
    /// fresh folder's stable files are sent without a second run.
    #[test]
    fn watch_once_sends_fresh_files() {
        let dir = tmpdir("once-run");
        std::fs::write(dir.join("a.png"), b"png").unwrap();
        let log: Log = Rc::default();
        let mut w = Watcher::open(cfg(&dir), recorder(log.clone())).unwrap();
        let r = w
            .run(Duration::from_secs(3600), true, &AtomicBool::new(false), &mut |_| {}, &mut |_| {})
            .unwrap();
        assert_eq!(r.sent, 1);
        assert!(!r.stopped);
        assert_eq!(log.borrow().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
