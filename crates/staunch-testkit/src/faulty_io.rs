//! [`FaultyIo`]: an in-memory file system that knows which bytes and names are durable.
//!
//! Every file keeps two images: *live* (what reads see: the page cache) and *durable* (what
//! survives power loss: the state at the last `sync_data`). Every directory keeps two
//! namespaces the same way: an entry created, renamed or removed is durable only once its
//! directory was synced (`sync_dir`) — ext4's rule. A [`FaultyIo`] is a handle to one directory
//! of that tree: a [`SegmentIo`] for the files in it and a [`StorageIo`] for the directories
//! under it. A test can then
//!
//! - take a [`crash`](FaultyIo::crash) image of the whole tree at any instant — dropping
//!   everything unsynced, keeping a torn prefix of it, or keeping everything (a kill -9, where
//!   the page cache survives);
//! - cut the power after the n-th operation from now ([`FaultyIo::cut_power_after`]): the image
//!   is taken at that instant, and every later operation fails with `EIO`, so nothing written
//!   after the cut can be acknowledged;
//! - flip a bit anywhere;
//! - make the next fsync fail (and every one after, as a dying disk does), on the whole disk or
//!   only in one directory (a handle's [`subdir`](FaultyIo::subdir));
//! - make fsyncs hang until released ([`FaultyIo::hang_syncs`]), as a dying disk or a lost
//!   network volume does, while every other operation goes on;
//! - cap the disk's capacity so writes fail with `ENOSPC` after a short write.
//!
//! The model follows redb's `CrashBackend` and the failure semantics Linux actually has: after a
//! failed fsync the durable image is *not* updated.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use staunch_core::SystemClock;
use staunch_log::{FileLog, LogConfig, SegmentFile, SegmentIo, StorageIo};

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

/// A directory entry: a file or a directory, by inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    File(u64),
    Dir(u64),
}

#[derive(Debug, Clone, Default)]
struct Dir {
    live: BTreeMap<String, Entry>,
    durable: BTreeMap<String, Entry>,
}

/// A power cut armed or done.
#[derive(Debug)]
enum Power {
    On,
    /// Cut after this many more operations, keeping what `mode` says.
    CutAfter(u64, CrashMode),
    /// Cut: the tree as it was found when the power came back.
    Cut(Box<Disk>),
}

#[derive(Debug)]
struct Disk {
    next_id: u64,
    files: HashMap<u64, Contents>,
    dirs: HashMap<u64, Dir>,
    root: u64,
    capacity: Option<u64>,
    syncs_before_failure: Option<u64>,
    sync_failure_sticky: bool,
    sync_failed: bool,
    /// The directory (and everything below it) whose file fsyncs the armed failure counts and
    /// fails; `""` is the whole disk.
    sync_failure_scope: String,
    file_syncs: u64,
    bytes_read: u64,
    operations: u64,
    /// Operations that changed something or synced (see [`FaultyIo::changes`]).
    changes: u64,
    power: Power,
}

impl Default for Disk {
    fn default() -> Self {
        let mut dirs = HashMap::new();
        dirs.insert(0, Dir::default());
        Disk {
            next_id: 1,
            files: HashMap::new(),
            dirs,
            root: 0,
            capacity: None,
            syncs_before_failure: None,
            sync_failure_sticky: false,
            sync_failed: false,
            sync_failure_scope: String::new(),
            file_syncs: 0,
            bytes_read: 0,
            operations: 0,
            changes: 0,
            power: Power::On,
        }
    }
}

fn enospc() -> io::Error {
    io::Error::from_raw_os_error(28) // ENOSPC
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(5) // EIO, as a failing disk reports it
}

fn not_found(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{what}: no such file or directory"),
    )
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|p| !p.is_empty())
}

/// Whether directory `path` is `scope` or lies below it (`""` is the root, above everything).
fn within(path: &str, scope: &str) -> bool {
    let mut path = split(path);
    split(scope).all(|part| path.next() == Some(part))
}

