//! A stand-in for a user's application in the end-to-end tests: the target of a `forward`
//! sink. It answers 204 to every POST and keeps what it received (path, content type, the
//! hookwarden headers, `traceparent`, body), which `GET /received` returns as JSON, and logs
//! (`received <delivery header> <body on one line>`). Built into the image `hookwarden-e2e-app:dev` by tests/install.sh.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

type Received = Arc<Mutex<Vec<Value>>>;

async fn receive(
    State(received): State<Received>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let entry = json!({
        "path": uri.path(),
        "contentType": header("content-type"),
        "webhook": header("x-hookwarden-webhook"),
        "delivery": header("x-hookwarden-delivery"),
        "eventTypes": header("x-hookwarden-event-types"),
        "traceparent": header("traceparent"),
        "body": String::from_utf8_lossy(&body),
    });
    match received.lock() {
        Ok(mut all) => {
            // One line per delivery on stderr too, so that a test following the log sees
            // every delivery of a pod that is then deleted.
            eprintln!(
                "received {} {}",
                entry["delivery"].as_str().unwrap_or("-"),
                String::from_utf8_lossy(&body).replace('\n', " ")
            );
            all.push(entry);
            StatusCode::NO_CONTENT
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

async fn list(State(received): State<Received>) -> Response {
    match received.lock() {
        Ok(all) => (
            [("content-type", "application/json")],
            Value::Array(all.clone()).to_string(),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("LISTEN").unwrap_or_else(|_| "0.0.0.0:8080".into());
    let received: Received = Arc::default();
    let app = Router::new()
        .route("/received", get(list))
        .fallback(axum::routing::post(receive))
        .with_state(received);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("hookwarden-e2e-app listening on {addr}");
    // On SIGTERM (pod deletion), finish the requests in flight, then exit.
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
            }
            eprintln!("hookwarden-e2e-app stopping");
        })
        .await
}
