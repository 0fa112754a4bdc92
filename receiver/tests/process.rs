//! The `hookwarden-receiver run` process as a pod runs it, with JSON logs on stdout: under a
//! burst of concurrent deliveries each is forwarded and logged once, no line carries the
//! secret, a forwarded delivery's line carries the trace id the application got, and SIGTERM
//! ends the process cleanly once what is in flight is answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hookwarden_receiver::client::post as send;
use hookwarden_receiver::config::Provider;
use hookwarden_receiver::server::{REFUSAL_WINDOW, REFUSALS_LOGGED_EACH};
use hookwarden_receiver::signature::{Scheme, sign};

const SECRET: &str = "membrane-process-secret-0123456789";
/// Sent as fast as the receiver answers them.
const DELIVERIES: usize = 300;
const CONCURRENCY: usize = 16;

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn membrane_body(i: usize) -> String {
    format!(
        r#"{{"type":"org-created","name":"N{i}","orgId":"o{i}","org":{{"id":"o{i}","name":"N{i}"}},"user":{{"email":"a@b.c"}}}}"#
    )
}

/// The receiver process, forwarding to `app` at `/hooks`, with JSON logs on stdout.
struct Receiver {
    child: std::process::Child,
    url: String,
    /// stdout and stderr, read while it runs (a full pipe would stall its logging).
    output: [std::thread::JoinHandle<String>; 2],
    _dir: tempfile::TempDir,
}

fn read_all(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        from.read_to_string(&mut text).unwrap();
        text
    })
}

impl Receiver {
    async fn start(app_addr: std::net::SocketAddr) -> Receiver {
        Receiver::start_with(app_addr, &[], &[]).await
    }

    /// With more arguments of `run`, and more environment variables.
    async fn start_with(
        app_addr: std::net::SocketAddr,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), SECRET).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let config = format!(
            r#"webhook: {{name: orgs, namespace: team-a, uid: u}}
listen: 127.0.0.1:{port}
metricsListen: 127.0.0.1:{metrics_port}
path: /membrane
provider: membrane
secretFiles: [{secret}]
sinks: {{forward: {{url: "http://{app_addr}/hooks"}}}}
"#,
            secret = dir.path().join("secret").display()
        );
        std::fs::write(dir.path().join("config.yaml"), config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookwarden-receiver"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(dir.path().join("config.yaml"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = [
            read_all(child.stdout.take().unwrap()),
            read_all(child.stderr.take().unwrap()),
        ];

        let mut up = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(up, "the receiver did not start listening");

        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}/membrane"),
            output,
            _dir: dir,
        }
    }

    /// SIGTERM, then what it printed: stdout, stderr, and stdout's JSON lines.
    async fn stop(self) -> (String, String, Vec<serde_json::Value>) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        let [out, err] = self.output;
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        assert!(status.success(), "{status:?}: {stderr}");
        let lines = stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        (stdout, stderr, lines)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_is_logged_once_and_the_log_is_flushed_on_sigterm() {
    // The application the receiver forwards to.
    let forwarded = Arc::new(AtomicUsize::new(0));
    let app = {
        let forwarded = forwarded.clone();
        axum::Router::new().route(
            "/hooks",
            post(move || {
                forwarded.fetch_add(1, Ordering::Relaxed);
                async { StatusCode::OK }
            }),
        )
    };
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(app_listener, app).into_future());

    let receiver = Receiver::start(app_addr).await;
    let url = receiver.url.clone();

    let scheme = Scheme::new(Provider::Membrane);
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, url, scheme) = (next.clone(), url.clone(), scheme.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= DELIVERIES {
                        return;
                    }
                    let body = membrane_body(i);
                    let headers = sign(&scheme, SECRET.as_bytes(), body.as_bytes(), 0, "", &[]);
                    let answer = send(&url, &headers, body.into_bytes()).await.unwrap();
                    assert_eq!(answer.status, 200, "delivery {i}: {}", answer.body);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(forwarded.load(Ordering::Relaxed), DELIVERIES);

    let (stdout, stderr, lines) = receiver.stop().await;
    let recorded = lines
        .iter()
        .filter(|l| l["message"] == "delivery recorded")
        .count();
    assert_eq!(recorded, DELIVERIES, "one line per delivery");
    assert!(
        lines
            .iter()
            .all(|l| l["webhook"] == "orgs" || l["webhook"].is_null())
    );
    // Logged after SIGTERM, as the process ends.
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "shutting down: finishing in-flight requests"),
        "{stdout}"
    );
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
}

