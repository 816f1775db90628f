//! The start of a connection: encryption negotiation, the startup packet, and
//! the checks made before authentication.
//!
//! Startup parameters that could change who the session is — `replication`,
//! a `role` or `session_authorization` parameter, or `options` that mention
//! either — are refused here and never sent upstream.

use crate::stream::Stream;
use bytes::BytesMut;
use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_rustls::TlsAcceptor;
use wire::backend::{self, ErrorFields};
use wire::encoding::ClientEncoding;
use wire::startup::{self, Startup};
use wire::Header;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Tell the client this, then close.
    #[error("{}", .0.message)]
    Fatal(ErrorFields),
    /// The client went away or the socket failed: nothing to tell anyone.
    #[error("client connection: {0}")]
    Io(#[from] io::Error),
}

fn fatal(code: &'static str, message: impl Into<String>) -> StartupError {
    StartupError::Fatal(ErrorFields::fatal(code, message))
}

fn timed_out() -> StartupError {
    fatal(
        "08P01",
        "startup did not complete in time (startup_timeout)",
    )
}

/// What the client asked for in its startup packet.
pub struct Request {
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

pub enum Opening {
    Startup(Stream, Request),
    Cancel { pid: i32, secret: i32 },
}

/// Answers SSLRequest/GSSENCRequest until a startup packet or cancel request arrives.
/// On a fatal error the stream (if any) is returned so the caller can say why.
pub async fn open(
    tcp: TcpStream,
    tls: Option<&TlsAcceptor>,
    deadline: Instant,
) -> Result<Opening, (Option<Stream>, StartupError)> {
    let mut stream = Stream::Plain(tcp);
    loop {
        let body = match read_packet(&mut stream, deadline).await {
            Ok(b) => b,
            Err(e) => return Err((Some(stream), e)),
        };
        let packet = match startup::parse(&body) {
            Ok(p) => p,
            Err(e) => {
                return Err((
                    Some(stream),
                    fatal("08P01", format!("invalid startup packet: {e}")),
                ))
            }
        };
        match packet {
            Startup::SslRequest if !stream.is_tls() => match (tls, stream) {
                (Some(acceptor), Stream::Plain(mut tcp)) => {
                    if let Err(e) = tcp.write_all(b"S").await {
                        return Err((None, e.into()));
                    }
                    match timeout_at(deadline, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => stream = Stream::ServerTls(Box::new(s)),
                        Ok(Err(e)) => return Err((None, e.into())),
                        Err(_) => return Err((None, timed_out())),
                    }
                }
                (_, mut s) => {
                    if let Err(e) = s.write_all(b"N").await {
                        return Err((None, e.into()));
                    }
                    stream = s;
                }
            },
            Startup::GssEncRequest if !stream.is_tls() => {
                if let Err(e) = stream.write_all(b"N").await {
                    return Err((None, e.into()));
                }
            }
            Startup::SslRequest | Startup::GssEncRequest => {
                return Err((Some(stream), fatal("08P01", "encryption requested twice")))
            }
            Startup::Cancel { pid, secret } => return Ok(Opening::Cancel { pid, secret }),
            Startup::Startup { minor, params } => {
                return Ok(Opening::Startup(stream, Request { minor, params }))
            }
        }
    }
}

async fn read_packet(stream: &mut Stream, deadline: Instant) -> Result<Vec<u8>, StartupError> {
    let work = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await?;
        let body_len = startup::packet_len(len)
            .map_err(|e| fatal("08P01", format!("invalid startup packet: {e}")))?;
        let mut body = vec![0u8; body_len];
        stream.read_exact(&mut body).await?;
        Ok(body)
    };
    timeout_at(deadline, work).await.map_err(|_| timed_out())?
}

/// Reads one tagged message during startup (authentication).
pub async fn read_message(
    stream: &mut Stream,
    limit: usize,
    deadline: Instant,
) -> Result<(u8, BytesMut), StartupError> {
    let work = async {
        let mut head = [0u8; Header::SIZE];
        stream.read_exact(&mut head).await?;
        let h = Header::parse(&head, limit)
            .map_err(|e| fatal("08P01", format!("invalid message: {e}")))?
            .expect("five bytes make a header");
        let mut body = BytesMut::zeroed(h.body_len);
        stream.read_exact(&mut body).await?;
        Ok((h.tag, body))
    };
    timeout_at(deadline, work).await.map_err(|_| timed_out())?
}

/// The checked startup request: who, which database, what goes upstream.
#[derive(Debug)]
pub struct Checked {
    pub user: String,
    pub database: String,
    /// Parameters passed to the database, in the client's order.
    pub upstream_params: Vec<(String, String)>,
    /// `_pq_.` protocol options we do not support (reported, never forwarded).
    pub unknown_options: Vec<String>,
}

/// Whether a libpq `options` string sets `role` or `session_authorization`.
///
/// PostgreSQL reads `options` as command-line switches: tokens split on
/// whitespace (a backslash escapes the next character), settings given as
/// `-c name=value`, `-cname=value` or `--name=value`, with `-` and `_`
/// interchangeable in names. We read it the same way and fail closed: any
/// token we cannot place (another switch, a dangling `-c`) counts as a change.
fn options_change_identity(options: &str) -> bool {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !current.is_empty() {
                    tokens.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    let identity = |setting: &str| {
        let name = setting
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .replace('-', "_");
        let value = setting.split_once('=').map_or("", |(_, v)| v);
        name == "role"
            || name == "session_authorization"
            || (name == "client_encoding" && ClientEncoding::of(value) == ClientEncoding::Unsafe)
            || (name == "standard_conforming_strings"
                && !policy::lexing::standard_strings_on(value))
    };
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let setting = if t == "-c" {
            i += 1;
            match tokens.get(i) {
                Some(next) => next.as_str(),
                None => return true,
            }
        } else if let Some(rest) = t.strip_prefix("--").or_else(|| t.strip_prefix("-c")) {
            rest
        } else {
            return true;
        };
        if !setting.contains('=') || identity(setting) {
            return true;
        }
        i += 1;
    }
    false
}

