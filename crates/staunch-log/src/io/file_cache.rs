//! A bounded number of open file descriptors for many files: [`FileCache`].
//!
//! A broker with ten thousand partitions has at least ten thousand segment files, more than a
//! process may usually hold open. Each [`CachedFile`] keeps its path and opens a descriptor on
//! demand; the cache closes descriptors of files that were not used lately once more than
//! its capacity are open (the "clock" or second-chance algorithm: every use sets a flag, the
//! sweeping hand clears it, and closes a file whose flag is already clear).
//!
//! # Never losing an fsync error
//! Linux reports a failed write-back only to descriptors that were open when it failed: a
//! descriptor opened afterwards, whose `fdatasync` then succeeds, would hide it (the
//! "fsyncgate" problem). So the cache closes only *clean* files: every write, length change and
//! reservation through the handle was followed by a successful `fdatasync`. A file with
//! unsynced writes keeps its descriptor, even past the capacity (a soft bound: under flush
//! `always` files are clean as soon as their appends are acknowledged).
//!
//! # Names
//! A closed descriptor is reopened by the file's name: a file must not be renamed while a
//! handle to it is used. A reopen that finds the file removed fails with `NotFound` (the log's
//! read path takes that as the segment having been deleted by retention meanwhile).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The capacity of the process-wide cache [`FileCache::shared`] (open segment files).
pub const DEFAULT_OPEN_FILES: usize = 4096;

/// Bounds how many files of a broker (or process) hold an open descriptor; see the module docs.
#[derive(Debug)]
pub struct FileCache {
    capacity: usize,
    /// Descriptors open now.
    open: AtomicUsize,
    /// The last sweep closed nothing (every open file was dirty or in use): sweeps are
    /// skipped until a file becomes clean or closes, instead of walking every file at each
    /// use.
    futile: AtomicBool,
    sweep: Mutex<Sweep>,
}

/// The files known to the cache and the clock hand.
#[derive(Debug, Default)]
struct Sweep {
    files: Vec<Weak<CachedFile>>,
    hand: usize,
    /// When `files` reaches this length, entries of dropped files are removed (so the list
    /// stays within twice the live files, whether or not the cache ever sweeps).
    compact_at: usize,
}

impl FileCache {
    /// A cache that keeps at most about `capacity` descriptors open (at least 1; files with
    /// unsynced writes are never closed, so it may briefly hold more).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(FileCache {
            capacity: capacity.max(1),
            open: AtomicUsize::new(0),
            futile: AtomicBool::new(false),
            sweep: Mutex::new(Sweep::default()),
        })
    }

    /// The process-wide cache of [`DEFAULT_OPEN_FILES`], used by logs opened without one.
    pub fn shared() -> Arc<Self> {
        static SHARED: OnceLock<Arc<FileCache>> = OnceLock::new();
        SHARED
            .get_or_init(|| FileCache::new(DEFAULT_OPEN_FILES))
            .clone()
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Descriptors open now.
    pub fn open_now(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Opens `path` (read and write, creating it if `create`), as a handle whose descriptor the
    /// cache may close while it is idle and clean. Fails as `open(2)` does; when the process
    /// is out of descriptors, closes idle ones and tries once more, then fails with a message
    /// naming the limit.
    pub fn open(self: &Arc<Self>, path: &Path, create: bool) -> io::Result<Arc<CachedFile>> {
        let file = self.open_descriptor(path, create)?;
        let cached = Arc::new(CachedFile {
            path: path.to_owned(),
            cache: self.clone(),
            slot: Mutex::new(Some(Arc::new(file))),
            referenced: AtomicBool::new(true),
            writes_started: AtomicU64::new(0),
            writes_done: AtomicU64::new(0),
            synced: AtomicU64::new(0),
        });
        {
            let mut sweep = self.lock_sweep();
            sweep.files.push(Arc::downgrade(&cached));
            if sweep.files.len() >= sweep.compact_at {
                sweep.files.retain(|f| f.strong_count() > 0);
                sweep.compact_at = (sweep.files.len() * 2).max(1024);
                sweep.hand = 0;
            }
        }
        self.make_room(self.capacity);
        Ok(cached)
    }

    fn lock_sweep(&self) -> std::sync::MutexGuard<'_, Sweep> {
        self.sweep.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `open(2)`, counted; on EMFILE / ENFILE closes idle descriptors (down to half the
    /// half of those open now) and tries once more.
    fn open_descriptor(&self, path: &Path, create: bool) -> io::Result<File> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(create)
                .truncate(false)
                .open(path)
        };
        let file = match open() {
            Err(e) if out_of_descriptors(&e) => {
                self.futile.store(false, Ordering::Relaxed);
                self.make_room(self.open_now() / 2);
                open().map_err(|e| {
                    if out_of_descriptors(&e) {
                        io::Error::new(
                            e.kind(),
                            format!(
                                "{e}: the process's open-files limit is reached with {} \
                                 segment files open; raise the limit (`ulimit -n`, systemd \
                                 LimitNOFILE) or lower the broker's max_open_files",
                                self.open_now()
                            ),
                        )
                    } else {
                        e
                    }
                })?
            }
            other => other?,
        };
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(file)
    }

    /// Closes idle, clean descriptors until at most `target` are open, or every file was
    /// looked at twice (the rest are in use, dirty or recently used).
    fn make_room(&self, target: usize) {
        if self.open_now() <= target || self.futile.load(Ordering::Relaxed) {
            return;
        }
        let mut sweep = self.lock_sweep();
        let mut budget = sweep.files.len() * 2;
        let mut closed = false;
        while self.open_now() > target && budget > 0 && !sweep.files.is_empty() {
            budget -= 1;
            if sweep.hand >= sweep.files.len() {
                sweep.hand = 0;
            }
            let hand = sweep.hand;
            let Some(file) = sweep.files[hand].upgrade() else {
                sweep.files.swap_remove(hand);
                continue;
            };
            sweep.hand += 1;
            if file.referenced.swap(false, Ordering::Relaxed) {
                continue; // used since the hand last passed: a second chance
            }
            closed |= file.close_if_clean();
        }
        if !closed && self.open_now() > target {
            self.futile.store(true, Ordering::Relaxed);
        }
    }
}

