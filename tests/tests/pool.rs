//! Receiver pools on the cluster: Webhooks of a namespace served by one Deployment of the
//! pool's pods, reconfigured without a restart, Ready only once the pods report they serve
//! the current generation, with a Role that follows the Webhooks served.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hookwarden_api::pool::ReceiverPool;
use hookwarden_operator::crd::Webhook;
use hookwarden_tests::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::ListParams;

const OPAL: &str = r#"{"event_ts":1643355931,"organization_id":"o","events":[{"event_type":"USER_ADDED_TO_GROUP","group_type":"G","user_id":"u@example.com","group_id":"g1"}]}"#;
const MEMBRANE: &str = r#"{"type":"org-created","name":"New Organization","workspaceName":"Main","orgId":"org456","org":{"id":"org456","name":"New Organization","domains":["company.com"],"trialEndDate":"2025-05-23"},"user":{"name":"Creator","email":"creator@company.com"}}"#;

fn pooled(name: &str, provider: &str, extra: &str) -> String {
    pooled_at(name, &format!("/{name}"), provider, extra)
}

fn pooled_at(name: &str, path: &str, provider: &str, extra: &str) -> String {
    format!(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
         spec: {{path: {path}, provider: {provider}, pool: default{extra}}}\n"
    )
}

/// Sends until the answer starts with `expected` (a change reaches the pods in a moment).
async fn answered(
    url: &str,
    provider: &str,
    file: &std::path::Path,
    (body, extra): (&str, &[&str]),
    expected: &str,
) {
    let what = format!("{url} answers {expected}");
    eventually(&what, Duration::from_secs(60), || {
        let (_, out) = send(url, provider, file, body, extra);
        async move {
            match out.starts_with(expected) {
                true => Ok(()),
                false => Err(out),
            }
        }
    })
    .await;
}

