//! Route reuse between translations: a route that is the same object as in the previous
//! translation is not translated again while no other object changed, and every translation
//! gives exactly what a fresh translator gives for the same input (configuration, statuses,
//! diagnostics).

mod common;

use std::sync::Arc;

use common::{assert_condition, fixture, fixture_text, translator};
use gateway_core::config::{BackendTarget, BodyHeader, Filter, Route};
use gateway_k8s::{ObjectKey, Resources, Translation, Translator};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

fn at(second: i64) -> Time {
    Time(Timestamp::from_second(second).expect("timestamp"))
}

/// `resources` with the object of `kind` (one of HTTPRoute, Service, Gateway) named `name`
/// replaced by the fixture's document edited with `edit` (parsed anew: a new `Arc`).
fn replaced(
    resources: &Resources,
    kind: &str,
    name: &str,
    edit: impl Fn(&str) -> String,
) -> Resources {
    let text = fixture_text("incremental.yaml");
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains(&format!("kind: {kind}\n")) && d.contains(&format!("name: {name}\n")))
        .unwrap_or_else(|| panic!("no {kind} {name} in the fixture"));
    let edited = edit(doc);
    assert_ne!(edited, doc, "the edit changes nothing");
    let parsed = Resources::parse_yaml(&edited, "edited.yaml");
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let key = ObjectKey::new("shop", name);
    let mut out = resources.clone();
    match kind {
        "HTTPRoute" => {
            out.http_routes
                .insert(key.clone(), parsed.http_routes[&key].clone());
        }
        "Service" => {
            out.services
                .insert(key.clone(), parsed.services[&key].clone());
        }
        "Gateway" => {
            out.gateways
                .insert(key.clone(), parsed.gateways[&key].clone());
        }
        other => panic!("kind {other}"),
    }
    out
}

/// Translates `resources` with `incremental` (which has seen earlier inputs) and with a fresh
/// translator, both at `now`, and asserts they agree; returns the incremental translation.
fn translate_both(incremental: &mut Translator, resources: &Resources, now: Time) -> Translation {
    let reused = incremental.translate_at(resources, now.clone());
    let fresh = translator().translate_at(resources, now);
    assert_eq!(reused.config, fresh.config);
    // Condition times are the translator's memory (kept while a status holds), not part of
    // the comparison.
    let status = |t: &Translation| -> String {
        t.status
            .to_yaml()
            .lines()
            .filter(|l| !l.contains("lastTransitionTime"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(status(&reused), status(&fresh));
    let diagnostics = |t: &Translation| -> Vec<String> {
        t.diagnostics.iter().map(ToString::to_string).collect()
    };
    assert_eq!(diagnostics(&reused), diagnostics(&fresh));
    reused
}

/// The routes served on the only listener, by name.
fn routes(t: &Translation) -> Vec<(String, Arc<Route>)> {
    assert_eq!(t.config.binds.len(), 1);
    t.config.binds[0].listeners[0]
        .routes
        .iter()
        .map(|r| (r.name.clone(), r.clone()))
        .collect()
}

fn route<'a>(t: &'a [(String, Arc<Route>)], name: &str) -> &'a Arc<Route> {
    &t.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("route {name} not served"))
        .1
}

fn header_value(route: &Route) -> String {
    match &route.rules[0].filters[0] {
        Filter::RequestHeaderModifier(m) => m.add[0].1.clone(),
        other => panic!("unexpected filter {other:?}"),
    }
}

#[test]
fn an_unchanged_input_reuses_every_route() {
    let resources = fixture("incremental.yaml");
    let mut t = translator();
    let first = translate_both(&mut t, &resources, at(100));
    assert_eq!(t.route_reuse(), (0, 3));
    let second = translate_both(&mut t, &resources, at(200));
    assert_eq!(t.route_reuse(), (3, 0));
    for ((name, a), (_, b)) in routes(&first).iter().zip(routes(&second)) {
        assert!(Arc::ptr_eq(a, &b), "route {name} was rebuilt");
    }
    // Condition times are kept across the reuse, as before.
    let status = second.status.http_route("shop", "a").expect("status");
    assert_eq!(
        status.parents[0].conditions[0].last_transition_time,
        at(100)
    );
}

