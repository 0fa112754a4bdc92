//! Trust inside a namespace, tried as an attacker would: a Webhook author who may create
//! Webhooks and ordinary objects (ConfigMaps, Secrets, ServiceAccounts) in the namespace,
//! and a sender with nothing but the network. A Webhook touches only what is its own, and
//! no sender can exhaust the pool its neighbours share.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hookwarden_operator::crd::Webhook;
use hookwarden_tests::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{ObjectMeta, Patch, PatchParams};

fn webhook(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec: {spec}\n"
    )
}

fn membrane(org: &str) -> String {
    format!(
        r#"{{"type":"org-created","name":"Org {org}","workspaceName":"Main","orgId":"{org}","org":{{"id":"{org}","name":"Org {org}","domains":["company.com"],"trialEndDate":"2025-05-23"}},"user":{{"name":"Creator","email":"creator@company.com"}}}}"#
    )
}

/// The `Ready` message of a Webhook in `reason`.
async fn not_ready(ns: &TestNamespace, name: &str, reason: &str) -> String {
    let w = ns.webhook_ready(name, "False", reason).await;
    w.ready_condition().unwrap().message.clone()
}

/// An application's ConfigMap named as a sink is neither adopted nor written, and deleting
/// the Webhook does not delete it (garbage collection follows owner references, and the
/// operator never wrote one).
#[tokio::test]
async fn an_applications_configmap_is_never_adopted_nor_deleted() {
    let ns = TestNamespace::new("adopt").await;
    let settings = ConfigMap {
        metadata: ObjectMeta {
            name: Some("app-settings".into()),
            namespace: Some(ns.name.clone()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("feature".into(), "on".into())])),
        ..ConfigMap::default()
    };
    ns.apply(&settings).await;
    ns.apply_webhook(&webhook(
        "settings",
        "{path: /settings, provider: github, sinks: {configMap: {name: app-settings, mode: latest}}}",
    ))
    .await;
    let message = not_ready(&ns, "settings", "NotOwned").await;
    assert!(
        message.contains("ConfigMap \"app-settings\" exists")
            && message.contains("spec.sinks.configMap.name"),
        "{message}"
    );
    let untouched = |cm: ConfigMap| {
        assert_eq!(cm.metadata.owner_references, None, "adopted: {cm:?}");
        assert_eq!(
            cm.data,
            Some(BTreeMap::from([("feature".into(), "on".into())]))
        );
        let managers: Vec<String> = cm
            .metadata
            .managed_fields
            .unwrap_or_default()
            .into_iter()
            .filter_map(|f| f.manager)
            .collect();
        assert_eq!(managers, ["e2e-user"], "only its author wrote it");
    };
    untouched(get(&ns, "app-settings").await.unwrap());

    ns.delete::<Webhook>("settings").await;
    eventually("the Webhook is gone", CONVERGE, || async {
        match get::<Webhook>(&ns, "settings").await {
            None => Ok(()),
            Some(_) => Err("still there"),
        }
    })
    .await;
    // Garbage collection acts within a second or two on this cluster.
    consistently("app-settings stays", Duration::from_secs(10), || async {
        get::<ConfigMap>(&ns, "app-settings")
            .await
            .map(|_| ())
            .ok_or("deleted")
    })
    .await;
    untouched(get(&ns, "app-settings").await.unwrap());
}

