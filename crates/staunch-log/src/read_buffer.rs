//! Buffers for large reads, used again once the reader is done with them.
//!
//! A fetch reads about 1 MiB at a time. A fresh buffer of that size has to be zeroed before
//! the read (or faulted in page by page, which zeroes it in the kernel): measured on the
//! consumer benchmark, that was 8–14 % of all the CPU time of a fetch. A [`ReadBuffer`] of at
//! least [`POOLED_MIN`] bytes is instead taken from a process-wide pool of buffers earlier
//! reads gave back — their old contents are overwritten by the read, never shown — and goes
//! back to the pool when the last [`Bytes`] sharing it is dropped. A buffer is used for reads
//! of 8/9 of its size or more, so an answer never holds much more memory than it needs. The
//! pool holds at most [`POOL_MAX_BYTES`] bytes: a buffer given back to a full pool pushes out
//! the oldest ones (so sizes no one reads any more do not stay).

use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// Reads smaller than this allocate a buffer of their own (zeroing it costs little).
const POOLED_MIN: usize = 64 * 1024;
/// At most this many bytes of buffers wait in the pool, process-wide.
const POOL_MAX_BYTES: usize = 32 << 20;

/// Buffers waiting to be used again.
static POOL: Mutex<Pool> = Mutex::new(Pool {
    buffers: Vec::new(),
    bytes: 0,
});

struct Pool {
    buffers: Vec<Vec<u8>>,
    /// The sum of the buffers' lengths.
    bytes: usize,
}

/// A buffer to read `len` bytes into; its bytes before the read are unspecified (zeros or
/// an earlier read's data), so it is only handed out once filled.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    len: usize,
}

impl ReadBuffer {
    /// A buffer of `len` bytes: a pooled one at most 1/8 larger if there is one.
    pub(crate) fn new(len: usize) -> Self {
        if len >= POOLED_MIN {
            let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
            let fitting = pool
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len && b.len() - len <= len / 8)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            if let Some(i) = fitting {
                let buf = pool.buffers.swap_remove(i);
                pool.bytes -= buf.len();
                return ReadBuffer { buf, len };
            }
        }
        ReadBuffer {
            buf: vec![0; len],
            len,
        }
    }

    /// The `len` bytes to read into.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[..self.len]
    }

    /// Keeps only the first `len` bytes.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// The bytes read, sharing this buffer (which goes back to the pool when the last of them
    /// is dropped) — or, if they leave more than 1/8 of it unused, a copy of their own, so an
    /// answer does not keep alive much more memory than it holds.
    pub(crate) fn into_bytes(self) -> Bytes {
        if self.buf.len() - self.len > self.buf.len() / 8 {
            Bytes::copy_from_slice(self.as_ref())
        } else {
            Bytes::from_owner(self)
        }
    }
}

impl AsRef<[u8]> for ReadBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        let size = self.buf.len();
        if size < POOLED_MIN {
            return;
        }
        if size > POOL_MAX_BYTES {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        while pool.bytes + size > POOL_MAX_BYTES {
            let oldest = pool.buffers.remove(0);
            pool.bytes -= oldest.len();
        }
        pool.bytes += size;
        pool.buffers.push(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the pool holds the buffer starting at `address`.
    fn pooled(address: *const u8) -> bool {
        let pool = POOL.lock().unwrap_or_else(PoisonError::into_inner);
        pool.buffers.iter().any(|b| b.as_ptr() == address)
    }

    #[test]
    fn a_large_buffer_comes_back_when_its_last_bytes_are_dropped() {
        // A size no other test reads, so the pool's other users cannot take it meanwhile.
        let len = POOLED_MIN + 12_345;
        let mut first = ReadBuffer::new(len);
        first.as_mut_slice().fill(7);
        let address = first.buf.as_ptr();
        let bytes = first.into_bytes();
        let shared = bytes.slice(10..20);
        drop(bytes);
        assert!(!pooled(address), "still shared, yet back in the pool");
        let other = ReadBuffer::new(len);
        assert_ne!(other.buf.as_ptr(), address, "still shared: not reused");
        drop(shared);
        let again = ReadBuffer::new(len);
        assert_eq!(again.buf.as_ptr(), address, "given back: reused");
        assert_eq!(again.as_ref().len(), len);
        drop(other);
    }

    #[test]
    fn a_buffer_much_larger_than_the_read_is_not_used() {
        let len = POOLED_MIN + 54_321;
        let large = ReadBuffer::new(len * 2);
        let address = large.buf.as_ptr();
        drop(large);
        let small = ReadBuffer::new(len);
        assert_ne!(small.buf.as_ptr(), address);
        assert_eq!(small.buf.len(), len);
    }

    #[test]
    fn a_small_answer_in_a_large_buffer_is_copied_out() {
        // A size no other test reads, so no one takes the buffer from the pool meanwhile.
        let mut buffer = ReadBuffer::new(POOLED_MIN * 7 + 3);
        let address = buffer.buf.as_ptr();
        buffer.as_mut_slice()[..3].copy_from_slice(b"abc");
        buffer.truncate(3);
        let bytes = buffer.into_bytes();
        assert_eq!(&bytes[..], b"abc");
        assert_eq!(bytes.len(), 3);
        assert!(pooled(address), "the large buffer is still held by 3 bytes");
    }
}
