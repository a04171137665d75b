//! Running the gateway under test: a fresh config directory, the `file-gateway` command line,
//! readiness, and a guard that always kills the process and removes the directory.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::cases::Scheme;
use crate::client::{Client, RequestSpec};
use crate::error::{Error, Result};

/// Default controller name of `file-gateway`.
pub const DEFAULT_CONTROLLER: &str = "gateway.pingora.rs/controller";

/// A free TCP port on 127.0.0.1 (bound and released; good enough for local tests).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A scratch directory removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `$TMPDIR/conformance-<pid>-<n>-<label>`.
    pub fn new(label: &str) -> Result<Self> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("conformance-{}-{n}-{label}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(TempDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How to start one gateway.
#[derive(Clone, Debug)]
pub struct GatewayOptions {
    /// The `file-gateway` binary.
    pub bin: PathBuf,
    /// Controller name passed with `--controller-name`.
    pub controller: String,
    /// `--address-pool` CIDR.
    pub address_pool: String,
    /// Listener ports to map to free local ports.
    pub ports: Vec<u16>,
}

/// A running gateway. Dropping it kills the process and removes its directory.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    dir: TempDir,
    /// The watched config directory.
    pub config_dir: PathBuf,
    /// The status file the gateway writes.
    pub status_file: PathBuf,
    /// The admin address.
    pub admin: SocketAddr,
    /// Listener port → local port.
    pub port_map: BTreeMap<u16, u16>,
}

impl GatewayProcess {
    /// Creates the directory layout; the caller writes the config files, then calls
    /// [`GatewayProcess::start`].
    pub fn prepare(label: &str) -> Result<(TempDir, PathBuf)> {
        let dir = TempDir::new(label)?;
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).map_err(|e| Error::io(&config, e))?;
        Ok((dir, config))
    }

    /// Spawns the gateway on a prepared directory.
    pub fn start(dir: TempDir, opts: &GatewayOptions) -> Result<Self> {
        let config_dir = dir.path().join("config");
        let status_file = dir.path().join("status.yaml");
        let log_path = dir.path().join("gateway.log");
        let admin = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port()?);
        let mut port_map = BTreeMap::new();
        for p in &opts.ports {
            port_map.insert(*p, free_port()?);
        }
        let map_arg = port_map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
        let child = Command::new(&opts.bin)
            .arg("--config")
            .arg(&config_dir)
            .arg("--controller-name")
            .arg(&opts.controller)
            .arg("--address-pool")
            .arg(&opts.address_pool)
            .arg("--listener-port-map")
            .arg(&map_arg)
            .arg("--status-file")
            .arg(&status_file)
            .arg("--admin")
            .arg(admin.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| Error::Gateway(format!("spawning {}: {e}", opts.bin.display())))?;
        Ok(GatewayProcess {
            child,
            dir,
            config_dir,
            status_file,
            admin,
            port_map,
        })
    }

    /// Waits until `GET /readyz` answers 200 and the status file exists.
    pub async fn wait_ready(&mut self, client: &Client, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let spec = RequestSpec {
            scheme: Scheme::Http,
            connect: self.admin,
            host: self.admin.to_string(),
            sni: String::new(),
            method: "GET".into(),
            path: "/readyz".into(),
            headers: vec![],
            timeout: Duration::from_secs(2),
            body: bytes::Bytes::new(),
        };
        let mut last = String::from("no answer");
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(Error::Gateway(format!(
                    "exited with {status} before ready; log:\n{}",
                    self.log_tail(40)
                )));
            }
            match client.send(&spec).await {
                Ok(o) if o.status == 200 && self.status_file.exists() => return Ok(()),
                Ok(o) => last = format!("/readyz {}", o.status),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Gateway(format!(
            "not ready after {timeout:?} ({last}); log:\n{}",
            self.log_tail(40)
        )))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last `lines` lines of the gateway's output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_dirs_are_removed() {
        let d = TempDir::new("unit").expect("tempdir");
        let p = d.path().to_path_buf();
        std::fs::write(p.join("f"), "x").expect("write");
        drop(d);
        assert!(!p.exists());
        assert!(free_port().expect("port") > 0);
    }

    #[tokio::test]
    async fn a_missing_binary_is_an_error_and_a_dead_one_is_reported() {
        let (dir, _) = GatewayProcess::prepare("missing").expect("prepare");
        let opts = GatewayOptions {
            bin: PathBuf::from("/nonexistent/file-gateway"),
            controller: DEFAULT_CONTROLLER.into(),
            address_pool: "127.20.250.0/24".into(),
            ports: vec![80],
        };
        assert!(GatewayProcess::start(dir, &opts).is_err());

        let (dir, _) = GatewayProcess::prepare("false").expect("prepare");
        let opts = GatewayOptions {
            bin: PathBuf::from("/bin/false"),
            ..opts
        };
        let mut gw = GatewayProcess::start(dir, &opts).expect("spawn /bin/false");
        let certs = crate::certs::SuiteCerts::generate().expect("certs");
        let client = Client::new(certs.ca_pem()).expect("client");
        let err = gw
            .wait_ready(&client, Duration::from_secs(5))
            .await
            .expect_err("never ready");
        assert!(err.to_string().contains("exited"), "{err}");
    }
}
