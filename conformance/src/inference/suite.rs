//! The 14 upstream Inference Extension conformance tests (`conformance/tests/*.go`),
//! transcribed: each test's status checks, requests, headers, expected backends and counts.
//! The manifests are read from the upstream data at run time; only the assertions live here.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use super::checks::{InfCheck, pool_accepted, route_accepted_and_resolved};
use super::cluster::pool_target_ports;
use super::{
    APP_NS, Env, Expect, INFRA_NS, PRIMARY_GW, SECONDARY_GW, SELECTION_HEADER, SERVED_HEADER,
};
use crate::manifests::{kind, name};
use crate::status::{ObjRef, cond};

/// A test's outcome: a summary, or why it failed.
pub type TestOutcome = Result<String, String>;
/// The future of one test body.
pub type BoxTest<'a> = Pin<Box<dyn Future<Output = TestOutcome> + 'a>>;
/// One test body.
pub type RunFn = for<'a, 'b> fn(&'a mut Env<'b>) -> BoxTest<'a>;

/// One upstream test: its ShortName, manifest file and transcribed body.
pub struct Spec {
    /// Upstream `ShortName`.
    pub name: &'static str,
    /// The manifest file under `tests/`.
    pub file: &'static str,
    /// The transcribed assertions.
    pub run: RunFn,
}

/// Every test of the suite, in upstream's file order.
pub static TESTS: &[Spec] = &[
    Spec {
        name: "EppUnAvailableFailOpen",
        file: "epp_unavailable_fail_open.yaml",
        run: epp_unavailable_fail_open,
    },
    Spec {
        name: "GatewayDestinationEndpointServed",
        file: "gateway_destination_endpoint_served.yaml",
        run: destination_endpoint_served,
    },
    Spec {
        name: "GatewayFollowingEPPRouting",
        file: "gateway_following_epp_routing.yaml",
        run: following_epp_routing,
    },
    Spec {
        name: "GatewayFollowingEPPRoutingWithDataParallelism",
        file: "gateway_following_epp_routing_dp.yaml",
        run: following_epp_routing_dp,
    },
    Spec {
        name: "GatewayWeightedAcrossTwoInferencePools",
        file: "gateway_weighted_two_pools.yaml",
        run: weighted_two_pools,
    },
    Spec {
        name: "HTTPRouteInvalidInferencePoolRef",
        file: "httproute_invalid_inferencepool_ref.yaml",
        run: invalid_pool_ref,
    },
    Spec {
        name: "HTTPRouteMultipleGatewaysDifferentPools",
        file: "httproute_multiple_gateways_different_pools.yaml",
        run: multiple_gateways_different_pools,
    },
    Spec {
        name: "InferencePoolAccepted",
        file: "inferencepool_accepted.yaml",
        run: pool_accepted_test,
    },
    Spec {
        name: "InferencePoolAppProtocol",
        file: "inferencepool_appprotocol.yaml",
        run: app_protocol,
    },
    Spec {
        name: "InferencePoolHTTPRoutePortValidation",
        file: "inferencepool_httproute_port_validation.yaml",
        run: port_validation,
    },
    Spec {
        name: "InferencePoolInvalidEPPService",
        file: "inferencepool_invalid_epp_service.yaml",
        run: invalid_epp_service,
    },
    Spec {
        name: "InferencePoolMissingEPPRef",
        file: "inferencepool_missing_epp_ref.yaml",
        run: missing_epp_ref,
    },
    Spec {
        name: "HTTPRouteMultipleRulesDifferentPools",
        file: "inferencepool_multiple_rules_different_pools.yaml",
        run: multiple_rules_different_pools,
    },
    Spec {
        name: "InferencePoolResolvedRefsCondition",
        file: "inferencepool_resolvedrefs_condition.yaml",
        run: resolved_refs_condition,
    },
];

const PRIMARY_APP: &str = "primary-inference-model-server";
const SECONDARY_APP: &str = "secondary-inference-model-server";
const PRIMARY_DEPLOYMENT: &str = "primary-inference-model-server-deployment";
const PRIMARY_POOL: &str = "primary-inference-pool";
const SECONDARY_POOL: &str = "secondary-inference-pool";
/// The header lwepp adds to every response it processed.
const PICKER_RESPONSE_HEADER: &str = "x-went-into-resp-headers";
/// The replicas upstream requires of each model server (`ModelServerPodReplicas`).
const REPLICAS: usize = 3;

