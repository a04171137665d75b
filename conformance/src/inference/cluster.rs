//! What a cluster gives the Inference Extension suite, emulated once per run and shared by every
//! test: the model-server Deployments of `resources/base.yaml` as echo pods (with the Pod
//! objects the gateway's InferencePools select), and each endpoint picker Deployment as an
//! in-process conformance picker ([`RoundRobinPolicy`], upstream's lwepp) with an EndpointSlice
//! for its Service.
//!
//! Addresses: pod `i` of the `n`-th model-server Deployment is `127.30.n.(i+1)`, listening on
//! every `containerPort` of its containers; the `k`-th picker listens on `127.31.0.k` at its
//! `--grpc-port` (9002), so the EndpointSlices carry the same ports a cluster's would.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use gateway_inference::extproc::server::{PickerServer, RoundRobinPolicy};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::echo::{EchoPod, PodIdentity};
use crate::error::{Error, Result};
use crate::manifests::{PodEndpoint, endpoint_slices, kind, name, namespace};

/// The image of the upstream conformance endpoint picker.
const PICKER_IMAGE: &str = "lwepp";
/// The image of the model-server stand-in.
const ECHO_IMAGE: &str = "echo-basic";

/// One emulated model-server pod.
#[derive(Debug)]
pub struct ModelPod {
    /// The running echo server (name, namespace, IP, ports).
    pub echo: EchoPod,
    /// The Deployment template's labels.
    pub labels: BTreeMap<String, String>,
    /// The Deployment's container specs (copied into the Pod object).
    containers: Value,
}

impl ModelPod {
    /// Pod name.
    pub fn name(&self) -> &str {
        &self.echo.identity().pod
    }

    /// Pod IP.
    pub fn ip(&self) -> IpAddr {
        self.echo.ip()
    }
}

/// One emulated endpoint picker.
#[derive(Debug)]
struct Picker {
    namespace: String,
    deployment: String,
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

/// The shared emulated cluster. Dropping it stops the pickers; the echo pods stop with their
/// [`EchoPod`]s.
#[derive(Debug, Default)]
pub struct Cluster {
    /// Model-server pods by `(namespace, deployment)`, in replica order.
    pods: BTreeMap<(String, String), Vec<ModelPod>>,
    pickers: Vec<Picker>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &self.pickers {
            p.task.abort();
        }
    }
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

fn containers(d: &Value) -> &[Value] {
    d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn uses_image(d: &Value, image: &str) -> bool {
    containers(d)
        .iter()
        .any(|c| c["image"].as_str().is_some_and(|i| i.contains(image)))
}

/// The value following `flag` in a container's `args`.
fn arg<'a>(d: &'a Value, flag: &str) -> Option<&'a str> {
    containers(d).iter().find_map(|c| {
        let args = c["args"].as_array()?;
        let i = args.iter().position(|a| a == flag)?;
        args.get(i + 1)?.as_str()
    })
}

/// Whether `selector` (matchLabels) selects `labels`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// An InferencePool's `spec.selector.matchLabels`.
pub fn pool_selector(pool: &Value) -> BTreeMap<String, String> {
    string_map(&pool["spec"]["selector"]["matchLabels"])
}

