//! Header rewriting between client and upstream: hop-by-hop stripping, forwarding headers,
//! framing checks. Pure functions over Pingora's header types.

use gateway_config::{Forwarding, HostHeader};
use http::header::{self, HeaderName, HeaderValue};
use pingora_http::{CaseHeaderName, RequestHeader, ResponseHeader};
use std::net::IpAddr;

// Header names built once: parsing a name from a string on every request showed up in the
// header-rewrite benchmark.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// A field the gateway sets, with the case it is written in (as nginx's `proxy_set_header`
/// lines spell it). For an HTTP/1.x request Pingora keeps each name's case in a second map;
/// a name given with its case is neither parsed nor copied there
/// (vendor/pingora-http/PATCHED.md), where a bare `HeaderName` costs a copy of its name and a
/// string name a parse and two copies. A request that came over HTTP/2 has no case map: its
/// fields go upstream lowercase, as HTTP/2 writes them.
const fn field(name: &'static str, case: &'static str) -> (HeaderName, CaseHeaderName) {
    (HeaderName::from_static(name), CaseHeaderName::from_static(case))
}
const X_FORWARDED_FOR_FIELD: (HeaderName, CaseHeaderName) =
    (X_FORWARDED_FOR, CaseHeaderName::from_static("X-Forwarded-For"));
const X_FORWARDED_HOST_FIELD: (HeaderName, CaseHeaderName) = field("x-forwarded-host", "X-Forwarded-Host");
const X_FORWARDED_PROTO_FIELD: (HeaderName, CaseHeaderName) = field("x-forwarded-proto", "X-Forwarded-Proto");
const X_REAL_IP_FIELD: (HeaderName, CaseHeaderName) = field("x-real-ip", "X-Real-IP");
/// At most the fields `to_upstream` inserts: Upgrade, Connection, Host, X-Forwarded-Host,
/// a framing field, X-Forwarded-For, X-Real-IP, X-Forwarded-Proto.
const INSERTED_UPSTREAM: usize = 8;

/// The host the client asked for: `Host`, or the HTTP/2 `:authority`.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    // An absolute-form target's authority wins over `Host` (RFC 9112 §3.2.2); HTTP/2's
    // `:authority` arrives the same way.
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST).and_then(|v| v.to_str().ok()))
}

/// A WebSocket handshake (RFC 6455 §4.1): HTTP/1.1, `Upgrade: websocket` and `Connection`
/// listing `upgrade`. `Upgrade` alone is only a hop-by-hop field to drop (RFC 9110 §7.8):
/// any other protocol (`h2c` in particular, which would tunnel past the gateway's checks)
/// is never forwarded.
pub fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    let tokens = |name: header::HeaderName| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    req.version == http::Version::HTTP_11
        && tokens(header::UPGRADE).iter().any(|t| t == "websocket")
        && tokens(header::CONNECTION).iter().any(|t| t == "upgrade")
}

/// The declared `Content-Length`, if it is one number.
pub fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
}

/// Content-Length together with Transfer-Encoding (request smuggling), or several
/// different Content-Length values: nginx refuses both with 400.
pub fn is_ambiguous_framing(req: &RequestHeader) -> bool {
    let cl = req.headers.get_all(header::CONTENT_LENGTH);
    let mut values = cl.iter();
    let first = values.next();
    if first.is_some() && req.headers.contains_key(header::TRANSFER_ENCODING) {
        return true;
    }
    values.any(|v| Some(v) != first)
}

/// Names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(headers: &http::HeaderMap) -> Vec<HeaderName> {
    if !headers.contains_key(header::CONNECTION) {
        return Vec::new();
    }
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

/// The client's address for policies: the peer, or behind a trusted proxy
/// (`forwarding.trusted_proxies`) the last address in `X-Forwarded-For` that is not a trusted
/// proxy itself (nginx `real_ip_recursive on`); an untrusted peer's X-Forwarded-For is ignored.
pub fn client_ip(peer: Option<IpAddr>, req: &RequestHeader, fwd: &Forwarding) -> Option<IpAddr> {
    let peer = peer?;
    let trusted = |ip: &IpAddr| fwd.trusted_proxies.iter().any(|n| n.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let mut found = peer;
    for v in req.headers.get_all(&X_FORWARDED_FOR).iter().rev() {
        let Ok(text) = v.to_str() else { break };
        for part in text.rsplit(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) if trusted(&ip) => found = ip,
                Ok(ip) => return Some(ip),
                Err(_) => return Some(found),
            }
        }
    }
    Some(found)
}

