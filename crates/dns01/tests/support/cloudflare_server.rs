//! A fake Cloudflare API v4 for the tests, on `127.0.0.1:0`: one zone, its TXT records in
//! memory, and the four calls a DNS-01 client makes, checked as the API reference describes
//! them (<https://developers.cloudflare.com/api/resources/zones/methods/list/>, and
//! `.../dns/subresources/records/methods/{list,create,delete}/` under
//! <https://developers.cloudflare.com/api/resources/>):
//!
//! - every request: `Authorization: Bearer <token>`; none is HTTP 400 `9106 Missing
//!   X-Auth-Key, X-Auth-Email or Authorization headers`, another token HTTP 403 `10000
//!   Authentication error` (<https://developers.cloudflare.com/fundamentals/api/troubleshooting/>).
//! - `GET /zones?name=<zone>`: the zone when the name is the one configured, else no zone.
//! - `GET /zones/{zone_id}/dns_records?type=TXT&name.exact=<fqdn>&content.exact=..&page=..
//!   &per_page=..` (filters case-insensitive, as documented). `name` is a filter object in the
//!   reference, so a bare `name=` is refused, like any parameter the fake does not know.
//! - `POST /zones/{zone_id}/dns_records`, `Content-Type: application/json`, a TXT record
//!   `{"type":"TXT","name","content","ttl", optional "proxied","comment","tags","settings"}`:
//!   `name` in the zone, at most 255 characters; `content` quoted character strings (RFC 1035)
//!   of at most 255 bytes each; `ttl` 1 or 60 to 86400. The same name and text again is HTTP
//!   400 `81058 An identical record already exists.`
//! - `DELETE /zones/{zone_id}/dns_records/{id}`: `{"result":{"id"}}`, or HTTP 404 `81044
//!   Record does not exist.`
//!
//! Answers are the documented envelope `{"success","errors","messages","result"}`, records
//! the documented shape (`id`, `type`, `name`, `content`, `ttl`, `proxied`, `proxiable`, ...).
//! A request outside that contract (a missing field, a wrong type, unquoted TXT content,
//! which the real API only warns about) is HTTP 400 with error [`CONTRACT`] and a message
//! starting `fake Cloudflare:`, so a test fails on it. Include it with
//! `#[path = "support/cloudflare_server.rs"] mod cloudflare_server;`.

#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// The API's base path, as in `https://api.cloudflare.com/client/v4`.
pub const BASE: &str = "/client/v4";
/// The zone's id (the identifier of the reference's examples).
pub const ZONE_ID: &str = "023e105f4ecef8ad9ca31a8372d0c353";
/// The error code of a request the fake refuses as outside the documented contract.
pub const CONTRACT: u32 = 9999;
const TIMESTAMP: &str = "2014-01-01T05:20:00.12345Z";

/// A record added or deleted through the API. `content` is the TXT text, as DNS serves it:
/// the quoted character strings of the API's `content`, unescaped and joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Added { name: String, content: String },
    Deleted { name: String, content: String },
}

pub type OnChange = Arc<dyn Fn(Change) + Send + Sync>;

struct Stored {
    id: String,
    /// Lower case, no trailing dot.
    name: String,
    /// As sent (quoted).
    content: String,
    ttl: u64,
}

impl Stored {
    /// The TXT text: the quoted strings of `content` joined, or `content` when not quoted.
    fn text(&self) -> String {
        quoted_text(&self.content).unwrap_or_else(|| self.content.clone())
    }
}

struct State {
    token: String,
    zone: String,
    records: Vec<Stored>,
    next_id: u64,
    requests: Vec<String>,
}

/// The running fake; stopped (listener and connections) when dropped.
pub struct CloudflareServer {
    /// `http://127.0.0.1:PORT/client/v4`, the `endpoint` to configure.
    pub url: String,
    pub zone_id: String,
    state: Arc<Mutex<State>>,
    accept: tokio::task::JoinHandle<()>,
}