fn gw(n: &str) -> ObjRef {
    ObjRef::new(INFRA_NS, n)
}

fn app(n: &str) -> ObjRef {
    ObjRef::new(APP_NS, n)
}

fn sel(value: String) -> [(&'static str, String); 1] {
    [(SELECTION_HEADER, value)]
}

/// Upstream `GetPodsWithLabel(app=<label>)`: (name, IP) of each pod, `REPLICAS` of them.
fn pods(env: &Env<'_>, label: &str) -> Result<Vec<(String, IpAddr)>, String> {
    let pods: Vec<(String, IpAddr)> = env
        .cluster()
        .pods_with_app(APP_NS, label)
        .iter()
        .map(|p| (p.name().to_string(), p.ip()))
        .collect();
    if pods.len() != REPLICAS {
        return Err(format!(
            "harness: {} pods with app={label}, want {REPLICAS}",
            pods.len()
        ));
    }
    Ok(pods)
}

fn join_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Upstream `assertTrafficOnlyReachesToExpectedPods`: `total` requests, `concurrency` at a
/// time; every one must match `exp` and be served by one of `names`. `extra` checks each echo
/// further (the DP test's port rules). Returns the serving pod of each request.
async fn only_expected_pods(
    env: &Env<'_>,
    req: &crate::client::RequestSpec,
    exp: &Expect,
    names: &[String],
    total: usize,
    concurrency: usize,
    extra: &dyn Fn(&crate::compare::EchoBody) -> Result<(), String>,
) -> Result<Vec<String>, String> {
    let mut served = Vec::new();
    for r in env.burst(req, total, concurrency).await {
        let obs = r.map_err(|e| format!("roundtrip failed: {e}"))?;
        exp.compare(req, &obs)
            .map_err(|e| format!("response expectation failed: {e}"))?;
        let echo = obs.echo.as_ref().ok_or("no echo")?;
        if !names.contains(&echo.pod) {
            return Err(format!(
                "request was handled by an unexpected pod {:?} (expected one of {names:?})",
                echo.pod
            ));
        }
        extra(echo)?;
        served.push(echo.pod.clone());
    }
    Ok(served)
}

// --- InferencePoolAccepted -----------------------------------------------------------------

fn pool_accepted_test<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        // Upstream checks the pool only: Accepted=True, any reason.
        let checks = [InfCheck::Pool(
            app(PRIMARY_POOL),
            gw(PRIMARY_GW),
            cond("Accepted", "True", ""),
        )];
        env.wait(&checks).await?;
        Ok(format!("{} status check", checks.len()))
    })
}

// --- HTTPRouteInvalidInferencePoolRef --------------------------------------------------------

fn invalid_pool_ref<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let route = app("httproute-to-non-existent-pool");
        let checks = [
            InfCheck::Route(
                route.clone(),
                g.clone(),
                cond("Accepted", "True", "Accepted"),
            ),
            InfCheck::Route(route, g, cond("ResolvedRefs", "False", "BackendNotFound")),
        ];
        env.wait(&checks).await?;
        Ok(format!("{} status checks", checks.len()))
    })
}

// --- InferencePoolMissingEPPRef ---------------------------------------------------------------

fn missing_epp_ref<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let checks = [
            InfCheck::Route(
                app("httproute-for-missing-epp-ref-pool"),
                g.clone(),
                cond("Accepted", "True", "Accepted"),
            ),
            InfCheck::PoolAnyOf(
                app("pool-with-missing-epp-ref"),
                g,
                vec![
                    cond("Accepted", "True", ""),
                    cond("Accepted", "False", "EndpointPickerRefMissing"),
                ],
            ),
        ];
        env.wait(&checks).await?;
        Ok(format!("{} status checks", checks.len()))
    })
}

// --- InferencePoolInvalidEPPService ---------------------------------------------------------

