//! Filter policies attached by targetRefs / targetSelectors: YAML in, merged `ExtensionRef`s on
//! each rule and policy status out.

mod common;

use std::sync::Arc;

use common::*;
use gateway_core::config::{ExtensionRef, Filter};
use gateway_k8s::Translation;
use serde_json::json;

const GROUP: &str = "filters.example.net";

/// A registry with the policy kind `Stamp`, whose settings must not contain `bad`.
fn registry() -> gateway_core::FilterRegistry {
    struct Stamp;
    impl gateway_core::HttpFilter for Stamp {}
    let mut registry = gateway_core::FilterRegistry::with_builtins();
    registry.register_policy(GROUP, "Stamp", |r: &ExtensionRef| {
        if r.config.as_ref().is_some_and(|c| c.get("bad").is_some()) {
            return Err(gateway_core::Error::new(
                gateway_core::ErrorKind::InvalidConfig,
                "bad is not a setting",
            ));
        }
        Ok(Arc::new(Stamp) as Arc<dyn gateway_core::HttpFilter>)
    });
    registry
}

fn translate() -> Translation {
    translator()
        .with_filters(registry())
        .translate(&fixture("attached-policy.yaml"))
}

/// The attached `Stamp` reference of rule `rule` of route `route` on `listener`, if any.
fn stamp(t: &Translation, listener: &str, route: &str, rule: usize) -> Option<ExtensionRef> {
    let l = t
        .config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.name == listener)
        .unwrap_or_else(|| panic!("no listener {listener}"));
    let r = l
        .routes
        .iter()
        .find(|r| r.name == route)
        .unwrap_or_else(|| panic!("no route {route} on {listener}"));
    let stamps: Vec<&ExtensionRef> = r.rules[rule]
        .filters
        .iter()
        .filter_map(|f| match f {
            Filter::ExtensionRef(e) if e.kind == "Stamp" => Some(e),
            _ => None,
        })
        .collect();
    assert!(stamps.len() <= 1, "one reference per kind: {stamps:?}");
    // Attached policies run before the rule's own filters.
    if !stamps.is_empty() {
        assert!(matches!(&r.rules[rule].filters[0], Filter::ExtensionRef(e) if e.kind == "Stamp"));
    }
    stamps.first().map(|e| (*e).clone())
}

#[test]
fn settings_merge_per_field_from_gateway_to_rule() {
    let t = translate();
    let cart = stamp(&t, "apps/gw/http", "shop", 0).expect("cart has policies");
    assert_eq!(
        cart.config,
        Some(json!({"a": "rule", "b": "gateway", "c": "route"}))
    );
    assert_eq!(cart.group, GROUP);
    assert_eq!(cart.origin("a"), "apps/cart-rule");
    assert_eq!(cart.origin("b"), "apps/gateway-wide");
    assert_eq!(cart.origin("c"), "apps/by-label");

    let home = stamp(&t, "apps/gw/http", "shop", 1).expect("home has policies");
    assert_eq!(
        home.config,
        Some(json!({"a": "gateway", "b": "gateway", "c": "route"}))
    );
    assert_eq!(home.origin("a"), "apps/gateway-wide");

    // Listener api replaces b.
    let cart_api = stamp(&t, "apps/gw/api", "shop", 0).expect("cart on api");
    assert_eq!(
        cart_api.config,
        Some(json!({"a": "rule", "b": "listener", "c": "route"}))
    );
    assert_eq!(cart_api.origin("b"), "apps/api-listener");

    // Route plain: `late` applies to the route (its Gateway target is Conflicted), `broken`
    // nowhere.
    let plain = stamp(&t, "apps/gw/api", "plain", 0).expect("plain has policies");
    assert_eq!(
        plain.config,
        Some(json!({"a": "gateway", "b": "listener", "c": "late"}))
    );
}

#[test]
fn a_single_policy_is_referenced_by_its_own_name() {
    let mut resources = fixture("attached-policy.yaml");
    for name in ["api-listener", "by-label", "cart-rule", "late"] {
        resources
            .others
            .retain(|k, _| !(k.kind == "Stamp" && k.name == name));
    }
    let t = translator().with_filters(registry()).translate(&resources);
    let home = stamp(&t, "apps/gw/http", "shop", 1).expect("gateway-wide applies");
    assert_eq!(home.name, "apps/gateway-wide");
    assert!(home.origins.is_empty());
    assert_eq!(home.config, Some(json!({"a": "gateway", "b": "gateway"})));
}

#[test]
fn nothing_is_attached_without_a_registry_or_to_other_controllers() {
    let t = translator().translate(&fixture("attached-policy.yaml"));
    assert_eq!(stamp(&t, "apps/gw/http", "shop", 0), None);
    assert!(
        t.status
            .attached_policy(GROUP, "Stamp", "apps", "gateway-wide")
            .is_none()
    );

    let t = translate();
    // Route foreign is served by another controller: not in our config at all, and no status.
    assert!(t.status.http_route("apps", "foreign").is_none());
}

