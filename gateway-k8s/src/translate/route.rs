//! HTTPRoute rules: matches, filters, timeouts, retries, session persistence and backend
//! references, validated so that nothing the data plane would refuse reaches the configuration.
//!
//! Three outcomes, from the narrowest:
//!
//! * a reference that does not resolve (backend, mirror target, `ExtensionRef` object) gives
//!   `ResolvedRefs=False`; the rule stays, with an unresolved backend (500), no mirror, or an
//!   invalid filter (500);
//! * an invalid value in a rule (header name, regex, path, hostname, duration, ...) drops that
//!   rule (`PartiallyInvalid`, or `Accepted=False` when no rule is left);
//! * an invalid route hostname or an unsupported filter type refuses the whole route
//!   (`Accepted=False`, `UnsupportedValue`); `ExternalAuth` is supported when the translator's
//!   filter registry has its implementation ([`EXTERNAL_AUTH_KIND`]).

use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::time::Duration;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRulesBackendRefs, HttpRouteRulesFilters, HttpRouteRulesFiltersCors,
    HttpRouteRulesFiltersExternalAuth, HttpRouteRulesFiltersExternalAuthProtocol,
    HttpRouteRulesFiltersRequestMirror, HttpRouteRulesFiltersRequestRedirectPathType,
    HttpRouteRulesFiltersRequestRedirectScheme, HttpRouteRulesFiltersType,
    HttpRouteRulesFiltersUrlRewritePathType, HttpRouteRulesMatches,
    HttpRouteRulesMatchesHeadersType, HttpRouteRulesMatchesMethod, HttpRouteRulesMatchesPathType,
    HttpRouteRulesMatchesQueryParamsType, HttpRouteRulesRetry, HttpRouteRulesSessionPersistence,
    HttpRouteRulesSessionPersistenceCookieConfigLifetimeType, HttpRouteRulesSessionPersistenceType,
    HttpRouteRulesTimeouts,
};
use gateway_core::config::{
    BackendRef, BackendTarget, Cors, ExtensionRef, Filter, HeaderMatch, HeaderModifier, PathMatch,
    PathModifier, QueryParamMatch, RequestMirror, RequestRedirect, Retry, RouteMatch, Rule,
    SessionKind, SessionPersistence, StringMatch, Timeouts, UrlRewrite,
};

use super::backend::{self, BackendPolicies, BackendRefSpec};
use super::inference;
use super::listener::Problem;
use super::refs::RefFrom;
use super::secret_refs;
use super::validate;
use crate::crds::{DIRECT_RESPONSE_GROUP, DIRECT_RESPONSE_KIND, DirectResponse};
use crate::resources::{GenericKey, Kind, ObjectKey, Resources};

/// What a route's rules are translated against.
#[derive(Clone, Copy)]
pub(crate) struct RouteCtx<'a> {
    pub resources: &'a Resources,
    pub policies: &'a BackendPolicies,
    /// BackendTLSPolicy effects by Service (and port name).
    pub tls: &'a super::backend_tls::BackendTlsPolicies,
    /// The route's namespace.
    pub namespace: &'a str,
    /// The filters `ExtensionRef`s are checked against, if any.
    pub filters: Option<&'a gateway_core::FilterRegistry>,
    /// InferencePools, their Pods and objects, read once per translation.
    pub inference: &'a super::inference::InferenceIndex<'a>,
}

/// The translated rules of one HTTPRoute.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteRules {
    /// The valid rules, in order.
    pub rules: Vec<Rule>,
    /// One `(rule label, message)` per dropped rule.
    pub invalid: Vec<(String, String)>,
    /// The first unresolved reference in a kept rule (`ResolvedRefs=False`).
    pub unresolved: Option<Problem>,
    /// Why the whole route is refused (`Accepted=False`, `UnsupportedValue`).
    pub unsupported: Option<String>,
    /// The Services the kept rules refer to (backends and mirrors, resolved or not), sorted,
    /// each once. A list, not a set: it is kept with the route's translation, and a set's
    /// smallest node has room for eleven keys.
    pub services: Vec<ObjectKey>,
    /// The XBackends the kept rules refer to (backends and mirrors, resolved or not), sorted,
    /// each once.
    pub xbackends: Vec<ObjectKey>,
    /// The InferencePools the kept rules refer to as served backends (resolved or not; only
    /// when the filter registry has the kind), sorted, each once.
    pub pools: Vec<GenericKey>,
}

