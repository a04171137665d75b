//! Translation of YAML fixtures: configuration and the exact status conditions.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gateway_core::config::*;
use gateway_k8s::{Resources, SUPPORTED_FEATURES, TranslateOptions, Translator};

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn pool_translator(pool: &str) -> Translator {
    let mut options = TranslateOptions::new(CONTROLLER);
    options.address_pool = Some(pool.parse().expect("pool"));
    Translator::new(options)
}

#[test]
fn basic_gateway_route_and_config() {
    let resources = fixture("basic.yaml");
    let mut options = TranslateOptions::new(CONTROLLER);
    options.port_map = BTreeMap::from([(80, 8080)]);
    let mut translator = Translator::new(options);
    let t = translator.translate(&resources);

    // GatewayClass.
    let class = t.status.gateway_class("ours").expect("class status");
    let conditions = class.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_eq!(
        condition(conditions, "Accepted").observed_generation,
        Some(3)
    );
    let features: Vec<&str> = class
        .supported_features
        .iter()
        .flatten()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(features, SUPPORTED_FEATURES);
    assert!(t.status.gateway_class("theirs").is_none());
    assert!(t.status.gateway("shop", "foreign").is_none());

    // Gateway.
    let gw = t.status.gateway("shop", "web").expect("gateway status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "Programmed", "True", "Programmed");
    assert!(conditions.iter().all(|c| c.observed_generation == Some(2)));
    let addresses = gw.addresses.as_deref().unwrap_or_default();
    assert_eq!(addresses.len(), 1);
    assert_eq!(addresses[0].r#type.as_deref(), Some("IPAddress"));
    assert_eq!(addresses[0].value, "127.0.0.1");
    let listeners = gw.listeners.as_deref().unwrap_or_default();
    assert_eq!(listeners.len(), 1);
    assert_eq!(listeners[0].name, "http");
    assert_eq!(listeners[0].attached_routes, 1);
    assert_condition(&listeners[0].conditions, "Accepted", "True", "Accepted");
    assert_condition(&listeners[0].conditions, "Programmed", "True", "Programmed");
    assert_condition(
        &listeners[0].conditions,
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    assert_condition(
        &listeners[0].conditions,
        "Conflicted",
        "False",
        "NoConflicts",
    );
    let kinds = listeners[0].supported_kinds.as_deref().unwrap_or_default();
    assert_eq!(kinds.len(), 1);
    assert_eq!(kinds[0].group.as_deref(), Some("gateway.networking.k8s.io"));
    assert_eq!(kinds[0].kind, "HTTPRoute");

    // HTTPRoute: only the parentRef to our Gateway gets an entry.
    let route = t.status.http_route("shop", "store").expect("route status");
    assert_eq!(route.parents.len(), 1);
    let parent = &route.parents[0];
    assert_eq!(parent.parent_ref.name, "web");
    assert_eq!(parent.controller_name, CONTROLLER);
    assert_condition(&parent.conditions, "Accepted", "True", "Accepted");
    assert_condition(&parent.conditions, "ResolvedRefs", "True", "ResolvedRefs");
    assert!(
        parent
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(5))
    );

    // Config.
    assert_eq!(t.config.binds.len(), 1);
    let bind = &t.config.binds[0];
    assert_eq!(bind.address, addr("127.0.0.1:8080"));
    assert_eq!(bind.protocol, Protocol::Http);
    assert_eq!(bind.listeners.len(), 1);
    let listener = &bind.listeners[0];
    assert_eq!(listener.name, "shop/web/http");
    assert_eq!(listener.port, 80);
    assert_eq!(listener.hostname, None);
    assert!(listener.tls.is_none());
    assert_eq!(listener.routes.len(), 1);
    let r = &listener.routes[0];
    assert_eq!((r.namespace.as_str(), r.name.as_str()), ("shop", "store"));
    assert_eq!(r.hostnames, vec!["shop.example.com".to_string()]);
    assert_eq!(r.created, 1_714_557_600);
    assert_eq!(r.rules.len(), 3);

    let rule = &r.rules[0];
    assert_eq!(rule.name.as_deref(), Some("main"));
    assert_eq!(
        rule.matches,
        vec![
            RouteMatch {
                path: PathMatch::Prefix("/api".into()),
                headers: vec![
                    HeaderMatch {
                        name: "x-version".into(),
                        value: StringMatch::Exact("2".into())
                    },
                    HeaderMatch {
                        name: "x-flavour".into(),
                        value: StringMatch::RegularExpression("choc.*".into())
                    },
                ],
                query_params: vec![QueryParamMatch {
                    name: "q".into(),
                    value: StringMatch::Exact("one".into())
                }],
                method: Some("POST".into()),
            },
            RouteMatch {
                path: PathMatch::Prefix("/prefix".into()),
                ..RouteMatch::default()
            },
            RouteMatch::default(),
        ]
    );
    assert_eq!(rule.filters.len(), 5);
    assert_eq!(
        rule.filters[0],
        Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![("x-set".into(), "a".into())],
            add: vec![("x-add".into(), "b".into())],
            remove: vec!["x-remove".into()],
        })
    );
    assert_eq!(
        rule.filters[1],
        Filter::ResponseHeaderModifier(HeaderModifier {
            add: vec![("x-resp".into(), "c".into())],
            ..HeaderModifier::default()
        })
    );
    assert_eq!(
        rule.filters[2],
        Filter::UrlRewrite(UrlRewrite {
            hostname: Some("backend.internal".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
        })
    );
    assert_eq!(
        rule.filters[3],
        Filter::ExtensionRef(
            ExtensionRef::new("filters.example.net", "RateLimit", "slow")
                .with_config(serde_json::json!({"requestsPerSecond": 5}))
        )
    );
    assert_eq!(
        rule.filters[4],
        Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef {
                name: "shop/store:8080".into(),
                weight: 1,
                target: BackendTarget::Endpoints(Backend {
                    endpoints: vec![addr("127.0.0.11:3000"), addr("127.0.0.12:3000")],
                    protocol: BackendProtocol::Http1,
                    policy: Default::default(),
                    tls: None,
                }),
                filters: Vec::new(),
            },
            fraction: None,
        }))
    );
    assert_eq!(
        rule.timeouts,
        Timeouts {
            request: Some(Duration::from_secs(3720)),
            backend_request: Some(Duration::from_millis(500)),
        }
    );
    assert_eq!(rule.backends.len(), 2);
    let web = &rule.backends[0];
    assert_eq!(web.name, "shop/store:8080");
    assert_eq!(web.weight, 3);
    assert_eq!(
        web.target,
        BackendTarget::Endpoints(Backend {
            endpoints: vec![addr("127.0.0.11:3000"), addr("127.0.0.12:3000")],
            protocol: BackendProtocol::Http1,
            policy: Default::default(),
            tls: None,
        })
    );
    assert_eq!(
        web.filters,
        vec![Filter::RequestHeaderModifier(HeaderModifier {
            set: vec![("x-backend".into(), "web".into())],
            ..HeaderModifier::default()
        })]
    );
    let grpc = &rule.backends[1];
    assert_eq!(grpc.weight, 1);
    assert_eq!(
        grpc.target,
        BackendTarget::Endpoints(Backend {
            endpoints: vec![addr("127.0.0.11:3001"), addr("127.0.0.12:3001")],
            protocol: BackendProtocol::H2c,
            policy: Default::default(),
            tls: None,
        })
    );

    let rule = &r.rules[1];
    assert_eq!(
        rule.matches[0].path,
        PathMatch::RegularExpression("/re/[0-9]+".into())
    );
    assert_eq!(
        rule.filters,
        vec![Filter::RequestRedirect(RequestRedirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathModifier::ReplaceFullPath("/moved".into())),
            port: Some(8443),
            status_code: 302,
        })]
    );
    assert_eq!(rule.timeouts, Timeouts::default());
    assert!(rule.backends.is_empty());

    let rule = &r.rules[2];
    assert!(rule.matches.is_empty());
    assert_eq!(
        rule.filters,
        vec![Filter::RequestRedirect(RequestRedirect {
            hostname: Some("example.org".into()),
            status_code: 301,
            ..RequestRedirect::default()
        })]
    );
}