/// Where fsyncs wait while [`FaultyIo::hang_syncs`] holds them. Separate from the disk's lock,
/// and taken before it, so every other operation goes on while fsyncs hang.
#[derive(Debug, Default)]
struct SyncGate {
    state: Mutex<GateState>,
    released: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Directories whose fsyncs (files in them or below, and their own) hang.
    hung: Vec<String>,
    /// fsyncs waiting at the gate now.
    waiting: usize,
}

impl SyncGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks while fsyncs in directory `dir` hang.
    fn pass(&self, dir: &str) {
        let mut gate = self.lock();
        let hung = |gate: &GateState| gate.hung.iter().any(|scope| within(dir, scope));
        if !hung(&gate) {
            return;
        }
        gate.waiting += 1;
        while hung(&gate) {
            gate = self.released.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        gate.waiting -= 1;
    }
}

impl Disk {
    fn alloc(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Files reachable through live names.
    fn used(&self) -> u64 {
        let mut total = 0;
        let mut stack = vec![self.root];
        while let Some(dir) = stack.pop() {
            for entry in self.dirs[&dir].live.values() {
                match entry {
                    Entry::File(id) => total += self.files[id].live.len() as u64,
                    Entry::Dir(id) => stack.push(*id),
                }
            }
        }
        total
    }

    /// [`Disk::operate`] for an operation that changes the live or durable image, or syncs.
    fn change(&mut self) -> io::Result<()> {
        self.changes += 1;
        self.operate()
    }

    /// Counts an operation against an armed power cut, cutting when it is due. `Err` once the
    /// power is off.
    fn operate(&mut self) -> io::Result<()> {
        self.operations += 1;
        let mode = match &mut self.power {
            Power::On => return Ok(()),
            Power::Cut(_) => return Err(eio()),
            Power::CutAfter(n, _) if *n > 0 => {
                *n -= 1;
                return Ok(());
            }
            Power::CutAfter(_, mode) => *mode,
        };
        let image = self.image(mode);
        self.power = Power::Cut(Box::new(image));
        Err(eio())
    }

    /// Moves `entry` from `from` to `to` (each a directory inode and a name) in the live
    /// namespace; durable once both directories are synced.
    fn move_entry(&mut self, from: (u64, &str), to: (u64, &str), entry: Entry) {
        self.dirs
            .get_mut(&from.0)
            .expect("exists")
            .live
            .remove(from.1);
        self.dirs
            .get_mut(&to.0)
            .expect("exists")
            .live
            .insert(to.1.to_owned(), entry);
    }

    /// The directory inode at `path` under `from` (live names).
    fn dir_at(&self, from: u64, path: &str) -> io::Result<u64> {
        let mut dir = from;
        for name in split(path) {
            match self.dirs[&dir].live.get(name) {
                Some(Entry::Dir(id)) => dir = *id,
                _ => return Err(not_found(path)),
            }
        }
        Ok(dir)
    }

    /// Like [`Disk::dir_at`], creating missing directories.
    fn make_dirs(&mut self, from: u64, path: &str) -> io::Result<u64> {
        let mut dir = from;
        for name in split(path) {
            dir = match self.dirs[&dir].live.get(name) {
                Some(Entry::Dir(id)) => *id,
                Some(Entry::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{name} is a file"),
                    ));
                }
                None => {
                    let id = self.alloc();
                    self.dirs.insert(id, Dir::default());
                    self.dirs
                        .get_mut(&dir)
                        .expect("parent exists")
                        .live
                        .insert(name.to_owned(), Entry::Dir(id));
                    id
                }
            };
        }
        Ok(dir)
    }

    /// The parent directory of `path` under `from`, and the last name.
    fn parent_of<'p>(&self, from: u64, path: &'p str) -> io::Result<(u64, &'p str)> {
        let path = path.trim_end_matches('/');
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        if name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the root has no parent",
            ));
        }
        Ok((self.dir_at(from, parent)?, name))
    }

    /// A new, independent disk holding what would be found after a crash now.
    fn image(&self, mode: CrashMode) -> Disk {
        let mut rng = match mode {
            CrashMode::TornTail { seed } => Some(fastrand::Rng::with_seed(seed)),
            _ => None,
        };
        let mut out = Disk::default();
        let mut stack = vec![(self.root, out.root)];
        while let Some((from, to)) = stack.pop() {
            let dir = &self.dirs[&from];
            let names = match mode {
                CrashMode::KeepPageCache => &dir.live,
                _ => &dir.durable,
            };
            for (name, entry) in names {
                let new_entry = match entry {
                    Entry::Dir(id) => {
                        let new_id = out.alloc();
                        out.dirs.insert(new_id, Dir::default());
                        stack.push((*id, new_id));
                        Entry::Dir(new_id)
                    }
                    Entry::File(id) => {
                        let c = &self.files[id];
                        let bytes = match mode {
                            CrashMode::KeepPageCache => c.live.clone(),
                            CrashMode::DropUnsynced => c.durable.clone(),
                            CrashMode::TornTail { .. } => {
                                let rng = rng.as_mut().expect("seeded for torn tails");
                                let extends = c.live.len() > c.durable.len()
                                    && c.live.starts_with(&c.durable);
                                if extends {
                                    let keep = rng.usize(c.durable.len()..=c.live.len());
                                    c.live[..keep].to_vec()
                                } else {
                                    c.durable.clone()
                                }
                            }
                        };
                        let new_id = out.alloc();
                        out.files.insert(
                            new_id,
                            Contents {
                                live: bytes.clone(),
                                durable: bytes,
                            },
                        );
                        Entry::File(new_id)
                    }
                };
                let d = out.dirs.get_mut(&to).expect("just made");
                d.live.insert(name.clone(), new_entry);
                d.durable.insert(name.clone(), new_entry);
            }
        }
        out
    }
}

