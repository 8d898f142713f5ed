//! Which failed attempts go on to another server of the group (nginx `proxy_next_upstream`,
//! `_tries`, `_timeout`), called from the `ProxyHttp` phases in proxy.rs: a failed connect
//! (`fail_to_connect`), an error of the exchange (`error_while_proxy`), a status listed in
//! `next_upstream` (`upstream_response_filter`).

use crate::proxy::{Ctx, Gateway};
use crate::upstream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::{Error, ErrorSource, ErrorType, Result, RetryType};
use pingora_proxy::Session;

impl Gateway {
    /// The current attempt failed with `failure`: counted against its server when
    /// `next_upstream` names it; whether the request goes to another server (`resendable`:
    /// nothing of it would be sent twice).
    pub(crate) fn attempt_failed(
        &self,
        ctx: &mut Ctx,
        failure: upstream::attempts::Failure,
        resendable: bool,
    ) -> bool {
        let Some(route) = ctx.route() else { return false };
        let group = route.group.clone();
        // A recreated container gets a new address: resolve the name again (at most once a
        // second per name, however many requests fail meanwhile).
        if let Some(a) = &ctx.attempt {
            self.shared.dns.invalidate(&a.0.host, a.0.port);
        }
        if !upstream::attempts::counts(&group, failure) {
            return false;
        }
        if let Some(a) = &ctx.attempt {
            group.failed(&a.0);
        }
        resendable && self.next_server_allowed(ctx)
    }

    /// Whether the request may go on to another server; if so the current one is marked
    /// tried and the retry counted.
    fn next_server_allowed(&self, ctx: &mut Ctx) -> bool {
        let Some(route) = ctx.route() else { return false };
        let group = route.group.clone();
        if let Some(a) = &ctx.attempt {
            if !ctx.tried.contains(&a.0.addr) {
                ctx.tried.push(a.0.addr);
            }
        }
        let allowed =
            upstream::attempts::may_try_another(&group, ctx.attempts, ctx.first_attempt, &ctx.tried);
        if allowed {
            self.shared
                .metrics
                .upstream_retries
                .with_label_values(&[group.name()])
                .inc();
        }
        allowed
    }

    /// Replaces Pingora's retry policy. An upstream that closes idle keep-alive connections
    /// (Node.js after 5 s) can close one just as it is taken from the pool: the request write
    /// fails, or the response read meets EOF or a reset before any byte of the response
    /// (`RetryType::ReusedOnly`, set by pingora-core only in that case). The request never
    /// reached the application, so an idempotent one (GET, HEAD, OPTIONS, PUT, DELETE) is
    /// sent once more to the same server, on a new connection (`upstream_peer`); that is not
    /// the server's failure. Otherwise a failure `next_upstream` names (an error or timeout
    /// before the response head, or a `http_502`-style status) counts against the server,
    /// and an idempotent request without a body goes on to another one while
    /// `next_upstream_tries`/`_timeout` allow. Nothing is sent twice once a response began,
    /// and a request body is never sent twice.
    pub(crate) fn retry_decision(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let resendable = session.req_header().method.is_idempotent()
            && ctx.request_body == 0
            && session.response_written().is_none();
        if std::mem::take(&mut ctx.status_retry) {
            e.set_retry(true);
            return e;
        }
        let stale_read = matches!(e.retry, RetryType::ReusedOnly);
        let failed_write =
            *e.esource() == ErrorSource::Upstream && matches!(e.etype(), ErrorType::WriteError);
        if client_reused && (stale_read || failed_write) && !ctx.retried && resendable {
            ctx.retried = true;
            ctx.same_server_again = true;
            e.set_retry(true);
            self.shared
                .metrics
                .upstream_retries
                .with_label_values(&[ctx.upstream_name()])
                .inc();
            return e;
        }
        let failure = (!ctx.upstream_responded)
            .then(|| upstream::attempts::exchange_failure(&e))
            .flatten();
        let retry = match failure {
            Some(f) => self.attempt_failed(ctx, f, resendable),
            None => false,
        };
        e.set_retry(retry);
        e
    }

    /// A final response head with `status` from the current attempt: a status
    /// `next_upstream` lists counts against the server and, for an idempotent request
    /// without a body, sends it on instead of relaying it (an error `error_while_proxy` then
    /// retries).
    pub(crate) fn status_decision(&self, session: &Session, status: u16, ctx: &mut Ctx) -> Result<()> {
        let Some(route) = ctx.route() else { return Ok(()) };
        if !route.upstream.next_upstream.statuses.contains(&status) {
            return Ok(());
        }
        let group = route.group.clone();
        if let Some(a) = &ctx.attempt {
            group.failed(&a.0);
        }
        let resendable = session.req_header().method.is_idempotent() && ctx.request_body == 0;
        if resendable && self.next_server_allowed(ctx) {
            // Sent on instead of relayed; error_while_proxy marks it for a retry.
            ctx.status_retry = true;
            return Err(Error::explain(
                ErrorType::HTTPStatus(status),
                format!("status {status} from the upstream, sent to the next server (next_upstream)"),
            ));
        }
        Ok(())
    }
}
