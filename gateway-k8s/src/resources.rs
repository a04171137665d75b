//! The store of parsed Kubernetes objects, and the dispatch of YAML documents to typed structs.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use gateway_api::experimental::httproutes::HttpRoute;
use gateway_api::gatewayclasses::GatewayClass;
use gateway_api::gateways::Gateway;
use gateway_api::referencegrants::ReferenceGrant;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::crds::XBackendTrafficPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::yaml;

/// The Gateway API group.
pub(crate) const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The Gateway API experimental group (`X`-prefixed kinds).
pub(crate) const GATEWAY_X_GROUP: &str = "gateway.networking.x-k8s.io";

/// The namespace given to namespaced objects that name none (as `kubectl apply` would).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds this crate reads into typed structs. Objects of every other kind are kept untyped
/// (see [`Resources::others`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `gateway.networking.k8s.io` GatewayClass (cluster-scoped).
    GatewayClass,
    /// `gateway.networking.k8s.io` Gateway.
    Gateway,
    /// `gateway.networking.k8s.io` HTTPRoute.
    HttpRoute,
    /// `gateway.networking.k8s.io` ReferenceGrant.
    ReferenceGrant,
    /// Core Namespace (cluster-scoped).
    Namespace,
    /// Core Service.
    Service,
    /// Core Secret.
    Secret,
    /// `discovery.k8s.io/v1` EndpointSlice.
    EndpointSlice,
    /// `gateway.networking.x-k8s.io/v1alpha1` XBackendTrafficPolicy.
    XBackendTrafficPolicy,
}

impl Kind {
    /// The kind for an `apiVersion`/`kind` pair, if this crate reads it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        match (group, version, kind) {
            (GATEWAY_GROUP, "v1" | "v1beta1", "GatewayClass") => Some(Kind::GatewayClass),
            (GATEWAY_GROUP, "v1" | "v1beta1", "Gateway") => Some(Kind::Gateway),
            (GATEWAY_GROUP, "v1" | "v1beta1", "HTTPRoute") => Some(Kind::HttpRoute),
            (GATEWAY_GROUP, "v1" | "v1beta1" | "v1alpha2", "ReferenceGrant") => {
                Some(Kind::ReferenceGrant)
            }
            ("", "v1", "Namespace") => Some(Kind::Namespace),
            ("", "v1", "Service") => Some(Kind::Service),
            ("", "v1", "Secret") => Some(Kind::Secret),
            ("discovery.k8s.io", "v1", "EndpointSlice") => Some(Kind::EndpointSlice),
            (GATEWAY_X_GROUP, "v1alpha1", "XBackendTrafficPolicy") => {
                Some(Kind::XBackendTrafficPolicy)
            }
            _ => None,
        }
    }

    /// The kind for an API group and kind, whatever the version, if this crate types it.
    pub fn from_group_kind(group: &str, kind: &str) -> Option<Kind> {
        let version = match group {
            GATEWAY_X_GROUP => "v1alpha1",
            GATEWAY_GROUP | "" | "discovery.k8s.io" => "v1",
            _ => return None,
        };
        let api_version = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        Kind::from_type(&api_version, kind)
    }

    /// Whether objects of this kind live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Kind::GatewayClass | Kind::Namespace)
    }

    /// The Kubernetes `kind` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::Secret => "Secret",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::XBackendTrafficPolicy => "XBackendTrafficPolicy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies an object of a given kind: its namespace (empty for cluster-scoped kinds) and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl ObjectKey {
    /// A key for `namespace`/`name`.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// Identifies an object of a kind this crate does not type: API group (empty for core), kind,
