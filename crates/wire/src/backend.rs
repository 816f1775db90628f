//! Server messages the gateway writes itself, and reading a server `ErrorResponse`.

use crate::frame::{Reader, WireError};
use bytes::{BufMut, BytesMut};

/// Severity of an error or notice, as PostgreSQL spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
    Notice,
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
            Severity::Notice => "NOTICE",
            Severity::Warning => "WARNING",
        }
    }
}

/// The fields of an error or notice the gateway produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFields {
    pub severity: Severity,
    /// SQLSTATE, five characters.
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where in the query text (1-based, in characters), as PostgreSQL's `P`.
    pub position: Option<u32>,
}

impl ErrorFields {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            position: None,
        }
    }

    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_position(mut self, position: u32) -> Self {
        self.position = Some(position);
        self
    }

    /// Appends this as an `ErrorResponse` (or `NoticeResponse` for notices/warnings).
    pub fn write(&self, buf: &mut BytesMut) {
        let tag = match self.severity {
            Severity::Error | Severity::Fatal => b'E',
            Severity::Notice | Severity::Warning => b'N',
        };
        write_message(buf, tag, |b| {
            let sev = self.severity.as_str();
            field(b, b'S', sev);
            field(b, b'V', sev);
            field(b, b'C', self.code);
            field(b, b'M', &self.message);
            if let Some(d) = &self.detail {
                field(b, b'D', d);
            }
            if let Some(h) = &self.hint {
                field(b, b'H', h);
            }
            if let Some(p) = self.position {
                field(b, b'P', &p.to_string());
            }
            b.put_u8(0);
        });
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut b = BytesMut::new();
        self.write(&mut b);
        b
    }
}

/// The (name, value) of a `ParameterStatus` message body.
pub fn parameter_status(body: &[u8]) -> Result<(&str, &str), crate::WireError> {
    let mut r = crate::frame::Reader::new(body);
    Ok((r.cstr("parameter name")?, r.cstr("parameter value")?))
}

/// The value of parameter `name` among whole `ParameterStatus` messages.
pub fn find_parameter<'a>(messages: &'a [u8], name: &str) -> Option<&'a str> {
    let mut rest = messages;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let end = 1 + len;
        if len < 4 || rest.len() < end {
            return None;
        }
        if rest[0] == b'S' {
            if let Ok((n, v)) = parameter_status(&rest[5..end]) {
                if n == name {
                    return Some(v);
                }
            }
        }
        rest = &rest[end..];
    }
    None
}

fn field(b: &mut BytesMut, code: u8, value: &str) {
    b.put_u8(code);
    // A NUL inside a value would end the field early; PostgreSQL never sends one.
    b.extend(value.bytes().filter(|&c| c != 0));
    b.put_u8(0);
}

/// Writes `tag`, a length placeholder, the body from `body`, then patches the length.
pub fn write_message(buf: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    buf.put_u8(tag);
    let at = buf.len();
    buf.put_i32(0);
    body(buf);
    let len = (buf.len() - at) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn authentication_ok(buf: &mut BytesMut) {
    write_message(buf, b'R', |b| b.put_i32(0));
}

/// `AuthenticationSASL` offering the given mechanisms.
pub fn authentication_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    write_message(buf, b'R', |b| {
        b.put_i32(10);
        for m in mechanisms {
            b.put_slice(m.as_bytes());
            b.put_u8(0);
        }
        b.put_u8(0);
    });
}

pub fn authentication_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, b'R', |b| {
        b.put_i32(11);
        b.put_slice(data);
    });
}

pub fn authentication_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    write_message(buf, b'R', |b| {
        b.put_i32(12);
        b.put_slice(data);
    });
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    write_message(buf, b'K', |b| {
        b.put_i32(pid);
        b.put_i32(secret);
    });
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    write_message(buf, b'Z', |b| b.put_u8(status));
}

/// `NegotiateProtocolVersion`: the newest minor version we support and the
/// `_pq_.` options we did not recognise.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unknown: &[&str]) {
    write_message(buf, b'v', |b| {
        b.put_i32(3 << 16 | minor);
        b.put_i32(unknown.len() as i32);
        for o in unknown {
            b.put_slice(o.as_bytes());
            b.put_u8(0);
        }
    });
}

/// Reads the SQLSTATE (`C`) and message (`M`) of a server `ErrorResponse` body.
pub fn error_code_and_message(body: &[u8]) -> Result<(&str, &str), WireError> {
    let mut r = Reader::new(body);
    let (mut code, mut message) = ("", "");
    loop {
        let kind = r.u8("error field type")?;
        if kind == 0 {
            return Ok((code, message));
        }
        let value = r.cstr("error field")?;
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    #[test]
    fn error_response_round_trips() {
        let e = ErrorFields::error("42501", "no").with_hint("ask");
        let b = e.to_bytes();
        let h = Header::parse(&b, 1000).unwrap().unwrap();
        assert_eq!(h.tag, b'E');
        assert_eq!(h.frame_len(), b.len());
        assert_eq!(error_code_and_message(&b[5..]).unwrap(), ("42501", "no"));
    }

    #[test]
    fn notices_use_the_notice_tag() {
        let b = ErrorFields::new(Severity::Notice, "00000", "hi").to_bytes();
        assert_eq!(b[0], b'N');
    }

    #[test]
    fn nul_in_a_message_cannot_forge_fields() {
        let b = ErrorFields::error("42501", "a\0Mforged").to_bytes();
        assert_eq!(
            error_code_and_message(&b[5..]).unwrap(),
            ("42501", "aMforged")
        );
    }

    #[test]
    fn truncated_error_bodies_are_errors() {
        assert!(error_code_and_message(b"Cabc").is_err());
        assert!(error_code_and_message(b"").is_err());
    }

    #[test]
    fn fixed_messages_have_the_documented_bytes() {
        let mut b = BytesMut::new();
        ready_for_query(&mut b, b'I');
        assert_eq!(&b[..], b"Z\0\0\0\x05I");
        let mut b = BytesMut::new();
        backend_key_data(&mut b, 1, 2);
        assert_eq!(&b[..], b"K\0\0\0\x0c\0\0\0\x01\0\0\0\x02");
        let mut b = BytesMut::new();
        negotiate_protocol_version(&mut b, 0, &["_pq_.x"]);
        assert_eq!(&b[..], b"v\0\0\0\x13\0\x03\0\0\0\0\0\x01_pq_.x\0");
    }
}
