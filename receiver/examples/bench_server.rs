//! The servers and the request set of the receiver benchmark (`make bench`, see bench/run.sh).
//!
//! - `bench_server bare PORT`: a bare axum server answering 200 to every POST, the baseline.
//! - `bench_server receiver PORT METRICS_PORT SECRET_FILE`: the receiver's own router and
//!   connection loop for an `opal` Webhook, with a sink that confirms at once, so what is
//!   measured is HTTP, verification, replay detection and parsing: everything but the API
//!   server. With `BENCH_LOG_FORMAT=json` (or `text`) it logs to stdout as
//!   `hookwarden-receiver run` does, one line per delivery.
//! - `bench_server pool PORT METRICS_PORT CONFIG SECRETS_DIR`: the receiver pool
//!   (`hookwarden-receiver pool --config CONFIG --secrets-dir SECRETS_DIR`, as `pool::run`
//!   runs it), each Webhook with the counting sink; logs as `receiver` does.
//! - `bench_server pool-setup N PORT METRICS_PORT DIR`: a pool of N Opal Webhooks on paths
//!   `/opal-<i>`, each with a secret of its own: `DIR/pool.yaml` and `DIR/secrets/`.
//! - `bench_server pool-requests N DIR OUT`: N distinct Opal deliveries spread over the
//!   pool's Webhooks in turn, each signed with its Webhook's secret, one per line as
//!   `path<TAB>timestamp<TAB>signature<TAB>body`.
//! - `bench_server requests N SECRET_FILE OUT [membrane]`: N distinct Opal deliveries (or
//!   Membrane `org-created` ones), signed now, one per line as
//!   `timestamp<TAB>signature<TAB>body`, for wrk's Lua script to replay.
//! - `bench_server organizations N`: a Membrane state document (`membrane.json`) of N
//!   organisations, to start the `state` sink's benchmark from.
//! - `bench_server stages N`: what each step of a delivery costs in-process, without the
//!   network, in nanoseconds per delivery over N distinct deliveries: where the receiver's
//!   time goes beyond a bare server's.
//! - `bench_server pool-stages N WEBHOOKS`: the in-process cost of a delivery, request to
//!   response, to a receiver of one Webhook and to a pool of WEBHOOKS built as `pool::run`
//!   builds its table (metrics of every Webhook in the pool's families), deliveries spread
//!   over the pool's Webhooks in turn; three rounds of N each, alternating. With
//!   `STAGES_LOGS=json` every delivery is logged as in a pod, to a file.
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
use hookwarden_receiver::delivery::{Delivery, RecordError, Recorded, Sink};
use hookwarden_receiver::secrets::read_secret_file;
use hookwarden_receiver::server::{AppState, app, metrics_app, serve_on, shutdown_signal};
use hookwarden_receiver::signature::{Scheme, sign};
use hookwarden_receiver::sink::Sinks;
use hookwarden_receiver::telemetry::{self, LogFormat};

/// Confirms every delivery at once and counts them.
struct CountingSink(Arc<AtomicU64>);