/// namespace and name. Such objects are kept as they were written, so that references to them
/// (an `ExtensionRef` filter, for instance) resolve.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GenericKey {
    /// The API group (the part of `apiVersion` before `/`; empty for core).
    pub group: String,
    /// The kind.
    pub kind: String,
    /// The namespace: `metadata.namespace`, else [`DEFAULT_NAMESPACE`] (the scope of an unknown
    /// kind is unknown; references resolve within a namespace).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl GenericKey {
    /// A key for `group`/`kind` `namespace`/`name`.
    pub fn new(
        group: impl Into<String>,
        kind: impl Into<String>,
        namespace: impl Into<String>,
        name: impl Into<String>,
    ) -> Self {
        GenericKey {
            group: group.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for GenericKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{group}/{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// A parsed object: the typed struct and the document it came from.
///
/// Only the typed object is kept (not the document as written): the status echo
/// ([`crate::StatusReport`]) serializes it again ([`Resources::document`]), so fields the typed
/// struct does not know are not echoed, as the Kubernetes API server prunes unknown fields.
#[derive(Clone, Debug)]
pub struct Object<T> {
    /// The typed object (for kinds without a typed struct, the document as written).
    pub object: T,
    /// The `apiVersion` as written (e.g. `gateway.networking.k8s.io/v1beta1`).
    pub api_version: String,
    /// The origin label (usually a file path).
    pub origin: String,
    /// The zero-based index of the document in its origin.
    pub document: usize,
}

/// A store of parsed objects, one map per kind, plus the input order and the diagnostics found
/// while parsing.
///
/// Objects are shared ([`Arc`]): cloning a store, or building the next one from a source that
/// kept the unchanged objects of the last load ([`crate::source::FileSource`]), copies no object.
///
/// Build it with [`Resources::parse_yaml`] / [`Resources::add_yaml`], or from
/// [`crate::source::FileSource::load`]; combine several with [`Resources::merge`]. When two
/// documents define the same object, the later one wins and a [`Diagnostic`] is recorded.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// GatewayClasses by name (empty namespace).
    pub gateway_classes: BTreeMap<ObjectKey, Arc<Object<GatewayClass>>>,
    /// Gateways.
    pub gateways: BTreeMap<ObjectKey, Arc<Object<Gateway>>>,
    /// HTTPRoutes.
    pub http_routes: BTreeMap<ObjectKey, Arc<Object<HttpRoute>>>,
    /// ReferenceGrants (v1 and v1beta1 share one schema).
    pub reference_grants: BTreeMap<ObjectKey, Arc<Object<ReferenceGrant>>>,
    /// Namespaces by name (empty namespace).
    pub namespaces: BTreeMap<ObjectKey, Arc<Object<Namespace>>>,
    /// Services.
    pub services: BTreeMap<ObjectKey, Arc<Object<Service>>>,
    /// Secrets.
    pub secrets: BTreeMap<ObjectKey, Arc<Object<Secret>>>,
    /// EndpointSlices.
    pub endpoint_slices: BTreeMap<ObjectKey, Arc<Object<EndpointSlice>>>,
    /// XBackendTrafficPolicies.
    pub backend_traffic_policies: BTreeMap<ObjectKey, Arc<Object<XBackendTrafficPolicy>>>,
    /// Objects of every kind without a typed map above (ConfigMaps, custom filter objects,
    /// `DirectResponse`s, ...), as written.
    pub others: BTreeMap<GenericKey, Arc<Object<Value>>>,
    /// Problems found while parsing: unparseable documents, broken objects, duplicates.
    pub diagnostics: Vec<Diagnostic>,
    order: Vec<(Kind, ObjectKey)>,
    other_order: Vec<GenericKey>,
}

/// Why a document was not added to a [`Resources`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    /// A document this crate does not read: not an error in the input. Documents of kinds
    /// without a typed struct are kept untyped ([`Resources::others`]), so this is not produced
    /// for them.
    #[error("{0}")]
    Unsupported(String),
    /// A broken document: not a mapping, no apiVersion, kind or name, or not matching the
    /// schema of its kind. The Kubernetes API server would have refused it.
    #[error("{0}")]
    Invalid(String),
}

/// The `apiVersion` and `kind` of a document, read before the typed parse.
#[derive(serde::Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

impl Resources {
    /// An empty store.
    pub fn new() -> Self {
        Resources::default()
    }

    /// Parses a multi-document YAML text. `origin` names the text in diagnostics (e.g. its path).
    /// Never fails: bad documents become [`Resources::diagnostics`].
    pub fn parse_yaml(text: &str, origin: &str) -> Resources {
        let mut resources = Resources::new();
        resources.add_yaml(text, origin);
        resources
    }

    /// Parses a multi-document YAML text and adds its objects to this store.
    pub fn add_yaml(&mut self, text: &str, origin: &str) {
        for chunk in yaml::split(text) {
            match Entry::read_yaml(&chunk.text, origin, chunk.index) {
                Read::Entry(Ok(entry)) => self.insert(entry),
                Read::Entry(Err(e)) => {
                    self.diagnostics
                        .push(Diagnostic::document(origin, chunk.index, e.to_string()))
                }
                Read::Empty => {}
                Read::Unparseable(message) => self.diagnostics.push(Diagnostic::document(
                    origin,
                    chunk.index,
                    format!("unparseable YAML: {message}"),
                )),
            }
        }
    }

    /// Adds one already-parsed document. Problems are recorded in [`Resources::diagnostics`].
    pub fn add_value(&mut self, value: Value, origin: &str, document: usize) {
        let _ = self.add_value_checked(value, origin, document);
    }

    /// Like [`Resources::add_value`], and also tells why a document was not added, so a caller
    /// can tell a document of a kind this crate does not read (harmless) from a broken one (which
    /// the API server would have rejected). The problem is recorded in
    /// [`Resources::diagnostics`] either way.
    pub fn add_value_checked(
        &mut self,
        value: Value,
        origin: &str,
        document: usize,
    ) -> Result<(), DocumentError> {
        let result = self.try_add_value(value, origin, document);
        if let Err(e) = &result {
            self.diagnostics
                .push(Diagnostic::document(origin, document, e.to_string()));
        }
        result
    }

    fn try_add_value(
        &mut self,
        value: Value,
        origin: &str,
        document: usize,
    ) -> Result<(), DocumentError> {
        let entry = Entry::build(value, origin, document)?;
        self.insert(entry);
        Ok(())
    }

    /// Adds a built object (see [`Entry::build`]); a duplicate replaces the earlier one, with a
    /// diagnostic.
    pub(crate) fn insert(&mut self, entry: Entry) {
        match entry {
            Entry::GatewayClass(key, o) => self.put(Kind::GatewayClass, key, o),
            Entry::Gateway(key, o) => self.put(Kind::Gateway, key, o),
            Entry::HttpRoute(key, o) => self.put(Kind::HttpRoute, key, o),
            Entry::ReferenceGrant(key, o) => self.put(Kind::ReferenceGrant, key, o),
            Entry::Namespace(key, o) => self.put(Kind::Namespace, key, o),
            Entry::Service(key, o) => self.put(Kind::Service, key, o),
            Entry::Secret(key, o) => self.put(Kind::Secret, key, o),
            Entry::EndpointSlice(key, o) => self.put(Kind::EndpointSlice, key, o),
            Entry::XBackendTrafficPolicy(key, o) => self.put(Kind::XBackendTrafficPolicy, key, o),
            Entry::Other(key, o) => self.put_other(key, o),
        }
    }

    /// Replaces the object `entry` names with it, keeping its position in the input order (and
    /// every diagnostic); returns `false`, changing nothing, when no such object is present.
    /// [`crate::source::FileSource`] uses it to patch the objects of a document that changed.
    pub(crate) fn replace(&mut self, entry: Entry) -> bool {
        fn one<K: Ord, T>(map: &mut BTreeMap<K, Arc<T>>, key: &K, object: Arc<T>) -> bool {
            match map.get_mut(key) {
                Some(slot) => {
                    *slot = object;
                    true
                }
                None => false,
            }
        }
        match entry {
            Entry::GatewayClass(k, o) => one(&mut self.gateway_classes, &k, o),
            Entry::Gateway(k, o) => one(&mut self.gateways, &k, o),
            Entry::HttpRoute(k, o) => one(&mut self.http_routes, &k, o),
            Entry::ReferenceGrant(k, o) => one(&mut self.reference_grants, &k, o),
            Entry::Namespace(k, o) => one(&mut self.namespaces, &k, o),
            Entry::Service(k, o) => one(&mut self.services, &k, o),
            Entry::Secret(k, o) => one(&mut self.secrets, &k, o),
            Entry::EndpointSlice(k, o) => one(&mut self.endpoint_slices, &k, o),
            Entry::XBackendTrafficPolicy(k, o) => one(&mut self.backend_traffic_policies, &k, o),
            Entry::Other(k, o) => one(&mut self.others, &k, o),
        }
    }

    fn put_other(&mut self, key: GenericKey, object: Arc<Object<Value>>) {
        let (origin, document) = (object.origin.clone(), object.document);
        match self.others.insert(key.clone(), object) {
            Some(previous) => self.diagnostics.push(Diagnostic::document(
                &origin,
                document,
                format!(
                    "{key} is defined again; it replaces the one from {} (document {})",
                    previous.origin, previous.document
                ),
            )),
            None => self.other_order.push(key),
        }
    }

    /// The untyped object `group`/`kind` `namespace`/`name`, if present.
    pub fn other(&self, group: &str, kind: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.others
            .get(&GenericKey::new(group, kind, namespace, name))
            .map(|o| &o.object)
    }

    /// The keys of the untyped objects, in input order.
    pub fn other_order(&self) -> &[GenericKey] {
        &self.other_order
    }

    fn put<T>(&mut self, kind: Kind, key: ObjectKey, object: Arc<Object<T>>)
    where
        Self: MapFor<T>,
    {
        let (origin, document) = (object.origin.clone(), object.document);
        match self.map_mut().insert(key.clone(), object) {
            Some(previous) => self.diagnostics.push(Diagnostic::document(
                &origin,
                document,
                format!(
                    "{kind} {key} is defined again; it replaces the one from {} (document {})",
                    previous.origin, previous.document
                ),
            )),
            None => self.order.push((kind, key)),
        }
    }

    /// Adds every object and diagnostic of `other` to this store, in `other`'s input order.
    /// Objects already present are replaced (with a diagnostic), as if `other` came later.
    pub fn merge(&mut self, other: Resources) {
        let Resources {
            mut gateway_classes,
            mut gateways,
            mut http_routes,
            mut reference_grants,
            mut namespaces,
            mut services,
            mut secrets,
            mut endpoint_slices,
            mut backend_traffic_policies,
            mut others,
            diagnostics,
            order,
            other_order,
        } = other;
        self.diagnostics.extend(diagnostics);
        for (kind, key) in order {
            match kind {
                Kind::GatewayClass => move_one(self, kind, key, &mut gateway_classes),
                Kind::Gateway => move_one(self, kind, key, &mut gateways),
                Kind::HttpRoute => move_one(self, kind, key, &mut http_routes),
                Kind::ReferenceGrant => move_one(self, kind, key, &mut reference_grants),
                Kind::Namespace => move_one(self, kind, key, &mut namespaces),
                Kind::Service => move_one(self, kind, key, &mut services),
                Kind::Secret => move_one(self, kind, key, &mut secrets),
                Kind::EndpointSlice => move_one(self, kind, key, &mut endpoint_slices),
                Kind::XBackendTrafficPolicy => {
                    move_one(self, kind, key, &mut backend_traffic_policies)
                }
            }
        }
        for key in other_order {
            if let Some(object) = others.remove(&key) {
                self.put_other(key, object);
            }
        }
    }

    /// Every typed object's kind and key, in input order (first definition's position). Untyped
    /// objects are in [`Resources::other_order`].
    pub fn order(&self) -> &[(Kind, ObjectKey)] {
        &self.order
    }

    /// The object `kind` `key` as a JSON document, if present: its typed object serialized,
    /// with the `apiVersion` as written. Built on each call (nothing but the typed object is
    /// kept); [`crate::StatusReport::render`] uses it to echo the objects.
    pub fn document(&self, kind: Kind, key: &ObjectKey) -> Option<Value> {
        match kind {
            Kind::GatewayClass => echo(self.gateway_classes.get(key)?),
            Kind::Gateway => echo(self.gateways.get(key)?),
            Kind::HttpRoute => echo(self.http_routes.get(key)?),
            Kind::ReferenceGrant => echo(self.reference_grants.get(key)?),
            Kind::Namespace => echo(self.namespaces.get(key)?),
            Kind::Service => echo(self.services.get(key)?),
            Kind::Secret => echo(self.secrets.get(key)?),
            Kind::EndpointSlice => echo(self.endpoint_slices.get(key)?),
            Kind::XBackendTrafficPolicy => echo(self.backend_traffic_policies.get(key)?),
        }
    }

    /// The shared typed object `kind` `key`, if present, for identity comparisons (the same
    /// `Arc` means the same object as read).
    pub(crate) fn shared(
        &self,
        kind: Kind,
        key: &ObjectKey,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        fn any<T: Send + Sync + 'static>(
            o: &Arc<Object<T>>,
        ) -> Arc<dyn std::any::Any + Send + Sync> {
            o.clone()
        }
        match kind {
            Kind::GatewayClass => self.gateway_classes.get(key).map(any),
            Kind::Gateway => self.gateways.get(key).map(any),
            Kind::HttpRoute => self.http_routes.get(key).map(any),
            Kind::ReferenceGrant => self.reference_grants.get(key).map(any),
            Kind::Namespace => self.namespaces.get(key).map(any),
            Kind::Service => self.services.get(key).map(any),
            Kind::Secret => self.secrets.get(key).map(any),
            Kind::EndpointSlice => self.endpoint_slices.get(key).map(any),
            Kind::XBackendTrafficPolicy => self.backend_traffic_policies.get(key).map(any),
        }
    }

    /// The number of objects in the store, typed and untyped.
    pub fn len(&self) -> usize {
        self.order.len() + self.other_order.len()
    }

    /// Whether the store holds no object.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty() && self.other_order.is_empty()
    }
}

