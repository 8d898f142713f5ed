// gateway patch (PATCHED.md, "HTTP/1.1 upstream: one loop for requests without a body").
//
// `proxy_1to1` streams in both directions at once: a downstream half and an upstream half,
// joined with `try_join!`, pass every header and body chunk to each other through two mpsc
// channels. A request without a body (most GET and HEAD requests) has nothing to stream
// upstream once its header is written, so here one loop reads the upstream response and writes
// each part downstream as soon as it is filtered: no channels, no second future, no task
// batching. What the loop does for each part is what `proxy_handle_downstream` and
// `proxy_handle_upstream` do for it (same filters, same writes, same errors), and the
// downstream is still watched while the upstream is slow, so a client that goes away is
// noticed before the response (`read_body_or_idle`).

use super::*;

impl<SV, C> HttpProxy<SV, C>
where
    C: custom::Connector,
{
    /// Whether [`Self::proxy_1to1_direct`] can serve this request: the request has no body,
    /// it is an upgrade request on both sides or on neither, and neither the cache, a retry
    /// buffer, a custom downstream or a subrequest needs the two-way pipe.
    pub(super) fn can_proxy_1to1_direct(session: &mut Session, upstream_upgrade: bool) -> bool {
        // The loops below do not run upstream modules.
        !cfg!(feature = "upstream_modules")
            && upstream_upgrade == session.downstream_session.is_upgrade_req()
            && !session.downstream_session.is_custom()
            && !session.downstream_session.is_subrequest()
            && !session.downstream_session.supports_proxy_task_api()
            && !session.cache.enabled()
            && !session.cache.bypassing()
            && session.as_ref().get_retry_buffer().is_none()
            && session.as_mut().is_body_empty()
    }

    /// Proxies the response to a request without a body whose header was already written to
    /// `client_session`. Returns whether the downstream and the upstream connections can be
    /// reused, as `proxy_handle_downstream` and `proxy_handle_upstream` do.
    pub(super) async fn proxy_1to1_direct(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        ctx: &mut SV::CTX,
    ) -> Result<(bool, bool)>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        debug!("request without a body: proxied in one loop");
        // The request body filters see the (empty) end of the body, as `send_body_to_pipe`
        // shows it to them; whatever they add is sent.
        let mut data = None;
        session
            .downstream_modules_ctx
            .request_body_filter(&mut data, true)
            .await?;
        self.inner
            .request_body_filter(session, &mut data, true, ctx)
            .await?;
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            client_session.write_body(&d).await.map_err(|e| e.into_up())?;
        }
        client_session.finish_body().await.map_err(|e| e.into_up())?;

        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        let mut watch_downstream = true;
        let upstream_done = loop {
            let read = tokio::select! {
                biased;
                res = client_session.read_response_task() => res,
                // `read_body_or_idle(true)` only returns when the client closes or errs (a
                // pipelined request's bytes are kept for later and it stays pending).
                res = session.downstream_session.read_body_or_idle(true), if watch_downstream => {
                    match res {
                        Err(e) => return Err(e.into_down()),
                        Ok(_) => {
                            watch_downstream = false;
                            continue;
                        }
                    }
                }
            };
            let task = match read {
                Ok(task) => task,
                Err(e) => {
                    // As the two-way pipe passes it on: `write_response_tasks` returns the
                    // upstream error (`Ok` is not expected; if it came, neither connection
                    // would be reused).
                    session
                        .write_response_tasks(vec![HttpTask::Failed(e.into_up())])
                        .await?;
                    return Ok((false, false));
                }
            };
            let upstream_done = task.is_end();
            let response_done = self
                .relay_response_task(session, task, ctx, &mut serve_from_cache, &mut range_body_filter)
                .await?;
            if session.was_upgraded() {
                // 101 written downstream: both connections now carry the upgraded protocol.
                self.proxy_upgraded_direct(session, client_session, ctx)
                    .await?;
                return Ok((false, false));
            }
            if upstream_done || response_done {
                break upstream_done;
            }
        };
        let reuse_downstream = match session.as_mut().finish_body().await {
            Ok(_) => true,
            Err(e) => {
                error!("Error finish sending body to downstream: {}", e);
                false
            }
        };
        // An upstream response not read to its end leaves bytes on the connection.
        Ok((reuse_downstream, upstream_done))
    }

    /// Writes one upstream response task downstream after the filters the pipe applies to it
    /// (`process_upstream_tasks`); returns whether the downstream response is done.
    async fn relay_response_task(
        &self,
        session: &mut Session,
        mut task: HttpTask,
        ctx: &mut SV::CTX,
        serve_from_cache: &mut ServeFromCache,
        range_body_filter: &mut RangeBodyFilter,
    ) -> Result<bool>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        session.upstream_compression.response_filter(&mut task);
        let task = self
            .h1_response_filter(session, task, ctx, serve_from_cache, range_body_filter, false)
            .await?;
        session.write_response_tasks(vec![task]).await
    }

    /// Copies an upgraded connection (WebSocket) both ways until either side ends, each read
    /// written to the other side at once, through the same filters as the two-way pipe
    /// (`send_body_to_pipe` and `send_body_to1` one way, `h1_response_filter` and
    /// `write_response_tasks` the other).
    async fn proxy_upgraded_direct(
        &self,
        session: &mut Session,
        client_session: &mut HttpSessionV1,
        ctx: &mut SV::CTX,
    ) -> Result<()>
    where
        SV: ProxyHttp + Send + Sync,
        SV::CTX: Send + Sync,
    {
        debug!("upgraded connection: copied in one loop");
        // PATCHED.md, "Upgraded connections: one idle timer".
        // Each read below would arm its own read timeout (a boxed timer, a tokio one for the
        // long timeouts WebSockets get) and the `select!` drops the other side's at every
        // message. One timer per connection instead, reset lazily: the loop notes when it
        // last went back to waiting, and the timer, when it fires, either ends the connection
        // or moves to the new deadline. As before, a wait starts when the loop waits again
        // (time spent writing is not idle), activity in either direction restarts it, the
        // shorter of the two read timeouts ends an idle connection as that side's error, and
        // while the upstream is drained after a failed send only its timeout applies. The
        // sessions' timeouts are not put back: neither connection is reused after an upgrade.
        let down_timeout = session.downstream_session.get_read_timeout();
        let up_timeout = client_session.read_timeout;
        let idle = upgraded_idle_timeout(down_timeout, up_timeout);
        let draining_idle = up_timeout.map(|t| (t, IdleSide::Upstream));
        session.downstream_session.set_read_timeout(None);
        client_session.read_timeout = None;
        if let Some((t, side)) = idle {
            debug!("upgraded connection: one idle timer of {t:?} ({side:?} read timeout)");
        }
        let mut waiting_since = time::Instant::now();
        let idle_timer = time::sleep(idle.map_or(IDLE_TIMER_PARKED, |(t, _)| t));
        tokio::pin!(idle_timer);
        let mut serve_from_cache = ServeFromCache::new();
        let mut range_body_filter = RangeBodyFilter::new();
        // A failed write upstream stops the client-to-upstream direction only: what the
        // upstream still sends (a WebSocket Close frame) is relayed until it ends, as
        // `proxy_handle_upstream` keeps reading after a send error.
        let mut send_error: Option<Box<Error>> = None;
        loop {
            let limit = if send_error.is_some() { draining_idle } else { idle };
            tokio::select! {
                res = session.downstream_session.read_body_or_idle(false), if send_error.is_none() => {
                    let mut data = res.map_err(|e| e.into_down())?;
                    // The client closed its side: the upgraded exchange is over.
                    let end = data.is_none() || session.is_body_done();
                    session
                        .downstream_modules_ctx
                        .request_body_filter(&mut data, end)
                        .await?;
                    self.inner
                        .request_body_filter(session, &mut data, end, ctx)
                        .await?;
                    // As `send_body_to_pipe`: a filter that takes the data away ends it too.
                    let upstream_end = end || data.is_none();
                    client_session.maybe_upgrade_body_writer();
                    let sent = match data.filter(|d| !d.is_empty()) {
                        Some(d) => client_session.write_body(&d).await.map(|_| ()),
                        None => Ok(()),
                    };
                    if let Err(e) = sent {
                        warn!("send error, draining the upgraded upstream: {e}");
                        send_error = Some(e.into_up());
                        waiting_since = time::Instant::now();
                        continue;
                    }
                    if upstream_end {
                        client_session.finish_body().await.map_err(|e| e.into_up())?;
                        break;
                    }
                    waiting_since = time::Instant::now();
                }
                res = client_session.read_response_task() => {
                    let task = match res {
                        Ok(task) => task,
                        Err(e) => {
                            let e = send_error.take().unwrap_or(e).into_up();
                            session
                                .write_response_tasks(vec![HttpTask::Failed(e)])
                                .await?;
                            break;
                        }
                    };
                    let end = task.is_end();
                    self.relay_response_task(session, task, ctx, &mut serve_from_cache, &mut range_body_filter)
                        .await?;
                    if end {
                        break;
                    }
                    waiting_since = time::Instant::now();
                }
                // The idle timer (see above).
                () = &mut idle_timer, if limit.is_some() => {
                    let Some((t, side)) = limit else { continue };
                    let now = time::Instant::now();
                    // A timeout too long to add (beyond tokio's ~30 years) never ends the wait.
                    let deadline = waiting_since.checked_add(t);
                    if deadline.is_none_or(|d| now < d) {
                        let next = deadline.unwrap_or(now + IDLE_TIMER_PARKED);
                        idle_timer.as_mut().reset(next);
                        continue;
                    }
                    // The error the shorter read timeout gave before: downstream, or upstream
                    // passed on as the pipe passes it (after a failed send, that error).
                    let e = Error::explain(ReadTimedout, format!("upgraded connection idle for {t:?}"));
                    match side {
                        IdleSide::Downstream => return Err(e.into_down()),
                        IdleSide::Upstream => {
                            let e = send_error.take().unwrap_or(e.into_up());
                            session
                                .write_response_tasks(vec![HttpTask::Failed(e)])
                                .await?;
                            break;
                        }
                    }
                }
            }
        }
        if let Err(e) = session.as_mut().finish_body().await {
            debug!("finishing the upgraded response downstream: {e}");
        }
        Ok(())
    }
}

