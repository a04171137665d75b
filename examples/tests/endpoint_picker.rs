//! The example `endpoint-picker` binary as a separate process on loopback, asked through the
//! gateway's own ext_proc client: the conformance picker follows the selection header and echoes
//! the served endpoint; the scheduler picker keeps to the subset hint and refuses an empty one.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use bytes::Bytes;
use gateway_inference::extproc::ExtProcConfig;
use gateway_inference::extproc::client::{Answer, PickInput, PickerClient};
use support::Process;

/// The picker process (killed on drop) and the address it bound (port 0: no race for a port
/// with other tests).
fn picker(extra: &[&str], endpoints: &[SocketAddr]) -> (Process, SocketAddr) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_endpoint-picker"));
    command.arg("--listen").arg("127.0.0.1:0").args(extra);
    for e in endpoints {
        command.arg("--endpoint").arg(e.to_string());
    }
    let mut child = command
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start endpoint-picker");
    let stdout = child.stdout.take().expect("stdout");
    let process = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("endpoint-picker exited before listening")
            .expect("read stdout");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.parse().expect("address");
        }
    };
    // Keep draining stdout so the picker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (process, address)
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut builder = http::Request::post("/v1/completions").header("host", "llm.example");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(()).expect("request").into_parts().0
}

const BODY: &[u8] = br#"{"model":"base","prompt":"hello"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_mode_follows_the_selection_and_echoes_the_served_endpoint() {
    let endpoints: Vec<SocketAddr> = vec![
        "127.0.0.1:18100".parse().unwrap(),
        "127.0.0.1:18101".parse().unwrap(),
    ];
    let (_process, address) = picker(&["--conformance"], &endpoints);
    let client = PickerClient::new(&[address], ExtProcConfig::default()).expect("client");
    let body = Bytes::from_static(BODY);
    for _ in 0..3 {
        let parts = request(&[("test-epp-endpoint-selection", "127.0.0.1:18101")]);
        let answer = client
            .pick(PickInput {
                request: &parts,
                body: &body,
                eligible: &endpoints,
            })
            .await
            .expect("answer");
        let Answer::Route(route) = answer else {
            panic!("not routed: {answer:?}")
        };
        assert_eq!(route.endpoints, vec![endpoints[1]]);
        // The body came back as it was sent (streamed back, as Envoy's full-duplex mode wants).
        assert_eq!(route.body.as_deref(), Some(BODY));
        let changes = route
            .exchange
            .served(endpoints[1], 200, &http::HeaderMap::new())
            .await
            .expect("response phase");
        let echoed = changes
            .set
            .iter()
            .find(|(k, _)| k == "x-conformance-test-served-endpoint")
            .map(|(_, v)| v.to_str().unwrap_or_default().to_owned());
        assert_eq!(echoed.as_deref(), Some("127.0.0.1:18101"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_mode_keeps_to_the_subset_hint() {
    let endpoints: Vec<SocketAddr> = vec![
        "127.0.0.1:18110".parse().unwrap(),
        "127.0.0.1:18111".parse().unwrap(),
    ];
    let (_process, address) = picker(&[], &endpoints);
    let client = PickerClient::new(&[address], ExtProcConfig::default()).expect("client");
    let body = Bytes::from_static(BODY);
    let parts = request(&[]);
    for _ in 0..3 {
        let answer = client
            .pick(PickInput {
                request: &parts,
                body: &body,
                eligible: &endpoints[..1],
            })
            .await
            .expect("answer");
        let Answer::Route(route) = answer else {
            panic!("not routed: {answer:?}")
        };
        assert_eq!(route.endpoints, vec![endpoints[0]]);
    }
    let answer = client
        .pick(PickInput {
            request: &parts,
            body: &body,
            eligible: &[],
        })
        .await
        .expect("answer");
    let Answer::Immediate(refusal) = answer else {
        panic!("routed: {answer:?}")
    };
    assert_eq!(refusal.status, 503);
    assert!(
        refusal
            .headers
            .iter()
            .any(|(k, v)| k == "x-llm-d-request-dropped-reason" && v == "rejected-no-endpoints"),
        "{:?}",
        refusal.headers
    );
}
