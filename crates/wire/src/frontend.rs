//! Reading the client messages the gateway looks inside. Bodies only: the caller
//! has already split off the header with [`crate::Header`].

use crate::frame::{Reader, WireError};
use bytes::{BufMut, BytesMut};

/// The text of a `Query`, as bytes in the session's client encoding.
pub fn query_bytes(body: &[u8]) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body);
    let text = r.cbytes("query text")?;
    if !r.is_empty() {
        return Err(WireError::Unexpected("bytes after Query text".into()));
    }
    Ok(text)
}

/// A `Bind`: the statement it binds and its parameter values (`None`: NULL),
/// in whatever format the client sent them.
#[derive(Debug, PartialEq, Eq)]
pub struct Bind<'a> {
    pub statement: &'a [u8],
    pub params: Vec<Value<'a>>,
}

pub fn bind(body: &[u8]) -> Result<Bind<'_>, WireError> {
    let mut r = Reader::new(body);
    r.cbytes("portal name")?;
    let statement = r.cbytes("statement name")?;
    let params = values(&mut r, "parameter")?;
    Ok(Bind { statement, params })
}

/// One parameter of a `Bind` or argument of a `FunctionCall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Text(&'a [u8]),
    Binary(&'a [u8]),
}

/// Format codes, then length-prefixed values (`Bind` and `FunctionCall`
/// share this layout); `what` names them in errors.
fn values<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<Vec<Value<'a>>, WireError> {
    let nformats = r.i16("format count")?;
    if nformats < 0 {
        return Err(WireError::Unexpected("negative format count".into()));
    }
    let mut formats = Vec::with_capacity(nformats as usize);
    for _ in 0..nformats {
        formats.push(r.i16("format code")?);
    }
    let n = r.i16("value count")?;
    if n < 0 {
        return Err(WireError::Unexpected(format!("negative {what} count")));
    }
    if formats.len() > 1 && formats.len() != n as usize {
        return Err(WireError::Unexpected(format!(
            "{what} formats do not match the {what}s"
        )));
    }
    let mut out = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let len = r.i32("value length")?;
        let binary = match formats.as_slice() {
            [] => false,
            [one] => *one == 1,
            all => all[i] == 1,
        };
        out.push(match len {
            -1 => Value::Null,
            l if l < 0 => return Err(WireError::Unexpected(format!("negative {what} length"))),
            l => {
                let v = r.take(l as usize, "value")?;
                if binary {
                    Value::Binary(v)
                } else {
                    Value::Text(v)
                }
            }
        });
    }
    Ok(out)
}

/// The parts of `Parse` the gateway needs, as bytes in the session's client
/// encoding (the caller decodes them; see [`crate::encoding`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Parse<'a> {
    pub statement: &'a [u8],
    pub query: &'a [u8],
}

pub fn parse(body: &[u8]) -> Result<Parse<'_>, WireError> {
    let mut r = Reader::new(body);
    let statement = r.cbytes("statement name")?;
    let query = r.cbytes("query text")?;
    let n = r.i16("parameter type count")?;
    if n < 0 {
        return Err(WireError::Unexpected("negative parameter count".into()));
    }
    r.take(n as usize * 4, "parameter types")?;
    if !r.is_empty() {
        return Err(WireError::Unexpected("bytes after Parse".into()));
    }
    Ok(Parse { statement, query })
}

/// `FunctionCall` (the fast-path interface): the function's OID and its
/// arguments.
#[derive(Debug, PartialEq, Eq)]
pub struct FunctionCall<'a> {
    pub oid: u32,
    pub args: Vec<Value<'a>>,
}

pub fn function_call(body: &[u8]) -> Result<FunctionCall<'_>, WireError> {
    let mut r = Reader::new(body);
    let oid = r.i32("function oid")? as u32;
    let args = values(&mut r, "argument")?;
    r.i16("result format")?;
    if !r.is_empty() {
        return Err(WireError::Unexpected("bytes after FunctionCall".into()));
    }
    Ok(FunctionCall { oid, args })
}

