//! Experimental HTTPRoute fields, ExtensionRef objects, DirectResponse, XBackendTrafficPolicy, and
//! the blast radius of invalid routes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use gateway_core::config::*;
use gateway_core::routing::BindRouter;
use gateway_k8s::Translation;

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("socket address")
}

fn served_route<'a>(t: &'a Translation, name: &str) -> &'a Route {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.routes)
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("route {name} is not served"))
}

fn is_served(t: &Translation, name: &str) -> bool {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.routes)
        .any(|r| r.name == name)
}

fn parent_conditions<'a>(
    t: &'a Translation,
    namespace: &str,
    name: &str,
) -> &'a [k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    &t.status
        .http_route(namespace, name)
        .unwrap_or_else(|| panic!("status of {name}"))
        .parents[0]
        .conditions
}

fn endpoints(list: &[&str]) -> BackendTarget {
    BackendTarget::Endpoints(Backend::new(list.iter().map(|a| addr(a)).collect()))
}

fn features() -> Translation {
    translator().translate(&fixture("route-features.yaml"))
}

#[test]
fn request_mirrors_percent_fraction_and_references() {
    let t = features();
    let route = served_route(&t, "mirrors");
    assert_eq!(
        route.rules.len(),
        1,
        "the rule with fraction 3/2 is dropped"
    );
    let mirror = |fraction| {
        Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef {
                name: "apps/mirror:8080".into(),
                weight: 1,
                target: endpoints(&["127.0.0.32:8080"]),
                filters: Vec::new(),
            },
            fraction,
        }))
    };
    // The ungranted cross-namespace mirror is left out.
    assert_eq!(
        route.rules[0].filters,
        vec![
            mirror(Some((20, 100))),
            mirror(Some((1, 100))),
            mirror(Some((3, 7)))
        ]
    );
    let conditions = parent_conditions(&t, "apps", "mirrors");
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "ResolvedRefs", "False", "RefNotPermitted");
    assert_condition(conditions, "PartiallyInvalid", "True", "UnsupportedValue");
    assert!(
        condition(conditions, "PartiallyInvalid")
            .message
            .contains("fraction 3/2")
    );
}

#[test]
fn cors_every_field() {
    let t = features();
    let route = served_route(&t, "cors");
    assert_eq!(
        route.rules[0].filters,
        vec![Filter::Cors(Cors {
            allow_origins: vec!["https://www.foo.com".into(), "https://*.bar.com".into()],
            allow_methods: vec!["GET".into(), "OPTIONS".into()],
            allow_headers: vec!["x-header-1".into(), "x-header-2".into()],
            expose_headers: vec!["x-header-3".into()],
            allow_credentials: true,
            max_age: Some(3600),
        })]
    );
    assert_eq!(
        route.rules[1].filters,
        vec![Filter::Cors(Cors {
            allow_origins: vec!["*".into()],
            allow_methods: vec!["*".into()],
            ..Cors::default()
        })]
    );
    assert_condition(
        parent_conditions(&t, "apps", "cors"),
        "Accepted",
        "True",
        "Accepted",
    );
}

#[test]
fn retry_codes_attempts_backoff() {
    let t = features();
    let route = served_route(&t, "retry");
    assert_eq!(
        route.rules[0].retry,
        Some(Retry {
            codes: vec![500, 502],
            attempts: 3,
            backoff: Some(Duration::from_millis(100)),
        })
    );
    assert_eq!(route.rules[1].retry, Some(Retry::default()));
}

#[test]
fn session_persistence_cookie_header_and_permanent_without_timeout() {
    let t = features();
    let route = served_route(&t, "sessions");
    assert_eq!(route.rules.len(), 2);
    assert_eq!(
        route.rules[0].session_persistence,
        Some(SessionPersistence {
            name: Some("my-session".into()),
            kind: SessionKind::Cookie,
            absolute_timeout: Some(Duration::from_secs(3600)),
            idle_timeout: Some(Duration::from_secs(600)),
            permanent: true,
            path: None,
        })
    );
    assert_eq!(
        route.rules[1].session_persistence,
        Some(SessionPersistence {
            name: Some("x-session".into()),
            kind: SessionKind::Header,
            absolute_timeout: None,
            idle_timeout: None,
            permanent: false,
            path: None,
        })
    );
    let conditions = parent_conditions(&t, "apps", "sessions");
    assert_condition(conditions, "Accepted", "True", "Accepted");
    let partial = condition(conditions, "PartiallyInvalid");
    assert!(
        partial
            .message
            .starts_with("Dropped Rule permanent-without-timeout: "),
        "{partial:?}"
    );
    assert!(partial.message.contains("absoluteTimeout"));
}

