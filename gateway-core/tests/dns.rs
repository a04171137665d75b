//! DNS backends end to end: a real DNS server (hickory-server, an in-memory authoritative zone
//! over UDP and TCP on a loopback port), the gateway resolving through it, and HTTP backends on
//! 127.0.0.1 and 127.0.0.2. Nothing waits for a fixed time: changes are polled a bounded number
//! of times.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use hickory_server::Server;
use hickory_server::proto::rr::rdata::{A, SOA};
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordSet, RecordType, RrKey};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use support::*;

const ZONE: &str = "gw.test.";

/// An authoritative DNS server for [`ZONE`] on a loopback port, UDP and TCP.
struct TestDns {
    addr: SocketAddr,
    zone: Arc<InMemoryZoneHandler>,
    server: Server<Catalog>,
}

impl TestDns {
    async fn start() -> TestDns {
        let origin = Name::from_str(ZONE).unwrap();
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        // Negative answers are cached for the SOA minimum: 1 s.
        let soa = SOA::new(
            Name::from_str("ns.gw.test.").unwrap(),
            Name::from_str("admin.gw.test.").unwrap(),
            1,
            60,
            60,
            60,
            1,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1));
        let zone = Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as Arc<dyn ZoneHandler>],
        );
        let mut server = Server::new(catalog);
        // UDP and TCP on the same port: take a free UDP port, then its TCP twin (retry if taken).
        let mut tries = 0;
        let addr = loop {
            tries += 1;
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            match tokio::net::TcpListener::bind(addr).await {
                Ok(tcp) => {
                    server.register_socket(udp);
                    server.register_listener(tcp, Duration::from_secs(5), 4096);
                    break addr;
                }
                Err(e) if tries < 20 => drop(e),
                Err(e) => panic!("no free UDP+TCP port pair: {e}"),
            }
        };
        TestDns { addr, zone, server }
    }

    /// Makes `name` (relative to the zone) resolve to `ip` alone, with `ttl` seconds.
    async fn set_a(&self, name: &str, ip: Ipv4Addr, ttl: u32) {
        let name = Name::from_str(&format!("{name}.{ZONE}")).unwrap();
        let set = RecordSet::from(Record::from_rdata(name.clone(), ttl, RData::A(A(ip))));
        self.zone.records_mut().await.insert(
            RrKey::new(LowerName::new(&name), RecordType::A),
            Arc::new(set),
        );
    }

    async fn stop(mut self) {
        let _ = self.server.shutdown_gracefully().await;
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn http_bind(port: u16, routes: Vec<Route>) -> Bind {
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = routes.into_iter().map(Into::into).collect();
    Bind {
        address: addr(port),
        protocol: Protocol::Http,
        listeners: vec![listener],
    }
}

fn dns_backend(name: &str, hostname: &str, port: u16) -> BackendRef {
    BackendRef {
        name: name.into(),
        weight: 1,
        target: BackendTarget::Dns(DnsBackend {
            hostname: hostname.into(),
            port,
            protocol: BackendProtocol::Http1,
            policy: BackendPolicy::default(),
            tls: None,
        }),
        filters: Vec::new(),
    }
}

/// Two backends on one port: "one" at 127.0.0.1, "two" at 127.0.0.2.
async fn backend_pair() -> (TestBackend, TestBackend) {
    for _ in 0..20 {
        let one = backend("one").await;
        let port = one.addr.port();
        if let Ok(two) = backend_at("two", SocketAddr::from(([127, 0, 0, 2], port))).await {
            return (one, two);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Asks `path` up to `tries` times, 100 ms apart, until `done` holds; returns the last reply.
async fn poll(port: u16, path: &str, tries: usize, done: impl Fn(&Reply) -> bool) -> Reply {
    let mut reply = get(addr(port), "example.com", path).await;
    for _ in 1..tries {
        if done(&reply) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = get(addr(port), "example.com", path).await;
    }
    reply
}

#[tokio::test]
async fn dns_backend_serves_at_once_and_follows_the_zone_without_reapply() {
    let dns = TestDns::start().await;
    let (one, two) = backend_pair().await;
    let backend_port = one.addr.port();
    dns.set_a("api", Ipv4Addr::new(127, 0, 0, 1), 1).await;

    let gw = Gateway::new(FilterRegistry::new());
    gw.set_dns_servers(vec![dns.addr]);
    let port = free_port();
    let route = Route::new("ns", "r").rule(Rule::prefix("/").backend(dns_backend(
        "ns/api",
        "api.gw.test",
        backend_port,
    )));
    let config = Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    };
    gw.apply(config.clone()).await.unwrap();

    // The first resolution happened before the swap: the first request is served.
    let reply = get(addr(port), "example.com", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "one");
    let status = gw.dns_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].hostname, "api.gw.test");
    assert_eq!(status[0].port, backend_port);
    assert_eq!(status[0].addresses, vec![IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(status[0].last_error, None);
    assert!(status[0].resolved_at.is_some());

    // The record moves; the TTL runs out, the watcher re-resolves and the table follows.
    let mut updates = gw.dns_updates();
    updates.borrow_and_update();
    dns.set_a("api", Ipv4Addr::new(127, 0, 0, 2), 1).await;
    let reply = poll(port, "/", 200, |r| r.backend() == "two").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "two");
    assert_eq!(
        gw.dns_status()[0].addresses,
        vec![IpAddr::from([127, 0, 0, 2])]
    );
    assert!(updates.has_changed().unwrap(), "dns_updates was bumped");
    // The configuration itself was not touched.
    assert_eq!(gw.config(), config);

    // A configuration without the name stops its watcher.
    gw.apply(Config {
        binds: vec![http_bind(port, vec![])],
        ..Default::default()
    })
    .await
    .unwrap();
    assert!(gw.dns_status().is_empty());

    gw.shutdown(Duration::from_secs(1)).await;
    drop((one, two));
    dns.stop().await;
}

#[tokio::test]
async fn unresolvable_name_answers_503_while_the_rest_serves_then_recovers() {
    let dns = TestDns::start().await;
    let (one, _two) = backend_pair().await;
    let backend_port = one.addr.port();

    let gw = Gateway::new(FilterRegistry::new());
    gw.set_dns_servers(vec![dns.addr]);
    let port = free_port();
    let route = Route::new("ns", "r")
        .rule(Rule::prefix("/ext").backend(dns_backend("ns/late", "late.gw.test", backend_port)))
        .rule(Rule::prefix("/ok").backend(BackendRef::endpoints("ns/ok", vec![one.addr])));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();

    assert_eq!(get(addr(port), "example.com", "/ext").await.status, 503);
    let ok = get(addr(port), "example.com", "/ok").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.backend(), "one");
    let status = gw.dns_status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].hostname, "late.gw.test");
    assert!(status[0].addresses.is_empty());
    assert!(status[0].last_error.is_some(), "{status:?}");
    assert_eq!(status[0].resolved_at, None);

    // The name appears: the watcher's retry picks it up and the route starts serving.
    dns.set_a("late", Ipv4Addr::new(127, 0, 0, 1), 1).await;
    let reply = poll(port, "/ext", 200, |r| r.status == 200).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "one");
    let status = gw.dns_status();
    assert_eq!(status[0].addresses, vec![IpAddr::from([127, 0, 0, 1])]);
    assert_eq!(status[0].last_error, None);

    gw.shutdown(Duration::from_secs(1)).await;
    dns.stop().await;
}

#[tokio::test]
async fn a_failing_resolution_keeps_the_last_good_addresses() {
    let dns = TestDns::start().await;
    let (one, _two) = backend_pair().await;
    dns.set_a("keep", Ipv4Addr::new(127, 0, 0, 1), 1).await;

    let gw = Gateway::new(FilterRegistry::new());
    gw.set_dns_servers(vec![dns.addr]);
    let port = free_port();
    let route = Route::new("ns", "r").rule(Rule::prefix("/").backend(dns_backend(
        "ns/keep",
        "keep.gw.test",
        one.addr.port(),
    )));
    gw.apply(Config {
        binds: vec![http_bind(port, vec![route])],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(get(addr(port), "example.com", "/").await.backend(), "one");

    // The DNS server goes away: resolutions fail, the addresses stay.
    dns.stop().await;
    let mut failed = None;
    for _ in 0..600 {
        let status = gw.dns_status();
        if status[0].last_error.is_some() {
            failed = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = failed.expect("the resolution failure is reported");
    assert_eq!(status[0].addresses, vec![IpAddr::from([127, 0, 0, 1])]);
    let reply = get(addr(port), "example.com", "/").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.backend(), "one");

    gw.shutdown(Duration::from_secs(1)).await;
}
