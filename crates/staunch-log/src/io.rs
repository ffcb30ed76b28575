//! The narrow, synchronous seam between the log and the file system.
//!
//! Everything the log does to bytes on disk goes through [`SegmentIo`] (a directory) and
//! [`SegmentFile`] (one file). The real implementation is [`FsSegmentIo`]; `staunch-testkit`
//! provides one that keeps "written" and "durable" bytes apart, so tests can crash the log at any
//! point, tear writes, flip bits, fail an fsync or fill the disk. The traits are sync and return
//! plain `io::Error`: the log adds the context.

use std::fmt::Debug;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of a log directory.
pub trait SegmentFile: Send + Sync + Debug {
    /// Current length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads into `buf` from byte `pos`; returns the bytes read (0 at end of file).
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize>;
    /// Like [`SegmentFile::read_at`], but only bytes already in memory (the page cache):
    /// fails with [`io::ErrorKind::WouldBlock`] instead of waiting for the disk, and may read
    /// fewer bytes than are there. Lets an async caller serve hot reads without a hop to a
    /// blocking thread. The default reads nothing (always `WouldBlock`).
    fn read_cached_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let _ = (buf, pos);
        Err(io::ErrorKind::WouldBlock.into())
    }
    /// Writes `buf` at byte `pos`; returns the bytes written, which may be fewer than asked.
    /// Written bytes are readable at once and durable only after [`SegmentFile::sync_data`].
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize>;
    /// Truncates or extends the file. Durable only after [`SegmentFile::sync_data`].
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk blocks so the file is at least `len` bytes long, reading as zeros past the
    /// old end (`fallocate`). Writing into reserved blocks makes `fdatasync` cheaper than
    /// growing the file. Durable only after [`SegmentFile::sync_data`].
    fn preallocate(&self, len: u64) -> io::Result<()>;
    /// Makes every write and length change so far durable (`fdatasync`). An error means the
    /// state on disk is unknown; callers must not retry and assume success.
    fn sync_data(&self) -> io::Result<()>;
}

/// A directory of log files.
pub trait SegmentIo: Send + Sync + Debug {
    /// Opens `name`, creating it empty if `create` is set and it does not exist. A newly
    /// created name is durable only after [`SegmentIo::sync_dir`].
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>>;
    /// Names of the files in the directory.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Removes `name`; durable after [`SegmentIo::sync_dir`].
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically replaces `to` with `from`; durable after [`SegmentIo::sync_dir`].
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, removals and renames durable (fsync of the directory).
    fn sync_dir(&self) -> io::Result<()>;
    /// Gives up exclusive use of the directory, so it can be opened again (by this process or
    /// another) while stale handles to the closed log still exist. Called by `close` once
    /// nothing more will be written.
    fn release(&self) -> io::Result<()>;
}

/// Everything one broker stores: a tree of directories under one root, each opened as a
/// [`SegmentIo`]. Paths are relative to the root, with `/` between names (`""` is the root).
///
/// Creating, renaming or removing a directory is durable only after [`StorageIo::sync_dir`] of
/// the directory holding it, as for files (ext4's rule). The real implementation is
/// [`FsStorage`]; `staunch-testkit`'s `FaultyIo` keeps live and durable state of the whole tree
/// apart, so a test can cut the power of every file at once.
pub trait StorageIo: Send + Sync + Debug {
    /// Opens directory `path`, creating it (and missing parents) if needed. With `exclusive`,
    /// no other opener (in this process or another) may hold it until
    /// [`SegmentIo::release`]: a log takes its directory this way.
    fn open_dir(&self, path: &str, exclusive: bool) -> io::Result<Arc<dyn SegmentIo>>;
    /// Creates directory `path` and any missing parents; succeeds if it exists.
    fn create_dir_all(&self, path: &str) -> io::Result<()>;
    /// Names of the directories directly in `path`.
    fn list_dirs(&self, path: &str) -> io::Result<Vec<String>>;
    /// Renames directory `from` to `to` (which must not exist).
    fn rename_dir(&self, from: &str, to: &str) -> io::Result<()>;
    /// Renames file `from` to `to`, which may be in another directory of the tree (replacing
    /// a file there). Durable only after [`StorageIo::sync_dir`] of both directories.
    fn rename_file(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `path` and everything under it; succeeds if it does not exist.
    fn remove_dir_all(&self, path: &str) -> io::Result<()>;
    /// Makes creations, renames and removals of entries directly in `path` durable.
    fn sync_dir(&self, path: &str) -> io::Result<()>;
    /// Where `path` is, for messages (the real path on disk).
    fn describe(&self, path: &str) -> String;
}

/// Joins two relative storage paths with `/`.
pub fn join_path(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (true, _) => child.to_owned(),
        (_, true) => parent.to_owned(),
        _ => format!("{parent}/{child}"),
    }
}

/// A broker's storage on the real file system, rooted at one directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
}