/// `<webhook>-receiver` objects made by someone else (a ServiceAccount with rights of its
/// own, say) are not taken over: a Webhook named `ci` does not run its receiver as an
/// existing `ci-receiver`.
#[tokio::test]
async fn a_receivers_objects_made_by_someone_else_are_not_taken_over() {
    let ns = TestNamespace::new("takeover").await;
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("ci-receiver".into()),
            namespace: Some(ns.name.clone()),
            labels: Some(BTreeMap::from([("team".into(), "ci".into())])),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    ns.apply(&sa).await;
    ns.apply_webhook(&webhook(
        "ci",
        "{path: /ci, provider: github, receiver: {replicas: 1}}",
    ))
    .await;
    let message = not_ready(&ns, "ci", "NotOwned").await;
    assert!(
        message.contains("ServiceAccount \"ci-receiver\"")
            && message.contains("rename the Webhook"),
        "{message}"
    );
    let found: ServiceAccount = get(&ns, "ci-receiver").await.unwrap();
    assert_eq!(found.metadata.owner_references, None);
    assert_eq!(
        found.metadata.labels,
        Some(BTreeMap::from([("team".into(), "ci".into())]))
    );
    assert!(
        get::<Deployment>(&ns, "ci-receiver").await.is_none(),
        "a receiver runs as someone else's ServiceAccount"
    );

    // Gone, and the Webhook makes its own.
    ns.delete::<ServiceAccount>("ci-receiver").await;
    ns.webhook_ready("ci", "True", "ReceiverAvailable").await;
    let ours: ServiceAccount = get(&ns, "ci-receiver").await.unwrap();
    let owner = &ours.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("Webhook", Some(true))
    );
}

/// A Secret of the generated secret's name planted before the Webhook is never used: its
/// author could sign deliveries. The pool does not serve the Webhook either.
#[tokio::test]
async fn a_planted_signing_secret_is_never_used() {
    let ns = TestNamespace::new("planted").await;
    let planted = Secret {
        metadata: ObjectMeta {
            name: Some("gh-signing-secret".into()),
            namespace: Some(ns.name.clone()),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(
            "secret".into(),
            "known-to-the-attacker".into(),
        )])),
        ..Secret::default()
    };
    ns.apply(&planted).await;
    ns.apply_webhook(&webhook("gh", "{path: /gh, provider: github}"))
        .await;
    // A neighbour, so that the default pool runs.
    ns.apply_webhook(&webhook("other", "{path: /other, provider: github}"))
        .await;
    ns.webhook_ready("other", "True", "ReceiverAvailable").await;
    let message = not_ready(&ns, "gh", "NotOwned").await;
    assert!(
        message.contains("Secret \"gh-signing-secret\"") && message.contains("spec.secretRef"),
        "{message}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "known-to-the-attacker").unwrap();
    let url = format!("{}/gh", pool_url(&ns).await);
    let (_, out) = send(&url, "github", file.path(), "{\"zen\":\"forged\"}", &[]);
    assert!(
        out.starts_with("404"),
        "the pool serves a planted secret: {out}"
    );
    let config: ConfigMap = get(&ns, "default-pool-config").await.unwrap();
    let served = &config.data.unwrap()["pool.yaml"];
    assert!(!served.contains("gh-signing-secret"), "{served}");
}

/// A Webhook naming another Webhook's sink is in conflict (the older keeps it), is not
/// served, and the other's state is never written; a sink whose ownership is taken away by
/// hand is refused by the receiver (503), never written.
#[tokio::test]
async fn a_webhook_cannot_write_another_webhooks_sink() {
    let ns = TestNamespace::new("sink").await;
    ns.apply_webhook(&webhook(
        "victim",
        "{path: /victim, provider: membrane, sinks: {events: false, configMap: {name: victim-orgs, mode: state}}}",
    ))
    .await;
    ns.webhook_ready("victim", "True", "ReceiverAvailable")
        .await;
    let base = pool_url(&ns).await;
    let victim = generated_secret_file(&ns, "victim").await;
    let out = send_eventually(
        &format!("{base}/victim"),
        "membrane",
        victim.path(),
        &membrane("org-a"),
        &[],
    );
    assert!(out.starts_with("200"), "{out}");
    assert_eq!(recorded_org_ids(&ns, "victim-orgs").await, ["org-a"]);
    let recorded = get::<ConfigMap>(&ns, "victim-orgs").await.unwrap().data;

    // Creation timestamps have a one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ns.apply_webhook(&webhook(
        "attacker",
        "{path: /attacker, provider: github, sinks: {events: false, configMap: {name: victim-orgs, mode: latest}}}",
    ))
    .await;
    let message = not_ready(&ns, "attacker", "Conflict").await;
    assert!(
        message.contains("\"victim\"") && message.contains("ConfigMap \"victim-orgs\""),
        "{message}"
    );
    // (in conflict, it gets no generated secret: its author signs with one of their own)
    let attacker = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(attacker.path(), "the-attackers-own-secret").unwrap();
    let (_, out) = send(
        &format!("{base}/attacker"),
        "github",
        attacker.path(),
        "{\"orgId\":\"evil\"}",
        &["--header", "X-GitHub-Event: push"],
    );
    assert!(
        !out.starts_with("2"),
        "the attacker's delivery was taken: {out}"
    );
    let cm: ConfigMap = get(&ns, "victim-orgs").await.unwrap();
    assert_eq!(cm.data, recorded, "the victim's sink changed");
    let owner = &cm.metadata.owner_references.unwrap()[0];
    assert_eq!(owner.name, "victim", "the sink changed hands");
}

