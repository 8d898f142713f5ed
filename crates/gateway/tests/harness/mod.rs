//! Test harness: the real gateway binary started on free loopback ports, real upstream
//! servers written here, and clients. Everything started is stopped on drop.
//!
//! Included by each integration test file (`mod harness;`); each uses part of it.
#![allow(dead_code)]

pub mod acme;
pub mod apps;
pub mod auth_server;
pub mod bind;
pub mod client;
pub mod config;
pub mod gateway;
pub mod load;
pub mod metrics;
pub mod pebble;
pub mod process;
pub mod profiles_proxy;
pub mod promises;
pub mod recorder;
pub mod s3;
pub mod scrape;
pub mod several;
pub mod upstream;
pub mod wire;

pub use gateway::Gateway;
#[allow(unused_imports)] // each test file uses a part
pub use process::{require_tool, run_cmd, run_cmd_async, ProcessGuard};

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

/// A free loopback port (bound, then released for the gateway to take), never the same one
/// twice in this test process: the OS may hand a just-released port out again, and tests
/// running in parallel (or one gateway's listeners) must not share one; SO_REUSEPORT
/// listeners would not even fail to bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// `Some` once each of `addrs` accepts a TCP connection within 2 s.
pub async fn all_accept(addrs: &[SocketAddr]) -> Option<()> {
    for addr in addrs {
        let connect = tokio::net::TcpStream::connect(addr);
        tokio::time::timeout(Duration::from_secs(2), connect)
            .await
            .ok()?
            .ok()?;
    }
    Some(())
}

/// Polls `f` until it returns `Some`, up to `limit`. Readiness is polled, never slept for.
/// An attempt still running when the limit passes fails the test too.
pub async fn poll_until<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        let left = limit.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, f()).await {
            Ok(Some(v)) => return v,
            Ok(None) if start.elapsed() < limit => {}
            _ => break,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {limit:?} waiting for {what}");
}

/// [`poll_until`] for a check that needs no await: `f` runs every 20 ms until it returns
/// `Some`, for up to `limit`.
pub async fn until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    poll_until(limit, what, || std::future::ready(f())).await
}

/// The first line of `read()` (a log, read again every 20 ms for up to `limit`) that
/// contains `needle`.
pub async fn line_within(limit: Duration, read: impl Fn() -> String, needle: &str) -> String {
    let what = format!("a line with {needle}");
    until(limit, &what, || {
        read().lines().find(|l| l.contains(needle)).map(str::to_owned)
    })
    .await
}

/// [`line_within`] for up to 10 s.
pub async fn line_with(read: impl Fn() -> String, needle: &str) -> String {
    line_within(Duration::from_secs(10), read, needle).await
}

/// `n` seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Awaits `f` for at most `limit`: a step that hangs fails the test, naming `what`, instead
/// of hanging the run.
pub async fn within<F: std::future::Future>(limit: Duration, what: &str, f: F) -> F::Output {
    match tokio::time::timeout(limit, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

/// A task that is aborted when dropped: a server a test starts stops with the value that
/// holds it (connection tasks kept in the accept task's `JoinSet` go with it).
pub struct Task(tokio::task::JoinHandle<()>);

impl Task {
    pub fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(f: F) -> Task {
        Task(tokio::spawn(f))
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}
