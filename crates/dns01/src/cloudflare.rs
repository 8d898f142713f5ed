//! `kind = "cloudflare"`: the challenge TXT records through the Cloudflare API v4, with an
//! API token (Zone:Read, DNS:Edit) as `Authorization: Bearer`, per
//! <https://developers.cloudflare.com/fundamentals/api/how-to/make-api-calls/> and the
//! reference under <https://developers.cloudflare.com/api/resources/> (`R/` below):
//! - List Zones `GET /zones?name=<zone>` (`R/zones/methods/list/`), once per zone.
//! - List DNS Records `GET /zones/{zone_id}/dns_records?type=TXT&name.exact=<fqdn>&per_page=100`
//!   (`R/dns/subresources/records/methods/list/`): `name` is a filter object (`exact`,
//!   `contains`, ...), sent dotted; its filters ignore case, so values are compared here.
//! - Create DNS Record `POST /zones/{zone_id}/dns_records` (`R/.../records/methods/create/`),
//!   `{"type":"TXT","name":FQDN,"content":"\"VALUE\"","ttl":120}`: TXT content "must consist
//!   of quoted character strings (RFC 1035)"; TTL in seconds, 60 to 86400.
//! - Delete DNS Record `DELETE /zones/{zone_id}/dns_records/{dns_record_id}` (`.../delete/`).
//!
//! Answers are the envelope `{"success","errors":[{"code","message"}],"messages","result"}`,
//! a refusal [`Dns01Error::Api`] with Cloudflare's codes (`10000 Authentication error`). The
//! token is only in the `Authorization` header, never in an error or a log line.

use crate::{Dns01Error, Provider, Record};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

const PROVIDER: &str = "cloudflare";
/// TTL of the challenge records, seconds (the API takes 60 to 86400, or 1 for automatic).
const TTL: u32 = 120;
/// `per_page` of List DNS Records: every TXT record at one name fits in one page.
const PER_PAGE: &str = "100";
/// Create DNS Record, HTTP 400: "An identical record already exists."
const IDENTICAL_RECORD: &str = "81058";
/// Delete DNS Record, HTTP 404: "Record does not exist."
const NO_SUCH_RECORD: &str = "81044";

/// A Cloudflare account reached with one API token at `base` (the `endpoint`); `zones` keeps
/// zone name → id. `auth` (`Bearer <token>`) is a sensitive header, `Debug` shows `Sensitive`.
#[derive(Debug)]
pub struct Cloudflare {
    client: reqwest::Client,
    base: Url,
    auth: HeaderValue,
    zones: Mutex<HashMap<String, String>>,
}

impl Cloudflare {
    /// The provider of a `kind = "cloudflare"` section; a request times out after 30 s. Errors:
    /// [`Dns01Error::Setup`] for an `endpoint` that is not an `http(s)` URL, a token an HTTP
    /// header cannot carry, or an HTTP client that cannot be built.
    pub fn new(c: &gateway_config::Cloudflare) -> Result<Cloudflare, Dns01Error> {
        let setup = |what: &str| Dns01Error::Setup(format!("cloudflare: {what}"));
        let base = Url::parse(c.endpoint.trim_end_matches('/'))
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && !u.cannot_be_a_base())
            .ok_or_else(|| setup(&format!("endpoint `{}` is not an http(s) URL", c.endpoint)))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", c.api_token.0))
            .map_err(|_| setup("api_token has characters an HTTP header cannot carry"))?;
        auth.set_sensitive(true);
        let client = crate::http_client(Duration::from_secs(30))?;
        let zones = Mutex::default();
        Ok(Cloudflare {
            client,
            base,
            auth,
            zones,
        })
    }

    fn zones(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.zones.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `endpoint` + `/segment/...` (each segment percent-encoded) + `?query`.
    fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One API call, its `result` as `T`; `body` goes as `application/json`.
    async fn call<T>(&self, m: Method, url: Url, body: Option<Value>, action: &str) -> Result<T, Dns01Error>
    where
        T: DeserializeOwned,
    {
        let shown = url.to_string();
        let http = |cause| Dns01Error::Http {
            provider: PROVIDER,
            url: shown.clone(),
            cause,
        };
        let mut req = self.client.request(m, url);
        req = req.header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            req = req.header(CONTENT_TYPE, "application/json");
            req = req.body(body.to_string());
        }
        let resp = req.send().await.map_err(http)?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(http)?;
        parse_answer(status, &bytes, action)
    }

    /// The id of zone `zone` (List Zones by name), cached. Errors: [`Dns01Error::NoZone`] when
    /// the token sees no zone of that name.
    async fn zone_id(&self, zone: &str) -> Result<String, Dns01Error> {
        if let Some(id) = self.zones().get(zone) {
            return Ok(id.clone());
        }
        let url = self.url(&["zones"], &[("name", zone)]);
        let action = format!("list zones named {zone}");
        let zones: Vec<Zone> = self.call(Method::GET, url, None, &action).await?;
        let found = zones.into_iter().find(|z| z.name.eq_ignore_ascii_case(zone));
        let id = found.map(|z| z.id).ok_or_else(|| Dns01Error::NoZone {
            name: zone.to_string(),
            detail: "Cloudflare lists no zone of that name to this API token (Zone:Read?)".into(),
        })?;
        self.zones().insert(zone.to_string(), id.clone());
        Ok(id)
    }

    /// The TXT records at `record.fqdn` holding exactly `record.value`.
    async fn matching(&self, zone_id: &str, record: &Record) -> Result<Vec<DnsRecord>, Dns01Error> {
        let fqdn = record.fqdn.as_str();
        let query = [("type", "TXT"), ("name.exact", fqdn), ("per_page", PER_PAGE)];
        let url = self.url(&["zones", zone_id, "dns_records"], &query);
        let action = format!("list TXT records at {fqdn}");
        let all: Vec<DnsRecord> = self.call(Method::GET, url, None, &action).await?;
        Ok(all.into_iter().filter(|r| r.holds(record)).collect())
    }
}

