//! Responses the gateway makes itself, and the one place where errors become statuses.
//! Error responses are pages (`error_page.rs`: HTML, JSON or plain text by `Accept`, custom
//! pages of `[errors] pages`) with the security headers, `Cache-Control: no-store` and the
//! request id in `X-Request-Id`.

use crate::error_page::{self, ErrorPages, Format};
use crate::proxy::Ctx;
use crate::state::{CasedHeaders, Snapshot};
use bytes::Bytes;
use pingora_core::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// The HTTP status for an error, or 0 when the client is gone and nothing can be sent.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, HTTPStatus(code)) => *code,
        (ErrorSource::Upstream, ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout) => 504,
        (ErrorSource::Upstream, _) => 502,
        (ErrorSource::Downstream, ReadTimedout) => 408,
        (ErrorSource::Downstream, WriteError | ReadError | ConnectionClosed | WriteTimedout) => 0,
        (ErrorSource::Downstream, _) => 400,
        (ErrorSource::Internal | ErrorSource::Unset, ConnectTimedout | ReadTimedout) => 504,
        (ErrorSource::Internal | ErrorSource::Unset, ConnectRefused | ConnectError | ConnectNoRoute) => 502,
        (ErrorSource::Internal | ErrorSource::Unset, _) => 500,
    }
}

/// The reason phrase used in small bodies.
pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// A small response header with the security headers (inserted by name); `body_len` sets
/// Content-Length.
pub fn header(status: u16, body_len: usize, security: &CasedHeaders) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(6 + security.len())).unwrap_or_else(|_| {
        // Not a status (outside 100-999): never built by the gateway; a 500, not a panic.
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = http::StatusCode::INTERNAL_SERVER_ERROR;
        ResponseHeader::from(parts)
    });
    for ((n, _), v) in security {
        let _ = h.append_header(n.clone(), v.clone());
    }
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body_len.to_string());
    h
}

/// `X-Request-Id` of the error responses: the request's `$request_id`. Only on errors (as
/// nginx, Caddy and Traefik add none by default), where it is also in the page.
pub const REQUEST_ID: &str = "x-request-id";

/// Whom a response the gateway makes is for: the snapshot's security headers and error
/// pages, and the request id. `From<&Ctx>` for a request of the HTTPS listener (its
/// `$request_id` and snapshot); `From<&CasedHeaders>` for an answer outside a request (a fresh
/// id, the built-in pages).
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    pub security: &'a CasedHeaders,
    pub pages: Option<&'a ErrorPages>,
    pub request_id: u128,
    /// The 503 of a route in maintenance: the maintenance page.
    pub maintenance: bool,
}

impl Reply<'_> {
    /// The maintenance page instead of the status's page (a route in maintenance).
    pub fn maintenance(mut self, on: bool) -> Self {
        self.maintenance = on;
        self
    }
}

impl<'a> From<&'a CasedHeaders> for Reply<'a> {
    fn from(security: &'a CasedHeaders) -> Self {
        Reply {
            security,
            pages: None,
            request_id: rand::random(),
            maintenance: false,
        }
    }
}

impl<'a> From<&'a Ctx> for Reply<'a> {
    fn from(ctx: &'a Ctx) -> Self {
        Reply {
            security: &ctx.snap.security_headers,
            pages: Some(&ctx.snap.error_pages),
            request_id: ctx.request_id,
            maintenance: false,
        }
    }
}

/// The headers of a generated error page: type, `Vary: Accept` (the body follows it),
/// `Cache-Control: no-store`, `X-Request-Id`.
fn page_headers(h: &mut ResponseHeader, content_type: &'static str, request_id: u128) {
    let _ = h.insert_header(http::header::CONTENT_TYPE, content_type);
    let _ = h.insert_header(http::header::VARY, "Accept");
    let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
    let _ = h.insert_header(REQUEST_ID, format!("{request_id:032x}"));
}

/// Sends a complete small response. An error (400 and up) without `body` is its error page
/// (HTML, JSON or plain text by the request's `Accept`, custom pages of `to`, the request
/// id); a `body` is sent as it is (a forward-auth service's answer); other statuses (301)
/// are `<status> <reason>` as text. `extra` headers are set after the defaults. Errors get
/// `Cache-Control: no-store` and `X-Request-Id`.
///
/// `to` is `&*ctx` in a request's phases (`&ctx.snap.security_headers` still works: a fresh
/// id and the built-in pages).
pub fn send<'a>(
    session: &'a mut Session,
    status: u16,
    extra: &'a [(http::HeaderName, String)],
    body: Option<Bytes>,
    to: impl Into<Reply<'a>>,
) -> impl std::future::Future<Output = pingora_core::Result<()>> + Send + 'a {
    // Converted here, so the future holds only the `Reply` (not a `&Ctx`).
    send_reply(session, status, extra, body, to.into())
}