#[test]
fn status_yaml_echoes_every_resource_and_parses_back() {
    let resources = fixture("basic.yaml");
    let t = translator().translate(&resources);
    assert_eq!(t.status.documents().len(), resources.len());
    let yaml = t.status.to_yaml();
    let again = Resources::parse_yaml(&yaml, "status.yaml");
    assert!(again.diagnostics.is_empty(), "{:?}", again.diagnostics);
    assert_eq!(again.len(), resources.len());
    let gw = &again.gateways[&gateway_k8s::ObjectKey::new("shop", "web")];
    let status = gw.object.status.as_ref().expect("status echoed");
    assert_eq!(
        status.addresses.as_deref().unwrap_or_default()[0].value,
        "127.0.0.1"
    );
    let foreign = &again.gateways[&gateway_k8s::ObjectKey::new("shop", "foreign")];
    assert!(foreign.object.status.is_none());
    let json: serde_json::Value = serde_json::from_str(&t.status.to_json()).expect("json");
    assert_eq!(
        json["items"].as_array().map(Vec::len),
        Some(resources.len())
    );
}

#[test]
fn listener_protocols_kinds_and_conflicts() {
    let resources = fixture("listeners.yaml");
    let t = pool_translator("127.0.5.0/24").translate(&resources);

    let gw = t
        .status
        .gateway("infra", "mixed-protocols")
        .expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "True", "ListenersNotValid");
    assert_condition(conditions, "Programmed", "True", "Programmed");
    assert!(conditions.iter().all(|c| c.observed_generation == Some(4)));
    let ls = gw.listeners.as_deref().unwrap_or_default();
    assert_condition(&ls[0].conditions, "Accepted", "True", "Accepted");
    assert_condition(
        &ls[1].conditions,
        "Accepted",
        "False",
        "UnsupportedProtocol",
    );
    assert_condition(&ls[1].conditions, "Programmed", "False", "Invalid");
    assert_eq!(ls[1].supported_kinds.as_deref().map(<[_]>::len), Some(0));
    assert_eq!(
        gw.addresses.as_deref().unwrap_or_default()[0].value,
        "127.0.5.3"
    );

    let gw = t
        .status
        .gateway("infra", "only-unsupported")
        .expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "False", "ListenersNotValid");
    assert_condition(conditions, "Programmed", "False", "Invalid");

    let gw = t.status.gateway("infra", "bogus-kinds").expect("status");
    let ls = gw.listeners.as_deref().unwrap_or_default();
    assert_condition(
        &ls[0].conditions,
        "ResolvedRefs",
        "False",
        "InvalidRouteKinds",
    );
    assert_condition(&ls[0].conditions, "Programmed", "False", "Invalid");
    assert_eq!(ls[0].supported_kinds.as_deref().map(<[_]>::len), Some(0));
    assert_condition(
        &ls[1].conditions,
        "ResolvedRefs",
        "False",
        "InvalidRouteKinds",
    );
    assert_condition(&ls[1].conditions, "Programmed", "True", "Programmed");
    let kinds = ls[1].supported_kinds.as_deref().unwrap_or_default();
    assert_eq!(
        kinds.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>(),
        vec!["HTTPRoute"]
    );

    let gw = t.status.gateway("infra", "conflicts").expect("status");
    let ls = gw.listeners.as_deref().unwrap_or_default();
    for (i, reason) in [
        (0, "ProtocolConflict"),
        (1, "ProtocolConflict"),
        (2, "HostnameConflict"),
        (3, "HostnameConflict"),
    ] {
        assert_condition(&ls[i].conditions, "Conflicted", "True", reason);
        assert_condition(&ls[i].conditions, "Programmed", "False", "Invalid");
    }
    assert_condition(&ls[4].conditions, "Conflicted", "False", "NoConflicts");
    assert_condition(&ls[4].conditions, "Programmed", "True", "Programmed");

    let names: Vec<&str> = t
        .config
        .binds
        .iter()
        .flat_map(|b| b.listeners.iter().map(|l| l.name.as_str()))
        .collect();
    assert!(names.contains(&"infra/mixed-protocols/http"));
    assert!(names.contains(&"infra/conflicts/three"));
    assert!(names.contains(&"infra/bogus-kinds/some-bogus"));
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with("/udp") || n.ends_with("/one") || n.ends_with("/plain"))
    );
    let bind = t
        .config
        .binds
        .iter()
        .find(|b| b.address == addr("127.0.5.3:80"))
        .expect("bind");
    assert_eq!(bind.listeners.len(), 1);
}

