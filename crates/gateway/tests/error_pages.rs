//! Error pages (issue 20, item 6): every response the gateway makes itself is an HTML page,
//! JSON or plain text by the client's `Accept`, with the security headers,
//! `Cache-Control: no-store` and `X-Request-Id`, the same id as the page and the access log's
//! `$request_id`; never the upstream's name or address. The edge's own refusals of HTTP/1.1
//! heads (431, 414), the HTTP/2 refusals Pingora answers itself (`:authority`/`Host`
//! mismatch, CONNECT: a vendored patch), the `:80` listener's 404, and the custom pages of
//! `[errors] pages`, read again on `gateway reload`, with a size limit. And the security
//! headers, the configured HSTS included, on every response: 413, 431, 502 and the plain-HTTP
//! redirect.

mod harness;

use harness::client::{fields, header};
use harness::config::preamble;
use harness::gateway::with_echo;
use harness::promises as p;
use harness::wire::{find, h2_connect, h2_request, header_values, within, write};
use harness::{client, secs, until, upstream, Gateway};
use std::net::SocketAddr;
use std::path::Path;
use tokio::io::AsyncReadExt;

/// Listeners, a log format showing the request id, an echo route (`/app/`), a refused
/// upstream (`/dead/`, upstream `internalsvc`), a hanging one (`/hung/`, 1 s read timeout),
/// a route in maintenance (`/down/`); no catch-all route (404). `extra` is appended.
fn config(up: SocketAddr, dead: SocketAddr, hung: SocketAddr, extra: &str) -> String {
    let rest = r#"[limits]
max_header_count = 20
max_uri = "1K"
[logging]
access_log = "ids"
[logging.formats]
ids = 'id=$request_id status=$status uri=$request_uri'
[upstreams.echo]
address = "UP"
[upstreams.internalsvc]
address = "DEAD"
[upstreams.hungsvc]
address = "HUNG"
read_timeout = "1s"
[[routes]]
name = "dead"
prefix = "/dead/"
upstream = "internalsvc"
[[routes]]
name = "hung"
prefix = "/hung/"
upstream = "hungsvc"
[[routes]]
name = "down"
prefix = "/down/"
upstream = "echo"
maintenance = true
[[routes]]
name = "app"
prefix = "/app/"
upstream = "echo"
"#
    .replace("UP", &up.to_string())
    .replace("DEAD", &dead.to_string())
    .replace("HUNG", &hung.to_string());
    format!("\n{}{rest}{extra}", preamble("2s", "watch_config = false\n"))
}

/// The shipped security headers every error response must carry.
const SECURITY: [(&str, &str); 2] = [
    ("x-frame-options", "SAMEORIGIN"),
    ("x-content-type-options", "nosniff"),
];

/// A response as the tests look at it: status, header fields (lowercase names), body.
struct Answer {
    status: u16,
    fields: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// `X-Request-Id`, checked to be 32 lower-case hex digits.
    fn request_id(&self) -> String {
        let id = self
            .header("x-request-id")
            .unwrap_or_else(|| panic!("no X-Request-Id: {:?}", self.fields));
        assert!(
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id}"
        );
        id.to_owned()
    }

    /// The security headers, `Cache-Control: no-store`, and a page of `format` for `status`
    /// naming the request id of `X-Request-Id`, which it returns.
    fn assert_page(&self, what: &str, status: u16, reason: &str, format: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.body);
        for (name, want) in SECURITY {
            assert_eq!(
                self.header(name),
                Some(want),
                "{what}: {name} in {:?}",
                self.fields
            );
        }
        assert_eq!(self.header("cache-control"), Some("no-store"), "{what}");
        let id = self.request_id();
        let ct = self.header("content-type").unwrap_or_default();
        match format {
            "html" => {
                assert_eq!(ct, "text/html; charset=utf-8", "{what}");
                assert!(self.body.starts_with("<!DOCTYPE html>"), "{what}: {}", self.body);
                assert!(
                    self.body.contains(&format!("<title>{status} {reason}</title>")),
                    "{what}: {}",
                    self.body
                );
                assert!(
                    self.body.contains(&id),
                    "{what}: the page names {id}: {}",
                    self.body
                );
            }
            "json" => {
                assert_eq!(ct, "application/json", "{what}");
                let v: serde_json::Value =
                    serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{what}: {e}: {}", self.body));
                assert_eq!(v["status"], status, "{what}");
                assert_eq!(v["error"], reason, "{what}");
                assert_eq!(v["request_id"], id.as_str(), "{what}");
            }
            _ => {
                assert_eq!(ct, "text/plain; charset=utf-8", "{what}");
                assert!(
                    self.body.starts_with(&format!("{status} {reason}\n")),
                    "{what}: {}",
                    self.body
                );
                assert!(self.body.contains(&id), "{what}: {}", self.body);
            }
        }
        id
    }
}

