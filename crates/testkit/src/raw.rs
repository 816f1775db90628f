//! A raw protocol client: builds messages byte by byte, authenticates with
//! SCRAM, and reads whatever comes back. For pipelines and hostile input.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
}

pub fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

pub fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

pub fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = format!("{name}\0{sql}\0").into_bytes();
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'P', &b)
}

pub fn bind(portal: &str, statement: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0{statement}\0").into_bytes();
    b.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    msg(b'B', &b)
}

pub fn execute(portal: &str) -> Vec<u8> {
    let mut b = format!("{portal}\0").into_bytes();
    b.extend_from_slice(&0i32.to_be_bytes());
    msg(b'E', &b)
}

pub fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

pub fn startup_packet(params: &[(&str, &str)], version: i32) -> Vec<u8> {
    let mut body = version.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// SQLSTATE and message of an ErrorResponse body.
pub fn error_fields(body: &[u8]) -> (String, String) {
    let (c, m) = wire::backend::error_code_and_message(body).expect("valid error");
    (c.to_string(), m.to_string())
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    /// Connects and logs in; returns after the first ReadyForQuery.
    pub async fn login(addr: SocketAddr, user: &str, password: &str) -> Raw {
        let mut r = Raw::connect(addr).await;
        r.send(&startup_packet(
            &[("user", user), ("database", "app")],
            3 << 16,
        ))
        .await;
        r.authenticate(password).await;
        r
    }

    /// Runs SCRAM, then reads up to ReadyForQuery; returns the messages that
    /// followed authentication. Panics on any error.
    pub async fn authenticate(&mut self, password: &str) -> Vec<(u8, Bytes)> {
        let mut scram = None;
        let mut after_auth = Vec::new();
        loop {
            let (tag, body) = self.recv().await.expect("connection open during login");
            match tag {
                b'R' => {
                    let code = (&body[..4]).get_i32();
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        10 => {
                            let s = ScramSha256::new(
                                password.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .unwrap();
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram.as_mut().unwrap();
                            s.update(&body[4..]).unwrap();
                            frontend::sasl_response(s.message(), &mut out).unwrap();
                        }
                        12 => {
                            scram.as_mut().unwrap().finish(&body[4..]).unwrap();
                            continue;
                        }
                        other => panic!("unexpected auth request {other}"),
                    }
                    self.send(&out).await;
                }
                b'E' => panic!("login failed: {:?}", error_fields(&body)),
                b'Z' => {
                    after_auth.push((tag, body));
                    return after_auth;
                }
                _ => after_auth.push((tag, body)),
            }
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Sends, tolerating a peer that already closed.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next message, or None at EOF. Panics after 10 s of silence.
    pub async fn recv(&mut self) -> Option<(u8, Bytes)> {
        self.recv_within(Duration::from_secs(10))
            .await
            .expect("no reply within 10s")
    }

    /// Like `recv`, but Err(()) on timeout instead of panicking.
    pub async fn recv_within(&mut self, limit: Duration) -> Result<Option<(u8, Bytes)>, ()> {
        let work = async {
            loop {
                if self.buf.len() >= 5 {
                    let len = (&self.buf[1..5]).get_i32() as usize;
                    if self.buf.len() > len {
                        let mut frame = self.buf.split_to(len + 1);
                        let tag = frame[0];
                        frame.advance(5);
                        return Some((tag, frame.freeze()));
                    }
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, work).await.map_err(|_| ())
    }

    /// Everything up to and including ReadyForQuery.
    pub async fn until_ready(&mut self) -> Vec<(u8, Bytes)> {
        let mut out = Vec::new();
        while let Some((tag, body)) = self.recv().await {
            out.push((tag, body));
            if tag == b'Z' {
                return out;
            }
        }
        panic!("connection closed before ReadyForQuery: {:?}", tags(&out));
    }

    /// Reads until EOF and returns the messages seen.
    pub async fn until_closed(&mut self) -> Vec<(u8, Bytes)> {
        let mut out = Vec::new();
        while let Some(m) = self.recv().await {
            out.push(m);
        }
        out
    }
}

pub fn tags(msgs: &[(u8, Bytes)]) -> String {
    msgs.iter().map(|(t, _)| *t as char).collect()
}

/// Writes `bytes` as a raw untagged packet with a length prefix (for startup tests).
pub fn with_len(bytes: &[u8]) -> Vec<u8> {
    let mut v = BytesMut::new();
    v.put_i32((bytes.len() + 4) as i32);
    v.put_slice(bytes);
    v.to_vec()
}