#[tokio::test]
async fn a_namespaces_webhooks_share_one_pool_that_follows_their_changes_without_a_restart() {
    let ns = TestNamespace::new("pool").await;
    let started = Instant::now();
    ns.apply_webhook(&pooled("opal", "opal", "")).await;
    ns.apply_webhook(&pooled(
        "membrane",
        "membrane",
        ", sinks: {events: false, configMap: {name: orgs}}",
    ))
    .await;
    ns.apply_webhook(&pooled("github", "github", "")).await;
    for name in ["opal", "membrane", "github"] {
        let w = ns.webhook_ready(name, "True", "ReceiverAvailable").await;
        let url = w.status.unwrap().url.unwrap();
        assert_eq!(url, format!("http://default-pool.{}.svc/{name}", ns.name));
    }
    eprintln!(
        "three Webhooks Ready in a new pool after {:?}",
        started.elapsed()
    );

    // One pool, made by the operator, two pods; no receiver of their own.
    let pool: ReceiverPool = ns.api().get("default").await.unwrap();
    let status = pool.status.unwrap();
    assert_eq!(status.webhooks, Some(3));
    assert_eq!(names::<Deployment>(&ns).await, ["default-pool"]);
    let pods = pool_pods(&ns).await;
    assert_eq!(pods.len(), 2, "{pods:?}");

    // Each Webhook on its path, verified with its own secret only.
    let base = pool_url(&ns).await;
    let opal = generated_secret_file(&ns, "opal").await;
    let membrane = generated_secret_file(&ns, "membrane").await;
    let github = generated_secret_file(&ns, "github").await;
    let out = send_eventually(&format!("{base}/opal"), "opal", opal.path(), OPAL, &[]);
    assert!(out.starts_with("200"), "{out}");
    let out = send_eventually(
        &format!("{base}/membrane"),
        "membrane",
        membrane.path(),
        MEMBRANE,
        &[],
    );
    assert!(out.starts_with("200"), "{out}");
    let orgs = config_map_json(&ns, "orgs", "membrane.json").await;
    assert!(orgs.to_string().contains("org456"), "{orgs}");
    let (ok, out) = send(
        &format!("{base}/github"),
        "github",
        opal.path(),
        "{\"zen\":\"x\"}",
        &[],
    );
    assert!(
        !ok && out.starts_with("401"),
        "another Webhook's secret: {out}"
    );
    let (ok, out) = send(
        &format!("{base}/github"),
        "github",
        github.path(),
        "{\"zen\":\"x\"}",
        &["--header", "X-GitHub-Event: ping"],
    );
    assert!(ok, "{out}");

    // What the pool may do follows its Webhooks.
    let pool_sa = format!("system:serviceaccount:{}:default-pool", ns.name);
    let may = |verb: &'static str, resource: &'static str, name: Option<&'static str>| {
        let client = ns.client.clone();
        let (sa, namespace) = (pool_sa.clone(), ns.name.clone());
        async move { can(&client, &sa, verb, "", resource, Some(&namespace), name).await }
    };
    assert!(may("get", "secrets", Some("github-signing-secret")).await);
    assert!(may("watch", "secrets", Some("opal-signing-secret")).await);
    assert!(!may("get", "secrets", Some("unrelated")).await);
    assert!(!may("list", "secrets", None).await, "all Secrets");
    assert!(may("update", "configmaps", Some("orgs")).await);
    assert!(!may("update", "configmaps", Some("default-pool-config")).await);

    // A fourth Webhook joins the running pool: served without a restart.
    let added = Instant::now();
    ns.apply_webhook(&pooled("slack", "slack", "")).await;
    ns.webhook_ready("slack", "True", "ReceiverAvailable").await;
    eprintln!(
        "a Webhook added to a running pool was Ready (served) {:?} after it was applied",
        added.elapsed()
    );
    let slack = generated_secret_file(&ns, "slack").await;
    let (ok, out) = send(
        &format!("{base}/slack"),
        "slack",
        slack.path(),
        "{\"type\":\"event_callback\",\"event\":{\"type\":\"app_mention\"}}",
        &[],
    );
    assert!(ok, "served at once once Ready: {out}");

    // A changed Webhook: github accepts only `push` now; its Ready follows the pods.
    ns.apply_webhook(&pooled("github", "github", ", eventTypes: [push]"))
        .await;
    ns.webhook_ready("github", "True", "ReceiverAvailable")
        .await;
    let (ok, out) = send(
        &format!("{base}/github"),
        "github",
        github.path(),
        "{\"zen\":\"y\"}",
        &["--header", "X-GitHub-Event: ping"],
    );
    assert!(ok && out.contains("ignored"), "{out}");

    // A rotated secret (its Secret changed in place) reaches the pods within seconds.
    let secrets: kube::Api<Secret> = ns.api();
    let rotated = "rotated-opal-secret-value-0123456789";
    secrets
        .patch(
            "opal-signing-secret",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(serde_json::json!({"stringData": {"secret": rotated}})),
        )
        .await
        .unwrap();
    let new_opal = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(new_opal.path(), rotated).unwrap();
    let rotation = Instant::now();
    answered(
        &format!("{base}/opal"),
        "opal",
        new_opal.path(),
        (OPAL, &[]),
        "200",
    )
    .await;
    eprintln!("a rotated secret was in use after {:?}", rotation.elapsed());

    // A Webhook that goes: its path answers 404, and its Secret is no longer readable.
    ns.delete::<hookwarden_api::webhook::Webhook>("slack").await;
    answered(
        &format!("{base}/slack"),
        "slack",
        slack.path(),
        ("{}", &[]),
        "404",
    )
    .await;
    eventually(
        "the pool's Role no longer names slack's Secret",
        Duration::from_secs(60),
        || {
            let check = may("get", "secrets", Some("slack-signing-secret"));
            async move {
                match check.await {
                    false => Ok(()),
                    true => Err("still granted"),
                }
            }
        },
    )
    .await;

    // Through all of it, the same pods, never restarted.
    let after = pool_pods(&ns).await;
    assert_eq!(after, pods, "the pool's pods were replaced or restarted");
    assert!(
        after.iter().all(|(_, _, restarts)| *restarts == 0),
        "{after:?}"
    );
}

