//! BackendTLSPolicy (gateway.networking.k8s.io/v1): TLS from the gateway to the Services a
//! policy targets, and the Gateway's `spec.tls.backend.clientCertificateRef`.
//!
//! Policies are taken oldest first (creation time, then namespace/name). Each target is a
//! Service, optionally one port of it (`sectionName` = the port's name); a policy naming a port
//! takes precedence over one naming the whole Service. The first policy to claim a target (same
//! Service, same `sectionName`) gets it; later ones get `Accepted=False` (`Conflicted`) and apply
//! nowhere. A policy whose CA references are not all valid still claims its targets, but their
//! requests fail with 500 (fail closed: never plain text, never a weaker trust).
//!
//! Conditions, written per ancestor Gateway (the Gateways serving a route to a target):
//! - `Accepted`: `True`/`Accepted`; `False` with `Conflicted`, `Invalid` (bad hostname, both or
//!   neither of `caCertificateRefs` and `wellKnownCACertificates`, an unknown well-known set, a
//!   target that is not a Service) or `NoValidCACertificate` (every CA reference invalid).
//! - `ResolvedRefs`: `True`/`ResolvedRefs`; `False` with `InvalidCACertificateRef` (missing
//!   ConfigMap or Secret, no `ca.crt`, no PEM certificate in it) or `InvalidKind` (a reference to
//!   neither a ConfigMap nor a Secret).

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::backendtlspolicies::{
    BackendTlsPolicy, BackendTlsPolicySpec, BackendTlsPolicyValidationCaCertificateRefs,
};
use gateway_api::gateways::{Gateway, GatewayListenersTlsCertificateRefs};
use gateway_core::config::{
    BackendTarget, Certificate, Route, SubjectAltName, UpstreamTls, UpstreamTrust,
};

use super::listener::Problem;
use super::validate;
use crate::resources::{GATEWAY_GROUP, ObjectKey, Resources};

/// The kind name of BackendTLSPolicy.
pub(crate) const BACKEND_TLS_POLICY_KIND: &str = "BackendTLSPolicy";

/// A policy target: a Service and, optionally, the name of one of its ports.
pub(crate) type TlsTarget = (ObjectKey, Option<String>);

/// What TLS each target gets: the settings (client certificate still unset; it is the
/// Gateway's), or why its requests must fail.
#[derive(Clone, Debug, Default)]
pub(crate) struct BackendTlsPolicies {
    effects: BTreeMap<TlsTarget, Result<UpstreamTls, String>>,
}

impl BackendTlsPolicies {
    /// The TLS of `service`'s port named `port_name`: a policy for that port, else one for the
    /// whole Service. `None`: plain TCP.
    pub(crate) fn lookup(
        &self,
        service: &ObjectKey,
        port_name: &str,
    ) -> Option<&Result<UpstreamTls, String>> {
        self.effects
            .get(&(service.clone(), Some(port_name.to_owned())))
            .filter(|_| !port_name.is_empty())
            .or_else(|| self.effects.get(&(service.clone(), None)))
    }
}

/// What was decided about one policy.
#[derive(Clone, Debug)]
pub(crate) struct TlsPolicyPlan {
    pub key: ObjectKey,
    pub generation: Option<i64>,
    /// The targeted Services (existing or not).
    pub services: Vec<ObjectKey>,
    /// `Err`: `Accepted=False` with this reason and message.
    pub accepted: Result<(), Problem>,
    /// `Err`: `ResolvedRefs=False` with this reason and message.
    pub resolved: Result<(), Problem>,
}

