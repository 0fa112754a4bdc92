//! The receiver's HTTP surface: `app(state)` builds the service, `serve` runs it until
//! SIGTERM.
//!
//! A delivery goes: raw body -> signature check over those bytes -> replay check -> parse
//! -> event-type filter -> every sink confirms -> 2xx. Anything else gets a clear status
//! and a short reason, never a secret, an expected signature or internal error text.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Either, Full, LengthLimitError, Limited};
use sha2::{Digest, Sha256};

use crate::config::ReceiverConfig;
pub use crate::connection::HEADER_READ_TIMEOUT;
use crate::connection::{self, Activity};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::payload::{self, ParseError};
use crate::replay::{Key, ReplayCache};
use crate::secrets::{SecretState, SecretStore};
use crate::signature::{Rejection, Scheme, Verified};
use crate::sink::{Delivery, RecordError, Sinks};

/// How long a recorded delivery is remembered for replay detection without a timestamp.
pub const REPLAY_MEMORY_SECS: i64 = 24 * 3600;
/// At most this many deliveries are remembered for replay detection, and at least half as
/// many: the last 100 000 (see `replay`).
pub const REPLAY_CAPACITY: usize = 200_000;

/// The clock, in Unix seconds; injected so that tests can check the replay window.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default()
    })
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ReceiverConfig>,
    pub scheme: Arc<Scheme>,
    pub secrets: SecretStore,
    pub replay: Arc<ReplayCache>,
    pub sinks: Arc<Sinks>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Deliveries in flight, at most `limits.maxConcurrentDeliveries`; past that, a delivery
    /// is shed with 503.
    pub in_flight: Arc<InFlight>,
}

impl AppState {
    pub fn new(config: ReceiverConfig, sinks: Sinks) -> Self {
        let scheme = crate::signature::Scheme::of(&config);
        let config_webhook = config.webhook.clone();
        let config_provider = config.provider;
        let max_in_flight = config.limits.max_concurrent_deliveries as usize;
        AppState {
            secrets: SecretStore::new(config.secret_files.clone()),
            config: Arc::new(config),
            scheme: Arc::new(scheme),
            replay: Arc::new(ReplayCache::new(REPLAY_MEMORY_SECS, REPLAY_CAPACITY)),
            sinks: Arc::new(sinks),
            metrics: Arc::new(Metrics::new(
                &format!("{}/{}", config_webhook.namespace, config_webhook.name),
                config_provider.as_str(),
            )),
            clock: system_clock(),
            in_flight: Arc::new(InFlight::new(max_in_flight)),
        }
    }
}

/// A count of deliveries in flight with a ceiling: a semaphore that never waits.
#[derive(Debug)]
pub struct InFlight {
    count: AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Self {
        InFlight {
            count: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more delivery, held until the guard is dropped; `None` when full.
    pub fn enter(&self) -> Option<InFlightGuard<'_>> {
        self.count
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightGuard(self))
    }
}

pub struct InFlightGuard<'a>(&'a InFlight);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Release);
    }
}

/// The receiver's HTTP service: the health endpoints and the one delivery path of this
/// receiver.
pub fn app(state: AppState) -> Receiver {
    let state = Arc::new(state);
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(
            &state.config.path,
            post(
                |State(state): State<Arc<AppState>>, request: Request<Body>| async move {
                    deliver(&state, request).await
                },
            ),
        )
        .with_state(state.clone());
    Receiver(Arc::new((state, router)))
}

/// The body of an answer: a delivery's, or one from the router.
pub type Reply = Either<Full<Bytes>, Body>;

/// The receiver as a service ([`app`]).
///
/// A POST to the delivery path goes straight to the delivery handler; axum's router answers
/// everything else (health, and 404 or 405 with `Allow`, the same as for a delivery path it
/// routes itself). That skips the router's per-request work (routing, boxed handler future
/// and bodies, extensions) on the path that carries the load: a fifth of what the receiver
/// costs beyond a bare server (see `make bench`). The delivery path's limits (concurrency,
/// body size, timeout) are applied in the handler for the same reason.
#[derive(Clone)]
pub struct Receiver(Arc<(Arc<AppState>, Router)>);

impl Receiver {
    /// Answers one request.
    pub async fn answer<B>(self, request: Request<B>) -> Response<Reply>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (state, router) = &*self.0;
        if request.method() == Method::POST && request.uri().path() == state.config.path {
            deliver(state, request).await.map(Either::Left)
        } else {
            match tower::Service::call(&mut router.clone(), request).await {
                Ok(response) => response.map(Either::Right),
                Err(infallible) => match infallible {},
            }
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
pub fn metrics_app(metrics: Arc<Metrics>) -> Router {
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
                    m.encode(),
                )
            }
        }),
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.secrets.current() {
        SecretState::Loaded(_) => (StatusCode::OK, "ok\n").into_response(),
        SecretState::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "signing secret unavailable\n",
        )
            .into_response(),
    }
}