impl Sink for CountingSink {
    fn record<'a>(
        &'a self,
        _: &'a Delivery,
        _: tokio::time::Instant,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Box::pin(async { Ok(Recorded::Now) })
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
        ["requests", n, secret, out] => requests(n.parse().unwrap(), secret, out, Provider::Opal),
        ["requests", n, secret, out, "membrane"] => {
            requests(n.parse().unwrap(), secret, out, Provider::Membrane)
        }
        ["pool", port, metrics_port, config, secrets] => {
            pool(
                port.parse().unwrap(),
                metrics_port.parse().unwrap(),
                config,
                secrets,
            )
            .await
        }
        ["pool-setup", n, port, metrics_port, dir] => pool_setup(
            n.parse().unwrap(),
            port.parse().unwrap(),
            metrics_port.parse().unwrap(),
            dir,
        ),
        ["pool-requests", n, dir, out] => pool_requests(n.parse().unwrap(), dir, out),
        ["organizations", n] => organizations(n.parse().unwrap()),
        ["stages", n] => stages(n.parse().unwrap()).await,
        ["pool-stages", n, webhooks] => {
            pool_stages(n.parse().unwrap(), webhooks.parse().unwrap()).await
        }
        _ => {
            eprintln!(
                "usage: bench_server bare PORT | receiver PORT METRICS_PORT SECRET_FILE | pool PORT METRICS_PORT CONFIG SECRETS_DIR | pool-setup N PORT METRICS_PORT DIR | pool-requests N DIR OUT | requests N SECRET_FILE OUT [membrane] | organizations N | stages N | pool-stages N WEBHOOKS"
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
    let _logs = init_logs();
    let config = bench_config(port, metrics_port, secret);
    let recorded = Arc::new(AtomicU64::new(0));
    let state = AppState::new(
        config,
        Sinks::new(vec![Arc::new(CountingSink(recorded.clone()))]),
    );
    let metrics = tokio::net::TcpListener::bind(state.config.metrics_listen)
        .await
        .unwrap();
    tokio::spawn(axum::serve(metrics, metrics_app(state.metrics.clone())).into_future());
    let listener = tokio::net::TcpListener::bind(state.config.listen)
        .await
        .unwrap();
    serve_on(listener, app(state), 1 << 16, shutdown_signal()).await;
    println!("recorded {}", recorded.load(Ordering::Relaxed));
}

fn init_logs() -> Option<telemetry::LogGuard> {
    match std::env::var("BENCH_LOG_FORMAT").as_deref() {
        Ok("json") => Some(telemetry::init(LogFormat::Json, "info")),
        Ok("text") => Some(telemetry::init(LogFormat::Text, "info")),
        _ => None,
    }
}

async fn pool(port: u16, metrics_port: u16, config: &str, secrets: &str) {
    use hookwarden_receiver::pool::{PoolOptions, Source};
    let _logs = init_logs();
    let recorded = Arc::new(AtomicU64::new(0));
    let sinks: hookwarden_receiver::pool::SinkFactory = {
        let recorded = recorded.clone();
        Arc::new(move |_: &ReceiverConfig| {
            Sinks::new(vec![Arc::new(CountingSink(recorded.clone()))])
        })
    };
    let options = PoolOptions {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        metrics_listen: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        sinks: Some(sinks),
        ..PoolOptions::new(Source::Files {
            config: config.into(),
            secrets_dir: secrets.into(),
            served_file: None,
        })
    };
    hookwarden_receiver::pool::run(options, shutdown_signal())
        .await
        .unwrap();
    println!("recorded {}", recorded.load(Ordering::Relaxed));
}

/// The secret of the pool's `i`th Webhook.
fn pool_secret(i: usize) -> String {
    format!("pool-benchmark-secret-{i:04}-of-32-bytes")
}

fn pool_setup(n: usize, port: u16, metrics_port: u16, dir: &str) {
    use hookwarden_api::pool_config::{PoolConfig, PoolIdentity, PoolWebhook};
    use hookwarden_api::webhook::SecretKeyRef;
    let dir = std::path::Path::new(dir);
    let webhooks = (0..n)
        .map(|i| {
            let secret_dir = dir.join("secrets").join(format!("opal-{i}"));
            std::fs::create_dir_all(&secret_dir).unwrap();
            std::fs::write(secret_dir.join("secret"), pool_secret(i)).unwrap();
            PoolWebhook {
                name: format!("opal-{i}"),
                uid: format!("uid-{i}"),
                generation: 1,
                path: format!("/opal-{i}"),
                provider: Provider::Opal,
                event_types: vec![],
                secrets: vec![SecretKeyRef {
                    name: format!("opal-{i}"),
                    key: "secret".into(),
                }],
                sinks: SinksConfig {
                    events: true,
                    ..SinksConfig::default()
                },
                generic_hmac: None,
                limits: Limits::default(),
            }
        })
        .collect();
    let config = PoolConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        metrics_listen: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        webhooks,
        ..PoolConfig::new(PoolIdentity {
            name: "bench".into(),
            namespace: "bench".into(),
        })
    };
    std::fs::write(dir.join("pool.yaml"), config.to_yaml().unwrap()).unwrap();
}

fn pool_requests(n: usize, dir: &str, out: &str) {
    let text = std::fs::read_to_string(std::path::Path::new(dir).join("pool.yaml")).unwrap();
    let webhooks = hookwarden_api::pool_config::PoolConfig::from_yaml(&text)
        .unwrap()
        .webhooks
        .len();
    let now = hookwarden_receiver::clock::system_clock()();
    let scheme = Scheme::new(Provider::Opal);
    let secrets: Vec<String> = (0..webhooks).map(pool_secret).collect();
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for i in 0..n {
        let w = i % webhooks;
        let body = opal_body(i, now);
        let headers = sign(
            &scheme,
            secrets[w].as_bytes(),
            body.as_bytes(),
            now,
            "",
            &[],
        );
        let signature = &headers
            .iter()
            .find(|(k, _)| k.ends_with("signature") || k.ends_with("Signature"))
            .unwrap()
            .1;
        writeln!(file, "/opal-{w}\t{now}\t{signature}\t{body}").unwrap();
    }
    file.flush().unwrap();
}

fn bench_config(port: u16, metrics_port: u16, secret: &str) -> ReceiverConfig {
    ReceiverConfig {
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
    }
}

fn requests(n: usize, secret: &str, out: &str, provider: Provider) {
    let secret = read_secret_file(secret.as_ref()).unwrap();
    let now = hookwarden_receiver::clock::system_clock()();
    let scheme = Scheme::new(provider);
    let mut file = std::io::BufWriter::new(std::fs::File::create(out).unwrap());
    for i in 0..n {
        let body = match provider {
            Provider::Membrane => membrane_body(&format!("{now}-{i}")),
            _ => opal_body(i, now),
        };
        let headers = sign(&scheme, secret.expose(), body.as_bytes(), now, "", &[]);
        let signature = &headers
            .iter()
            .find(|(k, _)| k.ends_with("signature") || k.ends_with("Signature"))
            .unwrap()
            .1;
        writeln!(file, "{now}\t{signature}\t{body}").unwrap();
    }
    file.flush().unwrap();
}

/// The body of the `i`th benchmark delivery, sent at `now`.
fn opal_body(i: usize, now: i64) -> String {
    format!(
        r#"{{"event_ts":{now},"organization_id":"7c3c2ba1-8d1e-4b8e-9f1a-2b0f1c3d4e5f","events":[{{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"AWS_IAM_ROLE","user_id":"user{i}@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"}}]}}"#
    )
}

/// A Membrane `org-created` delivery of organisation `id`.
fn membrane_body(id: &str) -> String {
    format!(
        r#"{{"type":"org-created","name":"Organisation {id}","workspaceName":"Main","orgId":"org-{id}","org":{{"id":"org-{id}","name":"Organisation {id}","domains":["org-{id}.example.com"],"trialEndDate":"2027-01-01"}},"user":{{"name":"Creator","email":"creator@org-{id}.example.com"}}}}"#
    )
}

fn membrane_delivery(id: &str, n: usize) -> Delivery {
    let body = membrane_body(id);
    let parsed = hookwarden_receiver::payload::parse(
        Provider::Membrane,
        &Default::default(),
        body.as_bytes(),
    )
    .unwrap();
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&(n as u64).to_le_bytes());
    key[8] = 1;
    Delivery {
        key,
        events: parsed.events,
        body: body.into(),
        content_type: None,
        trace: None,
        event_ts: None,
    }
}

