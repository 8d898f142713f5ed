//! Access log formats in nginx's `log_format` syntax, compiled once when the file is read:
//! a list of literal text and variables, so a request only fills in values.
//!
//! Syntax (nginx's `ngx_http_log_module`): `$name` or `${name}`, where a name is letters,
//! digits and `_`; everything else is literal text. A `$` that starts no name is refused, as
//! nginx refuses it ("invalid variable name"). Values are escaped as nginx's
//! `escape=default` does, and an empty value is written as `-`, as nginx does.

/// One compiled format: `[logging.formats] name = '...'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessFormat {
    /// The key under `[logging.formats]` (`combined` for the built-in one).
    pub name: String,
    pub parts: Vec<LogPart>,
}

/// A piece of a compiled format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogPart {
    Text(String),
    Var(LogVar),
}

/// The variables an access line can carry; nginx's meaning unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogVar {
    /// `$remote_addr`: the client's IP address (the TCP peer).
    RemoteAddr,
    /// `$remote_port`: the client's port.
    RemotePort,
    /// `$remote_user`: the user of `Authorization: Basic` credentials (not verified, as
    /// nginx logs it without `auth_basic`), or the user a policy verified.
    RemoteUser,
    /// `$time_local`: `07/Dec/2026:14:09:18 +0800`, local time after `TZ`.
    TimeLocal,
    /// `$time_iso8601`: `2026-12-07T14:09:18+08:00`, local time after `TZ`.
    TimeIso8601,
    /// `$msec`: seconds since the Unix epoch with milliseconds, `1796623758.123`.
    Msec,
    /// `$request`: `GET /path?q HTTP/2.0`, the target in origin form for every version.
    Request,
    /// `$request_method`.
    RequestMethod,
    /// `$request_uri`: the target as sent, path and query (origin form).
    RequestUri,
    /// `$uri` (and `$document_uri`): the path of the target as sent, without the query.
    /// nginx's `$uri` is the decoded, normalized path; this one is not decoded.
    Uri,
    /// `$args` (and `$query_string`): the query, without `?`.
    Args,
    /// `$is_args`: `?` when there is a query, else empty.
    IsArgs,
    /// `$server_protocol`: `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    ServerProtocol,
    /// `$status`: the final status sent (never an interim 1xx).
    Status,
    /// `$body_bytes_sent`: response body bytes sent.
    BodyBytesSent,
    /// `$request_time`: seconds from the request head to the end of the response, with
    /// milliseconds (`0.003`).
    RequestTime,
    /// `$host`: the request's host (`:authority` or `Host`) without the port, lowercase.
    Host,
    /// `$scheme`: `https` on the HTTPS listener, `http` on the plain one.
    Scheme,
    /// `$http_NAME`: request header NAME (lowercase, `_` for `-`).
    Http(String),
    /// `$route` (gateway): the route's name; `none` without one, `redirect` and
    /// `acme-challenge` on the plain-HTTP listener.
    Route,
    /// `$upstream` (gateway): the upstream's name, `-` without one.
    Upstream,
    /// `$upstream_addr`: the upstream address connected to (`10.0.0.5:8080`).
    UpstreamAddr,
    /// `$request_id`: 32 lower-case hex digits (128 random bits, as nginx's), the same as the
    /// request's header rules and its error page (`X-Request-Id`) carry.
    RequestId,
    /// `$ssl_protocol`: `TLSv1.3`, `TLSv1.2`; empty on plain HTTP.
    SslProtocol,
    /// `$ssl_cipher`: the IANA name of the cipher suite (`TLS_AES_128_GCM_SHA256`).
    SslCipher,
    /// `$ssl_curve`: the key exchange group (`X25519MLKEM768`, `X25519`, `secp256r1`).
    SslCurve,
}

/// Names nginx users may expect that the gateway cannot fill, with what to use instead.
const NOT_AVAILABLE: &[(&str, &str)] = &[
    (
        "bytes_sent",
        "response header bytes are not counted; use `$body_bytes_sent`",
    ),
    ("upstream_response_time", "not measured; use `$request_time`"),
    ("upstream_connect_time", "not measured; use `$request_time`"),
    ("upstream_header_time", "not measured; use `$request_time`"),
    ("request_length", "not counted"),
];

/// Every variable name a format may use (`http_*` aside), for "did you mean" and messages.
pub const VARIABLES: &[&str] = &[
    "remote_addr",
    "remote_port",
    "remote_user",
    "time_local",
    "time_iso8601",
    "msec",
    "request",
    "request_method",
    "request_uri",
    "uri",
    "document_uri",
    "args",
    "query_string",
    "is_args",
    "server_protocol",
    "status",
    "body_bytes_sent",
    "request_time",
    "host",
    "scheme",
    "route",
    "upstream",
    "upstream_addr",
    "request_id",
    "ssl_protocol",
    "ssl_cipher",
    "ssl_curve",
];