async fn get(h2: bool, url: &str, accept: Option<&str>) -> Answer {
    let mut req = client::http(h2).get(url);
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    answer(within("a request", req.send()).await.expect("response")).await
}

/// The status, fields and body of `r`.
async fn answer(r: reqwest::Response) -> Answer {
    let (status, fields) = (r.status().as_u16(), fields(r.headers()));
    let body = within("the body", r.text()).await.expect("body");
    Answer { status, fields, body }
}

/// Sends `request` on a new TLS connection (HTTP/1.1) and reads until the gateway closes it.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let (mut s, _) = client::tls(addr, "localhost").await;
    write(&mut s, request).await;
    let mut buf = Vec::new();
    let _ = within("the response and the close", s.read_to_end(&mut buf)).await;
    let end = find(&buf, b"\r\n\r\n").unwrap_or_else(|| panic!("no head: {}", String::from_utf8_lossy(&buf)));
    let head = String::from_utf8_lossy(&buf[..end + 2]).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let fields = head
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
    assert_eq!(
        header_values(&head, "content-length"),
        [body.len().to_string().as_str()],
        "{head}"
    );
    Answer { status, fields, body }
}

/// One HTTP/2 request on `h2`; the response with its body.
async fn h2_exchange(h2: &harness::wire::H2, req: http::Request<()>) -> Answer {
    let r = h2.request(req, &[]).await.expect("the h2 exchange");
    let (status, fields, body) = (r.status, fields(&r.headers), r.text());
    Answer { status, fields, body }
}

/// Waits for the access line of a request with this id, status and target.
async fn logged(gw: &Gateway, id: &str, status: u16, uri: &str) {
    let line = format!("id={id} status={status} uri={uri}\n");
    let what = format!("the access line `{}`", line.trim());
    until(secs(10), &what, || gw.stdout().contains(&line).then_some(())).await;
}