fn tls_resources() -> (Resources, String) {
    let (cert, key) = certificate(&["secure.example"]);
    let text = fixture_text("tls.yaml")
        .replace("__CERT__", &serde_json::to_string(&cert).expect("json"))
        .replace("__KEY__", &serde_json::to_string(&key).expect("json"));
    let resources = Resources::parse_yaml(&text, "tls.yaml");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    (resources, cert)
}

#[test]
fn https_listener_certificate_references() {
    let (resources, cert) = tls_resources();
    let t = translator().translate(&resources);

    let listener_conditions = |name: &str| {
        let gw = t
            .status
            .gateway("infra", name)
            .unwrap_or_else(|| panic!("status of {name}"));
        gw.listeners.clone().unwrap_or_default().remove(0)
    };
    for name in ["tls-ok", "tls-cross-granted"] {
        let l = listener_conditions(name);
        assert_condition(&l.conditions, "ResolvedRefs", "True", "ResolvedRefs");
        assert_condition(&l.conditions, "Programmed", "True", "Programmed");
    }
    for (name, reason) in [
        ("tls-missing", "InvalidCertificateRef"),
        ("tls-wrong-group", "InvalidCertificateRef"),
        ("tls-wrong-kind", "InvalidCertificateRef"),
        ("tls-malformed", "InvalidCertificateRef"),
        ("tls-cross-ungranted", "RefNotPermitted"),
    ] {
        let l = listener_conditions(name);
        assert_condition(&l.conditions, "Accepted", "True", "Accepted");
        assert_condition(&l.conditions, "ResolvedRefs", "False", reason);
        assert_condition(&l.conditions, "Programmed", "False", "Invalid");
        let gw = t.status.gateway("infra", name).expect("status");
        let conditions = gw.conditions.as_deref().unwrap_or_default();
        assert_condition(conditions, "Accepted", "True", "Accepted");
        assert_condition(conditions, "Programmed", "False", "Invalid");
    }

    // A route still attaches to an accepted listener whose certificate is broken.
    assert_eq!(listener_conditions("tls-missing").attached_routes, 1);
    let route = t
        .status
        .http_route("infra", "on-broken-listener")
        .expect("route status");
    assert_condition(&route.parents[0].conditions, "Accepted", "True", "Accepted");
    assert_condition(
        &route.parents[0].conditions,
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    );

    // Both valid HTTPS Gateways share one bind on the default address.
    assert_eq!(t.config.binds.len(), 1);
    let bind = &t.config.binds[0];
    assert_eq!(bind.address, addr("127.0.0.1:443"));
    assert_eq!(bind.protocol, Protocol::Https);
    let names: Vec<&str> = bind.listeners.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(
        names,
        vec!["infra/tls-cross-granted/https", "infra/tls-ok/https"]
    );
    let tls = bind.listeners[1].tls.as_ref().expect("tls");
    assert_eq!(tls.certificates.len(), 1);
    assert_eq!(tls.certificates[0].cert_pem, cert);
    assert_eq!(
        bind.listeners[1].hostname.as_deref(),
        Some("secure.example")
    );
}