/// An InferencePool's `spec.targetPorts[].number`.
pub fn pool_target_ports(pool: &Value) -> Vec<u16> {
    pool["spec"]["targetPorts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["number"].as_u64().and_then(|n| u16::try_from(n).ok()))
        .collect()
}

impl Cluster {
    /// Starts the echo pods and pickers of `base` (the suite's base manifests) on
    /// `127.30.n.x` and `127.31.0.k`.
    pub async fn start(base: &[Value]) -> Result<Self> {
        Self::start_in(base, 30, 31).await
    }

    /// [`Cluster::start`] with pods on `127.<pods>.n.x` and pickers on `127.<pickers>.0.k`.
    pub async fn start_in(base: &[Value], pods_net: u8, pickers_net: u8) -> Result<Self> {
        let mut cluster = Cluster::default();
        let mut subnet = 0u8;
        for d in base.iter().filter(|d| kind(d) == "Deployment") {
            if !uses_image(d, ECHO_IMAGE) {
                continue;
            }
            subnet = subnet
                .checked_add(1)
                .ok_or_else(|| Error::Manifest("more than 255 Deployments".into()))?;
            let labels = string_map(&d["spec"]["template"]["metadata"]["labels"]);
            let mut ports: Vec<u16> = containers(d)
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .filter_map(|p| {
                    p["containerPort"]
                        .as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                })
                .collect();
            ports.sort_unstable();
            ports.dedup();
            let replicas = d["spec"]["replicas"].as_u64().unwrap_or(1).min(250);
            let hash = format!("{:x}", 0x7b00u32 + u32::from(subnet));
            let mut pods = Vec::new();
            for i in 0..replicas {
                let last = u8::try_from(i + 1).unwrap_or(250);
                let ip = IpAddr::V4(Ipv4Addr::new(127, pods_net, subnet, last));
                let identity = PodIdentity {
                    pod: format!("{}-{hash}-{i}", name(d)),
                    namespace: namespace(d).to_string(),
                    ..PodIdentity::default()
                };
                pods.push(ModelPod {
                    echo: EchoPod::start(ip, &ports, identity).await?,
                    labels: labels.clone(),
                    containers: d["spec"]["template"]["spec"]["containers"].clone(),
                });
            }
            tracing::info!(
                deployment = name(d),
                replicas,
                ?ports,
                "started model-server pods"
            );
            cluster
                .pods
                .insert((namespace(d).to_string(), name(d).to_string()), pods);
        }
        let mut k = 0u8;
        for d in base.iter().filter(|d| kind(d) == "Deployment") {
            if !uses_image(d, PICKER_IMAGE) {
                continue;
            }
            let pool_name = arg(d, "--pool-name").ok_or_else(|| {
                Error::Manifest(format!("picker Deployment {} without --pool-name", name(d)))
            })?;
            let pool_ns = arg(d, "--pool-namespace").unwrap_or(namespace(d));
            let port: u16 = arg(d, "--grpc-port")
                .unwrap_or("9002")
                .parse()
                .map_err(|e| Error::Manifest(format!("{}: --grpc-port: {e}", name(d))))?;
            let pool = base
                .iter()
                .find(|p| {
                    kind(p) == "InferencePool" && namespace(p) == pool_ns && name(p) == pool_name
                })
                .ok_or_else(|| {
                    Error::Manifest(format!("picker {}: no pool {pool_ns}/{pool_name}", name(d)))
                })?;
            let endpoints: Vec<SocketAddr> = cluster
                .pool_pods(pool)
                .iter()
                .flat_map(|p| {
                    pool_target_ports(pool)
                        .into_iter()
                        .map(move |port| SocketAddr::new(p.ip(), port))
                })
                .collect();
            k = k
                .checked_add(1)
                .ok_or_else(|| Error::Manifest("more than 255 pickers".into()))?;
            let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, pickers_net, 0, k)), port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Manifest(format!("picker {}: bind {addr}: {e}", name(d))))?;
            let policy = Arc::new(RoundRobinPolicy::new(endpoints.clone()));
            let task = tokio::spawn(PickerServer::new(policy).serve(listener));
            tracing::info!(deployment = name(d), %addr, ?endpoints, "started endpoint picker");
            cluster.pickers.push(Picker {
                namespace: namespace(d).to_string(),
                deployment: name(d).to_string(),
                addr,
                task,
            });
        }
        Ok(cluster)
    }

    /// The pods of `pool` (in `docs`' namespace of the pool), selected by its matchLabels.
    pub fn pool_pods(&self, pool: &Value) -> Vec<&ModelPod> {
        let selector = pool_selector(pool);
        self.pods
            .iter()
            .filter(|((ns, _), _)| ns == namespace(pool))
            .flat_map(|(_, pods)| pods)
            .filter(|p| selects(&selector, &p.labels))
            .collect()
    }

    /// The pods whose labels include `app=<app>` in `ns` (upstream `GetPodsWithLabel`).
    pub fn pods_with_app(&self, ns: &str, app: &str) -> Vec<&ModelPod> {
        self.pods
            .iter()
            .filter(|((n, _), _)| n == ns)
            .flat_map(|(_, pods)| pods)
            .filter(|p| p.labels.get("app").map(String::as_str) == Some(app))
            .collect()
    }

    /// The Pod objects of every model-server pod: Running, Ready, `podIP` = its loopback
    /// address, labels from the Deployment template.
    pub fn pod_documents(&self) -> Vec<Value> {
        self.pods
            .values()
            .flatten()
            .map(|p| {
                let ip = p.ip().to_string();
                json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": p.name(),
                        "namespace": p.echo.identity().namespace,
                        "generation": 1,
                        "labels": p.labels,
                    },
                    "spec": {"containers": p.containers},
                    "status": {
                        "phase": "Running",
                        "podIP": ip,
                        "podIPs": [{"ip": ip}],
                        "conditions": [
                            {"type": "Ready", "status": "True"},
                            {"type": "ContainersReady", "status": "True"},
                        ],
                    },
                })
            })
            .collect()
    }

    /// The EndpointSlices of the Services in `docs`: a picker Service's slice points at its
    /// picker (when the Service still selects the picker Deployment's template).
    pub fn endpoint_slices(&self, docs: &[Value]) -> Vec<Value> {
        endpoint_slices(docs, &|ns, dep| {
            self.pickers
                .iter()
                .filter(|p| p.namespace == ns && p.deployment == dep)
                .map(|p| PodEndpoint {
                    pod: format!("{}-epp-0", p.deployment),
                    ip: p.addr.ip().to_string(),
                })
                .collect()
        })
    }

    /// Whether every picker task still runs.
    pub fn pickers_running(&self) -> bool {
        self.pickers.iter().all(|p| !p.task.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::parse_docs;

    const BASE: &str = r#"
kind: Deployment
metadata: {name: model-deployment, namespace: app}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: model}}
    spec:
      containers:
      - {name: a, image: echo-basic:v1, ports: [{containerPort: 3000}]}
      - {name: b, image: echo-basic:v1, ports: [{containerPort: 3002}]}
