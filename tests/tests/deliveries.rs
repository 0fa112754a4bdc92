//! Deliveries end to end: signed as each sender signs, sent with `hookwarden-receiver send`
//! to the receiver pods the operator runs, through their Service, recorded as Events by the
//! receiver under its own ServiceAccount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hookwarden_tests::*;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::ListParams;

/// The seed's six Opal event types in one delivery, as Opal batches them.
const OPAL_ALL: &str = r#"{"event_ts":1643355931,"organization_id":"eec5dcd9-fb0a-4726-b283-4379b524a772","events":[
{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"},
{"event_type":"USER_REMOVED_FROM_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"},
{"event_type":"USER_ADDED_TO_GROUP","group_type":"CONNECTOR_GROUP","user_id":"user@example.com","group_id":"00g1835ro5hxRmpel5d7"},
{"event_type":"USER_REMOVED_FROM_GROUP","group_type":"CONNECTOR_GROUP","user_id":"user@example.com","group_id":"00g1838z8y1VJcoTG5d7"},
{"event_type":"RESOURCE_ADDED_TO_GROUP","group_type":"CONNECTOR_GROUP","resource_type":"CUSTOM","group_id":"00g1838z8y1VJcoTG5d7","resource_id":"0eb35db24007c8148"},
{"event_type":"RESOURCE_REMOVED_FROM_GROUP","group_type":"CONNECTOR_GROUP","resource_type":"CUSTOM","group_id":"00g1838z8y1VJcoTG5d7","resource_id":"0eb35db24007c8148"}]}"#;

const MEMBRANE: [&str; 3] = [
    r#"{"type":"user-invited-to-org","invitationUrl":"https://console.yourdomain.com/org-invitations/12345","issuer":{"name":"John Admin","email":"admin@company.com"},"user":{"email":"newuser@company.com"},"org":{"id":"org123","name":"My Organization","trialEndDate":"2025-05-16"}}"#,
    r#"{"type":"org-access-requested","user":{"id":"user123","email":"employee@company.com","name":"Jane Employee"},"orgAdmins":[{"email":"admin@company.com","orgs":[{"id":"org123","name":"My Organization"}]}]}"#,
    r#"{"type":"org-created","name":"New Organization","workspaceName":"Main Workspace","orgId":"org456","org":{"id":"org456","name":"New Organization","domains":["company.com"],"trialEndDate":"2025-05-23"},"user":{"name":"Creator User","email":"creator@company.com"}}"#,
];

