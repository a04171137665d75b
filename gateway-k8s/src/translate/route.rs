//! HTTPRoute rules: matches, filters, timeouts and backend references.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRulesBackendRefs, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType, HttpRouteRulesFiltersRequestRedirectScheme,
    HttpRouteRulesFiltersType, HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteRulesTimeouts,
};
use gateway_core::config::{
    Backend, BackendProtocol, BackendRef, BackendTarget, ExtensionRef, Filter, HeaderMatch,
    HeaderModifier, PathMatch, PathModifier, QueryParamMatch, RequestRedirect, RouteMatch, Rule,
    StringMatch, Timeouts, UrlRewrite,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::listener::Problem;
use super::refs::{self, RefFrom};
use crate::resources::{GATEWAY_GROUP, ObjectKey, Resources};

/// The appProtocol that selects HTTP/2 prior knowledge towards a backend.
const H2C_APP_PROTOCOL: &str = "kubernetes.io/h2c";

/// The translated rules of one HTTPRoute.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteRules {
    /// The valid rules, in order.
    pub rules: Vec<Rule>,
    /// One message per dropped rule (`UnsupportedValue`).
    pub invalid: Vec<String>,
    /// The first unresolved backend reference (`ResolvedRefs=False`).
    pub unresolved: Option<Problem>,
}

/// Translates the rules of `route` (in namespace `namespace`).
pub(crate) fn translate_rules(
    resources: &Resources,
    namespace: &str,
    route: &HttpRoute,
) -> RouteRules {
    let mut out = RouteRules::default();
    for (index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let label = rule.name.clone().unwrap_or_else(|| index.to_string());
        let mut matches = Vec::new();
        let mut invalid = None;
        for m in rule.matches.iter().flatten() {
            match translate_match(m) {
                Ok(m) => matches.push(m),
                Err(msg) => {
                    invalid = Some(msg);
                    break;
                }
            }
        }
        let timeouts = match rule.timeouts.as_ref().map(translate_timeouts).transpose() {
            Ok(t) => t.unwrap_or_default(),
            Err(msg) => {
                invalid.get_or_insert(msg);
                Timeouts::default()
            }
        };
        if let Some(msg) = invalid {
            out.invalid.push(format!("rule {label}: {msg}"));
            continue;
        }
        let filters = rule
            .filters
            .iter()
            .flatten()
            .map(translate_filter)
            .collect();
        let mut backends = Vec::new();
        for backend in rule.backend_refs.iter().flatten() {
            let (backend, problem) = translate_backend(resources, namespace, backend);
            if let Some(problem) = problem
                && out.unresolved.is_none()
            {
                out.unresolved = Some(problem);
            }
            backends.push(backend);
        }
        out.rules.push(Rule {
            name: rule.name.clone(),
            matches,
            filters,
            backends,
            timeouts,
            retry: None,
            session_persistence: None,
        });
    }
    out
}

fn string_match(regex: bool, value: &str, what: &str) -> Result<StringMatch, String> {
    if regex {
        check_regex(value)
            .map_err(|e| format!("invalid {what} regular expression {value:?}: {e}"))?;
        Ok(StringMatch::RegularExpression(value.to_string()))
    } else {
        Ok(StringMatch::Exact(value.to_string()))
    }
}

fn check_regex(value: &str) -> Result<(), regex::Error> {
    regex::Regex::new(&format!("^(?:{value})$")).map(|_| ())
}

fn translate_match(m: &HttpRouteRulesMatches) -> Result<RouteMatch, String> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            match p
                .r#type
                .clone()
                .unwrap_or(HttpRouteRulesMatchesPathType::PathPrefix)
            {
                HttpRouteRulesMatchesPathType::PathPrefix => PathMatch::Prefix(value),
                HttpRouteRulesMatchesPathType::Exact => PathMatch::Exact(value),
                HttpRouteRulesMatchesPathType::RegularExpression => {
                    check_regex(&value)
                        .map_err(|e| format!("invalid path regular expression {value:?}: {e}"))?;
                    PathMatch::RegularExpression(value)
                }
            }
        }
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        let regex = h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression);
        headers.push(HeaderMatch {
            name: h.name.clone(),
            value: string_match(regex, &h.value, "header")?,
        });
    }
    let mut query_params = Vec::new();
    for q in m.query_params.iter().flatten() {
        let regex = q.r#type == Some(HttpRouteRulesMatchesQueryParamsType::RegularExpression);
        query_params.push(QueryParamMatch {
            name: q.name.clone(),
            value: string_match(regex, &q.value, "query parameter")?,
        });
    }
    Ok(RouteMatch {
        path,
        headers,
        query_params,
        method: m.method.as_ref().map(|m| method_name(m).to_string()),
    })
}