fn invalid_epp_service<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let ip = env.address(PRIMARY_GW).await?;
        env.wait(&[
            InfCheck::Route(
                app("httproute-for-invalid-epp-pool"),
                g.clone(),
                cond("Accepted", "True", "Accepted"),
            ),
            InfCheck::Pool(
                app("pool-with-invalid-epp"),
                g,
                cond("ResolvedRefs", "False", ""),
            ),
        ])
        .await?;
        let req = env.request(ip, None, "GET", "/invalid-epp-test", &[])?;
        let exp = Expect {
            statuses: vec![500, 501, 502, 503, 504],
            namespace: Some(APP_NS.into()),
            ..Expect::default()
        };
        env.eventually(&req, &exp).await?;
        Ok("2 status checks, 1 request (5xx)".into())
    })
}

// --- InferencePoolHTTPRoutePortValidation ---------------------------------------------------

fn port_validation<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let ip = env.address(PRIMARY_GW).await?;
        let scenarios = [
            (
                "httproute-pool-port-unspecified",
                "port-unspecified.example.com",
                "/test-port-unspecified",
            ),
            (
                "httproute-pool-port-matching",
                "port-matching.example.com",
                "/test-port-matching",
            ),
            (
                "httproute-pool-port-non-matching",
                "port-non-matching.example.com",
                "/test-port-non-matching",
            ),
        ];
        for (route, host, path) in scenarios {
            let mut checks = route_accepted_and_resolved(&app(route), &g);
            checks.push(pool_accepted(&app(PRIMARY_POOL), &g));
            env.wait(&checks)
                .await
                .map_err(|e| format!("{route}: {e}"))?;
            let req = env.request(ip, Some(host), "GET", path, &[])?;
            env.eventually(&req, &Expect::ok(PRIMARY_DEPLOYMENT))
                .await?;
        }
        Ok("3 scenarios".into())
    })
}

// --- InferencePoolAppProtocol ---------------------------------------------------------------

/// One route of the appProtocol test, read from the manifests: its hostname, path, pool, the
/// pool's first target port and the protocol its `appProtocol` calls for.
struct ProtocolCase {
    route: String,
    host: String,
    path: String,
    pool: String,
    port: u16,
    proto: &'static str,
}

fn protocol_cases(env: &Env<'_>) -> Result<Vec<ProtocolCase>, String> {
    let mut out = Vec::new();
    for r in env.test_docs().iter().filter(|d| kind(d) == "HTTPRoute") {
        let rule = &r["spec"]["rules"][0];
        let pool = rule["backendRefs"][0]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let pool_doc = env
            .doc("InferencePool", APP_NS, &pool)
            .ok_or_else(|| format!("harness: no InferencePool {pool}"))?;
        let port = *pool_target_ports(pool_doc)
            .first()
            .ok_or_else(|| format!("harness: pool {pool} has no target port"))?;
        let proto = if pool_doc["spec"]["appProtocol"] == "kubernetes.io/h2c" {
            "HTTP/2.0"
        } else {
            "HTTP/1.1"
        };
        out.push(ProtocolCase {
            route: name(r).to_string(),
            host: r["spec"]["hostnames"][0].as_str().unwrap_or("").to_string(),
            path: rule["matches"][0]["path"]["value"]
                .as_str()
                .unwrap_or("/")
                .to_string(),
            pool,
            port,
            proto,
        });
    }
    if out.len() != 3 {
        return Err(format!("harness: {} appProtocol routes, want 3", out.len()));
    }
    Ok(out)
}

fn app_protocol<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let ip = env.address(PRIMARY_GW).await?;
        let mut n = 0;
        for case in protocol_cases(env)? {
            let mut checks = route_accepted_and_resolved(&app(&case.route), &g);
            checks.push(pool_accepted(&app(&case.pool), &g));
            env.wait(&checks)
                .await
                .map_err(|e| format!("{}: {e}", case.route))?;
            let pool_doc = env
                .doc("InferencePool", APP_NS, &case.pool)
                .ok_or("harness: pool vanished")?;
            let pods: Vec<(String, IpAddr)> = env
                .cluster()
                .pool_pods(pool_doc)
                .iter()
                .map(|p| (p.name().to_string(), p.ip()))
                .collect();
            if pods.is_empty() {
                return Err(format!("harness: no pods for {}", case.pool));
            }
            for (pod, pod_ip) in pods {
                let selected = format!("{pod_ip}:{}", case.port);
                let req = env.request(
                    ip,
                    Some(&case.host),
                    "POST",
                    &case.path,
                    &sel(selected.clone()),
                )?;
                let mut exp = Expect::ok(&pod);
                exp.headers = vec![(SERVED_HEADER.into(), selected)];
                // Upstream's pods serve only HTTP/1.1 on 3000 and only h2c on 3001; the echo
                // pods serve both on every port, so the protocol the pod saw is compared.
                exp.proto = Some(case.proto);
                env.eventually(&req, &exp)
                    .await
                    .map_err(|e| format!("{}: {e}", case.route))?;
                n += 1;
            }
        }
        Ok(format!("3 routes, {n} selected pods"))
    })
}

