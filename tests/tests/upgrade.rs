//! Webhooks stored before the CRD's CEL rules existed (an upgrade from a release without
//! them, or a CRD that lags the operator): the operator's own checks still explain them
//! (`Ready=False, InvalidSpec`) and change nothing. The test installs the CRD without its
//! rules for a while, which would let invalid Webhooks of other tests in, so this suite
//! runs alone (tests/e2e.sh). The CRD is put back when the test ends, even on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hookwarden_tests::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::Value;

const SHORT: Duration = Duration::from_secs(10);
const CRD: &str = "webhooks.hookwarden.io";

fn strip_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("x-kubernetes-validations");
            map.values_mut().for_each(strip_rules);
        }
        Value::Array(list) => list.iter_mut().for_each(strip_rules),
        _ => {}
    }
}

/// Replaces the CRD's spec (a full update: server-side apply would keep the rules, which
/// another field manager owns).
async fn put_spec(client: &Client, spec: &Value) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = api.get(CRD).await.unwrap();
    crd.spec = serde_json::from_value(spec.clone()).unwrap();
    api.replace(CRD, &PostParams::default(), &crd)
        .await
        .unwrap();
}

/// Whether the API server now refuses a Webhook that only the CEL rules refuse.
fn rules_enforced(ns: &str) -> bool {
    let invalid = "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: probe}\n\
                   spec: {path: nosl, provider: github}\n";
    let (ok, _) = kubectl_stdin(ns, invalid, &["--dry-run=server"]);
    !ok
}

/// The CRD with its rules, put back when dropped.
struct RulesOff {
    client: Client,
    spec: Value,
    restored: bool,
}

impl RulesOff {
    async fn new(client: Client, ns: &str) -> Self {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let spec = serde_json::to_value(api.get(CRD).await.unwrap().spec).unwrap();
        assert!(
            spec.to_string().contains("x-kubernetes-validations"),
            "the CRD has no rules"
        );
        let mut stripped = spec.clone();
        strip_rules(&mut stripped);
        // The guard first, so that a failure from here on puts the rules back.
        let guard = RulesOff {
            client: client.clone(),
            spec,
            restored: false,
        };
        put_spec(&client, &stripped).await;
        let ns = ns.to_string();
        eventually("the CRD without rules in effect", SHORT * 3, || {
            let ns = ns.clone();
            async move {
                if rules_enforced(&ns) {
                    Err("still enforced")
                } else {
                    Ok(())
                }
            }
        })
        .await;
        guard
    }

    async fn restore(&mut self, ns: &str) {
        put_spec(&self.client, &self.spec).await;
        self.restored = true;
        let ns = ns.to_string();
        eventually("the CRD's rules in effect again", SHORT * 3, || {
            let ns = ns.clone();
            async move {
                if rules_enforced(&ns) {
                    Ok(())
                } else {
                    Err("not yet")
                }
            }
        })
        .await;
    }
}

impl Drop for RulesOff {
    fn drop(&mut self) {
        if self.restored {
            return;
        }
        // A test that failed before restoring: put the rules back from a runtime of its own
        // (with a client of its own: the test's client is served by the test's runtime,
        // which this drop is blocking).
        let spec = self.spec.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async { put_spec(&client().await, &spec).await });
        })
        .join();
    }
}

