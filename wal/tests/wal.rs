//! herald-wal on real files in temporary directories: append, read, reopen,
//! truncate and purge across segments, torn tails, corruption, missing
//! segments, group commit.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use herald_wal::{Durability, Options, Recovered, Wal, WalError, MAX_RECORD_BYTES};
use tempfile::TempDir;

/// How long a test waits for a completion that must come.
const WAIT: Duration = Duration::from_secs(30);

fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize * 31 + k) as u8).collect()
}

fn small(segment_bytes: u64) -> Options {
    Options { segment_bytes, ..Options::default() }
}

/// Appends `(i, payload(i, len))` for each index and waits until durable.
fn append_durable(wal: &Wal, indices: impl IntoIterator<Item = u64>, len: usize) {
    let recs: Vec<(u64, Vec<u8>)> = indices.into_iter().map(|i| (i, payload(i, len))).collect();
    let (tx, rx) = mpsc::channel();
    wal.append(recs, move |r| tx.send(r).unwrap()).expect("append");
    rx.recv_timeout(WAIT).expect("completion").expect("durable");
}

fn indices(wal: &Wal) -> Vec<u64> {
    wal.read_range(0..u64::MAX).expect("read").into_iter().map(|(i, _)| i).collect()
}

fn check_contents(wal: &Wal, range: std::ops::RangeInclusive<u64>, len: usize) {
    let got = wal.read_range(0..u64::MAX).expect("read");
    let want: Vec<(u64, Vec<u8>)> = range.map(|i| (i, payload(i, len))).collect();
    assert_eq!(got, want);
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    v.sort();
    v
}

/// Copies every file of `from` into a fresh directory.
fn copy_dir(from: &Path) -> TempDir {
    let to = TempDir::new().unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.path().join(p.file_name().unwrap())).unwrap();
    }
    to
}

/// Records are readable as soon as `append` returns, durable on completion,
/// and all there, byte for byte, after a reopen; the next append continues
/// where the reopened log ends.
#[test]
fn append_read_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        assert_eq!((wal.first_index(), wal.last_index()), (None, None));
        for b in 0..10u64 {
            append_durable(&wal, b * 10 + 1..=b * 10 + 10, 100 + b as usize);
        }
        let (tx, rx) = mpsc::channel();
        wal.append([(101u64, payload(101, 7))], move |r| tx.send(r).unwrap()).unwrap();
        assert_eq!(wal.get(101).unwrap(), Some(payload(101, 7)), "readable before durable");
        rx.recv_timeout(WAIT).unwrap().unwrap();
        assert_eq!(wal.get(0).unwrap(), None);
        assert_eq!(wal.get(102).unwrap(), None);
    }
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    assert!(wal.recovered().is_empty(), "{:?}", wal.recovered());
    assert_eq!((wal.first_index(), wal.last_index()), (Some(1), Some(101)));
    for b in 0..10u64 {
        for i in b * 10 + 1..=b * 10 + 10 {
            assert_eq!(wal.get(i).unwrap(), Some(payload(i, 100 + b as usize)), "entry {i}");
        }
    }
    assert_eq!(wal.read_range(99..200).unwrap().len(), 3);
    append_durable(&wal, [102], 5);
    assert_eq!(wal.last_index(), Some(102));
}

/// Appends that would leave a hole or overwrite, and records over the size
/// limit, are refused without changing the log.
#[test]
fn append_refuses_holes_and_oversize() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    append_durable(&wal, 5..=6, 10);
    let r = wal.append([(8u64, vec![1u8])], |_| panic!("must not complete"));
    assert!(matches!(r, Err(WalError::NotContiguous { expected: 7, got: 8 })), "{r:?}");
    let r = wal.append([(6u64, vec![1u8])], |_| panic!("must not complete"));
    assert!(matches!(r, Err(WalError::NotContiguous { expected: 7, got: 6 })), "{r:?}");
    let big = vec![0u8; MAX_RECORD_BYTES + 1];
    let r = wal.append([(7u64, &big[..])], |_| panic!("must not complete"));
    assert!(matches!(r, Err(WalError::TooLarge { .. })), "{r:?}");
    assert_eq!(indices(&wal), vec![5, 6]);
    append_durable(&wal, [7], 10);
    assert_eq!(indices(&wal), vec![5, 6, 7]);
}

