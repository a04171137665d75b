//! Runs tests: config directory, gateway process, preconditions, status checks, traffic.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::backends::Backends;
use crate::cases::{Case, TestKind, TestSpec, find_test, parse_cases};
use crate::certs::{INFRA_NS, SuiteCerts};
use crate::client::{Client, RequestSpec, websocket_echo};
use crate::compare::{Expectation, Observed, compare};
use crate::error::{Error, Result};
use crate::frontend;
use crate::gateway::{GatewayOptions, GatewayProcess};
use crate::manifests::{
    endpoint_slices, fill_controller_name, gateway_class, kind, listener_ports, load_docs, name,
    namespace, normalize, to_yaml,
};
use crate::plan::{
    Check, Mutation, expand_rows, rejected_routes, row_quirks, status_plan, traffic_checks,
};
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
            TestKind::WebSocket => self.run_websocket(spec, &run).await,
            TestKind::ClientCert => self.run_client_cert(spec, rows, &run).await,
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
        self.backends
            .ensure(&all_docs, &self.certs.documents())
            .await?;
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

    /// Waits until each of `gateways` (infra namespace) has an address and ready listeners, and
    /// its routes (from the test manifests) are Accepted, then for the test's other status checks
    /// ([`traffic_checks`]); returns where each Gateway is reachable.
    async fn preconditions(
        &self,
        spec: &TestSpec,
        gateways: BTreeSet<&str>,
        run: &Running,
    ) -> TestResultOf<BTreeMap<String, IpAddr>> {
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
        self.wait_checks(run, &traffic_checks(spec.name, &self.opts.controller))
            .await
            .map_err(|e| prefix(e, "status"))?;
        Ok(addrs)
    }

    fn target(&self, run: &Running, case: &Case, ip: IpAddr) -> TestResultOf<Target> {
        self.target_for(
            run,
            &case.gateway,
            case.listeners.first().map(String::as_str),
            ip,
        )
    }

    /// Where listener `section` (default: the first) of Gateway `gateway` is reachable.
    fn target_for(
        &self,
        run: &Running,
        gateway: &str,
        section: Option<&str>,
        ip: IpAddr,
    ) -> TestResultOf<Target> {
        let gw = run
            .all_docs
            .iter()
            .find(|d| kind(d) == "Gateway" && namespace(d) == INFRA_NS && name(d) == gateway)
            .ok_or_else(|| TestError::Fail(format!("Gateway {gateway} not in the manifests")))?;
        let listeners = gw["spec"]["listeners"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let listener = match section {
            Some(section) => listeners.iter().find(|l| l["name"] == section),
            None => listeners.first(),
        }
        .ok_or_else(|| TestError::Fail(format!("Gateway {gateway} has no such listener")))?;
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
            body: bytes::Bytes::new(),
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
        self.eventually_with(&self.client, case, target, deadline, mirror_id)
            .await
    }

    /// [`Ctx::eventually`] with another client (e.g. one presenting a client certificate).
    async fn eventually_with(
        &self,
        client: &Client,
        case: &Case,
        target: &Target,
        deadline: Duration,
        mirror_id: Option<&str>,
    ) -> std::result::Result<(), String> {
        if case.expects_failure() {
            return self.expect_failure(client, case, target, deadline).await;
        }
        let client_cert = match row_quirks(case).backend_client_cert {
            Some(secret) => Some(
                self.certs
                    .secret(secret)
                    .map(|s| s.cert_pem.clone())
                    .ok_or_else(|| format!("no generated Secret {secret}"))?,
            ),
            None => None,
        };
        let end = Instant::now() + deadline;
        let mut streak = 0;
        let mut last = String::from("no attempt");
        loop {
            let uuid = random_id();
            let mut exp = Expectation::for_case(case, &uuid);
            exp.client_cert.clone_from(&client_cert);
            if let Some(id) = mirror_id {
                exp = tagged(exp, id);
            }
            let req = self.request(case, target, &exp);
            match client.send(&req).await {
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

    /// Upstream `MakeRequestAndExpectFailure` (`WaitForConsistentFailureResponse`): the request
    /// must come back with a status other than 200, 5 times in a row; a request that gets no
    /// response, or a 408/504, is "not ready yet" and restarts the count; a 200 fails at once.
    async fn expect_failure(
        &self,
        client: &Client,
        case: &Case,
        target: &Target,
        deadline: Duration,
    ) -> std::result::Result<(), String> {
        const THRESHOLD: usize = 5;
        let end = Instant::now() + deadline;
        let mut streak = 0;
        loop {
            let exp = Expectation::for_case(case, &random_id());
            let req = self.request(case, target, &exp);
            match client.send(&req).await {
                Ok(obs) if obs.status == 200 => {
                    return Err(format!(
                        "{}: status 200, want a failure (got {})",
                        case.describe(),
                        obs.summary()
                    ));
                }
                Ok(obs) if obs.status != 408 && obs.status != 504 => {
                    streak += 1;
                    if streak >= THRESHOLD {
                        return Ok(());
                    }
                    continue;
                }
                Ok(obs) => {
                    streak = 0;
                    if Instant::now() > end {
                        return Err(format!(
                            "{}: timeout status {} (not ready yet)",
                            case.describe(),
                            obs.status
                        ));
                    }
                }
                Err(e) => {
                    streak = 0;
                    if Instant::now() > end {
                        return Err(format!("{}: {e}", case.describe()));
                    }
                }
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
        let expanded = expand_rows(spec.name, rows);
        let rows: Vec<&Case> = expanded.iter().collect();
        let rows = rows.as_slice();
        let gateways = rows.iter().map(|c| c.gateway.as_str()).collect();
        let addrs = self.preconditions(spec, gateways, run).await?;
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
                    // Upstream ExpectMirroredRequest: the mirror pods' logs must show the
                    // request (polled every 100 ms).
                    let end = Instant::now() + self.opts.deadline.max(Duration::from_secs(5));
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

    /// Upstream HTTPRouteRequestPercentageMirror: up to 5 times, send 500 requests, 10 at a
    /// time, each repeated until it matches the row once; then the mirror pods must have
    /// received between 95 % and 105 % of `500 × percent / 100` of them (every mirrored copy
    /// counts, as every log line does upstream). The harness tells batches apart by the
    /// request-id each request carries.
    async fn mirror_percentage(
        &self,
        case: &Case,
        target: &Target,
        m: &crate::cases::Mirror,
        percent: f64,
    ) -> std::result::Result<(), String> {
        const TOTAL: usize = 500;
        const CHECKS: usize = 5;
        let (min, max) = mirror_bounds(TOTAL, percent);
        let mut last = String::new();
        for check in 1..=CHECKS {
            let ids = self.mirror_batch(case, target, TOTAL).await?;
            // Mirrored copies may trail the primary response a little.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mirrored = self.backends.count_requests(&m.namespace, &m.name, |uri| {
                request_id(uri).is_some_and(|id| ids.contains(id))
            });
            if (min..=max).contains(&(mirrored as f64)) {
                return Ok(());
            }
            last = format!(
                "{}: {mirrored} of {TOTAL} requests mirrored to {}/{}, want {min:.2}..={max:.2} \
                 ({percent}% of {TOTAL} ±{MIRROR_TOLERANCE}%; {check} tries)",
                case.describe(),
                m.namespace,
                m.name
            );
            if check < CHECKS {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Err(last)
    }

    /// Sends `total` tagged requests of `case`, 10 at a time, each until it matches once
    /// (upstream `MakeRequestAndExpectEventuallyConsistentResponse` with one success required);
    /// returns their request-ids.
    async fn mirror_batch(
        &self,
        case: &Case,
        target: &Target,
        total: usize,
    ) -> std::result::Result<HashSet<String>, String> {
        let mut set = tokio::task::JoinSet::new();
        let mut ids = HashSet::with_capacity(total);
        let deadline = self.opts.deadline;
        let mut sent = 0;
        while sent < total || !set.is_empty() {
            while sent < total && set.len() < 10 {
                let id = random_id();
                let exp = tagged(Expectation::for_case(case, &id), &id);
                let req = self.request(case, target, &exp);
                let client = self.client.clone();
                let case = case.clone();
                set.spawn(async move {
                    let end = Instant::now() + deadline;
                    loop {
                        let last = match client.send(&req).await {
                            Ok(obs) => match compare(&case, &exp, &obs) {
                                Ok(()) => return Ok(()),
                                Err(e) => format!("{e} (got {})", obs.summary()),
                            },
                            Err(e) => e,
                        };
                        if Instant::now() > end {
                            return Err(format!("{}: mirror run: {last}", case.describe()));
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
                ids.insert(id);
                sent += 1;
            }
            if let Some(joined) = set.join_next().await {
                joined.map_err(|e| e.to_string())??;
            }
        }
        Ok(ids)
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

    /// HTTPRouteRequestHeaderModifierBackendWeights, as upstream: after the row holds, 100 more
    /// requests, and every response must be an echo that saw exactly one `Backend` header whose
    /// value prefixes the serving pod's name (each backendRef's filter sets its own name). Beyond
    /// upstream, both backends (weight 10 each) must have served some of the 100.
    async fn backend_weights(
        &self,
        run: &Running,
        case: &Case,
        addrs: &BTreeMap<String, IpAddr>,
    ) -> TestResultOf<()> {
        const REQUESTS: usize = 100;
        let target = self.target(run, case, addrs[&case.gateway])?;
        let mut seen = BTreeSet::new();
        for i in 1..=REQUESTS {
            let exp = Expectation::for_case(case, &random_id());
            let req = self.request(case, &target, &exp);
            let obs = self
                .client
                .send(&req)
                .await
                .map_err(|e| TestError::Fail(format!("backend-weights request {i}: {e}")))?;
            let Some(echo) = obs.echo.as_ref() else {
                return fail(format!(
                    "backend-weights request {i}: no echo body, got {}",
                    obs.summary()
                ));
            };
            let values = echo
                .headers
                .get("Backend")
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let [backend] = values else {
                return fail(format!(
                    "backend-weights request {i}: want a single Backend header, backend saw \
                     {values:?} (got {})",
                    obs.summary()
                ));
            };
            if !echo.pod.starts_with(backend.as_str()) {
                return fail(format!(
                    "backend-weights request {i}: served by pod {:?} but the Backend header \
                     set for it is {backend:?}",
                    echo.pod
                ));
            }
            seen.insert(backend.clone());
        }
        if seen.len() < 2 {
            return fail(format!(
                "only backends {seen:?} served {REQUESTS} requests (weights 10/10)"
            ));
        }
        Ok(())
    }

    /// HTTPRouteBackendProtocolWebSocket, as upstream: once `same-namespace` and the route are
    /// accepted, a WebSocket to `ws://<address>:<port>/ws` (Host with the port, as x/net's
    /// `Dial` sends it) must echo a text and a binary message, 3 times in a row (upstream
    /// `AwaitConvergence`: 1 s between failed attempts) within the deadline.
    /// Waits for the Gateway's address only (upstream `WaitForGatewayAddress`).
    async fn wait_address(&self, run: &Running, gateway: &str) -> TestResultOf<IpAddr> {
        let gref = ObjRef::infra(gateway);
        let deadline = Instant::now() + self.opts.deadline.max(Duration::from_secs(5));
        loop {
            let r = Snapshot::load(&run.gw.status_file)
                .map_err(|e| format!("status file: {e}"))
                .and_then(|s| s.gateway_address(&gref))
                .and_then(|ip| {
                    ip.parse::<IpAddr>()
                        .map_err(|e| format!("Gateway {gref} address {ip:?}: {e}"))
                });
            match r {
                Ok(ip) => return Ok(ip),
                Err(e) if Instant::now() > deadline => return fail(format!("precondition: {e}")),
                Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// The frontend client-certificate tests ([`crate::frontend`]).
    async fn run_client_cert(
        &self,
        spec: &TestSpec,
        rows: &[&Case],
        run: &Running,
    ) -> TestResultOf<String> {
        let Some(plan) = frontend::plan(spec.name) else {
            return Err(TestError::Skip("no client-certificate plan".into()));
        };
        let ip = if plan.accepted {
            self.preconditions(spec, [plan.gateway].into_iter().collect(), run)
                .await?[plan.gateway]
        } else {
            self.wait_address(run, plan.gateway).await?
        };
        self.wait_checks(run, &plan.checks)
            .await
            .map_err(|e| prefix(e, "status"))?;
        let mut failures = Vec::new();
        let mut deadline = self.opts.deadline;
        for probe in &plan.probes {
            let target = self.target_for(run, plan.gateway, Some(probe.listener), ip)?;
            let identity = match probe.cert.secret() {
                None => None,
                Some(name) => Some(self.certs.secret(name).ok_or_else(|| {
                    TestError::Fail(format!("harness: no generated Secret {name}"))
                })?),
            };
            let (client, asked) = Client::with_client_cert(
                self.certs.ca_pem(),
                identity.map(|s| (s.cert_pem.as_str(), s.key_pem.as_str())),
            )?;
            let result = if probe.succeeds {
                let case = rows
                    .iter()
                    .find(|c| {
                        c.scheme == probe.scheme && c.host == probe.host && c.status.accepts(200)
                    })
                    .ok_or_else(|| {
                        TestError::Fail(format!(
                            "harness: no 200 row in cases.tsv for {}",
                            probe.describe()
                        ))
                    })?;
                self.eventually_with(&client, case, &target, deadline, None)
                    .await
            } else {
                let req = RequestSpec {
                    scheme: probe.scheme,
                    connect: SocketAddr::new(target.ip, target.local_port),
                    host: probe.host.to_string(),
                    sni: probe.host.to_string(),
                    method: "GET".into(),
                    path: "/".into(),
                    headers: Vec::new(),
                    timeout: Duration::from_secs(10),
                    body: bytes::Bytes::new(),
                };
                match client.send(&req).await {
                    Ok(obs) => Err(format!("got a response: {}", obs.summary())),
                    Err(_) if identity.is_some() && asked.load(Ordering::SeqCst) == 0 => {
                        Err("failed, but the gateway never asked for the client certificate".into())
                    }
                    Err(_) => Ok(()),
                }
            };
            if let Err(e) = result {
                failures.push(format!("{}: {e}", probe.describe()));
                // The gateway had its chance to converge; spend less time on the rest.
                deadline = Duration::from_secs(3);
            }
        }
        if failures.is_empty() {
            Ok(format!(
                "{} probes, {} status checks",
                plan.probes.len(),
                plan.checks.len()
            ))
        } else {
            fail(format!(
                "{} of {} probes failed: {}",
                failures.len(),
                plan.probes.len(),
                failures.join(" | ")
            ))
        }
    }

    async fn run_websocket(&self, spec: &TestSpec, run: &Running) -> TestResultOf<String> {
        const GATEWAY: &str = "same-namespace";
        let addrs = self
            .preconditions(spec, [GATEWAY].into_iter().collect(), run)
            .await?;
        let target = self.target_for(run, GATEWAY, None, addrs[GATEWAY])?;
        let host = SocketAddr::new(target.ip, target.listener_port).to_string();
        let origin = format!(
            "ws://gateway/{}/websocket_connection_should_reach_backend",
            spec.name.to_ascii_lowercase()
        );
        let connect = SocketAddr::new(target.ip, target.local_port);
        let end = Instant::now() + self.opts.deadline;
        let mut streak = 0;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match websocket_echo(connect, &host, &origin, Duration::from_secs(10)).await {
                Ok(()) => {
                    streak += 1;
                    if streak >= 3 {
                        return Ok(format!(
                            "websocket echoed 3 times in a row ({attempts} tries)"
                        ));
                    }
                    continue;
                }
                Err(e) if Instant::now() > end => {
                    return fail(format!(
                        "GET /ws host={host} (websocket): {e} ({attempts} tries)"
                    ));
                }
                Err(_) => streak = 0,
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Query parameter that tags mirrored requests.
pub const MIRROR_PARAM: &str = "gateway-api-conformance-request-id";

/// Relative tolerance of the mirrored count, in percent (upstream `tolerancePercentage`).
const MIRROR_TOLERANCE: f64 = 5.0;

/// The accepted range of mirrored requests out of `total` for a mirror `percent`: the
/// expected count ± [`MIRROR_TOLERANCE`] % of it.
fn mirror_bounds(total: usize, percent: f64) -> (f64, f64) {
    let expected = total as f64 * percent / 100.0;
    (
        expected * (1.0 - MIRROR_TOLERANCE / 100.0),
        expected * (1.0 + MIRROR_TOLERANCE / 100.0),
    )
}

/// Appends `MIRROR_PARAM=<id>` to the request and expected backend paths (not to an empty
/// expected path, which stands for a reply the backend never sees).
fn tagged(mut exp: Expectation, id: &str) -> Expectation {
    let tag = |p: &str| {
        let sep = if p.contains('?') { '&' } else { '?' };
        format!("{p}{sep}{MIRROR_PARAM}={id}")
    };
    exp.request_path = tag(&exp.request_path);
    if !exp.backend_path.is_empty() {
        exp.backend_path = tag(&exp.backend_path);
    }
    exp
}

/// The `MIRROR_PARAM` value of a RequestURI.
fn request_id(uri: &str) -> Option<&str> {
    let (_, query) = uri.split_once('?')?;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(MIRROR_PARAM)?.strip_prefix('='))
}

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

    /// A stand-in gateway on 127.0.0.1: forwards every request to `primary` and, for every
    /// `every`-th one, first sends a copy to `mirror`.
    async fn mirroring_proxy(primary: SocketAddr, mirror: SocketAddr, every: usize) -> SocketAddr {
        use bytes::Bytes;
        use http_body_util::{BodyExt, Full};
        use hyper_util::rt::TokioIo;
        use std::sync::atomic::{AtomicUsize, Ordering};
        async fn forward(
            to: SocketAddr,
            parts: &http::request::Parts,
        ) -> Option<http::Response<Full<Bytes>>> {
            let stream = tokio::net::TcpStream::connect(to).await.ok()?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .ok()?;
            tokio::spawn(conn);
            let mut req = http::Request::builder()
                .method(parts.method.clone())
                .uri(parts.uri.clone());
            for (k, v) in &parts.headers {
                req = req.header(k, v);
            }
            let resp = send
                .send_request(req.body(Full::new(Bytes::new())).ok()?)
                .await
                .ok()?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await.ok()?.to_bytes();
            Some(http::Response::from_parts(parts, Full::new(body)))
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let counter = std::sync::Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let counter = counter.clone();
                            async move {
                                let (parts, _) = req.into_parts();
                                if counter.fetch_add(1, Ordering::SeqCst).is_multiple_of(every) {
                                    let _ = forward(mirror, &parts).await;
                                }
                                let resp = forward(primary, &parts).await.unwrap_or_else(|| {
                                    let mut r = http::Response::new(Full::new(Bytes::new()));
                                    *r.status_mut() = http::StatusCode::BAD_GATEWAY;
                                    r
                                });
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn percentage_mirror_counts_the_mirrored_share() {
        let docs = crate::manifests::parse_docs(
            r#"
kind: Deployment
metadata: {name: primary, namespace: ns}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: primary}}
    spec:
      containers: [{name: c, image: echo-basic:v1}]
---
kind: Service
metadata: {name: primary, namespace: ns}
spec:
  selector: {app: primary}
  ports: [{port: 8080, targetPort: 0}]
---
kind: Deployment
metadata: {name: mirror, namespace: ns}
spec:
  replicas: 1
  template:
    metadata: {labels: {app: mirror}}
    spec:
      containers: [{name: c, image: echo-basic:v1}]
---
kind: Service
metadata: {name: mirror, namespace: ns}
spec:
  selector: {app: mirror}
  ports: [{port: 8080, targetPort: 0}]
"#,
            "c",
            "test",
        )
        .expect("docs");
        let mut backends = Backends::new();
        backends.ensure(&docs, &[]).await.expect("pods");
        let at = |dep: &str| {
            let p = &backends.pods("ns", dep)[0];
            SocketAddr::new(p.ip(), p.ports()[0])
        };
        let gateway = mirroring_proxy(at("primary"), at("mirror"), 5).await;
        let certs = SuiteCerts::generate().expect("certs");
        let client = Client::new(certs.ca_pem()).expect("client");
        let mut opts = RunnerOptions::new(PathBuf::from("/nonexistent"));
        opts.deadline = Duration::from_secs(5);
        let ctx = Ctx {
            opts: &opts,
            certs,
            client,
            backends,
            base: Vec::new(),
        };
        let header = "test\tgateway[listeners]\tscheme\trequest_host\tmethod\trequest_path\t\
            request_headers\texpected_status\texpected_backend\texpected_namespace\t\
            backend_sees_host\tbackend_sees_path\tbackend_sees_headers\tbackend_absent_headers\t\
            response_headers\tresponse_header_alternatives\tresponse_absent_headers\t\
            redirect_location\tmirrored_to\techo_set_response_headers\tcase_name\tnotes\tsubtest";
        let row = "T\tgw\thttp\th.example\tGET\t/percent\t\t200\tprimary\tns\t\t\t\t\t\t\t\t\t\
            ns/mirror@20%\t\t\t\t";
        let cases = crate::cases::parse_cases(&format!("{header}\n{row}\n")).expect("row");
        let case = &cases[0];
        let target = Target {
            ip: gateway.ip(),
            listener_port: 80,
            local_port: gateway.port(),
        };
        let m = &case.mirrored_to[0];
        // Every 5th request is mirrored: exactly 20 %.
        ctx.mirror_percentage(case, &target, m, 20.0)
            .await
            .expect("20% mirrored");
        // 20 % is far outside 50 % ± 5 % of it, on every try.
        let err = ctx
            .mirror_percentage(case, &target, m, 50.0)
            .await
            .expect_err("not 50%");
        assert!(err.contains("mirrored to ns/mirror"), "{err}");
        assert!(err.contains("5 tries"), "{err}");
    }

    #[test]
    fn mirror_bounds_are_relative_like_upstream() {
        let (min, max) = mirror_bounds(500, 20.0);
        assert!((min - 95.0).abs() < 1e-9 && (max - 105.0).abs() < 1e-9);
        let (min, max) = mirror_bounds(500, 50.0);
        assert!((min - 237.5).abs() < 1e-9 && (max - 262.5).abs() < 1e-9);
        let (min, max) = mirror_bounds(500, 35.0);
        assert!(min > 166.0 && max < 184.0);
    }

    #[test]
    fn request_ids_tag_and_parse() {
        let exp = Expectation {
            request_path: "/mirror".into(),
            backend_path: "/mirror".into(),
            ignore_whitespace: false,
            backend_sni: String::new(),
            client_cert: None,
        };
        let t = tagged(exp, "abc");
        assert_eq!(t.request_path, format!("/mirror?{MIRROR_PARAM}=abc"));
        assert_eq!(t.backend_path, t.request_path);
        let t = tagged(
            Expectation {
                request_path: "/p?x=1".into(),
                backend_path: String::new(),
                ignore_whitespace: false,
                backend_sni: String::new(),
                client_cert: None,
            },
            "abc",
        );
        assert_eq!(t.request_path, format!("/p?x=1&{MIRROR_PARAM}=abc"));
        assert_eq!(t.backend_path, "", "an empty expected path stays empty");
        assert_eq!(request_id(&t.request_path), Some("abc"));
        assert_eq!(request_id("/p?x=1"), None);
        assert_eq!(request_id(&format!("/p?{MIRROR_PARAM}x=1")), None);
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
