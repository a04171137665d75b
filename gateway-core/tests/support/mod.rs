//! Test support: loopback backends that describe what they received, and a small HTTP client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpStream};

/// A running backend; aborted on drop.
pub struct TestBackend {
    pub addr: SocketAddr,
    /// How many connections the backend has accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a backend named `name` on a free loopback port. It answers JSON
/// `{"backend", "method", "path", "host", "version", "headers": {name: [values]}}`; a query
/// `delay=MS` delays the answer.
pub async fn backend(name: &'static str) -> TestBackend {
    backend_on(name, TcpListener::bind("127.0.0.1:0").await.unwrap())
}

/// Starts the same backend as [`backend`] at `addr` (any loopback address and port).
pub async fn backend_at(name: &'static str, addr: SocketAddr) -> std::io::Result<TestBackend> {
    Ok(backend_on(name, TcpListener::bind(addr).await?))
}

fn backend_on(name: &'static str, listener: TcpListener) -> TestBackend {
    serve_on(listener, move |req: Request<Incoming>| async move {
        let delay = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("delay=")))
            .and_then(|ms| ms.parse::<u64>().ok());
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            let entry = headers
                .entry(k.as_str().to_owned())
                .or_insert_with(|| serde_json::Value::Array(vec![]));
            if let serde_json::Value::Array(a) = entry {
                a.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
            }
        }
        let host = req
            .headers()
            .get("host")
            .map(|h| h.to_str().unwrap_or("").to_owned())
            .or_else(|| req.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        let body = serde_json::json!({
            "backend": name,
            "method": req.method().as_str(),
            "path": req.uri().path_and_query().map_or("/".to_owned(), |p| p.to_string()),
            "host": host,
            "version": format!("{:?}", req.version()),
            "headers": headers,
        });
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        resp.headers_mut()
            .insert("x-backend", name.parse().unwrap());
        Ok::<_, Infallible>(resp)
    })
}

/// A response as the tests look at it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

impl Reply {
    pub fn backend(&self) -> &str {
        self.body["backend"].as_str().unwrap_or("")
    }

    /// The values the backend saw for `header`, joined with `,`.
    pub fn seen(&self, header: &str) -> Option<String> {
        self.body["headers"][header].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join(",")
        })
    }
}

async fn read(resp: Response<Incoming>) -> Reply {
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

/// An HTTP/1.1 connection that can carry several requests (keep-alive).
pub struct H1 {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<H1> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(H1 { sender })
    }

    pub async fn send(
        &mut self,
        method: &str,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .sender
            .send_request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        read(resp).await
    }
}

/// Sends one GET on a fresh connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    get_with(addr, host, path, &[]).await
}

/// Sends one GET with headers on a fresh connection.
pub async fn get_with(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    H1::connect(addr)
        .await
        .unwrap()
        .send("GET", host, path, headers)
        .await
}

/// Sends one GET over h2c with prior knowledge.
pub async fn get_h2c(addr: SocketAddr, authority: &str, path: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(format!("http://{authority}{path}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    read(sender.send_request(req).await.unwrap()).await
}

/// A free loopback port (bound, then released), never one this test process handed out
/// before.
pub fn free_port() -> u16 {
    // Tests run on parallel threads: a port released by one call can come back from the next
    // before its taker binds it, so a port is handed out once per test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// A self-signed certificate for `names`, as (cert PEM, key PEM, DER for trust).
pub fn self_signed(names: &[&str]) -> (String, String, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    (
        ck.cert.pem(),
        ck.signing_key.serialize_pem(),
        ck.cert.der().to_vec(),
    )
}

/// Performs a TLS handshake with `sni` and returns the server certificate (DER) and the ALPN.
pub async fn tls_handshake(
    addr: SocketAddr,
    sni: &str,
    trust: &[Vec<u8>],
    alpn: &[&[u8]],
) -> (
    Vec<u8>,
    Option<Vec<u8>>,
    tokio_rustls::client::TlsStream<TcpStream>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for der in trust {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = connector.connect(name, stream).await.unwrap();
    let (_, conn) = tls.get_ref();
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    let alpn = conn.alpn_protocol().map(|p| p.to_vec());
    (cert, alpn, tls)
}

/// Sends one GET over an established TLS stream with HTTP/1.1.
pub async fn get_over_tls(
    tls: tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> Reply {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    read(sender.send_request(req).await.unwrap()).await
}

/// A backend that answers every request with `status` and `x-backend: name`.
pub async fn fixed(name: &'static str, status: u16) -> TestBackend {
    serve(move |_req| async move {
        let mut resp = Response::new(Full::new(Bytes::from(format!("{name} says {status}"))));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert("x-backend", name.parse().unwrap());
        Ok(resp)
    })
    .await
}

/// A backend that reads the request, then closes the connection without answering.
pub async fn resetter() -> TestBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                drop(stream);
            });
        }
    });
    TestBackend {
        addr,
        connections,
        task,
    }
}

/// A backend whose answers come from `handler`; `connections` counts accepted connections.
pub async fn serve<F, Fut, B>(handler: F) -> TestBackend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler)
}

/// Like [`serve`], on an already bound listener.
pub fn serve_on<F, Fut, B>(listener: TcpListener, handler: F) -> TestBackend
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accepted = connections.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| handler.clone()(req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestBackend {
        addr,
        connections,
        task,
    }
}

/// Sends one request with a body on a fresh connection; returns status, headers and raw body.
pub async fn send_body(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> (u16, http::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, bytes)
}

/// Reads raw bytes until the peer closes (or resets) the connection; fails the test if it is
/// still open after 20 s (for cases that must end with a close).
pub async fn read_to_close(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut out = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    });
    assert!(
        done.await.is_ok(),
        "connection left open; got {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}