impl RouteRules {
    /// Whether the route can be served: not refused, and not every rule dropped.
    pub fn acceptable(&self) -> bool {
        self.unsupported.is_none() && (!self.rules.is_empty() || self.invalid.is_empty())
    }

    /// The `PartiallyInvalid` message, when some rules were dropped and some kept. It starts with
    /// "Dropped Rule", as the specification asks.
    pub fn partially_invalid(&self) -> Option<String> {
        (self.acceptable() && !self.invalid.is_empty()).then(|| {
            self.invalid
                .iter()
                .map(|(label, message)| format!("Dropped Rule {label}: {message}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Why the route is not accepted (`UnsupportedValue`), if it is not.
    pub fn refusal(&self) -> Option<String> {
        if let Some(message) = &self.unsupported {
            return Some(message.clone());
        }
        (!self.acceptable()).then(|| {
            let all = self
                .invalid
                .iter()
                .map(|(label, message)| format!("rule {label}: {message}"))
                .collect::<Vec<_>>()
                .join("; ");
            format!("every rule is invalid: {all}")
        })
    }
}

/// Why a filter cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
enum FilterError {
    /// An invalid value: the rule is dropped.
    Invalid(String),
    /// A filter type this implementation does not support: the route is refused.
    Unsupported(String),
}

impl From<String> for FilterError {
    fn from(message: String) -> Self {
        FilterError::Invalid(message)
    }
}

/// What translating one rule collects besides the rule.
#[derive(Default)]
struct RuleRefs {
    unresolved: Option<Problem>,
    services: BTreeSet<ObjectKey>,
    xbackends: BTreeSet<ObjectKey>,
    pools: BTreeSet<GenericKey>,
}

impl RuleRefs {
    fn problem(&mut self, problem: Problem) {
        self.unresolved.get_or_insert(problem);
    }
}

/// Translates the rules of `route`.
pub(crate) fn translate_rules(ctx: RouteCtx<'_>, route: &HttpRoute) -> RouteRules {
    let mut out = RouteRules::default();
    let mut services = BTreeSet::new();
    let mut xbackends = BTreeSet::new();
    let mut pools = BTreeSet::new();
    for hostname in route.spec.hostnames.iter().flatten() {
        if let Err(message) = validate::hostname(hostname) {
            out.unsupported = Some(format!("route hostname: {message}"));
            return out;
        }
    }
    for (index, rule) in route.spec.rules.iter().flatten().enumerate() {
        let label = rule.name.clone().unwrap_or_else(|| index.to_string());
        let mut refs = RuleRefs::default();
        match translate_rule(ctx, rule, &mut refs) {
            Ok(rule) => {
                out.rules.push(rule);
                if let Some(problem) = refs.unresolved
                    && out.unresolved.is_none()
                {
                    out.unresolved = Some(problem);
                }
                services.extend(refs.services);
                xbackends.extend(refs.xbackends);
                pools.extend(refs.pools);
            }
            Err(FilterError::Invalid(message)) => out.invalid.push((label, message)),
            Err(FilterError::Unsupported(message)) => {
                out.unsupported = Some(format!("rule {label}: {message}"));
                out.rules.clear();
                out.services = services.into_iter().collect();
                out.xbackends = xbackends.into_iter().collect();
                out.pools = pools.into_iter().collect();
                return out;
            }
        }
    }
    // The rules are built by pushing, which leaves room for four elements in every list of one:
    // a clone allocates each at its length. The translated rules are kept (and served) until
    // the route changes, so this is most of a translated route's memory.
    out.rules = out.rules.clone();
    out.services = services.into_iter().collect();
    out.xbackends = xbackends.into_iter().collect();
    out.pools = pools.into_iter().collect();
    out
}

fn translate_rule(
    ctx: RouteCtx<'_>,
    rule: &gateway_api::experimental::httproutes::HttpRouteRules,
    refs: &mut RuleRefs,
) -> Result<Rule, FilterError> {
    let matches = rule
        .matches
        .iter()
        .flatten()
        .map(translate_match)
        .collect::<Result<Vec<_>, _>>()?;
    // No match means one `PathPrefix /` match.
    let prefix_only = matches
        .iter()
        .all(|m| matches!(m.path, PathMatch::Prefix(_)));
    let timeouts = rule
        .timeouts
        .as_ref()
        .map(translate_timeouts)
        .transpose()?
        .unwrap_or_default();
    let retry = rule.retry.as_ref().map(translate_retry).transpose()?;
    let session_persistence = rule
        .session_persistence
        .as_ref()
        .map(route_session_persistence)
        .transpose()?;
    let mut filters = Vec::new();
    for f in rule.filters.iter().flatten() {
        if let Some(filter) = translate_filter(ctx, f, prefix_only, refs)? {
            filters.push(filter);
        }
    }
    let mut backends = Vec::new();
    for b in rule.backend_refs.iter().flatten() {
        backends.push(translate_backend(ctx, b, prefix_only, refs)?);
    }
    Ok(Rule {
        name: rule.name.clone(),
        matches,
        filters,
        backends,
        timeouts,
        retry,
        session_persistence,
    })
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
                HttpRouteRulesMatchesPathType::PathPrefix => {
                    validate::path(&value)?;
                    PathMatch::Prefix(value)
                }
                HttpRouteRulesMatchesPathType::Exact => {
                    validate::path(&value)?;
                    PathMatch::Exact(value)
                }
                HttpRouteRulesMatchesPathType::RegularExpression => {
                    check_regex(&value)
                        .map_err(|e| format!("invalid path regular expression {value:?}: {e}"))?;
                    PathMatch::RegularExpression(value)
                }
            }
        }
    };
    // Of several matches on one header name (case-insensitive) only the first counts.
    let mut header_names = HashSet::new();
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        validate::header_name(&h.name)?;
        if !header_names.insert(h.name.to_ascii_lowercase()) {
            continue;
        }
        let regex = h.r#type == Some(HttpRouteRulesMatchesHeadersType::RegularExpression);
        headers.push(HeaderMatch {
            name: h.name.clone(),
            value: string_match(regex, &h.value, "header")?,
        });
    }
    // Likewise for query parameters, whose names compare exactly.
    let mut query_names = HashSet::new();
    let mut query_params = Vec::new();
    for q in m.query_params.iter().flatten() {
        if !query_names.insert(q.name.as_str()) {
            continue;
        }
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

/// Parses a Gateway API duration (`500ms`, `1h2m`); `0s` means none.
pub(crate) fn parse_duration(text: &str) -> Result<Option<Duration>, String> {
    let parsed = gateway_api::Duration::from_str(text)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    let millis =
        u64::try_from(parsed.as_millis()).map_err(|_| format!("duration {text:?} is too long"))?;
    Ok((millis > 0).then(|| Duration::from_millis(millis)))
}

fn optional_duration(text: Option<&str>) -> Result<Option<Duration>, String> {
    Ok(text.map(parse_duration).transpose()?.flatten())
}

fn translate_timeouts(t: &HttpRouteRulesTimeouts) -> Result<Timeouts, String> {
    Ok(Timeouts {
        request: optional_duration(t.request.as_deref())?,
        backend_request: optional_duration(t.backend_request.as_deref())?,
    })
}

fn translate_retry(r: &HttpRouteRulesRetry) -> Result<Retry, String> {
    let mut codes = Vec::new();
    for &code in r.codes.iter().flatten() {
        match u16::try_from(code) {
            Ok(c @ 400..=599) => codes.push(c),
            _ => return Err(format!("retry code {code} is outside 400-599")),
        }
    }
    let attempts = match r.attempts {
        None => Retry::default().attempts,
        Some(a) => u32::try_from(a).map_err(|_| format!("retry attempts {a} is out of range"))?,
    };
    Ok(Retry {
        codes,
        attempts,
        backoff: optional_duration(r.backoff.as_deref())
            .map_err(|e| format!("retry backoff: {e}"))?,
    })
}

fn route_session_persistence(
    s: &HttpRouteRulesSessionPersistence,
) -> Result<SessionPersistence, String> {
    let kind = match s.r#type {
        Some(HttpRouteRulesSessionPersistenceType::Header) => SessionKind::Header,
        Some(HttpRouteRulesSessionPersistenceType::Cookie) | None => SessionKind::Cookie,
    };
    let permanent = s
        .cookie_config
        .as_ref()
        .and_then(|c| c.lifetime_type.as_ref())
        == Some(&HttpRouteRulesSessionPersistenceCookieConfigLifetimeType::Permanent);
    session_persistence(
        kind,
        s.session_name.as_deref(),
        s.absolute_timeout.as_deref(),
        s.idle_timeout.as_deref(),
        permanent,
    )
}

/// Builds a [`SessionPersistence`] from the fields HTTPRoute and XBackendTrafficPolicy share.
/// A permanent cookie needs `absoluteTimeout` (its `Max-Age`).
pub(crate) fn session_persistence(
    kind: SessionKind,
    name: Option<&str>,
    absolute_timeout: Option<&str>,
    idle_timeout: Option<&str>,
    permanent: bool,
) -> Result<SessionPersistence, String> {
    let name = name.filter(|n| !n.is_empty());
    if let Some(name) = name {
        match kind {
            SessionKind::Cookie => validate::cookie_name(name),
            SessionKind::Header => validate::header_name(name),
        }
        .map_err(|e| format!("sessionPersistence sessionName: {e}"))?;
    }
    let absolute_timeout = optional_duration(absolute_timeout)
        .map_err(|e| format!("sessionPersistence absoluteTimeout: {e}"))?;
    let idle_timeout = optional_duration(idle_timeout)
        .map_err(|e| format!("sessionPersistence idleTimeout: {e}"))?;
    let permanent = permanent && kind == SessionKind::Cookie;
    if permanent && absolute_timeout.is_none() {
        return Err(
            "sessionPersistence: a Permanent cookie needs a non-zero absoluteTimeout".to_string(),
        );
    }
    Ok(SessionPersistence {
        name: name.map(str::to_string),
        kind,
        absolute_timeout,
        idle_timeout,
        permanent,
        path: None,
    })
}

fn header_modifier<'a>(
    set: impl Iterator<Item = (&'a String, &'a String)>,
    add: impl Iterator<Item = (&'a String, &'a String)>,
    remove: Option<&Vec<String>>,
) -> Result<HeaderModifier, String> {
    let pair = |(name, value): (&String, &String)| -> Result<(String, String), String> {
        validate::header_name(name)?;
        validate::header_value(name, value)?;
        Ok((name.clone(), value.clone()))
    };
    let remove = remove.cloned().unwrap_or_default();
    for name in &remove {
        validate::header_name(name)?;
    }
    Ok(HeaderModifier {
        set: set.map(pair).collect::<Result<_, _>>()?,
        add: add.map(pair).collect::<Result<_, _>>()?,
        remove,
    })
}

fn path_modifier(
    full: Option<&String>,
    prefix: Option<&String>,
    replace_prefix: bool,
    prefix_only: bool,
    filter: &str,
) -> Result<PathModifier, String> {
    if replace_prefix {
        let value = prefix.ok_or_else(|| format!("{filter} ReplacePrefixMatch without a value"))?;
        if !prefix_only {
            return Err(format!(
                "{filter} ReplacePrefixMatch needs every match of the rule to be a PathPrefix"
            ));
        }
        validate::path(value).map_err(|e| format!("{filter}: {e}"))?;
        Ok(PathModifier::ReplacePrefixMatch(value.clone()))
    } else {
        let value = full.ok_or_else(|| format!("{filter} ReplaceFullPath without a value"))?;
        validate::path(value).map_err(|e| format!("{filter}: {e}"))?;
        Ok(PathModifier::ReplaceFullPath(value.clone()))
    }
}

/// Translates one filter. `Ok(None)`: the filter is left out (a mirror whose backend does not
/// resolve; the reference problem is recorded in `refs`).
fn translate_filter(
    ctx: RouteCtx<'_>,
    f: &HttpRouteRulesFilters,
    prefix_only: bool,
    refs: &mut RuleRefs,
) -> Result<Option<Filter>, FilterError> {
    let missing =
        |field: &str| FilterError::Invalid(format!("{:?} filter without {field}", f.r#type));
    let filter = match f.r#type {
        HttpRouteRulesFiltersType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            Filter::RequestHeaderModifier(header_modifier(
                m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                m.remove.as_ref(),
            )?)
        }
        HttpRouteRulesFiltersType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            Filter::ResponseHeaderModifier(header_modifier(
                m.set.iter().flatten().map(|h| (&h.name, &h.value)),
                m.add.iter().flatten().map(|h| (&h.name, &h.value)),
                m.remove.as_ref(),
            )?)
        }
        HttpRouteRulesFiltersType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let path = r
                .path
                .as_ref()
                .map(|p| {
                    path_modifier(
                        p.replace_full_path.as_ref(),
                        p.replace_prefix_match.as_ref(),
                        p.r#type
                            == HttpRouteRulesFiltersRequestRedirectPathType::ReplacePrefixMatch,
                        prefix_only,
                        "RequestRedirect",
                    )
                })
                .transpose()?;
            let port = match r.port {
                None => None,
                Some(p) => match u16::try_from(p) {
                    Ok(p) if p != 0 => Some(p),
                    _ => return Err(format!("RequestRedirect port {p} is out of range").into()),
                },
            };
            let status_code = match r.status_code.unwrap_or(302) {
                c @ (301 | 302 | 303 | 307 | 308) => c as u16,
                c => {
                    return Err(format!("RequestRedirect status code {c} is not supported").into());
                }
            };
            if let Some(host) = &r.hostname {
                validate::precise_hostname(host).map_err(|e| format!("RequestRedirect: {e}"))?;
            }
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
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let path = r
                .path
                .as_ref()
                .map(|p| {
                    path_modifier(
                        p.replace_full_path.as_ref(),
                        p.replace_prefix_match.as_ref(),
                        p.r#type == HttpRouteRulesFiltersUrlRewritePathType::ReplacePrefixMatch,
                        prefix_only,
                        "URLRewrite",
                    )
                })
                .transpose()?;
            if let Some(host) = &r.hostname {
                validate::precise_hostname(host).map_err(|e| format!("URLRewrite: {e}"))?;
            }
            Filter::UrlRewrite(UrlRewrite {
                hostname: r.hostname.clone(),
                path,
            })
        }
        HttpRouteRulesFiltersType::ExtensionRef => {
            let e = f
                .extension_ref
                .as_ref()
                .ok_or_else(|| missing("extensionRef"))?;
            match resolve_extension(ctx, &e.group, &e.kind, &e.name) {
                Ok(filter) => filter,
                Err(problem) => {
                    let reason = problem.1.clone();
                    refs.problem(problem);
                    Filter::Invalid { reason }
                }
            }
        }
        HttpRouteRulesFiltersType::RequestMirror => {
            let m = f
                .request_mirror
                .as_ref()
                .ok_or_else(|| missing("requestMirror"))?;
            return translate_mirror(ctx, m, refs);
        }
        HttpRouteRulesFiltersType::Cors => {
            let c = f.cors.as_ref().ok_or_else(|| missing("cors"))?;
            Filter::Cors(translate_cors(c)?)
        }
        HttpRouteRulesFiltersType::ExternalAuth => {
            let a = f
                .external_auth
                .as_ref()
                .ok_or_else(|| missing("externalAuth"))?;
            translate_external_auth(ctx, a, refs)?
        }
    };
    Ok(Some(filter))
}

