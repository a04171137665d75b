//! Gateway listeners: protocol, allowed routes, TLS certificates and conflicts.

use std::collections::BTreeMap;
use std::sync::Arc;

use gateway_api::gateways::{
    Gateway, GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersTlsCertificateRefs, GatewayListenersTlsMode,
};
use gateway_core::config::{BodyHeader, Certificate, ListenerTls, Protocol, Route};

use super::refs::{self, RefFrom, Requirement, Selector};
use crate::resources::{GATEWAY_GROUP, Resources};

/// The header body-based routing sets from the request body's `model` field (the Gateway API
/// Inference Extension's body-based router sets the same header).
pub(crate) const MODEL_NAME_HEADER: &str = "x-gateway-model-name";

/// How much of a request body a listener reads for its body headers: as much as the inference
/// data plane holds for a prompt ([`gateway_inference::gateway::DEFAULT_BODY_LIMIT`], 4 MiB), so
/// routing by model never refuses a body the pool behind the route would take. Only listeners
/// with body headers read bodies before routing.
pub(crate) const BODY_HEADER_BYTES: usize = gateway_inference::gateway::DEFAULT_BODY_LIMIT;

/// The body headers of a listener with `model_routes` routes attached that match on the model
/// header ([`gateway_core::config::Listener::body_headers`]): when a rule of some route matches
/// on the header `X-Gateway-Model-Name` (any case), that header is derived from the JSON body's
/// top-level `model` field before routing, so routes can choose a backend by model; otherwise
/// none (bodies stream). The count is kept with the listener's routes
/// ([`ListenerPlan::model_routes`]), so a route added, changed or removed (translated or
/// reused) updates the listener.
pub(crate) fn body_headers(model_routes: usize) -> Vec<BodyHeader> {
    if model_routes > 0 {
        vec![BodyHeader::new(MODEL_NAME_HEADER, "model")]
    } else {
        Vec::new()
    }
}

/// Whether some rule of `route` matches on the model header (see [`body_headers`]).
pub(crate) fn uses_model_header(route: &Route) -> bool {
    route
        .rules
        .iter()
        .flat_map(|rule| &rule.matches)
        .flat_map(|m| &m.headers)
        .any(|h| h.name.eq_ignore_ascii_case(MODEL_NAME_HEADER))
}

