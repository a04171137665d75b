//! Request path normalisation end to end: requests written byte for byte to a real gateway
//! socket, routed to loopback echo backends that report the path they received.
//!
//! Routes on every listener: `/public` (prefix) -> `public`, `/admin` (prefix) -> `admin`,
//! `/exact/a` (exact) -> `exact`, `^/re/[a-z]+$` (regex) -> `regex`, `/rewrite` (prefix, with
//! `ReplacePrefixMatch: /new`) -> `public`, `/redirect` (prefix, redirect with
//! `ReplacePrefixMatch: /moved`), and `/` (prefix) -> `other`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// What the gateway answered to one raw request.
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    /// The backend that served the request (`x-backend`), if any.
    backend: Option<String>,
    /// The path and query the backend received.
    path: Option<String>,
}

/// Sends `GET <target> HTTP/1.1` as raw bytes (so that targets a client library would refuse or
/// rewrite reach the gateway as written) and reads the answer to the end of the connection.
async fn raw_get(port: u16, target: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr(port)).await.expect("connect");
    let mut request = b"GET ".to_vec();
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read");
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .expect("a complete response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or(serde_json::Value::Null);
    Answer {
        status,
        location: header("location"),
        backend: header("x-backend"),
        path: json["path"].as_str().map(str::to_owned),
    }
}

fn routes(b: &[TestBackend; 5]) -> Route {
    let [public, admin, other, exact, regex] = b;
    let to = |b: &TestBackend, name: &str| BackendRef::endpoints(name, vec![b.addr]);
    Route::new("ns", "paths")
        .rule(Rule::prefix("/public").backend(to(public, "public")))
        .rule(Rule::prefix("/admin").backend(to(admin, "admin")))
        .rule(Rule::exact("/exact/a").backend(to(exact, "exact")))
        .rule(
            Rule::default()
                .matching(RouteMatch {
                    path: PathMatch::RegularExpression("^/re/[a-z]+$".into()),
                    ..RouteMatch::default()
                })
                .backend(to(regex, "regex")),
        )
        .rule(
            Rule::prefix("/rewrite")
                .filter(Filter::UrlRewrite(UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::ReplacePrefixMatch("/new".into())),
                }))
                .backend(to(public, "public")),
        )
        .rule(
            Rule::prefix("/redirect").filter(Filter::RequestRedirect(RequestRedirect {
                path: Some(PathModifier::ReplacePrefixMatch("/moved".into())),
                ..RequestRedirect::default()
            })),
        )
        .rule(Rule::prefix("/").backend(to(other, "other")))
}

/// One gateway with a bind per setting, in this order: the default, then `KeepUnchanged`,
/// `RejectRequest`, `UnescapeAndForward`, `UnescapeAndRedirect` (all merging slashes), then the
/// default actions without merging.
struct Setup {
    gateway: Gateway,
    ports: Vec<u16>,
    _backends: [TestBackend; 5],
}

const SETTINGS: [(bool, EscapedSlashesAction); 5] = [
    (true, EscapedSlashesAction::KeepUnchanged),
    (true, EscapedSlashesAction::RejectRequest),
    (true, EscapedSlashesAction::UnescapeAndForward),
    (true, EscapedSlashesAction::UnescapeAndRedirect),
    (false, EscapedSlashesAction::UnescapeAndRedirect),
];

async fn setup() -> Setup {
    let backends = [
        backend("public").await,
        backend("admin").await,
        backend("other").await,
        backend("exact").await,
        backend("regex").await,
    ];
    let route = routes(&backends);
    let mut binds = Vec::new();
    let mut ports = Vec::new();
    let default = Listener::new("ns/gw/default", 80).route(route.clone());
    let configured = SETTINGS.iter().map(|&(merge_slashes, escaped_slashes)| {
        Listener::new(format!("ns/gw/{escaped_slashes:?}-{merge_slashes}"), 80)
            .route(route.clone())
            .path_normalization(PathNormalization {
                merge_slashes,
                escaped_slashes,
            })
    });
    for listener in std::iter::once(default).chain(configured) {
        let port = free_port();
        ports.push(port);
        binds.push(Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![listener],
        });
    }
    let gateway = Gateway::new(FilterRegistry::new());
    let report = gateway
        .apply(Config {
            binds,
            ..Default::default()
        })
        .await
        .expect("apply");
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    Setup {
        gateway,
        ports,
        _backends: backends,
    }
}

/// Checks that `target` on `port` was served by `backend`, which received `path`.
async fn served(port: u16, target: &str, backend: &str, path: &str) {
    let a = raw_get(port, target.as_bytes()).await;
    assert_eq!(
        (a.status, a.backend.as_deref(), a.path.as_deref()),
        (200, Some(backend), Some(path)),
        "{target} on port {port}"
    );
}

