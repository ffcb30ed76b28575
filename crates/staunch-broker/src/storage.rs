//! The broker's one seam to the disk and the clock: every file it writes (partition logs,
//! committed offsets, producer ids, topic metadata, the cluster id) goes through one
//! [`StorageIo`], and every time it reads through one [`Clock`]. The real broker uses the file
//! system under its data directory and the system clock; a test can hand in
//! `staunch_testkit::FaultyIo` (power cuts, bit flips, failing disks) and a manual clock. The
//! logs it opens share one [`BackgroundPool`] (the broker sets its own, sized by
//! `BrokerConfig::background_threads`).

use std::io;
use std::sync::Arc;

use staunch_core::{Clock, SystemClock};
use staunch_log::io::FileCache;
use staunch_log::{BackgroundPool, FileLog, FsStorage, LogConfig, LogError, SegmentIo, StorageIo};

/// Where the broker keeps its files and how it tells the time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    io: Arc<dyn StorageIo>,
    clock: Arc<dyn Clock>,
    pool: BackgroundPool,
}

impl Storage {
    /// `io` for every file, `clock` for every timestamp and retention decision; logs do their
    /// background work on the process-wide pool until [`Storage::with_pool`] says otherwise.
    pub fn new(io: Arc<dyn StorageIo>, clock: Arc<dyn Clock>) -> Self {
        Storage {
            io,
            clock,
            pool: BackgroundPool::process_default().clone(),
        }
    }

    /// This storage, with the logs it opens from now on doing their background work (and
    /// taking zero-fill budget) on `pool`.
    pub fn with_pool(self, pool: BackgroundPool) -> Self {
        Storage { pool, ..self }
    }

    /// The pool the logs opened here do their background work on.
    pub fn pool(&self) -> &BackgroundPool {
        &self.pool
    }

    /// The file system under `root` and the system clock; each log directory is locked on its
    /// own and files are opened through the process-wide file cache.
    pub fn fs(root: impl Into<std::path::PathBuf>) -> Self {
        Storage::new(Arc::new(FsStorage::new(root)), Arc::new(SystemClock))
    }

    /// The file system under `root`, locked as a whole for this broker (one lock file, not one
    /// per partition; fails while another process uses it), with at most about
    /// `max_open_files` segment files open at once, and the system clock.
    pub fn fs_locked(
        root: impl Into<std::path::PathBuf>,
        max_open_files: usize,
    ) -> io::Result<Self> {
        let io = FsStorage::locked(root, FileCache::new(max_open_files))?;
        Ok(Storage::new(Arc::new(io), Arc::new(SystemClock)))
    }

    /// The directory tree.
    pub fn io(&self) -> &dyn StorageIo {
        &*self.io
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Milliseconds since the epoch by the broker's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Opens (recovering) the log in directory `path`, taking the directory for itself.
    pub fn open_log(&self, path: &str, config: LogConfig) -> Result<FileLog, LogError> {
        let dir = self
            .io
            .open_dir(path, true)
            .map_err(|source| LogError::Io {
                op: format!("opening log directory {}", self.io.describe(path)),
                source,
            })?;
        FileLog::open_with_pool(dir, config, self.clock.clone(), &self.pool)
    }

    /// The small files of directory `path` (created if missing), shared with other owners.
    pub fn files(&self, path: &str) -> io::Result<Arc<dyn SegmentIo>> {
        self.io.open_dir(path, false)
    }

    /// Where `path` is, for messages.
    pub fn describe(&self, path: &str) -> String {
        self.io.describe(path)
    }
}
