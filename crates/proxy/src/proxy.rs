//! The `ProxyHttp` phases. Each phase is thin: decisions come from the routing crate, the
//! compression policy and `respond::status_for`; this file only wires them to Pingora.

use crate::access;
use crate::compress::Encoder;
use crate::headers;
use crate::metrics::{method_label, status_class};
use crate::respond;
use crate::state::{CompiledRoute, Shared, Snapshot};
use crate::upstream;
use async_trait::async_trait;
use bytes::Bytes;
use gateway_routing::Decision;
use http::header;
use pingora_core::modules::http::HttpModules;
use pingora_core::upstreams::peer::{HttpPeer, HttpUpstreamRequestPolicy};
use pingora_core::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The reverse proxy behind the HTTPS listener.
pub struct Gateway {
    pub shared: Arc<Shared>,
}

/// `HttpPeer::group_key` of a retry: no pooled connection is ever kept under it.
const RETRY_ON_A_NEW_CONNECTION: u64 = u64::MAX;

/// The fields Pingora's HTTP/1.x server may add to a response head when it writes it
/// (`prepare_response_header`): `Date`, `Connection`, and `Transfer-Encoding: chunked` when
/// the proxy forwards a body of unknown length.
const ADDED_WHEN_WRITTEN: usize = 3;

/// Per-request state, typed.
pub struct Ctx {
    pub snap: Arc<Snapshot>,
    pub started: Instant,
    pub route: Option<usize>,
    pub upstream_path: String,
    pub request_body: u64,
    pub encoder: Option<Encoder>,
    /// The compressed response has no declared length (chunked or close-delimited upstream,
    /// e.g. a token stream): the encoder is flushed after every upstream chunk.
    pub flush_chunks: bool,
    pub upgraded: bool,
    /// A WebSocket handshake on a `websocket = true` route (decided in `request_filter`): it
    /// is forwarded as one, and only then may the upstream answer 101.
    pub upgrade_forwarded: bool,
    pub sse: bool,
    pub status: u16,
    /// Set when the request was refused before routing (status already sent).
    pub answered: bool,
    /// Set once the request was sent again after a stale pooled connection (at most once).
    pub retried: bool,
    /// The next attempt goes to the same server on a new connection (that stale retry).
    pub same_server_again: bool,
    /// The server of the current attempt (counted in flight while held).
    pub attempt: Option<crate::upstream::Attempt>,
    /// Servers whose attempt failed (the next attempt goes elsewhere); attempts so far, and
    /// when the first began (`next_upstream_tries`, `next_upstream_timeout`).
    pub tried: Vec<SocketAddr>,
    pub attempts: u32,
    pub first_attempt: Option<Instant>,
    /// The current attempt's upstream sent its final response head.
    pub upstream_responded: bool,
    /// The current attempt's response status is one `next_upstream` sends on (set with the
    /// error `upstream_response_filter` returns; `error_while_proxy` retries it).
    pub status_retry: bool,
    /// One span per request: error lines logged for it carry method, path and route.
    pub span: tracing::Span,
    /// The request id (`$request_id`, error pages): 128 random bits, formatted when used.
    pub request_id: u128,
    /// What the route's policies established (the verified user, forward-auth headers).
    pub granted: crate::policy::Granted,
    /// The client address through `forwarding.trusted_proxies` (set once routed).
    pub client: Option<std::net::IpAddr>,
}

impl Ctx {
    /// The route the request got, compiled.
    pub fn route(&self) -> Option<&CompiledRoute> {
        self.route.and_then(|i| self.snap.route(i))
    }

    fn route_name(&self) -> &str {
        self.route().map_or("none", |r| r.config.name.as_str())
    }

    /// The address of the current (last) attempt's server.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.attempt.as_ref().map(|a| a.0.addr)
    }

    pub(crate) fn upstream_name(&self) -> &str {
        self.route().map_or("-", |r| r.upstream.name.as_str())
    }

    /// `$request_id`: 32 lower-case hex digits, as nginx's.
    pub fn request_id(&self) -> String {
        format!("{:032x}", self.request_id)
    }
}

/// gateway logging (issue 18, item 17): an interim response (`100 Continue`, `103`), after
/// which the final one is still to be sent; a `101` ends the exchange and is final.
fn is_interim(r: &ResponseHeader) -> bool {
    r.status.is_informational() && r.status != http::StatusCode::SWITCHING_PROTOCOLS
}

