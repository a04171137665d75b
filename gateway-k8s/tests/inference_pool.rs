//! InferencePool backendRefs: translated into a backend of the pool's Pods with the
//! InferencePool filter and its settings (`gateway_inference::settings`), only when the filter
//! registry has the kind; pool status per Gateway; Pod changes through the incremental
//! translator.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use gateway_core::config::{
    BackendPolicy, BackendProtocol, BackendRef, BackendTarget, ExtensionRef, Filter, LoadBalancer,
    Route,
};
use gateway_inference::crd::v1::{AppProtocol, FailureMode};
use gateway_inference::metrics::Engine;
use gateway_inference::settings::{InferencePoolSettings, LOAD_BALANCER};
use gateway_k8s::{GenericKey, Resources, Translation, Translator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).expect("timestamp"))
}

/// A registry with a stand-in for the data plane's InferencePool filter: it accepts settings
/// that deserialise as [`InferencePoolSettings`], and only those.
fn registry() -> gateway_core::FilterRegistry {
    struct Pool;
    impl gateway_core::HttpFilter for Pool {}
    let mut registry = gateway_core::FilterRegistry::with_builtins();
    registry.register(
        gateway_inference::crd::GROUP,
        "InferencePool",
        |r: &ExtensionRef| {
            let config = r.config.clone().unwrap_or_default();
            serde_json::from_value::<InferencePoolSettings>(config).map_err(|e| {
                gateway_core::Error::new(gateway_core::ErrorKind::InvalidConfig, e.to_string())
            })?;
            Ok(Arc::new(Pool) as Arc<dyn gateway_core::HttpFilter>)
        },
    );
    registry
}

fn pool_translator() -> Translator {
    translator().with_filters(registry())
}

fn translate(resources: &Resources) -> Translation {
    pool_translator().translate_at(resources, at(100))
}

/// Route `namespace/name` as served on the first listener that has it.
fn served_route(t: &Translation, namespace: &str, name: &str) -> Arc<Route> {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .flat_map(|l| &l.routes)
        .find(|r| r.namespace == namespace && r.name == name)
        .unwrap_or_else(|| panic!("route {namespace}/{name} not served"))
        .clone()
}

fn backend(t: &Translation, route: &str, index: usize) -> BackendRef {
    served_route(t, "llm", route).rules[0].backends[index].clone()
}

fn endpoints(b: &BackendRef) -> &gateway_core::config::Backend {
    match &b.target {
        BackendTarget::Endpoints(backend) => backend,
        other => panic!("{} is not served by endpoints: {other:?}", b.name),
    }
}

/// The settings of the InferencePool filter of `b` (its last filter).
fn settings(b: &BackendRef) -> InferencePoolSettings {
    match b.filters.last() {
        Some(Filter::ExtensionRef(r)) => {
            assert_eq!(
                (r.group.as_str(), r.kind.as_str()),
                ("inference.networking.k8s.io", "InferencePool")
            );
            serde_json::from_value(r.config.clone().expect("settings")).expect("settings parse")
        }
        other => panic!("no InferencePool filter on {}: {other:?}", b.name),
    }
}

fn addresses(list: &[&str]) -> Vec<SocketAddr> {
    list.iter().map(|a| a.parse().expect("address")).collect()
}

fn route_conditions<'a>(t: &'a Translation, namespace: &str, name: &str) -> &'a [Condition] {
    &t.status
        .http_route(namespace, name)
        .unwrap_or_else(|| panic!("no status for route {name}"))
        .parents[0]
        .conditions
}

/// The conditions of pool `name`'s parent entry for Gateway `infra/gateway`.
fn pool_conditions<'a>(t: &'a Translation, name: &str, gateway: &str) -> &'a [Condition] {
    &t.status
        .inference_pool("llm", name)
        .unwrap_or_else(|| panic!("no status for pool {name}"))
        .parents
        .iter()
        .find(|p| p.parent_ref.name == gateway)
        .unwrap_or_else(|| panic!("pool {name} has no parent {gateway}"))
        .conditions
}

