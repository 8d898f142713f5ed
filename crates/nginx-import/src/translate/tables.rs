//! What the final sweep says of a directive the translation did not use: built in or not
//! needed (dropped, listed at the top of the file), or not translated and why.
//! docs/migrating-from-nginx.md lists the first kind as "—", "always" and "built in".

use crate::parse::{Directive, Include};

/// Directives that a route uses when it is in effect there: one left over sits at a level
/// whose every location sets its own (or whose locations were not translated).
const INHERITED: &[&str] = &[
    "proxy_set_header",
    "proxy_read_timeout",
    "proxy_send_timeout",
    "proxy_connect_timeout",
    "client_max_body_size",
    "add_header",
    "proxy_hide_header",
    "allow",
    "deny",
    "limit_req",
    "limit_req_status",
    "auth_basic",
    "auth_basic_user_file",
    "auth_request",
    "auth_request_set",
    "proxy_next_upstream",
    "proxy_next_upstream_tries",
    "proxy_next_upstream_timeout",
    "gzip",
    "ssl_certificate",
    "ssl_certificate_key",
    "proxy_redirect",
];

/// Why `d` needs nothing in proxy.toml, when it needs nothing.
pub(super) fn dropped(d: &Directive) -> Option<String> {
    let a0 = d.arg(0);
    let why = match d.name.as_str() {
        "include" => {
            return match &d.include {
                Some(Include::Files(files)) => Some(format!(
                    "read here ({} file{}): its directives are translated in place",
                    files.len(),
                    if files.len() == 1 { "" } else { "s" }
                )),
                Some(Include::MimeTypes) => Some("not read: a proxy passes the upstream's Content-Type through".into()),
                Some(Include::Missing(_)) if a0.ends_with("options-ssl-nginx.conf") => Some(
                    "certbot's TLS options (not found here): TLS 1.2/1.3, forward-secret AEAD suites and session resumption are built in"
                        .into(),
                ),
                _ => None,
            }
        }
        "worker_processes" if a0 == "auto" => "[server] threads defaults to the number of CPUs",
        "worker_connections" => "no per-worker connection cap: connections are limited by file descriptors",
        "use" => "the runtime uses epoll",
        "multi_accept" | "accept_mutex" | "accept_mutex_delay" => "each thread accepts in a loop on its own socket (reuseport)",
        "daemon" | "master_process" => "the gateway runs in the foreground under systemd or docker",
        "pcre_jit" => "no regular expressions are evaluated",
        "default_type" | "types" | "charset_types" => "a proxy passes the upstream's Content-Type through",
        "sendfile" | "tcp_nopush" | "aio" | "directio" | "output_buffers" | "open_file_cache" | "open_file_cache_valid"
        | "open_file_cache_min_uses" | "open_file_cache_errors" => "nothing is served from disk",
        "tcp_nodelay" => "TCP_NODELAY is set",
        n if n.ends_with("_hash_max_size") || n.ends_with("_hash_bucket_size") => "no hash tables to size",
        "gzip_vary" if a0 == "on" => "always: Vary: Accept-Encoding on every response of a compressible type",
        "gzip_proxied" if a0 == "any" => "always: proxied responses are compressed unless Cache-Control: no-transform",
        "gzip_proxied" => "the gateway compresses for clients behind proxies (Via) too, unless Cache-Control: no-transform",
        "gzip_buffers" => "compression streams: no buffers to size",
        "ssl_prefer_server_ciphers" => "the server's order of suites is built in",
        "ssl_session_timeout" => "session resumption is built in",
        "ssl_dhparam" => "no DHE suites are offered",
        "ssl_ecdh_curve" => "key exchange is built in: X25519MLKEM768, X25519, secp256r1, secp384r1",
        "http2" if a0 == "on" => "HTTP/2 and HTTP/1.1 by ALPN, built in",
        "proxy_http_version" if a0 == "1.1" => "always HTTP/1.1 to upstreams",
        "proxy_cache_bypass" | "proxy_no_cache" => "nothing is cached",
        "proxy_buffering" | "proxy_buffers" | "proxy_buffer_size" | "proxy_busy_buffers_size" | "proxy_max_temp_file_size"
        | "proxy_temp_file_write_size" => "responses stream as they arrive (Server-Sent Events are never buffered)",
        "proxy_redirect" if a0 == "off" => "the gateway does not rewrite Location headers either",
        "satisfy" if a0 == "all" => "every policy of a route must pass (satisfy all)",
        "server_name_in_redirect" | "port_in_redirect" if a0 == "off" => "redirects name the request's host",
        "client_header_buffer_size" | "client_body_buffer_size" => {
            "no buffers to size: [limits] max_header_bytes and max_body bound the request"
        }
        "log_not_found" | "log_subrequest" => "no files or subrequests to log",
        "internal" => "only used with auth_request, which the gateway asks itself",
        _ => return None,
    };
    Some(why.to_owned())
}