/// With small segments the log rolls over many files; truncating in the
/// middle of a segment and exactly at a segment boundary, then purging across
/// boundaries, gives the right entries and files, durably (after a reopen).
#[test]
fn truncate_and_purge_across_segments() {
    let dir = TempDir::new().unwrap();
    // 24-byte header + 4 records of 16 + 40 bytes = 248 bytes per segment.
    let opts = small(250);
    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    append_durable(&wal, 1..=10, 40);
    append_durable(&wal, 11..=40, 40);
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 10, "{segs:?}");
    assert!(segs[0].ends_with("00000000000000000001.wal"));
    assert!(segs[1].ends_with("00000000000000000005.wal"));

    // Mid-segment: keep 1..=22 (segment 21 keeps 21, 22).
    wal.truncate_after(Some(22)).unwrap();
    assert_eq!(wal.last_index(), Some(22));
    assert_eq!(segments(dir.path()).len(), 6);
    // At a boundary: keep 1..=16; segment 17 disappears entirely.
    wal.truncate_after(Some(16)).unwrap();
    assert_eq!(segments(dir.path()).len(), 4);
    // The log continues where it was cut, with new contents.
    append_durable(&wal, 17..=18, 3);
    drop(wal);

    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    assert!(wal.recovered().is_empty(), "{:?}", wal.recovered());
    assert_eq!(indices(&wal), (1..=18).collect::<Vec<_>>());
    assert_eq!(wal.get(17).unwrap(), Some(payload(17, 3)));
    assert_eq!(wal.get(16).unwrap(), Some(payload(16, 40)));

    // Purge inside the second segment: the first file goes, 6.. stay readable.
    wal.purge_upto(6, b"tag-6").unwrap();
    assert_eq!(wal.first_index(), Some(7));
    assert_eq!(wal.get(6).unwrap(), None);
    assert_eq!(segments(dir.path()).len(), 4);
    // Purge exactly at a segment's last entry.
    wal.purge_upto(8, b"tag-8").unwrap();
    assert_eq!(segments(dir.path()).len(), 3);
    // A lower purge point is ignored.
    wal.purge_upto(2, b"old").unwrap();
    assert_eq!(wal.purged(), Some((8, b"tag-8".to_vec())));
    drop(wal);

    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(wal.purged(), Some((8, b"tag-8".to_vec())));
    assert_eq!(indices(&wal), (9..=18).collect::<Vec<_>>());
    // Truncating below the purge point is refused.
    assert!(matches!(
        wal.truncate_after(Some(7)),
        Err(WalError::BelowPurge { after: Some(7), purged: 8 })
    ));
    // Purging beyond the last entry empties the log; it continues after it.
    wal.purge_upto(30, b"snap").unwrap();
    assert_eq!((wal.first_index(), wal.last_index()), (None, None));
    assert!(segments(dir.path()).is_empty());
    let r = wal.append([(19u64, vec![0u8])], |_| panic!("must not complete"));
    assert!(matches!(r, Err(WalError::NotContiguous { expected: 31, got: 19 })), "{r:?}");
    append_durable(&wal, 31..=33, 40);
    drop(wal);

    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.purged(), Some((30, b"snap".to_vec())));
    check_contents(&wal, 31..=33, 40);
    // truncate_after(None) removes everything above the purge point only
    // when there is no purge point; here it is refused.
    assert!(matches!(wal.truncate_after(None), Err(WalError::BelowPurge { .. })));
    wal.truncate_after(Some(30)).unwrap();
    assert_eq!(wal.last_index(), None);
}

