//! InferencePool backendRefs (Gateway API Inference Extension).
//!
//! A backendRef `{group: inference.networking.k8s.io, kind: InferencePool, name}` (or the
//! v1alpha2 group `inference.networking.x-k8s.io`, whose pools are converted to v1) is served
//! only when the translator's filter registry has the kind ([`POOL_GROUP`], [`POOL_KIND`]): the
//! data plane of the `gateway-inference` crate registers it, with the endpoint picker named
//! [`gateway_inference::settings::LOAD_BALANCER`]. Without it the reference stays unsupported
//! (`ResolvedRefs=False`, `InvalidKind`), as every unknown backend kind.
//!
//! The contract with the data plane: the reference becomes a backend named
//! `<namespace>/<pool>` (the backendRef's port is ignored, its weight kept) whose endpoints are
//! every target port of every Pod of the pool's namespace that matches the selector, is Ready
//! (condition `Ready` True), has an IP and is not being deleted (sorted by address); protocol
//! HTTP/1.1, or h2c for `appProtocol: kubernetes.io/h2c`; load balancer
//! `Custom("inference.networking.k8s.io/InferencePool")`, the rest of the backend policy at its
//! defaults (XBackendTrafficPolicies target Services only). Its filters end with an
//! `ExtensionRef {group: inference.networking.k8s.io, kind: InferencePool, name: <pool>}` whose
//! `config` is a [`InferencePoolSettings`] (endpoints again with their Pods and engines, the
//! endpoint picker resolved to addresses, the pool's InferenceObjectives and
//! InferenceModelRewrites). The filter is not built while translating (the settings come from
//! this module, not from the user); its factory runs when the configuration is applied.
//!
//! A pool that does not exist, or that fails `validate()`, leaves the backend unresolved
//! (`ResolvedRefs=False`, `BackendNotFound`: the reason the specification gives for a backend
//! that cannot be used, and the one an invalid XBackend gets here too). An endpoint picker that
//! does not resolve does not: the pool is served (the data plane applies the failure mode) and
//! the pool's own status says `ResolvedRefs=False` (`InvalidExtensionRef`).

