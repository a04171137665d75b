//! Client certificate validation (mutual TLS from clients), through real loopback sockets:
//! required and verified certificates, the insecure fallback, per-bind settings, configuration
//! swaps that change the CA (new handshakes, resumed sessions and open connections), and the
//! outcome filters see.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gateway_core::config::*;
use gateway_core::{FilterCtx, FilterRegistry, Gateway, HttpFilter, ResponseHeader, Session};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{HandshakeKind, SignatureScheme};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A certificate authority that issues client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate issued by this CA.
    fn client(&self, name: &str) -> ClientId {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        ClientId {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        }
    }
}

/// A client certificate (DER) and its PKCS#8 key.
#[derive(Clone)]
struct ClientId {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

/// Presents an optional client certificate and counts how often the server asked for one.
#[derive(Debug)]
struct Presenter {
    key: Option<Arc<CertifiedKey>>,
    asked: AtomicUsize,
}

impl ResolvesClientCert for Presenter {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        self.key.clone()
    }

    fn has_certs(&self) -> bool {
        self.key.is_some()
    }
}

/// A TLS client trusting the test server certificate, presenting `id` when asked. One client
/// keeps rustls's session cache across connections (so it resumes sessions).
struct Client {
    config: Arc<rustls::ClientConfig>,
    presenter: Arc<Presenter>,
}

impl Client {
    fn new(server_der: &[u8], id: Option<&ClientId>) -> Client {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = id.map(|id| {
            let der = PrivateKeyDer::try_from(id.key.clone()).unwrap();
            let signer = provider.key_provider.load_private_key(der).unwrap();
            Arc::new(CertifiedKey::new(vec![id.cert.clone()], signer))
        });
        let presenter = Arc::new(Presenter {
            key,
            asked: AtomicUsize::new(0),
        });
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(server_der.to_vec()))
            .unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_cert_resolver(presenter.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            config: Arc::new(config),
            presenter,
        }
    }

    /// How many times a server asked this client for a certificate.
    fn asked(&self) -> usize {
        self.presenter.asked.load(Ordering::SeqCst)
    }

    async fn connect(&self, port: u16) -> Result<TlsStream<TcpStream>, String> {
        self.connect_as(port, "app.example.com").await
    }

    async fn connect_as(&self, port: u16, sni: &str) -> Result<TlsStream<TcpStream>, String> {
        let tcp = TcpStream::connect(addr(port)).await.unwrap();
        let name = ServerName::try_from(sni.to_owned()).unwrap();
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())
    }

    /// One request on a new connection (closed after it).
    async fn get(&self, port: u16) -> Result<Answer, String> {
        let mut tls = self.connect(port).await?;
        request(&mut tls, true).await
    }
}

/// The status and the `x-client-cert` header of a response.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    client_cert: Option<String>,
}

/// Sends `GET /` on `tls` and reads the response head. With `close`, asks the server to close
/// the connection and reads to the end (which also takes in TLS 1.3 session tickets).
async fn request(tls: &mut TlsStream<TcpStream>, close: bool) -> Result<Answer, String> {
    let connection = if close { "close" } else { "keep-alive" };
    let head =
        format!("GET / HTTP/1.1\r\nhost: app.example.com\r\nconnection: {connection}\r\n\r\n");
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = tls.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if !close && response_complete(&buf) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {text:?}"))?;
    let client_cert = text
        .lines()
        .find_map(|l| l.strip_prefix("x-client-cert: "))
        .map(str::to_owned);
    Ok(Answer {
        status,
        client_cert,
    })
}

/// Whether `buf` holds a whole response with a `content-length` body.
fn response_complete(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length: usize = text[..end]
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    buf.len() >= end + 4 + length
}

/// Answers with the client certificate outcome the filter saw, in `x-client-cert`.
struct ShowClientCert;

#[gateway_core::async_trait]
impl HttpFilter for ShowClientCert {
    async fn response_headers(
        &self,
        _session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        let _ = response.insert_header("x-client-cert", format!("{:?}", ctx.client_cert()));
        Ok(())
    }
}

fn registry() -> FilterRegistry {
    let mut registry = FilterRegistry::new();
    registry.register_filter("test.example", "ShowClientCert", Arc::new(ShowClientCert));
    registry
}