/// The data of a `state` sink after `n` organisations were created.
fn membrane_state(n: usize) -> std::collections::BTreeMap<String, String> {
    use hookwarden_receiver::config::ConfigMapMode;
    let mut data = std::collections::BTreeMap::new();
    let deliveries: Vec<Delivery> = (0..n)
        .map(|i| membrane_delivery(&format!("seed-{i}"), i))
        .collect();
    let refs: Vec<&Delivery> = deliveries.iter().collect();
    let results = hookwarden_receiver::view::apply_all(ConfigMapMode::State, &mut data, &refs, 0);
    assert!(results.iter().all(|r| r == &Ok(true)));
    data
}

/// Prints the `membrane.json` a `state` sink holds after `n` organisations were created, as
/// the receiver writes it.
fn organizations(n: usize) {
    print!("{}", membrane_state(n)["membrane.json"]);
}

/// Times `n` lines of a recorded delivery, as the receiver logs them, through `subscriber`.
fn time_log_line(
    name: &str,
    n: usize,
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) {
    tracing::subscriber::with_default(subscriber, || {
        time(name, n, |_| {
            tracing::info!(webhook = "opal", events = 1, "delivery recorded");
        });
    });
}

/// Times `f` over `n` runs and prints nanoseconds per run.
fn time(name: &str, n: usize, mut f: impl FnMut(usize)) {
    let started = std::time::Instant::now();
    for i in 0..n {
        f(i);
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:<34} {ns:>8.0} ns");
}

