//! The operator against the real API server: children, readiness, drift, deletion,
//! missing Secrets, invalid specs, conflicts, secrecy and least privilege.
//! Run with `make e2e`; each test has a namespace of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use hookwarden_operator::crd::Webhook;
use hookwarden_receiver::config::{CONFIG_FILE_NAME, Provider, ReceiverConfig};
use hookwarden_tests::*;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};

const SHORT: Duration = Duration::from_secs(10);

fn controlled_by(meta: &ObjectMeta, webhook: &Webhook) -> bool {
    meta.owner_references
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|o| {
            o.kind == "Webhook"
                && Some(&o.uid) == webhook.metadata.uid.as_ref()
                && o.controller == Some(true)
        })
}

fn secret_value(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().unwrap()[key].0.clone()
}

#[tokio::test]
async fn opal_webhook_gets_every_child_and_becomes_ready() {
    let ns = TestNamespace::new("children").await;
    ns.apply_webhook(
        r#"
apiVersion: hookwarden.io/v1alpha1
kind: Webhook
metadata: {name: opal}
spec:
  path: /opal
  provider: opal
  sinks:
    configMap: {name: opal-access}
  receiver: {}
"#,
    )
    .await;
    let webhook = ns.webhook_ready("opal", "True", "ReceiverAvailable").await;
    let status = webhook.status.clone().unwrap();
    assert_eq!(status.observed_generation, webhook.metadata.generation);
    assert_eq!(
        status.conditions[0].observed_generation,
        webhook.metadata.generation
    );
    assert_eq!(
        status.url.as_deref(),
        Some(format!("http://opal-receiver.{}.svc/opal", ns.name).as_str())
    );
    assert_eq!(status.secret_name.as_deref(), Some("opal-signing-secret"));

    // The generated signing secret: long, random, owned by the Webhook.
    let secret: Secret = get(&ns, "opal-signing-secret")
        .await
        .expect("generated Secret");
    assert!(controlled_by(&secret.metadata, &webhook));
    assert!(secret_value(&secret, "secret").len() >= 32);

    // Identity and least-privilege RBAC.
    let sa: ServiceAccount = get(&ns, "opal-receiver").await.expect("ServiceAccount");
    assert!(controlled_by(&sa.metadata, &webhook));
    let role: Role = get(&ns, "opal-receiver").await.expect("Role");
    assert!(controlled_by(&role.metadata, &webhook));
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(rules[0].api_groups.as_deref().unwrap(), ["events.k8s.io"]);
    assert_eq!(rules[0].verbs, ["create", "patch"]);
    assert_eq!(rules[1].resource_names.as_deref().unwrap(), ["opal-access"]);
    assert_eq!(rules[1].verbs, ["get", "update", "patch"]);
    assert_eq!(
        rules[2].resource_names.as_deref().unwrap(),
        ["opal-receiver-writer"]
    );
    assert_eq!(rules[2].verbs, ["get", "list", "watch", "patch"]);
    assert_eq!(rules[3].resources.as_deref().unwrap(), ["endpointslices"]);
    assert_eq!(rules[3].verbs, ["list", "watch"]);
    // The writer Lease the replicas elect on, owned by their Deployment.
    let lease: k8s_openapi::api::coordination::v1::Lease = get(&ns, "opal-receiver-writer")
        .await
        .expect("writer Lease");
    let owner = &lease.metadata.owner_references.unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("Deployment", "opal-receiver")
    );
    let binding: RoleBinding = get(&ns, "opal-receiver").await.expect("RoleBinding");
    assert_eq!(binding.role_ref.name, "opal-receiver");
    assert_eq!(binding.subjects.unwrap()[0].name, "opal-receiver");

    // The rendered config is the receiver's own type.
    let config: ConfigMap = get(&ns, "opal-receiver-config")
        .await
        .expect("config ConfigMap");
    assert!(controlled_by(&config.metadata, &webhook));
    let parsed = ReceiverConfig::from_yaml(&config.data.unwrap()[CONFIG_FILE_NAME]).unwrap();
    assert_eq!(parsed.provider, Provider::Opal);
    assert_eq!(parsed.path, "/opal");
    assert_eq!(parsed.webhook.uid, webhook.metadata.uid.clone().unwrap());
    assert_eq!(parsed.sinks.config_map.unwrap().name, "opal-access");

    // The sink ConfigMap exists for the receiver to write.
    let sink: ConfigMap = get(&ns, "opal-access").await.expect("sink ConfigMap");
    assert!(controlled_by(&sink.metadata, &webhook));

    // A locked-down Deployment whose pods really run.
    let deployment: Deployment = get(&ns, "opal-receiver").await.expect("Deployment");
    assert!(controlled_by(&deployment.metadata, &webhook));
    assert!(deployment.status.unwrap().available_replicas.unwrap_or(0) >= 1);
    let pods = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=opal"))
        .await
        .unwrap();
    let pod = pods.items.first().expect("a receiver pod");
    assert_eq!(
        pod.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("opal-receiver"));
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let sc = spec.containers[0].security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.as_ref().unwrap().drop.as_deref().unwrap(),
        ["ALL"]
    );

    // The Service routes to the receiver: ask it through the ClusterIP, as a client would.
    let service: Service = get(&ns, "opal-receiver").await.expect("Service");
    assert!(controlled_by(&service.metadata, &webhook));
    // (EndpointSlices: core/v1 Endpoints is deprecated from 1.33 on; they follow the pod's
    // readiness a moment after the Deployment does)
    eventually("the Service has a ready endpoint", SHORT * 3, || async {
        let slices = ns
            .api::<EndpointSlice>()
            .list(&ListParams::default().labels("kubernetes.io/service-name=opal-receiver"))
            .await
            .map_err(|e| e.to_string())?;
        let ready = slices
            .items
            .iter()
            .flat_map(|s| &s.endpoints)
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true));
        if ready {
            Ok(())
        } else {
            Err(format!("{slices:?}"))
        }
    })
    .await;
    let ip = service.spec.unwrap().cluster_ip.unwrap();
    let (code, body) = eventually("receiver /readyz through its Service", SHORT * 3, || {
        let ip = ip.clone();
        async move { http_get(&ip, 80, "/readyz").await }
    })
    .await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    // The operator writes status through the status subresource, by server-side apply
    // under its own field manager, and owns nothing of the spec.
    let managed = webhook.metadata.managed_fields.clone().unwrap_or_default();
    let status_entry = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("hookwarden-operator"))
        .unwrap_or_else(|| panic!("no managedFields entry of the operator: {managed:?}"));
    assert_eq!(status_entry.operation.as_deref(), Some("Apply"));
    assert_eq!(status_entry.subresource.as_deref(), Some("status"));
    let owned = serde_json::to_value(&status_entry.fields_v1).unwrap();
    assert!(owned["f:status"].is_object(), "{owned}");
    assert!(owned.get("f:spec").is_none(), "{owned}");
    assert_eq!(
        managed
            .iter()
            .filter(|m| m.manager.as_deref() == Some("hookwarden-operator"))
            .count(),
        1,
        "{managed:?}"
    );

    // `kubectl get wh` shows what a user looks for.
    let (ok, out) = kubectl(&["get", "wh", "-n", &ns.name]);
    assert!(ok, "{out}");
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "PROVIDER", "PATH", "READY", "AGE"]);
    let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..4], ["opal", "opal", "/opal", "True"]);
}

