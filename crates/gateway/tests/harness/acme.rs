//! Shared by the ACME tests: a gateway configuration for Pebble, TLS checks against
//! Pebble's issuing root, stored certificates and reading the gateway's log.

use super::pebble::Pebble;
use super::{poll_until, Gateway};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub const NAMES: [&str; 2] = ["a.gateway.test", "b.gateway.test"];

/// One certificate `main` for [`NAMES`] from `pebble`, stored in `storage`, with a short
/// backoff (200 ms doubling up to 2 s). The HTTP listener is Pebble's validation port.
pub fn config(pebble: &Pebble, storage: &Path, upstream: std::net::SocketAddr) -> String {
    format!(
        r#"
[listen]
https = "{{HTTPS}}"
http = "127.0.0.1:{http}"
metrics = "{{METRICS}}"
[server]
grace_period = "1s"
[tls]
default_certificate = "main"
[acme]
directory = "{dir}"
email = "admin@gateway.test"
storage = "{storage}"
ca_root = "{root}"
retry_min = "200ms"
retry_max = "2s"
[[acme.certificates]]
name = "main"
names = ["{a}", "{b}"]
[upstreams.echo]
address = "{upstream}"
[[routes]]
prefix = "/"
upstream = "echo"
"#,
        http = pebble.http_port,
        dir = pebble.directory(),
        storage = storage.display(),
        root = pebble.listener_root().display(),
        a = NAMES[0],
        b = NAMES[1],
    )
}

/// What an ACME test starts with: a storage directory, Pebble and an echo upstream.
pub struct Setup {
    pub storage: tempfile::TempDir,
    pub pebble: Pebble,
    pub up: super::upstream::Upstream,
}

impl Setup {
    /// Pebble started with `env` (see [`Pebble::start`]).
    pub async fn start(env: &[(&str, &str)]) -> Setup {
        let storage = tempfile::tempdir().unwrap();
        let pebble = Pebble::start(super::free_port(), env).await;
        let up = super::upstream::echo().await;
        Setup { storage, pebble, up }
    }

    /// [`Setup::start`], then Pebble stopped: the CA is down until `pebble.launch()`.
    pub async fn down() -> Setup {
        let mut s = Self::start(&[]).await;
        s.pebble.stop();
        s
    }

    /// [`config`] for this storage, Pebble and upstream.
    pub fn config(&self) -> String {
        config(&self.pebble, self.storage.path(), self.up.addr)
    }

    /// `rel` under the storage directory (`main/fullchain.pem`).
    pub fn path(&self, rel: impl AsRef<Path>) -> std::path::PathBuf {
        self.storage.path().join(rel)
    }
}

/// A TLS connection that only succeeds when the gateway presents a certificate for `sni`
/// chaining to `root_pem` (Pebble's issuing root), signed with the matching key.
pub async fn verified(
    addr: std::net::SocketAddr,
    sni: &str,
    root_pem: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
        roots
            .add(der.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp);
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Waits until `https` serves Pebble-issued certificates for every one of `names`;
/// returns Pebble's issuing root.
pub async fn wait_issued_for(https: std::net::SocketAddr, pebble: &Pebble, names: &[&str]) -> String {
    let root = pebble.issuing_root().await;
    poll_until(Duration::from_secs(60), "a certificate from Pebble", || {
        let root = root.clone();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        async move {
            for n in &names {
                verified(https, n, &root).await.ok()?;
            }
            Some(())
        }
    })
    .await;
    root
}

/// [`wait_issued_for`] with [`NAMES`].
pub async fn wait_issued(gw: &Gateway, pebble: &Pebble) -> String {
    wait_issued_for(gw.https, pebble, &NAMES).await
}

/// The first line of `gw`'s log (colours removed) that contains every one of `needles`,
/// polled for up to `limit`.
pub async fn log_line_with(gw: &Gateway, limit: Duration, needles: &[&str]) -> String {
    let what = format!("a log line with {needles:?}");
    super::until(limit, &what, || {
        lines_with(&gw.stderr(), needles).into_iter().next()
    })
    .await
}

/// `<storage>/<certificate>/status.json` (what `gateway certs --file` reads) once it contains
/// `needle`, polled for up to `limit`.
pub async fn wait_status(storage: &Path, certificate: &str, needle: &str, limit: Duration) -> String {
    let path = storage.join(certificate).join("status.json");
    let what = format!("{needle:?} in {}", path.display());
    super::until(limit, &what, || {
        let status = std::fs::read_to_string(&path).unwrap_or_default();
        status.contains(needle).then_some(status)
    })
    .await
}

/// A stored certificate for [`NAMES`] that is near its end (plain files, as an older
/// version stored them): a third of its life is long gone, so the gateway renews it at
/// once (and serves it meanwhile). Returns its DER.
pub fn store_near_expiry(storage: &Path) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(80);
    params.not_after = now + time::Duration::days(10);
    let cert = params.self_signed(&key).unwrap();
    let dir = storage.join("main");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("fullchain.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("privkey.pem"), key.serialize_pem()).unwrap();
    cert.der().to_vec()
}

/// True when `dir/fullchain.pem` and `dir/privkey.pem` belong together.
pub fn pair_matches(dir: &Path) -> bool {
    let Ok(chain) = CertificateDer::pem_file_iter(dir.join("fullchain.pem"))
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
    else {
        return false;
    };
    let Ok(key) = PrivateKeyDer::from_pem_file(dir.join("privkey.pem")) else {
        return false;
    };
    !chain.is_empty()
        && rustls::sign::CertifiedKey::from_der(chain, key, &rustls::crypto::ring::default_provider()).is_ok()
}

/// The first certificate of `dir/fullchain.pem`, DER.
pub fn first_cert(dir: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(dir.join("fullchain.pem"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The log without terminal colours (field names are styled).
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Lines of the log (colours removed) that contain every one of `needles`.
pub fn lines_with(log: &str, needles: &[&str]) -> Vec<String> {
    plain(log)
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .map(str::to_owned)
        .collect()
}

/// The value of `field=` in a log line (colours removed), up to the next space.
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("{name}=");
    let at = line.find(&key)? + key.len();
    line[at..].split_whitespace().next()
}

/// A `Debug`-formatted `Duration` from the log: `200ms`, `1.6s`, `850.5µs`.
pub fn duration(text: &str) -> Option<Duration> {
    // Nanoseconds per unit; rounded to whole nanoseconds, so `1.6s` is exactly 1600 ms.
    let (number, unit) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = text.strip_suffix("µs") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix("ns") {
        (n, 1.0)
    } else {
        (text.strip_suffix('s')?, 1e9)
    };
    let v = number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)?;
    Some(Duration::from_nanos((v * unit).round() as u64))
}