#[test]
fn websocket_app_protocol() {
    let t = features();
    let route = served_route(&t, "websocket");
    let BackendTarget::Endpoints(backend) = &route.rules[0].backends[0].target else {
        panic!("unresolved: {:?}", route.rules[0].backends[0]);
    };
    assert_eq!(backend.protocol, BackendProtocol::WebSocket);
    assert_eq!(backend.endpoints, vec![addr("127.0.0.33:8082")]);
}

#[test]
fn extension_refs_resolve_to_their_objects() {
    let t = features();
    let route = served_route(&t, "extensions");
    assert_eq!(
        route.rules[0].filters,
        vec![
            Filter::ExtensionRef(
                ExtensionRef::new("filters.example.net", "Widget", "plain")
                    .with_config(serde_json::json!({"data": {"colour": "blue"}}))
            ),
            Filter::ExtensionRef(
                ExtensionRef::new("gateway.pingora-gateway.dev", "DirectResponse", "teapot")
                    .with_config(serde_json::json!({
                        "status": 418,
                        "headers": [{"name": "x-tea", "value": "earl grey"}],
                        "body": "I'm a teapot",
                    }))
            ),
        ]
    );
    let conditions = parent_conditions(&t, "apps", "extensions");
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "ResolvedRefs", "True", "ResolvedRefs");
}

#[test]
fn missing_extension_object_is_an_invalid_filter() {
    let t = features();
    let route = served_route(&t, "missing-extension");
    assert!(matches!(
        &route.rules[0].filters[..],
        [Filter::Invalid { reason }] if reason.contains("Widget") && reason.contains("nowhere")
    ));
    // The rule is still served (its requests get 500), so the route is accepted.
    let conditions = parent_conditions(&t, "apps", "missing-extension");
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "ResolvedRefs", "False", "BackendNotFound");
}

#[test]
fn invalid_direct_response_is_refused_with_a_message() {
    let t = features();
    let route = served_route(&t, "broken-direct-response");
    assert!(matches!(
        &route.rules[0].filters[..],
        [Filter::Invalid { reason }] if reason.contains("700")
    ));
    let conditions = parent_conditions(&t, "apps", "broken-direct-response");
    assert_condition(conditions, "ResolvedRefs", "False", "InvalidExtensionRef");
    assert!(
        condition(conditions, "ResolvedRefs")
            .message
            .contains("status 700 is outside 200-599")
    );
}

#[test]
fn backend_traffic_policy_applies_to_its_services() {
    let t = features();
    let route = served_route(&t, "uses-sticky");
    let BackendTarget::Endpoints(backend) = &route.rules[0].backends[0].target else {
        panic!("unresolved");
    };
    assert_eq!(
        backend.policy.retry_budget,
        Some(RetryBudget {
            percent: 30,
            interval: Duration::from_secs(20),
            min_retries_per_second: 3,
        })
    );
    assert_eq!(
        backend.policy.session_persistence,
        Some(SessionPersistence {
            name: Some("stick".into()),
            kind: SessionKind::Cookie,
            absolute_timeout: Some(Duration::from_secs(3600)),
            idle_timeout: None,
            permanent: true,
            path: None,
        })
    );
    // Other backends keep the default policy.
    let web = &served_route(&t, "websocket").rules[0].backends[0].target;
    assert!(matches!(web, BackendTarget::Endpoints(b) if b.policy == BackendPolicy::default()));

    let status = t
        .status
        .backend_traffic_policy("apps", "budget")
        .expect("policy status");
    assert_eq!(status.ancestors.len(), 1);
    let ancestor = &status.ancestors[0];
    assert_eq!(ancestor.ancestor_ref.name, "gw");
    assert_eq!(ancestor.ancestor_ref.namespace.as_deref(), Some("apps"));
    assert_eq!(ancestor.ancestor_ref.kind.as_deref(), Some("Gateway"));
    assert_eq!(ancestor.controller_name, CONTROLLER);
    assert_condition(&ancestor.conditions, "Accepted", "True", "Accepted");
    assert_eq!(ancestor.conditions[0].observed_generation, Some(2));

    let late = t
        .status
        .backend_traffic_policy("apps", "late")
        .expect("status");
    assert_condition(
        &late.ancestors[0].conditions,
        "Accepted",
        "False",
        "Conflicted",
    );
    let ghostly = t
        .status
        .backend_traffic_policy("apps", "ghostly")
        .expect("status");
    assert_condition(
        &ghostly.ancestors[0].conditions,
        "Accepted",
        "False",
        "TargetNotFound",
    );
    // Mirror targets count as uses: a policy on the `mirror` Service is relevant to the
    // Gateway of the route that mirrors to it.
    let mirror = t
        .status
        .backend_traffic_policy("apps", "on-mirror")
        .expect("status");
    assert_condition(
        &mirror.ancestors[0].conditions,
        "Accepted",
        "True",
        "Accepted",
    );

    // The status is echoed in the status report.
    let echoed = t
        .status
        .documents()
        .iter()
        .find(|d| d["kind"] == "XBackendTrafficPolicy" && d["metadata"]["name"] == "budget")
        .expect("echoed");
    assert_eq!(
        echoed["status"]["ancestors"][0]["conditions"][0]["reason"],
        "Accepted"
    );
}