/// Segments whose deletion after a purge did not reach the disk (the purge
/// point did) are removed again at open, not read.
#[test]
fn purged_segments_left_behind_are_removed_at_open() {
    let dir = TempDir::new().unwrap();
    let opts = small(250);
    let wal = Wal::open(dir.path(), opts.clone()).unwrap();
    append_durable(&wal, 1..=12, 40);
    let before = segments(dir.path());
    let first_copy = fs::read(&before[0]).unwrap();
    wal.purge_upto(5, b"").unwrap();
    drop(wal);
    // "Resurrect" the deleted first segment, damaged too: it must not matter.
    let mut damaged = first_copy;
    damaged[40] ^= 0xff;
    fs::write(&before[0], damaged).unwrap();
    let wal = Wal::open(dir.path(), opts).unwrap();
    assert_eq!(wal.recovered(), &[Recovered::PurgedSegment { path: before[0].clone() }]);
    assert_eq!(indices(&wal), (6..=12).collect::<Vec<_>>());
}

/// Cutting the file at every byte offset inside the last record (a torn
/// write) reopens to the record before it, reports the repair, and the log
/// accepts the lost index again.
#[test]
fn torn_tail_at_every_offset_recovers_to_previous_record() {
    let src = TempDir::new().unwrap();
    {
        let wal = Wal::open(src.path(), Options::default()).unwrap();
        append_durable(&wal, 1..=5, 50);
    }
    let seg = segments(src.path()).pop().unwrap();
    let full = fs::metadata(&seg).unwrap().len();
    let last_start = full - (16 + 50);
    for cut in last_start..full {
        let dir = copy_dir(src.path());
        let path = dir.path().join(seg.file_name().unwrap());
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(cut).unwrap();
        drop(f);
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(wal.last_index(), Some(4), "cut at {cut}");
        check_contents(&wal, 1..=4, 50);
        if cut == last_start {
            assert!(wal.recovered().is_empty(), "cut at a record boundary is no repair");
        } else {
            assert_eq!(
                wal.recovered(),
                &[Recovered::TornTail {
                    path: path.clone(),
                    offset: last_start,
                    dropped_bytes: cut - last_start
                }],
                "cut at {cut}"
            );
        }
        assert_eq!(fs::metadata(&path).unwrap().len(), last_start, "file cut back");
        append_durable(&wal, [5], 9);
        drop(wal);
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        assert!(wal.recovered().is_empty());
        assert_eq!(wal.get(5).unwrap(), Some(payload(5, 9)));
    }
}

/// A last record that is whole in length but garbage (a crash after the
/// size grew, before the data landed: zeros, or a bad checksum) with nothing
/// valid after it is a torn tail too.
#[test]
fn garbage_at_the_very_end_is_a_torn_tail() {
    for garbage in [vec![0u8; 66], vec![0u8; 4096]] {
        let dir = TempDir::new().unwrap();
        {
            let wal = Wal::open(dir.path(), Options::default()).unwrap();
            append_durable(&wal, 1..=3, 50);
        }
        let seg = segments(dir.path()).pop().unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        let mut b = fs::read(&seg).unwrap();
        b.extend_from_slice(&garbage);
        fs::write(&seg, &b).unwrap();
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(wal.last_index(), Some(3));
        assert!(matches!(wal.recovered(), [Recovered::TornTail { offset, .. }] if *offset == len));
    }
    // The last record's payload damaged in place, nothing after it.
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        append_durable(&wal, 1..=3, 50);
    }
    let seg = segments(dir.path()).pop().unwrap();
    let mut b = fs::read(&seg).unwrap();
    let n = b.len();
    b[n - 1] ^= 0x55;
    fs::write(&seg, &b).unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(wal.last_index(), Some(2));
}

/// Flipping any byte of a record in the middle of the last segment (valid
/// records follow) refuses to open, with an error naming the file and the
/// record's byte offset; the file is left untouched.
#[test]
fn flipped_byte_in_a_middle_record_is_an_error_naming_file_and_offset() {
    let src = TempDir::new().unwrap();
    {
        let wal = Wal::open(src.path(), Options::default()).unwrap();
        append_durable(&wal, 1..=5, 30);
    }
    let seg = segments(src.path()).pop().unwrap();
    let name = seg.file_name().unwrap().to_owned();
    // Record 3 starts after the header and two 46-byte records.
    let rec_start = 24 + 2 * 46u64;
    for at in rec_start..rec_start + 46 {
        let dir = copy_dir(src.path());
        let path = dir.path().join(&name);
        let mut b = fs::read(&path).unwrap();
        b[at as usize] ^= 0x10;
        fs::write(&path, &b).unwrap();
        match Wal::open(dir.path(), Options::default()) {
            Err(e @ WalError::Corrupt { .. }) => {
                let WalError::Corrupt { path: p, offset, .. } = &e else { unreachable!() };
                assert_eq!((p, *offset), (&path, rec_start), "flip at {at}: {e}");
                let msg = e.to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(msg.contains(&format!("byte offset {rec_start}")), "{msg}");
            }
            other => panic!("flip at {at}: expected a corruption error, got {other:?}"),
        }
        assert_eq!(fs::read(&path).unwrap(), b, "a refused log is not modified");
    }
}