// PATCHED.md, "Upgraded connections: one idle timer".
/// Where the idle timer waits when no timeout applies (its branch is then not polled) or the
/// timeout is too long to add to an instant.
const IDLE_TIMER_PARKED: Duration = Duration::from_secs(86_400);

/// The side whose read timeout ends an idle upgraded connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdleSide {
    Downstream,
    Upstream,
}

/// The idle timeout of an upgraded connection: the shorter of the downstream and the upstream
/// read timeout (the one that fired first when each read armed its own), and its side; `None`
/// when neither side has one.
fn upgraded_idle_timeout(
    downstream: Option<Duration>,
    upstream: Option<Duration>,
) -> Option<(Duration, IdleSide)> {
    match (downstream, upstream) {
        (Some(d), Some(u)) if u < d => Some((u, IdleSide::Upstream)),
        (Some(d), _) => Some((d, IdleSide::Downstream)),
        (None, Some(u)) => Some((u, IdleSide::Upstream)),
        (None, None) => None,
    }
}

#[cfg(test)]
mod upgraded_idle_tests {
    use super::*;

    #[test]
    fn the_shorter_read_timeout_ends_an_idle_upgraded_connection() {
        let s = Duration::from_secs;
        assert_eq!(upgraded_idle_timeout(Some(s(5)), Some(s(9))), Some((s(5), IdleSide::Downstream)));
        assert_eq!(upgraded_idle_timeout(Some(s(9)), Some(s(5))), Some((s(5), IdleSide::Upstream)));
        assert_eq!(upgraded_idle_timeout(Some(s(5)), Some(s(5))), Some((s(5), IdleSide::Downstream)));
        assert_eq!(upgraded_idle_timeout(None, Some(s(7))), Some((s(7), IdleSide::Upstream)));
        assert_eq!(upgraded_idle_timeout(Some(s(7)), None), Some((s(7), IdleSide::Downstream)));
        assert_eq!(upgraded_idle_timeout(None, None), None);
    }
}
// gateway patch end
