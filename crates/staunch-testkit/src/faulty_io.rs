//! [`FaultyIo`]: an in-memory [`SegmentIo`] that knows which bytes are durable.
//!
//! Every file keeps two images: *live* (what reads see: the page cache) and *durable* (what
//! survives power loss: the state at the last `sync_data`). The directory keeps two namespaces
//! the same way (`sync_dir`). A test can then
//!
//! - take a [`crash`](FaultyIo::crash) image at any instant — dropping everything unsynced,
//!   keeping a torn prefix of it, or keeping everything (a kill -9, where the page cache survives);
//! - flip a bit anywhere;
//! - make the next fsync fail (and every one after, as a dying disk does);
//! - cap the disk's capacity so writes fail with `ENOSPC` after a short write.
//!
//! The model follows redb's `CrashBackend` and the failure semantics Linux actually has: after a
//! failed fsync the durable image is *not* updated.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use staunch_core::SystemClock;
use staunch_log::{FileLog, LogConfig, SegmentFile, SegmentIo};

/// What survives a simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Power loss: only synced data and synced directory entries survive.
    DropUnsynced,
    /// Power loss mid-writeback: like `DropUnsynced`, but each file keeps a random prefix of
    /// its unsynced tail (a torn write), chosen from `seed`.
    TornTail {
        /// Seed for the random tear points.
        seed: u64,
    },
    /// Process crash (kill -9): the page cache survives, so everything written survives.
    KeepPageCache,
}

#[derive(Debug, Clone, Default)]
struct Contents {
    live: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Default)]
struct Disk {
    next_id: u64,
    contents: HashMap<u64, Contents>,
    live_names: HashMap<String, u64>,
    durable_names: HashMap<String, u64>,
    capacity: Option<u64>,
    syncs_before_failure: Option<u64>,
    sync_failure_sticky: bool,
    sync_failed: bool,
    file_syncs: u64,
    bytes_read: u64,
}

impl Disk {
    fn used(&self) -> u64 {
        self.live_names
            .values()
            .filter_map(|id| self.contents.get(id))
            .map(|c| c.live.len() as u64)
            .sum()
    }
}

/// An in-memory, fault-injecting log directory. Cloning shares the same disk.
#[derive(Clone, Default)]
pub struct FaultyIo {
    disk: Arc<Mutex<Disk>>,
}

impl fmt::Debug for FaultyIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.lock();
        f.debug_struct("FaultyIo")
            .field("files", &disk.live_names.len())
            .field("used", &disk.used())
            .finish()
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5) // EIO, as a failing disk reports it
}

impl FaultyIo {
    /// An empty disk with no faults armed.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens (recovering) a file log in this directory with the system clock; panics if
    /// that fails (a test helper).
    pub fn open_log(&self, config: LogConfig) -> FileLog {
        FileLog::open_with(Arc::new(self.clone()), config, Arc::new(SystemClock))
            .expect("open a file log over FaultyIo")
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new, independent disk holding what would be found after a crash now.
    pub fn crash(&self, mode: CrashMode) -> FaultyIo {
        let disk = self.lock();
        let mut rng = match mode {
            CrashMode::TornTail { seed } => Some(fastrand::Rng::with_seed(seed)),
            _ => None,
        };
        let names = match mode {
            CrashMode::KeepPageCache => &disk.live_names,
            _ => &disk.durable_names,
        };
        let mut out = Disk::default();
        for (name, id) in names {
            let Some(c) = disk.contents.get(id) else {
                continue;
            };
            let bytes = match mode {
                CrashMode::KeepPageCache => c.live.clone(),
                CrashMode::DropUnsynced => c.durable.clone(),
                CrashMode::TornTail { .. } => {
                    let rng = rng.as_mut().expect("seeded for torn tails");
                    let extends = c.live.len() > c.durable.len() && c.live.starts_with(&c.durable);
                    if extends {
                        let keep = rng.usize(c.durable.len()..=c.live.len());
                        c.live[..keep].to_vec()
                    } else {
                        c.durable.clone()
                    }
                }
            };
            let new_id = out.next_id;
            out.next_id += 1;
            out.contents.insert(
                new_id,
                Contents {
                    live: bytes.clone(),
                    durable: bytes,
                },
            );
            out.live_names.insert(name.clone(), new_id);
            out.durable_names.insert(name.clone(), new_id);
        }
        FaultyIo {
            disk: Arc::new(Mutex::new(out)),
        }
    }

    /// Flips one bit of `name` in both the live and the durable image.
    pub fn flip_bit(&self, name: &str, byte: usize, bit: u8) {
        let mut disk = self.lock();
        let id = disk.live_names[name];
        let c = disk.contents.get_mut(&id).expect("named file has contents");
        c.live[byte] ^= 1 << bit;
        if byte < c.durable.len() {
            c.durable[byte] ^= 1 << bit;
        }
    }

    /// Makes the `n`-th file fsync from now fail (1 = the next one), and every one after it.
    pub fn fail_sync_after(&self, n: u64) {
        let mut disk = self.lock();
        disk.syncs_before_failure = Some(n.saturating_sub(1));
        disk.sync_failure_sticky = true;
    }

    /// Makes only the `n`-th file fsync from now fail; later ones succeed again — as Linux
    /// reports a writeback error once, after which the unwritten pages may simply be gone. A log
    /// that retried would then see success for data that never reached the disk.
    pub fn fail_one_sync_after(&self, n: u64) {
        let mut disk = self.lock();
        disk.syncs_before_failure = Some(n.saturating_sub(1));
        disk.sync_failure_sticky = false;
    }

    /// Limits the total live bytes of all files; `None` removes the limit ("space freed").
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// Live bytes used by all files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Names in the live directory.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.lock().live_names.keys().cloned().collect();
        names.sort();
        names
    }

