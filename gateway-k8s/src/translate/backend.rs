//! Backend references (`backendRefs`, `RequestMirror` targets): ReferenceGrant checks, Service
//! ports, EndpointSlices, the backend protocol and the backend policy.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use gateway_core::config::{Backend, BackendPolicy, BackendProtocol, BackendTarget, DnsBackend};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::backend_tls::BackendTlsPolicies;
use super::listener::Problem;
use super::refs::{self, RefFrom};
use super::validate;
use crate::crds::{XBACKEND_KIND, XBackend, XBackendProtocol, XBackendType};
use crate::resources::{GATEWAY_GROUP, GATEWAY_X_GROUP, ObjectKey, Resources};

/// The appProtocol that selects HTTP/2 prior knowledge towards a backend.
const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";
/// The appProtocol that marks a WebSocket backend.
const WS_APP_PROTOCOL: &str = "kubernetes.io/ws";

/// The backend policy (from XBackendTrafficPolicies) of each Service, by Service key.
pub(crate) type BackendPolicies = BTreeMap<ObjectKey, BackendPolicy>;

/// A reference to a backend, as the various Gateway API backend reference structs spell it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BackendRefSpec<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

impl BackendRefSpec<'_> {
    /// The namespace of the referent: its own, else the route's.
    pub fn namespace<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace
            .filter(|n| !n.is_empty())
            .unwrap_or(route_namespace)
    }

    /// A name for logs: `namespace/name:port`.
    pub fn display_name(&self, route_namespace: &str) -> String {
        let namespace = self.namespace(route_namespace);
        match self.port.and_then(|p| u16::try_from(p).ok()) {
            Some(p) => format!("{namespace}/{}:{p}", self.name),
            None => format!("{namespace}/{}", self.name),
        }
    }

    /// The XBackend this reference names, if it names one (existing or not).
    pub fn xbackend_key(&self, route_namespace: &str) -> Option<ObjectKey> {
        (self.group == Some(GATEWAY_X_GROUP) && self.kind == Some(XBACKEND_KIND))
            .then(|| ObjectKey::new(self.namespace(route_namespace), self.name))
    }

    /// The Service this reference names, if it names a core Service (existing or not).
    pub fn service_key(&self, route_namespace: &str) -> Option<ObjectKey> {
        let group = self.group.unwrap_or("");
        let kind = self.kind.unwrap_or("Service");
        (group.is_empty() && kind == "Service")
            .then(|| ObjectKey::new(self.namespace(route_namespace), self.name))
    }
}

/// Resolves a backend reference from an HTTPRoute in `route_namespace` to what it targets
/// (a Service's endpoints, or an XBackend's DNS name), or the `ResolvedRefs` problem:
/// `InvalidKind`, `RefNotPermitted`, `BackendNotFound`, `UnsupportedProtocol`.
pub(crate) fn resolve(
    resources: &Resources,
    policies: &BackendPolicies,
    tls: &BackendTlsPolicies,
    route_namespace: &str,
    backend: BackendRefSpec<'_>,
) -> Result<BackendTarget, Problem> {
    let group = backend.group.unwrap_or("");
    let kind = backend.kind.unwrap_or("Service");
    match (group, kind) {
        ("", "Service") => {
            let (mut service, port_name) =
                resolve_service(resources, policies, route_namespace, backend)?;
            let key = ObjectKey::new(backend.namespace(route_namespace), backend.name);
            match tls.lookup(&key, &port_name) {
                None => Ok(BackendTarget::Endpoints(service)),
                Some(Ok(settings)) => {
                    service.tls = Some(settings.clone());
                    Ok(BackendTarget::Endpoints(service))
                }
                // A policy asks for TLS the gateway cannot set up: fail closed (500), never
                // plain text. The policy's status says why; the reference itself resolved.
                Some(Err(reason)) => Ok(BackendTarget::Unresolved {
                    reason: reason.clone(),
                }),
            }
        }
        (GATEWAY_X_GROUP, XBACKEND_KIND) => {
            resolve_xbackend(resources, route_namespace, backend).map(BackendTarget::Dns)
        }
        _ => Err((
            "InvalidKind",
            format!(
                "backendRef {group}/{kind} {} is neither a core Service nor an XBackend",
                backend.name
            ),
        )),
    }
}

/// Resolves a reference to an `XBackend` of type `ExternalHostname`.
fn resolve_xbackend(
    resources: &Resources,
    route_namespace: &str,
    backend: BackendRefSpec<'_>,
) -> Result<DnsBackend, Problem> {
    let namespace = backend.namespace(route_namespace);
    let from = RefFrom {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
        namespace: route_namespace,
    };
    if !refs::permitted(
        resources,
        from,
        GATEWAY_X_GROUP,
        XBACKEND_KIND,
        namespace,
        backend.name,
    ) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace} allows HTTPRoutes from {route_namespace} to use XBackend {}",
                backend.name
            ),
        ));
    }
    let key = ObjectKey::new(namespace, backend.name);
    let object = resources
        .other(GATEWAY_X_GROUP, XBACKEND_KIND, namespace, backend.name)
        .ok_or_else(|| ("BackendNotFound", format!("XBackend {key} does not exist")))?;
    let invalid = |message: String| {
        (
            "BackendNotFound",
            format!("XBackend {key} is invalid: {message}"),
        )
    };
    let spec = match parse_xbackend(object) {
        Ok(spec) => spec,
        Err(XBackendProblem::Invalid(message)) => return Err(invalid(message)),
        Err(XBackendProblem::Unsupported(message)) => {
            return Err(("UnsupportedProtocol", format!("XBackend {key}: {message}")));
        }
    };
    let port = match backend.port {
        Some(p) => Some(
            u16::try_from(p)
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| invalid(format!("backendRef port {p} is out of range")))?,
        ),
        None => spec.port,
    }
    .ok_or_else(|| invalid("no port".into()))?;
    Ok(DnsBackend {
        hostname: spec.hostname,
        port,
        protocol: spec.protocol,
        policy: BackendPolicy::default(),
        tls: None,
    })
}

