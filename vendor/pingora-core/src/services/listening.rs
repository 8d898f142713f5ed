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

//! The listening service
//!
//! A [Service] (listening service) responds to incoming requests on its endpoints.
//! Each [Service] can be configured with custom application logic (e.g. an `HTTPProxy`) and one or
//! more endpoints to listen to.

use crate::apps::ServerApp;
use crate::listeners::tls::TlsSettings;
#[cfg(feature = "connection_filter")]
use crate::listeners::AcceptAllFilter;
use crate::listeners::{
    ConnectionFilter, ListenerConfig, Listeners, ServerAddress, TcpSocketOptions, TransportStack,
};
use crate::protocols::Stream;
#[cfg(unix)]
use crate::server::ListenFds;
use crate::server::{RuntimeOpts, ShutdownWatch};
use crate::services::Service as ServiceTrait;

use async_trait::async_trait;
use log::{debug, error, info};
use pingora_error::Result;
use pingora_runtime::current_handle;
use pingora_timeout::timeout;
use std::fs::Permissions;
use std::sync::Arc;
use std::time::Duration;

/// Override the runtime options used to run a listening service.
pub type RuntimeOptsOverride = Arc<dyn Fn(&RuntimeOpts) -> Option<RuntimeOpts> + Send + Sync>;

/// The type of service that is associated with a list of listening endpoints and a particular application
pub struct Service<A> {
    name: String,
    listeners: Listeners,
    app_logic: Option<A>,
    /// The number of preferred threads. `None` to follow global setting.
    pub threads: Option<usize>,
    runtime_opts_override: Option<RuntimeOptsOverride>,
    #[cfg(feature = "connection_filter")]
    connection_filter: Arc<dyn ConnectionFilter>,
}

impl<A> Service<A> {
    /// Create a new [`Service`] with the given application (see [`crate::apps`]).
    pub fn new(name: String, app_logic: A) -> Self {
        Service {
            name,
            listeners: Listeners::new(),
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
        }
    }

    /// Create a new [`Service`] with the given application (see [`crate::apps`]) and the given
    /// [`Listeners`].
    pub fn with_listeners(name: String, listeners: Listeners, app_logic: A) -> Self {
        Service {
            name,
            listeners,
            app_logic: Some(app_logic),
            threads: None,
            runtime_opts_override: None,
            #[cfg(feature = "connection_filter")]
            connection_filter: Arc::new(AcceptAllFilter),
        }
    }

    /// Set a runtime options override for this service.
    ///
    /// Returning [`None`] from the override uses the global runtime options.
    pub fn set_runtime_opts_override(&mut self, override_fn: RuntimeOptsOverride) {
        self.runtime_opts_override = Some(override_fn);
    }

    /// Set a custom connection filter for this service.
    ///
    /// The connection filter will be applied to all incoming connections
    /// on all endpoints of this service. Connections that don't pass the
    /// filter will be dropped immediately at the TCP level, before TLS
    /// handshake or any HTTP processing.
    ///
    /// # Feature Flag
    ///
    /// This method requires the `connection_filter` feature to be enabled.
    /// When the feature is disabled, this method is a no-op.
    ///
    /// # Example
    ///
    /// ```rust,no_run
    /// # use std::sync::Arc;
    /// # use pingora_core::listeners::{ConnectionFilter, AcceptAllFilter};
    /// # struct MyService;
    /// # impl MyService {
    /// #   fn new() -> Self { MyService }
    /// # }
    /// let mut service = MyService::new();
    /// let filter = Arc::new(AcceptAllFilter);
    /// service.set_connection_filter(filter);
    /// ```
    #[cfg(feature = "connection_filter")]
    pub fn set_connection_filter(&mut self, filter: Arc<dyn ConnectionFilter>) {
        self.connection_filter = filter.clone();
        self.listeners.set_connection_filter(filter);
    }

    #[cfg(not(feature = "connection_filter"))]
    pub fn set_connection_filter(&mut self, _filter: Arc<dyn ConnectionFilter>) {}

    /// Get the [`Listeners`], mostly to add more endpoints.
    pub fn endpoints(&mut self) -> &mut Listeners {
        &mut self.listeners
    }

    // the follow add* function has no effect if the server is already started

    /// Add a TCP listening endpoint with the given address (e.g., `127.0.0.1:8000`).
    pub fn add_tcp(&mut self, addr: &str) {
        self.listeners.add_tcp(addr);
    }

    /// Add a listening endpoint configured by a [`ListenerConfig`].
    pub fn add_listener(&mut self, endpoint: ListenerConfig) {
        self.listeners.add_listener(endpoint);
    }

    /// Add a TCP listening endpoint with the given [`TcpSocketOptions`].
    pub fn add_tcp_with_settings(&mut self, addr: &str, sock_opt: TcpSocketOptions) {
        self.listeners.add_tcp_with_settings(addr, sock_opt);
    }

