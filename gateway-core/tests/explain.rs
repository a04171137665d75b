//! `Gateway::explain` on a live gateway, checked against requests through its sockets; and W3C
//! Trace Context headers forwarded to backends unchanged (the gateway propagates them as any
//! proxy does, without tracing of its own).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use gateway_core::config::*;
use gateway_core::explain::RouteVerdict;
use gateway_core::{ExplainRequest, FilterRegistry, Gateway};
use support::*;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[tokio::test]
async fn explain_names_the_backend_real_requests_reach() {
    let v1 = backend("v1").await;
    let v2 = backend("v2").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let header_match = RouteMatch {
        path: PathMatch::Prefix("/api".into()),
        headers: vec![HeaderMatch {
            name: "x-canary".into(),
            value: StringMatch::Exact("yes".into()),
        }],
        ..RouteMatch::default()
    };
    let stable = Route::new("ns", "stable")
        .rule(Rule::prefix("/api").backend(BackendRef::endpoints("v1", vec![v1.addr])));
    let canary = Route::new("ns", "canary").rule(
        Rule::default()
            .matching(header_match)
            .backend(BackendRef::endpoints("v2", vec![v2.addr])),
    );
    let mut listener = Listener::new("http", 80);
    listener.routes = vec![stable.into(), canary.into()];
    gw.apply(Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    })
    .await
    .unwrap();

    for (headers, want) in [(&[][..], "v1"), (&[("x-canary", "yes")][..], "v2")] {
        let e = gw
            .explain(&ExplainRequest {
                port: Some(port),
                host: "example.com".into(),
                path: "/api/x".into(),
                headers: headers
                    .iter()
                    .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                    .collect(),
                ..ExplainRequest::default()
            })
            .unwrap();
        let selected = e.selected.as_ref().expect("a route");
        assert_eq!(selected.backends[0].name, want, "{e}");
        let real = get_with(addr(port), "example.com", "/api/x", headers).await;
        assert_eq!(real.backend(), want);
        if want == "v1" {
            let canary = e.routes.iter().find(|r| r.route == "ns/canary").unwrap();
            assert!(
                matches!(&canary.verdict, RouteVerdict::NoMatch { failures } if failures[0].condition == "header"),
                "{e}"
            );
        }
    }
    gw.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn trace_context_headers_reach_the_backend_unchanged() {
    let v1 = backend("v1").await;
    let port = free_port();
    let gw = Gateway::new(FilterRegistry::new());
    let mut listener = Listener::new("http", 80);
    listener.routes = vec![
        Route::new("ns", "r")
            .rule(Rule::prefix("/").backend(BackendRef::endpoints("v1", vec![v1.addr])))
            .into(),
    ];
    gw.apply(Config {
        binds: vec![Bind {
            address: addr(port),
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let tracestate = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";
    let r = get_with(
        addr(port),
        "example.com",
        "/",
        &[("traceparent", traceparent), ("tracestate", tracestate)],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seen("traceparent").as_deref(), Some(traceparent));
    assert_eq!(r.seen("tracestate").as_deref(), Some(tracestate));
    // Without one, none is invented.
    let r = get(addr(port), "example.com", "/").await;
    assert_eq!(r.seen("traceparent"), None);
    gw.shutdown(Duration::from_secs(1)).await;
}