/// `SASLInitialResponse`: mechanism name and the client-first-message.
pub fn sasl_initial_response(body: &[u8]) -> Result<(&str, &[u8]), WireError> {
    let mut r = Reader::new(body);
    let mechanism = r.cstr("SASL mechanism")?;
    let len = r.i32("SASL data length")?;
    if len < 0 {
        return Ok((mechanism, &[]));
    }
    let data = r.take(len as usize, "SASL data")?;
    if !r.is_empty() {
        return Err(WireError::Unexpected("bytes after SASL data".into()));
    }
    Ok((mechanism, data))
}

/// Appends a `Query` message (used to inject the gateway's own statements).
pub fn write_query(buf: &mut BytesMut, sql: &str) {
    write_query_bytes(buf, sql.as_bytes())
}

/// Appends a `Query` whose text is already in the session's client encoding.
pub fn write_query_bytes(buf: &mut BytesMut, sql: &[u8]) {
    buf.put_u8(b'Q');
    buf.put_i32((4 + sql.len() + 1) as i32);
    buf.put_slice(sql);
    buf.put_u8(0);
}

/// Appends a `Describe` of a prepared statement.
pub fn write_describe_statement(buf: &mut BytesMut, name: &str) {
    buf.put_u8(b'D');
    buf.put_i32((4 + 1 + name.len() + 1) as i32);
    buf.put_u8(b'S');
    buf.put_slice(name.as_bytes());
    buf.put_u8(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_function_calls_without_panicking() {
        // set_config('role', 'x', false): three text arguments.
        let mut b = Vec::new();
        b.extend_from_slice(&2078u32.to_be_bytes());
        b.extend_from_slice(&1i16.to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        for v in [&b"role"[..], b"x", b"f"] {
            b.extend_from_slice(&(v.len() as i32).to_be_bytes());
            b.extend_from_slice(v);
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        let f = function_call(&b).unwrap();
        assert_eq!(f.oid, 2078);
        assert_eq!(f.args[0], Value::Text(b"role"));
        // Every truncation is an error, never a panic.
        for cut in 0..b.len() {
            assert!(function_call(&b[..cut]).is_err(), "{cut}");
        }
    }

    #[test]
    fn reads_query_text() {
        assert_eq!(query_bytes(b"SELECT 1\0").unwrap(), b"SELECT 1");
        assert!(query_bytes(b"SELECT 1").is_err());
        assert!(query_bytes(b"SELECT 1\0junk").is_err());
    }

    #[test]
    fn reads_parse() {
        let mut body = b"s1\0SELECT $1\0".to_vec();
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&23i32.to_be_bytes());
        let p = parse(&body).unwrap();
        assert_eq!(p.statement, b"s1");
        assert_eq!(p.query, b"SELECT $1");
    }

    #[test]
    fn parse_with_lying_parameter_count_is_refused() {
        let mut body = b"\0SELECT 1\0".to_vec();
        body.extend_from_slice(&5i16.to_be_bytes());
        assert!(parse(&body).is_err());
        let mut neg = b"\0SELECT 1\0".to_vec();
        neg.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(parse(&neg).is_err());
    }

    #[test]
    fn reads_sasl_initial_response() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&3i32.to_be_bytes());
        body.extend_from_slice(b"abc");
        assert_eq!(
            sasl_initial_response(&body).unwrap(),
            ("SCRAM-SHA-256", &b"abc"[..])
        );
        body.truncate(body.len() - 1);
        assert!(sasl_initial_response(&body).is_err());
    }

    #[test]
    fn written_messages_frame_correctly() {
        let mut b = BytesMut::new();
        write_query(&mut b, "SELECT 1");
        let h = crate::Header::parse(&b, 100).unwrap().unwrap();
        assert_eq!(h.frame_len(), b.len());
        assert_eq!(query_bytes(&b[5..]).unwrap(), b"SELECT 1");
        let mut d = BytesMut::new();
        write_describe_statement(&mut d, "x");
        assert_eq!(&d[..], b"D\0\0\0\x07Sx\0");
    }
}