/// Damage in a segment that is not the last — even in its final record —
/// is never taken for a torn tail.
#[test]
fn damage_in_an_earlier_segment_is_an_error() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small(250)).unwrap();
        append_durable(&wal, 1..=12, 40);
    }
    let segs = segments(dir.path());
    let mut b = fs::read(&segs[1]).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    fs::write(&segs[1], &b).unwrap();
    let e = Wal::open(dir.path(), small(250)).unwrap_err();
    assert!(
        matches!(&e, WalError::Corrupt { path, offset, .. } if *path == segs[1] && *offset == 24 + 3 * 56),
        "{e}"
    );
    // A cut (short) earlier segment likewise.
    fs::write(&segs[1], &b[..n - 10]).unwrap();
    let e = Wal::open(dir.path(), small(250)).unwrap_err();
    assert!(matches!(&e, WalError::Corrupt { path, .. } if *path == segs[1]), "{e}");
}

/// A missing segment in the middle, or a missing first segment above the
/// purge point, refuses to open with an error naming the segment after the
/// hole and the missing index.
#[test]
fn missing_segment_is_an_error() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small(250)).unwrap();
        append_durable(&wal, 1..=16, 40);
        wal.purge_upto(2, b"").unwrap();
    }
    let segs = segments(dir.path());
    assert_eq!(segs.len(), 4);
    let saved = fs::read(&segs[2]).unwrap();
    fs::remove_file(&segs[2]).unwrap();
    let e = Wal::open(dir.path(), small(250)).unwrap_err();
    assert!(
        matches!(&e, WalError::Gap { path, expected: 9, found: 13 } if *path == segs[3]),
        "{e}"
    );
    assert!(e.to_string().contains("00000000000000000013.wal"), "{e}");
    fs::write(&segs[2], saved).unwrap();
    fs::remove_file(&segs[0]).unwrap();
    let e = Wal::open(dir.path(), small(250)).unwrap_err();
    assert!(matches!(&e, WalError::Gap { path, expected: 3, found: 5 } if *path == segs[1]), "{e}");
}

/// A last segment whose header is torn (crash right after creating it) or
/// that holds no record is removed at open; a damaged header in an earlier
/// segment is an error.
#[test]
fn torn_or_empty_last_segment_is_removed_bad_earlier_header_is_an_error() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small(250)).unwrap();
        append_durable(&wal, 1..=8, 40);
    }
    let torn = dir.path().join("00000000000000000009.wal");
    fs::write(&torn, b"HRLDWAL").unwrap();
    let wal = Wal::open(dir.path(), small(250)).unwrap();
    assert_eq!(wal.recovered(), &[Recovered::TornSegment { path: torn.clone() }]);
    assert!(!torn.exists());
    append_durable(&wal, [9], 40);
    wal.truncate_after(Some(8)).unwrap();
    drop(wal);
    // An empty (header-only) last segment.
    let segs = segments(dir.path());
    let header = fs::read(&segs[0]).unwrap()[..24].to_vec();
    // A valid header for index 9, from a log that starts there.
    let h9 = {
        let d2 = TempDir::new().unwrap();
        let w2 = Wal::open(d2.path(), Options::default()).unwrap();
        append_durable(&w2, [9], 1);
        drop(w2);
        fs::read(d2.path().join("00000000000000000009.wal")).unwrap()[..24].to_vec()
    };
    assert_ne!(h9, header);
    fs::write(&torn, &h9).unwrap();
    let wal = Wal::open(dir.path(), small(250)).unwrap();
    assert_eq!(wal.recovered(), &[Recovered::EmptySegment { path: torn.clone() }]);
    assert_eq!(wal.last_index(), Some(8));
    drop(wal);
    let mut b = fs::read(&segs[0]).unwrap();
    b[5] ^= 1;
    fs::write(&segs[0], &b).unwrap();
    let e = Wal::open(dir.path(), small(250)).unwrap_err();
    assert!(matches!(&e, WalError::BadHeader { path, .. } if *path == segs[0]), "{e}");
}

