//! Kafka framing: every request and response is a big-endian `i32` size followed by that many
//! bytes.

/// The largest request frame a server accepts by default: 100 MiB, as Apache Kafka's
/// `socket.request.max.bytes`.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 100 * 1024 * 1024;

/// Why a frame's size prefix was refused. The connection cannot be resynchronised after either,
/// so the caller closes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The size prefix is negative.
    #[error("frame size {0} is negative")]
    Negative(i32),
    /// The frame is larger than allowed.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The size the prefix claims.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Reads a size prefix and checks it against `max` before the caller allocates the body.
pub fn frame_length(prefix: [u8; 4], max: usize) -> Result<usize, FrameError> {
    let len = i32::from_be_bytes(prefix);
    let len = usize::try_from(len).map_err(|_| FrameError::Negative(len))?;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_allocation() {
        assert_eq!(frame_length(10i32.to_be_bytes(), 100), Ok(10));
        assert_eq!(
            frame_length(i32::MAX.to_be_bytes(), 100),
            Err(FrameError::TooLarge {
                len: i32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(
            frame_length((-5i32).to_be_bytes(), 100),
            Err(FrameError::Negative(-5))
        );
    }
}
