//! Body-based routing end to end from Gateway API YAML: an HTTPRoute that matches on
//! `X-Gateway-Model-Name` makes `file-gateway` derive that header from the JSON body's `model`
//! before routing, so chat completions go to the backend serving their model, body unchanged.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod support;

use support::{TempDir, file_gateway, free_port, get, send};

/// A backend answering `name`, a newline and the request body it received (read by its
/// `content-length`); stops with the test's runtime.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                let end = loop {
                    if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while raw.len() < end + 4 + length {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => raw.extend_from_slice(&buf[..n]),
                    }
                }
                let mut body = format!("{name}\n").into_bytes();
                body.extend_from_slice(&raw[end + 4..end + 4 + length]);
                let mut response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                response.extend_from_slice(&body);
                let _ = stream.write_all(&response).await;
            });
        }
    });
    addr
}

fn resources(llama: SocketAddr, mistral: SocketAddr, other: SocketAddr) -> String {
    let service = |name: &str, addr: SocketAddr| {
        format!(
            r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports:
  - {{port: 8000, targetPort: {port}}}
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
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: models, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches:
    - path: {{type: PathPrefix, value: /v1/}}
      headers: [{{name: X-Gateway-Model-Name, value: llama}}]
    backendRefs: [{{name: llama, port: 8000}}]
  - matches:
    - path: {{type: PathPrefix, value: /v1/}}
      headers: [{{name: X-Gateway-Model-Name, value: mistral}}]
    backendRefs: [{{name: mistral, port: 8000}}]
  - backendRefs: [{{name: other, port: 8000}}]
{llama}{mistral}{other}"#,
        llama = service("llama", llama),
        mistral = service("mistral", mistral),
        other = service("other", other),
    )
}

async fn chat(
    addr: SocketAddr,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String), String> {
    send(
        addr,
        "POST",
        "ai.example",
        "/v1/chat/completions",
        headers,
        body,
    )
    .await
    .map(|(status, _, body)| (status, body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_matching_the_model_header_route_chat_completions_by_body() {
    let (llama, mistral, other) = (
        backend("llama").await,
        backend("mistral").await,
        backend("other").await,
    );
    let dir = TempDir::new("body-routing-test");
    let config = dir.0.join("gateway.yaml");
    std::fs::write(&config, resources(llama, mistral, other)).expect("write config");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--admin"), OsStr::new(&admin.to_string())],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(listener, "ai.example", "/", &[]).await != Ok((200, "other\n".into())) {
        assert!(Instant::now() < deadline, "the gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let json = ("content-type", "application/json");

    for model in ["llama", "mistral"] {
        let body = format!(
            r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello \"{model}\" \u00e9"}}]}}"#
        );
        assert_eq!(
            chat(listener, &[json], &body).await,
            Ok((200, format!("{model}\n{body}"))),
            "the backend of {model} gets the body unchanged"
        );
    }
    // The client cannot choose the model by header.
    let body = r#"{"messages": []}"#;
    assert_eq!(
        chat(listener, &[json, ("x-gateway-model-name", "llama")], body).await,
        Ok((200, format!("other\n{body}")))
    );
    // Not JSON, or not valid JSON: routed as without the header.
    let body = r#"{"model": "llama"}"#;
    assert_eq!(
        chat(listener, &[("content-type", "text/plain")], body).await,
        Ok((200, format!("other\n{body}")))
    );
    let body = r#"{"model": "llama""#;
    assert_eq!(
        chat(listener, &[json], body).await,
        Ok((200, format!("other\n{body}")))
    );
    // A long prompt (past Pingora's 64 KiB replay buffer) is read, routed and sent whole.
    let body = format!(
        r#"{{"model": "llama", "prompt": "{}"}}"#,
        "x".repeat(300_000)
    );
    assert_eq!(
        chat(listener, &[json], &body).await,
        Ok((200, format!("llama\n{body}")))
    );
    // Past the bound (4 MiB, the inference data plane's bound for a prompt): 413, at once when
    // the Content-Length says so (the gateway answers and closes without reading the body, so
    // the test sends the head alone: a client still writing 4 MiB may see its write fail first).
    let mut stream = tokio::net::TcpStream::connect(listener)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: ai.example\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        4 * 1024 * 1024 + 1
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .expect("read");
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // The admin's explain says the listener derives the header from the body.
    let (code, text) = get(
        admin,
        "admin",
        "/explain?host=ai.example&path=/v1/x&port=80",
        &[],
    )
    .await
    .expect("/explain answers");
    assert_eq!(code, 200, "{text}");
    let e: serde_json::Value = serde_json::from_str(&text).expect("explain JSON");
    assert_eq!(
        e["listener"]["body_headers"][0]["header"], "x-gateway-model-name",
        "{e}"
    );
    assert_eq!(e["listener"]["body_headers"][0]["field"], "model", "{e}");
}
