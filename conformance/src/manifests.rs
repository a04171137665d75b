//! Upstream manifests and the objects a cluster would add: GatewayClass, namespace labels,
//! `metadata.generation`, EndpointSlices for the Services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::error::{Error, Result};

/// Environment variable naming an upstream `conformance/` folder (with `base/manifests.yaml`
/// and `tests/`). When unset, [`DEFAULT_CONFORMANCE_DIR`] is used.
pub const CONFORMANCE_DIR_ENV: &str = "GATEWAY_API_CONFORMANCE_DIR";

/// The shared conformance material: `../shared/conformance` beside the repository checkout
/// (`cases.tsv`, `CATALOG.md`, and the upstream folders). Resolved from this crate's location at
/// build time, so it holds wherever the repository is cloned.
pub const SHARED_CONFORMANCE_DIR: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/conformance");

/// The upstream Gateway API `conformance/` folder inside [`SHARED_CONFORMANCE_DIR`].
pub const DEFAULT_CONFORMANCE_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/gateway-api"
);

/// The shared `cases.tsv` (the traffic assertions).
pub const DEFAULT_CASES_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/cases.tsv"
);

/// The `{GATEWAY_CLASS_NAME}` placeholder in upstream YAML.
pub const CLASS_PLACEHOLDER: &str = "{GATEWAY_CLASS_NAME}";

/// The `{GATEWAY_CONTROLLER_NAME}` placeholder in `spec.controllerName` of upstream GatewayClasses.
pub const CONTROLLER_PLACEHOLDER: &str = "{GATEWAY_CONTROLLER_NAME}";

/// The upstream `conformance/` folder: `$GATEWAY_API_CONFORMANCE_DIR` or the shared default.
pub fn conformance_dir() -> PathBuf {
    std::env::var_os(CONFORMANCE_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFORMANCE_DIR))
}

/// Parses multi-document YAML text into JSON values, replacing the class placeholder first.
/// Empty documents are dropped.
pub fn parse_docs(text: &str, class_name: &str, what: &str) -> Result<Vec<Value>> {
    let text = text.replace(CLASS_PLACEHOLDER, class_name);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| Error::Yaml {
        what: what.to_string(),
        message: e.to_string(),
    })?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// Reads and parses one manifest file.
pub fn load_docs(path: &Path, class_name: &str) -> Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_docs(&text, class_name, &path.display().to_string())
}

/// Serialises documents as multi-document YAML, with plain or quoted scalars only (no folded
/// or literal blocks, so any YAML reader sees exactly the same strings).
pub fn to_yaml(docs: &[Value]) -> Result<String> {
    let mut options = serde_saphyr::SerializerOptions::default();
    options.prefer_block_scalars = false;
    serde_saphyr::to_string_multiple_with_options(docs, options).map_err(|e| Error::Yaml {
        what: "serialising manifests".into(),
        message: e.to_string(),
    })
}

/// `kind` of a document ("" when absent).
pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

/// `metadata.name`.
pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// `metadata.namespace` ("" for cluster-scoped objects).
pub fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("")
}

/// What the API server adds: `metadata.generation: 1` when absent, and the
/// `kubernetes.io/metadata.name` label on Namespaces (set automatically since Kubernetes 1.22).
pub fn normalize(doc: &mut Value) {
    let is_namespace = kind(doc) == "Namespace";
    let ns_name = name(doc).to_string();
    let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    meta.entry("generation").or_insert(json!(1));
    if is_namespace {
        let labels = meta
            .entry("labels")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert("kubernetes.io/metadata.name".into(), json!(ns_name));
        }
    }
}

/// Like the upstream applier: a GatewayClass whose `spec.controllerName` is
/// `{GATEWAY_CONTROLLER_NAME}` gets the controller name under test.
pub fn fill_controller_name(doc: &mut Value, controller: &str) {
    if kind(doc) == "GatewayClass" && doc["spec"]["controllerName"] == CONTROLLER_PLACEHOLDER {
        doc["spec"]["controllerName"] = json!(controller);
    }
}

/// A GatewayClass served by `controller`.
pub fn gateway_class(class_name: &str, controller: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GatewayClass",
        "metadata": {"name": class_name, "generation": 1},
        "spec": {"controllerName": controller},
    })
}

