//! The `vllm-sim` binary: flags, profile and the printed address, through a loopback socket.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};

/// Kills the child process when the test ends (also on failure).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: sim\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn binary_serves_with_flags_over_the_profile() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--profile",
            "70b-h100-tp8",
            "--model",
            "m",
            "--lora-modules",
            "a,b",
            "--max-loras",
            "2",
            "--block-size",
            "32",
            "--time-scale",
            "0.01",
        ])
        .env("POD_NAME", "pod-from-env")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("vllm-sim listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let models = get(addr, "/v1/models");
    assert!(models.starts_with("HTTP/1.1 200"), "{models}");
    assert!(
        models
            .to_ascii_lowercase()
            .contains("x-inference-pod: pod-from-env"),
        "{models}"
    );
    for id in ["\"id\":\"m\"", "\"id\":\"a\"", "\"id\":\"b\""] {
        assert!(models.contains(id), "{id} in {models}");
    }
    let metrics = get(addr, "/metrics");
    // kv-cache-size from the 70B profile, block size from the flag.
    assert!(
        metrics.contains("block_size=\"32\",num_gpu_blocks=\"85000\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("max_lora=\"2\""), "{metrics}");
}

#[test]
fn binary_rejects_an_invalid_configuration() {
    let out = Command::new(env!("CARGO_BIN_EXE_vllm-sim"))
        .args(["--port", "0", "--max-num-seqs", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_num_seqs"));
}
