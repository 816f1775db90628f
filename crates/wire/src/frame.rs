//! Message framing: every message after the startup packet is `tag: u8`,
//! `length: i32` (counting itself, not the tag), then `length - 4` body bytes.

/// Errors in bytes received from a peer. Every variant means "close the
/// connection with a protocol-violation error": none is recoverable mid-stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("invalid message length {0}")]
    BadLength(i64),
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("message truncated: {0}")]
    Truncated(&'static str),
    #[error("string is not valid UTF-8 or lacks its terminator: {0}")]
    BadString(&'static str),
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

/// The five-byte header of a tagged message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Body length, excluding the tag and the length word itself.
    pub body_len: usize,
}

impl Header {
    pub const SIZE: usize = 5;

    /// Reads a header from the front of `buf`. `Ok(None)` means "need more bytes".
    /// Lengths below 4 or above `limit` are refused before any body is buffered, so
    /// a hostile peer cannot make the gateway allocate what it announces.
    #[inline]
    pub fn parse(buf: &[u8], limit: usize) -> Result<Option<Header>, WireError> {
        if buf.len() < Self::SIZE {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(WireError::BadLength(len.into()));
        }
        let body_len = len as usize - 4;
        if body_len > limit {
            return Err(WireError::TooLarge {
                len: body_len,
                limit,
            });
        }
        Ok(Some(Header {
            tag: buf[0],
            body_len,
        }))
    }

    /// Total size on the wire, header included.
    #[inline]
    pub fn frame_len(&self) -> usize {
        Self::SIZE + self.body_len
    }
}

/// A cursor over a message body for reading NUL-terminated strings and integers.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let bytes = self.cbytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| WireError::BadString(what))
    }

    /// A NUL-terminated string's bytes, in whatever encoding they are.
    pub fn cbytes(&mut self, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::BadString(what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    pub fn i16(&mut self, what: &'static str) -> Result<i16, WireError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        if self.buf.len() < n {
            return Err(WireError::Truncated(what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_needs_five_bytes() {
        assert_eq!(Header::parse(b"Q\0\0\0", 100), Ok(None));
    }

    #[test]
    fn header_reads_tag_and_body_length() {
        let h = Header::parse(b"Q\0\0\0\x09SELECT", 100).unwrap().unwrap();
        assert_eq!(h.tag, b'Q');
        assert_eq!(h.body_len, 5);
        assert_eq!(h.frame_len(), 10);
    }

    #[test]
    fn impossible_lengths_are_refused() {
        assert_eq!(
            Header::parse(b"Q\0\0\0\x03", 100),
            Err(WireError::BadLength(3))
        );
        assert_eq!(
            Header::parse(b"Q\xff\xff\xff\xff", 100),
            Err(WireError::BadLength(-1))
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_buffering() {
        assert!(matches!(
            Header::parse(b"d\x7f\xff\xff\xff", 1 << 20),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn reader_rejects_unterminated_and_non_utf8_strings() {
        assert!(Reader::new(b"abc").cstr("x").is_err());
        assert!(Reader::new(b"\xff\xfe\0").cstr("x").is_err());
        let mut r = Reader::new(b"ab\0cd\0");
        assert_eq!(r.cstr("x").unwrap(), "ab");
        assert_eq!(r.cstr("x").unwrap(), "cd");
        assert!(r.is_empty());
        assert!(r.i32("n").is_err());
    }
}
