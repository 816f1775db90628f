//! One OpenID provider: its discovery document and signing keys (fetched on
//! first use and again, at most every second, when a token is signed
//! with a key we do not have: that is how providers rotate keys), and the
//! validation of its ID tokens with the `openidconnect` crate: signature,
//! issuer, audience (and `azp`), expiry, nonce.

use openidconnect::core::{
    CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClient, CoreClientAuthMethod, CoreGrantType,
    CoreIdToken, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
    CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::http::{HeaderValue, Request as HttpRequest, Response as HttpResponse};
use openidconnect::{
    AdditionalProviderMetadata, AsyncHttpClient, ClaimsVerificationError, ClientId, ClientSecret,
    DeviceAuthorizationUrl, IssuerUrl, Nonce, ProviderMetadata, RedirectUrl,
    SignatureVerificationError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Discovery fields `openidconnect` does not type.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Extra {
    #[serde(default)]
    pub device_authorization_endpoint: Option<DeviceAuthorizationUrl>,
}
impl AdditionalProviderMetadata for Extra {}

pub type Metadata = ProviderMetadata<
    Extra,
    CoreAuthDisplay,
    CoreClientAuthMethod,
    CoreClaimName,
    CoreClaimType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseMode,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// A client as `CoreClient::from_provider_metadata` makes it, with a redirect URI.
pub type OidcClient = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// Keys are fetched again at most this often (a flood of tokens naming an
/// unknown key must not become a flood of requests to the provider).
const REFRESH_AT_MOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("cannot reach the identity provider `{provider}`: {message}")]
    Unreachable { provider: String, message: String },
    #[error("the identity provider `{provider}` answered: {message}")]
    Provider { provider: String, message: String },
    #[error("the ID token was refused: {0}")]
    Token(String),
    #[error("{0}")]
    Config(String),
}

/// What a validated ID token says (and, for the groups and name claims it
/// may leave out, the provider's userinfo endpoint).
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    /// Every claim, for the configured groups and name claims.
    pub claims: serde_json::Map<String, Value>,
}

pub struct Provider {
    pub config: config::IdentityProvider,
    secret: Option<String>,
    pub redirect_uri: String,
    http: reqwest::Client,
    discovered: Mutex<Option<(Metadata, Instant)>>,
}

impl Provider {
    pub fn new(config: config::IdentityProvider, public_url: &str) -> Provider {
        let secret = config.secret().unwrap_or_else(|e| {
            tracing::error!(provider = %config.name, error = %e, "cannot read client_secret_file");
            None
        });
        let redirect_uri = format!("{public_url}/ui/login/oidc/{}/callback", config.name);
        // reqwest's rustls needs a process-wide crypto provider (ring, as elsewhere).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            // Following redirects would let a provider point us anywhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        Provider {
            config,
            secret,
            redirect_uri,
            http,
            discovered: Mutex::new(None),
        }
    }

    pub fn http(&self) -> Http<'_> {
        Http(&self.http)
    }

    fn unreachable(&self, e: impl std::error::Error + 'static) -> SsoError {
        SsoError::Unreachable {
            provider: self.config.name.clone(),
            message: store::described(&e),
        }
    }

    /// The discovery document and keys: cached; fetched again when `stale`
    /// says the cached keys failed (not more often than every few seconds).
    pub async fn metadata(&self, stale: bool) -> Result<Metadata, SsoError> {
        let mut cached = self.discovered.lock().await;
        if let Some((m, at)) = &*cached {
            if !stale || at.elapsed() < REFRESH_AT_MOST_EVERY {
                return Ok(m.clone());
            }
        }
        let issuer = IssuerUrl::new(self.config.issuer.clone())
            .map_err(|e| SsoError::Config(format!("issuer URL: {e}")))?;
        let m = Metadata::discover_async(issuer, &self.http())
            .await
            .map_err(|e| self.unreachable(e))?;
        *cached = Some((m.clone(), Instant::now()));
        Ok(m)
    }

    /// An `openidconnect` client for the provider as currently discovered.
    pub fn client(&self, m: Metadata) -> Result<OidcClient, SsoError> {
        let redirect = RedirectUrl::new(self.redirect_uri.clone())
            .map_err(|e| SsoError::Config(format!("public_url: {e}")))?;
        Ok(CoreClient::from_provider_metadata(
            m,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(redirect))
    }

    /// Validates `raw` (signature with the provider's keys, fetched again
    /// once if the token names a key we lack; issuer; audience; expiry; the
    /// nonce when the flow sent one) and returns what it says.
    pub async fn verify(&self, raw: &str, nonce: Option<&Nonce>) -> Result<Verified, SsoError> {
        let token =
            CoreIdToken::from_str(raw).map_err(|e| SsoError::Token(format!("not a JWT: {e}")))?;
        let mut refreshed = false;
        loop {
            let m = self.metadata(refreshed).await?;
            let algs = signing_algs(&m);
            let client = self.client(m)?;
            let verifier = client.id_token_verifier().set_allowed_algs(algs);
            let checked = match nonce {
                Some(n) => token.claims(&verifier, n).cloned(),
                None => token.claims(&verifier, |_: Option<&Nonce>| Ok(())).cloned(),
            };
            match checked {
                Ok(claims) => {
                    return Ok(Verified {
                        issuer: claims.issuer().to_string(),
                        subject: claims.subject().to_string(),
                        claims: payload(raw)?,
                    })
                }
                Err(ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoMatchingKey,
                )) if !refreshed => refreshed = true,
                Err(e) => return Err(SsoError::Token(token_error(&e))),
            }
        }
    }

    /// Adds the userinfo endpoint's claims that the ID token left out (many
    /// providers send groups only there). The subject must match.
    pub async fn complete_claims(
        &self,
        verified: &mut Verified,
        access_token: &str,
    ) -> Result<(), SsoError> {
        let wanted = [
            &self.config.groups_claim,
            &self.config.username_claim,
            &"email".to_string(),
        ]
        .into_iter()
        .any(|c| !verified.claims.contains_key(c.as_str()));
        if !wanted {
            return Ok(());
        }
        let Some(url) = self.metadata(false).await?.userinfo_endpoint().cloned() else {
            return Ok(());
        };
        let resp = self
            .http
            .get(url.url().as_str())
            .bearer_auth(access_token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(SsoError::Provider {
                provider: self.config.name.clone(),
                message: format!("userinfo answered {}", resp.status()),
            });
        }
        let info: serde_json::Map<String, Value> =
            resp.json().await.map_err(|e| self.unreachable(e))?;
        if info.get("sub").and_then(Value::as_str) != Some(verified.subject.as_str()) {
            return Err(SsoError::Token(
                "userinfo is about another subject than the ID token".into(),
            ));
        }
        for (k, v) in info {
            verified.claims.entry(k).or_insert(v);
        }
        Ok(())
    }

    /// `client_secret_basic` credentials for requests made by hand (RFC 6749 §2.3.1).
    fn basic_auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let enc = |s: &str| {
            openidconnect::url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        };
        match &self.secret {
            Some(secret) => req.basic_auth(enc(&self.config.client_id), Some(enc(secret))),
            None => req,
        }
    }

    /// POSTs `form` with the client's credentials; the status and the JSON
    /// answer (null if it was not JSON).
    pub async fn post_form(
        &self,
        url: &str,
        form: &[(&str, &str)],
    ) -> Result<(reqwest::StatusCode, Value), SsoError> {
        let resp = self
            .basic_auth(self.http.post(url))
            .form(form)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = resp.status();
        Ok((status, resp.json().await.unwrap_or(Value::Null)))
    }
}

