//! ClientTrafficPolicy: YAML in, per-listener path normalisation and policy status out.

mod common;

use common::*;
use gateway_core::config::{EscapedSlashesAction, PathNormalization};
use gateway_k8s::ClientTrafficPolicyStatus;
use gateway_k8s::Translation;

fn path_of(t: &Translation, listener: &str) -> PathNormalization {
    t.config
        .binds
        .iter()
        .flat_map(|b| &b.listeners)
        .find(|l| l.name == listener)
        .unwrap_or_else(|| panic!("no listener {listener} in {:?}", t.config))
        .path_normalization
}

/// (gateway, sectionName, status, reason) of each ancestor entry.
fn ancestors(status: &ClientTrafficPolicyStatus) -> Vec<(String, Option<String>, String, String)> {
    status
        .ancestors
        .iter()
        .map(|a| {
            assert_eq!(a.controller_name, CONTROLLER);
            assert_eq!(a.ancestor_ref.group, "gateway.networking.k8s.io");
            assert_eq!(a.ancestor_ref.kind, "Gateway");
            assert_eq!(a.ancestor_ref.namespace, "apps");
            let c = condition(&a.conditions, "Accepted");
            (
                a.ancestor_ref.name.clone(),
                a.ancestor_ref.section_name.clone(),
                c.status.clone(),
                c.reason.clone(),
            )
        })
        .collect()
}

fn entry(
    gateway: &str,
    section: Option<&str>,
    status: &str,
    reason: &str,
) -> (String, Option<String>, String, String) {
    (
        gateway.into(),
        section.map(Into::into),
        status.into(),
        reason.into(),
    )
}

#[test]
fn policies_set_listener_path_normalisation_with_precedence() {
    let t = translator().translate(&fixture("client-traffic-policy.yaml"));

    // `wide` on gw, overridden on listener api by `api-only`.
    let keep = PathNormalization {
        merge_slashes: true,
        escaped_slashes: EscapedSlashesAction::KeepUnchanged,
    };
    assert_eq!(path_of(&t, "apps/gw/http"), keep);
    assert_eq!(path_of(&t, "apps/gw/other"), keep);
    assert_eq!(
        path_of(&t, "apps/gw/api"),
        PathNormalization {
            merge_slashes: false,
            escaped_slashes: EscapedSlashesAction::RejectRequest,
        }
    );
    // gw2: `late-wide`; the older but invalid `broken` does not count.
    assert_eq!(
        path_of(&t, "apps/gw2/http"),
        PathNormalization {
            merge_slashes: true,
            escaped_slashes: EscapedSlashesAction::UnescapeAndForward,
        }
    );
    // Another controller's Gateway is not served.
    assert!(
        t.config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .all(|l| !l.name.starts_with("apps/theirs"))
    );
}

#[test]
fn policy_status_per_target() {
    let t = translator().translate(&fixture("client-traffic-policy.yaml"));
    let status = |name: &str| {
        t.status
            .client_traffic_policy("apps", name)
            .unwrap_or_else(|| panic!("no status for {name}"))
    };

    let wide = status("wide");
    assert_eq!(ancestors(wide), [entry("gw", None, "True", "Accepted")]);
    let accepted = condition(&wide.ancestors[0].conditions, "Accepted");
    assert_eq!(accepted.observed_generation, Some(2));
    assert!(
        accepted.message.contains("api (by apps/api-only)"),
        "{}",
        accepted.message
    );

    assert_eq!(
        ancestors(status("api-only")),
        [entry("gw", Some("api"), "True", "Accepted")]
    );
    let late = status("late-wide");
    assert_eq!(
        ancestors(late),
        [
            entry("gw", None, "False", "Conflicted"),
            entry("gw2", None, "True", "Accepted"),
        ]
    );
    assert!(
        condition(&late.ancestors[0].conditions, "Accepted")
            .message
            .contains("apps/wide")
    );

    let broken = status("broken");
    assert_eq!(ancestors(broken), [entry("gw2", None, "False", "Invalid")]);
    let invalid = condition(&broken.ancestors[0].conditions, "Accepted");
    assert!(invalid.message.contains("Sometimes"), "{}", invalid.message);
    assert_eq!(invalid.observed_generation, Some(4));

    assert_eq!(
        ancestors(status("missing")),
        [
            entry("nope", None, "False", "TargetNotFound"),
            entry("gw", Some("nolistener"), "False", "TargetNotFound"),
            entry("gw", None, "False", "Invalid"),
        ]
    );

    // Another controller's Gateway: no status from us.
    assert!(t.status.client_traffic_policy("apps", "foreign").is_none());
    // Without targets there is nothing to write status on: a diagnostic says why.
    assert!(
        t.status
            .client_traffic_policy("apps", "no-targets")
            .is_none()
    );
    assert!(
        t.diagnostics
            .iter()
            .any(|d| d.message.contains("apps/no-targets")),
        "{:?}",
        t.diagnostics
    );

    // The Gateways themselves are unaffected by the invalid policies.
    for gw in ["gw", "gw2"] {
        let g = t.status.gateway("apps", gw).expect("gateway status");
        assert_condition(
            g.conditions.as_deref().unwrap_or_default(),
            "Programmed",
            "True",
            "Programmed",
        );
    }

    // The status is echoed into the policy documents.
    let doc = t
        .status
        .documents()
        .iter()
        .find(|d| d["kind"] == "ClientTrafficPolicy" && d["metadata"]["name"] == "late-wide")
        .expect("document");
    assert_eq!(
        doc["status"]["ancestors"][1]["conditions"][0]["reason"],
        "Accepted"
    );
    assert_eq!(doc["status"]["ancestors"][0]["ancestorRef"]["name"], "gw");
}

#[test]
fn no_policy_means_the_defaults() {
    let t = translator().translate(&fixture("basic.yaml"));
    for bind in &t.config.binds {
        for l in &bind.listeners {
            assert_eq!(l.path_normalization, PathNormalization::default());
        }
    }
}
