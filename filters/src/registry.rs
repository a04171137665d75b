//! Registering this crate's kinds in a [`FilterRegistry`], and keeping filter state across
//! configuration applies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use gateway_core::config::ExtensionRef;
use gateway_core::{FilterRegistry, HttpFilter};
use serde::de::DeserializeOwned;

use crate::access::IpAccessFilter;
use crate::ai::AiPromptFilter;
use crate::auth::api_key::ApiKeyAuthFilter;
use crate::auth::basic::BasicAuthFilter;
use crate::auth::ext_authz::ExternalAuthFilter;
use crate::auth::jwt::JwtAuthFilter;
use crate::compression::CompressionFilter;
use crate::limits::RequestLimitsFilter;
use crate::policy::PolicyFilter;
use crate::rate_limit::RateLimitFilter;
use crate::transformation::TransformationFilter;
use crate::{GROUP, SpecError};

/// The filters built so far, by kind, object name and settings, so that applying a configuration
/// in which an object did not change hands back the same filter value, with its state (a rate
/// limiter's buckets, remembered bcrypt verifications). Entries are weak: a filter no
/// configuration uses any more is dropped with the last table that held it.
///
/// Made by [`register`]; cloning shares it.
#[derive(Clone, Default)]
pub struct Filters {
    built: Arc<Mutex<HashMap<BuiltKey, Weak<dyn HttpFilter>>>>,
}

/// Kind, section (empty for a whole object), object name, and the settings as JSON text.
type BuiltKey = (&'static str, &'static str, String, String);

impl std::fmt::Debug for Filters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.built.lock().map_or(0, |b| b.len());
        f.debug_struct("Filters").field("built", &n).finish()
    }
}

impl Filters {
    /// The filter of `kind` for `reference`: the one built earlier from the same name and
    /// settings while it is still in use, else a new one from `build`.
    fn get_or_build<S, F>(
        &self,
        kind: &'static str,
        reference: &ExtensionRef,
        build: fn(S) -> Result<F, SpecError>,
    ) -> gateway_core::Result<Arc<dyn HttpFilter>>
    where
        S: DeserializeOwned,
        F: HttpFilter,
    {
        let mut settings = reference.config.clone().unwrap_or(serde_json::Value::Null);
        crate::secret::fill(&mut settings, &reference.secrets)?;
        let key = (kind, "", reference.name.clone(), settings.to_string());
        let filter = self.cached(key, || {
            let spec: S = serde_json::from_value(settings).map_err(|e| SpecError::Schema {
                kind,
                message: e.to_string(),
            })?;
            Ok(Arc::new(build(spec)?))
        })?;
        Ok(filter)
    }

    /// The filter for `key`, built earlier and still in use, else a new one from `build`. The
    /// lock is not held while building, so a build may itself ask for cached parts.
    pub(crate) fn cached(
        &self,
        key: BuiltKey,
        build: impl FnOnce() -> Result<Arc<dyn HttpFilter>, SpecError>,
    ) -> Result<Arc<dyn HttpFilter>, SpecError> {
        // Called when a configuration is applied, never on the request path.
        let lock = || self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(filter) = lock().get(&key).and_then(Weak::upgrade) {
            return Ok(filter);
        }
        let filter = build()?;
        let mut built = lock();
        built.retain(|_, w| w.strong_count() > 0);
        built.insert(key, Arc::downgrade(&filter));
        Ok(filter)
    }
}

/// Registers every kind of this crate under [`GROUP`] in `registry`, and returns the store of
/// built filters they share.
///
/// ```
/// let mut registry = gateway_core::FilterRegistry::with_builtins();
/// gateway_filters::register(&mut registry);
/// assert!(registry.contains(gateway_filters::GROUP, "TrafficPolicy"));
/// ```
pub fn register(registry: &mut FilterRegistry) -> Filters {
    let filters = Filters::default();
    macro_rules! kind {
        ($register:ident, $kind:expr, $build:expr) => {{
            let f = filters.clone();
            registry.$register(GROUP, $kind, move |r: &ExtensionRef| {
                f.get_or_build($kind, r, $build)
            });
        }};
        ($kind:expr, $build:expr) => {
            kind!(register, $kind, $build)
        };
    }
    kind!(crate::access::KIND, IpAccessFilter::new);
    kind!(crate::limits::KIND, RequestLimitsFilter::new);
    kind!(crate::auth::ext_authz::KIND, ExternalAuthFilter::new);
    kind!(crate::auth::jwt::KIND, JwtAuthFilter::new);
    kind!(crate::auth::basic::KIND, BasicAuthFilter::new);
    kind!(crate::auth::api_key::KIND, ApiKeyAuthFilter::new);
    kind!(crate::rate_limit::KIND, RateLimitFilter::new);
    kind!(crate::compression::KIND, CompressionFilter::new);
    kind!(crate::transformation::KIND, TransformationFilter::new);
    kind!(crate::ai::KIND, AiPromptFilter::new);
    // The one kind that attaches itself by targetRefs / targetSelectors. Its sections are
    // cached on their own, per object they came from (see `ExtensionRef::origins`), so a
    // policy merged with different others keeps one rate-limit budget.
    let f = filters.clone();
    registry.register_policy(GROUP, crate::policy::KIND, move |r: &ExtensionRef| {
        let mut settings = r.config.clone().unwrap_or(serde_json::Value::Null);
        crate::secret::fill(&mut settings, &r.secrets)?;
        let key = (
            crate::policy::KIND,
            "",
            r.name.clone(),
            settings.to_string(),
        );
        let filter = f.cached(key, || {
            let spec = serde_json::from_value(settings).map_err(|e| SpecError::Schema {
                kind: crate::policy::KIND,
                message: e.to_string(),
            })?;
            let mut sections = crate::policy::CachedSections {
                filters: &f,
                reference: r,
            };
            Ok(Arc::new(PolicyFilter::assemble(spec, &mut sections)?))
        })?;
        Ok(filter)
    });
    filters
}