/// An in-memory, fault-injecting file system, seen from one of its directories. Cloning
/// shares the same disk and directory.
#[derive(Clone)]
pub struct FaultyIo {
    disk: Arc<Mutex<Disk>>,
    /// Where fsyncs hang; shared by every handle of the disk.
    gate: Arc<SyncGate>,
    /// This handle's directory, from the root.
    path: String,
}

impl Default for FaultyIo {
    fn default() -> Self {
        FaultyIo::on(Disk::default(), String::new())
    }
}

impl fmt::Debug for FaultyIo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let disk = self.lock();
        f.debug_struct("FaultyIo")
            .field("path", &self.path)
            .field("used", &disk.used())
            .finish()
    }
}

impl FaultyIo {
    /// An empty disk with no faults armed, seen from its root.
    pub fn new() -> Self {
        Self::default()
    }

    /// Opens (recovering) a file log in this directory with the system clock; panics if
    /// that fails (a test helper).
    pub fn open_log(&self, config: LogConfig) -> FileLog {
        FileLog::open_with(Arc::new(self.clone()), config, Arc::new(SystemClock))
            .expect("open a file log over FaultyIo")
    }

    /// A handle of a new disk holding `disk`, seen from `path`, with no fsync hanging.
    fn on(disk: Disk, path: String) -> FaultyIo {
        FaultyIo {
            disk: Arc::new(Mutex::new(disk)),
            gate: Arc::default(),
            path,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn full_path(&self, path: &str) -> String {
        staunch_log::join_path(&self.path, path)
    }

    /// The same disk seen from directory `path` under this one (which need not exist yet).
    pub fn subdir(&self, path: &str) -> FaultyIo {
        FaultyIo {
            disk: self.disk.clone(),
            gate: self.gate.clone(),
            path: self.full_path(path),
        }
    }

    /// This handle's directory inode, or `NotFound`.
    fn here(disk: &Disk, path: &str) -> io::Result<u64> {
        disk.dir_at(disk.root, path)
    }

    /// A new, independent disk holding what would be found after a crash now, seen from the
    /// same directory.
    pub fn crash(&self, mode: CrashMode) -> FaultyIo {
        let image = self.lock().image(mode);
        FaultyIo::on(image, self.path.clone())
    }

    /// Arms a power cut: the `n`-th operation from now (1 = the next; reads, writes, syncs and
    /// directory changes all count) fails with `EIO`, and so does every one after it; the
    /// disk found when the power comes back is what a crash in `mode` would leave at that
    /// instant ([`FaultyIo::after_power_cut`]).
    pub fn cut_power_after(&self, n: u64, mode: CrashMode) {
        self.lock().power = Power::CutAfter(n.saturating_sub(1), mode);
    }

    /// Cuts the power now (see [`FaultyIo::cut_power_after`]); does nothing if it is off.
    pub fn cut_power_now(&self, mode: CrashMode) {
        let mut disk = self.lock();
        if !matches!(disk.power, Power::Cut(_)) {
            let image = disk.image(mode);
            disk.power = Power::Cut(Box::new(image));
        }
    }

    /// Disarms a power cut armed by [`FaultyIo::cut_power_after`] that has not come yet.
    pub fn disarm(&self) {
        let mut disk = self.lock();
        if matches!(disk.power, Power::CutAfter(..)) {
            disk.power = Power::On;
        }
    }

    /// Whether the power has been cut.
    pub fn power_is_cut(&self) -> bool {
        matches!(self.lock().power, Power::Cut(_))
    }

    /// The disk found when the power comes back after a cut (a fresh disk, faults disarmed,
    /// seen from the same directory); `None` while the power is on. Each call gives an
    /// independent copy.
    pub fn after_power_cut(&self) -> Option<FaultyIo> {
        let disk = self.lock();
        let Power::Cut(image) = &disk.power else {
            return None;
        };
        Some(FaultyIo::on(
            image.image(CrashMode::KeepPageCache),
            self.path.clone(),
        ))
    }

    /// Operations performed so far on the whole disk (each counts toward a power cut).
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Of [`FaultyIo::operations`], those that change something or sync, attempted so far on
    /// the whole disk: writes, length changes, file and directory fsyncs, creations of files
    /// and directories, removals and renames. Reads, listings, lengths, and opens or
    /// `create_dir_all` of what exists already do not count.
    pub fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Flips one bit of `name` (a file in this directory) in both the live and the durable
    /// image.
    pub fn flip_bit(&self, name: &str, byte: usize, bit: u8) {
        let mut disk = self.lock();
        let dir = Self::here(&disk, &self.path).expect("directory exists");
        let Some(Entry::File(id)) = disk.dirs[&dir].live.get(name).copied() else {
            panic!("no file {name}");
        };
        let c = disk.files.get_mut(&id).expect("named file has contents");
        c.live[byte] ^= 1 << bit;
        if byte < c.durable.len() {
            c.durable[byte] ^= 1 << bit;
        }
    }

    /// Makes the `n`-th file fsync from now fail (1 = the next one), and every one after it.
    /// Only fsyncs of files in this handle's directory or below count and fail (all of them
    /// for a handle of the root); fsyncs elsewhere succeed. Replaces an earlier arming.
    pub fn fail_sync_after(&self, n: u64) {
        self.arm_sync_failure(n, true);
    }

    /// Makes only the `n`-th file fsync from now fail; later ones succeed again — as Linux
    /// reports a writeback error once, after which the unwritten pages may simply be gone. A log
    /// that retried would then see success for data that never reached the disk. Scoped to this
    /// handle's directory as [`FaultyIo::fail_sync_after`] is.
    pub fn fail_one_sync_after(&self, n: u64) {
        self.arm_sync_failure(n, false);
    }

    fn arm_sync_failure(&self, n: u64, sticky: bool) {
        let mut disk = self.lock();
        disk.syncs_before_failure = Some(n.saturating_sub(1));
        disk.sync_failure_sticky = sticky;
        disk.sync_failed = false;
        disk.sync_failure_scope = self.path.clone();
    }

    /// Makes every fsync in this handle's directory or below — of files (`sync_data`) and of
    /// the directories themselves (`sync_dir`) — hang from now on, until
    /// [`release_syncs`](FaultyIo::release_syncs): as a dying disk or a lost network volume
    /// hangs instead of failing. An fsync that hangs has done nothing yet; once released it
    /// runs normally (and may still fail as armed). Reads, writes, directory changes and fsyncs
    /// elsewhere go on meanwhile: the hanging fsyncs wait at a gate of their own, before they
    /// take the disk's lock. The gate is shared by every handle of this disk (not by
    /// [`crash`](FaultyIo::crash) images).
    pub fn hang_syncs(&self) {
        let mut gate = self.gate.lock();
        if !gate.hung.contains(&self.path) {
            gate.hung.push(self.path.clone());
        }
    }

    /// Lets the fsyncs that [`hang_syncs`](FaultyIo::hang_syncs) on this same directory holds
    /// go on, and later ones run without hanging.
    pub fn release_syncs(&self) {
        self.gate.lock().hung.retain(|scope| *scope != self.path);
        self.gate.released.notify_all();
    }

    /// fsyncs (anywhere on this disk) hanging at the gate right now.
    pub fn hung_syncs(&self) -> usize {
        self.gate.lock().waiting
    }

    /// Limits the total live bytes of all files; `None` removes the limit ("space freed").
    pub fn set_capacity(&self, capacity: Option<u64>) {
        self.lock().capacity = capacity;
    }

    /// Live bytes used by all files of the disk.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Names of the files in this directory (live).
    pub fn names(&self) -> Vec<String> {
        let disk = self.lock();
        let Ok(dir) = Self::here(&disk, &self.path) else {
            return Vec::new();
        };
        disk.dirs[&dir]
            .live
            .iter()
            .filter(|(_, e)| matches!(e, Entry::File(_)))
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn file_id(disk: &Disk, dir_path: &str, name: &str) -> Option<u64> {
        let dir = Self::here(disk, dir_path).ok()?;
        match disk.dirs[&dir].live.get(name) {
            Some(Entry::File(id)) => Some(*id),
            _ => None,
        }
    }

    /// The live bytes of `name` (a file in this directory).
    pub fn live_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let disk = self.lock();
        let id = Self::file_id(&disk, &self.path, name)?;
        Some(disk.files[&id].live.clone())
    }

    /// The durable length of `name` (a file in this directory).
    pub fn durable_len(&self, name: &str) -> Option<usize> {
        let disk = self.lock();
        let id = Self::file_id(&disk, &self.path, name)?;
        Some(disk.files[&id].durable.len())
    }

    /// File fsyncs performed so far (failed ones included).
    pub fn file_syncs(&self) -> u64 {
        self.lock().file_syncs
    }

    /// Bytes read from files so far (`read_cached_at` reads included).
    pub fn bytes_read(&self) -> u64 {
        self.lock().bytes_read
    }

    /// Replaces the contents of `name` in this directory (live and durable), creating it (and
    /// this directory) durably if needed.
    pub fn put_file(&self, name: &str, bytes: &[u8]) {
        let mut disk = self.lock();
        let root = disk.root;
        let dir = disk.make_dirs(root, &self.path).expect("directory path");
        let id = match disk.dirs[&dir].live.get(name) {
            Some(Entry::File(id)) => *id,
            _ => {
                let id = disk.alloc();
                let d = disk.dirs.get_mut(&dir).expect("exists");
                d.live.insert(name.to_owned(), Entry::File(id));
                d.durable.insert(name.to_owned(), Entry::File(id));
                id
            }
        };
        disk.files.insert(
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
    gate: Arc<SyncGate>,
    /// The directory the file was opened in (for scoped faults).
    dir: String,
    id: u64,
}

impl FaultyFile {
    fn lock(&self) -> MutexGuard<'_, Disk> {
        self.disk.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SegmentFile for FaultyFile {
    fn size(&self) -> io::Result<u64> {
        let mut disk = self.lock();
        disk.operate()?;
        Ok(disk.files[&self.id].live.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        let mut disk = self.lock();
        disk.operate()?;
        let live = &disk.files[&self.id].live;
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
        disk.change()?;
        let pos = pos as usize;
        let current = disk.files[&self.id].live.len();
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
        let live = &mut disk.files.get_mut(&self.id).expect("open file").live;
        if live.len() < pos + n {
            live.resize(pos + n, 0);
        }
        live[pos..pos + n].copy_from_slice(&buf[..n]);
        Ok(n)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let current = disk.files[&self.id].live.len() as u64;
        if let Some(cap) = disk.capacity
            && len > current
            && len - current > cap.saturating_sub(disk.used())
        {
            return Err(enospc());
        }
        disk.files
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
        self.gate.pass(&self.dir);
        let mut disk = self.lock();
        disk.change()?;
        disk.file_syncs += 1;
        if !within(&self.dir, &disk.sync_failure_scope) {
            let c = disk.files.get_mut(&self.id).expect("open file");
            c.durable = c.live.clone();
            return Ok(());
        }
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
        let c = disk.files.get_mut(&self.id).expect("open file");
        c.durable = c.live.clone();
        Ok(())
    }
}

impl SegmentIo for FaultyIo {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        let mut disk = self.lock();
        disk.operate()?;
        let dir = Self::here(&disk, &self.path)?;
        let id = match disk.dirs[&dir].live.get(name) {
            Some(Entry::File(id)) => *id,
            Some(Entry::Dir(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    format!("{name} is a directory"),
                ));
            }
            None if create => {
                disk.changes += 1;
                let id = disk.alloc();
                disk.files.insert(id, Contents::default());
                disk.dirs
                    .get_mut(&dir)
                    .expect("exists")
                    .live
                    .insert(name.to_owned(), Entry::File(id));
                id
            }
            None => return Err(not_found(name)),
        };
        Ok(Arc::new(FaultyFile {
            disk: self.disk.clone(),
            gate: self.gate.clone(),
            dir: self.path.clone(),
            id,
        }))
    }

    fn list(&self) -> io::Result<Vec<String>> {
        self.lock().operate()?;
        Ok(self.names())
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let dir = Self::here(&disk, &self.path)?;
        let d = disk.dirs.get_mut(&dir).expect("exists");
        if matches!(d.live.get(name), Some(Entry::File(_))) {
            d.live.remove(name);
        }
        Ok(())
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let dir = Self::here(&disk, &self.path)?;
        let d = disk.dirs.get_mut(&dir).expect("exists");
        let entry = d.live.remove(from).ok_or_else(|| not_found(from))?;
        d.live.insert(to.to_owned(), entry);
        Ok(())
    }

    fn sync_dir(&self) -> io::Result<()> {
        StorageIo::sync_dir(self, "")
    }

    fn release(&self) -> io::Result<()> {
        Ok(())
    }
}

impl StorageIo for FaultyIo {
    fn open_dir(&self, path: &str, _exclusive: bool) -> io::Result<Arc<dyn SegmentIo>> {
        self.create_dir_all(path)?;
        Ok(Arc::new(self.subdir(path)))
    }

    fn create_dir_all(&self, path: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.operate()?;
        let here = Self::here(&disk, &self.path)?;
        if disk.dir_at(here, path).is_err() {
            disk.changes += 1;
        }
        disk.make_dirs(here, path).map(|_| ())
    }

    fn list_dirs(&self, path: &str) -> io::Result<Vec<String>> {
        let mut disk = self.lock();
        disk.operate()?;
        let dir = Self::here(&disk, &self.full_path(path))?;
        Ok(disk.dirs[&dir]
            .live
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Dir(_)))
            .map(|(n, _)| n.clone())
            .collect())
    }

    fn rename_dir(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let here = Self::here(&disk, &self.path)?;
        let (from_dir, from_name) = disk.parent_of(here, from)?;
        let (to_dir, to_name) = disk.parent_of(here, to)?;
        if disk.dirs[&to_dir].live.contains_key(to_name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{to} exists"),
            ));
        }
        let entry = match disk.dirs[&from_dir].live.get(from_name) {
            Some(entry @ Entry::Dir(_)) => *entry,
            _ => return Err(not_found(from)),
        };
        disk.move_entry((from_dir, from_name), (to_dir, to_name), entry);
        Ok(())
    }

