//! External authorization end to end: `file-gateway` and the example `ext-authz-server` as
//! separate processes on loopback, the demo backend in the test, every request through real
//! sockets. Covers the `ExternalAuth` kind, the `TrafficPolicy` `extAuth` section and the
//! HTTPRoute `ExternalAuth` filter type, over gRPC and HTTP.

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{Process, TempDir, file_gateway, free_port};

const ALICE: &str = "Bearer token-a";

/// The authorization server process (killed on drop), on its own gRPC and HTTP ports.
struct AuthServer {
    _process: Process,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn auth_server() -> AuthServer {
    let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let process = Process(
        Command::new(env!("CARGO_BIN_EXE_ext-authz-server"))
            .arg("--grpc")
            .arg(grpc.to_string())
            .arg("--http")
            .arg(http.to_string())
            .args(["--user", "alice=token-a"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ext-authz-server"),
    );
    // Both ports accept before any check is made, so a slow start is never taken for a
    // failing service.
    for address in [grpc, http] {
        let mut tries = 0;
        while std::net::TcpStream::connect(address).is_err() {
            tries += 1;
            assert!(tries < 400, "ext-authz-server never listened on {address}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    AuthServer {
        _process: process,
        grpc,
        http,
    }
}

/// One HTTP/1.1 request to `authz.example` on a new connection: status, head (lower-case) and
/// body.
async fn send(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, String), String> {
    support::send(addr, method, "authz.example", target, headers, body).await
}

/// What the demo backend saw of a request (its JSON answer), or panics.
fn seen(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the backend's answer ({e}): {body}"))
}

/// The Gateway, the demo backend's Service, and `extra`.
fn config(backend: SocketAddr, extra: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: authz}}
spec: {{controllerName: gateway.pingora.rs/controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: authz, namespace: default}}
spec:
  gatewayClassName: authz
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: demo, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: demo-1, namespace: default, labels: {{kubernetes.io/service-name: demo}}}}
addressType: IPv4
endpoints: [{{addresses: [127.0.0.1]}}]
ports: [{{port: {port}}}]
{extra}"#,
        port = backend.port()
    )
}

/// An HTTPRoute for `prefix` whose rule runs the ExtensionRef `kind`/`name`.
fn extension_route(name: &str, prefix: &str, kind: &str, filter: &str) -> String {
    format!(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: default}}
spec:
  parentRefs: [{{name: authz}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    filters:
    - type: ExtensionRef
      extensionRef: {{group: gateway.pingora-gateway.dev, kind: {kind}, name: {filter}}}
    backendRefs: [{{name: demo, port: 80}}]
"#
    )
}

/// An `ExternalAuth` object named `name` with the spec lines `spec` (indented by 2).
fn external_auth(name: &str, spec: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.pingora-gateway.dev/v1alpha1\nkind: ExternalAuth\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"
    )
}