fn translate_mirror(
    ctx: RouteCtx<'_>,
    m: &HttpRouteRulesFiltersRequestMirror,
    refs: &mut RuleRefs,
) -> Result<Option<Filter>, FilterError> {
    let fraction = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            return Err("RequestMirror sets both percent and fraction"
                .to_string()
                .into());
        }
        (Some(p), None) => match u32::try_from(p) {
            Ok(p) if p <= 100 => Some((p, 100)),
            _ => return Err(format!("RequestMirror percent {p} is outside 0-100").into()),
        },
        (None, Some(f)) => {
            let denominator = f.denominator.unwrap_or(100);
            match (u32::try_from(f.numerator), u32::try_from(denominator)) {
                (Ok(n), Ok(d)) if d > 0 && n <= d => Some((n, d)),
                _ => {
                    return Err(format!(
                        "RequestMirror fraction {}/{denominator} is not a fraction of at most 1",
                        f.numerator
                    )
                    .into());
                }
            }
        }
        (None, None) => None,
    };
    let b = &m.backend_ref;
    let spec = BackendRefSpec {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    refs.services.extend(spec.service_key(ctx.namespace));
    refs.xbackends.extend(spec.xbackend_key(ctx.namespace));
    // A mirror whose backend does not resolve is dropped: requests are served unmirrored.
    match backend::resolve(ctx.resources, ctx.policies, ctx.tls, ctx.namespace, spec) {
        Ok(target) => Ok(Some(Filter::RequestMirror(Box::new(RequestMirror {
            backend: BackendRef {
                name: spec.display_name(ctx.namespace),
                weight: 1,
                target,
                filters: Vec::new(),
            },
            fraction,
        })))),
        Err((reason, message)) => {
            refs.problem((reason, format!("RequestMirror: {message}")));
            Ok(None)
        }
    }
}