fn move_one<T>(
    into: &mut Resources,
    kind: Kind,
    key: ObjectKey,
    from: &mut BTreeMap<ObjectKey, Arc<Object<T>>>,
) where
    Resources: MapFor<T>,
{
    if let Some(object) = from.remove(&key) {
        into.put(kind, key, object);
    }
}

/// One document read into its object, ready to be added to a [`Resources`]. Built once per
/// document text by [`crate::source::FileSource`], which keeps it for the next load while the
/// document is unchanged.
#[derive(Clone, Debug)]
pub(crate) enum Entry {
    GatewayClass(ObjectKey, Arc<Object<GatewayClass>>),
    Gateway(ObjectKey, Arc<Object<Gateway>>),
    HttpRoute(ObjectKey, Arc<Object<HttpRoute>>),
    ReferenceGrant(ObjectKey, Arc<Object<ReferenceGrant>>),
    Namespace(ObjectKey, Arc<Object<Namespace>>),
    Service(ObjectKey, Arc<Object<Service>>),
    Secret(ObjectKey, Arc<Object<Secret>>),
    EndpointSlice(ObjectKey, Arc<Object<EndpointSlice>>),
    XBackendTrafficPolicy(ObjectKey, Arc<Object<XBackendTrafficPolicy>>),
    Other(GenericKey, Arc<Object<Value>>),
}

