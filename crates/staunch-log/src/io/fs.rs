//! The real file system behind the seam: [`FsStorage`] (a broker's tree of directories),
//! [`FsSegmentIo`] (one directory) and their files.
//!
//! # Descriptors
//! A broker with ten thousand partitions must not hold three descriptors per partition. Files
//! are opened through a [`FileCache`], which closes idle, clean ones; a directory holds no
//! descriptor (an fsync of the directory opens it for that moment); and a broker's
//! [`FsStorage::locked`] tree takes one lock file for the whole data directory instead of one
//! per log.
//!
//! # Exclusive use
//! Two processes must never open the same log. A log opened on its own ([`FsSegmentIo::open`])
//! locks `<dir>/.lock`, and also holds a shared lock on the tree lock of any broker data
//! directory it lies in ([`TREE_LOCK`]), so it cannot be opened while a broker runs there and
//! a broker cannot start while it is open. Within a locked tree, exclusive directories are
//! tracked in memory. The kernel releases every lock when the process dies, even by kill -9.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::file_cache::{CachedFile, FileCache, Use};
use super::{SegmentFile, SegmentIo, StorageIo};

/// The lock file of a broker's data directory, held exclusively while a broker runs there.
pub const TREE_LOCK: &str = ".staunch.lock";

/// A broker's storage on the real file system, rooted at one directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    files: Arc<FileCache>,
    /// Set for a locked tree: its lock, and which directories are taken exclusively.
    tree: Option<Arc<TreeLock>>,
}

/// The lock of a whole data directory, and the directories taken within it.
#[derive(Debug)]
struct TreeLock {
    /// Locked exclusively for the lifetime of the storage.
    _file: File,
    held: Mutex<HashSet<PathBuf>>,
}

impl FsStorage {
    /// Storage under `root` (created on first use), with the process-wide [`FileCache`]. A log
    /// directory opened exclusively is locked by its own `.lock` file, as
    /// [`FsSegmentIo::open`] does.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStorage {
            root: root.into(),
            files: FileCache::shared(),
            tree: None,
        }
    }

    /// Storage under `root` for a broker: creates `root`, locks it as a whole ([`TREE_LOCK`];
    /// fails with `ResourceBusy` while another process holds it, or a log in it is open on its
    /// own) and opens files through `files`. Exclusive directories cost no descriptor.
    pub fn locked(root: impl Into<PathBuf>, files: Arc<FileCache>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(TREE_LOCK))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "data directory {} is in use by another process (a broker, or a \
                         `staunch log` command on one of its logs)",
                        root.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        Ok(FsStorage {
            root,
            files,
            tree: Some(Arc::new(TreeLock {
                _file: file,
                held: Mutex::new(HashSet::new()),
            })),
        })
    }

    /// The cache its files are opened through.
    pub fn file_cache(&self) -> &Arc<FileCache> {
        &self.files
    }

    fn path(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl StorageIo for FsStorage {
    fn open_dir(&self, path: &str, exclusive: bool) -> io::Result<Arc<dyn SegmentIo>> {
        let dir = self.path(path);
        let io = match (&self.tree, exclusive) {
            (Some(tree), true) => {
                fs::create_dir_all(&dir)?;
                let mut held = tree.held.lock().unwrap_or_else(|p| p.into_inner());
                if !held.insert(dir.clone()) {
                    return Err(busy(&dir));
                }
                FsSegmentIo {
                    dir,
                    files: self.files.clone(),
                    lock: Mutex::new(Some(DirLock::InTree(tree.clone()))),
                }
            }
            (None, true) => FsSegmentIo::open_with(dir, self.files.clone())?,
            (_, false) => FsSegmentIo::open_shared_with(dir, self.files.clone())?,
        };
        Ok(Arc::new(io))
    }

    fn create_dir_all(&self, path: &str) -> io::Result<()> {
        fs::create_dir_all(self.path(path))
    }

    fn list_dirs(&self, path: &str) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.path(path))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(names)
    }

    fn rename_dir(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        let from = self.path(from);
        if !fs::symlink_metadata(&from)?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file", from.display()),
            ));
        }
        fs::rename(from, self.path(to))
    }

    fn remove_dir_all(&self, path: &str) -> io::Result<()> {
        match fs::remove_dir_all(self.path(path)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        File::open(self.path(path))?.sync_all()
    }

    fn describe(&self, path: &str) -> String {
        self.path(path).display().to_string()
    }
}

