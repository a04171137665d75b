//! Deserialises one YAML fixture of each resource kind and checks the fields, defaults and
//! validation results.

use gateway_inference::crd::{GROUP, conditions, llmd, v1, x_k8s};
use kube::Resource;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture readable");
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn inference_pool_v1_full() {
    let pool: v1::InferencePool = fixture("inferencepool-v1.yaml");
    assert_eq!(v1::InferencePool::group(&()), GROUP);
    assert_eq!(pool.metadata.name.as_deref(), Some("vllm-llama3-8b"));
    assert_eq!(pool.spec.selector.match_labels.len(), 2);
    assert_eq!(
        pool.spec.port_numbers().collect::<Vec<_>>(),
        vec![8000, 8001]
    );
    assert_eq!(pool.spec.app_protocol(), v1::AppProtocol::H2c);
    let epp = pool.spec.endpoint_picker_ref.as_ref().unwrap();
    assert_eq!(
        (epp.group.as_str(), epp.kind.as_str(), epp.name.as_str()),
        ("", "Service", "vllm-llama3-8b-epp")
    );
    assert_eq!(epp.failure_mode, v1::FailureMode::FailOpen);
    pool.spec.validate().unwrap();
    let status = pool.status.unwrap();
    let parent = &status.parents[0];
    assert_eq!(parent.parent_ref.group, "gateway.networking.k8s.io");
    assert_eq!(parent.parent_ref.kind, "Gateway");
    assert_eq!(parent.conditions[0].type_, conditions::ACCEPTED);
    assert_eq!(parent.conditions[0].reason, conditions::REASON_ACCEPTED);
}

#[test]
fn inference_pool_v1_minimal_defaults() {
    let pool: v1::InferencePool = fixture("inferencepool-v1-minimal.yaml");
    assert_eq!(pool.spec.app_protocol, None);
    assert_eq!(pool.spec.app_protocol(), v1::AppProtocol::Http);
    assert!(pool.spec.endpoint_picker_ref.is_none());
    assert!(pool.status.is_none());
    pool.spec.validate().unwrap();
}

#[test]
fn inference_pool_v1alpha2_converts() {
    let pool: x_k8s::InferencePool = fixture("inferencepool-v1alpha2.yaml");
    assert_eq!(
        x_k8s::InferencePool::api_version(&()),
        "inference.networking.x-k8s.io/v1alpha2"
    );
    let spec = pool.spec.to_v1();
    assert_eq!(spec.selector.match_labels["app"], "vllm-legacy");
    assert_eq!(spec.port_numbers().collect::<Vec<_>>(), vec![8000]);
    let epp = spec.endpoint_picker_ref.unwrap();
    assert_eq!(epp.port, Some(v1::Port { number: 9002 }));
    assert_eq!(epp.failure_mode, v1::FailureMode::FailClose);
}

#[test]
fn inference_objectives_both_groups() {
    let o: llmd::InferenceObjective = fixture("inferenceobjective-llmd.yaml");
    assert_eq!(
        llmd::InferenceObjective::api_version(&()),
        "llm-d.ai/v1alpha2"
    );
    assert_eq!(o.spec.priority(), -10);
    assert!(o.spec.pool_ref.refers_to("vllm-llama3-8b"));
    o.spec.validate().unwrap();
    let o: x_k8s::InferenceObjective = fixture("inferenceobjective-x-k8s.yaml");
    let o: llmd::InferenceObjectiveSpec = o.spec.into();
    assert_eq!(o.priority(), 100);
    o.validate().unwrap();
}

#[test]
fn inference_model_rewrites_both_groups() {
    let r: llmd::InferenceModelRewrite = fixture("inferencemodelrewrite-llmd.yaml");
    r.spec.validate().unwrap();
    assert_eq!(r.spec.rules.len(), 2);
    assert_eq!(r.spec.rules[0].matches[0].model.value, "food-review");
    assert_eq!(r.spec.rules[0].targets[1].weight, Some(10));
    assert!(r.spec.rules[1].matches.is_empty());
    let r: x_k8s::InferenceModelRewrite = fixture("inferencemodelrewrite-x-k8s.yaml");
    let spec: llmd::InferenceModelRewriteSpec = r.spec.into();
    assert_eq!(
        spec.rules[0].matches[0].model.match_type,
        llmd::MatchType::Exact
    );
    spec.validate().unwrap();
}

#[test]
fn invalid_fixture_is_rejected_by_validate() {
    let mut pool: v1::InferencePool = fixture("inferencepool-v1.yaml");
    pool.spec.target_ports.push(v1::Port { number: 8000 });
    let err = pool.spec.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.targetPorts[2].number: port numbers must be unique"
    );
}

#[test]
fn generated_crds_name_the_upstream_resources() {
    use kube::CustomResourceExt;
    let pool = v1::InferencePool::crd();
    assert_eq!(pool.spec.group, GROUP);
    assert_eq!(pool.spec.names.plural, "inferencepools");
    assert_eq!(
        pool.spec.names.short_names,
        Some(vec!["infpool".to_owned()])
    );
    assert_eq!(pool.spec.scope, "Namespaced");
    assert!(
        pool.spec.versions[0]
            .subresources
            .as_ref()
            .unwrap()
            .status
            .is_some()
    );
    assert_eq!(llmd::InferenceObjective::crd().spec.group, "llm-d.ai");
    assert_eq!(
        llmd::InferenceModelRewrite::crd().spec.names.kind,
        "InferenceModelRewrite"
    );
    assert_eq!(
        x_k8s::InferencePool::crd().spec.versions[0].name,
        "v1alpha2"
    );
    assert_eq!(
        x_k8s::InferenceObjective::crd().spec.group,
        "inference.networking.x-k8s.io"
    );
    // The schema carries the enums, so a generated CRD rejects bad values server-side too.
    let schema = serde_json::to_string(&pool.spec.versions[0].schema).unwrap();
    assert!(schema.contains("kubernetes.io/h2c") && schema.contains("FailClose"));
}
