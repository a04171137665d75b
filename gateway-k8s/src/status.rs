//! The computed status of every resource, and its YAML / JSON rendering.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use gateway_api::experimental::httproutes::HttpRouteStatus;
use gateway_api::experimental::xbackendtrafficpolicies::XBackendTrafficPolicyStatus;
use gateway_api::gatewayclasses::GatewayClassStatus;
use gateway_api::gateways::GatewayStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::crds::{
    CLIENT_TRAFFIC_POLICY_KIND, ClientTrafficPolicyStatus, DIRECT_RESPONSE_GROUP, PolicyStatus,
    XBACKEND_KIND, XBackendStatus,
};
use crate::resources::{GATEWAY_X_GROUP, GenericKey, Kind, ObjectKey, Resources};

/// The Gateway API features this implementation supports, as written into
/// `GatewayClass.status.supportedFeatures` (sorted, as the specification asks).
pub const SUPPORTED_FEATURES: &[&str] = &[
    "BackendTLSPolicy",
    "BackendTLSPolicySANValidation",
    "Gateway",
    "GatewayBackendClientCertificate",
    "GatewayFrontendClientCertificateValidation",
    "GatewayFrontendClientCertificateValidationInsecureFallback",
    "GatewayHTTPListenerIsolation",
    "GatewayHTTPSListenerDetectMisdirectedRequests",
    "GatewayPort8080",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendRequestRedirect",
    "HTTPRouteBackendTimeout",
    "HTTPRouteBackendURLRewrite",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestPercentageMirror",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteRetry",
    "HTTPRouteRetryBackendTimeout",
    "HTTPRouteRetryConnectionError",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

/// The result of one translation for status purposes: the typed status of every GatewayClass,
/// Gateway, HTTPRoute, XBackendTrafficPolicy and ClientTrafficPolicy this controller manages, and every input object
/// echoed with it.
///
/// Objects this controller does not manage (GatewayClasses of another controller, their Gateways,
/// routes attached to none of our Gateways) have no typed status and are echoed without `status`.
#[derive(Clone, Debug, Default)]
pub struct StatusReport {
    pub(crate) gateway_classes: BTreeMap<String, GatewayClassStatus>,
    pub(crate) gateways: BTreeMap<ObjectKey, GatewayStatus>,
    /// Shared with the translator, which reuses the status of an unchanged route and keeps
    /// this map between translations (patched per changed route).
    pub(crate) http_routes: RouteStatuses,
    pub(crate) backend_traffic_policies: BTreeMap<ObjectKey, XBackendTrafficPolicyStatus>,
    pub(crate) backend_tls_policies:
        BTreeMap<ObjectKey, gateway_api::backendtlspolicies::BackendTlsPolicyStatus>,
    pub(crate) xbackends: BTreeMap<ObjectKey, XBackendEntry>,
    pub(crate) client_traffic_policies: BTreeMap<ObjectKey, ClientTrafficPolicyStatus>,
    /// v1 InferencePools referred to by routes served on our Gateways.
    pub(crate) inference_pools:
        BTreeMap<ObjectKey, gateway_inference::crd::v1::InferencePoolStatus>,
    /// Filter policies attached by `targetRefs` / `targetSelectors`, by kind and object.
    pub(crate) attached_policies: BTreeMap<GenericKey, PolicyStatus>,
    pub(crate) documents: Vec<Value>,
    /// Where each XBackend with a status sits in `documents`.
    pub(crate) xbackend_documents: BTreeMap<ObjectKey, usize>,
}

/// How many shards a [`RouteStatuses`] splits its routes into.
const ROUTE_STATUS_SHARDS: usize = 64;

/// The status of every HTTPRoute with one, by route.
///
/// Split into shards by a hash of the key, each behind an [`Arc`]: a clone shares every shard,
/// and changing a route afterwards copies only that route's shard (about 1/64 of the routes)
/// when the clone is still alive. The translator keeps one between translations and patches
/// the changed routes; each [`StatusReport`] it hands out is such a clone. Within a shard the
/// routes are sorted, so two maps with the same entries print (`Debug`) the same.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteStatuses {
    /// Empty until the first insert, then [`ROUTE_STATUS_SHARDS`] long.
    shards: Vec<Arc<BTreeMap<ObjectKey, Arc<HttpRouteStatus>>>>,
}

impl RouteStatuses {
    fn shard_of(key: &ObjectKey) -> usize {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same shard in every process.
        let mut hasher = std::hash::DefaultHasher::new();
        key.hash(&mut hasher);
        (hasher.finish() % ROUTE_STATUS_SHARDS as u64) as usize
    }