/// What reading one YAML document gave.
#[derive(Debug)]
pub(crate) enum Read {
    /// Blank, comments only, or `null`.
    Empty,
    /// Not YAML: the parser's message.
    Unparseable(String),
    /// A document: its object, or why it is not one.
    Entry(Result<Entry, DocumentError>),
}

/// The metadata of a typed object being stamped (see [`Entry::stamp`]).
pub(crate) struct Stamp<'a> {
    /// The API group of the object's `apiVersion`.
    pub group: &'a str,
    /// Its kind.
    pub kind: Kind,
    /// Its metadata (namespace already defaulted), to fill in.
    pub meta: &'a mut ObjectMeta,
    /// A hash of its content: everything but `metadata` and `status`, as the typed object
    /// reads it (so fields the typed struct does not know, and formatting, do not count).
    pub content: u64,
}

impl Entry {
    /// Reads one YAML document (`text`, document `document` of `origin`) into its object.
    ///
    /// A document of a typed kind is parsed straight into its typed struct, its `apiVersion`
    /// and `kind` found first by a look at its top-level lines ([`yaml::type_meta`]). Other
    /// documents, and any document that does not read that way (not YAML, not fitting its
    /// schema, or written in a form the look does not understand), are parsed into a
    /// [`Value`] and read from it ([`Entry::build`]), which gives the diagnostics.
    pub(crate) fn read_yaml(text: &str, origin: &str, document: usize) -> Read {
        if let Some((api_version, kind_name)) = yaml::type_meta(text)
            && let Some(kind) = Kind::from_type(api_version, kind_name)
            && let Some(entry) = Entry::typed_from_yaml(kind, api_version, text, origin, document)
        {
            return Read::Entry(entry);
        }
        match yaml::parse(text) {
            Ok(None) => Read::Empty,
            Err(message) => Read::Unparseable(message),
            Ok(Some(value)) => Read::Entry(Entry::build(value, origin, document)),
        }
    }

