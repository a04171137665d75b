//! Request-smuggling corpus: malformed or ambiguous HTTP/1 framing sent as raw bytes over a
//! loopback socket. For each case the gateway answers 4xx or closes the connection, and a real
//! loopback backend never receives the smuggled request (nor, for rejected cases, any complete
//! request at all).

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use gateway_core::config::*;
use gateway_core::{FilterRegistry, Gateway};
use http::Response;
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What the backend received: request heads as they arrived, and requests whose body was read
/// in full (method, path, body).
#[derive(Default)]
struct Seen {
    heads: Vec<String>,
    complete: Vec<(String, String, Vec<u8>)>,
}

/// A backend that records every request it receives.
async fn recorder() -> (TestBackend, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let log = seen.clone();
    let backend = serve(move |req: http::Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_owned();
            log.lock().unwrap().heads.push(path.clone());
            if let Ok(body) = req.into_body().collect().await {
                let body = body.to_bytes().to_vec();
                log.lock().unwrap().complete.push((method, path, body));
            }
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
    .await;
    (backend, seen)
}

async fn gateway(backend: SocketAddr) -> (Gateway, SocketAddr) {
    let port = free_port();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut listener = Listener::new("test/gw/http", 80);
    listener.routes = vec![
        Route::new("ns", "r")
            .rule(Rule::prefix("/").backend(BackendRef::endpoints("b", vec![backend])))
            .into(),
    ];
    let gw = Gateway::new(FilterRegistry::new());
    gw.apply(Config {
        binds: vec![Bind {
            address,
            protocol: Protocol::Http,
            listeners: vec![listener],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    (gw, address)
}

/// Sends `request` as it is and reads until the gateway closes the connection (20 s at most).
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer and close before reading everything: ignore write errors.
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream).await
}

/// The status codes of the responses in `raw`, in order.
fn statuses(raw: &[u8]) -> Vec<u16> {
    let text = String::from_utf8_lossy(raw);
    text.split("\r\n")
        .filter_map(|line| {
            let rest = line
                .strip_prefix("HTTP/1.1 ")
                .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
            rest.get(..3)?.parse().ok()
        })
        .collect()
}

/// What a case must lead to.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// A 4xx or a close without any response; the backend receives no complete request.
    Reject,
    /// The first request may be forwarded, framed one way (Transfer-Encoding wins over
    /// Content-Length, RFC 9112 section 6.3); then the connection is closed. At most one
    /// response; the backend never sees `/smuggled`.
    FirstThenClose,
}

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

struct Case {
    name: &'static str,
    head: &'static str,
    /// Bytes after the head (body, then often a smuggled request).
    rest: String,
    expect: Expect,
}

fn case(name: &'static str, head: &'static str, rest: &str, expect: Expect) -> Case {
    Case {
        name,
        head,
        rest: rest.replace("{SMUGGLED}", SMUGGLED),
        expect,
    }
}

fn corpus() -> Vec<Case> {
    use Expect::*;
    vec![
        // CL.TE / TE.CL: both framings present.
        case(
            "cl_te",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            FirstThenClose,
        ),
        case(
            "te_cl",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            FirstThenClose,
        ),
        case(
            "cl_te_uppercase_chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: CHUNKED\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            FirstThenClose,
        ),
        // Content-Length: duplicates that disagree, lists, malformed values.
        case(
            "duplicate_cl_conflicting",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 40\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_list_conflicting",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 40\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_plus_sign",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_minus_sign",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -3\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_inner_space",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 0\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_hex",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_overflow",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999999\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        case(
            "cl_space_before_colon",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n",
            "abc{SMUGGLED}",
            Reject,
        ),
        // Transfer-Encoding variants.
        case(
            "te_chunked_then_identity",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_two_lines_last_not_chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_xchunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_xchunked_with_cl",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_with_http10",
            "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_obs_folded",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_vertical_tab",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "te_space_before_colon",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        // Chunked bodies.
        case(
            "chunk_size_overflow",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "10000000000000003\r\nabc\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_size_negative",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "-3\r\nabc\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_ext_bare_lf",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2;\nxx\r\nab\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_ext_bare_lf_in_value",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2;name=va\nlue\r\nab\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_ext_bare_cr",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2;a\rb\r\nab\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_ext_nul",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2;a\0b\r\nab\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "last_chunk_ext_bare_lf",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2\r\nab\r\n0;\nx\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_size_bare_lf",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2\nab\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_data_longer_than_size",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "2\r\nabc\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        case(
            "chunk_size_space_inside",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "1 0\r\nabcdefghijklmnop\r\n0\r\n\r\n{SMUGGLED}",
            Reject,
        ),
        // Header-section anomalies.
        case(
            "obs_fold_header",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Folded: one\r\n two\r\n\r\n",
            "{SMUGGLED}",
            Reject,
        ),
        case(
            "nul_in_header_value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\0b\r\n\r\n",
            "{SMUGGLED}",
            Reject,
        ),
        case(
            "cr_in_header_value",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Cr: a\rb\r\n\r\n",
            "{SMUGGLED}",
            Reject,
        ),
        case(
            "duplicate_host",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "{SMUGGLED}",
            Reject,
        ),
        case(
            "http11_without_host",
            "GET / HTTP/1.1\r\nX-A: b\r\n\r\n",
            "{SMUGGLED}",
            Reject,
        ),
    ]
}

#[tokio::test]
async fn smuggling_corpus_is_rejected_and_never_reaches_the_backend() {
    let (backend, seen) = recorder().await;
    let (gw, addr) = gateway(backend.addr).await;
    let mut failures = Vec::new();
    for case in corpus() {
        *seen.lock().unwrap() = Seen::default();
        let mut request = case.head.as_bytes().to_vec();
        request.extend_from_slice(case.rest.as_bytes());
        let raw = exchange(addr, &request).await;
        let codes = statuses(&raw);
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        let smuggled = seen.heads.iter().any(|p| p == "/smuggled");
        let ok = match case.expect {
            Expect::Reject => {
                codes.iter().all(|c| (400..500).contains(c)) && seen.complete.is_empty()
            }
            Expect::FirstThenClose => codes.len() <= 1 && seen.complete.len() <= 1,
        } && !smuggled;
        if !ok {
            failures.push(format!(
                "{}: expected {:?}; statuses {codes:?}, backend heads {:?}, complete {:?}",
                case.name,
                case.expect,
                seen.heads,
                seen.complete
                    .iter()
                    .map(|(m, p, b)| format!("{m} {p} {:?}", String::from_utf8_lossy(b)))
                    .collect::<Vec<_>>()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    gw.shutdown(Duration::from_secs(1)).await;
}

/// The controls: well-formed framing the corpus varies, accepted and forwarded whole. Without
/// them, a gateway that rejected everything would pass the corpus.
#[tokio::test]
async fn well_formed_framing_still_reaches_the_backend() {
    let (backend, seen) = recorder().await;
    let (gw, addr) = gateway(backend.addr).await;
    let cases: [(&str, &[u8], &[u8]); 4] = [
        (
            "chunked_with_extensions",
            b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2;name=\"quoted value\"\t;x=\x80\r\nab\r\n1;y\r\nc\r\n0\r\n\r\n",
            b"abc",
        ),
        (
            "content_length_with_ows",
            b"POST /l HTTP/1.1\r\nHost: a\r\nContent-Length:  3 \r\nConnection: close\r\n\r\nabc",
            b"abc",
        ),
        (
            "identical_duplicate_content_length",
            b"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
            b"abc",
        ),
        (
            "chunked_mixed_case",
            b"POST /m HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"abc",
        ),
    ];
    for (name, request, body) in cases {
        *seen.lock().unwrap() = Seen::default();
        let raw = exchange(addr, request).await;
        assert_eq!(statuses(&raw), vec![200], "{name}: {raw:?}");
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        assert_eq!(seen.complete.len(), 1, "{name}");
        assert_eq!(seen.complete[0].2, body, "{name}");
    }
    gw.shutdown(Duration::from_secs(1)).await;
}