/// The signature algorithms the provider says it uses for ID tokens, less
/// the symmetric ones (keyed with the client secret, which the provider is not
/// alone in knowing) and `none`; RS256 when it says nothing.
fn signing_algs(m: &Metadata) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    let algs: Vec<_> = m
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|a| !matches!(a, A::HmacSha256 | A::HmacSha384 | A::HmacSha512 | A::None))
        .cloned()
        .collect();
    if algs.is_empty() {
        vec![A::RsaSsaPkcs1V15Sha256]
    } else {
        algs
    }
}

/// The claims of a token whose signature was already checked (the library
/// types only the standard claims; groups and the like are read here).
fn payload(raw: &str) -> Result<serde_json::Map<String, Value>, SsoError> {
    use base64::Engine;
    let part = raw.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|e| SsoError::Token(format!("payload: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| SsoError::Token(format!("payload: {e}")))
}

/// A person can act on these.
fn token_error(e: &ClaimsVerificationError) -> String {
    match e {
        ClaimsVerificationError::Expired(_) => {
            "it has expired (check the clocks of jitgate and the provider)".into()
        }
        ClaimsVerificationError::InvalidAudience(_) => {
            "it was issued to another application (audience is not this client_id)".into()
        }
        ClaimsVerificationError::InvalidIssuer(_) => "it comes from another issuer".into(),
        ClaimsVerificationError::InvalidNonce(_) => {
            "its nonce is not this sign-in's (replayed?)".into()
        }
        ClaimsVerificationError::SignatureVerification(s) => {
            format!("its signature does not verify with the provider's keys ({s})")
        }
        other => other.to_string(),
    }
}

/// reqwest 0.13 behind `openidconnect`'s HTTP client trait (the crate's own
/// adapter is for reqwest 0.12).
pub struct Http<'a>(&'a reqwest::Client);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http<'_> {
    type Error = HttpError;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse<Vec<u8>>, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest<Vec<u8>>) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(store::described(&e)))?;
            let mut out = HttpResponse::builder().status(resp.status());
            if let Some(t) = resp.headers().get(reqwest::header::CONTENT_TYPE) {
                out = out.header(
                    reqwest::header::CONTENT_TYPE,
                    HeaderValue::from_bytes(t.as_bytes()).map_err(|e| HttpError(e.to_string()))?,
                );
            }
            let body = resp
                .bytes()
                .await
                .map_err(|e| HttpError(store::described(&e)))?;
            out.body(body.to_vec())
                .map_err(|e| HttpError(e.to_string()))
        })
    }
}