use std::cell::{OnceCell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use gateway_core::config::{Backend, BackendPolicy, BackendProtocol, ExtensionRef, LoadBalancer};
use gateway_inference::crd::llmd::{InferenceModelRewriteSpec, InferenceObjectiveSpec};
use gateway_inference::crd::v1::{AppProtocol, EndpointPickerRef, InferencePoolSpec};
use gateway_inference::crd::{GROUP, GROUP_LLM_D, GROUP_X_K8S, KIND_INFERENCE_POOL, x_k8s};
use gateway_inference::metrics::Engine;
use gateway_inference::settings::{
    EndpointPickerSettings, InferencePoolSettings, LOAD_BALANCER, ObjectiveSettings, PoolEndpoint,
    PoolName, RewriteSettings,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Deserialize;
use serde_json::Value;

use super::backend::{self, BackendPolicies, BackendRefSpec};
use super::listener::Problem;
use super::refs::{self, RefFrom};
use crate::resources::{GATEWAY_GROUP, GenericKey, ObjectKey, Resources};

/// The API group of the filter kind (and of the v1 pools) the data plane registers.
pub(crate) const POOL_GROUP: &str = GROUP;
/// The kind of that filter, and of the pools.
pub(crate) const POOL_KIND: &str = KIND_INFERENCE_POOL;

/// The key of the pool a backend reference names, when it names one (in either group).
pub(crate) fn pool_key(spec: &BackendRefSpec<'_>, route_namespace: &str) -> Option<GenericKey> {
    let group = spec.group.unwrap_or("");
    (spec.kind == Some(POOL_KIND) && (group == GROUP || group == GROUP_X_K8S))
        .then(|| GenericKey::new(group, POOL_KIND, spec.namespace(route_namespace), spec.name))
}

/// A pool as served: the backend and the filter carrying its settings.
#[derive(Clone, Debug)]
pub(crate) struct ServedPool {
    pub backend: Backend,
    pub filter: ExtensionRef,
    /// Why the endpoint picker reference does not resolve (the pool's `ResolvedRefs=False`).
    pub picker_unresolved: Option<String>,
}

/// One usable Pod: Ready, with an IP, not terminating.
#[derive(Debug)]
struct PodInfo {
    name: String,
    labels: BTreeMap<String, String>,
    ip: IpAddr,
}

/// What is read of an untyped Pod.
#[derive(Default, Deserialize)]
#[serde(default)]
struct PodDoc {
    metadata: PodMeta,
    status: PodStatus,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodMeta {
    labels: BTreeMap<String, String>,
    deletion_timestamp: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct PodStatus {
    #[serde(rename = "podIP")]
    pod_ip: Option<String>,
    conditions: Vec<PodCondition>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PodCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

/// The InferencePool-related objects of one translation, read when first needed: Pods by
/// namespace (once, and only when some pool is resolved) and each pool's outcome (once per
/// pool, however many routes refer to it).
pub(crate) struct InferenceIndex<'a> {
    resources: &'a Resources,
    pods: OnceCell<HashMap<String, Vec<PodInfo>>>,
    pools: RefCell<HashMap<GenericKey, Rc<Result<ServedPool, Problem>>>>,
}

impl std::fmt::Debug for InferenceIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceIndex")
            .field("pools", &self.pools.borrow().len())
            .finish()
    }
}

impl<'a> InferenceIndex<'a> {
    /// An index over `resources`; reads nothing yet.
    pub fn new(resources: &'a Resources) -> Self {
        InferenceIndex {
            resources,
            pods: OnceCell::new(),
            pools: RefCell::new(HashMap::new()),
        }
    }

    /// Resolves a backend reference naming pool `key` from an HTTPRoute in `route_namespace`:
    /// `RefNotPermitted` across namespaces without a ReferenceGrant, else the pool's outcome.
    pub fn resolve(&self, route_namespace: &str, key: &GenericKey) -> Result<ServedPool, Problem> {
        let from = RefFrom {
            group: GATEWAY_GROUP,
            kind: "HTTPRoute",
            namespace: route_namespace,
        };
        if !refs::permitted(
            self.resources,
            from,
            &key.group,
            POOL_KIND,
            &key.namespace,
            &key.name,
        ) {
            return Err((
                "RefNotPermitted",
                format!(
                    "no ReferenceGrant in namespace {} allows HTTPRoutes from {route_namespace} to use InferencePool {}",
                    key.namespace, key.name
                ),
            ));
        }
        (*self.pool(key)).clone()
    }

    /// The outcome of pool `key` (computed once per translation).
    pub fn pool(&self, key: &GenericKey) -> Rc<Result<ServedPool, Problem>> {
        if let Some(found) = self.pools.borrow().get(key) {
            return found.clone();
        }
        let outcome = Rc::new(self.serve(key));
        self.pools.borrow_mut().insert(key.clone(), outcome.clone());
        outcome
    }

    fn serve(&self, key: &GenericKey) -> Result<ServedPool, Problem> {
        let what = format!(
            "InferencePool {}/{} ({})",
            key.namespace, key.name, key.group
        );
        let object = self
            .resources
            .others
            .get(key)
            .ok_or_else(|| ("BackendNotFound", format!("{what} does not exist")))?;
        let spec = read_pool_spec(&key.group, &object.object)
            .map_err(|message| ("BackendNotFound", format!("{what} is invalid: {message}")))?;
        let namespace = key.namespace.as_str();

        let mut endpoints: BTreeMap<SocketAddr, (String, Engine)> = BTreeMap::new();
        for pod in self.pods().get(namespace).into_iter().flatten() {
            if !spec.selector.matches(&pod.labels) {
                continue;
            }
            let engine = Engine::from_pod_labels(&pod.labels);
            for port in spec.port_numbers() {
                endpoints
                    .entry(SocketAddr::new(pod.ip, port))
                    .or_insert_with(|| (format!("{namespace}/{}", pod.name), engine));
            }
        }
        let picker = spec
            .endpoint_picker_ref
            .as_ref()
            .map(|epp| endpoint_picker(self.resources, namespace, epp));
        let settings = InferencePoolSettings {
            pool: PoolName {
                namespace: namespace.to_string(),
                name: key.name.clone(),
            },
            target_ports: spec.port_numbers().collect(),
            app_protocol: spec.app_protocol(),
            endpoints: endpoints
                .iter()
                .map(|(address, (pod, engine))| PoolEndpoint {
                    address: *address,
                    pod: pod.clone(),
                    engine: *engine,
                })
                .collect(),
            endpoint_picker: picker.clone(),
            objectives: objectives(self.resources, namespace, &key.name),
            rewrites: rewrites(self.resources, namespace, &key.name),
        };
        let config = serde_json::to_value(&settings)
            .map_err(|e| ("BackendNotFound", format!("{what}: settings: {e}")))?;
        let protocol = match spec.app_protocol() {
            AppProtocol::Http => BackendProtocol::Http1,
            AppProtocol::H2c => BackendProtocol::H2c,
        };
        Ok(ServedPool {
            backend: Backend {
                endpoints: endpoints.into_keys().collect(),
                protocol,
                policy: BackendPolicy {
                    load_balancer: LoadBalancer::Custom(LOAD_BALANCER.to_string()),
                    ..BackendPolicy::default()
                },
                tls: None,
            },
            filter: ExtensionRef {
                group: POOL_GROUP.to_string(),
                kind: POOL_KIND.to_string(),
                name: key.name.clone(),
                config: Some(config),
                origins: Default::default(),
                secrets: Default::default(),
            },
            picker_unresolved: picker.and_then(|p| p.unresolved),
        })
    }

    /// Usable Pods by namespace, read on first use.
    fn pods(&self) -> &HashMap<String, Vec<PodInfo>> {
        self.pods.get_or_init(|| index_pods(self.resources))
    }
}

/// Reads the `spec` of a pool of `group` (a v1alpha2 one converted) and validates it.
fn read_pool_spec(group: &str, object: &Value) -> Result<InferencePoolSpec, String> {
    let spec = object.get("spec").cloned().unwrap_or(Value::Null);
    let spec = if group == GROUP_X_K8S {
        serde_json::from_value::<x_k8s::InferencePoolSpec>(spec)
            .map_err(|e| e.to_string())?
            .to_v1()
    } else {
        serde_json::from_value::<InferencePoolSpec>(spec).map_err(|e| e.to_string())?
    };
    spec.validate().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// The usable Pods (Ready, with an IP, not terminating) of `resources` by namespace. Pods that
/// do not parse are skipped.
fn index_pods(resources: &Resources) -> HashMap<String, Vec<PodInfo>> {
    let mut pods: HashMap<String, Vec<PodInfo>> = HashMap::new();
    for (key, object) in &resources.others {
        if !key.group.is_empty() || key.kind != "Pod" {
            continue;
        }
        let doc = match PodDoc::deserialize(&object.object) {
            Ok(doc) => doc,
            Err(e) => {
                tracing::debug!(pod = %key, error = %e, "unreadable Pod skipped");
                continue;
            }
        };
        let ready = doc
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let ip = doc
            .status
            .pod_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let (true, Some(ip), None) = (ready, ip, &doc.metadata.deletion_timestamp) else {
            continue;
        };
        pods.entry(key.namespace.clone())
            .or_default()
            .push(PodInfo {
                name: key.name.clone(),
                labels: doc.metadata.labels,
                ip,
            });
    }
    pods
}

/// Resolves an `endpointPickerRef` of a pool in `namespace`: a core Service of that namespace
/// (not of type ExternalName) at the Service port `port.number`, to its ready endpoints, as a
/// Service backendRef would be.
fn endpoint_picker(
    resources: &Resources,
    namespace: &str,
    epp: &EndpointPickerRef,
) -> EndpointPickerSettings {
    let resolved = resolve_picker(resources, namespace, epp);
    let (addresses, unresolved) = match resolved {
        Ok(addresses) => (addresses, None),
        Err(why) => (Vec::new(), Some(why)),
    };
    EndpointPickerSettings {
        failure_mode: epp.failure_mode,
        addresses,
        unresolved,
    }
}

fn resolve_picker(
    resources: &Resources,
    namespace: &str,
    epp: &EndpointPickerRef,
) -> Result<Vec<SocketAddr>, String> {
    if !epp.is_service() {
        let group = if epp.group.is_empty() {
            "core"
        } else {
            &epp.group
        };
        return Err(format!(
            "endpointPickerRef {group}/{} {}: only a core Service can be an endpoint picker",
            epp.kind, epp.name
        ));
    }
    let key = ObjectKey::new(namespace, epp.name.as_str());
    let service = resources
        .services
        .get(&key)
        .ok_or_else(|| format!("endpoint picker Service {key} does not exist"))?;
    if service
        .object
        .spec
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        == Some("ExternalName")
    {
        return Err(format!(
            "endpoint picker Service {key} is of type ExternalName, which is not supported"
        ));
    }
    let spec = BackendRefSpec {
        group: None,
        kind: None,
        name: &epp.name,
        namespace: None,
        port: epp.port.map(|p| p.number),
    };
    let (found, _) = backend::resolve_service(resources, &BackendPolicies::new(), namespace, spec)
        .map_err(|(_, message)| format!("endpoint picker: {message}"))?;
    if found.endpoints.is_empty() {
        return Err(format!(
            "endpoint picker Service {key} has no ready endpoint at port {}",
            epp.port.map(|p| p.number).unwrap_or_default()
        ));
    }
    Ok(found.endpoints)
}

/// Whether `key` is of `kind` in one of the groups where the llm-d objects live.
fn llmd_kind(key: &GenericKey, kind: &str, namespace: &str) -> bool {
    key.kind == kind
        && key.namespace == namespace
        && (key.group == GROUP_LLM_D || key.group == GROUP_X_K8S)
}

/// The valid InferenceObjectives of `namespace` whose `poolRef` names `pool`, by name; of two
/// with one name (one per group), the `llm-d.ai` one.
fn objectives(resources: &Resources, namespace: &str, pool: &str) -> Vec<ObjectiveSettings> {
    let mut found: BTreeMap<&str, (bool, i32)> = BTreeMap::new();
    for (key, object) in &resources.others {
        if !llmd_kind(key, "InferenceObjective", namespace) {
            continue;
        }
        let Some(spec) = object
            .object
            .get("spec")
            .and_then(|s| InferenceObjectiveSpec::deserialize(s).ok())
            .filter(|s| s.validate().is_ok() && s.pool_ref.refers_to(pool))
        else {
            continue;
        };
        let llmd = key.group == GROUP_LLM_D;
        let slot = found
            .entry(key.name.as_str())
            .or_insert((llmd, spec.priority()));
        if llmd && !slot.0 {
            *slot = (llmd, spec.priority());
        }
    }
    found
        .into_iter()
        .map(|(name, (_, priority))| ObjectiveSettings {
            name: name.to_string(),
            priority,
        })
        .collect()
}

/// The valid InferenceModelRewrites of `namespace` whose `poolRef` names `pool`, by name; of
/// two with one name, the `llm-d.ai` one.
fn rewrites(resources: &Resources, namespace: &str, pool: &str) -> Vec<RewriteSettings> {
    let mut found: BTreeMap<&str, (bool, RewriteSettings)> = BTreeMap::new();
    for (key, object) in &resources.others {
        if !llmd_kind(key, "InferenceModelRewrite", namespace) {
            continue;
        }
        // Both groups share the shape (`x_k8s::InferenceModelRewriteSpec` converts into this).
        let Some(spec) = object
            .object
            .get("spec")
            .and_then(|s| InferenceModelRewriteSpec::deserialize(s).ok())
            .filter(|s| s.validate().is_ok() && s.pool_ref.refers_to(pool))
        else {
            continue;
        };
        let created = object
            .object
            .pointer("/metadata/creationTimestamp")
            .and_then(|t| Time::deserialize(t).ok());
        let llmd = key.group == GROUP_LLM_D;
        let entry = RewriteSettings {
            name: key.name.clone(),
            created,
            spec,
        };
        match found.get_mut(key.name.as_str()) {
            Some(slot) if llmd && !slot.0 => *slot = (llmd, entry),
            Some(_) => {}
            None => {
                found.insert(key.name.as_str(), (llmd, entry));
            }
        }
    }
    found.into_values().map(|(_, entry)| entry).collect()
}
