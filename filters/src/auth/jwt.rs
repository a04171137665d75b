//! `JWTAuth`: JSON Web Token authentication against the keys of one or more issuers.
//!
//! Runs in `request_headers`. Each provider looks for a token where it is told to (default: the
//! `Authorization: Bearer` header); the first provider whose token verifies lets the request on.
//! A token verifies when its signature checks against a key of the provider's JWKS (the key with
//! the token's `kid`, else every key of the algorithm's family; the token's `alg` must match the
//! key's family and, when the key names one, its `alg`), its `exp` and `nbf` hold within the
//! clock skew, and its `iss` and `aud` match the provider's `issuer` and `audiences` when those
//! are set. A request with no token is answered 401 (unless `optional`); with a token that does
//! not verify, 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! A verified request carries its claims on: `claimToHeaders` copies claims (`sub`, or nested
//! with dots: `realm.role`) into request headers (strings as they are, other JSON values as
//! JSON), and the claims are stored in the request's [`FilterCtx::extensions`] as [`JwtClaims`]
//! for later filters. The token itself is removed from the request unless `forwardToken`.
//!
//! Keys come from the provider's `jwks`: `inline` JSON, a `file` read when the filter is built,
//! or a `remote` URL (`http` or `https` with the system's roots) fetched in the background when
//! the first request needs it and again every `cacheDurationSeconds` (default 300). A token
//! whose `kid` is unknown asks for an early fetch (at most one per 10 s). Until the first fetch
//! succeeds, requests wait for it up to `timeoutMs` and are then answered 401 (body
//! `jwks unavailable`); a failed fetch is retried with a backoff of 1 s doubling to 60 s, and the
//! last good keys keep serving meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use gateway_core::{FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use crate::SpecError;
use crate::request::Location;
use crate::respond::answer;
use crate::secret::SecretSource;

/// The kind of [`JWTAuth`] objects.
pub const KIND: &str = "JWTAuth";

/// The largest JWKS document read from a file or a URL.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Settings of a `JWTAuth` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "JWTAuth",
    plural = "jwtauths",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuthSpec {
    /// The issuers whose tokens are accepted. At least one; names unique.
    pub providers: Vec<JwtProviderSpec>,
    /// Let requests without any token through (a token that is present must still verify).
    /// Default: false.
    #[serde(default)]
    pub optional: bool,
}

/// One token issuer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtProviderSpec {
    /// The provider's name (in logs and [`JwtClaims::provider`]).
    pub name: String,
    /// The `iss` a token must have. Unset: not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// A token's `aud` must hold one of these. Empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Where the signing keys come from.
    pub jwks: JwksSpec,
    /// Claims copied into request headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Where the token is looked for, in order. Default: `Authorization: Bearer <token>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extract_from: Vec<TokenSource>,
    /// Seconds of tolerance on `exp` and `nbf`. Default: 60.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock_skew_seconds: Option<u64>,
    /// Keep the token in the request sent to the backend. Default: false (removed).
    #[serde(default)]
    pub forward_token: bool,
}

/// Where a provider's keys come from (exactly one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JwksSpec {
    /// A JWKS JSON document.
    Inline(String),
    /// A file holding a JWKS JSON document, read when the filter is built.
    File(String),
    /// A URL serving a JWKS JSON document.
    Remote(RemoteJwksSpec),
    /// A JWKS JSON document in a Secret: its key `jwks` (or `key`, or its only entry).
    Secret(SecretSource),
}

/// A JWKS fetched from a URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RemoteJwksSpec {
    /// `http://` or `https://` URL.
    pub uri: String,
    /// Seconds between fetches. Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_duration_seconds: Option<u64>,
    /// Milliseconds a fetch may take, and a request may wait for the first one. Default: 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A claim copied into a request header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimToHeader {
    /// The claim, nested claims joined by dots.
    pub claim: String,
    /// The request header set to its value (replacing what the client sent).
    pub header: String,
}

/// Where a request carries its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TokenSource {
    /// A request header; `valuePrefix` (for example `Bearer `) is stripped.
    Header {
        /// The header name.
        name: String,
        /// A prefix the value must start with, compared without regard to ASCII case.
        #[serde(
            default,
            rename = "valuePrefix",
            skip_serializing_if = "Option::is_none"
        )]
        value_prefix: Option<String>,
    },
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
}

