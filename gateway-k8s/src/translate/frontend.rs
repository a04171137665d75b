//! Gateway `spec.tls.frontend`: client certificate validation of HTTPS listeners, per port.
//!
//! Each HTTPS listener takes the `perPort` entry of its port, else `default`. Its
//! `caCertificateRefs` must name ConfigMaps with a PEM `ca.crt` (the Core support level; other
//! kinds are refused with `InvalidCACertificateKind`). A bad reference makes the listener
//! `ResolvedRefs=False` (`InvalidCACertificateRef`, `InvalidCACertificateKind` or
//! `RefNotPermitted`); the valid references are still used. When none is valid, the listener is
//! also `Accepted=False` with `NoValidCACertificate` and is not served: serving it without the
//! validation it asks for would admit clients it must refuse.

use gateway_api::gateways::{
    Gateway, GatewayTlsFrontendDefaultValidationMode, GatewayTlsFrontendPerPortTlsValidationMode,
};
use gateway_core::config::{ClientValidation, ClientValidationMode, Protocol};
use serde_json::Value;

use super::listener::{ListenerPlan, Problem};
use super::refs::{self, RefFrom};
use crate::resources::{GATEWAY_GROUP, ObjectKey, Resources};

/// One `caCertificateRefs` entry, whichever struct (default or per port) it came from.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// The validation settings of one port, as written.
struct Wanted<'a> {
    refs: Vec<CaRef<'a>>,
    mode: ClientValidationMode,
}

/// The `perPort` entry for `port`, else `default`; `None` when neither asks for validation.
fn wanted(gateway: &Gateway, port: u16) -> Option<Wanted<'_>> {
    let frontend = gateway.spec.tls.as_ref()?.frontend.as_ref()?;
    let per_port = frontend
        .per_port
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port));
    match per_port {
        Some(p) => {
            let v = p.tls.validation.as_ref()?;
            Some(Wanted {
                refs: v
                    .ca_certificate_refs
                    .iter()
                    .map(|r| CaRef {
                        group: &r.group,
                        kind: &r.kind,
                        name: &r.name,
                        namespace: r.namespace.as_deref(),
                    })
                    .collect(),
                mode: match v.mode {
                    Some(GatewayTlsFrontendPerPortTlsValidationMode::AllowInsecureFallback) => {
                        ClientValidationMode::AllowInsecureFallback
                    }
                    _ => ClientValidationMode::AllowValidOnly,
                },
            })
        }
        None => {
            let v = frontend.default.validation.as_ref()?;
            Some(Wanted {
                refs: v
                    .ca_certificate_refs
                    .iter()
                    .map(|r| CaRef {
                        group: &r.group,
                        kind: &r.kind,
                        name: &r.name,
                        namespace: r.namespace.as_deref(),
                    })
                    .collect(),
                mode: match v.mode {
                    Some(GatewayTlsFrontendDefaultValidationMode::AllowInsecureFallback) => {
                        ClientValidationMode::AllowInsecureFallback
                    }
                    _ => ClientValidationMode::AllowValidOnly,
                },
            })
        }
    }
}

/// Resolves one CA reference to its PEM bundle.
fn resolve(
    resources: &Resources,
    gateway_namespace: &str,
    r: &CaRef<'_>,
) -> Result<String, Problem> {
    if !r.group.is_empty() || r.kind != "ConfigMap" {
        let group = if r.group.is_empty() { "core" } else { r.group };
        return Err((
            "InvalidCACertificateKind",
            format!(
                "caCertificateRef {group}/{} {} is not supported (ConfigMap is)",
                r.kind, r.name
            ),
        ));
    }
    let namespace = r
        .namespace
        .filter(|n| !n.is_empty())
        .unwrap_or(gateway_namespace);
    let from = RefFrom {
        group: GATEWAY_GROUP,
        kind: "Gateway",
        namespace: gateway_namespace,
    };
    if !refs::permitted(resources, from, "", "ConfigMap", namespace, r.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace} allows Gateways from {gateway_namespace} to use ConfigMap {}",
                r.name
            ),
        ));
    }
    let key = ObjectKey::new(namespace, r.name);
    let config_map = resources
        .other("", "ConfigMap", namespace, r.name)
        .ok_or_else(|| {
            (
                "InvalidCACertificateRef",
                format!("ConfigMap {key} does not exist"),
            )
        })?;
    let pem = config_map
        .pointer("/data/ca.crt")
        .and_then(Value::as_str)
        .ok_or_else(|| {
            (
                "InvalidCACertificateRef",
                format!("ConfigMap {key} has no ca.crt"),
            )
        })?;
    let probe = ClientValidation {
        ca_pem: vec![pem.to_string()],
        mode: ClientValidationMode::AllowValidOnly,
    };
    probe.check().map_err(|e| {
        (
            "InvalidCACertificateRef",
            format!("ConfigMap {key}: ca.crt: {e}"),
        )
    })?;
    Ok(pem.to_string())
}

/// Applies the Gateway's frontend validation to its HTTPS listeners: sets
/// [`gateway_core::config::ListenerTls::client_validation`], the `ResolvedRefs` problem, and
/// refuses listeners without a valid CA. Returns whether some HTTPS listener runs in
/// `AllowInsecureFallback` mode (the Gateway's `InsecureFrontendValidationMode` condition).
pub(crate) fn apply(
    resources: &Resources,
    gateway_namespace: &str,
    gateway: &Gateway,
    listeners: &mut [ListenerPlan],
) -> bool {
    let mut insecure = false;
    for l in listeners.iter_mut() {
        if l.protocol != Some(Protocol::Https) || l.accepted.is_err() {
            continue;
        }
        let Some(wanted) = wanted(gateway, l.port) else {
            continue;
        };
        insecure |= wanted.mode == ClientValidationMode::AllowInsecureFallback;
        let mut ca_pem = Vec::new();
        for r in &wanted.refs {
            match resolve(resources, gateway_namespace, r) {
                Ok(pem) => ca_pem.push(pem),
                Err(problem) => {
                    l.ca_problem.get_or_insert(problem);
                }
            }
        }
        if ca_pem.is_empty() {
            let message = match &l.ca_problem {
                Some((_, m)) => format!("no valid CA certificate for client validation: {m}"),
                None => "client validation names no CA certificate".to_string(),
            };
            if l.ca_problem.is_none() {
                l.ca_problem = Some(("InvalidCACertificateRef", message.clone()));
            }
            l.accepted = Err(("NoValidCACertificate", message));
            l.tls = None;
            continue;
        }
        if let Some(tls) = &mut l.tls {
            tls.client_validation = Some(ClientValidation {
                ca_pem,
                mode: wanted.mode,
            });
        }
    }
    insecure
}
