//! The Gateway API Inference Extension conformance suite, offline.
//!
//! Reads the upstream data (`resources/base.yaml`, `tests/*.yaml`) at run time from
//! `$GATEWAY_API_INFERENCE_CONFORMANCE_DIR` or the shared copy, emulates the cluster once per run
//! ([`cluster::Cluster`]: model-server echo pods, their Pod objects, the conformance endpoint
//! pickers and their EndpointSlices), and runs each test against its own `file-gateway`
//! process. The status and traffic assertions of each upstream Go test are transcribed in
//! [`suite`]. See `docs/conformance.md`.

pub mod checks;
pub mod cluster;
pub mod suite;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::certs::SuiteCerts;
use crate::client::{Client, RequestSpec};
use crate::compare::Observed;
use crate::error::{Error, Result};
use crate::gateway::{GatewayOptions, GatewayProcess};
use crate::manifests::{
    fill_controller_name, gateway_class, kind, load_docs, name, normalize, to_yaml,
};
use crate::runner::{Outcome, TestResult};
use crate::status::{ObjRef, Snapshot};

use checks::InfCheck;
use cluster::Cluster;

/// Environment variable naming the upstream Inference Extension `conformance/` folder (with
/// `resources/base.yaml` and `tests/`).
pub const DIR_ENV: &str = "GATEWAY_API_INFERENCE_CONFORMANCE_DIR";

/// The shared copy: `../shared/conformance/inference` beside the repository checkout.
pub const DEFAULT_DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/conformance/inference"
);

/// The namespace of the suite's Gateways.
pub const INFRA_NS: &str = "inference-conformance-infra";
/// The namespace of the suite's pools, routes and model servers.
pub const APP_NS: &str = "inference-conformance-app-backend";
/// The Gateway most tests use.
pub const PRIMARY_GW: &str = "conformance-primary";
/// The second Gateway (listener hostname `secondary.example.com`).
pub const SECONDARY_GW: &str = "conformance-secondary";
/// The lwepp request header restricting the picker to `ip[,ip]` / `ip:port` entries.
pub const SELECTION_HEADER: &str = "test-epp-endpoint-selection";
/// The response header lwepp sets to the endpoint the gateway reported as served.
pub const SERVED_HEADER: &str = "x-conformance-test-served-endpoint";

/// The Inference Extension folder: `$GATEWAY_API_INFERENCE_CONFORMANCE_DIR` or the shared copy.
pub fn inference_dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR))
}

/// Settings of an Inference Extension run.
#[derive(Clone, Debug)]
pub struct InferenceOptions {
    /// The `file-gateway` binary.
    pub gateway_bin: PathBuf,
    /// The upstream folder (`resources/base.yaml`, `tests/`).
    pub dir: PathBuf,
    /// GatewayClass name filled in for `{GATEWAY_CLASS_NAME}`.
    pub class_name: String,
    /// Controller name the gateway serves.
    pub controller: String,
    /// Tests to run; empty runs all of [`suite::TESTS`].
    pub tests: Vec<String>,
    /// Time for a status check to hold or a request to succeed consistently (upstream
    /// `MaxTimeToConsistency`).
    pub deadline: Duration,
    /// How many tests run at once (each with its own gateway process).
    pub parallel: usize,
}

impl InferenceOptions {
    /// Defaults: the shared data, class `gateway-conformance`, the default controller, 15 s,
    /// 3 tests at a time.
    pub fn new(gateway_bin: PathBuf) -> Self {
        InferenceOptions {
            gateway_bin,
            dir: inference_dir(),
            class_name: "gateway-conformance".into(),
            controller: crate::gateway::DEFAULT_CONTROLLER.into(),
            tests: Vec::new(),
            deadline: Duration::from_secs(15),
            parallel: 3,
        }
    }
}

/// State shared by the tests of a run.
struct Shared<'a> {
    opts: &'a InferenceOptions,
    base: Vec<Value>,
    cluster: Cluster,
    client: Client,
}

