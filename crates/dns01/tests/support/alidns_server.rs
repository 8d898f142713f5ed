//! A fake Alibaba Cloud DNS OpenAPI (version `2015-01-09`, RPC style) on `127.0.0.1:0`, for
//! tests: AddDomainRecord, DescribeDomainRecords and DeleteDomainRecord on records kept in
//! memory. Every request must carry a valid V3 signature (`ACS3-HMAC-SHA256`) made with the
//! AccessKey pair given to [`start`]; the server checks it with its own implementation of the
//! documented algorithm, written apart from the crate's signer:
//! <https://www.alibabacloud.com/help/en/sdk/product-overview/v3-request-structure-and-signature>
//! ("RequestHeader", "Signature method" steps 1 to 4).
//!
//! Refusals are JSON `{"RequestId","HostId","Code","Message","Recommend"}`
//! (<https://www.alibabacloud.com/help/en/openapi/user-guide/api-error-diagnosis>):
//! - an AccessKey ID other than the known one: `InvalidAccessKeyId.NotFound`, HTTP 404 (the
//!   status of the common client error table; the DNS error page,
//!   <https://help.aliyun.com/en/dns/error-code>, lists 400);
//! - a signature that is not the expected one: `SignatureDoesNotMatch`, HTTP 400;
//! - a malformed `Authorization`: `IncompleteSignature` (400); a missing header or parameter:
//!   `MissingParameter` (400); `x-acs-date` more than 15 minutes off: `IllegalTimestamp` (400);
//!   a nonce seen before: `SignatureNonceUsed` (400); another `x-acs-version`: `NoSuchVersion`
//!   (400); another action: `UnsupportedOperation` (400); a bad value: `InvalidParameter` (400);
//! - AddDomainRecord of a record already there: `DomainRecordDuplicate` (400);
//!   DeleteDomainRecord of an unknown id: `DomainRecordNotBelongToUser` (400).
//!
//! Included by test files with `#[path = "support/alidns_server.rs"] mod alidns_server;`; it
//! depends on tokio, hyper, hyper-util, http-body-util, bytes, ring, hex, percent-encoding and
//! serde_json only.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::http::request::Parts;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The API version the server answers (`x-acs-version`).
pub const VERSION: &str = "2015-01-09";
/// The `HostId` of its error answers.
const HOST_ID: &str = "alidns.aliyuncs.com";

/// A change of the records, reported to `on_change` after it is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added {
        domain: String,
        rr: String,
        value: String,
    },
    Deleted {
        domain: String,
        rr: String,
        value: String,
    },
}

/// The running server; it stops when dropped.
pub struct AlidnsServer {
    /// `http://127.0.0.1:PORT`, the `endpoint` to configure.
    pub url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    key_id: String,
    secret: String,
    on_change: Arc<dyn Fn(Change) + Send + Sync>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// In the order added.
    records: Vec<Rec>,
    next_id: u64,
    served: u64,
    requests: Vec<String>,
    failures: Vec<Failure>,
    nonces: HashSet<String>,
    page_cap: Option<usize>,
}

struct Rec {
    id: String,
    domain: String,
    rr: String,
    kind: String,
    value: String,
    ttl: u64,
}

struct Failure {
    /// `None`: whatever the action.
    action: Option<String>,
    code: String,
    status: u16,
}

