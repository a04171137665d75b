//! Using the framework as a library: routes built in plain Rust (no YAML, no Kubernetes types),
//! a custom `ExtensionRef` filter, and the gateway serving them.
//!
//! ```text
//! cargo run -p examples --bin embedded
//! curl -si http://127.0.0.1:8090/api/hello                      # 401 from the custom filter
//! curl -si -H 'x-api-key: demo' http://127.0.0.1:8090/api/hello  # proxied, with x-api-checked
//! curl -si http://127.0.0.1:8090/docs                           # 302 to https://example.com/docs
//! ```
//!
//! docs/embedding.md walks through this file.

use std::sync::Arc;
use std::time::Duration;

use gateway_core::config::{
    BackendRef, Bind, Config, ExtensionRef, Filter, Listener, Protocol, RequestRedirect, Route,
    Rule,
};
use gateway_core::{
    DirectResponse, FilterAction, FilterCtx, FilterRegistry, Gateway, HttpFilter, ResponseHeader,
    Session, async_trait,
};

/// A custom filter: requests without the right `x-api-key` get 401; proxied responses say that
/// the key was checked.
struct ApiKey {
    key: String,
}

#[async_trait]
impl HttpFilter for ApiKey {
    async fn request_headers(
        &self,
        session: &mut Session,
        _ctx: &mut FilterCtx,
    ) -> gateway_core::Result<FilterAction> {
        let given = session.req_header().headers.get("x-api-key");
        if given.is_some_and(|v| v.as_bytes() == self.key.as_bytes()) {
            Ok(FilterAction::Continue)
        } else {
            Ok(FilterAction::Respond(DirectResponse::text(
                401,
                "missing or wrong x-api-key\n",
            )))
        }
    }

    async fn response_headers(
        &self,
        _session: &mut Session,
        _ctx: &mut FilterCtx,
        response: &mut ResponseHeader,
    ) -> gateway_core::Result<()> {
        // Header names and values here are static and valid: insert_header cannot fail.
        let _ = response.insert_header("x-api-checked", "true");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    examples::init_logging();
    let backend_addr = "127.0.0.1:9091".parse()?;
    examples::demo::spawn(backend_addr, "embedded-backend").await?;

    // 1. Register the custom filter under the (group, kind) routes will reference.
    let mut registry = FilterRegistry::with_builtins();
    registry.register_filter(
        "example.com",
        "ApiKey",
        Arc::new(ApiKey { key: "demo".into() }),
    );

    // 2. Build the routes in plain Rust.
    let api = Route::new("default", "api").rule(
        Rule::prefix("/api")
            .filter(Filter::ExtensionRef(ExtensionRef::new(
                "example.com",
                "ApiKey",
                "demo-key",
            )))
            .backend(BackendRef::endpoints("backend", vec![backend_addr])),
    );
    let docs = Route::new("default", "docs").rule(Rule::prefix("/docs").filter(
        Filter::RequestRedirect(RequestRedirect {
            scheme: Some("https".into()),
            hostname: Some("example.com".into()),
            ..RequestRedirect::default()
        }),
    ));
    let config = Config {
        binds: vec![Bind {
            address: "127.0.0.1:8090".parse()?,
            protocol: Protocol::Http,
            listeners: vec![Listener::new("http", 8090).route(api).route(docs)],
        }],
        ..Default::default()
    };

    // 3. Serve, and drain on SIGTERM / Ctrl-C.
    let gateway = Gateway::new(registry);
    let report = gateway.apply(config).await?;
    if let Some((addr, why)) = report.failed.first() {
        return Err(format!("cannot listen on {addr}: {why}").into());
    }
    println!(
        "embedded gateway on http://127.0.0.1:8090 (see the comment at the top of embedded.rs)"
    );
    gateway_core::shutdown_signal().await?;
    gateway.shutdown(Duration::from_secs(10)).await;
    Ok(())
}