/// The claims of the token a request was authenticated with, in [`FilterCtx::extensions`].
#[derive(Clone, Debug, PartialEq)]
pub struct JwtClaims {
    /// The provider that verified the token.
    pub provider: Arc<str>,
    /// The token's claims.
    pub claims: Value,
}

/// One key of a JWKS, ready to verify with.
#[derive(Debug)]
struct Key {
    kid: Option<String>,
    /// The key's own `alg`, when it names one.
    alg: Option<Algorithm>,
    key: DecodingKey,
}

/// The keys of a JWKS document; keys of algorithms this crate cannot verify with (encryption
/// keys) are left out.
fn parse_jwks(text: &str) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // A key's `alg` by its JOSE name; encryption algorithms have no signature `Algorithm`.
        let alg = match jwk.common.key_algorithm {
            Some(a) => match serde_json::to_value(a)
                .ok()
                .and_then(|v| v.as_str()?.parse::<Algorithm>().ok())
            {
                Some(a) => Some(a),
                None => continue,
            },
            None => None,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!(
            "none of its {} keys can verify signatures",
            set.keys.len()
        ));
    }
    Ok(keys)
}

/// Keys fetched from a URL in the background.
struct Remote {
    uri: Uri,
    every: Duration,
    timeout: Duration,
    keys: ArcSwapOption<Vec<Key>>,
    started: AtomicBool,
    /// Wakes the fetcher early (an unknown `kid`).
    refresh: Notify,
    /// Wakes requests waiting for the first keys.
    loaded: Notify,
    /// When an early fetch was last asked for (ms since `epoch`).
    last_early: AtomicU64,
    epoch: Instant,
}

impl Remote {
    /// The current keys, starting the fetcher on first use and waiting for its first fetch.
    async fn keys(self: &Arc<Self>) -> Option<Arc<Vec<Key>>> {
        if !self.started.swap(true, Ordering::AcqRel) {
            tokio::spawn(fetch_loop(Arc::downgrade(self)));
        }
        if let Some(keys) = self.keys.load_full() {
            return Some(keys);
        }
        let loaded = self.loaded.notified();
        tokio::pin!(loaded);
        loaded.as_mut().enable();
        if let Some(keys) = self.keys.load_full() {
            return Some(keys);
        }
        let _ = tokio::time::timeout(self.timeout, loaded).await;
        self.keys.load_full()
    }

    /// Asks the fetcher for an early fetch, at most once per 10 s.
    fn refresh_soon(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        let last = self.last_early.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= 10_000)
            && self
                .last_early
                .compare_exchange(last, now.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.refresh.notify_one();
        }
    }
}

/// Fetches the JWKS of `remote` until the filter is gone.
async fn fetch_loop(remote: Weak<Remote>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(r) = remote.upgrade() else { return };
        let wait = match fetch(&r.uri, r.timeout).await.and_then(|t| parse_jwks(&t)) {
            Ok(keys) => {
                tracing::debug!(uri = %r.uri, keys = keys.len(), "JWKS fetched");
                r.keys.store(Some(Arc::new(keys)));
                r.loaded.notify_waiters();
                backoff = Duration::from_secs(1);
                r.every
            }
            Err(e) => {
                tracing::warn!(uri = %r.uri, error = %e, retry_in = ?backoff, "JWKS fetch failed");
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = r.refresh.notified() => {}
        }
    }
}

/// GETs `uri` and returns its body (200 only, at most [`MAX_JWKS_BYTES`]).
async fn fetch(uri: &Uri, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, fetch_inner(uri))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

async fn fetch_inner(uri: &Uri) -> Result<String, String> {
    let host = uri.host().ok_or("the URL has no host")?;
    let tls = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_owned();
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    if tls {
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .map_err(|e| format!("server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        get(stream, &authority, &path).await
    } else {
        get(tcp, &authority, &path).await
    }
}

async fn get<S>(stream: S, authority: &str, path: &str) -> Result<String, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Err(format!("status {}", resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8".to_owned())
}

/// rustls client settings with the system's trust roots, made once.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().unwrap_or_default() {
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                .expect("ring supports the default protocol versions");
            Arc::new(config)
        })
        .clone()
}

enum Keys {
    Static(Arc<Vec<Key>>),
    Remote(Arc<Remote>),
}