// --- HTTPRouteMultipleRulesDifferentPools ----------------------------------------------------

fn multiple_rules_different_pools<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let route = app("httproute-multiple-rules-different-pools");
        // HTTPRouteAndInferencePoolMustBeAcceptedAndRouteAccepted, for each pool.
        let mut checks = route_accepted_and_resolved(&route, &g);
        checks.push(pool_accepted(&app(PRIMARY_POOL), &g));
        checks.push(pool_accepted(&app(SECONDARY_POOL), &g));
        env.wait(&checks).await?;
        let ip = env.address(PRIMARY_GW).await?;
        for (path, backend) in [("/primary", PRIMARY_APP), ("/secondary", SECONDARY_APP)] {
            let req = env.request(ip, None, "GET", path, &[])?;
            env.eventually(&req, &Expect::ok(backend)).await?;
        }
        Ok("4 status checks, 2 paths".into())
    })
}

// --- HTTPRouteMultipleGatewaysDifferentPools -------------------------------------------------

fn multiple_gateways_different_pools<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let cases = [
            (
                PRIMARY_GW,
                "route-for-primary-gateway",
                PRIMARY_POOL,
                "primary.example.com",
                "/test-primary-gateway",
                PRIMARY_APP,
            ),
            (
                SECONDARY_GW,
                "route-for-secondary-gateway",
                SECONDARY_POOL,
                "secondary.example.com",
                "/test-secondary-gateway",
                SECONDARY_APP,
            ),
        ];
        for (gateway, route, pool, host, path, backend) in cases {
            let g = gw(gateway);
            let mut checks = route_accepted_and_resolved(&app(route), &g);
            checks.push(pool_accepted(&app(pool), &g));
            env.wait(&checks).await?;
            let ip = env.address(gateway).await?;
            let req = env.request(ip, Some(host), "GET", path, &[])?;
            env.eventually(&req, &Expect::ok(backend)).await?;
        }
        Ok("2 Gateways, 2 pools".into())
    })
}

// --- InferencePoolResolvedRefsCondition ------------------------------------------------------

fn resolved_refs_condition<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let (primary, secondary) = (gw(PRIMARY_GW), gw(SECONDARY_GW));
        let pool = app(PRIMARY_POOL);
        let route_p = "httproute-for-primary-gw";
        let route_s = "httproute-for-secondary-gw";
        let mut checks = route_accepted_and_resolved(&app(route_p), &primary);
        checks.extend(route_accepted_and_resolved(&app(route_s), &secondary));
        env.wait(&checks).await?;
        let ip_p = env.address(PRIMARY_GW).await?;
        let ip_s = env.address(SECONDARY_GW).await?;
        let req_p = env.request(
            ip_p,
            Some("primary.example.com"),
            "GET",
            "/primary-gateway-test",
            &[],
        )?;
        let req_s = env.request(
            ip_s,
            Some("secondary.example.com"),
            "GET",
            "/secondary-gateway-test",
            &[],
        )?;
        let ok = Expect::ok(PRIMARY_DEPLOYMENT);
        let not_found = Expect {
            statuses: vec![404],
            ..Expect::default()
        };

        // Both routes: the pool is Accepted by both parents and routable through both.
        env.wait(&[
            pool_accepted(&pool, &primary),
            pool_accepted(&pool, &secondary),
        ])
        .await
        .map_err(|e| format!("two routes: {e}"))?;
        env.eventually(&req_p, &ok)
            .await
            .map_err(|e| format!("two routes: {e}"))?;
        env.eventually(&req_s, &ok)
            .await
            .map_err(|e| format!("two routes: {e}"))?;

        // Delete the primary route: still Accepted by the secondary parent, routable there,
        // 404 on the primary Gateway.
        env.delete("HTTPRoute", APP_NS, route_p)?;
        env.wait(&[pool_accepted(&pool, &secondary)])
            .await
            .map_err(|e| format!("after deleting {route_p}: {e}"))?;
        env.eventually(&req_s, &ok)
            .await
            .map_err(|e| format!("after deleting {route_p}: {e}"))?;
        env.eventually(&req_p, &not_found)
            .await
            .map_err(|e| format!("after deleting {route_p}: {e}"))?;

        // Delete the secondary route: no parents, 404 on the secondary Gateway.
        env.delete("HTTPRoute", APP_NS, route_s)?;
        env.wait(&[InfCheck::PoolNoParents(pool.clone())])
            .await
            .map_err(|e| format!("after deleting {route_s}: {e}"))?;
        env.eventually(&req_s, &not_found)
            .await
            .map_err(|e| format!("after deleting {route_s}: {e}"))?;
        Ok("3 phases".into())
    })
}