async fn send_reply(
    session: &mut Session,
    status: u16,
    extra: &[(http::HeaderName, String)],
    body: Option<Bytes>,
    to: Reply<'_>,
) -> pingora_core::Result<()> {
    let error = status >= 400;
    let (mut h, body) = match body {
        Some(body) => {
            let mut h = header(status, body.len(), to.security);
            let _ = h.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
            (h, body)
        }
        None if error => {
            let format = Format::of(&session.req_header().headers);
            let page = error_page::render(to.pages, status, to.maintenance, format, to.request_id);
            let mut h = header(status, page.body.len(), to.security);
            page_headers(&mut h, page.content_type, to.request_id);
            (h, page.body)
        }
        None => {
            let body = Bytes::from(format!("{status} {}\n", reason(status)));
            let mut h = header(status, body.len(), to.security);
            let _ = h.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
            (h, body)
        }
    };
    // A repeated name (several `Set-Cookie` of a forward-auth answer) keeps every value.
    for (i, (n, v)) in extra.iter().enumerate() {
        if extra[..i].iter().any(|(m, _)| m == n) {
            let _ = h.append_header(n.clone(), v.as_str());
        } else {
            let _ = h.insert_header(n.clone(), v.as_str());
        }
    }
    if error {
        let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
        let _ = h.insert_header(REQUEST_ID, format!("{:032x}", to.request_id));
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(h), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A whole HTTP/1.1 error response, page included, that closes the connection: for heads
/// the edge refuses before Pingora parses them (edge.rs `reject`, every listener). A fresh
/// request id (such a request has no other).
pub fn raw_error(status: u16, format: Format, snap: &Snapshot) -> Vec<u8> {
    let request_id: u128 = rand::random();
    let page = error_page::render(Some(&snap.error_pages), status, false, format, request_id);
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nVary: Accept\r\n\
         Cache-Control: no-store\r\nX-Request-Id: {request_id:032x}\r\nConnection: close\r\n",
        reason(status),
        page.content_type,
        page.body.len()
    );
    for ((n, _), v) in &snap.security_headers {
        if let Ok(v) = v.to_str() {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(&page.body);
    out
}

/// The response of an error Pingora answers itself, before the gateway sees the request
/// (`pingora_core::protocols::http::error_resp::set_error_responder`, a vendored patch): the
/// HTTP/2 `:authority`/`Host` mismatch (400) and CONNECT (405, HTTP/1.1 too). The page by
/// `accept`, the security headers, a fresh request id.
pub fn pingora_error(
    snap: &Snapshot,
    status: u16,
    accept: Option<&http::HeaderValue>,
) -> (ResponseHeader, Bytes) {
    let request_id: u128 = rand::random();
    let format = Format::of_accept(accept);
    let page = error_page::render(Some(&snap.error_pages), status, false, format, request_id);
    let mut h = header(status, page.body.len(), &snap.security_headers);
    page_headers(&mut h, page.content_type, request_id);
    (h, page.body)
}

/// Makes Pingora answer its own refusals with [`pingora_error`] from `shared`'s current
/// snapshot (called once the HTTPS listener is built; a later call replaces the hook).
pub fn install_pingora_pages(shared: &std::sync::Arc<crate::state::Shared>) {
    let shared = std::sync::Arc::downgrade(shared);
    pingora_core::protocols::http::error_resp::set_error_responder(Some(std::sync::Arc::new(
        move |status: u16, accept: Option<&http::HeaderValue>| {
            let shared = shared.upgrade()?;
            let snap = shared.snapshot.load();
            Some(pingora_error(&snap, status, accept))
        },
    )));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let up = Error::new_up;
        assert_eq!(status_for(&up(ErrorType::ConnectRefused)), 502);
        assert_eq!(status_for(&up(ErrorType::ConnectionClosed)), 502);
        assert_eq!(status_for(&up(ErrorType::ReadTimedout)), 504);
        assert_eq!(status_for(&up(ErrorType::ConnectTimedout)), 504);
        assert_eq!(status_for(&Error::new(ErrorType::HTTPStatus(413))), 413);
        assert_eq!(status_for(&Error::new_down(ErrorType::ReadTimedout)), 408);
        assert_eq!(status_for(&Error::new_down(ErrorType::InvalidHTTPHeader)), 400);
    }
}