/// A condition outcome that is not True: its reason and message.
pub(crate) type Problem = (&'static str, String);

/// Which namespaces may attach routes to a listener.
#[derive(Clone, Debug)]
pub(crate) enum AllowedFrom {
    /// Only the Gateway's namespace.
    Same,
    /// Every namespace.
    All,
    /// Namespaces whose labels match.
    Selector(Selector),
    /// `Selector` without a selector: nothing.
    Nothing,
}

/// Everything the translator decides about one listener.
#[derive(Clone, Debug)]
pub(crate) struct ListenerPlan {
    /// The listener (section) name.
    pub name: String,
    /// The declared port.
    pub port: u16,
    /// The protocol, when supported.
    pub protocol: Option<Protocol>,
    /// The listener hostname.
    pub hostname: Option<String>,
    /// `Err` makes the listener `Accepted=False` (unsupported protocol, bad port).
    pub accepted: Result<(), Problem>,
    /// Some `allowedRoutes.kinds` entry is not supported.
    pub invalid_kinds: Option<String>,
    /// Whether HTTPRoute is among the supported kinds.
    pub http_route_allowed: bool,
    /// A certificate reference problem (`ResolvedRefs=False`).
    pub cert_problem: Option<Problem>,
    /// A client validation CA reference problem (`ResolvedRefs=False`; see `frontend`).
    pub ca_problem: Option<Problem>,
    /// A conflict with another listener (`Conflicted=True`).
    pub conflicted: Option<Problem>,
    /// The namespaces allowed to attach routes.
    pub allowed_from: AllowedFrom,
    /// Loaded certificates (HTTPS only).
    pub tls: Option<ListenerTls>,
    /// Routes accepted on this listener (shared with the translator's cache and the
    /// configuration), in precedence order.
    pub routes: Vec<Arc<Route>>,
    /// How many of `routes` match on the model header ([`uses_model_header`]).
    pub model_routes: usize,
}

impl ListenerPlan {
    /// Whether routes may be attached: accepted, not conflicted, and HTTPRoute is allowed.
    pub fn takes_routes(&self) -> bool {
        self.accepted.is_ok() && self.conflicted.is_none() && self.http_route_allowed
    }

    /// Whether the listener can be served (given an address).
    pub fn programmable(&self) -> bool {
        self.takes_routes() && self.cert_problem.is_none() && self.protocol.is_some()
    }

    /// Whether a route from `namespace` may attach.
    pub fn allows_namespace(
        &self,
        resources: &Resources,
        gateway_namespace: &str,
        namespace: &str,
    ) -> bool {
        match &self.allowed_from {
            AllowedFrom::Same => gateway_namespace == namespace,
            AllowedFrom::All => true,
            AllowedFrom::Selector(selector) => {
                selector.matches(&refs::namespace_labels(resources, namespace))
            }
            AllowedFrom::Nothing => false,
        }
    }
}

/// Plans one listener of `gateway` (namespace `gateway_namespace`).
pub(crate) fn plan_listener(
    resources: &Resources,
    gateway_namespace: &str,
    listener: &GatewayListeners,
) -> ListenerPlan {
    let protocol = match listener.protocol.as_str() {
        "HTTP" => Some(Protocol::Http),
        "HTTPS" => Some(Protocol::Https),
        _ => None,
    };
    let port = u16::try_from(listener.port).ok().filter(|p| *p != 0);
    let mut accepted = match (protocol, port) {
        (None, _) => Err((
            "UnsupportedProtocol",
            format!(
                "protocol {} is not supported (HTTP and HTTPS are)",
                listener.protocol
            ),
        )),
        (_, None) => Err((
            "PortUnavailable",
            format!("port {} is out of range", listener.port),
        )),
        _ => Ok(()),
    };

    let (http_route_allowed, invalid_kinds) = if protocol.is_none() {
        (false, None)
    } else {
        route_kinds(listener)
    };

    let allowed_from = allowed_from(listener);

    let mut cert_problem = None;
    let mut tls = None;
    if protocol == Some(Protocol::Https) && accepted.is_ok() {
        let spec = listener.tls.as_ref();
        let mode = spec
            .and_then(|t| t.mode.clone())
            .unwrap_or(GatewayListenersTlsMode::Terminate);
        if mode == GatewayListenersTlsMode::Passthrough {
            accepted = Err((
                "UnsupportedProtocol",
                "TLS mode Passthrough is not supported on HTTPS listeners".to_string(),
            ));
        } else {
            let cert_refs = spec
                .and_then(|t| t.certificate_refs.clone())
                .unwrap_or_default();
            if cert_refs.is_empty() {
                cert_problem = Some((
                    "InvalidCertificateRef",
                    "HTTPS listener has no certificateRefs".to_string(),
                ));
            }
            let mut certificates = Vec::new();
            for cert_ref in &cert_refs {
                match load_certificate(resources, gateway_namespace, cert_ref) {
                    Ok(cert) => certificates.push(cert),
                    Err(problem) => {
                        if cert_problem.is_none() {
                            cert_problem = Some(problem);
                        }
                    }
                }
            }
            if cert_problem.is_none() {
                tls = Some(ListenerTls {
                    certificates,
                    client_validation: None,
                });
            }
        }
    }

    ListenerPlan {
        name: listener.name.clone(),
        port: port.unwrap_or_default(),
        protocol,
        hostname: listener.hostname.clone().filter(|h| !h.is_empty()),
        accepted,
        invalid_kinds,
        http_route_allowed,
        cert_problem,
        ca_problem: None,
        conflicted: None,
        allowed_from,
        tls,
        routes: Vec::new(),
        model_routes: 0,
    }
}

/// Reads `allowedRoutes.kinds`: whether HTTPRoute is allowed, and a message if some kind is not
/// supported.
fn route_kinds(listener: &GatewayListeners) -> (bool, Option<String>) {
    let kinds = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.kinds.clone())
        .unwrap_or_default();
    if kinds.is_empty() {
        return (true, None);
    }
    let mut http_route = false;
    let mut invalid = Vec::new();
    for kind in &kinds {
        let group = kind.group.as_deref().unwrap_or(GATEWAY_GROUP);
        if group == GATEWAY_GROUP && kind.kind == "HTTPRoute" {
            http_route = true;
        } else {
            invalid.push(format!("{group}/{}", kind.kind));
        }
    }
    let message =
        (!invalid.is_empty()).then(|| format!("unsupported route kinds: {}", invalid.join(", ")));
    (http_route, message)
}