#[async_trait::async_trait]
impl Provider for Cloudflare {
    fn kind(&self) -> &'static str {
        PROVIDER
    }

    /// Creates the TXT record unless one with that exact value is already at the name.
    async fn present(&self, record: &Record) -> Result<(), Dns01Error> {
        let zone_id = self.zone_id(&record.zone).await?;
        if !self.matching(&zone_id, record).await?.is_empty() {
            tracing::debug!(fqdn = %record.fqdn, "cloudflare: the TXT record is already there");
            return Ok(());
        }
        let content = quote_txt(&record.value);
        let body = json!({ "type": "TXT", "name": record.fqdn, "content": content, "ttl": TTL });
        let url = self.url(&["zones", zone_id.as_str(), "dns_records"], &[]);
        let action = format!("create TXT record at {}", record.fqdn);
        let created: Result<DnsRecord, _> = self.call(Method::POST, url, Some(body), &action).await;
        match created {
            Ok(r) => tracing::info!(fqdn = %record.fqdn, id = %r.id, "cloudflare: TXT record created"),
            Err(e) if !has_code(&e, IDENTICAL_RECORD) => return Err(e),
            Err(_) => {} // created since the listing
        }
        Ok(())
    }

    /// Deletes every TXT record at the name with that exact value; none is not an error.
    async fn cleanup(&self, record: &Record) -> Result<(), Dns01Error> {
        let zone_id = self.zone_id(&record.zone).await?;
        for r in self.matching(&zone_id, record).await? {
            let url = self.url(&["zones", zone_id.as_str(), "dns_records", r.id.as_str()], &[]);
            let action = format!("delete TXT record {} at {}", r.id, record.fqdn);
            let deleted: Result<Value, _> = self.call(Method::DELETE, url, None, &action).await;
            match deleted {
                Ok(_) => tracing::info!(fqdn = %record.fqdn, id = %r.id, "cloudflare: TXT record deleted"),
                Err(e) if !has_code(&e, NO_SUCH_RECORD) => return Err(e),
                Err(_) => {} // deleted since the listing
            }
        }
        Ok(())
    }
}

/// The envelope of every answer (`result` is `null` in a refusal).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Envelope {
    success: Option<bool>,
    errors: Vec<ApiMessage>,
    messages: Vec<Value>, // notices, in successes too (a warning about content, for one)
    result: Value,
}

/// `{"code": 10000, "message": "Authentication error"}` (a wrong token, or one without the
/// permission: <https://developers.cloudflare.com/fundamentals/api/troubleshooting/>); some
/// (`6003 Invalid request headers`) list their causes in `error_chain`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ApiMessage {
    code: i64,
    message: String,
    error_chain: Vec<ApiMessage>,
}

impl ApiMessage {
    fn render(&self) -> String {
        let mut s = self.message.clone();
        for c in &self.error_chain {
            s += &format!(" ({} {})", c.code, c.render());
        }
        s
    }
}

#[derive(Debug, Deserialize)]
struct Zone {
    id: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct DnsRecord {
    id: String,
    name: String,
    content: String,
}

impl DnsRecord {
    fn holds(&self, r: &Record) -> bool {
        self.name.eq_ignore_ascii_case(&r.fqdn) && txt_text(&self.content) == r.value
    }
}

/// The `result` of an answer with HTTP `status` and `body`, as `T`.
///
/// Errors: [`Dns01Error::Api`] for a status outside 2xx or `"success": false` (`code` and
/// `message` list every error, separated by `,` and `; `); [`Dns01Error::Unexpected`] for a
/// body that is not the envelope or a `result` that is not of the documented shape.
fn parse_answer<T: DeserializeOwned>(status: u16, body: &[u8], action: &str) -> Result<T, Dns01Error> {
    let unexpected = |detail| Dns01Error::Unexpected {
        provider: PROVIDER,
        action: action.into(),
        detail,
    };
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        unexpected(format!("HTTP {status}, not the API envelope ({e}): {text:?}"))
    })?;
    for m in &env.messages {
        tracing::info!(%action, message = %m, "cloudflare: API message");
    }
    if !(200..300).contains(&status) || env.success == Some(false) || !env.errors.is_empty() {
        let code: Vec<String> = env.errors.iter().map(|e| e.code.to_string()).collect();
        let message: Vec<String> = env.errors.iter().map(ApiMessage::render).collect();
        let (code, message) = (code.join(","), message.join("; "));
        return Err(Dns01Error::Api {
            provider: PROVIDER,
            action: action.into(),
            status,
            code,
            message,
        });
    }
    serde_json::from_value(env.result).map_err(|e| unexpected(format!("HTTP {status}, `result`: {e}")))
}

