//! `hookwarden-receiver pool` as a process, outside a cluster (`--config FILE
//! --secrets-dir DIR`): several Webhooks on their own paths, each verified with its own
//! secret only; a new configuration served without a restart (added, changed, removed, a
//! refused one ignored), with deliveries in flight and replays handled right; one Webhook's
//! flood, slow application or missing secret leaving the others alone; metrics per
//! Webhook. Deliveries are forwarded to a small application that counts what it got.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::post as route_post;
use hookwarden_api::pool_config::{PoolConfig, PoolIdentity, PoolWebhook, ServedReport};
use hookwarden_api::webhook::SecretKeyRef;
use hookwarden_receiver::client::post as send;
use hookwarden_receiver::config::{ForwardConfig, Limits, Provider, SinksConfig};
use hookwarden_receiver::signature::{Scheme, sign};

/// The application deliveries are forwarded to: what it got, by Webhook, and how long it
/// takes to answer each Webhook's.
#[derive(Default)]
struct App {
    received: Mutex<Vec<(String, Bytes)>>,
    delay: Mutex<HashMap<String, Duration>>,
}

impl App {
    async fn start() -> (Arc<App>, SocketAddr) {
        let app = Arc::new(App::default());
        let router = {
            let app = app.clone();
            axum::Router::new().route(
                "/hooks/{name}",
                route_post(move |Path(name): Path<String>, body: Bytes| {
                    let app = app.clone();
                    async move {
                        let delay = app.delay.lock().unwrap().get(&name).copied();
                        if let Some(delay) = delay {
                            tokio::time::sleep(delay).await;
                        }
                        app.received.lock().unwrap().push((name, body));
                        StatusCode::OK
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(axum::serve(listener, router).into_future());
        (app, addr)
    }

    /// How many times `body` reached Webhook `name`'s application.
    fn got(&self, name: &str, body: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, b)| n == name && &b[..] == body.as_bytes())
            .count()
    }

    fn count(&self, name: &str) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .count()
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn read_all(mut from: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        from.read_to_string(&mut text).unwrap();
        text
    })
}

/// A pool process and its files.
struct Pool {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
    metrics_port: u16,
    output: [std::thread::JoinHandle<String>; 2],
}

impl Pool {
    /// Starts a pool whose configuration file does not exist yet.
    async fn start() -> Pool {
        Pool::start_with(&[]).await
    }

    /// With more environment variables.
    async fn start_with(env: &[(&str, String)]) -> Pool {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        let (port, metrics_port) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_hookwarden-receiver"))
            .args(["--log-format", "json", "pool", "--config"])
            .arg(dir.path().join("pool.yaml"))
            .arg("--secrets-dir")
            .arg(dir.path().join("secrets"))
            .arg("--served-file")
            .arg(dir.path().join("served.json"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env_remove("RUST_LOG")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let output = [
            read_all(child.stdout.take().unwrap()),
            read_all(child.stderr.take().unwrap()),
        ];
        let pool = Pool {
            child,
            dir,
            port,
            metrics_port,
            output,
        };
        wait_until("the pool listens", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        pool
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn secret(&self, name: &str, value: &str) {
        let dir = self.dir.path().join("secrets").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("key"), value).unwrap();
    }

    /// Writes the configuration file whole (as the kubelet swaps a ConfigMap volume).
    fn configure(&self, webhooks: &[PoolWebhook]) {
        let config = PoolConfig {
            listen: format!("127.0.0.1:{}", self.port).parse().unwrap(),
            metrics_listen: format!("127.0.0.1:{}", self.metrics_port).parse().unwrap(),
            webhooks: webhooks.to_vec(),
            ..PoolConfig::new(PoolIdentity {
                name: "shared".into(),
                namespace: "team-a".into(),
            })
        };
        let yaml = config.to_yaml().unwrap();
        let partial = self.dir.path().join("pool.yaml.partial");
        std::fs::write(&partial, yaml).unwrap();
        std::fs::rename(partial, self.dir.path().join("pool.yaml")).unwrap();
    }

    fn served(&self) -> Option<ServedReport> {
        let text = std::fs::read_to_string(self.dir.path().join("served.json")).ok()?;
        Some(ServedReport::from_json(&text).unwrap())
    }

    /// Waits until the served report satisfies `done`.
    async fn wait_served(&self, what: &str, done: impl Fn(&ServedReport) -> bool) -> ServedReport {
        wait_until(what, || async { self.served().is_some_and(|r| done(&r)) }).await;
        self.served().unwrap()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let a = hookwarden_receiver::client::get(&self.url(path), Duration::from_secs(5))
            .await
            .unwrap();
        (a.status, a.body)
    }

    async fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        hookwarden_receiver::client::get(&url, Duration::from_secs(5))
            .await
            .unwrap()
            .body
    }

    /// SIGTERM; then stdout's JSON lines.
    async fn stop(self) -> Vec<serde_json::Value> {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let mut child = self.child;
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .unwrap()
            .unwrap();
        let [out, err] = self.output;
        let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
        assert!(status.success(), "{status:?}: {stderr}");
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
}

async fn wait_until<F, Fut>(what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + Duration::from_secs(15);
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn webhook(
    name: &str,
    path: &str,
    provider: Provider,
    secret: &str,
    app: SocketAddr,
) -> PoolWebhook {
    PoolWebhook {
        name: name.into(),
        uid: format!("uid-{name}"),
        generation: 1,
        path: path.into(),
        provider,
        event_types: vec![],
        secrets: vec![SecretKeyRef {
            name: secret.into(),
            key: "key".into(),
        }],
        sinks: SinksConfig {
            forward: Some(ForwardConfig {
                url: format!("http://{app}/hooks/{name}"),
            }),
            ..SinksConfig::default()
        },
        generic_hmac: None,
        limits: Limits::default(),
    }
}

fn now() -> i64 {
    hookwarden_receiver::clock::system_clock()()
}

/// A body of `provider`'s with the distinct `n`.
fn body(provider: Provider, n: usize) -> String {
    match provider {
        Provider::Opal => format!(
            r#"{{"event_ts":{},"organization_id":"7c3c2ba1-8d1e-4b8e-9f1a-2b0f1c3d4e5f","events":[{{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"AWS_IAM_ROLE","user_id":"user{n}@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"}}]}}"#,
            now()
        ),
        Provider::Membrane => format!(
            r#"{{"type":"org-created","name":"N{n}","orgId":"o{n}","org":{{"id":"o{n}","name":"N{n}"}},"user":{{"email":"a@b.c"}}}}"#
        ),
        _ => format!(r#"{{"action":"opened","number":{n}}}"#),
    }
}

/// The headers a sender of `provider` sends with `body`, signed with `secret`; GitHub's
/// with event type `event`.
fn signed(provider: Provider, secret: &str, body: &str, event: &str) -> Vec<(String, String)> {
    let mut headers = sign(
        &Scheme::new(provider),
        secret.as_bytes(),
        body.as_bytes(),
        now(),
        "",
        &[],
    );
    headers.push(("Content-Type".into(), "application/json".into()));
    if provider == Provider::Github {
        headers.push(("X-GitHub-Event".into(), event.into()));
    }
    headers
}

async fn post(url: &str, headers: &[(String, String)], body: &str) -> (u16, String) {
    let answer = send(url, headers, body.as_bytes().to_vec()).await.unwrap();
    (answer.status, answer.body)
}

/// Delivers `body` to `path` signed with `secret`.
async fn deliver(
    pool: &Pool,
    path: &str,
    provider: Provider,
    secret: &str,
    body: &str,
) -> (u16, String) {
    post(
        &pool.url(path),
        &signed(provider, secret, body, "push"),
        body,
    )
    .await
}

const OPAL: &str = "opal-secret-0123456789";
const MEMBRANE: &str = "membrane-secret-0123456789";
const GITHUB: &str = "github-secret-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_webhook_is_verified_with_its_own_secret_only() {
    let (app, app_addr) = App::start().await;
    let pool = Pool::start().await;
    // Not ready before its first configuration.
    assert_eq!(pool.get("/readyz").await.0, 503);
    pool.secret("opal-s", OPAL);
    pool.secret("membrane-s", MEMBRANE);
    pool.secret("github-s", GITHUB);
    let hooks = [
        ("opal", "/opal", Provider::Opal, "opal-s", OPAL),
        (
            "orgs",
            "/membrane",
            Provider::Membrane,
            "membrane-s",
            MEMBRANE,
        ),
        ("repo", "/github", Provider::Github, "github-s", GITHUB),
    ];
    let mut webhooks: Vec<PoolWebhook> = hooks
        .iter()
        .map(|(name, path, provider, secret, _)| webhook(name, path, *provider, secret, app_addr))
        .collect();
    // One more whose Secret does not exist.
    webhooks.push(webhook(
        "lost",
        "/lost",
        Provider::Github,
        "nowhere",
        app_addr,
    ));
    pool.configure(&webhooks);
    let report = pool
        .wait_served("four Webhooks are served", |r| r.webhooks.len() == 4)
        .await;
    assert_eq!(pool.get("/readyz").await.0, 200);
    assert!(report.refused.is_none());
    for (name, ..) in &hooks {
        let served = &report.webhooks[*name];
        assert!(
            served.ready && served.problem.is_none(),
            "{name}: {served:?}"
        );
        assert_eq!(
            (served.uid.as_str(), served.generation),
            (format!("uid-{name}").as_str(), 1)
        );
    }
    let lost = &report.webhooks["lost"];
    assert!(!lost.ready);
    let problem = lost.problem.as_deref().unwrap();
    assert!(problem.contains("nowhere"), "{problem}");

    for (i, (name, path, provider, _, secret)) in hooks.iter().enumerate() {
        let b = body(*provider, i);
        let (status, text) = deliver(&pool, path, *provider, secret, &b).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert_eq!(app.got(name, &b), 1, "{name}");
        // Every other Webhook's secret is refused on this path.
        for (_, _, _, _, other) in hooks.iter().filter(|h| h.4 != *secret) {
            let b = body(*provider, 100 + i);
            let (status, text) = deliver(&pool, path, *provider, other, &b).await;
            assert_eq!(status, 401, "{name} with another's secret: {text}");
            assert_eq!(app.got(name, &b), 0);
        }
    }
    // The Webhook without its secret answers 503; the others are unaffected.
    let b = body(Provider::Github, 7);
    let (status, text) = deliver(&pool, "/lost", Provider::Github, GITHUB, &b).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("signing secret unavailable"), "{text}");
    assert_eq!(app.count("lost"), 0);
    assert_eq!(
        deliver(
            &pool,
            "/github",
            Provider::Github,
            GITHUB,
            &body(Provider::Github, 8)
        )
        .await
        .0,
        200
    );
    // Its secret appears: it is served within the refresh period, without a restart.
    pool.secret("nowhere", "found-at-last");
    pool.wait_served("the lost Webhook's secret is read", |r| {
        r.webhooks["lost"].ready
    })
    .await;
    let (status, text) = deliver(&pool, "/lost", Provider::Github, "found-at-last", &b).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.got("lost", &b), 1);

    // Metrics: series per Webhook, and the pool's gauges.
    let metrics = pool.metrics().await;
    for series in [
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/opal",provider="opal",outcome="recorded"} 1"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/opal",provider="opal",outcome="bad_signature"} 2"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/orgs",provider="membrane",outcome="recorded"} 1"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/repo",provider="github",outcome="recorded"} 2"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/lost",provider="github",outcome="no_secret"} 1"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/lost",provider="github",outcome="sink_refused"} 0"#,
        r#"hookwarden_receiver_delivery_duration_seconds_count{webhook="team-a/orgs",provider="membrane"} 3"#,
        "hookwarden_receiver_webhooks 4",
        "hookwarden_receiver_in_flight 0",
    ] {
        assert!(metrics.contains(series), "{series}:\n{metrics}");
    }

    let lines = pool.stop().await;
    let recorded: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "delivery recorded")
        .map(|l| l["webhook"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(recorded.len(), 5, "{recorded:?}");
    let all = lines.iter().map(|l| l.to_string()).collect::<String>();
    for secret in [OPAL, MEMBRANE, GITHUB, "found-at-last"] {
        assert!(!all.contains(secret), "a log line holds a secret");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_configuration_is_served_without_a_restart() {
    let (app, app_addr) = App::start().await;
    let pool = Pool::start().await;
    pool.secret("opal-s", OPAL);
    pool.secret("membrane-s", MEMBRANE);
    pool.secret("github-s", GITHUB);
    let opal = webhook("opal", "/opal", Provider::Opal, "opal-s", app_addr);
    let orgs = webhook(
        "orgs",
        "/membrane",
        Provider::Membrane,
        "membrane-s",
        app_addr,
    );
    let repo = webhook("repo", "/github", Provider::Github, "github-s", app_addr);
    pool.configure(&[opal.clone(), orgs.clone(), repo.clone()]);
    pool.wait_served("three Webhooks are served", |r| r.webhooks.len() == 3)
        .await;

    // Recorded before the change, replayed after it.
    let early = body(Provider::Membrane, 1);
    let early_headers = signed(Provider::Membrane, MEMBRANE, &early, "");
    assert_eq!(
        post(&pool.url("/membrane"), &early_headers, &early).await.0,
        200
    );
    let pushed = body(Provider::Github, 1);
    assert_eq!(
        deliver(&pool, "/github", Provider::Github, GITHUB, &pushed)
            .await
            .0,
        200
    );

    // A delivery to `opal` in flight while `opal` is removed.
    app.delay
        .lock()
        .unwrap()
        .insert("opal".into(), Duration::from_secs(3));
    let in_flight_body = body(Provider::Opal, 1);
    let in_flight = {
        let url = pool.url("/opal");
        let headers = signed(Provider::Opal, OPAL, &in_flight_body, "");
        let b = in_flight_body.clone();
        tokio::spawn(async move { post(&url, &headers, &b).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Added: a fourth Webhook; changed: `repo` (a new secret, one event type) and `orgs`
    // (one event type); removed: `opal`.
    pool.secret("github-s2", "github-new-secret");
    pool.secret("added-s", "added-secret");
    let added = webhook("added", "/added", Provider::Opal, "added-s", app_addr);
    let mut repo2 = webhook("repo", "/github", Provider::Github, "github-s2", app_addr);
    repo2.event_types = vec!["issues".into()];
    repo2.generation = 2;
    let mut orgs2 = orgs.clone();
    orgs2.event_types = vec!["org-created".into()];
    orgs2.generation = 2;
    pool.configure(&[added.clone(), orgs2.clone(), repo2.clone()]);
    let report = pool
        .wait_served("the new configuration is served", |r| {
            r.webhooks.contains_key("added")
        })
        .await;
    assert!(!report.webhooks.contains_key("opal"));
    assert_eq!(report.webhooks["repo"].generation, 2);
    assert_eq!(report.webhooks["orgs"].generation, 2);
    assert!(report.webhooks.values().all(|s| s.ready), "{report:?}");

    // Removed: 404, while the delivery in flight is still held by the application.
    assert!(
        !in_flight.is_finished(),
        "the delivery in flight ended before the reload"
    );
    assert_eq!(
        deliver(
            &pool,
            "/opal",
            Provider::Opal,
            OPAL,
            &body(Provider::Opal, 2)
        )
        .await
        .0,
        404
    );
    let (status, text) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert_eq!(app.got("opal", &in_flight_body), 1);

    // Added: served.
    let b = body(Provider::Opal, 3);
    assert_eq!(
        deliver(&pool, "/added", Provider::Opal, "added-secret", &b)
            .await
            .0,
        200
    );
    assert_eq!(app.got("added", &b), 1);
    // Changed: the old secret is refused, the new one accepted, for the new event type only.
    assert_eq!(
        deliver(
            &pool,
            "/github",
            Provider::Github,
            GITHUB,
            &body(Provider::Github, 4)
        )
        .await
        .0,
        401
    );
    let issue = body(Provider::Github, 5);
    let headers = signed(Provider::Github, "github-new-secret", &issue, "issues");
    assert_eq!(
        post(&pool.url("/github"), &headers, &issue).await,
        (200, r#"{"events":1,"status":"recorded"}"#.into())
    );
    assert_eq!(app.got("repo", &issue), 1);
    let push = body(Provider::Github, 6);
    let (status, text) = deliver(
        &pool,
        "/github",
        Provider::Github,
        "github-new-secret",
        &push,
    )
    .await;
    assert_eq!((status, text.as_str()), (200, r#"{"status":"ignored"}"#));
    assert_eq!(app.got("repo", &push), 0);
    // A replay of what `orgs` recorded before its change is still a duplicate.
    let (status, text) = post(&pool.url("/membrane"), &early_headers, &early).await;
    assert_eq!((status, text.as_str()), (200, r#"{"status":"duplicate"}"#));
    assert_eq!(app.got("orgs", &early), 1);

    // Refused: two Webhooks on one path. The table served stays as it was.
    let clash = webhook("clash", "/added", Provider::Opal, "added-s", app_addr);
    pool.configure(&[added.clone(), clash, orgs2.clone(), repo2.clone()]);
    let report = pool
        .wait_served("the clashing configuration is refused", |r| {
            r.refused.is_some()
        })
        .await;
    let refused = report.refused.as_deref().unwrap();
    assert!(refused.contains("path /added is also added's"), "{refused}");
    assert_eq!(report.webhooks.len(), 3);
    assert!(!report.webhooks.contains_key("clash"));
    let b = body(Provider::Opal, 8);
    assert_eq!(
        deliver(&pool, "/added", Provider::Opal, "added-secret", &b)
            .await
            .0,
        200
    );
    assert_eq!(app.got("added", &b), 1);
    assert_eq!(pool.get("/readyz").await.0, 200);

    // The removed Webhook's series are gone; the changed ones' go on counting.
    let metrics = pool.metrics().await;
    assert!(!metrics.contains(r#"webhook="team-a/opal""#), "{metrics}");
    for series in [
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/orgs",provider="membrane",outcome="recorded"} 1"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/orgs",provider="membrane",outcome="duplicate"} 1"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/repo",provider="github",outcome="recorded"} 2"#,
        r#"hookwarden_receiver_deliveries_total{webhook="team-a/added",provider="opal",outcome="recorded"} 2"#,
        "hookwarden_receiver_webhooks 3",
    ] {
        assert!(metrics.contains(series), "{series}:\n{metrics}");
    }

    // The same process throughout.
    let lines = pool.stop().await;
    let starts = lines
        .iter()
        .filter(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("receiver pool listening"))
        })
        .count();
    assert_eq!(starts, 1);
    assert_eq!(app.got("opal", &in_flight_body), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_webhook_flooded_or_slow_does_not_hold_up_another() {
    let (app, app_addr) = App::start().await;
    let pool = Pool::start().await;
    pool.secret("a-s", OPAL);
    pool.secret("b-s", MEMBRANE);
    let mut a = webhook("a", "/a", Provider::Opal, "a-s", app_addr);
    a.limits.max_concurrent_deliveries = 2;
    let b = webhook("b", "/b", Provider::Membrane, "b-s", app_addr);
    pool.configure(&[a, b]);
    pool.wait_served("both Webhooks are served", |r| r.webhooks.len() == 2)
        .await;

    // A flood of forged deliveries on /a, many at once, while /b takes valid ones.
    let forged = {
        let url = pool.url("/a");
        tokio::spawn(async move {
            let mut refused = 0;
            for round in 0..20 {
                let sends = (0..50).map(|i| {
                    let b = body(Provider::Opal, round * 50 + i);
                    let headers = signed(Provider::Opal, "forged", &b, "");
                    let url = url.clone();
                    async move { post(&url, &headers, &b).await.0 }
                });
                refused += futures::future::join_all(sends)
                    .await
                    .into_iter()
                    .filter(|s| *s == 401 || *s == 503)
                    .count();
            }
            refused
        })
    };
    let mut valid = Vec::new();
    for i in 0..100 {
        let b = body(Provider::Membrane, i);
        let (status, text) = deliver(&pool, "/b", Provider::Membrane, MEMBRANE, &b).await;
        assert_eq!(status, 200, "{text}");
        valid.push(b);
    }
    assert_eq!(forged.await.unwrap(), 1000, "every forged delivery refused");
    for b in &valid {
        assert_eq!(app.got("b", b), 1);
    }
    assert_eq!(app.count("a"), 0);

    // /a's application hangs, holding both of /a's places; /b is answered at once.
    app.delay
        .lock()
        .unwrap()
        .insert("a".into(), Duration::from_secs(4));
    let held: Vec<_> = (0..2)
        .map(|i| {
            let url = pool.url("/a");
            let b = body(Provider::Opal, 5000 + i);
            let headers = signed(Provider::Opal, OPAL, &b, "");
            tokio::spawn(async move { post(&url, &headers, &b).await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, text) = deliver(
        &pool,
        "/a",
        Provider::Opal,
        OPAL,
        &body(Provider::Opal, 6000),
    )
    .await;
    assert_eq!(status, 503, "a third delivery to /a is shed: {text}");
    assert!(text.contains("overloaded"), "{text}");
    let metrics = pool.metrics().await;
    assert!(
        metrics.contains("hookwarden_receiver_in_flight 2"),
        "{metrics}"
    );
    for i in 0..10 {
        let b = body(Provider::Membrane, 1000 + i);
        let started = Instant::now();
        let (status, _) = deliver(&pool, "/b", Provider::Membrane, MEMBRANE, &b).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "/b waited for /a: {:?}",
            started.elapsed()
        );
        assert_eq!(app.got("b", &b), 1);
    }
    for h in held {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(app.count("a"), 2);
    pool.stop().await;
}

/// The pool's body budget (here from `HOOKWARDEN_BODY_BUDGET_BYTES`) is one for all its
/// Webhooks, and a Webhook may hold half of it while the pool serves more than one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_of_a_pool_holds_half_the_body_budget_at_most() {
    let (app, app_addr) = App::start().await;
    let first = body(Provider::Membrane, 1);
    // Room for the body in the pod, not in half of it.
    let budget = first.len() * 3 / 2;
    let pool = Pool::start_with(&[("HOOKWARDEN_BODY_BUDGET_BYTES", budget.to_string())]).await;
    pool.secret("m", MEMBRANE);
    pool.secret("o", OPAL);
    let membrane = webhook("membrane", "/membrane", Provider::Membrane, "m", app_addr);
    let opal = webhook("opal", "/opal", Provider::Opal, "o", app_addr);
    pool.configure(std::slice::from_ref(&membrane));
    pool.wait_served("one Webhook", |r| r.webhooks.len() == 1)
        .await;
    // Alone, the whole budget.
    let (status, answer) = deliver(&pool, "/membrane", Provider::Membrane, MEMBRANE, &first).await;
    assert_eq!(status, 200, "{answer}");
    // With a neighbour, half of it: too little for the same size of body.
    pool.configure(&[membrane, opal]);
    pool.wait_served("two Webhooks", |r| r.webhooks.len() == 2)
        .await;
    let second = body(Provider::Membrane, 2);
    assert_eq!(second.len(), first.len());
    let (status, answer) = deliver(&pool, "/membrane", Provider::Membrane, MEMBRANE, &second).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("body bytes in flight"), "{answer}");
    assert!(pool.metrics().await.contains(
        r#"deliveries_total{webhook="team-a/membrane",provider="membrane",outcome="body_budget"} 1"#
    ));
    assert_eq!(app.count("membrane"), 1);
    pool.stop().await;
}