/// Whether `e` means the process or system has no descriptor to spare.
fn out_of_descriptors(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::MFILE.raw_os_error())
        || code == Some(rustix::io::Errno::NFILE.raw_os_error())
}

/// One file of a [`FileCache`]: its descriptor is opened on demand and may be closed by the
/// cache while the file is idle and clean.
#[derive(Debug)]
pub struct CachedFile {
    path: PathBuf,
    cache: Arc<FileCache>,
    /// The open descriptor, if any. Writes are started under this lock, so the cache never
    /// closes a descriptor a write is about to use.
    slot: Mutex<Option<Arc<File>>>,
    /// Used since the clock hand last passed.
    referenced: AtomicBool,
    /// Writes, length changes and reservations started through this handle.
    writes_started: AtomicU64,
    /// Of those, how many have returned (successfully or not).
    writes_done: AtomicU64,
    /// How many of the returned ones a successful `fdatasync` started after them covered.
    /// The file is clean when this reaches `writes_started`: nothing in progress, nothing
    /// unsynced.
    synced: AtomicU64,
}

/// What a descriptor is wanted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// Reading, or metadata.
    Read,
    /// Changing the file's bytes or length: it stays open until an fsync covers this.
    Write,
}

impl CachedFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A descriptor for `purpose`, reopened if the cache closed it. For [`Use::Write`] a
    /// write counts as started (the file is dirty from here); the caller must report it done
    /// ([`CachedFile::write`] does both).
    pub(crate) fn descriptor(&self, purpose: Use) -> io::Result<Arc<File>> {
        self.referenced.store(true, Ordering::Relaxed);
        let mut slot = self.lock_slot();
        let file = match &*slot {
            Some(file) => file.clone(),
            None => {
                // Reopened clean: the cache closes only clean descriptors, and a removed
                // file is not recreated.
                let file = Arc::new(self.cache.open_descriptor(&self.path, false)?);
                *slot = Some(file.clone());
                file
            }
        };
        if purpose == Use::Write {
            self.writes_started.fetch_add(1, Ordering::AcqRel);
        }
        drop(slot);
        self.cache.make_room(self.cache.capacity);
        Ok(file)
    }

    /// Runs `change` (a write, a length change, a reservation) on the descriptor; the file
    /// stays dirty — its descriptor open — until an `fdatasync` started after `change`
    /// returned succeeds.
    pub(crate) fn write<R>(&self, change: impl FnOnce(&File) -> io::Result<R>) -> io::Result<R> {
        let file = self.descriptor(Use::Write)?;
        let result = change(&file);
        self.writes_done.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// `fdatasync`; on success every write that had returned before it started is durable,
    /// and if no other is started or unsynced the file is clean (the cache may close its
    /// descriptor).
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        let file = self.descriptor(Use::Read)?;
        let covered = self.writes_done.load(Ordering::Acquire);
        file.sync_data()?;
        self.synced.fetch_max(covered, Ordering::AcqRel);
        if self.is_clean() {
            self.cache.futile.store(false, Ordering::Relaxed);
        }
        Ok(())
    }

    fn is_clean(&self) -> bool {
        self.synced.load(Ordering::Acquire) >= self.writes_started.load(Ordering::Acquire)
    }

    fn lock_slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<File>>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the descriptor if every write returned and was synced; never waits for a busy
    /// handle. Returns whether it closed one.
    fn close_if_clean(&self) -> bool {
        let Ok(mut slot) = self.slot.try_lock() else {
            return false;
        };
        // Under the slot lock no write can start meanwhile.
        if self.is_clean() && slot.take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the descriptor is open now (for tests and diagnostics).
    pub fn is_open(&self) -> bool {
        self.lock_slot().is_some()
    }
}

