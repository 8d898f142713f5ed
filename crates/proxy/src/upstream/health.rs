//! Active health checks (`health_check = { path, interval, timeout, fails, passes, expect,
//! host }`): `pingora-load-balancing`'s `HttpHealthCheck` sends the probe (a `GET` over
//! Pingora's HTTP/1.1 connector, with the upstream's connect and keep-alive settings), and
//! its registry counts `fails`/`passes` in a row; this wrapper adds the overall `timeout`,
//! the `expect` ranges, a `Host` per configured server, and records each probe on the
//! server's [`ServerState`] for `gateway upstreams`.

use super::ServerState;
use async_trait::async_trait;
use gateway_config::{HealthCheck, Upstream};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HealthCheck as Check, HttpHealthCheck};
use pingora_load_balancing::Backend;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// `User-Agent` of the probes.
const USER_AGENT: &str = concat!("gateway-health-check/", env!("CARGO_PKG_VERSION"));

pub(super) struct Probe {
    /// One probe per configured server entry (`Host` differs), by `host:port`.
    by_entry: HashMap<String, HttpHealthCheck>,
    timeout: Duration,
    fails: usize,
    passes: usize,
}

impl Probe {
    /// `None` if a probe request cannot be built (the path and host are validated, so only
    /// an internal error).
    pub(super) fn new(up: &Upstream, hc: &HealthCheck) -> Option<Self> {
        let mut by_entry = HashMap::new();
        for server in &up.servers {
            let entry = server.authority();
            let host = hc.host.clone().unwrap_or_else(|| entry.clone());
            let mut check = HttpHealthCheck::new(&host, false);
            let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None).ok()?;
            req.insert_header("Host", &host).ok()?;
            req.insert_header("User-Agent", USER_AGENT).ok()?;
            check.req = req;
            let o = &mut check.peer_template.options;
            o.connection_timeout = Some(up.timeouts.connect.min(hc.timeout));
            o.total_connection_timeout = Some(up.timeouts.connect.min(hc.timeout));
            o.read_timeout = Some(hc.timeout);
            o.write_timeout = Some(hc.timeout);
            o.idle_timeout = Some(up.timeouts.idle);
            check.reuse_connection = up.keepalive > 0;
            if let Some(version) = up.proxy_protocol {
                // HAProxy's `check-send-proxy`: a server that expects the header gets one
                // on its checks too, saying the connection is the gateway's own.
                o.custom_l4 = Some(std::sync::Arc::new(crate::proxy_protocol::SendProxyConnect {
                    version,
                    client: None,
                    local: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
                    timeout: up.timeouts.connect.min(hc.timeout),
                }));
            }
            let expect = hc.clone();
            check.validator = Some(Box::new(move |resp: &ResponseHeader| {
                let status = resp.status.as_u16();
                if expect.expects(status) {
                    Ok(())
                } else {
                    Error::e_explain(
                        ErrorType::CustomCode("unexpected status", status),
                        format!("status {status}, expected {}", ranges(&expect)),
                    )
                }
            }));
            by_entry.insert(entry, check);
        }
        Some(Probe {
            by_entry,
            timeout: hc.timeout,
            fails: hc.fails as usize,
            passes: hc.passes as usize,
        })
    }
}

fn ranges(hc: &HealthCheck) -> String {
    hc.expect
        .iter()
        .map(|r| {
            if r.start() == r.end() {
                r.start().to_string()
            } else {
                format!("{}-{}", r.start(), r.end())
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[async_trait]
impl Check for Probe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let state = target.ext.get::<Arc<ServerState>>();
        let check = state
            .and_then(|s| self.by_entry.get(&s.entry))
            .or_else(|| self.by_entry.values().next());
        let Some(check) = check else {
            return Error::e_explain(ErrorType::InternalError, "no probe for this server");
        };
        let result = match tokio::time::timeout(self.timeout, check.check(target)).await {
            Ok(r) => r,
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("no answer within {:?}", self.timeout),
            ),
        };
        if let Some(s) = state {
            s.record_probe(result.as_ref().err().map(|e| e.to_string()));
        }
        result
    }

    /// A server the probes bring back is back at once, even if failed requests had taken
    /// it out for `fail_timeout` (the probes show it answers again).
    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let (true, Some(s)) = (healthy, target.ext.get::<Arc<ServerState>>()) {
            s.back_in();
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        if success {
            self.passes
        } else {
            self.fails
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        match target.ext.get::<Arc<ServerState>>() {
            Some(s) => format!("upstream server {} ({})", s.label, s.entry),
            None => format!("upstream server {}", target.addr),
        }
    }
}