    /// The status of route `key`.
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<&Arc<HttpRouteStatus>> {
        if self.shards.is_empty() {
            return None;
        }
        self.shards[Self::shard_of(key)].get(key)
    }

    /// Sets the status of route `key`.
    pub(crate) fn insert(&mut self, key: ObjectKey, status: Arc<HttpRouteStatus>) {
        if self.shards.is_empty() {
            self.shards = (0..ROUTE_STATUS_SHARDS)
                .map(|_| Arc::new(BTreeMap::new()))
                .collect();
        }
        Arc::make_mut(&mut self.shards[Self::shard_of(&key)]).insert(key, status);
    }

    /// Forgets the status of route `key`.
    pub(crate) fn remove(&mut self, key: &ObjectKey) {
        if self.shards.is_empty() {
            return;
        }
        let slot = &mut self.shards[Self::shard_of(key)];
        if slot.contains_key(key) {
            Arc::make_mut(slot).remove(key);
        }
    }
}

/// An XBackend this controller reports on.
#[derive(Clone, Debug, Default)]
pub(crate) struct XBackendEntry {
    pub status: XBackendStatus,
    pub generation: Option<i64>,
    /// The name the data plane resolves, when the object can be served.
    pub hostname: Option<String>,
}

impl StatusReport {
    /// Builds the echoed documents from `resources` (the ones translated) and the statuses: the
    /// typed objects in input order, then the untyped ones in input order (echoed as written).
    /// [`crate::Translator::translate`] calls it; after
    /// [`crate::Translator::translate_unrendered`] the caller does, when it wants the documents.
    pub fn render(&mut self, resources: &Resources) {
        let mut documents = Vec::with_capacity(resources.len());
        for (kind, key) in resources.order() {
            let status = self.status_of(*kind, key);
            if let Some(doc) = Self::typed_document(resources, *kind, key, &status) {
                documents.push(doc);
            }
        }
        let (untyped, xbackends) = self.untyped_documents(resources);
        self.xbackend_documents = xbackends
            .into_iter()
            .map(|(key, index)| (key, documents.len() + index))
            .collect();
        documents.extend(untyped);
        self.documents = documents;
    }

    /// The untyped objects echoed in input order, with the statuses computed for them, and
    /// where each XBackend with a status sits among them.
    fn untyped_documents(&self, resources: &Resources) -> (Vec<Value>, Vec<(ObjectKey, usize)>) {
        let mut documents = Vec::new();
        let mut xbackends = Vec::new();
        for key in resources.other_order() {
            let Some(object) = resources.others.get(key) else {
                continue;
            };
            let mut doc = object.object.clone();
            if key.group == crate::resources::GATEWAY_GROUP
                && key.kind == "BackendTLSPolicy"
                && let Some(status) = self
                    .backend_tls_policies
                    .get(&ObjectKey::new(key.namespace.clone(), key.name.clone()))
            {
                set_status(&mut doc, status);
            }
            if key.group == DIRECT_RESPONSE_GROUP && key.kind == CLIENT_TRAFFIC_POLICY_KIND {
                let key = ObjectKey::new(key.namespace.clone(), key.name.clone());
                if let Some(status) = self.client_traffic_policies.get(&key) {
                    set_status(&mut doc, status);
                }
            }
            if let Some(status) = self.attached_policies.get(key) {
                set_status(&mut doc, status);
            }
            if key.group == gateway_inference::crd::GROUP
                && key.kind == gateway_inference::crd::KIND_INFERENCE_POOL
                && let Some(status) = self
                    .inference_pools
                    .get(&ObjectKey::new(key.namespace.clone(), key.name.clone()))
            {
                set_status(&mut doc, status);
            }
            if key.group == GATEWAY_X_GROUP && key.kind == XBACKEND_KIND {
                let key = ObjectKey::new(key.namespace.clone(), key.name.clone());
                if let Some(entry) = self.xbackends.get(&key) {
                    set_status(&mut doc, &entry.status);
                    xbackends.push((key, documents.len()));
                }
            }
            documents.push(doc);
        }
        (documents, xbackends)
    }

