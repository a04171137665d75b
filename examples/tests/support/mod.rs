//! What the `file-gateway` process tests share: a temporary directory, the process handle and
//! free loopback ports. Everything here cleans up on drop.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A temporary directory (with a `config` subdirectory) removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh directory named after `prefix`, the process and the time.
    pub fn new(prefix: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(dir.join("config")).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The gateway process; killed on drop if the test did not stop it.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Starts `file-gateway` on the configuration directory `config`, with the Gateways' port 80
/// bound on `listener` and the further flags `args`; its output is discarded and the process is
/// killed when the handle drops.
pub fn file_gateway<I, A>(config: &Path, listener: SocketAddr, args: I) -> Process
where
    I: IntoIterator<Item = A>,
    A: AsRef<OsStr>,
{
    Process(
        Command::new(env!("CARGO_BIN_EXE_file-gateway"))
            .arg("--config")
            .arg(config)
            .arg("--listener-port-map")
            .arg(format!("80={}", listener.port()))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start file-gateway"),
    )
}