// --- GatewayFollowingEPPRouting ---------------------------------------------------------------

fn following_epp_routing<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let mut checks = route_accepted_and_resolved(&app("httproute-for-primary-gw"), &g);
        checks.push(pool_accepted(&app(PRIMARY_POOL), &g));
        env.wait(&checks).await?;
        let ip = env.address(PRIMARY_GW).await?;
        let pods = pods(env, PRIMARY_APP)?;
        let (host, path) = (Some("primary.example.com"), "/primary-gateway-test");
        // One pod at a time first, until each is reached consistently.
        for (pod, pod_ip) in &pods {
            let req = env.request(ip, host, "POST", path, &sel(pod_ip.to_string()))?;
            env.eventually(&req, &Expect::ok(pod)).await?;
        }
        let cases: [&[usize]; 3] = [&[2], &[0, 1], &[0, 1, 2]];
        for chosen in cases {
            let ips: Vec<IpAddr> = chosen.iter().map(|&i| pods[i].1).collect();
            let names: Vec<String> = chosen.iter().map(|&i| pods[i].0.clone()).collect();
            let req = env.request(ip, host, "POST", path, &sel(join_ips(&ips)))?;
            only_expected_pods(
                env,
                &req,
                &Expect::ok(PRIMARY_APP),
                &names,
                100,
                10,
                &|_| Ok(()),
            )
            .await
            .map_err(|e| format!("EPP returns {} pod(s): {e}", chosen.len()))?;
        }
        Ok("3 warm-ups, 3 × 100 requests".into())
    })
}

// --- GatewayFollowingEPPRoutingWithDataParallelism --------------------------------------------

/// The DP ranks: the `targetPorts` of `dp-inference-pool` (upstream's `dpPorts`).
const DP_PORTS: [&str; 3] = ["3000", "3002", "3004"];

/// Upstream `buildEPPHeader`: IPs sorted (as strings); an IP without ports is emitted alone,
/// one with ports as `ip:port` per port (sorted).
fn dp_header(selection: &BTreeMap<String, BTreeSet<&str>>) -> String {
    let mut tokens = Vec::new();
    for (ip, ports) in selection {
        if ports.is_empty() {
            tokens.push(ip.clone());
        } else {
            tokens.extend(ports.iter().map(|p| format!("{ip}:{p}")));
        }
    }
    tokens.join(",")
}

