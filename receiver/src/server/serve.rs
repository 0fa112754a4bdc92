//! The service ([`app`]), the listener loop ([`serve_on`]) and shutdown.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use http_body_util::{Either, Full};

use arc_swap::ArcSwap;

use super::budget::BodyBudget;
use super::deliver::deliver;
use super::refusals::WINDOW;
use super::state::AppState;
use super::table::Table;
use crate::config::ReceiverConfig;
use crate::connection::{self, Activity, PeerAddr};
pub use crate::connection::{BODY_STALL_TIMEOUT, HEADER_READ_TIMEOUT};
use crate::error::{Error, Result};
use crate::handoff::{Election, Handoff};
use crate::metrics::Scrape;
use crate::secrets::SecretState;
use crate::sink::Sinks;

/// The HTTP service of a receiver of its own: the health endpoints and the one delivery
/// path of this receiver.
pub fn app(state: AppState) -> Receiver {
    Receiver::new(Table::dedicated(Arc::new(state)))
}

/// The body of an answer: a delivery's, or one from the router.
pub type Reply = Either<Full<Bytes>, Body>;

/// The receiver as a service ([`app`]): a routing table ([`Table`]) of delivery paths, and
/// axum's router for the rest.
///
/// A POST to a delivery path goes straight to the delivery handler, another method on it
/// gets 405 with `Allow: POST`; axum's router answers everything else (health, and 404).
/// Why: the module `server`'s documentation. The table is swapped whole ([`Receiver::swap`]);
/// a delivery keeps the Webhook's state it started with until it is answered.
#[derive(Clone)]
pub struct Receiver(Arc<Shared>);

struct Shared {
    table: ArcSwap<Table>,
    router: Router,
}

impl Receiver {
    /// A receiver serving `table`.
    pub fn new(table: Table) -> Receiver {
        table.share_budgets();
        let table = ArcSwap::from_pointee(table);
        Receiver(Arc::new_cyclic(|shared: &std::sync::Weak<Shared>| {
            let shared = shared.clone();
            let router = Router::new().route("/healthz", get(healthz)).route(
                "/readyz",
                get(move || {
                    let not_ready = shared.upgrade().and_then(|s| s.table.load().not_ready());
                    async move {
                        match not_ready {
                            None => (StatusCode::OK, "ok\n").into_response(),
                            Some(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
                        }
                    }
                }),
            );
            Shared { table, router }
        }))
    }

    /// Serves `table` from now on. Deliveries in flight finish with the state they started
    /// with; the listeners are not touched. The Webhooks of the table share their body
    /// budget among them from now on (see `budget`).
    pub fn swap(&self, table: Table) {
        table.share_budgets();
        self.0.table.store(Arc::new(table));
    }

    /// The table served now.
    pub fn table(&self) -> Arc<Table> {
        self.0.table.load_full()
    }

    /// Answers one request.
    pub async fn answer<B>(self, request: Request<B>) -> Response<Reply>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let entry = self.0.table.load().get(request.uri().path()).cloned();
        match entry {
            Some(state) if request.method() == Method::POST => {
                deliver(&state, request).await.map(Either::Left)
            }
            Some(_) => {
                let mut resp = Response::new(Either::Right(Body::empty()));
                *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                resp.headers_mut()
                    .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
                resp
            }
            None => match tower::Service::call(&mut self.0.router.clone(), request).await {
                Ok(response) => response.map(Either::Right),
                Err(infallible) => match infallible {},
            },
        }
    }

    /// Ends the current window of refusals of every Webhook served (see `refusals`).
    pub fn end_refusal_windows(&self) {
        for state in self.0.table.load().states() {
            state.end_refusal_window();
        }
    }
}

impl<B> tower::Service<Request<B>> for Receiver
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let answer = self.clone().answer(request);
        Box::pin(async move { Ok(answer.await.map(Body::new)) })
    }
}

