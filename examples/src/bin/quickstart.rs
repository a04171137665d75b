//! The quickstart: a Gateway API gateway on 127.0.0.1:8080 with no cluster and no set-up.
//!
//! ```text
//! cargo run -p examples --bin quickstart
//! ```
//!
//! It starts two demo backends, serves the Gateway and HTTPRoutes of `examples/quickstart.yaml`
//! (bundled into the binary), and prints curl commands that show matching, header filters, a
//! redirect, a weighted split, a `DirectResponse` filter, CORS, mirroring and retries. Ctrl-C
//! drains and stops it.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use examples::admin::{self, AdminState};
use examples::runner::{Input, Runner};
use gateway_core::{FilterRegistry, Gateway};
use gateway_k8s::{Resources, TranslateOptions};

const CONFIG: &str = include_str!("../../quickstart.yaml");

const TRY: &str = "\
The quickstart gateway listens on http://127.0.0.1:8080 (admin: http://127.0.0.1:9901/config). Try:

  # path and header matching: / goes to demo-v1, /v2 or header x-version: v2 to demo-v2
  curl -s http://127.0.0.1:8080/
  curl -s http://127.0.0.1:8080/v2/hello
  curl -s -H 'x-version: v2' http://127.0.0.1:8080/

  # header filters: the backend sees x-gateway (and no user-agent), you get x-served-by
  curl -si http://127.0.0.1:8080/headers

  # redirect: 301 to /new/page
  curl -si http://127.0.0.1:8080/old/page

  # weighted split, 80/20 between demo-v1 and demo-v2
  for i in $(seq 20); do curl -s http://127.0.0.1:8080/split | grep backend; done | sort | uniq -c

  # a DirectResponse filter: 503 with retry-after, answered by the gateway
  curl -si http://127.0.0.1:8080/maintenance

  # CORS preflight answered by the gateway; /api is also mirrored to demo-v2 and retried on 502/503
  curl -si -X OPTIONS -H 'origin: https://app.example.com' \\
       -H 'access-control-request-method: POST' http://127.0.0.1:8080/api/items
  curl -si -H 'origin: https://app.example.com' http://127.0.0.1:8080/api/items
";

/// mimalloc instead of the system allocator: cheaper allocation on the request path, and freed
/// memory goes back to the OS (docs/benchmarks.md has the numbers).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    examples::init_logging();
    for (addr, name) in [("127.0.0.1:9081", "demo-v1"), ("127.0.0.1:9082", "demo-v2")] {
        let addr = addr.parse().expect("a literal socket address");
        if let Err(e) = examples::demo::spawn(addr, name).await {
            eprintln!("quickstart: cannot start demo backend {name} on {addr}: {e}");
            std::process::exit(1);
        }
    }
    let gateway = Gateway::new(FilterRegistry::with_builtins());
    let state = Arc::new(AdminState::default());
    let admin_addr = "127.0.0.1:9901".parse().expect("a literal socket address");
    if let Err(e) = admin::serve(admin_addr, state.clone(), gateway.clone()).await {
        eprintln!("quickstart: cannot bind the admin endpoint {admin_addr}: {e}");
        std::process::exit(1);
    }
    let options = TranslateOptions {
        controller_name: examples::DEFAULT_CONTROLLER_NAME.to_owned(),
        port_map: Default::default(),
        address_pool: None,
        default_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    Runner::new(gateway.clone(), options, state.clone(), None)
        .run(Input::Fixed(Box::new(Resources::parse_yaml(
            CONFIG,
            "quickstart.yaml",
        ))))
        .await;
    if gateway.bound().await.is_empty() {
        eprintln!("quickstart: could not listen on 127.0.0.1:8080 (is something else using it?)");
        std::process::exit(1);
    }
    println!("{TRY}");
    if let Err(e) = gateway_core::shutdown_signal().await {
        tracing::error!(error = %e, "signal handling failed");
    }
    gateway.shutdown(Duration::from_secs(10)).await;
}
