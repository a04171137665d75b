//! The admin endpoint: health, readiness, status and the active configuration.
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 while the process runs |
//! | `/readyz` | 200 once the first configuration is applied, 503 before |
//! | `/status` | the YAML of every resource with its computed status (as `--status-file`) |
//! | `/config` | the active `gateway-core` configuration as JSON (private keys left out) |
//! | `/diagnostics` | JSON list of the problems of the last load (unparseable documents, failed binds...) |
//! | `/metrics` | the gateway's Prometheus metrics, OpenMetrics text ([`gateway_core::Metrics`]) |
//! | `/explain?...` | where a described request would go and why, as JSON ([`gateway_core::explain`]); 400 for bad parameters ([`crate::explain::request_from_query`]) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gateway_core::Gateway;
use gateway_k8s::StatusText;
use http::{Response, StatusCode};
use http_body_util::Full;

/// What the admin endpoint shows; updated by the runner after every load.
#[derive(Default)]
pub struct AdminState {
    ready: AtomicBool,
    /// The status document, gzip-compressed one object per member (shared with the runner's
    /// render cache): with 10,000 routes it is about 15 MB of YAML, and it is read rarely.
    status_yaml: ArcSwap<StatusText>,
    diagnostics: ArcSwap<Vec<String>>,
}

impl AdminState {
    /// Marks the gateway ready (`/readyz` answers 200 from now on).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the first configuration has been applied.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Replaces the status document.
    pub fn set_status(&self, status: StatusText) {
        self.status_yaml.store(Arc::new(status));
    }

    /// The status document as YAML.
    pub fn status(&self) -> String {
        self.status_yaml.load().to_yaml()
    }

    /// Replaces the diagnostics of the last load.
    pub fn set_diagnostics(&self, diagnostics: Vec<String>) {
        self.diagnostics.store(Arc::new(diagnostics));
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

/// `/explain`: the explanation as JSON, or 400 with the reason.
fn explain(query: Option<&str>, gateway: &Gateway) -> Response<Full<Bytes>> {
    let req = match crate::explain::request_from_query(query.unwrap_or("")) {
        Ok(req) => req,
        Err(e) => return reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    };
    match gateway.explain(&req) {
        Ok(explanation) => match serde_json::to_vec_pretty(&explanation) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        Err(e) => reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n")),
    }
}

fn answer(uri: &http::Uri, state: &AdminState, gateway: &Gateway) -> Response<Full<Bytes>> {
    match uri.path() {
        "/explain" => explain(uri.query(), gateway),
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if state.is_ready() => reply(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "no configuration applied yet\n",
        ),
        "/status" => reply(StatusCode::OK, "application/yaml", state.status()),
        "/config" => match serde_json::to_vec_pretty(&gateway.config()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/diagnostics" => match serde_json::to_vec_pretty(state.diagnostics.load().as_ref()) {
            Ok(json) => reply(StatusCode::OK, "application/json", json),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                e.to_string(),
            ),
        },
        "/metrics" => reply(
            StatusCode::OK,
            gateway_core::Metrics::CONTENT_TYPE,
            gateway.metrics().encode(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Binds `address` and serves the admin endpoint until the process ends.
pub async fn serve(
    address: SocketAddr,
    state: Arc<AdminState>,
    gateway: Gateway,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    crate::serve::serve(address, move |req| answer(req.uri(), &state, &gateway)).await
}
