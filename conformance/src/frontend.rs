//! The frontend client-certificate tests (`GatewayFrontendClientCertificateValidation`,
//! `...InsecureFallback`, `GatewayFrontendInvalidDefaultClientCertificateValidation`),
//! transcribed from the upstream Go tests.
//!
//! Their `cases.tsv` rows name neither the Gateway, the listener, nor the client certificate each
//! request presents, and the insecure-fallback test sends more requests than it has rows; so
//! each test is a list of [`Probe`]s here. A probe that must succeed is compared with the test's
//! 200 row for its host (backend, namespace), 3 times in a row like any row.

use crate::cases::Scheme;
use crate::certs::CLIENT_CERT_PAIRS;
use crate::plan::Check;
use crate::status::{ObjRef, cond};

/// The client certificate a probe presents when the gateway asks for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented {
    /// `tls-validity-checks-client-certificate` (signed by the default CA).
    Default,
    /// `tls-validity-checks-per-port-client-certificate` (signed by the per-port CA).
    PerPort,
    /// None.
    Nothing,
}

impl Presented {
    /// The generated Secret holding the certificate, if any.
    pub fn secret(self) -> Option<&'static str> {
        match self {
            Presented::Default => Some(CLIENT_CERT_PAIRS[0].1),
            Presented::PerPort => Some(CLIENT_CERT_PAIRS[1].1),
            Presented::Nothing => None,
        }
    }
}

/// One request of a test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The listener (sectionName) whose port the request goes to.
    pub listener: &'static str,
    /// HTTP or HTTPS.
    pub scheme: Scheme,
    /// Host and SNI.
    pub host: &'static str,
    /// The client certificate presented.
    pub cert: Presented,
    /// `true`: must match the test's 200 row for `host` 3 times in a row (upstream
    /// `MakeTLSRequestAndExpectEventuallyConsistentResponse`). `false`: one request that must
    /// fail without a response (upstream `MakeTLSRequestAndExpectFailureResponse`), and when a
    /// certificate is presented the gateway must have asked for it.
    pub succeeds: bool,
}

impl Probe {
    /// A short description for failure reports.
    pub fn describe(&self) -> String {
        format!(
            "{} {} (listener {}, client certificate {:?}){}",
            self.scheme.url_scheme(),
            self.host,
            self.listener,
            self.cert,
            if self.succeeds { "" } else { ", must fail" }
        )
    }
}

/// What one of these tests does.
#[derive(Clone, Debug, PartialEq)]
pub struct FrontendPlan {
    /// The Gateway (infra namespace).
    pub gateway: &'static str,
    /// Upstream waits for `GatewayAndRoutesMustBeAccepted` (`true`), or only for the Gateway's
    /// address (`WaitForGatewayAddress`, `false`).
    pub accepted: bool,
    /// Status checks that must hold before the probes.
    pub checks: Vec<Check>,
    /// The requests, in the upstream order.
    pub probes: Vec<Probe>,
}

fn https(listener: &'static str, host: &'static str, cert: Presented, succeeds: bool) -> Probe {
    Probe {
        listener,
        scheme: Scheme::Https,
        host,
        cert,
        succeeds,
    }
}

/// Upstream `HTTPRouteMustHaveResolvedRefsConditionsTrue` for `routes` on `gateway`.
fn routes_resolved(gateway: &str, routes: &[&str]) -> Vec<Check> {
    routes
        .iter()
        .map(|r| {
            Check::RouteCondition(
                ObjRef::infra(r),
                ObjRef::infra(gateway),
                cond("ResolvedRefs", "True", "ResolvedRefs"),
            )
        })
        .collect()
}