/// Starts the demo backend and file-gateway on `extra`; waits until `probe` answers anything.
async fn start(
    extra: impl Fn(SocketAddr) -> String,
    probe: &str,
) -> (TempDir, Process, SocketAddr, std::path::PathBuf) {
    let backend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    examples::demo::spawn(backend, "demo")
        .await
        .expect("demo backend");
    let dir = TempDir::new("ext-authz");
    std::fs::write(
        dir.0.join("config").join("authz.yaml"),
        config(backend, &extra(backend)),
    )
    .unwrap();
    let status = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin = format!("127.0.0.1:{}", free_port());
    let gateway = file_gateway(
        &dir.0.join("config"),
        listener,
        [
            OsStr::new("--admin"),
            OsStr::new(&admin),
            OsStr::new("--status-file"),
            status.as_os_str(),
        ],
    );
    for _ in 0..400 {
        if let Ok((s, _, _)) = send(listener, "GET", probe, &[], "").await
            && s != 404
        {
            return (dir, gateway, listener, status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("file-gateway never served {probe}");
}

#[tokio::test]
async fn grpc_checks_from_the_kind_and_the_policy_section() {
    let auth = auth_server();
    let grpc = auth.grpc;
    let closed = free_port();
    let extra = move |_| {
        let address = format!("  backend: {{address: \"{grpc}\"}}\n");
        let mut yaml = String::new();
        yaml += &format!(
            "\n---\napiVersion: gateway.pingora-gateway.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: policy, namespace: default}}\nspec:\n  extAuth:\n    protocol: GRPC\n    backend: {{address: \"{grpc}\"}}\n"
        );
        yaml += &extension_route("policy", "/policy", "TrafficPolicy", "policy");
        yaml += &external_auth("plain", &format!("  protocol: GRPC\n{address}"));
        yaml += &extension_route("plain", "/grpc", "ExternalAuth", "plain");
        yaml += &external_auth(
            "body",
            &format!("  protocol: GRPC\n{address}  forwardBody: {{maxSize: 16}}\n"),
        );
        yaml += &extension_route("body", "/body", "ExternalAuth", "body");
        yaml += &external_auth(
            "partial",
            &format!(
                "  protocol: GRPC\n{address}  forwardBody: {{maxSize: 16, allowPartial: true}}\n"
            ),
        );
        yaml += &extension_route("partial", "/partial", "ExternalAuth", "partial");
        yaml += &external_auth(
            "slow",
            &format!("  protocol: GRPC\n{address}  timeoutMs: 1000\n"),
        );
        yaml += &extension_route("slow", "/slow", "ExternalAuth", "slow");
        yaml += &external_auth(
            "down",
            &format!("  protocol: GRPC\n  backend: {{address: \"127.0.0.1:{closed}\"}}\n"),
        );
        yaml += &extension_route("down", "/down", "ExternalAuth", "down");
        yaml += &external_auth(
            "open",
            &format!(
                "  protocol: GRPC\n  backend: {{address: \"127.0.0.1:{closed}\"}}\n  failOpen: true\n"
            ),
        );
        yaml += &extension_route("open", "/open", "ExternalAuth", "open");
        yaml
    };
    let (_dir, _gateway, gw, _) = start(extra, "/grpc").await;

    for path in ["/grpc/x", "/policy/x"] {
        let (status, head, body) = send(
            gw,
            "GET",
            path,
            &[("authorization", ALICE), ("x-user", "mallory")],
            "",
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        let seen = seen(&body);
        assert_eq!(
            seen["headers"]["x-user"], "alice",
            "{path}: set by the service, replacing the client's"
        );
        assert_eq!(seen["headers"]["x-auth-body-bytes"], "0");
        assert!(
            head.contains("x-auth-checked: grpc"),
            "{path}: response header added: {head}"
        );

        let (status, head, body) = send(gw, "GET", path, &[("authorization", "Bearer wrong")], "")
            .await
            .unwrap();
        assert_eq!(status, 403, "{path}");
        assert_eq!(
            body, "denied by ext-authz-server\n",
            "{path}: the service's body, not the backend's"
        );
        assert!(head.contains("x-denied-by: ext-authz-server"), "{head}");
    }

    // The body, bounded: within the bound it is sent; over it 413, or the first bytes.
    let (status, _, body) = send(
        gw,
        "POST",
        "/body",
        &[("authorization", ALICE)],
        "0123456789",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body)["headers"]["x-auth-body-bytes"], "10");
    let (status, _, _) = send(
        gw,
        "POST",
        "/body",
        &[("authorization", ALICE)],
        "0123456789abcdefXYZ",
    )
    .await
    .unwrap();
    assert_eq!(status, 413);
    let (status, _, body) = send(
        gw,
        "POST",
        "/body",
        &[("authorization", ALICE)],
        "please deny-me",
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "denied by ext-authz-server\n"),
        "the service read the body"
    );
    let (status, _, body) = send(
        gw,
        "POST",
        "/partial",
        &[("authorization", ALICE)],
        "0123456789abcdefXYZ",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body)["headers"]["x-auth-body-bytes"], "16");

    // No answer within the timeout: fail closed.
    let (status, _, body) = send(
        gw,
        "GET",
        "/slow",
        &[("authorization", ALICE), ("x-ext-authz-delay-ms", "3000")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "external authorization failed\n")
    );
    let (status, _, _) = send(gw, "GET", "/slow", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "a quick answer within the timeout");

    // The service is down: 403 (fail closed), or through unchanged (fail open).
    let (status, _, body) = send(gw, "GET", "/down", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "external authorization failed\n")
    );
    let (status, _, body) = send(gw, "GET", "/open", &[("authorization", "Bearer wrong")], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(seen(&body)["headers"].get("x-user").is_none());
}

#[tokio::test]
async fn httproute_external_auth_filter_over_grpc_and_http() {
    let auth = auth_server();
    let (grpc, http) = (auth.grpc, auth.http);
    let extra = move |_| {
        let service = |name: &str, port: u16| {
            format!(
                "\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{port: 9000}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [127.0.0.1]}}]\nports: [{{port: {port}}}]\n"
            )
        };
        let route = |name: &str, prefix: &str, auth: &str| {
            format!(
                "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: authz}}]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]\n    filters:\n    - type: ExternalAuth\n      externalAuth:\n{auth}    backendRefs: [{{name: demo, port: 80}}]\n"
            )
        };
        service("authz-grpc", grpc.port())
            + &service("authz-http", http.port())
            + &route(
                "gep-grpc",
                "/gep-grpc",
                "        protocol: GRPC\n        backendRef: {name: authz-grpc, port: 9000}\n",
            )
            + &route(
                "gep-http",
                "/gep-http",
                "        protocol: HTTP\n        backendRef: {name: authz-http, port: 9000}\n        http: {path: /check, allowedResponseHeaders: [x-user, x-auth-path]}\n",
            )
    };
    let (_dir, _gateway, gw, _) = start(extra, "/gep-grpc").await;

    let (status, _, body) = send(gw, "GET", "/gep-grpc/a", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen(&body)["headers"]["x-user"], "alice");
    let (status, _, body) = send(gw, "GET", "/gep-grpc/a", &[], "").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "denied by ext-authz-server\n")
    );

    let (status, _, body) = send(
        gw,
        "GET",
        "/gep-http/a?q=1",
        &[("authorization", ALICE)],
        "",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen = seen(&body);
    assert_eq!(seen["headers"]["x-user"], "alice");
    assert_eq!(
        seen["headers"]["x-auth-path"], "/check/gep-http/a?q=1",
        "the prefix is put before the path"
    );
    assert!(
        seen["headers"].get("x-auth-body-bytes").is_none(),
        "not in allowedResponseHeaders"
    );
    let (status, head, body) = send(
        gw,
        "GET",
        "/gep-http/a",
        &[("authorization", "Bearer nope")],
        "",
    )
    .await
    .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (403, "denied by ext-authz-server\n")
    );
    assert!(head.contains("x-denied-by: ext-authz-server"), "{head}");
}