    /// The echo of typed object `kind` `key` with `status` (its [`StatusReport::status_of`];
    /// Secrets without their data); `None` when `resources` does not hold it.
    fn typed_document(
        resources: &Resources,
        kind: Kind,
        key: &ObjectKey,
        status: &CachedStatus,
    ) -> Option<Value> {
        // Serialized from the typed object: only that is kept per object.
        let mut doc = resources.document(kind, key)?;
        let map = doc.as_object_mut()?;
        map.remove("status");
        if kind == Kind::Secret {
            // Never echo key material.
            map.remove("data");
            map.remove("stringData");
        }
        let status = match status {
            CachedStatus::None => None,
            CachedStatus::GatewayClass(s) => serde_json::to_value(s).ok(),
            CachedStatus::Gateway(s) => serde_json::to_value(s).ok(),
            CachedStatus::HttpRoute(s) => serde_json::to_value(&**s).ok(),
            CachedStatus::BackendTrafficPolicy(s) => serde_json::to_value(s).ok(),
        };
        if let Some(status) = status {
            map.insert("status".into(), status);
        }
        Some(doc)
    }

    /// The status computed for typed object `kind` `key`, as [`RenderCache`] compares it.
    fn status_of(&self, kind: Kind, key: &ObjectKey) -> CachedStatus {
        let found = match kind {
            Kind::GatewayClass => self
                .gateway_classes
                .get(&key.name)
                .map(|s| CachedStatus::GatewayClass(s.clone())),
            Kind::Gateway => self
                .gateways
                .get(key)
                .map(|s| CachedStatus::Gateway(s.clone())),
            Kind::HttpRoute => self
                .http_routes
                .get(key)
                .map(|s| CachedStatus::HttpRoute(s.clone())),
            Kind::XBackendTrafficPolicy => self
                .backend_traffic_policies
                .get(key)
                .map(|s| CachedStatus::BackendTrafficPolicy(s.clone())),
            _ => None,
        };
        found.unwrap_or(CachedStatus::None)
    }

    /// The same text as [`StatusReport::render`] followed by [`StatusReport::to_yaml`] (gzip
    /// members shared with `cache`: no copy of an unchanged object's text is made), without
    /// rendering again the typed objects whose text `cache` holds: an object is reused when
    /// `resources` holds the very same object (the same `Arc`, as
    /// [`crate::source::FileSource`] hands out for an unchanged document) and its status is
    /// equal. The untyped objects (custom filter objects, XBackends, policies) are rendered
    /// every time. Leaves [`StatusReport::documents`] as it was.
    ///
    /// With 10,000 routes, rendering every object takes hundreds of milliseconds of CPU; after
    /// one route changed, this renders that route and the Gateways whose status changed. The
    /// cache keeps the text of the objects of the last call only.
    pub fn to_yaml_reusing(&self, resources: &Resources, cache: &mut RenderCache) -> StatusText {
        let mut previous = std::mem::take(&mut cache.entries);
        let mut out = StatusText {
            members: Vec::with_capacity(cache.entries_hint + 1),
            compressed_len: 0,
        };
        for (kind, key) in resources.order() {
            let Some(object) = resources.shared(*kind, key) else {
                continue;
            };
            let status = self.status_of(*kind, key);
            let slot = (*kind, key.clone());
            let text = match previous.remove(&slot) {
                Some(hit) if Arc::ptr_eq(&hit.object, &object) && hit.status == status => hit.text,
                _ => {
                    let Some(doc) = Self::typed_document(resources, *kind, key, &status) else {
                        continue;
                    };
                    let mut text = String::new();
                    push_yaml(&mut text, &doc);
                    cache.rendered += 1;
                    cache.gzip.member(&text)
                }
            };
            out.push(text.clone());
            cache.entries.insert(
                slot,
                CachedText {
                    object,
                    status,
                    text,
                },
            );
        }
        let mut untyped = String::new();
        for doc in self.untyped_documents(resources).0 {
            push_yaml(&mut untyped, &doc);
        }
        if !untyped.is_empty() {
            out.push(cache.gzip.member(&untyped));
        }
        cache.entries_hint = cache.entries.len();
        out
    }

    /// Writes the XBackend statuses into their echoed documents again (after a change of their
    /// resolution conditions).
    pub(crate) fn rerender_xbackends(&mut self) {
        for (key, &index) in &self.xbackend_documents {
            if let (Some(entry), Some(doc)) =
                (self.xbackends.get(key), self.documents.get_mut(index))
            {
                set_status(doc, &entry.status);
            }
        }
    }

    /// The status of GatewayClass `name`, if this controller manages it.
    pub fn gateway_class(&self, name: &str) -> Option<&GatewayClassStatus> {
        self.gateway_classes.get(name)
    }

