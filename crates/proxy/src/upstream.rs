//! Connecting to the database: TCP, TLS per `sslmode`, startup, and whatever
//! authentication the server asks for (SCRAM-SHA-256, md5, cleartext, trust).
//!
//! The startup replies the client must see (ParameterStatus) are kept as raw
//! bytes and replayed to every client that uses the connection.

use crate::stream::Stream;
use bytes::{Buf, Bytes, BytesMut};
use config::UpstreamTls;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::backend::error_code_and_message;
use wire::Header;

/// Where and how to reach one `[[database]]`.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub tls_mode: UpstreamTls,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub server_name: Option<ServerName<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot reach {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("server at {0} does not offer TLS, and this database requires it")]
    TlsRefused(String),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(String, std::io::Error),
    #[error("server error {code}: {message}")]
    Server { code: String, message: String },
    #[error("authentication toward the database failed: {0}")]
    Auth(String),
    #[error("protocol error from the database: {0}")]
    Protocol(String),
    #[error("connection to the database lost: {0}")]
    Io(#[from] std::io::Error),
}

/// An authenticated upstream connection, ready for queries.
pub struct ServerConn {
    pub stream: Stream,
    /// The ParameterStatus messages of the startup, as raw wire bytes.
    pub parameter_status: Bytes,
    pub pid: i32,
    pub secret: i32,
    pub idle_since: Instant,
}

impl ServerConn {
    /// Says Terminate (so the server ends the session cleanly, rolling back any
    /// open transaction) and closes. Best effort, bounded.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.stream.write_all(&[b'X', 0, 0, 0, 4]),
        )
        .await;
    }
}

impl Target {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// TCP (nodelay), then TLS as the mode says.
    pub async fn transport(&self) -> Result<Stream, UpstreamError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| UpstreamError::Connect(self.addr(), e))?;
        tcp.set_nodelay(true)?;
        let Some(tls) = &self.tls else {
            return Ok(Stream::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut req = BytesMut::new();
        frontend::ssl_request(&mut req);
        tcp.write_all(&req).await?;
        let answer = tcp.read_u8().await?;
        match (answer, self.tls_mode) {
            (b'S', _) => {
                let name = self
                    .server_name
                    .clone()
                    .expect("server name is set with the TLS config");
                let s = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| UpstreamError::Tls(self.addr(), e))?;
                Ok(Stream::ClientTls(Box::new(s)))
            }
            (b'N', UpstreamTls::Prefer) => Ok(Stream::Plain(tcp)),
            (b'N', _) => Err(UpstreamError::TlsRefused(self.addr())),
            (other, _) => Err(UpstreamError::Protocol(format!(
                "unexpected answer {other:#x} to SSLRequest"
            ))),
        }
    }

    /// A new connection as `user`, authenticated and past ReadyForQuery.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
        params: &[(String, String)],
    ) -> Result<ServerConn, UpstreamError> {
        let mut stream = self.transport().await?;
        let mut out = BytesMut::new();
        let mut all: Vec<(&str, &str)> = vec![("user", user), ("database", &self.dbname)];
        all.extend(params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        frontend::startup_message(all, &mut out)?;
        stream.write_all(&out).await?;

        let mut buf = BytesMut::with_capacity(1024);
        let mut scram: Option<ScramSha256> = None;
        let mut parameter_status = BytesMut::new();
        let mut key = None;
        loop {
            let (tag, body) = read_frame(&mut stream, &mut buf).await?;
            match tag {
                b'R' => {
                    let reply = authenticate(user, password, &body, &mut scram)?;
                    if let Some(msg) = reply {
                        stream.write_all(&msg).await?;
                    }
                }
                b'S' => {
                    parameter_status.extend_from_slice(b"S");
                    parameter_status.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
                    parameter_status.extend_from_slice(&body);
                }
                b'K' if body.len() >= 8 => {
                    let mut b = &body[..];
                    key = Some((b.get_i32(), b.get_i32()));
                }
                b'Z' => {
                    let (pid, secret) = key.ok_or_else(|| {
                        UpstreamError::Protocol("no BackendKeyData before ReadyForQuery".into())
                    })?;
                    return Ok(ServerConn {
                        stream,
                        parameter_status: parameter_status.freeze(),
                        pid,
                        secret,
                        idle_since: Instant::now(),
                    });
                }
                b'E' => {
                    let (code, message) = error_code_and_message(&body)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                    return Err(UpstreamError::Server {
                        code: code.to_string(),
                        message: message.to_string(),
                    });
                }
                // Notices and NegotiateProtocolVersion during startup: nothing to do.
                b'N' | b'v' => {}
                other => {
                    return Err(UpstreamError::Protocol(format!(
                        "unexpected message {:?} during startup",
                        other as char
                    )))
                }
            }
        }
    }
}

