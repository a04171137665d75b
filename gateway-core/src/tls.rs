//! TLS termination: certificates chosen by SNI from the active table.
//!
//! Each HTTPS bind gets one rustls `ServerConfig` whose certificate resolver reads the bind's
//! [`CertIndex`] from the current table on every handshake, so certificate changes apply without
//! rebinding the socket. ALPN offers `h2` and `http/1.1`.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::listeners::TlsAccept;
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Listener;
use crate::error::Result;
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

/// Resolves certificates for one HTTPS bind from the live table.
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
        table
            .binds
            .get(&self.address)?
            .certs
            .lookup(hello.server_name())
    }
}

/// The TLS acceptor of an HTTPS bind: TLS 1.2 and 1.3, a certificate resolver reading the
/// bind's [`CertIndex`] from the live table, ALPN `h2` then `http/1.1`, and the client's SNI
/// recorded on the connection (see [`Sni`]).
pub(crate) fn acceptor(
    table: Arc<ArcSwap<Table>>,
    address: SocketAddr,
) -> pingora_error::Result<Acceptor> {
    let mut settings = TlsSettings::with_callbacks(Box::new(RecordSni))?;
    settings.set_cert_resolver(Arc::new(SniResolver { table, address }));
    settings.enable_h2();
    Ok(settings.build())
}

/// The server name (SNI) a TLS client asked for, lowercased. Attached to the connection's
/// `SslDigest` extension after the handshake, so the proxy can tell a request whose `Host`
/// belongs to another listener than the one the connection was made for (421).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sni(pub(crate) String);

/// Records [`Sni`] when a handshake completes.
struct RecordSni;

#[async_trait]
impl TlsAccept for RecordSni {
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        let name = ssl.server_name()?;
        Some(Arc::new(Sni(name.to_ascii_lowercase())))
    }
}
