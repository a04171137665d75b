//! The compiled filter chain of a rule or backend: one step per listed filter, in order.
//!
//! Built-ins are enum variants dispatched with a `match` (no allocation, no dynamic call); custom
//! filters are `Arc<dyn HttpFilter>` steps in the same list, so the order the rule gives is the
//! order everything runs in.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use pingora_error::Result as PResult;
use pingora_http::{RequestHeader, ResponseHeader};

use super::{FilterRegistry, HttpFilter};
use crate::config::{Filter, HeaderModifier, RequestRedirect, UrlRewrite};

/// One step of a chain.
pub(crate) enum Step {
    /// `RequestHeaderModifier`: edits the request headers when reached.
    RequestHeaders(CompiledHeaderModifier),
    /// `ResponseHeaderModifier`: edits the response headers.
    ResponseHeaders(CompiledHeaderModifier),
    /// `RequestRedirect`: answers with a redirect when reached.
    Redirect(RequestRedirect),
    /// `URLRewrite`: rewrites host and path when reached.
    Rewrite(UrlRewrite),
    /// `RequestMirror`: starts a copy of the request when reached.
    Mirror(Arc<crate::table::CompiledMirror>),
    /// `CORS`: answers preflights, annotates responses.
    Cors(Box<super::cors::CompiledCors>),
    /// An `ExtensionRef` filter.
    Custom(Arc<dyn HttpFilter>),
}

/// The steps of a rule or a backend.
#[derive(Default)]
pub(crate) struct Chain {
    pub(crate) steps: Vec<Step>,
    /// Set when a filter cannot work: requests reaching the chain get 500.
    pub(crate) invalid: Option<String>,
}

impl Chain {
    /// Compiles `filters` in order. A filter that cannot be built marks the chain invalid.
    /// `mirror` compiles a `RequestMirror` filter's backend.
    pub(crate) fn compile(
        filters: &[Filter],
        registry: &FilterRegistry,
        mut mirror: impl FnMut(
            &crate::config::RequestMirror,
        ) -> Result<crate::table::CompiledMirror, String>,
    ) -> Self {
        let mut chain = Chain::default();
        for filter in filters {
            let step = match filter {
                Filter::RequestHeaderModifier(m) => {
                    CompiledHeaderModifier::compile(m).map(Step::RequestHeaders)
                }
                Filter::ResponseHeaderModifier(m) => {
                    CompiledHeaderModifier::compile(m).map(Step::ResponseHeaders)
                }
                Filter::RequestRedirect(r) => Ok(Step::Redirect(r.clone())),
                Filter::UrlRewrite(r) => Ok(Step::Rewrite(r.clone())),
                Filter::RequestMirror(m) => mirror(m).map(|m| Step::Mirror(Arc::new(m))),
                Filter::Cors(c) => {
                    super::cors::CompiledCors::compile(c).map(|c| Step::Cors(Box::new(c)))
                }
                Filter::ExtensionRef(reference) => match registry.build(reference) {
                    Some(Ok(f)) => Ok(Step::Custom(f)),
                    Some(Err(e)) => Err(format!(
                        "filter {}/{} {:?}: {e}",
                        reference.group, reference.kind, reference.name
                    )),
                    None => Err(format!(
                        "no filter registered for group {:?} kind {:?}",
                        reference.group, reference.kind
                    )),
                },
                Filter::Invalid { reason } => Err(reason.clone()),
            };
            match step {
                Ok(step) => chain.steps.push(step),
                Err(problem) => {
                    chain.invalid.get_or_insert(problem);
                }
            }
        }
        // Pushing leaves room for four steps: a compiled chain lives as long as its rule.
        chain.steps.shrink_to_fit();
        chain
    }
}

/// A `RequestHeaderModifier` or `ResponseHeaderModifier` filter with its header names and values
/// validated up front, as the gateway runs it: built once when a configuration is applied, then
/// applied to every request or response that reaches it.
///
/// Applying runs `set`, then `add`, then `remove`, in the order each list gives, and clones only
/// the precomputed names and values (cheap shared handles), so a request costs no parsing.
#[derive(Default)]
pub struct CompiledHeaderModifier {
    pub(crate) set: Vec<(HeaderName, HeaderValue)>,
    pub(crate) add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) remove: Vec<HeaderName>,
}

impl CompiledHeaderModifier {
    /// Validates the names and values of `m`. An invalid header name or value is an error that
    /// names the header (the gateway then answers 500 on the rule, as the Gateway API asks).
    pub fn compile(m: &HeaderModifier) -> Result<Self, String> {
        fn pair((name, value): &(String, String)) -> Result<(HeaderName, HeaderValue), String> {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value for header {name:?}"))?;
            Ok((n, v))
        }
        Ok(CompiledHeaderModifier {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .map(|n| {
                    HeaderName::from_bytes(n.as_bytes())
                        .map_err(|_| format!("invalid header name {n:?}"))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies the edits to a request's headers (`RequestHeaderModifier`). Fails only when a
    /// header cannot be stored (Pingora's limits).
    pub fn apply_request(&self, req: &mut RequestHeader) -> PResult<()> {
        for (n, v) in &self.set {
            req.insert_header(n.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            req.append_header(n.clone(), v.clone())?;
        }
        for n in &self.remove {
            req.remove_header(n);
        }
        Ok(())
    }

    /// Applies the edits to a response's headers (`ResponseHeaderModifier`). Fails only when a
    /// header cannot be stored (Pingora's limits).
    pub fn apply_response(&self, resp: &mut ResponseHeader) -> PResult<()> {
        for (n, v) in &self.set {
            resp.insert_header(n.clone(), v.clone())?;
        }
        for (n, v) in &self.add {
            resp.append_header(n.clone(), v.clone())?;
        }
        for n in &self.remove {
            resp.remove_header(n);
        }
        Ok(())
    }
}