fn method_name(m: &HttpRouteRulesMatchesMethod) -> &'static str {
    match m {
        HttpRouteRulesMatchesMethod::Get => "GET",
        HttpRouteRulesMatchesMethod::Head => "HEAD",
        HttpRouteRulesMatchesMethod::Post => "POST",
        HttpRouteRulesMatchesMethod::Put => "PUT",
        HttpRouteRulesMatchesMethod::Delete => "DELETE",
        HttpRouteRulesMatchesMethod::Connect => "CONNECT",
        HttpRouteRulesMatchesMethod::Options => "OPTIONS",
        HttpRouteRulesMatchesMethod::Trace => "TRACE",
        HttpRouteRulesMatchesMethod::Patch => "PATCH",
    }
}

/// Parses a Gateway API duration (`500ms`, `1h2m`); `0s` means no timeout.
pub(crate) fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let parsed = gateway_api::Duration::from_str(text)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    let millis =
        u64::try_from(parsed.as_millis()).map_err(|_| format!("duration {text:?} is too long"))?;
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

fn translate_timeouts(t: &HttpRouteRulesTimeouts) -> Result<Timeouts, String> {
    Ok(Timeouts {
        request: t
            .request
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .flatten(),
        backend_request: t
            .backend_request
            .as_deref()
            .map(parse_duration)
            .transpose()?
            .flatten(),
    })
}

fn invalid(reason: impl Into<String>) -> Filter {
    Filter::Invalid {
        reason: reason.into(),
    }
}

fn header_modifier(
    set: impl Iterator<Item = (String, String)>,
    add: impl Iterator<Item = (String, String)>,
    remove: Option<&Vec<String>>,
) -> HeaderModifier {
    HeaderModifier {
        set: set.collect(),
        add: add.collect(),
        remove: remove.cloned().unwrap_or_default(),
    }
}

/// Translates one filter. Filters the model cannot express become [`Filter::Invalid`].
pub(crate) fn translate_filter(f: &HttpRouteRulesFilters) -> Filter {
    match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => match &f.request_header_modifier {
            Some(m) => Filter::RequestHeaderModifier(header_modifier(
                m.set
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone())),
                m.add
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone())),
                m.remove.as_ref(),
            )),
            None => invalid("RequestHeaderModifier filter without requestHeaderModifier"),
        },
        HttpRouteRulesFiltersType::ResponseHeaderModifier => match &f.response_header_modifier {
            Some(m) => Filter::ResponseHeaderModifier(header_modifier(
                m.set
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone())),
                m.add
                    .iter()
                    .flatten()
                    .map(|h| (h.name.clone(), h.value.clone())),
                m.remove.as_ref(),
            )),
            None => invalid("ResponseHeaderModifier filter without responseHeaderModifier"),
        },
        HttpRouteRulesFiltersType::RequestRedirect => {
            let Some(r) = &f.request_redirect else {
                return invalid("RequestRedirect filter without requestRedirect");
            };
            let path = match &r.path {
                None => None,
                Some(p) => match (&p.r#type, &p.replace_full_path, &p.replace_prefix_match) {
                    (HttpRouteRulesFiltersRequestRedirectPathType::ReplaceFullPath, Some(v), _) => {
                        Some(PathModifier::ReplaceFullPath(v.clone()))
                    }
                    (
                        HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch,
                        _,
                        Some(v),
                    ) => Some(PathModifier::ReplacePrefixMatch(v.clone())),
                    _ => return invalid("RequestRedirect path modifier without its value"),
                },
            };
            let port = match r.port {
                None => None,
                Some(p) => match u16::try_from(p) {
                    Ok(p) if p != 0 => Some(p),
                    _ => return invalid(format!("RequestRedirect port {p} is out of range")),
                },
            };
            let status_code = match r.status_code.unwrap_or(302) {
                c @ (301 | 302 | 303 | 307 | 308) => c as u16,
                c => return invalid(format!("RequestRedirect status code {c} is not supported")),
            };
            Filter::RequestRedirect(RequestRedirect {
                scheme: r.scheme.as_ref().map(|s| {
                    match s {
                        HttpRouteRulesFiltersRequestRedirectScheme::Http => "http",
                        HttpRouteRulesFiltersRequestRedirectScheme::Https => "https",
                    }
                    .to_string()
                }),
                hostname: r.hostname.clone(),
                path,
                port,
                status_code,
            })
        }
        HttpRouteRulesFiltersType::UrlRewrite => {
            let Some(r) = &f.url_rewrite else {
                return invalid("URLRewrite filter without urlRewrite");
            };
            let path = match &r.path {
                None => None,
                Some(p) => match (&p.r#type, &p.replace_full_path, &p.replace_prefix_match) {
                    (HttpRouteRulesFiltersUrlRewritePathType::ReplaceFullPath, Some(v), _) => {
                        Some(PathModifier::ReplaceFullPath(v.clone()))
                    }
                    (HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch, _, Some(v)) => {
                        Some(PathModifier::ReplacePrefixMatch(v.clone()))
                    }
                    _ => return invalid("URLRewrite path modifier without its value"),
                },
            };
            Filter::UrlRewrite(UrlRewrite {
                hostname: r.hostname.clone(),
                path,
            })
        }
        HttpRouteRulesFiltersType::ExtensionRef => match &f.extension_ref {
            Some(e) => Filter::ExtensionRef(ExtensionRef {
                group: e.group.clone(),
                kind: e.kind.clone(),
                name: e.name.clone(),
                config: None,
            }),
            None => invalid("ExtensionRef filter without extensionRef"),
        },
        HttpRouteRulesFiltersType::RequestMirror => invalid("RequestMirror is not supported yet"),
        HttpRouteRulesFiltersType::Cors => invalid("CORS is not supported yet"),
        HttpRouteRulesFiltersType::ExternalAuth => invalid("ExternalAuth is not supported"),
    }
}

