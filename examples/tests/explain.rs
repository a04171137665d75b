//! `explain` end to end: the admin endpoint's `/explain` of a running `file-gateway` and the
//! `file-gateway explain` subcommand, both checked against where real requests through the
//! same process go.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod support;

use support::{TempDir, file_gateway, free_port, get};

/// A backend answering `body` to every request; stops with the test's runtime.
async fn backend(body: &'static str) -> SocketAddr {
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

fn resources(app: SocketAddr, api: SocketAddr) -> String {
    let service = |name: &str, addr: SocketAddr| {
        format!(
            r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports:
  - {{port: 8080, targetPort: {port}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports:
- {{port: {port}}}
endpoints:
- addresses: ["{ip}"]
  conditions: {{ready: true}}
"#,
            port = addr.port(),
            ip = addr.ip()
        )
    };
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
  - {{name: http, port: 80, protocol: HTTP, hostname: "*.example.com"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: app, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example.com]
  rules:
  - backendRefs: [{{name: app, port: 8080}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: api, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example.com]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /api}}
      headers: [{{name: x-version, value: "2"}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{{name: x-routed, value: api}}]
    backendRefs: [{{name: api, port: 8080}}]
{app}{api}"#,
        app = service("app", app),
        api = service("api", api),
    )
}

/// The JSON of `/explain?query` on the admin endpoint.
async fn admin_explain(admin: SocketAddr, query: &str) -> (u16, String) {
    get(admin, "admin", &format!("/explain?{query}"), &[])
        .await
        .expect("/explain answers")
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn verdict<'a>(e: &'a serde_json::Value, route: &str) -> &'a serde_json::Value {
    e["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["route"] == route))
        .map(|r| &r["verdict"])
        .unwrap_or_else(|| panic!("no report for {route}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_explain_agrees_with_traffic() {
    let app = backend("app").await;
    let api = backend("api").await;
    let dir = TempDir::new("explain-test");
    let config = dir.0.join("gateway.yaml");
    std::fs::write(&config, resources(app, api)).expect("write config");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--admin"), OsStr::new(&admin.to_string())],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(listener, "app.example.com", "/", &[]).await != Ok((200, "app".into())) {
        assert!(Instant::now() < deadline, "the gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // With the header: the api route, its filter and backend; the app route loses on path length.
    let (code, body) = admin_explain(
        admin,
        "host=app.example.com&path=%2Fapi%2Fv1%3Fa%3D1&header=x-version:2&port=80",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let e = json(&body);
    assert_eq!(e["selected"]["route"], "default/api", "{e}");
    assert_eq!(e["listener"]["matched"], "wildcard", "{e}");
    assert_eq!(e["selected"]["filters"][0]["kind"], "RequestHeaderModifier");
    let target = e["selected"]["backends"][0]["target"]
        .as_str()
        .unwrap_or("");
    assert!(target.contains(&api.to_string()), "{e}");
    assert_eq!(verdict(&e, "default/app")["result"], "lost_on_precedence");
    assert!(
        verdict(&e, "default/app")["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("path:")),
        "{e}"
    );
    assert_eq!(
        get(
            listener,
            "app.example.com",
            "/api/v1?a=1",
            &[("x-version", "2")]
        )
        .await,
        Ok((200, "api".into()))
    );

    // Without it: the app route; the api route's first failed condition is the header.
    let (code, body) = admin_explain(admin, "host=app.example.com&path=/api/v1").await;
    assert_eq!(code, 200, "{body}");
    let e = json(&body);
    assert_eq!(e["selected"]["route"], "default/app", "{e}");
    let api_verdict = verdict(&e, "default/api");
    assert_eq!(api_verdict["result"], "no_match", "{e}");
    assert_eq!(api_verdict["failures"][0]["condition"], "header", "{e}");
    assert_eq!(
        get(listener, "app.example.com", "/api/v1", &[]).await,
        Ok((200, "app".into()))
    );

    // Path normalisation as the proxy does it: /x/../api is /api.
    let (_, body) = admin_explain(
        admin,
        "host=app.example.com&path=/x/../api&header=x-version:2",
    )
    .await;
    let e = json(&body);
    assert_eq!(e["normalized_path"], "/api", "{e}");
    assert_eq!(e["selected"]["route"], "default/api", "{e}");
    assert_eq!(
        get(
            listener,
            "app.example.com",
            "/x/../api",
            &[("x-version", "2")]
        )
        .await,
        Ok((200, "api".into()))
    );

    // No route hostname for this host: 404 both ways.
    let (_, body) = admin_explain(admin, "host=other.example.com&path=/").await;
    assert_eq!(json(&body)["outcome"]["status"], 404, "{body}");
    assert!(matches!(
        get(listener, "other.example.com", "/", &[]).await,
        Ok((404, _))
    ));

    // Bad parameters: 400 with the reason.
    for (query, words) in [
        ("host=a&port=x", "port"),
        ("header=novalue", "NAME:VALUE"),
        ("colour=blue", "unknown parameter"),
        ("header=bad%20name:1", "header name"),
    ] {
        let (code, body) = admin_explain(admin, query).await;
        assert_eq!(code, 400, "{query}: {body}");
        assert!(body.contains(words), "{query}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_explain_loads_the_yaml_and_binds_nothing() {
    let app: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let api: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let dir = TempDir::new("explain-test");
    std::fs::write(dir.0.join("gateway.yaml"), resources(app, api)).expect("write config");
    let local = free_port();
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_file-gateway"))
            .arg("explain")
            .arg("--config")
            .arg(&dir.0)
            .args(["--listener-port-map", &format!("80={local}")])
            .args(extra)
            .output()
            .expect("run file-gateway explain")
    };

    let out = run(&[
        "--host",
        "app.example.com",
        "--path",
        "/api/v1",
        "--header",
        "x-version: 2",
        "--port",
        "80",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let e = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(e["selected"]["route"], "default/api", "{e}");
    assert_eq!(e["bind"]["address"], format!("127.0.0.1:{local}"), "{e}");

    // Text; the bind found by its local port this time.
    let out = run(&[
        "--host",
        "app.example.com",
        "--path",
        "/api/v1",
        "--port",
        &local.to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route: default/app rule 0"), "{text}");
    assert!(
        text.contains("default/api: no match") && text.contains("header failed: x-version"),
        "{text}"
    );
    // Nothing was bound: the local port is still free.
    std::net::TcpListener::bind(("127.0.0.1", local)).expect("explain bound nothing");

    // Bad arguments exit 2 with a message.
    for bad in [
        &["--header", "novalue"][..],
        &["--path", "/a b"][..],
        &["--method", "G T"][..],
    ] {
        let out = run(bad);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{bad:?}");
    }
}
