//! Every file in examples/ applied with `kubectl apply`, as a user would, each into its own
//! namespace: its Webhooks become Ready and a delivery signed as the sender signs is
//! recorded. The only change made to a file is the one this cluster needs: the stand-in
//! application's image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use hookwarden_operator::crd::Webhook;
use hookwarden_tests::*;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;

fn example(name: &str) -> (PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    (path, text)
}

/// The Webhooks of an example file.
fn webhooks(text: &str) -> Vec<Webhook> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(text).expect("YAML");
    docs.into_iter()
        .filter(|d| d["kind"] == "Webhook")
        .map(|d| serde_json::from_value(d).expect("a Webhook"))
        .collect()
}

/// `kubectl apply -f -` of `text` into the namespace.
fn kubectl_apply(ns: &TestNamespace, text: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let (ok, out) = kubectl(&["apply", "-n", &ns.name, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "kubectl apply: {out}");
}

/// Creates the Secrets an example's Webhooks reference, as its comments tell users to;
/// returns a file holding the value of the main one.
async fn create_referenced_secrets(
    ns: &TestNamespace,
    webhook: &Webhook,
) -> Option<tempfile::NamedTempFile> {
    let r = webhook.spec.secret_ref.as_ref()?;
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).unwrap();
    let value = format!("whsec_{}", hex::encode(bytes));
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(r.name.clone()),
            ..Default::default()
        },
        string_data: Some([(r.key.clone(), value.clone())].into()),
        ..Default::default()
    };
    ns.apply(&secret).await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), value).unwrap();
    Some(file)
}

/// Applies the example, waits until each Webhook is Ready; returns the Webhooks with a
/// file holding each one's signing secret.
async fn apply_example(ns: &TestNamespace, text: &str) -> Vec<(Webhook, tempfile::NamedTempFile)> {
    let mut out = Vec::new();
    let mut referenced = Vec::new();
    for w in webhooks(text) {
        referenced.push(create_referenced_secrets(ns, &w).await);
    }
    kubectl_apply(ns, text);
    for (w, secret) in webhooks(text).into_iter().zip(referenced) {
        let name = w.metadata.name.clone().unwrap();
        ns.webhook_ready(&name, "True", "ReceiverAvailable").await;
        let secret = match secret {
            Some(file) => file,
            None => generated_secret_file(ns, &name).await,
        };
        out.push((w, secret));
    }
    out
}

/// Applies an Opal example and sends it one signed access change, which its `state`
/// ConfigMap then holds.
async fn opal_example_records_state(ns: &TestNamespace, text: &str) {
    let applied = apply_example(ns, text).await;
    let (webhook, secret) = &applied[0];
    let url = service_url(ns, webhook.metadata.name.as_deref().unwrap()).await;
    let body = r#"{"event_ts":1700000000,"organization_id":"org","events":[{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"r1","access_level":"admin"}]}"#;
    let out = send_eventually(&url, "opal", secret.path(), body, &[]);
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let state = config_map_json(ns, "opal-access", "opal.json").await;
    assert!(state.to_string().contains("user@example.com"), "{state}");
}

#[tokio::test]
async fn opal_example_records_state_and_owns_its_route() {
    let ns = TestNamespace::new("ex-opal").await;
    let (_, text) = example("opal.yaml");
    opal_example_records_state(&ns, &text).await;

    // (tests/e2e.sh installs the Gateway API CRDs; no Gateway controller runs here)
    let routes = http_routes(&ns);
    let route = route_eventually(&routes, "opal-receiver").await;
    assert_eq!(route.data["spec"]["hostnames"][0], "hooks.example.com");
    assert_eq!(route.data["spec"]["parentRefs"][0]["namespace"], "gateways");
    let w: Webhook = eventually("the external URL", CONVERGE, || async {
        let w: Webhook = ns.api().get("opal").await.map_err(|e| e.to_string())?;
        match w.status.as_ref().and_then(|s| s.external_url.as_deref()) {
            Some(u) if u.ends_with("://hooks.example.com/opal") => Ok(w),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let conditions = w.status.unwrap().conditions;
    let accepted = conditions
        .iter()
        .find(|c| c.type_ == "RouteAccepted")
        .unwrap();
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "Pending")
    );
}

#[tokio::test]
async fn opal_ingress_example_records_state_and_owns_its_ingress() {
    let ns = TestNamespace::new("ex-opal-ing").await;
    let (_, text) = example("opal-ingress.yaml");
    opal_example_records_state(&ns, &text).await;

    let ingress: Ingress = ns.api().get("opal-receiver").await.unwrap();
    let rule = &ingress.spec.unwrap().rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("hooks.example.com"));
    let w: Webhook = ns.api().get("opal").await.unwrap();
    assert_eq!(
        w.status.unwrap().external_url.as_deref(),
        Some("https://hooks.example.com/opal")
    );
}