impl CloudflareServer {
    /// Serves zone `zone` to API token `token`; `on_change` is called after each record
    /// added or deleted (outside the fake's lock: it may call [`CloudflareServer::records`]).
    pub async fn start(token: &str, zone: &str, on_change: OnChange) -> CloudflareServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Cloudflare API");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            token: token.to_string(),
            zone: zone.trim_end_matches('.').to_ascii_lowercase(),
            records: Vec::new(),
            next_id: 0,
            requests: Vec::new(),
        }));
        let st = state.clone();
        let accept = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let (st, on_change) = (st.clone(), on_change.clone());
                conns.spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req| handle(req, st.clone(), on_change.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        CloudflareServer {
            url: format!("http://{addr}{BASE}"),
            zone_id: ZONE_ID.to_string(),
            state,
            accept,
        }
    }

    /// `(name, TXT text)` of every record, in creation order.
    pub fn records(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        st.records.iter().map(|r| (r.name.clone(), r.text())).collect()
    }

    /// `(name, content)` of every record, `content` exactly as the API holds it.
    pub fn contents(&self) -> Vec<(String, String)> {
        let st = self.state.lock().unwrap();
        st.records
            .iter()
            .map(|r| (r.name.clone(), r.content.clone()))
            .collect()
    }

    /// Every request seen, `METHOD path?query` as on the wire (`GET /client/v4/zones?name=...`).
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Adds a TXT record as if made elsewhere (the dashboard, another client), `content` as
    /// the API would hold it (quoted, or not for a record made before Cloudflare asked for
    /// quotes); `on_change` is not called.
    pub fn insert(&self, name: &str, content: &str) -> String {
        let mut st = self.state.lock().unwrap();
        let id = new_id(&mut st);
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        st.records.push(Stored {
            id: id.clone(),
            name,
            content: content.to_string(),
            ttl: 1,
        });
        id
    }
}

impl Drop for CloudflareServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

fn new_id(st: &mut State) -> String {
    st.next_id += 1;
    format!(
        "{:032x}",
        0x372e_6795_4025_e0ba_6aaa_6d58_6b9e_0b00_u128 + u128::from(st.next_id)
    )
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    on_change: OnChange,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let header = |name: hyper::header::HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let call = Call {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        authorization: header(hyper::header::AUTHORIZATION),
        content_type: header(hyper::header::CONTENT_TYPE),
        body,
    };
    let (status, envelope, change) = {
        let mut st = state.lock().unwrap();
        let seen = match call.query.is_empty() {
            true => format!("{} {}", call.method, call.path),
            false => format!("{} {}?{}", call.method, call.path, call.query),
        };
        st.requests.push(seen);
        match answer(&mut st, &call) {
            Ok((status, result, change)) => (status, result, change),
            Err((status, errors)) => (status, failure(&errors), None),
        }
    };
    if let Some(change) = change {
        on_change(change);
    }
    let resp = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(envelope.to_string())))
        .unwrap();
    Ok(resp)
}

struct Call {
    method: Method,
    path: String,
    query: String,
    authorization: Option<String>,
    content_type: Option<String>,
    body: Bytes,
}

/// HTTP status and the errors of a refusal.
type Refusal = (u16, Vec<(u32, String)>);

fn refuse(status: u16, code: u32, message: &str) -> Refusal {
    (status, vec![(code, message.to_string())])
}

fn contract(detail: &str) -> Refusal {
    refuse(400, CONTRACT, &format!("fake Cloudflare: {detail}"))
}

fn failure(errors: &[(u32, String)]) -> Value {
    let errors: Vec<Value> = errors
        .iter()
        .map(|(code, message)| json!({ "code": code, "message": message }))
        .collect();
    json!({ "success": false, "errors": errors, "messages": [], "result": null })
}