/// Runs the selected tests (up to `parallel` at once); results in the order of the selection.
pub async fn run(opts: &InferenceOptions) -> Result<Vec<TestResult>> {
    let specs: Vec<&suite::Spec> = if opts.tests.is_empty() {
        suite::TESTS.iter().collect()
    } else {
        opts.tests
            .iter()
            .map(|t| {
                suite::TESTS
                    .iter()
                    .find(|s| s.name == t)
                    .ok_or_else(|| Error::Manifest(format!("unknown inference test {t}")))
            })
            .collect::<Result<_>>()?
    };
    let mut base = load_docs(&opts.dir.join("resources/base.yaml"), &opts.class_name)?;
    for d in &mut base {
        fill_controller_name(d, &opts.controller);
        normalize(d);
    }
    let cluster = Cluster::start(&base).await?;
    let certs = SuiteCerts::generate()?;
    let shared = Shared {
        opts,
        base,
        cluster,
        client: Client::new(certs.ca_pem())?,
    };
    let shared = &shared;
    let mut results: Vec<(usize, TestResult)> =
        futures_util::stream::iter(specs.iter().enumerate())
            .map(|(i, spec)| async move {
                let started = Instant::now();
                let result = shared.run_one(spec, i).await;
                tracing::info!(
                    test = spec.name,
                    outcome = ?result.outcome,
                    secs = started.elapsed().as_secs_f32(),
                    "{}",
                    result.detail
                );
                (i, result)
            })
            .buffer_unordered(opts.parallel.max(1))
            .collect()
            .await;
    results.sort_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, r)| r).collect())
}

impl Shared<'_> {
    async fn run_one(&self, spec: &suite::Spec, index: usize) -> TestResult {
        let outcome = match self.start(spec, index).await {
            Ok(mut env) => {
                let r = (spec.run)(&mut env).await;
                let r = match r {
                    Err(e) if !env.gw.is_running() => Err(format!(
                        "{e}; gateway exited during the test; log:\n{}",
                        env.gw.log_tail(20)
                    )),
                    other => other,
                };
                if !self.cluster.pickers_running() {
                    Err("harness: an endpoint picker stopped".to_string())
                } else {
                    r
                }
            }
            Err(e) => Err(format!("harness: {e}")),
        };
        match outcome {
            Ok(detail) => TestResult {
                name: spec.name.into(),
                outcome: Outcome::Pass,
                detail,
            },
            Err(detail) => TestResult {
                name: spec.name.into(),
                outcome: Outcome::Fail,
                detail,
            },
        }
    }

    async fn start(&self, spec: &suite::Spec, index: usize) -> Result<Env<'_>> {
        let mut test_docs = load_docs(
            &self.opts.dir.join("tests").join(spec.file),
            &self.opts.class_name,
        )?;
        for d in &mut test_docs {
            fill_controller_name(d, &self.opts.controller);
            normalize(d);
        }
        let (dir, config) = GatewayProcess::prepare(spec.name)?;
        let env_files = EnvFiles {
            config: config.clone(),
        };
        env_files.write(
            "00-gatewayclass.yaml",
            &[gateway_class(&self.opts.class_name, &self.opts.controller)],
        )?;
        env_files.write("10-base.yaml", &self.base)?;
        env_files.write("20-pods.yaml", &self.cluster.pod_documents())?;
        let all: Vec<Value> = self.base.iter().chain(&test_docs).cloned().collect();
        env_files.write(
            "30-endpointslices.yaml",
            &self.cluster.endpoint_slices(&all),
        )?;
        env_files.write("40-test.yaml", &test_docs)?;
        let opts = GatewayOptions {
            bin: self.opts.gateway_bin.clone(),
            controller: self.opts.controller.clone(),
            address_pool: format!("127.21.{}.0/24", 1 + index % 250),
            ports: crate::manifests::listener_ports(&all),
        };
        let mut gw = GatewayProcess::start(dir, &opts)?;
        gw.wait_ready(&self.client, Duration::from_secs(30)).await?;
        Ok(Env {
            shared: self,
            gw,
            files: env_files,
            base: self.base.clone(),
            test_docs,
        })
    }
}

struct EnvFiles {
    config: PathBuf,
}

impl EnvFiles {
    fn write(&self, file: &str, docs: &[Value]) -> Result<()> {
        let path = self.config.join(file);
        std::fs::write(&path, to_yaml(docs)?).map_err(|e| Error::io(&path, e))
    }
}

