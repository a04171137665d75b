//! TLS from the gateway to backends ([`UpstreamTls`]).
//!
//! Pingora 0.9's rustls connector builds a new rustls `ClientConfig` for every connection to a
//! peer that carries its own CA or client certificate. rustls only resumes a TLS session under
//! the very `ClientConfig` (same session store, same verifier, same client credentials) that
//! made it, so those connections never resume; and the connector can only verify the SNI name,
//! not other subject alternative names.
//!
//! So the gateway does the TLS handshake itself, through Pingora's public extension point for
//! custom transports: the peer's `custom_l4` connector ([`TlsConnect`]) opens the TCP connection,
//! runs the rustls handshake with one `ClientConfig` shared by every connection of the same
//! settings, and hands Pingora the encrypted stream as a "virtual socket". Pingora then speaks
//! HTTP/1.1 or HTTP/2 over it and pools it like any connection; the peer's `group_key` (part of
//! the pool key) is a hash of the TLS settings, so a pooled connection is only reused by a peer
//! with the same settings. The configs live in [`ClientConfigs`], shared by every table the
//! gateway compiles, so sessions (and their tickets) survive configuration swaps that leave a
//! backend's settings alone, and settings that change get a fresh config and fresh connections.

use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::connectors::L4Connect;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream;
use pingora_core::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error as PError, ErrorType};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{BackendProtocol, SubjectAltName, UpstreamTls, UpstreamTrust};
use crate::error::{Error, ErrorKind, Result};

/// How long the TCP connection and, separately, the TLS handshake to a backend may take.
/// The request's own deadlines (Pingora's total connection timeout) still bound both.
pub const TLS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// ALPN a backend of this protocol is offered.
fn alpn(protocol: BackendProtocol) -> Vec<Vec<u8>> {
    match protocol {
        BackendProtocol::H2c => vec![b"h2".to_vec()],
        BackendProtocol::Http1 | BackendProtocol::WebSocket => vec![b"http/1.1".to_vec()],
    }
}

/// Shared rustls client configs by TLS settings and ALPN, kept while some table uses them.
/// Only touched when a configuration is compiled.
#[derive(Default)]
pub(crate) struct ClientConfigs {
    configs: Mutex<HashMap<(UpstreamTls, bool), Weak<ClientConfig>>>,
}

impl ClientConfigs {
    /// The config for `tls` spoken with `protocol`: the one already in use, or a new one.
    fn get(&self, tls: &UpstreamTls, protocol: BackendProtocol) -> Result<Arc<ClientConfig>> {
        let key = (tls.clone(), protocol == BackendProtocol::H2c);
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        configs.retain(|_, w| w.strong_count() > 0);
        if let Some(config) = configs.get(&key).and_then(Weak::upgrade) {
            return Ok(config);
        }
        let config = Arc::new(client_config(tls, protocol)?);
        configs.insert(key, Arc::downgrade(&config));
        Ok(config)
    }

    /// Compiles the TLS settings of backend `backend` spoken with `protocol`.
    pub(crate) fn compile(
        &self,
        backend: &str,
        tls: &UpstreamTls,
        protocol: BackendProtocol,
    ) -> Result<CompiledTls> {
        let server_name = ServerName::try_from(tls.hostname.clone()).map_err(|e| {
            Error::because(
                ErrorKind::InvalidConfig,
                format!("TLS hostname {:?}", tls.hostname),
                e,
            )
        })?;
        if !matches!(server_name, ServerName::DnsName(_)) {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("TLS hostname {:?} is not a DNS name", tls.hostname),
            ));
        }
        let config = self.get(tls, protocol)?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        tls.hash(&mut hasher);
        protocol.hash(&mut hasher);
        // 0 is the group of plain-text peers.
        let group_key = hasher.finish().max(1);
        Ok(CompiledTls {
            group_key,
            connect: Arc::new(TlsConnect {
                backend: Arc::from(backend),
                connector: TlsConnector::from(config),
                server_name,
            }),
        })
    }
}

/// A backend's TLS settings, ready for the request path. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub(crate) struct CompiledTls {
    /// Pool key of the settings: connections are reused only by peers with the same settings.
    group_key: u64,
    connect: Arc<TlsConnect>,
}

