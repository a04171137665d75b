//! A translation after a change of a few HTTPRoutes patches the state the previous translation
//! kept (listener route lists, route statuses, references, diagnostics) instead of attaching
//! every route again. Through a series of changes (routes added, removed, modified, given
//! other parents, hostnames or creation times, several at once, a non-route change in between),
//! every translation must equal what a fresh translator gives for the same input.

mod common;

use std::fmt::Write as _;

use common::{CONTROLLER, translator};
use gateway_k8s::{ObjectKey, Resources, Translation, Translator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).expect("timestamp"))
}

/// Two Gateways in namespace `shop`: `web` (HTTP 80 without hostname; HTTP 8080 for
/// `*.a.example`, routes from every namespace) and `api` (HTTP 81 for `api.example`), and the
/// Services `store` and `other` with endpoints.
const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: CONTROLLER}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: shop, generation: 1}
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - name: a
    port: 8080
    protocol: HTTP
    hostname: "*.a.example"
    allowedRoutes: {namespaces: {from: All}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: api, namespace: shop, generation: 1}
spec:
  gatewayClassName: ours
  listeners:
  - {name: http, port: 81, protocol: HTTP, hostname: api.example}
---
apiVersion: v1
kind: Service
metadata: {name: store, namespace: shop}
spec:
  ports: [{name: web, port: 8080, targetPort: 3000}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: store-abc
  namespace: shop
  labels: {kubernetes.io/service-name: store}
addressType: IPv4
ports: [{name: web, port: 3000}]
endpoints:
- addresses: ["127.0.0.11"]
  conditions: {ready: true}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  ports: [{name: web, port: 8080, targetPort: 3001}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: other-abc
  namespace: shop
  labels: {kubernetes.io/service-name: other}
addressType: IPv4
ports: [{name: web, port: 3001}]
endpoints:
- addresses: ["127.0.0.12"]
  conditions: {ready: true}
"#;

/// One HTTPRoute.
#[derive(Clone, Debug)]
struct R {
    namespace: &'static str,
    name: String,
    /// Seconds after 2024-01-01 (several routes share one: the name breaks the tie).
    created: i64,
    /// The `parentRefs` list, as YAML flow.
    parents: String,
    hostnames: Option<&'static str>,
    /// The `x-route` header value the route adds.
    tag: String,
    service: &'static str,
    /// Matches on the model header too (turns body-based routing on).
    model: bool,
    /// Adds a rule that cannot be served (a diagnostic).
    broken_rule: bool,
}

impl R {
    fn new(i: usize) -> Self {
        R {
            namespace: "shop",
            name: format!("r{i:02}"),
            // Groups of three share a creation time, in reverse name order.
            created: 100 - (i as i64 / 3),
            parents: "[{name: web}]".to_string(),
            hostnames: None,
            tag: format!("t{i}"),
            service: "store",
            model: false,
            broken_rule: false,
        }
    }

    fn yaml(&self) -> String {
        let mut out = String::new();
        let created = Timestamp::from_second(1_704_067_200 + self.created).expect("time");
        let _ = write!(
            out,
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: {}\n  namespace: {}\n  generation: 1\n  creationTimestamp: \"{}\"\nspec:\n  parentRefs: {}\n",
            self.name,
            self.namespace,
            created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            self.parents.replace("NS", "shop")
        );
        if let Some(h) = self.hostnames {
            let _ = writeln!(out, "  hostnames: {h}");
        }
        let headers = if self.model {
            ", headers: [{name: X-Gateway-Model-Name, value: m1}]"
        } else {
            ""
        };
        let _ = write!(
            out,
            "  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /{}/}}{headers}}}]\n    filters:\n    - type: RequestHeaderModifier\n      requestHeaderModifier: {{add: [{{name: x-route, value: {}}}]}}\n    backendRefs: [{{name: {}, namespace: shop, port: 8080}}]\n",
            self.name, self.tag, self.service
        );
        if self.broken_rule {
            out.push_str(
                "  - matches: [{path: {type: RegularExpression, value: \"(\"}}]\n    backendRefs: [{name: store, namespace: shop, port: 8080}]\n",
            );
        }
        out
    }
}

/// The base objects (a fixed parse, so their `Arc`s are shared by every version) with `routes`
/// parsed anew only when changed: `previous` holds the route objects of the previous version by
/// their YAML text.
struct Versions {
    base: Resources,
    parsed: std::collections::HashMap<String, Resources>,
}

impl Versions {
    fn new() -> Self {
        let base = Resources::parse_yaml(&BASE.replace("CONTROLLER", CONTROLLER), "base.yaml");
        assert!(base.diagnostics.is_empty(), "{:?}", base.diagnostics);
        Versions {
            base,
            parsed: Default::default(),
        }
    }

    fn resources(&mut self, routes: &[R]) -> Resources {
        let mut out = self.base.clone();
        for r in routes {
            let text = r.yaml();
            let parsed = self
                .parsed
                .entry(text.clone())
                .or_insert_with(|| Resources::parse_yaml(&text, "routes.yaml"));
            assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
            let key = ObjectKey::new(r.namespace, r.name.clone());
            out.http_routes
                .insert(key.clone(), parsed.http_routes[&key].clone());
        }
        out
    }
}

/// Translates `resources` with `incremental` and with a fresh translator at `now` and asserts
/// they agree (configuration, statuses without condition times, diagnostics).
fn translate_both(incremental: &mut Translator, resources: &Resources, now: Time) -> Translation {
    let patched = incremental.translate_at(resources, now.clone());
    let fresh = translator().translate_at(resources, now);
    assert_eq!(patched.config, fresh.config);
    let status = |t: &Translation| -> String {
        t.status
            .to_yaml()
            .lines()
            .filter(|l| !l.contains("lastTransitionTime"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(status(&patched), status(&fresh));
    let diagnostics = |t: &Translation| -> Vec<String> {
        t.diagnostics.iter().map(ToString::to_string).collect()
    };
    assert_eq!(diagnostics(&patched), diagnostics(&fresh));
    patched
}

/// The routes served on listener `listener` (`namespace/gateway/name`), by name, in order.
fn served(t: &Translation, listener: &str) -> Vec<String> {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.name == listener)
        .map(|l| l.routes.iter().map(|r| r.name.clone()).collect())
        .unwrap_or_default()
}

#[test]
fn patched_translations_equal_fresh_ones_through_a_series_of_changes() {
    let mut versions = Versions::new();
    let mut routes: Vec<R> = (0..30).map(R::new).collect();
    routes[4].parents = "[{name: api}]".into();
    routes[4].hostnames = Some("[api.example]");
    routes[9].parents = "[{name: web, sectionName: a}, {name: api}]".into();
    routes[9].hostnames = Some("[x.a.example, api.example]");
    let mut t = translator();
    let mut second = 1_000;
    let mut step = |t: &mut Translator,
                    versions: &mut Versions,
                    routes: &[R],
                    expect_patched: bool|
     -> Translation {
        second += 10;
        let resources = versions.resources(routes);
        let out = translate_both(t, &resources, at(second));
        assert_eq!(t.patched_last(), expect_patched, "at second {second}");
        out
    };

    let first = step(&mut t, &mut versions, &routes, false);
    assert_eq!(t.route_reuse(), (0, 30));
    let order = served(&first, "shop/web/http");
    // Oldest first; equal creation times by name.
    assert_eq!(&order[..4], ["r27", "r28", "r29", "r24"]);

    // Nothing changed.
    step(&mut t, &mut versions, &routes, true);
    assert_eq!(t.route_reuse(), (30, 0));

    // One route's filter changed.
    routes[5].tag = "changed".into();
    step(&mut t, &mut versions, &routes, true);
    assert_eq!(t.route_reuse(), (29, 1));

    // A route added between others of the same creation time, one removed.
    let mut added = R::new(40);
    added.name = "r13b".into();
    added.created = routes[13].created;
    routes.push(added);
    routes.remove(3);
    let out = step(&mut t, &mut versions, &routes, true);
    let order = served(&out, "shop/web/http");
    let at13 = order.iter().position(|n| n == "r13").expect("r13");
    assert_eq!(order[at13 + 1], "r13b");
    assert!(!order.contains(&"r03".to_string()));

    // Reparented from web to api (and back later), with a hostname api serves.
    let r7 = routes.iter().position(|r| r.name == "r07").expect("r07");
    routes[r7].parents = "[{name: api}]".into();
    routes[r7].hostnames = Some("[api.example]");
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(served(&out, "shop/api/http").contains(&"r07".to_string()));
    assert!(!served(&out, "shop/web/http").contains(&"r07".to_string()));

    // A hostname no listener of its parent serves: not accepted anywhere.
    let r8 = routes.iter().position(|r| r.name == "r08").expect("r08");
    routes[r8].parents = "[{name: web, sectionName: a}]".into();
    routes[r8].hostnames = Some("[x.b.example]");
    step(&mut t, &mut versions, &routes, true);
    // Then one it serves.
    routes[r8].hostnames = Some("[y.a.example]");
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(served(&out, "shop/web/a").contains(&"r08".to_string()));

    // Made the oldest route, then the newest.
    let r10 = routes.iter().position(|r| r.name == "r10").expect("r10");
    routes[r10].created = 0;
    let out = step(&mut t, &mut versions, &routes, true);
    assert_eq!(served(&out, "shop/web/http")[0], "r10");
    routes[r10].created = 500;
    let out = step(&mut t, &mut versions, &routes, true);
    assert_eq!(
        served(&out, "shop/web/http").last().map(String::as_str),
        Some("r10")
    );

    // A missing Service, then the other one; a rule that cannot be served (a diagnostic).
    let r12 = routes.iter().position(|r| r.name == "r12").expect("r12");
    routes[r12].service = "missing";
    routes[r12].broken_rule = true;
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(!out.diagnostics.is_empty());
    routes[r12].service = "other";
    routes[r12].broken_rule = false;
    step(&mut t, &mut versions, &routes, true);

    // Body-based routing turned on by one route, off again.
    let r14 = routes.iter().position(|r| r.name == "r14").expect("r14");
    routes[r14].model = true;
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(
        out.config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .any(|l| !l.body_headers.is_empty())
    );
    routes[r14].model = false;
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(
        out.config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .all(|l| l.body_headers.is_empty())
    );

    // The same Gateway named twice, and a route of another namespace on the listener that
    // allows it (and not on the one that does not).
    let r15 = routes.iter().position(|r| r.name == "r15").expect("r15");
    routes[r15].parents = "[{name: web}, {name: web, sectionName: http}]".into();
    let mut foreign = R::new(50);
    foreign.namespace = "elsewhere";
    foreign.parents = "[{name: web, namespace: NS}]".into();
    foreign.hostnames = Some("[z.a.example]");
    routes.push(foreign);
    let out = step(&mut t, &mut versions, &routes, true);
    assert!(served(&out, "shop/web/a").contains(&"r50".to_string()));
    assert!(!served(&out, "shop/web/http").contains(&"r50".to_string()));

    // Several at once: one back to web, one removed, one changed.
    routes[r7].parents = "[{name: web}]".into();
    routes[r7].hostnames = None;
    routes.retain(|r| r.name != "r20");
    routes[0].tag = "zero".into();
    step(&mut t, &mut versions, &routes, true);
    assert_eq!(t.route_reuse().1, 2);

    // A changed Service translates everything; the next route change patches again.
    let mut base = versions.base.clone();
    let store = ObjectKey::new("shop", "store");
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: store, namespace: shop}\nspec:\n  ports: [{name: web, port: 8080, targetPort: 3002}]\n";
    let parsed = Resources::parse_yaml(text, "store.yaml");
    base.services
        .insert(store.clone(), parsed.services[&store].clone());
    versions.base = base;
    step(&mut t, &mut versions, &routes, false);
    routes[1].tag = "one".into();
    step(&mut t, &mut versions, &routes, true);

    // Every route removed (more than a quarter: from scratch), then some back.
    let all = std::mem::take(&mut routes);
    step(&mut t, &mut versions, &routes, false);
    routes = all.into_iter().take(5).collect();
    step(&mut t, &mut versions, &routes, true);
}

#[test]
fn a_large_change_translates_from_scratch() {
    let mut versions = Versions::new();
    let mut routes: Vec<R> = (0..40).map(R::new).collect();
    let mut t = translator();
    translate_both(&mut t, &versions.resources(&routes), at(10));
    for r in &mut routes {
        r.tag.push('x');
    }
    translate_both(&mut t, &versions.resources(&routes), at(20));
    assert!(!t.patched_last());
    assert_eq!(t.route_reuse(), (0, 40));
}