/// Plans every BackendTLSPolicy and returns the TLS of each target.
pub(crate) fn plan(resources: &Resources) -> (Vec<TlsPolicyPlan>, BackendTlsPolicies) {
    let mut policies: Vec<(ObjectKey, Result<BackendTlsPolicy, String>)> = resources
        .others
        .iter()
        .filter(|(k, _)| k.group == GATEWAY_GROUP && k.kind == BACKEND_TLS_POLICY_KIND)
        .map(|(k, o)| {
            (
                ObjectKey::new(k.namespace.clone(), k.name.clone()),
                serde_json::from_value::<BackendTlsPolicy>(o.object.clone())
                    .map_err(|e| e.to_string()),
            )
        })
        .collect();
    policies.sort_by_key(|(key, p)| {
        let created = p
            .as_ref()
            .map(|p| super::created_seconds(&p.metadata))
            .unwrap_or(i64::MAX);
        (created, key.clone())
    });

    let mut out = BackendTlsPolicies::default();
    let mut plans = Vec::new();
    for (key, policy) in policies {
        let policy = match policy {
            Ok(p) => p,
            Err(message) => {
                plans.push(TlsPolicyPlan {
                    key,
                    generation: None,
                    services: Vec::new(),
                    accepted: Err(("Invalid", format!("the policy is malformed: {message}"))),
                    resolved: Ok(()),
                });
                continue;
            }
        };
        let spec = &policy.spec;
        let targets: Vec<TlsTarget> = spec
            .target_refs
            .iter()
            .map(|t| {
                (
                    ObjectKey::new(key.namespace.clone(), t.name.clone()),
                    t.section_name.clone().filter(|s| !s.is_empty()),
                )
            })
            .collect();
        let services: Vec<ObjectKey> = targets.iter().map(|(s, _)| s.clone()).collect();
        let (effect, accepted, resolved) = decide(resources, &key, spec);
        let conflict = targets.iter().find_map(|t| {
            out.effects.contains_key(t).then(|| {
                let port =
                    t.1.as_deref()
                        .map(|p| format!(" port {p}"))
                        .unwrap_or_default();
                format!(
                    "Service {}{port} is already targeted by an older BackendTLSPolicy",
                    t.0
                )
            })
        });
        let accepted = match conflict {
            Some(message) => Err(("Conflicted", message)),
            None => {
                for t in targets {
                    out.effects.insert(t, effect.clone());
                }
                accepted
            }
        };
        if let Err((reason, message)) = &accepted {
            tracing::debug!(policy = %key, reason, message, "BackendTLSPolicy not accepted");
        }
        plans.push(TlsPolicyPlan {
            key,
            generation: policy.metadata.generation,
            services,
            accepted,
            resolved,
        });
    }
    (plans, out)
}

type Decision = (
    Result<UpstreamTls, String>,
    Result<(), Problem>,
    Result<(), Problem>,
);

/// The effect of a policy on its targets, and its `Accepted` and `ResolvedRefs` outcomes.
fn decide(resources: &Resources, key: &ObjectKey, spec: &BackendTlsPolicySpec) -> Decision {
    let invalid = |message: String| -> Decision {
        (
            Err(format!("BackendTLSPolicy {key}: {message}")),
            Err(("Invalid", message)),
            Ok(()),
        )
    };
    if spec.target_refs.is_empty() {
        return invalid("the policy has no targetRefs".into());
    }
    if let Some(t) = spec
        .target_refs
        .iter()
        .find(|t| !t.group.is_empty() || t.kind != "Service")
    {
        return invalid(format!(
            "target {}/{} {} is not a core Service",
            t.group, t.kind, t.name
        ));
    }
    let validation = &spec.validation;
    if let Err(e) = validate::precise_hostname(&validation.hostname) {
        return invalid(format!("hostname {:?}: {e}", validation.hostname));
    }
    let mut subject_alt_names = Vec::new();
    for san in validation.subject_alt_names.iter().flatten() {
        match (&san.hostname, &san.uri) {
            (Some(h), _) if !h.is_empty() => {
                subject_alt_names.push(SubjectAltName::Hostname(h.clone()))
            }
            (_, Some(u)) if !u.is_empty() => subject_alt_names.push(SubjectAltName::Uri(u.clone())),
            _ => return invalid("a subjectAltName has neither hostname nor uri".into()),
        }
    }
    let refs = validation
        .ca_certificate_refs
        .as_deref()
        .unwrap_or_default();
    let well_known = validation
        .well_known_ca_certificates
        .as_deref()
        .filter(|w| !w.is_empty());
    let trust = match (refs.is_empty(), well_known) {
        (false, Some(_)) => {
            return invalid(
                "caCertificateRefs and wellKnownCACertificates are mutually exclusive".into(),
            );
        }
        (true, None) => {
            return invalid("neither caCertificateRefs nor wellKnownCACertificates is set".into());
        }
        (true, Some("System")) => Ok(UpstreamTrust::System),
        (true, Some(other)) => {
            return invalid(format!(
                "wellKnownCACertificates {other:?} is not supported"
            ));
        }
        (false, None) => {
            let mut bundles = Vec::new();
            let mut problems: Vec<Problem> = Vec::new();
            for r in refs {
                match load_ca(resources, &key.namespace, r) {
                    Ok(pem) => bundles.push(pem),
                    Err(p) => problems.push(p),
                }
            }
            if problems.is_empty() {
                Ok(UpstreamTrust::Pem(bundles))
            } else {
                Err((bundles.is_empty(), problems))
            }
        }
    };
    match trust {
        Ok(trust) => (
            Ok(UpstreamTls {
                hostname: validation.hostname.clone(),
                subject_alt_names,
                trust,
                client_certificate: None,
            }),
            Ok(()),
            Ok(()),
        ),
        Err((none_valid, problems)) => {
            let reason = problems[0].0;
            let message = problems
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let accepted = if none_valid {
                Err((
                    "NoValidCACertificate",
                    format!("no valid CA certificate: {message}"),
                ))
            } else {
                Ok(())
            };
            (
                Err(format!("BackendTLSPolicy {key}: {message}")),
                accepted,
                Err((reason, message)),
            )
        }
    }
}

