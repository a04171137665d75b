//! `examples/policy.yaml` served by `file-gateway`: TrafficPolicies attached by targetRefs (one
//! on the Gateway, one on a rule) with request limits, JWT, a per-user rate limit and a
//! templated header, from YAML, through real sockets.

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use support::{TempDir, file_gateway, free_port, get};

const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJhbGljZSIsImlzcyI6InBvbGljeS1leGFtcGxlIn0.Mb9Wo2W4AMGar5M8m0_8d_HXRmhm60PjymMcl7iJ72U";
const BOB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJib2IiLCJpc3MiOiJwb2xpY3ktZXhhbXBsZSJ9.t8AFX8ffBZBe2sHazTtSzE-5LIvY3hESbKc-kcV_Y2E";

/// `examples/policy.yaml` pointed at a demo backend started on a free loopback port.
async fn example_yaml() -> String {
    let backend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    examples::demo::spawn(backend, "demo")
        .await
        .expect("demo backend");
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy.yaml"))
        .expect("examples/policy.yaml")
        .replace("- port: 9081", &format!("- port: {}", backend.port()))
}

#[tokio::test]
async fn jwt_rate_limit_and_transformation_from_the_example_yaml() {
    let text = example_yaml().await;
    let dir = TempDir::new("policy-example");
    let config = dir.0.join("config");
    std::fs::write(config.join("policy.yaml"), text).unwrap();
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin = format!("127.0.0.1:{}", free_port());
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--admin"), OsStr::new(&admin)],
    );

    let host = "policy.example";
    let mut ready = false;
    for _ in 0..200 {
        if let Ok((status, _)) = get(listener, host, "/api/x", &[]).await {
            assert_eq!(status, 401, "no token");
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "file-gateway never answered");

    // Rule `public`: only the Gateway's policy (request limits), no token needed.
    assert_eq!(get(listener, host, "/public/x", &[]).await.unwrap().0, 200);
    let many: Vec<(String, String)> = (0..20).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        get(listener, host, "/public/x", &many).await.unwrap().0,
        431,
        "the Gateway's request limits apply to every rule"
    );

    let alice = format!("Bearer {ALICE}");
    let (status, body) = get(
        listener,
        host,
        "/api/x",
        &[("authorization", &alice), ("x-user", "mallory")],
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        seen["headers"]["x-user"], "alice",
        "the claim replaces what the client sent"
    );
    assert_eq!(seen["headers"]["x-greeting"], "hello alice");
    assert!(
        seen["headers"].get("authorization").is_none(),
        "the token is not forwarded"
    );

    for _ in 0..4 {
        assert_eq!(
            get(listener, host, "/api/x", &[("authorization", &alice)])
                .await
                .unwrap()
                .0,
            200
        );
    }
    assert_eq!(
        get(listener, host, "/api/x", &[("authorization", &alice)])
            .await
            .unwrap()
            .0,
        429,
        "sixth within the minute"
    );
    let bob = format!("Bearer {BOB}");
    assert_eq!(
        get(listener, host, "/api/x", &[("authorization", &bob)])
            .await
            .unwrap()
            .0,
        200,
        "per user"
    );
    let forged = format!("Bearer {}x", &ALICE[..ALICE.len() - 1]);
    assert_eq!(
        get(listener, host, "/api/x", &[("authorization", &forged)])
            .await
            .unwrap()
            .0,
        401
    );
}

/// A filter object whose settings its kind refuses: the route's status says why (from the
/// translation, not only the data plane's 500), and the other route keeps serving.
#[tokio::test]
async fn refused_filter_settings_are_reported_in_the_route_status() {
    let text = example_yaml().await;
    let broken = r#"
---
apiVersion: gateway.pingora-gateway.dev/v1alpha1
kind: RateLimit
metadata: {name: broken, namespace: default}
spec:
  local: {requests: 0, unit: Second}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken, namespace: default}
spec:
  parentRefs: [{name: policy-example}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /broken}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.pingora-gateway.dev, kind: RateLimit, name: broken}
    backendRefs: [{name: demo, port: 80}]
---
apiVersion: gateway.pingora-gateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: broken-attached, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}]
  requestLimits: {maxHeaders: 0}
