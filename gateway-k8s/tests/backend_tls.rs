//! BackendTLSPolicy and the Gateway's backend client certificate: what the data plane gets, and
//! the statuses.

mod common;

use common::*;
use gateway_core::config::{
    BackendTarget, Config, Route, SubjectAltName, UpstreamTls, UpstreamTrust,
};
use gateway_k8s::Resources;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

fn indent(pem: &str) -> String {
    pem.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

struct Fixture {
    resources: Resources,
    ca: String,
    client_cert: String,
}

fn load() -> Fixture {
    let (ca, _) = certificate(&["ca.example.com"]);
    let (client_cert, client_key) = certificate(&["gateway.example.com"]);
    let text = fixture_text("backend-tls.yaml")
        .replace("@@CA_PEM@@", &indent(&ca))
        .replace("@@CLIENT_CERT@@", &indent(&client_cert))
        .replace("@@CLIENT_KEY@@", &indent(&client_key));
    let resources = Resources::parse_yaml(&text, "backend-tls.yaml");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    Fixture {
        resources,
        ca,
        client_cert,
    }
}

/// The route `apps/r` as served on the listener of port `port`.
fn route(config: &Config, port: u16) -> &Route {
    config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.port == port)
        .and_then(|l| l.routes.first())
        .unwrap_or_else(|| panic!("no route on port {port}: {config:?}"))
}

/// The TLS settings of rule `rule`'s backend; `Err` with the reason when it is unresolved.
fn tls(route: &Route, rule: usize) -> Result<Option<&UpstreamTls>, &str> {
    match &route.rules[rule].backends[0].target {
        BackendTarget::Endpoints(b) => Ok(b.tls.as_ref()),
        BackendTarget::Dns(d) => Ok(d.tls.as_ref()),
        BackendTarget::Unresolved { reason } => Err(reason),
    }
}

fn policy<'a>(report: &'a gateway_k8s::StatusReport, name: &str) -> Option<&'a serde_json::Value> {
    report
        .documents()
        .iter()
        .find(|d| d["kind"] == "BackendTLSPolicy" && d["metadata"]["name"] == name)
}

fn ancestors(report: &gateway_k8s::StatusReport, name: &str) -> Vec<(String, Vec<Condition>)> {
    let doc = policy(report, name).unwrap_or_else(|| panic!("no document for {name}"));
    doc["status"]["ancestors"]
        .as_array()
        .unwrap_or_else(|| panic!("no status for {name}: {doc}"))
        .iter()
        .map(|a| {
            (
                a["ancestorRef"]["name"].as_str().unwrap_or("").to_owned(),
                serde_json::from_value(a["conditions"].clone()).expect("conditions"),
            )
        })
        .collect()
}

#[test]
fn policies_give_services_tls_and_the_gateway_its_client_certificate() {
    let f = load();
    let t = translator().translate(&f.resources);
    let on_gw = route(&t.config, 80);

    let secure = tls(on_gw, 0).expect("resolved").expect("TLS");
    assert_eq!(secure.hostname, "secure.example.com");
    assert_eq!(secure.trust, UpstreamTrust::Pem(vec![f.ca.clone()]));
    assert!(secure.subject_alt_names.is_empty());
    let client = secure.client_certificate.as_ref().expect("client cert");
    assert_eq!(client.cert_pem.trim(), f.client_cert.trim());

    // The port-specific policy wins over the whole-Service one for its port.
    let other = tls(on_gw, 1).expect("resolved").expect("TLS");
    assert_eq!(other.hostname, "other.example.com");
    assert_eq!(
        other.subject_alt_names,
        vec![
            SubjectAltName::Hostname("san.example.com".into()),
            SubjectAltName::Uri("spiffe://example.com/backend".into()),
        ]
    );

    // Invalid CA references: requests fail (500), never plain text.
    assert!(tls(on_gw, 2).expect_err("bad-ca").contains("missing"));
    assert!(tls(on_gw, 3).expect_err("bad-kind").contains("Pod"));
    // No policy: plain TCP.
    assert_eq!(tls(on_gw, 4), Ok(None));

    // The Gateway whose client certificate does not resolve presents none.
    let on_broken = route(&t.config, 8080);
    let secure = tls(on_broken, 0).expect("resolved").expect("TLS");
    assert!(secure.client_certificate.is_none());
}

#[test]
fn policy_statuses_per_ancestor_gateway() {
    let f = load();
    let t = translator().translate(&f.resources);
    let report = &t.status;

    let whole = ancestors(report, "whole-service");
    assert_eq!(
        whole.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(),
        ["broken-client", "gw"]
    );
    for (_, c) in &whole {
        assert_condition(c, "Accepted", "True", "Accepted");
        assert_condition(c, "ResolvedRefs", "True", "ResolvedRefs");
        assert_eq!(condition(c, "Accepted").observed_generation, Some(4));
    }
    let (_, c) = &ancestors(report, "port-a")[0];
    assert_condition(c, "Accepted", "True", "Accepted");
    // Same creation time: the name breaks the tie, port-a is older.
    let (_, c) = &ancestors(report, "port-b")[0];
    assert_condition(c, "Accepted", "False", "Conflicted");

    let (_, c) = &ancestors(report, "bad-ca")[0];
    assert_condition(c, "Accepted", "False", "NoValidCACertificate");
    assert_condition(c, "ResolvedRefs", "False", "InvalidCACertificateRef");
    assert!(
        condition(c, "ResolvedRefs")
            .message
            .contains("no key ca.crt")
    );
    let (_, c) = &ancestors(report, "bad-kind")[0];
    assert_condition(c, "Accepted", "False", "NoValidCACertificate");
    assert_condition(c, "ResolvedRefs", "False", "InvalidKind");

    // No Gateway of ours routes to its target: no status.
    assert!(policy(report, "unused").expect("echoed")["status"].is_null());

    // Gateway statuses: ResolvedRefs for the backend client certificate.
    let gw = report.gateway("apps", "gw").expect("gw");
    assert_condition(
        gw.conditions.as_deref().unwrap_or_default(),
        "ResolvedRefs",
        "True",
        "ResolvedRefs",
    );
    let broken = report.gateway("apps", "broken-client").expect("broken");
    let c = broken.conditions.as_deref().unwrap_or_default();
    assert_condition(c, "ResolvedRefs", "False", "InvalidClientCertificateRef");
    // The Gateway keeps serving.
    assert_condition(c, "Programmed", "True", "Programmed");
}
