//! Pebble (Let's Encrypt's test CA) and pebble-challtestsrv (its DNS), started on loopback.
//!
//! Every name resolves to 127.0.0.1, so Pebble validates HTTP-01 against the gateway's
//! HTTP listener on `http_port`. Pebble's own HTTPS listener uses a certificate generated
//! here; that certificate is the `ca_root` the gateway trusts for the ACME endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Pebble {
    pebble: Option<Child>,
    dns: Child,
    pub dir: tempfile::TempDir,
    pub acme: SocketAddr,
    pub mgmt: SocketAddr,
    pub dns_addr: SocketAddr,
    pub http_port: u16,
    env: Vec<(String, String)>,
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
        let dns = Command::new("pebble-challtestsrv")
            .args([
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
                &super::free_addr().to_string(),
                "-defaultIPv4",
                "127.0.0.1",
                "-defaultIPv6",
                "",
            ])
            .stdout(log("dns.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv (Debian package `pebble`)");
        let mut p = Pebble {
            pebble: None,
            dns,
            dir,
            acme,
            mgmt,
            dns_addr,
            http_port,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        p.launch().await;
        p
    }

    /// (Re)starts the Pebble process on the same ports. A restarted Pebble has a new CA and
    /// forgets every account and order.
    pub async fn launch(&mut self) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pebble.log"))
            .unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(self.dir.path().join("pebble.json"))
            .arg("-dnsserver")
            .arg(self.dns_addr.to_string())
            .env("PEBBLE_VA_NOSLEEP", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("pebble (Debian package `pebble`)");
        self.pebble = Some(child);
        let acme = self.acme;
        super::poll_until(Duration::from_secs(30), "pebble to listen", || async move {
            tokio::net::TcpStream::connect(acme).await.ok().map(|_| ())
        })
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.pebble.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        self.stop();
        let _ = self.dns.kill();
        let _ = self.dns.wait();
        if std::thread::panicking() {
            eprintln!("--- pebble log ---\n{}", self.log());
        }
    }
}
