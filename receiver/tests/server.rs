//! The receiver's HTTP behaviour, driven through the router with `oneshot`; the sink is a
//! recording fake here (the real Events sink is proven on the cluster by tests/tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use hookwarden_receiver::config::{
    Limits, Provider, RateLimit, ReceiverConfig, SinksConfig, WebhookIdentity,
};
use hookwarden_receiver::delivery::{self, Delivery, RecordError, Sink};
use hookwarden_receiver::server::{AppState, BODY_STALL_TIMEOUT, BodyBudget, app};
use hookwarden_receiver::signature::{Scheme, sign};
use hookwarden_receiver::sink::Sinks;
use tower::ServiceExt;

const SECRET: &str = "opal-test-secret-0123456789abcdef";
const NOW: i64 = 1_700_000_000;
/// Connections a test server keeps open at once.
const CONNECTIONS: usize = 1024;
const BODY: &str = r#"{"event_ts":1700000000,"organization_id":"org","events":[{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"r1","access_level":"admin"},{"event_type":"USER_ADDED_TO_GROUP","group_type":"CONNECTOR_GROUP","user_id":"user@example.com","group_id":"g1"}]}"#;

#[derive(Default)]
struct Recorded {
    deliveries: Mutex<Vec<Delivery>>,
    fail: Mutex<bool>,
}

struct FakeSink(Arc<Recorded>);

impl Sink for FakeSink {
    fn record<'a>(
        &'a self,
        d: &'a Delivery,
        deadline: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<delivery::Recorded, RecordError>> {
        Box::pin(async move {
            if *self.0.fail.lock().unwrap() {
                return Err(RecordError::Unavailable("API server down".into()));
            }
            // As the real sinks: no write starts past the deadline.
            if tokio::time::Instant::now() >= deadline {
                return Err(RecordError::Unavailable("deadline passed".into()));
            }
            // Idempotent, as the real sinks are: a delivery it holds is not written again.
            let mut deliveries = self.0.deliveries.lock().unwrap();
            if deliveries.iter().any(|r| r.key == d.key) {
                return Ok(delivery::Recorded::Before);
            }
            deliveries.push(d.clone());
            Ok(delivery::Recorded::Now)
        })
    }
}

struct Harness {
    state: AppState,
    recorded: Arc<Recorded>,
    _dir: tempfile::TempDir,
    secret_file: std::path::PathBuf,
}

fn harness(provider: Provider, event_types: &[&str]) -> Harness {
    harness_with(provider, event_types, Limits::default())
}

fn harness_with(provider: Provider, event_types: &[&str], limits: Limits) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, SECRET).unwrap();
    let config = ReceiverConfig {
        webhook: WebhookIdentity {
            name: "w".into(),
            namespace: "n".into(),
            uid: "u".into(),
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        path: "/hook".into(),
        provider,
        event_types: event_types.iter().map(|s| s.to_string()).collect(),
        secret_files: vec![secret_file.clone()],
        sinks: SinksConfig::default(),
        generic_hmac: None,
        limits,
    };
    let recorded = Arc::new(Recorded::default());
    let mut state = AppState::new(
        config,
        Sinks::new(vec![Arc::new(FakeSink(recorded.clone()))]),
    );
    state.clock = Arc::new(|| NOW);
    Harness {
        state,
        recorded,
        _dir: dir,
        secret_file,
    }
}

fn signed(provider: Provider, body: &str, ts: i64) -> Request<Body> {
    let mut req = Request::builder()
        .method("POST")
        .uri("/hook")
        .header(header::CONTENT_TYPE, "application/json");
    for (k, v) in sign(
        &Scheme::new(provider),
        SECRET.as_bytes(),
        body.as_bytes(),
        ts,
        "msg_1",
        &[],
    ) {
        req = req.header(k, v);
    }
    req.body(Body::from(body.to_string())).unwrap()
}

async fn send(h: &Harness, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let resp = app(h.state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn a_replay_that_another_replica_recorded_is_answered_as_a_duplicate() {
    // Two replicas: each its own replay cache, one sink store between them.
    let a = harness(Provider::Opal, &[]);
    let mut b = harness(Provider::Opal, &[]);
    b.state.sinks = Arc::new(Sinks::new(vec![Arc::new(FakeSink(a.recorded.clone()))]));
    let (status, _, body) = send(&a, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":2,"status":"recorded"}"#)
    );
    let (status, _, body) = send(&b, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"duplicate"}"#)
    );
    assert_eq!(a.recorded.deliveries.lock().unwrap().len(), 1);
    assert!(b.recorded.deliveries.lock().unwrap().is_empty());
    // And the replica remembers it: the next replay does not reach the sink at all.
    *a.recorded.fail.lock().unwrap() = true;
    let (status, _, body) = send(&b, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"duplicate"}"#)
    );
}

#[tokio::test]
async fn a_signed_delivery_is_recorded_once() {
    let h = harness(Provider::Opal, &[]);
    let (status, _, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"events":2,"status":"recorded"}"#);
    // the same delivery again (a retry or a replay): acknowledged, not recorded again
    let (status, _, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"duplicate"}"#)
    );
    let deliveries = h.recorded.deliveries.lock().unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].events.len(), 2);
}