struct Provider {
    name: Arc<str>,
    keys: Keys,
    /// One per algorithm family (jsonwebtoken wants every algorithm of a validation in the
    /// key's family), in the order of [`family_index`].
    validations: [Validation; 4],
    claim_headers: Vec<(Vec<String>, HeaderName)>,
    sources: Vec<Location>,
    forward_token: bool,
}

/// Why a token did not verify.
enum Refusal {
    /// No key to check with yet (remote JWKS not fetched).
    NoKeys,
    /// The token is malformed, expired, for someone else, or badly signed.
    Invalid,
}

impl Provider {
    fn new(spec: JwtProviderSpec) -> Result<Self, SpecError> {
        if spec.name.is_empty() {
            return Err(SpecError::invalid("name", "is empty"));
        }
        let keys = match spec.jwks {
            JwksSpec::Inline(text) => Keys::Static(Arc::new(
                parse_jwks(&text).map_err(|e| SpecError::invalid("jwks.inline", e))?,
            )),
            JwksSpec::Secret(source) => {
                let text = source.text("jwks.secret", "jwks")?;
                Keys::Static(Arc::new(
                    parse_jwks(text).map_err(|e| SpecError::invalid("jwks.secret", e))?,
                ))
            }
            JwksSpec::File(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| SpecError::invalid("jwks.file", format!("{path}: {e}")))?;
                Keys::Static(Arc::new(parse_jwks(&text).map_err(|e| {
                    SpecError::invalid("jwks.file", format!("{path}: {e}"))
                })?))
            }
            JwksSpec::Remote(r) => {
                let uri: Uri = r
                    .uri
                    .parse()
                    .map_err(|e| SpecError::invalid("jwks.remote.uri", format!("{e}")))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    return Err(SpecError::invalid(
                        "jwks.remote.uri",
                        "must be an http:// or https:// URL",
                    ));
                }
                let every = Duration::from_secs(r.cache_duration_seconds.unwrap_or(300).max(1));
                let timeout = Duration::from_millis(r.timeout_ms.unwrap_or(5000).max(1));
                Keys::Remote(Arc::new(Remote {
                    uri,
                    every,
                    timeout,
                    keys: ArcSwapOption::empty(),
                    started: AtomicBool::new(false),
                    refresh: Notify::new(),
                    loaded: Notify::new(),
                    last_early: AtomicU64::new(0),
                    epoch: Instant::now(),
                }))
            }
        };
        let validation = |family: AlgorithmFamily| {
            let mut v = Validation::new(family.algorithms()[0]);
            v.algorithms = family.algorithms().to_vec();
            // `exp` is checked when present, as Envoy does; not required.
            v.required_spec_claims.clear();
            v.validate_nbf = true;
            v.leeway = spec.clock_skew_seconds.unwrap_or(60);
            if let Some(iss) = &spec.issuer {
                v.set_issuer(&[iss]);
            }
            if spec.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&spec.audiences);
            }
            v
        };
        let validations = [
            validation(AlgorithmFamily::Hmac),
            validation(AlgorithmFamily::Rsa),
            validation(AlgorithmFamily::Ec),
            validation(AlgorithmFamily::Ed),
        ];
        let mut claim_headers = Vec::new();
        for (i, c) in spec.claim_to_headers.iter().enumerate() {
            let header = HeaderName::from_bytes(c.header.as_bytes()).map_err(|_| {
                SpecError::invalid(
                    format!("claimToHeaders[{i}].header"),
                    format!("{:?} is not a header name", c.header),
                )
            })?;
            if c.claim.is_empty() {
                return Err(SpecError::invalid(
                    format!("claimToHeaders[{i}].claim"),
                    "is empty",
                ));
            }
            claim_headers.push((c.claim.split('.').map(str::to_owned).collect(), header));
        }
        let mut sources = Vec::new();
        for (i, s) in spec.extract_from.iter().enumerate() {
            let field = format!("extractFrom[{i}]");
            sources.push(match s {
                TokenSource::Header { name, value_prefix } => Location::Header(
                    HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                        SpecError::invalid(&field, format!("{name:?} is not a header name"))
                    })?,
                    value_prefix.clone(),
                ),
                TokenSource::Query(q) if !q.is_empty() => Location::Query(q.clone()),
                TokenSource::Cookie(c) if !c.is_empty() => Location::Cookie(c.clone()),
                _ => return Err(SpecError::invalid(field, "the name is empty")),
            });
        }
        if sources.is_empty() {
            sources.push(Location::Header(
                http::header::AUTHORIZATION,
                Some("Bearer ".into()),
            ));
        }
        Ok(Provider {
            name: spec.name.into(),
            keys,
            validations,
            claim_headers,
            sources,
            forward_token: spec.forward_token,
        })
    }

    /// The claims of `token` if it verifies against this provider's keys.
    async fn verify(&self, token: &str) -> Result<Value, Refusal> {
        let header = decode_header(token).map_err(|_| Refusal::Invalid)?;
        let keys = match &self.keys {
            Keys::Static(k) => k.clone(),
            Keys::Remote(r) => r.keys().await.ok_or(Refusal::NoKeys)?,
        };
        let usable = |k: &&Key| {
            k.key.family() == header.alg.family() && k.alg.is_none_or(|a| a == header.alg)
        };
        let mut candidates = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .filter(usable)
            .peekable();
        if candidates.peek().is_none() {
            if let Keys::Remote(r) = &self.keys {
                r.refresh_soon();
            }
            return Err(Refusal::Invalid);
        }
        for key in candidates {
            let validation = &self.validations[family_index(header.alg.family())];
            if let Ok(data) = decode::<Value>(token, &key.key, validation) {
                return Ok(data.claims);
            }
        }
        Err(Refusal::Invalid)
    }
}

