// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

//! Error response generating utilities.

use http::header;
use once_cell::sync::Lazy;
use pingora_http::ResponseHeader;
// gateway patch: the application's own error responses
use bytes::Bytes;
use http::HeaderValue;
use std::sync::{Arc, RwLock};
// gateway patch end

use super::SERVER_NAME;

/// Generate an error response with the given status code.
///
/// This error response has a zero `Content-Length` and `Cache-Control: private, no-store`.
pub fn gen_error_response(code: u16) -> ResponseHeader {
    let mut resp = ResponseHeader::build(code, Some(4)).unwrap();
    resp.insert_header(header::SERVER, &SERVER_NAME[..])
        .unwrap();
    resp.insert_header(header::DATE, "Sun, 06 Nov 1994 08:49:37 GMT")
        .unwrap(); // placeholder
    resp.insert_header(header::CONTENT_LENGTH, "0").unwrap();
    resp.insert_header(header::CACHE_CONTROL, "private, no-store")
        .unwrap();
    resp
}

/// Pre-generated 502 response
pub static HTTP_502_RESPONSE: Lazy<ResponseHeader> = Lazy::new(|| gen_error_response(502));
/// Pre-generated 400 response
pub static HTTP_400_RESPONSE: Lazy<ResponseHeader> = Lazy::new(|| gen_error_response(400));

// gateway patch: the application's own error responses for the errors Pingora answers itself
// (`Session::respond_error`: pingora-proxy's CONNECT 405 and its 400 for an unparseable
// HTTP/1 head; the HTTP/2 `:authority`/`Host` mismatch 400 of `v2::server`), which otherwise
// go out with an empty body and none of the application's headers.

/// Builds the whole response (header and body) for an error status Pingora answers itself,
/// given the request's `Accept` value if the request was read; `None` keeps Pingora's own
/// (empty) response.
pub type ErrorResponder =
    dyn Fn(u16, Option<&HeaderValue>) -> Option<(ResponseHeader, Bytes)> + Send + Sync;

static ERROR_RESPONDER: RwLock<Option<Arc<ErrorResponder>>> = RwLock::new(None);

/// Sets (or with `None` removes) the process-wide [`ErrorResponder`].
pub fn set_error_responder(responder: Option<Arc<ErrorResponder>>) {
    *ERROR_RESPONDER.write().unwrap_or_else(|p| p.into_inner()) = responder;
}

/// The application's response for `code`, if an [`ErrorResponder`] is set and gives one.
pub fn custom_error_response(
    code: u16,
    accept: Option<&HeaderValue>,
) -> Option<(ResponseHeader, Bytes)> {
    let responder = ERROR_RESPONDER
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()?;
    responder(code, accept)
}
// gateway patch end
