//! TLS termination: certificates chosen by SNI, and client certificates checked, from the active
//! table.
//!
//! Each HTTPS bind gets one rustls `ServerConfig` built once when its socket is bound. Everything
//! in it that depends on the configuration reads the bind's entry of the current table on every
//! handshake, so configuration swaps apply to the next handshake without rebinding the socket:
//!
//! - the certificate resolver ([`SniResolver`]) picks the certificate from the bind's
//!   [`CertIndex`];
//! - the client certificate verifier ([`LiveClientVerifier`]) asks for, requires and verifies
//!   client certificates as the bind's [`ClientAuth`] says (Gateway API client certificate
//!   validation is per port, and a bind is one port);
//! - the session store ([`GatedSessions`]) only resumes sessions made under the bind's current
//!   client validation, because a resumed session skips certificate verification;
//! - the handshake callback ([`RecordTls`]) records the SNI and the client certificate outcome on
//!   the connection ([`TlsInfo`]) for the request path.
//!
//! ALPN offers `h2` and `http/1.1`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, ResolvesServerCert, ServerSessionMemoryCache, StoresServerSessions,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::{ClientValidation, ClientValidationMode, Listener};
use crate::error::{Error, ErrorKind, Result};
use crate::filter::ClientCertStatus;
use crate::table::{Table, certified_key};

