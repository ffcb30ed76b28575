//! Reading the big-endian fields of the broker's small binary files (producer-state and
//! committed-offsets snapshots) without trusting them: every read fails with a reason instead of
//! panicking when the bytes run out.

/// The bytes not read yet.
pub(crate) struct ByteReader<'a>(&'a [u8]);

impl<'a> ByteReader<'a> {
    /// Reads the body of `bytes`, a file that ends in the crc32c of everything before it and
    /// is at least `header` bytes long before that: fails if it is shorter or the checksum
    /// does not match.
    pub(crate) fn checksummed(bytes: &'a [u8], header: usize) -> Result<Self, String> {
        if bytes.len() < header + 4 {
            return Err(format!("{} bytes is too short", bytes.len()));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err("checksum mismatch".to_owned());
        }
        Ok(ByteReader(body))
    }

    /// Bytes left.
    pub(crate) fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("ends early".to_owned());
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        self.array().map(|[b]| b)
    }

    pub(crate) fn i16(&mut self) -> Result<i16, String> {
        self.array().map(i16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        self.array().map(u32::from_be_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, String> {
        self.array().map(i32::from_be_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        self.array().map(i64::from_be_bytes)
    }

    /// A string: its length (u32) and UTF-8 bytes.
    pub(crate) fn str(&mut self) -> Result<String, String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8".to_owned())
    }

    /// A count (u32) of items of at least `min` bytes each, refused if they cannot fit in
    /// what is left.
    pub(crate) fn count(&mut self, min: usize) -> Result<usize, String> {
        let n = self.u32()? as usize;
        if n > self.0.len() / min.max(1) {
            return Err(format!("{n} items do not fit in the file"));
        }
        Ok(n)
    }
}