/// The server certificate (PEM cert, PEM key, DER) every test bind serves.
struct Server {
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn server() -> Server {
    let (cert, key, der) = self_signed(&["app.example.com", "other.example.com"]);
    Server { cert, key, der }
}

/// A TLS listener for `host` whose one route goes to `backend` through [`ShowClientCert`].
fn listener(
    name: &str,
    host: Option<&str>,
    server: &Server,
    backend: &TestBackend,
    validation: Option<ClientValidation>,
) -> Listener {
    let route = Route::new("ns", name).rule(
        Rule::prefix("/")
            .filter(Filter::ExtensionRef(ExtensionRef::new(
                "test.example",
                "ShowClientCert",
                "show",
            )))
            .backend(BackendRef::endpoints("v1", vec![backend.addr])),
    );
    let mut l = Listener::new(name, 443).route(route);
    l.hostname = host.map(Into::into);
    l.tls = Some(ListenerTls {
        certificates: vec![Certificate {
            cert_pem: server.cert.clone(),
            key_pem: server.key.clone(),
        }],
        client_validation: validation,
    });
    l
}

fn https_bind(port: u16, listeners: Vec<Listener>) -> Bind {
    Bind {
        address: addr(port),
        protocol: Protocol::Https,
        listeners,
    }
}

fn validation(cas: &[&Ca], mode: ClientValidationMode) -> Option<ClientValidation> {
    Some(ClientValidation {
        ca_pem: cas.iter().map(|ca| ca.pem.clone()).collect(),
        mode,
    })
}

fn ok(cert: &str) -> Result<Answer, String> {
    Ok(Answer {
        status: 200,
        client_cert: Some(cert.into()),
    })
}

/// Asserts that the request failed in the TLS handshake with a fatal alert from the server.
#[track_caller]
fn refused(result: Result<Answer, String>) {
    match result {
        Err(e) => assert!(e.contains("alert"), "not a TLS alert: {e}"),
        Ok(a) => panic!("request got through: {a:?}"),
    }
}

#[tokio::test]
async fn valid_client_certificates_are_required() {
    let v1 = backend("v1").await;
    let (srv, ca, other) = (server(), Ca::new("ca"), Ca::new("other"));
    let port = free_port();
    let gw = Gateway::new(registry());
    let report = gw
        .apply(Config {
            binds: vec![https_bind(
                port,
                vec![listener(
                    "https",
                    None,
                    &srv,
                    &v1,
                    validation(&[&ca], ClientValidationMode::AllowValidOnly),
                )],
            )],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);

    let valid = Client::new(&srv.der, Some(&ca.client("alice")));
    assert_eq!(valid.get(port).await, ok("Verified"));
    assert_eq!(valid.asked(), 1, "the server asked for a certificate");

    let none = Client::new(&srv.der, None);
    let result = none.get(port).await;
    assert_eq!(none.asked(), 1);
    let e = result.expect_err("no certificate must fail");
    assert!(e.contains("CertificateRequired"), "{e}");

    let foreign = Client::new(&srv.der, Some(&other.client("mallory")));
    refused(foreign.get(port).await);

    // A self-signed client certificate is not one the CA issued.
    let (_, key, der) = self_signed(&["mallory"]);
    let self_signed_id = ClientId {
        cert: CertificateDer::from(der),
        key: rustls_pemfile::private_key(&mut key.as_bytes())
            .unwrap()
            .unwrap()
            .secret_der()
            .to_vec(),
    };
    refused(Client::new(&srv.der, Some(&self_signed_id)).get(port).await);

    // Several bundles: certificates of either CA verify.
    gw.apply(Config {
        binds: vec![https_bind(
            port,
            vec![listener(
                "https",
                None,
                &srv,
                &v1,
                validation(&[&ca, &other], ClientValidationMode::AllowValidOnly),
            )],
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(foreign.get(port).await, ok("Verified"));
    assert_eq!(valid.get(port).await, ok("Verified"));
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn insecure_fallback_admits_every_client_and_tells_filters() {
    let v1 = backend("v1").await;
    let (srv, ca, other) = (server(), Ca::new("ca"), Ca::new("other"));
    let port = free_port();
    let gw = Gateway::new(registry());
    gw.apply(Config {
        binds: vec![https_bind(
            port,
            vec![listener(
                "https",
                None,
                &srv,
                &v1,
                validation(&[&ca], ClientValidationMode::AllowInsecureFallback),
            )],
        )],
        ..Default::default()
    })
    .await
    .unwrap();
    let valid = Client::new(&srv.der, Some(&ca.client("alice")));
    assert_eq!(valid.get(port).await, ok("Verified"));
    let foreign = Client::new(&srv.der, Some(&other.client("mallory")));
    assert_eq!(foreign.get(port).await, ok("Unverified"));
    let none = Client::new(&srv.der, None);
    assert_eq!(none.get(port).await, ok("Absent"));
    for client in [&valid, &foreign, &none] {
        assert_eq!(
            client.asked(),
            1,
            "a certificate is asked for in every mode"
        );
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn validation_is_chosen_per_port() {
    let v1 = backend("v1").await;
    let (srv, ca, other) = (server(), Ca::new("ca"), Ca::new("other"));
    let (default_port, override_port, plain_port) = (free_port(), free_port(), free_port());
    let gw = Gateway::new(registry());
    gw.apply(Config {
        binds: vec![
            https_bind(
                default_port,
                vec![listener(
                    "default",
                    None,
                    &srv,
                    &v1,
                    validation(&[&ca], ClientValidationMode::AllowValidOnly),
                )],
            ),
            https_bind(
                override_port,
                vec![listener(
                    "override",
                    None,
                    &srv,
                    &v1,
                    validation(&[&other], ClientValidationMode::AllowValidOnly),
                )],
            ),
            https_bind(plain_port, vec![listener("plain", None, &srv, &v1, None)]),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    let alice = Client::new(&srv.der, Some(&ca.client("alice")));
    let bob = Client::new(&srv.der, Some(&other.client("bob")));
    assert_eq!(alice.get(default_port).await, ok("Verified"));
    refused(alice.get(override_port).await);
    assert_eq!(bob.get(override_port).await, ok("Verified"));
    refused(bob.get(default_port).await);

    // Without validation, no certificate is asked for.
    let carol = Client::new(&srv.der, Some(&ca.client("carol")));
    assert_eq!(carol.get(plain_port).await, ok("Absent"));
    assert_eq!(carol.asked(), 0);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_configuration_swap_changes_the_ca_without_rebinding() {
    let v1 = backend("v1").await;
    let (srv, ca, other) = (server(), Ca::new("ca"), Ca::new("other"));
    let port = free_port();
    let gw = Gateway::new(registry());
    let config = |cas: &[&Ca]| Config {
        binds: vec![https_bind(
            port,
            vec![listener(
                "https",
                None,
                &srv,
                &v1,
                validation(cas, ClientValidationMode::AllowValidOnly),
            )],
        )],
        ..Default::default()
    };
    gw.apply(config(&[&ca])).await.unwrap();
    let alice = Client::new(&srv.der, Some(&ca.client("alice")));
    let bob = Client::new(&srv.der, Some(&other.client("bob")));
    assert_eq!(alice.get(port).await, ok("Verified"));
    refused(bob.get(port).await);

    // Sessions resume while the validation is unchanged...
    let mut tls = alice.connect(port).await.unwrap();
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    // ...and this connection stays open across the swap.
    assert_eq!(request(&mut tls, false).await, ok("Verified"));

    let report = gw.apply(config(&[&other])).await.unwrap();
    assert!(report.changed);
    assert!(
        report.bound.is_empty() && report.closed.is_empty(),
        "no rebinding: {report:?}"
    );
    // A new handshake (alice's client would resume its session: that is refused too, since the
    // session was made under the old CA) and the open connection are judged under the new CA.
    refused(alice.get(port).await);
    assert_eq!(bob.get(port).await, ok("Verified"));
    let stale = request(&mut tls, false).await.unwrap();
    assert_eq!(stale.status, 421, "open connection from before the swap");

    // Validation turned off: no certificate needed any more.
    let mut off = config(&[]);
    if let Some(tls) = &mut off.binds[0].listeners[0].tls {
        tls.client_validation = None;
    }
    gw.apply(off).await.unwrap();
    let none = Client::new(&srv.der, None);
    assert_eq!(none.get(port).await, ok("Absent"));
    assert_eq!(none.asked(), 0);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unusable_or_conflicting_settings_are_refused_alone() {
    let v1 = backend("v1").await;
    let (srv, ca) = (server(), Ca::new("ca"));
    let (bad_port, mixed_port, good_port) = (free_port(), free_port(), free_port());
    let gw = Gateway::new(registry());
    let report = gw
        .apply(Config {
            binds: vec![
                https_bind(
                    bad_port,
                    vec![listener(
                        "bad",
                        None,
                        &srv,
                        &v1,
                        Some(ClientValidation {
                            ca_pem: vec!["not a certificate".into()],
                            mode: ClientValidationMode::AllowValidOnly,
                        }),
                    )],
                ),
                https_bind(
                    mixed_port,
                    vec![
                        listener(
                            "first",
                            Some("app.example.com"),
                            &srv,
                            &v1,
                            validation(&[&ca], ClientValidationMode::AllowValidOnly),
                        ),
                        listener("second", Some("other.example.com"), &srv, &v1, None),
                    ],
                ),
                https_bind(good_port, vec![listener("good", None, &srv, &v1, None)]),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    assert!(
        report.rejected.iter().any(|r| r.contains("listener bad")
            && r.contains("no CA certificate")
            && r.contains("refused")),
        "{:?}",
        report.rejected
    );
    assert!(
        report
            .rejected
            .iter()
            .any(|r| r.contains("listener second") && r.contains("differs")),
        "{:?}",
        report.rejected
    );

    // Fail closed: even a client with a certificate gets no handshake.
    let alice = Client::new(&srv.der, Some(&ca.client("alice")));
    refused(alice.get(bad_port).await);

    // The listener that disagrees serves nothing; its bind keeps the first listener's settings.
    assert_eq!(alice.get(mixed_port).await, ok("Verified"));
    let mut tls = alice
        .connect_as(mixed_port, "other.example.com")
        .await
        .unwrap();
    let head = "GET / HTTP/1.1\r\nhost: other.example.com\r\nconnection: close\r\n\r\n";
    tls.write_all(head.as_bytes()).await.unwrap();
    let mut text = String::new();
    tls.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");

    // Other binds are untouched.
    assert_eq!(
        Client::new(&srv.der, None).get(good_port).await,
        ok("Absent")
    );
    gw.shutdown(Duration::from_secs(1)).await;
}