#[test]
fn untyped_objects_are_echoed_in_the_status_report() {
    let resources = fixture("route-features.yaml");
    let t = translator().translate(&resources);
    assert_eq!(t.status.documents().len(), resources.len());
    assert!(
        t.status
            .documents()
            .iter()
            .any(|d| d["kind"] == "DirectResponse" && d["metadata"]["name"] == "teapot")
    );
}

#[test]
fn one_bad_route_never_takes_the_others_down() {
    let t = translator().translate(&fixture("blast-radius.yaml"));

    // The good route is served and accepted.
    let good = served_route(&t, "good");
    assert_eq!(good.rules.len(), 1);
    assert_condition(
        parent_conditions(&t, "blast", "good"),
        "Accepted",
        "True",
        "Accepted",
    );

    // Refused routes: not served, Accepted=False UnsupportedValue, no PartiallyInvalid.
    for name in [
        "bad-hostname",
        "bad-header-modifier",
        "bad-header-value",
        "external-auth",
    ] {
        let conditions = parent_conditions(&t, "blast", name);
        assert_condition(conditions, "Accepted", "False", "UnsupportedValue");
        assert!(
            conditions.iter().all(|c| c.type_ != "PartiallyInvalid"),
            "{name}: {conditions:?}"
        );
        assert!(!is_served(&t, name), "{name} is served");
    }
    assert!(
        condition(parent_conditions(&t, "blast", "external-auth"), "Accepted")
            .message
            .contains("ExternalAuth")
    );

    // Some rules invalid: the rest is served, PartiallyInvalid names every dropped rule.
    let partial = served_route(&t, "partial");
    let names: Vec<_> = partial.rules.iter().map(|r| r.name.as_deref()).collect();
    assert_eq!(names, vec![Some("fine")]);
    let conditions = parent_conditions(&t, "blast", "partial");
    assert_condition(conditions, "Accepted", "True", "Accepted");
    assert_condition(conditions, "PartiallyInvalid", "True", "UnsupportedValue");
    let message = &condition(conditions, "PartiallyInvalid").message;
    assert!(
        message.starts_with("Dropped Rule bad-header-match: "),
        "{message}"
    );
    for dropped in [
        "prefix-rewrite-on-exact",
        "prefix-redirect-on-regex",
        "wildcard-redirect-host",
        "bad-cors-origin",
        "bad-backend-filter",
    ] {
        assert!(
            message.contains(&format!("Dropped Rule {dropped}: ")),
            "{message}"
        );
    }

    // Duplicate header matches (names compare case-insensitively) and query matches keep the
    // first.
    let dup = served_route(&t, "duplicates");
    let m = &dup.rules[0].matches[0];
    assert_eq!(
        m.headers,
        vec![
            HeaderMatch {
                name: "x-a".into(),
                value: StringMatch::Exact("1".into())
            },
            HeaderMatch {
                name: "x-b".into(),
                value: StringMatch::Exact("3".into())
            },
        ]
    );
    assert_eq!(
        m.query_params
            .iter()
            .map(|q| (q.name.as_str(), q.value.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("q", StringMatch::Exact("1".into())),
            ("Q", StringMatch::Exact("3".into()))
        ]
    );

    // Only accepted routes count as attached.
    let gw = t.status.gateway("blast", "gw").expect("status");
    assert_eq!(
        gw.listeners.as_deref().unwrap_or_default()[0].attached_routes,
        3
    );

    // And the data plane compiles what is left.
    for bind in &t.config.binds {
        BindRouter::build(&bind.listeners).expect("the configuration compiles");
    }
    assert_eq!(
        t.diagnostics
            .iter()
            .filter(|d| d.message.contains("not served"))
            .count(),
        2,
        "{:?}",
        t.diagnostics
    );
}

#[test]
fn xbackend_external_hostname_is_a_dns_backend() {
    let t = features();
    let route = served_route(&t, "external");
    let targets: Vec<_> = route.rules[0]
        .backends
        .iter()
        .map(|b| b.target.clone())
        .collect();
    let dns = |port| {
        BackendTarget::Dns(DnsBackend {
            hostname: "api.example.com".into(),
            port,
            protocol: BackendProtocol::H2c,
            policy: BackendPolicy::default(),
            tls: None,
        })
    };
    assert_eq!(targets, vec![dns(8443), dns(9000)]);
    // TLS towards the backend is not in the model: the reference does not resolve.
    assert!(matches!(
        &route.rules[1].backends[0].target,
        BackendTarget::Unresolved { reason } if reason.contains("TLS mode Simple")
    ));
    assert_condition(
        parent_conditions(&t, "apps", "external"),
        "ResolvedRefs",
        "False",
        "UnsupportedProtocol",
    );
}

/// A registry that knows `filters.example.net/Widget` and refuses a `data.colour` of `red`.
fn widget_registry() -> gateway_core::FilterRegistry {
    struct Widget;
    impl gateway_core::HttpFilter for Widget {}
    let mut registry = gateway_core::FilterRegistry::with_builtins();
    registry.register("filters.example.net", "Widget", |r: &ExtensionRef| {
        let colour = r.config.as_ref().and_then(|c| c["data"]["colour"].as_str());
        if colour == Some("red") {
            return Err(gateway_core::Error::new(
                gateway_core::ErrorKind::InvalidConfig,
                "colour red is not allowed",
            ));
        }
        Ok(std::sync::Arc::new(Widget) as std::sync::Arc<dyn gateway_core::HttpFilter>)
    });
    registry
}

#[test]
fn extension_refs_are_checked_against_the_filter_registry() {
    let mut resources = fixture("route-features.yaml");
    let widgets = gateway_k8s::Resources::parse_yaml(
        r#"
apiVersion: filters.example.net/v1
kind: Widget
metadata: {name: red, namespace: apps}
data: {colour: red}
---
apiVersion: filters.example.net/v1
kind: Gadget
metadata: {name: g, namespace: apps}
data: {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: red-widget, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: filters.example.net, kind: Widget, name: red}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: unknown-kind, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules:
  - filters: [{type: ExtensionRef, extensionRef: {group: filters.example.net, kind: Gadget, name: g}}]
"#,
        "widgets.yaml",
    );
    resources.merge(widgets);
    let t = translator()
        .with_filters(widget_registry())
        .translate(&resources);

    // The blue widget of the fixture builds: resolved as before.
    let ok = parent_conditions(&t, "apps", "extensions");
    assert_condition(ok, "ResolvedRefs", "True", "ResolvedRefs");
    // Settings the factory refuses: the route says why, the rule answers 500.
    let red = parent_conditions(&t, "apps", "red-widget");
    assert_condition(red, "ResolvedRefs", "False", "InvalidExtensionRef");
    assert!(
        condition(red, "ResolvedRefs")
            .message
            .contains("colour red is not allowed")
    );
    assert!(matches!(
        &served_route(&t, "red-widget").rules[0].filters[..],
        [Filter::Invalid { .. }]
    ));
    // A kind nobody registered.
    let unknown = parent_conditions(&t, "apps", "unknown-kind");
    assert_condition(unknown, "ResolvedRefs", "False", "InvalidKind");
    // Without a registry the unknown kind resolves (and answers 500 in the data plane).
    let plain = translator().translate(&resources);
    assert_condition(
        parent_conditions(&plain, "apps", "unknown-kind"),
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
}
