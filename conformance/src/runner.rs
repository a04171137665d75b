//! Runs tests: config directory, gateway process, preconditions, status checks, traffic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::backends::Backends;
use crate::cases::{Case, TestKind, TestSpec, find_test, parse_cases};
use crate::certs::{INFRA_NS, SuiteCerts};
use crate::client::{Client, RequestSpec};
use crate::compare::{Expectation, Observed, compare};
use crate::error::{Error, Result};
use crate::gateway::{GatewayOptions, GatewayProcess};
use crate::manifests::{
    endpoint_slices, fill_controller_name, gateway_class, kind, listener_ports, load_docs, name,
    namespace, normalize, to_yaml,
};
use crate::plan::{Check, Mutation, rejected_routes, status_plan, traffic_checks};
use crate::status::{ObjRef, Snapshot, parent_refs_to};

/// Harness settings.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// The `file-gateway` binary.
    pub gateway_bin: PathBuf,
    /// Upstream `conformance/` folder (base/manifests.yaml, tests/).
    pub conformance_dir: PathBuf,
    /// `cases.tsv`.
    pub cases_path: PathBuf,
    /// GatewayClass name filled in for `{GATEWAY_CLASS_NAME}`.
    pub class_name: String,
    /// Controller name the gateway serves.
    pub controller: String,
    /// Tests to run; empty runs every known test.
    pub tests: Vec<String>,
    /// Time for a traffic case to match 3 times in a row, and for status checks to hold.
    pub deadline: Duration,
}

impl RunnerOptions {
    /// Defaults: shared data paths, class `gateway-conformance`, the default controller, 15 s.
    pub fn new(gateway_bin: PathBuf) -> Self {
        let conformance_dir = crate::manifests::conformance_dir();
        let cases_path = conformance_dir
            .parent()
            .map(|p| p.join("cases.tsv"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(crate::manifests::DEFAULT_CASES_PATH));
        RunnerOptions {
            gateway_bin,
            conformance_dir,
            cases_path,
            class_name: "gateway-conformance".into(),
            controller: crate::gateway::DEFAULT_CONTROLLER.into(),
            tests: Vec::new(),
            deadline: Duration::from_secs(15),
        }
    }
}

/// A test's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every check held.
    Pass,
    /// Some check failed (see detail).
    Fail,
    /// Not run (see detail).
    Skip,
}

/// One row of the result table.
#[derive(Clone, Debug)]
pub struct TestResult {
    /// Test name.
    pub name: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Why it failed or was skipped; a summary when it passed.
    pub detail: String,
}

/// Runs the selected tests one after another.
pub async fn run(opts: &RunnerOptions) -> Result<Vec<TestResult>> {
    let certs = SuiteCerts::generate()?;
    let client = Client::new(certs.ca_pem())?;
    let cases_text =
        std::fs::read_to_string(&opts.cases_path).map_err(|e| Error::io(&opts.cases_path, e))?;
    let cases = parse_cases(&cases_text)?;
    let base_path = opts.conformance_dir.join("base/manifests.yaml");
    let base = load_docs(&base_path, &opts.class_name)?;
    let specs: Vec<&TestSpec> = if opts.tests.is_empty() {
        crate::cases::TESTS.iter().collect()
    } else {
        opts.tests
            .iter()
            .map(|t| find_test(t).ok_or_else(|| Error::Manifest(format!("unknown test {t}"))))
            .collect::<Result<_>>()?
    };
    let mut ctx = Ctx {
        opts,
        certs,
        client,
        backends: Backends::new(),
        base,
    };
    let mut results = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let started = Instant::now();
        let rows: Vec<&Case> = cases.iter().filter(|c| c.test == spec.name).collect();
        let result = match ctx.run_test(spec, &rows, i).await {
            Ok(detail) => TestResult {
                name: spec.name.into(),
                outcome: Outcome::Pass,
                detail,
            },
            Err(TestError::Skip(why)) => TestResult {
                name: spec.name.into(),
                outcome: Outcome::Skip,
                detail: why,
            },
            Err(TestError::Fail(why)) => TestResult {
                name: spec.name.into(),
                outcome: Outcome::Fail,
                detail: why,
            },
        };
        tracing::info!(
            test = spec.name,
            outcome = ?result.outcome,
            secs = started.elapsed().as_secs_f32(),
            "{}",
            result.detail
        );
        results.push(result);
    }
    Ok(results)
}

enum TestError {
    Skip(String),
    Fail(String),
}