#[tokio::test]
async fn traversal_is_routed_and_forwarded_as_the_backend_resolves_it() {
    let s = setup().await;
    for &port in &s.ports {
        // Dot segments, plain or percent-encoded in any case, leave `/public` before matching.
        served(port, "/public/../admin", "admin", "/admin").await;
        served(port, "/public/%2e%2e/admin", "admin", "/admin").await;
        served(port, "/public/%2E%2e/admin", "admin", "/admin").await;
        served(port, "/public/.%2E/admin/x", "admin", "/admin/x").await;
        served(port, "/public/./x", "public", "/public/x").await;
        served(port, "/../../admin", "admin", "/admin").await;
        served(port, "/public\\..\\admin", "admin", "/admin").await;
        // Unreserved characters decoded; the query string is untouched.
        served(port, "/%7euser", "other", "/~user").await;
        served(
            port,
            "/%70ublic/x?a=%2e%2e&b=/../c",
            "public",
            "/public/x?a=%2e%2e&b=/../c",
        )
        .await;
        served(port, "/public/a%3fb", "public", "/public/a%3Fb").await;
        // Exact and regex matches see the normalised path.
        served(port, "/exact/./a", "exact", "/exact/a").await;
        served(port, "/re/%61bc", "regex", "/re/abc").await;
        served(port, "/exact/%61", "exact", "/exact/a").await;
        // A path already normal is forwarded byte for byte.
        served(
            port,
            "/public/a;b=c/.well-known?x",
            "public",
            "/public/a;b=c/.well-known?x",
        )
        .await;
        // Invalid requests.
        for bad in ["/public/%zz", "/public/%2", "/public/%", "/public/a%00b"] {
            let a = raw_get(port, bad.as_bytes()).await;
            assert_eq!((a.status, a.backend), (400, None), "{bad} on port {port}");
        }
        let a = raw_get(port, b"/public/\xff/../admin").await;
        assert_eq!((a.status, a.backend), (400, None), "non-UTF-8 on {port}");
    }
    s.gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn filters_see_the_normalised_path() {
    let s = setup().await;
    let port = s.ports[0];
    // ReplacePrefixMatch replaces the prefix of the normalised path.
    served(port, "/rewrite/./a//b?q=1", "public", "/new/a/b?q=1").await;
    served(port, "/x/../rewrite/%7e", "public", "/new/~").await;
    // The redirect filter builds its Location from the normalised path; the query is kept.
    let a = raw_get(port, b"/redirect/./a%7e?q=%2e").await;
    assert_eq!(a.status, 302);
    assert_eq!(
        a.location.as_deref(),
        Some("http://example.com/moved/a~?q=%2e")
    );
    // Not a route under `/redirect`: the dot segment is resolved first.
    served(port, "/redirect/../admin", "admin", "/admin").await;
    s.gateway.shutdown(Duration::from_secs(1)).await;
}

/// What each bind of [`SETTINGS`] answers: `(status, backend, path or Location)`.
type Expect = (u16, Option<&'static str>, &'static str);

async fn check(port: u16, target: &str, want: Expect) {
    let a = raw_get(port, target.as_bytes()).await;
    let seen = if a.status == 307 { a.location } else { a.path };
    assert_eq!(
        (
            a.status,
            a.backend.as_deref(),
            seen.as_deref().unwrap_or("")
        ),
        want,
        "{target} on port {port}"
    );
}

#[tokio::test]
async fn escaped_slashes_follow_the_listener_action() {
    let s = setup().await;
    let matrix: [(&str, [Expect; 5]); 4] = [
        (
            "/a%2Fb",
            [
                (200, Some("other"), "/a%2Fb"),
                (400, None, ""),
                (200, Some("other"), "/a/b"),
                (307, None, "/a/b"),
                (307, None, "/a/b"),
            ],
        ),
        (
            "/admin%2fx?q=%2F",
            [
                (200, Some("other"), "/admin%2Fx?q=%2F"),
                (400, None, ""),
                (200, Some("admin"), "/admin/x?q=%2F"),
                (307, None, "/admin/x?q=%2F"),
                (307, None, "/admin/x?q=%2F"),
            ],
        ),
        (
            // Kept escaped, `..%2F` is no dot segment: the path stays one segment.
            "/public%2F..%2Fadmin",
            [
                (200, Some("other"), "/public%2F..%2Fadmin"),
                (400, None, ""),
                (200, Some("admin"), "/admin"),
                (307, None, "/admin"),
                (307, None, "/admin"),
            ],
        ),
        (
            "/admin%5C%5Cx",
            [
                (200, Some("other"), "/admin%5C%5Cx"),
                (400, None, ""),
                (200, Some("admin"), "/admin/x"),
                (307, None, "/admin/x"),
                (307, None, "/admin//x"),
            ],
        ),
    ];
    for (target, expected) in matrix {
        for (port, want) in s.ports[1..].iter().zip(expected) {
            check(*port, target, want).await;
        }
        // The default listener redirects, as Envoy Gateway does.
        check(s.ports[0], target, expected[3]).await;
    }
    // The redirect target is served, as is.
    served(s.ports[4], "/admin/x?q=%2F", "admin", "/admin/x?q=%2F").await;
    s.gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn slashes_are_merged_unless_disabled() {
    let s = setup().await;
    let no_merge = s.ports[5];
    for &port in &s.ports[..5] {
        served(port, "//admin", "admin", "/admin").await;
        served(port, "/public//x///y", "public", "/public/x/y").await;
        served(port, "/public//../admin", "admin", "/admin").await;
    }
    // Without merging, `//admin` is not under `/admin`, and the backend gets it unchanged.
    served(no_merge, "//admin", "other", "//admin").await;
    served(no_merge, "/public//x///y", "public", "/public//x///y").await;
    // An empty segment is a segment: `..` removes it.
    served(no_merge, "/public//../x", "public", "/public/x").await;
    s.gateway.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn absolute_form_and_h2c_are_normalised_too() {
    let s = setup().await;
    let port = s.ports[0];
    served(
        port,
        "http://example.com/public/%2e%2e/admin?x=1",
        "admin",
        "/admin?x=1",
    )
    .await;
    let r = get_h2c(addr(port), "example.com", "/public/%2E%2E/admin/%7e").await;
    assert_eq!(
        (r.status, r.backend(), r.body["path"].as_str()),
        (200, "admin", Some("/admin/~"))
    );
    let r = get_h2c(addr(port), "example.com", "/public/%zz").await;
    assert_eq!(r.status, 400);
    s.gateway.shutdown(Duration::from_secs(1)).await;
}