/// The plan of `test`, if it is one of these tests.
pub fn plan(test: &str) -> Option<FrontendPlan> {
    use Presented::*;
    match test {
        "GatewayFrontendClientCertificateValidation" => {
            let gateway = "client-validation-default";
            Some(FrontendPlan {
                gateway,
                accepted: true,
                checks: routes_resolved(
                    gateway,
                    &[
                        "client-certificate-validation-https-test",
                        "client-certificate-validation-https-test-no-hostname",
                    ],
                ),
                probes: vec![
                    https("https", "example.org", Default, true),
                    https("https", "example.org", PerPort, false),
                    https("https-with-hostname", "second-example.org", PerPort, true),
                    https("https-with-hostname", "second-example.org", Default, false),
                ],
            })
        }
        "GatewayFrontendClientCertificateValidationInsecureFallback" => {
            let gateway = "client-validation-insecure-fallback";
            let mut checks = routes_resolved(
                gateway,
                &[
                    "client-cert-validation-insecure-fallback-test",
                    "client-cert-validation-insecure-fallback-test-no-hostname",
                ],
            );
            checks.push(Check::GatewayCondition(
                ObjRef::infra(gateway),
                cond(
                    "InsecureFrontendValidationMode",
                    "True",
                    "ConfigurationChanged",
                ),
            ));
            let mut probes = Vec::new();
            for (listener, host, own, other) in [
                ("https", "example.org", Default, PerPort),
                (
                    "https-with-hostname",
                    "second-example.org",
                    PerPort,
                    Default,
                ),
            ] {
                for cert in [own, other, Nothing] {
                    probes.push(https(listener, host, cert, true));
                }
            }
            Some(FrontendPlan {
                gateway,
                accepted: true,
                checks,
                probes,
            })
        }
        "GatewayFrontendInvalidDefaultClientCertificateValidation" => {
            let gateway = "invalid-default-client-validation-config";
            let gw = ObjRef::infra(gateway);
            Some(FrontendPlan {
                gateway,
                accepted: false,
                checks: vec![
                    Check::ListenerConditions(
                        gw.clone(),
                        "http",
                        vec![
                            cond("ResolvedRefs", "True", ""),
                            cond("Accepted", "True", ""),
                            cond("Programmed", "True", ""),
                        ],
                    ),
                    Check::ListenerConditions(
                        gw,
                        "https",
                        vec![
                            cond("ResolvedRefs", "False", "InvalidCACertificateRef"),
                            cond("Accepted", "False", "NoValidCACertificate"),
                            cond("Programmed", "False", ""),
                        ],
                    ),
                ],
                probes: vec![
                    Probe {
                        listener: "http",
                        scheme: Scheme::Http,
                        host: "example.org",
                        cert: Nothing,
                        succeeds: true,
                    },
                    https("https", "example.org", Nothing, false),
                ],
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{TESTS, TestKind};

    #[test]
    fn every_client_cert_test_has_a_plan_with_rows_for_its_successes() {
        let text = std::fs::read_to_string(crate::manifests::DEFAULT_CASES_PATH)
            .expect("shared cases.tsv");
        let cases = crate::cases::parse_cases(&text).expect("parse");
        let mut n = 0;
        for t in TESTS.iter().filter(|t| t.kind == TestKind::ClientCert) {
            n += 1;
            let plan = plan(t.name).unwrap_or_else(|| panic!("{} has no plan", t.name));
            for p in plan.probes.iter().filter(|p| p.succeeds) {
                assert!(
                    cases.iter().any(|c| c.test == t.name
                        && c.scheme == p.scheme
                        && c.host == p.host
                        && c.status.accepts(200)),
                    "{}: no 200 row for {}",
                    t.name,
                    p.describe()
                );
            }
        }
        assert_eq!(n, 3);
        assert!(plan("HTTPRouteSimpleSameNamespace").is_none());
        let insecure =
            plan("GatewayFrontendClientCertificateValidationInsecureFallback").expect("plan");
        assert_eq!(insecure.probes.len(), 6);
        assert!(insecure.probes.iter().all(|p| p.succeeds));
    }
}
