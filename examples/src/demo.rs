//! Demo backends for the quickstart: tiny HTTP servers that answer with who they are and what
//! they received, so the effect of routing and filters is visible with curl.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

fn describe(name: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()),
            )
        })
        .collect();
    let body = serde_json::json!({
        "backend": name,
        "method": req.method().as_str(),
        "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
        "headers": headers,
    });
    let mut text = serde_json::to_vec_pretty(&body).unwrap_or_default();
    text.push(b'\n');
    let mut resp = Response::new(Full::new(Bytes::from(text)));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// Binds `address` and answers every request with a JSON description naming `name`.
/// Speaks HTTP/1.1 and h2c.
pub async fn spawn(
    address: SocketAddr,
    name: &'static str,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    crate::serve::serve(address, move |req| describe(name, req)).await
}
