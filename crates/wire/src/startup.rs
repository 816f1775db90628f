//! The untagged first packet of a connection: `length: i32`, `code: i32`, body.
//!
//! `code` is either a protocol version (major << 16 | minor) for a real startup
//! message, or one of the magic request codes below.

use crate::frame::{Reader, WireError};

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;
/// Protocol 3.0, the version the gateway speaks.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// PostgreSQL refuses startup packets longer than this; so do we.
pub const MAX_STARTUP_PACKET: usize = 10_000;

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Startup {
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: i32,
        secret: i32,
    },
    Startup {
        /// Minor version the client asked for (major is always 3).
        minor: u16,
        params: Vec<(String, String)>,
    },
}

impl Startup {
    /// Startup parameter by name.
    pub fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the length word of a first packet. Returns the body length (after the
/// length word), or an error for lengths PostgreSQL itself would refuse.
pub fn packet_len(len_word: [u8; 4]) -> Result<usize, WireError> {
    let len = i32::from_be_bytes(len_word);
    if len < 8 {
        return Err(WireError::BadLength(len.into()));
    }
    let len = len as usize;
    if len > MAX_STARTUP_PACKET {
        return Err(WireError::TooLarge {
            len,
            limit: MAX_STARTUP_PACKET,
        });
    }
    Ok(len - 4)
}

/// Decodes a first packet body (everything after the length word).
pub fn parse(body: &[u8]) -> Result<Startup, WireError> {
    let mut r = Reader::new(body);
    let code = r.i32("protocol code")?;
    match code {
        SSL_REQUEST if r.is_empty() => Ok(Startup::SslRequest),
        GSSENC_REQUEST if r.is_empty() => Ok(Startup::GssEncRequest),
        CANCEL_REQUEST => {
            let pid = r.i32("cancel pid")?;
            let secret = r.i32("cancel secret")?;
            if !r.is_empty() {
                return Err(WireError::Unexpected(
                    "trailing bytes in CancelRequest".into(),
                ));
            }
            Ok(Startup::Cancel { pid, secret })
        }
        SSL_REQUEST | GSSENC_REQUEST => Err(WireError::Unexpected(
            "trailing bytes in encryption request".into(),
        )),
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(WireError::UnsupportedVersion { major, minor });
            }
            let mut params = Vec::new();
            loop {
                let key = r.cstr("startup parameter name")?;
                if key.is_empty() {
                    break;
                }
                let value = r.cstr("startup parameter value")?;
                params.push((key.to_owned(), value.to_owned()));
            }
            if !r.is_empty() {
                return Err(WireError::Unexpected(
                    "bytes after the startup parameter list".into(),
                ));
            }
            Ok(Startup::Startup { minor, params })
        }
    }
}

/// Encodes a startup message (used by tests and by the upstream connector's
/// cancel path; libpq-compatible layout).
pub fn encode_cancel(pid: i32, secret: i32) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&16i32.to_be_bytes());
    out[4..8].copy_from_slice(&CANCEL_REQUEST.to_be_bytes());
    out[8..12].copy_from_slice(&pid.to_be_bytes());
    out[12..16].copy_from_slice(&secret.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn startup_body(code: i32, params: &[(&str, &str)]) -> Vec<u8> {
        let mut b = code.to_be_bytes().to_vec();
        for (k, v) in params {
            b.extend_from_slice(k.as_bytes());
            b.push(0);
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        }
        b.push(0);
        b
    }

    #[test]
    fn parses_a_libpq_startup_message() {
        let body = startup_body(PROTOCOL_3_0, &[("user", "alice"), ("database", "app")]);
        let Startup::Startup { minor, params } = parse(&body).unwrap() else {
            panic!("not a startup")
        };
        assert_eq!(minor, 0);
        assert_eq!(Startup::param(&params, "user"), Some("alice"));
        assert_eq!(Startup::param(&params, "database"), Some("app"));
    }

    #[test]
    fn reads_protocol_3_2_minor() {
        let body = startup_body(3 << 16 | 2, &[("user", "a")]);
        assert!(matches!(
            parse(&body),
            Ok(Startup::Startup { minor: 2, .. })
        ));
    }

    #[test]
    fn refuses_protocol_2_and_garbage_codes() {
        assert!(matches!(
            parse(&startup_body(2 << 16, &[])),
            Err(WireError::UnsupportedVersion { major: 2, .. })
        ));
        assert!(parse(b"GET / HTTP/1.1\r\n").is_err());
    }

    #[test]
    fn parses_requests_and_cancel() {
        assert_eq!(parse(&SSL_REQUEST.to_be_bytes()), Ok(Startup::SslRequest));
        assert_eq!(
            parse(&GSSENC_REQUEST.to_be_bytes()),
            Ok(Startup::GssEncRequest)
        );
        let cancel = encode_cancel(42, -7);
        assert_eq!(
            parse(&cancel[4..]),
            Ok(Startup::Cancel {
                pid: 42,
                secret: -7
            })
        );
    }

    #[test]
    fn truncated_and_unterminated_packets_are_errors() {
        let mut body = startup_body(PROTOCOL_3_0, &[("user", "alice")]);
        body.truncate(body.len() - 3);
        assert!(parse(&body).is_err());
        assert!(parse(&[0, 3]).is_err());
        assert!(parse(&CANCEL_REQUEST.to_be_bytes()).is_err());
        let mut trailing = startup_body(PROTOCOL_3_0, &[]);
        trailing.push(b'x');
        assert!(parse(&trailing).is_err());
    }

    #[test]
    fn packet_lengths_are_bounded() {
        assert!(packet_len(7i32.to_be_bytes()).is_err());
        assert!(packet_len((-5i32).to_be_bytes()).is_err());
        assert!(packet_len(1_000_000i32.to_be_bytes()).is_err());
        assert_eq!(packet_len(16i32.to_be_bytes()), Ok(12));
    }
}