#[test]
fn a_changed_route_is_translated_again_and_the_others_are_reused() {
    let v1 = fixture("incremental.yaml");
    let mut t = translator();
    let first = translate_both(&mut t, &v1, at(100));
    let v2 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace("value: b1", "value: b2")
            .replace("generation: 1", "generation: 2")
    });
    let second = translate_both(&mut t, &v2, at(200));
    assert_eq!(t.route_reuse(), (2, 1));
    let (before, after) = (routes(&first), routes(&second));
    assert!(Arc::ptr_eq(route(&before, "a"), route(&after, "a")));
    assert!(Arc::ptr_eq(route(&before, "c"), route(&after, "c")));
    assert!(!Arc::ptr_eq(route(&before, "b"), route(&after, "b")));
    assert_eq!(header_value(route(&after, "b")), "b2");
    let status = second.status.http_route("shop", "b").expect("status");
    assert_eq!(status.parents[0].conditions[0].observed_generation, Some(2));
    // The unresolved reference of an untouched route keeps its condition.
    let c = second.status.http_route("shop", "c").expect("status");
    assert_condition(
        &c.parents[0].conditions,
        "ResolvedRefs",
        "False",
        "BackendNotFound",
    );

    // A route that becomes invalid is refused; the others keep serving.
    let v3 = replaced(&v2, "HTTPRoute", "a", |d| {
        d.replace("name: x-route", "name: \"bad header\"")
    });
    let third = translate_both(&mut t, &v3, at(300));
    assert_eq!(t.route_reuse(), (2, 1));
    let a = third.status.http_route("shop", "a").expect("status");
    assert_condition(
        &a.parents[0].conditions,
        "Accepted",
        "False",
        "UnsupportedValue",
    );
    assert!(Arc::ptr_eq(route(&after, "b"), route(&routes(&third), "b")));

    // A removed route is forgotten.
    let mut v4 = v3.clone();
    v4.http_routes.remove(&ObjectKey::new("shop", "c"));
    let fourth = translate_both(&mut t, &v4, at(400));
    assert_eq!(t.route_reuse(), (2, 0));
    assert!(fourth.status.http_route("shop", "c").is_none());
}

#[test]
fn a_changed_service_translates_every_route_again() {
    let v1 = fixture("incremental.yaml");
    let mut t = translator();
    let first = translate_both(&mut t, &v1, at(100));
    // The Service changes (translate_both checks the result against a fresh translation).
    let v2 = replaced(&v1, "Service", "store", |d| {
        d.replace("targetPort: 3000", "targetPort: 3001")
    });
    let second = translate_both(&mut t, &v2, at(200));
    assert_eq!(t.route_reuse(), (0, 3));
    let a = route(&routes(&second), "a").clone();
    assert!(!Arc::ptr_eq(route(&routes(&first), "a"), &a));
    assert!(matches!(
        &a.rules[0].backends[0].target,
        BackendTarget::Endpoints(_)
    ));
    // And the next translation of the same input reuses again.
    translate_both(&mut t, &v2, at(300));
    assert_eq!(t.route_reuse(), (3, 0));
}

#[test]
fn a_changed_gateway_translates_every_route_again_and_statuses_follow_it() {
    let v1 = fixture("incremental.yaml");
    let mut t = translator();
    translate_both(&mut t, &v1, at(100));
    // The listener gets a hostname.
    let v2 = replaced(&v1, "Gateway", "web", |d| {
        d.replace(
            "protocol: HTTP",
            "protocol: HTTP\n    hostname: other.example",
        )
    });
    let second = translate_both(&mut t, &v2, at(200));
    assert_eq!(t.route_reuse(), (0, 3));
    let gateway = second.status.gateway("shop", "web").expect("status");
    assert_eq!(
        gateway.listeners.as_ref().expect("listeners")[0].attached_routes,
        3
    );
    // Routes without hostnames fit any listener hostname: still attached and served there.
    assert_eq!(routes(&second).len(), 3);
    assert_eq!(
        second.config.binds[0].listeners[0].hostname.as_deref(),
        Some("other.example")
    );
    // Back to the first Gateway object: translated against it again, same result as fresh.
    translate_both(&mut t, &v1, at(300));
    assert_eq!(t.route_reuse(), (0, 3));
}