impl From<Error> for TestError {
    fn from(e: Error) -> Self {
        TestError::Fail(format!("harness: {e}"))
    }
}

type TestResultOf<T> = std::result::Result<T, TestError>;

fn fail<T>(msg: impl Into<String>) -> TestResultOf<T> {
    Err(TestError::Fail(msg.into()))
}

struct Ctx<'a> {
    opts: &'a RunnerOptions,
    certs: SuiteCerts,
    client: Client,
    backends: Backends,
    base: Vec<Value>,
}

/// Where a gateway listener is reachable.
#[derive(Clone, Debug)]
struct Target {
    ip: IpAddr,
    listener_port: u16,
    local_port: u16,
}

struct Running {
    gw: GatewayProcess,
    test_docs: Vec<Value>,
    all_docs: Vec<Value>,
    test_file: PathBuf,
}

impl Ctx<'_> {
    async fn run_test(
        &mut self,
        spec: &TestSpec,
        rows: &[&Case],
        index: usize,
    ) -> TestResultOf<String> {
        if let Some(why) = spec.unsupported {
            return Err(TestError::Skip(why.into()));
        }
        if spec.kind == TestKind::Traffic && rows.is_empty() {
            return Err(TestError::Skip("no rows in cases.tsv".into()));
        }
        let mut run = self.start(spec, index).await?;
        let result = match spec.kind {
            TestKind::Status => self.run_status(spec, &mut run).await,
            TestKind::Traffic => self.run_traffic(spec, rows, &mut run).await,
        };
        if !run.gw.is_running() {
            return fail(format!(
                "{}; gateway exited during the test; log:\n{}",
                result
                    .err()
                    .map(|e| match e {
                        TestError::Fail(s) | TestError::Skip(s) => s,
                    })
                    .unwrap_or_default(),
                run.gw.log_tail(20)
            ));
        }
        result
    }

    async fn start(&mut self, spec: &TestSpec, index: usize) -> TestResultOf<Running> {
        let mut test_docs = Vec::new();
        for f in spec.files {
            let path = self.opts.conformance_dir.join("tests").join(f);
            test_docs.extend(load_docs(&path, &self.opts.class_name)?);
        }
        for d in &mut test_docs {
            fill_controller_name(d, &self.opts.controller);
            normalize(d);
        }
        let mut base = self.base.clone();
        for d in &mut base {
            normalize(d);
        }
        let all_docs: Vec<Value> = base.iter().chain(test_docs.iter()).cloned().collect();
        self.backends.ensure(&all_docs).await?;
        let slices = endpoint_slices(&all_docs, &|ns, dep| self.backends.endpoints(ns, dep));

        let (dir, config) = GatewayProcess::prepare(spec.name)?;
        let write = |file: &str, docs: &[Value]| -> Result<()> {
            let path = config.join(file);
            std::fs::write(&path, to_yaml(docs)?).map_err(|e| Error::io(&path, e))
        };
        write(
            "00-gatewayclass.yaml",
            &[gateway_class(&self.opts.class_name, &self.opts.controller)],
        )?;
        write("10-base.yaml", &base)?;
        write("20-secrets.yaml", &self.certs.documents())?;
        write("30-endpointslices.yaml", &slices)?;
        write("40-test.yaml", &test_docs)?;
        let test_file = config.join("40-test.yaml");

        let mut ports: BTreeSet<u16> = [80, 443, 8080].into_iter().collect();
        ports.extend(listener_ports(&all_docs));
        let opts = GatewayOptions {
            bin: self.opts.gateway_bin.clone(),
            controller: self.opts.controller.clone(),
            address_pool: format!("127.20.{}.0/24", 1 + index % 250),
            ports: ports.into_iter().collect(),
        };
        let mut gw = GatewayProcess::start(dir, &opts)?;
        gw.wait_ready(&self.client, Duration::from_secs(30)).await?;
        Ok(Running {
            gw,
            test_docs,
            all_docs,
            test_file,
        })
    }

    /// Applies a mutation to the test manifests and rewrites the test file. Returns the check
    /// that the gateway has read it, when the mutation bumps a generation.
    async fn rewrite(&self, run: &mut Running, m: &Mutation) -> TestResultOf<Option<Check>> {
        let seen = m.apply(&mut run.test_docs).map_err(TestError::Fail)?;
        let path = &run.test_file;
        std::fs::write(path, to_yaml(&run.test_docs)?).map_err(|e| Error::io(path, e))?;
        Ok(seen)
    }

    /// Polls the status file until every check holds, or fails with the first failing one.
    async fn wait_checks(&self, run: &Running, checks: &[Check]) -> TestResultOf<()> {
        let deadline = Instant::now() + self.opts.deadline.max(Duration::from_secs(5));
        let mut empty_seen = vec![false; checks.len()];
        let mut last;
        loop {
            match Snapshot::load(&run.gw.status_file) {
                Ok(s) => {
                    let mut failed = None;
                    for (i, c) in checks.iter().enumerate() {
                        if let Err(e) = c.eval(&s, &mut empty_seen[i]) {
                            failed = Some(e);
                            break;
                        }
                    }
                    match failed {
                        None => return Ok(()),
                        Some(e) => last = e,
                    }
                }
                Err(e) => last = format!("status file: {e}"),
            }
            if Instant::now() > deadline {
                return fail(last);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn run_status(&self, spec: &TestSpec, run: &mut Running) -> TestResultOf<String> {
        let phases = status_plan(spec.name);
        if phases.is_empty() {
            return Err(TestError::Skip("no status plan".into()));
        }
        let mut n = 0;
        for (i, phase) in phases.iter().enumerate() {
            let mut checks = Vec::new();
            if let Some(m) = &phase.mutation {
                // First the gateway must have read the change, so that the checks below judge
                // the new generation and not the status from before it.
                checks.extend(self.rewrite(run, m).await?);
            }
            checks.extend(phase.checks.iter().cloned());
            self.wait_checks(run, &checks)
                .await
                .map_err(|e| prefix(e, &format!("phase {}", i + 1)))?;
            n += checks.len();
        }
        Ok(format!("{n} status checks"))
    }

    /// Waits until each Gateway of the test has an address and ready listeners, and its routes
    /// (from the test manifests) are Accepted; returns where each Gateway is reachable.
    async fn preconditions(
        &self,
        spec: &TestSpec,
        rows: &[&Case],
        run: &Running,
    ) -> TestResultOf<BTreeMap<String, IpAddr>> {
        let gateways: BTreeSet<&str> = rows.iter().map(|c| c.gateway.as_str()).collect();
        let rejected = rejected_routes(spec.name);
        let deadline = Instant::now() + self.opts.deadline.max(Duration::from_secs(5));
        let mut addrs = BTreeMap::new();
        for g in gateways {
            let gref = ObjRef::infra(g);
            let routes: Vec<&Value> = run
                .test_docs
                .iter()
                .filter(|d| kind(d) == "HTTPRoute" && !rejected.contains(&name(d)))
                .filter(|d| !parent_refs_to(d, &gref).is_empty())
                .collect();
            loop {
                let r = Snapshot::load(&run.gw.status_file)
                    .map_err(|e| format!("status file: {e}"))
                    .and_then(|s| {
                        let ip = s.gateway_address(&gref)?;
                        s.gateway_listeners_ready(&gref)?;
                        for route in &routes {
                            s.route_accepted(route, &gref, &self.opts.controller)?;
                        }
                        ip.parse::<IpAddr>()
                            .map_err(|e| format!("Gateway {gref} address {ip:?}: {e}"))
                    });
                match r {
                    Ok(ip) => {
                        addrs.insert(g.to_string(), ip);
                        break;
                    }
                    Err(e) if Instant::now() > deadline => {
                        return fail(format!("precondition: {e}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
        self.wait_checks(run, &traffic_checks(spec.name))
            .await
            .map_err(|e| prefix(e, "status"))?;
        Ok(addrs)
    }

    fn target(&self, run: &Running, case: &Case, ip: IpAddr) -> TestResultOf<Target> {
        let gw = run
            .all_docs
            .iter()
            .find(|d| kind(d) == "Gateway" && namespace(d) == INFRA_NS && name(d) == case.gateway)
            .ok_or_else(|| {
                TestError::Fail(format!("Gateway {} not in the manifests", case.gateway))
            })?;
        let listeners = gw["spec"]["listeners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let listener = match case.listeners.first() {
            Some(section) => listeners.iter().find(|l| l["name"] == section.as_str()),
            None => listeners.first(),
        }
        .ok_or_else(|| TestError::Fail(format!("Gateway {} has no such listener", case.gateway)))?;
        let listener_port = listener["port"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| TestError::Fail("listener without port".into()))?;
        let local_port = *run
            .gw
            .port_map
            .get(&listener_port)
            .ok_or_else(|| TestError::Fail(format!("port {listener_port} not mapped")))?;
        Ok(Target {
            ip,
            listener_port,
            local_port,
        })
    }

    fn request(&self, case: &Case, target: &Target, exp: &Expectation) -> RequestSpec {
        let host = if case.host.is_empty() {
            if target.listener_port == case.scheme.default_port() {
                target.ip.to_string()
            } else {
                format!("{}:{}", target.ip, target.listener_port)
            }
        } else {
            case.host.clone()
        };
        let mut headers = case.headers.clone();
        let echo_set = case
            .echo_set
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",");
        headers.push(("X-Echo-Set-Header".into(), echo_set));
        RequestSpec {
            scheme: case.scheme,
            connect: SocketAddr::new(target.ip, target.local_port),
            sni: if case.sni().is_empty() {
                crate::cases::strip_port(&host).to_string()
            } else {
                case.sni()
            },
            host,
            method: case.method.clone(),
            path: exp.request_path.clone(),
            headers,
            timeout: Duration::from_secs(10),
        }
    }

    /// Sends the case until it matches 3 times in a row or `deadline` passes.
    async fn eventually(
        &self,
        case: &Case,
        target: &Target,
        deadline: Duration,
        mirror_id: Option<&str>,
    ) -> std::result::Result<(), String> {
        let end = Instant::now() + deadline;
        let mut streak = 0;
        let mut last = String::from("no attempt");
        loop {
            let uuid = random_id();
            let mut exp = Expectation::for_case(case, &uuid);
            if let Some(id) = mirror_id {
                let sep = |p: &str| if p.contains('?') { '&' } else { '?' };
                exp.request_path = format!(
                    "{}{}{MIRROR_PARAM}={id}",
                    exp.request_path,
                    sep(&exp.request_path)
                );
                exp.backend_path = format!(
                    "{}{}{MIRROR_PARAM}={id}",
                    exp.backend_path,
                    sep(&exp.backend_path)
                );
            }
            let req = self.request(case, target, &exp);
            match self.client.send(&req).await {
                Ok(obs) => match compare(case, &exp, &obs) {
                    Ok(()) => {
                        streak += 1;
                        if streak >= 3 {
                            return Ok(());
                        }
                    }
                    Err(e) => {
                        streak = 0;
                        last = format!("{e} (got {})", obs.summary());
                    }
                },
                Err(e) => {
                    streak = 0;
                    last = e;
                }
            }
            if Instant::now() > end {
                return Err(format!("{}: {last}", case.describe()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn run_traffic(
        &self,
        spec: &TestSpec,
        rows: &[&Case],
        run: &mut Running,
    ) -> TestResultOf<String> {
        if rows.iter().any(|c| c.gateway.is_empty()) {
            return Err(TestError::Skip("cases.tsv rows name no gateway".into()));
        }
        let addrs = self.preconditions(spec, rows, run).await?;
        let (before, after): (Vec<&Case>, Vec<&Case>) = if spec.name == "HTTPRouteReferenceGrant" {
            rows.iter()
                .partition(|c| !c.subtest.contains("after deleting"))
        } else {
            (rows.to_vec(), Vec::new())
        };
        let mut failures = Vec::new();
        let mut deadline = self.opts.deadline;
        for (phase, cases) in [before, after].into_iter().enumerate() {
            if phase == 1 {
                if cases.is_empty() {
                    continue;
                }
                self.rewrite(run, &Mutation::DeleteKind("ReferenceGrant"))
                    .await?;
            }
            for case in cases {
                let ip = addrs[&case.gateway];
                let target = self.target(run, case, ip)?;
                let r = self.run_case(case, &target, deadline).await;
                if let Err(e) = r {
                    failures.push(e);
                    // The gateway had its chance to converge; spend less time on the rest.
                    deadline = Duration::from_secs(3);
                }
            }
        }
        if failures.is_empty() {
            match spec.name {
                "HTTPRouteWeight" => self.weight_distribution(run, rows[0], &addrs).await?,
                "HTTPRouteRequestHeaderModifierBackendWeights" => {
                    self.backend_weights(run, rows[0], &addrs).await?
                }
                _ => {}
            }
        }
        if failures.is_empty() {
            Ok(format!("{} cases", rows.len()))
        } else {
            fail(format!(
                "{} of {} cases failed: {}",
                failures.len(),
                rows.len(),
                failures.join(" | ")
            ))
        }
    }

    async fn run_case(
        &self,
        case: &Case,
        target: &Target,
        deadline: Duration,
    ) -> std::result::Result<(), String> {
        if case.mirrored_to.is_empty() {
            return self.eventually(case, target, deadline, None).await;
        }
        let id = random_id();
        self.eventually(case, target, deadline, Some(&id)).await?;
        for m in &case.mirrored_to {
            match m.percent {
                None => {
                    let end = Instant::now() + Duration::from_secs(5);
                    while !self.backends.saw_request(&m.namespace, &m.name, &id) {
                        if Instant::now() > end {
                            return Err(format!(
                                "{}: mirror {}/{} never saw request id {id}",
                                case.describe(),
                                m.namespace,
                                m.name
                            ));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Some(percent) => self.mirror_percentage(case, target, m, percent).await?,
            }
        }
        Ok(())
    }

    async fn mirror_percentage(
        &self,
        case: &Case,
        target: &Target,
        m: &crate::cases::Mirror,
        percent: f64,
    ) -> std::result::Result<(), String> {
        const N: usize = 200;
        let mut ids = Vec::with_capacity(N);
        for _ in 0..N {
            let id = random_id();
            let mut exp = Expectation::for_case(case, &id);
            let sep = if exp.request_path.contains('?') {
                '&'
            } else {
                '?'
            };
            exp.request_path = format!("{}{sep}{MIRROR_PARAM}={id}", exp.request_path);
            let req = self.request(case, target, &exp);
            let obs = self.client.send(&req).await?;
            if obs.status != 200 {
                return Err(format!(
                    "{}: mirror run got {}",
                    case.describe(),
                    obs.summary()
                ));
            }
            ids.push(id);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = ids
            .iter()
            .filter(|id| self.backends.saw_request(&m.namespace, &m.name, id))
            .count();
        let share = 100.0 * seen as f64 / N as f64;
        if (share - percent).abs() > 10.0 {
            return Err(format!(
                "{}: {share:.1}% of {N} requests mirrored to {}/{}, want {percent}% ±10",
                case.describe(),
                m.namespace,
                m.name
            ));
        }
        Ok(())
    }

    /// HTTPRouteWeight: 500 requests, 10 at a time; each backend's share within ±5 points of
    /// its weight (weight 0 gets nothing); up to 5 tries.
    async fn weight_distribution(
        &self,
        run: &Running,
        case: &Case,
        addrs: &BTreeMap<String, IpAddr>,
    ) -> TestResultOf<()> {
        let route = run
            .test_docs
            .iter()
            .find(|d| kind(d) == "HTTPRoute")
            .ok_or_else(|| TestError::Fail("no HTTPRoute in the test manifests".into()))?;
        let weights: Vec<(String, f64)> = route["spec"]["rules"][0]["backendRefs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    b["name"].as_str().unwrap_or("").to_string(),
                    b["weight"].as_f64().unwrap_or(1.0),
                )
            })
            .collect();
        let total: f64 = weights.iter().map(|(_, w)| w).sum();
        let target = self.target(run, case, addrs[&case.gateway])?;
        let mut last = String::new();
        for _ in 0..5 {
            let counts = self.distribution(case, &target, 500, &weights).await;
            match counts {
                Err(e) => last = e,
                Ok(counts) => {
                    let mut bad = Vec::new();
                    for (name, w) in &weights {
                        let got = counts.get(name).copied().unwrap_or(0);
                        let share = 100.0 * got as f64 / 500.0;
                        let want = 100.0 * w / total;
                        if (*w == 0.0 && got > 0) || (share - want).abs() > 5.0 {
                            bad.push(format!("{name} {share:.1}% want {want:.1}%"));
                        }
                    }
                    if bad.is_empty() {
                        return Ok(());
                    }
                    last = format!("distribution {counts:?}: {}", bad.join(", "));
                }
            }
        }
        fail(last)
    }

    async fn distribution(
        &self,
        case: &Case,
        target: &Target,
        total: usize,
        weights: &[(String, f64)],
    ) -> std::result::Result<BTreeMap<String, usize>, String> {
        let mut set = tokio::task::JoinSet::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut sent = 0;
        let mut done = 0;
        while done < total {
            while sent < total && set.len() < 10 {
                let exp = Expectation::for_case(case, &random_id());
                let mut req = self.request(case, target, &exp);
                req.headers.push(("X-Jitter".into(), random_id()));
                let client = self.client.clone();
                set.spawn(async move { client.send(&req).await });
                sent += 1;
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            done += 1;
            let obs: Observed = joined.map_err(|e| e.to_string())??;
            let pod = obs.echo.as_ref().map(|e| e.pod.clone()).unwrap_or_default();
            if obs.status != 200 {
                return Err(format!("weighted request got {}", obs.summary()));
            }
            let backend = weights
                .iter()
                .map(|(n, _)| n)
                .filter(|n| pod.starts_with(&format!("{n}-")))
                .max_by_key(|n| n.len())
                .cloned()
                .unwrap_or(pod);
            *counts.entry(backend).or_default() += 1;
        }
        Ok(counts)
    }

    /// HTTPRouteRequestHeaderModifierBackendWeights: each backendRef sets `Backend: <name>`;
    /// every response must come from the pod that header names, and both backends must serve.
    async fn backend_weights(
        &self,
        run: &Running,
        case: &Case,
        addrs: &BTreeMap<String, IpAddr>,
    ) -> TestResultOf<()> {
        let target = self.target(run, case, addrs[&case.gateway])?;
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let exp = Expectation::for_case(case, &random_id());
            let req = self.request(case, &target, &exp);
            let obs = self.client.send(&req).await.map_err(TestError::Fail)?;
            let Some(echo) = obs.echo.as_ref().filter(|_| obs.status == 200) else {
                return fail(format!("backend-weights request got {}", obs.summary()));
            };
            let header = echo
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("backend"))
                .map(|(_, v)| v.join(","))
                .unwrap_or_default();
            if header.is_empty() || !echo.pod.starts_with(&format!("{header}-")) {
                return fail(format!("pod {:?} saw Backend header {header:?}", echo.pod));
            }
            seen.insert(header);
            if seen.len() >= 2 {
                return Ok(());
            }
        }
        fail(format!("only backends {seen:?} served 50 requests"))
    }
}

/// Query parameter that tags mirrored requests.
pub const MIRROR_PARAM: &str = "gateway-api-conformance-request-id";

fn random_id() -> String {
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

fn prefix(e: TestError, p: &str) -> TestError {
    match e {
        TestError::Fail(s) => TestError::Fail(format!("{p}: {s}")),
        other => other,
    }
}

/// `N passed, M failed[, K skipped]`.
pub fn summary_line(results: &[TestResult]) -> String {
    let count = |o| results.iter().filter(|r| r.outcome == o).count();
    let skipped = count(Outcome::Skip);
    let mut s = format!(
        "{} passed, {} failed",
        count(Outcome::Pass),
        count(Outcome::Fail)
    );
    if skipped > 0 {
        s.push_str(&format!(", {skipped} skipped"));
    }
    s
}

/// The `test | result | detail` table followed by the summary line.
pub fn render(results: &[TestResult]) -> String {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!("{:width$} | result | detail\n", "test");
    out.push_str(&format!("{}-|--------|-------\n", "-".repeat(width)));
    for r in results {
        let outcome = match r.outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        };
        let detail = r.detail.replace('\n', " ⏎ ");
        out.push_str(&format!("{:width$} | {outcome:6} | {detail}\n", r.name));
    }
    out.push_str(&summary_line(results));
    out.push('\n');
    out
}

/// Names of tests in `expected` that did not pass (failed, skipped or not run).
pub fn unmet_expectations(results: &[TestResult], expected: &[String]) -> Vec<String> {
    expected
        .iter()
        .filter(|name| {
            !results
                .iter()
                .any(|r| &r.name == *name && r.outcome == Outcome::Pass)
        })
        .cloned()
        .collect()
}

/// Reads an expected-pass file.
pub fn read_expected(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(crate::cases::parse_expected(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, outcome: Outcome) -> TestResult {
        TestResult {
            name: name.into(),
            outcome,
            detail: "d\ne".into(),
        }
    }

    #[test]
    fn table_and_summary() {
        let results = vec![
            r("A", Outcome::Pass),
            r("B", Outcome::Fail),
            r("C", Outcome::Skip),
        ];
        assert_eq!(summary_line(&results), "1 passed, 1 failed, 1 skipped");
        assert_eq!(summary_line(&results[..2]), "1 passed, 1 failed");
        let table = render(&results);
        assert!(table.starts_with("test | result | detail\n"));
        assert!(table.contains("B    | FAIL   | d ⏎ e"));
        assert!(table.ends_with("1 passed, 1 failed, 1 skipped\n"));
        assert_eq!(
            unmet_expectations(&results, &["A".into(), "B".into(), "Z".into()]),
            vec!["B".to_string(), "Z".to_string()]
        );
    }
}