async fn recorded_reasons(ns: &TestNamespace, webhook: &str) -> Vec<(String, String)> {
    let api: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let mut v: Vec<(String, String)> = api
        .list(&ListParams::default().labels(&format!("hookwarden.io/webhook={webhook}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("hookwarden.io/receiver"))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn opal_deliveries_become_events_once() {
    let ns = TestNamespace::new("opal-deliver").await;
    let (url, secret) = ready_receiver(&ns, "opal", "opal", "").await;

    let out = send_eventually(&url, "opal", secret.path(), OPAL_ALL, &[]);
    assert_eq!(out, r#"200 {"events":6,"status":"recorded"}"#);
    let reasons = recorded_reasons(&ns, "opal").await;
    let names: Vec<&str> = reasons.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        [
            "ResourceAddedToGroup",
            "ResourceRemovedFromGroup",
            "UserAddedToGroup",
            "UserAddedToResource",
            "UserRemovedFromGroup",
            "UserRemovedFromResource"
        ]
    );
    assert!(
        reasons
            .iter()
            .any(|(_, n)| n == "user@example.com added to resource 0eb35db24007c8148 as admin"),
        "{reasons:?}"
    );

    // The same delivery again, signed at the same time: one record.
    let ts = "--timestamp";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let one = r#"{"event_ts":1,"organization_id":"o","events":[{"event_type":"USER_ADDED_TO_GROUP","group_type":"G","user_id":"again@example.com","group_id":"g9"}]}"#;
    let first = send_eventually(&url, "opal", secret.path(), one, &[ts, &now]);
    assert!(first.starts_with("200"), "{first}");
    let (ok, second) = send(&url, "opal", secret.path(), one, &[ts, &now]);
    assert!(ok && second.starts_with("200"), "{second}");
    let again: Vec<_> = recorded_reasons(&ns, "opal")
        .await
        .into_iter()
        .filter(|(_, n)| n.contains("again@"))
        .collect();
    assert_eq!(again.len(), 1, "{again:?}");

    // Tampered: signed with another secret, or too old. Refused, nothing recorded.
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "not-the-secret").unwrap();
    let before = recorded_reasons(&ns, "opal").await.len();
    let (ok, out) = send(
        &url,
        "opal",
        wrong.path(),
        OPAL_ALL.replace("admin", "owner").as_str(),
        &[],
    );
    assert!(!ok && out.starts_with("401"), "{out}");
    let (ok, out) = send(&url, "opal", secret.path(), one, &[ts, "1643355931"]);
    assert!(!ok && out.starts_with("401"), "{out}");
    assert_eq!(recorded_reasons(&ns, "opal").await.len(), before);
}

/// A client inside the cluster reaches a Webhook at its `status.url` as written: the
/// Service's name, resolved by the cluster's DNS. The sender is a pod (the receiver image's
/// `send`, under the restricted profile) with the generated secret mounted.
#[tokio::test]
async fn a_pod_delivers_to_status_url_by_name() {
    use k8s_openapi::api::core::v1::{ConfigMap, Pod};
    let ns = TestNamespace::new("dns").await;
    let (_, _secret) = ready_receiver(&ns, "membrane", "membrane", "").await;
    let webhook: hookwarden_operator::crd::Webhook = ns.api().get("membrane").await.unwrap();
    let url = webhook.status.unwrap().url.unwrap();
    assert_eq!(
        url,
        format!("http://membrane-receiver.{}.svc/membrane", ns.name)
    );
    let body: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "body"},
        "data": {"body.json": MEMBRANE[2]}
    }))
    .unwrap();
    ns.apply(&body).await;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sender"},
        "spec": {
            "restartPolicy": "OnFailure",
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "send",
                "image": "hookwarden-receiver:dev",
                "imagePullPolicy": "Never",
                "args": ["send", url, "--provider", "membrane",
                         "--secret-file", "/secret/secret", "--body-file", "/body/body.json"],
                "securityContext": {"allowPrivilegeEscalation": false,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "secret", "mountPath": "/secret", "readOnly": true},
                                 {"name": "body", "mountPath": "/body", "readOnly": true}]
            }],
            "volumes": [{"name": "secret", "secret": {"secretName": "membrane-signing-secret"}},
                        {"name": "body", "configMap": {"name": "body"}}]
        }
    }))
    .unwrap();
    let pods = ns.api::<Pod>();
    pods.create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap();
    eventually("the sender pod succeeds", CONVERGE, || {
        let pods = pods.clone();
        async move {
            let p = pods.get("sender").await.map_err(|e| e.to_string())?;
            match p.status.and_then(|s| s.phase).as_deref() {
                Some("Succeeded") => Ok(()),
                other => Err(format!(
                    "{other:?}: {}",
                    pods.logs("sender", &Default::default())
                        .await
                        .unwrap_or_default()
                )),
            }
        }
    })
    .await;
    let log = pods.logs("sender", &Default::default()).await.unwrap();
    assert!(
        log.contains(r#"200 {"events":1,"status":"recorded"}"#),
        "{log}"
    );
    let reasons = recorded_reasons(&ns, "membrane").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "OrgCreated");
}

#[tokio::test]
async fn membrane_deliveries_become_events() {
    let ns = TestNamespace::new("membrane-deliver").await;
    let (url, secret) = ready_receiver(&ns, "membrane", "membrane", "").await;
    for body in MEMBRANE {
        let out = send_eventually(&url, "membrane", secret.path(), body, &[]);
        assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    }
    // Membrane never retries, but a replayed body must not be recorded twice.
    let (ok, out) = send(&url, "membrane", secret.path(), MEMBRANE[2], &[]);
    assert!(ok && out.contains("duplicate"), "{out}");
    let reasons = recorded_reasons(&ns, "membrane").await;
    let names: Vec<&str> = reasons.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        ["OrgAccessRequested", "OrgCreated", "UserInvitedToOrg"]
    );
    assert!(
        reasons
            .iter()
            .any(|(_, n)| n
                == "organization New Organization (org456) created by creator@company.com")
    );
}