#[tokio::test]
async fn invalid_specs_stored_before_the_rules_are_explained_and_cause_no_churn() {
    let ns = TestNamespace::new("invalid").await;
    let mut rules_off = RulesOff::new(ns.client.clone(), &ns.name).await;

    // A working Webhook, stored while the rules are off, to be made invalid below.
    let good = "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: good}\n\
                spec: {path: /good, provider: github, receiver: {}}\n";
    ns.apply_webhook(good).await;
    ns.webhook_ready("good", "True", "ReceiverAvailable").await;

    // A bad path: explained, nothing created.
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: badpath}\n\
         spec: {path: opal, provider: opal, receiver: {}}\n",
    )
    .await;
    let w = ns.webhook_ready("badpath", "False", "InvalidSpec").await;
    let message = &w.ready_condition().unwrap().message;
    assert!(
        message.contains("spec.path \"opal\" must start with '/'"),
        "{message}"
    );
    assert!(get::<Deployment>(&ns, "badpath-receiver").await.is_none());
    assert!(get::<Secret>(&ns, "badpath-signing-secret").await.is_none());
    eventually("a Warning Event InvalidSpec", SHORT * 3, || async {
        let events = events_regarding(&ns.client, &ns.name, "badpath").await;
        events
            .iter()
            .find(|e| {
                e.reason.as_deref() == Some("InvalidSpec") && e.type_.as_deref() == Some("Warning")
            })
            .map(|_| ())
            .ok_or(events.len())
    })
    .await;

    // An empty secret key, and a blank one.
    for (name, key) in [("nokey", "\"\""), ("blankkey", "\" \"")] {
        ns.apply_webhook(&format!(
            "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
             spec: {{path: /{name}, provider: membrane, secretRef: {{name: creds, key: {key}}}}}\n",
        ))
        .await;
        let w = ns.webhook_ready(name, "False", "InvalidSpec").await;
        assert!(
            w.ready_condition()
                .unwrap()
                .message
                .contains("spec.secretRef.key is empty"),
            "{name}: {:?}",
            w.ready_condition()
        );
    }

    // A working Webhook made invalid keeps its children untouched.
    let versions = || async {
        let d: Deployment = get(&ns, "good-receiver").await.unwrap();
        let s: Service = get(&ns, "good-receiver").await.unwrap();
        let c: ConfigMap = get(&ns, "good-receiver-config").await.unwrap();
        (
            d.resource_version(),
            s.resource_version(),
            c.resource_version(),
        )
    };
    // Let the Deployment settle (status updates change its resourceVersion).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = versions().await;
    ns.apply_webhook(&good.replace("/good", "/bad path")).await;
    // Every invalid Webhook is stored: the rules come back, and the operator goes on
    // explaining what is wrong (its status writes pass: the API server ratchets rules over
    // fields that did not change).
    // A name only a root rule (checked at creation) refuses: valid spec, invalid name.
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: a.b}\n\
         spec: {path: /ab, provider: github}\n",
    )
    .await;
    ns.webhook_ready("a.b", "False", "InvalidSpec").await;
    rules_off.restore(&ns.name).await;

    // With the rules back, such a Webhook can still be changed, and the operator can still
    // write its status: clear the status by hand and it comes back; change the spec and
    // the new generation is explained.
    for name in ["badpath", "a.b"] {
        let (ok, out) = kubectl(&[
            "patch",
            "webhook",
            name,
            "-n",
            &ns.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":null}"#,
        ]);
        assert!(ok, "{name}: {out}");
    }
    ns.webhook_ready("badpath", "False", "InvalidSpec").await;
    let w = ns.webhook_ready("a.b", "False", "InvalidSpec").await;
    assert!(
        w.ready_condition()
            .unwrap()
            .message
            .contains("the Webhook name \"a.b\""),
        "{:?}",
        w.ready_condition()
    );
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: a.b}\n\
         spec: {path: /ab2, provider: github}\n",
    )
    .await;
    let w = ns.webhook_ready("a.b", "False", "InvalidSpec").await;
    assert_eq!(w.metadata.generation, Some(2));
    let w = ns.webhook_ready("good", "False", "InvalidSpec").await;
    assert!(
        w.ready_condition()
            .unwrap()
            .message
            .contains("contains ' '")
    );
    consistently(
        "children untouched while the spec is invalid",
        SHORT,
        || async {
            let now = versions().await;
            if now == before {
                Ok(())
            } else {
                Err(format!("{before:?} -> {now:?}"))
            }
        },
    )
    .await;
}
