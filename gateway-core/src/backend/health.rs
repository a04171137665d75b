//! Active HTTP health checks of a backend's endpoints.
//!
//! A [`HealthChecker`] runs one background task per backend with a [`HealthCheck`] policy. Every
//! `interval` it sends `GET path` to each endpoint at once (each check on a fresh connection,
//! `Connection: close` over HTTP/1.1, one stream of a fresh connection over h2c) and counts a
//! 2xx or 3xx answer within `timeout` as a success. `unhealthy_threshold` failures in a row mark
//! an endpoint unhealthy ([`EndpointHealth::set_active_healthy`]`(false)`), after which the
//! picker skips it; `healthy_threshold` successes in a row mark it healthy again. Transitions are
//! logged. Nothing here runs on the request path.
//!
//! Fresh connections are used so a check also tests that the endpoint accepts connections, and so
//! checks never take a pooled connection from, or leave one to, the proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::HttpPeer;

use crate::upstream_tls::CompiledTls;
use pingora_http::RequestHeader;
use tokio::task::{JoinHandle, JoinSet};

use super::outlier::EndpointHealth;
use crate::config::{BackendProtocol, HealthCheck};

/// The shortest time between check rounds: a zero `interval` is raised to this.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// The `User-Agent` of health check requests.
const USER_AGENT: &str = "gateway-core-health-check";

/// The running active health checks of one backend.
///
/// Dropping it stops the checks and marks every target healthy again, so endpoints whose checks
/// are removed are not left unusable. (A check finishing at the very moment of the drop could
/// still write its verdict after that reset; start a replacement checker after dropping the old
/// one when both would share the same [`EndpointHealth`]s.)
pub(crate) struct HealthChecker {
    /// The checking task; `None` if there was no Tokio runtime to start it on.
    task: Option<JoinHandle<()>>,
    /// The targets' health, restored to healthy on drop.
    targets: Vec<Arc<EndpointHealth>>,
    /// Set on drop, before the reset, so a check completing concurrently does not write.
    stopped: Arc<AtomicBool>,
}

impl HealthChecker {
    /// Starts checking `targets` of the backend `backend_name` (used in logs) over `protocol`
    /// with `cfg`. The first round runs at once; targets start healthy (or as their
    /// [`EndpointHealth`] says: the verdict is read, not assumed).
    ///
    /// Must be called within a Tokio runtime; without one, no checks run and an error is logged.
    /// A `cfg.path` that is not an origin-form path (`/...`) is logged as an error and disables
    /// the checks rather than failing every endpoint. An empty path means `/`.
    #[cfg(test)]
    pub(crate) fn start(
        backend_name: String,
        targets: Vec<(SocketAddr, Arc<EndpointHealth>)>,
        protocol: BackendProtocol,
        cfg: HealthCheck,
    ) -> HealthChecker {
        Self::start_with(backend_name, targets, protocol, None, cfg)
    }

