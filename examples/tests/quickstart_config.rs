//! The bundled quickstart configuration translates cleanly: every HTTPRoute is accepted with
//! its references resolved, and no rule carries a filter the data plane would answer 500 for.

use gateway_core::config::Filter;
use gateway_k8s::{Resources, TranslateOptions, Translator};

#[test]
fn every_quickstart_route_is_accepted_and_served() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/quickstart.yaml"))
        .expect("quickstart.yaml");
    let resources = Resources::parse_yaml(&text, "quickstart.yaml");
    let mut translator = Translator::new(TranslateOptions::new(examples::DEFAULT_CONTROLLER_NAME));
    let t = translator.translate(&resources);
    for name in [
        "matching",
        "headers",
        "redirect",
        "split",
        "maintenance",
        "api",
    ] {
        let status = t
            .status
            .http_route("default", name)
            .unwrap_or_else(|| panic!("route {name} has a status"));
        for parent in &status.parents {
            for c in &parent.conditions {
                if c.type_ == "Accepted" || c.type_ == "ResolvedRefs" {
                    assert_eq!(c.status, "True", "route {name}: {c:?}");
                }
                assert_ne!(c.type_, "PartiallyInvalid", "route {name}: {c:?}");
            }
        }
    }
    let mut rules = 0;
    for bind in &t.config.binds {
        for listener in &bind.listeners {
            for route in &listener.routes {
                for rule in &route.rules {
                    rules += 1;
                    for f in &rule.filters {
                        assert!(
                            !matches!(f, Filter::Invalid { .. }),
                            "{}/{}: {f:?}",
                            route.namespace,
                            route.name
                        );
                    }
                }
            }
        }
    }
    assert!(rules >= 7, "{rules} rules served");
}