/// What a response must show (upstream `gwhttp.ExpectedResponse`, the parts these tests use).
#[derive(Clone, Debug, Default)]
pub struct Expect {
    /// Acceptable statuses.
    pub statuses: Vec<u16>,
    /// On 200: the serving pod's name must start with this (upstream `Backend`).
    pub backend: Option<String>,
    /// On 200: the serving pod's namespace.
    pub namespace: Option<String>,
    /// Response headers that must have exactly these values.
    pub headers: Vec<(String, String)>,
    /// On 200: the protocol the pod saw (`HTTP/1.1`, `HTTP/2.0`); beyond upstream, see
    /// [`suite`]'s appProtocol test.
    pub proto: Option<&'static str>,
}

impl Expect {
    /// A 200 from a pod whose name starts with `backend`, in the app namespace.
    pub fn ok(backend: &str) -> Self {
        Expect {
            statuses: vec![200],
            backend: Some(backend.to_string()),
            namespace: Some(APP_NS.to_string()),
            ..Expect::default()
        }
    }

    /// Upstream `CompareRoundTrip` for these fields: the status; on a 200 the echo's path and
    /// method (the request's), namespace, pod-name prefix and protocol; the response headers.
    pub fn compare(&self, req: &RequestSpec, obs: &Observed) -> std::result::Result<(), String> {
        if !self.statuses.contains(&obs.status) {
            return Err(format!(
                "status {}, want {:?} ({})",
                obs.status,
                self.statuses,
                obs.summary()
            ));
        }
        if obs.status == 200 {
            let echo = obs
                .echo
                .as_ref()
                .ok_or_else(|| format!("200 without an echo body: {}", obs.summary()))?;
            if echo.path != req.path {
                return Err(format!(
                    "backend saw path {:?}, want {:?}",
                    echo.path, req.path
                ));
            }
            if echo.method != req.method {
                return Err(format!(
                    "backend saw method {:?}, want {:?}",
                    echo.method, req.method
                ));
            }
            if let Some(ns) = &self.namespace
                && &echo.namespace != ns
            {
                return Err(format!(
                    "served from namespace {:?}, want {ns:?}",
                    echo.namespace
                ));
            }
            if let Some(b) = &self.backend
                && !echo.pod.starts_with(b.as_str())
            {
                return Err(format!("served by pod {:?}, want prefix {b:?}", echo.pod));
            }
            if let Some(p) = self.proto
                && echo.proto != p
            {
                return Err(format!(
                    "pod {} saw protocol {:?}, want {p:?}",
                    echo.pod, echo.proto
                ));
            }
        }
        for (k, v) in &self.headers {
            let got: Vec<String> = obs
                .headers
                .get_all(k.as_str())
                .iter()
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
                .collect();
            if got.len() != 1 || got[0] != *v {
                return Err(format!("response header {k}: {got:?}, want {v:?}"));
            }
        }
        Ok(())
    }
}

/// One running test: its gateway, its copy of the manifests and the shared cluster.
pub struct Env<'a> {
    shared: &'a Shared<'a>,
    gw: GatewayProcess,
    files: EnvFiles,
    base: Vec<Value>,
    test_docs: Vec<Value>,
}

/// Upstream's consecutive successes for `MakeRequestAndExpectEventuallyConsistentResponse`.
const CONSISTENT: usize = 3;

