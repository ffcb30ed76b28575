//! The narrow, synchronous seam between the log and the file system.
//!
//! Everything the log does to bytes on disk goes through [`SegmentIo`] (a directory) and
//! [`SegmentFile`] (one file). The real implementation is [`FsSegmentIo`]; `staunch-testkit`
//! provides one that keeps "written" and "durable" bytes apart, so tests can crash the log at any
//! point, tear writes, flip bits, fail an fsync or fill the disk. The traits are sync and return
//! plain `io::Error`: the log adds the context.

mod file_cache;
mod fs;

pub use file_cache::{CachedFile, DEFAULT_OPEN_FILES, FileCache};
pub use fs::{FsSegmentIo, FsStorage, TREE_LOCK};

use std::fmt::Debug;
use std::io;
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
    /// Where the directory is, as log lines name it (its path for a real directory).
    fn location(&self) -> String {
        "(no path)".to_owned()
    }
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