fn success(result: Value) -> Value {
    json!({ "success": true, "errors": [], "messages": [], "result": result })
}

/// Status, envelope and change of one call.
fn answer(st: &mut State, call: &Call) -> Result<(u16, Value, Option<Change>), Refusal> {
    let Some(rest) = call.path.strip_prefix(BASE) else {
        return Err(refuse(404, 7000, "No route for that URI"));
    };
    match call.authorization.as_deref() {
        None => {
            return Err(refuse(
                400,
                9106,
                "Missing X-Auth-Key, X-Auth-Email or Authorization headers",
            ))
        }
        Some(a) if a != format!("Bearer {}", st.token) => {
            return Err(refuse(403, 10000, "Authentication error"))
        }
        Some(_) => {}
    }
    let query = parse_query(&call.query).ok_or_else(|| contract("the query is not percent-encoded UTF-8"))?;
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (&call.method, segments.as_slice()) {
        (&Method::GET, ["zones"]) => list_zones(st, &query).map(|v| (200, v, None)),
        (_, ["zones", zone_id, "dns_records", ..]) if *zone_id != ZONE_ID => Err((
            404,
            vec![
                (
                    7003,
                    format!("Could not route to {rest}, perhaps your object identifier is invalid?"),
                ),
                (7000, "No route for that URI".to_string()),
            ],
        )),
        (&Method::GET, ["zones", _, "dns_records"]) => list_records(st, &query).map(|v| (200, v, None)),
        (&Method::POST, ["zones", _, "dns_records"]) => create_record(st, call, &query),
        (&Method::DELETE, ["zones", _, "dns_records", id]) => delete_record(st, id, &query),
        _ => Err(refuse(404, 7000, "No route for that URI")),
    }
}

/// Decoded `key=value` pairs (`%XX`, `+` for a space), in order.
fn parse_query(q: &str) -> Option<Vec<(String, String)>> {
    let decode = |s: &str| -> Option<String> {
        let (b, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8(out).ok()
    };
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

/// The value of each of `allowed` in `query`; another parameter, or one given twice, is
/// refused.
fn params<'q>(
    query: &'q [(String, String)],
    allowed: &[&str],
    hint: &str,
) -> Result<Vec<Option<&'q str>>, Refusal> {
    for (i, (k, _)) in query.iter().enumerate() {
        if !allowed.contains(&k.as_str()) {
            return Err(contract(&format!(
                "query parameter `{k}` is not one this fake knows{hint}"
            )));
        }
        if query[..i].iter().any(|(k2, _)| k2 == k) {
            return Err(contract(&format!("query parameter `{k}` is given twice")));
        }
    }
    Ok(allowed
        .iter()
        .map(|a| query.iter().find(|(k, _)| k == a).map(|(_, v)| v.as_str()))
        .collect())
}

/// `page` and `per_page` (documented: page from 1; per_page 1 to 5000000, default 100 for DNS
/// records, 5 to 50, default 20, for zones).
fn paging(page: Option<&str>, per_page: Option<&str>, range: (u64, u64, u64)) -> Result<(u64, u64), Refusal> {
    let number = |v: Option<&str>, name: &str, default: u64| match v {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| contract(&format!("`{name}` is not a number: {v:?}"))),
    };
    let (page, per_page) = (number(page, "page", 1)?, number(per_page, "per_page", range.2)?);
    if page == 0 || per_page < range.0 || per_page > range.1 {
        return Err(contract(&format!(
            "page {page} or per_page {per_page} out of range {range:?}"
        )));
    }
    Ok((page, per_page))
}

fn list_answer(all: Vec<Value>, page: u64, per_page: u64) -> Value {
    let total = all.len() as u64;
    let start = (page - 1).saturating_mul(per_page).min(total) as usize;
    let result: Vec<Value> = all.into_iter().skip(start).take(per_page as usize).collect();
    let mut env = success(Value::Array(result.clone()));
    env["result_info"] = json!({
        "page": page,
        "per_page": per_page,
        "count": result.len(),
        "total_count": total,
        "total_pages": total.div_ceil(per_page),
    });
    env
}