#[tokio::test]
async fn membrane_example_records_state() {
    let ns = TestNamespace::new("ex-membrane").await;
    let (_, text) = example("membrane.yaml");
    let applied = apply_example(&ns, &text).await;
    let (webhook, secret) = &applied[0];
    let url = service_url(&ns, webhook.metadata.name.as_deref().unwrap()).await;
    let body = r#"{"type":"org-created","name":"Acme","workspaceName":"Main","orgId":"org9","org":{"id":"org9","name":"Acme","domains":["acme.test"],"trialEndDate":"2026-12-31"},"user":{"name":"Ada","email":"ada@acme.test"}}"#;
    let out = send_eventually(&url, "membrane", secret.path(), body, &[]);
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let state = config_map_json(&ns, "membrane-orgs", "membrane.json").await;
    assert!(state.to_string().contains("org9"), "{state}");
}

#[tokio::test]
async fn github_example_records_the_latest_payload() {
    let ns = TestNamespace::new("ex-github").await;
    let (_, text) = example("github.yaml");
    let applied = apply_example(&ns, &text).await;
    let (webhook, secret) = &applied[0];
    let url = service_url(&ns, webhook.metadata.name.as_deref().unwrap()).await;
    let body = r#"{"ref":"refs/heads/main","after":"abc123"}"#;
    let out = send_eventually(
        &url,
        "github",
        secret.path(),
        body,
        &["--header", "X-GitHub-Event: push"],
    );
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let latest = config_map_json(&ns, "github-latest", "push.json").await;
    assert_eq!(latest["after"], "abc123", "{latest}");
    // An event type the example does not accept is acknowledged, not recorded.
    let (ok, out) = send(
        &url,
        "github",
        secret.path(),
        r#"{"zen":"hi"}"#,
        &["--header", "X-GitHub-Event: ping"],
    );
    assert!(
        ok && out.starts_with("200") && !out.contains("recorded"),
        "{out}"
    );
}

#[tokio::test]
async fn generic_hmac_example_verifies_its_layout() {
    let ns = TestNamespace::new("ex-generic").await;
    let (_, text) = example("generic-hmac.yaml");
    let applied = apply_example(&ns, &text).await;
    let (webhook, secret) = &applied[0];
    let url = service_url(&ns, webhook.metadata.name.as_deref().unwrap()).await;
    // The layout file the example's comment describes: its genericHmac block.
    let layout = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        layout.path(),
        serde_json::to_string(&webhook.spec.generic_hmac).unwrap(),
    )
    .unwrap();
    let args = ["--generic-hmac", layout.path().to_str().unwrap()];
    let body = r#"{"type":"invoice.created","id":"in_1"}"#;
    let out = send_eventually(&url, "generic-hmac", secret.path(), body, &args);
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let log = config_map_json(&ns, "acme-log", "log.json").await;
    assert!(log.to_string().contains("in_1"), "{log}");
}