    /// The live bytes of `name`.
    pub fn live_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.lock();
        let id = disk.live_names.get(name)?;
        Some(disk.contents[id].live.clone())
    }

    /// The durable length of `name`.
    pub fn durable_len(&self, name: &str) -> Option<usize> {
        let disk = self.lock();
        let id = disk.live_names.get(name)?;
        Some(disk.contents[id].durable.len())
    }

    /// File fsyncs performed so far (failed ones included).
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Bytes read from files so far (`read_cached_at` reads included).
    pub fn bytes_read(&self) -> u64 {
        self.lock().bytes_read
    }

    /// Replaces the contents of `name` (live and durable), creating it durably if needed.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        let mut disk = self.lock();
        let id = match disk.live_names.get(name) {
            Some(id) => *id,
            None => {
                let id = disk.next_id;
                disk.next_id += 1;
                disk.live_names.insert(name.to_owned(), id);
                disk.durable_names.insert(name.to_owned(), id);
                id
            }
        };
        disk.contents.insert(
            id,
            Contents {
                live: bytes.to_vec(),
                durable: bytes.to_vec(),
            },
        );
    }
}

#[derive(Debug)]
struct FaultyFile {
    disk: Arc<Mutex<Disk>>,
    id: u64,
}

impl FaultyFile {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SegmentFile for FaultyFile {
    fn size(&self) -> io::Result<u64> {
        Ok(self.lock().contents[&self.id].live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut disk = self.lock();
        let live = &disk.contents[&self.id].live;
        let pos = pos as usize;
        if pos >= live.len() {
            return Ok(0);
        }
        let n = buf.len().min(live.len() - pos);
        buf[..n].copy_from_slice(&live[pos..pos + n]);
        disk.bytes_read += n as u64;
        Ok(n)
    }

    /// The simulated disk is memory: it never waits.
    fn read_cached_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.read_at(buf, pos)
    }

    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        let mut disk = self.lock();
        let pos = pos as usize;
        let current = disk.contents[&self.id].live.len();
        let growth = (pos + buf.len()).saturating_sub(current) as u64;
        let mut n = buf.len();
        if let Some(cap) = disk.capacity {
            let free = cap.saturating_sub(disk.used());
            if growth > free {
                // A short write up to the limit, then ENOSPC — as a full file system does.
                let allowed = (current + free as usize).saturating_sub(pos);
                if allowed == 0 {
                    return Err(enospc());
                }
                n = allowed.min(buf.len());
            }
        }
        let live = &mut disk.contents.get_mut(&self.id).expect("open file").live;
        if live.len() < pos + n {
            live.resize(pos + n, 0);
        }
        live[pos..pos + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        let current = disk.contents[&self.id].live.len() as u64;
        if let Some(cap) = disk.capacity
            && len > current
            && len - current > cap.saturating_sub(disk.used())
        {
            return Err(enospc());
        }
        disk.contents
            .get_mut(&self.id)
            .expect("open file")
            .live
            .resize(len as usize, 0);
        Ok(())
    }

    fn preallocate(&self, len: u64) -> io::Result<()> {
        if len > self.size()? {
            self.set_len(len)?;
        }
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.file_syncs += 1;
        if disk.sync_failed {
            return Err(eio());
        }
        match disk.syncs_before_failure {
            Some(0) => {
                disk.syncs_before_failure = None;
                disk.sync_failed = disk.sync_failure_sticky;
                return Err(eio());
            }
            Some(n) => disk.syncs_before_failure = Some(n - 1),
            None => {}
        }
        let c = disk.contents.get_mut(&self.id).expect("open file");
        c.durable = c.live.clone();
        Ok(())
    }
}

impl SegmentIo for FaultyIo {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let mut disk = self.lock();
        let id = match disk.live_names.get(name) {
            Some(id) => *id,
            None if create => {
                let id = disk.next_id;
                disk.next_id += 1;
                disk.contents.insert(id, Contents::default());
                disk.live_names.insert(name.to_owned(), id);
                id
            }
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: no such file"),
                ));
            }
        };
        Ok(Arc::new(FaultyFile {
            disk: self.disk.clone(),
            id,
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        Ok(self.names())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        self.lock().live_names.remove(name);
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        let id = disk.live_names.remove(from).ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{from}: no such file"))
        })?;
        disk.live_names.insert(to.to_owned(), id);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        let mut disk = self.lock();
        disk.durable_names = disk.live_names.clone();
        Ok(())
    }

    fn release(&self) -> io::Result<()> {
        Ok(())
    }
}