#[tokio::test]
async fn generated_secret_is_never_regenerated_nor_shown_and_config_changes_roll_pods() {
    let ns = TestNamespace::new("secret").await;
    let yaml = |types: &str| {
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: membrane}}\n\
             spec: {{path: /membrane, provider: membrane, eventTypes: {types}, receiver: {{}}}}\n"
        )
    };
    ns.apply_webhook(&yaml("[]")).await;
    ns.webhook_ready("membrane", "True", "ReceiverAvailable")
        .await;
    let secret: Secret = get(&ns, "membrane-signing-secret").await.unwrap();
    let value = secret_value(&secret, "secret");
    let hash_of = |d: &Deployment| {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()["hookwarden.io/config-hash"]
            .clone()
    };
    let before: Deployment = get(&ns, "membrane-receiver").await.unwrap();
    let old_pods: Vec<String> = ns
        .api::<Pod>()
        .list(&ListParams::default().labels("app.kubernetes.io/instance=membrane"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.name_any())
        .collect();

    // A spec change re-renders the config, which rolls the pods; the secret stays.
    let changed = ns.apply_webhook(&yaml("[org-created]")).await;
    let webhook = eventually("status observes the new generation", CONVERGE, || {
        let api = ns.api::<Webhook>();
        let generation = changed.metadata.generation;
        async move {
            let w = api.get("membrane").await.map_err(|e| e.to_string())?;
            let status = w.status.clone().ok_or("no status")?;
            let ready = w.ready_condition().map(|c| c.status.clone());
            if status.observed_generation == generation && ready.as_deref() == Some("True") {
                Ok(w)
            } else {
                Err(format!(
                    "observed {:?}, ready {ready:?}",
                    status.observed_generation
                ))
            }
        }
    })
    .await;
    let after: Deployment = get(&ns, "membrane-receiver").await.unwrap();
    assert_ne!(
        hash_of(&before),
        hash_of(&after),
        "config change must roll the pods"
    );
    let config: ConfigMap = get(&ns, "membrane-receiver-config").await.unwrap();
    let parsed = ReceiverConfig::from_yaml(&config.data.unwrap()[CONFIG_FILE_NAME]).unwrap();
    assert_eq!(parsed.event_types, ["org-created"]);
    eventually("the old receiver pods are replaced", CONVERGE, || {
        let api = ns.api::<Pod>();
        let old_pods = old_pods.clone();
        async move {
            let pods = api
                .list(&ListParams::default().labels("app.kubernetes.io/instance=membrane"))
                .await
                .map_err(|e| e.to_string())?;
            let names: Vec<String> = pods.items.iter().map(|p| p.name_any()).collect();
            let running_new = pods.items.iter().any(|p| {
                !old_pods.contains(&p.name_any())
                    && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            });
            if running_new {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        }
    })
    .await;
    let again: Secret = get(&ns, "membrane-signing-secret").await.unwrap();
    assert_eq!(
        secret_value(&again, "secret"),
        value,
        "the generated secret must never change"
    );
    assert_eq!(again.metadata.uid, secret.metadata.uid);

    // The secret appears nowhere: status, Events, operator logs.
    let text = String::from_utf8(value).unwrap();
    let status = serde_json::to_string(&webhook.status).unwrap();
    assert!(!status.contains(&text));
    let events = events_regarding(&ns.client, &ns.name, "membrane").await;
    assert!(
        !events.is_empty(),
        "the operator publishes Events about the Webhook"
    );
    for e in &events {
        assert!(!serde_json::to_string(e).unwrap().contains(&text));
    }
    let logs = operator_logs(&ns.client).await;
    assert!(
        logs.contains(&ns.name),
        "operator logs should mention the namespace it worked on"
    );
    assert!(
        !logs.contains(&text),
        "the signing secret appeared in the operator's logs"
    );
    // Logs are structured JSON lines.
    let line = logs.lines().find(|l| l.contains(&ns.name)).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
    assert!(
        parsed.get("level").is_some() && parsed.get("message").is_some(),
        "{line}"
    );
}

#[tokio::test]
async fn drift_is_corrected() {
    let ns = TestNamespace::new("drift").await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: gh}\n\
         spec: {path: /github, provider: github, receiver: {}}\n",
    )
    .await;
    ns.webhook_ready("gh", "True", "ReceiverAvailable").await;
    let original_role: Role = get(&ns, "gh-receiver").await.unwrap();
    let original_service: Service = get(&ns, "gh-receiver").await.unwrap();

    // Deleted by hand: comes back.
    ns.delete::<Service>("gh-receiver").await;
    ns.delete::<ConfigMap>("gh-receiver-config").await;
    eventually("Service and config recreated", CONVERGE, || async {
        let svc: Option<Service> = get(&ns, "gh-receiver").await;
        let cm: Option<ConfigMap> = get(&ns, "gh-receiver-config").await;
        match (svc, cm) {
            (Some(s), Some(_)) if s.metadata.uid != original_service.metadata.uid => Ok(()),
            other => Err(format!(
                "service/config: {:?}",
                (other.0.is_some(), other.1.is_some())
            )),
        }
    })
    .await;

    // Edited by hand: put back.
    let widen = serde_json::json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]});
    ns.api::<Role>()
        .patch(
            "gh-receiver",
            &PatchParams::default(),
            &Patch::Merge(&widen),
        )
        .await
        .unwrap();
    ns.api::<Deployment>()
        .patch(
            "gh-receiver",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    eventually("Role rules and replicas restored", CONVERGE, || async {
        let role: Role = get(&ns, "gh-receiver").await.ok_or("no role")?;
        let d: Deployment = get(&ns, "gh-receiver").await.ok_or("no deployment")?;
        let replicas = d.spec.unwrap().replicas;
        if role.rules == original_role.rules && replicas == Some(1) {
            Ok(())
        } else {
            Err(format!("rules {:?} replicas {replicas:?}", role.rules))
        }
    })
    .await;
}

