//! Responses the gateway makes itself, and the one place where errors become statuses.

use crate::state::Headers;
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

/// A small response header with the security headers; `body_len` sets Content-Length.
pub fn header(status: u16, body_len: usize, security: &Headers) -> ResponseHeader {
    let mut h = ResponseHeader::build(status, Some(4 + security.len())).expect("a valid status");
    for (n, v) in security {
        let _ = h.append_header(n.clone(), v.clone());
    }
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body_len.to_string());
    h
}

/// Sends a complete small response: `<status> <reason>` as text, or `body` if given.
pub async fn send(
    session: &mut Session,
    status: u16,
    extra: &[(http::HeaderName, String)],
    body: Option<Bytes>,
    security: &Headers,
) -> pingora_core::Result<()> {
    let body = body.unwrap_or_else(|| Bytes::from(format!("{status} {}\n", reason(status))));
    let mut h = header(status, body.len(), security);
    let _ = h.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8");
    for (n, v) in extra {
        let _ = h.insert_header(n.clone(), v.as_str());
    }
    if status >= 400 {
        let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
    }
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(h), head_only).await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
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