    /// Add a Unix domain socket listening endpoint with the given path.
    ///
    /// Optionally take a permission of the socket file. The default is read and write access for
    /// everyone (0o666).
    #[cfg(unix)]
    pub fn add_uds(&mut self, addr: &str, perm: Option<Permissions>) {
        self.listeners.add_uds(addr, perm);
    }

    /// Add a TLS listening endpoint with the given certificate and key paths.
    pub fn add_tls(&mut self, addr: &str, cert_path: &str, key_path: &str) -> Result<()> {
        self.listeners.add_tls(addr, cert_path, key_path)
    }

    /// Add a TLS listening endpoint with the given [`TlsSettings`] and [`TcpSocketOptions`].
    pub fn add_tls_with_settings(
        &mut self,
        addr: &str,
        sock_opt: Option<TcpSocketOptions>,
        settings: TlsSettings,
    ) {
        self.listeners
            .add_tls_with_settings(addr, sock_opt, settings)
    }

    /// Add an endpoint according to the given [`ServerAddress`]
    pub fn add_address(&mut self, addr: ServerAddress) {
        self.listeners.add_address(addr);
    }

    /// Get a reference to the application inside this service
    pub fn app_logic(&self) -> Option<&A> {
        self.app_logic.as_ref()
    }

    /// Get a mutable reference to the application inside this service
    pub fn app_logic_mut(&mut self) -> Option<&mut A> {
        self.app_logic.as_mut()
    }
}

// gateway patch: connections accepted and not yet finished (TLS handshake included), in
// every service of the process, so that a graceful shutdown can end as soon as this is 0
// (`ShutdownSignalWatch::drained`) without cutting a connection still in its handshake.
static OPEN_CONNECTIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Connections accepted by any listening service of this process and not yet closed, TLS
/// handshakes in progress included.
pub fn open_connections() -> usize {
    OPEN_CONNECTIONS.load(std::sync::atomic::Ordering::Acquire)
}

struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        OPEN_CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN_CONNECTIONS.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
// gateway patch end

impl<A: ServerApp + Send + Sync + 'static> Service<A> {
    pub async fn handle_event(event: Stream, app_logic: Arc<A>, shutdown: ShutdownWatch) {
        debug!("new event!");
        let mut reuse_event = app_logic.process_new(event, &shutdown).await;
        while let Some(event) = reuse_event {
            // TODO: with no steal runtime, consider spawn() the next event on
            // another thread for more evenly load balancing
            debug!("new reusable event!");
            reuse_event = app_logic.process_new(event, &shutdown).await;
        }
    }

    async fn run_endpoint(
        app_logic: Arc<A>,
        mut stack: TransportStack,
        mut shutdown: ShutdownWatch,
    ) {
        // the accept loop, until the system is shutting down
        loop {
            let new_io = tokio::select! { // TODO: consider biased for perf reason?
                new_io = stack.accept() => new_io,
                shutdown_signal = shutdown.changed() => {
                    match shutdown_signal {
                        Ok(()) => {
                            if !*shutdown.borrow() {
                                // happen in the initial read
                                continue;
                            }
                            info!("Shutting down {}", stack.as_str());
                            break;
                        }
                        Err(e) => {
                            error!("shutdown_signal error {e}");
                            break;
                        }
                    }
                }
            };
            match new_io {
                Ok(io) => {
                    let app = app_logic.clone();
                    let shutdown = shutdown.clone();
                    // gateway patch: counted from accept to close (`open_connections`).
                    let open = OpenConnection::new();
                    current_handle().spawn(async move {
                        let _open = open;
                        // gateway patch end
                        let peer_addr = io.peer_addr();
                        // gateway patch: the handshake future is boxed and the timeout is
                        // bound before the match, so neither stays allocated in this task
                        // for the whole life of the connection (a match scrutinee's
                        // temporaries live until the end of the match). Heap per idle TLS
                        // connection: benches/RESULTS.md, case 6.
                        let handshake = timeout(Duration::from_secs(60), Box::pin(io.handshake())).await;
                        match handshake {
                            // gateway patch end
                            Ok(handshake) => {
                                match handshake {
                                    Ok(io) => Self::handle_event(io, app, shutdown).await,
                                    Err(e) => {
                                        // TODO: Maybe IOApp trait needs a fn to handle/filter out this error
                                        if let Some(addr) = peer_addr {
                                            error!("Downstream handshake error from {}: {e}", addr);
                                        } else {
                                            error!("Downstream handshake error: {e}");
                                        }
                                    }
                                }
                            }
                            Err(_) => {
                                error!("Downstream handshake timeout");
                            }
                        }
                    });
                }
                Err(e) => {
                    // gateway patch: an accept() error never makes this loop spin. Upstream
                    // only slept on EMFILE and retried every other error at once: when the
                    // listener's event loop (another thread's runtime) was shut down, accept()
                    // failed at once, forever ("A Tokio 1.x context was found, but it is being
                    // shutdown"), without ever yielding, so this thread's runtime could not
                    // shut down either and the process logged ~200,000 lines a second until
                    // killed (after SIGINT, which does not signal `shutdown`). See
                    // `accept_error_action`.
                    let shutting_down = *shutdown.borrow();
                    match accept_error_action(&e, shutting_down) {
                        AcceptErrorAction::Stop => {
                            if shutting_down {
                                info!("Shutting down {} ({e})", stack.as_str());
                            } else {
                                error!("Accept() failed {e}; {} stops accepting", stack.as_str());
                            }
                            break;
                        }
                        AcceptErrorAction::BackOff => {
                            error!(
                                "Accept() failed {e}; pausing accept() on {} for {ACCEPT_BACKOFF:?}",
                                stack.as_str()
                            );
                            // Like nginx's accept disable: wait for connections to close, but
                            // not past a shutdown.
                            let stop = tokio::select! {
                                _ = tokio::time::sleep(ACCEPT_BACKOFF) => false,
                                changed = shutdown.changed() => {
                                    let stop = changed.is_err() || *shutdown.borrow();
                                    stop
                                }
                            };
                            if stop {
                                info!("Shutting down {}", stack.as_str());
                                break;
                            }
                        }
                        AcceptErrorAction::Yield => {
                            // One failed connection (aborted before accept, refused by a
                            // firewall rule...): let the other tasks run, then go on.
                            error!("Accept() failed {e}");
                            tokio::task::yield_now().await;
                        }
                    }
                    // gateway patch end
                }
            }
        }

        stack.cleanup();
    }
}