/// Meta values: durable and lazy replacement survive a reopen; a damaged
/// meta file is an error naming it; bad and reserved names are refused.
#[test]
fn meta_values() {
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), Options::default()).unwrap();
        assert_eq!(wal.get_meta("vote").unwrap(), None);
        wal.put_meta("vote", b"v1", Durability::Durable).unwrap();
        wal.put_meta("vote", b"v2", Durability::Durable).unwrap();
        wal.put_meta("committed", b"c1", Durability::Lazy).unwrap();
        assert_eq!(wal.get_meta("vote").unwrap(), Some(b"v2".to_vec()));
        assert!(matches!(
            wal.put_meta("purged", b"x", Durability::Durable),
            Err(WalError::BadMetaName(_))
        ));
        assert!(matches!(
            wal.put_meta("../x", b"x", Durability::Durable),
            Err(WalError::BadMetaName(_))
        ));
    }
    // A leftover temporary file of an interrupted write is cleaned up.
    fs::write(dir.path().join("vote.meta.tmp"), b"half").unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    assert!(matches!(wal.recovered(), [Recovered::TempFile { .. }]));
    assert_eq!(wal.get_meta("vote").unwrap(), Some(b"v2".to_vec()));
    assert_eq!(wal.get_meta("committed").unwrap(), Some(b"c1".to_vec()));
    let path = dir.path().join("vote.meta");
    let mut b = fs::read(&path).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    fs::write(&path, &b).unwrap();
    let e = wal.get_meta("vote").unwrap_err();
    assert!(matches!(&e, WalError::BadMeta { path: p, .. } if *p == path), "{e}");
}