fn allowed_from(listener: &GatewayListeners) -> AllowedFrom {
    let namespaces = listener
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let from = namespaces
        .and_then(|n| n.from.clone())
        .unwrap_or(GatewayListenersAllowedRoutesNamespacesFrom::Same);
    match from {
        GatewayListenersAllowedRoutesNamespacesFrom::Same => AllowedFrom::Same,
        GatewayListenersAllowedRoutesNamespacesFrom::All => AllowedFrom::All,
        GatewayListenersAllowedRoutesNamespacesFrom::Selector => {
            match namespaces.and_then(|n| n.selector.as_ref()) {
                Some(selector) => AllowedFrom::Selector(Selector {
                    match_labels: selector.match_labels.clone().unwrap_or_default(),
                    match_expressions: selector
                        .match_expressions
                        .iter()
                        .flatten()
                        .map(|e| Requirement {
                            key: e.key.clone(),
                            operator: e.operator.clone(),
                            values: e.values.clone().unwrap_or_default(),
                        })
                        .collect(),
                }),
                None => AllowedFrom::Nothing,
            }
        }
    }
}

/// Resolves one certificate reference to a PEM chain and key.
pub(crate) fn load_certificate(
    resources: &Resources,
    gateway_namespace: &str,
    cert_ref: &GatewayListenersTlsCertificateRefs,
) -> Result<Certificate, Problem> {
    let group = cert_ref.group.as_deref().unwrap_or("");
    let kind = cert_ref.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err((
            "InvalidCertificateRef",
            format!(
                "certificateRef {group}/{kind} {} is not a core Secret",
                cert_ref.name
            ),
        ));
    }
    let namespace = cert_ref
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(gateway_namespace);
    let from = RefFrom {
        group: GATEWAY_GROUP,
        kind: "Gateway",
        namespace: gateway_namespace,
    };
    if !refs::permitted(resources, from, "", "Secret", namespace, &cert_ref.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace} allows Gateways from {gateway_namespace} to use Secret {}",
                cert_ref.name
            ),
        ));
    }
    let key = crate::ObjectKey::new(namespace, cert_ref.name.clone());
    let secret = resources.secrets.get(&key).ok_or_else(|| {
        (
            "InvalidCertificateRef",
            format!("Secret {key} does not exist"),
        )
    })?;
    let secret = &secret.object;
    if let Some(t) = secret.type_.as_deref()
        && t != "kubernetes.io/tls"
    {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {key} has type {t}, not kubernetes.io/tls"),
        ));
    }
    let field = |name: &str| -> Option<Vec<u8>> {
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(name))
            .map(|s| s.as_bytes().to_vec())
            .or_else(|| {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(name))
                    .map(|b| b.0.clone())
            })
    };
    let (Some(cert), Some(private_key)) = (field("tls.crt"), field("tls.key")) else {
        return Err((
            "InvalidCertificateRef",
            format!("Secret {key} lacks tls.crt or tls.key"),
        ));
    };
    validate_pem(&cert, &private_key)
        .map_err(|m| ("InvalidCertificateRef", format!("Secret {key}: {m}")))?;
    Ok(Certificate {
        cert_pem: String::from_utf8_lossy(&cert).into_owned(),
        key_pem: String::from_utf8_lossy(&private_key).into_owned(),
    })
}

/// Checks that `cert` holds at least one PEM certificate and `key` a PEM private key.
pub(crate) fn validate_pem(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut &cert[..]).collect();
    match certs {
        Ok(c) if !c.is_empty() => {}
        Ok(_) => return Err("tls.crt holds no PEM certificate".into()),
        Err(e) => return Err(format!("tls.crt is not valid PEM: {e}")),
    }
    match rustls_pemfile::private_key(&mut &key[..]) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err("tls.key holds no PEM private key".into()),
        Err(e) => Err(format!("tls.key is not valid PEM: {e}")),
    }
}