#[tokio::test]
async fn deleting_the_webhook_removes_its_children() {
    let ns = TestNamespace::new("delete").await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: gone}\n\
         spec: {path: /gone, provider: opal, sinks: {configMap: {name: gone-state}}, receiver: {}}\n",
    )
    .await;
    ns.webhook_ready("gone", "True", "ReceiverAvailable").await;
    ns.delete::<Webhook>("gone").await;
    eventually("every child is garbage-collected", CONVERGE, || async {
        let left = [
            get::<Deployment>(&ns, "gone-receiver").await.is_some(),
            get::<Service>(&ns, "gone-receiver").await.is_some(),
            get::<ServiceAccount>(&ns, "gone-receiver").await.is_some(),
            get::<Role>(&ns, "gone-receiver").await.is_some(),
            get::<RoleBinding>(&ns, "gone-receiver").await.is_some(),
            get::<ConfigMap>(&ns, "gone-receiver-config")
                .await
                .is_some(),
            get::<ConfigMap>(&ns, "gone-state").await.is_some(),
            get::<Secret>(&ns, "gone-signing-secret").await.is_some(),
        ];
        if left.iter().any(|l| *l) {
            Err(left)
        } else {
            Ok(())
        }
    })
    .await;
}

#[tokio::test]
async fn missing_secret_is_reported_and_recovers_without_user_action() {
    let ns = TestNamespace::new("nosecret").await;
    let applied = ns
        .apply_webhook(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: mb}\n\
             spec: {path: /membrane, provider: membrane, secretRef: {name: mb-creds, key: token}, receiver: {}}\n",
        )
        .await;
    let w = ns.webhook_ready("mb", "False", "SecretNotFound").await;
    let message = w.ready_condition().unwrap().message.clone();
    assert!(
        message.contains("\"mb-creds\"") && message.contains("does not exist"),
        "{message}"
    );
    let events = eventually("a Warning Event SecretNotFound", SHORT * 3, || async {
        let events = events_regarding(&ns.client, &ns.name, "mb").await;
        if events.iter().any(|e| {
            e.reason.as_deref() == Some("SecretNotFound") && e.type_.as_deref() == Some("Warning")
        }) {
            Ok(events)
        } else {
            Err(events.iter().map(|e| e.reason.clone()).collect::<Vec<_>>())
        }
    })
    .await;
    assert!(!events.is_empty());
    assert!(
        get::<Deployment>(&ns, "mb-receiver").await.is_none(),
        "no receiver without its secret"
    );

    // The Secret appears, but without the key.
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some("mb-creds".into()),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            "other".to_string(),
            ByteString(b"x".to_vec()),
        )])),
        ..Secret::default()
    };
    ns.apply(&secret).await;
    eventually("the message names the missing key", CONVERGE, || async {
        let w: Webhook = ns
            .api::<Webhook>()
            .get("mb")
            .await
            .map_err(|e| e.to_string())?;
        let m = w
            .ready_condition()
            .map(|c| c.message.clone())
            .unwrap_or_default();
        if m.contains("has no key \"token\"") {
            Ok(())
        } else {
            Err(m)
        }
    })
    .await;

    // The key appears: Ready, and the user never touched the Webhook.
    secret.data = Some(BTreeMap::from([(
        "token".to_string(),
        ByteString(b"s3cret-token".to_vec()),
    )]));
    ns.apply(&secret).await;
    let ready = ns.webhook_ready("mb", "True", "ReceiverAvailable").await;
    assert_eq!(ready.metadata.generation, applied.metadata.generation);
    let d: Deployment = get(&ns, "mb-receiver").await.unwrap();
    let volumes = d.spec.unwrap().template.spec.unwrap().volumes.unwrap();
    let source = volumes.iter().find_map(|v| v.secret.clone()).unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("mb-creds"));
    assert_eq!(source.items.unwrap()[0].key, "token");
    assert!(
        ready.status.unwrap().secret_name.is_none(),
        "nothing was generated"
    );
    let logs = operator_logs(&ns.client).await;
    assert!(!logs.contains("s3cret-token"));
}

