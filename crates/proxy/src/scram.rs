//! The server side of SCRAM-SHA-256 (RFC 5802/7677), as PostgreSQL runs it.
//!
//! Written here because the Rust crates we found implement the client side only
//! (postgres-protocol, which we use toward the database). We do not offer
//! channel binding (`SCRAM-SHA-256-PLUS`); clients with the default
//! `channel_binding=prefer` then use plain SCRAM.
//!
//! Unknown users run the same exchange against a fake verifier whose salt is
//! derived from the user name (so repeated attempts see a stable salt) and always
//! fail at the end: the reply, the error and the work done do not reveal whether
//! a user exists.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use config::ScramVerifier;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("authentication failed")]
    Failed,
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A verifier for a name that is not a user: deterministic salt, random keys.
pub fn decoy_verifier(server_secret: &[u8], user: &str) -> ScramVerifier {
    let salt = hmac(server_secret, user.as_bytes())[..16].to_vec();
    ScramVerifier {
        iterations: 4096,
        salt,
        stored_key: rand::random(),
        server_key: rand::random(),
    }
}

/// State between the server-first and the client-final message.
pub struct Exchange<'a> {
    verifier: &'a ScramVerifier,
    real_user: bool,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
}

impl<'a> Exchange<'a> {
    /// Reads client-first-message, returns the state and server-first-message.
    pub fn start(
        verifier: &'a ScramVerifier,
        real_user: bool,
        client_first: &[u8],
    ) -> Result<(Self, String), ScramError> {
        let msg = std::str::from_utf8(client_first).map_err(|_| ScramError::Malformed("utf-8"))?;
        // gs2-header: cbind-flag "," [authzid] ","
        let (flag, rest) = msg
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("channel binding flag")),
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed("authzid is not supported"));
        }
        // client-first-message-bare: n=<user>,r=<nonce>[,extensions]
        let mut parts = bare.split(',');
        let user = parts.next().ok_or(ScramError::Malformed("user"))?;
        if !user.starts_with("n=") {
            return Err(ScramError::Malformed("user"));
        }
        let client_nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError::Malformed("nonce"));
        }
        if parts.next().is_some() {
            return Err(ScramError::Malformed("extensions are not supported"));
        }
        let server_nonce = B64.encode(rand::random::<[u8; 18]>());
        let nonce = format!("{client_nonce}{server_nonce}");
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        let gs2_header = format!("{flag},,");
        Ok((
            Exchange {
                verifier,
                real_user,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
            },
            server_first,
        ))
    }

    /// Checks client-final-message; on success returns server-final-message.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let msg = std::str::from_utf8(client_final).map_err(|_| ScramError::Malformed("utf-8"))?;
        let (without_proof, proof) = msg
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("proof"))?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or(ScramError::Malformed("channel binding"))?;
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or(ScramError::Malformed("nonce"))?;
        if parts.next().is_some() {
            return Err(ScramError::Malformed("extensions are not supported"));
        }
        if B64.decode(binding).ok().as_deref() != Some(self.gs2_header.as_bytes()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != self.nonce {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof: [u8; 32] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .ok_or(ScramError::Malformed("proof"))?;
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof.iter().zip(signature).map(|(p, s)| p ^ s).collect();
        let stored: [u8; 32] = Sha256::digest(&client_key).into();
        let matches: bool = stored.ct_eq(&self.verifier.stored_key).into();
        if !(matches && self.real_user) {
            return Err(ScramError::Failed);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

    /// Runs postgres-protocol's client (the one tokio-postgres uses) against ours.
    fn run(password_config: &str, password_client: &str, real: bool) -> Result<(), ScramError> {
        let verifier = ScramVerifier::from_password(password_config);
        let mut client =
            ScramSha256::new(password_client.as_bytes(), ChannelBinding::unsupported());
        let (ex, server_first) = Exchange::start(&verifier, real, client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = ex.finish(client.message())?;
        client
            .finish(server_final.as_bytes())
            .expect("client must accept our server signature");
        Ok(())
    }

    #[test]
    fn the_right_password_authenticates() {
        assert_eq!(run("correct horse", "correct horse", true), Ok(()));
    }

    #[test]
    fn a_wrong_password_fails() {
        assert_eq!(
            run("correct horse", "battery", true),
            Err(ScramError::Failed)
        );
    }

    #[test]
    fn a_decoy_never_authenticates_even_with_its_own_keys() {
        assert_eq!(run("pw", "pw", false), Err(ScramError::Failed));
    }

    #[test]
    fn decoy_salt_is_stable_per_user() {
        let a = decoy_verifier(b"k", "mallory");
        let b = decoy_verifier(b"k", "mallory");
        assert_eq!(a.salt, b.salt);
        assert_ne!(a.salt, decoy_verifier(b"k", "eve").salt);
    }

    #[test]
    fn hostile_client_messages_are_refused() {
        let v = ScramVerifier::from_password("pw");
        for first in [
            &b""[..],
            b"n",
            b"x,,n=,r=abc",
            b"p=tls-server-end-point,,n=,r=abc",
            b"n,a=admin,n=,r=abc",
            b"n,,n=,r=",
            b"n,,r=abc",
            b"n,,n=,r=abc,m=ext",
            b"\xff\xfe",
        ] {
            assert!(Exchange::start(&v, true, first).is_err(), "{first:?}");
        }
        let (ex, _) = Exchange::start(&v, true, b"n,,n=,r=abc").unwrap();
        assert!(ex.finish(b"c=biws,r=wrongnonce,p=AAAA").is_err());
        let (ex, sf) = Exchange::start(&v, true, b"n,,n=,r=abc").unwrap();
        let nonce = &sf[2..sf.find(',').unwrap()];
        let forged = format!("c=eSws,r={nonce},p={}", B64.encode([0u8; 32]));
        assert_eq!(
            ex.finish(forged.as_bytes()),
            Err(ScramError::Malformed("channel binding does not match"))
        );
    }
}