/// The result of one delivery.
#[derive(Debug)]
enum Outcome {
    Recorded(usize),
    Duplicate,
    Ignored,
    Rejected(Rejection),
    Malformed(ParseError),
    NoSecret,
    NotRecorded(RecordError),
    Overloaded,
    TooLarge,
    TimedOut,
    BodyUnreadable,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Recorded(_) => "recorded",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Rejected(r) => r.metric_label(),
            Outcome::Malformed(_) => "malformed_payload",
            Outcome::NoSecret => "no_secret",
            Outcome::NotRecorded(e) => e.metric_label(),
            Outcome::Overloaded => "overloaded",
            Outcome::TooLarge => "too_large",
            Outcome::TimedOut => "timed_out",
            Outcome::BodyUnreadable => "body_unreadable",
        }
    }
}

impl Outcome {
    fn answer(self) -> Response<Full<Bytes>> {
        // Fixed texts wherever possible: the common answers cost no formatting.
        fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
            let mut resp = Response::new(Full::new(body.into()));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
            json(status, serde_json::json!({ "error": message }).to_string())
        }
        fn retry_after(
            mut resp: Response<Full<Bytes>>,
            seconds: &'static str,
        ) -> Response<Full<Bytes>> {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
            resp
        }
        match self {
            Outcome::Recorded(1) => json(StatusCode::OK, r#"{"events":1,"status":"recorded"}"#),
            Outcome::Recorded(n) => json(
                StatusCode::OK,
                format!(r#"{{"events":{n},"status":"recorded"}}"#),
            ),
            Outcome::Duplicate => json(StatusCode::OK, r#"{"status":"duplicate"}"#),
            Outcome::Ignored => json(StatusCode::OK, r#"{"status":"ignored"}"#),
            Outcome::Rejected(r @ Rejection::MalformedHeader { .. }) => {
                error(StatusCode::BAD_REQUEST, &r.to_string())
            }
            Outcome::Rejected(r) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, &r.to_string());
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("HMAC realm=\"hookwarden\""),
                );
                resp
            }
            Outcome::Malformed(e) => error(
                StatusCode::BAD_REQUEST,
                &format!("payload not understood: {e}"),
            ),
            Outcome::NoSecret => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing secret unavailable; not recorded",
            ),
            Outcome::NotRecorded(_) => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "delivery not recorded; retry",
                ),
                "5",
            ),
            Outcome::Overloaded => retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "overloaded; retry"),
                "1",
            ),
            Outcome::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Outcome::TimedOut => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "delivery not handled in time; not recorded",
                ),
                "5",
            ),
            Outcome::BodyUnreadable => error(StatusCode::BAD_REQUEST, "request body unreadable"),
        }
    }
}

async fn deliver<B>(state: &AppState, request: Request<B>) -> Response<Full<Bytes>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let started = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    let outcome = match state.in_flight.enter() {
        // Load shedding: a sender told to retry shortly beats one left waiting.
        None => Outcome::Overloaded,
        Some(_place) => {
            let limits = &state.config.limits;
            let work = async {
                match read_body(body, limits.max_body_bytes as usize).await {
                    Ok(bytes) => handle(state, &parts.headers, bytes, started).await,
                    Err(outcome) => outcome,
                }
            };
            tokio::time::timeout_at(started + limits.request_timeout(), work)
                .await
                .unwrap_or(Outcome::TimedOut)
        }
    };
    log(&state.config.webhook.name, &outcome);
    state
        .metrics
        .observe(outcome.label(), started.elapsed().as_secs_f64());
    outcome.answer()
}

/// Reads the whole body, refusing more than `limit` bytes (early, when Content-Length says
/// so; otherwise as soon as the limit is passed). A body that arrives in one piece, as most
/// deliveries do, is returned as it is, without a copy.
async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, Outcome>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let mut body = std::pin::pin!(Limited::new(body, limit));
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match e.is::<LengthLimitError>() {
            true => Outcome::TooLarge,
            false => Outcome::BodyUnreadable,
        })?;
        // Trailers carry nothing a delivery is made of.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(first) => {
                if joined.is_empty() {
                    joined.extend_from_slice(first);
                }
                joined.extend_from_slice(&data);
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(match joined.is_empty() {
        true => first.unwrap_or_default(),
        false => Bytes::from(joined),
    })
}

