//! End-to-end tests of the ready-made filters through a real gateway on loopback: each kind
//! referenced by `ExtensionRef` with its settings, and a `TrafficPolicy` combining them.

// The loopback backend and HTTP client of gateway-core's own end-to-end tests.
#[path = "../../gateway-core/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use serde_json::json;
use support::*;

const HOST: &str = "filters.test";

fn route(name: &str, prefix: &str, backend: &TestBackend, filters: Vec<Filter>) -> Route {
    let mut r = Route::new("test", name);
    let mut rule = Rule::prefix(prefix);
    rule.backends = vec![BackendRef::endpoints("b", vec![backend.addr])];
    rule.filters = filters;
    r.rules = vec![rule];
    r
}

fn filter(kind: &str, name: &str, settings: serde_json::Value) -> Filter {
    Filter::ExtensionRef(
        ExtensionRef::new(gateway_filters::GROUP, kind, name).with_config(settings),
    )
}

fn config(port: u16, routes: Vec<Route>) -> Config {
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = routes.into_iter().map(Into::into).collect();
    Config {
        binds: vec![Bind {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    }
}

async fn start(routes: Vec<Route>) -> (Gateway, SocketAddr) {
    let mut registry = FilterRegistry::with_builtins();
    gateway_filters::register(&mut registry);
    let port = free_port();
    let gw = Gateway::new(registry);
    gw.apply(config(port, routes)).await.unwrap();
    (gw, SocketAddr::from(([127, 0, 0, 1], port)))
}

fn header<'r>(reply: &'r Reply, name: &str) -> &'r str {
    reply.headers.get(name).map_or("", |v| v.to_str().unwrap())
}

#[tokio::test]
async fn ip_access_by_connection_and_by_trusted_forwarded_for() {
    let b = backend("b").await;
    let (_gw, addr) = start(vec![
        route(
            "deny-loopback",
            "/deny",
            &b,
            vec![filter("IPAccess", "a", json!({"deny": ["127.0.0.0/8"]}))],
        ),
        route(
            "allow-loopback",
            "/allow",
            &b,
            vec![filter("IPAccess", "b", json!({"allow": ["127.0.0.1"]}))],
        ),
        route(
            "xff",
            "/xff",
            &b,
            vec![filter(
                "IPAccess",
                "c",
                json!({"deny": ["10.0.0.0/8"], "clientIP": {"xffTrustedHops": 1}}),
            )],
        ),
    ])
    .await;
    assert_eq!(get(addr, HOST, "/deny").await.status, 403);
    assert_eq!(get(addr, HOST, "/allow").await.status, 200);
    // One trusted hop: the rightmost entry is the client.
    let denied = get_with(
        addr,
        HOST,
        "/xff",
        &[("x-forwarded-for", "192.0.2.1, 10.1.2.3")],
    )
    .await;
    assert_eq!(denied.status, 403);
    let allowed = get_with(
        addr,
        HOST,
        "/xff",
        &[("x-forwarded-for", "10.1.2.3, 192.0.2.1")],
    )
    .await;
    assert_eq!(allowed.status, 200);
    // No header: the connection's address (loopback) is not denied.
    assert_eq!(get(addr, HOST, "/xff").await.status, 200);
}

