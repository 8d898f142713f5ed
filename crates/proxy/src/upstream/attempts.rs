//! Per-request decisions about a group's servers, kept out of the `ProxyHttp` phases: the
//! key a request is hashed by, which failures count against a server, and whether a failed
//! attempt may go on to another server (nginx `proxy_next_upstream`, `_tries`, `_timeout`).

use super::Group;
use gateway_config::{Balance, HashKey, MAX_TRIES};
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::RequestHeader;
use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// The bytes `balance = "hash"` hashes for this request (empty for other balancing). A
/// header or cookie the request lacks falls back to the client address, so requests
/// without one still spread instead of all landing on one server.
pub fn hash_key<'a>(balance: &Balance, req: &'a RequestHeader, client: Option<IpAddr>) -> Cow<'a, [u8]> {
    let Balance::Hash(key) = balance else {
        return Cow::Borrowed(b"");
    };
    let by_client = || Cow::Owned(client.map(|ip| ip.to_string().into_bytes()).unwrap_or_default());
    match key {
        HashKey::Client => by_client(),
        HashKey::Uri => Cow::Borrowed(
            req.uri
                .path_and_query()
                .map_or(req.uri.path(), |pq| pq.as_str())
                .as_bytes(),
        ),
        HashKey::Header(name) => match req.headers.get(name.as_str()) {
            Some(v) => Cow::Borrowed(v.as_bytes()),
            None => by_client(),
        },
        HashKey::Cookie(name) => cookie(req, name).map_or_else(by_client, Cow::Borrowed),
    }
}

/// The value of cookie `name` (RFC 6265 section 5.4 `Cookie: a=1; b=2`, every `Cookie` field).
fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (n, v) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (n == name.as_bytes()).then(|| &v[1..])
        })
}

/// What an attempt's failure was, in `next_upstream`'s terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A refused or failed connect, a reset or close before the response head.
    Error,
    /// A connect, write or read that timed out before the response head.
    Timeout,
}

/// The class of a failed connect.
pub fn connect_failure(e: &Error) -> Failure {
    match e.etype() {
        ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout => Failure::Timeout,
        _ => Failure::Error,
    }
}

/// The class of an error after the connection was made, if it is one `next_upstream` knows
/// (an upstream error before any response byte was read).
pub fn exchange_failure(e: &Error) -> Option<Failure> {
    if *e.esource() != ErrorSource::Upstream {
        return None;
    }
    match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Some(Failure::Timeout),
        ErrorType::ConnectionClosed
        | ErrorType::ReadError
        | ErrorType::WriteError
        | ErrorType::ConnectError
        | ErrorType::ConnectRefused => Some(Failure::Error),
        _ => None,
    }
}

/// Whether `group.config.next_upstream` counts `f`.
pub fn counts(group: &Group, f: Failure) -> bool {
    let n = &group.config.next_upstream;
    match f {
        Failure::Error => n.error,
        Failure::Timeout => n.timeout,
    }
}

/// Whether one more attempt is allowed after `attempts` (the first included), begun at
/// `first`, with `tried` already used: `next_upstream_tries` (default: the number of
/// servers), `next_upstream_timeout`, and an available server left.
pub fn may_try_another(group: &Group, attempts: u32, first: Option<Instant>, tried: &[SocketAddr]) -> bool {
    let members = group.members().len() as u32;
    let limit = group.config.next_upstream_tries.unwrap_or(members).min(MAX_TRIES);
    let timeout = group.config.next_upstream_timeout;
    let in_time = timeout.is_zero() || first.is_none_or(|t| t.elapsed() < timeout);
    attempts < limit && in_time && group.has_another(tried)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/a?b=1", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn hash_keys() {
        let ip: Option<IpAddr> = Some("10.1.2.3".parse().unwrap());
        let h = |k: HashKey, r: &RequestHeader| hash_key(&Balance::Hash(k), r, ip).into_owned();
        let r = req(&[("cookie", "a=1; token=xyz"), ("cookie", "c=3"), ("x-user", "u7")]);
        assert_eq!(h(HashKey::Cookie("token".into()), &r), b"xyz");
        assert_eq!(h(HashKey::Cookie("c".into()), &r), b"3");
        assert_eq!(
            h(HashKey::Cookie("tok".into()), &r),
            b"10.1.2.3",
            "absent: the client"
        );
        assert_eq!(h(HashKey::Header("x-user".into()), &r), b"u7");
        assert_eq!(h(HashKey::Header("x-none".into()), &r), b"10.1.2.3");
        assert_eq!(h(HashKey::Uri, &r), b"/a?b=1");
        assert_eq!(h(HashKey::Client, &r), b"10.1.2.3");
        assert!(hash_key(&Balance::RoundRobin, &r, ip).is_empty());
    }
}
