//! The pool of in-process simulated vLLM servers.

use std::net::SocketAddr;
use std::time::Duration;
use vllm_sim::{RunningSim, SimConfig, SimError, Simulator};

/// `servers` simulators started from one configuration, on 127.0.0.1. Server *i* is named
/// `sim-{i}` (its `x-inference-pod` header) and seeded with `seed + i`.
#[derive(Debug)]
pub struct SimPool {
    config: SimConfig,
    ports: Vec<u16>,
    sims: Vec<RunningSim>,
}

impl SimPool {
    /// Starts `servers` simulators. With `base_port` 0 each listens on a free port; otherwise
    /// server *i* listens on `base_port + i` (so a gateway configuration can be written before
    /// the run).
    pub async fn start(
        config: SimConfig,
        servers: usize,
        base_port: u16,
    ) -> Result<SimPool, SimError> {
        let ports: Vec<u16> = (0..servers)
            .map(|i| {
                if base_port == 0 {
                    0
                } else {
                    base_port.saturating_add(i as u16)
                }
            })
            .collect();
        let mut pool = SimPool {
            config,
            ports,
            sims: Vec::new(),
        };
        pool.bind_all().await?;
        pool.ports = pool.sims.iter().map(|s| s.local_addr().port()).collect();
        Ok(pool)
    }

    fn config_for(&self, i: usize) -> SimConfig {
        SimConfig {
            pod_name: Some(format!("sim-{i}")),
            seed: self.config.seed.map(|s| s.wrapping_add(i as u64)),
            ..self.config.clone()
        }
    }

    async fn bind_all(&mut self) -> Result<(), SimError> {
        for i in 0..self.ports.len() {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.ports[i]));
            // A port freed by a restart may take a moment to be bindable again.
            let mut tries = 0;
            let sim = loop {
                match Simulator::serve(self.config_for(i), addr).await {
                    Ok(s) => break s,
                    Err(SimError::Io(e)) if tries < 50 && self.ports[i] != 0 => {
                        tries += 1;
                        tracing::debug!(error = %e, port = self.ports[i], "rebinding");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            self.sims.push(sim);
        }
        Ok(())
    }

    /// Stops every server (waiting for in-flight requests) and starts fresh ones on the same
    /// ports: empty queues and KV caches, no loaded adapters.
    pub async fn restart(&mut self) -> Result<(), SimError> {
        for sim in self.sims.drain(..) {
            sim.shutdown().await;
        }
        self.bind_all().await
    }

    /// Stops every server.
    pub async fn shutdown(mut self) {
        for sim in self.sims.drain(..) {
            sim.shutdown().await;
        }
    }

    /// The servers' base URLs (`http://127.0.0.1:PORT`), in order.
    pub fn urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    /// The servers' ports, in order.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }

    /// The configuration every server runs (before its name and seed).
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The running simulators (for their engine state).
    pub fn sims(&self) -> &[RunningSim] {
        &self.sims
    }
}

/// The endpoint list for a gateway configuration generator: JSON when `path` ends in `.json`,
/// YAML otherwise. Lists the base model, the LoRA adapters and, per server, its name, address
/// and port.
pub fn endpoints_document(
    model: &str,
    adapters: &[String],
    ports: &[u16],
    path: &std::path::Path,
) -> String {
    let endpoints: Vec<serde_json::Value> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| serde_json::json!({"name": format!("sim-{i}"), "address": "127.0.0.1", "port": p}))
        .collect();
    let doc =
        serde_json::json!({"model": model, "lora_adapters": adapters, "endpoints": endpoints});
    if path.extension().is_some_and(|e| e == "json") {
        let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
        s.push('\n');
        return s;
    }
    // YAML: flow style for the lists; JSON strings are valid YAML scalars.
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut out = format!("model: {}\nlora_adapters: [", q(model));
    out.push_str(&adapters.iter().map(|a| q(a)).collect::<Vec<_>>().join(", "));
    out.push_str("]\nendpoints:\n");
    for (i, p) in ports.iter().enumerate() {
        out.push_str(&format!(
            "  - {{name: sim-{i}, address: 127.0.0.1, port: {p}}}\n"
        ));
    }
    out
}