/// A refusal: HTTP status, `Code`, `Message`.
type Refusal = (u16, &'static str, String);

/// Starts the server for the AccessKey pair `key_id`/`secret`; `on_change` is called after
/// each record is added or deleted (not for [`AlidnsServer::insert`]).
pub async fn start(key_id: &str, secret: &str, on_change: Arc<dyn Fn(Change) + Send + Sync>) -> AlidnsServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("the listener's address");
    let state = Arc::new(State {
        key_id: key_id.to_owned(),
        secret: secret.to_owned(),
        on_change,
        inner: Mutex::new(Inner {
            next_id: 1_000_001,
            ..Inner::default()
        }),
    });
    let st = state.clone();
    let task = tokio::spawn(async move {
        // The connections are in the set: aborting this task drops it and aborts them all.
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let st = st.clone();
                    connections.spawn(async move {
                        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                            let st = st.clone();
                            async move { Ok::<_, Infallible>(handle(&st, req).await) }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    });
    AlidnsServer {
        url: format!("http://{addr}"),
        state,
        task,
    }
}

impl AlidnsServer {
    /// The records, `(DomainName, RR, Value)`, in the order added.
    pub fn records(&self) -> Vec<(String, String, String)> {
        let inner = self.state.inner.lock().unwrap();
        inner
            .records
            .iter()
            .map(|r| (r.domain.clone(), r.rr.clone(), r.value.clone()))
            .collect()
    }

    /// The `x-acs-action` of every request received, in order, refused ones included.
    pub fn requests(&self) -> Vec<String> {
        self.state.inner.lock().unwrap().requests.clone()
    }

    /// The next correctly signed request, whatever its action, is refused with `code` and
    /// HTTP `status`.
    pub fn fail_next(&self, code: &str, status: u16) {
        let f = Failure {
            action: None,
            code: code.to_owned(),
            status,
        };
        self.state.inner.lock().unwrap().failures.push(f);
    }

    /// The next correctly signed request of `action` is refused with `code` and `status`.
    pub fn fail_action(&self, action: &str, code: &str, status: u16) {
        let f = Failure {
            action: Some(action.to_owned()),
            code: code.to_owned(),
            status,
        };
        self.state.inner.lock().unwrap().failures.push(f);
    }

    /// DescribeDomainRecords answers at most `n` records a page (and says so in `PageSize`),
    /// whatever `PageSize` asks: paging can be tested with a few records.
    pub fn cap_page_size(&self, n: usize) {
        self.state.inner.lock().unwrap().page_cap = Some(n.max(1));
    }

    /// Adds a record directly (no request, no `on_change`), e.g. a neighbour the provider must
    /// leave alone. Returns its `RecordId`.
    pub fn insert(&self, domain: &str, rr: &str, kind: &str, value: &str) -> String {
        let mut inner = self.state.inner.lock().unwrap();
        add(&mut inner, domain, rr, kind, value, 600)
    }
}

impl Drop for AlidnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn add(inner: &mut Inner, domain: &str, rr: &str, kind: &str, value: &str, ttl: u64) -> String {
    let id = inner.next_id.to_string();
    inner.next_id += 1;
    let (domain, rr, kind, value) = (
        domain.to_owned(),
        rr.to_owned(),
        kind.to_owned(),
        value.to_owned(),
    );
    inner.records.push(Rec {
        id: id.clone(),
        domain,
        rr,
        kind,
        value,
        ttl,
    });
    id
}

async fn handle(st: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let action = header(&parts, "x-acs-action").unwrap_or("").to_owned();
    let request_id = {
        let mut inner = st.inner.lock().unwrap();
        inner.requests.push(action.clone());
        inner.served += 1;
        format!("6D2B1A0C-0000-4000-8000-{:012X}", inner.served)
    };
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(&request_id, (400, "InvalidParameter", format!("the body: {e}"))),
    };
    let mut changes = Vec::new();
    let answer = verify(st, &parts, &body).and_then(|params| {
        let mut inner = st.inner.lock().unwrap();
        let due = inner
            .failures
            .iter()
            .position(|f| f.action.as_deref().is_none_or(|a| a == action));
        if let Some(i) = due {
            let f = inner.failures.remove(i);
            // A code of the test's choosing, leaked to fit `Refusal` (a few bytes, once each).
            let code: &'static str = Box::leak(f.code.into_boxed_str());
            return Err((f.status, code, "A failure the test asked for.".to_owned()));
        }
        operate(&mut inner, &action, &params, &mut changes)
    });
    for c in changes {
        (st.on_change)(c);
    }
    match answer {
        Ok(mut v) => {
            v["RequestId"] = json!(request_id);
            respond(200, &v)
        }
        Err(refusal) => refuse(&request_id, refusal),
    }
}

fn respond(status: u16, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json;charset=utf-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("a valid response")
}

fn refuse(request_id: &str, (status, code, message): Refusal) -> Response<Full<Bytes>> {
    let recommend = format!("https://api.aliyun.com/troubleshoot?q={code}&product=Alidns");
    let v = json!({
        "RequestId": request_id, "HostId": HOST_ID, "Code": code, "Message": message, "Recommend": recommend,
    });
    respond(status, &v)
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The checks of the gateway, in order: method and path, `Authorization`, AccessKey ID, the
/// common headers, the body hash, the signature, then date, nonce and version. Returns the
/// request's parameters (query, and an `application/x-www-form-urlencoded` body), decoded.
fn verify(st: &State, parts: &Parts, body: &[u8]) -> Result<Vec<(String, String)>, Refusal> {
    let method = parts.method.as_str();
    if method != "POST" && method != "GET" {
        return Err((
            403,
            "UnsupportedHTTPMethod",
            format!("The HTTP method {method} is not supported."),
        ));
    }
    if parts.uri.path() != "/" {
        return Err((
            400,
            "UnsupportedOperation",
            "An RPC request has the path /.".into(),
        ));
    }
    let incomplete = |m: &str| -> Refusal {
        let m = format!("The request signature does not conform to Aliyun standards: {m}");
        (400, "IncompleteSignature", m)
    };
    let auth = header(parts, "authorization").ok_or_else(|| incomplete("no Authorization header"))?;
    let rest = auth
        .strip_prefix("ACS3-HMAC-SHA256 ")
        .ok_or_else(|| incomplete("not ACS3-HMAC-SHA256"))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for item in rest.split(',') {
        match item.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(incomplete(&format!("unknown part `{item}`"))),
        }
    }
    let (Some(credential), Some(listed), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(incomplete("Credential, SignedHeaders and Signature are required"));
    };
    if credential != st.key_id {
        return Err((
            404,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.".into(),
        ));
    }
    let acs = ["action", "content-sha256", "date", "signature-nonce", "version"];
    let acs = acs.map(|n| format!("x-acs-{n}"));
    for name in std::iter::once("host".to_owned()).chain(acs) {
        if header(parts, &name).is_none() {
            return Err((
                400,
                "MissingParameter",
                format!("The header \"{name}\" is not provided."),
            ));
        }
    }
    let mismatch = |m: String| -> Refusal {
        (
            400,
            "SignatureDoesNotMatch",
            format!("Specified signature does not match our calculation. {m}"),
        )
    };
    // Every header that is to be signed must be: host, content-type and every x-acs-*.
    let listed: Vec<&str> = listed.split(';').collect();
    for name in parts.headers.keys().map(|n| n.as_str()) {
        let must = name == "host" || name == "content-type" || name.starts_with("x-acs-");
        if must && !listed.contains(&name) {
            return Err(mismatch(format!("The header {name} is not in SignedHeaders.")));
        }
    }
    let payload_hash = hex::encode(ring::digest::digest(&ring::digest::SHA256, body));
    if header(parts, "x-acs-content-sha256") != Some(payload_hash.as_str()) {
        return Err(mismatch(
            "x-acs-content-sha256 is not the SHA-256 of the body.".into(),
        ));
    }
    // V3 step 1: the canonical request, from what was received.
    let query = decode_pairs(parts.uri.query().unwrap_or(""))?;
    let mut sorted = query.clone();
    sorted.sort();
    let canonical_query: Vec<String> = sorted
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect();
    let mut names: Vec<String> = listed.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    let mut canonical_headers = String::new();
    for n in &names {
        let v = header(parts, n).ok_or_else(|| mismatch(format!("The signed header {n} is absent.")))?;
        canonical_headers.push_str(&format!("{n}:{}\n", v.trim()));
    }
    let canonical_request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{}\n{payload_hash}",
        parts.uri.path(),
        canonical_query.join("&"),
        names.join(";")
    );
    // Steps 2 and 3.
    let hashed = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical_request.as_bytes(),
    ));
    let string_to_sign = format!("ACS3-HMAC-SHA256\n{hashed}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, st.secret.as_bytes());
    let expected = hex::encode(ring::hmac::sign(&key, string_to_sign.as_bytes()));
    if signature != expected {
        return Err(mismatch(format!(
            "The canonical request of the server is {canonical_request:?}."
        )));
    }
    let date = header(parts, "x-acs-date").unwrap_or("");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match unix_time(date) {
        Some(t) if (t - now).abs() <= 15 * 60 => {}
        _ => {
            let m = format!("x-acs-date {date:?} is not yyyy-MM-ddTHH:mm:ssZ within 15 minutes of now.");
            return Err((400, "IllegalTimestamp", m));
        }
    }
    let nonce = header(parts, "x-acs-signature-nonce").unwrap_or("").to_owned();
    if !st.inner.lock().unwrap().nonces.insert(nonce) {
        return Err((
            400,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.".into(),
        ));
    }
    if header(parts, "x-acs-version") != Some(VERSION) {
        return Err((
            400,
            "NoSuchVersion",
            "The specified API version does not exist.".into(),
        ));
    }
    let mut params = query;
    let content_type = header(parts, "content-type").unwrap_or("");
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(decode_pairs(std::str::from_utf8(body).unwrap_or(""))?);
    }
    Ok(params)
}