fn busy(dir: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::ResourceBusy,
        format!(
            "log directory {} is in use by another process",
            dir.display()
        ),
    )
}

/// A log directory on the real file system. Exclusive use is held as the module docs say, for
/// the lifetime of the value or until [`SegmentIo::release`].
#[derive(Debug)]
pub struct FsSegmentIo {
    dir: PathBuf,
    files: Arc<FileCache>,
    /// How the directory is held; `None` once released (or for a shared directory).
    lock: Mutex<Option<DirLock>>,
}

/// How a log directory is held exclusively.
#[derive(Debug)]
enum DirLock {
    /// On its own: `<dir>/.lock`, and shared locks on the tree locks of data directories
    /// above it.
    Files { _own: File, _trees: Vec<File> },
    /// Within a locked tree, which holds the only lock file.
    InTree(Arc<TreeLock>),
}

impl FsSegmentIo {
    /// Opens (creating if needed) the directory `dir` and locks it; files are opened through
    /// the process-wide [`FileCache`].
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_with(dir.as_ref().to_path_buf(), FileCache::shared())
    }

    fn open_with(dir: PathBuf, files: Arc<FileCache>) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        let own = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        match own.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(busy(&dir)),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let trees = lock_enclosing_trees(&dir)?;
        Ok(Self {
            dir,
            files,
            lock: Mutex::new(Some(DirLock::Files {
                _own: own,
                _trees: trees,
            })),
        })
    }

    /// Opens (creating if needed) the directory `dir` without locking it: for a directory
    /// of small files several owners share (the broker's root), not for a log.
    pub fn open_shared(dir: impl AsRef<Path>) -> io::Result<Self> {
        Self::open_shared_with(dir.as_ref().to_path_buf(), FileCache::shared())
    }

    fn open_shared_with(dir: PathBuf, files: Arc<FileCache>) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Self {
            dir,
            files,
            lock: Mutex::new(None),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Shared locks on the [`TREE_LOCK`] of every data directory enclosing `dir`: fails with
/// `ResourceBusy` if a broker holds one.
fn lock_enclosing_trees(dir: &Path) -> io::Result<Vec<File>> {
    let dir = fs::canonicalize(dir)?;
    let mut held = Vec::new();
    for ancestor in dir.ancestors().skip(1) {
        let path = ancestor.join(TREE_LOCK);
        let file = match OpenOptions::new().read(true).open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            // An unreadable lock elsewhere is not ours to judge.
            Err(_) => continue,
        };
        match file.try_lock_shared() {
            Ok(()) => held.push(file),
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "log directory {} is in the data directory {}, which a running broker \
                         holds",
                        dir.display(),
                        ancestor.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
    }
    Ok(held)
}

/// One file, its descriptor held by a [`FileCache`].
#[derive(Debug)]
struct FsFile(Arc<CachedFile>);

impl SegmentFile for FsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.descriptor(Use::Read)?.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.descriptor(Use::Read)?.read_at(buf, pos)
    }
    /// `preadv2` with `RWF_NOWAIT` (Linux 4.14+): `EAGAIN` where the page cache does not
    /// hold the bytes. On an older kernel, or a file system that does not support it, the
    /// error sends the caller to [`SegmentFile::read_at`]. (rustix offers `preadv2` on Linux
    /// only: the log builds on Linux, the one platform it is tested on.)
    fn read_cached_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let file = self.0.descriptor(Use::Read)?;
        let mut slices = [io::IoSliceMut::new(buf)];
        rustix::io::preadv2(&*file, &mut slices, pos, rustix::io::ReadWriteFlags::NOWAIT)
            .map_err(io::Error::from)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.0.write(|file| file.write_at(buf, pos))
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.write(|file| file.set_len(len))
    }
    fn preallocate(&self, len: u64) -> io::Result<()> {
        self.0.write(|file| {
            let current = file.metadata()?.len();
            if len <= current {
                return Ok(());
            }
            rustix::fs::fallocate(
                file,
                rustix::fs::FallocateFlags::empty(),
                current,
                len - current,
            )
            .map_err(io::Error::from)
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl SegmentIo for FsSegmentIo {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let file = self.files.open(&self.dir.join(name), create)?;
        Ok(Arc::new(FsFile(file)))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }

    /// Opens the directory for the moment of its fsync: a directory holds no descriptor.
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn release(&self) -> io::Result<()> {
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        match lock {
            Some(DirLock::Files { _own, _trees }) => _own.unlock(),
            Some(DirLock::InTree(tree)) => {
                tree.held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&self.dir);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for FsSegmentIo {
    fn drop(&mut self) {
        // A directory in a locked tree is free again once its log is gone, released or not.
        if let Some(DirLock::InTree(tree)) = self
            .lock
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            tree.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_locked_tree_refuses_a_second_broker_and_a_log_opened_on_its_own() {
        let root = tempfile::tempdir().unwrap();
        let storage = FsStorage::locked(root.path(), FileCache::new(8)).unwrap();
        let log = storage.open_dir("topics/t/0", true).unwrap();
        let again = storage.open_dir("topics/t/0", true).unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::ResourceBusy);
        let second = FsStorage::locked(root.path(), FileCache::new(8)).unwrap_err();
        assert_eq!(second.kind(), io::ErrorKind::ResourceBusy);
        let alone = FsSegmentIo::open(root.path().join("topics/t/1")).unwrap_err();
        assert_eq!(alone.kind(), io::ErrorKind::ResourceBusy, "{alone}");
        log.release().unwrap();
        storage.open_dir("topics/t/0", true).unwrap();
        drop(storage);
        let alone = FsSegmentIo::open(root.path().join("topics/t/1")).unwrap();
        let broker = FsStorage::locked(root.path(), FileCache::new(8)).unwrap_err();
        assert_eq!(broker.kind(), io::ErrorKind::ResourceBusy, "{broker}");
        drop(alone);
        FsStorage::locked(root.path(), FileCache::new(8)).unwrap();
    }

    #[test]
    fn a_locked_tree_holds_one_descriptor_however_many_logs_it_opens() {
        let root = tempfile::tempdir().unwrap();
        let storage = FsStorage::locked(root.path(), FileCache::new(4)).unwrap();
        let mut dirs = Vec::new();
        for p in 0..50 {
            let dir = storage.open_dir(&format!("t/{p}"), true).unwrap();
            let file = dir.open("00000000000000000000.log", true).unwrap();
            file.write_at(b"x", 0).unwrap();
            file.sync_data().unwrap();
            dir.sync_dir().unwrap();
            dirs.push((dir, file));
        }
        let held = descriptors_under(root.path());
        // The tree lock and at most the cache's four files.
        assert!(held <= 5, "{held} descriptors for 50 logs");
        for (_, file) in &dirs {
            let mut b = [0u8; 1];
            file.read_at(&mut b, 0).unwrap();
            assert_eq!(&b, b"x");
        }
    }

    /// Descriptors of this process open on something under `root` (other tests run in
    /// parallel threads of the same process, so a total count would not do).
    fn descriptors_under(root: &Path) -> usize {
        let root = fs::canonicalize(root).unwrap();
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.starts_with(&root))
            .count()
    }
}