/// Translates a backend reference; returns the backend and, when unresolved, the problem.
fn translate_backend(
    resources: &Resources,
    route_namespace: &str,
    backend: &HttpRouteRulesBackendRefs,
) -> (BackendRef, Option<Problem>) {
    let namespace = backend
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(route_namespace);
    let port = backend.port.and_then(|p| u16::try_from(p).ok());
    let name = match port {
        Some(p) => format!("{namespace}/{}:{p}", backend.name),
        None => format!("{namespace}/{}", backend.name),
    };
    let filters = backend
        .filters
        .iter()
        .flatten()
        .map(|f| {
            // Backend filters share the schema of rule filters.
            serde_json::to_value(f)
                .and_then(serde_json::from_value::<HttpRouteRulesFilters>)
                .map(|f| translate_filter(&f))
                .unwrap_or_else(|e| invalid(format!("unreadable backend filter: {e}")))
        })
        .collect();
    let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0);
    let (target, problem) =
        match resolve_service(resources, route_namespace, namespace, backend, port) {
            Ok(b) => (BackendTarget::Endpoints(b), None),
            Err(problem) => (
                BackendTarget::Unresolved {
                    reason: problem.1.clone(),
                },
                Some(problem),
            ),
        };
    (
        BackendRef {
            name,
            weight,
            target,
            filters,
        },
        problem,
    )
}

fn resolve_service(
    resources: &Resources,
    route_namespace: &str,
    namespace: &str,
    backend: &HttpRouteRulesBackendRefs,
    port: Option<u16>,
) -> Result<Backend, Problem> {
    let group = backend.group.as_deref().unwrap_or("");
    let kind = backend.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || kind != "Service" {
        return Err((
            "InvalidKind",
            format!(
                "backendRef {group}/{kind} {} is not a core Service",
                backend.name
            ),
        ));
    }
    let from = RefFrom {
        group: GATEWAY_GROUP,
        kind: "HTTPRoute",
        namespace: route_namespace,
    };
    if !refs::permitted(resources, from, "", "Service", namespace, &backend.name) {
        return Err((
            "RefNotPermitted",
            format!(
                "no ReferenceGrant in namespace {namespace} allows HTTPRoutes from {route_namespace} to use Service {}",
                backend.name
            ),
        ));
    }
    let key = ObjectKey::new(namespace, backend.name.clone());
    let service = resources
        .services
        .get(&key)
        .ok_or_else(|| ("BackendNotFound", format!("Service {key} does not exist")))?;
    let port = port.ok_or_else(|| {
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
    let mut protocol = if service_port.app_protocol.as_deref() == Some(H2C_APP_PROTOCOL) {
        BackendProtocol::H2c
    } else {
        BackendProtocol::Http1
    };
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
                == Some(&backend.name))
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
        if slice_port.app_protocol.as_deref() == Some(H2C_APP_PROTOCOL) {
            protocol = BackendProtocol::H2c;
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
    Ok(Backend {
        endpoints: endpoints.into_iter().collect(),
        protocol,
        policy: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("500ms"),
            Ok(Some(Duration::from_millis(500)))
        );
        assert_eq!(parse_duration("1h2m"), Ok(Some(Duration::from_secs(3720))));
        assert_eq!(parse_duration("0s"), Ok(None));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn regex_check_is_anchored_syntax() {
        assert!(check_regex("/v[0-9]+").is_ok());
        assert!(check_regex("([a-z]").is_err());
    }
}