#[tokio::test]
async fn request_limits_answer_413_and_431() {
    let b = backend("b").await;
    let (_gw, addr) = start(vec![route(
        "limited",
        "/",
        &b,
        vec![filter(
            "RequestLimits",
            "l",
            json!({"maxBodyBytes": 16, "maxHeaders": 6}),
        )],
    )])
    .await;
    let (status, _, _) =
        send_body(addr, "POST", HOST, "/", &[], Bytes::from_static(b"short")).await;
    assert_eq!(status, 200);
    let (status, _, _) = send_body(addr, "POST", HOST, "/", &[], Bytes::from(vec![b'x'; 17])).await;
    assert_eq!(status, 413, "Content-Length over the bound");
    let chunked = [("transfer-encoding", "chunked")];
    let (status, _, _) = send_body(
        addr,
        "POST",
        HOST,
        "/",
        &chunked,
        Bytes::from(vec![b'x'; 40]),
    )
    .await;
    assert_eq!(status, 413, "chunked body over the bound");
    let (status, _, body) = send_body(
        addr,
        "POST",
        HOST,
        "/",
        &chunked,
        Bytes::from_static(b"tiny"),
    )
    .await;
    assert_eq!(
        status, 200,
        "chunked body under the bound goes through: {body:?}"
    );
    let many: Vec<(String, String)> = (0..8)
        .map(|i| (format!("x-h{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(get_with(addr, HOST, "/", &many).await.status, 431);
}

#[tokio::test]
async fn basic_auth_with_sha_and_bcrypt_users() {
    let b = backend("b").await;
    let bcrypted = bcrypt::hash("open sesame", 4).unwrap();
    // {SHA} of "password" (htpasswd -s).
    let htpasswd = format!("# users\nalice:{{SHA}}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\nbob:{bcrypted}\n");
    let (_gw, addr) = start(vec![route(
        "private",
        "/",
        &b,
        vec![filter(
            "BasicAuth",
            "users",
            json!({"htpasswd": htpasswd, "realm": "staff", "forwardUsernameHeader": "x-user"}),
        )],
    )])
    .await;
    let basic = |creds: &str| format!("Basic {}", base64_encode(creds));
    let none = get(addr, HOST, "/").await;
    assert_eq!(none.status, 401);
    assert_eq!(header(&none, "www-authenticate"), "Basic realm=\"staff\"");
    let wrong = get_with(addr, HOST, "/", &[("authorization", &basic("alice:nope"))]).await;
    assert_eq!(wrong.status, 401);
    let alice = get_with(
        addr,
        HOST,
        "/",
        &[
            ("authorization", &basic("alice:password")),
            ("x-user", "forged"),
        ],
    )
    .await;
    assert_eq!(alice.status, 200);
    assert_eq!(alice.body["headers"]["x-user"], json!(["alice"]));
    for _ in 0..2 {
        // The second time the remembered digest answers, without bcrypt.
        let bob = get_with(
            addr,
            HOST,
            "/",
            &[("authorization", &basic("bob:open sesame"))],
        )
        .await;
        assert_eq!(bob.status, 200);
        assert_eq!(bob.body["headers"]["x-user"], json!(["bob"]));
    }
    let bob_wrong = get_with(addr, HOST, "/", &[("authorization", &basic("bob:open"))]).await;
    assert_eq!(bob_wrong.status, 401);
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn api_keys_from_header_query_and_cookie() {
    let b = backend("b").await;
    let settings = json!({
        "keys": [{"client": "team-a", "key": "key-a"}, {"client": "team-b", "key": "key-b"}],
        "extractFrom": [{"header": "x-api-key"}, {"query": "api_key"}, {"cookie": "apikey"}],
        "forwardClientIDHeader": "x-client-id",
        "sanitize": true,
    });
    let (_gw, addr) = start(vec![route(
        "api",
        "/",
        &b,
        vec![filter("APIKeyAuth", "keys", settings)],
    )])
    .await;
    assert_eq!(get(addr, HOST, "/").await.status, 401);
    assert_eq!(
        get_with(addr, HOST, "/", &[("x-api-key", "nope")])
            .await
            .status,
        401
    );
    let by_header = get_with(addr, HOST, "/", &[("x-api-key", "key-a")]).await;
    assert_eq!(by_header.status, 200);
    assert_eq!(by_header.body["headers"]["x-client-id"], json!(["team-a"]));
    assert!(
        by_header.body["headers"].get("x-api-key").is_none(),
        "sanitized"
    );
    let by_query = get(addr, HOST, "/x?a=1&api_key=key-b&z=2").await;
    assert_eq!(by_query.status, 200);
    assert_eq!(by_query.body["path"], json!("/x?a=1&z=2"));
    assert_eq!(by_query.body["headers"]["x-client-id"], json!(["team-b"]));
    let by_cookie = get_with(addr, HOST, "/", &[("cookie", "theme=dark; apikey=key-a")]).await;
    assert_eq!(by_cookie.status, 200);
    assert_eq!(by_cookie.body["headers"]["cookie"], json!(["theme=dark"]));
}

#[tokio::test]
async fn local_rate_limit_per_header_with_headers_and_state_kept_across_applies() {
    let b = backend("b").await;
    let limit = json!({"local": {"requests": 3, "unit": "Minute", "key": [{"header": "x-user"}]}});
    let routes = |limit: &serde_json::Value| {
        vec![route(
            "limited",
            "/",
            &b,
            vec![filter("RateLimit", "per-user", limit.clone())],
        )]
    };
    let (gw, addr) = start(routes(&limit)).await;
    let port = addr.port();
    for remaining in ["2", "1", "0"] {
        let r = get_with(addr, HOST, "/", &[("x-user", "a")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, "x-ratelimit-limit"), "3");
        assert_eq!(header(&r, "x-ratelimit-remaining"), remaining);
    }
    let limited = get_with(addr, HOST, "/", &[("x-user", "a")]).await;
    assert_eq!(limited.status, 429);
    let retry: u64 = header(&limited, "retry-after").parse().unwrap();
    assert!(
        (1..=20).contains(&retry),
        "one request refills in 20 s: {retry}"
    );
    assert_eq!(header(&limited, "x-ratelimit-remaining"), "0");
    assert_eq!(
        get_with(addr, HOST, "/", &[("x-user", "b")]).await.status,
        200,
        "other key"
    );

    // Applying the same settings again keeps the buckets.
    gw.apply(config(port, routes(&limit))).await.unwrap();
    assert_eq!(
        get_with(addr, HOST, "/", &[("x-user", "a")]).await.status,
        429
    );
    // Changed settings start afresh.
    let bigger =
        json!({"local": {"requests": 10, "unit": "Minute", "key": [{"header": "x-user"}]}});
    gw.apply(config(port, routes(&bigger))).await.unwrap();
    assert_eq!(
        get_with(addr, HOST, "/", &[("x-user", "a")]).await.status,
        200
    );
}

#[tokio::test]
async fn traffic_policy_runs_sections_in_order_and_bad_settings_fail_alone() {
    let b = backend("b").await;
    let policy = json!({
        "ipAccess": {"allow": ["127.0.0.0/8"]},
        "apiKeyAuth": {"keys": [{"client": "c", "key": "k"}]},
        "rateLimit": {"local": {"requests": 2, "unit": "Hour", "key": ["route"]}},
    });
    let (_gw, addr) = start(vec![
        route(
            "policy",
            "/p",
            &b,
            vec![filter("TrafficPolicy", "p", policy)],
        ),
        route(
            "broken",
            "/broken",
            &b,
            vec![filter(
                "TrafficPolicy",
                "bad",
                json!({"rateLimit": {"local": {"requests": 0, "unit": "Second"}}}),
            )],
        ),
        route("plain", "/plain", &b, vec![]),
    ])
    .await;
    // Unauthenticated requests are refused before the rate limit counts them.
    for _ in 0..5 {
        assert_eq!(get(addr, HOST, "/p").await.status, 401);
    }
    let key = [("x-api-key", "k")];
    assert_eq!(get_with(addr, HOST, "/p", &key).await.status, 200);
    assert_eq!(get_with(addr, HOST, "/p", &key).await.status, 200);
    assert_eq!(get_with(addr, HOST, "/p", &key).await.status, 429);
    // Invalid settings: that rule answers 500, the others serve.
    assert_eq!(get(addr, HOST, "/broken").await.status, 500);
    assert_eq!(get(addr, HOST, "/plain").await.status, 200);
}

mod jwt {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SECRET: &[u8] = b"secret-secret-secret-secret-secret";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs256(claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        encode(&header, &claims, &EncodingKey::from_secret(SECRET).unwrap()).unwrap()
    }

    fn bearer(token: &str) -> String {
        format!("Bearer {token}")
    }

    #[tokio::test]
    async fn inline_keys_check_signature_expiry_issuer_audience_and_copy_claims() {
        let b = backend("b").await;
        let jwks = json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET)}]});
        let settings = json!({"providers": [{
            "name": "corp",
            "issuer": "https://issuer.test",
            "audiences": ["api"],
            "jwks": {"inline": jwks.to_string()},
            "claimToHeaders": [{"claim": "sub", "header": "x-sub"}, {"claim": "org.tier", "header": "x-tier"}],
        }]});
        let (_gw, addr) = start(vec![route(
            "jwt",
            "/",
            &b,
            vec![filter("JWTAuth", "corp", settings)],
        )])
        .await;
        let good = hs256(
            json!({"sub": "u-1", "iss": "https://issuer.test", "aud": "api", "exp": now() + 600, "org": {"tier": 2}}),
        );

        let ok = get_with(
            addr,
            HOST,
            "/",
            &[("authorization", &bearer(&good)), ("x-sub", "forged")],
        )
        .await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.body["headers"]["x-sub"], json!(["u-1"]));
        assert_eq!(ok.body["headers"]["x-tier"], json!(["2"]));
        assert!(
            ok.body["headers"].get("authorization").is_none(),
            "the token is not forwarded"
        );

        let none = get(addr, HOST, "/").await;
        assert_eq!(none.status, 401);
        assert_eq!(header(&none, "www-authenticate"), "Bearer");
        let refused = |claims: serde_json::Value| hs256(claims);
        for (what, token) in [
            (
                "expired",
                refused(json!({"iss": "https://issuer.test", "aud": "api", "exp": now() - 3600})),
            ),
            (
                "other issuer",
                refused(json!({"iss": "https://evil.test", "aud": "api", "exp": now() + 600})),
            ),
            (
                "other audience",
                refused(json!({"iss": "https://issuer.test", "aud": "web", "exp": now() + 600})),
            ),
            (
                "not yet valid",
                refused(json!({"iss": "https://issuer.test", "aud": "api", "nbf": now() + 3600})),
            ),
            ("bad signature", format!("{}x", &good[..good.len() - 1])),
            ("garbage", "not.a.token".to_owned()),
        ] {
            let r = get_with(addr, HOST, "/", &[("authorization", &bearer(&token))]).await;
            assert_eq!(r.status, 401, "{what}");
            assert_eq!(
                header(&r, "www-authenticate"),
                "Bearer error=\"invalid_token\"",
                "{what}"
            );
        }
    }

    /// A JWKS server on loopback counting its fetches.
    async fn jwks_server(jwks: serde_json::Value) -> (TestBackend, Arc<AtomicUsize>) {
        let fetches = Arc::new(AtomicUsize::new(0));
        let counter = fetches.clone();
        let body = jwks.to_string();
        let server = serve(move |_req: http::Request<hyper::body::Incoming>| {
            counter.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                    Bytes::from(body),
                )))
            }
        })
        .await;
        (server, fetches)
    }

    #[tokio::test]
    async fn remote_keys_are_fetched_on_first_use_and_again_for_an_unknown_kid() {
        let b = backend("b").await;
        let key = rcgen::KeyPair::generate().unwrap();
        let point = key.public_key_raw();
        let (x, y) = (&point[1..33], &point[33..65]);
        let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec1", "alg": "ES256", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)}]});
        let (server, fetches) = jwks_server(jwks).await;
        let settings = json!({"providers": [{
            "name": "remote",
            "jwks": {"remote": {"uri": format!("http://{}/keys", server.addr), "cacheDurationSeconds": 3600}},
            "extractFrom": [{"query": "access_token"}],
            "forwardToken": true,
        }]});
        let (_gw, addr) = start(vec![route(
            "jwt",
            "/",
            &b,
            vec![filter("JWTAuth", "remote", settings)],
        )])
        .await;
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            0,
            "nothing is fetched before a request needs it"
        );
        let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let token = |kid: &str| {
            let mut h = Header::new(Algorithm::ES256);
            h.kid = Some(kid.into());
            encode(&h, &json!({"sub": "s", "exp": now() + 600}), &signing).unwrap()
        };
        let ok = get(addr, HOST, &format!("/p?access_token={}", token("ec1"))).await;
        assert_eq!(ok.status, 200);
        assert!(
            ok.body["path"].as_str().unwrap().contains("access_token="),
            "forwardToken keeps it"
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // A second request uses the cached keys.
        assert_eq!(
            get(addr, HOST, &format!("/p?access_token={}", token("ec1")))
                .await
                .status,
            200
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // An unknown kid is refused and asks for an early fetch.
        assert_eq!(
            get(addr, HOST, &format!("/p?access_token={}", token("rotated")))
                .await
                .status,
            401
        );
        let mut refetched = false;
        for _ in 0..100 {
            if fetches.load(Ordering::SeqCst) >= 2 {
                refetched = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(refetched, "an unknown kid triggers a fetch");
    }

    #[tokio::test]
    async fn unreachable_jwks_answers_401_and_optional_lets_tokenless_requests_through() {
        let b = backend("b").await;
        let closed = free_port();
        let settings = json!({
            "optional": true,
            "providers": [{"name": "down", "jwks": {"remote": {"uri": format!("http://127.0.0.1:{closed}/keys"), "timeoutMs": 300}}}],
        });
        let (_gw, addr) = start(vec![route(
            "jwt",
            "/",
            &b,
            vec![filter("JWTAuth", "down", settings)],
        )])
        .await;
        assert_eq!(
            get(addr, HOST, "/").await.status,
            200,
            "optional: no token passes"
        );
        let auth = bearer(&hs256(json!({"sub": "x"})));
        let (status, _, body) = send_body(
            addr,
            "GET",
            HOST,
            "/",
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(body, "jwks unavailable\n");
    }
}

mod compression {
    use super::*;

    /// A backend answering `/text` with 100 KB of text (with an ETag), `/small` with 100 bytes,
    /// `/image` with 100 KB of `image/png`, `/zipped` with a gzip-encoded body.
    async fn text_backend() -> TestBackend {
        serve(|req: http::Request<hyper::body::Incoming>| async move {
            let (ct, body, extra): (&str, Vec<u8>, Option<(&str, &str)>) = match req.uri().path() {
                "/text" => (
                    "text/plain; charset=utf-8",
                    b"hello compression ".repeat(6000),
                    Some(("etag", "\"v1\"")),
                ),
                "/small" => ("text/plain", vec![b'a'; 100], None),
                "/image" => ("image/png", vec![7u8; 100_000], None),
                _ => (
                    "text/plain",
                    b"already".repeat(500),
                    Some(("content-encoding", "gzip")),
                ),
            };
            let mut resp = http::Response::new(http_body_util::Full::new(Bytes::from(body)));
            resp.headers_mut()
                .insert("content-type", ct.parse().unwrap());
            if let Some((n, v)) = extra {
                resp.headers_mut().insert(n, v.parse().unwrap());
            }
            Ok::<_, std::convert::Infallible>(resp)
        })
        .await
    }

    fn decode(encoding: &str, body: &[u8]) -> Vec<u8> {
        match encoding {
            "gzip" => {
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
                    .unwrap();
                out
            }
            "br" => {
                let mut out = Vec::new();
                brotli::BrotliDecompress(&mut &body[..], &mut out).unwrap();
                out
            }
            "zstd" => zstd::decode_all(body).unwrap(),
            other => panic!("unexpected encoding {other}"),
        }
    }

    #[tokio::test]
    async fn negotiates_compresses_and_leaves_what_it_should_alone() {
        let b = text_backend().await;
        let (_gw, addr) = start(vec![route(
            "c",
            "/",
            &b,
            vec![filter("Compression", "c", json!({}))],
        )])
        .await;
        let expected = b"hello compression ".repeat(6000);
        for (accept, encoding) in [
            ("gzip", "gzip"),
            ("gzip, br", "br"),
            ("gzip, br, zstd", "zstd"),
            ("br;q=0, gzip", "gzip"),
        ] {
            let (status, headers, body) = send_body(
                addr,
                "GET",
                HOST,
                "/text",
                &[("accept-encoding", accept)],
                Bytes::new(),
            )
            .await;
            assert_eq!(status, 200);
            assert_eq!(headers["content-encoding"], encoding, "{accept}");
            assert_eq!(headers["vary"], "accept-encoding");
            assert_eq!(headers["etag"], "W/\"v1\"");
            assert!(headers.get("content-length").is_none());
            assert!(
                body.len() < expected.len() / 10,
                "{encoding}: {} bytes",
                body.len()
            );
            let decoded = decode(encoding, &body);
            assert!(
                decoded == expected,
                "{encoding}: decoded {} bytes, sent {}",
                decoded.len(),
                expected.len()
            );
        }
        for (path, accept, why) in [
            ("/text", "identity", "not accepted"),
            ("/small", "gzip", "below minBytes"),
            ("/image", "gzip", "not a listed media type"),
            ("/zipped", "br", "already encoded"),
        ] {
            let (status, headers, _) = send_body(
                addr,
                "GET",
                HOST,
                path,
                &[("accept-encoding", accept)],
                Bytes::new(),
            )
            .await;
            assert_eq!(status, 200);
            let ce = headers.get("content-encoding").map(|v| v.to_str().unwrap());
            assert!(
                ce.is_none() || ce == Some("gzip") && path == "/zipped",
                "{why}: {ce:?}"
            );
        }
    }

    #[tokio::test]
    async fn gateway_made_responses_are_compressed_whole() {
        let b = backend("b").await;
        let text = "direct ".repeat(1000);
        let direct = Filter::ExtensionRef(
            ExtensionRef::new(gateway_core::filter::DIRECT_RESPONSE_GROUP, gateway_core::filter::DIRECT_RESPONSE_KIND, "d")
                .with_config(json!({"status": 200, "headers": [{"name": "content-type", "value": "text/html"}], "body": text})),
        );
        let (_gw, addr) = start(vec![route(
            "d",
            "/",
            &b,
            vec![
                filter("Compression", "c", json!({"algorithms": ["gzip"]})),
                direct,
            ],
        )])
        .await;
        let (status, headers, body) = send_body(
            addr,
            "GET",
            HOST,
            "/",
            &[("accept-encoding", "gzip")],
            Bytes::new(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["content-length"], body.len().to_string().as_str());
        assert!(decode("gzip", &body) == text.as_bytes());
    }
}

mod global_rate_limit {
    use super::*;
    use std::process::{Child, Command, Stdio};

    /// A `redis-server` on a free loopback port, stopped on drop. `.ci/run` installs it.
    struct Redis {
        child: Child,
        port: u16,
    }

    impl Drop for Redis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    async fn redis() -> Redis {
        let port = free_port();
        let redis = Redis {
            child: Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (.ci/run installs it)"),
            port,
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("redis-server did not start on port {port}");
    }

    fn limited(b: &TestBackend, redis_port: u16, failure: &str) -> Vec<Route> {
        let limit = json!({"global": {
            "requests": 3, "unit": "Minute", "key": [{"header": "x-user"}],
            "redis": {"url": format!("redis://127.0.0.1:{redis_port}")},
            "failureMode": failure, "timeoutMs": 500,
        }});
        vec![route(
            "limited",
            "/",
            b,
            vec![filter("RateLimit", "shared", limit)],
        )]
    }

    #[tokio::test]
    async fn replicas_share_one_budget_through_redis() {
        let redis = redis().await;
        let b = backend("b").await;
        // Counters are per minute window: start well inside one, so all four requests share it.
        let into_minute = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 60_000;
        if into_minute > 50_000 {
            tokio::time::sleep(std::time::Duration::from_millis(
                60_500 - into_minute as u64,
            ))
            .await;
        }
        // Two gateways: two replicas with the same policy.
        let (_a, a) = start(limited(&b, redis.port, "FailOpen")).await;
        let (_b, bb) = start(limited(&b, redis.port, "FailOpen")).await;
        let user = [("x-user", "u1")];
        let first = get_with(a, HOST, "/", &user).await;
        assert_eq!(first.status, 200);
        assert_eq!(header(&first, "x-ratelimit-limit"), "3");
        assert_eq!(header(&first, "x-ratelimit-remaining"), "2");
        assert_eq!(get_with(bb, HOST, "/", &user).await.status, 200);
        assert_eq!(get_with(a, HOST, "/", &user).await.status, 200);
        let over = get_with(bb, HOST, "/", &user).await;
        assert_eq!(over.status, 429, "the fourth request across both replicas");
        let retry: u64 = header(&over, "retry-after").parse().unwrap();
        assert!(
            (1..=60).contains(&retry),
            "within the minute window: {retry}"
        );
        assert_eq!(
            get_with(a, HOST, "/", &[("x-user", "u2")]).await.status,
            200,
            "other key"
        );
    }

    #[tokio::test]
    async fn redis_down_fails_open_or_closed_as_configured() {
        let b = backend("b").await;
        let closed = free_port();
        let (_o, open) = start(limited(&b, closed, "FailOpen")).await;
        let (_c, shut) = start(limited(&b, closed, "FailClosed")).await;
        for _ in 0..4 {
            let r = get_with(open, HOST, "/", &[("x-user", "u")]).await;
            assert_eq!(r.status, 200);
            assert!(
                r.headers.get("x-ratelimit-limit").is_none(),
                "no numbers without Redis"
            );
        }
        assert_eq!(
            get_with(shut, HOST, "/", &[("x-user", "u")]).await.status,
            503
        );
    }
}

mod transformation {
    use super::*;
    use http_body_util::BodyExt;

    /// A backend answering with the request body it got (JSON), and `x-got-user` from the
    /// request's `x-user`.
    async fn echo_body() -> TestBackend {
        serve(|req: http::Request<hyper::body::Incoming>| async move {
            let user = req.headers().get("x-user").cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut resp = http::Response::new(http_body_util::Full::new(body));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            if let Some(u) = user {
                resp.headers_mut().insert("x-got-user", u);
            }
            Ok::<_, std::convert::Infallible>(resp)
        })
        .await
    }

    #[tokio::test]
    async fn request_and_response_headers_and_json_bodies() {
        let b = echo_body().await;
        let settings = json!({
            "request": {
                "set": [{"name": "x-user", "value": "{{ header('x-id') | upper }}-{{ query.team }}"}],
                "remove": ["x-secret"],
                "body": {"parseAs": "AsJson", "value": "{\"model\": \"{{ body.model }}-v2\", \"n\": {{ body.n + 1 }}}"}
            },
            "response": {
                "set": [{"name": "x-status", "value": "{{ status }} for {{ request_header('x-id') }}"}],
                "body": {"parseAs": "AsJson", "value": "{\"wrapped\": {{ body | tojson }}, \"path\": \"{{ path }}\"}"}
            }
        });
        let (_gw, addr) = start(vec![route(
            "t",
            "/",
            &b,
            vec![filter("Transformation", "t", settings)],
        )])
        .await;
        let (status, headers, body) = send_body(
            addr,
            "POST",
            HOST,
            "/chat?team=blue",
            &[
                ("x-id", "ab"),
                ("x-secret", "s"),
                ("content-type", "application/json"),
            ],
            Bytes::from_static(br#"{"model": "m1", "n": 41}"#),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-got-user"], "AB-blue");
        assert_eq!(headers["x-status"], "200 for ab");
        let got: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            got,
            json!({"wrapped": {"model": "m1-v2", "n": 42}, "path": "/chat"})
        );

        // A body that is not JSON under AsJson: 400, nothing sent upstream.
        let (status, _, _) = send_body(
            addr,
            "POST",
            HOST,
            "/chat",
            &[],
            Bytes::from_static(b"not json"),
        )
        .await;
        assert_eq!(status, 400);
    }
}

mod ai_prompt {
    use super::*;
    use http_body_util::BodyExt;

    /// A backend answering with the request body it got.
    async fn echo_body() -> TestBackend {
        serve(|req: http::Request<hyper::body::Incoming>| async move {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(body)))
        })
        .await
    }

    async fn post(
        addr: SocketAddr,
        path: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, bytes) = send_body(
            addr,
            "POST",
            HOST,
            path,
            &[("content-type", "application/json")],
            Bytes::from(body.to_string()),
        )
        .await;
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    #[tokio::test]
    async fn system_prompt_added_and_guard_rejects_or_masks() {
        let b = echo_body().await;
        let enrich = json!({"promptEnrichment": {"prepend": [{"role": "system", "content": "You are terse."}]},
            "promptGuard": {"request": {"regex": ["(?i)secret project \\w+"], "customResponse": {"statusCode": 422, "message": "no"}}}});
        let mask =
            json!({"promptGuard": {"request": {"builtins": ["SSN", "Email"], "action": "Mask"}}});
        let (_gw, addr) = start(vec![
            route(
                "enrich",
                "/v1/chat",
                &b,
                vec![filter("AIPrompt", "enrich", enrich)],
            ),
            route("mask", "/mask", &b, vec![filter("AIPrompt", "mask", mask)]),
        ])
        .await;
        let chat =
            |text: &str| json!({"model": "m", "messages": [{"role": "user", "content": text}]});

        let (status, got) = post(addr, "/v1/chat", chat("hello")).await;
        assert_eq!(status, 200);
        assert_eq!(
            got["messages"][0],
            json!({"role": "system", "content": "You are terse."})
        );
        assert_eq!(got["messages"][1]["content"], "hello");
        assert_eq!(got["model"], "m");

        let (status, err) = post(
            addr,
            "/v1/chat",
            chat("tell me about Secret Project Apollo"),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(err["error"]["message"], "no");

        let parts = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "ssn 123-45-6789, mail a@b.org"}]}]});
        let (status, got) = post(addr, "/mask", parts).await;
        assert_eq!(status, 200);
        assert_eq!(
            got["messages"][0]["content"][0]["text"],
            "ssn ****, mail ****"
        );

        let (status, _, _) = send_body(
            addr,
            "POST",
            HOST,
            "/mask",
            &[],
            Bytes::from_static(b"[1, 2]"),
        )
        .await;
        assert_eq!(status, 400, "not a JSON object");
    }
}