---
kind: InferencePool
metadata: {name: pool, namespace: app}
spec:
  selector: {matchLabels: {app: model}}
  targetPorts: [{number: 3000}, {number: 3002}]
  endpointPickerRef: {name: epp-svc, port: {number: 9002}}
---
kind: Service
metadata: {name: epp-svc, namespace: app}
spec:
  selector: {app: epp}
  ports: [{port: 9002, targetPort: 9002, appProtocol: http2}]
---
kind: Deployment
metadata: {name: epp, namespace: app}
spec:
  template:
    metadata: {labels: {app: epp}}
    spec:
      containers:
      - name: epp
        image: registry/lwepp:main
        args: [--pool-name, pool, --pool-namespace, app, --grpc-port, "9002"]
"#;

    #[tokio::test]
    async fn emulates_pods_pod_objects_and_pickers() {
        let docs = parse_docs(BASE, "c", "test").expect("parse");
        let cluster = Cluster::start_in(&docs, 32, 33).await.expect("start");
        let pods = cluster.pool_pods(&docs[1]);
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].ip().to_string(), "127.32.1.1");
        assert_eq!(pods[0].echo.ports(), &[3000, 3002]);
        assert!(pods[0].name().starts_with("model-deployment-"));
        assert_eq!(cluster.pods_with_app("app", "model").len(), 2);
        assert!(cluster.pods_with_app("other", "model").is_empty());

        let objects = cluster.pod_documents();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[1]["status"]["podIP"], "127.32.1.2");
        assert_eq!(objects[1]["metadata"]["labels"]["app"], "model");
        assert_eq!(objects[1]["status"]["conditions"][0]["type"], "Ready");

        let slices = cluster.endpoint_slices(&docs);
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["endpoints"][0]["addresses"][0], "127.33.0.1");
        assert_eq!(slices[0]["ports"][0]["port"], 9002);
        // The picker listens where its EndpointSlice says.
        tokio::net::TcpStream::connect("127.33.0.1:9002")
            .await
            .expect("picker accepts");
        assert!(cluster.pickers_running());

        // A Service that no longer selects the picker has an empty slice.
        let mut changed = docs.clone();
        changed[2]["spec"]["selector"] = serde_json::json!({"app": "nothing"});
        let slices = cluster.endpoint_slices(&changed);
        assert_eq!(slices[0]["endpoints"], serde_json::json!([]));
    }
}
