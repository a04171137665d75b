//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use gateway_k8s::{Resources, TranslateOptions, Translator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// The controller name the fixtures' GatewayClass `ours` uses.
pub const CONTROLLER: &str = "example.net/gateway-controller";

/// The path of a fixture file.
pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The text of a fixture file.
pub fn fixture_text(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// Parses a fixture and asserts it has no diagnostics.
pub fn fixture(name: &str) -> Resources {
    let resources = Resources::parse_yaml(&fixture_text(name), name);
    assert!(
        resources.diagnostics.is_empty(),
        "{:?}",
        resources.diagnostics
    );
    resources
}

/// A translator for [`CONTROLLER`] with no pool (everything on 127.0.0.1).
pub fn translator() -> Translator {
    Translator::new(TranslateOptions::new(CONTROLLER))
}

/// The condition of `type_`, which must exist.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

/// Asserts the condition of `type_` has `status` ("True"/"False") and `reason`.
#[track_caller]
pub fn assert_condition(conditions: &[Condition], type_: &str, status: &str, reason: &str) {
    let c = condition(conditions, type_);
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        (status, reason),
        "condition {type_}: {c:?}"
    );
}

/// A fresh self-signed certificate and key, as PEM.
pub fn certificate(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::generate_simple_self_signed(names).expect("rcgen");
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}