/// A receiver writes only a sink its Webhook controls: once the sink's owner reference is
/// taken away by hand, deliveries are refused (503, so the sender retries), never written,
/// and the Webhook says why. (A receiver of its own: a pool would stop serving the Webhook
/// first, which tests the operator rather than the receiver.)
#[tokio::test]
async fn a_receiver_writes_only_a_sink_it_owns() {
    let ns = TestNamespace::new("ownsink").await;
    ns.apply_webhook(&webhook(
        "solo",
        "{path: /solo, provider: membrane, receiver: {replicas: 1}, sinks: {events: false, configMap: {name: solo-orgs, mode: state}}}",
    ))
    .await;
    ns.webhook_ready("solo", "True", "ReceiverAvailable").await;
    let url = service_url(&ns, "solo").await;
    let file = generated_secret_file(&ns, "solo").await;
    let out = send_eventually(&url, "membrane", file.path(), &membrane("org-a"), &[]);
    assert!(out.starts_with("200"), "{out}");
    ns.api::<ConfigMap>()
        .patch(
            "solo-orgs",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"ownerReferences": null}})),
        )
        .await
        .unwrap();
    eventually(
        "the receiver refuses a sink it does not own",
        CONVERGE,
        || {
            let (_, out) = send(&url, "membrane", file.path(), &membrane("org-b"), &[]);
            async move {
                match out.starts_with("503") {
                    true => Ok(()),
                    false => Err(out),
                }
            }
        },
    )
    .await;
    assert_eq!(recorded_org_ids(&ns, "solo-orgs").await, ["org-a"]);
    let message = not_ready(&ns, "solo", "NotOwned").await;
    assert!(message.contains("ConfigMap \"solo-orgs\""), "{message}");
}

/// What the platform team's guardrails (the chart's defaults) refuse: another receiver
/// image, an Ingress annotation outside the allow list, a pooled forward outside the
/// namespace.
#[tokio::test]
async fn webhooks_outside_the_guardrails_are_not_acted_on() {
    let ns = TestNamespace::new("guard").await;
    for (name, spec, expected) in [
        (
            "image",
            "{path: /image, provider: github, receiver: {image: 'attacker.example/miner:1'}}",
            "spec.receiver.image \"attacker.example/miner:1\" is not an allowed receiver image",
        ),
        (
            "snippet",
            "{path: /snippet, provider: github, receiver: {}, ingress: {host: hooks.example.com, annotations: {nginx.ingress.kubernetes.io/server-snippet: 'return 200;'}}}",
            "nginx.ingress.kubernetes.io/server-snippet",
        ),
        (
            "apiserver",
            "{path: /apiserver, provider: github, sinks: {events: false, forward: {url: 'https://kubernetes.default.svc/api'}}}",
            "spec.sinks.forward.url reaches \"kubernetes.default.svc\"",
        ),
    ] {
        ns.apply_webhook(&webhook(name, spec)).await;
        let message = not_ready(&ns, name, "NotAllowed").await;
        assert!(message.contains(expected), "{name}: {message}");
    }
    let deployments = names::<Deployment>(&ns).await;
    assert!(
        !deployments.iter().any(|d| d == "image-receiver"),
        "{deployments:?}"
    );
    // The pool's configuration leaves the forward out.
    if let Some(config) = get::<ConfigMap>(&ns, "default-pool-config").await {
        let served = &config.data.unwrap()["pool.yaml"];
        assert!(!served.contains("kubernetes.default.svc"), "{served}");
    }
}