/// An invalid Webhook never gets in: `kubectl apply`, client-side or server-side, fails
/// with the CRD rule's message, which names the field and the fix; a valid one passes.
#[tokio::test]
async fn invalid_webhooks_are_refused_at_apply_with_what_to_fix() {
    let ns = TestNamespace::new("cel").await;
    let hmac = "genericHmac: {header: X-Sig, algorithm: sha256, encoding: hex";
    let cases: Vec<(&str, String, &str)> = vec![
        ("nosl", "{path: opal, provider: opal}".into(), "spec.path must start with '/'"),
        ("chars", "{path: '/bad path', provider: github}".into(), "spec.path may hold letters, digits"),
        ("dots", "{path: /a/../b, provider: github}".into(), "spec.path has an empty, '.' or '..' segment"),
        ("dslash", "{path: /a//b, provider: github}".into(), "spec.path has an empty, '.' or '..' segment"),
        ("reserved", "{path: /healthz, provider: github}".into(), "are the receiver's own"),
        ("longpath", format!("{{path: /{}, provider: github}}", "a".repeat(300)), "spec.path: Too long"),
        ("provider", "{path: /p, provider: paypal}".into(), "\"opal\""),
        ("nohmac", "{path: /g, provider: generic-hmac}".into(), "provider generic-hmac needs spec.genericHmac"),
        ("stray", format!("{{path: /g, provider: github, {hmac}}}}}"), "spec.genericHmac applies to provider generic-hmac only"),
        ("nobody", format!("{{path: /g, provider: generic-hmac, {hmac}, template: 'x.{{header:X-Id}}'}}}}"), "spec.genericHmac.template does not sign {body}"),
        ("nots", format!("{{path: /g, provider: generic-hmac, {hmac}, template: '{{timestamp}}.{{body}}'}}}}"), "set spec.genericHmac.timestampHeader"),
        ("unknown", format!("{{path: /g, provider: generic-hmac, {hmac}, template: '{{nope}}{{body}}'}}}}"), "spec.genericHmac.template has an unknown placeholder"),
        ("unclosed", format!("{{path: /g, provider: generic-hmac, {hmac}, template: '{{body'}}}}"), "spec.genericHmac.template has an unknown placeholder"),
        ("header", "{path: /g, provider: generic-hmac, genericHmac: {header: 'X Sig', algorithm: sha256, encoding: hex}}".into(), "spec.genericHmac.header must be a header name"),
        ("emptytype", "{path: /m, provider: github, eventTypes: [push, ' ']}".into(), "spec.eventTypes must not contain an empty entry"),
        ("duptype", "{path: /m, provider: github, eventTypes: [push, push]}".into(), "spec.eventTypes lists an event type twice"),
        ("opaltype", "{path: /o, provider: opal, eventTypes: [USER_ADDED]}".into(), "spec.eventTypes: opal sends only USER_ADDED_TO_RESOURCE"),
        ("memtype", "{path: /m, provider: membrane, eventTypes: [org-deleted]}".into(), "spec.eventTypes: membrane sends only user-invited-to-org"),
        ("emptykey", "{path: /m, provider: membrane, secretRef: {name: creds, key: ''}}".into(), "spec.secretRef.key is empty"),
        ("badkey", "{path: /m, provider: membrane, secretRef: {name: creds, key: 'a/b'}}".into(), "spec.secretRef.key must be a valid Secret key"),
        ("badname", "{path: /m, provider: membrane, secretRef: {name: Creds, key: k}}".into(), "spec.secretRef.name must be a valid name"),
        ("dupsecret", "{path: /m, provider: membrane, secretRef: {name: c, key: k}, additionalSecretRefs: [{name: c, key: k}]}".into(), "spec.additionalSecretRefs names a Secret key twice"),
        ("state", "{path: /m, provider: github, sinks: {configMap: {name: gh, mode: state}}}".into(), "spec.sinks.configMap.mode \"state\" needs provider opal or membrane"),
        ("owncm", "{path: /m, provider: github, sinks: {configMap: {name: owncm-receiver-config}}}".into(), "spec.sinks.configMap.name is the receiver's own config"),
        ("ftp", "{path: /m, provider: github, sinks: {forward: {url: 'ftp://app/x'}}}".into(), "spec.sinks.forward.url must be an http:// or https:// URL"),
        ("nowhere", "{path: /m, provider: github, sinks: {events: false}}".into(), "spec.sinks records deliveries nowhere"),
        ("sccm", "{path: /m, provider: github, sidecar: {deployment: app}, sinks: {configMap: {name: x}, forward: {url: 'http://127.0.0.1:8080/'}}}".into(), "spec.sidecar runs the receiver under the application's ServiceAccount"),
        ("scfwd", "{path: /m, provider: github, sidecar: {deployment: app}}".into(), "spec.sidecar needs sinks.forward.url"),
        ("scports", "{path: /m, provider: github, sidecar: {deployment: app, port: 9000, metricsPort: 9000}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/'}}}".into(), "spec.sidecar.port and spec.sidecar.metricsPort must differ"),
        ("wildcard", "{path: /m, provider: github, ingress: {host: '*.example.com'}}".into(), "spec.ingress.host is a wildcard"),
        ("class", "{path: /m, provider: github, ingress: {host: hooks.example.com, className: Nginx_1}}".into(), "spec.ingress.className must be a valid name"),
        ("timeout", "{path: /m, provider: github, limits: {requestTimeoutSeconds: 1}}".into(), "spec.limits.requestTimeoutSeconds"),
        ("replicas", "{path: /m, provider: github, receiver: {replicas: -1}}".into(), "spec.receiver.replicas"),
        ("9name", "{path: /m, provider: github}".into(), "metadata.name must start with a letter"),
        ("addname", "{path: /m, provider: membrane, additionalSecretRefs: [{name: 'a_b', key: k}]}".into(), "spec.additionalSecretRefs[].name must be a valid name"),
        ("addkey", "{path: /m, provider: membrane, additionalSecretRefs: [{name: a, key: ''}]}".into(), "spec.additionalSecretRefs[].key must be a valid, non-empty Secret key"),
        // Checked against the replay window but not signed: a captured delivery would
        // replay with a fresh header.
        ("tsunsigned", format!("{{path: /g, provider: generic-hmac, {hmac}, timestampHeader: X-Ts}}}}"), "spec.genericHmac.timestampHeader is not signed"),
        ("tsunsigned2", format!("{{path: /g, provider: generic-hmac, {hmac}, timestampHeader: X-Ts, template: '{{header:X-Id}}.{{body}}'}}}}"), "spec.genericHmac.timestampHeader is not signed"),
        ("tsheader", format!("{{path: /g, provider: generic-hmac, {hmac}, timestampHeader: 'X:Ts'}}}}"), "spec.genericHmac.timestampHeader must be a header name"),
        ("cmname", "{path: /m, provider: github, sinks: {configMap: {name: 'My-Log'}}}".into(), "spec.sinks.configMap.name must be a valid name"),
        ("scdeploy", "{path: /m, provider: github, sidecar: {deployment: 'App'}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/'}}}".into(), "spec.sidecar.deployment must be a valid name"),
        ("host", "{path: /m, provider: github, ingress: {host: 'hooks_example.com'}}".into(), "spec.ingress.host must be a valid name"),
        ("tls", "{path: /m, provider: github, ingress: {host: hooks.example.com, tlsSecretName: 'TLS'}}".into(), "spec.ingress.tlsSecretName must be a valid name"),
        ("both", "{path: /m, provider: github, ingress: {host: hooks.example.com}, gateway: {parentRefs: [{name: gw}], hostname: hooks.example.com}}".into(), "spec.ingress and spec.gateway both expose the receiver"),
        ("gwhost", "{path: /m, provider: github, gateway: {parentRefs: [{name: gw}], hostname: '*.example.com'}}".into(), "spec.gateway.hostname is a wildcard"),
        ("gwname", "{path: /m, provider: github, gateway: {parentRefs: [{name: 'Gw'}], hostname: hooks.example.com}}".into(), "spec.gateway.parentRefs[].name must be a valid name"),
        ("gwns", "{path: /m, provider: github, gateway: {parentRefs: [{name: gw, namespace: 'a.b'}], hostname: hooks.example.com}}".into(), "spec.gateway.parentRefs[].namespace must be a namespace name"),
        ("gwsection", "{path: /m, provider: github, gateway: {parentRefs: [{name: gw, sectionName: 'HTTPS'}], hostname: hooks.example.com}}".into(), "spec.gateway.parentRefs[].sectionName must be a valid name"),
        ("gwnone", "{path: /m, provider: github, gateway: {parentRefs: [], hostname: hooks.example.com}}".into(), "spec.gateway.parentRefs"),
        ("label64", format!("{{path: /m, provider: membrane, secretRef: {{name: '{}', key: k}}}}", "a".repeat(64)), "spec.secretRef.name must be a valid name"),
    ];
    let mut failures = Vec::new();
    for (name, spec, expected) in &cases {
        let yaml = format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        );
        for mode in ["--server-side=false", "--server-side=true"] {
            let (ok, out) = kubectl_stdin(&ns.name, &yaml, &[mode]);
            if ok || !out.contains(expected) {
                failures.push(format!(
                    "{name} ({mode}): applied={ok}, expected {expected:?} in: {out}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let (_, out) = kubectl(&["get", "webhooks", "-n", &ns.name, "-o", "name"]);
    assert_eq!(out.trim(), "", "nothing invalid was stored");

    // Valid ones pass, both ways, with every rule evaluated.
    for (name, spec) in [
        ("opal", "{path: /opal, provider: opal, eventTypes: [USER_ADDED_TO_GROUP]}".to_string()),
        ("acme", format!("{{path: /acme, provider: generic-hmac, {hmac}, timestampHeader: X-Ts, template: '{{timestamp}}.{{header:X-Id}}.{{body}}'}}, sinks: {{configMap: {{name: acme-log, mode: log}}}}}}")),
        ("app", "{path: /app, provider: stripe, sidecar: {deployment: billing}, sinks: {events: false, forward: {url: 'http://127.0.0.1:8080/hooks'}}, secretRef: {name: s, key: k}, additionalSecretRefs: [{name: s, key: k2}]}".to_string()),
    ] {
        let yaml = format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        );
        for mode in ["--server-side=false", "--server-side=true"] {
            let (ok, out) = kubectl_stdin(&ns.name, &yaml, &[mode, "--dry-run=server"]);
            assert!(ok, "{name} ({mode}) must be accepted: {out}");
        }
    }
}

#[tokio::test]
async fn conflicts_leave_the_older_webhook_working() {
    let ns = TestNamespace::new("conflict").await;
    let opal = |name: &str| {
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
             spec: {{path: /{name}, provider: opal}}\n"
        )
    };
    ns.apply_webhook(&opal("first")).await;
    ns.webhook_ready("first", "True", "ReceiverAvailable").await;
    // Creation timestamps have a one-second resolution.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ns.apply_webhook(&opal("second")).await;
    let second = ns.webhook_ready("second", "False", "Conflict").await;
    let message = &second.ready_condition().unwrap().message;
    assert!(
        message.contains("\"first\"") && message.contains("one webhook per organization"),
        "{message}"
    );
    // Both are served by the namespace's default pool, which serves the older one only.
    let config: ConfigMap = get(&ns, "default-pool-config").await.unwrap();
    let served =
        hookwarden_api::pool_config::PoolConfig::from_yaml(&config.data.unwrap()["pool.yaml"])
            .unwrap();
    let names: Vec<&str> = served.webhooks.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["first"], "the pool serves the older Webhook alone");
    let first: Webhook = ns.api::<Webhook>().get("first").await.unwrap();
    assert_eq!(
        first.ready_condition().unwrap().status,
        "True",
        "the older one keeps working"
    );

    // Membrane: one webhook per event type.
    let membrane = |name: &str, types: &str| {
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
             spec: {{path: /{name}, provider: membrane, eventTypes: {types}}}\n"
        )
    };
    ns.apply_webhook(&membrane("m-created", "[org-created]"))
        .await;
    ns.apply_webhook(&membrane("m-invited", "[user-invited-to-org]"))
        .await;
    ns.webhook_ready("m-created", "True", "ReceiverAvailable")
        .await;
    ns.webhook_ready("m-invited", "True", "ReceiverAvailable")
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ns.apply_webhook(&membrane("m-all", "[]")).await;
    let all = ns.webhook_ready("m-all", "False", "Conflict").await;
    let message = &all.ready_condition().unwrap().message;
    assert!(message.contains("one webhook per event type"), "{message}");

    // The older one goes away: the newer one takes over without being touched.
    ns.delete::<Webhook>("first").await;
    ns.webhook_ready("second", "True", "ReceiverAvailable")
        .await;
}

