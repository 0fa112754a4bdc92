//! Deliveries end to end: signed as each sender signs, sent with `hookwarden-receiver send`
//! to the receiver pods the operator runs, through their Service, recorded as Events by the
//! receiver under its own ServiceAccount.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hookwarden_tests::*;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
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
    // Served by the namespace's default pool: its Service.
    assert_eq!(url, format!("http://default-pool.{}.svc/membrane", ns.name));
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
         additionalSecretRefs: [{name: next, key: secret}], receiver: {}}\n",
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

/// A Ready receiver pod of Webhook `webhook`: its name and IP address.
async fn ready_receiver_pods(ns: &TestNamespace, webhook: &str) -> Vec<(String, String)> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let selector =
        format!("app.kubernetes.io/name=hookwarden-receiver,app.kubernetes.io/instance={webhook}");
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap();
    listed
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|p| Some((p.metadata.name?, p.status?.pod_ip?)))
        .collect()
}

/// The pod the writer Lease of Deployment `deployment` names as its holder.
async fn writer_pod(ns: &TestNamespace, deployment: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = ns.api();
    let name = hookwarden_api::names::writer_lease(deployment);
    let lease = leases.get_opt(&name).await.ok()??;
    let holder = lease.spec?.holder_identity?;
    Some(hookwarden_receiver::handoff::Identity::parse(&holder)?.pod)
}