    /// [`Self::start`] for a backend reached over TLS when `tls` is set: each check is a fresh
    /// TLS connection with the backend's settings (verification, SNI, client certificate).
    pub(crate) fn start_with(
        backend_name: String,
        targets: Vec<(SocketAddr, Arc<EndpointHealth>)>,
        protocol: BackendProtocol,
        tls: Option<CompiledTls>,
        cfg: HealthCheck,
    ) -> HealthChecker {
        let stopped = Arc::new(AtomicBool::new(false));
        let healths = targets.iter().map(|(_, h)| Arc::clone(h)).collect();
        let task = match tokio::runtime::Handle::try_current() {
            Ok(rt) => Some(rt.spawn(run(
                backend_name,
                targets,
                protocol,
                tls,
                cfg,
                Arc::clone(&stopped),
            ))),
            Err(_) => {
                tracing::error!(backend = %backend_name, "no Tokio runtime: active health checks not started");
                None
            }
        };
        HealthChecker {
            task,
            targets: healths,
            stopped,
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
        if let Some(task) = &self.task {
            task.abort();
        }
        for target in &self.targets {
            target.set_active_healthy(true);
        }
    }
}

/// One target's check state, owned by the checking task.
struct Target {
    addr: SocketAddr,
    health: Arc<EndpointHealth>,
    peer: HttpPeer,
    /// The request to send; cloned for each check.
    request: RequestHeader,
    /// Successes in a row.
    successes: u32,
    /// Failures in a row.
    failures: u32,
}

impl Target {
    /// Applies one check's outcome to the counters and, on a threshold, to the verdict.
    fn apply(&mut self, outcome: Result<u16, String>, backend: &str, cfg: &HealthCheck) {
        match outcome {
            Ok(status) if (200..400).contains(&status) => {
                self.failures = 0;
                self.successes = self.successes.saturating_add(1);
                if !self.health.active_healthy() && self.successes >= cfg.healthy_threshold.max(1) {
                    self.health.set_active_healthy(true);
                    tracing::info!(backend, endpoint = %self.addr, status, "active health check: endpoint healthy");
                }
            }
            outcome => {
                let reason = match outcome {
                    Ok(status) => format!("status {status}"),
                    Err(e) => e,
                };
                tracing::debug!(backend, endpoint = %self.addr, %reason, "active health check failed");
                self.successes = 0;
                self.failures = self.failures.saturating_add(1);
                if self.health.active_healthy() && self.failures >= cfg.unhealthy_threshold.max(1) {
                    self.health.set_active_healthy(false);
                    tracing::warn!(backend, endpoint = %self.addr, %reason, failures = self.failures, "active health check: endpoint unhealthy");
                }
            }
        }
    }
}

/// The checking task: a round over every target each `cfg.interval`, until aborted.
async fn run(
    backend: String,
    targets: Vec<(SocketAddr, Arc<EndpointHealth>)>,
    protocol: BackendProtocol,
    tls: Option<CompiledTls>,
    cfg: HealthCheck,
    stopped: Arc<AtomicBool>,
) {
    let path = if cfg.path.is_empty() {
        "/"
    } else {
        cfg.path.as_str()
    };
    let mut checks = Vec::with_capacity(targets.len());
    for (addr, health) in targets {
        let host = cfg.host.clone().unwrap_or_else(|| addr.to_string());
        let request = match build_request(path, &host, protocol) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(%backend, path, host, error = %e, "invalid health check request: active health checks disabled");
                return;
            }
        };
        let mut peer = HttpPeer::new(addr, false, String::new());
        if protocol == BackendProtocol::H2c {
            peer.options.set_http_version(2, 2);
        }
        if let Some(tls) = &tls {
            tls.apply(&mut peer);
        }
        peer.options.connection_timeout = Some(cfg.timeout);
        peer.options.total_connection_timeout = Some(cfg.timeout);
        peer.options.read_timeout = Some(cfg.timeout);
        peer.options.write_timeout = Some(cfg.timeout);
        checks.push(Target {
            addr,
            health,
            peer,
            request,
            successes: 0,
            failures: 0,
        });
    }
    let connector = Arc::new(Connector::new(None));
    let mut ticker = tokio::time::interval(cfg.interval.max(MIN_INTERVAL));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        // Owned here: aborting this task drops the set, which aborts the checks of the round.
        let mut round = JoinSet::new();
        for (i, target) in checks.iter().enumerate() {
            let connector = Arc::clone(&connector);
            let peer = target.peer.clone();
            let request = target.request.clone();
            let timeout = cfg.timeout;
            round.spawn(async move {
                let outcome =
                    match tokio::time::timeout(timeout, check(&connector, &peer, request)).await {
                        Ok(outcome) => outcome,
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    };
                (i, outcome)
            });
        }
        while let Some(joined) = round.join_next().await {
            // A check task cannot panic short of a bug; its target just misses this round.
            let Ok((i, outcome)) = joined else { continue };
            if stopped.load(Ordering::SeqCst) {
                return;
            }
            checks[i].apply(outcome, &backend, &cfg);
        }
    }
}

/// The check request: `GET path` with `Host: host` (h1) or `:authority` = host (h2c).
fn build_request(
    path: &str,
    host: &str,
    protocol: BackendProtocol,
) -> Result<RequestHeader, String> {
    if !path.starts_with('/') {
        return Err("the path must start with '/'".into());
    }
    let mut req =
        RequestHeader::build("GET", path.as_bytes(), Some(3)).map_err(|e| e.to_string())?;
    req.insert_header(http::header::USER_AGENT, USER_AGENT)
        .map_err(|e| e.to_string())?;
    if protocol == BackendProtocol::H2c {
        let uri = http::Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(path)
            .build()
            .map_err(|e| e.to_string())?;
        req.set_uri(uri);
    } else {
        req.insert_header(http::header::HOST, host)
            .map_err(|e| e.to_string())?;
        req.insert_header(http::header::CONNECTION, "close")
            .map_err(|e| e.to_string())?;
    }
    Ok(req)
}