/// RFC 3986 percent-encoding as V3 asks: `A-Z a-z 0-9 - _ . ~` as they are, every other UTF-8
/// byte `%XX` in upper case.
fn rfc3986(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `a=1&b=x%20y` as decoded pairs (`+` is a plus sign, as in RFC 3986).
fn decode_pairs(s: &str) -> Result<Vec<(String, String)>, Refusal> {
    let decode = |x: &str| -> Result<String, Refusal> {
        percent_encoding::percent_decode_str(x)
            .decode_utf8()
            .map(|c| c.into_owned())
            .map_err(|_| {
                (
                    400,
                    "InvalidParameter",
                    format!("`{x}` is not percent-encoded UTF-8."),
                )
            })
    };
    let mut out = Vec::new();
    for pair in s.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.push((decode(k)?, decode(v)?));
    }
    Ok(out)
}

/// Seconds since 1970 of `yyyy-MM-ddTHH:mm:ssZ` (days from the civil date, H. Hinnant's
/// algorithm).
fn unix_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let shape = b.len() == 20 && at(4, b'-') && at(7, b'-') && at(10, b'T') && at(13, b':') && at(16, b':');
    if !shape || !at(19, b'Z') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, Refusal> {
    match param(params, name) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => {
            let m = format!("The input parameter \"{name}\" that is mandatory is not supplied.");
            Err((400, "MissingParameter", m))
        }
    }
}