    /// The typed object of `kind` read straight from `text`; `None` when it does not read.
    fn typed_from_yaml(
        kind: Kind,
        api_version: &str,
        text: &str,
        origin: &str,
        document: usize,
    ) -> Option<Result<Entry, DocumentError>> {
        fn read<T: Typed>(
            kind: Kind,
            api_version: &str,
            text: &str,
            origin: &str,
            document: usize,
        ) -> Option<Result<Keyed<T>, DocumentError>> {
            let object: T = yaml::parse_typed(text).ok()?;
            Some(finish(
                kind,
                api_version.to_string(),
                object,
                origin,
                document,
            ))
        }
        let (a, t, o, d) = (api_version, text, origin, document);
        Some(match kind {
            Kind::GatewayClass => read(kind, a, t, o, d)?.map(|(k, o)| Entry::GatewayClass(k, o)),
            Kind::Gateway => read(kind, a, t, o, d)?.map(|(k, o)| Entry::Gateway(k, o)),
            Kind::HttpRoute => read(kind, a, t, o, d)?.map(|(k, o)| Entry::HttpRoute(k, o)),
            Kind::ReferenceGrant => {
                read(kind, a, t, o, d)?.map(|(k, o)| Entry::ReferenceGrant(k, o))
            }
            Kind::Namespace => read(kind, a, t, o, d)?.map(|(k, o)| Entry::Namespace(k, o)),
            Kind::Service => read(kind, a, t, o, d)?.map(|(k, o)| Entry::Service(k, o)),
            Kind::Secret => read(kind, a, t, o, d)?.map(|(k, o)| Entry::Secret(k, o)),
            Kind::EndpointSlice => read(kind, a, t, o, d)?.map(|(k, o)| Entry::EndpointSlice(k, o)),
            Kind::XBackendTrafficPolicy => {
                read(kind, a, t, o, d)?.map(|(k, o)| Entry::XBackendTrafficPolicy(k, o))
            }
        })
    }

