//! The one error type of `staunch-log`.

use std::io;

use staunch_core::{BatchError, Offset};

/// Why a log operation failed. Every variant says whether anything was written: only
/// [`LogError::Failed`] leaves the log unable to accept appends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The appended bytes are not valid v2 record batches; nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// An append with no batch in it; nothing was written.
    #[error("append contained no record batch")]
    EmptyAppend,
    /// The disk (or quota) is full; nothing of this append was kept, everything acknowledged
    /// before is intact, and appends work again once space is freed.
    #[error("disk full while appending to {file}: {source}")]
    DiskFull {
        /// The segment file being written.
        file: String,
        /// The operating system's error (ENOSPC / EDQUOT).
        source: io::Error,
    },
    /// The log refuses appends because a write or fsync failed and what reached the disk is
    /// unknown. Data acknowledged as durable before the failure is intact; reopen the log
    /// (which runs crash recovery) to continue.
    #[error("log is failed and refuses appends: {reason}")]
    Failed {
        /// The first failure, e.g. `fdatasync of 00000000000000000000.log failed: EIO`.
        reason: String,
    },
    /// The requested offset is outside `earliest ..= log_end`.
    #[error("offset {requested} out of range {earliest}..={log_end}")]
    OffsetOutOfRange {
        /// What was asked for.
        requested: Offset,
        /// The first offset still in the log.
        earliest: Offset,
        /// The next offset the log will assign.
        log_end: Offset,
    },
    /// A stored batch failed its CRC or framing check; it is never served.
    #[error("corrupt data in {file} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        file: String,
        /// Byte position of the bad batch in the file.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// An I/O error that did not change the log (a failed read, a failed directory listing).
    #[error("{op} failed: {source}")]
    Io {
        /// What was being done, with the file name.
        op: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),
    /// The log was truncated while this call waited for records to become durable: they may
    /// have been cut, so they are not reported durable (the caller must not acknowledge them).
    #[error("the log was truncated before the records became durable")]
    Truncated,
    /// The log was closed.
    #[error("log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        LogError::Io {
            op: op.into(),
            source,
        }
    }
}

/// Whether an I/O error means "out of space" (ENOSPC, or EDQUOT for a quota).
pub(crate) fn is_out_of_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || e.kind() == io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
