//! SCRAM-SHA-256 verifiers, in PostgreSQL's `pg_authid` format:
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
//!
//! The gateway stores only verifiers: a plain `password` in the config is hashed
//! at load (with postgres-protocol's implementation of PostgreSQL's algorithm,
//! SASLprep included) and the plain text is dropped.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

/// Never print key material, not even in debug logs.
impl fmt::Debug for ScramVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScramVerifier(..)")
    }
}

impl ScramVerifier {
    pub fn from_password(password: &str) -> ScramVerifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        Self::parse(&text).expect("postgres-protocol produces valid verifiers")
    }

    /// Checks a plain password against this verifier (for the HTTP API's login),
    /// the way a SCRAM exchange would: SASLprep, PBKDF2, StoredKey, in constant time.
    pub fn verify_password(&self, password: &str) -> bool {
        let prepared = match stringprep::saslprep(password) {
            Ok(p) => p.into_owned().into_bytes(),
            Err(_) => password.as_bytes().to_vec(),
        };
        let salted = hi(&prepared, &self.salt, self.iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored: [u8; 32] = Sha256::digest(client_key).into();
        stored.ct_eq(&self.stored_key).into()
    }

    /// The text form [`ScramVerifier::parse`] reads (as in pg_authid.rolpassword).
    pub fn encoded(&self) -> String {
        format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            B64.encode(&self.salt),
            B64.encode(self.stored_key),
            B64.encode(self.server_key)
        )
    }

    pub fn parse(s: &str) -> Result<ScramVerifier, String> {
        let bad = || {
            "expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> \
             (as in pg_authid.rolpassword)"
                .to_string()
        };
        let rest = s.strip_prefix("SCRAM-SHA-256$").ok_or_else(bad)?;
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err("iteration count must be positive".into());
        }
        let salt = B64.decode(salt).map_err(|_| bad())?;
        let key = |k: &str| -> Result<[u8; 32], String> {
            B64.decode(k)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(bad)
        };
        Ok(ScramVerifier {
            iterations,
            salt,
            stored_key: key(stored)?,
            server_key: key(server)?,
        })
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// PBKDF2-HMAC-SHA-256 with one output block (RFC 5802's Hi()).
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut input = salt.to_vec();
    input.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &input);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_it_generates() {
        let v = ScramVerifier::from_password("s3cret");
        assert_eq!(v.iterations, 4096);
        assert_eq!(v.salt.len(), 16);
        assert_ne!(v.stored_key, v.server_key);
    }

    #[test]
    fn refuses_malformed_verifiers() {
        for s in [
            "",
            "md5abc",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$x:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",
            "SCRAM-SHA-256$0:c2FsdA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ] {
            assert!(ScramVerifier::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn verifies_passwords_like_postgres_would() {
        let v = ScramVerifier::from_password("correct horse");
        assert!(v.verify_password("correct horse"));
        assert!(!v.verify_password("correct horsE"));
        assert!(!v.verify_password(""));
    }

    #[test]
    fn debug_hides_keys() {
        let v = ScramVerifier::from_password("x");
        assert_eq!(format!("{v:?}"), "ScramVerifier(..)");
    }
}