#[test]
fn route_parent_references() {
    let resources = fixture("route-parents.yaml");
    let t = pool_translator("127.0.6.0/24").translate(&resources);

    let route = t
        .status
        .http_route("team-a", "cross-namespace")
        .expect("status");
    assert_eq!(route.parents.len(), 1);
    assert_condition(
        &route.parents[0].conditions,
        "Accepted",
        "False",
        "NotAllowedByListeners",
    );
    let same_only = t.status.gateway("infra", "same-only").expect("status");
    assert_eq!(
        same_only.listeners.as_deref().unwrap_or_default()[0].attached_routes,
        0
    );

    let route = t.status.http_route("team-a", "selected").expect("status");
    let reasons: Vec<(&str, &str)> = route
        .parents
        .iter()
        .map(|p| {
            let c = condition(&p.conditions, "Accepted");
            (c.status.as_str(), c.reason.as_str())
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("True", "Accepted"),
            ("False", "NotAllowedByListeners"),
            ("False", "NoMatchingParent"),
            ("False", "NoMatchingParent"),
            ("False", "NoMatchingParent"),
            ("False", "NotAllowedByListeners"),
        ]
    );
    assert_eq!(route.parents[4].parent_ref.port, Some(8080));
    assert_eq!(
        route.parents[4].parent_ref.section_name.as_deref(),
        Some("backends")
    );

    let route = t.status.http_route("team-b", "hostnames").expect("status");
    assert_eq!(route.parents.len(), 2, "the Service parentRef is not ours");
    assert_condition(&route.parents[0].conditions, "Accepted", "True", "Accepted");
    assert_condition(
        &route.parents[1].conditions,
        "Accepted",
        "False",
        "NoMatchingListenerHostname",
    );

    let gw = t.status.gateway("infra", "selective").expect("status");
    let attached: Vec<(&str, i32)> = gw
        .listeners
        .iter()
        .flatten()
        .map(|l| (l.name.as_str(), l.attached_routes))
        .collect();
    assert_eq!(
        attached,
        vec![
            ("backends", 1),
            ("by-name", 1),
            ("everyone", 0),
            ("no-http-routes", 0)
        ]
    );

    let by_name = t
        .config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.name == "infra/selective/by-name")
        .expect("listener");
    assert_eq!(by_name.routes.len(), 1);
    assert_eq!(by_name.routes[0].name, "hostnames");
}