"#;
    let dir = TempDir::new("policy-broken");
    let config = dir.0.join("config");
    std::fs::write(config.join("policy.yaml"), text + broken).unwrap();
    let status_file = dir.0.join("status.yaml");
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin = format!("127.0.0.1:{}", free_port());
    let _gateway = file_gateway(
        &config,
        listener,
        [
            OsStr::new("--status-file"),
            status_file.as_os_str(),
            OsStr::new("--admin"),
            OsStr::new(&admin),
        ],
    );

    let mut status = String::new();
    for _ in 0..200 {
        status = std::fs::read_to_string(&status_file).unwrap_or_default();
        if status.contains("InvalidExtensionRef") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(status.contains("InvalidExtensionRef"), "{status}");
    assert!(
        status.contains("local.requests: must be above 0"),
        "{status}"
    );
    // The attached policy with refused settings: Invalid in its own status, applied nowhere.
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&status).unwrap();
    let attached = docs
        .iter()
        .find(|d| d["kind"] == "TrafficPolicy" && d["metadata"]["name"] == "broken-attached")
        .expect("broken-attached echoed");
    let condition = &attached["status"]["ancestors"][0]["conditions"][0];
    assert_eq!(condition["reason"], "Invalid", "{attached}");
    assert!(
        condition["message"]
            .as_str()
            .unwrap()
            .contains("requestLimits.maxHeaders"),
        "{attached}"
    );
    assert_eq!(
        get(listener, "policy.example", "/broken", &[])
            .await
            .unwrap()
            .0,
        500
    );
    assert_eq!(
        get(listener, "policy.example", "/api/x", &[])
            .await
            .unwrap()
            .0,
        401,
        "the other route serves"
    );
}

/// API keys and htpasswd users read from Secrets (one in another namespace, allowed by a
/// ReferenceGrant); rewriting a Secret changes who gets in, without touching the policies.
#[tokio::test]
async fn api_keys_and_users_come_from_secrets_and_follow_their_changes() {
    let text = example_yaml().await;
    let routes = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: secured, namespace: default}
spec:
  parentRefs: [{name: policy-example}]
  hostnames: [secured.example]
  rules:
  - name: keyed
    matches: [{path: {type: PathPrefix, value: /keyed}}]
    backendRefs: [{name: demo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /basic}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: gateway.pingora-gateway.dev, kind: BasicAuth, name: vault-users}
    backendRefs: [{name: demo, port: 80}]
---
apiVersion: gateway.pingora-gateway.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: keyed, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: secured, sectionName: keyed}]
  apiKeyAuth:
    keysFrom: [{secretRef: {name: api-keys}}]
---
apiVersion: gateway.pingora-gateway.dev/v1alpha1
kind: BasicAuth
metadata: {name: vault-users, namespace: default}
spec:
  htpasswdFrom: {secretRef: {name: users, namespace: vault}}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: basic-auth-users, namespace: vault}
spec:
  from: [{group: gateway.pingora-gateway.dev, kind: BasicAuth, namespace: default}]
  to: [{group: "", kind: Secret}]
---
apiVersion: v1
kind: Secret
metadata: {name: users, namespace: vault}
stringData: {.htpasswd: "bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="}
"#;
    let keys = |key: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: api-keys, namespace: default}}\nstringData: {{alice: {key}}}\n"
        )
    };
    let dir = TempDir::new("policy-secrets");
    let config = dir.0.join("config");
    std::fs::write(config.join("policy.yaml"), text + routes).unwrap();
    std::fs::write(config.join("keys.yaml"), keys("key-a")).unwrap();
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let admin = format!("127.0.0.1:{}", free_port());
    let _gateway = file_gateway(
        &config,
        listener,
        [OsStr::new("--admin"), OsStr::new(&admin)],
    );
    let host = "secured.example";
    let status_of = |path: &'static str, headers: Vec<(&'static str, String)>| async move {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        get(listener, host, path, &headers).await.map(|(s, _)| s)
    };
    let mut first = Err(String::new());
    for _ in 0..200 {
        first = status_of("/keyed", vec![("x-api-key", "key-a".into())]).await;
        if first == Ok(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first, Ok(200), "the key from the Secret lets alice in");
    assert_eq!(status_of("/keyed", vec![]).await, Ok(401));
    assert_eq!(
        status_of("/keyed", vec![("x-api-key", "key-b".into())]).await,
        Ok(401)
    );
    let bob = format!("Basic {}", base64("bob:password"));
    assert_eq!(
        status_of("/basic", vec![("authorization", bob.clone())]).await,
        Ok(200),
        "users from a Secret in another namespace, granted"
    );
    assert_eq!(status_of("/basic", vec![]).await, Ok(401));

    // The Secret changes: the new key works, the old one no longer does.
    std::fs::write(config.join("keys.yaml"), keys("key-b")).unwrap();
    let mut now = Err(String::new());
    for _ in 0..200 {
        now = status_of("/keyed", vec![("x-api-key", "key-b".into())]).await;
        if now == Ok(200) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(now, Ok(200));
    assert_eq!(
        status_of("/keyed", vec![("x-api-key", "key-a".into())]).await,
        Ok(401)
    );
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