    /// The status of Gateway `namespace/name`, if its class is ours.
    pub fn gateway(&self, namespace: &str, name: &str) -> Option<&GatewayStatus> {
        self.gateways.get(&ObjectKey::new(namespace, name))
    }

    /// The status of HTTPRoute `namespace/name`: one entry per parentRef that names one of our
    /// Gateways. `None` when the route names none.
    pub fn http_route(&self, namespace: &str, name: &str) -> Option<&HttpRouteStatus> {
        self.http_routes
            .get(&ObjectKey::new(namespace, name))
            .map(|s| &**s)
    }

    /// The status of XBackendTrafficPolicy `namespace/name`: one ancestor entry per Gateway of
    /// ours serving a route that refers to one of its targets. `None` when there is none.
    pub fn backend_traffic_policy(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&XBackendTrafficPolicyStatus> {
        self.backend_traffic_policies
            .get(&ObjectKey::new(namespace, name))
    }

    /// The status of ClientTrafficPolicy `namespace/name`: one ancestor entry per target on a
    /// Gateway of ours (or on a Gateway that does not exist). `None` when there is none.
    pub fn client_traffic_policy(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&ClientTrafficPolicyStatus> {
        self.client_traffic_policies
            .get(&ObjectKey::new(namespace, name))
    }

    /// The status of the attached filter policy `group`/`kind` `namespace/name` (a kind a
    /// filter registry marks as a policy, e.g. `TrafficPolicy`): one ancestor entry per Gateway
    /// its targets reach (or per target that does not exist). `None` when it has no
    /// `targetRefs` / `targetSelectors`, or targets only objects of other controllers.
    pub fn attached_policy(
        &self,
        group: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Option<&PolicyStatus> {
        self.attached_policies
            .get(&GenericKey::new(group, kind, namespace, name))
    }

    /// The status of the v1 InferencePool `namespace/name`: one `parents` entry per Gateway of
    /// ours serving an accepted HTTPRoute that refers to it (and only when the translator's
    /// filter registry serves InferencePools). `None` when there is no such Gateway.
    pub fn inference_pool(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<&gateway_inference::crd::v1::InferencePoolStatus> {
        self.inference_pools.get(&ObjectKey::new(namespace, name))
    }

    /// The status of XBackend `namespace/name`, if a route attached to one of our Gateways refers
    /// to it.
    pub fn xbackend(&self, namespace: &str, name: &str) -> Option<&XBackendStatus> {
        self.xbackends
            .get(&ObjectKey::new(namespace, name))
            .map(|e| &e.status)
    }

    /// Every input object (apiVersion, kind, metadata, spec, and `status` where computed), in
    /// input order. Secrets are echoed without `data` / `stringData`.
    pub fn documents(&self) -> &[Value] {
        &self.documents
    }

    /// The documents as a multi-document YAML stream (`---` between documents).
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for doc in &self.documents {
            push_yaml(&mut out, doc);
        }
        out
    }

    /// The documents as a Kubernetes `List` in pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": self.documents,
        });
        serde_json::to_string_pretty(&list).unwrap_or_default()
    }
}

/// Appends `doc` to a multi-document YAML stream: `---`, the document, a final newline.
fn push_yaml(out: &mut String, doc: &Value) {
    out.push_str("---\n");
    match serde_saphyr::to_string(doc) {
        Ok(text) => out.push_str(&text),
        // Values built from JSON always serialise; keep the output well-formed anyway.
        Err(err) => out.push_str(&format!("# cannot render document: {err}\n")),
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
}

/// The YAML text of each typed object (gzip-compressed) from the last [`StatusReport::to_yaml_reusing`], kept
/// to be reused by the next one. Owned by whoever publishes statuses, one per status stream;
/// starts empty (everything rendered).
#[derive(Default)]
pub struct RenderCache {
    /// Compresses the texts, one deflate state for all of them.
    gzip: Gzipper,
    entries: HashMap<(Kind, ObjectKey), CachedText>,
    /// How many objects the last text had, to size the next one.
    entries_hint: usize,
    /// Objects rendered (not reused) since the cache was made.
    rendered: u64,
}

impl RenderCache {
    /// How many typed objects were rendered rather than reused, over the cache's life.
    pub fn rendered(&self) -> u64 {
        self.rendered
    }

    /// How many objects' text the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds no text.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RenderCache")
            .field("objects", &self.entries.len())
            .field("rendered", &self.rendered)
            .finish()
    }
}

