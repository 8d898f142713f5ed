//! HTTP/1.x request-head checks made before Pingora sees a request: the framing and `Host`
//! rules of RFC 9112 that decide where a request ends, so that the gateway and the upstream
//! can never disagree about it (request smuggling), at least as strictly as nginx 1.22.
//!
//! Pure functions on the raw head bytes; `edge.rs` calls [`check_head`] and answers the
//! returned status itself (with the security headers), closing the connection.

/// Why a request head is refused, as the status to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: unparseable, ambiguous framing, a bad or missing `Host`.
    BadRequest,
    /// 414: the request-target is longer than `limits.max_uri`.
    UriTooLong,
    /// 501: a transfer coding the gateway does not implement (nginx answers the same).
    NotImplemented,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::UriTooLong => 414,
            Refusal::NotImplemented => 501,
        }
    }
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Where a request head ends (the byte after its blank line) and how many header lines it
/// has, scanning from `from` so a trickled request is not rescanned from the start. Bare LF
/// line ends count too (RFC 9112 §2.2), as httparse then decides.
pub fn head_end(buf: &[u8], from: usize, lines: &mut usize) -> Option<usize> {
    // Empty lines before the request line are not the end of a head (RFC 9112 §2.2).
    let lead = buf.iter().position(|b| !matches!(b, b'\r' | b'\n'))?;
    let start = from.saturating_sub(3).max(lead);
    let mut i = start;
    while let Some(off) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + off;
        if nl >= from {
            *lines += 1;
        }
        let blank = (nl >= 1 && buf[nl - 1] == b'\n') || (nl >= 3 && &buf[nl - 3..nl] == b"\r\n\r");
        if blank && nl >= 1 {
            return Some(nl + 1);
        }
        i = nl + 1;
    }
    None
}

/// Transfer codings registered with IANA: known, but only `chunked` alone is accepted.
const KNOWN_CODINGS: &[&str] = &[
    "chunked",
    "compress",
    "deflate",
    "gzip",
    "x-gzip",
    "x-compress",
    "identity",
    "trailers",
];

/// Checks a complete request head (request line through the blank line).
///
/// - request-target longer than `max_uri` bytes → 414;
/// - unparseable head → 400;
/// - `Transfer-Encoding` (RFC 9112 §6.1): more than one field, or any value but exactly
///   `chunked` → 400 (501 for a coding that is not registered); in an HTTP/1.0 request → 400;
/// - `Content-Length` (RFC 9112 §6.3, RFC 9110 §8.6): more than one field (even equal), a
///   list, or anything but digits → 400; together with `Transfer-Encoding` → 400;
/// - `Host` (RFC 9112 §3.2): missing in HTTP/1.1, repeated, or not `uri-host[:port]` → 400.
pub fn check_head(head: &[u8], max_uri: usize) -> Result<BodyFraming, Refusal> {
    // The request-target is the second word of the request line (RFC 9112 §3), after any
    // empty lines a client may send first (§2.2; httparse skips them too).
    let head = skip_empty_lines(head);
    let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
    let line = &head[..line_end];
    if let Some(sp) = line.iter().position(|&b| b == b' ') {
        let rest = &line[sp + 1..];
        let target_len = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
        if target_len > max_uri {
            return Err(Refusal::UriTooLong);
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(Refusal::BadRequest),
    }
    let http10 = req.version == Some(0);
    let mut te: Option<&[u8]> = None;
    let mut cl: Option<&[u8]> = None;
    let mut host: Option<&[u8]> = None;
    for h in req.headers.iter() {
        let slot = if h.name.eq_ignore_ascii_case("transfer-encoding") {
            &mut te
        } else if h.name.eq_ignore_ascii_case("content-length") {
            &mut cl
        } else if h.name.eq_ignore_ascii_case("host") {
            &mut host
        } else {
            continue;
        };
        if slot.is_some() {
            return Err(Refusal::BadRequest);
        }
        *slot = Some(h.value);
    }
    match host {
        Some(h) if !valid_host(h) => return Err(Refusal::BadRequest),
        None if !http10 => return Err(Refusal::BadRequest),
        _ => {}
    }
    if let Some(target) = req.path {
        check_target(target)?;
    }
    if let Some(te) = te {
        if http10 || cl.is_some() {
            return Err(Refusal::BadRequest);
        }
        let value = std::str::from_utf8(te).map_err(|_| Refusal::BadRequest)?;
        let codings: Vec<String> = value.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
        if codings.iter().any(String::is_empty) {
            return Err(Refusal::BadRequest);
        }
        if codings.iter().any(|c| !KNOWN_CODINGS.contains(&c.as_str())) {
            return Err(Refusal::NotImplemented);
        }
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(BodyFraming::Chunked),
            _ => Err(Refusal::BadRequest),
        };
    }
    match cl {
        None => Ok(BodyFraming::None),
        Some(v) => {
            let v = trim_ows(v);
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadRequest);
            }
            let n = std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(Refusal::BadRequest)?;
            Ok(BodyFraming::Length(n))
        }
    }
}