/// 16 threads appending concurrently (each waiting for its own durability)
/// all complete successfully, and every record is there after a reopen.
#[test]
fn concurrent_appenders_all_complete_and_survive_reopen() {
    const THREADS: u64 = 16;
    const PER_THREAD: u64 = 40;
    let dir = TempDir::new().unwrap();
    {
        let wal = Wal::open(dir.path(), small(16 << 10)).unwrap();
        // Indices are handed out under a lock, as openraft's single writer does.
        let next = Arc::new(Mutex::new(1u64));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = wal.clone();
                let next = next.clone();
                std::thread::spawn(move || {
                    for k in 0..PER_THREAD {
                        let (tx, rx) = mpsc::channel();
                        {
                            let mut n = next.lock().unwrap();
                            let len = 1 + ((t * 7 + k) % 200) as usize;
                            let recs = vec![(*n, payload(*n, len)), (*n + 1, payload(*n + 1, len))];
                            wal.append(recs, move |r| tx.send(r).unwrap()).unwrap();
                            *n += 2;
                        }
                        rx.recv_timeout(WAIT).unwrap().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let st = wal.stats();
        assert_eq!(st.appends, THREADS * PER_THREAD);
        assert!(st.rounds >= 1 && st.rounds <= st.appends, "{st:?}");
    }
    let wal = Wal::open(dir.path(), small(16 << 10)).unwrap();
    assert!(wal.recovered().is_empty());
    let all = wal.read_range(0..u64::MAX).unwrap();
    assert_eq!(all.len() as u64, THREADS * PER_THREAD * 2);
    for (k, (i, p)) in all.iter().enumerate() {
        assert_eq!(*i, k as u64 + 1);
        assert_eq!(p, &payload(*i, p.len()));
    }
}

/// Group commit, made deterministic by holding the first sync round: no
/// completion runs before its sync has returned, and the 15 appends that
/// queue behind the held round are all covered by exactly one more
/// fdatasync.
#[test]
fn one_sync_per_round_and_completion_after_sync() {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let hook = Arc::new(move || {
        if let Some((entered, release)) = gate.lock().unwrap().take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
    });
    let dir = TempDir::new().unwrap();
    let wal =
        Wal::open(dir.path(), Options { before_sync: Some(hook), ..Options::default() }).unwrap();
    let completed = Arc::new(AtomicU64::new(0));
    let (done_tx, done_rx) = mpsc::channel::<(u64, u64)>();
    let append = |i: u64| {
        let (w, c, tx) = (wal.clone(), completed.clone(), done_tx.clone());
        wal.append([(i, payload(i, 1000))], move |r| {
            r.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            // The syncs that had returned when this completion ran.
            tx.send((i, w.stats().file_syncs)).unwrap();
        })
        .unwrap();
    };
    append(1);
    entered_rx.recv_timeout(WAIT).unwrap();
    // Round 1 is held before its sync: 15 appends queue behind it, from
    // three threads (indices handed out under a lock).
    let next = Mutex::new(2u64);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                for _ in 0..5 {
                    let mut n = next.lock().unwrap();
                    append(*n);
                    *n += 1;
                }
            });
        }
    });
    assert_eq!(wal.stats().file_syncs, 0);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(completed.load(Ordering::SeqCst), 0, "nothing completes before its sync");
    release_tx.send(()).unwrap();
    let mut got = Vec::new();
    for _ in 1..=16 {
        got.push(done_rx.recv_timeout(WAIT).unwrap());
    }
    got.sort();
    assert_eq!(got[0], (1, 1), "entry 1 completes after the first sync");
    for (i, syncs) in &got[1..] {
        assert_eq!(*syncs, 2, "entry {i} completes after the second sync");
    }
    let st = wal.stats();
    assert_eq!((st.rounds, st.file_syncs), (2, 2), "one fdatasync per round: {st:?}");
    assert_eq!(st.dir_syncs, 1, "the new segment's directory entry, once");
    // A sync with nothing new written needs no disk work.
    wal.sync().unwrap();
    assert_eq!(wal.stats().file_syncs, 2);
}

/// Rolling to a new segment syncs the full one first, on the appending
/// thread, even while the sync thread's round is held: a crash can never
/// leave a later segment behind a torn one.
#[test]
fn a_full_segment_is_synced_before_the_next_is_created() {
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new(Some((entered_tx, release_rx)));
    let hook = Arc::new(move || {
        if let Some((entered, release)) = gate.lock().unwrap().take() {
            entered.send(()).unwrap();
            release.recv().unwrap();
        }
    });
    let dir = TempDir::new().unwrap();
    let opts = Options { segment_bytes: 250, before_sync: Some(hook) };
    let wal = Wal::open(dir.path(), opts).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    wal.append((1..=3u64).map(|i| (i, payload(i, 40))), move |r| tx.send(r).unwrap()).unwrap();
    entered_rx.recv_timeout(WAIT).unwrap();
    assert_eq!(wal.stats().file_syncs, 0);
    // Records 4..=6 fill the first segment and roll into a second one.
    wal.append((4..=6u64).map(|i| (i, payload(i, 40))), move |r| tx2.send(r).unwrap()).unwrap();
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(wal.stats().file_syncs, 1, "the full segment, synced by the append itself");
    release_tx.send(()).unwrap();
    rx.recv_timeout(WAIT).unwrap().unwrap();
    rx.recv_timeout(WAIT).unwrap().unwrap();
    check_contents(&wal, 1..=6, 40);
}

/// A log open in one handle cannot be opened by another (two writers would
/// destroy it); once closed, it opens again.
#[test]
fn a_log_has_one_writer() {
    let dir = TempDir::new().unwrap();
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    append_durable(&wal, [1], 10);
    let e = Wal::open(dir.path(), Options::default()).unwrap_err();
    assert!(matches!(&e, WalError::Locked { path } if path == dir.path()), "{e}");
    drop(wal);
    let wal = Wal::open(dir.path(), Options::default()).unwrap();
    assert_eq!(wal.last_index(), Some(1));
}