#[tokio::test]
async fn two_webhooks_of_a_pool_on_one_path_the_newer_waits_and_a_named_pool_must_exist() {
    let ns = TestNamespace::new("pool-conflict").await;
    ns.apply_webhook(&pooled_at("first", "/hooks", "github", ""))
        .await;
    ns.webhook_ready("first", "True", "ReceiverAvailable").await;
    // (created a second later: the older one is the one served)
    tokio::time::sleep(Duration::from_secs(1)).await;
    ns.apply_webhook(&pooled_at("second", "/hooks", "gitlab", ""))
        .await;
    let w = ns.webhook_ready("second", "False", "Conflict").await;
    let message = w.ready_condition().unwrap().message.clone();
    assert!(
        message.contains("\"first\"") && message.contains("/hooks"),
        "{message}"
    );
    let base = pool_url(&ns).await;
    let first = generated_secret_file(&ns, "first").await;
    let out = send_eventually(
        &format!("{base}/hooks"),
        "github",
        first.path(),
        "{}",
        &["--header", "X-GitHub-Event: ping"],
    );
    assert!(
        out.starts_with("200"),
        "the older one serves the path: {out}"
    );

    // The older one goes: the newer one is served on the path.
    ns.delete::<hookwarden_api::webhook::Webhook>("first").await;
    ns.webhook_ready("second", "True", "ReceiverAvailable")
        .await;
    let second = generated_secret_file(&ns, "second").await;
    answered(
        &format!("{base}/hooks"),
        "gitlab",
        second.path(),
        (
            "{\"object_kind\":\"push\"}",
            &["--header", "X-Gitlab-Event: Push Hook"],
        ),
        "200",
    )
    .await;

    // A pool that does not exist is named in the status; once made, the Webhook is served.
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: team}\n\
         spec: {path: /team, provider: github, pool: team}\n",
    )
    .await;
    let w = ns.webhook_ready("team", "False", "PoolNotFound").await;
    assert!(
        w.ready_condition().unwrap().message.contains("\"team\""),
        "{:?}",
        w.ready_condition()
    );
    let pool: ReceiverPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "hookwarden.io/v1alpha1",
        "kind": "ReceiverPool",
        "metadata": {"name": "team", "namespace": ns.name},
        "spec": {"replicas": 1},
    }))
    .unwrap();
    ns.apply(&pool).await;
    let w = ns.webhook_ready("team", "True", "ReceiverAvailable").await;
    assert_eq!(
        w.status.unwrap().url.unwrap(),
        format!("http://team-pool.{}.svc/team", ns.name)
    );
    let deployment: Deployment = ns.api().get("team-pool").await.unwrap();
    assert_eq!(
        deployment.spec.unwrap().replicas,
        Some(1),
        "the pool's own replicas"
    );
}

#[tokio::test]
async fn a_webhook_moves_into_the_pool_and_out_again_without_a_failed_delivery() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let ns = TestNamespace::new("pool-move").await;
    let (url, secret) = ready_receiver(&ns, "moving", "github", ", receiver: {}").await;
    let old_uid = |d: Option<Deployment>| d.and_then(|d| d.metadata.uid);
    assert!(old_uid(get::<Deployment>(&ns, "moving-receiver").await).is_some());

    // A sender that keeps delivering to the URL it was given, through the move.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, url, file) = (stop.clone(), url.clone(), secret.path().to_owned());
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = format!("{{\"ref\":\"refs/heads/main\",\"n\":{i}}}");
                answers.push(send(
                    &url,
                    "github",
                    &file,
                    &body,
                    &["--header", "X-GitHub-Event: push"],
                ));
            }
            answers
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    // Its spec as the previous release's Webhooks are: no placement, so the default pool
    // (an upgrade moves such Webhooks the same way).
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: moving}\n\
         spec: {path: /moving, provider: github}\n",
    )
    .await;
    let w = ns
        .webhook_ready("moving", "True", "ReceiverAvailable")
        .await;
    assert_eq!(
        w.status.unwrap().url.unwrap(),
        format!("http://default-pool.{}.svc/moving", ns.name)
    );
    eventually(
        "the Webhook's own receiver is gone",
        Duration::from_secs(60),
        || async {
            match get::<Deployment>(&ns, "moving-receiver").await {
                None => Ok(()),
                Some(_) => Err("still there"),
            }
        },
    )
    .await;
    std::thread::sleep(Duration::from_secs(3));
    // Its old URL answers still: the Service of that name now selects the pool's pods.
    let selector = |svc: Service| svc.spec.unwrap().selector.unwrap();
    let svc: Service = ns.api().get("moving-receiver").await.unwrap();
    assert_eq!(selector(svc)["app.kubernetes.io/instance"], "default.pool");
    let w: Webhook = ns.api().get("moving").await.unwrap();
    assert_eq!(w.status.unwrap().pool.as_deref(), Some("default"));

    // And out again, to a receiver of its own: the pool serves it, and its Service selects
    // the pool's pods, until its own receiver is Ready; then the pool lets it go. The sender
    // keeps delivering to the Service throughout.
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: moving}\n\
         spec: {path: /moving, provider: github, receiver: {}}\n",
    )
    .await;
    eventually(
        "the Webhook served by its own receiver, and the pool no longer serving it",
        Duration::from_secs(120),
        || async {
            let w: Webhook = ns.api().get("moving").await.map_err(|e| e.to_string())?;
            let ready = w.ready_condition().is_some_and(|c| {
                c.status == "True" && c.observed_generation == w.metadata.generation
            });
            let pool_now = w.status.and_then(|s| s.pool);
            if !ready || pool_now.is_some() {
                return Err(format!("Ready {ready}, served by pool {pool_now:?}"));
            }
            // The pool is configured without it (and, serving nothing else, keeps no pods).
            let pool: ReceiverPool = ns.api().get("default").await.map_err(|e| e.to_string())?;
            match pool.status.and_then(|s| s.webhooks) {
                Some(0) => Ok(()),
                n => Err(format!("the pool serves {n:?} Webhooks")),
            }
        },
    )
    .await;
    let w: Webhook = ns.api().get("moving").await.unwrap();
    assert_eq!(
        w.status.unwrap().url.unwrap(),
        format!("http://moving-receiver.{}.svc/moving", ns.name)
    );
    let svc: Service = ns.api().get("moving-receiver").await.unwrap();
    assert_eq!(selector(svc)["app.kubernetes.io/instance"], "moving");
    std::thread::sleep(Duration::from_secs(3));

    stop.store(true, Ordering::Relaxed);
    let answers = sender.join().unwrap();
    let failed: Vec<&(bool, String)> = answers.iter().filter(|(ok, _)| !ok).collect();
    assert!(
        answers.len() >= 10,
        "too few deliveries to tell: {answers:?}"
    );
    assert!(
        failed.is_empty(),
        "{} of {} deliveries failed during the moves: {failed:?}",
        failed.len(),
        answers.len()
    );
    eprintln!(
        "{} deliveries through both moves, none failed",
        answers.len()
    );
}