#[tokio::test]
async fn every_other_provider_round_trips() {
    let ns = TestNamespace::new("providers").await;
    let generic = ", genericHmac: {header: X-Acme-Signature, algorithm: sha512, encoding: base64, prefix: 'sha512=', timestampHeader: X-Acme-Timestamp, template: '{timestamp}.{body}'}";
    let layout = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(layout.path(), "{header: X-Acme-Signature, algorithm: sha512, encoding: base64, prefix: 'sha512=', timestampHeader: X-Acme-Timestamp, template: '{timestamp}.{body}'}").unwrap();
    let layout_path = layout.path().to_str().unwrap().to_string();
    let cases: Vec<(&str, &str, String, Vec<String>, &str)> = vec![
        (
            "github",
            "",
            r#"{"zen":"hi"}"#.into(),
            vec!["--header".into(), "X-GitHub-Event: push".into()],
            "Push",
        ),
        (
            "slack",
            "",
            r#"{"type":"event_callback"}"#.into(),
            vec![],
            "EventCallback",
        ),
        (
            "stripe",
            "",
            r#"{"id":"evt_1","type":"invoice.paid"}"#.into(),
            vec![],
            "InvoicePaid",
        ),
        (
            "standard-webhooks",
            "",
            r#"{"type":"user.created"}"#.into(),
            vec![],
            "UserCreated",
        ),
        (
            "shopify",
            "",
            r#"{"id":1}"#.into(),
            vec!["--header".into(), "X-Shopify-Topic: orders/create".into()],
            "OrdersCreate",
        ),
        (
            "gitlab",
            "",
            r#"{"object_kind":"push"}"#.into(),
            vec!["--header".into(), "X-Gitlab-Event: Push Hook".into()],
            "PushHook",
        ),
        (
            "generic-hmac",
            generic,
            r#"{"type":"thing.happened"}"#.into(),
            vec!["--generic-hmac".into(), layout_path.clone()],
            "ThingHappened",
        ),
    ];
    let mut receivers = Vec::new();
    for (provider, extra, _, _, _) in &cases {
        let name = format!("p-{provider}");
        ns.apply_webhook(&format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
             spec: {{path: /{name}, provider: {provider}{extra}}}\n"
        ))
        .await;
        receivers.push(name);
    }
    for ((provider, extra, body, args, reason), name) in cases.iter().zip(&receivers) {
        let (url, secret) = ready_receiver(&ns, name, provider, extra).await;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = send_eventually(&url, provider, secret.path(), body, &args);
        assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#, "{provider}");
        let recorded = recorded_reasons(&ns, name).await;
        assert_eq!(recorded.len(), 1, "{provider}: {recorded:?}");
        assert_eq!(recorded[0].0, *reason, "{provider}");
        // and a wrong secret is refused
        let wrong = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            wrong.path(),
            "whsec_d3Jvbmctc2VjcmV0LXZhbHVlLTAxMjM0NTY3ODk=",
        )
        .unwrap();
        let (ok, out) = send(&url, provider, wrong.path(), body, &args);
        assert!(!ok && out.starts_with("401"), "{provider}: {out}");
    }
}

fn secret_object(name: &str, value: &str) -> Secret {
    let mut data = std::collections::BTreeMap::new();
    data.insert(
        "secret".to_string(),
        k8s_openapi::ByteString(value.as_bytes().to_vec()),
    );
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

fn secret_file(value: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), value).unwrap();
    file
}