/// A multi-document YAML status stream kept gzip-compressed, one gzip member per typed object
/// (shared with the [`RenderCache`] that made it: an unchanged object costs no copy and no
/// compression), then one member for the untyped objects. The members in order form one valid
/// gzip stream ([`StatusText::gzip_members`]); [`StatusText::to_yaml`] decompresses it.
#[derive(Clone, Debug, Default)]
pub struct StatusText {
    members: Vec<Arc<[u8]>>,
    compressed_len: usize,
}

impl StatusText {
    fn push(&mut self, member: Arc<[u8]>) {
        self.compressed_len += member.len();
        self.members.push(member);
    }

    /// The gzip members, in order: their concatenation is the text as one gzip stream (RFC
    /// 1952 section 2.2), e.g. an HTTP body with `Content-Encoding: gzip`.
    pub fn gzip_members(&self) -> impl Iterator<Item = &[u8]> {
        self.members.iter().map(|m| &**m)
    }

    /// The compressed size in bytes.
    pub fn compressed_len(&self) -> usize {
        self.compressed_len
    }

    /// Whether there is no text at all (no object).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The text, decompressed.
    pub fn to_yaml(&self) -> String {
        let mut out = String::new();
        for member in &self.members {
            out.push_str(&gunzip(member));
        }
        out
    }
}

/// Makes gzip members (RFC 1952) with one reused deflate state: a fresh state per member (as
/// `GzEncoder` makes) costs more to set up than a small document costs to compress. Fast
/// compression: statuses are written often and read rarely.
struct Gzipper {
    deflate: flate2::Compress,
}

impl Default for Gzipper {
    fn default() -> Self {
        Gzipper {
            deflate: flate2::Compress::new(flate2::Compression::fast(), false),
        }
    }
}

impl Gzipper {
    /// `text` as one gzip member.
    fn member(&mut self, text: &str) -> Arc<[u8]> {
        // ID1 ID2, CM = deflate, no flags, no mtime, no extra flags, OS unknown.
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        self.deflate.reset();
        let input = text.as_bytes();
        let mut out = Vec::with_capacity(HEADER.len() + input.len() / 2 + 64);
        out.extend_from_slice(&HEADER);
        loop {
            let consumed = usize::try_from(self.deflate.total_in()).unwrap_or(input.len());
            let status = self.deflate.compress_vec(
                &input[consumed.min(input.len())..],
                &mut out,
                flate2::FlushCompress::Finish,
            );
            match status {
                Ok(flate2::Status::StreamEnd) => break,
                Ok(_) => out.reserve(out.capacity().max(64)),
                // Compressing into a Vec with room cannot fail; keep the member well-formed.
                Err(_) => return Arc::from(Vec::new()),
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(input);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE: the length modulo 2^32.
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        Arc::from(out)
    }
}

/// One gzip member made by [`Gzipper::member`], decompressed.
fn gunzip(member: &[u8]) -> String {
    use std::io::Read;
    let mut text = String::new();
    // Compressed by `gzip` from a str: it decompresses to valid UTF-8.
    let _ = flate2::read::GzDecoder::new(member).read_to_string(&mut text);
    text
}

/// One object's rendered text and what it was rendered from.
struct CachedText {
    object: Arc<dyn std::any::Any + Send + Sync>,
    status: CachedStatus,
    /// The object's document as one gzip member.
    text: Arc<[u8]>,
}

/// The status an object's text was rendered with.
#[derive(PartialEq)]
enum CachedStatus {
    None,
    GatewayClass(GatewayClassStatus),
    Gateway(GatewayStatus),
    HttpRoute(Arc<HttpRouteStatus>),
    BackendTrafficPolicy(XBackendTrafficPolicyStatus),
}

/// Replaces the `status` of an echoed document.
fn set_status<S: serde::Serialize>(doc: &mut Value, status: &S) {
    if let (Some(map), Ok(status)) = (doc.as_object_mut(), serde_json::to_value(status)) {
        map.insert("status".into(), status);
    }
}

/// Builds conditions and keeps each one's `lastTransitionTime` while its status stays the same
/// across translations (as a controller does when it updates a condition in place).
#[derive(Debug, Default)]
pub(crate) struct ConditionClock {
    previous: HashMap<String, (String, Time)>,
    current: HashMap<String, (String, Time)>,
}

/// One condition to build: type, status, reason, message.
pub(crate) struct Cond<'a> {
    pub type_: &'a str,
    pub ok: bool,
    pub reason: &'a str,
    pub message: String,
}

impl<'a> Cond<'a> {
    /// A condition of `type_` with status True (`ok`) or False.
    pub fn new(type_: &'a str, ok: bool, reason: &'a str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            ok,
            reason,
            message: message.into(),
        }
    }
}