/// An application container may not mount the volume that holds the injected receiver's
/// signing secret.
#[tokio::test]
async fn a_pod_cannot_mount_the_injected_receivers_secret() {
    let ns = TestNamespace::new("mount").await;
    ns.apply_webhook(&webhook(
        "stripe",
        "{path: /stripe, provider: stripe, sidecar: {}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/hooks'}}}",
    ))
    .await;
    ns.webhook_ready("stripe", "False", "NoSidecarPods").await;
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: thief, labels: {hookwarden.io/inject: stripe}}
spec:
  securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
  containers:
    - name: app
      image: hookwarden-e2e-app:dev
      imagePullPolicy: Never
      securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
      volumeMounts: [{name: hw-stripe-secret-0, mountPath: /stolen}]
"#;
    let (ok, out) = kubectl_stdin(&ns.name, pod, &[]);
    assert!(!ok, "admitted: {out}");
    assert!(
        out.contains(
            "mounts volume \"hw-stripe-secret-0\", which only the injected receiver may mount"
        ),
        "{out}"
    );
}

/// Per-Webhook limits reach the pool's pods: a rate limit answers 429 with `Retry-After`,
/// a source range the sender is outside of answers 403.
#[tokio::test]
async fn rate_limits_and_source_ranges_protect_a_webhook() {
    let ns = TestNamespace::new("limits").await;
    ns.apply_webhook(&webhook(
        "slow",
        "{path: /slow, provider: github, limits: {requestsPerSecond: 1, burst: 2}}",
    ))
    .await;
    ns.apply_webhook(&webhook(
        "fenced",
        "{path: /fenced, provider: github, limits: {sourceRanges: ['192.0.2.0/24']}}",
    ))
    .await;
    ns.webhook_ready("slow", "True", "ReceiverAvailable").await;
    ns.webhook_ready("fenced", "True", "ReceiverAvailable")
        .await;
    let base = pool_url(&ns).await;
    let slow = generated_secret_file(&ns, "slow").await;
    let fenced = generated_secret_file(&ns, "fenced").await;
    let extra = ["--header", "X-GitHub-Event: ping"];
    // The pool has two pods, each with its bucket: enough deliveries reach one of them.
    let mut answers = Vec::new();
    for i in 0..12 {
        let body = format!("{{\"zen\":\"{i}\"}}");
        let (_, out) = send(
            &format!("{base}/slow"),
            "github",
            slow.path(),
            &body,
            &extra,
        );
        answers.push(out);
    }
    assert!(
        answers.iter().any(|a| a.starts_with("429")),
        "no delivery was rate limited: {answers:?}"
    );
    assert!(answers.iter().any(|a| a.starts_with("200")), "{answers:?}");
    let (_, out) = send(
        &format!("{base}/fenced"),
        "github",
        fenced.path(),
        "{\"zen\":\"x\"}",
        &extra,
    );
    assert!(out.starts_with("403"), "{out}");
}

