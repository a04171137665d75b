//! `TrafficPolicy`: several filters in one object, attached to Gateways, listeners, HTTPRoutes
//! or rules (Gateway API policy attachment, GEP-713), or referenced by a rule's `ExtensionRef`.
//!
//! Each section is the spec of the filter kind of the same name, and runs as that filter would;
//! the sections run in this fixed order, whatever order the YAML lists them in:
//!
//! 1. `ipAccess` ([`crate::access`]): who may connect at all;
//! 2. `requestLimits` ([`crate::limits`]): header and body bounds;
//! 3. `extAuth` ([`crate::auth::ext_authz`]): the external authorization service decides (after
//!    the cheap local refusals, so they cost no round trip);
//! 4. `jwt`, `basicAuth`, then `apiKeyAuth` ([`crate::auth`]): every configured method must
//!    pass;
//! 5. `rateLimit` ([`crate::rate_limit`]): counted only for requests that got this far, so
//!    refused and unauthenticated requests do not spend the clients' budget;
//! 6. `ai` ([`crate::ai`]): the prompt enriched and guarded;
//! 7. `transformation` ([`crate::transformation`]): headers and bodies rewritten;
//! 8. `compression` ([`crate::compression`]): on the response, after the transformation.
//!
//! The first section that answers ends the request; the response hooks of every section run.
//! `targetRefs` and `targetSelectors` are read by the configuration source, which turns an
//! attached policy into an `ExtensionRef` to this kind on each rule it applies to; the filter
//! itself ignores them.

use std::sync::Arc;

use gateway_core::{
    Bytes, FilterAction, FilterCtx, HttpFilter, ProxyError, RequestHeader, ResponseHeader, Session,
    async_trait,
};
use gateway_k8s::crds::{PolicyTargetRef, PolicyTargetSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::SpecError;
use crate::access::{IpAccessFilter, IpAccessSpec};
use crate::ai::{AiPromptFilter, AiPromptSpec};
use crate::auth::api_key::{ApiKeyAuthFilter, ApiKeyAuthSpec};
use crate::auth::basic::{BasicAuthFilter, BasicAuthSpec};
use crate::auth::ext_authz::{ExternalAuthFilter, ExternalAuthSpec};
use crate::auth::jwt::{JwtAuthFilter, JwtAuthSpec};
use crate::compression::{CompressionFilter, CompressionSpec};
use crate::limits::{RequestLimitsFilter, RequestLimitsSpec};
use crate::rate_limit::{RateLimitFilter, RateLimitSpec};
use crate::transformation::{TransformationFilter, TransformationSpec};

/// The kind of [`TrafficPolicy`] objects.
pub const KIND: &str = "TrafficPolicy";

/// Settings of a `TrafficPolicy`: where it attaches, and one optional section per filter.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema,
)]
#[kube(
    group = "gateway.pingora-gateway.dev",
    version = "v1alpha1",
    kind = "TrafficPolicy",
    plural = "trafficpolicies",
    namespaced,
    status = "PolicyStatus"
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicySpec {
    /// The objects (in the policy's namespace) the policy applies to: a Gateway (every
    /// listener), a listener (`sectionName`), an HTTPRoute (every rule) or one named rule
    /// (`sectionName`). Empty when the policy is only referenced by `ExtensionRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetRef>,
    /// Targets chosen by label instead of by name: every object of the kind, in the policy's
    /// namespace, whose labels include all of `matchLabels`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_selectors: Vec<PolicyTargetSelector>,
    /// See [`IpAccessSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_access: Option<IpAccessSpec>,
    /// See [`RequestLimitsSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_limits: Option<RequestLimitsSpec>,
    /// See [`ExternalAuthSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext_auth: Option<ExternalAuthSpec>,
    /// See [`JwtAuthSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuthSpec>,
    /// See [`BasicAuthSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuthSpec>,
    /// See [`ApiKeyAuthSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_auth: Option<ApiKeyAuthSpec>,
    /// See [`RateLimitSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,
    /// See [`AiPromptSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ai: Option<AiPromptSpec>,
    /// See [`TransformationSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformation: Option<TransformationSpec>,
    /// See [`CompressionSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<CompressionSpec>,
}

/// The status of a policy: one entry per ancestor (Gateway) it was considered for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyStatus {
    /// Per ancestor: `Accepted` (reasons `Accepted`, `Conflicted`, `Invalid`, `TargetNotFound`).
    #[serde(default)]
    pub ancestors: Vec<serde_json::Value>,
}

/// The filters of one `TrafficPolicy`, run in the order of the module documentation.
pub struct PolicyFilter {
    steps: Vec<Arc<dyn HttpFilter>>,
}

impl std::fmt::Debug for PolicyFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyFilter")
            .field("steps", &self.steps.len())
            .finish()
    }
}

/// Where [`PolicyFilter::assemble`] gets the filter of each section.
pub(crate) trait Sections {
    /// The filter of `section` with settings `spec`, built by `build`.
    fn get<S: Serialize, F: HttpFilter>(
        &mut self,
        section: &'static str,
        spec: S,
        build: fn(S) -> Result<F, SpecError>,
    ) -> Result<Arc<dyn HttpFilter>, SpecError>;
}