impl Drop for CachedFile {
    fn drop(&mut self) {
        let slot = self.slot.get_mut().unwrap_or_else(|p| p.into_inner());
        if slot.take().is_some() {
            self.cache.open.fetch_sub(1, Ordering::Relaxed);
            self.cache.futile.store(false, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn write(file: &CachedFile, bytes: &[u8], pos: u64) {
        file.write(|f| f.write_all_at(bytes, pos)).unwrap();
    }

    fn read(file: &CachedFile, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        file.descriptor(Use::Read)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        buf
    }

    #[test]
    fn clean_idle_files_are_closed_and_reopened_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(4);
        let files: Vec<_> = (0..20)
            .map(|i| {
                let f = cache.open(&dir.path().join(format!("f{i}")), true).unwrap();
                write(&f, format!("file {i:02}").as_bytes(), 0);
                f.sync_data().unwrap();
                f
            })
            .collect();
        assert!(cache.open_now() <= 4, "{} open", cache.open_now());
        for (i, f) in files.iter().enumerate() {
            assert_eq!(read(f, 7), format!("file {i:02}").as_bytes());
        }
        assert!(cache.open_now() <= 4, "{} open", cache.open_now());
        drop(files);
        assert_eq!(cache.open_now(), 0);
    }

    #[test]
    fn a_file_with_unsynced_writes_keeps_its_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(2);
        let dirty = cache.open(&dir.path().join("dirty"), true).unwrap();
        write(&dirty, b"not yet synced", 0);
        let others: Vec<_> = (0..10)
            .map(|i| {
                let f = cache.open(&dir.path().join(format!("f{i}")), true).unwrap();
                f.sync_data().unwrap();
                f
            })
            .collect();
        assert!(dirty.is_open(), "a dirty file's descriptor was closed");
        dirty.sync_data().unwrap();
        for f in &others {
            read(f, 0);
        }
        for f in &others {
            read(f, 0);
        }
        assert!(
            !dirty.is_open(),
            "a clean idle file stayed open past the capacity"
        );
        assert!(cache.open_now() <= 2);
    }

    /// A write that has started but not returned keeps the file dirty through an fsync that
    /// ran meanwhile (its bytes may land after that fsync).
    #[test]
    fn a_write_in_progress_keeps_the_descriptor_through_a_concurrent_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(1);
        let busy = cache.open(&dir.path().join("busy"), true).unwrap();
        let in_progress = busy.descriptor(Use::Write).unwrap();
        busy.sync_data().unwrap();
        let others: Vec<_> = (0..4)
            .map(|i| {
                let f = cache.open(&dir.path().join(format!("f{i}")), true).unwrap();
                f.sync_data().unwrap();
                f
            })
            .collect();
        for f in others.iter().chain(others.iter()) {
            read(f, 0);
        }
        assert!(busy.is_open(), "closed while a write was in progress");
        // The write returns; an fsync after it makes the file clean.
        in_progress.write_all_at(b"late", 0).unwrap();
        busy.writes_done.fetch_add(1, Ordering::AcqRel);
        assert!(!busy.is_clean());
        busy.sync_data().unwrap();
        assert!(busy.is_clean());
    }

    /// Dropped files leave the sweep's list even when the cache never has to sweep.
    #[test]
    fn dropped_files_do_not_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(10_000);
        let path = dir.path().join("again");
        for _ in 0..5_000 {
            drop(cache.open(&path, true).unwrap());
        }
        assert!(cache.lock_sweep().files.len() <= 1_024);
        assert_eq!(cache.open_now(), 0);
    }

    #[test]
    fn a_removed_file_is_not_recreated_by_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FileCache::new(1);
        let gone = cache.open(&dir.path().join("gone"), true).unwrap();
        gone.sync_data().unwrap();
        let _other = cache.open(&dir.path().join("other"), true).unwrap();
        let _third = cache.open(&dir.path().join("third"), true).unwrap();
        assert!(!gone.is_open());
        std::fs::remove_file(dir.path().join("gone")).unwrap();
        let e = gone.descriptor(Use::Read).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(!dir.path().join("gone").exists());
    }
}