/// Whether a final response head went out (an interim `100 Continue` does not count: a
/// refusal after it is still sent and logged with its own status).
fn final_response_sent(session: &Session) -> bool {
    session.response_written().is_some_and(|r| !is_interim(r))
}

fn http_error(status: u16) -> Box<Error> {
    let mut e = Error::new(ErrorType::HTTPStatus(status));
    e.esource = ErrorSource::Downstream;
    e
}

impl Gateway {
    /// A refusal by a policy: counted, logged at debug with the client, answered.
    async fn deny(&self, session: &mut Session, ctx: &mut Ctx, r: crate::policy::Refusal) -> Result<bool> {
        self.shared
            .metrics
            .requests_denied
            .with_label_values(&[ctx.route_name(), r.reason.label()])
            .inc();
        if ctx.client.is_none() {
            // A maintenance refusal comes before the policies established the client.
            let peer = crate::state::client_addr(session.client_addr()).map(|a| a.ip());
            ctx.client = headers::client_ip(peer, session.req_header(), &ctx.snap.config.forwarding);
        }
        let client = ctx.client.map_or_else(|| "-".to_owned(), |c| c.to_string());
        tracing::debug!(route = ctx.route_name(), reason = r.reason.label(), status = r.status, client = %client, "request denied");
        ctx.status = r.status;
        ctx.answered = true;
        session.set_keepalive(None);
        let extra: Vec<(http::HeaderName, String)> = r
            .headers
            .iter()
            .filter_map(|(n, v)| Some((n.clone(), v.to_str().ok()?.to_owned())))
            .collect();
        let maintenance = r.reason == crate::policy::DenyReason::Maintenance;
        respond::send(
            session,
            r.status,
            &extra,
            r.body,
            respond::Reply::from(&*ctx).maintenance(maintenance),
        )
        .await?;
        Ok(true)
    }

    /// The header-rule variables of this request.
    fn vars(&self, ctx: &Ctx, route: &CompiledRoute, host: &str) -> crate::policy::header_rules::OwnedVars {
        crate::policy::header_rules::OwnedVars {
            remote_addr: ctx.client.map_or_else(String::new, |c| c.to_string()),
            scheme: "https",
            host: host.to_owned(),
            prefix: match &route.config.path {
                gateway_config::PathMatch::Prefix(p) => p.clone(),
                gateway_config::PathMatch::Exact(_) => String::new(),
            },
            request_id: ctx.request_id(),
        }
    }

