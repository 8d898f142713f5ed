//! A live scrape of the metrics listener parsed into samples (labels in any order, values
//! by name and labels): the promise tests read the values the running gateway serves.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One line of the Prometheus text format: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True when every one of `labels` is on this sample with that value.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels.iter().all(|(n, v)| self.label(n) == Some(*v))
    }
}

/// The text of one scrape and its samples.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            text: text.to_owned(),
            samples: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The value of the one series of `name` that carries `labels` (it may carry others),
    /// `None` when there is none. Panics when several match: name more labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.series(name, labels).into_iter();
        let first = found.next()?;
        assert!(
            found.next().is_none(),
            "more than one series of {name} with {labels:?}:\n{}",
            self.text
        );
        Some(first.value)
    }

    /// [`Scrape::get`], 0 when the series does not exist (yet).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every series of `name` that carries `labels`.
    pub fn series(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.name == name && s.has(labels))
            .collect()
    }

    /// The sample names present (histograms as `_bucket`, `_sum`, `_count`).
    pub fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Labels after the opening `{`: the pairs and what follows the closing `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = rest.find('=')?;
        let name = rest[..eq].trim().to_owned();
        rest = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (i, c) in rest.char_indices() {
            if escaped {
                value.push(if c == 'n' { '\n' } else { c });
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(i);
                break;
            } else {
                value.push(c);
            }
        }
        rest = &rest[end? + 1..];
        labels.push((name, value));
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_owned();
    let rest = &line[name_end..];
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inner) => parse_labels(inner)?,
        None => (Vec::new(), rest),
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name, labels, value })
}

/// One scrape of `http://<metrics>/metrics` ([`super::metrics::scrape`]), parsed; `None`
/// when it does not answer within its deadline.
pub async fn try_scrape(metrics: SocketAddr) -> Option<Scrape> {
    let text = super::metrics::scrape(metrics).await?;
    Some(Scrape::parse(&text))
}

/// One scrape; panics when the metrics listener does not answer.
pub async fn scrape(metrics: SocketAddr) -> Scrape {
    match try_scrape(metrics).await {
        Some(s) => s,
        None => panic!("no answer from http://{metrics}/metrics"),
    }
}

/// Scrapes until `check` accepts a scrape (up to `limit`) and returns that scrape; the
/// panic on timeout shows the last one.
pub async fn scrape_until(
    metrics: SocketAddr,
    limit: Duration,
    what: &str,
    check: impl Fn(&Scrape) -> bool,
) -> Scrape {
    let start = Instant::now();
    let mut last: Option<Scrape> = None;
    loop {
        if let Some(s) = try_scrape(metrics).await {
            if check(&s) {
                return s;
            }
            last = Some(s);
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for {what}; last scrape:\n{}",
                last.map(|s| s.text).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
