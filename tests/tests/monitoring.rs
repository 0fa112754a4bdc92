//! The chart's alert rules and dashboard against a real Prometheus (Debian's package) that
//! scrapes the operator and the receivers on the project's cluster, as a platform team
//! would run them: deliveries are sent, and what a user would see (alerts firing or not,
//! dashboard panels with data) is asserted through Prometheus's HTTP API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use hookwarden_tests::prometheus::{self, Prometheus};
use hookwarden_tests::*;
use k8s_openapi::api::core::v1::ConfigMap;
use serde_json::Value;

/// The rules as a user would install them, with windows and `for` short enough for a test:
/// Prometheus evaluates them every second here.
fn short_rules() -> String {
    let mut set = Vec::new();
    for alert in [
        "webhookNotReady",
        "signatureRefusals",
        "sinkNotRecording",
        "deliveriesShed",
        "sinkNearlyFull",
        "operatorNoLeader",
        "receiverDown",
    ] {
        set.push(format!("prometheusRule.alerts.{alert}.for=5s"));
    }
    for alert in ["signatureRefusals", "sinkNotRecording", "deliveriesShed"] {
        set.push(format!("prometheusRule.alerts.{alert}.window=2m"));
    }
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    prometheus::rendered_rules(&set)
}

fn stripe(i: usize) -> String {
    format!(r#"{{"id":"evt_{i}","type":"invoice.paid"}}"#)
}

/// The state of alert `name` for Webhook `webhook` (`namespace/name`), if Prometheus has it.
async fn alert_state(p: &Prometheus, name: &str, webhook: &str) -> Option<String> {
    p.alerts()
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|(n, _, labels)| n == name && labels["webhook"] == webhook)
        .map(|(_, state, _)| state)
}

async fn firing(p: &Prometheus, name: &str, webhook: &str) {
    eventually(
        &format!("{name} firing for {webhook}"),
        Duration::from_secs(120),
        || async {
            match alert_state(p, name, webhook).await.as_deref() {
                Some("firing") => Ok(()),
                other => Err(format!("{other:?}; all: {:?}", p.alerts().await)),
            }
        },
    )
    .await;
}