impl FsStorage {
    /// Storage under `root` (created on first use).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsStorage { root: root.into() }
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
        if exclusive {
            Ok(Arc::new(FsSegmentIo::open(dir)?))
        } else {
            Ok(Arc::new(FsSegmentIo::open_shared(dir)?))
        }
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

/// Writes `bytes` fully at `pos`, looping over short writes. On error some prefix may have been
/// written.
pub(crate) fn write_all_at(
    file: &dyn SegmentFile,
    mut bytes: &[u8],
    mut pos: u64,
) -> io::Result<()> {
    while !bytes.is_empty() {
        match file.write_at(bytes, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "write returned 0 bytes",
                ));
            }
            Ok(n) => {
                bytes = &bytes[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `pos`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at(
    file: &dyn SegmentFile,
    mut buf: &mut [u8],
    mut pos: u64,
) -> io::Result<()> {
    while !buf.is_empty() {
        match file.read_at(buf, pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file ends early",
                ));
            }
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Where a read may take its bytes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadFrom {
    /// The disk if need be (the caller may block).
    Disk,
    /// Only memory: give up rather than wait for the disk.
    Cache,
}

/// Reads exactly `buf.len()` bytes at `pos` as [`read_exact_at`] does; from
/// [`ReadFrom::Cache`], returns `Ok(false)` instead if that would wait for the disk (or the
/// file cannot say, or ends early: any error there is left to a read from the disk to
/// report).
pub(crate) fn read_exact_from(
    file: &dyn SegmentFile,
    mut buf: &mut [u8],
    mut pos: u64,
    from: ReadFrom,
) -> io::Result<bool> {
    if from == ReadFrom::Disk {
        return read_exact_at(file, buf, pos).map(|()| true);
    }
    while !buf.is_empty() {
        match file.read_cached_at(buf, pos) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                buf = &mut buf[n..];
                pos += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// Replaces `name` with `bytes` atomically and durably: write a temporary file, fsync it,
/// rename it over `name`, fsync the directory.
pub fn replace_file(io: &dyn SegmentIo, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let file = io.open(&tmp, true)?;
    file.set_len(0)?;
    write_all_at(&*file, bytes, 0)?;
    file.sync_data()?;
    io.rename(&tmp, name)?;
    io.sync_dir()
}

/// Reads a whole file, or `None` if it does not exist.
pub fn read_file(io: &dyn SegmentIo, name: &str) -> io::Result<Option<Vec<u8>>> {
    let file = match io.open(name, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = file.size()?;
    let mut buf = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
    read_exact_at(&*file, &mut buf, 0)?;
    Ok(Some(buf))
}

/// A log directory on the real file system.
///
/// Holds an exclusive advisory lock on `<dir>/.lock` for its lifetime, so two processes cannot
/// open the same log (the kernel releases it when the process dies, even by kill -9).
#[derive(Debug)]
pub struct FsSegmentIo {
    dir: PathBuf,
    dir_handle: File,
    /// The locked `.lock` file; `None` once released.
    lock: std::sync::Mutex<Option<File>>,
}

impl FsSegmentIo {
    /// Opens (creating if needed) the directory `dir` and locks it.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    format!(
                        "log directory {} is in use by another process",
                        dir.display()
                    ),
                ));
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let dir_handle = File::open(&dir)?;
        Ok(Self {
            dir,
            dir_handle,
            lock: std::sync::Mutex::new(Some(lock)),
        })
    }

    /// Opens (creating if needed) the directory `dir` without locking it: for a directory
    /// of small files several owners share (the broker's root), not for a log.
    pub fn open_shared(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir)?;
        let dir_handle = File::open(&dir)?;
        Ok(Self {
            dir,
            dir_handle,
            lock: std::sync::Mutex::new(None),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[derive(Debug)]
struct FsFile(File);

impl SegmentFile for FsFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.0.read_at(buf, pos)
    }
    /// `preadv2` with `RWF_NOWAIT` (Linux 4.14+): `EAGAIN` where the page cache does not
    /// hold the bytes. On an older kernel, or a file system that does not support it, the
    /// error sends the caller to [`SegmentFile::read_at`]. (rustix offers `preadv2` on Linux
    /// only: the log builds on Linux, the one platform it is tested on.)
    fn read_cached_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut slices = [io::IoSliceMut::new(buf)];
        rustix::io::preadv2(
            &self.0,
            &mut slices,
            pos,
            rustix::io::ReadWriteFlags::NOWAIT,
        )
        .map_err(io::Error::from)
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        self.0.write_at(buf, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn preallocate(&self, len: u64) -> io::Result<()> {
        let current = self.size()?;
        if len <= current {
            return Ok(());
        }
        rustix::fs::fallocate(
            &self.0,
            rustix::fs::FallocateFlags::empty(),
            current,
            len - current,
        )
        .map_err(io::Error::from)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl SegmentIo for FsSegmentIo {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(self.dir.join(name))?;
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

    fn sync_dir(&self) -> io::Result<()> {
        self.dir_handle.sync_all()
    }

    fn release(&self) -> io::Result<()> {
        let lock = self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        match lock {
            Some(file) => file.unlock(),
            None => Ok(()),
        }
    }
}