/// 404 (no route), 502 (refused upstream) and 504 (hanging upstream), over HTTP/1.1 and h2:
/// HTML for `Accept: text/html`, JSON for `application/json`, plain text otherwise (`*/*`,
/// reqwest's default, and a browser's list preferring JSON by q-value); the id of the page
/// is `X-Request-Id` and the access log's `$request_id`; no upstream name or address. The
/// `:80` listener's 404 too.
///
/// To see it fail: send the old `<status> <reason>` text in `respond::send` (no page, no
/// id), or pass `&ctx.snap.security_headers` instead of `&*ctx` in proxy.rs (the id is then
/// not the access log's).
#[tokio::test]
async fn pages_by_accept_with_the_request_id_of_the_access_log() {
    let (up, hung, dead) = (upstream::echo().await, upstream::hang().await, upstream::closed());
    let gw = Gateway::start(&config(up.addr, dead, hung.addr, "")).await;
    let accepts = [
        (
            Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
            "html",
        ),
        (Some("application/json"), "json"),
        (Some("text/html;q=0.5, application/json"), "json"),
        (None, "plain"),
    ];
    let secrets = [
        "internalsvc".to_owned(),
        "hungsvc".to_owned(),
        dead.to_string(),
        hung.addr.to_string(),
        "127.0.0.1".to_owned(),
    ];
    let mut n = 0;
    for h2 in [false, true] {
        for (path, status, reason) in [
            ("/nowhere", 404, "Not Found"),
            ("/dead/x", 502, "Bad Gateway"),
            ("/hung/x", 504, "Gateway Timeout"),
        ] {
            for (accept, format) in accepts {
                n += 1;
                let target = format!("{path}?n={n}");
                let what = format!("{target} (h2: {h2}, accept {accept:?})");
                let a = get(h2, &gw.url(&target), accept).await;
                let id = a.assert_page(&what, status, reason, format);
                for secret in &secrets {
                    assert!(
                        !a.body.contains(secret.as_str()),
                        "{what}: the page shows {secret}: {}",
                        a.body
                    );
                }
                logged(&gw, &id, status, &target).await;
            }
        }
    }

    // The `:80` listener: an unknown ACME token.
    let unknown = client::plain().get(format!("http://{}/.well-known/acme-challenge/nope", gw.http));
    let request = unknown.header("accept", "application/json").send();
    let a = answer(within("a plain-HTTP request", request).await.expect("response")).await;
    let id = a.assert_page(":80 404", 404, "Not Found", "json");
    logged(&gw, &id, 404, "/.well-known/acme-challenge/nope").await;
}

