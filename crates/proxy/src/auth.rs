//! Client authentication: SCRAM-SHA-256 against the gateway's own users.
//!
//! A wrong password and an unknown user get the same error (28P01) after the same
//! exchange (see `scram.rs` for the decoy verifier).

use crate::scram::{decoy_verifier, Exchange, ScramError};
use crate::startup::{read_message, StartupError};
use crate::stream::Stream;
use bytes::BytesMut;
use config::{Config, ScramVerifier};
use std::future::Future;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use wire::backend::{self, ErrorFields};
use wire::frontend;

const MECHANISM: &str = "SCRAM-SHA-256";
/// SASL messages are a few hundred bytes; anything bigger is hostile.
const MAX_SASL_MESSAGE: usize = 8 * 1024;

/// Verifiers of people who are not `[[user]]`s: their connection secrets
/// (`jitgate db-login`), looked up in the state store by the enforcer.
pub trait Secrets: Send + Sync + 'static {
    fn verifier<'a>(
        &'a self,
        user: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<ScramVerifier>> + Send + 'a>>;
}

/// The verifier `user` logs in with: their `[[user]]` password while
/// `password_login` is on, else their connection secret, if any.
pub async fn verifier(
    config: &Config,
    secrets: Option<&dyn Secrets>,
    user: &str,
) -> Option<ScramVerifier> {
    match config.user(user) {
        Some(u) if config.gateway.password_login => u.scram.clone(),
        Some(_) => None,
        None => match secrets {
            Some(s) => s.verifier(user).await,
            None => None,
        },
    }
}

pub async fn authenticate(
    stream: &mut Stream,
    found: Option<&ScramVerifier>,
    server_secret: &[u8],
    user: &str,
    deadline: Instant,
) -> Result<(), StartupError> {
    let decoy;
    let (verifier, real) = match found {
        Some(v) => (v, true),
        None => {
            decoy = decoy_verifier(server_secret, user);
            (&decoy, false)
        }
    };
    let failed = || {
        StartupError::Fatal(ErrorFields::fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        ))
    };
    let malformed = |e: ScramError| match e {
        ScramError::Failed => failed(),
        other => StartupError::Fatal(ErrorFields::fatal("08P01", other.to_string())),
    };

    let mut out = BytesMut::new();
    backend::authentication_sasl(&mut out, &[MECHANISM]);
    stream.write_all(&out).await?;

    let body = expect_password_message(stream, deadline).await?;
    let (mechanism, first) = frontend::sasl_initial_response(&body)
        .map_err(|e| StartupError::Fatal(ErrorFields::fatal("08P01", e.to_string())))?;
    if mechanism != MECHANISM {
        return Err(StartupError::Fatal(ErrorFields::fatal(
            "28000",
            format!("SASL mechanism {mechanism:?} is not supported; use {MECHANISM}"),
        )));
    }
    let (exchange, server_first) = Exchange::start(verifier, real, first).map_err(malformed)?;
    out.clear();
    backend::authentication_sasl_continue(&mut out, server_first.as_bytes());
    stream.write_all(&out).await?;

    let body = expect_password_message(stream, deadline).await?;
    let server_final = exchange.finish(&body).map_err(malformed)?;
    out.clear();
    backend::authentication_sasl_final(&mut out, server_final.as_bytes());
    backend::authentication_ok(&mut out);
    stream.write_all(&out).await?;
    Ok(())
}

async fn expect_password_message(
    stream: &mut Stream,
    deadline: Instant,
) -> Result<BytesMut, StartupError> {
    let (tag, body) = read_message(stream, MAX_SASL_MESSAGE, deadline).await?;
    if tag != wire::tag::PASSWORD {
        return Err(StartupError::Fatal(ErrorFields::fatal(
            "08P01",
            format!(
                "expected a SASL response, got message type {:?}",
                tag as char
            ),
        )));
    }
    Ok(body)
}