/// The metrics router, served on its own port.
pub fn metrics_app<M: Scrape>(metrics: Arc<M>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.scrape(),
                )
            }
        }),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The most a connection buffers of what it reads: request headers above all (hyper's
/// default, about 400 KiB, would let a few hundred clients that send large headers and
/// stall hold a pod's memory). Webhook senders' headers are a few KiB.
pub const MAX_BUFFER_BYTES: usize = 16 * 1024;

/// Connections a receiver keeps open at once for a budget of `body_budget` bytes of bodies
/// in flight: as many as hold that much again in header buffers ([`MAX_BUFFER_BYTES`]
/// each), so that bodies and headers together stay within half of the memory limit the
/// budget is derived from. At least 64.
pub fn connection_limit(body_budget: u64) -> usize {
    let n = body_budget / MAX_BUFFER_BYTES as u64;
    usize::try_from(n).unwrap_or(usize::MAX).clamp(64, 1 << 16)
}

/// How long in-flight deliveries may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish. With `election`,
/// a receiver with a ConfigMap sink hands its deliveries to the replica that writes it
/// (see `handoff`). Deliveries hold at most `body_budget` bytes of bodies at once (see
/// `budget`).
pub async fn serve(
    config: ReceiverConfig,
    election: Option<Election>,
    body_budget: u64,
) -> Result<()> {
    let needs_api = config.sinks.events || config.sinks.config_map.is_some();
    let client = if needs_api {
        Some(
            kube::Client::try_default()
                .await
                .map_err(Error::KubeClient)?,
        )
    } else {
        None
    };
    let sinks = Sinks::from_config(&config, client.clone());
    let handoff = match (election, client, &config.sinks.config_map) {
        (Some(election), Some(client), Some(_)) => {
            Some(Handoff::join(client, &election, config.listen.port())?)
        }
        _ => None,
    };
    let mut state = AppState::new(config, sinks);
    state.handoff = handoff;
    state.budget = Arc::new(BodyBudget::new(body_budget));
    if let SecretState::Unavailable(reason) = state.secrets.current() {
        tracing::warn!(%reason, "signing secrets unavailable at start; not ready");
    }
    tokio::spawn(state.secrets.clone().refresh_every(Duration::from_secs(5)));

    let metrics_addr = state.config.metrics_listen;
    let metrics_listener = bind(metrics_addr).await?;
    let metrics = metrics_app(state.metrics.clone());
    tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, metrics).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });

    let addr = state.config.listen;
    let listener = bind(addr).await?;
    tracing::info!(%addr, path = %state.config.path, provider = %state.config.provider, body_budget, "receiver listening");
    // Stopping, the pod leaves the writer election before it drains (see `handoff`).
    let shutdown = Handoff::leaving_after(shutdown_signal(), state.handoff.clone());
    serve_on(
        listener,
        app(state),
        connection_limit(body_budget),
        shutdown,
    )
    .await;
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Serves `receiver` on `listener` until `shutdown` completes; then stops accepting and waits
/// up to [`SHUTDOWN_GRACE`] for requests in flight. Clients that do not send their headers
/// within [`HEADER_READ_TIMEOUT`] are disconnected. Each request carries its connection's
/// peer address ([`PeerAddr`]) in its extensions. At most `max_connections` are open at
/// once (see [`connection_limit`]): past that, a new connection is closed at once, so that
/// no number of clients holds more than that many header buffers.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    receiver: Receiver,
    max_connections: usize,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;

    // Each window of refusals ends with its summary line (and the last one at shutdown).
    let windows = {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval_at(tokio::time::Instant::now() + WINDOW, WINDOW);
            loop {
                every.tick().await;
                receiver.end_refusal_windows();
            }
        })
    };
    let graceful = GracefulShutdown::new();
    // Not hyper's header_read_timeout: `connection` keeps that limit with one timer per
    // connection instead of one per request.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None);
    // What a connection may hold of request headers (and read ahead of its body).
    http.max_buf_size(MAX_BUFFER_BYTES);
    let open = Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(place) = open.clone().try_acquire_owned() else {
                    // Full: closed unanswered (the sender retries), before a byte is read.
                    drop(stream);
                    tracing::debug!(max_connections, "connection refused: too many open");
                    continue;
                };
                let activity = Activity::new();
                let service = {
                    let receiver = receiver.clone();
                    let activity = activity.clone();
                    hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
                        let busy = activity.request();
                        request.extensions_mut().insert(PeerAddr(peer));
                        let answer = receiver.clone().answer(request);
                        async move {
                            let response = answer.await;
                            drop(busy);
                            Ok::<_, Infallible>(response)
                        }
                    })
                };
                let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                let conn = tokio::spawn(async move {
                    if let Err(error) = conn.await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
                // The watchdog is a task of its own, so that the connection's task polls
                // only the connection, however often it wakes.
                tokio::spawn(async move {
                    let _place = place;
                    let closer = conn.abort_handle();
                    tokio::select! {
                        _ = conn => {}
                        () = connection::idle_expired(&activity, HEADER_READ_TIMEOUT) => {
                            closer.abort();
                            tracing::debug!("closed a connection that sent no request headers in time");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    tracing::info!("shutting down: finishing in-flight requests");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after the shutdown grace period");
    }
    windows.abort();
    receiver.end_refusal_windows();
}

pub use hookwarden_process::shutdown_signal;