/// Why `d` is not translated, and what to do.
pub(super) fn why(d: &Directive) -> String {
    let n = d.name.as_str();
    let why = match n {
        "include" => {
            let tried = match &d.include {
                Some(Include::Missing(t)) => t.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                _ => String::new(),
            };
            return format!(
                "no file matched (looked for {tried}): its directives are not translated; run the import where the file is"
            );
        }
        "if" => "conditions are not translated: make each branch a route (host, path) or a policy",
        "map" | "geo" | "split_clients" => "variables computed from tables are not translated",
        "set" => "variables are not translated",
        "rewrite" | "rewrite_log" => {
            "URL rewriting is not translated: a route's `rewrite` replaces only its own prefix (see proxy_pass)"
        }
        "root" | "alias" | "index" | "try_files" | "autoindex" | "expires" | "etag" | "ssi" => {
            "the gateway serves no files: serve them from an upstream (a static file server)"
        }
        "error_page" => {
            "the gateway answers errors with its own pages; for custom ones put 502.html, 404.html... (NNN.html, NNN.json) in a directory and set [errors] pages to it"
        }
        "limit_conn" | "limit_conn_zone" | "limit_conn_status" => {
            "no connection limit: a policy's rate_limit limits requests"
        }
        "limit_req_zone" => "not used by any translated route",
        "ssl_client_certificate" | "ssl_verify_client" | "ssl_verify_depth" | "ssl_crl" => {
            "no client certificates (mutual TLS)"
        }
        "ssl_stapling" | "ssl_stapling_verify" | "ssl_trusted_certificate" | "ssl_stapling_file" => "no OCSP stapling",
        "ssl_protocols" | "ssl_ciphers" => "TLS 1.2 and 1.3 with forward-secret AEAD suites are built in",
        "stream" => "TCP/UDP proxying (stream) is not supported: only HTTP",
        "mail" => "mail proxying is not supported",
        "user" => "the gateway does not switch users: run it as that user (systemd User=, docker --user)",
        "pid" => "the pid file is in `gateway run --run-dir`",
        "worker_rlimit_nofile" => "raise the file limit of the service (systemd LimitNOFILE=, docker --ulimit nofile=)",
        "worker_processes" => "[server] threads is a number from 1 to 1024 (or left out: the number of CPUs)",
        "proxy_http_version" => "the gateway always speaks HTTP/1.1 to upstreams",
        "proxy_pass_request_body" | "proxy_pass_request_headers" => "requests are passed whole",
        "proxy_cookie_path" | "proxy_cookie_domain" | "proxy_cookie_flags" => "cookies are passed as they are",
        "proxy_intercept_errors" => "upstream error responses are passed as they are",
        "proxy_pass_header" | "proxy_ignore_headers" => "no equivalent: response headers are passed as they are (a policy's response_headers can remove some)",
        "location" => "a location outside a server: not translated",
        "server" => "a server outside http: not translated",
        "upstream" => "an upstream outside http: not translated",
        "return" => "fixed responses are not translated: the gateway only proxies",
        "satisfy" => "every policy of a route must pass (satisfy all); `satisfy any` is not translated",
        "access_log" | "error_log" | "log_format" => "the gateway has one access log and one error log: see [logging]",
        "gzip_vary" => "Vary: Accept-Encoding is always sent on compressible responses",
        _ if n.starts_with("proxy_cache") => "nothing is cached: the gateway has no response cache",
        _ if n.starts_with("proxy_ssl") => "the gateway speaks plain HTTP to upstreams",
        _ if n.starts_with("sub_filter") => "response bodies are not rewritten",
        _ if n.ends_with("_by_lua") || n.ends_with("_by_lua_block") || n.starts_with("lua_") => "Lua is not supported",
        _ if INHERITED.contains(&n) => {
            "not in effect in any translated route (every location under it sets its own, or was not translated)"
        }
        _ => "no equivalent in proxy.toml",
    };
    why.to_owned()
}