#[tokio::test]
async fn invalid_settings_and_missing_backends_get_their_status_while_the_rest_serves() {
    let auth = auth_server();
    let grpc = auth.grpc;
    let extra = move |_| {
        external_auth(
            "good",
            &format!("  protocol: GRPC\n  backend: {{address: \"{grpc}\"}}\n"),
        ) + &extension_route("good", "/good", "ExternalAuth", "good")
            + &external_auth(
                "broken",
                &format!("  protocol: GRPC\n  backend: {{address: \"{grpc}\"}}\n  timeoutMs: 0\n"),
            )
            + &extension_route("broken", "/broken", "ExternalAuth", "broken")
            + "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: missing, namespace: default}\nspec:\n  parentRefs: [{name: authz}]\n  rules:\n  - matches: [{path: {type: PathPrefix, value: /missing}}]\n    filters:\n    - type: ExternalAuth\n      externalAuth: {protocol: GRPC, backendRef: {name: nowhere, port: 9000}}\n    backendRefs: [{name: demo, port: 80}]\n"
    };
    let (_dir, _gateway, gw, status_file) = start(extra, "/good").await;
    let mut status = String::new();
    for _ in 0..200 {
        status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if status.contains("timeoutMs: must be above 0") && status.contains("nowhere") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.contains("InvalidExtensionRef"), "{status}");
    assert!(status.contains("timeoutMs: must be above 0"), "{status}");
    assert!(status.contains("BackendNotFound"), "{status}");
    let (s, _, _) = send(gw, "GET", "/broken", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(s, 500, "an unusable filter fails closed");
    let (s, _, _) = send(gw, "GET", "/missing", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(s, 500, "an unresolved authorization backend fails closed");
    let (s, _, body) = send(gw, "GET", "/good", &[("authorization", ALICE)], "")
        .await
        .unwrap();
    assert_eq!(s, 200, "the other route serves: {body}");
}