/// gateway patch: how long the accept loop pauses after a resource error (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM), as nginx disables accept for a while. Upstream slept 1 s on EMFILE only.
const ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// gateway patch: what the accept loop does after a failed accept.
#[derive(Debug, PartialEq, Eq)]
enum AcceptErrorAction {
    /// The listener cannot accept again (or shutdown was signalled): leave the loop.
    Stop,
    /// Out of descriptors or memory: pause [ACCEPT_BACKOFF], then try again.
    BackOff,
    /// One connection failed: yield to the other tasks, then accept the next one.
    Yield,
}

/// gateway patch: classifies an error of `TransportStack::accept`.
///
/// Only `AcceptError`s come from accept(2) itself; other types (setting TCP_NODELAY or
/// keepalive on the accepted socket) concern one connection. An accept error without an OS
/// error code is Tokio's "being shutdown" (the event loop the listener is registered with has
/// shut down); EBADF, EINVAL, ENOTSOCK, EOPNOTSUPP and EFAULT mean the listening socket
/// itself is gone or no longer listening (accept(2), Linux man-pages). Those never succeed
/// again, so the loop stops instead of spinning.
fn accept_error_action(e: &pingora_error::Error, shutting_down: bool) -> AcceptErrorAction {
    if shutting_down {
        return AcceptErrorAction::Stop;
    }
    if e.etype() != &pingora_error::ErrorType::AcceptError {
        return AcceptErrorAction::Yield;
    }
    let Some(io) = e.root_cause().downcast_ref::<std::io::Error>() else {
        return AcceptErrorAction::Stop;
    };
    match io.raw_os_error() {
        Some(code) => os_error_action(code),
        None => AcceptErrorAction::Stop,
    }
}

/// gateway patch: [accept_error_action] for an accept(2) errno.
#[cfg(unix)]
fn os_error_action(code: i32) -> AcceptErrorAction {
    match code {
        libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM => AcceptErrorAction::BackOff,
        libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT => {
            AcceptErrorAction::Stop
        }
        _ => AcceptErrorAction::Yield,
    }
}

/// gateway patch: [accept_error_action] for an OS error code (not classified off Unix).
#[cfg(not(unix))]
fn os_error_action(_code: i32) -> AcceptErrorAction {
    AcceptErrorAction::Yield
}
// gateway patch end

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServiceTrait for Service<A> {
    async fn start_service(
        &mut self,
        #[cfg(unix)] fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
    ) {
        let runtime = current_handle();
        let endpoints = self
            .listeners
            .build(
                #[cfg(unix)]
                fds,
            )
            .await
            .expect("Failed to build listeners");

        let app_logic = self
            .app_logic
            .take()
            .expect("can only start_service() once");
        let app_logic = Arc::new(app_logic);

        let mut handlers = Vec::new();

        endpoints.into_iter().for_each(|endpoint| {
            for _ in 0..listeners_per_fd {
                let shutdown = shutdown.clone();
                let my_app_logic = app_logic.clone();
                let endpoint = endpoint.clone();

                let jh = runtime.spawn(async move {
                    Self::run_endpoint(my_app_logic, endpoint, shutdown).await;
                });

                handlers.push(jh);
            }
        });

        futures::future::join_all(handlers).await;
        self.listeners.cleanup();
        app_logic.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        self.threads
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.runtime_opts_override
            .as_ref()
            .and_then(|override_fn| override_fn(global))
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(self.listeners.addresses())
    }
}