/// Every section built anew ([`PolicyFilter::new`]).
struct FreshSections;

impl Sections for FreshSections {
    fn get<S: Serialize, F: HttpFilter>(
        &mut self,
        _section: &'static str,
        spec: S,
        build: fn(S) -> Result<F, SpecError>,
    ) -> Result<Arc<dyn HttpFilter>, SpecError> {
        Ok(Arc::new(build(spec)?))
    }
}

/// Sections shared through [`Filters`](crate::Filters), keyed by section, the object the
/// section came from ([`gateway_core::config::ExtensionRef::origin`]) and its settings.
pub(crate) struct CachedSections<'a> {
    pub filters: &'a crate::Filters,
    pub reference: &'a gateway_core::config::ExtensionRef,
}

impl Sections for CachedSections<'_> {
    fn get<S: Serialize, F: HttpFilter>(
        &mut self,
        section: &'static str,
        spec: S,
        build: fn(S) -> Result<F, SpecError>,
    ) -> Result<Arc<dyn HttpFilter>, SpecError> {
        let settings = serde_json::to_string(&spec).unwrap_or_default();
        let origin = self.reference.origin(section).to_string();
        self.filters.cached((KIND, section, origin, settings), || {
            Ok(Arc::new(build(spec)?))
        })
    }
}

impl PolicyFilter {
    /// Builds every section of `spec`; an error names the section (`rateLimit.local.requests`).
    /// A policy with no section is refused: it would do nothing.
    pub fn new(spec: TrafficPolicySpec) -> Result<Self, SpecError> {
        Self::assemble(spec, &mut FreshSections)
    }

    /// [`PolicyFilter::new`], with each section's filter from `sections`.
    pub(crate) fn assemble(
        spec: TrafficPolicySpec,
        sections: &mut impl Sections,
    ) -> Result<Self, SpecError> {
        let mut steps = Vec::new();
        let mut step =
            |section: &'static str, filter: Option<Result<Arc<dyn HttpFilter>, SpecError>>| {
                if let Some(filter) = filter {
                    steps.push(filter.map_err(|e| e.within(section))?);
                }
                Ok::<_, SpecError>(())
            };
        macro_rules! section {
            ($name:literal, $field:ident, $build:path) => {
                step($name, spec.$field.map(|s| sections.get($name, s, $build)))?
            };
        }
        section!("ipAccess", ip_access, IpAccessFilter::new);
        section!("requestLimits", request_limits, RequestLimitsFilter::new);
        section!("extAuth", ext_auth, ExternalAuthFilter::new);
        section!("jwt", jwt, JwtAuthFilter::new);
        section!("basicAuth", basic_auth, BasicAuthFilter::new);
        section!("apiKeyAuth", api_key_auth, ApiKeyAuthFilter::new);
        section!("rateLimit", rate_limit, RateLimitFilter::new);
        section!("ai", ai, AiPromptFilter::new);
        section!("transformation", transformation, TransformationFilter::new);
        section!("compression", compression, CompressionFilter::new);
        if steps.is_empty() {
            return Err(SpecError::invalid("spec", "sets no filter section"));
        }
        Ok(PolicyFilter { steps })
    }
}

#[async_trait]
impl HttpFilter for PolicyFilter {
    async fn request_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        for s in &self.steps {
            if let FilterAction::Respond(r) = s.request_headers(session, ctx).await? {
                return Ok(FilterAction::Respond(r));
            }
        }
        Ok(FilterAction::Continue)
    }

    async fn request_body(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<FilterAction> {
        for s in &self.steps {
            if let FilterAction::Respond(r) =
                s.request_body(session, ctx, body, end_of_stream).await?
            {
                return Ok(FilterAction::Respond(r));
            }
        }
        Ok(FilterAction::Continue)
    }

    async fn upstream_request(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        request: &mut RequestHeader,
    ) -> gateway_core::Result<()> {
        for s in &self.steps {
            s.upstream_request(session, ctx, request).await?;
        }
        Ok(())
    }

    async fn response_headers(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        for s in &self.steps {
            s.response_headers(session, ctx, response).await?;
        }
        Ok(())
    }

    fn response_body(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
    ) -> gateway_core::Result<()> {
        for s in &self.steps {
            s.response_body(session, ctx, body, end_of_stream)?;
        }
        Ok(())
    }

    async fn logging(
        &self,
        session: &mut Session,
        ctx: &mut FilterCtx,
        error: Option<&ProxyError>,
    ) {
        for s in &self.steps {
            s.logging(session, ctx, error).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_section_and_empty_policies_are_refused() {
        let spec: TrafficPolicySpec = serde_json::from_str(
            r#"{"targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "r"}],
                "rateLimit": {"local": {"requests": 5, "unit": "Second", "burst": 0}}}"#,
        )
        .unwrap();
        assert_eq!(
            PolicyFilter::new(spec).unwrap_err().to_string(),
            "rateLimit.local.burst: must be above 0"
        );
        assert_eq!(
            PolicyFilter::new(TrafficPolicySpec::default())
                .unwrap_err()
                .to_string(),
            "spec: sets no filter section"
        );
        assert!(serde_json::from_str::<TrafficPolicySpec>(r#"{"rateLimits": {}}"#).is_err());
    }
}