/// Where a family's validation is in [`Provider::validations`].
fn family_index(family: AlgorithmFamily) -> usize {
    match family {
        AlgorithmFamily::Hmac => 0,
        AlgorithmFamily::Rsa => 1,
        AlgorithmFamily::Ec => 2,
        AlgorithmFamily::Ed => 3,
    }
}

/// A claim's value as a header value: strings as they are, other values as JSON.
fn claim_value(claims: &Value, path: &[String]) -> Option<HeaderValue> {
    let mut v = claims;
    for part in path {
        v = v.get(part)?;
    }
    match v {
        Value::Null => None,
        Value::String(s) => HeaderValue::from_str(s).ok(),
        other => HeaderValue::from_str(&other.to_string()).ok(),
    }
}

/// The `JWTAuth` filter, built from a [`JwtAuthSpec`].
pub struct JwtAuthFilter {
    providers: Vec<Provider>,
    optional: bool,
}

impl std::fmt::Debug for JwtAuthFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.providers.iter().map(|p| &*p.name).collect();
        f.debug_struct("JwtAuthFilter")
            .field("providers", &names)
            .finish()
    }
}

impl JwtAuthFilter {
    /// Checks `spec` and reads inline and file keys; remote keys are fetched when first needed.
    pub fn new(spec: JwtAuthSpec) -> Result<Self, SpecError> {
        if spec.providers.is_empty() {
            return Err(SpecError::invalid(
                "providers",
                "at least one provider is needed",
            ));
        }
        let mut providers: Vec<Provider> = Vec::with_capacity(spec.providers.len());
        for (i, p) in spec.providers.into_iter().enumerate() {
            if providers.iter().any(|q| *q.name == p.name) {
                return Err(SpecError::invalid(
                    format!("providers[{i}].name"),
                    "is not unique",
                ));
            }
            providers.push(Provider::new(p).map_err(|e| e.within(&format!("providers[{i}]")))?);
        }
        Ok(JwtAuthFilter {
            providers,
            optional: spec.optional,
        })
    }
}

