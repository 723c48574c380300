//! The page a worker shares with its parent: the input being run, the runs
//! done, and why the worker is dying. It is a file mapped `MAP_SHARED`, so
//! what the worker wrote survives it however it ends (abort, stack
//! overflow, kill on timeout) and the parent reads it with plain file I/O.
//!
//! Layout (native-endian u64s): runs, status, detail, peak, input length, then
//! [`MAX_INPUT_BYTES`] of input.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use crate::mutate::MAX_INPUT_BYTES;

/// Nothing went wrong (yet).
pub const STATUS_OK: u64 = 0;
/// The target panicked on the input.
pub const STATUS_PANIC: u64 = 1;
/// An allocation of the run was refused; `detail` is the bytes it asked for.
pub const STATUS_OVER_CAP: u64 = 2;

const HEADER_BYTES: usize = 40;
/// Size of the shared file.
pub const FILE_BYTES: usize = HEADER_BYTES + MAX_INPUT_BYTES;

#[repr(C)]
pub struct Shared {
    runs: AtomicU64,
    status: AtomicU64,
    detail: AtomicU64,
    /// Most bytes one run held at once.
    peak: AtomicU64,
    len: AtomicU64,
    data: UnsafeCell<[u8; MAX_INPUT_BYTES]>,
}

// SAFETY: `data` is written by the fuzzing thread only (`set_input`) and
// read only by the parent process after the worker stopped.
unsafe impl Sync for Shared {}

const _: () = assert!(std::mem::size_of::<Shared>() == FILE_BYTES);

static CURRENT: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());

/// Creates (or empties) the shared file at `path` (parent side).
pub fn create(path: &Path) -> io::Result<File> {
    let f = File::options().read(true).write(true).create(true).truncate(true).open(path)?;
    f.set_len(FILE_BYTES as u64)?;
    Ok(f)
}

/// Maps the shared file for the rest of this process (worker side) and
/// makes it the page [`note_over_cap`] writes to.
pub fn attach(path: &Path) -> io::Result<&'static Shared> {
    let f = File::options().read(true).write(true).open(path)?;
    if f.metadata()?.len() != FILE_BYTES as u64 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "shared file of the wrong size"));
    }
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh shared mapping of a file of exactly FILE_BYTES; it is
    // never unmapped, so the reference is valid for the process's life.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            FILE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let shared = p.cast::<Shared>();
    CURRENT.store(shared, Ordering::SeqCst);
    // SAFETY: see above; all fields are atomics or bytes, valid for any content.
    Ok(unsafe { &*shared })
}

impl Shared {
    /// Records the input about to run.
    pub fn set_input(&self, input: &[u8]) {
        let n = input.len().min(MAX_INPUT_BYTES);
        // SAFETY: only the fuzzing thread writes `data` (see `Sync` above).
        unsafe { std::ptr::copy_nonoverlapping(input.as_ptr(), self.data.get().cast::<u8>(), n) };
        self.len.store(n as u64, Ordering::Release);
    }

    pub fn set_status(&self, status: u64, detail: u64) {
        self.detail.store(detail, Ordering::Relaxed);
        self.status.store(status, Ordering::Release);
    }

    pub fn status(&self) -> u64 {
        self.status.load(Ordering::Acquire)
    }

    pub fn note_peak(&self, bytes: u64) {
        self.peak.fetch_max(bytes, Ordering::Relaxed);
    }

    pub fn add_run(&self) {
        self.runs.fetch_add(1, Ordering::Release);
    }
}

/// Notes a refused allocation of `bytes` in this worker's page, if it has one.
pub fn note_over_cap(bytes: u64) {
    let p = CURRENT.load(Ordering::Relaxed);
    if !p.is_null() {
        // SAFETY: `p` came from `attach` and stays mapped.
        unsafe { &*p }.set_status(STATUS_OVER_CAP, bytes);
    }
}

/// What a worker left in its page (parent side).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub runs: u64,
    pub status: u64,
    pub detail: u64,
    pub peak: u64,
    pub input: Vec<u8>,
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_ne_bytes(b[i..i + 8].try_into().expect("8 bytes"))
}

/// Runs done so far by the worker of `file`.
pub fn runs(file: &File) -> io::Result<u64> {
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, 0)?;
    Ok(u64::from_ne_bytes(b))
}

/// Reads the whole page.
pub fn read(file: &File) -> io::Result<Report> {
    let mut b = vec![0u8; FILE_BYTES];
    file.read_exact_at(&mut b, 0)?;
    let len = (u64_at(&b, 32) as usize).min(MAX_INPUT_BYTES);
    Ok(Report {
        runs: u64_at(&b, 0),
        status: u64_at(&b, 8),
        detail: u64_at(&b, 16),
        peak: u64_at(&b, 24),
        input: b[HEADER_BYTES..HEADER_BYTES + len].to_vec(),
    })
}