/// (ancestor kind, name, sectionName, status, reason) of each ancestor entry.
fn ancestors(
    t: &Translation,
    policy: &str,
) -> Vec<(String, String, Option<String>, String, String)> {
    let status = t
        .status
        .attached_policy(GROUP, "Stamp", "apps", policy)
        .unwrap_or_else(|| panic!("no status for {policy}"));
    status
        .ancestors
        .iter()
        .map(|a| {
            assert_eq!(a.controller_name, CONTROLLER);
            assert_eq!(a.ancestor_ref.namespace, "apps");
            let c = condition(&a.conditions, "Accepted");
            (
                a.ancestor_ref.kind.clone(),
                a.ancestor_ref.name.clone(),
                a.ancestor_ref.section_name.clone(),
                c.status.clone(),
                c.reason.clone(),
            )
        })
        .collect()
}

fn entry(
    kind: &str,
    name: &str,
    section: Option<&str>,
    status: &str,
    reason: &str,
) -> (String, String, Option<String>, String, String) {
    (
        kind.into(),
        name.into(),
        section.map(Into::into),
        status.into(),
        reason.into(),
    )
}

#[test]
fn status_reports_accepted_conflicted_target_not_found_and_invalid() {
    let t = translate();
    let gw = |section, status, reason| entry("Gateway", "gw", section, status, reason);
    assert_eq!(
        ancestors(&t, "gateway-wide"),
        [gw(None, "True", "Accepted")]
    );
    assert_eq!(
        ancestors(&t, "api-listener"),
        [gw(Some("api"), "True", "Accepted")]
    );
    // Route targets report on the route's parent Gateways.
    assert_eq!(ancestors(&t, "by-label"), [gw(None, "True", "Accepted")]);
    assert_eq!(ancestors(&t, "cart-rule"), [gw(None, "True", "Accepted")]);
    assert_eq!(
        ancestors(&t, "late"),
        [
            gw(None, "False", "Conflicted"),
            gw(Some("api"), "True", "Accepted")
        ]
    );
    assert_eq!(
        ancestors(&t, "lost"),
        [
            entry("Gateway", "missing", None, "False", "TargetNotFound"),
            gw(Some("nope"), "False", "TargetNotFound"),
            gw(None, "False", "TargetNotFound"),
            entry("Service", "svc", None, "False", "Invalid"),
        ]
    );
    assert_eq!(
        ancestors(&t, "broken"),
        [gw(Some("api"), "False", "Invalid")]
    );
    let broken = t
        .status
        .attached_policy(GROUP, "Stamp", "apps", "broken")
        .unwrap();
    let c = condition(&broken.ancestors[0].conditions, "Accepted");
    assert!(c.message.contains("bad is not a setting"), "{c:?}");
    assert_eq!(c.observed_generation, Some(7));
    assert!(
        t.status
            .attached_policy(GROUP, "Stamp", "apps", "unattached")
            .is_none()
    );

    // The status is echoed on the policy's document.
    let doc = t
        .status
        .documents()
        .iter()
        .find(|d| d["kind"] == "Stamp" && d["metadata"]["name"] == "late")
        .expect("late echoed");
    assert_eq!(
        doc["status"]["ancestors"][0]["conditions"][0]["reason"],
        "Conflicted"
    );
}

#[test]
fn removing_the_older_policy_lets_the_conflicted_one_apply() {
    let mut resources = fixture("attached-policy.yaml");
    resources
        .others
        .retain(|k, _| !(k.kind == "Stamp" && k.name == "gateway-wide"));
    let t = translator().with_filters(registry()).translate(&resources);
    let home = stamp(&t, "apps/gw/http", "shop", 1).expect("late applies on gw");
    // c from the route-level by-label wins over the Gateway-level late.
    assert_eq!(home.config, Some(json!({"c": "route"})));
    assert_eq!(home.name, "apps/by-label");
    let cart = stamp(&t, "apps/gw/http", "shop", 0).unwrap();
    assert_eq!(cart.config, Some(json!({"a": "rule", "c": "route"})));
    assert_eq!(
        ancestors(&t, "late")[0],
        entry("Gateway", "gw", None, "True", "Accepted")
    );
}

const SECRETS: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: apps}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Secret
metadata: {name: shared, namespace: vault}
data: {token: b3RoZXI=}
---
apiVersion: filters.example.net/v1
kind: Stamp
metadata: {name: with-secret, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: plain}]
  a: {secretRef: {name: creds}}
---
apiVersion: filters.example.net/v1
kind: Stamp
metadata: {name: foreign-secret, namespace: apps}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: shop}]
  c: {nested: [{secretRef: {name: shared, namespace: vault}}]}
"#;

fn with_secrets(extra: &str) -> gateway_k8s::Resources {
    let mut text = fixture_text("attached-policy.yaml");
    text.push_str("\n---\n");
    text.push_str(SECRETS);
    text.push_str(extra);
    let resources = gateway_k8s::Resources::parse_yaml(&text, "secrets");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    resources
}

