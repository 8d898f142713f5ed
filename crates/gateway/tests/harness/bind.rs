//! BIND 9 (`named`, Debian's `bind9`) on loopback as the authoritative server of a zone that
//! accepts DNS UPDATE signed with a TSIG key: the DNS host of the DNS-01 tests, and the
//! DNS server Pebble validates against (`pebble -dnsserver`).

use super::process::{require_tool, ProcessGuard};
use hickory_client::client::{Client, ClientHandle};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::runtime::TokioRuntimeProvider;
use hickory_proto::udp::UdpClientStream;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

/// The TSIG key the zone accepts updates from (`key "gateway"`, hmac-sha256).
pub const KEY_NAME: &str = "gateway";
/// Its secret, base64 (32 bytes, as `tsig-keygen` makes them).
pub const KEY_SECRET: &str = "c2VjcmV0LWtleS1mb3ItdGhlLWdhdGV3YXktdGVzdHM=";

pub struct Bind {
    _named: ProcessGuard,
    pub dir: tempfile::TempDir,
    /// UDP and TCP, 127.0.0.1.
    pub addr: SocketAddr,
    pub zone: String,
}

impl Bind {
    /// `named` serving `zone` (SOA, NS `ns1.<zone>`, and A 127.0.0.1 for the apex and every
    /// name under it), updatable by [`KEY_NAME`] for TXT records, no recursion. Returns once
    /// it answers a query for the zone's SOA.
    pub async fn start(zone: &str) -> Bind {
        let named = require_tool("named", "bind9");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let addr = super::free_addr();
        let conf = format!(
            r#"options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-transfer {{ none; }};
}};
controls {{ }};
key "{KEY_NAME}" {{ algorithm hmac-sha256; secret "{KEY_SECRET}"; }};
zone "{zone}" {{
    type primary;
    file "{d}/zone.db";
    update-policy {{ grant {KEY_NAME} zonesub TXT; }};
}};
"#,
            port = addr.port(),
        );
        std::fs::write(dir.path().join("named.conf"), conf).unwrap();
        let db = format!(
            "$TTL 60\n@ IN SOA ns1.{zone}. admin.{zone}. 1 3600 600 86400 60\n@ IN NS ns1.{zone}.\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\nns1 IN A 127.0.0.1\n"
        );
        std::fs::write(dir.path().join("zone.db"), db).unwrap();
        let log = std::fs::File::create(dir.path().join("named.log")).unwrap();
        let mut cmd = Command::new(named);
        // -g: foreground, log to stderr; -n 1: one worker; no -u: stays the test's user.
        cmd.args(["-g", "-n", "1", "-c"])
            .arg(dir.path().join("named.conf"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut named = ProcessGuard::spawn(&mut cmd, "named");
        let bind_log = dir.path().join("named.log");
        super::poll_until(Duration::from_secs(30), "named to answer for its zone", || {
            let exited = named.try_wait();
            let log = bind_log.clone();
            let zone = zone.to_owned();
            async move {
                if let Ok(Some(status)) = exited {
                    panic!(
                        "named exited at start ({status}):\n{}",
                        std::fs::read_to_string(log).unwrap_or_default()
                    );
                }
                soa(addr, &zone).await.then_some(())
            }
        })
        .await;
        Bind {
            _named: named,
            dir,
            addr,
            zone: zone.to_owned(),
        }
    }

    /// The TXT values at `name` now, as the server answers them (`dig`-like, one UDP query).
    pub async fn txt(&self, name: &str) -> Vec<String> {
        txt(self.addr, name).await.unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named.log")).unwrap_or_default()
    }

    /// A `nsupdate` script's server and key lines for this server.
    pub fn nsupdate_header(&self) -> String {
        format!(
            "server 127.0.0.1 {}\nkey hmac-sha256:{KEY_NAME} {KEY_SECRET}\nzone {}\n",
            self.addr.port(),
            self.zone
        )
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- named log ---\n{}", self.log());
        }
    }
}

/// The records of type `rtype` at `name` in one UDP query's answer (hickory-client), or
/// `None` without an answer within 2 s.
async fn query(addr: SocketAddr, name: &str, rtype: RecordType) -> Option<Vec<RData>> {
    let udp = UdpClientStream::builder(addr, TokioRuntimeProvider::new())
        .with_timeout(Some(Duration::from_secs(2)))
        .build();
    let (mut client, bg) = Client::connect(udp).await.ok()?;
    let task = tokio::spawn(bg);
    let answer = client
        .query(Name::from_str(name).ok()?, DNSClass::IN, rtype)
        .await
        .ok();
    task.abort();
    Some(answer?.answers().iter().map(|r| r.data().clone()).collect())
}

async fn soa(addr: SocketAddr, zone: &str) -> bool {
    query(addr, zone, RecordType::SOA)
        .await
        .is_some_and(|a| a.iter().any(|d| matches!(d, RData::SOA(_))))
}

/// The TXT values (each record's strings joined).
async fn txt(addr: SocketAddr, name: &str) -> Option<Vec<String>> {
    let answers = query(addr, name, RecordType::TXT).await?;
    Some(
        answers
            .iter()
            .filter_map(|d| match d {
                RData::TXT(t) => Some(
                    t.txt_data()
                        .iter()
                        .map(|p| String::from_utf8_lossy(p).into_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect(),
    )
}