impl CompiledTls {
    /// The pool key of these settings (never 0, the key of plain-text peers).
    pub(crate) fn group_key(&self) -> u64 {
        self.group_key
    }

    /// Makes `peer` connect over TLS with these settings. Costs two word copies and an `Arc`
    /// clone: nothing is built per request.
    pub(crate) fn apply(&self, peer: &mut HttpPeer) {
        peer.group_key = self.group_key;
        peer.options.custom_l4 = Some(self.connect.clone());
    }
}

/// Opens TCP then TLS to an endpoint: Pingora's `custom_l4` hook for TLS backends.
struct TlsConnect {
    /// The backend's name, for logs.
    backend: Arc<str>,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsConnect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnect")
            .field("backend", &self.backend)
            .field("server_name", &self.server_name)
            .finish()
    }
}

#[async_trait]
impl L4Connect for TlsConnect {
    async fn connect(&self, addr: &SocketAddr) -> pingora_error::Result<Stream> {
        let Some(inet) = addr.as_inet() else {
            return Err(PError::explain(
                ErrorType::ConnectError,
                format!("TLS backend {} at a non-IP address {addr}", self.backend),
            ));
        };
        let tcp = match tokio::time::timeout(TLS_CONNECT_TIMEOUT, TcpStream::connect(inet)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                let etype = match e.kind() {
                    std::io::ErrorKind::ConnectionRefused => ErrorType::ConnectRefused,
                    _ => ErrorType::ConnectError,
                };
                return Err(PError::because(
                    etype,
                    format!("connecting to {inet} (backend {})", self.backend),
                    e,
                ));
            }
            Err(_) => {
                return Err(PError::explain(
                    ErrorType::ConnectTimedout,
                    format!("connecting to {inet} (backend {})", self.backend),
                ));
            }
        };
        // Requests are written whole; Nagle would only delay them.
        let _ = tcp.set_nodelay(true);
        let handshake = self.connector.connect(self.server_name.clone(), tcp);
        match tokio::time::timeout(TLS_CONNECT_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => {
                let resumed = matches!(
                    tls.get_ref().1.handshake_kind(),
                    Some(rustls::HandshakeKind::Resumed)
                );
                tracing::trace!(backend = %self.backend, endpoint = %inet, resumed, "TLS to backend");
                Ok(Stream::from(VirtualSocketStream::new(Box::new(TlsSocket(
                    tls,
                )))))
            }
            Ok(Err(e)) => {
                tracing::warn!(
                    backend = %self.backend,
                    endpoint = %inet,
                    sni = ?self.server_name,
                    error = %e,
                    "TLS handshake with backend failed"
                );
                Err(PError::because(
                    ErrorType::TLSHandshakeFailure,
                    format!("TLS handshake with {inet} (backend {})", self.backend),
                    e,
                ))
            }
            Err(_) => Err(PError::explain(
                ErrorType::ConnectTimedout,
                format!("TLS handshake with {inet} (backend {})", self.backend),
            )),
        }
    }
}

/// A client TLS stream as a Pingora virtual socket.
struct TlsSocket(TlsStream<TcpStream>);

impl fmt::Debug for TlsSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("TlsSocket")
            .field(&self.0.get_ref().0)
            .finish()
    }
}

impl VirtualSocket for TlsSocket {
    fn set_socket_option(&self, opt: VirtualSockOpt) -> std::io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.0.get_ref().0.set_nodelay(true),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "socket option not supported on TLS backend connections",
            )),
        }
    }

    /// The TCP socket under the TLS session: Pingora's pool hands a pooled connection out again
    /// only when this descriptor is connected to the peer's address (vendor/README.md).
    fn raw_fd(&self) -> Option<std::os::unix::io::RawFd> {
        use std::os::unix::io::AsRawFd;
        Some(self.0.get_ref().0.as_raw_fd())
    }
}

