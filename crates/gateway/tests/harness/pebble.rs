//! Pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its DNS), started on loopback.
//!
//! Every name resolves to 127.0.0.1, so Pebble validates HTTP-01 against the gateway's
//! HTTP listener on `http_port`. Pebble's own HTTPS listener uses a certificate generated
//! here; that certificate is the `ca_root` the gateway trusts for the ACME endpoint.

use super::process::{require_tool, ProcessGuard};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Both programs come from Debian's `pebble`.
const PACKAGE: &str = "pebble";

pub struct Pebble {
    pebble: Option<ProcessGuard>,
    dns: ProcessGuard,
    dns_mgmt: SocketAddr,
    pub dir: tempfile::TempDir,
    pub acme: SocketAddr,
    pub mgmt: SocketAddr,
    pub dns_addr: SocketAddr,
    pub http_port: u16,
    env: Vec<(String, String)>,
    /// The DNS server Pebble validates against instead of pebble-challtestsrv
    /// ([`Pebble::use_dns`]).
    dns_server: Option<SocketAddr>,
}

impl Pebble {
    /// Starts Pebble validating HTTP-01 on `http_port`, with extra environment (for example
    /// `PEBBLE_WFE_NONCEREJECT`).
    pub async fn start(http_port: u16, env: &[(&str, &str)]) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
        std::fs::write(dir.path().join("listener.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("listener.key"), cert.signing_key.serialize_pem()).unwrap();
        let (acme, mgmt, dns_addr) = (super::free_addr(), super::free_addr(), super::free_addr());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": acme.to_string(),
                "managementListenAddress": mgmt.to_string(),
                "certificate": dir.path().join("listener.pem"),
                "privateKey": dir.path().join("listener.key"),
                "httpPort": http_port,
                "tlsPort": super::free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).unwrap();
        let dns_mgmt = super::free_addr();
        let mut dns = Command::new(require_tool("pebble-challtestsrv", PACKAGE));
        dns.args([
            "-dns01",
            &dns_addr.to_string(),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ])
        .args([
            "-management",
            &dns_mgmt.to_string(),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(log("dns.log"))
        .stderr(Stdio::null());
        let dns = ProcessGuard::spawn(&mut dns, "pebble-challtestsrv");
        let mut p = Pebble {
            pebble: None,
            dns,
            dns_mgmt,
            dir,
            acme,
            mgmt,
            dns_addr,
            http_port,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            dns_server: None,
        };
        p.launch().await;
        p
    }

    /// (Re)starts the Pebble process on the same ports, and waits until its listeners and
    /// those of its DNS (pebble-challtestsrv: TCP DNS and management) accept connections.
    /// A restarted Pebble has a new CA and forgets every account and order.
    pub async fn launch(&mut self) {
        self.stop();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pebble.log"))
            .unwrap();
        let mut cmd = Command::new(require_tool("pebble", PACKAGE));
        cmd.arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .arg("-dnsserver")
            .arg(self.dns_server.unwrap_or(self.dns_addr).to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        self.pebble = Some(ProcessGuard::spawn(&mut cmd, "pebble"));
        let addrs = [self.acme, self.mgmt, self.dns_addr, self.dns_mgmt];
        let log = self.dir.path().join("pebble.log");
        let (pebble, dns) = (self.pebble.as_mut().expect("started"), &mut self.dns);
        super::poll_until(Duration::from_secs(30), "pebble and its DNS to listen", || {
            let exited = [
                ("pebble", pebble.try_wait()),
                ("pebble-challtestsrv", dns.try_wait()),
            ];
            let log = log.clone();
            async move {
                for (name, status) in exited {
                    if let Ok(Some(status)) = status {
                        panic!(
                            "{name} exited at start ({status}):\n{}",
                            std::fs::read_to_string(log).unwrap_or_default()
                        );
                    }
                }
                super::all_accept(&addrs).await?;
                Some(())
            }
        })
        .await;
    }

    /// Restarts Pebble validating against `dns` (a BIND server) instead of
    /// pebble-challtestsrv: DNS-01 TXT records, and the addresses HTTP-01 and TLS-ALPN-01
    /// connect to.
    pub async fn use_dns(&mut self, dns: SocketAddr) {
        self.dns_server = Some(dns);
        self.launch().await;
    }

    /// Restarts Pebble with `key` of its configuration set to `value`: `tlsPort` (where
    /// TLS-ALPN-01 validations connect: the gateway's HTTPS listener),
    /// `certificateValidityPeriod` (seconds), ...
    pub async fn set(&mut self, key: &str, value: serde_json::Value) {
        let path = self.dir.path().join("pebble.json");
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        cfg["pebble"][key] = value;
        std::fs::write(&path, cfg.to_string()).unwrap();
        self.launch().await;
    }

    /// Stops Pebble (its DNS keeps running).
    pub fn stop(&mut self) {
        self.pebble = None;
    }

    pub fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme.port())
    }

    /// Pebble's listener certificate: what the gateway trusts to reach the CA.
    pub fn listener_root(&self) -> PathBuf {
        self.dir.path().join("listener.pem")
    }

    /// The root that signs issued certificates (changes on every Pebble start).
    pub async fn issuing_root(&self) -> String {
        let c = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        c.get(format!("https://{}/roots/0", self.mgmt))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        // The guards kill both processes (and their groups).
        self.stop();
        self.dns.kill_group();
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}", self.log());
        }
    }
}