async fn stages(n: usize) {
    use axum::http::{HeaderMap, HeaderName, HeaderValue, Request};
    use hookwarden_receiver::payload;
    use hookwarden_receiver::replay::ReplayCache;
    use hookwarden_receiver::secrets::Secret;
    use tower::ServiceExt;

    let secret = Secret::new(b"a-benchmark-secret-of-32-bytes!!");
    let now = hookwarden_receiver::clock::system_clock()();
    let scheme = Scheme::new(Provider::Opal);
    let deliveries: Vec<(HeaderMap, Bytes)> = (0..n)
        .map(|i| {
            let body = opal_body(i, now);
            let mut headers = HeaderMap::new();
            for (k, v) in sign(&scheme, secret.expose(), body.as_bytes(), now, "", &[]) {
                headers.insert(
                    HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                    HeaderValue::from_str(&v).unwrap(),
                );
            }
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            (headers, Bytes::from(body))
        })
        .collect();
    let secrets = [secret.clone()];
    println!(
        "in-process cost per delivery ({n} distinct Opal deliveries, {} byte bodies):",
        deliveries[0].1.len()
    );
    // The steps on a set small enough to stay in cache, as a request just read is.
    let hot = &deliveries[..deliveries.len().min(1024)];
    time("signature check", n, |i| {
        let (h, b) = &hot[i % hot.len()];
        std::hint::black_box(scheme.verify(h, b, &secrets, now).unwrap());
    });
    // The line of a recorded delivery, as `hookwarden-receiver run --log-format json`
    // writes it, to a file: as before 2026-12-02 (tracing-subscriber's timer, one write per
    // line by the logging thread), and as now (`telemetry::init`: hookwarden's timer, the
    // batched writer).
    let dir = std::env::temp_dir().join(format!("hw-stages-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = |writer| {
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .finish()
    };
    let file = std::sync::Mutex::new(std::fs::File::create(dir.join("direct")).unwrap());
    time_log_line(
        "JSON log line, a write each",
        n,
        json(telemetry::BoxMakeWriter::new(file)),
    );
    if std::env::var("STAGES_LOG_DETAIL").is_ok() {
        time_log_line(
            "JSON log line, to nowhere",
            n,
            json(telemetry::BoxMakeWriter::new(std::io::sink)),
        );
        let timed = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_timer(telemetry::Timestamp)
            .with_writer(std::io::sink)
            .finish();
        time_log_line("JSON log line, our timer, to nowhere", n, timed);
        let untimed = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .without_time()
            .with_writer(std::io::sink)
            .finish();
        time_log_line("JSON log line, no time, to nowhere", n, untimed);
        let text = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(std::io::sink)
            .finish();
        time_log_line("text log line, to nowhere", n, text);
    }
    // Formatting alone: tracing-subscriber's JSON formatter and hookwarden's, with the same
    // timer, to nowhere.
    let theirs = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_timer(telemetry::Timestamp)
        .with_writer(std::io::sink)
        .finish();
    time_log_line("JSON line formatted, tracing's", n, theirs);
    let ours = tracing_subscriber::fmt()
        .json()
        .event_format(telemetry::JsonLine::new(telemetry::Timestamp))
        .with_writer(std::io::sink)
        .finish();
    time_log_line("JSON line formatted, hookwarden's", n, ours);
    let (batched, guard) = telemetry::batched(std::fs::File::create(dir.join("before")).unwrap());
    let before = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_timer(telemetry::Timestamp)
        .with_writer(batched)
        .finish();
    time_log_line("JSON log line, batched, before", n, before);
    drop(guard);
    // As `telemetry::init` logs now.
    let (batched, guard) = telemetry::batched(std::fs::File::create(dir.join("batched")).unwrap());
    let as_now = tracing_subscriber::fmt()
        .json()
        .event_format(telemetry::JsonLine::new(telemetry::Timestamp))
        .with_writer(batched)
        .finish();
    time_log_line("JSON log line, batched writer", n, as_now);
    drop(guard);
    let lines = |name| {
        std::fs::read_to_string(dir.join(name))
            .unwrap()
            .lines()
            .count()
    };
    assert_eq!(
        (lines("direct"), lines("before"), lines("batched")),
        (n, n, n),
        "every line written"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    time("payload parse", n, |i| {
        let (h, b) = &hot[i % hot.len()];
        std::hint::black_box(payload::parse(Provider::Opal, h, b).unwrap());
    });
    // The `state` sink's work for one batch of 16 new organisations on a document of 1000,
    // as one write of the writer does it (without the API server).
    {
        use hookwarden_receiver::config::ConfigMapMode;
        let doc = membrane_state(1000);
        let batches: Vec<Vec<Delivery>> = (0..20)
            .map(|b| {
                (0..16)
                    .map(|i| membrane_delivery(&format!("batch-{b}-{i}"), 1_000_000 + b * 16 + i))
                    .collect()
            })
            .collect();
        let started = std::time::Instant::now();
        for batch in &batches {
            let mut data = doc.clone();
            let refs: Vec<&Delivery> = batch.iter().collect();
            let results =
                hookwarden_receiver::view::apply_all(ConfigMapMode::State, &mut data, &refs, 0);
            assert!(results.iter().all(|r| r == &Ok(true)));
        }
        let us = started.elapsed().as_micros() as f64 / batches.len() as f64;
        println!("{:<34} {us:>8.0} µs", "state batch: 16 orgs onto 1000");
    }
    // Full, as after a busy day.
    let capacity = hookwarden_receiver::server::REPLAY_CAPACITY;
    let replay = ReplayCache::new(24 * 3600, capacity);
    for i in 0..capacity as u64 {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&i.wrapping_mul(0x2545F4914F6CDD1D).to_le_bytes());
        k[8..16].copy_from_slice(&i.to_le_bytes());
        replay.remember(k, now);
    }
    time("replay check + remember (full)", n, |i| {
        let mut k = [7u8; 32];
        k[..8].copy_from_slice(&(i as u64).wrapping_mul(0x9E3779B97F4A7C15).to_le_bytes());
        if !replay.seen(&k, now) {
            replay.remember(k, now);
        }
    });

    let recorded = Arc::new(AtomicU64::new(0));
    let dir = std::env::temp_dir().join(format!("hw-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret"), secret.expose()).unwrap();
    let config = bench_config(0, 0, dir.join("secret").to_str().unwrap());
    let receiver = app(AppState::new(
        config,
        Sinks::new(vec![Arc::new(CountingSink(recorded.clone()))]),
    ));
    let bare = Router::new().route("/opal", post(|_: Bytes| async { "ok" }));
    let request = |i: usize| {
        let (h, b) = &deliveries[i];
        let mut r = Request::post("/opal")
            .body(axum::body::Body::from(b.clone()))
            .unwrap();
        *r.headers_mut() = h.clone();
        r
    };
    let only = std::env::var("STAGES_ONLY").ok();
    let run = |name: &str| only.as_deref().is_none_or(|o| name.starts_with(o));
    let timed = |name: &str, started: std::time::Instant| {
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!("{name:<34} {ns:>8.0} ns");
    };
    let name = "bare router, request to response";
    if run(name) {
        let started = std::time::Instant::now();
        for i in 0..n {
            let resp = bare.clone().oneshot(request(i)).await.unwrap();
            assert!(resp.status().is_success());
        }
        timed(name, started);
    }
    // As `serve_on` calls it.
    let name = "receiver, request to response";
    if run(name) {
        let started = std::time::Instant::now();
        for i in 0..n {
            let resp = receiver.clone().answer(request(i)).await;
            assert!(resp.status().is_success());
        }
        timed(name, started);
    }
    if only.is_none() {
        assert_eq!(
            recorded.load(Ordering::Relaxed),
            n as u64,
            "every delivery recorded once"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

async fn pool_stages(n: usize, webhooks: usize) {
    use axum::http::{HeaderName, HeaderValue, Request};
    use hookwarden_receiver::metrics::{Families, Metrics};
    use hookwarden_receiver::secrets::SecretStore;
    use hookwarden_receiver::server::{Readiness, Receiver, Table};

    const ROUNDS: usize = 3;
    let dir = std::env::temp_dir().join(format!("hw-pool-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _logs = match std::env::var("STAGES_LOGS").as_deref() {
        Ok("json") => {
            let (writer, guard) =
                telemetry::batched(std::fs::File::create(dir.join("log")).unwrap());
            let subscriber = tracing_subscriber::fmt()
                .json()
                .event_format(telemetry::JsonLine::new(telemetry::Timestamp))
                .with_writer(writer)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
            Some(guard)
        }
        _ => None,
    };
    let recorded = Arc::new(AtomicU64::new(0));
    let sinks = || Sinks::new(vec![Arc::new(CountingSink(recorded.clone()))]);
    let secret_file = |i: usize| {
        let file = dir.join(format!("secret-{i}"));
        std::fs::write(&file, pool_secret(i)).unwrap();
        file
    };
    let single = app(AppState::new(
        bench_config(0, 0, secret_file(0).to_str().unwrap()),
        sinks(),
    ));
    let families = Arc::new(Families::pool());
    let states: Vec<Arc<AppState>> = (0..webhooks)
        .map(|i| {
            let mut config = bench_config(0, 0, secret_file(i).to_str().unwrap());
            config.webhook.name = format!("opal-{i}");
            config.webhook.uid = format!("uid-{i}");
            config.path = format!("/opal-{i}");
            let metrics = Metrics::of(families.clone(), &format!("bench/opal-{i}"), "opal");
            let secrets = SecretStore::new(Provider::Opal, config.secret_files.clone());
            Arc::new(AppState::with(config, sinks(), secrets, Arc::new(metrics)))
        })
        .collect();
    let pool = Receiver::new(Table::new(states, Readiness::Applied));
    // Secrets are read by the stores' first look; wait until every one is.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let now = hookwarden_receiver::clock::system_clock()();
    let scheme = Scheme::new(Provider::Opal);
    let secrets: Vec<String> = (0..webhooks).map(pool_secret).collect();
    // Delivery `i` to the pool's Webhook `w`, or to the single receiver (`w` = None).
    let request = |i: usize, w: Option<usize>| {
        let body = opal_body(i, now);
        let (path, secret) = match w {
            Some(w) => (format!("/opal-{w}"), &secrets[w]),
            None => ("/opal".to_string(), &secrets[0]),
        };
        let mut r = Request::post(path)
            .body(axum::body::Body::from(body.clone()))
            .unwrap();
        for (k, v) in sign(&scheme, secret.as_bytes(), body.as_bytes(), now, "", &[]) {
            r.headers_mut().insert(
                HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).unwrap(),
                HeaderValue::from_str(&v).unwrap(),
            );
        }
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        r
    };
    println!(
        "in-process cost per delivery, request to response ({n} distinct Opal deliveries a round, logs {}):",
        std::env::var("STAGES_LOGS").unwrap_or_else(|_| "off".into())
    );
    let mut ratios = Vec::new();
    for round in 0..ROUNDS {
        let base = round * n;
        let one: Vec<_> = (base..base + n).map(|i| request(i, None)).collect();
        let one = time_answers(round, "receiver of one Webhook", &single, one).await;
        let many: Vec<_> = (base..base + n)
            .map(|i| request(i, Some(i % webhooks)))
            .collect();
        let many = time_answers(round, &format!("pool of {webhooks} Webhooks"), &pool, many).await;
        ratios.push(one / many);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "pool / receiver throughput: {:.2} (median of {ROUNDS} rounds)",
        ratios[ROUNDS / 2]
    );
    assert_eq!(
        recorded.load(Ordering::Relaxed),
        (2 * ROUNDS * n) as u64,
        "every delivery recorded once"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Answers `requests` one after the other through `target`; nanoseconds per request.
async fn time_answers(
    round: usize,
    name: &str,
    target: &hookwarden_receiver::server::Receiver,
    requests: Vec<axum::http::Request<axum::body::Body>>,
) -> f64 {
    let n = requests.len();
    let started = std::time::Instant::now();
    for r in requests {
        let resp = target.clone().answer(r).await;
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }
    let ns = started.elapsed().as_nanos() as f64 / n as f64;
    println!("round {round}: {name:<28} {ns:>8.0} ns");
    ns
}
