//! The upstream Inference Extension conformance manifests (read at run time from the shared
//! folder), with the Pods and endpoint picker EndpointSlices a cluster would have made from
//! their Deployments: the statuses the conformance tests check on routes and pools.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use gateway_core::config::{BackendProtocol, BackendTarget, ExtensionRef, Filter, Route};
use gateway_inference::settings::InferencePoolSettings;
use gateway_k8s::{ObjectKey, Resources, Translation};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

const APP: &str = "inference-conformance-app-backend";

fn shared_dir() -> PathBuf {
    match std::env::var_os("GATEWAY_API_INFERENCE_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        // `../shared` beside the repository checkout.
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/inference"
        )),
    }
}

fn read(relative: &str) -> String {
    let path = shared_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (../shared must sit beside the checkout)",
            path.display()
        )
    })
}

/// What a cluster adds: our GatewayClass, three Ready Pods per model server Deployment and a
/// ready endpoint for every endpoint picker Service of the base manifests.
fn cluster_objects(base: &Resources) -> String {
    let mut out = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: conformance}}\nspec: {{controllerName: \"{CONTROLLER}\"}}\n"
    );
    let apps = [
        "primary-inference-model-server",
        "secondary-inference-model-server",
        "appprotocol-inference-model-server",
    ];
    for (a, app) in apps.iter().enumerate() {
        for i in 0..3 {
            out.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {app}-{i}, namespace: {APP}, labels: {{app: {app}}}}}\nstatus: {{podIP: 10.1.{a}.{i}, conditions: [{{type: Ready, status: \"True\"}}]}}\n"
            ));
        }
    }
    let pickers: Vec<&ObjectKey> = base
        .services
        .keys()
        .filter(|k| k.namespace == APP && k.name.ends_with("endpoint-picker-svc"))
        .collect();
    assert!(pickers.len() >= 4, "{pickers:?}");
    for (i, key) in pickers.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: {APP}, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{port: 9002}}]\nendpoints: [{{addresses: [10.2.0.{i}], conditions: {{ready: true}}}}]\n",
            name = key.name
        ));
    }
    out
}

/// The base manifests, the cluster's objects and the test manifests `tests`.
fn load(tests: &[&str]) -> Resources {
    let base_text = read("resources/base.yaml").replace("{GATEWAY_CLASS_NAME}", "conformance");
    let mut resources = Resources::parse_yaml(&base_text, "base.yaml");
    let extra = cluster_objects(&resources);
    resources.merge(Resources::parse_yaml(&extra, "cluster.yaml"));
    for test in tests {
        resources.merge(Resources::parse_yaml(&read(&format!("tests/{test}")), test));
    }
    resources
}

/// A stand-in for the data plane's InferencePool filter (the kind must be registered).
fn registry() -> gateway_core::FilterRegistry {
    struct Pool;
    impl gateway_core::HttpFilter for Pool {}
    let mut registry = gateway_core::FilterRegistry::with_builtins();
    registry.register_filter(
        gateway_inference::crd::GROUP,
        "InferencePool",
        Arc::new(Pool) as Arc<dyn gateway_core::HttpFilter>,
    );
    registry
}

fn translate(resources: &Resources) -> Translation {
    translator().with_filters(registry()).translate(resources)
}

fn route_conditions<'a>(t: &'a Translation, name: &str) -> &'a [Condition] {
    let status = t
        .status
        .http_route(APP, name)
        .unwrap_or_else(|| panic!("no status for route {name}"));
    assert_eq!(status.parents.len(), 1);
    &status.parents[0].conditions
}

fn pool_conditions<'a>(t: &'a Translation, pool: &str, gateway: &str) -> &'a [Condition] {
    &t.status
        .inference_pool(APP, pool)
        .unwrap_or_else(|| panic!("no status for pool {pool}"))
        .parents
        .iter()
        .find(|p| p.parent_ref.name == gateway)
        .unwrap_or_else(|| panic!("pool {pool} has no parent {gateway}"))
        .conditions
}

fn served_route(t: &Translation, name: &str) -> Arc<Route> {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.routes)
        .find(|r| r.namespace == APP && r.name == name)
        .unwrap_or_else(|| panic!("route {name} not served"))
        .clone()
}

fn pool_settings(route: &Route, rule: usize) -> InferencePoolSettings {
    match route.rules[rule].backends[0].filters.last() {
        Some(Filter::ExtensionRef(ExtensionRef {
            config: Some(config),
            ..
        })) => serde_json::from_value(config.clone()).expect("settings"),
        other => panic!("no pool filter: {other:?}"),
    }
}

