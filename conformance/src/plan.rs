//! Per-test status expectations, transcribed from the upstream Go tests
//! (kubernetes-sigs/gateway-api `conformance/tests/*.go`), and the spec edits some tests make.

use serde_json::{Value, json};

use crate::cases::Case;
use crate::certs::{INFRA_NS, WEB_NS};
use crate::manifests::{kind, name, namespace};
use crate::status::{Cond, ListenerExpect, ObjRef, ParentExpect, Snapshot, cond};

/// One status assertion.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    /// `GatewayStatusMustHaveListeners`.
    GatewayListeners(ObjRef, Vec<ListenerExpect>),
    /// `GatewayMustHaveCondition`.
    GatewayCondition(ObjRef, Cond),
    /// `GatewayListenerMustHaveConditions` (gateway, listener name, conditions).
    ListenerConditions(ObjRef, &'static str, Vec<Cond>),
    /// `GatewayMustHaveLatestConditions`.
    GatewayLatest(ObjRef),
    /// `GWCMustHaveAcceptedCondition*`: a GatewayClass condition (an empty status is any).
    GatewayClassCondition(ObjRef, Cond),
    /// `GatewayClassMustHaveLatestConditions`.
    GatewayClassLatest(ObjRef),
    /// `NamespacesMustBeReady` for one namespace.
    NamespaceReady(&'static str),
    /// The gateway has read a spec change: the status file shows the object (kind, ref) at
    /// this `metadata.generation`. Added by the runner after each mutation that bumps one.
    SeenGeneration(&'static str, ObjRef, i64),
    /// `GatewayMustHaveZeroRoutes`.
    GatewayZeroRoutes(ObjRef),
    /// `HTTPRouteMustHaveCondition` (route, gateway, condition).
    RouteCondition(ObjRef, ObjRef, Cond),
    /// `HTTPRouteMustHaveNoAcceptedParents`.
    RouteNoAcceptedParents(ObjRef),
    /// `HTTPRouteMustHaveLatestConditions`.
    RouteLatest(ObjRef),
    /// `HTTPRouteMustHaveParents` (route, expected parents, namespaceRequired).
    RouteParents(ObjRef, Vec<ParentExpect>, bool),
    /// `BackendTLSPolicyMustHaveCondition` (policy, ancestor Gateway, condition).
    BackendTlsPolicyCondition(ObjRef, ObjRef, Cond),
}

impl Check {
    /// Evaluates the check. `empty_seen` carries the two-look rule of
    /// `HTTPRouteMustHaveNoAcceptedParents` across polls.
    pub fn eval(&self, s: &Snapshot, empty_seen: &mut bool) -> Result<(), String> {
        match self {
            Check::GatewayListeners(gw, want) => s.gateway_listeners(gw, want),
            Check::GatewayCondition(gw, c) => s.gateway_condition(gw, c),
            Check::ListenerConditions(gw, l, c) => s.listener_conditions(gw, l, c),
            Check::GatewayLatest(gw) => s.gateway_latest(gw),
            Check::GatewayClassCondition(c, want) => s.gateway_class_condition(c, want),
            Check::GatewayClassLatest(c) => s.gateway_class_latest(c),
            Check::NamespaceReady(ns) => s.namespace_ready(ns),
            Check::SeenGeneration(k, r, g) => s.seen_generation(k, r, *g),
            Check::GatewayZeroRoutes(gw) => s.gateway_zero_routes(gw),
            Check::RouteCondition(r, gw, c) => s.route_condition(r, gw, c),
            Check::RouteNoAcceptedParents(r) => {
                let res = s.route_no_accepted_parents(r, *empty_seen);
                if s.route_parents_empty(r) {
                    *empty_seen = true;
                }
                res
            }
            Check::RouteLatest(r) => s.route_latest(r),
            Check::RouteParents(r, want, ns_required) => {
                s.route_must_have_parents(r, want, *ns_required)
            }
            Check::BackendTlsPolicyCondition(p, gw, c) => {
                s.policy_condition("BackendTLSPolicy", p, gw, c)
            }
        }
    }
}

/// A change to the test's manifests, written to the config directory while the gateway runs
/// (what an upstream test does with `client.Patch` / `Update` / `Delete`).
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    /// Append a listener to a Gateway and bump its generation.
    AddGatewayListener(ObjRef, Value),
    /// Remove the listener of this name from a Gateway and bump its generation.
    RemoveGatewayListener(ObjRef, &'static str),
    /// Point the first backendRef of the first rule of an HTTPRoute elsewhere; bump generation.
    SetRouteBackend(ObjRef, String),
    /// Set `spec.<field>` of an object (kind, ref) and bump its generation.
    SetSpecField(&'static str, ObjRef, &'static str, Value),
    /// Remove every document of this kind from the test manifests.
    DeleteKind(&'static str),
}

impl Mutation {
    /// Applies the change to the test documents. Returns the check that the gateway has read
    /// it when the change bumps an object's generation.
    pub fn apply(&self, docs: &mut Vec<Value>) -> Result<Option<Check>, String> {
        let find = |docs: &mut Vec<Value>, k: &str, r: &ObjRef| -> Result<usize, String> {
            docs.iter()
                .position(|d| kind(d) == k && namespace(d) == r.namespace && name(d) == r.name)
                .ok_or_else(|| format!("{k} {r} not in the test manifests"))
        };
        let (k, r, i) = match self {
            Mutation::AddGatewayListener(gw, listener) => {
                let i = find(docs, "Gateway", gw)?;
                match docs[i]["spec"]["listeners"].as_array_mut() {
                    Some(l) => l.push(listener.clone()),
                    None => return Err(format!("Gateway {gw} has no listeners")),
                }
                ("Gateway", gw, i)
            }
            Mutation::RemoveGatewayListener(gw, listener) => {
                let i = find(docs, "Gateway", gw)?;
                let Some(l) = docs[i]["spec"]["listeners"].as_array_mut() else {
                    return Err(format!("Gateway {gw} has no listeners"));
                };
                let before = l.len();
                l.retain(|x| x["name"] != *listener);
                if l.len() == before {
                    return Err(format!("Gateway {gw} has no listener {listener}"));
                }
                ("Gateway", gw, i)
            }
            Mutation::SetRouteBackend(route, backend) => {
                let i = find(docs, "HTTPRoute", route)?;
                let target = &mut docs[i]["spec"]["rules"][0]["backendRefs"][0];
                if !target.is_object() {
                    return Err(format!("HTTPRoute {route} has no backendRef"));
                }
                target["name"] = json!(backend);
                ("HTTPRoute", route, i)
            }
            Mutation::SetSpecField(k, r, field, value) => {
                let i = find(docs, k, r)?;
                match docs[i]["spec"].as_object_mut() {
                    Some(spec) => spec.insert((*field).to_string(), value.clone()),
                    None => return Err(format!("{k} {r} has no spec")),
                };
                (*k, r, i)
            }
            Mutation::DeleteKind(k) => {
                docs.retain(|d| kind(d) != *k);
                return Ok(None);
            }
        };
        let generation = bump(&mut docs[i]);
        Ok(Some(Check::SeenGeneration(k, r.clone(), generation)))
    }
}

/// What the API server does on a spec change: `metadata.generation += 1`. Returns the new one.
fn bump(doc: &mut Value) -> i64 {
    let g = doc["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
    doc["metadata"]["generation"] = json!(g);
    g
}

/// Checks to hold (polling) after an optional mutation.
#[derive(Clone, Debug, PartialEq)]
pub struct Phase {
    /// Applied before the checks; when it bumps a generation, the runner also waits for the
    /// gateway to report that generation ([`Check::SeenGeneration`]).
    pub mutation: Option<Mutation>,
    /// Must all hold.
    pub checks: Vec<Check>,
}

fn gw(n: &str) -> ObjRef {
    ObjRef::infra(n)
}

const HTTP_ROUTE: &[&str] = &["HTTPRoute"];

fn listener(
    name: &'static str,
    kinds: &'static [&'static str],
    c: Vec<Cond>,
    attached: i64,
) -> ListenerExpect {
    ListenerExpect {
        name,
        supported_kinds: kinds,
        conditions: c,
        attached_routes: attached,
    }
}

/// Route rejected by its parent: the three checks the `HTTPRouteInvalidParentRef*` tests share.
fn rejected(route: ObjRef, gateway: ObjRef, reason: &'static str, resolved: bool) -> Vec<Check> {
    let mut v = Vec::new();
    if resolved {
        v.push(Check::RouteCondition(
            route.clone(),
            gateway.clone(),
            cond("ResolvedRefs", "True", "ResolvedRefs"),
        ));
    }
    v.push(Check::RouteCondition(
        route.clone(),
        gateway.clone(),
        cond("Accepted", "False", reason),
    ));
    v.push(Check::RouteNoAcceptedParents(route));
    v.push(Check::GatewayZeroRoutes(gateway));
    v
}

/// The status phases of a status-only test (empty for unknown tests).
pub fn status_plan(test: &str) -> Vec<Phase> {
    let one = |checks: Vec<Check>| {
        vec![Phase {
            mutation: None,
            checks,
        }]
    };
    match test {
        "HTTPRouteDisallowedKind" => one(rejected(
            ObjRef::infra("disallowed-kind"),
            gw("tlsroutes-only"),
            "NotAllowedByListeners",
            true,
        )),
        "HTTPRouteInvalidCrossNamespaceParentRef" => one(rejected(
            ObjRef::new(WEB_NS, "invalid-cross-namespace-parent-ref"),
            gw("same-namespace"),
            "NotAllowedByListeners",
            true,
        )),
        "HTTPRouteInvalidParentRefNotMatchingSectionName" => one(rejected(
            ObjRef::infra("httproute-listener-not-matching-section-name"),
            gw("same-namespace"),
            "NoMatchingParent",
            false,
        )),
        "HTTPRouteInvalidParentRefNotMatchingListenerPort" => one(rejected(
            ObjRef::infra("httproute-listener-not-matching-route-port"),
            gw("same-namespace"),
            "NoMatchingParent",
            true,
        )),
        "HTTPRouteInvalidParentRefSectionNameNotMatchingPort" => one(rejected(
            ObjRef::infra("httproute-listener-section-name-not-matching-port"),
            gw("gateway-with-one-not-matching-port-and-section-name-route"),
            "NoMatchingParent",
            false,
        )),
        "GatewayWithAttachedRoutes" => {
            let ok = || {
                vec![
                    cond("Accepted", "True", ""),
                    cond("ResolvedRefs", "True", ""),
                ]
            };
            one(vec![
                Check::GatewayListeners(
                    gw("gateway-with-one-attached-route"),
                    vec![listener("http", HTTP_ROUTE, ok(), 1)],
                ),
                Check::GatewayListeners(
                    gw("gateway-with-two-attached-routes"),
                    vec![listener("http", HTTP_ROUTE, ok(), 2)],
                ),
                Check::RouteCondition(
                    ObjRef::infra("http-route-not-accepted"),
                    gw("gateway-with-two-attached-routes"),
                    cond("Accepted", "False", "NoMatchingListenerHostname"),
                ),
                Check::GatewayListeners(
                    gw("unresolved-gateway-with-one-attached-unresolved-route"),
                    vec![listener(
                        "tls",
                        HTTP_ROUTE,
                        vec![
                            cond("Programmed", "False", ""),
                            cond("ResolvedRefs", "False", ""),
                        ],
                        1,
                    )],
                ),
                Check::RouteCondition(
                    ObjRef::infra("http-route-4"),
                    gw("unresolved-gateway-with-one-attached-unresolved-route"),
                    cond("ResolvedRefs", "False", ""),
                ),
            ])
        }
        "GatewayWithAttachedRoutesWithPort8080" => {
            let ok = || {
                vec![
                    cond("Accepted", "True", ""),
                    cond("ResolvedRefs", "True", ""),
                ]
            };
            one(vec![Check::GatewayListeners(
                gw("gateway-with-two-listeners-and-one-attached-route"),
                vec![
                    listener("http-unattached", HTTP_ROUTE, ok(), 0),
                    listener("http", HTTP_ROUTE, ok(), 1),
                ],
            )])
        }
        "GatewayInvalidRouteKind" => {
            let bad = || vec![cond("ResolvedRefs", "False", "InvalidRouteKinds")];
            one(vec![
                Check::GatewayListeners(
                    gw("gateway-only-invalid-route-kind"),
                    vec![listener("http", &[], bad(), 0)],
                ),
                Check::GatewayListeners(
                    gw("gateway-supported-and-invalid-route-kind"),
                    vec![listener("http", HTTP_ROUTE, bad(), 0)],
                ),
            ])
        }
        "GatewayListenerUnsupportedProtocol" => {
            let invalid = || {
                listener(
                    "invalid",
                    &[],
                    vec![cond("Accepted", "False", "UnsupportedProtocol")],
                    0,
                )
            };
            let only = gw("gateway-only-unsupported-protocols");
            let mixed = gw("gateway-supported-and-unsupported-protocols");
            one(vec![
                Check::GatewayLatest(only.clone()),
                Check::GatewayCondition(
                    only.clone(),
                    cond("Accepted", "False", "ListenersNotValid"),
                ),
                Check::GatewayListeners(only, vec![invalid()]),
                Check::GatewayLatest(mixed.clone()),
                Check::GatewayCondition(
                    mixed.clone(),
                    cond("Accepted", "True", "ListenersNotValid"),
                ),
                Check::GatewayListeners(
                    mixed,
                    vec![
                        listener(
                            "http",
                            HTTP_ROUTE,
                            vec![cond("Accepted", "True", "Accepted")],
                            0,
                        ),
                        invalid(),
                    ],
                ),
            ])
        }
        "GatewayInvalidTLSConfiguration" => one([
            "gateway-certificate-nonexistent-secret",
            "gateway-certificate-unsupported-group",
            "gateway-certificate-unsupported-kind",
            "gateway-certificate-malformed-secret",
        ]
        .iter()
        .map(|g| {
            Check::GatewayListeners(
                gw(g),
                vec![listener(
                    "https",
                    HTTP_ROUTE,
                    vec![cond("ResolvedRefs", "False", "InvalidCertificateRef")],
                    0,
                )],
            )
        })
        .collect()),
        "GatewaySecretMissingReferenceGrant" | "GatewaySecretInvalidReferenceGrant" => {
            let g = if test == "GatewaySecretMissingReferenceGrant" {
                "gateway-secret-missing-reference-grant"
            } else {
                "gateway-secret-invalid-reference-grant"
            };
            one(vec![Check::GatewayListeners(
                gw(g),
                vec![listener(
                    "https",
                    HTTP_ROUTE,
                    vec![cond("ResolvedRefs", "False", "RefNotPermitted")],
                    0,
                )],
            )])
        }
        "GatewaySecretReferenceGrantAllInNamespace" | "GatewaySecretReferenceGrantSpecific" => {
            let g = if test == "GatewaySecretReferenceGrantSpecific" {
                "gateway-secret-reference-grant-specific"
            } else {
                "gateway-secret-reference-grant-all-in-namespace"
            };
            one(vec![Check::GatewayListeners(
                gw(g),
                vec![listener(
                    "https",
                    HTTP_ROUTE,
                    vec![
                        cond("ResolvedRefs", "True", "ResolvedRefs"),
                        cond("Programmed", "True", "Programmed"),
                    ],
                    0,
                )],
            )])
        }
        "GatewayObservedGenerationBump" => {
            let g = gw("gateway-observed-generation-bump");
            vec![
                Phase {
                    mutation: None,
                    checks: vec![Check::GatewayLatest(g.clone())],
                },
                Phase {
                    mutation: Some(Mutation::AddGatewayListener(
                        g.clone(),
                        json!({"name": "alternate", "port": 8080, "protocol": "HTTP"}),
                    )),
                    checks: vec![Check::GatewayLatest(g)],
                },
            ]
        }
        // gateway-invalid-tls-backend-configuration.go: each Gateway with an unusable
        // `tls.backend.clientCertificateRef` is still Accepted, with ResolvedRefs=False.
        "GatewayInvalidTLSBackendConfiguration" => one([
            (
                "gateway-client-certificate-nonexistent-secret",
                "InvalidClientCertificateRef",
            ),
            (
                "gateway-client-certificate-unsupported-group",
                "InvalidClientCertificateRef",
            ),
            (
                "gateway-client-certificate-unsupported-kind",
                "InvalidClientCertificateRef",
            ),
            (
                "gateway-client-certificate-malformed-secret",
                "InvalidClientCertificateRef",
            ),
            (
                "gateway-client-certificate-missing-reference-grant",
                "RefNotPermitted",
            ),
        ]
        .into_iter()
        .flat_map(|(name, reason)| {
            let g = gw(name);
            [
                Check::GatewayLatest(g.clone()),
                Check::GatewayCondition(g.clone(), cond("ResolvedRefs", "False", reason)),
                Check::GatewayCondition(g, cond("Accepted", "True", "Accepted")),
            ]
        })
        .collect()),
        "GatewayInvalidParametersRef" => {
            let g = gw("gateway-invalid-parameters-ref");
            one(vec![
                Check::GatewayLatest(g.clone()),
                Check::GatewayCondition(g, cond("Accepted", "False", "InvalidParameters")),
            ])
        }
        "GatewayClassObservedGenerationBump" => {
            // GWCMustHaveAcceptedConditionAny + GatewayClassMustHaveLatestConditions, before and
            // after `spec.description` changes from "old" to "new".
            let c = ObjRef::cluster("gatewayclass-observed-generation-bump");
            let checks = || {
                vec![
                    Check::GatewayClassCondition(c.clone(), cond("Accepted", "", "")),
                    Check::GatewayClassLatest(c.clone()),
                ]
            };
            vec![
                Phase {
                    mutation: None,
                    checks: checks(),
                },
                Phase {
                    mutation: Some(Mutation::SetSpecField(
                        "GatewayClass",
                        c.clone(),
                        "description",
                        json!("new"),
                    )),
                    checks: checks(),
                },
            ]
        }
        "GatewayInvalidFrontendClientCertificateValidation" => {
            let g = gw("gateway-with-invalid-client-cert-validation");
            let invalid = |reason: &'static str| {
                vec![
                    cond("ResolvedRefs", "False", reason),
                    cond("Accepted", "False", "NoValidCACertificate"),
                    cond("Programmed", "False", ""),
                ]
            };
            one(vec![
                Check::ListenerConditions(
                    g.clone(),
                    "https",
                    vec![
                        cond("ResolvedRefs", "True", ""),
                        cond("Accepted", "True", ""),
                        cond("Programmed", "True", ""),
                    ],
                ),
                Check::ListenerConditions(
                    g.clone(),
                    "https-unresolved",
                    invalid("InvalidCACertificateRef"),
                ),
                Check::ListenerConditions(
                    g.clone(),
                    "https-invalid-kind",
                    invalid("InvalidCACertificateKind"),
                ),
                Check::ListenerConditions(g, "https-grant-missing", invalid("RefNotPermitted")),
            ])
        }
        "GatewayModifyListeners" => {
            let add = gw("gateway-add-listener");
            let remove = gw("gateway-remove-listener");
            let ok = || {
                vec![
                    cond("Accepted", "True", ""),
                    cond("ResolvedRefs", "True", ""),
                ]
            };
            let ready = || Check::NamespaceReady(INFRA);
            vec![
                // Subtest 1: add listener `http` (80, data.test.com, from All).
                Phase {
                    mutation: None,
                    checks: vec![ready(), Check::GatewayLatest(add.clone())],
                },
                Phase {
                    mutation: Some(Mutation::AddGatewayListener(
                        add.clone(),
                        json!({
                            "name": "http",
                            "port": 80,
                            "protocol": "HTTP",
                            "hostname": "data.test.com",
                            "allowedRoutes": {"namespaces": {"from": "All"}},
                        }),
                    )),
                    checks: vec![
                        ready(),
                        Check::GatewayListeners(
                            add.clone(),
                            vec![
                                listener("https", HTTP_ROUTE, ok(), 1),
                                listener("http", HTTP_ROUTE, ok(), 1),
                            ],
                        ),
                        Check::GatewayLatest(add),
                    ],
                },
                // Subtest 2: remove listener `https`, leaving `http`.
                Phase {
                    mutation: None,
                    checks: vec![ready(), Check::GatewayLatest(remove.clone())],
                },
                Phase {
                    mutation: Some(Mutation::RemoveGatewayListener(remove.clone(), "https")),
                    checks: vec![
                        ready(),
                        Check::GatewayListeners(
                            remove.clone(),
                            vec![listener("http", HTTP_ROUTE, ok(), 1)],
                        ),
                        Check::GatewayLatest(remove),
                    ],
                },
            ]
        }
        "HTTPRouteObservedGenerationBump" => {
            let r = ObjRef::infra("observed-generation-bump");
            let accepted = Check::RouteCondition(
                r.clone(),
                gw("same-namespace"),
                cond("Accepted", "True", "Accepted"),
            );
            vec![
                Phase {
                    mutation: None,
                    checks: vec![accepted.clone(), Check::RouteLatest(r.clone())],
                },
                Phase {
                    mutation: Some(Mutation::SetRouteBackend(
                        r.clone(),
                        "infra-backend-v2".into(),
                    )),
                    checks: vec![accepted, Check::RouteLatest(r)],
                },
            ]
        }
        _ => Vec::new(),
    }
}

/// Upstream `HTTPRouteMustHaveResolvedRefsConditionsTrue` for each route (infra namespace) on
/// `gateway`.
fn resolved_refs_true(gateway: &str, routes: &[&str]) -> Vec<Check> {
    routes
        .iter()
        .map(|r| {
            Check::RouteCondition(
                ObjRef::infra(r),
                gw(gateway),
                cond("ResolvedRefs", "True", "ResolvedRefs"),
            )
        })
        .collect()
}

/// Status checks a traffic test makes besides the Accepted/Programmed preconditions
/// (`controller` is the controllerName route parents must carry).
pub fn traffic_checks(test: &str, controller: &str) -> Vec<Check> {
    let same = || gw("same-namespace");
    let resolved = |route: ObjRef, reason: &'static str| {
        vec![Check::RouteCondition(
            route,
            same(),
            cond("ResolvedRefs", "False", reason),
        )]
    };
    match test {
        "HTTPRouteInvalidNonExistentBackendRef" => resolved(
            ObjRef::infra("invalid-nonexistent-backend-ref"),
            "BackendNotFound",
        ),
        "HTTPRouteInvalidBackendRefUnknownKind" => resolved(
            ObjRef::infra("invalid-backend-ref-unknown-kind"),
            "InvalidKind",
        ),
        "HTTPRouteInvalidCrossNamespaceBackendRef" => resolved(
            ObjRef::infra("invalid-cross-namespace-backend-ref"),
            "RefNotPermitted",
        ),
        "HTTPRouteInvalidReferenceGrant" => {
            resolved(ObjRef::infra("reference-grant"), "RefNotPermitted")
        }
        "HTTPRouteHostnameIntersection" => {
            let gateway = "httproute-hostname-intersection";
            let ok = || {
                vec![
                    cond("Accepted", "True", ""),
                    cond("ResolvedRefs", "True", ""),
                ]
            };
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(resolved_refs_true(
                gateway,
                &[
                    "specific-host-matches-listener-specific-host",
                    "specific-host-matches-listener-wildcard-host",
                    "wildcard-host-matches-listener-specific-host",
                    "wildcard-host-matches-listener-wildcard-host",
                ],
            ));
            // The non-intersecting route: exactly this parent, not accepted, namespace required.
            v.push(Check::RouteParents(
                ObjRef::infra("no-intersecting-hosts"),
                vec![ParentExpect {
                    gateway: gw(gateway),
                    controller: controller.to_string(),
                    conditions: vec![cond("Accepted", "False", "NoMatchingListenerHostname")],
                }],
                true,
            ));
            // Only accepted routes count in attachedRoutes: listener-1 has the two routes for
            // very.specific.com, listener-2 and listener-3 one each.
            v.push(Check::GatewayListeners(
                gw(gateway),
                vec![
                    listener("listener-1", HTTP_ROUTE, ok(), 2),
                    listener("listener-2", HTTP_ROUTE, ok(), 1),
                    listener("listener-3", HTTP_ROUTE, ok(), 1),
                ],
            ));
            v.extend(resolved_refs_true(
                "httproute-hostname-intersection-all",
                &["httproute-hostname-intersection-all"],
            ));
            v
        }
        "HTTPRouteRequestHeaderModifierBackendWeights" => resolved_refs_true(
            "same-namespace",
            &["request-header-modifier-backend-weights"],
        ),
        "HTTPRouteRequestPercentageMirror" => {
            resolved_refs_true("same-namespace", &["request-percentage-mirror"])
        }
        "HTTPRouteCORS" => resolved_refs_true(
            "same-namespace",
            &[
                "cors-multiple-origins-methods-headers",
                "cors-wildcard-methods",
                "cors-wildcard-origin",
                "cors-wildcard-methods-headers",
            ],
        ),
        // backendtlspolicy.go: the re-encrypt route on the HTTPS Gateway, then the plain one;
        // each policy Accepted and ResolvedRefs True for the Gateway it is reached through
        // (the host and cert mismatches are valid policies whose backends fail verification).
        "BackendTLSPolicy" => {
            let https = "same-namespace-with-https-listener";
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(resolved_refs_true(https, &["backendtlspolicy-reencrypt"]));
            v.extend(policy_ok(https, &["normative-test"], true));
            v.extend(resolved_refs_true("same-namespace", &["backendtlspolicy"]));
            v.extend(policy_ok(
                "same-namespace",
                &["normative-test", "host-mismatch", "cert-mismatch"],
                true,
            ));
            v
        }
        // backendtlspolicy-conflict-resolution.go: of two policies for the same Service (and
        // sectionName) the older one, on a tie the first by namespace/name, is Accepted and the
        // other Accepted=False/Conflicted; one with and one without a sectionName both apply.
        "BackendTLSPolicyConflictResolution" => {
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(resolved_refs_true(
                "same-namespace",
                &["backendtlspolicy-conflict-resolution"],
            ));
            for (policy, accepted) in [
                ("conflicted-without-section-name-1", true),
                ("conflicted-without-section-name-2", false),
                ("conflicted-with-section-name-1", true),
                ("conflicted-with-section-name-2", false),
                ("not-conflicted-with-section-name", true),
                ("not-conflicted-without-section-name", true),
            ] {
                v.push(Check::BackendTlsPolicyCondition(
                    ObjRef::infra(policy),
                    same(),
                    if accepted {
                        cond("Accepted", "True", "Accepted")
                    } else {
                        cond("Accepted", "False", "Conflicted")
                    },
                ));
            }
            v
        }
        // backendtlspolicy-invalid-ca-certificate-ref.go / -invalid-kind.go: the policy is
        // not accepted (NoValidCACertificate) and its ref unresolved.
        "BackendTLSPolicyInvalidCACertificateRef" => {
            let mut v = vec![Check::NamespaceReady(INFRA)];
            for policy in [
                "nonexistent-ca-certificate-ref",
                "malformed-ca-certificate-ref",
            ] {
                v.extend(policy_rejected(policy, "InvalidCACertificateRef"));
            }
            v
        }
        "BackendTLSPolicyInvalidKind" => {
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(policy_rejected("invalid-kind", "InvalidKind"));
            v
        }
        // backendtlspolicy-san.go: every policy Accepted (only Accepted is checked).
        "BackendTLSPolicySANValidation" => {
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(resolved_refs_true(
                "same-namespace",
                &["backendtlspolicy-san-test"],
            ));
            v.extend(policy_ok(
                "same-namespace",
                &[
                    "san-dns",
                    "san-dns-mismatch",
                    "san-uri",
                    "san-uri-mismatch",
                    "multiple-sans",
                    "multiple-mismatch-sans",
                ],
                false,
            ));
            v
        }
        // gateway-tls-backend-client-certificate.go.
        "GatewayTLSBackendClientCertificate" => {
            let gateway = "gateway-tls-backend-client-certificate";
            let mut v = vec![Check::NamespaceReady(INFRA)];
            v.extend(resolved_refs_true(gateway, &[gateway]));
            v.extend(policy_ok(
                gateway,
                &["gateway-tls-backend-client-certificate-test"],
                false,
            ));
            v
        }
        _ => Vec::new(),
    }
}

/// `BackendTLSPolicyMustHaveCondition` with `Accepted=True/Accepted` (and, when `resolved`,
/// `ResolvedRefs=True/ResolvedRefs`) for each policy, as seen from `gateway`.
fn policy_ok(gateway: &str, policies: &[&str], resolved: bool) -> Vec<Check> {
    let mut v = Vec::new();
    for p in policies {
        v.push(Check::BackendTlsPolicyCondition(
            ObjRef::infra(p),
            gw(gateway),
            cond("Accepted", "True", "Accepted"),
        ));
        if resolved {
            v.push(Check::BackendTlsPolicyCondition(
                ObjRef::infra(p),
                gw(gateway),
                cond("ResolvedRefs", "True", "ResolvedRefs"),
            ));
        }
    }
    v
}

/// A policy on `same-namespace` with an unusable CA ref: `Accepted=False/NoValidCACertificate`
/// and `ResolvedRefs=False/<reason>`.
fn policy_rejected(policy: &str, reason: &'static str) -> Vec<Check> {
    [
        cond("Accepted", "False", "NoValidCACertificate"),
        cond("ResolvedRefs", "False", reason),
    ]
    .into_iter()
    .map(|c| Check::BackendTlsPolicyCondition(ObjRef::infra(policy), gw("same-namespace"), c))
    .collect()
}

/// Rows whose path carries a placeholder the Go test fills in a loop: `(placeholder, values)`;
/// each such row stands for one request per value.
pub fn row_placeholders(test: &str) -> Option<(&'static str, &'static [&'static str])> {
    match test {
        "BackendTLSPolicyInvalidCACertificateRef" => Some((
            "<policy-name>",
            &[
                "nonexistent-ca-certificate-ref",
                "malformed-ca-certificate-ref",
            ],
        )),
        "BackendTLSPolicyInvalidKind" => Some(("<policy-name>", &["invalid-kind"])),
        _ => None,
    }
}

/// The rows of a test with [`row_placeholders`] expanded (one row per value).
pub fn expand_rows(test: &str, rows: &[&Case]) -> Vec<Case> {
    let Some((placeholder, values)) = row_placeholders(test) else {
        return rows.iter().map(|c| (*c).clone()).collect();
    };
    rows.iter()
        .flat_map(|c| {
            if c.path.contains(placeholder) {
                values
                    .iter()
                    .map(|v| {
                        let mut row = (*c).clone();
                        row.path = c.path.replace(placeholder, v);
                        row.backend_path = c.backend_path.replace(placeholder, v);
                        row
                    })
                    .collect()
            } else {
                vec![(*c).clone()]
            }
        })
        .collect()
}

/// What an upstream test expects of one of its requests that a `cases.tsv` row cannot say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowQuirks {
    /// The upstream case sets `ExpectedRequest{Path: ""}` and `Namespace: ""`: a 200/204 must be
    /// the gateway's own reply (no echo body), since an echo would show the path and namespace.
    pub gateway_reply: bool,
    /// The upstream case sets `Response.IgnoreWhitespace`.
    pub ignore_whitespace: bool,
    /// The upstream case sets `Request.ClientCert` to the certificate of this Secret: the
    /// backend must have seen it among the client's (the Gateway's) TLS certificates.
    pub backend_client_cert: Option<&'static str>,
}

/// The [`RowQuirks`] of a row, transcribed from the upstream Go tests.
pub fn row_quirks(case: &Case) -> RowQuirks {
    match case.test.as_str() {
        // httproute-cors.go: every preflight (OPTIONS) case expects an empty backend path and
        // namespace ("the response body is empty because the request is a preflight request");
        // the preflights of /cors-1 and /cors-wildcard-methods-headers ignore whitespace in the
        // header values ("some implementations add a space after each comma").
        "HTTPRouteCORS" if case.method.eq_ignore_ascii_case("OPTIONS") => {
            let path = case.path.split('?').next().unwrap_or("");
            RowQuirks {
                gateway_reply: true,
                ignore_whitespace: matches!(path, "/cors-1" | "/cors-wildcard-methods-headers"),
                ..RowQuirks::default()
            }
        }
        // gateway-tls-backend-client-certificate.go: `ClientCert` is the Gateway's
        // `tls.backend.clientCertificateRef` Secret.
        "GatewayTLSBackendClientCertificate" => RowQuirks {
            backend_client_cert: Some(crate::certs::BACKEND_CLIENT_CERT),
            ..RowQuirks::default()
        },
        _ => RowQuirks::default(),
    }
}

/// Routes of a traffic test that are expected not to be accepted (left out of the
/// Accepted precondition).
pub fn rejected_routes(test: &str) -> &'static [&'static str] {
    match test {
        "HTTPRouteHostnameIntersection" => &["no-intersecting-hosts"],
        _ => &[],
    }
}

