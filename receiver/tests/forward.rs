//! The `forward` sink against a real HTTP application on loopback: the body arrives byte for
//! byte with what hookwarden checked, and only the application's 2xx acknowledges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::routing::post;
use hookwarden_receiver::config::{
    ForwardConfig, Limits, Provider, ReceiverConfig, SinksConfig, WebhookIdentity,
};
use hookwarden_receiver::server::{AppState, app};
use hookwarden_receiver::signature::{Scheme, sign};
use hookwarden_receiver::sink::Sinks;
use tower::ServiceExt;

const SECRET: &str = "membrane-forward-secret-0123456789";
const BODY: &str = r#"{"type":"org-created","name":"N","orgId":"o1","org":{"id":"o1","name":"N"},"user":{"email":"a@b.c"}}"#;

#[derive(Default)]
struct App {
    received: Mutex<Vec<(HeaderMap, Bytes)>>,
    answer: Mutex<u16>,
}

/// Starts the application; returns its URL.
async fn application(state: Arc<App>) -> String {
    *state.answer.lock().unwrap() = 200;
    let router = axum::Router::new().route(
        "/hooks",
        post(move |headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                state.received.lock().unwrap().push((headers, body));
                StatusCode::from_u16(*state.answer.lock().unwrap()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    format!("http://{addr}/hooks")
}

fn receiver(url: &str, dir: &tempfile::TempDir) -> AppState {
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let config = ReceiverConfig {
        webhook: WebhookIdentity {
            name: "orgs".into(),
            namespace: "team-a".into(),
            uid: "u".into(),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        path: "/membrane".into(),
        provider: Provider::Membrane,
        event_types: vec![],
        secret_files: vec![secret_file],
        sinks: SinksConfig {
            events: false,
            config_map: None,
            forward: Some(ForwardConfig { url: url.into() }),
        },
        generic_hmac: None,
        limits: Limits {
            request_timeout_seconds: 2,
            ..Limits::default()
        },
    };
    let sinks = Sinks::from_config(&config, None);
    AppState::new(config, sinks)
}

fn delivery(body: &str) -> Request<Body> {
    let mut req =
        Request::post("/membrane").header(header::CONTENT_TYPE, "application/json; charset=utf-8");
    for (k, v) in sign(
        &Scheme::new(Provider::Membrane),
        SECRET.as_bytes(),
        body.as_bytes(),
        0,
        "",
        &[],
    ) {
        req = req.header(k, v);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn the_application_gets_the_raw_body_and_its_2xx_acknowledges() {
    let app_state = Arc::new(App::default());
    let url = application(app_state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let router = app(receiver(&url, &dir));

    let resp = router.clone().oneshot(delivery(BODY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    {
        let received = app_state.received.lock().unwrap();
        assert_eq!(received.len(), 1);
        let (headers, body) = &received[0];
        assert_eq!(body.as_ref(), BODY.as_bytes());
        assert_eq!(
            headers[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        assert_eq!(headers["x-hookwarden-webhook"], "team-a/orgs");
        assert_eq!(headers["x-hookwarden-event-types"], "org-created");
        assert_eq!(headers["x-hookwarden-delivery"].len(), 64);
        // the sender's signature is not passed on: hookwarden checked it
        assert!(!headers.contains_key("x-signature"));
    }
    // a replay is acknowledged without reaching the application again
    let resp = router.clone().oneshot(delivery(BODY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app_state.received.lock().unwrap().len(), 1);
    // a forged delivery never reaches it
    let mut forged = delivery(&BODY.replace("o1", "o2"));
    *forged.body_mut() = Body::from(BODY.replace("o1", "o3"));
    assert_eq!(
        router.oneshot(forged).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app_state.received.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn no_2xx_from_the_application_means_no_2xx_to_the_sender() {
    let app_state = Arc::new(App::default());
    let url = application(app_state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let router = app(receiver(&url, &dir));

    *app_state.answer.lock().unwrap() = 500;
    let resp = router.clone().oneshot(delivery(BODY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        app_state.received.lock().unwrap().len() >= 2,
        "a 5xx is retried within the budget"
    );

    *app_state.answer.lock().unwrap() = 422;
    let before = app_state.received.lock().unwrap().len();
    let other = BODY.replace("o1", "o4");
    let resp = router.clone().oneshot(delivery(&other)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app_state.received.lock().unwrap().len(),
        before + 1,
        "a refusal is not retried"
    );

    // the application recovers: the sender's retry goes through, once
    *app_state.answer.lock().unwrap() = 200;
    let resp = router.clone().oneshot(delivery(BODY)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_application_that_is_down_gets_503_not_200() {
    // a port nothing listens on
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let resp = app(receiver(&url, &dir))
        .oneshot(delivery(BODY))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
}
