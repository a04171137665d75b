//! Gateway `spec.tls.frontend` (client certificate validation): configuration and status.

mod common;

use std::net::SocketAddr;

use common::*;
use gateway_api::gateways::GatewayStatusListeners;
use gateway_core::config::*;
use gateway_k8s::{Resources, TranslateOptions, Translation, Translator};

/// A self-signed CA certificate, as PEM.
fn ca(name: &str) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.self_signed(&key).expect("CA").pem()
}

struct Pki {
    ca: String,
    ca2: String,
}

fn resources() -> (Resources, Pki) {
    let (cert, key) = certificate(&["example.com"]);
    let pki = Pki {
        ca: ca("first"),
        ca2: ca("second"),
    };
    let json = |s: &str| serde_json::to_string(s).expect("json");
    let text = fixture_text("client-validation.yaml")
        .replace("__CERT__", &json(&cert))
        .replace("__KEY__", &json(&key))
        .replace("__CA2__", &json(&pki.ca2))
        .replace("__CA__", &json(&pki.ca));
    let resources = Resources::parse_yaml(&text, "client-validation.yaml");
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    (resources, pki)
}

fn pooled() -> Translator {
    let mut options = TranslateOptions::new(CONTROLLER);
    options.address_pool = Some("10.9.0.0/24".parse().expect("pool"));
    Translator::new(options)
}

fn listener_status(t: &Translation, gateway: &str, listener: &str) -> GatewayStatusListeners {
    t.status
        .gateway("infra", gateway)
        .and_then(|g| g.listeners.clone())
        .unwrap_or_default()
        .into_iter()
        .find(|l| l.name == listener)
        .unwrap_or_else(|| panic!("no status for {gateway}/{listener}"))
}

/// The configured listener `infra/<gateway>/<listener>`, if it is served.
fn served<'a>(t: &'a Translation, gateway: &str, listener: &str) -> Option<&'a Listener> {
    let name = format!("infra/{gateway}/{listener}");
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.name == name)
}

#[test]
fn frontend_validation_per_port() {
    let (resources, pki) = resources();
    let t = pooled().translate(&resources);

    // Default: both bundles (the cross-namespace one is granted), AllowValidOnly.
    let https = served(&t, "mtls", "https").expect("https served");
    assert_eq!(
        https.tls.as_ref().and_then(|t| t.client_validation.clone()),
        Some(ClientValidation {
            ca_pem: vec![pki.ca.clone(), pki.ca2.clone()],
            mode: ClientValidationMode::AllowValidOnly,
        })
    );
    let l = listener_status(&t, "mtls", "https");
    assert_condition(&l.conditions, "Accepted", "True", "Accepted");
    assert_condition(&l.conditions, "ResolvedRefs", "True", "ResolvedRefs");
    assert_condition(&l.conditions, "Programmed", "True", "Programmed");

    // The per-port override wins on its port.
    let insecure = served(&t, "mtls", "https-insecure").expect("served");
    assert_eq!(
        insecure
            .tls
            .as_ref()
            .and_then(|t| t.client_validation.clone()),
        Some(ClientValidation {
            ca_pem: vec![pki.ca2.clone()],
            mode: ClientValidationMode::AllowInsecureFallback,
        })
    );

    // One bad reference among good ones: ResolvedRefs=False, still served with the good one.
    let partial = served(&t, "mtls", "https-partial").expect("served");
    assert_eq!(
        partial
            .tls
            .as_ref()
            .and_then(|t| t.client_validation.as_ref())
            .map(|v| v.ca_pem.clone()),
        Some(vec![pki.ca.clone()])
    );
    let l = listener_status(&t, "mtls", "https-partial");
    assert_condition(&l.conditions, "Accepted", "True", "Accepted");
    assert_condition(
        &l.conditions,
        "ResolvedRefs",
        "False",
        "InvalidCACertificateRef",
    );
    assert_condition(&l.conditions, "Programmed", "True", "Programmed");

    // An override for an HTTP port changes nothing.
    let l = listener_status(&t, "mtls", "http");
    assert_condition(&l.conditions, "ResolvedRefs", "True", "ResolvedRefs");
    assert!(served(&t, "mtls", "http").is_some_and(|l| l.tls.is_none()));

    // Some listener is insecure: the Gateway says so.
    let gw = t.status.gateway("infra", "mtls").expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(
        conditions,
        "InsecureFrontendValidationMode",
        "True",
        "ConfigurationChanged",
    );
    assert_eq!(
        condition(conditions, "InsecureFrontendValidationMode").observed_generation,
        Some(4)
    );
    assert_condition(conditions, "Accepted", "True", "Accepted");

    // No frontend settings: nothing asked of clients, no insecure condition.
    let plain = served(&t, "plain", "https").expect("served");
    assert_eq!(
        plain.tls.as_ref().map(|t| t.client_validation.clone()),
        Some(None)
    );
    let gw = t.status.gateway("infra", "plain").expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert!(
        conditions
            .iter()
            .all(|c| c.type_ != "InsecureFrontendValidationMode")
    );
}

#[test]
fn listeners_without_a_valid_ca_are_not_served() {
    let (resources, _) = resources();
    let t = pooled().translate(&resources);
    for (listener, reason) in [
        ("https", "InvalidCACertificateRef"),
        ("wrong-kind", "InvalidCACertificateKind"),
        ("not-granted", "RefNotPermitted"),
        ("no-key", "InvalidCACertificateRef"),
    ] {
        let l = listener_status(&t, "mtls-broken", listener);
        assert_condition(&l.conditions, "ResolvedRefs", "False", reason);
        assert_condition(&l.conditions, "Accepted", "False", "NoValidCACertificate");
        assert_condition(&l.conditions, "Programmed", "False", "Invalid");
        assert!(
            served(&t, "mtls-broken", listener).is_none(),
            "{listener} must not be served without its validation"
        );
    }
    // The HTTP listener keeps serving.
    let l = listener_status(&t, "mtls-broken", "http");
    for type_ in ["Accepted", "ResolvedRefs", "Programmed"] {
        assert_eq!(condition(&l.conditions, type_).status, "True", "{type_}");
    }
    assert!(served(&t, "mtls-broken", "http").is_some());
    let gw = t.status.gateway("infra", "mtls-broken").expect("status");
    let conditions = gw.conditions.as_deref().unwrap_or_default();
    assert_condition(conditions, "Accepted", "True", "ListenersNotValid");
    assert!(
        conditions
            .iter()
            .all(|c| c.type_ != "InsecureFrontendValidationMode")
    );
}

#[test]
fn one_socket_cannot_carry_two_validations() {
    // Without a pool every Gateway binds 127.0.0.1: `mtls` (older by name) owns :443 with its
    // validation; `plain` asks for none there.
    let (resources, _) = resources();
    let t = translator().translate(&resources);
    let l = listener_status(&t, "plain", "https");
    assert_condition(&l.conditions, "Accepted", "False", "PortUnavailable");
    assert_condition(&l.conditions, "Programmed", "False", "Invalid");
    assert!(served(&t, "plain", "https").is_none());
    let bind = t
        .config
        .binds
        .iter()
        .find(|b| b.address == "127.0.0.1:443".parse::<SocketAddr>().expect("addr"))
        .expect("443 bind");
    assert!(
        bind.listeners.iter().all(|l| l
            .tls
            .as_ref()
            .is_some_and(|t| t.client_validation.is_some())),
        "{:?}",
        bind.listeners.iter().map(|l| &l.name).collect::<Vec<_>>()
    );
}