#[tokio::test]
async fn receiver_and_operator_hold_only_what_they_need() {
    let ns = TestNamespace::new("rbac").await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: opal}\n\
         spec: {path: /opal, provider: opal, sinks: {configMap: {name: opal-access}}, receiver: {}}\n",
    )
    .await;
    ns.webhook_ready("opal", "True", "ReceiverAvailable").await;
    let c = &ns.client;
    let n = Some(ns.name.as_str());
    let receiver = format!("system:serviceaccount:{}:opal-receiver", ns.name);
    let r = receiver.as_str();
    assert!(can(c, r, "create", "events.k8s.io", "events", n, None).await);
    assert!(can(c, r, "patch", "events.k8s.io", "events", n, None).await);
    for verb in ["get", "update", "patch"] {
        assert!(
            can(c, r, verb, "", "configmaps", n, Some("opal-access")).await,
            "{verb} sink"
        );
    }
    assert!(!can(c, r, "delete", "", "configmaps", n, Some("opal-access")).await);
    assert!(
        !can(
            c,
            r,
            "get",
            "",
            "configmaps",
            n,
            Some("opal-receiver-config")
        )
        .await
    );
    assert!(!can(c, r, "list", "", "configmaps", n, None).await);
    assert!(!can(c, r, "create", "", "configmaps", n, None).await);
    assert!(!can(c, r, "get", "", "secrets", n, Some("opal-signing-secret")).await);
    assert!(
        !can(
            c,
            r,
            "create",
            "events.k8s.io",
            "events",
            Some("default"),
            None
        )
        .await
    );
    assert!(!can(c, r, "get", "hookwarden.io", "webhooks", n, Some("opal")).await);

    // The operator writes status, never a user's spec, and never changes a Secret. (It may
    // list and watch Secrets: a pool's Role grants its pods a watch on the Secrets its
    // Webhooks name, and RBAC lets the operator grant only what it holds; `get` on any
    // Secret, which it had before, reads the same.)
    let op = "system:serviceaccount:hookwarden-system:hookwarden-operator";
    assert!(
        can(
            c,
            op,
            "patch",
            "hookwarden.io",
            "webhooks/status",
            n,
            Some("opal")
        )
        .await
    );
    assert!(
        !can(
            c,
            op,
            "update",
            "hookwarden.io",
            "webhooks",
            n,
            Some("opal")
        )
        .await
    );
    assert!(!can(c, op, "patch", "hookwarden.io", "webhooks", n, Some("opal")).await);
    assert!(
        !can(
            c,
            op,
            "delete",
            "",
            "secrets",
            n,
            Some("opal-signing-secret")
        )
        .await
    );
    assert!(
        !can(
            c,
            op,
            "update",
            "",
            "secrets",
            n,
            Some("opal-signing-secret")
        )
        .await
    );
    assert!(!can(c, op, "delete", "", "nodes", None, None).await);

    // And it really runs as that identity.
    let pods: kube::Api<Pod> = kube::Api::namespaced(c.clone(), OPERATOR_NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=hookwarden-operator"))
        .await
        .unwrap();
    assert!(!list.items.is_empty());
    for pod in list {
        assert_eq!(
            pod.spec.unwrap().service_account_name.as_deref(),
            Some("hookwarden-operator")
        );
    }
}