fn following_epp_routing_dp<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let mut checks = route_accepted_and_resolved(&app("httproute-for-primary-gw-dp"), &g);
        checks.push(pool_accepted(&app("dp-inference-pool"), &g));
        env.wait(&checks).await?;
        let ip = env.address(PRIMARY_GW).await?;
        let pods = pods(env, "dp-inference-model-server")?;
        let (host, path) = (Some("primary.example.com"), "/primary-gateway-dp-test");
        for (pod, pod_ip) in &pods {
            let req = env.request(ip, host, "POST", path, &sel(pod_ip.to_string()))?;
            env.eventually(&req, &Expect::ok(pod)).await?;
        }
        // (pod index, allowed ports; empty = any rank).
        let cases: [&[(usize, &[&str])]; 3] = [
            &[(1, &[])],
            &[(0, &[]), (2, &["3002"])],
            &[(0, &[]), (1, &["3000", "3004"]), (2, &[])],
        ];
        for case in cases {
            let selection: BTreeMap<String, BTreeSet<&str>> = case
                .iter()
                .map(|(i, ports)| (pods[*i].1.to_string(), ports.iter().copied().collect()))
                .collect();
            let names: Vec<String> = case.iter().map(|(i, _)| pods[*i].0.clone()).collect();
            let by_pod: BTreeMap<&str, &BTreeSet<&str>> = case
                .iter()
                .map(|(i, _)| (pods[*i].0.as_str(), &selection[&pods[*i].1.to_string()]))
                .collect();
            let header = dp_header(&selection);
            let req = env.request(ip, host, "POST", path, &sel(header.clone()))?;
            let port_rule = |echo: &crate::compare::EchoBody| {
                if echo.http_port.is_empty() {
                    return Err("missing httpPort in echo JSON body response".to_string());
                }
                let allowed = by_pod.get(echo.pod.as_str()).ok_or("pod not selected")?;
                let ok = if allowed.is_empty() {
                    DP_PORTS.contains(&echo.http_port.as_str())
                } else {
                    allowed.contains(echo.http_port.as_str())
                };
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "unexpected httpPort {:?} for pod {} (allowed: {:?})",
                        echo.http_port, echo.pod, allowed
                    ))
                }
            };
            only_expected_pods(
                env,
                &req,
                &Expect::ok("dp-inference-model-server"),
                &names,
                100,
                10,
                &port_rule,
            )
            .await
            .map_err(|e| format!("EPP header {header:?}: {e}"))?;
        }
        Ok("3 warm-ups, 3 × 100 requests".into())
    })
}

// --- GatewayDestinationEndpointServed ----------------------------------------------------------

fn destination_endpoint_served<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(PRIMARY_GW);
        let mut checks =
            route_accepted_and_resolved(&app("httproute-for-destination-endpoint-served"), &g);
        checks.push(pool_accepted(&app(PRIMARY_POOL), &g));
        env.wait(&checks).await?;
        let ip = env.address(PRIMARY_GW).await?;
        for (pod, pod_ip) in pods(env, PRIMARY_APP)? {
            let req = env.request(
                ip,
                Some("primary.example.com"),
                "POST",
                "/destination-endpoint-served-test",
                &sel(pod_ip.to_string()),
            )?;
            let mut exp = Expect::ok(&pod);
            // The echo server's port is 3000.
            exp.headers = vec![(SERVED_HEADER.into(), format!("{pod_ip}:3000"))];
            env.eventually(&req, &exp).await?;
        }
        Ok("3 pods".into())
    })
}

// --- GatewayWeightedAcrossTwoInferencePools -----------------------------------------------------

/// The allowed distance of the observed primary share from `expected` over `total` requests:
/// max(0.10, 4.5 σ) with σ the binomial standard deviation of the share.
pub fn weight_tolerance(expected: f64, total: f64) -> f64 {
    let sigma = (expected * (1.0 - expected) / total).sqrt();
    (4.5 * sigma).max(0.10)
}

fn weighted_two_pools<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        const TOTAL: usize = 200;
        const CONCURRENCY: usize = 5;
        const PRIMARY_WEIGHT: f64 = 70.0;
        const SECONDARY_WEIGHT: f64 = 30.0;
        let g = gw(PRIMARY_GW);
        let mut checks = route_accepted_and_resolved(&app("httproute-weighted-two-pools"), &g);
        checks.push(pool_accepted(&app(PRIMARY_POOL), &g));
        checks.push(pool_accepted(&app(SECONDARY_POOL), &g));
        env.wait(&checks).await?;
        let ip = env.address(PRIMARY_GW).await?;
        let primary = pods(env, PRIMARY_APP)?;
        let secondary = pods(env, SECONDARY_APP)?;
        let all_ips: Vec<IpAddr> = primary.iter().chain(&secondary).map(|p| p.1).collect();
        let header = sel(join_ips(&all_ips));
        let (host, path) = (Some("primary.example.com"), "/weighted-two-pools-test");
        let req = env.request(ip, host, "POST", path, &header)?;
        let any = Expect {
            statuses: vec![200],
            namespace: Some(APP_NS.into()),
            ..Expect::default()
        };
        env.eventually(&req, &any).await?;
        let names: Vec<String> = primary
            .iter()
            .chain(&secondary)
            .map(|p| p.0.clone())
            .collect();
        let served =
            only_expected_pods(env, &req, &any, &names, TOTAL, CONCURRENCY, &|_| Ok(())).await?;
        let primary_hits = served
            .iter()
            .filter(|p| primary.iter().any(|(n, _)| n == *p))
            .count();
        let total = served.len() as f64;
        let observed = primary_hits as f64 / total;
        let expected = PRIMARY_WEIGHT / (PRIMARY_WEIGHT + SECONDARY_WEIGHT);
        let tolerance = weight_tolerance(expected, total);
        let summary = format!(
            "primary share {observed:.3} ({primary_hits}/{TOTAL}), expected {expected:.3} ± {tolerance:.3}"
        );
        if (observed - expected).abs() > tolerance {
            return Err(format!("weighted split out of bounds: {summary}"));
        }
        Ok(summary)
    })
}