/// Why `standard_conforming_strings = off` is refused.
pub const STANDARD_STRINGS_OFF: &str = "jitgate refuses standard_conforming_strings = off: \
     backslashes in plain string literals would then end literals where no parser outside the \
     server can see, so the gateway could not read statements as PostgreSQL will";

fn is_false(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "false" | "off" | "no" | "0"
    )
}

/// Validates startup parameters. Refuses anything that could change identity.
pub fn check(request: &Request) -> Result<Checked, StartupError> {
    let mut user = None;
    let mut database = None;
    let mut upstream_params = Vec::new();
    let mut unknown_options = Vec::new();
    for (k, v) in &request.params {
        let key = k.to_ascii_lowercase();
        match key.as_str() {
            "user" => user = Some(v.clone()),
            "database" => database = Some(v.clone()),
            "replication" if is_false(v) => {}
            "replication" => {
                return Err(fatal(
                    "42501",
                    "replication connections are not allowed through jitgate",
                ))
            }
            "role" | "session_authorization" => {
                return Err(fatal(
                    "42501",
                    format!(
                    "startup parameter \"{k}\" could change the session's identity and is refused"
                ),
                ))
            }
            "options" => {
                if options_change_identity(v) {
                    return Err(fatal(
                        "42501",
                        "startup options that set role, session_authorization, \
                         standard_conforming_strings = off or a client_encoding jitgate cannot \
                         lex are refused",
                    ));
                }
                upstream_params.push((k.clone(), v.clone()));
            }
            "client_encoding" if ClientEncoding::of(v) == ClientEncoding::Unsafe => {
                return Err(StartupError::Fatal(
                    ErrorFields::fatal(
                        "0A000",
                        format!(
                            "jitgate cannot read statements in client_encoding \"{v}\": its \
                             characters may contain quote or backslash bytes"
                        ),
                    )
                    .with_hint("use UTF8, or a single-byte or EUC encoding"),
                ))
            }
            "standard_conforming_strings" if !policy::lexing::standard_strings_on(v) => {
                return Err(StartupError::Fatal(
                    ErrorFields::fatal("0A000", STANDARD_STRINGS_OFF).with_hint(
                        "leave standard_conforming_strings on; write E'...' for escapes",
                    ),
                ))
            }
            _ if key.starts_with("_pq_.") => unknown_options.push(k.clone()),
            _ => upstream_params.push((k.clone(), v.clone())),
        }
    }
    let user = user
        .filter(|u| !u.is_empty())
        .ok_or_else(|| fatal("28000", "no user name in the startup packet"))?;
    let database = database
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());
    Ok(Checked {
        user,
        database,
        upstream_params,
        unknown_options,
    })
}

/// Tells a newer client (3.2, or `_pq_.` options) what we speak: 3.0, no options.
pub fn negotiation(request: &Request, checked: &Checked) -> Option<BytesMut> {
    if request.minor == 0 && checked.unknown_options.is_empty() {
        return None;
    }
    let mut out = BytesMut::new();
    let unknown: Vec<&str> = checked.unknown_options.iter().map(String::as_str).collect();
    backend::negotiate_protocol_version(&mut out, 0, &unknown);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(params: &[(&str, &str)]) -> Request {
        Request {
            minor: 0,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn identity_changing_parameters_are_refused() {
        for p in [
            ("replication", "database"),
            ("replication", "true"),
            ("role", "admin"),
            ("ROLE", "admin"),
            ("session_authorization", "postgres"),
            ("options", "-c role=admin"),
            ("options", "--ROLE=admin"),
            ("options", "-csession_authorization=postgres"),
        ] {
            let r = check(&req(&[("user", "alice"), p]));
            assert!(
                matches!(r, Err(StartupError::Fatal(ref e)) if e.code == "42501"),
                "{p:?}"
            );
        }
    }

    #[test]
    fn options_are_read_like_postgres_reads_them() {
        for bad in [
            "-c role=admin",
            "-crole=admin",
            "--role=admin",
            "--ROLE=admin",
            "-c session-authorization=postgres",
            "-c search_path=x -c role=y",
            "-c\\ role=admin",
            "-c",
            "-B 1000",
            "-c noequals",
        ] {
            assert!(options_change_identity(bad), "{bad}");
        }
        for good in [
            "",
            "-c search_path=roles,public",
            "--application_name=role_report",
            "-c statement_timeout=5s  -c work_mem=64MB",
        ] {
            assert!(!options_change_identity(good), "{good}");
        }
    }

    #[test]
    fn ordinary_parameters_pass_in_order() {
        let c = check(&req(&[
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "psql"),
            ("replication", "false"),
            ("options", "-c search_path=app"),
            ("_pq_.future", "1"),
        ]))
        .unwrap();
        assert_eq!(c.user, "alice");
        assert_eq!(c.database, "app");
        assert_eq!(
            c.upstream_params,
            vec![
                ("application_name".into(), "psql".into()),
                ("options".into(), "-c search_path=app".into())
            ]
        );
        assert_eq!(c.unknown_options, vec!["_pq_.future".to_string()]);
    }

    #[test]
    fn database_defaults_to_user_and_user_is_required() {
        assert_eq!(check(&req(&[("user", "bob")])).unwrap().database, "bob");
        assert!(check(&req(&[("database", "app")])).is_err());
    }
}
