//! systemd readiness notification (sd_notify(3), through the `sd-notify` crate) for
//! `Type=notify` units: every function is a no-op without `NOTIFY_SOCKET`, and a failure to
//! send is logged at debug and otherwise ignored (the service manager is the one waiting).
//!
//! `NOTIFY_SOCKET` is never removed from the environment: the successor an upgrade starts
//! inherits it and tells systemd that it is the main process now ([`main_pid`]; the unit
//! has `NotifyAccess=all`, since that message comes from a process systemd did not start).
//!
//! - [`ready_when_listening`] ([`ready`]): the signal handlers are installed, the pid file and
//!   the control socket are there (`signal::Signals`), and every listen address has a
//!   listening socket of this process. Pingora binds the listeners in the services' own
//!   runtimes, concurrently with its main loop, so the pid file alone does not say that.
//! - [`reloading`] / [`reloaded`]: around applying a configuration (systemd shows the unit as
//!   "reloading" meanwhile; `MONOTONIC_USEC` is what `Type=notify-reload` needs, ignored by
//!   older systemd).
//! - [`stopping`]: SIGTERM or SIGINT received, draining.
//! - [`main_pid`]: a successor started by `gateway upgrade`, before its [`ready`].

use sd_notify::NotifyState;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Sends `states` as one datagram to `NOTIFY_SOCKET`, when set.
fn send(states: &[NotifyState<'_>]) {
    // `false`: keep NOTIFY_SOCKET for the successor of an upgrade.
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::debug!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// `READY=1`: serving. Sent again after a failed socket handover (still serving).
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// [`ready`] once each of `addrs` has a listening socket of this process (polled every 10 ms,
/// for at most `limit`; at once where `/proc` cannot tell). Without them by then, READY=1 is
/// not sent (systemd's start timeout fails the unit) and the error is logged. Whether it was
/// sent. Run as a task of its own: signals are handled meanwhile.
pub async fn ready_when_listening(addrs: Vec<SocketAddr>, limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        match listening(&addrs) {
            Some(true) | None => {
                ready();
                return true;
            }
            Some(false) if start.elapsed() >= limit => {
                tracing::error!(
                    addresses = ?addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                    "not every listen address has a listening socket after {limit:?}: readiness (READY=1) is not reported"
                );
                return false;
            }
            Some(false) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Whether each of `addrs` (by port) has a TCP socket in LISTEN state that this process
/// holds, from `/proc/self/net/tcp{,6}` and `/proc/self/fd`; `None` when `/proc` cannot be read.
fn listening(addrs: &[SocketAddr]) -> Option<bool> {
    let mut tables = String::new();
    let mut read_any = false;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            tables.push_str(&text);
            read_any = true;
        }
    }
    if !read_any {
        return None;
    }
    let own: HashSet<u64> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.path()).ok()?;
            let target = target.to_str()?;
            target.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    let mut ports = HashSet::new();
    for line in tables.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // local_address (hex ip:port), rem_address, st (0A = LISTEN), ..., inode at index 9.
        if f.len() <= 9 || f[3] != "0A" {
            continue;
        }
        let port = f[1]
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        if let (Some(port), Ok(inode)) = (port, f[9].parse::<u64>()) {
            if own.contains(&inode) {
                ports.insert(port);
            }
        }
    }
    Some(addrs.iter().all(|a| ports.contains(&a.port())))
}

/// `RELOADING=1` with `MONOTONIC_USEC`: a configuration is being applied.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[
            NotifyState::Reloading,
            now,
            NotifyState::Status("reloading the configuration"),
        ]),
        Err(_) => send(&[
            NotifyState::Reloading,
            NotifyState::Status("reloading the configuration"),
        ]),
    }
}

/// `READY=1` after [`reloading`], whether the new configuration was applied or refused (the
/// previous one keeps serving either way).
pub fn reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// `STOPPING=1`: draining after SIGTERM, or stopping after SIGINT.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// `MAINPID=<pid>`: this process (an upgrade's successor) is the service's main process now.
pub fn main_pid(pid: u32) {
    send(&[NotifyState::MainPid(pid)]);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_listening_socket_of_this_process_is_seen_by_port() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert_eq!(super::listening(&[addr]), Some(true));
        drop(l);
        assert_eq!(super::listening(&[addr]), Some(false));
    }

    /// The datagrams the crate sends, as this module formats them (one `KEY=value` a line).
    #[test]
    fn states_are_formatted_as_sd_notify_expects() {
        use sd_notify::NotifyState;
        assert_eq!(NotifyState::Ready.to_string(), "READY=1");
        assert_eq!(NotifyState::Stopping.to_string(), "STOPPING=1");
        assert_eq!(NotifyState::Reloading.to_string(), "RELOADING=1");
        assert_eq!(NotifyState::MainPid(42).to_string(), "MAINPID=42");
        let now = NotifyState::monotonic_usec_now().unwrap().to_string();
        assert!(now.starts_with("MONOTONIC_USEC="), "{now}");
    }
}
