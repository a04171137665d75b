//! The echo pods of every emulated Deployment, started once and reused across tests.
//!
//! Pod `i` of the `n`-th Deployment listens on `127.1.n.(i+1)`; its name is
//! `<deployment>-<hash>-<i>`, so it starts with the Service name as upstream's checks expect.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde_json::Value;

use crate::echo::{EchoPod, EchoTls, PodIdentity};
use crate::error::{Error, Result};
use crate::manifests::{MountedKey, PodEndpoint, mounted_data, workloads};

/// All running echo pods, keyed by `(namespace, deployment)`.
#[derive(Debug, Default)]
pub struct Backends {
    pods: BTreeMap<(String, String), Vec<EchoPod>>,
    next_subnet: u8,
}

impl Backends {
    /// An empty pool.
    pub fn new() -> Self {
        Backends::default()
    }

    /// Starts pods for every emulatable Deployment in `docs` not already running. A pod with
    /// echo-basic's HTTPS listener reads its certificate, key and client CAs from the Secrets
    /// and ConfigMaps in `material` (the harness's generated ones, see
    /// [`crate::certs::SuiteCerts::documents`]) and `docs`.
    pub async fn ensure(&mut self, docs: &[Value], material: &[Value]) -> Result<()> {
        for w in workloads(docs) {
            if w.unsupported.is_some() || w.ports.is_empty() {
                continue;
            }
            let tls = match &w.tls {
                Some(files) => {
                    let read = |m: &MountedKey| {
                        mounted_data(material, m)
                            .or_else(|| mounted_data(docs, m))
                            .ok_or_else(|| {
                                Error::Manifest(format!(
                                    "Deployment {}/{}: {} {}/{} has no key {:?}",
                                    w.namespace, w.deployment, m.kind, m.namespace, m.name, m.key
                                ))
                            })
                    };
                    let ca = files.client_ca.as_ref().map(read).transpose()?;
                    Some(EchoTls::new(
                        files.port,
                        &read(&files.cert)?,
                        &read(&files.key)?,
                        ca.as_deref(),
                    )?)
                }
                None => None,
            };
            let key = (w.namespace.clone(), w.deployment.clone());
            if self.pods.contains_key(&key) {
                continue;
            }
            self.next_subnet = self
                .next_subnet
                .checked_add(1)
                .ok_or_else(|| Error::Manifest("more than 255 Deployments".into()))?;
            let hash = format!("{:x}", 0x5a00u32 + u32::from(self.next_subnet));
            let mut pods = Vec::new();
            for i in 0..w.replicas.min(250) {
                let last = u8::try_from(i + 1).unwrap_or(250);
                let ip = IpAddr::V4(Ipv4Addr::new(127, 1, self.next_subnet, last));
                let identity = PodIdentity {
                    pod: format!("{}-{hash}-{i}", w.deployment),
                    namespace: w.namespace.clone(),
                    service: String::new(),
                    ingress: String::new(),
                };
                pods.push(EchoPod::start_with_tls(ip, &w.ports, identity, tls.clone()).await?);
            }
            tracing::info!(
                namespace = %w.namespace,
                deployment = %w.deployment,
                replicas = pods.len(),
                "started echo pods"
            );
            self.pods.insert(key, pods);
        }
        Ok(())
    }

    /// The pods of a Deployment (empty when not emulated).
    pub fn pods(&self, namespace: &str, deployment: &str) -> &[EchoPod] {
        self.pods
            .get(&(namespace.to_string(), deployment.to_string()))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The pods as EndpointSlice endpoints.
    pub fn endpoints(&self, namespace: &str, deployment: &str) -> Vec<PodEndpoint> {
        self.pods(namespace, deployment)
            .iter()
            .map(|p| PodEndpoint {
                pod: p.identity().pod.clone(),
                ip: p.ip().to_string(),
            })
            .collect()
    }

    /// Whether any pod of `namespace/deployment` received a request containing `needle`.
    pub fn saw_request(&self, namespace: &str, deployment: &str, needle: &str) -> bool {
        self.pods(namespace, deployment)
            .iter()
            .any(|p| p.saw_request_containing(needle))
    }

    /// How many requests the pods of `namespace/deployment` received whose RequestURI satisfies
    /// `matches` (every request counts, as every log line does upstream).
    pub fn count_requests(
        &self,
        namespace: &str,
        deployment: &str,
        matches: impl Fn(&str) -> bool,
    ) -> usize {
        self.pods(namespace, deployment)
            .iter()
            .map(|p| p.count_requests(&matches))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifests::parse_docs;

    #[tokio::test]
    async fn starts_one_pod_per_replica_and_reuses_them() {
        let docs = parse_docs(
            r#"
kind: Service
metadata: {name: svc-a, namespace: ns-a}
spec:
  selector: {app: svc-a}
  ports: [{port: 8080, targetPort: 3000}]
---
kind: Deployment
metadata: {name: svc-a, namespace: ns-a}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: svc-a}}
    spec:
      containers: [{name: c, image: echo-basic:v1}]
"#,
            "c",
            "test",
        )
        .expect("parse");
        let mut b = Backends::new();
        b.ensure(&docs, &[]).await.expect("ensure");
        b.ensure(&docs, &[]).await.expect("ensure twice");
        let eps = b.endpoints("ns-a", "svc-a");
        assert_eq!(eps.len(), 2);
        assert!(eps[0].pod.starts_with("svc-a-"));
        assert_ne!(eps[0].ip, eps[1].ip);
        assert!(b.pods("ns-a", "other").is_empty());
        assert!(!b.saw_request("ns-a", "svc-a", "/nothing"));
        assert_eq!(b.count_requests("ns-a", "svc-a", |_| true), 0);
    }
}