/// Marks listeners of one Gateway that conflict: the same port with different protocols
/// (`ProtocolConflict`), or the same port, protocol and hostname (`HostnameConflict`).
pub(crate) fn mark_conflicts(listeners: &mut [ListenerPlan]) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        if l.accepted.is_ok() {
            by_port.entry(l.port).or_default().push(i);
        }
    }
    for (port, indices) in by_port {
        let first = listeners[indices[0]].protocol;
        if indices.iter().any(|&i| listeners[i].protocol != first) {
            for &i in &indices {
                listeners[i].conflicted = Some((
                    "ProtocolConflict",
                    format!("listeners on port {port} use different protocols"),
                ));
            }
            continue;
        }
        let mut by_host: BTreeMap<Option<String>, Vec<usize>> = BTreeMap::new();
        for &i in &indices {
            by_host
                .entry(
                    listeners[i]
                        .hostname
                        .as_ref()
                        .map(|h| h.to_ascii_lowercase()),
                )
                .or_default()
                .push(i);
        }
        for (host, same) in by_host {
            if same.len() > 1 {
                for i in same {
                    listeners[i].conflicted = Some((
                        "HostnameConflict",
                        format!(
                            "another listener on port {port} has hostname {}",
                            host.as_deref().unwrap_or("(none)")
                        ),
                    ));
                }
            }
        }
    }
}

/// Plans every listener of `gateway`, applies its client certificate validation
/// (`spec.tls.frontend`) and marks conflicts among them. The flag tells whether some HTTPS
/// listener validates in `AllowInsecureFallback` mode.
pub(crate) fn plan_listeners(
    resources: &Resources,
    gateway_namespace: &str,
    gateway: &Gateway,
) -> (Vec<ListenerPlan>, bool) {
    let mut plans: Vec<ListenerPlan> = gateway
        .spec
        .listeners
        .iter()
        .map(|l| plan_listener(resources, gateway_namespace, l))
        .collect();
    let insecure = super::frontend::apply(resources, gateway_namespace, gateway, &mut plans);
    mark_conflicts(&mut plans);
    (plans, insecure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_validation() {
        assert!(validate_pem(b"Hello world\n", b"Hello world\n").is_err());
        let cert = rcgen::generate_simple_self_signed(vec!["a.example".to_string()]);
        let Ok(cert) = cert else {
            panic!("rcgen failed");
        };
        let pem = cert.cert.pem();
        let key = cert.signing_key.serialize_pem();
        assert!(validate_pem(pem.as_bytes(), key.as_bytes()).is_ok());
        assert!(validate_pem(pem.as_bytes(), pem.as_bytes()).is_err());
    }

    fn listener(
        name: &str,
        port: u16,
        protocol: Option<Protocol>,
        hostname: Option<&str>,
    ) -> ListenerPlan {
        ListenerPlan {
            name: name.into(),
            port,
            protocol,
            hostname: hostname.map(str::to_string),
            accepted: Ok(()),
            invalid_kinds: None,
            http_route_allowed: true,
            cert_problem: None,
            ca_problem: None,
            conflicted: None,
            allowed_from: AllowedFrom::Same,
            tls: None,
            routes: Vec::new(),
            model_routes: 0,
        }
    }

    #[test]
    fn conflicts() {
        let mut ls = vec![
            listener("a", 80, Some(Protocol::Http), None),
            listener("b", 80, Some(Protocol::Https), Some("x")),
            listener("c", 81, Some(Protocol::Http), Some("x")),
            listener("d", 81, Some(Protocol::Http), Some("X")),
            listener("e", 81, Some(Protocol::Http), None),
        ];
        mark_conflicts(&mut ls);
        let reasons: Vec<_> = ls
            .iter()
            .map(|l| l.conflicted.as_ref().map(|c| c.0))
            .collect();
        assert_eq!(
            reasons,
            vec![
                Some("ProtocolConflict"),
                Some("ProtocolConflict"),
                Some("HostnameConflict"),
                Some("HostnameConflict"),
                None
            ]
        );
    }
}
