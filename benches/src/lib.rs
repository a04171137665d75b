//! The project's benchmark suite (not published).
//!
//! * `benches/*.rs`: criterion micro-benchmarks of the request path and of configuration
//!   compile (`cargo bench -p gateway-benches --bench <name>`).
//! * `src/bin/loadgen.rs`: an open-loop, constant-rate HTTP load generator used by
//!   `benches/peers/peers.py` for fixed-rate latency, HTTPS, HTTP/2 and idle-connection runs.
//! * This library: the route table every benchmark shares, so the micro-benchmarks and the peer
//!   comparison measure the same configuration.
//!
//! See `docs/benchmarks.md`, section "Benchmark suite", for every command and what it reports.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt::Write;

/// The route counts every route-dependent benchmark runs at.
pub const ROUTE_COUNTS: [usize; 3] = [10, 1_000, 10_000];

/// The `spec.controllerName` of the benchmark GatewayClass.
pub const CONTROLLER_NAME: &str = "example.net/bench";

/// The Gateway API resources of the peer comparison's route table, as multi-document YAML:
/// a GatewayClass, a Gateway `default/gw` with an HTTP listener on port 80, Services `be` and
/// `be2` (each one ready endpoint on 127.0.0.1 at `ports.0` / `ports.1`) and `routes`
/// HTTPRoutes.
///
/// HTTPRoute `r{i}` matches `PathPrefix /svc-{i}/` and adds request header `x-route: {i}`; every
/// 10th route has a first rule that sends requests with header `x-variant: b` to `be2`. This is
/// the table `benches/peers/peers.py` gives the gateway, and nginx, HAProxy and Envoy get its
/// equivalent.
pub fn route_table_yaml(routes: usize, ports: (u16, u16)) -> String {
    let mut out = String::with_capacity(400 * routes + 2_000);
    out.push_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\n\
         metadata: {name: bench}\n",
    );
    let _ = writeln!(out, "spec: {{controllerName: {CONTROLLER_NAME}}}");
    out.push_str(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {name: gw, namespace: default}\nspec:\n  gatewayClassName: bench\n  \
         listeners: [{name: http, port: 80, protocol: HTTP}]\n",
    );
    for (svc, port) in [("be", ports.0), ("be2", ports.1)] {
        let _ = write!(
            out,
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: default}}\n\
             spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}\n\
             ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {svc}-1, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nports: [{{name: http, port: {port}}}]\n\
             endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n"
        );
    }
    for i in 0..routes {
        let modifier = format!(
            "filters: [{{type: RequestHeaderModifier, requestHeaderModifier: \
             {{add: [{{name: x-route, value: \"{i}\"}}]}}}}]"
        );
        let _ = write!(
            out,
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
             metadata: {{name: r{i}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules:\n"
        );
        if i % 10 == 0 {
            let _ = write!(
                out,
                "  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/}}, \
                 headers: [{{name: x-variant, value: b}}]}}]\n    {modifier}\n    \
                 backendRefs: [{{name: be2, port: 80}}]\n"
            );
        }
        let _ = write!(
            out,
            "  - matches: [{{path: {{type: PathPrefix, value: /svc-{i}/}}}}]\n    {modifier}\n    \
             backendRefs: [{{name: be, port: 80}}]\n"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_k8s::{Resources, TranslateOptions, Translator};

    #[test]
    fn the_route_table_translates_without_diagnostics_and_keeps_every_route() {
        let resources = Resources::parse_yaml(&route_table_yaml(25, (18080, 18079)), "t.yaml");
        let mut translator = Translator::new(TranslateOptions::new(CONTROLLER_NAME));
        let t = translator.translate(&resources);
        assert!(t.diagnostics.is_empty(), "{:?}", t.diagnostics);
        let routes: usize = t
            .config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .map(|l| l.routes.len())
            .sum();
        assert_eq!(routes, 25);
        let rules: usize = t
            .config
            .binds
            .iter()
            .flat_map(|b| &b.listeners)
            .flat_map(|l| &l.routes)
            .map(|r| r.rules.len())
            .sum();
        assert_eq!(rules, 25 + 3, "every 10th route has the x-variant rule");
    }
}