/// Rewrites the request sent upstream: hop-by-hop removed, `Host` and the forwarding headers set.
pub fn to_upstream(
    req: &mut RequestHeader,
    fwd: &Forwarding,
    client: Option<IpAddr>,
    host: Option<&str>,
    allow_upgrade: bool,
) {
    let upgrade = if allow_upgrade {
        req.headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for name in connection_listed(&req.headers) {
        req.remove_header(&name);
    }
    for name in &HOP_BY_HOP {
        if req.headers.contains_key(name) {
            req.remove_header(name);
        }
    }
    // Room for the inserts below in both of the header's maps at once: the copy Pingora
    // hands over has none, and growing the two maps field by field cost about 12
    // allocations per request (benches/RESULTS.md, "Allocations per request").
    req.reserve(INSERTED_UPSTREAM);
    if let Some(up) = upgrade {
        let _ = req.insert_header(header::UPGRADE, up);
        let _ = req.insert_header(header::CONNECTION, "upgrade");
    }
    if let Some(h) = host {
        // The request usually carries `h` as its Host already (a copy of the client's):
        // its value is shared instead of copied.
        let current = req
            .headers
            .get(header::HOST)
            .filter(|v| v.as_bytes() == h.as_bytes())
            .cloned();
        let forwarded_host = match &current {
            Some(v) => v.clone(),
            None => HeaderValue::from_str(h).unwrap_or_else(|_| HeaderValue::from_static("")),
        };
        match fwd.host_header {
            HostHeader::Client if current.is_some() => {}
            HostHeader::Client => {
                let _ = req.insert_header(header::HOST, forwarded_host.clone());
            }
            HostHeader::NginxHost => {
                let name = gateway_routing::normalize_host(h);
                if current.is_none() || name != h {
                    let _ = req.insert_header(header::HOST, name.into_owned());
                }
            }
        }
        let _ = req.insert_header(X_FORWARDED_HOST_FIELD, forwarded_host);
    }
    let trusted = client.is_some_and(|ip| fwd.trusted_proxies.iter().any(|n| n.contains(&ip)));
    if !trusted {
        // RFC 7239 `Forwarded` carries the same claims as X-Forwarded-*: from a client that is
        // not a trusted proxy it is dropped, as X-Forwarded-For is replaced.
        req.remove_header(&header::FORWARDED);
    }
    let client_text = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    let (xff, real_ip) = if trusted {
        let incoming: Vec<String> = req
            .headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let xff = if incoming.is_empty() {
            client_text.clone()
        } else {
            format!("{}, {client_text}", incoming.join(", "))
        };
        // Behind a trusted proxy, the real client is the last address it did not add itself.
        let real_ip = xff
            .rsplit(',')
            .map(str::trim)
            .find(|a| {
                a.parse::<IpAddr>()
                    .is_ok_and(|ip| !fwd.trusted_proxies.iter().any(|n| n.contains(&ip)))
            })
            .unwrap_or(&client_text)
            .to_owned();
        (header_value(xff), header_value(real_ip))
    } else {
        // One value for both fields (shared, not copied).
        let v = header_value(client_text);
        (v.clone(), v)
    };
    // Framing fields as the gateway writes them, not as the client spelled them
    // (`CHUNKED`, `0003`): the edge accepted exactly one of each, so these are equivalent,
    // and an upstream comparing them literally cannot misread where the body ends.
    if req.headers.contains_key(header::TRANSFER_ENCODING) {
        let _ = req.insert_header(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
    } else if let Some(n) = content_length(&req.headers) {
        let _ = req.insert_header(header::CONTENT_LENGTH, n.to_string());
    }
    let _ = req.insert_header(X_FORWARDED_FOR_FIELD, xff);
    let _ = req.insert_header(X_REAL_IP_FIELD, real_ip);
    let _ = req.insert_header(X_FORWARDED_PROTO_FIELD, HeaderValue::from_static("https"));
}

/// `text` as a header value; an address or a list of them is always a valid one.
fn header_value(text: String) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Removes hop-by-hop headers from an upstream response (kept on a 101 upgrade).
pub fn strip_hop_by_hop_response(resp: &mut ResponseHeader, upgraded: bool) {
    if upgraded {
        return;
    }
    for name in connection_listed(&resp.headers) {
        if name != header::TRANSFER_ENCODING && name != header::CONTENT_LENGTH {
            resp.remove_header(&name);
        }
    }
    for name in &HOP_BY_HOP {
        if resp.headers.contains_key(name) {
            resp.remove_header(name);
        }
    }
}

pub fn add_vary_accept_encoding(resp: &mut ResponseHeader) -> pingora_core::Result<()> {
    let already = resp
        .headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("accept-encoding") || t.trim() == "*");
    if !already {
        resp.append_header(header::VARY, HeaderValue::from_static("Accept-Encoding"))?;
    }
    Ok(())
}

/// Headers for a body that is now encoded and streamed: no length, no ranges, a weak ETag.
pub fn mark_encoded(resp: &mut ResponseHeader, token: &'static str) -> pingora_core::Result<()> {
    resp.remove_header(&header::CONTENT_LENGTH);
    resp.remove_header(&header::ACCEPT_RANGES);
    resp.insert_header(header::CONTENT_ENCODING, token)?;
    resp.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    if let Some(etag) = resp
        .headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    {
        if etag.starts_with('"') {
            resp.insert_header(header::ETAG, format!("W/{etag}"))?;
        } else if !etag.starts_with("W/") {
            resp.remove_header(&header::ETAG);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(trusted: &[&str]) -> Forwarding {
        Forwarding {
            trusted_proxies: trusted.iter().map(|s| s.parse().unwrap()).collect(),
            host_header: HostHeader::Client,
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn forwarding_headers_from_an_untrusted_client() {
        let mut r = req(&[
            ("Host", "ex.com:8443"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("Connection", "close, X-Secret"),
            ("X-Secret", "1"),
            ("Keep-Alive", "5"),
        ]);
        to_upstream(
            &mut r,
            &fwd(&[]),
            Some("1.2.3.4".parse().unwrap()),
            Some("ex.com:8443"),
            false,
        );
        let h = |n: &str| r.headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(h("x-forwarded-for").as_deref(), Some("1.2.3.4"));
        assert_eq!(h("x-real-ip").as_deref(), Some("1.2.3.4"));
        assert_eq!(h("x-forwarded-proto").as_deref(), Some("https"));
        assert_eq!(h("host").as_deref(), Some("ex.com:8443"));
        assert_eq!(h("x-forwarded-host").as_deref(), Some("ex.com:8443"));
        assert!(h("x-secret").is_none() && h("connection").is_none() && h("keep-alive").is_none());
    }

    #[test]
    fn trusted_proxy_chain_is_appended() {
        let mut r = req(&[("X-Forwarded-For", "9.9.9.9, 10.0.0.7")]);
        let mut f = fwd(&["10.0.0.0/8"]);
        f.host_header = HostHeader::NginxHost;
        to_upstream(
            &mut r,
            &f,
            Some("10.0.0.2".parse().unwrap()),
            Some("Ex.com:8443"),
            false,
        );
        assert_eq!(
            r.headers.get("x-forwarded-for").unwrap(),
            "9.9.9.9, 10.0.0.7, 10.0.0.2"
        );
        assert_eq!(r.headers.get("x-real-ip").unwrap(), "9.9.9.9");
        assert_eq!(r.headers.get("host").unwrap(), "ex.com");
    }

    #[test]
    fn upgrade_is_kept_only_when_allowed() {
        let mut r = req(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        to_upstream(&mut r, &fwd(&[]), None, None, true);
        assert_eq!(r.headers.get("upgrade").unwrap(), "websocket");
        assert_eq!(r.headers.get("connection").unwrap(), "upgrade");
        let mut r = req(&[("Connection", "Upgrade"), ("Upgrade", "websocket")]);
        to_upstream(&mut r, &fwd(&[]), None, None, false);
        assert!(r.headers.get("upgrade").is_none());
    }

    #[test]
    fn smuggling_shapes_are_detected() {
        assert!(is_ambiguous_framing(&req(&[
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked")
        ])));
        assert!(is_ambiguous_framing(&req(&[
            ("Content-Length", "5"),
            ("Content-Length", "6")
        ])));
        assert!(!is_ambiguous_framing(&req(&[("Content-Length", "5")])));
    }
}