/// The namespace of the conformance infrastructure (re-exported for the runner).
pub const INFRA: &str = INFRA_NS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_test_has_a_plan() {
        for t in crate::cases::TESTS {
            if t.kind == crate::cases::TestKind::Status {
                assert!(!status_plan(t.name).is_empty(), "{} has no plan", t.name);
            }
        }
        assert!(status_plan("Nope").is_empty());
    }

    #[test]
    fn traffic_checks_transcribe_the_go_tests() {
        let hi = traffic_checks("HTTPRouteHostnameIntersection", "ctl");
        assert!(hi.contains(&Check::NamespaceReady(INFRA)));
        let resolved = hi
            .iter()
            .filter(|c| {
                matches!(c, Check::RouteCondition(_, _, w)
                    if *w == cond("ResolvedRefs", "True", "ResolvedRefs"))
            })
            .count();
        assert_eq!(resolved, 5);
        assert!(hi.iter().any(|c| matches!(c,
            Check::RouteParents(r, want, true)
                if r.name == "no-intersecting-hosts" && want[0].controller == "ctl")));
        let listeners = hi
            .iter()
            .find_map(|c| match c {
                Check::GatewayListeners(g, l) if g.name == "httproute-hostname-intersection" => {
                    Some(l)
                }
                _ => None,
            })
            .expect("listener check");
        let attached: Vec<i64> = listeners.iter().map(|l| l.attached_routes).collect();
        assert_eq!(attached, vec![2, 1, 1]);
        assert_eq!(traffic_checks("HTTPRouteCORS", "ctl").len(), 4);
        assert_eq!(
            traffic_checks("HTTPRouteRequestHeaderModifierBackendWeights", "ctl").len(),
            1
        );
        assert!(traffic_checks("HTTPRouteRequestMirror", "ctl").is_empty());
    }

    #[test]
    fn backend_tls_rows_expand_and_carry_the_client_certificate() {
        let text = std::fs::read_to_string(crate::manifests::DEFAULT_CASES_PATH)
            .expect("shared cases.tsv");
        let cases = crate::cases::parse_cases(&text).expect("parse");
        let rows: Vec<&Case> = cases
            .iter()
            .filter(|c| c.test == "BackendTLSPolicyInvalidCACertificateRef")
            .collect();
        let paths: Vec<String> = expand_rows("BackendTLSPolicyInvalidCACertificateRef", &rows)
            .into_iter()
            .map(|c| c.path)
            .collect();
        assert_eq!(
            paths,
            [
                "/backendtlspolicy-nonexistent-ca-certificate-ref",
                "/backendtlspolicy-malformed-ca-certificate-ref"
            ]
        );
        // Rows without the placeholder are kept as they are.
        let plain: Vec<&Case> = cases
            .iter()
            .filter(|c| c.test == "BackendTLSPolicy")
            .collect();
        assert_eq!(expand_rows("BackendTLSPolicy", &plain).len(), plain.len());
        let row = cases
            .iter()
            .find(|c| c.test == "GatewayTLSBackendClientCertificate")
            .expect("row");
        assert_eq!(
            row_quirks(row).backend_client_cert,
            Some(crate::certs::BACKEND_CLIENT_CERT)
        );
        let checks = traffic_checks("BackendTLSPolicyConflictResolution", "c");
        assert!(checks.contains(&Check::BackendTlsPolicyCondition(
            ObjRef::infra("conflicted-with-section-name-2"),
            gw("same-namespace"),
            cond("Accepted", "False", "Conflicted"),
        )));
    }

    #[test]
    fn row_quirks_of_cors_preflights() {
        let text = std::fs::read_to_string(crate::manifests::DEFAULT_CASES_PATH)
            .expect("shared cases.tsv");
        let cases = crate::cases::parse_cases(&text).expect("parse");
        let cors: Vec<&Case> = cases.iter().filter(|c| c.test == "HTTPRouteCORS").collect();
        assert!(!cors.is_empty());
        for c in &cors {
            let q = row_quirks(c);
            assert_eq!(q.gateway_reply, c.method == "OPTIONS", "line {}", c.line);
            if q.gateway_reply {
                assert!(
                    c.namespace.is_empty(),
                    "line {}: preflights expect no namespace",
                    c.line
                );
            }
        }
        assert_eq!(
            cors.iter()
                .filter(|c| row_quirks(c).ignore_whitespace)
                .count(),
            5,
            "the four /cors-1 preflights and the /cors-wildcard-methods-headers one"
        );
        let other = cases
            .iter()
            .find(|c| c.test != "HTTPRouteCORS")
            .expect("row");
        assert_eq!(row_quirks(other), RowQuirks::default());
    }

    #[test]
    fn mutations_edit_documents_and_bump_generation() {
        let mut docs = vec![
            json!({"kind": "Gateway", "metadata": {"name": "g", "namespace": INFRA, "generation": 1},
                   "spec": {"listeners": [{"name": "http", "port": 80}]}}),
            json!({"kind": "HTTPRoute", "metadata": {"name": "r", "namespace": INFRA, "generation": 1},
                   "spec": {"rules": [{"backendRefs": [{"name": "a", "port": 8080}]}]}}),
            json!({"kind": "ReferenceGrant", "metadata": {"name": "x", "namespace": INFRA}}),
            json!({"kind": "GatewayClass", "metadata": {"name": "c", "generation": 1},
                   "spec": {"controllerName": "ctl", "description": "old"}}),
        ];
        let seen =
            Mutation::AddGatewayListener(ObjRef::infra("g"), json!({"name": "alt", "port": 8080}))
                .apply(&mut docs)
                .expect("add listener");
        assert_eq!(docs[0]["spec"]["listeners"][1]["name"], "alt");
        assert_eq!(docs[0]["metadata"]["generation"], 2);
        assert_eq!(
            seen,
            Some(Check::SeenGeneration("Gateway", ObjRef::infra("g"), 2))
        );
        let seen = Mutation::RemoveGatewayListener(ObjRef::infra("g"), "http")
            .apply(&mut docs)
            .expect("remove listener");
        assert_eq!(
            docs[0]["spec"]["listeners"],
            json!([{"name": "alt", "port": 8080}])
        );
        assert_eq!(
            seen,
            Some(Check::SeenGeneration("Gateway", ObjRef::infra("g"), 3))
        );
        assert!(
            Mutation::RemoveGatewayListener(ObjRef::infra("g"), "http")
                .apply(&mut docs)
                .is_err(),
            "no such listener any more"
        );
        Mutation::SetRouteBackend(ObjRef::infra("r"), "b".into())
            .apply(&mut docs)
            .expect("set backend");
        assert_eq!(docs[1]["spec"]["rules"][0]["backendRefs"][0]["name"], "b");
        assert_eq!(docs[1]["metadata"]["generation"], 2);
        let seen = Mutation::SetSpecField(
            "GatewayClass",
            ObjRef::cluster("c"),
            "description",
            json!("new"),
        )
        .apply(&mut docs)
        .expect("set description");
        assert_eq!(docs[3]["spec"]["description"], "new");
        assert_eq!(docs[3]["spec"]["controllerName"], "ctl");
        assert_eq!(
            seen,
            Some(Check::SeenGeneration(
                "GatewayClass",
                ObjRef::cluster("c"),
                2
            ))
        );
        let seen = Mutation::DeleteKind("ReferenceGrant")
            .apply(&mut docs)
            .expect("delete");
        assert_eq!(seen, None);
        assert_eq!(docs.len(), 3);
        assert!(
            Mutation::SetRouteBackend(ObjRef::infra("missing"), "b".into())
                .apply(&mut docs)
                .is_err()
        );
    }
}