/// The API group of the filter that implements the HTTPRoute `ExternalAuth` filter type.
pub(crate) const EXTERNAL_AUTH_GROUP: &str = "gateway.pingora-gateway.dev";
/// The kind of that filter: the `gateway-filters` crate registers it (`ExternalAuth`).
pub(crate) const EXTERNAL_AUTH_KIND: &str = "ExternalAuth";

/// Translates an `ExternalAuth` filter (GEP-1494) into an `ExtensionRef` to the filter registered
/// as ([`EXTERNAL_AUTH_GROUP`], [`EXTERNAL_AUTH_KIND`]), with the backend resolved to its
/// endpoints (a Service, through ReferenceGrants like any backend) or `host:port` (an
/// XBackend). This crate does not implement the check itself: without a filter registry, or
/// with one that lacks the kind, the route is refused (`UnsupportedValue`); an unresolved backend leaves a filter that
/// answers 500 (fail closed) and sets `ResolvedRefs=False`; settings the filter refuses drop the
/// rule.
fn translate_external_auth(
    ctx: RouteCtx<'_>,
    a: &HttpRouteRulesFiltersExternalAuth,
    refs: &mut RuleRefs,
) -> Result<Filter, FilterError> {
    // Only a registry that has the kind proves the data plane can check requests: without one
    // (a translator built without filters) the route is refused, as before this filter existed.
    if !ctx
        .filters
        .is_some_and(|r| r.contains(EXTERNAL_AUTH_GROUP, EXTERNAL_AUTH_KIND))
    {
        return Err(FilterError::Unsupported(format!(
            "filter type ExternalAuth needs a filter of kind {EXTERNAL_AUTH_GROUP}/{EXTERNAL_AUTH_KIND} in the translator's filter registry (gateway_filters::register provides one)"
        )));
    }
    let b = &a.backend_ref;
    let spec = BackendRefSpec {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    refs.services.extend(spec.service_key(ctx.namespace));
    refs.xbackends.extend(spec.xbackend_key(ctx.namespace));
    let name = spec.display_name(ctx.namespace);
    let backend = match backend::resolve(ctx.resources, ctx.policies, ctx.tls, ctx.namespace, spec)
    {
        Ok(BackendTarget::Endpoints(service)) if service.tls.is_some() => Err((
            "UnsupportedProtocol",
            format!(
                "ExternalAuth backend {name}: TLS to the authorization service is not supported"
            ),
        )),
        Ok(BackendTarget::Endpoints(service)) => Ok(serde_json::json!({
            "endpoints": service.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>()
        })),
        Ok(BackendTarget::Dns(dns)) => Ok(serde_json::json!({
            "address": format!("{}:{}", dns.hostname, dns.port)
        })),
        Ok(BackendTarget::Unresolved { reason }) => Err(("UnsupportedProtocol", reason)),
        Err((reason, message)) => Err((reason, format!("ExternalAuth: {message}"))),
    };
    let backend = match backend {
        Ok(backend) => backend,
        Err(problem) => {
            let reason = problem.1.clone();
            refs.problem(problem);
            return Ok(Filter::Invalid { reason });
        }
    };
    let mut config = serde_json::json!({ "backend": backend });
    match a.protocol {
        HttpRouteRulesFiltersExternalAuthProtocol::Grpc => {
            config["protocol"] = "GRPC".into();
            if let Some(headers) = a.grpc.as_ref().and_then(|g| g.allowed_headers.as_ref()) {
                config["grpc"] = serde_json::json!({ "allowedHeaders": headers });
            }
        }
        HttpRouteRulesFiltersExternalAuthProtocol::Http => {
            config["protocol"] = "HTTP".into();
            if let Some(h) = &a.http {
                config["http"] = serde_json::json!({
                    "path": h.path,
                    "allowedHeaders": h.allowed_headers.clone().unwrap_or_default(),
                    "allowedResponseHeaders": h.allowed_response_headers.clone().unwrap_or_default(),
                });
            }
        }
    }
    if let Some(max) = a.forward_body.as_ref().and_then(|f| f.max_size) {
        let max = u32::try_from(max)
            .map_err(|_| format!("ExternalAuth forwardBody.maxSize {max} is negative"))?;
        config["forwardBody"] = serde_json::json!({ "maxSize": max });
    }
    let reference = ExtensionRef {
        group: EXTERNAL_AUTH_GROUP.to_string(),
        kind: EXTERNAL_AUTH_KIND.to_string(),
        name: format!("ExternalAuth {name}"),
        config: Some(config),
        origins: Default::default(),
        secrets: Default::default(),
    };
    if let Some(Err(e)) = ctx.filters.and_then(|r| r.build(&reference)) {
        return Err(FilterError::Invalid(format!("ExternalAuth: {e}")));
    }
    Ok(Filter::ExtensionRef(reference))
}

fn translate_cors(c: &HttpRouteRulesFiltersCors) -> Result<Cors, String> {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let allow_origins = list(&c.allow_origins);
    for origin in &allow_origins {
        validate::cors_origin(origin)?;
    }
    let allow_methods = list(&c.allow_methods);
    for method in allow_methods.iter().filter(|m| *m != "*") {
        validate::method(method).map_err(|e| format!("CORS allowMethods: {e}"))?;
    }
    let allow_headers = list(&c.allow_headers);
    let expose_headers = list(&c.expose_headers);
    for name in allow_headers
        .iter()
        .chain(&expose_headers)
        .filter(|h| *h != "*")
    {
        validate::header_name(name).map_err(|e| format!("CORS: {e}"))?;
    }
    let max_age = c
        .max_age
        .map(|a| u32::try_from(a).map_err(|_| format!("CORS maxAge {a} is negative")))
        .transpose()?;
    Ok(Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        max_age,
    })
}

