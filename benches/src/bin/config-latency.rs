//! Configuration speed of a file-configured gateway binary (`file-gateway`'s command line):
//! how long it takes to be ready with N routes, and how long one route changed among N takes to
//! be served, measured from the write of the file to the first response that shows the change,
//! while a steady load runs on other routes.
//!
//! ```text
//! cargo build --release -p examples --bin file-gateway
//! cargo run --release -p gateway-benches --bin config-latency -- \
//!     --binary target/release/file-gateway --routes 10000 --changes 100
//! ```
//!
//! What it does:
//!
//! 1. Starts a loopback backend that answers `200 ok` and echoes the request header `x-route`
//!    (which every route of [`gateway_benches::route_table_yaml`] adds) in the response header
//!    `x-seen-route`.
//! 2. Writes the route table with `--routes` HTTPRoutes to a file in a fresh temporary
//!    directory, starts the gateway on it, and times how long `/readyz` on its admin port takes
//!    to answer 200 (cold ready) and the first proxied request to succeed.
//! 3. Starts `--load-connections` keep-alive connections that request random routes in a loop
//!    and count every answer that is not 2xx and every failed exchange.
//! 4. `--changes` times: picks a route, rewrites the file with that route's `x-route` value
//!    changed (in place, or by writing a temporary file and renaming it over the config with
//!    `--write-mode rename`), and polls the route until the echoed value is the new one. The
//!    time from just before the write to that response is one sample. Waits `--pause-ms` between
//!    changes.
//! 5. Prints one JSON object: cold ready, write-to-serve p50 / p99 / max, the requests of the
//!    load and how many of them were not 2xx or failed.
//!
//! Not run in CI (it needs a release binary and a quiet machine); see `docs/benchmarks.md`,
//! section "Configuration speed".
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use gateway_benches::{CONTROLLER_NAME, route_table_yaml};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the configuration file is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum WriteMode {
    /// Truncate and write the file in place (as `cat > file` does).
    Inplace,
    /// Write a temporary file beside it and rename it over the file (as most tools do).
    Rename,
}

/// Cold-ready time and write-to-serve latency of a file-configured gateway (see the module
/// documentation).
#[derive(Parser, Debug)]
#[command(name = "config-latency")]
struct Args {
    /// The gateway binary (file-gateway's command line: --config, --controller-name,
    /// --listener-port-map, --admin).
    #[arg(long)]
    binary: PathBuf,
    /// HTTPRoutes in the configuration.
    #[arg(long, default_value_t = 10_000)]
    routes: usize,
    /// Route changes to time.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Keep-alive connections of the steady load running during the changes.
    #[arg(long, default_value_t = 2)]
    load_connections: usize,
    /// Pause between two changes, after the previous one was seen.
    #[arg(long, default_value_t = 250)]
    pause_ms: u64,
    /// How the file is rewritten.
    #[arg(long, value_enum, default_value_t = WriteMode::Inplace)]
    write_mode: WriteMode,
    /// How long one change may take to be served before it counts as lost.
    #[arg(long, default_value_t = 30)]
    change_timeout_s: u64,
    /// Copy the gateway's log (its timing lines: load, translate, apply) to this file before
    /// the temporary directory is removed. Set `RUST_LOG` for more detail.
    #[arg(long)]
    gateway_log: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(report) => println!("{report:#}"),
        Err(e) => {
            eprintln!("config-latency: {e}");
            std::process::exit(1);
        }
    }
}

/// A free loopback port (bound and released).
fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Kills the gateway and removes the temporary directory however `run` ends.
struct Cleanup {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn run(a: Args) -> Result<serde_json::Value, BoxError> {
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_port = backend.local_addr()?.port();
    tokio::spawn(serve_backend(backend));
    let proxy_port = free_port()?;
    let admin_port = free_port()?;
    let proxy: SocketAddr = ([127, 0, 0, 1], proxy_port).into();
    let admin: SocketAddr = ([127, 0, 0, 1], admin_port).into();

