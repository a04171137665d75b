//! `BasicAuth`: HTTP basic authentication against htpasswd users.
//!
//! Runs in `request_headers`. A request without `Authorization: Basic ...`, or whose user and
//! password do not match, is answered 401 with `WWW-Authenticate: Basic realm="..."`. Entries are
//! htpasswd lines `user:hash` with a bcrypt hash (`$2a$`, `$2b$`, `$2y$`; `htpasswd -B`) or a
//! `{SHA}` hash (`htpasswd -s`); any other hash is refused when the filter is built, naming the
//! line. Blank lines and lines starting with `#` are skipped.
//!
//! bcrypt is slow on purpose (tens of milliseconds at cost 10), so it runs on Tokio's blocking
//! pool, never on the proxy's threads, and the last password that verified for each user is
//! remembered as a SHA-256 digest: a client repeating a correct password costs one SHA-256, not
//! one bcrypt. A wrong password always costs a bcrypt verification.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gateway_core::{FilterAction, FilterCtx, HttpFilter, Session, async_trait};
use http::HeaderName;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::{digest, same};
use crate::SpecError;
use crate::respond::answer;
use crate::secret::SecretSource;

/// The kind of [`BasicAuth`] objects.
pub const KIND: &str = "BasicAuth";

/// Settings of a `BasicAuth` filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "BasicAuth",
    plural = "basicauths",
    namespaced
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BasicAuthSpec {
    /// The users, as the text of an htpasswd file (one `user:hash` line each). Default: none
    /// (then `htpasswdFrom` must give some).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub htpasswd: String,
    /// More users, from the htpasswd text in a Secret: its key `.htpasswd` (or `key`, or its
    /// only entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub htpasswd_from: Option<SecretSource>,
    /// The realm named in `WWW-Authenticate`. Default: `gateway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// A request header set to the authenticated user's name before the request goes on (any
    /// value the client sent in it is replaced). Unset: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_username_header: Option<String>,
}

enum Hash {
    Bcrypt {
        hash: Arc<str>,
        /// SHA-256 of the last password that verified, so it is not bcrypt-verified again.
        verified: ArcSwapOption<[u8; 32]>,
    },
    Sha1([u8; 20]),
}

/// The `BasicAuth` filter, built from a [`BasicAuthSpec`].
pub struct BasicAuthFilter {
    users: HashMap<String, Hash>,
    challenge: String,
    forward: Option<HeaderName>,
}

impl std::fmt::Debug for BasicAuthFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthFilter")
            .field("users", &self.users.len())
            .field("challenge", &self.challenge)
            .finish()
    }
}

impl BasicAuthFilter {
    /// Parses the htpasswd text and checks the other fields.
    pub fn new(spec: BasicAuthSpec) -> Result<Self, SpecError> {
        let mut users = HashMap::new();
        let from_secret = match &spec.htpasswd_from {
            Some(source) => source.text("htpasswdFrom", ".htpasswd")?,
            None => "",
        };
        let lines = spec
            .htpasswd
            .lines()
            .enumerate()
            .map(|(i, l)| (i, l, "htpasswd"))
            .chain(
                from_secret
                    .lines()
                    .enumerate()
                    .map(|(i, l)| (i, l, "htpasswdFrom")),
            );
        for (i, line, origin) in lines {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let field = || format!("{origin} line {}", i + 1);
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| SpecError::invalid(field(), "not of the form user:hash"))?;
            let hash = if let Some(b64) = hash.strip_prefix("{SHA}") {
                let raw = STANDARD
                    .decode(b64)
                    .ok()
                    .and_then(|b| <[u8; 20]>::try_from(b).ok())
                    .ok_or_else(|| {
                        SpecError::invalid(field(), "{SHA} hash is not 20 base64 bytes")
                    })?;
                Hash::Sha1(raw)
            } else if ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                Hash::Bcrypt {
                    hash: hash.into(),
                    verified: ArcSwapOption::empty(),
                }
            } else {
                return Err(SpecError::invalid(
                    field(),
                    "unsupported hash: use bcrypt (htpasswd -B) or {SHA} (htpasswd -s)",
                ));
            };
            if users.insert(user.to_owned(), hash).is_some() {
                return Err(SpecError::invalid(
                    field(),
                    format!("user {user:?} appears twice"),
                ));
            }
        }
        if users.is_empty() {
            return Err(SpecError::invalid(
                "htpasswd",
                "has no users (neither inline nor from htpasswdFrom)",
            ));
        }
        let realm = spec.realm.as_deref().unwrap_or("gateway");
        if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
            return Err(SpecError::invalid(
                "realm",
                "may not hold quotes, backslashes or control characters",
            ));
        }
        let forward = spec
            .forward_username_header
            .as_deref()
            .map(|h| {
                HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    SpecError::invalid(
                        "forwardUsernameHeader",
                        format!("{h:?} is not a header name"),
                    )
                })
            })
            .transpose()?;
        Ok(BasicAuthFilter {
            users,
            challenge: format!("Basic realm=\"{realm}\""),
            forward,
        })
    }

    /// The user the request's `Authorization` header authenticates, if any.
    async fn authenticate(&self, session: &Session) -> Option<String> {
        let value = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)?;
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = STANDARD.decode(token.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        let ok = match self.users.get(user)? {
            Hash::Sha1(expected) => {
                let got: [u8; 20] = Sha1::digest(password.as_bytes()).into();
                got.iter().zip(expected).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
            }
            Hash::Bcrypt { hash, verified } => {
                let presented = digest(password.as_bytes());
                if verified
                    .load()
                    .as_deref()
                    .is_some_and(|v| same(v, &presented))
                {
                    true
                } else {
                    let hash = hash.clone();
                    let password = password.to_owned();
                    let ok = tokio::task::spawn_blocking(move || {
                        bcrypt::verify(password, &hash).unwrap_or(false)
                    })
                    .await
                    .unwrap_or(false);
                    if ok {
                        verified.store(Some(Arc::new(presented)));
                    }
                    ok
                }
            }
        };
        ok.then(|| user.to_owned())
    }
}

#[async_trait]
impl HttpFilter for BasicAuthFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        match self.authenticate(session).await {
            Some(user) => {
                if let Some(h) = &self.forward {
                    // A user name that is not a valid header value cannot come out of a valid
                    // htpasswd line and a UTF-8 header, but refuse rather than forward garbage.
                    if session
                        .req_header_mut()
                        .insert_header(h.clone(), user)
                        .is_err()
                    {
                        return Ok(unauthorized(&self.challenge));
                    }
                }
                Ok(FilterAction::Continue)
            }
            None => Ok(unauthorized(&self.challenge)),
        }
    }
}

fn unauthorized(challenge: &str) -> FilterAction {
    answer(
        401,
        "unauthorized\n",
        vec![("www-authenticate".into(), challenge.to_owned())],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_hashes_and_bad_lines_are_named() {
        let err = |text: &str| {
            BasicAuthFilter::new(BasicAuthSpec {
                htpasswd: text.into(),
                ..Default::default()
            })
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            err("# users\nalice:$apr1$abc$def\n"),
            "htpasswd line 2: unsupported hash: use bcrypt (htpasswd -B) or {SHA} (htpasswd -s)"
        );
        assert_eq!(err("alice"), "htpasswd line 1: not of the form user:hash");
        assert_eq!(
            err("\n# nobody\n"),
            "htpasswd: has no users (neither inline nor from htpasswdFrom)"
        );
        assert_eq!(
            err("a:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=\na:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M="),
            "htpasswd line 2: user \"a\" appears twice"
        );
    }
}