/// Two rules whose attached policies merge a Gateway-wide `rateLimit` with different route-level
/// sections: the rate-limit section is one state per object it came from (`origins`), so both
/// rules spend one budget; a route's own `rateLimit` is a budget of its own.
#[tokio::test]
async fn merged_policy_sections_keep_one_state_per_origin() {
    let b = backend("b").await;
    let shared = json!({"local": {"requests": 2, "unit": "Minute"}});
    let merged = |name: &str, origins: &[(&str, &str)], settings: serde_json::Value| {
        let mut r =
            ExtensionRef::new(gateway_filters::GROUP, "TrafficPolicy", name).with_config(settings);
        r.origins = origins
            .iter()
            .map(|(f, o)| (f.to_string(), o.to_string()))
            .collect();
        Filter::ExtensionRef(r)
    };
    let one = merged(
        "apps/gw+apps/one",
        &[("rateLimit", "apps/gw"), ("requestLimits", "apps/one")],
        json!({"rateLimit": shared, "requestLimits": {"maxHeaders": 50}}),
    );
    let two = merged(
        "apps/gw+apps/two",
        &[("rateLimit", "apps/gw"), ("requestLimits", "apps/two")],
        json!({"rateLimit": shared, "requestLimits": {"maxHeaders": 60}}),
    );
    let own = merged(
        "apps/gw+apps/own",
        &[("rateLimit", "apps/own"), ("requestLimits", "apps/gw")],
        json!({"rateLimit": shared, "requestLimits": {"maxHeaders": 50}}),
    );
    let (_gw, addr) = start(vec![
        route("one", "/one", &b, vec![one]),
        route("two", "/two", &b, vec![two]),
        route("own", "/own", &b, vec![own]),
    ])
    .await;
    assert_eq!(get_with(addr, HOST, "/one", &[]).await.status, 200);
    assert_eq!(get_with(addr, HOST, "/two", &[]).await.status, 200);
    assert_eq!(
        get_with(addr, HOST, "/one", &[]).await.status,
        429,
        "the Gateway's budget of 2 is spent by both rules"
    );
    assert_eq!(get_with(addr, HOST, "/two", &[]).await.status, 429);
    assert_eq!(
        get_with(addr, HOST, "/own", &[]).await.status,
        200,
        "a section from another object has its own budget"
    );
}