    let dir = std::env::temp_dir().join(format!("config-latency-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("gw"))?;
    let mut cleanup = Cleanup {
        child: None,
        dir: dir.clone(),
    };
    let file = dir.join("gw").join("routes.yaml");
    let mut text = route_table_yaml(a.routes, (backend_port, backend_port));
    std::fs::write(&file, &text)?;

    let log = std::fs::File::create(dir.join("gateway.log"))?;
    let started = Instant::now();
    cleanup.child = Some(
        Command::new(&a.binary)
            .arg("--config")
            .arg(dir.join("gw"))
            .args(["--controller-name", CONTROLLER_NAME])
            .args(["--listener-port-map", &format!("80={proxy_port}")])
            .args(["--admin", &admin.to_string()])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()?,
    );
    let deadline = started + Duration::from_secs(120);
    let mut probe = Conn::new(admin);
    loop {
        if let Ok((200, _)) = probe.get("/readyz").await {
            break;
        }
        if Instant::now() > deadline {
            return Err("the gateway did not get ready within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready = started.elapsed();
    let mut poller = Conn::new(proxy);
    loop {
        if let Ok((200, _)) = poller.get("/svc-0/x").await {
            break;
        }
        if Instant::now() > deadline {
            return Err("the gateway did not serve its first route within 120 s".into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let first_served = started.elapsed();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(LoadCounts::default());
    let mut load = Vec::new();
    for i in 0..a.load_connections {
        load.push(tokio::spawn(steady_load(
            proxy,
            a.routes,
            0x9e37_79b9_7f4a_7c15 ^ (i as u64 + 1),
            stop.clone(),
            counts.clone(),
        )));
    }

    let mut samples = Vec::with_capacity(a.changes);
    let mut lost = 0usize;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for n in 0..a.changes {
        let route = (xorshift(&mut rng) % a.routes as u64) as usize;
        let value = format!("{route}-c{n}");
        text = with_route_value(&text, route, &value)?;
        let written = Instant::now();
        write_config(&file, &text, a.write_mode)?;
        let path = format!("/svc-{route}/x");
        let limit = written + Duration::from_secs(a.change_timeout_s);
        loop {
            if let Ok((200, Some(seen))) = poller.get(&path).await
                && seen == value
            {
                samples.push(written.elapsed());
                break;
            }
            if Instant::now() > limit {
                lost += 1;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(a.pause_ms)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in load {
        let _ = task.await;
    }
    if let Some(child) = &mut cleanup.child {
        let _ = child.kill();
        let _ = child.wait();
    }
    if let Some(path) = &a.gateway_log {
        std::fs::copy(dir.join("gateway.log"), path)?;
    }
    drop(cleanup);

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1_000.0;
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .map(|d| ms(*d))
    };
    Ok(serde_json::json!({
        "routes": a.routes,
        "write_mode": format!("{:?}", a.write_mode).to_lowercase(),
        "cold_ready_ms": ms(ready),
        "cold_first_served_ms": ms(first_served),
        "changes": a.changes,
        "changes_lost": lost,
        "write_to_serve_p50_ms": pick(0.50),
        "write_to_serve_p99_ms": pick(0.99),
        "write_to_serve_max_ms": samples.last().map(|d| ms(*d)),
        "load_requests": counts.requests.load(Ordering::Relaxed),
        "load_non_2xx": counts.non_2xx.load(Ordering::Relaxed),
        "load_errors": counts.errors.load(Ordering::Relaxed),
    }))
}

/// Writes the configuration as `mode` says.
fn write_config(file: &Path, text: &str, mode: WriteMode) -> std::io::Result<()> {
    match mode {
        WriteMode::Inplace => std::fs::write(file, text),
        WriteMode::Rename => {
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, file)
        }
    }
}

/// `text` with the `x-route` value of HTTPRoute `r{route}` set to `value` (every rule of it).
fn with_route_value(text: &str, route: usize, value: &str) -> Result<String, BoxError> {
    let head = format!("metadata: {{name: r{route}, namespace: default}}\n");
    let start = text.find(&head).ok_or("route not found in the table")?;
    let end = text[start..]
        .find("\n---\n")
        .map_or(text.len(), |e| start + e + 1);
    let document = &text[start..end];
    let marker = "{name: x-route, value: \"";
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str(&text[..start]);
    let mut rest = document;
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at + marker.len()]);
        rest = &rest[at + marker.len()..];
        let close = rest.find('"').ok_or("unterminated x-route value")?;
        out.push_str(value);
        rest = &rest[close..];
    }
    out.push_str(rest);
    out.push_str(&text[end..]);
    Ok(out)
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// What the steady load saw.
#[derive(Default)]
struct LoadCounts {
    requests: AtomicU64,
    non_2xx: AtomicU64,
    errors: AtomicU64,
}

/// Requests random routes on one keep-alive connection until `stop`.
async fn steady_load(
    proxy: SocketAddr,
    routes: usize,
    mut rng: u64,
    stop: Arc<AtomicBool>,
    counts: Arc<LoadCounts>,
) {
    let mut conn = Conn::new(proxy);
    while !stop.load(Ordering::Relaxed) {
        let route = xorshift(&mut rng) % routes as u64;
        let result = conn.get(&format!("/svc-{route}/x")).await;
        counts.requests.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok((status, _)) if (200..300).contains(&status) => {}
            Ok(_) => {
                counts.non_2xx.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One keep-alive HTTP/1 client connection, opened again after a failure.
struct Conn {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<Empty<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Conn { addr, sender: None }
    }

    /// GET `path`: the status and the `x-seen-route` header.
    async fn get(&mut self, path: &str) -> Result<(u16, Option<String>), BoxError> {
        let result = self.exchange(path).await;
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn exchange(&mut self, path: &str) -> Result<(u16, Option<String>), BoxError> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let tcp = TcpStream::connect(self.addr).await?;
            tcp.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().ok_or("no connection")?;
        sender.ready().await?;
        let req = Request::get(path)
            .header(http::header::HOST, "bench.example")
            .body(Empty::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let seen = resp
            .headers()
            .get("x-seen-route")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        resp.into_body().collect().await?;
        Ok((status, seen))
    }
}

/// The loopback backend: `200 ok`, echoing the request's `x-route` header values.
async fn serve_backend(listener: TcpListener) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                let seen = req
                    .headers()
                    .get_all("x-route")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect::<Vec<_>>()
                    .join(",");
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("x-seen-route", seen)
                            .body(Full::new(Bytes::from_static(b"ok\n")))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