/// Every active secret verifies; a Secret changed in place reaches the running pods through
/// the kubelet's volume refresh, and the receiver follows without a restart.
#[tokio::test]
async fn secrets_rotate_without_a_restart() {
    let ns = TestNamespace::new("rotate").await;
    ns.apply(&secret_object("current", "current-secret-0123456789abcdef"))
        .await;
    ns.apply(&secret_object("next", "next-secret-0123456789abcdef"))
        .await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: rot}\n\
         spec: {path: /rot, provider: membrane, secretRef: {name: current, key: secret},\n\
         additionalSecretRefs: [{name: next, key: secret}]}\n",
    )
    .await;
    ns.webhook_ready("rot", "True", "ReceiverAvailable").await;
    let svc: Service = ns.api().get("rot-receiver").await.unwrap();
    let url = format!("http://{}/rot", svc.spec.unwrap().cluster_ip.unwrap());
    let pods_before = receiver_pods(&ns, "rot").await;

    let current = secret_file("current-secret-0123456789abcdef");
    let next = secret_file("next-secret-0123456789abcdef");
    let rotated = secret_file("rotated-secret-0123456789abcdef");
    let out = send_eventually(&url, "membrane", current.path(), MEMBRANE[0], &[]);
    assert!(out.starts_with("200"), "{out}");
    let out = send_eventually(&url, "membrane", next.path(), MEMBRANE[1], &[]);
    assert!(out.starts_with("200"), "{out}");
    let (ok, out) = send(&url, "membrane", rotated.path(), MEMBRANE[2], &[]);
    assert!(!ok && out.starts_with("401"), "not yet valid: {out}");

    // Rotate `current` in place.
    ns.apply(&secret_object("current", "rotated-secret-0123456789abcdef"))
        .await;
    eventually(
        "the rotated secret to be accepted",
        std::time::Duration::from_secs(180),
        || async {
            let (ok, out) = send(&url, "membrane", rotated.path(), MEMBRANE[2], &[]);
            if ok { Ok(()) } else { Err(out) }
        },
    )
    .await;
    let (ok, out) = send(&url, "membrane", current.path(), MEMBRANE[2], &[]);
    assert!(
        !ok && out.starts_with("401"),
        "old secret still valid: {out}"
    );
    let (ok, out) = send(&url, "membrane", next.path(), MEMBRANE[0], &[]);
    assert!(ok, "additional secret no longer valid: {out}");
    assert_eq!(
        receiver_pods(&ns, "rot").await,
        pods_before,
        "the receiver pods were replaced or restarted"
    );
}