/// The sum of a receiver pod's series of `family` (with `outcome`, if given).
async fn pod_metric(ip: &str, family: &str, outcome: Option<&str>) -> f64 {
    let (_, body) = http_get(ip, 9090, "/metrics").await.unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("hookwarden_receiver_{family}{{")))
        .filter(|l| outcome.is_none_or(|o| l.contains(&format!("outcome=\"{o}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Sends delivery `body` to `url` as a sender would: the same signed request again (same
/// timestamp) until it is acknowledged, 20 times at most; every answer.
async fn send_until_acknowledged(url: &str, secret: &std::path::Path, body: &str) -> Vec<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let mut answers = Vec::new();
    while answers.len() < 20 {
        let (ok, out) = send(url, "opal", secret, body, &["--timestamp", &now]);
        let done = ok && out.starts_with("200");
        answers.push(out);
        if done {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    answers
}

/// Two replicas with a ConfigMap sink elect the one that writes it on their Lease, under
/// the Role the operator ships: a delivery the other replica gets is handed to the writer
/// (found among the Service's ready pods) and recorded once; when the writer's pod goes,
/// the other records what it gets itself, then takes the Lease, and nothing acknowledged
/// is lost or recorded twice (the sink's `log` mode keeps every delivery).
#[tokio::test]
async fn two_replicas_write_their_configmap_through_one_writer_and_survive_its_loss() {
    const EACH: usize = 10;
    let ns = TestNamespace::new("cm-writer").await;
    let (_, secret) = ready_receiver(
        &ns,
        "opal",
        "opal",
        ", receiver: {replicas: 2}, sinks: {events: false, configMap: {name: opal-log, mode: log}}",
    )
    .await;
    let ((writer, writer_ip), (_, other_ip)) = eventually(
        "two Ready receiver pods, one of them holding the writer Lease",
        std::time::Duration::from_secs(120),
        || async {
            let pods = ready_receiver_pods(&ns, "opal").await;
            let holder = writer_pod(&ns, "opal-receiver").await;
            match (pods.as_slice(), &holder) {
                ([a, b], Some(h)) if a.0 == *h => Ok((a.clone(), b.clone())),
                ([a, b], Some(h)) if b.0 == *h => Ok((b.clone(), a.clone())),
                _ => Err(format!("pods {pods:?}, holder {holder:?}")),
            }
        },
    )
    .await;
    let body = |i: usize| {
        format!(
            r#"{{"event_ts":{},"organization_id":"o","events":[{{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user{i}@example.com","resource_id":"r1","access_level":"admin"}}]}}"#,
            1_700_000_000 + i
        )
    };
    let url = |ip: &str| format!("http://{ip}:8080/opal");
    let mut sent = 0;
    // Until the other replica has seen the Lease and the Service's endpoints: deliveries
    // to it, until the writer takes one.
    eventually(
        "the other replica handing a delivery to the writer",
        std::time::Duration::from_secs(60),
        || {
            let (b, other_ip, writer_ip) = (body(sent), other_ip.clone(), writer_ip.clone());
            let secret = secret.path().to_path_buf();
            sent += 1;
            async move {
                let out = send_until_acknowledged(&url(&other_ip), &secret, &b).await;
                assert!(out.last().is_some_and(|a| a.starts_with("200")), "{out:?}");
                match pod_metric(&writer_ip, "handoffs_taken_total", Some("recorded")).await {
                    n if n >= 1.0 => Ok(n),
                    n => Err(n),
                }
            }
        },
    )
    .await;
    let taken = pod_metric(&writer_ip, "handoffs_taken_total", Some("recorded")).await;
    let answered = pod_metric(&other_ip, "deliveries_total", Some("recorded")).await;

    // Straight to each pod, not through the Service: half of them reach the other replica.
    for i in sent..sent + 2 * EACH {
        let ip = if i % 2 == 0 { &writer_ip } else { &other_ip };
        let (ok, out) = send(&url(ip), "opal", secret.path(), &body(i), &[]);
        if !ok || !out.starts_with("200") {
            let (_, logs) = kubectl(&[
                "logs",
                "-n",
                &ns.name,
                "-l",
                "app.kubernetes.io/instance=opal",
                "--tail=40",
                "--prefix",
            ]);
            panic!("delivery {i} to {ip}: {out}\n{logs}");
        }
    }
    sent += 2 * EACH;
    assert_eq!(
        pod_metric(&writer_ip, "handoffs_taken_total", Some("recorded")).await - taken,
        EACH as f64,
        "the writer recorded what the other replica got"
    );
    assert_eq!(
        pod_metric(&other_ip, "handoffs_taken_total", None).await,
        0.0
    );
    assert_eq!(
        pod_metric(&other_ip, "handoffs_failed_total", None).await,
        0.0
    );
    assert_eq!(
        pod_metric(&other_ip, "deliveries_total", Some("recorded")).await - answered,
        EACH as f64,
        "the other replica counts what it answered"
    );

    // The writer goes; the other replica answers only what it recorded, itself or as the
    // new writer.
    let (ok, out) = kubectl(&["delete", "pod", "-n", &ns.name, &writer, "--wait=false"]);
    assert!(ok, "{out}");
    for i in sent..sent + EACH {
        let answers = send_until_acknowledged(&url(&other_ip), secret.path(), &body(i)).await;
        assert!(
            answers.last().is_some_and(|a| a.starts_with("200")),
            "delivery {i}: {answers:?}"
        );
    }
    sent += EACH;
    let log = config_map_json(&ns, "opal-log", "log.json").await;
    let mut users: Vec<String> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let payload: serde_json::Value =
                serde_json::from_str(e["payload"].as_str().unwrap()).unwrap();
            payload["events"][0]["user_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    users.sort_unstable();
    let recorded = users.len();
    users.dedup();
    assert_eq!((recorded, users.len()), (sent, sent), "{log}");
    eventually(
        "another pod holding the writer Lease",
        std::time::Duration::from_secs(60),
        || async {
            match writer_pod(&ns, "opal-receiver").await {
                Some(h) if h != writer => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}

/// The billing application of the sidecar tests: its pods opt in to Webhook `stripe`'s
/// receiver with the label on their template, nothing else.
fn billing() -> String {
    billing_deployment(2, ", hookwarden.io/inject: stripe")
}

fn stripe_sidecar(extra: &str) -> String {
    format!(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: stripe}}\n\
         spec: {{path: /stripe, provider: stripe, sidecar: {{}}, \
         sinks: {{events: false, forward: {{url: 'http://127.0.0.1:8080/hooks'}}}}{extra}}}\n"
    )
}

/// The `id` of every delivery an e2e application logged (`received <delivery> <body>`).
fn received_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.strip_prefix("received "))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .filter_map(|v| v["id"].as_str().map(str::to_owned))
        .collect()
}

async fn billing_pods(ns: &TestNamespace) -> Vec<k8s_openapi::api::core::v1::Pod> {
    ns.api::<k8s_openapi::api::core::v1::Pod>()
        .list(&ListParams::default().labels("app=billing"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// A sender's W3C trace, as `hookwarden-receiver send --header` passes it on: the spec's
/// example `traceparent`.
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_PARENT: &str = "00f067aa0ba902b7";

/// `spec.sidecar`: pods that carry the label get the receiver at admission as a native
/// sidecar; the Deployment stays exactly as applied (generation 1, `kubectl diff` empty);
/// the receiver's Service selects the opted-in pods and verified deliveries reach the
/// application over 127.0.0.1, in the sender's trace (`traceparent`), whose id the
/// receiver's log line for the delivery carries. A change to the Webhook restarts nothing
/// and status names the pods that run the outdated receiver until their workload is
/// restarted; deleting the Webhook restarts nothing either.
#[tokio::test]
async fn opted_in_pods_get_the_receiver_as_a_native_sidecar_and_the_deployment_stays_as_applied() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = TestNamespace::new("sidecar").await;
    ns.apply_webhook(&stripe_sidecar("")).await;
    let waiting = ns.webhook_ready("stripe", "False", "NoSidecarPods").await;
    assert!(
        waiting
            .ready_condition()
            .unwrap()
            .message
            .contains("hookwarden.io/inject=stripe"),
        "{waiting:?}"
    );
    let app = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(app.path(), billing()).unwrap();
    let app_file = app.path().to_str().unwrap();
    let (ok, out) = kubectl(&["apply", "-n", &ns.name, "-f", app_file]);
    assert!(ok, "{out}");
    let ready = ns
        .webhook_ready("stripe", "True", "ReceiverAvailable")
        .await;
    let counted = eventually("both pods counted", CONVERGE, || async {
        let w: hookwarden_operator::crd::Webhook = ns.api().get("stripe").await.unwrap();
        match w.status.and_then(|s| s.sidecar) {
            Some(c) if c.pods == 2 && c.ready == 2 => Ok(c),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(counted.outdated.is_empty(), "{counted:?}");
    assert!(ready.status.unwrap().url.is_some());

    // The Deployment is exactly what was applied.
    let d: Deployment = ns.api().get("billing").await.unwrap();
    assert_eq!(d.metadata.generation, Some(1), "the Deployment was written");
    let template = d.spec.unwrap().template.spec.unwrap();
    assert!(template.init_containers.is_none());
    assert_eq!(template.containers.len(), 1);
    let (same, diff) = kubectl(&["diff", "-n", &ns.name, "-f", app_file]);
    assert!(same && diff.is_empty(), "kubectl diff is not empty: {diff}");
    assert!(
        ns.api::<Deployment>()
            .get_opt("stripe-receiver")
            .await
            .unwrap()
            .is_none(),
        "no receiver Deployment of its own"
    );

    // Its pods carry the receiver as a native sidecar, started before the application.
    let pods = billing_pods(&ns).await;
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().expect("init containers");
        assert_eq!(init.len(), 1, "{init:?}");
        assert_eq!(init[0].name, "hookwarden-stripe");
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
        assert!(init[0].startup_probe.is_some());
        assert_eq!(spec.containers.len(), 1);
        let status = pod.status.as_ref().unwrap();
        let sidecar = &status.init_container_statuses.as_ref().unwrap()[0];
        let app = &status.container_statuses.as_ref().unwrap()[0];
        let started = |s: &k8s_openapi::api::core::v1::ContainerStatus| {
            s.state
                .as_ref()
                .and_then(|s| s.running.as_ref())
                .and_then(|r| r.started_at.clone())
        };
        assert!(sidecar.ready && app.ready, "{status:?}");
        assert!(
            started(sidecar).unwrap() <= started(app).unwrap(),
            "the receiver started after the application: {status:?}"
        );
    }
    let svc: Service = ns.api().get("stripe-receiver").await.unwrap();
    assert_eq!(
        svc.spec.as_ref().unwrap().selector.as_ref().unwrap()["hookwarden.io/inject"],
        "stripe"
    );

    // A verified delivery reaches the application in the same pod; a forged one does not.
    let secret: Secret = ns.api().get("stripe-signing-secret").await.unwrap();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &secret.data.unwrap()["secret"].0).unwrap();
    let url = format!("http://{}/stripe", svc.spec.unwrap().cluster_ip.unwrap());
    let body = r#"{"id":"evt_7","type":"invoice.paid"}"#;
    let traceparent = format!("traceparent: 00-{SENDER_TRACE}-{SENDER_PARENT}-01");
    let out = send_eventually(
        &url,
        "stripe",
        secret_file.path(),
        body,
        &["--header", &traceparent],
    );
    assert!(out.starts_with("200"), "{out}");
    let forged = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(forged.path(), "whsec_forged").unwrap();
    let (ok, out) = send(&url, "stripe", forged.path(), body, &[]);
    assert!(!ok && out.starts_with("401"), "{out}");
    let mut got = Vec::new();
    for pod in &pods {
        let name = pod.metadata.name.as_deref().unwrap();
        let (ok, logs) = kubectl(&["logs", "-n", &ns.name, name, "-c", "app"]);
        assert!(ok, "{logs}");
        got.extend(received_ids(&logs));
    }
    assert_eq!(
        got,
        ["evt_7"],
        "exactly the verified delivery reached the application"
    );
    // It came in the sender's trace, as the sender sent it (the receiver records no span)...
    let mut received = Vec::new();
    for pod in &pods {
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap();
        let (status, text) = http_get(&ip, 8080, "/received").await.unwrap();
        assert_eq!(status, 200, "{text}");
        let all: serde_json::Value = serde_json::from_str(&text).unwrap();
        received.extend(all.as_array().unwrap().iter().cloned());
    }
    assert_eq!(received.len(), 1, "{received:?}");
    let forwarded = received[0]["traceparent"].as_str().unwrap_or_default();
    let fields: Vec<&str> = forwarded.split('-').collect();
    assert!(
        fields.len() == 4 && fields[0] == "00" && fields[2].len() == 16,
        "{forwarded:?}"
    );
    assert_eq!(
        (fields[1], fields[2], fields[3]),
        (SENDER_TRACE, SENDER_PARENT, "01"),
        "{forwarded}"
    );
    // ...and the receiver's log line for it names the trace.
    eventually(
        "the receiver's line for the delivery with its trace id",
        CONVERGE,
        || async {
            let mut recorded = Vec::new();
            for pod in &pods {
                let name = pod.metadata.name.as_deref().unwrap();
                let (ok, logs) =
                    kubectl(&["logs", "-n", &ns.name, name, "-c", "hookwarden-stripe"]);
                if !ok {
                    return Err(logs);
                }
                recorded.extend(
                    logs.lines()
                        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                        .filter(|l| l["message"] == "delivery recorded"),
                );
            }
            match &recorded[..] {
                [line] if line["trace_id"] == SENDER_TRACE => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // A change to the Webhook restarts nothing; status names the outdated pods.
    let uids: Vec<_> = pods.iter().map(|p| p.metadata.uid.clone()).collect();
    ns.apply_webhook(&stripe_sidecar(", eventTypes: [invoice.paid]"))
        .await;
    // Still Ready (the outdated receivers verify and forward); SidecarsCurrent says which.
    let (condition, counted) = eventually("SidecarsCurrent=False", CONVERGE, || async {
        let w: hookwarden_operator::crd::Webhook = ns.api().get("stripe").await.unwrap();
        let status = w.status.clone().unwrap_or_default();
        let current = status
            .conditions
            .iter()
            .find(|c| c.type_ == "SidecarsCurrent");
        match (w.ready_condition(), current) {
            (Some(r), Some(c))
                if r.status == "True"
                    && c.status == "False"
                    && c.observed_generation == w.metadata.generation =>
            {
                Ok((c.clone(), status.sidecar.unwrap_or_default()))
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let mut names: Vec<String> = pods
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(counted.outdated, names);
    assert_eq!(condition.reason, "Outdated");
    assert!(
        condition.message.contains(&names[0]),
        "{}",
        condition.message
    );
    let now: Vec<_> = billing_pods(&ns)
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    assert_eq!(now, uids, "pods were restarted by a Webhook change");
    assert_eq!(
        ns.api::<Deployment>()
            .get("billing")
            .await
            .unwrap()
            .metadata
            .generation,
        Some(1)
    );
    // The user rolls them; the new pods run the current receiver.
    let (ok, out) = kubectl(&["rollout", "restart", "-n", &ns.name, "deployment/billing"]);
    assert!(ok, "{out}");
    eventually(
        "the rolled pods run the current receiver",
        CONVERGE,
        || async {
            let w: hookwarden_operator::crd::Webhook = ns.api().get("stripe").await.unwrap();
            let status = w.status.unwrap_or_default();
            let current = status
                .conditions
                .iter()
                .find(|c| c.type_ == "SidecarsCurrent")
                .map(|c| c.status.clone());
            match (current.as_deref(), &status.sidecar) {
                (Some("True"), Some(c)) if c.outdated.is_empty() && c.ready == 2 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    // Deleting the Webhook rolls nothing either: the pods keep running as they are.
    let running: Vec<_> = billing_pods(&ns)
        .await
        .iter()
        .map(|p| p.metadata.uid.clone())
        .collect();
    ns.delete::<hookwarden_operator::crd::Webhook>("stripe")
        .await;
    consistently(
        "no pod is restarted after the Webhook is deleted",
        std::time::Duration::from_secs(10),
        || async {
            let now: Vec<_> = billing_pods(&ns)
                .await
                .iter()
                .map(|p| p.metadata.uid.clone())
                .collect();
            if now == running {
                Ok(())
            } else {
                Err(format!("{now:?}"))
            }
        },
    )
    .await;
    assert_eq!(
        ns.api::<Deployment>()
            .get("billing")
            .await
            .unwrap()
            .metadata
            .generation,
        Some(2),
        "only the user's rollout restart changed the Deployment"
    );
}

/// Deleting an application pod under a steady stream of deliveries: Kubernetes stops the
/// application first and the native sidecar after it, so every delivery answered 2xx
/// reached an application (no acknowledgement without a forward), whichever pod took it.
#[tokio::test]
async fn deleting_a_pod_under_load_loses_no_acknowledged_delivery() {
    let ns = TestNamespace::new("sidecar-stop").await;
    ns.apply_webhook(&stripe_sidecar("")).await;
    let (ok, out) = kubectl_stdin(&ns.name, &billing(), &[]);
    assert!(ok, "{out}");
    eventually("both pods Ready with the receiver", CONVERGE, || async {
        let w: hookwarden_operator::crd::Webhook = ns.api().get("stripe").await.unwrap();
        match w.status.and_then(|s| s.sidecar) {
            Some(c) if c.ready == 2 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let secret: Secret = ns.api().get("stripe-signing-secret").await.unwrap();
    let secret_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret_file.path(), &secret.data.unwrap()["secret"].0).unwrap();
    let svc: Service = ns.api().get("stripe-receiver").await.unwrap();
    let url = format!("http://{}/stripe", svc.spec.unwrap().cluster_ip.unwrap());
    let warm = send_eventually(
        &url,
        "stripe",
        secret_file.path(),
        r#"{"id":"evt_warm","type":"invoice.paid"}"#,
        &[],
    );
    assert!(warm.starts_with("200"), "{warm}");

    // Every pod's application log, followed to its end (a deleted pod's too).
    let victim = billing_pods(&ns).await[0].metadata.name.clone().unwrap();
    let follow = |pod: &str| {
        std::process::Command::new("kubectl")
            .args(["logs", "-f", "-n", &ns.name, pod, "-c", "app"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let victim_log = follow(&victim);

    // Four senders, 12 s, unique deliveries; the pod is deleted 3 s in.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|t| {
            let (url, file, stop) = (url.clone(), secret_file.path().to_owned(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut refused = 0;
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let id = format!("evt_{t}_{i}");
                    let body = format!(r#"{{"id":"{id}","type":"invoice.paid"}}"#);
                    let (ok, out) = send(&url, "stripe", &file, &body, &[]);
                    if ok && out.starts_with("200") {
                        acked.push(id);
                    } else {
                        refused += 1;
                    }
                    i += 1;
                }
                (acked, refused)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let (ok, out) = kubectl(&["delete", "pod", "-n", &ns.name, &victim, "--wait=false"]);
    assert!(ok, "{out}");
    tokio::time::sleep(std::time::Duration::from_secs(9)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut refused = 0;
    for s in senders {
        let (a, r) = s.join().unwrap();
        acked.extend(a);
        refused += r;
    }

    // What the applications received: the deleted pod's log to its end, the others' now.
    let out = victim_log.wait_with_output().unwrap();
    let mut received: std::collections::HashSet<String> =
        received_ids(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .collect();
    let victim_count = received.len();
    for pod in billing_pods(&ns).await {
        let name = pod.metadata.name.unwrap();
        if name == victim {
            continue;
        }
        let (ok, logs) = kubectl(&["logs", "-n", &ns.name, &name, "-c", "app"]);
        assert!(ok, "{logs}");
        received.extend(received_ids(&logs));
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !received.contains(*id)).collect();
    eprintln!(
        "{} deliveries acknowledged, {refused} refused (senders retry those), {victim_count} reached the deleted pod",
        acked.len()
    );
    assert!(
        acked.len() > 20,
        "too few deliveries to say anything: {}",
        acked.len()
    );
    assert!(
        victim_count > 1,
        "the deleted pod took no deliveries: nothing was tested"
    );
    assert!(
        lost.is_empty(),
        "acknowledged but never forwarded: {lost:?}"
    );
}

/// A Deployment the previous release added a receiver container to (server-side applied
/// under its field manager `hookwarden.io/sidecar-<webhook>`, labelled
/// `hookwarden.io/sidecar`) has that container taken out, once, and is left alone after.
#[tokio::test]
async fn a_receiver_container_added_by_the_previous_release_is_taken_out_once() {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = TestNamespace::new("sidecar-upgrade").await;
    let app = billing_deployment(2, ", tier: web");
    let (ok, out) = kubectl_stdin(&ns.name, &app, &[]);
    assert!(ok, "{out}");
    // What the previous release applied, as it applied it.
    let previous = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: billing, labels: {hookwarden.io/sidecar: "true"}}
spec:
  template:
    metadata: {annotations: {hookwarden.io/config-hash-stripe: "0123456789abcdef"}}
    spec:
      containers:
        - name: hookwarden-stripe
          image: hookwarden-receiver:dev
          imagePullPolicy: Never
          args: [run, --config, /etc/hookwarden/config.yaml]
          securityContext: {allowPrivilegeEscalation: false, runAsNonRoot: true, runAsUser: 65532, capabilities: {drop: [ALL]}}
          volumeMounts: [{name: hw-stripe-config, mountPath: /etc/hookwarden}]
      volumes:
        - {name: hw-stripe-config, configMap: {name: stripe-receiver-config}}
"#;
    // (through the API as that release did: kubectl's first server-side apply would also
    // take over the fields its client-side apply owned)
    // (as JSON: a typed Deployment would claim its required fields, empty)
    let previous: serde_json::Value = serde_saphyr::from_str(previous).unwrap();
    // The Deployment as that apply wrote it (read back, the operator may already have
    // taken the container out: it watches these Deployments).
    let d = ns
        .api::<Deployment>()
        .patch(
            "billing",
            &kube::api::PatchParams::apply("hookwarden.io/sidecar-stripe").force(),
            &kube::api::Patch::Apply(&previous),
        )
        .await
        .unwrap();
    let names: Vec<String> = d
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(
        names,
        ["app", "hookwarden-stripe"],
        "the previous release's container is in"
    );
    let cleaned = eventually(
        "the old receiver container is taken out",
        CONVERGE,
        || async {
            let d: Deployment = ns.api().get("billing").await.unwrap();
            let pod = d.spec.as_ref().unwrap().template.spec.clone().unwrap();
            let names: Vec<String> = pod.containers.iter().map(|c| c.name.clone()).collect();
            let labelled = d
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .contains_key("hookwarden.io/sidecar");
            if names == ["app"] && !labelled && pod.volumes.unwrap_or_default().is_empty() {
                Ok(d)
            } else {
                Err(format!("{names:?}, labelled: {labelled}"))
            }
        },
    )
    .await;
    // The application's own fields stay, and nothing touches it again.
    let pod = cleaned
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .clone()
        .unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("hookwarden-e2e-app:dev")
    );
    let generation = cleaned.metadata.generation;
    consistently(
        "the Deployment is left alone",
        std::time::Duration::from_secs(10),
        || async {
            let d: Deployment = ns.api().get("billing").await.unwrap();
            if d.metadata.generation == generation {
                Ok(())
            } else {
                Err(format!("{:?}", d.metadata.generation))
            }
        },
    )
    .await;
}

/// The signature Node computes as the seeds' sample code does: HMAC-SHA256 over `prefix`
/// and `JSON.stringify` of the parsed body (`request.body`), with the secret in `secret`.
fn node_signature(secret: &std::path::Path, prefix: &str, body: &str) -> String {
    let script = r#"const c = require("crypto"), fs = require("fs");
const [file, prefix, body] = process.argv.slice(1);
const secret = fs.readFileSync(file, "utf8").trim();
process.stdout.write(c.createHmac("sha256", secret).update(prefix + JSON.stringify(JSON.parse(body))).digest("hex"));"#;
    let out = std::process::Command::new("node")
        .args(["-e", script])
        .arg(secret)
        .args([prefix, body])
        .output()
        .expect("node (Node.js) signs as the senders' sample code does: install it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn post(url: &str, headers: &[(&str, &str)], body: &str) -> String {
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain([("Content-Type".to_string(), "application/json".to_string())])
        .collect();
    let answer = hookwarden_receiver::client::post(url, &headers, body.as_bytes().to_vec())
        .await
        .unwrap();
    format!("{} {}", answer.status, answer.body.trim())
}

/// Opal's and Membrane's sample code sign `JSON.stringify(request.body)`: a body sent in
/// another form (pretty-printed, escaped) is accepted on that signature, recorded as that
/// form, once; a body whose keys repeat is refused, since parsers read it differently.
#[tokio::test]
async fn deliveries_signed_over_their_json_stringify_form_are_recorded_once() {
    let ns = TestNamespace::new("node-form").await;
    let (opal, opal_secret) = ready_receiver(&ns, "opal", "opal", "").await;
    let (membrane, membrane_secret) = ready_receiver(&ns, "membrane", "membrane", "").await;

    // Opal: the six events, as sent over several lines, signed by Node over the compact form.
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let sig = node_signature(opal_secret.path(), &format!("v0:{ts}:"), OPAL_ALL);
    let headers = [
        ("X-Opal-Signature", sig.as_str()),
        ("X-Opal-Request-Timestamp", ts.as_str()),
    ];
    // (retried while the Service's rules reach the node)
    let first = eventually("the receiver answers", CONVERGE, || async {
        let answer = hookwarden_receiver::client::post(
            &opal,
            &headers.map(|(k, v)| (k.to_string(), v.to_string())),
            OPAL_ALL.as_bytes().to_vec(),
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok::<_, String>(format!("{} {}", answer.status, answer.body.trim()))
    })
    .await;
    assert_eq!(first, r#"200 {"events":6,"status":"recorded"}"#);
    // The compact form itself, with the same signature: the same delivery.
    let compact = OPAL_ALL.replace('\n', "");
    assert!(serde_json::from_str::<serde_json::Value>(&compact).is_ok());
    assert_eq!(
        post(&opal, &headers, &compact).await,
        r#"200 {"status":"duplicate"}"#
    );
    assert_eq!(recorded_reasons(&ns, "opal").await.len(), 6);

    // Membrane: pretty-printed with a \u escape; the Event says what was verified.
    let pretty = "{\n  \"type\": \"org-created\",\n  \"name\": \"Caf\\u00e9 Org\",\n  \"orgId\": \"org789\",\n  \"org\": {\n    \"id\": \"org789\",\n    \"name\": \"Caf\\u00e9 Org\",\n    \"domains\": [\"cafe.example\"]\n  },\n  \"user\": {\"name\": \"Owner\", \"email\": \"owner@cafe.example\"}\n}\n";
    let sig = node_signature(membrane_secret.path(), "", pretty);
    let out = post(&membrane, &[("X-Signature", &sig)], pretty).await;
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let reasons = recorded_reasons(&ns, "membrane").await;
    assert_eq!(
        reasons,
        [(
            "OrgCreated".to_string(),
            "organization Café Org (org789) created by owner@cafe.example".to_string()
        )]
    );
    // The same delivery with its type given twice, so that a first-wins parser reads
    // another event: refused, nothing recorded.
    let twice = pretty.replacen(
        "\"type\": \"org-created\"",
        "\"type\": \"user-invited-to-org\", \"type\": \"org-created\"",
        1,
    );
    let out = post(&membrane, &[("X-Signature", &sig)], &twice).await;
    assert!(out.starts_with("400") && out.contains("key twice"), "{out}");
    // And a changed value fails as any forgery does.
    let changed = pretty.replace("org789", "org790");
    let out = post(&membrane, &[("X-Signature", &sig)], &changed).await;
    assert!(out.starts_with("401"), "{out}");
    assert_eq!(recorded_reasons(&ns, "membrane").await.len(), 1);
}

/// Standard Webhooks' asymmetric signatures: the receiver holds only the sender's public
/// key (`whpk_`), so nothing it holds can sign.
#[tokio::test]
async fn standard_webhooks_v1a_deliveries_verify_with_only_the_public_key() {
    let ns = TestNamespace::new("v1a").await;
    let dir = tempfile::tempdir().unwrap();
    let keypair = |name: &str| {
        let file = dir.path().join(name);
        let out = std::process::Command::new(receiver_bin())
            .args(["keypair", "--secret-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            file,
            String::from_utf8(out.stdout).unwrap().trim().to_string(),
        )
    };
    let (sender_key, public) = keypair("sender");
    let (other_key, _) = keypair("other");
    assert!(public.starts_with("whpk_"), "{public}");
    ns.apply(&secret_object("sender-public-key", &public)).await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: sw}\n\
         spec: {path: /sw, provider: standard-webhooks, secretRef: {name: sender-public-key, key: secret}}\n",
    )
    .await;
    ns.webhook_ready("sw", "True", "ReceiverAvailable").await;
    let url = service_url(&ns, "sw").await;
    let body = r#"{"type":"invoice.paid","data":{"id":"in_1"}}"#;
    let out = send_eventually(
        &url,
        "standard-webhooks",
        &sender_key,
        body,
        &["--id", "msg_v1a_1"],
    );
    assert_eq!(out, r#"200 {"events":1,"status":"recorded"}"#);
    let (ok, out) = send(
        &url,
        "standard-webhooks",
        &other_key,
        body,
        &["--id", "msg_v1a_2"],
    );
    assert!(!ok && out.starts_with("401"), "{out}");
    let reasons = recorded_reasons(&ns, "sw").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "InvoicePaid");
}
