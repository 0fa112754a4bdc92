//! The `forward` sink against a real HTTP application on loopback: the body arrives byte for
//! byte with what hookwarden checked and the delivery's W3C trace context, and only the
//! application's 2xx acknowledges.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
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

/// `delivery(body)` with `extra` headers besides the signature's.
fn delivery_with(body: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut req = delivery(body);
    for (name, value) in extra {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    req
}

/// The spec's example: a sender's trace, not sampled (flags `00`, where a trace the receiver
/// starts is `01`).
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_PARENT: &str = "00f067aa0ba902b7";
const SENDER_TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// The `traceparent` the application got, as (trace-id, parent-id, flags), after checking
/// it is one valid version-00 value (by hand here, not with the receiver's parser).
fn traceparent(headers: &HeaderMap) -> (String, String, String) {
    let values: Vec<_> = headers.get_all("traceparent").iter().collect();
    assert_eq!(values.len(), 1, "{headers:?}");
    let value = values[0].to_str().unwrap();
    let fields: Vec<&str> = value.split('-').collect();
    let hex = |f: &str, len: usize| {
        f.len() == len && f.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        fields.len() == 4
            && fields[0] == "00"
            && hex(fields[1], 32)
            && hex(fields[2], 16)
            && hex(fields[3], 2)
            && fields[1] != "0".repeat(32)
            && fields[2] != "0".repeat(16),
        "not a valid traceparent: {value}"
    );
    (fields[1].into(), fields[2].into(), fields[3].into())
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
    {
        let received = app_state.received.lock().unwrap();
        assert!(received.len() >= 2, "a 5xx is retried within the budget");
        // the retries are one delivery: each carries the same traceparent
        let first = traceparent(&received[0].0);
        assert!(received.iter().all(|(h, _)| traceparent(h) == first));
    }

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

/// A sender's valid `traceparent` is passed on: the application gets the same trace id,
/// parent-id (the sender's span: the receiver records none) and flags, and the sender's
/// `tracestate`.
#[tokio::test]
async fn the_application_continues_the_senders_trace() {
    let app_state = Arc::new(App::default());
    let url = application(app_state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let router = app(receiver(&url, &dir));

    let sent = format!("00-{SENDER_TRACE}-{SENDER_PARENT}-00");
    let req = delivery_with(
        BODY,
        &[("traceparent", &sent), ("tracestate", SENDER_TRACESTATE)],
    );
    assert_eq!(router.clone().oneshot(req).await.unwrap().status(), 200);
    // sampled by the sender: the flag is kept as well
    let sampled = format!("00-{SENDER_TRACE}-{SENDER_PARENT}-01");
    let req = delivery_with(&BODY.replace("o1", "t2"), &[("TraceParent", &sampled)]);
    assert_eq!(router.oneshot(req).await.unwrap().status(), 200);

    let received = app_state.received.lock().unwrap();
    assert_eq!(received.len(), 2);
    let (trace, parent, flags) = traceparent(&received[0].0);
    assert_eq!(trace, SENDER_TRACE);
    assert_eq!(parent, SENDER_PARENT, "the sender's span is the parent");
    assert_eq!(flags, "00");
    assert_eq!(received[0].0["tracestate"], SENDER_TRACESTATE);

    let (trace, parent, flags) = traceparent(&received[1].0);
    assert_eq!(
        (trace.as_str(), parent.as_str(), flags.as_str()),
        (SENDER_TRACE, SENDER_PARENT, "01")
    );
    assert!(!received[1].0.contains_key("tracestate"));
}

/// Without a valid `traceparent` each delivery starts a new trace (sampled); an invalid
/// one's trace id is not used, nor is the `tracestate` that came with it.
#[tokio::test]
async fn without_a_valid_traceparent_the_application_gets_a_new_trace() {
    let app_state = Arc::new(App::default());
    let url = application(app_state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let router = app(receiver(&url, &dir));

    let none = delivery(BODY);
    // uppercase hex is not a valid trace id
    let invalid = format!("00-{}-{SENDER_PARENT}-01", SENDER_TRACE.to_uppercase());
    let invalid = delivery_with(
        &BODY.replace("o1", "t3"),
        &[("traceparent", &invalid), ("tracestate", SENDER_TRACESTATE)],
    );
    // all-zero parent-id, then two traceparents (which one?)
    let zero = format!("00-{SENDER_TRACE}-0000000000000000-01");
    let zero = delivery_with(&BODY.replace("o1", "t4"), &[("traceparent", &zero)]);
    let valid = format!("00-{SENDER_TRACE}-{SENDER_PARENT}-01");
    let twice = delivery_with(
        &BODY.replace("o1", "t5"),
        &[("traceparent", &valid), ("traceparent", &valid)],
    );
    for req in [none, invalid, zero, twice] {
        assert_eq!(router.clone().oneshot(req).await.unwrap().status(), 200);
    }

    let received = app_state.received.lock().unwrap();
    assert_eq!(received.len(), 4);
    let mut traces = std::collections::HashSet::new();
    for (headers, _) in received.iter() {
        let (trace, _, flags) = traceparent(headers);
        assert_ne!(trace.to_lowercase(), SENDER_TRACE, "{headers:?}");
        assert_eq!(flags, "01", "a new trace is sampled");
        assert!(!headers.contains_key("tracestate"), "{headers:?}");
        traces.insert(trace);
    }
    assert_eq!(traces.len(), 4, "each delivery starts a trace of its own");
}