#[tokio::test]
async fn forward_example_hands_verified_deliveries_to_the_application() {
    let ns = TestNamespace::new("ex-forward").await;
    let (_, text) = example("forward.yaml");
    // The stand-in application for the placeholder image; the forward URL stays as written
    // (`http://billing:8080/...`, resolved by the cluster's DNS in the receiver's pod).
    let text = text.replace("ghcr.io/example/billing:1.0", "hookwarden-e2e-app:dev");
    let applied = apply_example(&ns, &text).await;
    let svc: Service = ns.api().get("billing").await.unwrap();
    let ip = svc.spec.unwrap().cluster_ip.unwrap();
    let (webhook, secret) = &applied[0];
    let url = service_url(&ns, webhook.metadata.name.as_deref().unwrap()).await;

    let body = r#"{"id":"evt_42","type":"invoice.paid","data":{"object":{"id":"in_42"}}}"#;
    let out = eventually(
        "the application answers through the receiver",
        CONVERGE,
        || async {
            let (ok, out) = send(&url, "stripe", secret.path(), body, &[]);
            if ok { Ok(out) } else { Err(out) }
        },
    )
    .await;
    assert!(out.starts_with("200"), "{out}");
    let received = eventually("the application received it", CONVERGE, || async {
        let (status, text) = http_get(&ip, 8080, "/received")
            .await
            .map_err(|e| e.to_string())?;
        let all: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match (status, all.as_array().map(Vec::len)) {
            (200, Some(1)) => Ok(all[0].clone()),
            other => Err(format!("{other:?}: {text}")),
        }
    })
    .await;
    assert_eq!(received["path"], "/webhooks/stripe");
    assert_eq!(received["body"], body);
    assert_eq!(received["webhook"], format!("{}/stripe", ns.name));
    assert_eq!(received["eventTypes"], "invoice.paid");
    assert_eq!(received["contentType"], "application/json");

    // A tampered delivery never reaches the application.
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "whsec_not-the-secret").unwrap();
    let (ok, out) = send(&url, "stripe", wrong.path(), body, &[]);
    assert!(!ok && out.starts_with("401"), "{out}");
    let (_, text) = http_get(&ip, 8080, "/received").await.unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{text}");
}

#[tokio::test]
async fn sidecar_example_runs_in_the_application_pod() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = TestNamespace::new("ex-sidecar").await;
    let (_, text) = example("sidecar.yaml");
    let text = text.replace("ghcr.io/example/storefront:1.0", "hookwarden-e2e-app:dev");
    let applied = apply_example(&ns, &text).await;
    let (webhook, secret) = &applied[0];
    // The Deployment is as applied (and kubectl diff of the example is empty: apply_example);
    // its pods carry the receiver as a native sidecar.
    let app: Deployment = ns.api().get("storefront").await.unwrap();
    assert_eq!(app.metadata.generation, Some(1));
    let pod = app.spec.unwrap().template.spec.unwrap();
    let names: Vec<&str> = pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["app"]);
    assert!(pod.init_containers.is_none());
    let running: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    for p in running
        .list(&kube::api::ListParams::default().labels("app=storefront"))
        .await
        .unwrap()
        .items
    {
        let spec = p.spec.unwrap();
        let init = spec.init_containers.unwrap_or_default();
        let sidecars: Vec<(&str, Option<&str>)> = init
            .iter()
            .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
            .collect();
        assert_eq!(sidecars, [("hookwarden-shopify", Some("Always"))]);
    }

    let url = service_url(&ns, webhook.metadata.name.as_deref().unwrap()).await;
    let body = r#"{"id":820982911946154508,"email":"jon@example.com"}"#;
    let out = send_eventually(
        &url,
        "shopify",
        secret.path(),
        body,
        &["--header", "X-Shopify-Topic: orders/create"],
    );
    assert!(out.starts_with("200"), "{out}");
    // The application saw it: ask it through its pod (it has no Service in the example).
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let list = pods
        .list(&kube::api::ListParams::default().labels("app=storefront"))
        .await
        .unwrap();
    let received = eventually(
        "the application received the delivery",
        CONVERGE,
        || async {
            for p in &list.items {
                let Some(ip) = p.status.as_ref().and_then(|s| s.pod_ip.clone()) else {
                    continue;
                };
                if let Ok((200, text)) = http_get(&ip, 8080, "/received").await {
                    let all: serde_json::Value =
                        serde_json::from_str(&text).map_err(|e| e.to_string())?;
                    if all.as_array().map(Vec::len) == Some(1) {
                        return Ok(all[0].clone());
                    }
                }
            }
            Err("not yet".to_string())
        },
    )
    .await;
    assert_eq!(received["path"], "/webhooks/shopify");
    assert_eq!(received["eventTypes"], "orders/create");
    assert_eq!(received["body"], body);
}