#[tokio::test]
async fn opal_deliveries_become_configmap_state_once() {
    let ns = TestNamespace::new("opal-state").await;
    let (url, secret) = ready_receiver(
        &ns,
        "opal",
        "opal",
        ", sinks: {events: false, configMap: {name: opal-access}}",
    )
    .await;
    let added = r#"{"event_ts":1643355000,"organization_id":"o","events":[
{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"},
{"event_type":"USER_ADDED_TO_GROUP","group_type":"CONNECTOR_GROUP","user_id":"user@example.com","group_id":"00g1838z8y1VJcoTG5d7"},
{"event_type":"RESOURCE_ADDED_TO_GROUP","group_type":"CONNECTOR_GROUP","resource_type":"CUSTOM","group_id":"00g1838z8y1VJcoTG5d7","resource_id":"0eb35db24007c8148"}]}"#;
    let out = send_eventually(&url, "opal", secret.path(), added, &[]);
    assert_eq!(out, r#"200 {"events":3,"status":"recorded"}"#);
    let state = config_map_json(&ns, "opal-access", "opal.json").await;
    assert_eq!(state["resourceAccess"][0]["userId"], "user@example.com");
    assert_eq!(state["resourceAccess"][0]["accessLevel"], "admin");
    assert_eq!(state["groupMembers"][0]["groupId"], "00g1838z8y1VJcoTG5d7");
    assert_eq!(
        state["groupResources"][0]["resourceId"],
        "0eb35db24007c8148"
    );

    // The seed's six types, later: three removals and one more membership.
    let out = send_eventually(&url, "opal", secret.path(), OPAL_ALL, &[]);
    assert!(out.starts_with("200"), "{out}");
    let state = config_map_json(&ns, "opal-access", "opal.json").await;
    assert_eq!(
        state["resourceAccess"].as_array().unwrap().len(),
        0,
        "{state}"
    );
    assert_eq!(
        state["groupResources"].as_array().unwrap().len(),
        0,
        "{state}"
    );
    let members: Vec<&str> = state["groupMembers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["groupId"].as_str().unwrap())
        .collect();
    assert_eq!(members, ["00g1835ro5hxRmpel5d7"], "{state}");

    // A late delivery of the first, older changes does not bring them back.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let late = added.replace("1643355000", "1643355001");
    let (ok, out) = send(&url, "opal", secret.path(), &late, &["--timestamp", &now]);
    assert!(ok, "{out}");
    let again = config_map_json(&ns, "opal-access", "opal.json").await;
    assert_eq!(again["resourceAccess"], state["resourceAccess"], "{again}");
    // The same delivery replayed: applied once (the bookkeeping remembers it).
    let (ok, out) = send(&url, "opal", secret.path(), &late, &["--timestamp", &now]);
    assert!(ok, "{out}");
    let book = config_map_json(&ns, "opal-access", "hookwarden.json").await;
    assert_eq!(book["applied"].as_array().unwrap().len(), 3, "{book}");
}

/// Two receiver pods, concurrent deliveries to one ConfigMap: every one applied, none lost.
#[tokio::test]
async fn concurrent_deliveries_through_two_replicas_lose_nothing() {
    const N: usize = 16;
    let ns = TestNamespace::new("cm-concurrent").await;
    let (url, secret) = ready_receiver(
        &ns,
        "opal",
        "opal",
        ", receiver: {replicas: 2}, sinks: {events: false, configMap: {name: opal-access}}",
    )
    .await;
    // both pods ready
    eventually(
        "two receiver pods",
        std::time::Duration::from_secs(120),
        || async {
            let d: k8s_openapi::api::apps::v1::Deployment =
                ns.api().get("opal-receiver").await.unwrap();
            match d.status.and_then(|s| s.ready_replicas) {
                Some(2) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
    let path = secret.path().to_path_buf();
    let handles: Vec<_> = (0..N)
        .map(|i| {
            let (url, path) = (url.clone(), path.clone());
            std::thread::spawn(move || {
                let body = format!(
                    r#"{{"event_ts":{},"organization_id":"o","events":[{{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user{i}@example.com","resource_id":"r1","access_level":"admin"}}]}}"#,
                    1_700_000_000 + i
                );
                // As a sender would: retry what was not acknowledged.
                for _ in 0..10 {
                    let (ok, out) = send(&url, "opal", &path, &body, &[]);
                    if ok {
                        return out;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(300));
                }
                panic!("delivery {i} never acknowledged");
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(out.starts_with("200"), "{out}");
    }
    let state = config_map_json(&ns, "opal-access", "opal.json").await;
    let mut users: Vec<&str> = state["resourceAccess"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["userId"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users.len(), N, "{state}");
}

/// `spec.sidecar`: the operator adds the receiver to an application's Deployment, the
/// receiver's Service selects the application's pods, verified deliveries reach the
/// application over 127.0.0.1; taking `spec.sidecar` out, or deleting the Webhook, takes
/// the container out again and leaves the application's own fields alone.
#[tokio::test]
async fn a_sidecar_is_injected_forwards_and_is_removed_again() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = TestNamespace::new("sidecar").await;
    let app = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: billing, labels: {app: billing}}
spec:
  replicas: 1
  selector: {matchLabels: {app: billing}}
  template:
    metadata: {labels: {app: billing}}
    spec:
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: app
          image: hookwarden-e2e-app:dev
          imagePullPolicy: Never
          ports: [{name: http, containerPort: 8080}]
          securityContext: {allowPrivilegeEscalation: false, capabilities: {drop: [ALL]}}
---
apiVersion: v1
kind: Service
metadata: {name: billing}
spec:
  selector: {app: billing}
  ports: [{name: http, port: 8080, targetPort: http}]
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), app).unwrap();
    let (ok, out) = kubectl(&["apply", "-n", &ns.name, "-f", file.path().to_str().unwrap()]);
    assert!(ok, "{out}");
    let containers = |ns: &TestNamespace| {
        let api = ns.api::<Deployment>();
        async move {
            let d = api.get("billing").await.expect("get billing");
            let names: Vec<String> = d
                .spec
                .and_then(|s| s.template.spec)
                .map(|p| p.containers.into_iter().map(|c| c.name).collect())
                .unwrap_or_default();
            names
        }
    };
    let webhook = |sidecar: bool| {
        let sidecar = if sidecar {
            ", sidecar: {deployment: billing}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/hooks'}}"
        } else {
            ", sinks: {events: true}"
        };
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: stripe}}\n\
             spec: {{path: /stripe, provider: stripe{sidecar}}}\n"
        )
    };

    ns.apply_webhook(&webhook(true)).await;
    let ready = ns
        .webhook_ready("stripe", "True", "ReceiverAvailable")
        .await;
    assert_eq!(
        ready.status.as_ref().unwrap().sidecar_deployment.as_deref(),
        Some("billing")
    );
    assert_eq!(containers(&ns).await, ["app", "hookwarden-stripe"]);
    assert!(
        ns.api::<Deployment>()
            .get_opt("stripe-receiver")
            .await
            .unwrap()
            .is_none(),
        "no receiver Deployment of its own"
    );
    let svc: Service = ns.api().get("stripe-receiver").await.unwrap();
    assert_eq!(
        svc.spec.as_ref().unwrap().selector.as_ref().unwrap()["app"],
        "billing"
    );

    // A verified delivery reaches the application in the same pod; a forged one does not.
    let secret: Secret = ns.api().get("stripe-signing-secret").await.unwrap();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &secret.data.unwrap()["secret"].0).unwrap();
    let url = format!("http://{}/stripe", svc.spec.unwrap().cluster_ip.unwrap());
    let body = r#"{"id":"evt_7","type":"invoice.paid"}"#;
    let out = send_eventually(&url, "stripe", secret_file.path(), body, &[]);
    assert!(out.starts_with("200"), "{out}");
    let forged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(forged.path(), "whsec_forged").unwrap();
    let (ok, out) = send(&url, "stripe", forged.path(), body, &[]);
    assert!(!ok && out.starts_with("401"), "{out}");
    let app_svc: Service = ns.api().get("billing").await.unwrap();
    let app_ip = app_svc.spec.unwrap().cluster_ip.unwrap();
    let (status, text) = http_get(&app_ip, 8080, "/received").await.unwrap();
    assert_eq!(status, 200);
    let received: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(received.as_array().map(Vec::len), Some(1), "{text}");
    assert_eq!(received[0]["path"], "/hooks");
    assert_eq!(received[0]["body"], body);
    assert_eq!(received[0]["webhook"], format!("{}/stripe", ns.name));

    // Without spec.sidecar the container goes, and the receiver runs in pods of its own.
    ns.apply_webhook(&webhook(false)).await;
    eventually("the sidecar is taken out", CONVERGE, || async {
        match containers(&ns).await.as_slice() {
            [only] if only == "app" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let own = ns
        .webhook_ready("stripe", "True", "ReceiverAvailable")
        .await;
    assert_eq!(own.status.unwrap().sidecar_deployment, None);
    assert!(
        ns.api::<Deployment>()
            .get_opt("stripe-receiver")
            .await
            .unwrap()
            .is_some()
    );

    // Back in, then the Webhook deleted: the cleanup controller takes the container out.
    ns.apply_webhook(&webhook(true)).await;
    eventually("the sidecar is back", CONVERGE, || async {
        let c = containers(&ns).await;
        if c == ["app", "hookwarden-stripe"] {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    ns.delete::<hookwarden_operator::crd::Webhook>("stripe")
        .await;
    eventually(
        "the sidecar is taken out after deletion",
        CONVERGE,
        || async {
            match containers(&ns).await.as_slice() {
                [only] if only == "app" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    // The application's own fields are untouched.
    let d: Deployment = ns.api().get("billing").await.unwrap();
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("hookwarden-e2e-app:dev")
    );
    assert!(pod.volumes.unwrap_or_default().is_empty());
}
