//! Reading the gateway's `/metrics` (Prometheus text format) in tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The text of `http://<addr>/metrics`, or `None` when it does not answer within 10 s.
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    let limit = Duration::from_secs(10);
    let r = tokio::time::timeout(limit, reqwest::get(format!("http://{addr}/metrics")))
        .await
        .ok()?
        .ok()?;
    tokio::time::timeout(limit, r.text()).await.ok()?.ok()
}

/// The value of one sample, `series` written as the text format writes it: the name, then
/// the labels in braces if any (`gateway_certificate_placeholder{certificate="site"}`).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Every sample line of metric `name`, whatever its labels.
pub fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let (bare, labelled) = (format!("{name} "), format!("{name}{{"));
    text.lines()
        .filter(|l| l.starts_with(&bare) || l.starts_with(&labelled))
        .collect()
}

/// A self-signed certificate and key written to `dir/<name>.pem` and `dir/<name>.key`.
pub fn write_cert(dir: &Path, name: &str, host: &str) -> (PathBuf, PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()]).unwrap();
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

/// `[acme]` against a directory on a closed port (every order fails), one certificate `name`,
/// fast retries. `ca_root` is a readable PEM file (with it, `.test` names are ordered).
pub fn dead_acme(ca_root: &Path, name: &str) -> String {
    format!(
        "[acme]\ndirectory = \"https://localhost:{}/dir\"\nemail = \"admin@gateway.test\"\n\
         storage = \"{{DIR}}/acme\"\nca_root = \"{}\"\nretry_min = \"200ms\"\nretry_max = \"400ms\"\n\
         [[acme.certificates]]\nname = \"{name}\"\nnames = [\"{name}.gateway.test\"]\n",
        super::free_port(),
        ca_root.display()
    )
}

/// What `simple_config` needs beside its echo route for the labelled series to exist: a file
/// certificate `site` (written to `certs`), an ACME certificate `managed` whose CA is on a
/// closed port, and an upstream `dead` on a closed port behind the route `/dead/`. Returns
/// the text and the path of the site certificate.
pub fn labelled_extra(certs: &Path) -> (String, PathBuf) {
    let (cert, key) = write_cert(certs, "site", "site.test");
    let (root, _) = write_cert(certs, "root", "localhost");
    let extra = format!(
        "[tls]\n[[tls.certificates]]\nname = \"site\"\ncert = \"{}\"\nkey = \"{}\"\n{}\
         [upstreams.dead]\naddress = \"{}\"\n\
         [[routes]]\nname = \"dead\"\nprefix = \"/dead/\"\nupstream = \"dead\"\n",
        cert.display(),
        key.display(),
        dead_acme(&root, "managed"),
        super::upstream::closed()
    );
    (extra, cert)
}