impl LogVar {
    /// The variable called `name` (without `$`), or why there is none.
    pub(crate) fn from_name(name: &str) -> Result<LogVar, String> {
        use LogVar::*;
        Ok(match name {
            "remote_addr" => RemoteAddr,
            "remote_port" => RemotePort,
            "remote_user" => RemoteUser,
            "time_local" => TimeLocal,
            "time_iso8601" => TimeIso8601,
            "msec" => Msec,
            "request" => Request,
            "request_method" => RequestMethod,
            "request_uri" => RequestUri,
            "uri" | "document_uri" => Uri,
            "args" | "query_string" => Args,
            "is_args" => IsArgs,
            "server_protocol" => ServerProtocol,
            "status" => Status,
            "body_bytes_sent" => BodyBytesSent,
            "request_time" => RequestTime,
            "host" => Host,
            "scheme" => Scheme,
            "route" => Route,
            "upstream" => Upstream,
            "upstream_addr" => UpstreamAddr,
            "request_id" => RequestId,
            "ssl_protocol" => SslProtocol,
            "ssl_cipher" => SslCipher,
            "ssl_curve" => SslCurve,
            _ => return Self::other(name),
        })
    }

    /// `$http_NAME`, or why `name` is no variable.
    fn other(name: &str) -> Result<LogVar, String> {
        if let Some(h) = name.strip_prefix("http_").filter(|h| !h.is_empty()) {
            return Ok(LogVar::Http(h.to_ascii_lowercase().replace('_', "-")));
        }
        match NOT_AVAILABLE.iter().find(|(n, _)| *n == name) {
            Some((_, why)) => Err(format!("`${name}` is not available in the gateway: {why}")),
            None => Err(format!(
                "unknown variable `${name}`; known: ${}, $http_NAME",
                VARIABLES.join(", $")
            )),
        }
    }
}

/// A refused format: the byte offset in the format text and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatError {
    pub offset: usize,
    pub message: String,
}

impl AccessFormat {
    /// Compiles `text` (nginx `log_format` syntax); every problem is returned, in order.
    pub fn compile(name: &str, text: &str) -> Result<AccessFormat, Vec<FormatError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut literal = String::new();
        let bytes = text.as_bytes();
        let is_name = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                // Copy up to the next `$` (a char boundary: `$` is ASCII).
                let end = text[i..].find('$').map_or(text.len(), |n| i + n);
                literal.push_str(&text[i..end]);
                i = end;
                continue;
            }
            let start = i;
            let braced = bytes.get(i + 1) == Some(&b'{');
            let name_start = if braced { i + 2 } else { i + 1 };
            let mut end = name_start;
            while end < bytes.len() && is_name(bytes[end]) {
                end += 1;
            }
            let name = &text[name_start..end];
            if braced {
                if bytes.get(end) != Some(&b'}') {
                    errors.push(FormatError {
                        offset: start,
                        message: "`${` without its closing `}`".into(),
                    });
                    i = end;
                    continue;
                }
                i = end + 1;
            } else {
                i = end;
            }
            if name.is_empty() {
                errors.push(FormatError {
                    offset: start,
                    message: "a `$` that starts no variable name (nginx: invalid variable name)".into(),
                });
                continue;
            }
            match LogVar::from_name(name) {
                Ok(v) => {
                    if !literal.is_empty() {
                        parts.push(LogPart::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(LogPart::Var(v));
                }
                Err(message) => errors.push(FormatError {
                    offset: start,
                    message,
                }),
            }
        }
        if !literal.is_empty() {
            parts.push(LogPart::Text(literal));
        }
        if errors.is_empty() {
            Ok(AccessFormat {
                name: name.to_owned(),
                parts,
            })
        } else {
            Err(errors)
        }
    }

    /// nginx's predefined `combined` format, then the gateway's ` route=$route
    /// upstream=$upstream duration=$request_time` (what `access_log = "combined"` writes).
    pub fn combined() -> AccessFormat {
        const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\" route=$route upstream=$upstream duration=$request_time";
        AccessFormat::compile("combined", COMBINED).unwrap_or(AccessFormat {
            name: "combined".into(),
            parts: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_compiles_to_text_and_variables() {
        let f =
            AccessFormat::compile("main", "$remote_addr [${time_local}] \"$http_x_forwarded_for\"").unwrap();
        assert_eq!(
            f.parts,
            vec![
                LogPart::Var(LogVar::RemoteAddr),
                LogPart::Text(" [".into()),
                LogPart::Var(LogVar::TimeLocal),
                LogPart::Text("] \"".into()),
                LogPart::Var(LogVar::Http("x-forwarded-for".into())),
                LogPart::Text("\"".into()),
            ]
        );
        assert!(!AccessFormat::combined().parts.is_empty());
    }

    #[test]
    fn unknown_variables_are_refused_with_their_offset() {
        let e = AccessFormat::compile("main", "$remote_addr $nope ${x").unwrap_err();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].offset, 13);
        assert!(
            e[0].message.contains("unknown variable `$nope`"),
            "{}",
            e[0].message
        );
        assert_eq!(e[1].offset, 19);
        let e = AccessFormat::compile("main", "cost $ 5 $bytes_sent").unwrap_err();
        assert_eq!(e[0].offset, 5);
        assert!(e[1].message.contains("$body_bytes_sent"));
    }
}