    fn rename_file(&self, from: &str, to: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let here = Self::here(&disk, &self.path)?;
        let (from_dir, from_name) = disk.parent_of(here, from)?;
        let (to_dir, to_name) = disk.parent_of(here, to)?;
        let entry = match disk.dirs[&from_dir].live.get(from_name) {
            Some(entry @ Entry::File(_)) => *entry,
            _ => return Err(not_found(from)),
        };
        if matches!(disk.dirs[&to_dir].live.get(to_name), Some(Entry::Dir(_))) {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                format!("{to} is a directory"),
            ));
        }
        disk.move_entry((from_dir, from_name), (to_dir, to_name), entry);
        Ok(())
    }

    fn remove_dir_all(&self, path: &str) -> io::Result<()> {
        let mut disk = self.lock();
        disk.change()?;
        let here = Self::here(&disk, &self.path)?;
        let Ok((parent, name)) = disk.parent_of(here, path) else {
            return Ok(());
        };
        // Unlinked from its parent; a crash before the parent's sync finds it again with its
        // durable contents, as ext4 would.
        disk.dirs
            .get_mut(&parent)
            .expect("exists")
            .live
            .remove(name);
        Ok(())
    }

    fn sync_dir(&self, path: &str) -> io::Result<()> {
        let path = self.full_path(path);
        self.gate.pass(&path);
        let mut disk = self.lock();
        disk.change()?;
        let dir = Self::here(&disk, &path)?;
        let d = disk.dirs.get_mut(&dir).expect("exists");
        d.durable = d.live.clone();
        Ok(())
    }

    fn describe(&self, path: &str) -> String {
        format!("faulty:/{}", self.full_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(io: &FaultyIo, name: &str, bytes: &[u8], sync: bool) {
        let file = io.open(name, true).unwrap();
        file.write_at(bytes, 0).unwrap();
        if sync {
            file.sync_data().unwrap();
        }
    }

    #[test]
    fn a_power_cut_keeps_synced_bytes_in_synced_names_of_every_directory() {
        let io = FaultyIo::new();
        let a = io.subdir("topics/a/0");
        io.create_dir_all("topics/a/0").unwrap();
        write(&a, "synced", b"one", true);
        write(&a, "unsynced", b"two", false);
        // The chain of directory entries is made durable from the top.
        StorageIo::sync_dir(&io, "").unwrap();
        StorageIo::sync_dir(&io, "topics").unwrap();
        StorageIo::sync_dir(&io, "topics/a").unwrap();
        StorageIo::sync_dir(&io, "topics/a/0").unwrap();
        // A file created after its directory's sync is lost with its name, synced or not.
        write(&a, "late", b"three", true);
        // A directory created but never synced into its parent is lost.
        io.create_dir_all("topics/b").unwrap();
        write(&io.subdir("topics/b"), "f", b"four", true);

        io.cut_power_after(1, CrashMode::DropUnsynced);
        assert!(
            a.open("synced", false).is_err(),
            "nothing works after the cut"
        );
        let after = io.after_power_cut().unwrap();
        let a = after.subdir("topics/a/0");
        assert_eq!(a.names(), vec!["synced", "unsynced"]);
        assert_eq!(a.live_bytes("synced").unwrap(), b"one");
        assert_eq!(a.live_bytes("unsynced").unwrap(), b"");
        assert_eq!(after.list_dirs("topics").unwrap(), vec!["a"]);
    }

    #[test]
    fn a_directory_rename_is_durable_only_after_both_parents_are_synced() {
        let io = FaultyIo::new();
        io.create_dir_all("topics/.creating").unwrap();
        io.create_dir_all("trash").unwrap();
        write(&io.subdir("topics/.creating"), "topic.toml", b"x", true);
        for dir in ["", "topics", "topics/.creating"] {
            StorageIo::sync_dir(&io, dir).unwrap();
        }
        io.rename_dir("topics/.creating", "topics/t").unwrap();
        let before = io.crash(CrashMode::DropUnsynced);
        assert_eq!(before.list_dirs("topics").unwrap(), vec![".creating"]);
        StorageIo::sync_dir(&io, "topics").unwrap();
        let after = io.crash(CrashMode::DropUnsynced);
        assert_eq!(after.list_dirs("topics").unwrap(), vec!["t"]);
        assert_eq!(
            after.subdir("topics/t").live_bytes("topic.toml").unwrap(),
            b"x"
        );
        // Moved to the trash and synced only at the source: gone from both after a cut.
        io.rename_dir("topics/t", "trash/t").unwrap();
        StorageIo::sync_dir(&io, "topics").unwrap();
        let cut = io.crash(CrashMode::DropUnsynced);
        assert!(cut.list_dirs("topics").unwrap().is_empty());
        assert!(cut.list_dirs("trash").unwrap().is_empty());
    }

    #[test]
    fn the_cut_comes_at_the_nth_operation() {
        let io = FaultyIo::new();
        let file = io.open("f", true).unwrap();
        StorageIo::sync_dir(&io, "").unwrap();
        io.cut_power_after(3, CrashMode::DropUnsynced);
        file.write_at(b"ab", 0).unwrap();
        file.sync_data().unwrap();
        assert!(!io.power_is_cut());
        assert!(file.write_at(b"cd", 2).is_err(), "the third operation");
        assert!(io.power_is_cut());
        assert!(file.sync_data().is_err());
        let after = io.after_power_cut().unwrap();
        assert_eq!(after.live_bytes("f").unwrap(), b"ab");
    }

    #[test]
    fn within_compares_whole_path_components() {
        assert!(within("topics/t/0", ""));
        assert!(within("topics/t/0", "topics/t"));
        assert!(within("topics/t", "topics/t"));
        assert!(!within("topics/t2/0", "topics/t"));
        assert!(!within("topics", "topics/t"));
    }

    #[test]
    fn a_scoped_sync_failure_fails_only_fsyncs_in_that_directory() {
        let io = FaultyIo::new();
        let a = io.subdir("a");
        let b = io.subdir("b");
        io.create_dir_all("a").unwrap();
        io.create_dir_all("b").unwrap();
        let fa = a.open("f", true).unwrap();
        let fb = b.open("f", true).unwrap();
        a.fail_one_sync_after(2);
        fb.sync_data().unwrap();
        fa.sync_data().unwrap();
        fb.sync_data().unwrap();
        assert!(fa.sync_data().is_err(), "the second fsync in a/ fails");
        fa.sync_data().unwrap();
        b.fail_sync_after(1);
        fa.sync_data().unwrap();
        assert!(fb.sync_data().is_err());
        assert!(fb.sync_data().is_err(), "sticky");
        fa.sync_data().unwrap();
    }

    #[test]
    fn hung_fsyncs_wait_until_released_while_everything_else_goes_on() {
        let io = FaultyIo::new();
        let slow = io.subdir("slow");
        io.create_dir_all("slow").unwrap();
        let hung_file = slow.open("f", true).unwrap();
        let other = io.open("g", true).unwrap();
        slow.hang_syncs();
        hung_file.write_at(b"abc", 0).unwrap();
        let syncer = std::thread::spawn(move || hung_file.sync_data());
        while io.hung_syncs() < 1 {
            std::thread::yield_now();
        }
        // Writes, reads and fsyncs outside the hung directory go on.
        other.write_at(b"xy", 0).unwrap();
        other.sync_data().unwrap();
        assert_eq!(slow.live_bytes("f").unwrap(), b"abc");
        assert_eq!(
            slow.durable_len("f"),
            Some(0),
            "a hung fsync has done nothing"
        );
        assert!(!syncer.is_finished());
        slow.release_syncs();
        syncer.join().unwrap().unwrap();
        assert_eq!(io.hung_syncs(), 0);
        assert_eq!(slow.durable_len("f"), Some(3));
    }
}