/// The PEM bundle of one CA reference: key `ca.crt` of a ConfigMap (core) or a Secret
/// (implementation-specific), in the policy's namespace.
fn load_ca(
    resources: &Resources,
    namespace: &str,
    r: &BackendTlsPolicyValidationCaCertificateRefs,
) -> Result<String, Problem> {
    let pem = match (r.group.as_str(), r.kind.as_str()) {
        ("", "ConfigMap") => {
            let object = resources
                .other("", "ConfigMap", namespace, &r.name)
                .ok_or_else(|| {
                    (
                        "InvalidCACertificateRef",
                        format!("ConfigMap {namespace}/{} does not exist", r.name),
                    )
                })?;
            object["data"]["ca.crt"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    (
                        "InvalidCACertificateRef",
                        format!("ConfigMap {namespace}/{} has no key ca.crt", r.name),
                    )
                })?
        }
        ("", "Secret") => {
            let key = ObjectKey::new(namespace, r.name.clone());
            let secret = resources.secrets.get(&key).ok_or_else(|| {
                (
                    "InvalidCACertificateRef",
                    format!("Secret {key} does not exist"),
                )
            })?;
            let secret = &secret.object;
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .cloned()
                .or_else(|| {
                    secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get("ca.crt"))
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                })
                .ok_or_else(|| {
                    (
                        "InvalidCACertificateRef",
                        format!("Secret {key} has no key ca.crt"),
                    )
                })?
        }
        (group, kind) => {
            return Err((
                "InvalidKind",
                format!(
                    "caCertificateRef {group}/{kind} {} is neither a ConfigMap nor a Secret",
                    r.name
                ),
            ));
        }
    };
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match certs {
        Ok(c) if !c.is_empty() => Ok(pem),
        _ => Err((
            "InvalidCACertificateRef",
            format!(
                "{} {namespace}/{}: ca.crt holds no PEM certificate",
                r.kind, r.name
            ),
        )),
    }
}

/// The Gateways a policy reports to: those serving a route to one of its Services.
pub(crate) fn ancestors(
    plan: &TlsPolicyPlan,
    service_gateways: &BTreeMap<ObjectKey, BTreeMap<ObjectKey, usize>>,
) -> Vec<ObjectKey> {
    let gateways: BTreeSet<&ObjectKey> = plan
        .services
        .iter()
        .filter_map(|t| service_gateways.get(t))
        .flat_map(BTreeMap::keys)
        .collect();
    gateways.into_iter().take(16).cloned().collect()
}

/// The Gateway's backend client certificate (`spec.tls.backend.clientCertificateRef`):
/// `Ok(None)` when it names none; `Err` with the Gateway `ResolvedRefs` reason
/// (`InvalidClientCertificateRef`, `RefNotPermitted`).
pub(crate) fn client_certificate(
    resources: &Resources,
    gateway_namespace: &str,
    gateway: &Gateway,
) -> Result<Option<Certificate>, Problem> {
    let Some(r) = gateway
        .spec
        .tls
        .as_ref()
        .and_then(|t| t.backend.as_ref())
        .and_then(|b| b.client_certificate_ref.as_ref())
    else {
        return Ok(None);
    };
    let as_listener_ref = GatewayListenersTlsCertificateRefs {
        group: r.group.clone(),
        kind: r.kind.clone(),
        name: r.name.clone(),
        namespace: r.namespace.clone(),
    };
    super::listener::load_certificate(resources, gateway_namespace, &as_listener_ref)
        .map(Some)
        .map_err(|(reason, message)| {
            let reason = if reason == "RefNotPermitted" {
                reason
            } else {
                "InvalidClientCertificateRef"
            };
            (reason, format!("backend clientCertificateRef: {message}"))
        })
}

/// Gives every TLS backend of `route` the Gateway's client certificate.
pub(crate) fn with_client_certificate(route: &Route, cert: &Certificate) -> Route {
    let mut route = route.clone();
    for rule in &mut route.rules {
        for backend in &mut rule.backends {
            let tls = match &mut backend.target {
                BackendTarget::Endpoints(b) => b.tls.as_mut(),
                BackendTarget::Dns(d) => d.tls.as_mut(),
                BackendTarget::Unresolved { .. } => None,
            };
            if let Some(tls) = tls {
                tls.client_certificate = Some(cert.clone());
            }
        }
    }
    route
}