impl Env<'_> {
    /// The emulated cluster.
    pub fn cluster(&self) -> &Cluster {
        &self.shared.cluster
    }

    /// The deadline for a check or request to hold.
    pub fn deadline(&self) -> Duration {
        self.shared.opts.deadline.max(Duration::from_secs(5))
    }

    /// A document of the base manifests or the test's.
    pub fn doc(&self, k: &str, ns: &str, n: &str) -> Option<&Value> {
        self.base
            .iter()
            .chain(&self.test_docs)
            .find(|d| kind(d) == k && crate::manifests::namespace(d) == ns && name(d) == n)
    }

    /// The test's documents.
    pub fn test_docs(&self) -> &[Value] {
        &self.test_docs
    }

    /// Polls the status file until every check holds; the first failing one otherwise.
    pub async fn wait(&self, checks: &[InfCheck]) -> std::result::Result<(), String> {
        let end = Instant::now() + self.deadline();
        loop {
            let last = match Snapshot::load(&self.gw.status_file) {
                Ok(s) => match checks.iter().try_for_each(|c| c.eval(&s)) {
                    Ok(()) => return Ok(()),
                    Err(e) => e,
                },
                Err(e) => format!("status file: {e}"),
            };
            if Instant::now() > end {
                return Err(format!("status: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Upstream `GetGatewayEndpoint`: the Gateway's address once its conditions are current.
    pub async fn address(&self, gateway: &str) -> std::result::Result<IpAddr, String> {
        let gref = ObjRef::new(INFRA_NS, gateway);
        let end = Instant::now() + self.deadline();
        loop {
            let r = Snapshot::load(&self.gw.status_file)
                .map_err(|e| format!("status file: {e}"))
                .and_then(|s| s.gateway_address(&gref))
                .and_then(|a| {
                    a.parse::<IpAddr>()
                        .map_err(|e| format!("Gateway {gref} address {a:?}: {e}"))
                });
            match r {
                Ok(ip) => return Ok(ip),
                Err(e) if Instant::now() > end => return Err(format!("address: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// A request to the Gateway at `ip` (listener port 80, mapped): `Host` is `host`, or the
    /// address; POST requests carry upstream's JSON completion body.
    pub fn request(
        &self,
        ip: IpAddr,
        host: Option<&str>,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
    ) -> std::result::Result<RequestSpec, String> {
        let port = *self
            .gw
            .port_map
            .get(&80)
            .ok_or_else(|| "listener port 80 not mapped".to_string())?;
        let body = if method == "POST" {
            Bytes::from(
                json!({
                    "model": "conformance-fake-model",
                    "prompt": "Write as if you were a critic: San Francisco",
                })
                .to_string(),
            )
        } else {
            Bytes::new()
        };
        let mut hs: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        if !body.is_empty() {
            hs.push(("Content-Type".into(), "application/json".into()));
        }
        Ok(RequestSpec {
            scheme: crate::cases::Scheme::Http,
            connect: SocketAddr::new(ip, port),
            host: host.map_or_else(|| ip.to_string(), str::to_string),
            sni: String::new(),
            method: method.to_string(),
            path: path.to_string(),
            headers: hs,
            timeout: Duration::from_secs(10),
            body,
        })
    }

    /// Upstream `MakeRequestAndExpectEventuallyConsistentResponse`: the request must match
    /// [`CONSISTENT`] times in a row within the deadline (100 ms between attempts).
    pub async fn eventually(
        &self,
        req: &RequestSpec,
        exp: &Expect,
    ) -> std::result::Result<(), String> {
        let end = Instant::now() + self.deadline();
        let mut streak = 0;
        loop {
            let last = match self.shared.client.send(req).await {
                Ok(obs) => match exp.compare(req, &obs) {
                    Ok(()) => {
                        streak += 1;
                        if streak >= CONSISTENT {
                            return Ok(());
                        }
                        continue;
                    }
                    Err(e) => e,
                },
                Err(e) => e,
            };
            streak = 0;
            if Instant::now() > end {
                return Err(format!(
                    "{} {} host={}: {last}",
                    req.method, req.path, req.host
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends `req` `total` times, `concurrency` at a time (upstream's errgroup with a limit);
    /// every outcome in completion order.
    pub async fn burst(
        &self,
        req: &RequestSpec,
        total: usize,
        concurrency: usize,
    ) -> Vec<std::result::Result<Observed, String>> {
        let client = &self.shared.client;
        futures_util::stream::iter(0..total)
            .map(|_| client.send(req))
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await
    }

    /// Deletes a test object (upstream `client.Delete`) and rewrites the test file.
    pub fn delete(&mut self, k: &str, ns: &str, n: &str) -> std::result::Result<(), String> {
        let before = self.test_docs.len();
        self.test_docs
            .retain(|d| !(kind(d) == k && crate::manifests::namespace(d) == ns && name(d) == n));
        if self.test_docs.len() == before {
            return Err(format!("harness: no {k} {ns}/{n} to delete"));
        }
        self.files
            .write("40-test.yaml", &self.test_docs)
            .map_err(|e| format!("harness: {e}"))
    }

    /// Upstream `MakeServiceUnavailable`: the Service's selector becomes
    /// `app: do-not-match-for-testing` (generation bumped), so its EndpointSlice empties; both
    /// files are rewritten.
    pub fn make_service_unavailable(
        &mut self,
        ns: &str,
        n: &str,
    ) -> std::result::Result<(), String> {
        let svc = self
            .base
            .iter_mut()
            .find(|d| kind(d) == "Service" && crate::manifests::namespace(d) == ns && name(d) == n)
            .ok_or_else(|| format!("harness: no Service {ns}/{n}"))?;
        svc["spec"]["selector"] = json!({"app": "do-not-match-for-testing"});
        let generation = svc["metadata"]["generation"].as_i64().unwrap_or(1);
        svc["metadata"]["generation"] = json!(generation + 1);
        let all: Vec<Value> = self.base.iter().chain(&self.test_docs).cloned().collect();
        let slices = self.shared.cluster.endpoint_slices(&all);
        let emptied = slices.iter().any(|s| {
            s["metadata"]["labels"]["kubernetes.io/service-name"] == n
                && s["endpoints"].as_array().is_some_and(Vec::is_empty)
        });
        if !emptied {
            return Err(format!(
                "harness: the EndpointSlice of {ns}/{n} did not empty"
            ));
        }
        self.files
            .write("10-base.yaml", &self.base)
            .and_then(|()| self.files.write("30-endpointslices.yaml", &slices))
            .map_err(|e| format!("harness: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::EchoBody;

    fn req() -> RequestSpec {
        RequestSpec {
            scheme: crate::cases::Scheme::Http,
            connect: "127.0.0.1:1".parse().expect("addr"),
            host: "h".into(),
            sni: String::new(),
            method: "POST".into(),
            path: "/p".into(),
            headers: vec![],
            timeout: Duration::from_secs(1),
            body: Bytes::new(),
        }
    }

    fn obs(status: u16, pod: &str) -> Observed {
        let mut headers = http::HeaderMap::new();
        headers.insert(SERVED_HEADER, "10.0.0.1:3000".parse().expect("value"));
        Observed {
            status,
            headers,
            echo: (status == 200).then(|| EchoBody {
                path: "/p".into(),
                method: "POST".into(),
                proto: "HTTP/1.1".into(),
                namespace: APP_NS.into(),
                pod: pod.into(),
                ..EchoBody::default()
            }),
            body_snippet: String::new(),
        }
    }

    #[test]
    fn compare_checks_status_pod_namespace_protocol_and_headers() {
        let r = req();
        let mut exp = Expect::ok("primary-");
        assert!(exp.compare(&r, &obs(200, "primary-1")).is_ok());
        assert!(exp.compare(&r, &obs(200, "secondary-1")).is_err());
        assert!(exp.compare(&r, &obs(503, "")).is_err());
        exp.headers = vec![(SERVED_HEADER.into(), "10.0.0.1:3000".into())];
        assert!(exp.compare(&r, &obs(200, "primary-1")).is_ok());
        exp.headers = vec![(SERVED_HEADER.into(), "10.0.0.2:3000".into())];
        assert!(exp.compare(&r, &obs(200, "primary-1")).is_err());
        exp.headers.clear();
        exp.proto = Some("HTTP/2.0");
        let err = exp.compare(&r, &obs(200, "primary-1")).expect_err("h1");
        assert!(err.contains("protocol"), "{err}");
        let mut wrong_ns = obs(200, "primary-1");
        if let Some(e) = wrong_ns.echo.as_mut() {
            e.namespace = "other".into();
        }
        assert!(Expect::ok("primary-").compare(&r, &wrong_ns).is_err());
        let five = Expect {
            statuses: vec![500, 502, 503],
            ..Expect::default()
        };
        assert!(five.compare(&r, &obs(503, "")).is_ok());
        assert!(five.compare(&r, &obs(200, "primary-1")).is_err());
    }
}