/// A Membrane delivery of another type than [`MEMBRANE`]'s (one Webhook per type).
const INVITED: &str = r#"{"type":"user-invited-to-org","invitationUrl":"https://console.example.com/i/1","issuer":{"name":"Admin","email":"admin@company.com"},"user":{"email":"new@company.com"},"org":{"id":"org456","name":"O","trialEndDate":"2025-05-16"}}"#;

/// The headers of a Membrane delivery of `body` signed with the secret in `file`.
fn membrane_signed(file: &std::path::Path, body: &str) -> Vec<(String, String)> {
    use hookwarden_api::config::Provider;
    use hookwarden_receiver::signature::{Scheme, sign};
    let secret = std::fs::read(file).unwrap();
    let scheme = Scheme::new(Provider::Membrane);
    let mut headers = sign(&scheme, &secret, body.as_bytes(), 0, "", &[]);
    headers.push(("content-type".into(), "application/json".into()));
    headers
}

/// The node's InternalIP: where pods reach a listener of the test on the host.
async fn node_ip(ns: &TestNamespace) -> String {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(ns.client.clone());
    let node = nodes.list(&ListParams::default()).await.unwrap().items;
    node[0]
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
        .map(|a| a.address.clone())
        .expect("the node's InternalIP")
}

/// One Webhook of a pool in trouble, its forward target holding every delivery until the
/// Webhook's timeout and a flood of forged deliveries on its path, does not hold up another
/// Webhook of the same pool: each of the other's deliveries is answered 2xx while the stuck
/// ones still wait, and recorded exactly once.
#[tokio::test]
async fn one_webhook_flooded_and_stuck_does_not_hold_up_another_of_the_pool() {
    use hookwarden_receiver::client::post;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let ns = TestNamespace::new("pool-iso").await;
    // A forward target that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = Arc::new(AtomicUsize::new(0));
    let holder = {
        let held = held.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                open.push(stream);
                held.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    // Reached as a Service of the namespace (a pooled forward may reach no other host, by
    // the chart's default guardrails): one without a selector, whose EndpointSlice names
    // this host's listener.
    let node = node_ip(&ns).await;
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "holder", "namespace": ns.name},
        "spec": {"ports": [{"port": 80, "targetPort": port}]}
    }))
    .unwrap();
    ns.apply(&service).await;
    let slice: k8s_openapi::api::discovery::v1::EndpointSlice =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "holder-1", "namespace": ns.name,
                         "labels": {"kubernetes.io/service-name": "holder"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [node]}],
            "ports": [{"port": port, "protocol": "TCP"}]
        }))
        .unwrap();
    ns.apply(&slice).await;
    let target = format!("http://holder.{}.svc/hooks", ns.name);
    ns.apply_webhook(&pooled(
        "noisy",
        "membrane",
        &format!(
            ", eventTypes: [user-invited-to-org], \
             sinks: {{events: false, forward: {{url: '{target}'}}}}, \
             limits: {{requestTimeoutSeconds: 20}}"
        ),
    ))
    .await;
    ns.apply_webhook(&pooled(
        "quiet",
        "membrane",
        ", eventTypes: [org-created], sinks: {events: false, configMap: {name: orgs}}",
    ))
    .await;
    for name in ["noisy", "quiet"] {
        ns.webhook_ready(name, "True", "ReceiverAvailable").await;
    }
    let base = pool_url(&ns).await;
    let (noisy_url, quiet_url) = (format!("{base}/noisy"), format!("{base}/quiet"));
    let noisy = generated_secret_file(&ns, "noisy").await;
    let quiet = generated_secret_file(&ns, "quiet").await;
    // The pool answers on both paths before the trouble starts.
    send_eventually(&quiet_url, "membrane", quiet.path(), MEMBRANE, &[]);

    // Trouble on `noisy`: valid deliveries its forward target holds...
    let stuck: Vec<_> = (0..8)
        .map(|i| {
            let body = INVITED.replace("org456", &format!("stuck{i}"));
            let headers = membrane_signed(noisy.path(), &body);
            let url = noisy_url.clone();
            tokio::spawn(async move { post(&url, &headers, body.into_bytes()).await })
        })
        .collect();
    eventually(
        "the forward target holds noisy's deliveries",
        Duration::from_secs(30),
        || {
            let n = held.load(Ordering::SeqCst);
            async move { if n >= 1 { Ok(()) } else { Err(n) } }
        },
    )
    .await;
    // ...and a flood of forged ones.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|i| {
            let (url, stop) = (noisy_url.clone(), stop.clone());
            tokio::spawn(async move {
                let mut answers = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let body = INVITED.replace("org456", &format!("forged{i}-{n}"));
                    let headers = vec![
                        ("x-signature".to_string(), "00".repeat(32)),
                        ("content-type".to_string(), "application/json".to_string()),
                    ];
                    answers.push(
                        post(&url, &headers, body.into_bytes())
                            .await
                            .map(|a| a.status),
                    );
                    n += 1;
                }
                answers
            })
        })
        .collect();

    // `quiet` meanwhile: every delivery answered 2xx while noisy's still wait.
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let sent: Vec<String> = (0..30).map(|i| format!("quiet{i}")).collect();
    for chunk in sent.chunks(6) {
        let answers: Vec<_> = chunk
            .iter()
            .map(|org| {
                let body = MEMBRANE.replace("org456", org);
                let headers = membrane_signed(quiet.path(), &body);
                let url = quiet_url.clone();
                tokio::spawn(async move {
                    let t = Instant::now();
                    (post(&url, &headers, body.into_bytes()).await, t.elapsed())
                })
            })
            .collect();
        for a in answers {
            let (answer, took) = a.await.unwrap();
            let answer = answer.expect("quiet answered");
            assert!(
                (200..300).contains(&answer.status),
                "a delivery to quiet refused during noisy's trouble: {answer:?}"
            );
            slowest = slowest.max(took);
        }
    }
    let all_quiet = started.elapsed();
    let waiting = stuck.iter().filter(|s| !s.is_finished()).count();
    assert!(
        waiting > 0,
        "noisy's stuck deliveries were answered before quiet's: the test proves nothing"
    );
    eprintln!(
        "30 deliveries to quiet answered in {all_quiet:?} (slowest {slowest:?}) while {waiting} \
         of noisy's were held by its forward target ({} connections) and a flood hit its path",
        held.load(Ordering::SeqCst)
    );
    stop.store(true, Ordering::SeqCst);
    let mut forged = 0;
    for f in flood {
        for answer in f.await.unwrap() {
            let status = answer.expect("a forged delivery answered");
            assert_eq!(status, 401, "a forged delivery");
            forged += 1;
        }
    }
    assert!(forged > 0);
    eprintln!("{forged} forged deliveries to noisy, each answered 401");
    for s in stuck {
        let answer = s.await.unwrap().expect("noisy answered in the end");
        assert!(
            !(200..300).contains(&answer.status),
            "acknowledged though its forward target never answered: {answer:?}"
        );
    }
    holder.abort();

    // Every delivery acknowledged to quiet is recorded, once.
    let mut orgs = recorded_org_ids(&ns, "orgs").await;
    orgs.retain(|o| o.starts_with("quiet"));
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(orgs, expected);
}