/// Forged deliveries to one Webhook page for its signature, and only for it; a Webhook
/// without its Secret pages as not Ready; a full sink ConfigMap pages as nearly full and its
/// refused deliveries as not recorded; a healthy neighbour, the operator and the receivers'
/// targets page for nothing. Then every expression of the dashboard returns series, and
/// every metric the rules read exists.
#[tokio::test]
async fn alerts_fire_for_the_webhook_in_trouble_and_the_dashboard_has_data() {
    let ns = TestNamespace::new("monitoring").await;
    let (forged_url, _) = ready_receiver(&ns, "forged", "stripe", "").await;
    let (valid_url, valid_secret) = ready_receiver(&ns, "valid", "stripe", "").await;
    let (full_url, full_secret) = ready_receiver(
        &ns,
        "full",
        "stripe",
        ", sinks: {events: false, configMap: {name: full-state, mode: log}}",
    )
    .await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: nosecret}\n\
         spec: {path: /nosecret, provider: stripe, secretRef: {name: missing, key: secret}}\n",
    )
    .await;
    ns.webhook_ready("nosecret", "False", "SecretNotFound")
        .await;

    let p = Prometheus::start(19093, &[&ns.name], &short_rules());
    // The namespace's default pool serves all four: its two pods, both scraped.
    p.targets_up(prometheus::RECEIVER_JOB, 2).await;
    p.targets_up(prometheus::OPERATOR_JOB, 1).await;

    // The neighbour: valid deliveries only.
    for i in 0..15 {
        let out = send_eventually(&valid_url, "stripe", valid_secret.path(), &stripe(i), &[]);
        assert!(out.starts_with("200"), "{out}");
    }
    // Forged: signed with a secret that is not the Webhook's.
    let wrong = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(wrong.path(), "whsec_bm90LXRoZS1zZWNyZXQtMDEyMzQ1Njc4OWFi").unwrap();
    for i in 0..30 {
        let (ok, out) = send(&forged_url, "stripe", wrong.path(), &stripe(i), &[]);
        assert!(!ok && out.starts_with("401"), "{out}");
    }
    // A sink ConfigMap that someone filled up: deliveries are refused (503), never truncated.
    let first = send_eventually(&full_url, "stripe", full_secret.path(), &stripe(100), &[]);
    assert!(first.starts_with("200"), "{first}");
    // (read and replaced again if the operator or a receiver wrote it in between)
    let cms: kube::Api<ConfigMap> = ns.api();
    eventually("the sink ConfigMap filled", CONVERGE, || async {
        let mut cm = cms.get("full-state").await.map_err(|e| e.to_string())?;
        cm.metadata.managed_fields = None;
        cm.data
            .get_or_insert_default()
            .insert("ballast".into(), "x".repeat(910 * 1024));
        cms.replace("full-state", &Default::default(), &cm)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    for i in 0..12 {
        let (ok, out) = send(
            &full_url,
            "stripe",
            full_secret.path(),
            &stripe(200 + i),
            &[],
        );
        assert!(!ok && out.starts_with("503"), "{out}");
    }

    let webhook = |name: &str| format!("{}/{name}", ns.name);
    firing(&p, "HookwardenSignatureRefusals", &webhook("forged")).await;
    firing(&p, "HookwardenWebhookNotReady", &webhook("nosecret")).await;
    firing(&p, "HookwardenSinkNearlyFull", &webhook("full")).await;
    firing(&p, "HookwardenSinkNotRecording", &webhook("full")).await;

    // What must not page: the neighbour, the healthy Webhooks' readiness, the operator (it
    // leads), the receivers' targets (up).
    let alerts = p.alerts().await.unwrap();
    let about = |w: &str| -> Vec<&String> {
        alerts
            .iter()
            .filter(|(_, _, labels)| labels["webhook"] == w)
            .map(|(name, _, _)| name)
            .collect()
    };
    assert!(about(&webhook("valid")).is_empty(), "{alerts:?}");
    assert_eq!(
        about(&webhook("forged")),
        ["HookwardenSignatureRefusals"],
        "{alerts:?}"
    );
    for (name, _, labels) in &alerts {
        assert!(
            !matches!(
                name.as_str(),
                "HookwardenOperatorNoLeader" | "HookwardenReceiverDown"
            ),
            "{name} {labels}"
        );
    }

    // Every query of the dashboard is accepted and returns series...
    let mut empty = Vec::new();
    let mut panels: Vec<(String, Vec<Value>)> = Vec::new();
    for (title, expr) in prometheus::dashboard_expressions() {
        let result = p
            .query(&expr)
            .await
            .unwrap_or_else(|e| panic!("panel {title:?}: {expr} refused: {e}"));
        if result.is_empty() {
            empty.push(format!("{title:?}: {expr}"));
        }
        panels.push((title, result));
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    // ...and the panels show what just happened, each for the Webhook it happened to.
    let shows = |title: &str, labels: &[(&str, &str)], value: &dyn Fn(f64) -> bool| {
        let series: Vec<&Value> = panels
            .iter()
            .filter(|(t, _)| t.contains(title))
            .flat_map(|(_, result)| result)
            .collect();
        assert!(!series.is_empty(), "no panel titled {title:?}");
        let found = series.iter().any(|s| {
            labels.iter().all(|(k, v)| s["metric"][*k] == *v)
                && s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse::<f64>().ok())
                    .is_some_and(value)
        });
        assert!(
            found,
            "{title:?} shows no {labels:?} as expected: {series:?}"
        );
    };
    let (forged, full, nosecret, valid) = (
        webhook("forged"),
        webhook("full"),
        webhook("nosecret"),
        webhook("valid"),
    );
    let positive = |v: f64| v > 0.0;
    shows(
        "Refusals by reason",
        &[("webhook", &forged), ("outcome", "bad_signature")],
        &positive,
    );
    shows(
        "Deliveries by Webhook and outcome",
        &[("webhook", &valid), ("outcome", "recorded")],
        &positive,
    );
    shows(
        "503",
        &[("webhook", &full), ("outcome", "sink_refused")],
        &positive,
    );
    shows(
        "Readiness by Webhook",
        &[("webhook", &nosecret), ("reason", "SecretNotFound")],
        &|v| v == 0.0,
    );
    shows(
        "Readiness by Webhook",
        &[("webhook", &valid), ("reason", "ReceiverAvailable")],
        &|v| v == 1.0,
    );
    shows(
        "Sink ConfigMap capacity",
        &[("webhook", &full), ("configmap", "full-state")],
        &|v| v > 0.9 && v <= 1.1,
    );
    shows("Webhooks not Ready", &[], &|v| v >= 1.0);

    // Every expression of the rules is accepted, and every metric it reads exists, so a
    // renamed metric or label fails here rather than in a user's alerting.
    let rules: Value = serde_json::from_str(&short_rules()).unwrap();
    let known: BTreeSet<String> = p
        .api("label/__name__/values")
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for rule in rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let expr = rule["expr"].as_str().unwrap();
        p.query(expr)
            .await
            .unwrap_or_else(|e| panic!("{}: {expr} refused: {e}", rule["alert"]));
        for name in metric_names(expr) {
            assert!(
                known.contains(&name),
                "{}: {name} not scraped",
                rule["alert"]
            );
        }
    }
}

/// The metric names an expression reads (`hookwarden_...` and `up`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            let word = &expr[start..i];
            let before = expr[..start].chars().last();
            if (word.starts_with("hookwarden_") || (word == "up" && expr[i..].starts_with('{')))
                && before != Some('"')
            {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}