    async fn refuse(&self, session: &mut Session, ctx: &mut Ctx, status: u16) -> Result<bool> {
        ctx.status = status;
        ctx.answered = true;
        // The body may be unread: the connection cannot be reused safely.
        session.set_keepalive(None);
        respond::send(session, status, &[], None, &*ctx).await?;
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            snap: self.shared.snapshot.load_full(),
            started: Instant::now(),
            route: None,
            upstream_path: String::new(),
            request_body: 0,
            encoder: None,
            flush_chunks: false,
            upgraded: false,
            upgrade_forwarded: false,
            sse: false,
            status: 0,
            answered: false,
            retried: false,
            same_server_again: false,
            attempt: None,
            tried: Vec::new(),
            attempts: 0,
            first_attempt: None,
            upstream_responded: false,
            status_retry: false,
            span: tracing::Span::none(),
            request_id: rand::random(),
            granted: crate::policy::Granted::default(),
            client: None,
        }
    }

    fn init_downstream_modules(&self, _modules: &mut HttpModules) {
        // Compression is done in the body filter below, not by Pingora's module.
    }

    async fn early_request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        ctx.started = Instant::now();
        let req = session.req_header();
        ctx.span = tracing::info_span!(
            "request",
            method = %req.method,
            path = req.uri.path(),
            route = tracing::field::Empty,
        );
        let limits = &ctx.snap.config.limits;
        let req = session.req_header();
        if req.headers.len() > limits.max_header_count {
            return Err(http_error(431));
        }
        let header_bytes: usize = req
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > limits.max_header_bytes {
            return Err(http_error(431));
        }
        if headers::is_ambiguous_framing(req) {
            return Err(http_error(400));
        }
        // HTTP/1.x `Host` was checked by the edge (`framing::check_head`); HTTP/2's
        // `:authority` (or `host`) is checked here by the same rule.
        if session.is_http2()
            && headers::request_host(req).is_some_and(|h| !crate::framing::valid_host(h.as_bytes()))
        {
            return Err(http_error(400));
        }
        // HTTP/1.x targets were measured by the edge; HTTP/2's `:path` is measured here.
        if req.uri.path_and_query().map_or(0, |p| p.as_str().len()) > limits.max_uri {
            return Err(http_error(414));
        }
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let snap = ctx.snap.clone();
        if session.req_header().method == http::Method::TRACE {
            // nginx answers TRACE with 405: echoing a request back through the edge would
            // expose what the upstreams add (cross-site tracing).
            return self.refuse(session, ctx, 405).await;
        }
        let req = session.req_header();
        let host = headers::request_host(req);
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        match snap.table.decide(host, target) {
            Decision::Forward {
                index,
                upstream_path,
                route,
            } => {
                ctx.route = Some(index);
                ctx.span.record("route", route.config.name.as_str());
                ctx.upstream_path = upstream_path;
            }
            Decision::Redirect { location } => {
                let host = host.unwrap_or("localhost");
                let abs = format!("https://{host}{location}");
                ctx.status = 301;
                ctx.answered = true;
                respond::send(
                    session,
                    301,
                    &[(header::LOCATION, abs)],
                    None,
                    &snap.security_headers,
                )
                .await?;
                return Ok(true);
            }
            Decision::NotFound => return self.refuse(session, ctx, 404).await,
            Decision::BadRequest(_) => return self.refuse(session, ctx, 400).await,
        }
        let Some(compiled) = ctx.route.and_then(|i| snap.route(i)) else {
            return self.refuse(session, ctx, 404).await;
        };
        let route = &compiled.config;
        if self
            .shared
            .policy
            .maintenance
            .active(&route.name, route.maintenance)
        {
            return self
                .deny(session, ctx, crate::policy::maintenance::refusal())
                .await;
        }
        if !compiled.policies.is_empty() {
            let peer = crate::state::client_addr(session.client_addr()).map(|a| a.ip());
            ctx.client = headers::client_ip(peer, session.req_header(), &snap.config.forwarding);
            let facts = crate::policy::RequestFacts {
                req: session.req_header(),
                client: ctx.client,
                scheme: "https",
            };
            match compiled.policies.check(&facts, &self.shared).await {
                Ok(granted) => ctx.granted = granted,
                Err(refusal) => return self.deny(session, ctx, refusal).await,
            }
        }
        let declared = headers::content_length(&session.req_header().headers);
        if declared.is_some_and(|n| n > route.max_body) {
            return self.refuse(session, ctx, 413).await;
        }
        ctx.upgrade_forwarded = route.websocket && headers::is_websocket_upgrade(session.req_header());
        if ctx.upgrade_forwarded {
            // Pingora's downstream read timeout would otherwise cut idle WebSockets.
            session.set_read_timeout(Some(route.timeouts.idle));
        } else {
            session.set_read_timeout(Some(snap.config.limits.body_read_timeout));
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(b) = body {
            ctx.request_body += b.len() as u64;
            let limit = ctx.route().map_or(0, |r| r.config.max_body);
            if ctx.request_body > limit && !ctx.upgraded {
                return Err(http_error(413));
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let snap = ctx.snap.clone();
        let Some(compiled) = ctx.route.and_then(|i| snap.route(i)) else {
            return Err(http_error(404));
        };
        let (up, route, group) = (&compiled.upstream, &compiled.config, &compiled.group);
        ctx.upstream_responded = false;
        let again = std::mem::take(&mut ctx.same_server_again);
        let attempt = match ctx.attempt.take() {
            Some(a) if again => Some(a),
            _ => {
                if !group.has_members() {
                    // Names not resolved yet (the first request after start or reload).
                    group.refresh(&self.shared.dns, true).await;
                }
                let key = upstream::attempts::hash_key(&up.balance, session.req_header(), ctx.client);
                group.select(&key, &ctx.tried)
            }
        };
        let Some(attempt) = attempt else {
            let (kind, why) = if !group.has_members() {
                (
                    "dns",
                    format!("no address for upstream `{}`: its names do not resolve", up.name),
                )
            } else {
                (
                    "unavailable",
                    format!("no server of upstream `{}` is available", up.name),
                )
            };
            self.shared
                .metrics
                .upstream_errors
                .with_label_values(&[&up.name, kind])
                .inc();
            let mut e = Error::explain(ErrorType::ConnectNoRoute, why);
            e.esource = ErrorSource::Upstream;
            return Err(e);
        };
        let addr = attempt.0.addr;
        ctx.attempt = Some(attempt);
        ctx.attempts += 1;
        ctx.first_attempt.get_or_insert_with(Instant::now);
        let mut peer = HttpPeer::new(addr, false, String::new());
        let o = &mut peer.options;
        // `headers::to_upstream` removes hop-by-hop fields and those named in `Connection`,
        // then sets Host and the forwarding fields itself. Pingora's standard policy would
        // strip `Connection` before it runs (losing the nominations) and refuses a request
        // that nominates X-Forwarded-For, which RFC 9110 §7.6.1 allows: nginx forwards it.
        o.http_upstream_request_policy = HttpUpstreamRequestPolicy::preserve();
        o.connection_timeout = Some(route.timeouts.connect);
        o.total_connection_timeout = Some(route.timeouts.connect);
        o.read_timeout = Some(route.timeouts.read);
        o.write_timeout = Some(route.timeouts.write);
        o.idle_timeout = Some(if up.keepalive == 0 {
            Duration::ZERO
        } else {
            up.timeouts.idle
        });
        if let Some(version) = up.proxy_protocol {
            // HAProxy's send-proxy: the header announces this client, so a pooled connection
            // serves this client's address and port only.
            let port = session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map_or(0, |a| a.port());
            if ctx.client.is_none() {
                let peer = crate::state::client_addr(session.client_addr()).map(|a| a.ip());
                ctx.client = headers::client_ip(peer, session.req_header(), &snap.config.forwarding);
            }
            // No known client (no peer address): the header says so (LOCAL / UNKNOWN).
            let client = ctx.client.map(|ip| std::net::SocketAddr::new(ip, port));
            let local = session
                .server_addr()
                .and_then(|a| a.as_inet())
                .copied()
                .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
            peer.options.custom_l4 = Some(Arc::new(crate::proxy_protocol::SendProxyConnect {
                version,
                client,
                local,
                timeout: route.timeouts.connect,
            }));
            peer.group_key = {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (client, local).hash(&mut h);
                h.finish() & !1
            };
        }
        if again {
            // The first attempt met a pooled connection the upstream had closed; the other
            // idle ones are likely closed too (upstreams close them at their own keepalive
            // timeout, all at once). Like nginx, which does not count a failed cached
            // connection as a try and goes on until a new one: the retry is keyed apart from
            // the pool, so it opens a new connection, which is then closed, not pooled.
            peer.group_key = RETRY_ON_A_NEW_CONNECTION;
            peer.options.idle_timeout = Some(Duration::ZERO);
        }
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let snap = ctx.snap.clone();
        let Some(compiled) = ctx.route.and_then(|i| snap.route(i)) else {
            return Ok(());
        };
        let uri = http::Uri::try_from(ctx.upstream_path.as_str()).map_err(|_| http_error(400))?;
        upstream.set_uri(uri);
        let client = crate::state::client_addr(session.client_addr()).map(|a| a.ip());
        let downstream_host = headers::request_host(session.req_header());
        headers::to_upstream(
            upstream,
            &ctx.snap.config.forwarding,
            client,
            downstream_host,
            ctx.upgrade_forwarded,
        );
        if downstream_host.is_none() {
            // An HTTP/1.0 request may come without Host; HTTP/1.1 to the upstream may not
            // (RFC 9112 §3.2). Like nginx's default `$proxy_host`: the server's configured address.
            let host = ctx
                .attempt
                .as_ref()
                .map_or_else(|| compiled.upstream.authority(), |a| a.0.entry.clone());
            let _ = upstream.insert_header(header::HOST, host);
        }
        if !compiled.policies.is_empty() {
            let host = downstream_host
                .map(gateway_routing::normalize_host)
                .unwrap_or_default()
                .into_owned();
            let vars = self.vars(ctx, compiled, &host);
            crate::policy::apply_request(&compiled.policies, upstream, &mut ctx.granted, &vars);
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if is_interim(resp) {
            return Ok(());
        }
        ctx.upstream_responded = true;
        self.status_decision(session, resp.status.as_u16(), ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // gateway logging (issue 18, item 17): an interim 1xx (`100 Continue`) is not the
        // status the request ends with; the access log and the metrics carry the final one.
        let upgraded = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
        if upgraded || !resp.status.is_informational() {
            ctx.status = resp.status.as_u16();
        }
        if upgraded && !ctx.upgrade_forwarded {
            // RFC 9110 §15.2.2: a server must not switch to a protocol the client did not ask
            // for; relaying it would turn the connection into a tunnel nobody checks.
            let mut e = Error::explain(
                ErrorType::InvalidHTTPHeader,
                "the upstream answered 101 to a request that asked for no upgrade",
            );
            e.esource = ErrorSource::Upstream;
            return Err(e);
        }
        headers::strip_hop_by_hop_response(resp, upgraded);
        if resp.status.is_informational() || resp.status == http::StatusCode::NO_CONTENT {
            // RFC 9110 §8.6: no Content-Length on 1xx and 204 (a lenient client would read
            // that many bytes of the next response).
            resp.remove_header(&header::CONTENT_LENGTH);
        }
        let snap = ctx.snap.clone();
        let compiled = ctx.route.and_then(|i| snap.route(i));
        // Room for them, the route's fields and those Pingora adds when it writes the head
        // (`Date`, `Connection`, `Transfer-Encoding` for a body of unknown length) in both
        // of the header's maps at once: the head read from the upstream has none, and each
        // growth rebuilds both maps (2 allocations and 2 reallocations per request).
        let route_headers = compiled.map_or(0, |c| c.response_headers.len());
        resp.reserve(snap.security_headers.len() + route_headers + ADDED_WHEN_WRITTEN);
        for ((n, case), v) in &snap.security_headers {
            resp.insert_header((n, case), v.clone())?;
        }
        if let Some(compiled) = compiled {
            for (n, v) in &compiled.response_headers {
                resp.insert_header(n.clone(), v.clone())?;
            }
            if !compiled.policies.response_headers.is_empty() {
                let host = headers::request_host(session.req_header())
                    .map(gateway_routing::normalize_host)
                    .unwrap_or_default()
                    .into_owned();
                crate::policy::apply_response(&compiled.policies, resp, &self.vars(ctx, compiled, &host));
            }
        }
        if upgraded {
            ctx.upgraded = true;
            self.shared.metrics.open_websockets.inc();
            return Ok(());
        }
        let is_sse = resp
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if is_sse {
            ctx.sse = true;
            self.shared.metrics.open_sse.inc();
            // Streamed event by event: never compressed, never buffered.
            resp.remove_header("X-Accel-Buffering");
            return Ok(());
        }
        let compress = ctx.route().is_some_and(|r| r.config.compress);
        if compress {
            let mut vary = false;
            let chosen = snap.compression.choose(session.req_header(), resp, &mut vary);
            if vary {
                headers::add_vary_accept_encoding(resp)?;
            }
            if let Some(alg) = chosen {
                let declared_length = headers::content_length(&resp.headers);
                headers::mark_encoded(resp, alg.token())?;
                ctx.encoder = Some(snap.compression.encoder(alg, declared_length));
                ctx.flush_chunks = declared_length.is_none();
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        let Some(enc) = ctx.encoder.as_mut() else {
            return Ok(None);
        };
        let input = body.take().unwrap_or_default();
        // A streamed body (no Content-Length) is flushed chunk by chunk, so each piece reaches
        // the client when the upstream sends it; a body of known length is left to the
        // encoder's buffering (better ratio), as the end comes anyway.
        let encoded = if ctx.flush_chunks && !end_of_stream && !input.is_empty() {
            enc.encode_flushed(&input)
        } else {
            enc.encode(&input)
        };
        let mut out =
            encoded.map_err(|e| Error::because(ErrorType::InternalError, "compressing the response", e))?;
        if end_of_stream {
            if let Some(enc) = ctx.encoder.take() {
                let tail = enc
                    .finish()
                    .map_err(|e| Error::because(ErrorType::InternalError, "compressing the response", e))?;
                let mut v = Vec::with_capacity(out.len() + tail.len());
                v.extend_from_slice(&out);
                v.extend_from_slice(&tail);
                out = Bytes::from(v);
            }
        }
        *body = Some(out);
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let kind = match e.etype() {
            ErrorType::ConnectTimedout => "connect_timeout",
            ErrorType::ConnectRefused => "connect_refused",
            _ => "connect_error",
        };
        self.shared
            .metrics
            .upstream_errors
            .with_label_values(&[ctx.upstream_name(), kind])
            .inc();
        // Nothing was sent: any request may go to another server (nginx `error`, `timeout`).
        let failure = upstream::attempts::connect_failure(&e);
        let retry = self.attempt_failed(ctx, failure, true);
        e.set_retry(retry);
        e
    }

    /// Replaces Pingora's retry policy: `Gateway::retry_decision` (next_upstream.rs).
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        self.retry_decision(peer, session, e, ctx, client_reused)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let status = respond::status_for(e);
        tracing::debug!(error = %e, source = e.esource().as_str(), etype = e.etype().as_str(), status, "fail_to_proxy");
        if *e.esource() == ErrorSource::Upstream
            && !matches!(
                e.etype(),
                ErrorType::ConnectRefused
                    | ErrorType::ConnectTimedout
                    | ErrorType::ConnectError
                    | ErrorType::ConnectNoRoute
            )
        {
            // Malformed upstream framing (vendor/pingora-core/PATCHED.md): a bad head, Content-Length
            // or Transfer-Encoding is `InvalidHTTPHeader`, a bad chunked body `InvalidChunk` or
            // `InvalidTrailerEnd`. Told apart from other failed responses (reset, early close).
            let protocol = matches!(
                e.etype(),
                ErrorType::InvalidHTTPHeader | ErrorType::Custom("InvalidChunk" | "InvalidTrailerEnd")
            );
            let kind = if status == 504 {
                "timeout"
            } else if protocol {
                "protocol"
            } else {
                "response"
            };
            self.shared
                .metrics
                .upstream_errors
                .with_label_values(&[ctx.upstream_name(), kind])
                .inc();
        }
        // The access log and the metrics show what the client got, as nginx logs it: the
        // status already sent when the response broke off midway (the upstream cut its body
        // short), 499 when the client left before any response.
        if !final_response_sent(session) {
            if status > 0 {
                ctx.status = status;
                session.set_keepalive(None);
                let _ = respond::send(session, status, &[], None, &*ctx).await;
            } else if *e.esource() == ErrorSource::Downstream {
                ctx.status = 499;
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let m = &self.shared.metrics;
        if ctx.upgraded {
            m.open_websockets.dec();
        }
        if ctx.sse {
            m.open_sse.dec();
        }
        let status = if ctx.status == 0 {
            session
                .response_written()
                .filter(|r| !is_interim(r))
                .map_or(0, |r| r.status.as_u16())
        } else {
            ctx.status
        };
        let route = ctx.route_name();
        let elapsed = ctx.started.elapsed();
        let method = method_label(&session.req_header().method);
        m.requests
            .with_label_values(&[route, method, status_class(status)])
            .inc();
        m.duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
        let sent = session.body_bytes_sent() as u64;
        m.bytes_sent.inc_by(sent);
        m.bytes_received.inc_by(ctx.request_body);
        if let Some(e) = e {
            if status >= 500 {
                // One line per failure: Pingora's own "Fail to proxy" line is suppressed
                // for these (`suppress_error_log`). Fields in Display form (journald, docker).
                let peer = ctx.peer().map_or_else(|| "-".to_owned(), |p| p.to_string());
                ctx.span.in_scope(|| {
                    tracing::warn!(upstream = ctx.upstream_name(), peer = %peer, status, kind = e.etype().as_str(), error = %e, "request failed")
                });
            }
        }
        access::log(
            &ctx.snap.config.logging.access_log,
            &access::Entry {
                client: crate::state::client_addr(session.client_addr()),
                req: session.req_header(),
                scheme: "https",
                status,
                bytes: sent,
                duration: elapsed,
                route,
                upstream: ctx.upstream_name(),
                upstream_addr: ctx.peer(),
                // The user a basic_auth policy verified; otherwise the access log reads the
                // `Authorization: Basic` user name as nginx does.
                remote_user: ctx.granted.user.as_deref(),
                request_id: ctx.request_id,
                tls: session.digest().and_then(|d| d.ssl_digest.as_deref()),
            },
        );
    }

    /// Pingora's "Fail to proxy" ERROR line is left out where the gateway logs the failure
    /// itself (`logging`: a 5xx, with route, upstream, peer and kind): one line per failure.
    fn suppress_error_log(&self, _session: &Session, ctx: &Ctx, _error: &Error) -> bool {
        ctx.status >= 500
    }
}