#[async_trait]
impl HttpFilter for JwtAuthFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let mut found = false;
        let mut no_keys = false;
        for p in &self.providers {
            let Some((location, token)) = p
                .sources
                .iter()
                .find_map(|l| Some((l, l.find(session.req_header())?)))
            else {
                continue;
            };
            found = true;
            match p.verify(&token).await {
                Ok(claims) => {
                    let req = session.req_header_mut();
                    if !p.forward_token {
                        location.remove(req);
                    }
                    for (path, header) in &p.claim_headers {
                        req.remove_header(header);
                        if let Some(value) = claim_value(&claims, path) {
                            // A valid name and a valid value: cannot fail.
                            let _ = req.insert_header(header.clone(), value);
                        }
                    }
                    ctx.extensions_mut().insert(JwtClaims {
                        provider: p.name.clone(),
                        claims,
                    });
                    return Ok(FilterAction::Continue);
                }
                Err(Refusal::NoKeys) => no_keys = true,
                Err(Refusal::Invalid) => {}
            }
        }
        if !found && self.optional {
            return Ok(FilterAction::Continue);
        }
        let (body, challenge) = match (found, no_keys) {
            (false, _) => ("unauthorized\n", "Bearer"),
            (true, true) => ("jwks unavailable\n", "Bearer error=\"invalid_token\""),
            (true, false) => ("invalid token\n", "Bearer error=\"invalid_token\""),
        };
        Ok(answer(
            401,
            body,
            vec![("www-authenticate".into(), challenge.into())],
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HMAC_JWKS: &str = r#"{"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;

    #[test]
    fn jwks_from_a_secret_is_read_from_its_filled_data() {
        let mut settings = serde_json::json!({
            "providers": [{"name": "a", "jwks": {"secret": {"secretRef": {"name": "keys", "namespace": "apps"}}}}]
        });
        let mut secrets = std::collections::BTreeMap::new();
        secrets.insert(
            "apps/keys".to_string(),
            [("jwks".to_string(), HMAC_JWKS.to_string())].into(),
        );
        let secrets = gateway_core::config::SecretData::new(secrets);
        crate::secret::fill(&mut settings, &secrets).unwrap();
        let spec: JwtAuthSpec = serde_json::from_value(settings.clone()).unwrap();
        assert!(JwtAuthFilter::new(spec).is_ok());

        // Unresolved: refused, naming the Secret.
        let mut unresolved = settings.clone();
        unresolved["providers"][0]["jwks"]["secret"]
            .as_object_mut()
            .unwrap()
            .remove("data");
        let empty = gateway_core::config::SecretData::default();
        assert_eq!(
            crate::secret::fill(&mut unresolved, &empty)
                .unwrap_err()
                .to_string(),
            "secretRef: Secret apps/keys was not resolved"
        );
        // A Secret without the key.
        settings["providers"][0]["jwks"]["secret"]["key"] = "other".into();
        let spec: JwtAuthSpec = serde_json::from_value(settings).unwrap();
        assert_eq!(
            JwtAuthFilter::new(spec).unwrap_err().to_string(),
            "providers[0].jwks.secret: Secret keys has no key other"
        );
    }

    #[test]
    fn jwks_errors_and_provider_fields_are_named() {
        assert_eq!(parse_jwks(HMAC_JWKS).unwrap().len(), 1);
        assert!(
            parse_jwks("{}")
                .unwrap_err()
                .starts_with("not a JWKS document")
        );
        assert_eq!(
            parse_jwks(r#"{"keys": []}"#).unwrap_err(),
            "none of its 0 keys can verify signatures"
        );
        let spec: JwtAuthSpec = serde_json::from_value(serde_json::json!({
            "providers": [{"name": "a", "jwks": {"remote": {"uri": "ftp://x/keys"}}}]
        }))
        .unwrap();
        assert_eq!(
            JwtAuthFilter::new(spec).unwrap_err().to_string(),
            "providers[0].jwks.remote.uri: must be an http:// or https:// URL"
        );
        let spec: JwtAuthSpec = serde_json::from_value(serde_json::json!({
            "providers": [
                {"name": "a", "jwks": {"inline": HMAC_JWKS}},
                {"name": "a", "jwks": {"inline": HMAC_JWKS}}
            ]
        }))
        .unwrap();
        assert_eq!(
            JwtAuthFilter::new(spec).unwrap_err().to_string(),
            "providers[1].name: is not unique"
        );
    }

    #[test]
    fn claims_become_header_values() {
        let claims = serde_json::json!({"sub": "u1", "realm": {"roles": ["a", "b"], "level": 3}});
        let path = |p: &str| p.split('.').map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(claim_value(&claims, &path("sub")).unwrap(), "u1");
        assert_eq!(
            claim_value(&claims, &path("realm.roles")).unwrap(),
            r#"["a","b"]"#
        );
        assert_eq!(claim_value(&claims, &path("realm.level")).unwrap(), "3");
        assert!(claim_value(&claims, &path("realm.missing")).is_none());
    }
}
