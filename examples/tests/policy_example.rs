//! `examples/policy.yaml` served by `file-gateway`: a TrafficPolicy with JWT, a per-user rate
//! limit and a templated header, from YAML, through real sockets.

mod support;

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::time::Duration;

use support::{TempDir, file_gateway, free_port, get};

const ALICE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJhbGljZSIsImlzcyI6InBvbGljeS1leGFtcGxlIn0.Mb9Wo2W4AMGar5M8m0_8d_HXRmhm60PjymMcl7iJ72U";
const BOB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImRlbW8ifQ.eyJzdWIiOiJib2IiLCJpc3MiOiJwb2xpY3ktZXhhbXBsZSJ9.t8AFX8ffBZBe2sHazTtSzE-5LIvY3hESbKc-kcV_Y2E";

#[tokio::test]
async fn jwt_rate_limit_and_transformation_from_the_example_yaml() {
    let backend: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    examples::demo::spawn(backend, "demo")
        .await
        .expect("demo backend");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/policy.yaml"))
        .expect("examples/policy.yaml");
    let text = text.replace("- port: 9081", &format!("- port: {}", backend.port()));
    let dir = TempDir::new("policy-example");
    let config = dir.0.join("config");
    std::fs::write(config.join("policy.yaml"), text).unwrap();
    let listener: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let _gateway = file_gateway(&config, listener, std::iter::empty::<&OsStr>());

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
