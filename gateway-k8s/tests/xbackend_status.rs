//! XBackend status: `Accepted` from translation, `ResolvedRefs` from what the data plane reports
//! on the names (`gateway_core::DnsStatus`), rendered into the status documents.

mod common;

use std::time::{Duration, UNIX_EPOCH};

use common::*;
use gateway_core::DnsStatus;
use gateway_k8s::StatusReport;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).expect("timestamp"))
}

fn conditions<'a>(report: &'a StatusReport, name: &str) -> &'a [Condition] {
    &report
        .xbackend("apps", name)
        .unwrap_or_else(|| panic!("no status for XBackend {name}"))
        .conditions
}

fn document<'a>(report: &'a StatusReport, name: &str) -> &'a serde_json::Value {
    report
        .documents()
        .iter()
        .find(|d| d["kind"] == "XBackend" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no document for XBackend {name}"))
}

fn dns(hostname: &str, addresses: &[&str], error: Option<&str>) -> DnsStatus {
    DnsStatus {
        hostname: hostname.into(),
        port: 8080,
        addresses: addresses.iter().map(|a| a.parse().expect("ip")).collect(),
        last_error: error.map(Into::into),
        resolved_at: (!addresses.is_empty()).then(|| UNIX_EPOCH + Duration::from_secs(100)),
    }
}

#[test]
fn translation_accepts_servable_xbackends_that_our_routes_use() {
    let mut translator = translator();
    let t = translator.translate_at(&fixture("xbackend-status.yaml"), at(10));
    let report = &t.status;

    for name in ["api", "down", "stale", "pending"] {
        let c = conditions(report, name);
        assert_eq!(c.len(), 1, "{name}: {c:?}");
        assert_condition(c, "Accepted", "True", "Accepted");
    }
    assert!(
        condition(conditions(report, "api"), "Accepted")
            .message
            .contains("API.example.com")
    );
    assert_eq!(
        condition(conditions(report, "api"), "Accepted").observed_generation,
        Some(3)
    );
    assert_condition(
        conditions(report, "tls"),
        "Accepted",
        "False",
        "UnsupportedValue",
    );
    assert!(
        condition(conditions(report, "tls"), "Accepted")
            .message
            .contains("TLS mode Simple")
    );
    assert_condition(conditions(report, "broken"), "Accepted", "False", "Invalid");

    // Not used by a route of ours: no status, echoed as written.
    assert!(report.xbackend("apps", "unused").is_none());
    assert_eq!(document(report, "unused")["status"]["written"], "elsewhere");
    // The echoed documents carry the computed status.
    assert_eq!(
        document(report, "api")["status"]["conditions"][0]["type"],
        "Accepted"
    );
}

#[test]
fn resolution_results_become_resolved_refs() {
    let mut translator = translator();
    let mut t = translator.translate_at(&fixture("xbackend-status.yaml"), at(10));
    let results = vec![
        dns("api.example.com", &["192.0.2.10", "2001:db8::1"], None),
        dns(
            "down.example.com",
            &[],
            Some("no record found for down.example.com."),
        ),
        dns(
            "stale.example.com",
            &["192.0.2.20"],
            Some("request timed out"),
        ),
    ];
    translator.resolution_status_at(&mut t.status, &results, at(20));
    let report = &t.status;

    let api = conditions(report, "api");
    assert_eq!(api[0].type_, "Accepted");
    assert_condition(api, "ResolvedRefs", "True", "ResolvedRefs");
    let message = &condition(api, "ResolvedRefs").message;
    assert!(
        message.contains("192.0.2.10") && message.contains("2001:db8::1"),
        "{message}"
    );
    assert_eq!(condition(api, "ResolvedRefs").observed_generation, Some(3));

    let down = conditions(report, "down");
    assert_condition(down, "ResolvedRefs", "False", "ResolutionFailed");
    assert!(
        condition(down, "ResolvedRefs")
            .message
            .contains("no record found")
    );

    // The latest resolution failed, but the last good addresses still serve.
    let stale = conditions(report, "stale");
    assert_condition(stale, "ResolvedRefs", "True", "ResolvedRefs");
    let message = &condition(stale, "ResolvedRefs").message;
    assert!(
        message.contains("192.0.2.20") && message.contains("request timed out"),
        "{message}"
    );

    assert_condition(
        conditions(report, "pending"),
        "ResolvedRefs",
        "False",
        "Pending",
    );
    // An XBackend that cannot be served gets no resolution condition.
    assert_eq!(conditions(report, "tls").len(), 1);
    assert_eq!(conditions(report, "broken").len(), 1);

    // Rendered into the documents and the YAML stream.
    let doc = document(report, "api");
    assert_eq!(doc["status"]["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(doc["status"]["conditions"][1]["status"], "True");
    let yaml = report.to_yaml();
    assert!(yaml.contains("reason: ResolutionFailed"), "{yaml}");
}

#[test]
fn resolved_refs_transition_time_follows_its_status() {
    let mut translator = translator();
    let resources = fixture("xbackend-status.yaml");
    let mut t = translator.translate_at(&resources, at(10));
    let ok = vec![dns("api.example.com", &["192.0.2.10"], None)];
    translator.resolution_status_at(&mut t.status, &ok, at(20));
    let first = condition(conditions(&t.status, "api"), "ResolvedRefs").clone();
    assert_eq!(first.last_transition_time, at(20));

    // New addresses, same status: the transition time stays, the message follows.
    let moved = vec![dns("api.example.com", &["192.0.2.11"], None)];
    let mut t = translator.translate_at(&resources, at(30));
    translator.resolution_status_at(&mut t.status, &moved, at(30));
    let second = condition(conditions(&t.status, "api"), "ResolvedRefs").clone();
    assert_eq!(second.last_transition_time, at(20));
    assert!(second.message.contains("192.0.2.11"));
    // Applying the same results twice keeps one condition.
    translator.resolution_status_at(&mut t.status, &moved, at(35));
    assert_eq!(conditions(&t.status, "api").len(), 2);

    // The name stops resolving and has no address: False, new transition time.
    let gone = vec![dns("api.example.com", &[], Some("NXDOMAIN"))];
    translator.resolution_status_at(&mut t.status, &gone, at(40));
    let third = condition(conditions(&t.status, "api"), "ResolvedRefs");
    assert_eq!(third.status, "False");
    assert_eq!(third.last_transition_time, at(40));
}