/// The full status YAML, condition times included.
fn full_status(t: &Translation) -> String {
    t.status.to_yaml()
}

#[test]
fn reused_statuses_equal_recomputed_ones_condition_times_included() {
    // `reusing` reuses translations and statuses; `recomputing` sees the same inputs at the same
    // times but forgets its translations before each step (`set_filters` does), so it computes
    // every status again from its remembered condition times.
    let mut reusing = translator();
    let mut recomputing = translator();
    let v1 = fixture("incremental.yaml");
    let v2 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace("value: b1", "value: b2")
            .replace("generation: 1", "generation: 2")
    });
    let v3 = replaced(&v2, "HTTPRoute", "a", |d| {
        d.replace("name: x-route", "name: \"bad header\"")
    });
    let v4 = replaced(&v3, "HTTPRoute", "a", |d| {
        d.replace("value: a1", "value: a2")
    });
    let v5 = replaced(&v4, "Service", "store", |d| {
        d.replace("targetPort: 3000", "targetPort: 3001")
    });
    let mut previous: Option<Translation> = None;
    for (step, resources) in [&v1, &v2, &v2, &v3, &v4, &v5, &v1].into_iter().enumerate() {
        let now = at(100 * (step as i64 + 1));
        let reused = translate_both(&mut reusing, resources, now.clone());
        recomputing.set_filters(None);
        let recomputed = recomputing.translate_at(resources, now);
        assert_eq!(reused.config, recomputed.config, "step {step}");
        assert_eq!(
            full_status(&reused),
            full_status(&recomputed),
            "step {step}"
        );
        previous = Some(reused);
    }
    let last = previous.expect("translated");
    // Route c never changed: its ResolvedRefs=False condition kept its first time throughout.
    let c = last.status.http_route("shop", "c").expect("status");
    assert_eq!(c.parents[0].conditions[0].last_transition_time, at(100));
}

#[test]
fn an_unchanged_route_shares_its_status_with_the_previous_translation() {
    let v1 = fixture("incremental.yaml");
    let mut t = translator();
    let first = translate_both(&mut t, &v1, at(100));
    let v2 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace("value: b1", "value: b2")
            .replace("generation: 1", "generation: 2")
    });
    let second = translate_both(&mut t, &v2, at(200));
    let same = |name: &str| {
        std::ptr::eq(
            first.status.http_route("shop", name).expect("status"),
            second.status.http_route("shop", name).expect("status"),
        )
    };
    assert!(same("a"), "route a's status was computed again");
    assert!(same("c"), "route c's status was computed again");
    assert!(!same("b"), "route b's status was reused");
    // b's Accepted condition held (True): it keeps its time, with the new generation.
    let b = second.status.http_route("shop", "b").expect("status");
    assert_eq!(b.parents[0].conditions[0].last_transition_time, at(100));
    assert_eq!(b.parents[0].conditions[0].observed_generation, Some(2));
}

