//! TLS from the gateway to backends, through real loopback sockets: verification against the
//! configured CA, subject alternative names, client certificates, expiry, HTTP/2 by ALPN,
//! connection reuse, session resumption and CA changes on a configuration swap.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::server::WebPkiClientVerifier;
use support::*;
use tokio::net::TcpListener;

/// A test certificate authority.
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
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            pem,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `sans` (`scheme://...` values become URI SANs), as (cert PEM, key PEM).
    fn leaf(&self, sans: &[&str], expired: bool) -> Certificate {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        for s in sans {
            let ia5 = rcgen::string::Ia5String::try_from(*s).unwrap();
            params.subject_alt_names.push(if s.contains("://") {
                SanType::URI(ia5)
            } else {
                SanType::DnsName(ia5)
            });
        }
        params.distinguished_name.push(DnType::CommonName, sans[0]);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Certificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// What a TLS backend counts.
#[derive(Default)]
struct Counts {
    /// TLS connections accepted (handshakes completed).
    connections: AtomicUsize,
    /// Of those, full handshakes.
    full: AtomicUsize,
    /// Of those, resumed sessions.
    resumed: AtomicUsize,
    /// Handshakes that failed.
    failed: AtomicUsize,
}

/// A TLS backend on a loopback port, aborted on drop. It answers JSON
/// `{"backend", "sni", "alpn", "client_cert", "version"}`.
struct TlsBackend {
    addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct BackendOptions {
    /// Require a client certificate signed by this CA.
    client_ca: Option<String>,
    /// Answer `Connection: close`, so every request needs a new connection.
    close: bool,
}

async fn tls_backend(name: &'static str, cert: &Certificate, opts: BackendOptions) -> TlsBackend {
    let chain: Vec<_> = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match &opts.client_ca {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pemfile::certs(&mut pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts = Arc::new(Counts::default());
    let close = opts.close;
    let task = {
        let counts = counts.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let counts = counts.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        counts.failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    };
                    let conn = tls.get_ref().1;
                    counts.connections.fetch_add(1, Ordering::SeqCst);
                    match conn.handshake_kind() {
                        Some(rustls::HandshakeKind::Resumed) => {
                            counts.resumed.fetch_add(1, Ordering::SeqCst)
                        }
                        _ => counts.full.fetch_add(1, Ordering::SeqCst),
                    };
                    let sni = conn.server_name().unwrap_or("").to_owned();
                    let alpn = conn
                        .alpn_protocol()
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .unwrap_or_default();
                    let client_cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                    let service = service_fn(move |req: Request<Incoming>| {
                        let body = serde_json::json!({
                            "backend": name,
                            "sni": sni,
                            "alpn": alpn,
                            "client_cert": client_cert,
                            "version": format!("{:?}", req.version()),
                        });
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                            resp.headers_mut()
                                .insert("content-type", "application/json".parse().unwrap());
                            if close {
                                resp.headers_mut()
                                    .insert("connection", "close".parse().unwrap());
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        })
    };
    TlsBackend { addr, counts, task }
}

fn plain() -> BackendOptions {
    BackendOptions {
        client_ca: None,
        close: false,
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A config with one route per `(path prefix, backend)`.
fn config(port: u16, backends: Vec<(&str, Backend)>) -> Config {
    let mut route = Route::new("ns", "r");
    for (prefix, backend) in backends {
        route = route.rule(Rule::prefix(prefix).backend(BackendRef {
            name: format!("ns/{}", prefix.trim_start_matches('/')),
            weight: 1,
            target: BackendTarget::Endpoints(backend),
            filters: Vec::new(),
        }));
    }
    Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![Listener::new("ns/gw/http", 80).route(route)],
        }],
        ..Default::default()
    }
}

fn tls_to(backend: &TlsBackend, tls: UpstreamTls) -> Backend {
    Backend::new(vec![backend.addr]).with_tls(tls)
}

async fn start(cfg: Config) -> Gateway {
    let gw = Gateway::new(FilterRegistry::new());
    let report = gw.apply(cfg).await.unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    gw
}

#[tokio::test]
async fn verified_backend_answers_and_pooled_connection_is_reused() {
    let ca = Ca::new("ca");
    let be = tls_backend("tls", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let port = free_port();
    let gw = start(config(
        port,
        vec![(
            "/",
            tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
        )],
    ))
    .await;
    for _ in 0..3 {
        // A new client connection each time: only the upstream side can be reused.
        let reply = get(addr(port), "example.com", "/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["sni"], "abc.example.com");
        assert_eq!(reply.body["alpn"], "http/1.1");
        assert_eq!(reply.body["client_cert"], false);
    }
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 1);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn new_connections_resume_the_tls_session() {
    let ca = Ca::new("ca");
    let be = tls_backend(
        "tls",
        &ca.leaf(&["abc.example.com"], false),
        BackendOptions {
            client_ca: None,
            close: true,
        },
    )
    .await;
    let port = free_port();
    let gw = start(config(
        port,
        vec![(
            "/",
            tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
        )],
    ))
    .await;
    for _ in 0..4 {
        assert_eq!(get(addr(port), "example.com", "/").await.status, 200);
    }
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 4);
    assert_eq!(be.counts.full.load(Ordering::SeqCst), 1);
    assert_eq!(be.counts.resumed.load(Ordering::SeqCst), 3);

    // Sessions survive a swap that leaves the backend's TLS settings alone.
    let mut cfg = config(
        port,
        vec![(
            "/",
            tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
        )],
    );
    std::sync::Arc::make_mut(&mut cfg.binds[0].listeners[0].routes[0]).hostnames =
        vec!["example.com".into()];
    assert!(gw.apply(cfg).await.unwrap().changed);
    assert_eq!(get(addr(port), "example.com", "/").await.status, 200);
    assert_eq!(be.counts.full.load(Ordering::SeqCst), 1);
    assert_eq!(be.counts.resumed.load(Ordering::SeqCst), 4);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn unknown_ca_expired_certificate_and_wrong_hostname_answer_502() {
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let good = tls_backend("good", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let expired = tls_backend("expired", &ca.leaf(&["abc.example.com"], true), plain()).await;
    let port = free_port();
    let gw = start(config(
        port,
        vec![
            (
                "/unknown-ca",
                tls_to(&good, UpstreamTls::new("abc.example.com", &other.pem)),
            ),
            (
                "/expired",
                tls_to(&expired, UpstreamTls::new("abc.example.com", &ca.pem)),
            ),
            (
                "/wrong-name",
                tls_to(&good, UpstreamTls::new("mismatch.example.com", &ca.pem)),
            ),
            (
                "/ok",
                tls_to(&good, UpstreamTls::new("abc.example.com", &ca.pem)),
            ),
            // Plain HTTP to a TLS port is no TLS at all: the backend's answer is not HTTP.
            ("/plain", Backend::new(vec![good.addr])),
        ],
    ))
    .await;
    for path in ["/unknown-ca", "/expired", "/wrong-name"] {
        assert_eq!(get(addr(port), "h", path).await.status, 502, "{path}");
    }
    assert_eq!(get(addr(port), "h", "/ok").await.status, 200);
    assert_ne!(get(addr(port), "h", "/plain").await.status, 200);
    assert_eq!(good.counts.connections.load(Ordering::SeqCst), 1);
    assert!(good.counts.failed.load(Ordering::SeqCst) >= 2);
    assert!(expired.counts.failed.load(Ordering::SeqCst) >= 1);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn subject_alt_names_replace_the_hostname_check() {
    let ca = Ca::new("ca");
    let be = tls_backend(
        "san",
        &ca.leaf(
            &[
                "abc.example.com",
                "spiffe://abc.example.com/test-identity",
                "other.example.com",
            ],
            false,
        ),
        plain(),
    )
    .await;
    let with_sans = |hostname: &str, sans: Vec<SubjectAltName>| UpstreamTls {
        subject_alt_names: sans,
        ..UpstreamTls::new(hostname, &ca.pem)
    };
    let port = free_port();
    let gw = start(config(
        port,
        vec![
            (
                "/dns",
                tls_to(
                    &be,
                    with_sans(
                        "sni.example.com",
                        vec![SubjectAltName::Hostname("other.example.com".into())],
                    ),
                ),
            ),
            (
                "/dns-mismatch",
                tls_to(
                    &be,
                    // The hostname would verify, but SANs replace it.
                    with_sans(
                        "abc.example.com",
                        vec![SubjectAltName::Hostname("nope.example.com".into())],
                    ),
                ),
            ),
            (
                "/uri",
                tls_to(
                    &be,
                    with_sans(
                        "sni.example.com",
                        vec![SubjectAltName::Uri(
                            "spiffe://abc.example.com/test-identity".into(),
                        )],
                    ),
                ),
            ),
            (
                "/uri-mismatch",
                tls_to(
                    &be,
                    with_sans(
                        "abc.example.com",
                        vec![SubjectAltName::Uri("spiffe://abc.example.com/other".into())],
                    ),
                ),
            ),
            (
                "/multiple",
                tls_to(
                    &be,
                    with_sans(
                        "sni.example.com",
                        vec![
                            SubjectAltName::Hostname("nope.example.com".into()),
                            SubjectAltName::Uri("spiffe://abc.example.com/test-identity".into()),
                        ],
                    ),
                ),
            ),
        ],
    ))
    .await;
    let dns = get(addr(port), "h", "/dns").await;
    assert_eq!(dns.status, 200, "{dns:?}");
    // SNI stays the hostname.
    assert_eq!(dns.body["sni"], "sni.example.com");
    assert_eq!(get(addr(port), "h", "/dns-mismatch").await.status, 502);
    assert_eq!(get(addr(port), "h", "/uri").await.status, 200);
    assert_eq!(get(addr(port), "h", "/uri-mismatch").await.status, 502);
    assert_eq!(get(addr(port), "h", "/multiple").await.status, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn client_certificate_is_presented_to_a_backend_requiring_one() {
    let ca = Ca::new("ca");
    let client_ca = Ca::new("client-ca");
    let be = tls_backend(
        "mtls",
        &ca.leaf(&["abc.example.com"], false),
        BackendOptions {
            client_ca: Some(client_ca.pem.clone()),
            close: false,
        },
    )
    .await;
    let port = free_port();
    let with_cert = UpstreamTls {
        client_certificate: Some(client_ca.leaf(&["gateway.example.com"], false)),
        ..UpstreamTls::new("abc.example.com", &ca.pem)
    };
    let wrong_cert = UpstreamTls {
        client_certificate: Some(ca.leaf(&["gateway.example.com"], false)),
        ..UpstreamTls::new("abc.example.com", &ca.pem)
    };
    let gw = start(config(
        port,
        vec![
            ("/with", tls_to(&be, with_cert)),
            (
                "/without",
                tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
            ),
            ("/wrong", tls_to(&be, wrong_cert)),
        ],
    ))
    .await;
    let reply = get(addr(port), "h", "/with").await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["client_cert"], true);
    // Without a certificate (or with one the backend does not trust), TLS 1.3 reports the
    // refusal after the handshake: the first read fails. Either way the client gets a 5xx.
    for path in ["/without", "/wrong"] {
        let status = get(addr(port), "h", path).await.status;
        assert!((500..600).contains(&status), "{path}: {status}");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn h2_backends_negotiate_h2_by_alpn() {
    let ca = Ca::new("ca");
    let be = tls_backend("h2", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let port = free_port();
    let mut backend = tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem));
    backend.protocol = BackendProtocol::H2c;
    let gw = start(config(port, vec![("/", backend)])).await;
    for _ in 0..2 {
        let reply = get(addr(port), "h", "/").await;
        assert_eq!(reply.status, 200, "{reply:?}");
        assert_eq!(reply.body["alpn"], "h2");
        assert_eq!(reply.body["version"], "HTTP/2.0");
    }
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 1);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_swap_changing_the_ca_applies_to_new_connections_and_skips_pooled_ones() {
    let ca = Ca::new("ca");
    let other = Ca::new("other");
    let be = tls_backend("tls", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let port = free_port();
    let gw = start(config(
        port,
        vec![(
            "/",
            tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
        )],
    ))
    .await;
    assert_eq!(get(addr(port), "h", "/").await.status, 200);
    // A pooled connection verified under `ca` exists now; the new trust must not use it.
    gw.apply(config(
        port,
        vec![(
            "/",
            tls_to(&be, UpstreamTls::new("abc.example.com", &other.pem)),
        )],
    ))
    .await
    .unwrap();
    assert_eq!(get(addr(port), "h", "/").await.status, 502);
    // Both CAs: the backend verifies again (the old pooled connection may serve).
    let both = UpstreamTls {
        trust: UpstreamTrust::Pem(vec![other.pem.clone(), ca.pem.clone()]),
        ..UpstreamTls::new("abc.example.com", "")
    };
    gw.apply(config(port, vec![("/", tls_to(&be, both))]))
        .await
        .unwrap();
    assert_eq!(get(addr(port), "h", "/").await.status, 200);
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 2);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn invalid_tls_settings_leave_that_backend_unresolved_and_the_rest_serving() {
    let ca = Ca::new("ca");
    let be = tls_backend("tls", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let port = free_port();
    let gw = start(config(
        port,
        vec![
            (
                "/bad-ca",
                tls_to(
                    &be,
                    UpstreamTls::new("abc.example.com", "not a certificate"),
                ),
            ),
            (
                "/bad-host",
                tls_to(&be, UpstreamTls::new("not a hostname!", &ca.pem)),
            ),
            (
                "/ip-host",
                tls_to(&be, UpstreamTls::new("127.0.0.1", &ca.pem)),
            ),
            (
                "/ok",
                tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem)),
            ),
        ],
    ))
    .await;
    for path in ["/bad-ca", "/bad-host", "/ip-host"] {
        assert_eq!(get(addr(port), "h", path).await.status, 500, "{path}");
    }
    assert_eq!(get(addr(port), "h", "/ok").await.status, 200);
    // Nothing was sent to the backend for the invalid ones, in plain text or otherwise.
    assert_eq!(be.counts.failed.load(Ordering::SeqCst), 0);
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 1);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn mirrored_copies_to_a_tls_backend_use_tls() {
    let ca = Ca::new("ca");
    let primary = tls_backend("primary", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let mirror = tls_backend("mirror", &ca.leaf(&["mirror.example.com"], false), plain()).await;
    let port = free_port();
    let mut cfg = config(
        port,
        vec![(
            "/",
            tls_to(&primary, UpstreamTls::new("abc.example.com", &ca.pem)),
        )],
    );
    std::sync::Arc::make_mut(&mut cfg.binds[0].listeners[0].routes[0]).rules[0]
        .filters
        .push(Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef {
                name: "ns/mirror".into(),
                weight: 1,
                target: BackendTarget::Endpoints(tls_to(
                    &mirror,
                    UpstreamTls::new("mirror.example.com", &ca.pem),
                )),
                filters: Vec::new(),
            },
            fraction: None,
        })));
    let gw = start(cfg).await;
    assert_eq!(get(addr(port), "h", "/").await.status, 200);
    // The copy is sent in the background: wait (bounded) until the mirror has seen it.
    for _ in 0..200 {
        if mirror.counts.connections.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mirror.counts.connections.load(Ordering::SeqCst), 1);
    assert_eq!(mirror.counts.failed.load(Ordering::SeqCst), 0);
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn active_health_checks_of_a_tls_backend_use_tls() {
    let ca = Ca::new("ca");
    let be = tls_backend("tls", &ca.leaf(&["abc.example.com"], false), plain()).await;
    let port = free_port();
    let mut backend = tls_to(&be, UpstreamTls::new("abc.example.com", &ca.pem));
    backend.policy.health_check = Some(HealthCheck {
        interval: Duration::from_secs(60),
        ..HealthCheck::default()
    });
    let gw = start(config(port, vec![("/", backend)])).await;
    // The first round runs at once, before any request: wait (bounded) for its handshake.
    for _ in 0..200 {
        if be.counts.connections.load(Ordering::SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(be.counts.connections.load(Ordering::SeqCst), 1);
    assert_eq!(be.counts.failed.load(Ordering::SeqCst), 0);
    // The check passed: the endpoint still takes requests.
    assert_eq!(get(addr(port), "h", "/").await.status, 200);
    gw.shutdown(Duration::from_secs(1)).await;
}