/// Heads the edge refuses before Pingora parses them get the page of the format they asked
/// for, the security headers and an id: 431 (too many fields, HTML), 414 (a target over
/// `max_uri`, JSON), and plain text without `Accept`.
///
/// To see it fail: write the old `<status> <reason>` text in edge.rs `reject`.
#[tokio::test]
async fn edge_refusals_of_http1_heads_get_the_page() {
    let up = upstream::echo().await;
    let hung = upstream::hang().await;
    let gw = Gateway::start(&config(up.addr, upstream::closed(), hung.addr, "")).await;

    let mut many = String::from("GET /app/x HTTP/1.1\r\nHost: localhost\r\nAccept: text/html\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let a = raw_exchange(gw.https, many.as_bytes()).await;
    a.assert_page(
        "431, too many fields",
        431,
        "Request Header Fields Too Large",
        "html",
    );

    let long = format!(
        "GET /app/{} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\r\n",
        "a".repeat(2000)
    );
    let a = raw_exchange(gw.https, long.as_bytes()).await;
    a.assert_page("414, a long target", 414, "URI Too Long", "json");

    let plain = format!(
        "GET /app/{} HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "a".repeat(2000)
    );
    let a = raw_exchange(gw.https, plain.as_bytes()).await;
    a.assert_page("414 without Accept", 414, "URI Too Long", "plain");
    assert_eq!(up.seen().len(), 0, "refused heads never reach the upstream");
}

/// The refusals Pingora answers itself over HTTP/2, before the gateway's phases: a `host`
/// field that differs from `:authority` (400) and CONNECT (405) get the page and the
/// security headers (vendor/pingora-core PATCHED.md, "The errors Pingora answers itself").
///
/// To see it fail: drop the `gateway patch` hunks of `respond_error` or of the authority
/// refusal (an empty body without `x-frame-options`), or the `install_pingora_pages` call
/// in `Edge::new`.
#[tokio::test]
async fn h2_refusals_by_pingora_get_the_page_and_the_security_headers() {
    let up = upstream::echo().await;
    let hung = upstream::hang().await;
    let gw = Gateway::start(&config(up.addr, upstream::closed(), hung.addr, "")).await;
    let h2 = h2_connect(gw.https).await;

    let mismatch = h2_request(
        gw.https,
        "GET",
        "/app/x",
        &[("host", "other.example"), ("accept", "text/html")],
    );
    let a = h2_exchange(&h2, mismatch).await;
    a.assert_page("h2 :authority/host mismatch", 400, "Bad Request", "html");

    let connect = http::Request::builder()
        .method("CONNECT")
        .uri(format!("localhost:{}", gw.https.port()))
        .header("accept", "application/json")
        .body(())
        .expect("request");
    let h2 = h2_connect(gw.https).await;
    let a = h2_exchange(&h2, connect).await;
    a.assert_page("h2 CONNECT", 405, "Method Not Allowed", "json");
    assert_eq!(up.seen().len(), 0, "refused requests never reach the upstream");
}

fn write_page(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// `[errors] pages`: `502.html` and `502.json` with their placeholders filled, the
/// maintenance page for a route in maintenance; a page changed on disk is served after
/// `gateway reload`; a page over 64 KiB is refused with a warning and the built-in page is
/// served; a relative directory is read from beside proxy.toml.
///
/// To see it fail: skip `ErrorPages::load` in `Snapshot::new` (custom pages never served),
/// or its size check (the oversized page is served).
#[tokio::test]
async fn custom_pages_follow_reloads_and_oversized_ones_fall_back() {
    let up = upstream::echo().await;
    let hung = upstream::hang().await;
    let dead = upstream::closed();
    let pages = tempfile::tempdir().expect("tempdir");
    write_page(
        pages.path(),
        "502.html",
        "<p>v1 {{status}} {{reason}} {{request_id}}</p>",
    );
    write_page(
        pages.path(),
        "502.json",
        r#"{"code":{{status}},"id":"{{request_id}}"}"#,
    );
    write_page(
        pages.path(),
        "maintenance.html",
        "<p>back soon {{request_id}}</p>",
    );
    let errors = format!("[errors]\npages = \"{}\"\n", pages.path().display());
    let gw = Gateway::start(&config(up.addr, dead, hung.addr, &errors)).await;
    let html = Some("text/html");

    let a = get(false, &gw.url("/dead/a"), html).await;
    let id = a.request_id();
    assert_eq!(a.body, format!("<p>v1 502 Bad Gateway {id}</p>"));
    assert_eq!(a.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(a.header("x-frame-options"), Some("SAMEORIGIN"));
    let a = get(true, &gw.url("/dead/a"), Some("application/json")).await;
    let v: serde_json::Value = serde_json::from_str(&a.body).expect(&a.body);
    assert_eq!(
        (v["code"].as_u64(), v["id"].as_str()),
        (Some(502), Some(a.request_id().as_str()))
    );
    let a = get(false, &gw.url("/down/a"), html).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body,
        format!("<p>back soon {}</p>", a.request_id()),
        "the maintenance page"
    );
    let a = get(false, &gw.url("/nowhere"), html).await;
    assert!(
        a.body.starts_with("<!DOCTYPE html>"),
        "no 404.html: built in: {}",
        a.body
    );

    // Changed on disk: served after the reload, not before.
    write_page(pages.path(), "502.html", "<p>v2 {{request_id}}</p>");
    let a = get(false, &gw.url("/dead/b"), html).await;
    assert!(
        a.body.starts_with("<p>v1 "),
        "read when the configuration is loaded: {}",
        a.body
    );
    gw.reload().await;
    let a = get(false, &gw.url("/dead/c"), html).await;
    assert_eq!(a.body, format!("<p>v2 {}</p>", a.request_id()));

    // Over the limit: refused with a warning, the built-in page instead.
    write_page(pages.path(), "502.html", &"x".repeat(64 * 1024 + 1));
    gw.reload().await;
    let a = get(false, &gw.url("/dead/d"), html).await;
    a.assert_page("oversized 502.html", 502, "Bad Gateway", "html");
    gw.wait_log(secs(10), "the warning about the oversized page", |log| {
        log.contains("error page refused") && log.contains("502.html") && log.contains("over the limit")
    })
    .await;

    // A directory relative to proxy.toml.
    let local = gw.dir.path().join("errors");
    std::fs::create_dir_all(&local).unwrap();
    write_page(&local, "404.html", "<p>local 404 {{request_id}}</p>");
    let file = std::fs::read_to_string(&gw.config).unwrap();
    let at = file.find("[errors]").expect("[errors]");
    std::fs::write(
        &gw.config,
        format!("{}[errors]\npages = \"errors/\"\n", &file[..at]),
    )
    .unwrap();
    gw.reload().await;
    let a = get(true, &gw.url("/nowhere"), html).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body, format!("<p>local 404 {}</p>", a.request_id()));
}

/// The security headers of this configuration: the defaults and the configured HSTS.
const SECURITY_HSTS: [(&str, &str); 4] = [
    ("x-frame-options", "SAMEORIGIN"),
    ("x-content-type-options", "nosniff"),
    ("x-xss-protection", "1; mode=block"),
    ("strict-transport-security", "max-age=31536000"),
];

fn assert_security(what: &str, fields: &[(String, String)]) {
    for (name, want) in SECURITY_HSTS {
        let got = fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(got, Some(want), "{what}: {name} in {fields:?}");
    }
}

/// Every response carries the security headers, the configured HSTS included: 413 (declared
/// length; a chunked body past the limit), 431 (an HTTP/1.1 head too large; too many fields
/// over h2), the 502 of a refused upstream (HTTP/1.1 and h2), and the plain-HTTP 301.
///
/// To see it fail: skip the `security_headers` loop in `respond::header` (413, 502, the h2
/// 431), in `reject` (crates/proxy/src/edge.rs: the HTTP/1.1 431) or in `Redirect::response`
/// (redirect.rs: the 301); or add only the built-in defaults (HSTS goes missing).
#[tokio::test]
async fn security_headers_on_413_431_502_and_the_redirect() {
    let routes = format!(
        "[security]\nhsts = \"max-age=31536000\"\n\
         [limits]\nmax_header_bytes = \"8K\"\nmax_header_count = 50\n\
         [upstreams.dead]\naddress = \"{}\"\n\
         [[routes]]\nprefix = \"/dead/\"\nupstream = \"dead\"\n\
         [[routes]]\nprefix = \"/small/\"\nupstream = \"echo\"\nmax_body = \"1K\"\n",
        upstream::closed()
    );
    let (up, gw) = with_echo(&routes).await;
    let raw = |request: String| {
        let https = gw.https;
        async move { harness::within(secs(40), "a raw exchange", client::raw(https, request.as_bytes())).await }
    };

    let declared = "POST /small/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4096\r\n\r\n";
    let declared = raw(declared.into()).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert_security("413, declared length", &p::head_fields(&declared));
    let chunked = format!(
        "POST /small/x HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n\
         800\r\n{}\r\n0\r\n\r\n",
        "x".repeat(2048)
    );
    let chunked = raw(chunked).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
    assert_security("413, chunked", &p::head_fields(&chunked));

    let big = raw(format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(10_000)
    ))
    .await;
    assert!(big.starts_with("HTTP/1.1 431"), "{big}");
    assert_security("431, HTTP/1.1", &p::head_fields(&big));
    let mut many = client::http(true).get(gw.url("/many"));
    for i in 0..80 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let r = many.send().await.unwrap();
    assert_eq!(r.status(), 431);
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_security("431, h2", &fields(r.headers()));

    for h2 in [false, true] {
        let r = client::http(h2).get(gw.url("/dead/x")).send().await.unwrap();
        assert_eq!(r.status(), 502, "h2: {h2}");
        assert_security(&format!("502 (h2: {h2})"), &fields(r.headers()));
    }

    let r = client::send(client::http(false).get(format!("http://{}/a/b?c=d", gw.http))).await;
    assert_eq!(r.status(), 301);
    assert!(header(&r, "location").is_some_and(|l| l.starts_with("https://")));
    assert_security("301 of the plain-HTTP listener", &fields(r.headers()));
    assert!(
        up.seen().iter().all(|s| !s.uri.starts_with("/many")),
        "the 431 reached the upstream"
    );
}