/// One structured line per delivery, never its contents.
fn log(webhook: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Recorded(n) => tracing::info!(%webhook, events = n, "delivery recorded"),
        Outcome::Duplicate | Outcome::Ignored => {
            tracing::info!(%webhook, outcome = outcome.label(), "delivery acknowledged, not recorded (duplicate or not an accepted type)")
        }
        Outcome::Rejected(r) => tracing::warn!(%webhook, reason = %r, "delivery refused"),
        Outcome::Malformed(e) => {
            tracing::warn!(%webhook, error = %e, "verified payload not understood")
        }
        Outcome::NoSecret => {
            tracing::warn!(%webhook, "delivery refused: signing secret unavailable")
        }
        Outcome::NotRecorded(e) => tracing::error!(%webhook, error = %e, "delivery not recorded"),
        Outcome::Overloaded | Outcome::TooLarge | Outcome::TimedOut | Outcome::BodyUnreadable => {
            tracing::warn!(%webhook, outcome = outcome.label(), "delivery refused")
        }
    }
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Bytes,
    arrived: tokio::time::Instant,
) -> Outcome {
    let secrets = match state.secrets.current() {
        SecretState::Loaded(s) => s,
        SecretState::Unavailable(_) => return Outcome::NoSecret,
    };
    let now = (state.clock)();
    let verified = match state.scheme.verify(headers, &body, &secrets, now) {
        Ok(v) => v,
        Err(Rejection::NoSecret) => return Outcome::NoSecret,
        Err(r) => return Outcome::Rejected(r),
    };
    let key = delivery_key(&verified, &body);
    if state.replay.seen(&key, now) {
        return Outcome::Duplicate;
    }
    let parsed = match payload::parse(state.config.provider, headers, &body) {
        Ok(p) => p,
        Err(e) => return Outcome::Malformed(e),
    };
    let accepted = &state.config.event_types;
    let event_ts = parsed.event_ts;
    let events: Vec<_> = parsed
        .events
        .into_iter()
        .filter(|e| accepted.is_empty() || accepted.iter().any(|a| *a == e.event_type))
        .collect();
    if events.is_empty() {
        return Outcome::Ignored;
    }
    let n = events.len();
    let delivery = Delivery {
        key,
        events,
        body,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        event_ts,
    };
    // The sender's clock started when the delivery arrived.
    let deadline = arrived + state.config.limits.record_budget();
    match state.sinks.record(&delivery, deadline).await {
        Ok(()) => {
            state.replay.remember(key, now);
            Outcome::Recorded(n)
        }
        Err(e) => Outcome::NotRecorded(e),
    }
}

/// What identifies a delivery: the sender's id where the scheme has one; else the MAC that
/// verified it, which stands for the signed timestamp and body (and costs one hash block
/// instead of a second pass over the body); else (a token scheme) the body itself.
fn delivery_key(verified: &Verified, body: &[u8]) -> Key {
    let mut h = Sha256::new();
    match (&verified.delivery_id, &verified.mac) {
        (Some(id), _) => {
            h.update(b"id:");
            h.update(id.as_bytes());
        }
        (None, Some(mac)) => {
            h.update(b"mac:");
            h.update(mac.as_slice());
        }
        (None, None) => {
            h.update(b"ts:");
            h.update(verified.timestamp.unwrap_or_default().to_be_bytes());
            h.update(b"body:");
            h.update(body);
        }
    }
    h.finalize().into()
}

/// How long in-flight deliveries may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub async fn serve(config: ReceiverConfig) -> Result<()> {
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
    let sinks = Sinks::from_config(&config, client);
    let state = AppState::new(config, sinks);
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
    tracing::info!(%addr, path = %state.config.path, provider = %state.config.provider, "receiver listening");
    serve_on(listener, app(state), shutdown_signal()).await;
    Ok(())
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// Serves `receiver` on `listener` until `shutdown` completes; then stops accepting and waits
/// up to [`SHUTDOWN_GRACE`] for requests in flight. Clients that do not send their headers
/// within [`HEADER_READ_TIMEOUT`] are disconnected.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    receiver: Receiver,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::TokioIo;
    use hyper_util::server::graceful::GracefulShutdown;

    let graceful = GracefulShutdown::new();
    // Not hyper's header_read_timeout: `connection` keeps that limit with one timer per
    // connection instead of one per request.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.header_read_timeout(None);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(conn) => conn,
                    Err(error) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let activity = Activity::new();
                let service = {
                    let receiver = receiver.clone();
                    let activity = activity.clone();
                    hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                        let busy = activity.request();
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
}

pub use hookwarden_process::shutdown_signal;
