//! `gateway healthcheck`: for container health checks without curl in the image.
//!
//! It asks the running process, never the file: a broken `proxy.toml` saved (and refused by
//! the gateway, which keeps serving) leaves the container healthy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Healthy when the gateway running with `run_dir` answers on its control socket and, when
/// its metrics listener is on, `GET /healthz` there answers 200 (the address is the one the
/// process serves, from its own answer).
pub fn check(run_dir: &Path) -> ExitCode {
    let status = match crate::control::status(run_dir, Duration::from_secs(3)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let Some(metrics) = status.metrics else {
        return ExitCode::SUCCESS;
    };
    let mut addr: SocketAddr = match metrics.parse() {
        Ok(a) => a,
        Err(_) => {
            eprintln!("unhealthy: the gateway reports a metrics address `{metrics}` that is not an address");
            return ExitCode::FAILURE;
        }
    };
    if addr.ip().is_unspecified() {
        addr = SocketAddr::new([127, 0, 0, 1].into(), addr.port());
    }
    match probe(addr) {
        Ok(line) if line.starts_with("HTTP/1.1 200") || line.starts_with("HTTP/1.0 200") => ExitCode::SUCCESS,
        Ok(line) => {
            eprintln!("unhealthy: {line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn probe(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}