/// The log line of a forwarded delivery carries, as `trace_id`, the trace id of the
/// `traceparent` the application got: the sender's when it sent one, else a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_line_of_a_forwarded_delivery_carries_the_trace_id_the_application_got() {
    const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    // The trace id of every traceparent the application got.
    let got = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = {
        let got = got.clone();
        axum::Router::new().route(
            "/hooks",
            post(move |headers: HeaderMap| {
                let traceparent = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let trace = traceparent.split('-').nth(1).unwrap_or_default();
                got.lock().unwrap().push(trace.to_string());
                async { StatusCode::OK }
            }),
        )
    };
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(app_listener, app).into_future());
    let receiver = Receiver::start(app_addr).await;

    let scheme = Scheme::new(Provider::Membrane);
    for (i, traceparent) in [Some(format!("00-{SENDER_TRACE}-00f067aa0ba902b7-01")), None]
        .into_iter()
        .enumerate()
    {
        let body = membrane_body(i);
        let mut headers = sign(&scheme, SECRET.as_bytes(), body.as_bytes(), 0, "", &[]);
        headers.extend(traceparent.map(|t| ("traceparent".to_string(), t)));
        let answer = send(&receiver.url, &headers, body.into_bytes())
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "delivery {i}: {}", answer.body);
    }

    let (stdout, _, lines) = receiver.stop().await;
    let logged: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "delivery recorded")
        .map(|l| l["trace_id"].as_str().unwrap_or("none"))
        .collect();
    let got = got.lock().unwrap().clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], SENDER_TRACE, "the sender's trace is continued");
    assert_eq!(got[1].len(), 32, "a new trace: {got:?}");
    assert_ne!(got[1], SENDER_TRACE);
    assert_eq!(logged, got, "{stdout}");
}

/// A flood of forged deliveries costs a bounded number of log lines: the first few refusals
/// each, then one summary per window (here the last, at SIGTERM) that counts the rest; a
/// valid delivery in the middle of it keeps its line, and the metrics count every refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_deliveries_costs_a_few_log_lines() {
    const FORGED: usize = 10_000;
    let app = axum::Router::new().route("/hooks", post(|| async { StatusCode::OK }));
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(app_listener, app).into_future());
    let receiver = Receiver::start(app_addr).await;
    let started = std::time::Instant::now();

    let scheme = Scheme::new(Provider::Membrane);
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (next, url, scheme) = (next.clone(), receiver.url.clone(), scheme.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > FORGED {
                        return;
                    }
                    let body = membrane_body(i);
                    // one valid delivery halfway; the rest signed with the wrong secret
                    let secret = if i == FORGED / 2 {
                        SECRET
                    } else {
                        "not-the-secret"
                    };
                    let headers = sign(&scheme, secret.as_bytes(), body.as_bytes(), 0, "", &[]);
                    let answer = send(&url, &headers, body.into_bytes()).await.unwrap();
                    let expected = if i == FORGED / 2 { 200 } else { 401 };
                    assert_eq!(answer.status, expected, "delivery {i}: {}", answer.body);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let (stdout, _, lines) = receiver.stop().await;
    // Each window of REFUSAL_WINDOW logs a few on their own, then sums up the rest: on a
    // slow machine the flood spans more windows (one, where it is fast).
    let windows = (started.elapsed().as_secs() / REFUSAL_WINDOW.as_secs()) as usize + 2;
    let each = REFUSALS_LOGGED_EACH as usize;
    let with = |message: &str| lines.iter().filter(|l| l["message"] == message).count();
    assert_eq!(with("delivery recorded"), 1, "{stdout}");
    let refused_lines = with("delivery refused");
    assert!(
        (1..=each * windows).contains(&refused_lines),
        "{refused_lines} lines of their own in at most {windows} windows"
    );
    let summaries: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["message"] == "deliveries not recorded and not logged one by one in the last window"
        })
        .collect();
    let summed: u64 = summaries.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    assert_eq!(summed as usize + refused_lines, FORGED, "{stdout}");
    assert!(
        summaries.iter().all(|l| l["by_outcome"]
            .as_str()
            .unwrap()
            .starts_with("bad_signature=")),
        "{summaries:?}"
    );
    assert!(summaries.len() <= windows, "{} summaries", summaries.len());
    assert!(
        lines.len() <= 10 + (each + 1) * windows,
        "{} lines for {FORGED} refusals",
        lines.len()
    );
}

/// The body budget comes from the container's memory limit (a quarter of it), or from
/// `--body-budget-bytes`, which wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_budget_is_a_quarter_of_the_memory_limit_unless_set() {
    let app = axum::Router::new().route("/hooks", post(|| async { StatusCode::OK }));
    let app_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_addr = app_listener.local_addr().unwrap();
    tokio::spawn(axum::serve(app_listener, app).into_future());
    let body = membrane_body(1);
    let deliver = |url: String| {
        let body = body.clone();
        async move {
            let scheme = Scheme::new(Provider::Membrane);
            let headers = sign(&scheme, SECRET.as_bytes(), body.as_bytes(), 0, "", &[]);
            send(&url, &headers, body.into_bytes()).await.unwrap()
        }
    };
    // A memory limit whose quarter is one byte short of the body.
    let limit = (
        "HOOKWARDEN_MEMORY_LIMIT_BYTES",
        (4 * (body.len() - 1)).to_string(),
    );
    let short = Receiver::start_with(app_addr, &[], std::slice::from_ref(&limit)).await;
    let answer = deliver(short.url.clone()).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert!(
        answer.body.contains("body bytes in flight"),
        "{}",
        answer.body
    );
    short.stop().await;
    // The budget given wins over the memory limit.
    let exact = body.len().to_string();
    let enough = Receiver::start_with(app_addr, &["--body-budget-bytes", &exact], &[limit]).await;
    let answer = deliver(enough.url.clone()).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    enough.stop().await;
}