#[test]
fn status_text_reused_per_object_equals_a_full_render() {
    let mut t = translator();
    let mut cache = gateway_k8s::RenderCache::default();
    let v1 = fixture("incremental.yaml");
    let first = t.translate_at(&v1, at(100));
    assert_eq!(
        first.status.to_yaml_reusing(&v1, &mut cache).to_yaml(),
        first.status.to_yaml()
    );
    let objects = v1.order().len() as u64;
    assert_eq!(
        cache.rendered(),
        objects,
        "a cold cache renders every object"
    );
    assert_eq!(cache.len(), v1.order().len());

    // The same input again: nothing is rendered.
    let again = t.translate_at(&v1, at(150));
    assert_eq!(
        again.status.to_yaml_reusing(&v1, &mut cache).to_yaml(),
        again.status.to_yaml()
    );
    assert_eq!(cache.rendered(), objects);

    // One route's object changes: only it is rendered again.
    let v2 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace("value: b1", "value: b2")
    });
    let second = t.translate_at(&v2, at(200));
    assert_eq!(
        second.status.to_yaml_reusing(&v2, &mut cache).to_yaml(),
        second.status.to_yaml()
    );
    assert_eq!(cache.rendered(), objects + 1);

    // A Gateway change changes statuses (listener hostname, route acceptance): whatever was
    // rendered, the text is the full render's.
    let v3 = replaced(&v2, "Gateway", "web", |d| {
        d.replace(
            "protocol: HTTP",
            "protocol: HTTP\n    hostname: other.example",
        )
    });
    let third = t.translate_at(&v3, at(300));
    assert_eq!(
        third.status.to_yaml_reusing(&v3, &mut cache).to_yaml(),
        third.status.to_yaml()
    );
    assert!(cache.rendered() > objects + 1);

    // A route removed: its text is gone from the output and from the cache.
    let mut v4 = v3.clone();
    v4.http_routes.remove(&ObjectKey::new("shop", "b"));
    let fourth = t.translate_at(&v4, at(400));
    let text = fourth.status.to_yaml_reusing(&v4, &mut cache).to_yaml();
    assert_eq!(text, fourth.status.to_yaml());
    assert!(!text.contains("name: b\n"));
    assert_eq!(cache.len(), v3.order().len() - 1);
}

/// The body headers of the only listener.
fn body_headers(t: &Translation) -> Vec<BodyHeader> {
    t.config.binds[0].listeners[0].body_headers.clone()
}

#[test]
fn a_route_matching_on_the_model_header_turns_body_based_routing_on_and_off() {
    let v1 = fixture("incremental.yaml");
    let mut t = translator();
    let first = translate_both(&mut t, &v1, at(100));
    assert!(
        body_headers(&first).is_empty(),
        "no route matches on the model"
    );

    // Route b starts matching on the header (any case): the listener reads the body's `model`,
    // while routes a and c are reused.
    let v2 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace(
            "{path: {type: PathPrefix, value: /b/}}",
            "{path: {type: PathPrefix, value: /b/}, headers: [{name: X-Gateway-Model-Name, value: llama}]}",
        )
    });
    let second = translate_both(&mut t, &v2, at(200));
    assert_eq!(t.route_reuse(), (2, 1));
    assert_eq!(
        body_headers(&second),
        [BodyHeader::new("x-gateway-model-name", "model")]
    );

    // Unchanged input: every route reused, the listener still reads the body.
    let third = translate_both(&mut t, &v2, at(300));
    assert_eq!(t.route_reuse(), (3, 0));
    assert_eq!(body_headers(&third), body_headers(&second));

    // The route is removed: nothing matches on the header any more.
    let mut v3 = v2.clone();
    v3.http_routes.remove(&ObjectKey::new("shop", "b"));
    let fourth = translate_both(&mut t, &v3, at(400));
    assert_eq!(t.route_reuse(), (2, 0));
    assert!(body_headers(&fourth).is_empty());

    // Back, then changed to match on another header: off again.
    let fifth = translate_both(&mut t, &v2, at(500));
    assert_eq!(body_headers(&fifth).len(), 1);
    let v4 = replaced(&v1, "HTTPRoute", "b", |d| {
        d.replace(
            "{path: {type: PathPrefix, value: /b/}}",
            "{path: {type: PathPrefix, value: /b/}, headers: [{name: x-model, value: llama}]}",
        )
    });
    let sixth = translate_both(&mut t, &v4, at(600));
    assert!(body_headers(&sixth).is_empty());
}