#[test]
fn route_backend_references_and_invalid_rules() {
    let resources = fixture("route-backends.yaml");
    let t = translator().translate(&resources);

    let resolved = |name: &str| {
        let route = t
            .status
            .http_route("apps", name)
            .unwrap_or_else(|| panic!("status of {name}"));
        let c = condition(&route.parents[0].conditions, "ResolvedRefs").clone();
        (c.status, c.reason)
    };
    assert_eq!(
        resolved("good"),
        ("True".to_string(), "ResolvedRefs".to_string())
    );
    assert_eq!(
        resolved("not-found"),
        ("False".to_string(), "BackendNotFound".to_string())
    );
    assert_eq!(
        resolved("not-permitted"),
        ("False".to_string(), "RefNotPermitted".to_string())
    );
    assert_eq!(
        resolved("invalid-kind"),
        ("False".to_string(), "InvalidKind".to_string())
    );

    // Some rules invalid: the valid ones are served, the route stays accepted.
    let bad = t.status.http_route("apps", "bad-regex").expect("status");
    assert_condition(&bad.parents[0].conditions, "Accepted", "True", "Accepted");
    assert_condition(
        &bad.parents[0].conditions,
        "PartiallyInvalid",
        "True",
        "UnsupportedValue",
    );
    assert!(
        condition(&bad.parents[0].conditions, "PartiallyInvalid")
            .message
            .starts_with("Dropped Rule 0: ")
    );
    assert_eq!(t.diagnostics.len(), 1);
    assert!(t.diagnostics[0].message.contains("bad-regex"));

    let listener = &t.config.binds[0].listeners[0];
    let route = |name: &str| {
        listener
            .routes
            .iter()
            .find(|r| r.name == name)
            .expect("route")
    };
    let good = route("good");
    let backends = &good.rules[0].backends;
    assert_eq!(
        backends[0].target,
        BackendTarget::Endpoints(Backend {
            endpoints: vec![addr("127.0.0.21:8080")],
            protocol: BackendProtocol::Http1,
            policy: Default::default(),
            tls: None,
        })
    );
    assert_eq!(backends[1].weight, 0);
    assert_eq!(backends[1].name, "other/remote-granted:8080");
    for name in ["not-found", "not-permitted", "invalid-kind"] {
        assert!(matches!(
            route(name).rules[0].backends[0].target,
            BackendTarget::Unresolved { .. }
        ));
    }
    let bad = route("bad-regex");
    assert_eq!(bad.rules.len(), 1);
    assert_eq!(
        bad.rules[0].matches[0].path,
        PathMatch::Prefix("/fine".into())
    );
}