/// A Deployment the harness runs as echo pods.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Namespace.
    pub namespace: String,
    /// Deployment name (pod names start with it).
    pub deployment: String,
    /// `spec.replicas` (default 1).
    pub replicas: u32,
    /// Pod template labels.
    pub labels: BTreeMap<String, String>,
    /// Container ports its Services target (plain HTTP + h2c is served on each, except the
    /// HTTPS port of a TLS pod).
    pub ports: Vec<u16>,
    /// The HTTPS listener echo-basic opens when `TLS_SERVER_CERT` and `TLS_SERVER_PRIVKEY` are
    /// set; `None` otherwise (its port is then not served at all, as upstream).
    pub tls: Option<TlsFiles>,
    /// Why it is not emulated, if so (the Service then gets an EndpointSlice with no endpoints).
    pub unsupported: Option<String>,
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A Service port as an EndpointSlice needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name ("" when unnamed).
    pub name: String,
    /// Container port (targetPort, or port when absent).
    pub target: u16,
    /// `appProtocol`, if any.
    pub app_protocol: Option<String>,
}

fn service_ports(svc: &Value) -> Vec<ServicePort> {
    svc["spec"]["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let target = p["targetPort"]
                        .as_u64()
                        .or_else(|| p["port"].as_u64())
                        .and_then(|n| u16::try_from(n).ok())?;
                    Some(ServicePort {
                        name: p["name"].as_str().unwrap_or("").to_string(),
                        target,
                        app_protocol: p["appProtocol"].as_str().map(str::to_string),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// echo-basic's HTTPS port when `HTTPS_PORT` is unset.
pub const DEFAULT_HTTPS_PORT: u16 = 8443;

fn env_names(deploy: &Value) -> Vec<String> {
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect()
}

/// A file a container reads from a mounted Secret or ConfigMap key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountedKey {
    /// `Secret` or `ConfigMap`.
    pub kind: &'static str,
    /// Namespace (the pod's).
    pub namespace: String,
    /// Object name.
    pub name: String,
    /// The key of `data` the file holds.
    pub key: String,
}

/// The files echo-basic's HTTPS listener reads (`TLS_SERVER_CERT`, `TLS_SERVER_PRIVKEY`, and
/// the optional `TLS_CLIENT_CACERTS`), resolved to the Secret/ConfigMap keys mounted there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// `HTTPS_PORT` (default 8443).
    pub port: u16,
    /// Serving certificate chain (PEM).
    pub cert: MountedKey,
    /// Its private key (PEM).
    pub key: MountedKey,
    /// CAs client certificates are verified against, when set (a certificate is then
    /// verified if given, not required: Go's `VerifyClientCertIfGiven`).
    pub client_ca: Option<MountedKey>,
}

/// The value of env var `name` of the first container that sets it literally.
fn env_value(deploy: &Value, name: &str) -> Option<String> {
    deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["env"].as_array().into_iter().flatten())
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// Resolves a file path inside a container to the Secret or ConfigMap key mounted there
/// (`volumeMounts` → `volumes[].secret|configMap`, honouring `items` key → path mappings).
fn mounted_key(deploy: &Value, path: &str) -> Option<MountedKey> {
    let pod = &deploy["spec"]["template"]["spec"];
    let (mount, file) = pod["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
        .find_map(|m| {
            let dir = m["mountPath"].as_str()?.trim_end_matches('/');
            let file = path.strip_prefix(dir)?.strip_prefix('/')?;
            Some((m["name"].as_str()?.to_string(), file.to_string()))
        })?;
    let volume = pod["volumes"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == mount.as_str())?;
    let (kind, source, name_field) = if volume["secret"].is_object() {
        ("Secret", &volume["secret"], "secretName")
    } else if volume["configMap"].is_object() {
        ("ConfigMap", &volume["configMap"], "name")
    } else {
        return None;
    };
    let key = match source["items"].as_array() {
        Some(items) => items
            .iter()
            .find(|i| i["path"] == file.as_str())?
            .get("key")?
            .as_str()?
            .to_string(),
        None => file,
    };
    Some(MountedKey {
        kind,
        namespace: namespace(deploy).to_string(),
        name: source[name_field].as_str()?.to_string(),
        key,
    })
}

/// The HTTPS listener of an echo-basic Deployment, if it has one. `Err` when the env vars are
/// set but do not lead to mounted Secret/ConfigMap keys.
fn tls_files(deploy: &Value) -> std::result::Result<Option<TlsFiles>, String> {
    let (Some(cert), Some(key)) = (
        env_value(deploy, "TLS_SERVER_CERT"),
        env_value(deploy, "TLS_SERVER_PRIVKEY"),
    ) else {
        return Ok(None);
    };
    let resolve = |p: &str| {
        mounted_key(deploy, p).ok_or_else(|| format!("{p} is not a mounted Secret/ConfigMap key"))
    };
    let port = match env_value(deploy, "HTTPS_PORT") {
        Some(p) => p.parse().map_err(|_| format!("invalid HTTPS_PORT {p:?}"))?,
        None => DEFAULT_HTTPS_PORT,
    };
    Ok(Some(TlsFiles {
        port,
        cert: resolve(&cert)?,
        key: resolve(&key)?,
        client_ca: env_value(deploy, "TLS_CLIENT_CACERTS")
            .map(|p| resolve(&p))
            .transpose()?,
    }))
}

/// The bytes of a mounted key, read from the Secrets (base64 `data`) and ConfigMaps (`data`)
/// in `docs`.
pub fn mounted_data(docs: &[Value], m: &MountedKey) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let doc = find(docs, m.kind, &m.namespace, &m.name)?;
    let value = doc["data"][m.key.as_str()].as_str()?;
    if m.kind == "Secret" {
        base64::engine::general_purpose::STANDARD.decode(value).ok()
    } else {
        Some(value.as_bytes().to_vec())
    }
}

/// Every Deployment in `docs`, with the ports its Services target.
pub fn workloads(docs: &[Value]) -> Vec<Workload> {
    let services: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Service").collect();
    docs.iter()
        .filter(|d| kind(d) == "Deployment")
        .map(|d| {
            let ns = namespace(d).to_string();
            let labels = string_map(&d["spec"]["template"]["metadata"]["labels"]);
            let (tls, tls_error) = match tls_files(d) {
                Ok(t) => (t, None),
                Err(e) => (None, Some(e)),
            };
            // Without TLS settings echo-basic does not open its HTTPS port.
            let https_port = env_value(d, "HTTPS_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(DEFAULT_HTTPS_PORT);
            let mut ports: Vec<u16> = services
                .iter()
                .filter(|s| {
                    namespace(s) == ns && selects(&string_map(&s["spec"]["selector"]), &labels)
                })
                .flat_map(|s| service_ports(s).into_iter().map(|p| p.target))
                .filter(|p| *p != https_port || tls.is_some())
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let envs = env_names(d);
            let image_ok = d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| {
                    c["image"]
                        .as_str()
                        .is_some_and(|i| i.contains("echo-basic"))
                });
            let unsupported = if !image_ok {
                Some("not an echo-basic image".to_string())
            } else if envs.iter().any(|e| e == "GRPC_ECHO_SERVER") {
                Some("gRPC echo not emulated".to_string())
            } else if envs.iter().any(|e| e == "TCP_ECHO_SERVER") {
                Some("TCP echo not emulated".to_string())
            } else {
                tls_error.map(|e| format!("HTTPS listener: {e}"))
            };
            Workload {
                namespace: ns,
                deployment: name(d).to_string(),
                replicas: d["spec"]["replicas"]
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .unwrap_or(1),
                labels,
                ports,
                tls,
                unsupported,
            }
        })
        .collect()
}

/// A running pod as an EndpointSlice endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodEndpoint {
    /// Pod name.
    pub pod: String,
    /// Pod IP.
    pub ip: String,
}

/// One EndpointSlice per Service, pointing at the pods of the Deployment its selector matches.
/// `pods(namespace, deployment)` returns the running pods of a Deployment.
pub fn endpoint_slices(
    docs: &[Value],
    pods: &dyn Fn(&str, &str) -> Vec<PodEndpoint>,
) -> Vec<Value> {
    let deployments: Vec<&Value> = docs.iter().filter(|d| kind(d) == "Deployment").collect();
    docs.iter()
        .filter(|d| kind(d) == "Service")
        .map(|svc| {
            let ns = namespace(svc);
            let svc_name = name(svc);
            let selector = string_map(&svc["spec"]["selector"]);
            let endpoints: Vec<Value> = deployments
                .iter()
                .filter(|d| {
                    namespace(d) == ns
                        && selects(
                            &selector,
                            &string_map(&d["spec"]["template"]["metadata"]["labels"]),
                        )
                })
                .flat_map(|d| pods(ns, name(d)))
                .map(|p| {
                    json!({
                        "addresses": [p.ip],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": p.pod, "namespace": ns},
                    })
                })
                .collect();
            let ports: Vec<Value> = service_ports(svc)
                .into_iter()
                .map(|p| {
                    let mut port = json!({"name": p.name, "port": p.target, "protocol": "TCP"});
                    if let Some(ap) = p.app_protocol {
                        port["appProtocol"] = json!(ap);
                    }
                    port
                })
                .collect();
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{svc_name}-conformance"),
                    "namespace": ns,
                    "generation": 1,
                    "labels": {"kubernetes.io/service-name": svc_name},
                },
                "addressType": "IPv4",
                "ports": ports,
                "endpoints": endpoints,
            })
        })
        .collect()
}

