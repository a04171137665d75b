//! The upstream conformance base manifests (read at run time from the shared folder) with a
//! GatewayClass and the generated certificate Secret: every shared Gateway is Accepted and
//! Programmed.

mod common;

use std::path::PathBuf;

use common::*;
use gateway_k8s::{Resources, TranslateOptions, Translator};

fn manifests_path() -> PathBuf {
    match std::env::var_os("GATEWAY_API_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir).join("base/manifests.yaml"),
        // `../shared` beside the repository checkout.
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/conformance/gateway-api/base/manifests.yaml"
        )),
    }
}

#[test]
fn shared_gateways_are_accepted_and_programmed() {
    let path = manifests_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (../shared must sit beside the checkout)",
            path.display()
        )
    });
    let mut resources = Resources::parse_yaml(
        &text.replace("{GATEWAY_CLASS_NAME}", "conformance"),
        "manifests.yaml",
    );
    // Deployments and ConfigMaps are not read: they are diagnostics, not errors.
    assert!(
        resources
            .diagnostics
            .iter()
            .all(|d| d.message.contains("unsupported kind"))
    );

    let (cert, key) = certificate(&["*", "*.org", "*.wildcard.org"]);
    let extra = format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: conformance}}
spec: {{controllerName: "{CONTROLLER}"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: tls-validity-checks-certificate, namespace: gateway-conformance-infra}}
type: kubernetes.io/tls
stringData:
  tls.crt: {}
  tls.key: {}
"#,
        serde_json::to_string(&cert).expect("json"),
        serde_json::to_string(&key).expect("json"),
    );
    resources.merge(Resources::parse_yaml(&extra, "extra.yaml"));

    let mut options = TranslateOptions::new(CONTROLLER);
    options.address_pool = Some("127.0.1.0/24".parse().expect("pool"));
    let t = Translator::new(options).translate(&resources);

    let names = [
        "same-namespace",
        "same-namespace-with-https-listener",
        "all-namespaces",
        "backend-namespaces",
    ];
    let mut addresses = Vec::new();
    for name in names {
        let gw = t
            .status
            .gateway("gateway-conformance-infra", name)
            .unwrap_or_else(|| panic!("no status for {name}"));
        let conditions = gw.conditions.as_deref().unwrap_or_default();
        assert_condition(conditions, "Accepted", "True", "Accepted");
        assert_condition(conditions, "Programmed", "True", "Programmed");
        for l in gw.listeners.iter().flatten() {
            assert_condition(&l.conditions, "Accepted", "True", "Accepted");
            assert_condition(&l.conditions, "Programmed", "True", "Programmed");
            assert_condition(&l.conditions, "ResolvedRefs", "True", "ResolvedRefs");
        }
        addresses.push(gw.addresses.clone().unwrap_or_default()[0].value.clone());
    }
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        names.len(),
        "each Gateway has its own address"
    );
    let listeners: usize = t.config.binds.iter().map(|b| b.listeners.len()).sum();
    assert_eq!(listeners, 7);
}