/// Hundreds of connections that send most of a large body with a forged signature and
/// stall cost the pool's other Webhooks nothing: every valid delivery to a neighbour is
/// answered 2xx and recorded, and no pool pod restarts.
#[tokio::test]
async fn stalled_senders_cannot_exhaust_a_pool() {
    let ns = TestNamespace::new("stall").await;
    ns.apply_webhook(&webhook(
        "neighbour",
        "{path: /neighbour, provider: membrane, eventTypes: [org-created], sinks: {events: false, configMap: {name: orgs, mode: state}}}",
    ))
    .await;
    // A Membrane target: a forged body that is JSON is checked twice (raw, then its
    // JSON.stringify form), the costliest refusal there is.
    ns.apply_webhook(&webhook(
        "target",
        "{path: /target, provider: membrane, eventTypes: [user-invited-to-org]}",
    ))
    .await;
    ns.webhook_ready("neighbour", "True", "ReceiverAvailable")
        .await;
    ns.webhook_ready("target", "True", "ReceiverAvailable")
        .await;
    let base = pool_url(&ns).await;
    let neighbour = generated_secret_file(&ns, "neighbour").await;
    let out = send_eventually(
        &format!("{base}/neighbour"),
        "membrane",
        neighbour.path(),
        &membrane("org-0"),
        &[],
    );
    assert!(out.starts_with("200"), "{out}");
    let before = pool_pods(&ns).await;
    assert!(
        before.iter().all(|(_, _, restarts)| *restarts == 0),
        "{before:?}"
    );

    const CONNECTIONS: usize = 300;
    const ATTACK: Duration = Duration::from_secs(25);
    let addr = format!("{}:80", base.strip_prefix("http://").unwrap());
    let started = Instant::now();
    // Half of them stall mid-body; the other half send whole forged bodies, over and over.
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|i| tokio::spawn(attack(addr.clone(), started + ATTACK, i % 2 == 0)))
        .collect();
    // Let the connections pile up before the neighbour's deliveries.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let url = format!("{base}/neighbour");
    let mut answers = Vec::new();
    for i in 1..=20 {
        let (url, file, body) = (
            url.clone(),
            neighbour.path().to_owned(),
            membrane(&format!("org-{i}")),
        );
        let (_, out) =
            tokio::task::spawn_blocking(move || send(&url, "membrane", &file, &body, &[]))
                .await
                .unwrap();
        answers.push(out);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let sent: usize = futures::future::join_all(attackers)
        .await
        .into_iter()
        .map(Result::unwrap)
        .sum();
    eprintln!(
        "{sent} stalled requests from {CONNECTIONS} connections in {:?}",
        started.elapsed()
    );
    assert!(sent >= CONNECTIONS, "the attack did not run: {sent}");
    let refused: Vec<&String> = answers.iter().filter(|a| !a.starts_with("200")).collect();
    assert!(
        refused.is_empty(),
        "the neighbour's deliveries were refused: {refused:?}"
    );
    let mut expected: Vec<String> = (0..=20).map(|i| format!("org-{i}")).collect();
    expected.sort();
    assert_eq!(recorded_org_ids(&ns, "orgs").await, expected);
    let after = pool_pods(&ns).await;
    assert_eq!(after, before, "a pool pod restarted or was replaced");
}

/// One attacker connection after another until `until`: headers of a 1 MiB Membrane
/// delivery with a forged signature, then most of the body and nothing more (`stall`), or
/// the whole body, JSON that its JSON.stringify form differs from; then waits for the
/// answer or the close. Returns how many requests it started.
async fn attack(addr: String, until: Instant, stall: bool) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const LENGTH: usize = 1_048_000;
    let prefix = b"{\"type\": \"user-invited-to-org\", \"pad\": \"";
    let mut body = prefix.to_vec();
    body.resize(LENGTH - 2, b'a');
    body.extend_from_slice(b"\"}");
    let sent = match stall {
        true => &body[..900_000],
        false => &body[..],
    };
    let mut started = 0;
    while Instant::now() < until {
        let Ok(mut stream) = tokio::net::TcpStream::connect(&addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        started += 1;
        let head = format!(
            "POST /target HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             X-Signature: {}\r\nContent-Length: {LENGTH}\r\n\r\n",
            "0".repeat(64)
        );
        if stream.write_all(head.as_bytes()).await.is_err() {
            continue;
        }
        let _ = stream.write_all(sent).await;
        let mut answer = [0u8; 512];
        let left = until.saturating_duration_since(Instant::now());
        let _ = tokio::time::timeout(left, stream.read(&mut answer)).await;
    }
    started
}