/// Sends one check and returns the final status code (1xx interim answers skipped).
async fn check(
    connector: &Connector,
    peer: &HttpPeer,
    request: RequestHeader,
) -> Result<u16, String> {
    let (mut session, _) = connector
        .get_http_session(peer)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    session
        .write_request_header(Box::new(request))
        .await
        .map_err(|e| format!("send: {e}"))?;
    session
        .finish_request_body()
        .await
        .map_err(|e| format!("send: {e}"))?;
    for _ in 0..4 {
        session
            .read_response_header()
            .await
            .map_err(|e| format!("receive: {e}"))?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .ok_or_else(|| "receive: no response header".to_owned())?;
        if !(100..200).contains(&status) {
            // The session (and its connection) is dropped unread: it is never reused.
            return Ok(status);
        }
    }
    Err("receive: too many interim responses".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::test_server::{closed_port, host_of, respond, serve, wait_for};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU16, AtomicUsize};

    fn cfg(unhealthy: u32, healthy: u32) -> HealthCheck {
        HealthCheck {
            path: "/healthz".into(),
            host: None,
            interval: Duration::from_millis(30),
            timeout: Duration::from_millis(500),
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
        }
    }

    /// A server answering `status`, counting answers by class and recording paths and hosts.
    struct Probed {
        status: Arc<AtomicU16>,
        ok: Arc<AtomicUsize>,
        bad: Arc<AtomicUsize>,
        seen: Arc<Mutex<Vec<(String, String)>>>,
        server: crate::backend::test_server::TestServer,
    }

    async fn probed(h2: bool) -> Probed {
        let status = Arc::new(AtomicU16::new(200));
        let ok = Arc::new(AtomicUsize::new(0));
        let bad = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, o, b, v) = (status.clone(), ok.clone(), bad.clone(), seen.clone());
        let server = serve(h2, move |req| {
            let (s, o, b, v) = (s.clone(), o.clone(), b.clone(), v.clone());
            async move {
                v.lock()
                    .unwrap()
                    .push((req.uri().path().to_owned(), host_of(&req)));
                let code = s.load(Ordering::SeqCst);
                let counter = if code < 400 { &o } else { &b };
                counter.fetch_add(1, Ordering::SeqCst);
                respond(code, "")
            }
        })
        .await;
        Probed {
            status,
            ok,
            bad,
            seen,
            server,
        }
    }

    #[tokio::test]
    async fn healthy_server_stays_healthy() {
        let p = probed(false).await;
        let health = Arc::new(EndpointHealth::new());
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(p.server.addr, health.clone())],
            BackendProtocol::Http1,
            cfg(1, 1),
        );
        assert!(wait_for(5, || p.ok.load(Ordering::SeqCst) >= 5).await);
        assert!(health.available(0));
        let seen = p.seen.lock().unwrap().clone();
        assert_eq!(seen[0], ("/healthz".to_owned(), p.server.addr.to_string()));
        // A fresh connection per check.
        assert!(p.server.connections.load(Ordering::SeqCst) >= 5);
    }

    async fn fails_and_recovers(h2: bool) {
        let p = probed(h2).await;
        let health = Arc::new(EndpointHealth::new());
        let protocol = if h2 {
            BackendProtocol::H2c
        } else {
            BackendProtocol::Http1
        };
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(p.server.addr, health.clone())],
            protocol,
            cfg(3, 2),
        );
        assert!(wait_for(5, || p.ok.load(Ordering::SeqCst) >= 2).await);
        assert!(health.active_healthy());

        p.status.store(500, Ordering::SeqCst);
        assert!(wait_for(5, || !health.active_healthy()).await);
        // Only after the threshold: the third 500 is what marked it.
        assert!(p.bad.load(Ordering::SeqCst) >= 3);
        assert!(!health.available(0));

        let ok_before = p.ok.load(Ordering::SeqCst);
        p.status.store(204, Ordering::SeqCst);
        assert!(wait_for(5, || health.active_healthy()).await);
        assert!(p.ok.load(Ordering::SeqCst) >= ok_before + 2);
        assert!(health.available(0));
    }

    #[tokio::test]
    async fn failing_server_marked_unhealthy_then_recovers() {
        fails_and_recovers(false).await;
    }

    #[tokio::test]
    async fn h2c_failing_server_marked_unhealthy_then_recovers() {
        fails_and_recovers(true).await;
    }

    #[tokio::test]
    async fn redirect_counts_as_success_and_404_as_failure() {
        let p = probed(false).await;
        p.status.store(302, Ordering::SeqCst);
        let health = Arc::new(EndpointHealth::new());
        health.set_active_healthy(false);
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(p.server.addr, health.clone())],
            BackendProtocol::Http1,
            cfg(1, 1),
        );
        assert!(wait_for(5, || health.active_healthy()).await);
        p.status.store(404, Ordering::SeqCst);
        assert!(wait_for(5, || !health.active_healthy()).await);
    }

    #[tokio::test]
    async fn refused_connection_marks_unhealthy() {
        let addr = closed_port().await;
        let health = Arc::new(EndpointHealth::new());
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(addr, health.clone())],
            BackendProtocol::Http1,
            cfg(2, 1),
        );
        assert!(wait_for(5, || !health.active_healthy()).await);
    }

    #[tokio::test]
    async fn slow_answer_times_out() {
        let server = serve(false, |_req| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            respond(200, "")
        })
        .await;
        let health = Arc::new(EndpointHealth::new());
        let mut c = cfg(1, 1);
        c.timeout = Duration::from_millis(100);
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(server.addr, health.clone())],
            BackendProtocol::Http1,
            c,
        );
        assert!(wait_for(5, || !health.active_healthy()).await);
    }

    #[tokio::test]
    async fn configured_host_over_h1_and_h2c() {
        let a = probed(false).await;
        let b = probed(true).await;
        b.status.store(503, Ordering::SeqCst);
        let ha = Arc::new(EndpointHealth::new());
        let hb = Arc::new(EndpointHealth::new());
        let mut c = cfg(1, 1);
        c.host = Some("health.example".into());
        c.path = String::new();
        let _ca = HealthChecker::start(
            "a".into(),
            vec![(a.server.addr, ha.clone())],
            BackendProtocol::Http1,
            c.clone(),
        );
        let _cb = HealthChecker::start(
            "b".into(),
            vec![(b.server.addr, hb.clone())],
            BackendProtocol::H2c,
            c,
        );
        assert!(wait_for(5, || !hb.active_healthy()).await);
        assert!(wait_for(5, || a.ok.load(Ordering::SeqCst) >= 1).await);
        assert!(ha.active_healthy());
        let expect = ("/".to_owned(), "health.example".to_owned());
        assert_eq!(a.seen.lock().unwrap()[0], expect);
        assert_eq!(b.seen.lock().unwrap()[0], expect);
    }

    #[tokio::test]
    async fn one_checker_checks_every_target() {
        let up = probed(false).await;
        let down = closed_port().await;
        let h_up = Arc::new(EndpointHealth::new());
        let h_down = Arc::new(EndpointHealth::new());
        let _checker = HealthChecker::start(
            "b".into(),
            vec![(up.server.addr, h_up.clone()), (down, h_down.clone())],
            BackendProtocol::Http1,
            cfg(2, 1),
        );
        assert!(wait_for(5, || !h_down.active_healthy()).await);
        assert!(up.ok.load(Ordering::SeqCst) >= 2);
        assert!(h_up.active_healthy());
    }

    #[tokio::test]
    async fn drop_stops_checks_and_restores_health() {
        let p = probed(false).await;
        p.status.store(500, Ordering::SeqCst);
        let health = Arc::new(EndpointHealth::new());
        let checker = HealthChecker::start(
            "b".into(),
            vec![(p.server.addr, health.clone())],
            BackendProtocol::Http1,
            cfg(1, 1),
        );
        assert!(wait_for(5, || !health.active_healthy()).await);
        drop(checker);
        assert!(health.active_healthy());
        // Let a check already on the wire land, then no more arrive.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let served = p.bad.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(p.bad.load(Ordering::SeqCst), served);
        assert!(health.active_healthy());
    }

    #[test]
    fn invalid_path_disables_checks() {
        assert!(build_request("healthz", "h", BackendProtocol::Http1).is_err());
        assert!(build_request("/ok", "h", BackendProtocol::Http1).is_ok());
        assert!(build_request("/ok", "bad host", BackendProtocol::H2c).is_err());
    }

    #[test]
    fn start_without_runtime_does_not_panic() {
        let checker = HealthChecker::start(
            "b".into(),
            vec![],
            BackendProtocol::Http1,
            HealthCheck::default(),
        );
        assert!(checker.task.is_none());
    }
}
