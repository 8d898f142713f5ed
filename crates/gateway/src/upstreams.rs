//! `gateway upstreams`: each upstream's servers as the running gateway sees them (state and
//! why, source, requests in flight, failures, the last health check), or, from the file
//! alone, what is configured.

use gateway_config::{Balance, HashKey, Upstream};
use gateway_proxy::upstream::Group;
use std::fmt::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

fn balance(u: &Upstream) -> String {
    match &u.balance {
        Balance::RoundRobin => "round_robin".into(),
        Balance::LeastConn => "least_conn".into(),
        Balance::Random => "random".into(),
        Balance::Hash(k) => format!(
            "hash by {}",
            match k {
                HashKey::Client => "client".to_owned(),
                HashKey::Uri => "uri".to_owned(),
                HashKey::Header(n) => format!("header:{n}"),
                HashKey::Cookie(n) => format!("cookie:{n}"),
            }
        ),
    }
}

fn heading(out: &mut String, u: &Upstream) {
    let _ = write!(out, "upstream {}: {}", u.name, balance(u));
    if u.servers.len() > 1 || u.max_fails != 1 {
        let _ = write!(out, ", max_fails {} per {:?}", u.max_fails, u.fail_timeout);
    }
    match &u.health_check {
        Some(hc) => {
            let _ = writeln!(
                out,
                ", health check GET {} every {:?} (down after {}, up after {})",
                hc.path, hc.interval, hc.fails, hc.passes
            );
        }
        None => out.push_str(", no health check\n"),
    }
}

/// The running gateway's view; `ok` is false when some upstream has no server available.
pub fn render(groups: &[Arc<Group>]) -> (String, bool) {
    let mut out = String::new();
    let mut ok = true;
    for g in groups {
        heading(&mut out, &g.config);
        let members = g.members();
        if members.is_empty() {
            ok = false;
            let names: Vec<String> = g.config.servers.iter().map(|s| s.authority()).collect();
            let _ = writeln!(out, "  (no address yet: {} not resolved)", names.join(", "));
        }
        let lone = members.len() == 1;
        let mut any_up = false;
        for m in members.iter() {
            let up = g.available(m, lone);
            any_up |= up;
            let state = if up {
                "up".to_owned()
            } else if !g.probed_healthy(m) {
                "down (health check)".to_owned()
            } else {
                match m.out_for() {
                    Some(d) => format!("down (max_fails, back in {}s)", d.as_secs() + 1),
                    None => "down".to_owned(),
                }
            };
            let source = if m.from_dns {
                format!("dns {}", m.entry)
            } else {
                "list".to_owned()
            };
            let role = if m.backup { " backup" } else { "" };
            let _ = write!(
                out,
                "  {:<22} {:<28} {}{} weight {}, in flight {}, failures {}",
                m.label,
                state,
                source,
                role,
                m.weight,
                m.in_flight(),
                m.failures()
            );
            let probe = m.probe();
            if let Some(at) = probe.last {
                let ago = at.elapsed().map(|d| d.as_secs()).unwrap_or(0);
                let _ = write!(
                    out,
                    ", last check {ago}s ago: {} ({} of {} failed)",
                    probe.error.as_deref().unwrap_or("ok"),
                    probe.failures,
                    probe.probes
                );
            }
            out.push('\n');
        }
        if !members.is_empty() && !any_up {
            ok = false;
        }
    }
    if groups.is_empty() {
        out.push_str("no upstreams configured\n");
    }
    (out, ok)
}

/// `gateway upstreams --file` (or no gateway running): the configured servers.
pub fn from_file(config: &Path) -> ExitCode {
    let Some(cfg) = crate::inspect::load(config) else {
        return ExitCode::FAILURE;
    };
    let mut out = String::new();
    for u in &cfg.upstreams {
        heading(&mut out, u);
        for s in &u.servers {
            let role = if s.backup { " backup" } else { "" };
            let source = if s.host.parse::<std::net::IpAddr>().is_ok() {
                "list"
            } else {
                "dns (every address)"
            };
            let _ = writeln!(out, "  {:<22} {source}{role} weight {}", s.authority(), s.weight);
        }
    }
    out.push_str("(from the file: no gateway runs with it, so no state; start it, or see `gateway upstreams --config` with the running one's file)\n");
    print!("{out}");
    ExitCode::SUCCESS
}