    /// Reads one parsed document into its typed object (namespace defaulted), or tells why it
    /// cannot be (the message a [`Diagnostic`] carries).
    pub(crate) fn build(
        value: Value,
        origin: &str,
        document: usize,
    ) -> Result<Entry, DocumentError> {
        use DocumentError::Invalid;
        if !value.is_object() {
            return Err(Invalid("document is not a mapping".into()));
        }
        // Read from a reference: the document is not copied.
        let meta = TypeMeta::deserialize(&value)
            .map_err(|e| Invalid(format!("cannot read apiVersion/kind: {e}")))?;
        let api_version = meta
            .api_version
            .ok_or_else(|| Invalid("document has no apiVersion".into()))?;
        let kind_name = meta
            .kind
            .ok_or_else(|| Invalid("document has no kind".into()))?;
        let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
            return Entry::other(value, &api_version, kind_name, origin, document);
        };
        if value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(Invalid(format!("{kind} has no metadata.name")));
        }
        fn read<T: Typed>(
            kind: Kind,
            api_version: String,
            value: &Value,
            origin: &str,
            document: usize,
        ) -> Result<Keyed<T>, DocumentError> {
            // The typed structs do not check `apiVersion` against an older served version: the
            // Gateway API kinds ignore it, the core kinds have one version.
            let object = T::deserialize(value)
                .map_err(|e| DocumentError::Invalid(format!("invalid {kind}: {e}")))?;
            finish(kind, api_version, object, origin, document)
        }
        let (a, v, o, d) = (api_version, &value, origin, document);
        Ok(match kind {
            Kind::GatewayClass => read(kind, a, v, o, d).map(|(k, o)| Entry::GatewayClass(k, o))?,
            Kind::Gateway => read(kind, a, v, o, d).map(|(k, o)| Entry::Gateway(k, o))?,
            Kind::HttpRoute => read(kind, a, v, o, d).map(|(k, o)| Entry::HttpRoute(k, o))?,
            Kind::ReferenceGrant => {
                read(kind, a, v, o, d).map(|(k, o)| Entry::ReferenceGrant(k, o))?
            }
            Kind::Namespace => read(kind, a, v, o, d).map(|(k, o)| Entry::Namespace(k, o))?,
            Kind::Service => read(kind, a, v, o, d).map(|(k, o)| Entry::Service(k, o))?,
            Kind::Secret => read(kind, a, v, o, d).map(|(k, o)| Entry::Secret(k, o))?,
            Kind::EndpointSlice => {
                read(kind, a, v, o, d).map(|(k, o)| Entry::EndpointSlice(k, o))?
            }
            Kind::XBackendTrafficPolicy => {
                read(kind, a, v, o, d).map(|(k, o)| Entry::XBackendTrafficPolicy(k, o))?
            }
        })
    }

    /// Lets `stamp` fill in the metadata of a typed object (untouched if the object is shared:
    /// it is copied first); returns what `stamp` returned, or `None` for an untyped object.
    pub(crate) fn stamp<S>(&mut self, stamp: impl FnOnce(Stamp<'_>) -> S) -> Option<S> {
        fn one<T: Typed, S>(
            object: &mut Arc<Object<T>>,
            kind: Kind,
            stamp: impl FnOnce(Stamp<'_>) -> S,
        ) -> S {
            let Object {
                object,
                api_version,
                ..
            } = Arc::make_mut(object);
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let content = content_hash(object);
            stamp(Stamp {
                group,
                kind,
                meta: object.meta_mut(),
                content,
            })
        }
        Some(match self {
            Entry::GatewayClass(_, o) => one(o, Kind::GatewayClass, stamp),
            Entry::Gateway(_, o) => one(o, Kind::Gateway, stamp),
            Entry::HttpRoute(_, o) => one(o, Kind::HttpRoute, stamp),
            Entry::ReferenceGrant(_, o) => one(o, Kind::ReferenceGrant, stamp),
            Entry::Namespace(_, o) => one(o, Kind::Namespace, stamp),
            Entry::Service(_, o) => one(o, Kind::Service, stamp),
            Entry::Secret(_, o) => one(o, Kind::Secret, stamp),
            Entry::EndpointSlice(_, o) => one(o, Kind::EndpointSlice, stamp),
            Entry::XBackendTrafficPolicy(_, o) => one(o, Kind::XBackendTrafficPolicy, stamp),
            Entry::Other(..) => return None,
        })
    }

    /// Whether both are objects of the same kind with the same key (the same object, maybe in
    /// another version).
    pub(crate) fn names_same_object(&self, other: &Entry) -> bool {
        match (self, other) {
            (Entry::GatewayClass(a, _), Entry::GatewayClass(b, _))
            | (Entry::Gateway(a, _), Entry::Gateway(b, _))
            | (Entry::HttpRoute(a, _), Entry::HttpRoute(b, _))
            | (Entry::ReferenceGrant(a, _), Entry::ReferenceGrant(b, _))
            | (Entry::Namespace(a, _), Entry::Namespace(b, _))
            | (Entry::Service(a, _), Entry::Service(b, _))
            | (Entry::Secret(a, _), Entry::Secret(b, _))
            | (Entry::EndpointSlice(a, _), Entry::EndpointSlice(b, _))
            | (Entry::XBackendTrafficPolicy(a, _), Entry::XBackendTrafficPolicy(b, _)) => a == b,
            (Entry::Other(a, _), Entry::Other(b, _)) => a == b,
            _ => false,
        }
    }

    /// The index of the document the object was read from.
    pub(crate) fn document(&self) -> usize {
        match self {
            Entry::GatewayClass(_, o) => o.document,
            Entry::Gateway(_, o) => o.document,
            Entry::HttpRoute(_, o) => o.document,
            Entry::ReferenceGrant(_, o) => o.document,
            Entry::Namespace(_, o) => o.document,
            Entry::Service(_, o) => o.document,
            Entry::Secret(_, o) => o.document,
            Entry::EndpointSlice(_, o) => o.document,
            Entry::XBackendTrafficPolicy(_, o) => o.document,
            Entry::Other(_, o) => o.document,
        }
    }

    /// The same object as read from document `document` of its origin: shared when that is
    /// where it was read, else a copy carrying the new position.
    pub(crate) fn at_document(&self, document: usize) -> Entry {
        fn moved<T: Clone>(o: &Arc<Object<T>>, document: usize) -> Arc<Object<T>> {
            if o.document == document {
                return o.clone();
            }
            let mut copy = Object::clone(o);
            copy.document = document;
            Arc::new(copy)
        }
        match self {
            Entry::GatewayClass(k, o) => Entry::GatewayClass(k.clone(), moved(o, document)),
            Entry::Gateway(k, o) => Entry::Gateway(k.clone(), moved(o, document)),
            Entry::HttpRoute(k, o) => Entry::HttpRoute(k.clone(), moved(o, document)),
            Entry::ReferenceGrant(k, o) => Entry::ReferenceGrant(k.clone(), moved(o, document)),
            Entry::Namespace(k, o) => Entry::Namespace(k.clone(), moved(o, document)),
            Entry::Service(k, o) => Entry::Service(k.clone(), moved(o, document)),
            Entry::Secret(k, o) => Entry::Secret(k.clone(), moved(o, document)),
            Entry::EndpointSlice(k, o) => Entry::EndpointSlice(k.clone(), moved(o, document)),
            Entry::XBackendTrafficPolicy(k, o) => {
                Entry::XBackendTrafficPolicy(k.clone(), moved(o, document))
            }
            Entry::Other(k, o) => Entry::Other(k.clone(), moved(o, document)),
        }
    }

    /// Keeps a document of a kind without a typed struct, as written.
    fn other(
        value: Value,
        api_version: &str,
        kind: String,
        origin: &str,
        document: usize,
    ) -> Result<Entry, DocumentError> {
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| DocumentError::Invalid(format!("{kind} has no metadata.name")))?
            .to_string();
        let namespace = value
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or(DEFAULT_NAMESPACE)
            .to_string();
        let group = api_version
            .rsplit_once('/')
            .map(|(g, _)| g)
            .unwrap_or("")
            .to_string();
        let key = GenericKey::new(group, kind, namespace, name);
        let object = Object {
            object: value,
            api_version: api_version.to_string(),
            origin: origin.to_string(),
            document,
        };
        Ok(Entry::Other(key, Arc::new(object)))
    }
}