// --- EppUnAvailableFailOpen -------------------------------------------------------------------

fn epp_unavailable_fail_open<'a>(env: &'a mut Env<'_>) -> BoxTest<'a> {
    Box::pin(async move {
        let g = gw(SECONDARY_GW);
        let mut checks = route_accepted_and_resolved(&app("httproute-for-failopen-pool-gw"), &g);
        checks.push(pool_accepted(&app(SECONDARY_POOL), &g));
        env.wait(&checks).await?;
        let ip = env.address(SECONDARY_GW).await?;
        let pods = pods(env, SECONDARY_APP)?;
        let (target, target_ip) = &pods[0];
        let req = env.request(
            ip,
            Some("secondary.example.com"),
            "POST",
            "/failopen-pool-test",
            &sel(target_ip.to_string()),
        )?;
        // Phase 1: with the picker up, the selected pod serves. Beyond upstream: the response
        // went through the picker's response phase (lwepp's `x-went-into-resp-headers`), the
        // signal phase 2 relies on.
        let mut exp = Expect::ok(target);
        exp.headers = vec![(PICKER_RESPONSE_HEADER.into(), "true".into())];
        env.eventually(&req, &exp)
            .await
            .map_err(|e| format!("phase 1 (EPP available): {e}"))?;

        // Phase 2: upstream empties `primary-endpoint-picker-svc` (its `PrimaryEppServiceNN`),
        // which the FailOpen pool does not use; the harness also empties the pool's own
        // picker Service, so that the fail-open path is what answers.
        env.make_service_unavailable(APP_NS, "primary-endpoint-picker-svc")?;
        env.make_service_unavailable(APP_NS, "secondary-endpoint-picker-svc")?;
        // The gateway has read the change once a response no longer passed through the
        // picker's response phase (lwepp adds `x-went-into-resp-headers` to every response).
        let end = std::time::Instant::now() + env.deadline();
        loop {
            let bypassed = match env.shared.client.send(&req).await {
                Ok(obs) => obs.status == 200 && obs.headers.get(PICKER_RESPONSE_HEADER).is_none(),
                Err(_) => false,
            };
            if bypassed {
                break;
            }
            if std::time::Instant::now() > end {
                return Err("phase 2: responses still pass through the endpoint picker after its Service emptied".into());
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        env.eventually(&req, &Expect::ok(SECONDARY_APP))
            .await
            .map_err(|e| format!("phase 2 (EPP unavailable, FailOpen): {e}"))?;
        Ok("2 phases".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dp_header_sorts_ips_and_ports() {
        let mut sel: BTreeMap<String, BTreeSet<&str>> = BTreeMap::new();
        sel.insert("127.30.5.3".into(), ["3004", "3000"].into_iter().collect());
        sel.insert("127.30.5.1".into(), BTreeSet::new());
        assert_eq!(
            dp_header(&sel),
            "127.30.5.1,127.30.5.3:3000,127.30.5.3:3004"
        );
    }

    #[test]
    fn weight_tolerance_is_at_least_ten_points() {
        assert!((weight_tolerance(0.7, 200.0) - 0.1458).abs() < 0.001);
        assert!((weight_tolerance(0.7, 20000.0) - 0.10).abs() < 1e-9);
    }

    #[test]
    fn every_test_is_listed_once() {
        let names: BTreeSet<&str> = TESTS.iter().map(|t| t.name).collect();
        assert_eq!(names.len(), 14);
        let pool = serde_json::json!({"spec": {"selector": {"matchLabels": {"app": "a"}}}});
        let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
        assert!(super::super::cluster::selects(
            &super::super::cluster::pool_selector(&pool),
            &labels
        ));
    }
}
