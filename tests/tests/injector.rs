//! The pod admission webhook that injects `spec.sidecar` receivers, as its failure modes
//! look to a user: its certificate rotated under load, and pods created while no operator
//! replica answers. Scales the operator to zero and rewrites its certificate Secret, so
//! `tests/e2e.sh` runs it alone, one test at a time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hookwarden_tests::*;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};

const SECRET: &str = "hookwarden-operator-webhook-tls";
const CONFIGURATION: &str = "hookwarden-operator";

const WEBHOOK: &str = "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: stripe}\n\
    spec: {path: /stripe, provider: stripe, sidecar: {}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/hooks'}}}\n";

fn pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{hookwarden.io/inject: stripe}}}}
spec:
  securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
    - name: app
      image: hookwarden-e2e-app:dev
      imagePullPolicy: Never
      securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#
    )
}

fn certificates(pem: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive("-----END CERTIFICATE-----\n")
        .filter(|c| c.contains("BEGIN CERTIFICATE"))
        .map(str::to_owned)
        .collect()
}

async fn bundle(client: &kube::Client) -> Vec<u8> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let c = api.get(CONFIGURATION).await.unwrap();
    c.webhooks.unwrap()[0]
        .client_config
        .ca_bundle
        .clone()
        .unwrap()
        .0
}

/// A certificate with less than a third of its life left is replaced; the API server's
/// bundle keeps the previous CA, so a replica that has not reloaded yet stays trusted:
/// pods created all through the rotation are admitted with their receiver, at once.
#[tokio::test]
async fn a_rotated_certificate_never_refuses_a_pod() {
    let client = client().await;
    let ns = TestNamespace::new("inject-rotate").await;
    ns.apply_webhook(WEBHOOK).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let before = secrets.get(SECRET).await.unwrap();
    let data = before.data.clone().unwrap();
    let old_ca = certificates(&data["ca.crt"].0)[0].clone();
    assert_eq!(
        bundle(&client).await,
        data["ca.crt"].0,
        "the bundle is the Secret's"
    );

    // A day left of a year's validity: due.
    let soon = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {"hookwarden.io/not-after": soon}}});
    secrets
        .patch(SECRET, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();

    // Pods created every few seconds through the rotation and the replicas' reload.
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
    let mut rotated = None;
    while tokio::time::Instant::now() < deadline {
        let name = format!("app-{i}");
        let (ok, out) = kubectl_stdin(&ns.name, &pod(&name), &[]);
        assert!(ok, "pod {name} refused during the rotation: {out}");
        let p: Pod = ns.api().get(&name).await.unwrap();
        let init = p.spec.unwrap().init_containers.unwrap_or_default();
        assert_eq!(
            init.first().map(|c| c.name.as_str()),
            Some("hookwarden-stripe")
        );
        i += 1;
        if rotated.is_none() {
            let now = secrets.get(SECRET).await.unwrap().data.unwrap();
            if now["tls.crt"] != data["tls.crt"] {
                rotated = Some((now, tokio::time::Instant::now()));
            }
        }
        // Keep going for 30 s after the rotation: both replicas reload within 20 s.
        if let Some((_, at)) = &rotated
            && at.elapsed() > Duration::from_secs(30)
        {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (now, _) = rotated.expect("the certificate was not rotated");
    let cas = certificates(&now["ca.crt"].0);
    assert_eq!(cas.len(), 2, "the new CA and the previous one");
    assert_ne!(cas[0], old_ca);
    assert_eq!(cas[1], old_ca);
    eventually("the bundle follows the Secret", CONVERGE, || async {
        if bundle(&client).await == now["ca.crt"].0 {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    assert!(i >= 10, "only {i} pods created");
}

/// Ok when no pod matches `selector`, else how many do.
async fn none_of(pods: &Api<Pod>, selector: &str) -> Result<(), usize> {
    let n = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .len();
    if n == 0 { Ok(()) } else { Err(n) }
}

/// Scales the operator back up even when a test fails half way.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let (ok, out) = kubectl(&[
            "-n",
            OPERATOR_NAMESPACE,
            "scale",
            "deployment/hookwarden-operator",
            "--replicas=2",
        ]);
        if !ok {
            eprintln!("cannot scale the operator back up: {out}");
        }
    }
}

/// While no operator replica answers, an opted-in pod is refused (failurePolicy Fail),
/// never started without its receiver; its ReplicaSet keeps trying and the pod is created,
/// with the receiver, once the operator is back.
#[tokio::test]
async fn pods_created_while_the_operator_is_down_wait_for_it() {
    let client = client().await;
    let ns = TestNamespace::new("inject-down").await;
    ns.apply_webhook(WEBHOOK).await;
    let _restore = Restore;
    let (ok, out) = kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "scale",
        "deployment/hookwarden-operator",
        "--replicas=0",
    ]);
    assert!(ok, "{out}");
    let operators: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    eventually("no operator pod", CONVERGE, || {
        none_of(&operators, "app.kubernetes.io/name=hookwarden-operator")
    })
    .await;

    // A bare pod is refused outright, saying which webhook did not answer.
    let (ok, out) = kubectl_stdin(&ns.name, &pod("bare"), &[]);
    assert!(!ok, "admitted while the injector is down: {out}");
    assert!(out.contains("inject.hookwarden.io"), "{out}");
    // A Deployment's pods wait.
    let app = billing_deployment(1, ", hookwarden.io/inject: stripe");
    let (ok, out) = kubectl_stdin(&ns.name, &app, &[]);
    assert!(ok, "{out}");
    let refused = eventually("the ReplicaSet reports the refusal", CONVERGE, || async {
        let (_, out) = kubectl(&[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector=reason=FailedCreate",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        if out.contains("inject.hookwarden.io") {
            Ok(out)
        } else {
            Err(out)
        }
    })
    .await;
    assert!(refused.contains("failed calling webhook"), "{refused}");
    let pods: Api<Pod> = ns.api();
    consistently(
        "no pod runs without its receiver",
        Duration::from_secs(5),
        || none_of(&pods, "app=billing"),
    )
    .await;

    drop(_restore);
    let created = eventually("the pod, once the operator is back", CONVERGE, || async {
        let list = pods
            .list(&ListParams::default().labels("app=billing"))
            .await
            .unwrap();
        list.items.into_iter().next().ok_or("none yet")
    })
    .await;
    let init = created.spec.unwrap().init_containers.unwrap_or_default();
    assert_eq!(
        init.first().map(|c| c.name.as_str()),
        Some("hookwarden-stripe")
    );
    ns.webhook_ready("stripe", "True", "ReceiverAvailable")
        .await;
}