fn list_zones(st: &State, query: &[(String, String)]) -> Result<Value, Refusal> {
    let allowed = [
        "name",
        "status",
        "page",
        "per_page",
        "order",
        "direction",
        "match",
        "account.id",
        "account.name",
    ];
    let p = params(query, &allowed, "")?;
    let (page, per_page) = paging(p[2], p[3], (5, 50, 20))?;
    let matches = p[0].is_none_or(|n| n.eq_ignore_ascii_case(&st.zone)) && p[1].is_none_or(|s| s == "active");
    let zones = match matches {
        true => vec![json!({
            "id": ZONE_ID,
            "name": st.zone,
            "status": "active",
            "paused": false,
            "type": "full",
            "development_mode": 0,
            "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
            "original_name_servers": null,
            "original_registrar": null,
            "original_dnshost": null,
            "created_on": TIMESTAMP,
            "modified_on": TIMESTAMP,
            "activated_on": TIMESTAMP,
            "meta": {},
            "owner": { "id": null, "type": "user", "email": null },
            "account": { "id": "01a7362d577a6c3019a474fd6f485823", "name": "Demo Account" },
            "permissions": ["#dns_records:edit", "#dns_records:read", "#zone:read"],
            "plan": { "id": "0feeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Free Website", "legacy_id": "free" },
        })],
        false => Vec::new(),
    };
    Ok(list_answer(zones, page, per_page))
}

fn record_json(st: &State, r: &Stored) -> Value {
    json!({
        "id": r.id,
        "zone_id": ZONE_ID,
        "zone_name": st.zone,
        "name": r.name,
        "type": "TXT",
        "content": r.content,
        "proxiable": false,
        "proxied": false,
        "ttl": r.ttl,
        "settings": {},
        "meta": {},
        "comment": null,
        "tags": [],
        "created_on": TIMESTAMP,
        "modified_on": TIMESTAMP,
    })
}

fn list_records(st: &State, query: &[(String, String)]) -> Result<Value, Refusal> {
    let hint = " (`name` is a filter object in the current reference: `name.exact=...`)";
    let allowed = [
        "type",
        "name.exact",
        "content.exact",
        "page",
        "per_page",
        "order",
        "direction",
        "match",
    ];
    let p = params(query, &allowed, hint)?;
    let (page, per_page) = paging(p[3], p[4], (1, 5_000_000, 100))?;
    if p[7].is_some_and(|m| m != "all") {
        return Err(contract("only `match=all` is supported"));
    }
    let txt = p[0].is_none_or(|t| t.eq_ignore_ascii_case("TXT"));
    let all: Vec<Value> = st
        .records
        .iter()
        .filter(|_| txt)
        .filter(|r| p[1].is_none_or(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&r.name)))
        .filter(|r| p[2].is_none_or(|c| c.eq_ignore_ascii_case(&r.content)))
        .map(|r| record_json(st, r))
        .collect();
    Ok(list_answer(all, page, per_page))
}