/// Resolves an `ExtensionRef` filter to the object it names in the route's namespace. Its
/// settings are the object's `spec`, or, for kinds without one, the object less `apiVersion`,
/// `kind`, `metadata` and `status`. `DirectResponse` objects are checked here too.
fn resolve_extension(
    ctx: RouteCtx<'_>,
    group: &str,
    kind: &str,
    name: &str,
) -> Result<Filter, Problem> {
    let what = format!("ExtensionRef {group}/{kind} {}/{name}", ctx.namespace);
    if Kind::from_group_kind(group, kind).is_some() {
        return Err((
            "InvalidKind",
            format!("{what}: {kind} is not a filter kind"),
        ));
    }
    let object = ctx
        .resources
        .other(group, kind, ctx.namespace, name)
        .ok_or_else(|| ("BackendNotFound", format!("{what} does not exist")))?;
    if group == DIRECT_RESPONSE_GROUP && kind == DIRECT_RESPONSE_KIND {
        let parsed: DirectResponse = serde_json::from_value(object.clone())
            .map_err(|e| ("InvalidExtensionRef", format!("{what} is invalid: {e}")))?;
        parsed
            .spec
            .validate()
            .map_err(|e| ("InvalidExtensionRef", format!("{what} is invalid: {e}")))?;
    }
    let config = match object.get("spec") {
        Some(spec) => spec.clone(),
        None => {
            let mut rest = object.clone();
            if let Some(map) = rest.as_object_mut() {
                for field in ["apiVersion", "kind", "metadata", "status"] {
                    map.remove(field);
                }
            }
            rest
        }
    };
    let mut config = config;
    let from = RefFrom {
        group,
        kind,
        namespace: ctx.namespace,
    };
    let secrets = secret_refs::resolve(ctx.resources, from, &mut config)
        .map_err(|(reason, message)| (reason, format!("{what}: {message}")))?;
    let reference = ExtensionRef {
        group: group.to_string(),
        kind: kind.to_string(),
        name: name.to_string(),
        config: Some(config).filter(|c| !c.is_null()),
        origins: Default::default(),
        secrets,
    };
    if let Some(registry) = ctx.filters {
        match registry.build(&reference) {
            None => {
                return Err((
                    "InvalidKind",
                    format!("{what}: no filter of kind {group}/{kind} is registered"),
                ));
            }
            Some(Err(e)) => {
                return Err(("InvalidExtensionRef", format!("{what} is invalid: {e}")));
            }
            Some(Ok(_)) => {}
        }
    }
    Ok(Filter::ExtensionRef(reference))
}