/// Whether `e` is a refusal carrying Cloudflare error `code`.
fn has_code(e: &Dns01Error, code: &str) -> bool {
    matches!(e, Dns01Error::Api { code: c, .. } if c.split(',').any(|c| c == code))
}

/// `value` as TXT `content`: one quoted character string (RFC 1035 section 5.1), `"` and `\`
/// escaped with `\`. A DNS-01 value (43 base64url characters) is only wrapped in quotes.
fn quote_txt(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The text a TXT `content` stands for: its quoted character strings unescaped (`\X` is
/// `X`; a `\DDD` escape is not decoded, a DNS-01 value needs none) and joined (`"a" "b"` is
/// `ab`); an unquoted content (written before Cloudflare asked for quotes) is its own text.
fn txt_text(content: &str) -> String {
    let t = content.trim();
    if !t.starts_with('"') {
        return t.to_string();
    }
    let (mut out, mut quoted, mut chars) = (String::new(), false, t.chars());
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => out.extend(chars.next()),
            c if quoted => out.push(c),
            _ => {} // the blanks between strings
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The error of the answer `body` with HTTP `status`, rendered.
    fn error(status: u16, body: &str) -> String {
        let e = parse_answer::<Value>(status, body.as_bytes(), "list zones").unwrap_err();
        e.to_string()
    }

    #[test]
    fn answers_are_results_or_api_errors_with_their_codes() {
        let body = r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}],
            "messages":[],"result":null}"#;
        let want = "cloudflare: list zones refused: HTTP 403, 10000: Authentication error";
        assert_eq!(error(403, body), want);
        let body = r#"{"success":false,"errors":[{"code":6003,"message":"Invalid request headers",
            "error_chain":[{"code":6111,"message":"Invalid format for Authorization header"}]},
            {"code":81058,"message":"An identical record already exists."}],"messages":[],"result":null}"#;
        let want = "HTTP 400, 6003,81058: Invalid request headers (6111 Invalid format for \
                    Authorization header); An identical record already exists.";
        assert!(error(400, body).ends_with(want), "{}", error(400, body));
        let e = parse_answer::<Value>(400, body.as_bytes(), "create").unwrap_err();
        assert!(has_code(&e, IDENTICAL_RECORD) && !has_code(&e, NO_SUCH_RECORD) && !has_code(&e, "8105"));
        // HTTP 200 with "success": false is a refusal too; a body that is no envelope is not.
        let body = r#"{"success":false,"errors":[{"code":7003,"message":"No route"}],"result":null}"#;
        assert!(error(200, body).ends_with("refused: HTTP 200, 7003: No route"));
        let want = "cloudflare: unexpected answer to list zones: HTTP 502, not the API envelope";
        assert!(error(502, "<html>Bad gateway</html>").starts_with(want));
        // Results in their documented shape.
        let body = br#"{"success":true,"errors":[],"messages":[],"result":[{"id":"023e105f4ecef8ad9c",
            "name":"example.com","status":"active"}],"result_info":{"page":1,"per_page":20,"count":1}}"#;
        let zones: Vec<Zone> = parse_answer(200, body, "list zones").unwrap();
        assert_eq!(zones[0].id, "023e105f4ecef8ad9c");
        // Delete DNS Record documents `{"result": {"id": ...}}` alone.
        let v: Value = parse_answer(200, br#"{"result":{"id":"abc"}}"#, "delete").unwrap();
        assert_eq!(v["id"], "abc");
        let e = parse_answer::<Vec<Zone>>(200, br#"{"success":true,"errors":[],"result":null}"#, "z");
        assert!(matches!(e, Err(Dns01Error::Unexpected { .. })), "{e:?}");
    }

    #[test]
    fn txt_content_is_one_quoted_string_and_is_read_back() {
        let v = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0";
        assert_eq!(quote_txt(v), format!("\"{v}\""));
        assert_eq!(txt_text(&quote_txt(v)), v);
        assert_eq!(quote_txt(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(txt_text(&quote_txt(r#"a"b\c"#)), r#"a"b\c"#);
        assert_eq!(txt_text(r#" "abc" "def" "#), "abcdef");
        assert_eq!(txt_text(v), v, "unquoted content is its own text");
        // base64url is case-sensitive: a value differing in case is another value.
        assert_ne!(txt_text(&quote_txt(&v.to_ascii_lowercase())), v);
    }
}