/// A bind's certificates by the hostname of the listener that carries them.
///
/// A handshake takes the certificate of the listener whose hostname matches the SNI most
/// specifically (exact, then the longest wildcard), else that of a listener without hostname,
/// else the first certificate of the bind.
#[derive(Default)]
pub(crate) struct CertIndex {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Wildcard listeners by their suffix without `*.` (`*.example.com` -> `example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    fallback: Option<Arc<CertifiedKey>>,
}

impl CertIndex {
    /// Loads the first certificate of every TLS listener.
    pub(crate) fn build(listeners: &[Listener]) -> Result<Self> {
        let mut index = CertIndex::default();
        let mut first = None;
        for listener in listeners {
            let Some(cert) = listener.tls.as_ref().and_then(|t| t.certificates.first()) else {
                continue;
            };
            let key = Arc::new(
                certified_key(&cert.cert_pem, &cert.key_pem)
                    .map_err(|e| e.more_context(format_args!("listener {}", listener.name)))?,
            );
            first.get_or_insert_with(|| key.clone());
            match listener.hostname.as_deref().map(str::to_ascii_lowercase) {
                None => {
                    index.fallback.get_or_insert(key);
                }
                Some(h) => match h.strip_prefix("*.") {
                    Some(suffix) => {
                        index.wildcard.entry(suffix.to_owned()).or_insert(key);
                    }
                    None => {
                        index.exact.entry(h).or_insert(key);
                    }
                },
            }
        }
        if index.fallback.is_none() {
            index.fallback = first;
        }
        Ok(index)
    }

    /// The certificate for `sni` (already lower case, as rustls hands it over).
    pub(crate) fn lookup(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = sni {
            if let Some(k) = self.exact.get(name) {
                return Some(k.clone());
            }
            let mut rest = name;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(k) = self.wildcard.get(rest) {
                    return Some(k.clone());
                }
            }
        }
        self.fallback.clone()
    }
}

/// The client certificate policy of one TLS bind, compiled from its listeners'
/// [`ClientValidation`].
pub(crate) enum ClientAuth {
    /// No client certificate is asked for.
    Off,
    /// Client certificates are asked for and verified by `verifier`.
    Verify {
        verifier: Arc<dyn ClientCertVerifier>,
        /// `AllowInsecureFallback`: clients without a valid certificate get through.
        insecure_fallback: bool,
        /// Identifies the settings (see [`ClientAuth::tag`]).
        tag: u64,
    },
    /// The settings are unusable: every handshake is refused.
    Refuse,
}

impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAuth::Off => f.write_str("Off"),
            ClientAuth::Verify {
                insecure_fallback,
                tag,
                ..
            } => f
                .debug_struct("Verify")
                .field("insecure_fallback", insecure_fallback)
                .field("tag", tag)
                .finish(),
            ClientAuth::Refuse => f.write_str("Refuse"),
        }
    }
}

/// What compiling the client validation of a bind decided.
pub(crate) struct BindClientAuth {
    pub(crate) auth: ClientAuth,
    /// Listeners (by index) left out because their client validation differs from the bind's.
    pub(crate) refused_listeners: Vec<usize>,
    /// Messages for [`crate::ApplyReport::rejected`].
    pub(crate) rejected: Vec<String>,
}

impl ClientAuth {
    /// Compiles the client validation of a TLS bind: the first TLS listener's setting applies;
    /// later listeners stating another one are refused. Never fails: unusable settings become
    /// [`ClientAuth::Refuse`] (fail closed) with a message.
    pub(crate) fn compile(listeners: &[Listener], address: SocketAddr) -> BindClientAuth {
        let mut out = BindClientAuth {
            auth: ClientAuth::Off,
            refused_listeners: Vec::new(),
            rejected: Vec::new(),
        };
        let mut tls = listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.tls.as_ref().map(|t| (i, l, &t.client_validation)));
        let Some((_, first, wanted)) = tls.next() else {
            return out;
        };
        for (i, listener, other) in tls {
            if other != wanted {
                tracing::warn!(
                    listener = %listener.name,
                    first = %first.name,
                    "client certificate validation differs from the bind's; listener rejected"
                );
                out.refused_listeners.push(i);
                out.rejected.push(format!(
                    "listener {}: its client certificate validation differs from that of listener {} on {address} (validation is per port); the listener is not served",
                    listener.name, first.name
                ));
            }
        }
        if let Some(validation) = wanted {
            out.auth = match Self::verify(validation) {
                Ok(auth) => auth,
                Err(e) => {
                    tracing::warn!(listener = %first.name, %address, error = %e, "client certificate validation unusable; every handshake is refused");
                    out.rejected.push(format!(
                        "listener {}: client certificate validation: {e}; every TLS handshake on {address} is refused",
                        first.name
                    ));
                    ClientAuth::Refuse
                }
            };
        }
        out
    }

    fn verify(validation: &ClientValidation) -> Result<ClientAuth> {
        let mut roots = RootCertStore::empty();
        for (i, pem) in validation.ca_pem.iter().enumerate() {
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                let cert = cert.map_err(|e| {
                    Error::because(
                        ErrorKind::InvalidCertificate,
                        format!("CA bundle {i}: reading PEM"),
                        e,
                    )
                })?;
                roots.add(cert).map_err(|e| {
                    Error::because(
                        ErrorKind::InvalidCertificate,
                        format!("CA bundle {i}: not a usable CA certificate"),
                        e,
                    )
                })?;
            }
        }
        if roots.is_empty() {
            return Err(Error::new(
                ErrorKind::InvalidCertificate,
                "no CA certificate to verify client certificates with",
            ));
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| {
                Error::because(
                    ErrorKind::InvalidCertificate,
                    "building the client verifier",
                    e,
                )
            })?;
        let mut hasher = DefaultHasher::new();
        validation.hash(&mut hasher);
        Ok(ClientAuth::Verify {
            verifier,
            insecure_fallback: validation.mode == ClientValidationMode::AllowInsecureFallback,
            tag: hasher.finish().max(2),
        })
    }

    /// Identifies the settings: equal settings (also across configuration swaps) have equal tags.
    /// Sessions and connections remember the tag they were judged under.
    pub(crate) fn tag(&self) -> u64 {
        match self {
            ClientAuth::Off => 0,
            ClientAuth::Refuse => 1,
            ClientAuth::Verify { tag, .. } => *tag,
        }
    }

    /// Whether a request on a connection whose handshake recorded `info` may be served under
    /// these settings. Runs once per request on TLS binds: a comparison when validation is on.
    ///
    /// With `AllowValidOnly`, a connection is admitted only if its certificate verified under
    /// these very settings: a connection (or a resumed session) from before a change of CA or mode
    /// is not, so a configuration change also applies to open connections.
    ///
    /// `info` is only looked up when the answer depends on it.
    pub(crate) fn admits<'a>(&self, info: impl FnOnce() -> Option<&'a TlsInfo>) -> bool {
        match self {
            ClientAuth::Off => true,
            ClientAuth::Verify {
                insecure_fallback: true,
                ..
            } => true,
            ClientAuth::Verify { tag, .. } => info().is_some_and(|i| {
                i.client_auth_tag == *tag && i.client_cert == ClientCertStatus::Verified
            }),
            ClientAuth::Refuse => false,
        }
    }

    /// Judges the certificate chain a client presented (leaf first) under these settings.
    fn judge(&self, chain: Option<&[CertificateDer<'static>]>) -> ClientCertStatus {
        let Some((leaf, intermediates)) = chain.and_then(<[_]>::split_first) else {
            return ClientCertStatus::Absent;
        };
        match self {
            ClientAuth::Verify { verifier, .. } => {
                match verifier.verify_client_cert(leaf, intermediates, UnixTime::now()) {
                    Ok(_) => ClientCertStatus::Verified,
                    Err(_) => ClientCertStatus::Unverified,
                }
            }
            ClientAuth::Off | ClientAuth::Refuse => ClientCertStatus::Unverified,
        }
    }
}

/// See [`ClientValidation::check`].
pub(crate) fn check_validation(validation: &ClientValidation) -> Result<()> {
    ClientAuth::verify(validation).map(drop)
}

/// The crypto provider of every TLS bind (ring, as Pingora's rustls backend uses).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads the client validation of one bind from the live table.
#[derive(Clone)]
struct LiveBind {
    table: Arc<ArcSwap<Table>>,
    address: SocketAddr,
}

impl LiveBind {
    /// Runs `f` on the bind's current [`ClientAuth`] (`Off` if the bind is gone).
    fn with_auth<R>(&self, f: impl FnOnce(&ClientAuth) -> R) -> R {
        let table = self.table.load();
        match table.binds.get(&self.address) {
            Some(bind) => f(&bind.client_auth),
            None => f(&ClientAuth::Off),
        }
    }
}

impl fmt::Debug for LiveBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveBind")
            .field("address", &self.address)
            .finish()
    }
}

/// Resolves certificates for one HTTPS bind from the live table. A bind whose client validation
/// is unusable gets no certificate, so its handshakes fail at once.
pub(crate) struct SniResolver {
    pub(crate) table: Arc<ArcSwap<Table>>,
    pub(crate) address: SocketAddr,
}

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SniResolver")
            .field("address", &self.address)
            .finish()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let table = self.table.load();
        let bind = table.binds.get(&self.address)?;
        if matches!(bind.client_auth, ClientAuth::Refuse) {
            return None;
        }
        bind.certs.lookup(hello.server_name())
    }
}

/// The client certificate verifier of one HTTPS bind: asks for, requires and verifies client
/// certificates as the bind's current [`ClientAuth`] says.
///
/// No CA names are sent in the certificate request (rustls borrows them from the verifier, which
/// holds no settings of its own); clients present the certificate they are configured with.
#[derive(Debug)]
struct LiveClientVerifier {
    bind: LiveBind,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for LiveClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.bind.with_auth(|auth| !matches!(auth, ClientAuth::Off))
    }

    fn client_auth_mandatory(&self) -> bool {
        self.bind.with_auth(|auth| match auth {
            ClientAuth::Off => false,
            ClientAuth::Verify {
                insecure_fallback, ..
            } => !insecure_fallback,
            ClientAuth::Refuse => true,
        })
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.bind.with_auth(|auth| match auth {
            // Asked for under settings replaced since: nothing to check any more.
            ClientAuth::Off => Ok(ClientCertVerified::assertion()),
            ClientAuth::Refuse => Err(rustls::Error::General(
                "client certificate validation is misconfigured".into(),
            )),
            ClientAuth::Verify {
                verifier,
                insecure_fallback,
                ..
            } => match verifier.verify_client_cert(end_entity, intermediates, now) {
                Ok(verified) => Ok(verified),
                Err(e) if *insecure_fallback => {
                    tracing::debug!(address = %self.bind.address, error = %e, "client certificate does not verify; admitted (AllowInsecureFallback)");
                    Ok(ClientCertVerified::assertion())
                }
                Err(e) => {
                    tracing::debug!(address = %self.bind.address, error = %e, "client certificate refused");
                    Err(e)
                }
            },
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The session cache of one HTTPS bind. Each stored session carries the [`ClientAuth::tag`] it
/// was made under, and is resumed only while the bind's client validation is the same: resuming
/// skips certificate verification, so a session from before a change of CA or mode (or from
/// before validation was turned on) must go through a full handshake.
#[derive(Debug)]
struct GatedSessions {
    inner: Arc<ServerSessionMemoryCache>,
    bind: LiveBind,
}

/// Sessions kept per bind (as rustls's default).
const SESSION_CACHE_SIZE: usize = 256;

impl GatedSessions {
    fn unwrap(&self, stored: Vec<u8>) -> Option<Vec<u8>> {
        let (tag, value) = stored.split_first_chunk::<8>()?;
        let current = self.bind.with_auth(ClientAuth::tag);
        (u64::from_be_bytes(*tag) == current).then(|| value.to_vec())
    }
}

impl StoresServerSessions for GatedSessions {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let tag = self.bind.with_auth(ClientAuth::tag);
        let mut stored = Vec::with_capacity(8 + value.len());
        stored.extend_from_slice(&tag.to_be_bytes());
        stored.extend_from_slice(&value);
        self.inner.put(key, stored)
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unwrap(self.inner.get(key)?)
    }

    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.unwrap(self.inner.take(key)?)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// The TLS acceptor of an HTTPS bind: TLS 1.2 and 1.3, certificates by SNI ([`SniResolver`]),
/// client certificates per the bind's validation ([`LiveClientVerifier`]), sessions resumed only
/// under unchanged validation ([`GatedSessions`]), ALPN `h2` then `http/1.1`, and [`TlsInfo`]
/// recorded on the connection.
pub(crate) fn acceptor(
    table: Arc<ArcSwap<Table>>,
    address: SocketAddr,
) -> pingora_error::Result<Acceptor> {
    let bind = LiveBind {
        table: table.clone(),
        address,
    };
    let mut settings = TlsSettings::with_callbacks(Box::new(RecordTls { bind: bind.clone() }))?;
    settings.set_cert_resolver(Arc::new(SniResolver {
        table: table.clone(),
        address,
    }));
    settings.enable_h2();
    // Pingora's settings cannot carry a session store, so its server config (built here with
    // the callbacks) is replaced by one that also has the verifier and the gated store.
    let mut acceptor = settings.build();
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(|e| {
            pingora_error::Error::because(
                pingora_error::ErrorType::InternalError,
                "TLS server configuration",
                e,
            )
        })?
        .with_client_cert_verifier(Arc::new(LiveClientVerifier {
            bind: bind.clone(),
            provider,
        }))
        .with_cert_resolver(Arc::new(SniResolver { table, address }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = Arc::new(GatedSessions {
        inner: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
        bind,
    });
    acceptor.acceptor = pingora_core::tls::TlsAcceptor::from(Arc::new(config));
    Ok(acceptor)
}

/// What the handshake of a TLS connection established, attached to the connection's
/// `SslDigest` extension: the SNI (so the proxy can tell a request whose `Host` belongs to
/// another listener than the connection's, 421) and the client certificate outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsInfo {
    /// The server name the client asked for, lowercased.
    pub(crate) sni: Option<String>,
    /// The client certificate, judged under the bind's validation at the end of the handshake.
    pub(crate) client_cert: ClientCertStatus,
    /// The [`ClientAuth::tag`] of the settings `client_cert` was judged under.
    pub(crate) client_auth_tag: u64,
}

/// Records [`TlsInfo`] when a handshake completes. The client certificate (also one restored by
/// session resumption) is verified again here under the bind's current settings, so the outcome
/// is the truth for those settings even if they changed during the handshake.
struct RecordTls {
    bind: LiveBind,
}

#[async_trait]
impl TlsAccept for RecordTls {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let sni = ssl.server_name().map(str::to_ascii_lowercase);
        let (client_cert, client_auth_tag) = self
            .bind
            .with_auth(|auth| (auth.judge(ssl.peer_cert_chain_der()), auth.tag()));
        Some(Arc::new(TlsInfo {
            sni,
            client_cert,
            client_auth_tag,
        }))
    }
}
