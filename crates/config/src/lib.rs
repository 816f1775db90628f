//! The jitgate configuration file (one TOML file, see DESIGN.md "Public contract").
//!
//! - [`model`]: the typed configuration, as the rest of the gateway sees it.
//! - [`validate`]: cross-field checks (unknown groups, duplicate names, ...).
//! - [`scram`]: SCRAM-SHA-256 verifiers for `[[user]]` passwords.
//! - [`locate`]: finding the line of a field for error messages.
//!
//! Invariant: loading does no network I/O and never prints a secret. A plain
//! `password` is turned into a SCRAM verifier at load and then dropped.
#![forbid(unsafe_code)]

mod locate;
pub mod model;
pub mod scram;
mod validate;

pub use model::*;
pub use scram::ScramVerifier;
pub use validate::{shared_state, CLUSTER_SECRET_ENV};

use std::path::Path;

/// Why a configuration file could not be used. Every variant names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Syntax errors and type errors; the toml crate's message carries the line.
    #[error("{0}")]
    Parse(String),
    #[error("{}invalid `{field}`: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        field: String,
        message: String,
        line: Option<usize>,
    },
}

impl Config {
    /// The replicas' shared secret: `JITGATE_CLUSTER_SECRET`, else the file
    /// `[gateway] cluster_secret_file` (surrounding whitespace ignored), else
    /// none. A secret shorter than 16 bytes is refused.
    pub fn cluster_secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            field: "gateway.cluster_secret_file".into(),
            message,
            line: None,
        };
        let secret = match (
            std::env::var(CLUSTER_SECRET_ENV),
            &self.gateway.cluster_secret_file,
        ) {
            (Ok(s), _) => s.trim().as_bytes().to_vec(),
            (Err(_), Some(path)) => {
                let text = std::fs::read(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                text.trim_ascii().to_vec()
            }
            (Err(_), None) => return Ok(None),
        };
        if secret.len() < 16 {
            return Err(invalid(format!(
                "the cluster secret has {} bytes; use at least 16 random bytes \
                 (e.g. `openssl rand -base64 32`)",
                secret.len()
            )));
        }
        Ok(Some(secret))
    }

    /// Reads, parses and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses and validates configuration text.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: model::Config =
            toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        validate::validate(raw, text)
    }
}