#[test]
fn secret_references_resolve_with_reference_grants() {
    let t = translator()
        .with_filters(registry())
        .translate(&with_secrets(""));
    let plain = stamp(&t, "apps/gw/api", "plain", 0).unwrap();
    // The namespace is written into the reference; the data travels beside the settings.
    assert_eq!(
        plain.config.as_ref().unwrap()["a"],
        json!({"secretRef": {"name": "creds", "namespace": "apps"}})
    );
    assert_eq!(
        plain
            .secrets
            .get("apps/creds")
            .and_then(|d| d.get("token"))
            .map(String::as_str),
        Some("s3cret")
    );
    let rendered = serde_json::to_string(&t.config).unwrap();
    assert!(
        !rendered.contains("s3cret"),
        "secret data is never serialized"
    );

    // Another namespace without a ReferenceGrant: the policy is Invalid and applies nowhere.
    let status = ancestors(&t, "foreign-secret");
    assert_eq!(status, [entry("Gateway", "gw", None, "False", "Invalid")]);
    let c = &t
        .status
        .attached_policy(GROUP, "Stamp", "apps", "foreign-secret")
        .unwrap()
        .ancestors[0]
        .conditions[0];
    assert!(c.message.contains("ReferenceGrant"), "{c:?}");
    let home = stamp(&t, "apps/gw/http", "shop", 1).unwrap();
    assert_eq!(home.config.as_ref().unwrap()["c"], "route");

    // With the grant it resolves.
    let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: stamps, namespace: vault}
spec:
  from: [{group: filters.example.net, kind: Stamp, namespace: apps}]
  to: [{group: "", kind: Secret}]
"#;
    let t = translator()
        .with_filters(registry())
        .translate(&with_secrets(grant));
    assert_eq!(ancestors(&t, "foreign-secret")[0].4, "Accepted");
    let home = stamp(&t, "apps/gw/http", "shop", 1).unwrap();
    assert_eq!(
        home.secrets
            .get("vault/shared")
            .and_then(|d| d.get("token"))
            .map(String::as_str),
        Some("other")
    );
}

#[test]
fn extension_refs_resolve_secrets_too_and_report_missing_ones() {
    let extra = r#"
---
apiVersion: filters.example.net/v1
kind: Stamp
metadata: {name: by-ref, namespace: apps}
spec:
  a: {secretRef: {name: creds}}
---
apiVersion: filters.example.net/v1
kind: Stamp
metadata: {name: missing, namespace: apps}
spec:
  a: {secretRef: {name: nowhere}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: refs, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [refs.example.com]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: filters.example.net, kind: Stamp, name: by-ref}}
    backendRefs: [{name: svc, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: broken-refs, namespace: apps}
spec:
  parentRefs: [{name: gw, sectionName: http}]
  hostnames: [broken.example.com]
  rules:
  - filters:
    - {type: ExtensionRef, extensionRef: {group: filters.example.net, kind: Stamp, name: missing}}
    backendRefs: [{name: svc, port: 80}]
"#;
    let t = translator()
        .with_filters(registry())
        .translate(&with_secrets(extra));
    let route = t
        .config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.routes)
        .find(|r| r.name == "refs")
        .unwrap();
    let by_ref = route.rules[0]
        .filters
        .iter()
        .find_map(|f| match f {
            Filter::ExtensionRef(e) if e.name == "by-ref" => Some(e),
            _ => None,
        })
        .unwrap();
    assert!(by_ref.secrets.get("apps/creds").is_some());
    let status = t.status.http_route("apps", "broken-refs").unwrap();
    let c = condition(&status.parents[0].conditions, "ResolvedRefs");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "InvalidExtensionRef")
    );
    assert!(
        c.message.contains("Secret apps/nowhere does not exist"),
        "{c:?}"
    );
}

#[test]
fn routes_reused_by_the_next_translation_keep_their_attached_policies() {
    let mut translator = translator().with_filters(registry());
    let resources = fixture("attached-policy.yaml");
    let first = translator.translate(&resources);
    // Only another route changes (a new object for it; every other object the same `Arc`):
    // shop's translation and attachment are reused.
    let text = fixture_text("attached-policy.yaml").replace(
        "metadata: {name: foreign, namespace: apps}",
        "metadata: {name: foreign, namespace: apps, labels: {changed: \"yes\"}}",
    );
    let parsed = gateway_k8s::Resources::parse_yaml(&text, "changed");
    let key = gateway_k8s::ObjectKey::new("apps", "foreign");
    let mut changed = resources.clone();
    changed
        .http_routes
        .insert(key.clone(), parsed.http_routes[&key].clone());
    let second = translator.translate(&changed);
    assert!(
        translator.route_reuse().0 > 0,
        "{:?}",
        translator.route_reuse()
    );
    for (listener, rule) in [("apps/gw/http", 0), ("apps/gw/http", 1), ("apps/gw/api", 0)] {
        assert_eq!(
            stamp(&second, listener, "shop", rule),
            stamp(&first, listener, "shop", rule),
            "{listener} rule {rule}"
        );
    }
    assert_eq!(
        stamp(&second, "apps/gw/api", "shop", 0).unwrap().config,
        Some(json!({"a": "rule", "b": "listener", "c": "route"}))
    );
}