impl ConditionClock {
    /// Starts a translation: conditions not built again by [`ConditionClock::finish`] are
    /// forgotten.
    pub fn begin(&mut self) {
        self.current.clear();
    }

    /// Ends a translation.
    pub fn finish(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }

    /// Builds a condition for the object part `scope` (e.g. `Gateway/ns/name/listener/http`).
    pub fn build(
        &mut self,
        scope: &str,
        cond: Cond<'_>,
        generation: Option<i64>,
        now: &Time,
    ) -> Condition {
        let status = if cond.ok { "True" } else { "False" };
        let key = format!("{scope}#{}", cond.type_);
        let time = match self.previous.get(&key) {
            Some((previous, time)) if previous == status => time.clone(),
            _ => now.clone(),
        };
        self.current.insert(key, (status.to_string(), time.clone()));
        condition(cond, generation, &time)
    }
}

/// The condition `cond` of an object at `generation`, which last transitioned at `time`.
pub(crate) fn condition(cond: Cond<'_>, generation: Option<i64>, time: &Time) -> Condition {
    Condition {
        last_transition_time: time.clone(),
        message: cond.message,
        observed_generation: generation,
        reason: cond.reason.to_string(),
        status: if cond.ok { "True" } else { "False" }.to_string(),
        type_: cond.type_.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    #[test]
    fn gzip_members_with_one_deflate_state_form_one_gzip_stream() {
        use std::io::Read;
        let mut gzip = Gzipper::default();
        // Empty, small, and larger than the first output reservation (incompressible bytes).
        let noise: String = (0..200_000u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
            .collect();
        let texts = ["", "---\nkind: A\n", noise.as_str(), "---\nkind: B\n"];
        let mut text = StatusText::default();
        for t in texts {
            let member = gzip.member(t);
            assert_eq!(gunzip(&member), t);
            text.push(member);
        }
        assert_eq!(text.to_yaml(), texts.concat());
        let stream: Vec<u8> = text.gzip_members().flatten().copied().collect();
        assert_eq!(stream.len(), text.compressed_len());
        let mut decoded = String::new();
        flate2::read::MultiGzDecoder::new(&stream[..])
            .read_to_string(&mut decoded)
            .expect("one gzip stream");
        assert_eq!(decoded, texts.concat());
    }

    #[test]
    fn features_are_sorted_and_unique() {
        let mut sorted = SUPPORTED_FEATURES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, SUPPORTED_FEATURES);
    }

    #[test]
    fn transition_time_sticks_while_status_holds() {
        let t1 = Time(Timestamp::from_second(100).unwrap_or(Timestamp::UNIX_EPOCH));
        let t2 = Time(Timestamp::from_second(200).unwrap_or(Timestamp::UNIX_EPOCH));
        let mut clock = ConditionClock::default();
        clock.begin();
        let c = clock.build(
            "x",
            Cond::new("Accepted", true, "Accepted", ""),
            Some(1),
            &t1,
        );
        clock.finish();
        assert_eq!(c.last_transition_time, t1);
        clock.begin();
        let c = clock.build(
            "x",
            Cond::new("Accepted", true, "Accepted", ""),
            Some(2),
            &t2,
        );
        clock.finish();
        assert_eq!(c.last_transition_time, t1);
        assert_eq!(c.observed_generation, Some(2));
        clock.begin();
        let c = clock.build(
            "x",
            Cond::new("Accepted", false, "Invalid", ""),
            Some(2),
            &t2,
        );
        clock.finish();
        assert_eq!(c.last_transition_time, t2);
        assert_eq!(c.status, "False");
    }

    #[test]
    fn secrets_are_echoed_without_data() {
        let r = Resources::parse_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/tls\nstringData: {tls.crt: x, tls.key: y}\n",
            "s.yaml",
        );
        let mut report = StatusReport::default();
        report.render(&r);
        assert_eq!(report.documents().len(), 1);
        assert!(report.documents()[0].get("stringData").is_none());
        let yaml = report.to_yaml();
        assert!(yaml.starts_with("---\n"));
        assert!(yaml.contains("kind: Secret"));
        assert!(report.to_json().contains("\"kind\": \"List\""));
    }
}