/// A typed object read, with its key.
type Keyed<T> = (ObjectKey, Arc<Object<T>>);

/// Checks the name of a typed object just read, defaults its namespace, and wraps it.
fn finish<T>(
    kind: Kind,
    api_version: String,
    mut object: T,
    origin: &str,
    document: usize,
) -> Result<Keyed<T>, DocumentError>
where
    T: Typed,
{
    let meta = object.meta_mut();
    let name = meta
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| DocumentError::Invalid(format!("{kind} has no metadata.name")))?;
    let namespace = if kind.namespaced() {
        let ns = meta
            .namespace
            .take()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string());
        meta.namespace = Some(ns.clone());
        ns
    } else {
        String::new()
    };
    let object = Object {
        object: compact(object),
        api_version,
        origin: origin.to_string(),
        document,
    };
    Ok((ObjectKey::new(namespace, name), Arc::new(object)))
}

/// `object` with every list at its length. Deserializing grows each list by pushing (the YAML
/// reader gives no length up front), so a list of one element keeps room for four: with the
/// large generated Gateway API structs that is most of a parsed HTTPRoute's memory, and parsed
/// objects stay in memory as long as their document is unchanged ([`crate::source::FileSource`]).
/// A clone allocates every list (and string) at its exact length.
fn compact<T: Clone>(object: T) -> T {
    object.clone()
}

/// The echo of a typed object (see [`Resources::document`]).
fn echo<T: Serialize>(object: &Object<T>) -> Option<Value> {
    let mut value = serde_json::to_value(&object.object).ok()?;
    if let Some(map) = value.as_object_mut() {
        map.insert(
            "apiVersion".into(),
            Value::String(object.api_version.clone()),
        );
    }
    Some(value)
}

/// A typed kind's struct: read from YAML or JSON, its metadata stamped, its content hashed.
trait Typed: DeserializeOwned + Serialize + Clone {
    /// The object's metadata.
    fn meta_mut(&mut self) -> &mut ObjectMeta;
    /// Feeds the object's content (every field but `metadata` and `status`) into `hasher`.
    fn content(&self, hasher: &mut ContentHasher);
}

macro_rules! typed {
    ($ty:ty, $($field:ident),+) => {
        impl Typed for $ty {
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
            fn content(&self, hasher: &mut ContentHasher) {
                $(hasher.field(stringify!($field), &self.$field);)+
            }
        }
    };
}

