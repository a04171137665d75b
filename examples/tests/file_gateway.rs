//! `file-gateway` end to end, as an operator runs it: the admin endpoints, the status file, a
//! broken configuration that must not stop the last good one from serving, and SIGTERM draining
//! an in-flight request before the process exits.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

use support::{TempDir, eventually, file_gateway, free_port, write};

/// A backend answering `backend-ok`; requests for `/slow` take 1.5 s.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /slow") {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                let body = "backend-ok";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// `GET path` with `Host: host` on a new connection: the status code and the body.
async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    support::get(addr, host, path, &[]).await
}

/// Polls `check` every 50 ms until it holds, failing after 20 s.
fn resources(backend: SocketAddr) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: test}}
spec: {{controllerName: gateway.pingora.rs/controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: test
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: default}}
spec:
  ports:
  - {{port: 8080, targetPort: {port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: app-1
  namespace: default
  labels: {{kubernetes.io/service-name: app}}
addressType: IPv4
ports:
- {{port: {port}}}
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#,
        port = backend.port(),
        ip = backend.ip(),
    )
}

const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.example.com]
  rules:
  - backendRefs: [{name: app, port: 8080}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_reports_survives_bad_config_and_drains_on_sigterm() {
    let backend = backend().await;
    let dir = TempDir::new("file-gateway-test");
    let config = dir.0.join("config");
    write(&config.join("base.yaml"), &resources(backend));
    write(&config.join("route.yaml"), ROUTE);
    let status_file = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();

    let mut gateway = file_gateway(
        &config,
        listener,
        [
            OsStr::new("--admin"),
            OsStr::new(&admin.to_string()),
            OsStr::new("--status-file"),
            status_file.as_os_str(),
            OsStr::new("--drain-seconds"),
            OsStr::new("10"),
        ],
    );

    // Ready once the first configuration is applied; then it routes.
    eventually("/readyz", || async {
        matches!(get(admin, "admin", "/readyz").await, Ok((200, _)))
    })
    .await;
    assert_eq!(
        get(admin, "admin", "/healthz").await,
        Ok((200, "ok\n".into()))
    );
    // The heap stays in small pages (docs/benchmarks.md, "Memory").
    let proc_status = std::fs::read_to_string(format!("/proc/{}/status", gateway.0.id())).unwrap();
    if let Some(thp) = proc_status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert_eq!(thp.split_whitespace().nth(1), Some("0"), "{thp}");
    }
    eventually("the route to serve", || async {
        get(listener, "app.example.com", "/").await == Ok((200, "backend-ok".into()))
    })
    .await;
    assert!(matches!(
        get(listener, "other.example.com", "/").await,
        Ok((404, _))
    ));

    // Status: in the file and on the admin endpoint, with the bound address (published just
    // after the configuration is applied).
    eventually("the status file", || async { status_file.exists() }).await;
    let status = std::fs::read_to_string(&status_file).expect("status file");
    assert!(status.contains("kind: HTTPRoute"), "{status}");
    assert!(status.contains("reason: Programmed"), "{status}");
    assert!(status.contains("value: \"127.0.0.1\""), "{status}");
    let (code, admin_status) = get(admin, "admin", "/status").await.expect("/status");
    assert_eq!(code, 200);
    assert_eq!(admin_status, status);
    let (code, active) = get(admin, "admin", "/config").await.expect("/config");
    assert_eq!(code, 200);
    assert!(active.contains("app.example.com"), "{active}");

    // A broken route file is reported and its last good version keeps serving.
    write(
        &config.join("route.yaml"),
        "kind: HTTPRoute\nspec: [unclosed\n",
    );
    eventually("the broken file to be reported", || async {
        get(admin, "admin", "/diagnostics")
            .await
            .is_ok_and(|(_, body)| body.contains("last good version"))
    })
    .await;
    assert_eq!(
        get(listener, "app.example.com", "/").await,
        Ok((200, "backend-ok".into()))
    );

    // A fixed file applies: the route now answers for another hostname only.
    write(
        &config.join("route.yaml"),
        &ROUTE.replace("app.example.com", "new.example.com"),
    );
    eventually("the fixed route", || async {
        matches!(get(listener, "app.example.com", "/").await, Ok((404, _)))
    })
    .await;
    assert_eq!(
        get(listener, "new.example.com", "/").await,
        Ok((200, "backend-ok".into()))
    );

    // SIGTERM while a request is in flight: it completes, then the process exits cleanly.
    let slow = tokio::spawn(async move { get(listener, "new.example.com", "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gateway.0.id().to_string();
    let killed = Command::new("sh")
        .args(["-c", &format!("kill -TERM {pid}")])
        .status()
        .expect("run kill");
    assert!(killed.success());
    assert_eq!(
        slow.await.expect("slow request task"),
        Ok((200, "backend-ok".into()))
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(status) = gateway.0.try_wait().expect("wait for file-gateway") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "file-gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "file-gateway exited with {exit}");
    assert!(get(listener, "new.example.com", "/").await.is_err());
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    for args in [
        vec!["--bogus"],
        vec!["--config", "x.yaml", "--listener-port-map", "80=x"],
        vec!["--config", "x.yaml", "--address-pool", "not-a-cidr"],
        vec!["--config", "x.yaml", "--access-log-fields", "method"],
        vec!["--config", "x.yaml", "--workers", "0"],
        vec![
            "--config",
            "x.yaml",
            "--access-log",
            "stdout",
            "--access-log-fields",
            "nope",
        ],
        vec![
            "--config",
            "x.yaml",
            "--access-log",
            "/nonexistent-dir/access.log",
        ],
        vec![],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_file-gateway"))
            .args(&args)
            .output()
            .expect("run file-gateway");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

/// `GET path` on a new connection: the status, the response head (lower-cased) and the body.
async fn get_head(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_metrics_and_writes_an_access_log() {
    let backend = backend().await;
    let dir = TempDir::new("file-gateway-test");
    let config = dir.0.join("config");
    write(&config.join("base.yaml"), &resources(backend));
    write(&config.join("route.yaml"), ROUTE);
    let access_log = dir.0.join("access.log");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [
            OsStr::new("--admin"),
            OsStr::new(&admin.to_string()),
            OsStr::new("--access-log"),
            access_log.as_os_str(),
            OsStr::new("--access-log-fields"),
            OsStr::new("method,path,response_code,route,backend"),
            // One worker thread: the current-thread runtime a one-core gateway runs on (the
            // other tests run the default, multi-threaded on this machine's CPUs).
            OsStr::new("--workers"),
            OsStr::new("1"),
        ],
    );
    eventually("the route to serve", || async {
        get(listener, "app.example.com", "/").await == Ok((200, "backend-ok".into()))
    })
    .await;
    assert!(matches!(
        get(listener, "app.example.com", "/second").await,
        Ok((200, _))
    ));
    assert!(matches!(
        get(listener, "other.example.com", "/").await,
        Ok((404, _))
    ));

    // The requests show on /metrics once their logging phase ran.
    let series = r#"route="default/app",rule="0",backend="default/app:8080",status_class="2xx"}"#;
    let counted = |body: &str| {
        body.lines().any(|l| {
            l.starts_with("http_server_request_duration_seconds_count{")
                && l.contains(series)
                && l.ends_with(" 2")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        let scraped = get_head(admin, "/metrics").await;
        if counted(&scraped.2) {
            break scraped;
        }
        assert!(
            Instant::now() < deadline,
            "requests not counted in\n{}",
            scraped.2
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, head, body) = scraped;
    assert_eq!(status, 200);
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(
        body.contains("gateway_config_applies_total{result=\"changed\"}"),
        "{body}"
    );
    assert!(body.contains("gateway_build_info{version="), "{body}");
    assert!(
        body.contains(r#"route="",rule="",backend="",status_class="4xx"}"#),
        "{body}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");

    // The access log: one JSON line per request, with the fields asked for.
    eventually("three access log lines", || async {
        std::fs::read_to_string(&access_log).is_ok_and(|t| t.lines().count() >= 3)
    })
    .await;
    let text = std::fs::read_to_string(&access_log).expect("access log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let second = lines
        .iter()
        .find(|l| l["path"] == "/second")
        .expect("the /second line");
    assert_eq!(
        second,
        &serde_json::json!({
            "method": "GET",
            "path": "/second",
            "response_code": 200,
            "route": "default/app",
            "backend": "default/app:8080",
        })
    );
    assert!(
        lines
            .iter()
            .any(|l| l["response_code"] == 404 && l["route"].is_null())
    );
}

/// An authoritative DNS server for `gw.test.` on a loopback port (UDP and TCP), backed by
/// hickory-server's in-memory zone; records change while it runs.
struct TestDns {
    addr: SocketAddr,
    zone: std::sync::Arc<hickory_server::store::in_memory::InMemoryZoneHandler>,
    _server: hickory_server::Server<hickory_server::zone_handler::Catalog>,
}

impl TestDns {
    async fn start() -> TestDns {
        use hickory_server::proto::rr::rdata::SOA;
        use hickory_server::proto::rr::{LowerName, Name, RData, Record};
        use hickory_server::store::in_memory::InMemoryZoneHandler;
        use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
        use std::str::FromStr;

        let origin = Name::from_str("gw.test.").expect("zone name");
        let mut zone =
            InMemoryZoneHandler::empty(origin.clone(), ZoneType::Primary, AxfrPolicy::Deny);
        let soa = SOA::new(
            Name::from_str("ns.gw.test.").expect("name"),
            Name::from_str("admin.gw.test.").expect("name"),
            1,
            60,
            60,
            60,
            1,
        );
        assert!(zone.upsert_mut(Record::from_rdata(origin.clone(), 1, RData::SOA(soa)), 1));
        let zone = std::sync::Arc::new(zone);
        let mut catalog = Catalog::new();
        catalog.upsert(
            LowerName::new(&origin),
            vec![zone.clone() as std::sync::Arc<dyn ZoneHandler>],
        );
        let mut server = hickory_server::Server::new(catalog);
        for _ in 0..20 {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .expect("udp");
            let addr = udp.local_addr().expect("udp address");
            if let Ok(tcp) = TcpListener::bind(addr).await {
                server.register_socket(udp);
                server.register_listener(tcp, Duration::from_secs(5), 4096);
                return TestDns {
                    addr,
                    zone,
                    _server: server,
                };
            }
        }
        panic!("no free UDP+TCP port pair");
    }

    /// Makes `name`.gw.test resolve to `ip` alone, with a TTL of one second.
    async fn set_a(&self, name: &str, ip: std::net::Ipv4Addr) {
        use hickory_server::proto::rr::rdata::A;
        use hickory_server::proto::rr::{
            LowerName, Name, RData, Record, RecordSet, RecordType, RrKey,
        };
        use std::str::FromStr;
        let name = Name::from_str(&format!("{name}.gw.test.")).expect("name");
        let set = RecordSet::from(Record::from_rdata(name.clone(), 1, RData::A(A(ip))));
        self.zone.records_mut().await.insert(
            RrKey::new(LowerName::new(&name), RecordType::A),
            std::sync::Arc::new(set),
        );
    }
}

/// A backend at `addr` answering `body` to every request.
async fn named_backend(
    addr: SocketAddr,
    body: &'static str,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    }))
}

/// Runs `check` up to `tries` times, 100 ms apart, until it holds; whether it did.
async fn within<F, Fut>(tries: usize, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_an_xbackend_by_dns_and_reports_its_resolution() {
    let dns = TestDns::start().await;
    // "one" on 127.0.0.1 and "two" on 127.0.0.2, same port.
    let mut pair = None;
    for _ in 0..20 {
        let port = free_port();
        let Ok(one) = named_backend(([127, 0, 0, 1], port).into(), "one").await else {
            continue;
        };
        match named_backend(([127, 0, 0, 2], port).into(), "two").await {
            Ok(two) => {
                pair = Some((port, one, two));
                break;
            }
            Err(_) => one.abort(),
        }
    }
    let (backend_port, one, two) = pair.expect("a port free on 127.0.0.1 and 127.0.0.2");
    dns.set_a("api", [127, 0, 0, 1].into()).await;

    let dir = TempDir::new("file-gateway-test");
    let config = dir.0.join("config");
    write(
        &config.join("xbackend.yaml"),
        &format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: test}}
spec: {{controllerName: gateway.pingora.rs/controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: test
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.x-k8s.io/v1alpha1
kind: XBackend
metadata: {{name: api, namespace: default}}
spec: {{type: ExternalHostname, hostname: api.gw.test, port: {backend_port}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{group: gateway.networking.x-k8s.io, kind: XBackend, name: api}}]
"#
        ),
    );
    let status_file = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [
            OsStr::new("--admin"),
            OsStr::new(&admin.to_string()),
            OsStr::new("--status-file"),
            status_file.as_os_str(),
            OsStr::new("--dns-server"),
            OsStr::new(&dns.addr.to_string()),
        ],
    );
    let status = || std::fs::read_to_string(&status_file).unwrap_or_default();

    assert!(
        within(300, || async {
            get(listener, "example.com", "/").await == Ok((200, "one".into()))
        })
        .await,
        "the XBackend route never served from 127.0.0.1"
    );
    assert!(
        within(100, || async {
            status().contains("api.gw.test resolves to 127.0.0.1")
        })
        .await,
        "{}",
        status()
    );
    let text = status();
    assert!(text.contains("kind: XBackend"), "{text}");
    assert!(text.contains("reason: ResolvedRefs"), "{text}");

    // The record moves: traffic and status follow without touching the files.
    dns.set_a("api", [127, 0, 0, 2].into()).await;
    assert!(
        within(300, || async {
            get(listener, "example.com", "/").await == Ok((200, "two".into()))
        })
        .await,
        "traffic never moved to 127.0.0.2"
    );
    assert!(
        within(100, || async {
            status().contains("api.gw.test resolves to 127.0.0.2")
        })
        .await,
        "{}",
        status()
    );
    one.abort();
    two.abort();
}

/// A backend answering with the request target it received, as the body.
async fn path_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head);
                let target = head.split(' ').nth(1).unwrap_or("").to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{target}",
                    target.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

const PUBLIC_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: public, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [app.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /public}}]
    backendRefs: [{name: app, port: 8080}]
"#;

fn client_policy(action: &str) -> String {
    format!(
        r#"
apiVersion: gateway.pingora-gateway.dev/v1alpha1
kind: ClientTrafficPolicy
metadata: {{name: paths, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}}]
  path: {{escapedSlashesAction: {action}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalises_paths_under_a_client_traffic_policy_from_yaml() {
    let backend = path_echo().await;
    let dir = TempDir::new("file-gateway-test");
    let config = dir.0.join("config");
    write(&config.join("base.yaml"), &resources(backend));
    write(&config.join("route.yaml"), PUBLIC_ROUTE);
    write(&config.join("policy.yaml"), &client_policy("KeepUnchanged"));
    let status_file = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--status-file"), status_file.as_os_str()],
    );
    let host = "app.example.com";
    eventually("the route to serve", || async {
        get(listener, host, "/public/x").await == Ok((200, "/public/x".into()))
    })
    .await;

    // Traversal out of /public is routed as what it resolves to: no route for /admin.
    for attack in [
        "/public/../admin",
        "/public/%2e%2E/admin",
        "//public/../admin",
    ] {
        assert!(
            matches!(get(listener, host, attack).await, Ok((404, _))),
            "{attack}"
        );
    }
    assert_eq!(
        get(listener, host, "/x/../public/%7ea?q=/../").await,
        Ok((200, "/public/~a?q=/../".into()))
    );
    // KeepUnchanged: the escaped slash reaches the backend, hex upper-cased.
    assert_eq!(
        get(listener, host, "/public/a%2fb").await,
        Ok((200, "/public/a%2Fb".into()))
    );
    eventually("the status file", || async {
        std::fs::read_to_string(&status_file).is_ok_and(|s| s.contains("kind: ClientTrafficPolicy"))
    })
    .await;
    let status = std::fs::read_to_string(&status_file).expect("status file");
    assert!(status.contains("kind: ClientTrafficPolicy"), "{status}");
    assert!(status.contains("sectionName: http"), "{status}");

    // Another action applies on the fly.
    write(&config.join("policy.yaml"), &client_policy("RejectRequest"));
    eventually("RejectRequest", || async {
        matches!(get(listener, host, "/public/a%2fb").await, Ok((400, _)))
    })
    .await;
    // An invalid policy is refused alone: the listener keeps serving, with the defaults.
    write(&config.join("policy.yaml"), &client_policy("Sometimes"));
    eventually("the default action (redirect)", || async {
        get(listener, host, "/public/a%2fb")
            .await
            .is_ok_and(|(code, _)| code == 307)
    })
    .await;
    assert_eq!(
        get(listener, host, "/public/x").await,
        Ok((200, "/public/x".into()))
    );
    eventually("the Invalid status", || async {
        std::fs::read_to_string(&status_file).is_ok_and(|s| s.contains("reason: Invalid"))
    })
    .await;
}

/// `routes` HTTPRoutes in one file: route `r{i}` sends `PathPrefix /r{i}/` to `app`, except the
/// one named in `moved`, which gets the other path given.
fn many_routes(routes: usize, moved: Option<(usize, &str)>) -> String {
    (0..routes)
        .map(|i| {
            let path = match moved {
                Some((m, path)) if m == i => path.to_string(),
                _ => format!("/r{i}/"),
            };
            format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
                 metadata: {{name: r{i}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  \
                 hostnames: [app.example.com]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    \
                 backendRefs: [{{name: app, port: 8080}}]\n"
            )
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_route_edited_among_many_is_served_while_the_others_keep_serving() {
    let backend = path_echo().await;
    let dir = TempDir::new("file-gateway-edit");
    let config = dir.0.join("config");
    write(&config.join("base.yaml"), &resources(backend));
    let routes_file = config.join("routes.yaml");
    let count = 80;
    write(&routes_file, &many_routes(count, None));
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--admin"), OsStr::new(&admin.to_string())],
    );
    eventually("every route to serve", || async {
        get(listener, "app.example.com", &format!("/r{}/x", count - 1)).await
            == Ok((200, format!("/r{}/x", count - 1)))
    })
    .await;

    // Requests to the routes that do not change, all along the edits.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut requests = 0usize;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i = (i + 1) % count;
                if i == 7 {
                    continue;
                }
                let path = format!("/r{i}/x");
                let got = get(listener, "app.example.com", &path).await;
                requests += 1;
                if got != Ok((200, path.clone())) {
                    failures.push((path, got));
                }
            }
            (requests, failures)
        })
    };

    // Route r7 moves to another path, then back: each edit is served, in place in the file.
    for (round, path) in ["/seven/", "/r7/", "/seven-again/"].into_iter().enumerate() {
        write(&routes_file, &many_routes(count, Some((7, path))));
        let wanted = format!("{path}x");
        eventually(&format!("edit {round} of r7 to be served"), || async {
            get(listener, "app.example.com", &wanted).await == Ok((200, wanted.clone()))
        })
        .await;
    }
    assert!(matches!(
        get(listener, "app.example.com", "/r7/x").await,
        Ok((404, _))
    ));
    assert!(matches!(
        get(listener, "app.example.com", "/seven/x").await,
        Ok((404, _))
    ));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, failures) = watcher.await.expect("load task");
    assert!(requests > 0);
    assert!(
        failures.is_empty(),
        "{} of {requests} requests to unchanged routes failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}