fn number(params: &[(String, String)], name: &str, default: u64) -> Result<u64, Refusal> {
    match param(params, name) {
        None | Some("") => Ok(default),
        Some(v) => {
            let m = format!("The parameter {name} is invalid.");
            v.parse().map_err(|_| (400, "InvalidParameter", m))
        }
    }
}

/// The three operations, on the records; `changes` gets what changed.
fn operate(
    inner: &mut Inner,
    action: &str,
    p: &[(String, String)],
    changes: &mut Vec<Change>,
) -> Result<Value, Refusal> {
    match action {
        "AddDomainRecord" => {
            let (domain, rr) = (required(p, "DomainName")?, required(p, "RR")?);
            let (kind, value) = (required(p, "Type")?, required(p, "Value")?);
            let ttl = number(p, "TTL", 600)?;
            let same = |r: &Rec| {
                r.domain.eq_ignore_ascii_case(domain)
                    && r.rr.eq_ignore_ascii_case(rr)
                    && r.kind.eq_ignore_ascii_case(kind)
                    && r.value == value
            };
            if inner.records.iter().any(same) {
                return Err((
                    400,
                    "DomainRecordDuplicate",
                    "The DNS record already exists.".into(),
                ));
            }
            let id = add(inner, domain, rr, kind, value, ttl);
            changes.push(Change::Added {
                domain: domain.into(),
                rr: rr.into(),
                value: value.into(),
            });
            Ok(json!({ "RecordId": id }))
        }
        "DescribeDomainRecords" => {
            let domain = required(p, "DomainName")?;
            let page = number(p, "PageNumber", 1)?;
            let size = number(p, "PageSize", 20)?;
            if page < 1 || !(1..=500).contains(&size) {
                let m = "PageNumber is at least 1, PageSize from 1 to 500.".to_owned();
                return Err((400, "InvalidParameter", m));
            }
            let keyword = |name| param(p, name).filter(|k| !k.is_empty()).map(str::to_lowercase);
            let (rr_kw, type_kw) = (keyword("RRKeyWord"), keyword("TypeKeyWord"));
            let value_kw = keyword("ValueKeyWord");
            // Newest first, as documented.
            let matching: Vec<&Rec> = inner
                .records
                .iter()
                .rev()
                .filter(|r| r.domain.eq_ignore_ascii_case(domain))
                .filter(|r| {
                    rr_kw
                        .as_ref()
                        .is_none_or(|k| r.rr.to_lowercase().contains(k.as_str()))
                })
                .filter(|r| type_kw.as_ref().is_none_or(|k| r.kind.to_lowercase() == *k))
                .filter(|r| {
                    value_kw
                        .as_ref()
                        .is_none_or(|k| r.value.to_lowercase().contains(k.as_str()))
                })
                .collect();
            let size = inner.page_cap.map_or(size as usize, |c| c.min(size as usize));
            let list: Vec<Value> = matching
                .iter()
                .skip((page as usize - 1) * size)
                .take(size)
                .map(|r| {
                    json!({
                        "DomainName": r.domain, "RecordId": r.id, "RR": r.rr, "Type": r.kind,
                        "Value": r.value, "TTL": r.ttl, "Line": "default", "Status": "ENABLE",
                        "Locked": false, "Weight": 1,
                    })
                })
                .collect();
            Ok(json!({
                "TotalCount": matching.len(), "PageNumber": page, "PageSize": size,
                "DomainRecords": { "Record": list },
            }))
        }
        "DeleteDomainRecord" => {
            let id = required(p, "RecordId")?;
            let Some(i) = inner.records.iter().position(|r| r.id == id) else {
                let m = "The DNS record does not exist or does not belong to you.".to_owned();
                return Err((400, "DomainRecordNotBelongToUser", m));
            };
            let r = inner.records.remove(i);
            changes.push(Change::Deleted {
                domain: r.domain,
                rr: r.rr,
                value: r.value,
            });
            Ok(json!({ "RecordId": id }))
        }
        "" => Err((
            400,
            "MissingParameter",
            "The header \"x-acs-action\" is not provided.".into(),
        )),
        _ => Err((
            400,
            "UnsupportedOperation",
            format!("The operation {action} is not supported."),
        )),
    }
}