/// Listener ports declared by the Gateways in `docs`.
pub fn listener_ports(docs: &[Value]) -> Vec<u16> {
    let mut ports: Vec<u16> = docs
        .iter()
        .filter(|d| kind(d) == "Gateway")
        .flat_map(|g| g["spec"]["listeners"].as_array().into_iter().flatten())
        .filter_map(|l| l["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Finds a document by kind, namespace and name.
pub fn find<'a>(docs: &'a [Value], k: &str, ns: &str, n: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| kind(d) == k && namespace(d) == ns && name(d) == n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: ns1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: ns1
spec:
  selector:
    app: web
  ports:
  - name: http
    port: 8080
    targetPort: 3000
  - name: h2c
    appProtocol: kubernetes.io/h2c
    port: 8081
    targetPort: 3001
  - port: 443
    targetPort: 8443
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: ns1
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: registry.k8s.io/gateway-api/conformance/echo-basic:v0.1.0
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: gw
  namespace: ns1
spec:
  gatewayClassName: "{GATEWAY_CLASS_NAME}"
  listeners:
  - name: http
    port: 80
    protocol: HTTP
  - name: other
    port: 1111
    protocol: HTTP
---
"#;

    #[test]
    fn builds_cluster_objects() {
        let mut docs = parse_docs(YAML, "my-class", "test").expect("parse");
        assert_eq!(docs.len(), 4);
        assert_eq!(docs[3]["spec"]["gatewayClassName"], "my-class");
        for d in &mut docs {
            normalize(d);
        }
        assert_eq!(
            docs[0]["metadata"]["labels"]["kubernetes.io/metadata.name"],
            "ns1"
        );
        assert_eq!(docs[3]["metadata"]["generation"], 1);

        let w = workloads(&docs);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].replicas, 2);
        assert_eq!(w[0].ports, vec![3000, 3001]);
        assert!(w[0].unsupported.is_none());

        let slices = endpoint_slices(&docs, &|ns, dep| {
            assert_eq!((ns, dep), ("ns1", "web"));
            vec![PodEndpoint {
                pod: "web-a-0".into(),
                ip: "127.1.1.1".into(),
            }]
        });
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(s["ports"][0]["name"], "http");
        assert_eq!(s["ports"][0]["port"], 3000);
        assert_eq!(s["ports"][1]["appProtocol"], "kubernetes.io/h2c");
        assert_eq!(s["endpoints"][0]["addresses"][0], "127.1.1.1");
        assert_eq!(s["endpoints"][0]["targetRef"]["name"], "web-a-0");

        assert_eq!(listener_ports(&docs), vec![80, 1111]);
        let yaml = to_yaml(&docs).expect("yaml");
        let back = parse_docs(&yaml, "x", "roundtrip").expect("reparse");
        assert_eq!(back, docs);
    }

    #[test]
    fn controller_placeholder_is_filled_in_gateway_classes_only() {
        let mut docs = parse_docs(
            "kind: GatewayClass\nmetadata:\n  name: c\nspec:\n  controllerName: \"{GATEWAY_CONTROLLER_NAME}\"\n\
             ---\nkind: GatewayClass\nmetadata:\n  name: other\nspec:\n  controllerName: example.com/other\n\
             ---\nkind: ConfigMap\nmetadata:\n  name: m\nspec:\n  controllerName: \"{GATEWAY_CONTROLLER_NAME}\"\n",
            "class",
            "test",
        )
        .expect("parse");
        for d in &mut docs {
            fill_controller_name(d, "ours/ctl");
        }
        assert_eq!(docs[0]["spec"]["controllerName"], "ours/ctl");
        assert_eq!(docs[1]["spec"]["controllerName"], "example.com/other");
        assert_eq!(docs[2]["spec"]["controllerName"], CONTROLLER_PLACEHOLDER);
    }

    #[test]
    fn tls_workloads_resolve_their_mounted_keys() {
        let docs = parse_docs(
            r#"
kind: Service
metadata: {name: tls, namespace: ns}
spec:
  selector: {app: tls}
  ports: [{port: 443, targetPort: 8443}, {port: 80, targetPort: 3000}]
---
kind: Deployment
metadata: {name: tls, namespace: ns}
spec:
  template:
    metadata: {labels: {app: tls}}
    spec:
      containers:
      - name: c
        image: echo-basic:v1
        volumeMounts:
        - {name: secret-volume, mountPath: /etc/secret-volume}
        - {name: ca, mountPath: /etc/ca/}
        env:
        - {name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}
        - {name: TLS_SERVER_PRIVKEY, value: /etc/secret-volume/key}
        - {name: TLS_CLIENT_CACERTS, value: /etc/ca/ca.crt}
      volumes:
      - name: secret-volume
        secret:
          secretName: server
          items: [{key: tls.crt, path: crt}, {key: tls.key, path: key}]
      - name: ca
        configMap: {name: roots}
---
kind: Service
metadata: {name: plain, namespace: ns}
spec:
  selector: {app: plain}
  ports: [{port: 443, targetPort: 8443}]
---
kind: Deployment
metadata: {name: plain, namespace: ns}
spec:
  template:
    metadata: {labels: {app: plain}}
    spec:
      containers: [{name: c, image: echo-basic:v1}]
---
kind: Secret
metadata: {name: server, namespace: ns}
data: {tls.crt: Q0VSVA==, tls.key: S0VZ}
---
kind: ConfigMap
metadata: {name: roots, namespace: ns}
data: {ca.crt: ROOTS}
"#,
            "c",
            "test",
        )
        .expect("parse");
        let w = workloads(&docs);
        let tls = w[0].tls.as_ref().expect("tls workload");
        assert_eq!(w[0].ports, vec![3000, 8443]);
        assert_eq!(tls.port, DEFAULT_HTTPS_PORT);
        assert_eq!(tls.cert.kind, "Secret");
        assert_eq!(tls.cert.key, "tls.crt");
        assert_eq!(tls.key.key, "tls.key");
        assert_eq!(
            mounted_data(&docs, &tls.cert).as_deref(),
            Some(&b"CERT"[..])
        );
        assert_eq!(mounted_data(&docs, &tls.key).as_deref(), Some(&b"KEY"[..]));
        let ca = tls.client_ca.as_ref().expect("client CA");
        assert_eq!(
            (ca.kind, ca.name.as_str(), ca.key.as_str()),
            ("ConfigMap", "roots", "ca.crt")
        );
        assert_eq!(mounted_data(&docs, ca).as_deref(), Some(&b"ROOTS"[..]));
        // Without TLS settings the HTTPS port is not served.
        assert!(w[1].tls.is_none());
        assert!(w[1].ports.is_empty());
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(parse_docs("a: [unclosed", "c", "bad").is_err());
    }
}
