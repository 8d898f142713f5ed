//! Reading the gateway's `/metrics` (Prometheus text format) in tests.

use std::net::SocketAddr;
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