/// Translates a backend reference. An unresolved one becomes [`BackendTarget::Unresolved`]
/// (its problem recorded in `refs`); an invalid backend filter drops the rule.
fn translate_backend(
    ctx: RouteCtx<'_>,
    backend: &HttpRouteRulesBackendRefs,
    prefix_only: bool,
    refs: &mut RuleRefs,
) -> Result<BackendRef, FilterError> {
    let spec = BackendRefSpec {
        group: backend.group.as_deref(),
        kind: backend.kind.as_deref(),
        name: &backend.name,
        namespace: backend.namespace.as_deref(),
        port: backend.port,
    };
    let mut filters = Vec::new();
    for f in backend.filters.iter().flatten() {
        // Backend filters share the schema of rule filters.
        let f = serde_json::to_value(f)
            .and_then(serde_json::from_value::<HttpRouteRulesFilters>)
            .map_err(|e| FilterError::Invalid(format!("unreadable backend filter: {e}")))?;
        if let Some(filter) = translate_filter(ctx, &f, prefix_only, refs)? {
            filters.push(filter);
        }
    }
    let weight = u32::try_from(backend.weight.unwrap_or(1)).unwrap_or(0);
    // An InferencePool, when the data plane can serve one (see `super::inference`).
    if let Some(pool) = inference::pool_key(&spec, ctx.namespace).filter(|_| {
        ctx.filters
            .is_some_and(|r| r.contains(inference::POOL_GROUP, inference::POOL_KIND))
    }) {
        let name = format!("{}/{}", pool.namespace, pool.name);
        let target = match ctx.inference.resolve(ctx.namespace, &pool) {
            Ok(served) => {
                filters.push(Filter::ExtensionRef(served.filter));
                refs.pools.insert(pool);
                BackendTarget::Endpoints(served.backend)
            }
            Err(problem) => {
                // A reference the pool's namespace does not permit is no use of the pool.
                if problem.0 != "RefNotPermitted" {
                    refs.pools.insert(pool);
                }
                let reason = problem.1.clone();
                refs.problem(problem);
                BackendTarget::Unresolved { reason }
            }
        };
        return Ok(BackendRef {
            name,
            weight,
            target,
            filters,
        });
    }
    refs.services.extend(spec.service_key(ctx.namespace));
    refs.xbackends.extend(spec.xbackend_key(ctx.namespace));
    let target = match backend::resolve(ctx.resources, ctx.policies, ctx.tls, ctx.namespace, spec) {
        Ok(target) => target,
        Err(problem) => {
            let reason = problem.1.clone();
            refs.problem(problem);
            BackendTarget::Unresolved { reason }
        }
    };
    Ok(BackendRef {
        name: spec.display_name(ctx.namespace),
        weight,
        target,
        filters,
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

    #[test]
    fn permanent_cookies_need_an_absolute_timeout() {
        let ok = session_persistence(SessionKind::Cookie, Some("s"), Some("1h"), None, true)
            .expect("valid");
        assert!(ok.permanent);
        assert_eq!(ok.absolute_timeout, Some(Duration::from_secs(3600)));
        assert!(session_persistence(SessionKind::Cookie, None, None, Some("5m"), true).is_err());
        assert!(session_persistence(SessionKind::Cookie, None, Some("0s"), None, true).is_err());
        // Headers have no cookie lifetime.
        let header = session_persistence(SessionKind::Header, Some("x-session"), None, None, true)
            .expect("valid");
        assert!(!header.permanent);
        assert!(
            session_persistence(SessionKind::Header, Some("bad name"), None, None, false).is_err()
        );
    }
}