#[test]
fn inference_pool_accepted() {
    let t = translate(&load(&["inferencepool_accepted.yaml"]));
    assert_condition(
        route_conditions(&t, "httproute-for-inferencepool-accepted"),
        "Accepted",
        "True",
        "Accepted",
    );
    let pool = pool_conditions(&t, "primary-inference-pool", "conformance-primary");
    assert_condition(pool, "Accepted", "True", "Accepted");
    assert_condition(pool, "ResolvedRefs", "True", "ResolvedRefs");
    let settings = pool_settings(&served_route(&t, "httproute-for-inferencepool-accepted"), 0);
    assert_eq!(settings.endpoints.len(), 3);
    assert_eq!(
        settings.endpoint_picker.expect("picker").addresses.len(),
        1,
        "the picker Service's endpoint"
    );
}

#[test]
fn inference_pool_invalid_epp_service() {
    let t = translate(&load(&["inferencepool_invalid_epp_service.yaml"]));
    let route = route_conditions(&t, "httproute-for-invalid-epp-pool");
    assert_condition(route, "Accepted", "True", "Accepted");
    let pool = pool_conditions(&t, "pool-with-invalid-epp", "conformance-primary");
    assert_condition(pool, "ResolvedRefs", "False", "InvalidExtensionRef");
    let picker = pool_settings(&served_route(&t, "httproute-for-invalid-epp-pool"), 0)
        .endpoint_picker
        .expect("picker");
    assert!(picker.addresses.is_empty() && picker.unresolved.is_some());
}

#[test]
fn inference_pool_resolved_refs_condition_follows_the_routes() {
    let v1 = load(&["inferencepool_resolvedrefs_condition.yaml"]);
    let mut translator = translator().with_filters(registry());
    let t = translator.translate(&v1);
    for gateway in ["conformance-primary", "conformance-secondary"] {
        let pool = pool_conditions(&t, "primary-inference-pool", gateway);
        assert_condition(pool, "Accepted", "True", "Accepted");
    }
    let mut v2 = v1.clone();
    v2.http_routes
        .remove(&ObjectKey::new(APP, "httproute-for-primary-gw"));
    let t = translator.translate(&v2);
    let parents = &t
        .status
        .inference_pool(APP, "primary-inference-pool")
        .expect("status")
        .parents;
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].parent_ref.name, "conformance-secondary");
    let mut v3 = v2.clone();
    v3.http_routes
        .remove(&ObjectKey::new(APP, "httproute-for-secondary-gw"));
    let t = translator.translate(&v3);
    assert!(
        t.status
            .inference_pool(APP, "primary-inference-pool")
            .is_none()
    );
}

#[test]
fn httproute_invalid_inference_pool_ref() {
    let t = translate(&load(&["httproute_invalid_inferencepool_ref.yaml"]));
    let route = route_conditions(&t, "httproute-to-non-existent-pool");
    assert_condition(route, "Accepted", "True", "Accepted");
    assert_condition(route, "ResolvedRefs", "False", "BackendNotFound");
}

#[test]
fn inference_pool_missing_epp_ref() {
    let t = translate(&load(&["inferencepool_missing_epp_ref.yaml"]));
    assert_condition(
        route_conditions(&t, "httproute-for-missing-epp-ref-pool"),
        "Accepted",
        "True",
        "Accepted",
    );
    let pool = pool_conditions(&t, "pool-with-missing-epp-ref", "conformance-primary");
    assert_condition(pool, "Accepted", "True", "Accepted");
    let settings = pool_settings(&served_route(&t, "httproute-for-missing-epp-ref-pool"), 0);
    assert!(settings.endpoint_picker.is_none());
}

#[test]
fn inference_pool_app_protocol_and_port_validation() {
    let t = translate(&load(&[
        "inferencepool_appprotocol.yaml",
        "inferencepool_httproute_port_validation.yaml",
    ]));
    let protocol = |route: &str| match &served_route(&t, route).rules[0].backends[0].target {
        BackendTarget::Endpoints(b) => (b.protocol, b.endpoints.len()),
        other => panic!("{route}: {other:?}"),
    };
    assert_eq!(
        protocol("httproute-for-inferencepool-appprotocol-h2c"),
        (BackendProtocol::H2c, 3)
    );
    assert_eq!(
        protocol("httproute-for-inferencepool-appprotocol-http"),
        (BackendProtocol::Http1, 3)
    );
    assert_eq!(
        protocol("httproute-for-inferencepool-appprotocol-default"),
        (BackendProtocol::Http1, 3)
    );
    // Every route of the port validation test resolves its pool, whatever the port.
    let port_routes: Vec<String> = t
        .status
        .documents()
        .iter()
        .filter(|d| {
            d["kind"] == "HTTPRoute"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("port"))
        })
        .map(|d| {
            d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert!(port_routes.len() >= 3, "{port_routes:?}");
    for name in &port_routes {
        let route = route_conditions(&t, name);
        assert_condition(route, "Accepted", "True", "Accepted");
        assert_condition(route, "ResolvedRefs", "True", "ResolvedRefs");
        for rule in &served_route(&t, name).rules {
            match &rule.backends[0].target {
                BackendTarget::Endpoints(b) => assert_eq!(b.endpoints.len(), 3, "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}
