//! The `hookwarden-receiver run` process as a pod runs it, with JSON logs on stdout: under a
//! burst of concurrent deliveries each is forwarded and logged once, no line carries the
//! secret, and SIGTERM ends the process cleanly once what is in flight is answered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::StatusCode;
use axum::routing::post;
use hookwarden_receiver::client::post as send;
use hookwarden_receiver::config::Provider;
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
    let child = Command::new(env!("CARGO_BIN_EXE_hookwarden-receiver"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(dir.path().join("config.yaml"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();

    let url = format!("http://127.0.0.1:{port}/membrane");
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

    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
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
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET));
}
