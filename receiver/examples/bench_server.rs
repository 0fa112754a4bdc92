//! The servers and the request set of the receiver benchmark (`make bench`, see bench/run.sh).
//!
//! - `bench_server bare PORT`: a bare axum server answering 200 to every POST, the baseline.
//! - `bench_server receiver PORT METRICS_PORT SECRET_FILE`: the receiver's own router and
//!   connection loop for an `opal` Webhook, with a sink that confirms at once, so what is
//!   measured is HTTP, verification, replay detection and parsing: everything but the API
//!   server.
//! - `bench_server requests N SECRET_FILE OUT`: N distinct Opal deliveries, signed now, one
//!   per line as `timestamp<TAB>signature<TAB>body`, for wrk's Lua script to replay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use futures::future::BoxFuture;
use hookwarden_receiver::config::{Limits, Provider, ReceiverConfig, SinksConfig, WebhookIdentity};
use hookwarden_receiver::secrets::read_secret_file;
use hookwarden_receiver::server::{AppState, app, metrics_app, serve_on, shutdown_signal};
use hookwarden_receiver::signature::{Scheme, sign};
use hookwarden_receiver::sink::{Delivery, RecordError, Sink, Sinks};

/// Confirms every delivery at once and counts them.
struct CountingSink(Arc<AtomicU64>);

impl Sink for CountingSink {
    fn record<'a>(
        &'a self,
        _: &'a Delivery,
        _: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(()) })
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["bare", port] => bare(port.parse().unwrap()).await,
        ["receiver", port, metrics_port, secret] => {
            receiver(port.parse().unwrap(), metrics_port.parse().unwrap(), secret).await
        }
        ["requests", n, secret, out] => requests(n.parse().unwrap(), secret, out),
        _ => {
            eprintln!(
                "usage: bench_server bare PORT | receiver PORT METRICS_PORT SECRET_FILE | requests N SECRET_FILE OUT"
            );
            std::process::exit(2);
        }
    }
}

async fn bare(port: u16) {
    let router = Router::new().route("/opal", post(|_: Bytes| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .unwrap();
}

async fn receiver(port: u16, metrics_port: u16, secret: &str) {
    let config = ReceiverConfig {
        webhook: WebhookIdentity {
            name: "bench".into(),
            namespace: "bench".into(),
            uid: "bench".into(),
        },
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        metrics_listen: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        path: "/opal".into(),
        provider: Provider::Opal,
        event_types: vec![],
        secret_files: vec![secret.into()],
        sinks: SinksConfig {
            events: true,
            ..SinksConfig::default()
        },
        generic_hmac: None,
        limits: Limits::default(),
    };
    let recorded = Arc::new(AtomicU64::new(0));
    let state = AppState::new(
        config,
        Sinks(vec![Arc::new(CountingSink(recorded.clone()))]),
    );
    let metrics = tokio::net::TcpListener::bind(state.config.metrics_listen)
        .await
        .unwrap();
    tokio::spawn(axum::serve(metrics, metrics_app(state.metrics.clone())).into_future());
    let listener = tokio::net::TcpListener::bind(state.config.listen)
        .await
        .unwrap();
    serve_on(listener, app(state), shutdown_signal()).await;
    println!("recorded {}", recorded.load(Ordering::Relaxed));
}

fn requests(n: usize, secret: &str, out: &str) {
    let secret = read_secret_file(secret.as_ref()).unwrap();
    let now = hookwarden_receiver::server::system_clock()();
    let scheme = Scheme::new(Provider::Opal);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for i in 0..n {
        let body = format!(
            r#"{{"event_ts":{now},"organization_id":"7c3c2ba1-8d1e-4b8e-9f1a-2b0f1c3d4e5f","events":[{{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"AWS_IAM_ROLE","user_id":"user{i}@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"}}]}}"#
        );
        let headers = sign(&scheme, secret.expose(), body.as_bytes(), now, "", &[]);
        let signature = &headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-opal-signature"))
            .unwrap()
            .1;
        writeln!(file, "{now}\t{signature}\t{body}").unwrap();
    }
    file.flush().unwrap();
}