/// An absolute-form target must be `http` or `https` (RFC 9112 §3.2.2; the gateway is not a
/// forward proxy, its authority then replaces `Host`); origin-form starts with `/`;
/// asterisk-form is for OPTIONS only.
fn check_target(target: &str) -> Result<(), Refusal> {
    if target.starts_with('/') || target == "*" {
        return Ok(());
    }
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &target[8..]
    } else if lower.starts_with("http://") {
        &target[7..]
    } else {
        return Err(Refusal::BadRequest);
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') || !valid_host(authority.as_bytes()) {
        return Err(Refusal::BadRequest);
    }
    Ok(())
}

/// For an absolute-form request (`GET http://a.test/x HTTP/1.1`) whose `Host` differs from
/// the target's authority, the head rewritten with `Host: <authority>`: RFC 9112 §3.2.2
/// says the authority wins and `Host` is ignored, and routing and the upstream's `Host`
/// then agree with it (the upstream itself always comes from the route, so a foreign
/// authority is never proxied to). `None` when nothing needs to change. Expects a head that
/// passed [`check_head`].
pub fn absolute_form_host(head: &[u8]) -> Option<Vec<u8>> {
    let head = skip_empty_lines(head);
    // Most requests are origin-form: decide from the request line before parsing the head.
    let sp = head.iter().position(|&b| b == b' ')?;
    let scheme = head.get(sp + 1..sp + 5)?;
    if !scheme.eq_ignore_ascii_case(b"http") {
        return None;
    }
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(head) else {
        return None;
    };
    let target = req.path?;
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
        .or_else(|| {
            target
                .get(..8)
                .filter(|p| p.eq_ignore_ascii_case("https://"))
                .map(|_| &target[8..])
        })
        .or_else(|| {
            target
                .get(..7)
                .filter(|p| p.eq_ignore_ascii_case("http://"))
                .map(|_| &target[7..])
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host"));
    if host.is_some_and(|h| trim_ows(h.value).eq_ignore_ascii_case(authority.as_bytes())) {
        return None;
    }
    let line_end = head.iter().position(|&b| b == b'\n')? + 1;
    let mut out = Vec::with_capacity(head.len() + authority.len() + 8);
    out.extend_from_slice(&head[..line_end]);
    out.extend_from_slice(b"Host: ");
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in req
        .headers
        .iter()
        .filter(|h| !h.name.eq_ignore_ascii_case("host"))
    {
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// The head without the empty lines (CRLF or bare LF) a client may send before the
/// request line (RFC 9112 §2.2).
fn skip_empty_lines(head: &[u8]) -> &[u8] {
    let start = head
        .iter()
        .position(|b| !matches!(b, b'\r' | b'\n'))
        .unwrap_or(head.len());
    &head[start..]
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// `uri-host [ ":" port ]` (RFC 3986 §3.2.2–3.2.3): a reg-name or IPv4 address of
/// unreserved, percent-encoded and sub-delim characters, or a bracketed IP literal; a port,
/// when its colon is there, of one to five digits. Spaces, `/`, `\`, `@`, control bytes and
/// an empty label (`a..b`, as nginx) are refused.
pub fn valid_host(v: &[u8]) -> bool {
    let v = trim_ows(v);
    if v.is_empty() {
        return false;
    }
    let (host, port) = if v[0] == b'[' {
        let Some(close) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &v[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        match &v[close + 1..] {
            [] => (&v[..0], None),
            [b':', port @ ..] => (&v[..0], Some(port)),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|&b| b == b':') {
            Some(c) => (&v[..c], Some(&v[c + 1..])),
            None => (v, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
            return false;
        }
    }
    if v[0] == b'[' {
        return true;
    }
    // nginx (`ngx_http_validate_host`) refuses an empty label: `a..b`.
    if host.is_empty() || host.windows(2).any(|w| w == b"..") {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        let ok = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        if b == b'%' {
            match host.get(i + 1..i + 3) {
                Some([a, c]) if a.is_ascii_hexdigit() && c.is_ascii_hexdigit() => {
                    i += 3;
                    continue;
                }
                _ => return false,
            }
        }
        if !ok {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(head: &str) -> Result<BodyFraming, Refusal> {
        check_head(head.as_bytes(), 8192)
    }

    fn with(headers: &str) -> Result<BodyFraming, Refusal> {
        check(&format!("POST / HTTP/1.1\r\nHost: a.test\r\n{headers}\r\n"))
    }

    /// Each of `headers` (fields of a POST) gets a 400.
    fn bad_requests(headers: &[&str]) {
        for bad in headers {
            assert_eq!(with(bad), Err(Refusal::BadRequest), "{bad:?}");
        }
    }

    #[test]
    fn transfer_encoding_is_chunked_alone_or_refused() {
        assert_eq!(with("Transfer-Encoding: chunked\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(with("Transfer-Encoding: Chunked \r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(with("Transfer-Encoding: foo\r\n"), Err(Refusal::NotImplemented));
        assert_eq!(
            check("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Refusal::BadRequest)
        );
        bad_requests(&[
            "Transfer-Encoding: identity\r\n",
            "Transfer-Encoding: chunked, identity\r\n",
            "Transfer-Encoding: gzip, chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
            "Transfer-Encoding:\r\n",
        ]);
    }

    #[test]
    fn content_length_is_one_number() {
        assert_eq!(with("Content-Length: 5\r\n"), Ok(BodyFraming::Length(5)));
        assert_eq!(with(""), Ok(BodyFraming::None));
        bad_requests(&[
            "Content-Length: 5\r\nContent-Length: 5\r\n",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
            "Content-Length: 5, 5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x5\r\n",
            "Content-Length: \r\n",
            "Content-Length: 99999999999999999999\r\n",
        ]);
    }

    #[test]
    fn host_is_required_once_and_valid() {
        assert_eq!(check("GET / HTTP/1.1\r\n\r\n"), Err(Refusal::BadRequest));
        assert_eq!(check("GET / HTTP/1.0\r\n\r\n"), Ok(BodyFraming::None));
        assert_eq!(
            check("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"),
            Err(Refusal::BadRequest)
        );
        for good in [
            "a.test",
            "a.test:8443",
            "127.0.0.1",
            "[::1]:443",
            "[::1]",
            "xn--bcher-kva.example",
            "a_b.test",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "a\\b",
            "u@a.test",
            "a\x01",
            "a.test:",
            ":443",
            "a.test:x",
            "[::1",
            "[::1]x",
            "a%zz",
            "a.test:123456",
            "a..b",
            "a.test..",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
            assert_eq!(
                check(&format!("GET / HTTP/1.1\r\nHost: {bad}\r\n\r\n")),
                Err(Refusal::BadRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn absolute_form_targets_are_http_with_a_valid_authority() {
        assert_eq!(
            check("GET http://a.test/x HTTP/1.1\r\nHost: b.test\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        assert_eq!(
            check("GET https://a.test:8443?q HTTP/1.1\r\nHost: b\r\n\r\n"),
            Ok(BodyFraming::None)
        );
        for bad in ["ftp://a.test/", "http://u@a.test/", "http:///x", "a.test/x"] {
            assert_eq!(
                check(&format!("GET {bad} HTTP/1.1\r\nHost: a\r\n\r\n")),
                Err(Refusal::BadRequest),
                "{bad}"
            );
        }
        assert_eq!(
            check("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(BodyFraming::None)
        );
    }

    #[test]
    fn absolute_form_authority_replaces_host() {
        let head = b"GET http://a.test/x?y HTTP/1.1\r\nHost: b.test\r\nX-A: 1\r\n\r\n";
        let out = absolute_form_host(head).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET http://a.test/x?y HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n\r\n"
        );
        assert!(absolute_form_host(b"GET http://a.test/ HTTP/1.1\r\nHost: A.test\r\n\r\n").is_none());
        assert!(absolute_form_host(b"GET / HTTP/1.1\r\nHost: b\r\n\r\n").is_none());
        // HTTP/1.0 without Host gets one.
        let out = absolute_form_host(b"GET http://a.test/ HTTP/1.0\r\n\r\n").unwrap();
        assert!(out.starts_with(b"GET http://a.test/ HTTP/1.0\r\nHost: a.test\r\n"));
    }

    #[test]
    fn leading_empty_lines_do_not_end_a_head() {
        let mut lines = 0;
        let req = b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(head_end(req, 0, &mut lines), Some(req.len()));
        assert_eq!(head_end(b"\r\n\r\n", 0, &mut 0), None);
        assert_eq!(head_end(b"\n\n", 0, &mut 0), None);
    }

    /// Found by `cargo fuzz` (request_head): an empty line before an absolute-form request
    /// line made the rewrite drop the request line, and the 414 check look at the empty line.
    #[test]
    fn empty_lines_before_the_request_line_are_skipped() {
        let head = b"\r\nGET http://a.test/x HTTP/1.0\r\nX: y\r\n\r\n";
        assert_eq!(check_head(head, 8192), Ok(BodyFraming::None));
        let fixed = absolute_form_host(head).unwrap();
        assert_eq!(
            fixed,
            b"GET http://a.test/x HTTP/1.0\r\nHost: a.test\r\nX: y\r\n\r\n"
        );
        assert_eq!(check_head(&fixed, 8192), Ok(BodyFraming::None));
        let long = format!("\r\n\nGET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(check_head(long.as_bytes(), 8192), Err(Refusal::UriTooLong));
    }

    #[test]
    fn long_targets_get_414() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(9000));
        assert_eq!(check(&long), Err(Refusal::UriTooLong));
        let grafana = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "q".repeat(6000));
        assert_eq!(check(&grafana), Ok(BodyFraming::None));
    }

    #[test]
    fn finds_the_end_of_a_head_read_in_pieces() {
        let req = b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n\r\nbody";
        let mut lines = 0;
        assert_eq!(head_end(req, 0, &mut lines), Some(req.len() - 4));
        assert_eq!(lines, 4);
        let mut lines = 0;
        let mut found = None;
        for n in 1..=req.len() {
            if let Some(e) = head_end(&req[..n], n - 1, &mut lines) {
                found = Some(e);
                break;
            }
        }
        assert_eq!(found, Some(req.len() - 4));
        assert_eq!(lines, 4);
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n", 0, &mut 0), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n", 0, &mut 0), None);
    }
}