fn create_record(
    st: &mut State,
    call: &Call,
    query: &[(String, String)],
) -> Result<(u16, Value, Option<Change>), Refusal> {
    params(query, &[], "")?;
    let json_type = call.content_type.as_deref().unwrap_or("").to_ascii_lowercase();
    if !json_type.starts_with("application/json") {
        return Err(contract(&format!(
            "Content-Type {:?} is not application/json",
            call.content_type
        )));
    }
    let body: Map<String, Value> = serde_json::from_slice(&call.body)
        .map_err(|e| contract(&format!("the body is not a JSON object: {e}")))?;
    let known = [
        "type", "name", "content", "ttl", "proxied", "comment", "tags", "settings",
    ];
    if let Some(k) = body.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(contract(&format!("`{k}` is not a field of a TXT record")));
    }
    let string = |k: &str| body.get(k).and_then(Value::as_str);
    if string("type") != Some("TXT") {
        return Err(contract(&format!(
            "`type` must be the string \"TXT\", not {:?}",
            body.get("type")
        )));
    }
    let name = string("name").ok_or_else(|| contract("`name` must be a string"))?;
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let in_zone = name == st.zone || name.ends_with(&format!(".{}", st.zone));
    if name.len() > 255 || !in_zone {
        return Err(contract(&format!(
            "`name` {name:?} is not a name in zone {:?} of at most 255 characters",
            st.zone
        )));
    }
    let content = string("content").ok_or_else(|| contract("`content` must be a string"))?;
    let text = quoted_text(content).ok_or_else(|| {
        contract(&format!(
            "TXT `content` {content:?} is not quoted character strings (RFC 1035) of at most 255 bytes each"
        ))
    })?;
    let ttl = body.get("ttl").and_then(Value::as_u64);
    let ttl = ttl.filter(|t| *t == 1 || (60..=86400).contains(t));
    let ttl = ttl.ok_or_else(|| {
        contract(&format!(
            "`ttl` must be 1 or 60 to 86400, not {:?}",
            body.get("ttl")
        ))
    })?;
    if body.get("proxied").is_some_and(|p| p != &Value::Bool(false)) {
        return Err(contract(
            "`proxied` must be false: a TXT record cannot be proxied",
        ));
    }
    if body.get("comment").is_some_and(|c| !c.is_string()) || body.get("tags").is_some_and(|t| !t.is_array())
    {
        return Err(contract("`comment` must be a string and `tags` an array"));
    }
    if st.records.iter().any(|r| r.name == name && r.text() == text) {
        return Err(refuse(400, 81058, "An identical record already exists."));
    }
    let id = new_id(st);
    let stored = Stored {
        id,
        name: name.clone(),
        content: content.to_string(),
        ttl,
    };
    let result = record_json(st, &stored);
    st.records.push(stored);
    Ok((200, success(result), Some(Change::Added { name, content: text })))
}

fn delete_record(
    st: &mut State,
    id: &str,
    query: &[(String, String)],
) -> Result<(u16, Value, Option<Change>), Refusal> {
    params(query, &[], "")?;
    let i = st
        .records
        .iter()
        .position(|r| r.id == id)
        .ok_or_else(|| refuse(404, 81044, "Record does not exist."))?;
    let r = st.records.remove(i);
    let content = r.text();
    Ok((
        200,
        success(json!({ "id": r.id })),
        Some(Change::Deleted {
            name: r.name,
            content,
        }),
    ))
}

/// The text of TXT content made of quoted character strings (RFC 1035 section 5.1: `\X` is
/// `X`, `\DDD` the byte DDD) separated by blanks, each at most 255 bytes; `None` for any
/// other content (an unquoted one included).
pub fn quoted_text(content: &str) -> Option<String> {
    let (b, mut out, mut i, mut strings) = (content.as_bytes(), Vec::new(), 0, 0);
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                let mut len = 0;
                i += 1;
                loop {
                    match *b.get(i)? {
                        b'"' => break,
                        b'\\' => {
                            let digits = b.get(i + 1..i + 4).filter(|d| d.iter().all(u8::is_ascii_digit));
                            if let Some(d) = digits {
                                let n = d.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                                out.push(u8::try_from(n).ok()?);
                                i += 4;
                            } else {
                                out.push(*b.get(i + 1)?);
                                i += 2;
                            }
                        }
                        c => {
                            out.push(c);
                            i += 1;
                        }
                    }
                    len += 1;
                }
                if len > 255 {
                    return None;
                }
                strings += 1;
                i += 1;
            }
            _ => return None,
        }
    }
    if strings == 0 {
        return None;
    }
    String::from_utf8(out).ok()
}