/// A sink ConfigMap nearing the 1 MiB limit is reported (condition SinkCapacity=False and a
/// Warning Event), and the report clears when it has room again.
#[tokio::test]
async fn a_nearly_full_sink_configmap_is_reported() {
    let ns = TestNamespace::new("sink-full").await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: orgs}\n\
         spec: {path: /orgs, provider: membrane, sinks: {configMap: {name: orgs}}}\n",
    )
    .await;
    ns.webhook_ready("orgs", "True", "ReceiverAvailable").await;
    let capacity = |w: &Webhook| {
        w.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "SinkCapacity"))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let webhooks = ns.api::<Webhook>();
    eventually("SinkCapacity=True", CONVERGE, || async {
        let w = webhooks.get("orgs").await.unwrap();
        match capacity(&w) {
            Some((s, r)) if s == "True" && r == "CapacityAvailable" => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // Someone (or something) fills the ConfigMap to 800 KiB.
    let cms = ns.api::<ConfigMap>();
    let filler = serde_json::json!({"data": {"filler": "x".repeat(800 * 1024)}});
    cms.patch("orgs", &PatchParams::default(), &Patch::Merge(&filler))
        .await
        .unwrap();
    eventually("SinkCapacity=False", CONVERGE, || async {
        let w = webhooks.get("orgs").await.unwrap();
        match capacity(&w) {
            Some((s, r)) if s == "False" && r == "SinkNearlyFull" => Ok(()),
            other => Err(other),
        }
    })
    .await;
    let warned = events_regarding(&ns.client, &ns.name, "orgs")
        .await
        .into_iter()
        .any(|e| {
            e.reason.as_deref() == Some("SinkNearlyFull") && e.type_.as_deref() == Some("Warning")
        });
    assert!(warned, "no SinkNearlyFull Warning Event");
    // The receiver still works, under the limit.
    let w = ns.webhook_ready("orgs", "True", "ReceiverAvailable").await;
    assert!(w.status.unwrap().conditions.len() >= 2);

    let clear = serde_json::json!({"data": {"filler": null}});
    cms.patch("orgs", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .unwrap();
    eventually("SinkCapacity=True again", CONVERGE, || async {
        let w = webhooks.get("orgs").await.unwrap();
        match capacity(&w) {
            Some((s, _)) if s == "True" => Ok(()),
            other => Err(other),
        }
    })
    .await;
}

#[tokio::test]
async fn ingress_follows_the_spec_and_status_shows_the_external_url() {
    let ns = TestNamespace::new("ingress").await;
    let webhook = |ingress: &str| {
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: opal}}\n\
             spec: {{path: /opal, provider: opal{ingress}}}\n"
        )
    };
    let ingress_named = |ns: &TestNamespace| {
        let api = ns.api::<k8s_openapi::api::networking::v1::Ingress>();
        async move { api.get_opt("opal-receiver").await.expect("get Ingress") }
    };
    let external_url = |ns: &TestNamespace| {
        let api = ns.api::<Webhook>();
        async move {
            api.get("opal")
                .await
                .expect("get Webhook")
                .status
                .and_then(|s| s.external_url)
        }
    };

    let owner = ns
        .apply_webhook(&webhook(
            ", ingress: {host: hooks.example.com, className: nginx, tlsSecretName: hooks-tls, \
             annotations: {cert-manager.io/cluster-issuer: letsencrypt}}",
        ))
        .await;
    ns.webhook_ready("opal", "True", "ReceiverAvailable").await;
    let ingress = eventually("the Ingress exists", SHORT, || async {
        ingress_named(&ns).await.ok_or("no Ingress yet")
    })
    .await;
    assert!(controlled_by(&ingress.metadata, &owner));
    assert_eq!(
        ingress.metadata.annotations.as_ref().unwrap()["cert-manager.io/cluster-issuer"],
        "letsencrypt"
    );
    let spec = ingress.spec.unwrap();
    assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
    assert_eq!(
        spec.tls.unwrap()[0].secret_name.as_deref(),
        Some("hooks-tls")
    );
    let rule = &spec.rules.unwrap()[0];
    assert_eq!(rule.host.as_deref(), Some("hooks.example.com"));
    let path = &rule.http.as_ref().unwrap().paths[0];
    assert_eq!(path.path.as_deref(), Some("/opal"));
    assert_eq!(path.path_type, "Exact");
    // The Webhook is served by its namespace's default pool: the Ingress leads there.
    assert_eq!(path.backend.service.as_ref().unwrap().name, "default-pool");
    assert_eq!(
        external_url(&ns).await.as_deref(),
        Some("https://hooks.example.com/opal")
    );

    // A new host without TLS: the Ingress and the URL follow.
    ns.apply_webhook(&webhook(", ingress: {host: hooks2.example.com}"))
        .await;
    eventually("the Ingress follows the new host", CONVERGE, || async {
        let i = ingress_named(&ns).await.ok_or("no Ingress")?;
        let spec = i.spec.ok_or("no spec")?;
        let host = spec.rules.unwrap_or_default()[0].host.clone();
        match (host.as_deref(), spec.tls, spec.ingress_class_name) {
            (Some("hooks2.example.com"), None, None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("the external URL follows", CONVERGE, || async {
        match external_url(&ns).await {
            Some(u) if u == "http://hooks2.example.com/opal" => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // Without spec.ingress the Ingress goes, and so does the URL.
    ns.apply_webhook(&webhook("")).await;
    eventually("the Ingress is deleted", CONVERGE, || async {
        match ingress_named(&ns).await {
            None => Ok(()),
            Some(_) => Err("still there"),
        }
    })
    .await;
    eventually("the external URL is gone", CONVERGE, || async {
        match external_url(&ns).await {
            None => Ok(()),
            other => Err(other),
        }
    })
    .await;

    // An invalid host is refused at apply (the CRD's rule), and nothing changes.
    let (ok, out) = kubectl_stdin(
        &ns.name,
        &webhook(", ingress: {host: '*.example.com'}"),
        &[],
    );
    assert!(
        !ok && out.contains("spec.ingress.host is a wildcard"),
        "{out}"
    );
    ns.webhook_ready("opal", "True", "ReceiverAvailable").await;
    assert!(ingress_named(&ns).await.is_none());
}

/// What a GitOps tool sees: the manifest it applied is what stays in the cluster. The
/// operator writes only status (through the status subresource), adds no defaults, and
/// applying the same manifest again changes nothing.
#[tokio::test]
async fn reapplying_the_same_manifest_changes_nothing() {
    let ns = TestNamespace::new("gitops").await;
    let manifest = format!(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata:\n  name: membrane\n  namespace: {}\n\
         spec:\n  path: /membrane\n  provider: membrane\n  eventTypes: [org-created]\n\
         \x20 sinks:\n    configMap: {{name: membrane-state}}\n  limits: {{requestTimeoutSeconds: 20}}\n",
        ns.name
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &manifest).unwrap();
    let path = file.path().to_str().unwrap();

    // kubectl's client-side apply, as Argo CD does by default.
    let (ok, out) = kubectl(&["apply", "-f", path]);
    assert!(ok, "{out}");
    let ready = ns
        .webhook_ready("membrane", "True", "ReceiverAvailable")
        .await;
    let generation = ready.metadata.generation;

    // The spec is exactly what was applied: nothing defaulted, nothing added.
    let applied: serde_json::Value = serde_saphyr::from_str(&manifest).unwrap();
    let live = serde_json::to_value(&ready).unwrap();
    assert_eq!(live["spec"], applied["spec"]);

    // The operator owns no field outside status.
    for entry in ready.metadata.managed_fields.as_deref().unwrap_or_default() {
        if entry.manager.as_deref() == Some("hookwarden-operator") {
            let fields = entry
                .fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            let owned: Vec<&String> = fields
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            assert!(
                owned.iter().all(|k| *k == "f:status"),
                "the operator owns {owned:?}"
            );
        }
    }

    // kubectl diff (a server-side dry run, as GitOps tools compare) finds nothing to change.
    let (same, diff) = kubectl(&["diff", "-f", path]);
    assert!(same, "drift after reconciliation: {diff}");
    // Applying again leaves the object as it was.
    let (ok, out) = kubectl(&["apply", "-f", path]);
    assert!(ok && out.contains("unchanged"), "{out}");
    // Server-side apply (Flux) of the same content is no change either.
    let (ok, out) = kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=flux",
        "--force-conflicts",
        "-f",
        path,
    ]);
    assert!(ok, "{out}");
    consistently("the generation stays", Duration::from_secs(5), || async {
        let w: Webhook = ns.api().get("membrane").await.map_err(|e| e.to_string())?;
        if w.metadata.generation == generation
            && serde_json::to_value(&w.spec).unwrap() == applied["spec"]
        {
            Ok(())
        } else {
            Err(format!(
                "generation {:?} spec {:?}",
                w.metadata.generation, w.spec
            ))
        }
    })
    .await;
}

/// The namespaces these tests run in enforce the restricted Pod Security profile, so every
/// receiver that becomes Ready in them (dedicated or sidecar) was admitted under it; and so
/// does the operator's own namespace, where its pods run.
#[tokio::test]
async fn test_namespaces_enforce_restricted_pod_security() {
    let ns = TestNamespace::new("psa").await;
    let privileged: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{
            "name": "c", "image": "hookwarden-receiver:dev", "imagePullPolicy": "Never",
            "securityContext": {"privileged": true}
        }]}
    }))
    .unwrap();
    let refused = ns
        .api::<Pod>()
        .create(&kube::api::PostParams::default(), &privileged)
        .await
        .expect_err("a privileged pod must be refused");
    assert!(
        refused
            .to_string()
            .contains("violates PodSecurity \"restricted:latest\""),
        "{refused}"
    );

    let system: Namespace = kube::Api::all(ns.client.clone())
        .get(OPERATOR_NAMESPACE)
        .await
        .unwrap();
    assert_eq!(
        system
            .labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let operators: kube::Api<Pod> = kube::Api::namespaced(ns.client.clone(), OPERATOR_NAMESPACE);
    let running = operators
        .list(&ListParams::default().labels("app.kubernetes.io/name=hookwarden-operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count();
    assert!(running >= 1, "no operator pod runs in {OPERATOR_NAMESPACE}");
}

/// `spec.gateway` on a cluster without the Gateway API (the receiver still serves, the
/// condition says what is missing), then with its CRDs installed from the module's release
/// manifests: the HTTPRoute sends the path on the host to the receiver, `RouteAccepted`
/// follows what a Gateway controller writes in the route's status (here the test plays the
/// controller: none runs in the test cluster), and the route follows and leaves the spec.
#[tokio::test]
async fn gateway_route_follows_the_spec_and_reports_its_acceptance() {
    let crds = std::env::var("HOOKWARDEN_GATEWAY_API_CRDS")
        .expect("HOOKWARDEN_GATEWAY_API_CRDS (set by tests/e2e.sh): the Gateway API CRDs");
    let ns = TestNamespace::new("gateway").await;
    // Start without the Gateway API, whatever an earlier run left.
    let (ok, out) = kubectl(&["delete", "-f", &crds, "--ignore-not-found", "--wait=true"]);
    assert!(ok, "{out}");

    let webhook = |extra: &str| {
        format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: opal}}\n\
             spec: {{path: /opal, provider: opal{extra}}}\n"
        )
    };
    let route_condition = |ns: &TestNamespace| {
        let api = ns.api::<Webhook>();
        async move {
            let w = api.get("opal").await.expect("get Webhook");
            let status = w.status.unwrap_or_default();
            let c = status
                .conditions
                .into_iter()
                .find(|c| c.type_ == "RouteAccepted");
            (c.map(|c| (c.status, c.reason)), status.external_url)
        }
    };
    ns.apply_webhook(&webhook(
        ", gateway: {parentRefs: [{name: public}], hostname: hooks.example.com}",
    ))
    .await;
    ns.webhook_ready("opal", "True", "ReceiverAvailable").await;
    let state = eventually(
        "RouteAccepted says the Gateway API is missing",
        CONVERGE,
        || async {
            match route_condition(&ns).await {
                (Some((s, r)), url) if r == "GatewayAPINotInstalled" => Ok((s, url)),
                other => Err(other),
            }
        },
    )
    .await;
    assert_eq!(state, ("False".to_string(), None));

    // The Gateway API arrives; the operator notices without a change to the Webhook.
    let (ok, out) = kubectl(&["apply", "--server-side", "-f", &crds]);
    assert!(ok, "{out}");
    // (polled: `kubectl wait` fails outright on a CRD whose status is not written yet)
    for crd in ["httproutes", "gateways"] {
        let name = format!("{crd}.gateway.networking.k8s.io");
        eventually(&format!("CRD {name} established"), SHORT * 3, || async {
            let (_, out) = kubectl(&[
                "get",
                "crd",
                &name,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
            ]);
            if out == "True" { Ok(()) } else { Err(out) }
        })
        .await;
    }
    let gateway = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: {}}}\n\
         spec:\n  gatewayClassName: example\n  listeners:\n\
         \x20 - {{name: https, protocol: HTTPS, port: 443, hostname: '*.example.com', tls: {{certificateRefs: [{{name: hooks-tls}}]}}}}\n",
        ns.name
    );
    let (ok, out) = kubectl_stdin(&ns.name, &gateway, &[]);
    assert!(ok, "{out}");
    let routes = http_routes(&ns);
    let route = route_eventually(&routes, "opal-receiver").await;
    let w: Webhook = ns.api().get("opal").await.unwrap();
    assert!(controlled_by(&route.metadata, &w));
    let spec = &route.data["spec"];
    assert_eq!(spec["hostnames"], serde_json::json!(["hooks.example.com"]));
    assert_eq!(spec["parentRefs"][0]["name"], "public");
    assert_eq!(
        spec["rules"][0]["matches"][0]["path"],
        serde_json::json!({"type": "Exact", "value": "/opal"})
    );
    assert_eq!(spec["rules"][0]["backendRefs"][0]["name"], "default-pool");
    assert_eq!(spec["rules"][0]["backendRefs"][0]["port"], 80);
    // No controller has looked at it; the Gateway's listener is HTTPS.
    // (the operator reads the Gateway again while the route is pending)
    let state = eventually("RouteAccepted Pending, an https URL", CONVERGE, || async {
        match route_condition(&ns).await {
            (Some((s, r)), Some(url)) if r == "Pending" && url.starts_with("https:") => {
                Ok((s, url))
            }
            other => Err(other),
        }
    })
    .await;
    assert_eq!(
        state,
        (
            "False".to_string(),
            "https://hooks.example.com/opal".to_string()
        )
    );

    // What a Gateway controller writes, and what the Webhook then says.
    let report = |accepted: &str, reason: &str| {
        let generation = route.metadata.generation.unwrap_or(1);
        serde_json::json!({"status": {"parents": [{
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "public"},
            "controllerName": "example.com/gateway-controller",
            "conditions": [
                {"type": "Accepted", "status": accepted, "reason": reason, "message": "test",
                 "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"},
                {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "test",
                 "observedGeneration": generation, "lastTransitionTime": "2026-01-01T00:00:00Z"}
            ]
        }]}})
        .to_string()
    };
    for (accepted, reason) in [("True", "Accepted"), ("False", "NotAllowedByListeners")] {
        let (ok, out) = kubectl(&[
            "patch",
            "httproute",
            "opal-receiver",
            "-n",
            &ns.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &report(accepted, reason),
        ]);
        assert!(ok, "{out}");
        eventually(
            &format!("RouteAccepted={accepted} {reason}"),
            CONVERGE,
            || async {
                match route_condition(&ns).await {
                    (Some((s, r)), _) if s == accepted && r == reason => Ok(()),
                    other => Err(other),
                }
            },
        )
        .await;
    }

    // The route follows the spec, and goes with the field.
    ns.apply_webhook(&webhook(
        ", gateway: {parentRefs: [{name: public}], hostname: events.example.com}",
    ))
    .await;
    eventually("the route's host follows", CONVERGE, || {
        let routes = routes.clone();
        async move {
            let r = routes
                .get("opal-receiver")
                .await
                .map_err(|e| e.to_string())?;
            match r.data["spec"]["hostnames"][0].as_str() {
                Some("events.example.com") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await;
    ns.apply_webhook(&webhook("")).await;
    eventually("the route is deleted", CONVERGE, || {
        let routes = routes.clone();
        async move {
            match routes
                .get_opt("opal-receiver")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(_) => Err("still there".to_string()),
            }
        }
    })
    .await;
    eventually(
        "no RouteAccepted condition, no external URL",
        CONVERGE,
        || async {
            match route_condition(&ns).await {
                (None, None) => Ok(()),
                other => Err(other),
            }
        },
    )
    .await;
}

/// A pod that asks (label `hookwarden.io/inject`) for a receiver no Webhook can give is
/// refused at creation with what to fix; a pod without the label never meets the injector.
#[tokio::test]
async fn a_pod_asking_for_a_receiver_no_webhook_gives_is_refused_with_what_to_fix() {
    let ns = TestNamespace::new("inject-refuse").await;
    let pod = |name: &str, label: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}{label}}}\nspec:\n  \
             securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}\n  \
             containers:\n    - name: app\n      image: hookwarden-e2e-app:dev\n      \
             imagePullPolicy: Never\n      securityContext: {{allowPrivilegeEscalation: false, \
             capabilities: {{drop: [ALL]}}}}\n"
        )
    };
    let (ok, out) = kubectl_stdin(
        &ns.name,
        &pod("a", ", labels: {hookwarden.io/inject: nope}"),
        &[],
    );
    assert!(!ok, "admitted: {out}");
    assert!(
        out.contains("Webhook \"nope\"") && out.contains("does not exist in namespace"),
        "{out}"
    );
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: own}\n\
         spec: {path: /own, provider: github}\n",
    )
    .await;
    let (ok, out) = kubectl_stdin(
        &ns.name,
        &pod("b", ", labels: {hookwarden.io/inject: own}"),
        &[],
    );
    assert!(!ok, "admitted: {out}");
    assert!(out.contains("has no spec.sidecar"), "{out}");
    let (ok, out) = kubectl_stdin(&ns.name, &pod("c", ""), &[]);
    assert!(ok, "{out}");
    let c: k8s_openapi::api::core::v1::Pod = ns.api().get("c").await.unwrap();
    assert!(c.spec.unwrap().init_containers.is_none());
}