const ADDRESS_GATEWAYS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: example.net/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: a, namespace: n, creationTimestamp: "2024-01-01T00:00:01Z"}
spec: {gatewayClassName: ours, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: b, namespace: n, creationTimestamp: "2024-01-01T00:00:02Z"}
spec: {gatewayClassName: ours, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: static, namespace: n}
spec:
  gatewayClassName: ours
  addresses: [{type: IPAddress, value: 127.0.7.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: hostname-address, namespace: n}
spec:
  gatewayClassName: ours
  addresses: [{type: Hostname, value: gw.example}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bad-address, namespace: n}
spec:
  gatewayClassName: ours
  addresses: [{type: IPAddress, value: not-an-ip}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

fn address_of(t: &gateway_k8s::Translation, name: &str) -> Option<String> {
    t.status
        .gateway("n", name)
        .and_then(|g| g.addresses.clone())
        .and_then(|a| a.first().map(|a| a.value.clone()))
}

#[test]
fn addresses_from_spec_and_sticky_pool() {
    let resources = Resources::parse_yaml(ADDRESS_GATEWAYS, "addresses");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    let mut translator = pool_translator("127.0.7.0/24");
    let t = translator.translate(&resources);
    assert_eq!(address_of(&t, "static").as_deref(), Some("127.0.7.1"));
    assert_eq!(address_of(&t, "a").as_deref(), Some("127.0.7.2"));
    assert_eq!(address_of(&t, "b").as_deref(), Some("127.0.7.3"));

    let gw = t.status.gateway("n", "hostname-address").expect("status");
    assert_condition(
        gw.conditions.as_deref().unwrap_or_default(),
        "Accepted",
        "False",
        "UnsupportedAddress",
    );
    assert!(gw.addresses.is_none());
    let gw = t.status.gateway("n", "bad-address").expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "Programmed", "False", "AddressNotUsable");
    assert_eq!(t.config.binds.len(), 3);

    // Remove `a`, add `c`: `b` keeps its address and `c` reuses the one `a` freed.
    let text = ADDRESS_GATEWAYS.replace("{name: a, namespace: n", "{name: c, namespace: n");
    let t = translator.translate(&Resources::parse_yaml(&text, "addresses"));
    assert_eq!(address_of(&t, "b").as_deref(), Some("127.0.7.3"));
    assert_eq!(address_of(&t, "c").as_deref(), Some("127.0.7.2"));
    assert_eq!(address_of(&t, "a"), None);
}

#[test]
fn exhausted_pool_leaves_gateway_unprogrammed() {
    let resources = Resources::parse_yaml(ADDRESS_GATEWAYS, "addresses");
    // A /30 has two usable hosts: the static Gateway takes one, `a` the other.
    let t = pool_translator("127.0.7.0/30").translate(&resources);
    assert_eq!(address_of(&t, "a").as_deref(), Some("127.0.7.2"));
    let gw = t.status.gateway("n", "b").expect("status");
    assert_condition(
        gw.conditions.as_deref().unwrap_or_default(),
        "Programmed",
        "False",
        "AddressNotAssigned",
    );
    assert_eq!(t.diagnostics.len(), 1);
}

#[test]
fn transition_times_are_kept_while_status_holds() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    let resources = fixture("basic.yaml");
    let mut translator = translator();
    let t1 = Time(Timestamp::from_second(1_000).expect("ts"));
    let t2 = Time(Timestamp::from_second(2_000).expect("ts"));
    let first = translator.translate_at(&resources, t1.clone());
    let second = translator.translate_at(&resources, t2);
    for t in [&first, &second] {
        let gw = t.status.gateway("shop", "web").expect("status");
        for c in gw.conditions.iter().flatten() {
            assert_eq!(c.last_transition_time, t1);
        }
    }
}

#[test]
fn parameters_refs_this_controller_cannot_honour_are_refused() {
    let yaml = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: ours}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: tuned}}
spec:
  controllerName: {CONTROLLER}
  parametersRef: {{group: example.net, kind: Tuning, name: fast}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: refused, namespace: n}}
spec:
  gatewayClassName: ours
  infrastructure:
    parametersRef: {{group: invalid.io, kind: InvalidParameters, name: invalid}}
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: of-refused-class, namespace: n}}
spec:
  gatewayClassName: tuned
  listeners:
  - {{name: http, port: 81, protocol: HTTP}}
"#
    );
    let resources = Resources::parse_yaml(&yaml, "parameters");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    let t = translator().translate(&resources);

    let gw = t.status.gateway("n", "refused").expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "False", "InvalidParameters");
    assert_condition(conditions, "Programmed", "False", "Invalid");
    assert!(gw.addresses.is_none());
    let listener = &gw.listeners.as_deref().unwrap_or_default()[0];
    assert_condition(&listener.conditions, "Programmed", "False", "Invalid");

    let class = t.status.gateway_class("tuned").expect("class status");
    assert_condition(
        class.conditions.as_deref().unwrap_or_default(),
        "Accepted",
        "False",
        "InvalidParameters",
    );
    assert!(t.status.gateway("n", "of-refused-class").is_none());
    // Nothing is served.
    assert!(t.config.binds.is_empty(), "{:?}", t.config.binds);
}
