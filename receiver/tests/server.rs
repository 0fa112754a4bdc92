//! The receiver's HTTP behaviour, driven through the router with `oneshot`; the sink is a
//! recording fake here (the real Events sink is proven on the cluster by tests/tests).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::future::BoxFuture;
use hookwarden_receiver::config::{Limits, Provider, ReceiverConfig, SinksConfig, WebhookIdentity};
use hookwarden_receiver::delivery::{self, Delivery, RecordError, Sink};
use hookwarden_receiver::server::{AppState, app};
use hookwarden_receiver::signature::{Scheme, sign};
use hookwarden_receiver::sink::Sinks;
use tower::ServiceExt;

const SECRET: &str = "opal-test-secret-0123456789abcdef";
const NOW: i64 = 1_700_000_000;
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
    let mut writer = harness(Provider::Opal, &[]);
    let mut other = harness(Provider::Opal, &[]);
    with_config_map_sink(&mut writer);
    with_config_map_sink(&mut other);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let writer_id = Identity::new("writer").unwrap();
    let other_id = Identity::new("other").unwrap();
    writer.state.handoff = Some(elected(&writer_id, true, &writer_id, port));
    other.state.handoff = Some(elected(&other_id, false, &writer_id, port));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(hookwarden_receiver::server::serve_on(
        listener,
        app(writer.state.clone()),
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