fn pool_document<'a>(t: &'a Translation, group: &str, name: &str) -> &'a serde_json::Value {
    t.status
        .documents()
        .iter()
        .find(|d| {
            d["kind"] == "InferencePool"
                && d["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with(group))
                && d["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no document for pool {name}"))
}

#[test]
fn pool_endpoints_are_ready_pods_times_target_ports() {
    let t = translate(&fixture("inference-pool.yaml"));
    let pool = backend(&t, "weighted", 0);
    // The backendRef's port (1234) is ignored.
    assert_eq!(pool.name, "llm/pool");
    assert_eq!(pool.weight, 70);
    let served = endpoints(&pool);
    // vllm-b, vllm-a, vllm-v6 (sorted by address); not the Pod that is not Ready, has no IP, is
    // terminating, does not match, or lives in another namespace.
    let expected = addresses(&[
        "10.0.0.1:8000",
        "10.0.0.1:8002",
        "10.0.0.2:8000",
        "10.0.0.2:8002",
        "[fd00::5]:8000",
        "[fd00::5]:8002",
    ]);
    assert_eq!(served.endpoints, expected);
    assert_eq!(served.protocol, BackendProtocol::Http1);
    assert_eq!(
        served.policy,
        BackendPolicy {
            load_balancer: LoadBalancer::Custom(LOAD_BALANCER.into()),
            ..BackendPolicy::default()
        }
    );
    assert_eq!(LOAD_BALANCER, "inference.networking.k8s.io/InferencePool");
    assert!(served.tls.is_none());
    assert_eq!(pool.filters.len(), 1);
    let Some(Filter::ExtensionRef(filter)) = pool.filters.last() else {
        unreachable!("checked by settings()");
    };
    assert_eq!(filter.name, "pool");
    // The registry's factory (standing in for the data plane's) accepts the settings.
    assert!(matches!(registry().build(filter), Some(Ok(_))));

    let s = settings(&pool);
    assert_eq!(
        (s.pool.namespace.as_str(), s.pool.name.as_str()),
        ("llm", "pool")
    );
    assert_eq!(s.target_ports, vec![8002, 8000]);
    assert_eq!(s.app_protocol, AppProtocol::Http);
    let listed: Vec<SocketAddr> = s.endpoints.iter().map(|e| e.address).collect();
    assert_eq!(listed, expected, "same order as the backend's endpoints");
    let pods: Vec<(&str, Engine)> = s
        .endpoints
        .iter()
        .map(|e| (e.pod.as_str(), e.engine))
        .collect();
    assert_eq!(
        pods,
        vec![
            ("llm/vllm-b", Engine::Vllm),
            ("llm/vllm-b", Engine::Vllm),
            ("llm/vllm-a", Engine::Sglang),
            ("llm/vllm-a", Engine::Sglang),
            ("llm/vllm-v6", Engine::TrtllmServe),
            ("llm/vllm-v6", Engine::TrtllmServe),
        ]
    );
    let picker = s.endpoint_picker.expect("endpoint picker");
    assert_eq!(picker.failure_mode, FailureMode::FailOpen);
    // The ready endpoint of the picker Service's EndpointSlice, at the Service port.
    assert_eq!(picker.addresses, addresses(&["10.0.9.1:9002"]));
    assert_eq!(picker.unresolved, None);
    // The route is served as usual.
    assert_condition(
        route_conditions(&t, "llm", "weighted"),
        "Accepted",
        "True",
        "Accepted",
    );
    assert_condition(
        route_conditions(&t, "llm", "weighted"),
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
}

#[test]
fn h2c_pools_and_weights_against_a_service() {
    let t = translate(&fixture("inference-pool.yaml"));
    let h2c = backend(&t, "weighted", 1);
    assert_eq!((h2c.name.as_str(), h2c.weight), ("llm/h2c-pool", 20));
    assert_eq!(endpoints(&h2c).protocol, BackendProtocol::H2c);
    assert_eq!(endpoints(&h2c).endpoints, addresses(&["10.0.0.5:9000"]));
    let s = settings(&h2c);
    assert_eq!(s.app_protocol, AppProtocol::H2c);
    assert!(s.endpoint_picker.is_none(), "no endpointPickerRef");
    assert_eq!(
        serde_json::to_value(&s).expect("json")["appProtocol"],
        "kubernetes.io/h2c"
    );
    // The Service next to the pools keeps its weight and plain backend.
    let web = backend(&t, "weighted", 2);
    assert_eq!((web.name.as_str(), web.weight), ("llm/web:80", 10));
    assert_eq!(endpoints(&web).endpoints, addresses(&["10.0.5.5:80"]));
    assert_eq!(
        endpoints(&web).policy.load_balancer,
        LoadBalancer::RoundRobin
    );
    assert!(web.filters.is_empty());
}

#[test]
fn objectives_and_rewrites_are_gathered_by_pool_ref() {
    let t = translate(&fixture("inference-pool.yaml"));
    let s = settings(&backend(&t, "weighted", 0));
    let objectives: Vec<(&str, i32)> = s
        .objectives
        .iter()
        .map(|o| (o.name.as_str(), o.priority))
        .collect();
    // batch from llm-d.ai (not the x-k8s one of the same name), critical from the x-k8s group,
    // standard without priority (0); not those of another pool or namespace.
    assert_eq!(
        objectives,
        vec![("batch", -1), ("critical", 10), ("standard", 0)]
    );
    let rewrites: Vec<&str> = s.rewrites.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        rewrites,
        vec!["canary", "fallback"],
        "the invalid one left out"
    );
    assert_eq!(
        s.rewrites[0].created,
        Some(Time("2026-01-01T00:00:00Z".parse().expect("time")))
    );
    assert_eq!(s.rewrites[1].created, None);
    let targets: Vec<(&str, Option<i32>)> = s.rewrites[0].spec.rules[0]
        .targets
        .iter()
        .map(|t| (t.model_rewrite.as_str(), t.weight))
        .collect();
    assert_eq!(
        targets,
        vec![("llama-v1", Some(90)), ("llama-v2", Some(10))]
    );
    assert_eq!(s.rewrites[0].spec.rules[0].matches[0].model.value, "llama");

    let h2c = settings(&backend(&t, "weighted", 1));
    assert_eq!(h2c.objectives.len(), 1);
    assert_eq!(
        (h2c.objectives[0].name.as_str(), h2c.objectives[0].priority),
        ("for-h2c", 1)
    );
    assert!(h2c.rewrites.is_empty());
}

#[test]
fn missing_invalid_and_refused_pools_leave_the_backend_unresolved() {
    let t = translate(&fixture("inference-pool.yaml"));
    // A pool that does not exist: BackendNotFound, the route still accepted, the rule answers 500.
    let missing = route_conditions(&t, "llm", "missing");
    assert_condition(missing, "Accepted", "True", "Accepted");
    assert_condition(missing, "ResolvedRefs", "False", "BackendNotFound");
    assert!(
        condition(missing, "ResolvedRefs")
            .message
            .contains("no-such-pool")
    );
    let b = backend(&t, "missing", 0);
    assert!(matches!(b.target, BackendTarget::Unresolved { .. }));
    assert!(b.filters.is_empty());
    assert!(t.status.inference_pool("llm", "no-such-pool").is_none());

    // An invalid pool: BackendNotFound naming the problem, a diagnostic, and the pool's status.
    let invalid = route_conditions(&t, "llm", "invalid");
    assert_condition(invalid, "Accepted", "True", "Accepted");
    assert_condition(invalid, "ResolvedRefs", "False", "BackendNotFound");
    assert!(
        condition(invalid, "ResolvedRefs")
            .message
            .contains("spec.targetPorts"),
        "{invalid:?}"
    );
    assert!(matches!(
        backend(&t, "invalid", 0).target,
        BackendTarget::Unresolved { .. }
    ));
    assert!(
        t.diagnostics.iter().any(|d| {
            let d = d.to_string();
            d.contains("invalid-pool") && d.contains("spec.targetPorts")
        }),
        "{:?}",
        t.diagnostics
    );
    let status = pool_conditions(&t, "invalid-pool", "primary");
    assert_eq!(status.len(), 1);
    assert_condition(status, "Accepted", "False", "NotSupportedByParent");

    // Another namespace without a ReferenceGrant: RefNotPermitted.
    let cross = route_conditions(&t, "elsewhere", "cross");
    assert_condition(cross, "ResolvedRefs", "False", "RefNotPermitted");
}

#[test]
fn an_unresolved_endpoint_picker_keeps_the_route_accepted_and_fails_the_pool_refs() {
    let t = translate(&fixture("inference-pool.yaml"));
    // As conformance InferencePoolInvalidEPPService asks: the route is Accepted (and its own
    // references resolved: the pool exists), the pool says ResolvedRefs=False.
    let route = route_conditions(&t, "llm", "bad-epp");
    assert_condition(route, "Accepted", "True", "Accepted");
    assert_condition(route, "ResolvedRefs", "True", "ResolvedRefs");
    let served = served_route(&t, "llm", "bad-epp");
    let bad = served.rules[0].backends[0].clone();
    assert_eq!(endpoints(&bad).endpoints.len(), 3, "the pool is served");
    let picker = settings(&bad).endpoint_picker.expect("endpoint picker");
    assert_eq!(picker.failure_mode, FailureMode::FailClose);
    assert!(picker.addresses.is_empty());
    let why = picker.unresolved.expect("unresolved");
    assert!(
        why.contains("llm/missing-epp") && why.contains("does not exist"),
        "{why}"
    );
    let status = pool_conditions(&t, "bad-epp-pool", "primary");
    assert_condition(status, "Accepted", "True", "Accepted");
    assert_condition(status, "ResolvedRefs", "False", "InvalidExtensionRef");
    assert_eq!(condition(status, "ResolvedRefs").message, why);

    // An ExternalName Service is refused as a picker.
    let external = served.rules[1].backends[0].clone();
    let why = settings(&external)
        .endpoint_picker
        .expect("endpoint picker")
        .unresolved
        .expect("unresolved");
    assert!(why.contains("ExternalName"), "{why}");
    assert_condition(
        pool_conditions(&t, "external-epp-pool", "primary"),
        "ResolvedRefs",
        "False",
        "InvalidExtensionRef",
    );
    // The resolved picker of `pool`.
    assert_condition(
        pool_conditions(&t, "pool", "primary"),
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
}

#[test]
fn v1alpha2_pools_are_converted_and_get_no_status() {
    let t = translate(&fixture("inference-pool.yaml"));
    let old = backend(&t, "old", 0);
    assert_eq!(old.name, "llm/old-pool");
    assert_eq!(
        endpoints(&old).endpoints,
        addresses(&["10.0.0.1:7000", "10.0.0.2:7000", "[fd00::5]:7000"])
    );
    let s = settings(&old);
    assert_eq!(s.target_ports, vec![7000]);
    let picker = s.endpoint_picker.expect("extensionRef");
    // The v1alpha2 default port of a Service extensionRef (9002), and FailClose.
    assert_eq!(picker.addresses, addresses(&["10.0.9.1:9002"]));
    assert_eq!(picker.failure_mode, FailureMode::FailClose);
    assert_condition(
        route_conditions(&t, "llm", "old"),
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    // Its status (`status.parent`, another schema) is not written.
    assert!(t.status.inference_pool("llm", "old-pool").is_none());
    assert!(
        pool_document(&t, "inference.networking.x-k8s.io", "old-pool")
            .get("status")
            .is_none()
    );
}

#[test]
fn without_the_registry_kind_pools_stay_unsupported() {
    let resources = fixture("inference-pool.yaml");
    for mut translator in [
        translator(),
        translator().with_filters(gateway_core::FilterRegistry::with_builtins()),
    ] {
        let t = translator.translate_at(&resources, at(100));
        let c = route_conditions(&t, "llm", "weighted");
        assert_condition(c, "Accepted", "True", "Accepted");
        assert_condition(c, "ResolvedRefs", "False", "InvalidKind");
        let pool = backend(&t, "weighted", 0);
        assert!(matches!(pool.target, BackendTarget::Unresolved { .. }));
        assert!(pool.filters.is_empty());
        assert_eq!(pool.name, "llm/pool:1234");
        // The Service still resolves.
        assert_eq!(
            endpoints(&backend(&t, "weighted", 2)).endpoints,
            addresses(&["10.0.5.5:80"])
        );
        assert!(t.status.inference_pool("llm", "pool").is_none());
        assert!(
            pool_document(&t, "inference.networking.k8s.io", "pool")
                .get("status")
                .is_none()
        );
    }
}

/// `resources` without route `name` of namespace llm.
fn without_route(resources: &Resources, name: &str) -> Resources {
    let mut out = resources.clone();
    out.http_routes
        .remove(&gateway_k8s::ObjectKey::new("llm", name))
        .unwrap_or_else(|| panic!("no route {name}"));
    out
}

#[test]
fn pool_status_has_one_parent_per_gateway_serving_a_route_to_it() {
    let v1 = fixture("inference-pool.yaml");
    let mut translator = pool_translator();
    let t = translator.translate_at(&v1, at(100));
    let status = t.status.inference_pool("llm", "pool").expect("status");
    let gateways: Vec<(&str, Option<&str>, &str, &str)> = status
        .parents
        .iter()
        .map(|p| {
            (
                p.parent_ref.name.as_str(),
                p.parent_ref.namespace.as_deref(),
                p.parent_ref.group.as_str(),
                p.parent_ref.kind.as_str(),
            )
        })
        .collect();
    assert_eq!(
        gateways,
        vec![
            (
                "primary",
                Some("infra"),
                "gateway.networking.k8s.io",
                "Gateway"
            ),
            (
                "secondary",
                Some("infra"),
                "gateway.networking.k8s.io",
                "Gateway"
            ),
        ]
    );
    for parent in &status.parents {
        assert_eq!(parent.controller_name, CONTROLLER);
        assert_eq!(parent.conditions.len(), 2);
        assert_condition(&parent.conditions, "Accepted", "True", "Accepted");
        assert_condition(&parent.conditions, "ResolvedRefs", "True", "ResolvedRefs");
        for c in &parent.conditions {
            assert_eq!(c.observed_generation, Some(4));
            assert_eq!(c.last_transition_time, at(100));
        }
    }
    // Rendered into the echoed document.
    let doc = pool_document(&t, "inference.networking.k8s.io", "pool");
    assert_eq!(doc["status"]["parents"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        doc["status"]["parents"][1]["parentRef"]["name"],
        "secondary"
    );
    assert_eq!(doc["status"]["parents"][0]["controllerName"], CONTROLLER);
    // A pool no route refers to (but a refused cross-namespace one) has no status.
    assert!(t.status.inference_pool("llm", "unused-pool").is_none());
    assert!(
        pool_document(&t, "inference.networking.k8s.io", "unused-pool")
            .get("status")
            .is_none()
    );

    // Unchanged: the transition times hold.
    let again = translator.translate_at(&v1, at(200));
    for c in &pool_conditions(&again, "pool", "primary").to_vec() {
        assert_eq!(c.last_transition_time, at(100));
    }

    // Without the route on the secondary Gateway, its parent entry goes.
    let v2 = without_route(&v1, "second");
    let t = translator.translate_at(&v2, at(300));
    let parents = &t
        .status
        .inference_pool("llm", "pool")
        .expect("status")
        .parents;
    assert_eq!(parents.len(), 1);
    assert_eq!(parents[0].parent_ref.name, "primary");
    assert_eq!(parents[0].conditions[0].last_transition_time, at(100));
    // Without both, the pool has no parent of ours.
    let v3 = without_route(&v2, "weighted");
    let t = translator.translate_at(&v3, at(400));
    assert!(t.status.inference_pool("llm", "pool").is_none());
    assert!(
        pool_document(&t, "inference.networking.k8s.io", "pool")
            .get("status")
            .is_none()
    );
}

/// `resources` with Pod `name` of namespace llm replaced by `yaml` (`None`: removed).
fn with_pod(resources: &Resources, name: &str, yaml: Option<&str>) -> Resources {
    let key = GenericKey::new("", "Pod", "llm", name);
    let mut out = resources.clone();
    match yaml {
        None => {
            out.others.remove(&key).expect("pod");
        }
        Some(yaml) => {
            let parsed = Resources::parse_yaml(yaml, "pod.yaml");
            assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
            out.others.insert(key.clone(), parsed.others[&key].clone());
        }
    }
    out
}

/// Translates with `incremental` and with a fresh translator and asserts they agree.
fn translate_both(incremental: &mut Translator, resources: &Resources, now: Time) -> Translation {
    let reused = incremental.translate_at(resources, now.clone());
    let fresh = pool_translator().translate_at(resources, now);
    assert_eq!(reused.config, fresh.config);
    let status = |t: &Translation| -> String {
        t.status
            .to_yaml()
            .lines()
            .filter(|l| !l.contains("lastTransitionTime"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(status(&reused), status(&fresh));
    reused
}

#[test]
fn a_pod_change_updates_the_endpoints_through_the_incremental_translator() {
    let v1 = fixture("inference-pool.yaml");
    let mut t = pool_translator();
    let first = translate_both(&mut t, &v1, at(100));
    assert_eq!(
        endpoints(&backend(&first, "weighted", 0)).endpoints.len(),
        6
    );
    // Unchanged input: every route reused.
    translate_both(&mut t, &v1, at(150));
    assert_eq!(t.route_reuse().1, 0);

    // The Pod that was not Ready becomes Ready.
    let v2 = with_pod(
        &v1,
        "vllm-not-ready",
        Some(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: vllm-not-ready, namespace: llm, labels: {app: vllm}}\nstatus:\n  podIP: 10.0.0.3\n  conditions: [{type: Ready, status: \"True\"}]\n",
        ),
    );
    let second = translate_both(&mut t, &v2, at(200));
    assert_eq!(t.route_reuse().0, 0, "a Pod change translates every route");
    let pool = backend(&second, "weighted", 0);
    let served = &endpoints(&pool).endpoints;
    assert_eq!(served.len(), 8);
    assert!(served.contains(&"10.0.0.3:8000".parse().expect("address")));
    assert!(
        settings(&pool)
            .endpoints
            .iter()
            .any(|e| e.pod == "llm/vllm-not-ready")
    );

    // A Pod goes away.
    let v3 = with_pod(&v2, "vllm-a", None);
    let third = translate_both(&mut t, &v3, at(300));
    let served = endpoints(&backend(&third, "weighted", 0)).endpoints.clone();
    assert_eq!(
        served,
        addresses(&[
            "10.0.0.1:8000",
            "10.0.0.1:8002",
            "10.0.0.3:8000",
            "10.0.0.3:8002",
            "[fd00::5]:8000",
            "[fd00::5]:8002",
        ])
    );
}