/// Answers one Authentication request; `None` when no reply is due.
fn authenticate(
    user: &str,
    password: &str,
    body: &[u8],
    scram: &mut Option<ScramSha256>,
) -> Result<Option<BytesMut>, UpstreamError> {
    if body.len() < 4 {
        return Err(UpstreamError::Protocol(
            "short Authentication message".into(),
        ));
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let data = &body[4..];
    let mut out = BytesMut::new();
    match code {
        0 => return Ok(None),
        3 => frontend::password_message(password.as_bytes(), &mut out)?,
        5 => {
            let salt: [u8; 4] = data
                .try_into()
                .map_err(|_| UpstreamError::Protocol("bad md5 salt".into()))?;
            let hash = md5_hash(user.as_bytes(), password.as_bytes(), salt);
            frontend::password_message(hash.as_bytes(), &mut out)?;
        }
        10 => {
            let offers_scram = data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
            if !offers_scram {
                return Err(UpstreamError::Auth(
                    "the server offers no SASL mechanism we support (SCRAM-SHA-256)".into(),
                ));
            }
            let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)?;
            *scram = Some(s);
        }
        11 => {
            let s = scram
                .as_mut()
                .ok_or_else(|| UpstreamError::Protocol("SASLContinue before SASL".into()))?;
            s.update(data)
                .map_err(|e| UpstreamError::Auth(e.to_string()))?;
            frontend::sasl_response(s.message(), &mut out)?;
        }
        12 => {
            let s = scram
                .as_mut()
                .ok_or_else(|| UpstreamError::Protocol("SASLFinal before SASL".into()))?;
            s.finish(data)
                .map_err(|e| UpstreamError::Auth(format!("server signature invalid: {e}")))?;
            return Ok(None);
        }
        other => {
            return Err(UpstreamError::Auth(format!(
                "the server asks for authentication method {other}, which jitgate does not support"
            )))
        }
    }
    Ok(Some(out))
}

/// Reads one whole message (startup-sized: at most 1 MiB).
pub(crate) async fn read_frame<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<(u8, Bytes), UpstreamError> {
    loop {
        if let Some(h) =
            Header::parse(buf, 1 << 20).map_err(|e| UpstreamError::Protocol(e.to_string()))?
        {
            if buf.len() >= h.frame_len() {
                let mut frame = buf.split_to(h.frame_len());
                frame.advance(Header::SIZE);
                return Ok((h.tag, frame.freeze()));
            }
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(
        code: i32,
        data: &[u8],
        scram: &mut Option<ScramSha256>,
    ) -> Result<Option<BytesMut>, UpstreamError> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(data);
        authenticate("jit_alice", "pw", &body, scram)
    }

    #[test]
    fn md5_answer_is_md5_of_md5_password_user_and_salt() {
        let out = auth(5, &[1, 2, 3, 4], &mut None).unwrap().unwrap();
        // 'p', length, "md5" + hex(md5(hex(md5("pw" + "jit_alice")) + salt)), NUL
        let inner = format!("{:x}", md5_digest(b"pwjit_alice"));
        let mut outer_input = inner.into_bytes();
        outer_input.extend_from_slice(&[1, 2, 3, 4]);
        let want = format!("md5{:x}", md5_digest(&outer_input));
        assert_eq!(out[0], b'p');
        assert_eq!(&out[5..out.len() - 1], want.as_bytes());
    }

    fn md5_digest(b: &[u8]) -> md5::Digest {
        md5::compute(b)
    }

    #[test]
    fn cleartext_sends_the_password_and_ok_needs_no_answer() {
        let out = auth(3, &[], &mut None).unwrap().unwrap();
        assert_eq!(&out[..], b"p\0\0\0\x07pw\0");
        assert!(auth(0, &[], &mut None).unwrap().is_none());
    }

    #[test]
    fn unsupported_or_out_of_order_requests_are_errors() {
        assert!(matches!(
            auth(10, b"SCRAM-SHA-256-PLUS\0\0", &mut None),
            Err(UpstreamError::Auth(_))
        ));
        assert!(matches!(
            auth(11, b"r=x", &mut None),
            Err(UpstreamError::Protocol(_))
        ));
        assert!(matches!(
            auth(7, &[], &mut None),
            Err(UpstreamError::Auth(_))
        ));
        assert!(matches!(
            auth(5, &[1, 2], &mut None),
            Err(UpstreamError::Protocol(_))
        ));
        assert!(authenticate("u", "p", &[0, 0], &mut None).is_err());
    }
}
