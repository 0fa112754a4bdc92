//! The receiver's HTTP surface: `app(state)` builds the router, `serve` runs it until SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::ReceiverConfig;
use crate::error::{Error, Result};
use crate::secrets::{SecretState, SecretStore};

/// Largest delivery body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;
/// Below Opal's 10 s deadline, so a sender always gets an answer from us, not a timeout.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ReceiverConfig>,
    pub secrets: SecretStore,
}

/// The router: health endpoints and the one delivery path of this receiver.
pub fn app(state: AppState) -> Router {
    let path = state.config.path.clone();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route(&path, post(deliver))
        .layer(RequestBodyLimitLayer::new(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.secrets.current() {
        SecretState::Loaded(_) => (StatusCode::OK, "ok\n").into_response(),
        SecretState::Unavailable(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "signing secret unavailable\n",
        )
            .into_response(),
    }
}

/// Deliveries are refused until verification and recording are in place: a sender must
/// never receive a 2xx for a delivery that was not recorded.
async fn deliver(State(state): State<AppState>, _body: Bytes) -> Response {
    tracing::warn!(
        webhook = %state.config.webhook.name,
        provider = %state.config.provider,
        "delivery refused: this receiver build does not record deliveries yet"
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "60")],
        "delivery not recorded: receiver cannot record deliveries yet\n",
    )
        .into_response()
}

/// Serves until SIGTERM or Ctrl-C, then lets in-flight requests finish.
pub async fn serve(config: ReceiverConfig) -> Result<()> {
    let secrets = SecretStore::new(config.secret_files.clone());
    if let SecretState::Unavailable(reason) = secrets.current() {
        tracing::warn!(%reason, "signing secrets unavailable at start; not ready");
    }
    tokio::spawn(secrets.clone().refresh_every(Duration::from_secs(5)));
    let addr = config.listen;
    let state = AppState {
        config: Arc::new(config),
        secrets,
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    tracing::info!(%addr, path = %state.config.path, provider = %state.config.provider, "receiver listening");
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(Error::Serve)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Provider, SinksConfig, WebhookIdentity};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    fn state(secret_file: std::path::PathBuf) -> AppState {
        let config = ReceiverConfig {
            webhook: WebhookIdentity {
                name: "m".into(),
                namespace: "n".into(),
                uid: "u".into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            path: "/membrane".into(),
            provider: Provider::Membrane,
            event_types: vec![],
            secret_files: vec![secret_file.clone()],
            sinks: SinksConfig::default(),
        };
        AppState {
            config: Arc::new(config),
            secrets: SecretStore::new(vec![secret_file]),
        }
    }

    async fn status(app: Router, method: &str, uri: &str) -> StatusCode {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .unwrap();
        app.oneshot(req).await.unwrap().status()
    }

    #[tokio::test]
    async fn readiness_follows_the_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        let st = state(file.clone());
        assert_eq!(
            status(app(st.clone()), "GET", "/healthz").await,
            StatusCode::OK
        );
        assert_eq!(
            status(app(st.clone()), "GET", "/readyz").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        std::fs::write(&file, "s3cret").unwrap();
        st.secrets.reload();
        assert_eq!(status(app(st), "GET", "/readyz").await, StatusCode::OK);
    }

    #[tokio::test]
    async fn never_acknowledges_an_unrecorded_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        std::fs::write(&file, "s3cret").unwrap();
        let st = state(file);
        assert_eq!(
            status(app(st.clone()), "POST", "/membrane").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(app(st.clone()), "POST", "/other").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(app(st), "GET", "/membrane").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