typed!(GatewayClass, spec);
typed!(Gateway, spec);
typed!(HttpRoute, spec);
typed!(ReferenceGrant, spec);
typed!(Namespace, spec);
typed!(Service, spec);
typed!(Secret, type_, data, string_data, immutable);
typed!(EndpointSlice, address_type, endpoints, ports);
typed!(XBackendTrafficPolicy, spec);

/// Hashes serialized fields without building them: each field is fed as its name and its JSON
/// text (maps in the typed structs are ordered, so equal content gives equal text).
struct ContentHasher(std::collections::hash_map::DefaultHasher);

impl ContentHasher {
    fn field<F: Serialize>(&mut self, name: &str, value: &F) {
        use std::hash::Hash;
        name.hash(&mut self.0);
        // Writing into a hasher cannot fail, and the typed structs always serialize.
        let _ = serde_json::to_writer(&mut *self, value);
        0xffu8.hash(&mut self.0);
    }
}

impl std::io::Write for ContentHasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::hash::Hasher::write(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The content hash of a typed object (see [`Stamp::content`]).
fn content_hash<T: Typed>(object: &T) -> u64 {
    let mut hasher = ContentHasher(Default::default());
    object.content(&mut hasher);
    std::hash::Hasher::finish(&hasher.0)
}

/// Access to the map holding objects of type `T`.
trait MapFor<T> {
    fn map_mut(&mut self) -> &mut BTreeMap<ObjectKey, Arc<Object<T>>>;
}

macro_rules! map_for {
    ($ty:ty, $field:ident) => {
        impl MapFor<$ty> for Resources {
            fn map_mut(&mut self) -> &mut BTreeMap<ObjectKey, Arc<Object<$ty>>> {
                &mut self.$field
            }
        }
    };
}

map_for!(GatewayClass, gateway_classes);
map_for!(Gateway, gateways);
map_for!(HttpRoute, http_routes);
map_for!(ReferenceGrant, reference_grants);
map_for!(Namespace, namespaces);
map_for!(Service, services);
map_for!(Secret, secrets);
map_for!(EndpointSlice, endpoint_slices);
map_for!(XBackendTrafficPolicy, backend_traffic_policies);

#[cfg(test)]
mod tests {
    use super::*;

    const MIXED: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata:
  name: gw
spec:
  gatewayClassName: cls
  listeners:
  - name: http
    port: 80
    protocol: HTTP
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: d
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns1
  labels: {a: b}
---
apiVersion: v1
kind: Service
metadata:
  name: svc
  namespace: ns1
spec:
  ports:
  - port: 8080
"#;

    #[test]
    fn dispatches_kinds_and_defaults_namespace() {
        let r = Resources::parse_yaml(MIXED, "mixed.yaml");
        let gw = &r.gateways[&ObjectKey::new("default", "gw")];
        assert_eq!(gw.api_version, "gateway.networking.k8s.io/v1beta1");
        assert_eq!(gw.object.spec.listeners.len(), 1);
        assert_eq!(gw.object.metadata.namespace.as_deref(), Some("default"));
        let echoed = r.document(Kind::Gateway, &ObjectKey::new("default", "gw"));
        let echoed = echoed.expect("echoed");
        assert_eq!(echoed["apiVersion"], "gateway.networking.k8s.io/v1beta1");
        assert_eq!(echoed["metadata"]["namespace"], "default");
        assert_eq!(echoed["spec"]["listeners"][0]["port"], 80);
        assert!(r.namespaces.contains_key(&ObjectKey::new("", "ns1")));
        assert!(r.services.contains_key(&ObjectKey::new("ns1", "svc")));
        assert!(r.diagnostics.is_empty(), "{:?}", r.diagnostics);
        // Kinds without a typed struct are kept as written.
        let d = r.other("apps", "Deployment", "default", "d").expect("kept");
        assert_eq!(d["metadata"]["name"], "d");
        assert!(d["metadata"].get("namespace").is_none());
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn invalid_document_is_a_diagnostic() {
        let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: x}\nspec: {listeners: 3}\n---\nkind: Service\n---\n- a\n";
        let r = Resources::parse_yaml(text, "bad.yaml");
        assert!(r.is_empty());
        let docs: Vec<_> = r.diagnostics.iter().map(|d| d.document).collect();
        assert_eq!(docs, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn merge_replaces_duplicates_with_a_diagnostic() {
        let mut a = Resources::parse_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n",
            "a",
        );
        let b = Resources::parse_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: n, labels: {x: y}}\n",
            "b",
        );
        a.merge(b);
        assert_eq!(a.len(), 1);
        assert_eq!(a.diagnostics.len(), 1);
        let ns = &a.namespaces[&ObjectKey::new("", "n")];
        assert_eq!(ns.origin, "b");
    }
}