/// What this project can serve of an XBackend, port aside (a backendRef may set it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ServableXBackend {
    pub hostname: String,
    pub port: Option<u16>,
    pub protocol: BackendProtocol,
}

/// Why an XBackend cannot be served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum XBackendProblem {
    /// It does not fit the schema, or its hostname is not a precise DNS name.
    Invalid(String),
    /// It asks for what the data plane lacks (TLS towards the backend).
    Unsupported(String),
}

/// Reads an untyped XBackend object and checks what the data plane needs: type
/// `ExternalHostname` with a precise DNS name, and no TLS.
pub(crate) fn parse_xbackend(
    object: &serde_json::Value,
) -> Result<ServableXBackend, XBackendProblem> {
    let parsed: XBackend = serde_json::from_value(object.clone())
        .map_err(|e| XBackendProblem::Invalid(e.to_string()))?;
    let spec = parsed.spec;
    let XBackendType::ExternalHostname = spec.type_;
    let hostname = spec
        .hostname
        .ok_or_else(|| XBackendProblem::Invalid("type ExternalHostname needs a hostname".into()))?;
    validate::precise_hostname(&hostname).map_err(XBackendProblem::Invalid)?;
    if let Some(mode) = spec.tls.and_then(|t| t.mode).filter(|m| m != "None") {
        return Err(XBackendProblem::Unsupported(format!(
            "TLS mode {mode} towards backends is not supported"
        )));
    }
    let protocol = match spec.protocol.unwrap_or(XBackendProtocol::Http) {
        XBackendProtocol::Http => BackendProtocol::Http1,
        XBackendProtocol::H2c => BackendProtocol::H2c,
        XBackendProtocol::WebSocket => BackendProtocol::WebSocket,
    };
    Ok(ServableXBackend {
        hostname,
        port: spec.port.filter(|p| *p != 0),
        protocol,
    })
}

/// Resolves a reference to a core Service: its port, endpoints, protocol and policy, with the
/// name of the port.
pub(crate) fn resolve_service(
    resources: &Resources,
    policies: &BackendPolicies,
    route_namespace: &str,
    backend: BackendRefSpec<'_>,
) -> Result<(Backend, String), Problem> {
    let namespace = backend.namespace(route_namespace);
    let from = RefFrom {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
        namespace: route_namespace,
    };
    if !refs::permitted(resources, from, "", "Service", namespace, backend.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace} allows HTTPRoutes from {route_namespace} to use Service {}",
                backend.name
            ),
        ));
    }
    let key = ObjectKey::new(namespace, backend.name);
    let service = resources
        .services
        .get(&key)
        .ok_or_else(|| ("BackendNotFound", format!("Service {key} does not exist")))?;
    let port = backend
        .port
        .map(|p| {
            u16::try_from(p).map_err(|_| {
                (
                    "BackendNotFound",
                    format!("backendRef to Service {key} has port {p}, out of range"),
                )
            })
        })
        .transpose()?
        .ok_or_else(|| {
            (
                "BackendNotFound",
                format!("backendRef to Service {key} has no port"),
            )
        })?;
    let spec = service.object.spec.clone().unwrap_or_default();
    let service_port = spec
        .ports
        .iter()
        .flatten()
        .find(|p| p.port == i32::from(port))
        .ok_or_else(|| {
            (
                "BackendNotFound",
                format!("Service {key} has no port {port}"),
            )
        })?;
    let port_name = service_port.name.clone().unwrap_or_default();
    let mut protocol = app_protocol(service_port.app_protocol.as_deref());
    let target_number = match &service_port.target_port {
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok(),
        Some(IntOrString::String(_)) => None,
        None => Some(port),
    };

    let mut endpoints = BTreeSet::new();
    let mut any_slice = false;
    for slice in resources.endpoint_slices.iter().filter_map(|(k, s)| {
        (k.namespace == namespace
            && s.object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str)
                == Some(backend.name))
        .then_some(&s.object)
    }) {
        any_slice = true;
        let slice_port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.clone().unwrap_or_default() == port_name);
        let Some(slice_port) = slice_port else {
            continue;
        };
        if protocol == BackendProtocol::Http1 {
            protocol = app_protocol(slice_port.app_protocol.as_deref());
        }
        let Some(number) = slice_port
            .port
            .and_then(|p| u16::try_from(p).ok())
            .or(target_number)
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
            if !ready {
                continue;
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    endpoints.insert(SocketAddr::new(ip, number));
                }
            }
        }
    }
    if !any_slice {
        // No EndpointSlice at all: a plain file may give the Service a reachable clusterIP.
        if let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
        {
            endpoints.insert(SocketAddr::new(ip, port));
        }
    }
    Ok((
        Backend {
            endpoints: endpoints.into_iter().collect(),
            protocol,
            policy: policies.get(&key).cloned().unwrap_or_default(),
            tls: None,
        },
        port_name,
    ))
}

/// The backend protocol an `appProtocol` selects; anything unknown is HTTP/1.1.
fn app_protocol(app_protocol: Option<&str>) -> BackendProtocol {
    match app_protocol {
        Some(H2C_APP_PROTOCOL) => BackendProtocol::H2c,
        Some(WS_APP_PROTOCOL) => BackendProtocol::WebSocket,
        _ => BackendProtocol::Http1,
    }
}