#[tokio::test]
async fn tampered_or_unsigned_deliveries_are_refused_and_not_recorded() {
    let h = harness(Provider::Opal, &[]);
    let mut req = signed(Provider::Opal, BODY, NOW);
    *req.body_mut() = Body::from(BODY.replace("admin", "owner"));
    let (status, headers, body) = send(&h, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert_eq!(body, r#"{"error":"signature does not match"}"#);
    let unsigned = Request::post("/hook").body(Body::from(BODY)).unwrap();
    let (status, _, body) = send(&h, unsigned).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body.contains("missing header x-opal-request-timestamp"),
        "{body}"
    );
    let stale = signed(Provider::Opal, BODY, NOW - 301);
    assert_eq!(send(&h, stale).await.0, StatusCode::UNAUTHORIZED);
    let future = signed(Provider::Opal, BODY, NOW + 301);
    assert_eq!(send(&h, future).await.0, StatusCode::UNAUTHORIZED);
    let mut malformed = signed(Provider::Opal, BODY, NOW);
    malformed
        .headers_mut()
        .insert("x-opal-signature", "zz".parse().unwrap());
    let (status, _, body) = send(&h, malformed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!body.contains(SECRET));
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn responses_never_carry_the_secret_or_the_expected_signature() {
    let h = harness(Provider::Membrane, &[]);
    let body = r#"{"type":"org-created","name":"N","orgId":"o","org":{"id":"o","name":"N"},"user":{"email":"a@b.c"}}"#;
    let expected = sign(
        &Scheme::new(Provider::Membrane),
        SECRET.as_bytes(),
        body.as_bytes(),
        NOW,
        "",
        &[],
    );
    let mut req = signed(Provider::Membrane, body, NOW);
    req.headers_mut()
        .insert("x-signature", "00".repeat(32).parse().unwrap());
    let (status, _, text) = send(&h, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        !text.contains(SECRET) && !text.contains(&expected[0].1),
        "{text}"
    );
}

#[tokio::test]
async fn http_errors_are_the_usual_ones() {
    let h = harness(Provider::Membrane, &[]);
    let get = Request::get("/hook").body(Body::empty()).unwrap();
    assert_eq!(send(&h, get).await.0, StatusCode::METHOD_NOT_ALLOWED);
    let other = Request::post("/elsewhere").body(Body::empty()).unwrap();
    assert_eq!(send(&h, other).await.0, StatusCode::NOT_FOUND);
    let huge = "x".repeat(1024 * 1024 + 1);
    let req = signed(Provider::Membrane, &huge, NOW);
    assert_eq!(send(&h, req).await.0, StatusCode::PAYLOAD_TOO_LARGE);
    // verified but not a Membrane payload: 400 with a reason, nothing recorded
    let (status, _, body) = send(
        &h,
        signed(Provider::Membrane, r#"{"type":"org-deleted"}"#, NOW),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("payload not understood"), "{body}");
    let (status, _, _) = send(&h, signed(Provider::Membrane, "", NOW)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn limits_come_from_the_config() {
    let limits = Limits {
        max_body_bytes: 200,
        replay_window_seconds: 30,
        ..Limits::default()
    };
    let h = harness_with(Provider::Opal, &[], limits);
    assert_eq!(
        send(&h, signed(Provider::Opal, BODY, NOW)).await.0,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let small = r#"{"event_ts":1700000000,"organization_id":"o","events":[{"event_type":"USER_ADDED_TO_GROUP","group_type":"G","user_id":"u","group_id":"g"}]}"#;
    assert!(small.len() < 200 && BODY.len() > 200);
    assert_eq!(
        send(&h, signed(Provider::Opal, small, NOW - 31)).await.0,
        StatusCode::UNAUTHORIZED,
        "31 s old is outside a 30 s window"
    );
    let (status, _, body) = send(&h, signed(Provider::Opal, small, NOW - 29)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn event_types_not_accepted_are_acknowledged_not_recorded() {
    let h = harness(Provider::Opal, &["USER_ADDED_TO_GROUP"]);
    let (status, _, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":1,"status":"recorded"}"#)
    );
    let only = h.recorded.deliveries.lock().unwrap()[0].events.clone();
    assert_eq!(only.len(), 1);
    assert_eq!(only[0].event_type, "USER_ADDED_TO_GROUP");
    let h = harness(Provider::Opal, &["RESOURCE_ADDED_TO_GROUP"]);
    let (status, _, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"ignored"}"#)
    );
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn nothing_is_acknowledged_that_was_not_recorded() {
    let h = harness(Provider::Opal, &[]);
    *h.recorded.fail.lock().unwrap() = true;
    let (status, headers, _) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    // when recording works again, the retry is recorded (it was not remembered as done)
    *h.recorded.fail.lock().unwrap() = false;
    let (status, _, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(h.recorded.deliveries.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_missing_secret_file_refuses_and_recovers() {
    let h = harness(Provider::Opal, &[]);
    std::fs::remove_file(&h.secret_file).unwrap();
    h.state.secrets.reload();
    assert_eq!(
        send(&h, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        send(&h, signed(Provider::Opal, BODY, NOW)).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    std::fs::write(&h.secret_file, SECRET).unwrap();
    h.state.secrets.reload();
    assert_eq!(
        send(&h, Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        send(&h, signed(Provider::Opal, BODY, NOW)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_rotated_secret_is_picked_up() {
    let h = harness(Provider::Membrane, &[]);
    let body = r#"{"type":"org-created","name":"N","orgId":"o","org":{"id":"o","name":"N"},"user":{"email":"a@b.c"}}"#;
    std::fs::write(&h.secret_file, "the-new-secret").unwrap();
    h.state.secrets.reload();
    // signed with the old secret: refused now
    assert_eq!(
        send(&h, signed(Provider::Membrane, body, NOW)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let mut req = Request::post("/hook");
    for (k, v) in sign(
        &Scheme::new(Provider::Membrane),
        b"the-new-secret",
        body.as_bytes(),
        NOW,
        "",
        &[],
    ) {
        req = req.header(k, v);
    }
    assert_eq!(
        send(&h, req.body(Body::from(body)).unwrap()).await.0,
        StatusCode::OK
    );
}

struct SlowSink(std::time::Duration);

impl Sink for SlowSink {
    fn record<'a>(
        &'a self,
        _: &'a Delivery,
        _: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<delivery::Recorded, RecordError>> {
        Box::pin(async move {
            tokio::time::sleep(self.0).await;
            Ok(delivery::Recorded::Now)
        })
    }
}

async fn raw_request(addr: std::net::SocketAddr, request: &[u8]) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(request).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn http_request(req: &Request<Body>, body: &str) -> Vec<u8> {
    let mut text = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text.into_bytes()
}

#[tokio::test]
async fn shutdown_lets_in_flight_deliveries_finish() {
    let mut h = harness(Provider::Opal, &[]);
    h.state.sinks = Arc::new(Sinks::new(vec![Arc::new(SlowSink(
        std::time::Duration::from_millis(800),
    ))]));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(h.state.clone()),
        CONNECTIONS,
        async {
            let _ = stopped.await;
        },
    ));
    let request = http_request(&signed(Provider::Opal, BODY, NOW), BODY);
    let in_flight = tokio::spawn(async move { raw_request(addr, &request).await });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    let answer = in_flight.await.unwrap().unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .unwrap()
        .unwrap();
    // and nothing new is accepted
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Serves the harness's receiver on a loopback port, as `serve` does; stops with the test.
async fn serve_until_dropped(h: &Harness) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(h.state.clone()),
        CONNECTIONS,
        std::future::pending(),
    ));
    addr
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let addr = serve_until_dropped(&harness(Provider::Opal, &[])).await;
    let started = std::time::Instant::now();
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(15),
        raw_request(addr, b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Opal-Sig"),
    )
    .await
    .expect("the server must close a connection whose headers never end");
    assert!(answer.map(|a| !a.contains("200")).unwrap_or(true));
    assert!(
        started.elapsed()
            >= hookwarden_receiver::server::HEADER_READ_TIMEOUT
                - std::time::Duration::from_millis(100)
    );
}

#[tokio::test]
async fn a_kept_alive_connection_must_send_its_next_headers_in_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = serve_until_dropped(&harness(Provider::Opal, &[])).await;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A first request, answered, and the connection kept open ...
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // ... then a second one whose headers never end: closed, without an answer.
    s.write_all(b"POST /hook HTTP/1.1\r\nHost: x\r\nX-Opal-Sig")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(15), s.read_to_end(&mut rest))
        .await
        .expect("the server must close a connection whose next headers never end")
        .ok();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let waited = started.elapsed();
    let limit = hookwarden_receiver::server::HEADER_READ_TIMEOUT;
    assert!(
        waited >= limit - std::time::Duration::from_millis(200) && waited <= limit * 2,
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn deliveries_beyond_the_concurrency_limit_are_shed_with_retry_after() {
    let limits = Limits {
        max_concurrent_deliveries: 1,
        ..Limits::default()
    };
    let mut h = harness_with(Provider::Opal, &[], limits);
    h.state.sinks = Arc::new(Sinks::new(vec![Arc::new(SlowSink(
        std::time::Duration::from_secs(3),
    ))]));
    let router = app(h.state.clone());
    let first = tokio::spawn(router.clone().oneshot(signed(Provider::Opal, BODY, NOW)));
    // let the first delivery take the only permit
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let other = BODY.replace("r1", "r2");
    let shed = router
        .clone()
        .oneshot(signed(Provider::Opal, &other, NOW))
        .await
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()[header::RETRY_AFTER], "1");
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    // the permit is back
    let again = router
        .oneshot(signed(Provider::Opal, &other, NOW))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_delivery_not_recorded_within_the_request_timeout_gets_503() {
    let limits = Limits {
        request_timeout_seconds: 2,
        ..Limits::default()
    };
    let mut h = harness_with(Provider::Opal, &[], limits);
    h.state.sinks = Arc::new(Sinks::new(vec![Arc::new(SlowSink(
        std::time::Duration::from_secs(60),
    ))]));
    let started = tokio::time::Instant::now();
    let (status, headers, body) = send(&h, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));
}

/// A chunked request to `path`, its body in pieces of `piece` bytes.
fn chunked_request(req: &Request<Body>, path: &str, body: &str, piece: usize) -> Vec<u8> {
    let mut text = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n"
    );
    for (k, v) in req.headers() {
        text.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    text.push_str("\r\n");
    for chunk in body.as_bytes().chunks(piece) {
        text.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    text.push_str("0\r\n\r\n");
    text.into_bytes()
}

#[tokio::test]
async fn a_delivery_in_many_chunks_is_read_whole_and_the_limit_still_holds() {
    let limits = Limits {
        max_body_bytes: BODY.len() as u32,
        ..Limits::default()
    };
    let h = harness_with(Provider::Opal, &[], limits);
    let addr = serve_until_dropped(&h).await;
    let req = signed(Provider::Opal, BODY, NOW);
    let answer = raw_request(addr, &chunked_request(&req, "/hook", BODY, 7))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(r#"{"events":2,"status":"recorded"}"#),
        "{answer}"
    );
    let recorded = h.recorded.deliveries.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    assert_eq!(&recorded[0].body[..], BODY.as_bytes());

    // Past the limit without a Content-Length: refused once the limit is passed.
    let big = BODY.replace("r1", "r12");
    let req = signed(Provider::Opal, &big, NOW);
    let answer = raw_request(addr, &chunked_request(&req, "/hook", &big, 64))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(h.recorded.deliveries.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn on_a_connection_other_paths_and_methods_get_the_usual_answers() {
    let h = harness(Provider::Opal, &[]);
    let addr = serve_until_dropped(&h).await;
    let ask = |request: &'static str| raw_request(addr, request.as_bytes());
    let answer = ask("GET /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("allow: post"),
        "{answer}"
    );
    for path in ["/hook/", "/hooks", "/elsewhere"] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        let answer = raw_request(addr, request.as_bytes()).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
    }
    let answer = ask("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A query string does not change the path: still the delivery path, and unsigned.
    let answer = ask(
        "POST /hook?from=test HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

/// Makes `h` a Webhook with a ConfigMap sink (its sink stays the fake): the kind whose
/// deliveries are handed to the writer (see `handoff`).
fn with_config_map_sink(h: &mut Harness) {
    let mut config = (*h.state.config).clone();
    config.sinks.config_map = Some(hookwarden_receiver::config::ConfigMapSinkConfig {
        name: "state".into(),
        mode: hookwarden_receiver::config::ConfigMapMode::State,
    });
    h.state.config = Arc::new(config);
}

/// A replica's election, driven by the test: whether it leads, the term the Lease shows,
/// and the Service's ready pods (each at 127.0.0.1); deliveries are served on `port`.
fn elected(
    me: &hookwarden_receiver::handoff::Identity,
    leading: bool,
    holder: &hookwarden_receiver::handoff::Identity,
    port: u16,
) -> Arc<hookwarden_receiver::handoff::Handoff> {
    use hookwarden_receiver::handoff::{Handoff, Term, View};
    let (leading_tx, leading) = tokio::sync::watch::channel(leading);
    let (term_tx, term) = tokio::sync::watch::channel(Some(Term {
        holder: holder.clone(),
        until: "2100-01-01T00:00:00Z".parse().unwrap(),
    }));
    let pods = std::collections::BTreeMap::from([
        (me.pod.clone(), "127.0.0.1".parse().unwrap()),
        (holder.pod.clone(), "127.0.0.1".parse().unwrap()),
    ]);
    let (pods_tx, pods) = tokio::sync::watch::channel(pods);
    // The senders live as long as the test: a closed channel keeps its last value.
    std::mem::forget((leading_tx, term_tx, pods_tx));
    Arc::new(Handoff::with(
        me.clone(),
        port,
        View {
            leading,
            term,
            pods,
        },
    ))
}

/// Two replicas of a Webhook with a ConfigMap sink, serving deliveries on `port`: the
/// writer, which holds the Lease (and is to be served on `port`), and another; and the
/// writer's identity.
fn replicas(port: u16) -> (Harness, Harness, hookwarden_receiver::handoff::Identity) {
    use hookwarden_receiver::handoff::Identity;
    let mut writer = harness(Provider::Opal, &[]);
    let mut other = harness(Provider::Opal, &[]);
    with_config_map_sink(&mut writer);
    with_config_map_sink(&mut other);
    let writer_id = Identity::new("writer").unwrap();
    let other_id = Identity::new("other").unwrap();
    writer.state.handoff = Some(elected(&writer_id, true, &writer_id, port));
    other.state.handoff = Some(elected(&other_id, false, &writer_id, port));
    (writer, other, writer_id)
}

/// The value of the series of `family` whose labels include `outcome` (or any, without one).
fn series(text: &str, family: &str, outcome: Option<&str>) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("hookwarden_receiver_{family}{{")))
        .filter(|l| outcome.is_none_or(|o| l.contains(&format!("outcome=\"{o}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_replica_hands_deliveries_to_the_writer_and_records_them_itself_when_it_cannot() {
    use hookwarden_receiver::handoff::{HANDOFF_HEADER, Identity};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (writer, other, writer_id) = replicas(port);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(writer.state.clone()),
        CONNECTIONS,
        async {
            let _ = stopped.await;
        },
    ));

    // Verified by the replica it reached, recorded by the writer, answered by the first.
    let (status, _, body) = send(&other, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":2,"status":"recorded"}"#)
    );
    assert_eq!(writer.recorded.deliveries.lock().unwrap().len(), 1);
    assert!(other.recorded.deliveries.lock().unwrap().is_empty());
    // Counted once as a delivery (where the sender was answered), and as a handoff taken.
    let (w, o) = (writer.state.metrics.encode(), other.state.metrics.encode());
    assert_eq!(series(&o, "deliveries_total", Some("recorded")), 1.0, "{o}");
    assert_eq!(series(&w, "deliveries_total", Some("recorded")), 0.0, "{w}");
    assert_eq!(
        series(&w, "handoffs_taken_total", Some("recorded")),
        1.0,
        "{w}"
    );

    // The same delivery reaching the writer directly: a duplicate, not recorded twice.
    let (status, _, body) = send(&writer, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"duplicate"}"#)
    );
    assert_eq!(writer.recorded.deliveries.lock().unwrap().len(), 1);

    // A sender cannot pass a delivery off as a handoff: without the writer's token it is
    // an ordinary delivery, answered, logged and counted as one.
    let second = BODY.replace("r1", "r2");
    let mut forged = signed(Provider::Opal, &second, NOW);
    forged
        .headers_mut()
        .insert(HANDOFF_HEADER, "1".parse().unwrap());
    let (status, _, _) = send(&writer, forged).await;
    assert_eq!(status, StatusCode::OK);
    let w = writer.state.metrics.encode();
    assert_eq!(series(&w, "deliveries_total", Some("recorded")), 1.0, "{w}");
    assert_eq!(series(&w, "handoffs_taken_total", None), 1.0, "{w}");
    // Nor is such a request handed on by the replica it reaches: it records it itself.
    let sixth = BODY.replace("r1", "r6");
    let mut claimed = signed(Provider::Opal, &sixth, NOW);
    claimed
        .headers_mut()
        .insert(HANDOFF_HEADER, "1".parse().unwrap());
    assert_eq!(send(&other, claimed).await.0, StatusCode::OK);
    assert_eq!(other.recorded.deliveries.lock().unwrap().len(), 1);
    assert_eq!(writer.recorded.deliveries.lock().unwrap().len(), 2);

    // A writer that does not record (here: its sink fails) is not taken at its word: the
    // replica records the delivery itself.
    *writer.recorded.fail.lock().unwrap() = true;
    let third = BODY.replace("r1", "r3");
    let (status, _, _) = send(&other, signed(Provider::Opal, &third, NOW)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(other.recorded.deliveries.lock().unwrap().len(), 2);
    *writer.recorded.fail.lock().unwrap() = false;

    // A replica that serves another configuration of the Webhook (a rollout under way,
    // here: it accepts fewer event types) is refused, and records as it is configured to.
    let mut rolled = harness(Provider::Opal, &["USER_ADDED_TO_RESOURCE"]);
    with_config_map_sink(&mut rolled);
    let rolled_id = Identity::new("rolled").unwrap();
    rolled.state.handoff = Some(elected(&rolled_id, false, &writer_id, port));
    let fifth = BODY.replace("r1", "r5");
    let (status, _, body) = send(&rolled, signed(Provider::Opal, &fifth, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":1,"status":"recorded"}"#)
    );
    assert_eq!(rolled.recorded.deliveries.lock().unwrap().len(), 1);
    let w = writer.state.metrics.encode();
    assert_eq!(
        series(&w, "handoffs_taken_total", Some("handoff_refused")),
        1.0,
        "{w}"
    );
    assert_eq!(writer.recorded.deliveries.lock().unwrap().len(), 2);

    // The writer gone: the replica records what it gets itself, and says so in a metric.
    stop.send(()).unwrap();
    serving.await.unwrap();
    let fourth = BODY.replace("r1", "r4");
    let (status, _, body) = send(&other, signed(Provider::Opal, &fourth, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":2,"status":"recorded"}"#)
    );
    assert_eq!(other.recorded.deliveries.lock().unwrap().len(), 3);
    assert_eq!(writer.recorded.deliveries.lock().unwrap().len(), 2);
    let o = other.state.metrics.encode();
    assert_eq!(series(&o, "handoffs_failed_total", None), 2.0, "{o}");
    assert_eq!(series(&o, "deliveries_total", Some("recorded")), 4.0, "{o}");
}

#[tokio::test]
async fn a_writer_that_takes_a_handoff_and_never_answers_costs_half_the_budget_not_the_delivery() {
    use hookwarden_receiver::handoff::Identity;
    // A 3 s request timeout: 2 s to record, of which the writer gets 1.
    let limits = Limits {
        request_timeout_seconds: 3,
        ..Limits::default()
    };
    let mut other = harness_with(Provider::Opal, &[], limits);
    with_config_map_sink(&mut other);
    // The writer's pod: it accepts connections and reads nothing, answers nothing.
    let hung = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = hung.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = hung.accept().await {
            open.push(conn);
        }
    });
    let writer_id = Identity::new("writer").unwrap();
    let other_id = Identity::new("other").unwrap();
    other.state.handoff = Some(elected(&other_id, false, &writer_id, port));
    // Recorded here, in the half of the budget left: had the replica waited for the writer
    // to the end, it would have had no time left and answered 503.
    let (status, _, body) = send(&other, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":2,"status":"recorded"}"#)
    );
    assert_eq!(other.recorded.deliveries.lock().unwrap().len(), 1);
    let o = other.state.metrics.encode();
    assert_eq!(series(&o, "handoffs_failed_total", None), 1.0, "{o}");
    held.abort();
}

/// A body that sends `first` (if any), then nothing, never ending: a sender that stalls.
fn stalling_body(first: Option<&'static str>) -> Body {
    use futures::StreamExt;
    let first = futures::stream::iter(first.map(|f| Ok::<_, std::io::Error>(Bytes::from(f))));
    Body::from_stream(first.chain(futures::stream::pending()))
}

/// `req` with its body replaced by one that never ends (and any Content-Length it says).
fn never_ending(mut req: Request<Body>, content_length: Option<usize>) -> Request<Body> {
    *req.body_mut() = stalling_body(None);
    if let Some(n) = content_length {
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, n.to_string().parse().unwrap());
    }
    req
}

/// Limits with a rate limit.
fn rate_limited(requests_per_second: u32, burst: u32) -> Limits {
    Limits {
        rate_limit: Some(RateLimit {
            requests_per_second,
            burst,
        }),
        ..Limits::default()
    }
}

/// Makes `h` a Webhook served on `path`.
fn on_path(h: &mut Harness, path: &str) {
    let mut config = (*h.state.config).clone();
    config.path = path.into();
    h.state.config = Arc::new(config);
}

/// A signed delivery to `path`, made distinct by `tag` (in place of BODY's `r1`).
fn delivery_to(path: &str, tag: &str) -> Request<Body> {
    let mut req = signed(Provider::Opal, &BODY.replace("r1", tag), NOW);
    *req.uri_mut() = path.parse().unwrap();
    req
}

/// A pool serving the Webhooks of `harnesses`, each on its path.
fn pool_of(harnesses: &[&Harness]) -> hookwarden_receiver::server::Receiver {
    use hookwarden_receiver::server::{Readiness, Receiver, Table};
    Receiver::new(Table::new(
        harnesses.iter().map(|h| Arc::new(h.state.clone())),
        Readiness::Applied,
    ))
}

/// How many deliveries to `h` were counted with `outcome`.
fn counted(h: &Harness, outcome: &str) -> f64 {
    series(&h.state.metrics.encode(), "deliveries_total", Some(outcome))
}

#[tokio::test(start_paused = true)]
async fn a_content_length_over_the_limit_is_refused_before_the_body_is_read() {
    let h = harness(Provider::Opal, &[]);
    let max = Limits::default().max_body_bytes as usize;
    // The body never comes: only its Content-Length can have refused it, and at once.
    let started = tokio::time::Instant::now();
    let req = never_ending(signed(Provider::Opal, BODY, NOW), Some(max + 1));
    let (status, _, body) = send(&h, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    assert_eq!(counted(&h, "too_large"), 1.0);
    // At the limit, it is read (and here, as the body never comes, stalls).
    let req = never_ending(signed(Provider::Opal, BODY, NOW), Some(max));
    assert_eq!(send(&h, req).await.0, StatusCode::REQUEST_TIMEOUT);
}

#[tokio::test(start_paused = true)]
async fn signature_and_timestamp_headers_are_checked_before_the_body_is_read() {
    let h = harness(Provider::Opal, &[]);
    let started = tokio::time::Instant::now();
    // Unsigned: 401 as before, without waiting for a body that never comes.
    let unsigned = never_ending(Request::post("/hook").body(Body::empty()).unwrap(), None);
    let (status, headers, body) = send(&h, unsigned).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key(header::WWW_AUTHENTICATE));
    assert!(
        body.contains("missing header x-opal-request-timestamp"),
        "{body}"
    );
    // Signed too long ago, or for later: 401.
    for ts in [NOW - 301, NOW + 301] {
        let stale = never_ending(signed(Provider::Opal, BODY, ts), None);
        let (status, _, body) = send(&h, stale).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("replay window"), "{body}");
    }
    // A signature that is not one: 400.
    let mut malformed = never_ending(signed(Provider::Opal, BODY, NOW), None);
    malformed
        .headers_mut()
        .insert("x-opal-signature", "zz".parse().unwrap());
    assert_eq!(send(&h, malformed).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(started.elapsed(), std::time::Duration::ZERO);
    assert_eq!(counted(&h, "missing_header"), 1.0);
    assert_eq!(counted(&h, "stale_timestamp"), 2.0);
    assert_eq!(counted(&h, "malformed_header"), 1.0);
    // The signature itself is still checked over the body.
    let mut tampered = signed(Provider::Opal, BODY, NOW);
    *tampered.body_mut() = Body::from(BODY.replace("admin", "owner"));
    assert_eq!(send(&h, tampered).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(counted(&h, "bad_signature"), 1.0);
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn on_a_connection_a_refusal_by_its_headers_needs_no_body() {
    let h = harness(Provider::Opal, &[]);
    let addr = serve_until_dropped(&h).await;
    // Headers that say a body comes, and no body: answered all the same.
    let too_large = format!(
        "POST /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        Limits::default().max_body_bytes + 1
    );
    let unsigned =
        "POST /hook HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n";
    for (request, status) in [
        (too_large.as_str(), "HTTP/1.1 413"),
        (unsigned, "HTTP/1.1 401"),
    ] {
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(15),
            raw_request(addr, request.as_bytes()),
        )
        .await
        .expect("answered without the body")
        .unwrap();
        assert!(answer.starts_with(status), "{answer}");
    }
}

#[tokio::test(start_paused = true)]
async fn deliveries_past_the_body_budget_are_refused_with_retry_after() {
    let mut h = harness(Provider::Opal, &[]);
    h.state.sinks = Arc::new(Sinks::new(vec![Arc::new(SlowSink(
        std::time::Duration::from_secs(3),
    ))]));
    // Room for one delivery of this size, not two.
    h.state.budget = Arc::new(BodyBudget::new(BODY.len() as u64 * 3 / 2));
    let router = app(h.state.clone());
    let first = tokio::spawn(router.clone().oneshot(signed(Provider::Opal, BODY, NOW)));
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(h.state.budget.in_use(), BODY.len() as u64);
    let other = BODY.replace("r1", "r2");
    let (status, headers, body) = send(&h, signed(Provider::Opal, &other, NOW)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(counted(&h, "body_budget"), 1.0);
    assert_eq!(counted(&h, "overloaded"), 0.0);
    // A body without a Content-Length reserves the most it may have: more than the budget.
    let mut no_length = signed(Provider::Opal, BODY, NOW);
    *no_length.body_mut() = stalling_body(Some(BODY));
    assert_eq!(send(&h, no_length).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(counted(&h, "body_budget"), 2.0);
    assert_eq!(first.await.unwrap().unwrap().status(), StatusCode::OK);
    // Given back once answered.
    assert_eq!(h.state.budget.in_use(), 0);
    let (status, _, body) = send(&h, signed(Provider::Opal, &other, NOW)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(start_paused = true)]
async fn one_webhook_of_a_pool_cannot_take_the_whole_body_budget() {
    let slow = || -> Arc<Sinks> {
        Arc::new(Sinks::new(vec![Arc::new(SlowSink(
            std::time::Duration::from_secs(3),
        ))]))
    };
    // Room for four deliveries at once in the pod (each body is one byte longer than
    // BODY: `r1` becomes `r00`, `r01`, ...).
    let size = BODY.len() as u64 + 1;
    let budget = Arc::new(BodyBudget::new(4 * size + 3));
    let mut greedy = harness(Provider::Opal, &[]);
    let mut neighbour = harness(Provider::Opal, &[]);
    for (h, path) in [(&mut greedy, "/greedy"), (&mut neighbour, "/neighbour")] {
        on_path(h, path);
        h.state.sinks = slow();
        h.state.budget = budget.clone();
    }
    let to = |path: &str, n: usize| delivery_to(path, &format!("r{n:02}"));
    let pool = pool_of(&[&greedy, &neighbour]);
    // The flooded Webhook gets two deliveries in: half the budget.
    let mut held = Vec::new();
    for n in 0..2 {
        held.push(tokio::spawn(pool.clone().oneshot(to("/greedy", n))));
    }
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    let third = pool.clone().oneshot(to("/greedy", 2)).await.unwrap();
    assert_eq!(third.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(counted(&greedy, "body_budget"), 1.0);
    // Its neighbour still gets its own in.
    let (status, _, body) = {
        let resp = pool.clone().oneshot(to("/neighbour", 3)).await.unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, (), String::from_utf8_lossy(&body).into_owned())
    };
    assert_eq!(status, StatusCode::OK, "{body}");
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    // Served alone (a dedicated receiver, or a pool of one), a Webhook may use it all.
    let alone = pool_of(&[&greedy]);
    let mut held = Vec::new();
    for n in 10..14 {
        held.push(tokio::spawn(alone.clone().oneshot(to("/greedy", n))));
    }
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert_eq!(budget.in_use(), 4 * size);
    let fifth = alone.clone().oneshot(to("/greedy", 14)).await.unwrap();
    assert_eq!(fifth.status(), StatusCode::SERVICE_UNAVAILABLE);
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn a_body_that_stalls_is_answered_408_and_its_connection_closed() {
    let h = harness(Provider::Opal, &[]);
    let mut req = signed(Provider::Opal, BODY, NOW);
    *req.body_mut() = stalling_body(Some(&BODY[..20]));
    let started = tokio::time::Instant::now();
    let (status, headers, body) = send(&h, req).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT, "{body}");
    assert_eq!(headers[header::CONNECTION], "close");
    // Long before the request timeout (8 s).
    assert_eq!(started.elapsed(), BODY_STALL_TIMEOUT);
    assert_eq!(counted(&h, "body_stalled"), 1.0);
    // Its place and its bytes are given back.
    assert_eq!(h.state.budget.in_use(), 0);
    assert_eq!(h.state.deliveries_in_flight(), 0);
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test]
async fn on_a_connection_a_stalled_body_gets_408_and_the_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness(Provider::Opal, &[]);
    let addr = serve_until_dropped(&h).await;
    let req = signed(Provider::Opal, BODY, NOW);
    // A request that would keep its connection, with half its body.
    let whole = String::from_utf8(http_request(&req, BODY))
        .unwrap()
        .replace("Connection: close\r\n", "");
    let text = &whole[..whole.len() - BODY.len() / 2];
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(15),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("the server must answer and close a connection whose body stalls")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(h.recorded.deliveries.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn deliveries_past_the_rate_limit_get_429_with_retry_after() {
    let h = harness_with(Provider::Opal, &[], rate_limited(1, 2));
    let body = |n: usize| BODY.replace("r1", &format!("r{n}"));
    // Refused by their headers: no token spent.
    for _ in 0..5 {
        let unsigned = Request::post("/hook").body(Body::from(BODY)).unwrap();
        assert_eq!(send(&h, unsigned).await.0, StatusCode::UNAUTHORIZED);
    }
    for n in 0..2 {
        assert_eq!(
            send(&h, signed(Provider::Opal, &body(n), NOW)).await.0,
            StatusCode::OK
        );
    }
    let (status, headers, answer) = send(&h, signed(Provider::Opal, &body(2), NOW)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{answer}");
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(counted(&h, "rate_limited"), 1.0);
    assert_eq!(h.recorded.deliveries.lock().unwrap().len(), 2);
    // A token a second.
    tokio::time::advance(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        send(&h, signed(Provider::Opal, &body(2), NOW)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        send(&h, signed(Provider::Opal, &body(3), NOW)).await.0,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(counted(&h, "rate_limited"), 2.0);
}

#[tokio::test(start_paused = true)]
async fn each_webhook_has_a_rate_limit_of_its_own() {
    let a = harness_with(Provider::Opal, &[], rate_limited(1, 1));
    let mut b = harness_with(Provider::Opal, &[], rate_limited(1, 1));
    on_path(&mut b, "/other");
    let pool = pool_of(&[&a, &b]);
    let to = |path: &str, n: usize| delivery_to(path, &format!("r{n}"));
    let status = |resp: axum::http::Response<Body>| resp.status();
    assert_eq!(
        status(pool.clone().oneshot(to("/hook", 1)).await.unwrap()),
        StatusCode::OK
    );
    assert_eq!(
        status(pool.clone().oneshot(to("/hook", 2)).await.unwrap()),
        StatusCode::TOO_MANY_REQUESTS
    );
    // The other Webhook's bucket is full still.
    assert_eq!(
        status(pool.clone().oneshot(to("/other", 3)).await.unwrap()),
        StatusCode::OK
    );
}

#[tokio::test]
async fn deliveries_from_outside_the_source_ranges_are_refused() {
    let ranges = |source_ranges: &[&str], trusted_proxies: &[&str]| Limits {
        source_ranges: source_ranges.iter().map(|r| r.to_string()).collect(),
        trusted_proxies: trusted_proxies.iter().map(|r| r.to_string()).collect(),
        ..Limits::default()
    };
    let deliver = |addr, body: &str, forwarded: Option<&str>| {
        let mut req = signed(Provider::Opal, body, NOW);
        if let Some(f) = forwarded {
            req.headers_mut()
                .insert("x-forwarded-for", f.parse().unwrap());
        }
        let request = http_request(&req, body);
        async move { raw_request(addr, &request).await.unwrap() }
    };
    let other = BODY.replace("r1", "r2");

    // The test connects from 127.0.0.1.
    let inside = harness_with(Provider::Opal, &[], ranges(&["127.0.0.0/8"], &[]));
    let addr = serve_until_dropped(&inside).await;
    let answer = deliver(addr, BODY, None).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let outside = harness_with(Provider::Opal, &[], ranges(&["192.30.252.0/22"], &[]));
    let addr = serve_until_dropped(&outside).await;
    let answer = deliver(addr, BODY, None).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // A sender's X-Forwarded-For is not believed without trusted proxies.
    let answer = deliver(addr, BODY, Some("192.30.252.10")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(outside.recorded.deliveries.lock().unwrap().is_empty());
    assert_eq!(counted(&outside, "source_refused"), 2.0);
    // Nor is a request without a connection's address: its source is unknown.
    assert_eq!(
        send(&outside, signed(Provider::Opal, BODY, NOW)).await.0,
        StatusCode::FORBIDDEN
    );

    // Behind a trusted proxy (here, the test's own address), the source it forwards.
    let proxied = harness_with(
        Provider::Opal,
        &[],
        ranges(&["192.30.252.0/22"], &["127.0.0.1"]),
    );
    let addr = serve_until_dropped(&proxied).await;
    let answer = deliver(addr, BODY, Some("192.30.252.10")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = deliver(addr, &other, Some("192.30.252.10, 203.0.113.9")).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let answer = deliver(addr, &other, None).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(proxied.recorded.deliveries.lock().unwrap().len(), 1);
    assert_eq!(counted(&proxied, "source_refused"), 2.0);

    // Without ranges, anyone, known or not.
    let h = harness(Provider::Opal, &[]);
    assert_eq!(
        send(&h, signed(Provider::Opal, BODY, NOW)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_handoff_the_writer_refuses_is_counted_and_logged_as_a_refusal_there() {
    use hookwarden_receiver::handoff::Identity;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (writer, other, writer_id) = replicas(port);
    // The writer has another secret (a rotation that reached it first): it cannot verify
    // what the other replica verified.
    std::fs::write(&writer.secret_file, "the-next-secret-0123456789abcdef").unwrap();
    writer.state.secrets.reload();
    tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(writer.state.clone()),
        CONNECTIONS,
        std::future::pending(),
    ));

    // Recorded by the replica that got it, after the writer refused it.
    let (status, _, body) = send(&other, signed(Provider::Opal, BODY, NOW)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"events":2,"status":"recorded"}"#)
    );
    assert_eq!(other.recorded.deliveries.lock().unwrap().len(), 1);
    assert!(writer.recorded.deliveries.lock().unwrap().is_empty());
    // The writer counts the refusal as a delivery, as well as a handoff; the replica that
    // answered counts it once, recorded.
    expect_counts(
        &writer,
        &[
            ("deliveries_total", "bad_signature", 1.0),
            ("handoffs_taken_total", "bad_signature", 1.0),
            ("deliveries_total", "recorded", 0.0),
        ],
    );
    expect_counts(
        &other,
        &[
            ("deliveries_total", "recorded", 1.0),
            ("deliveries_total", "bad_signature", 0.0),
            ("handoffs_failed_total", "", 1.0),
        ],
    );

    // A handoff refused for another configuration: counted there too.
    let mut rolled = harness(Provider::Opal, &["USER_ADDED_TO_RESOURCE"]);
    with_config_map_sink(&mut rolled);
    let rolled_id = Identity::new("rolled").unwrap();
    rolled.state.handoff = Some(elected(&rolled_id, false, &writer_id, port));
    let second = BODY.replace("r1", "r2");
    assert_eq!(
        send(&rolled, signed(Provider::Opal, &second, NOW)).await.0,
        StatusCode::OK
    );
    expect_counts(
        &writer,
        &[
            ("deliveries_total", "handoff_refused", 1.0),
            ("handoffs_taken_total", "handoff_refused", 1.0),
        ],
    );
}

/// Asserts the value of each (family, outcome or "" for any, value) in `h`'s metrics.
fn expect_counts(h: &Harness, counts: &[(&str, &str, f64)]) {
    let text = h.state.metrics.encode();
    for (family, outcome, n) in counts {
        let outcome = Some(*outcome).filter(|o| !o.is_empty());
        assert_eq!(
            series(&text, family, outcome),
            *n,
            "{family} {outcome:?}: {text}"
        );
    }
}

/// Past its connection limit a receiver closes a new connection at once, before a byte of
/// it is read: no number of clients holds more than that many header buffers. Those it
/// holds stay open.
#[tokio::test]
async fn connections_past_the_limit_are_closed_at_once() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = harness(Provider::Opal, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(h.state.clone()),
        2,
        std::future::pending(),
    ));
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Half a request line: the connection waits for the rest (up to the header timeout).
        c.write_all(b"POST /opal HTTP/1.1\r\n").await.unwrap();
        held.push(c);
    }
    // Let the server take both before the third arrives.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(std::time::Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("the connection past the limit was kept open");
    assert!(matches!(read, Ok(0) | Err(_)), "answered: {read:?}");
    // The two it holds are still open: each gets its answer once its request is complete.
    let first = &mut held[0];
    first
        .write_all(b"Host: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
}