impl AsyncRead for TlsSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Builds the rustls client config of `tls`: TLS 1.2 and 1.3 with the ring provider, the
/// settings' roots and names ([`BackendVerifier`]), the client certificate if any, ALPN for
/// `protocol`, and rustls's default in-memory session cache (256 sessions) for resumption.
fn client_config(tls: &UpstreamTls, protocol: BackendProtocol) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = Arc::new(roots(&tls.trust)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| Error::because(ErrorKind::InvalidCertificate, "CA certificates", e))?;
    let verifier = Arc::new(BackendVerifier {
        webpki,
        names: tls.subject_alt_names.clone(),
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| Error::because(ErrorKind::Internal, "TLS protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_certificate {
        None => builder.with_no_client_auth(),
        Some(cert) => {
            let chain = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| {
                    Error::because(ErrorKind::InvalidCertificate, "client certificate PEM", e)
                })?;
            if chain.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidCertificate,
                    "no certificate in the client certificate PEM",
                ));
            }
            builder
                .with_client_auth_cert(chain, private_key(&cert.key_pem)?)
                .map_err(|e| {
                    Error::because(ErrorKind::InvalidCertificate, "client certificate", e)
                })?
        }
    };
    config.alpn_protocols = alpn(protocol);
    Ok(config)
}

/// The private key of a PEM string.
fn private_key(pem: &str) -> Result<rustls::pki_types::PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| Error::because(ErrorKind::InvalidCertificate, "reading key PEM", e))?
        .ok_or_else(|| Error::new(ErrorKind::InvalidCertificate, "no private key in PEM"))
}

/// The trust roots of `trust`.
fn roots(trust: &UpstreamTrust) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match trust {
        UpstreamTrust::System => {
            // Certificates the platform lists but rustls cannot parse are skipped, as every
            // rustls user of the system store does.
            let certs = rustls_native_certs::load_native_certs().map_err(|e| {
                Error::because(ErrorKind::InvalidCertificate, "system trust store", e)
            })?;
            store.add_parsable_certificates(certs);
        }
        UpstreamTrust::Pem(bundles) => {
            for (i, pem) in bundles.iter().enumerate() {
                let certs = rustls_pemfile::certs(&mut pem.as_bytes())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| {
                        Error::because(
                            ErrorKind::InvalidCertificate,
                            format!("CA bundle {i}: reading PEM"),
                            e,
                        )
                    })?;
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(Error::new(
                        ErrorKind::InvalidCertificate,
                        format!("CA bundle {i} holds no usable CA certificate"),
                    ));
                }
            }
        }
    }
    if store.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidCertificate,
            "no trusted CA certificate",
        ));
    }
    Ok(store)
}

/// Verifies a backend's certificate: the chain with webpki against the roots; the name against
/// the SNI hostname, or, when subject alternative names are configured, against those instead.
#[derive(Debug)]
struct BackendVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    names: Vec<SubjectAltName>,
    provider: Arc<CryptoProvider>,
}

impl BackendVerifier {
    /// Whether the end-entity certificate carries one of the configured names.
    fn matches_a_name(&self, end_entity: &CertificateDer<'_>) -> Result<bool, rustls::Error> {
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::InvalidCertificate(webpki_error(e)))?;
        let mut uris: Option<Vec<String>> = None;
        for name in &self.names {
            match name {
                SubjectAltName::Hostname(h) => {
                    if let Ok(server_name) = ServerName::try_from(h.as_str())
                        && cert.verify_is_valid_for_subject_name(&server_name).is_ok()
                    {
                        return Ok(true);
                    }
                }
                SubjectAltName::Uri(u) => {
                    let uris = uris.get_or_insert_with(|| uri_sans(end_entity));
                    if uris.iter().any(|have| have == u) {
                        return Ok(true);
                    }
                }
            }
        }
        Ok(false)
    }
}

fn webpki_error(e: webpki::Error) -> rustls::CertificateError {
    rustls::CertificateError::Other(rustls::OtherError(Arc::new(e)))
}

/// The `uniformResourceIdentifier` subject alternative names of a DER certificate.
fn uri_sans(der: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
        .collect()
}

impl ServerCertVerifier for BackendVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if self.names.is_empty() {
            return chain;
        }
        match chain {
            Ok(_) => {}
            // The chain is good; only the SNI name does not match, which is allowed here.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if self.matches_a_name(end_entity)? {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
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
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
