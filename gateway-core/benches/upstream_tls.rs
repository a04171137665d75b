//! CPU per request to a backend with and without upstream TLS, through real loopback sockets.
//!
//! Scenarios (each: `REQUESTS` requests from `CONCURRENCY` keep-alive client connections to the
//! gateway, after a warm-up):
//!
//! - `plain-keepalive` / `tls-keepalive`: the backend keeps connections open, so the gateway
//!   reuses pooled upstream connections (TLS: no handshake per request).
//! - `plain-new-conn` / `tls-new-conn`: the backend answers `Connection: close`, so every request
//!   opens a new upstream connection (TLS: a resumed session per request after the first).
//!
//! Reported per scenario: wall time, requests per second, and process CPU time (user + system,
//! from `/proc/self/stat`) per request. The client and the backends run in the same process, so
//! the CPU figure includes them; the difference between the plain and TLS rows is the cost of
//! TLS on both ends of the upstream connection (gateway client side and backend server side).
//!
//! Run: `cargo bench -p gateway-core --bench upstream_tls` (release). Optional arguments:
//! scenario names (default: all).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

const CONCURRENCY: usize = 16;
const REQUESTS: usize = 20_000;
const WARMUP: usize = 500;

/// Process CPU time (user + system) so far, from `/proc/self/stat` (Linux).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(total * 10)
}

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench-ca");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::default();
    leaf.subject_alt_names
        .push(SanType::DnsName("backend.example.com".try_into().unwrap()));
    let cert_pem = leaf.signed_by(&key, &issuer).unwrap().pem();
    Pki {
        ca_pem,
        cert_pem,
        key_pem: key.serialize_pem(),
    }
}

/// A backend answering `ok`; over TLS when `tls` is set; `Connection: close` when `close`.
async fn backend(tls: Option<&Pki>, close: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tls.map(|p| {
        let chain = rustls_pemfile::certs(&mut p.cert_pem.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = rustls_pemfile::private_key(&mut p.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut resp = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                    if close {
                        resp.headers_mut()
                            .insert("connection", "close".parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(tcp).await {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `n` GETs for `path` from `CONCURRENCY` keep-alive connections; returns failures.
async fn load(gateway: SocketAddr, path: &'static str, n: usize) -> usize {
    let mut set = JoinSet::new();
    for c in 0..CONCURRENCY {
        let share = n / CONCURRENCY + usize::from(c < n % CONCURRENCY);
        set.spawn(async move {
            let stream = TcpStream::connect(gateway).await.unwrap();
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut failures = 0;
            for _ in 0..share {
                let req = http::Request::builder()
                    .uri(path)
                    .header("host", "bench.example.com")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                match sender.send_request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                    }
                    _ => failures += 1,
                }
            }
            failures
        });
    }
    let mut failures = 0;
    while let Some(r) = set.join_next().await {
        // A client task that panicked counts as one failure.
        failures += r.unwrap_or(1);
    }
    failures
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pki = pki();
        let tls = UpstreamTls::new("backend.example.com", &pki.ca_pem);
        let routes = [
            (
                "plain-keepalive",
                "/plain-keepalive",
                backend(None, false).await,
                None,
            ),
            (
                "tls-keepalive",
                "/tls-keepalive",
                backend(Some(&pki), false).await,
                Some(tls.clone()),
            ),
            (
                "plain-new-conn",
                "/plain-new-conn",
                backend(None, true).await,
                None,
            ),
            (
                "tls-new-conn",
                "/tls-new-conn",
                backend(Some(&pki), true).await,
                Some(tls.clone()),
            ),
        ];
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let gateway = SocketAddr::from(([127, 0, 0, 1], port));
        let mut route = Route::new("bench", "r");
        for (name, path, addr, tls) in &routes {
            let mut backend = Backend::new(vec![*addr]);
            backend.tls = tls.clone();
            route = route.rule(Rule::exact(*path).backend(BackendRef {
                name: (*name).into(),
                weight: 1,
                target: BackendTarget::Endpoints(backend),
                filters: Vec::new(),
            }));
        }
        let gw = Gateway::new(FilterRegistry::new());
        gw.apply(Config {
            binds: vec![Bind {
                address: gateway,
                protocol: Protocol::Http,
                listeners: vec![Listener::new("bench/gw/http", 80).route(route)],
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        println!("| scenario | requests | failures | wall | req/s | CPU per request |");
        println!("|---|---|---|---|---|---|");
        for (name, path, _, _) in &routes {
            if !want(name) {
                continue;
            }
            load(gateway, path, WARMUP).await;
            let (cpu0, wall0) = (cpu_time(), Instant::now());
            let failures = load(gateway, path, REQUESTS).await;
            let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
            println!(
                "| {name} | {REQUESTS} | {failures} | {:.2} s | {:.0} | {:.1} µs |",
                wall.as_secs_f64(),
                REQUESTS as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / REQUESTS as f64,
            );
        }
        gw.shutdown(Duration::from_secs(1)).await;
    });
}
