//! Prometheus metrics and the operator's health endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use kube::runtime::reflector::Store;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::Webhook;
use crate::webhook::status::SinkUsage;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok`, or an error's metric label.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// The `Ready` condition's reason.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookReadyLabels {
    /// `namespace/name`, as the receivers' `webhook` label.
    pub webhook: String,
    /// The `Ready` condition's reason, `Pending` while the current spec has none.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    /// `namespace/name` of the Webhook.
    pub webhook: String,
    /// The sink ConfigMap's name.
    pub configmap: String,
}

/// The per-Webhook metrics, written at each scrape from the controller's own cache of
/// Webhooks, so that a deleted Webhook's series go with it: `webhook_ready` (what the
/// status says) and, for Webhooks with a ConfigMap sink, `sink_bytes` (as the last
/// reconciliation read the ConfigMap; a change of a whole percent triggers one) and
/// `sink_limit_bytes`. Only a replica that leads reports them: another one's cache, if it
/// has one (it led before), is out of date.
#[derive(Debug)]
pub struct WebhookGauges {
    stores: std::sync::Mutex<Vec<Store<Webhook>>>,
    /// `namespace/name` -> (sink ConfigMap, bytes), as of the last reconciliation.
    sinks: std::sync::Mutex<std::collections::HashMap<String, (String, usize)>>,
    leading: Gauge,
}

impl WebhookGauges {
    fn new(leading: Gauge) -> Self {
        WebhookGauges {
            stores: Default::default(),
            sinks: Default::default(),
            leading,
        }
    }

    /// Reports the Webhooks of `store` (one per watched scope) from now on.
    pub fn watch(&self, store: Store<Webhook>) {
        self.stores
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(store);
    }

    /// What a reconciliation of `webhook` (`namespace/name`) found of its sink.
    pub fn sink(&self, webhook: String, usage: &SinkUsage) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
        match usage {
            SinkUsage::Unknown => {}
            SinkUsage::NoSink => {
                sinks.remove(&webhook);
            }
            SinkUsage::Used { name, bytes } => {
                sinks.insert(webhook, (name.clone(), *bytes));
            }
        }
    }
}

impl Collector for WebhookGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ready = Family::<WebhookReadyLabels, Gauge>::default();
        let bytes = Family::<SinkLabels, Gauge>::default();
        let limit = Family::<SinkLabels, Gauge>::default();
        if self.leading.get() > 0 {
            let stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
            let sinks = self.sinks.lock().unwrap_or_else(|p| p.into_inner());
            for webhook in stores.iter().flat_map(Store::state) {
                let (is_ready, reason) = crate::webhook::status::readiness(
                    webhook.status.as_ref(),
                    webhook.metadata.generation,
                );
                let key = format!(
                    "{}/{}",
                    webhook.metadata.namespace.as_deref().unwrap_or_default(),
                    webhook.metadata.name.as_deref().unwrap_or_default()
                );
                if let Some((configmap, used)) = sinks.get(&key) {
                    let labels = SinkLabels {
                        webhook: key.clone(),
                        configmap: configmap.clone(),
                    };
                    bytes.get_or_create(&labels).set(*used as i64);
                    limit
                        .get_or_create(&labels)
                        .set(hookwarden_api::names::SINK_MAX_BYTES as i64);
                }
                let labels = WebhookReadyLabels {
                    webhook: key,
                    reason: reason.to_string(),
                };
                ready.get_or_create(&labels).set(i64::from(is_ready));
            }
        }
        let metric = encoder.encode_descriptor(
            "webhook_ready",
            "1 while a Webhook's Ready condition is True for its current spec, else 0; by reason",
            None,
            ready.metric_type(),
        )?;
        ready.encode(metric)?;
        for (name, help, family) in [
            (
                "sink_bytes",
                "Bytes a Webhook's sink ConfigMap held when the operator last looked",
                &bytes,
            ),
            (
                "sink_limit_bytes",
                "Bytes past which the receivers refuse deliveries to the sink ConfigMap",
                &limit,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, family.metric_type())?;
            family.encode(metric)?;
        }
        Ok(())
    }
}

/// The operator's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub outcomes: Family<ReadyLabels, Counter>,
    pub leader: Gauge,
    pub admissions: Family<ResultLabels, Counter>,
    pub webhooks: Arc<WebhookGauges>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookwarden_operator");
        let reconciliations = Family::<ResultLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let outcomes = Family::<ReadyLabels, Counter>::default();
        let leader = Gauge::default();
        let admissions = Family::<ResultLabels, Counter>::default();
        // Known results start at 0, so that their series exist (and rates and dashboards
        // read 0) before the first one happens.
        for result in ["injected", "unchanged", "denied"] {
            let _ = admissions.get_or_create(&ResultLabels {
                result: result.into(),
            });
        }
        let _ = reconciliations.get_or_create(&ResultLabels {
            result: "ok".into(),
        });
        let webhooks = Arc::new(WebhookGauges::new(leader.clone()));
        registry.register_collector(Box::new(webhooks.clone()));
        registry.register(
            "reconciliations",
            "Reconciliations of Webhooks, by result",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time taken by one reconciliation",
            reconcile_duration.clone(),
        );
        registry.register(
            "ready_outcomes",
            "Ready conditions written, by reason",
            outcomes.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica reconciles: it holds the leader Lease, or runs without election",
            leader.clone(),
        );
        registry.register(
            "pod_admissions",
            "Pods the sidecar injector answered for, by result (injected, unchanged, denied)",
            admissions.clone(),
        );
        Metrics {
            admissions,
            webhooks,
            registry,
            reconciliations,
            reconcile_duration,
            outcomes,
            leader,
        }
    }
}

impl Metrics {
    pub fn admission(&self, result: &str) {
        self.admissions
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn record(&self, result: &str, took: Duration) {
        self.reconciliations
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }
}

/// State of the health endpoints.
#[derive(Clone)]
pub struct Health {
    pub metrics: Arc<Metrics>,
    /// Set once the operator reached the API server.
    pub started: Arc<AtomicBool>,
    /// Set while the pod admission webhook serves with a trusted certificate.
    pub injecting: Arc<AtomicBool>,
}

/// `/healthz`, `/readyz` and `/metrics`.
pub fn app(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if !h.started.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    } else if !h.injecting.load(Ordering::Relaxed) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "admission webhook not serving yet\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}

async fn metrics(State(h): State<Health>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &h.metrics.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crd::WebhookStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    fn webhook(name: &str, generation: i64, ready: Option<(&str, &str, i64)>) -> Webhook {
        let mut w = Webhook::new(name, Default::default());
        w.metadata.namespace = Some("team-a".into());
        w.metadata.generation = Some(generation);
        w.status = ready.map(|(status, reason, observed)| WebhookStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: Some(observed),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..Default::default()
        });
        w
    }

    fn encoded(metrics: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        text
    }

    #[test]
    fn webhook_ready_follows_the_watched_webhooks() {
        let metrics = Metrics::default();
        metrics.leader.set(1);
        let mut writer = Writer::<Webhook>::default();
        metrics.webhooks.watch(writer.as_reader());
        for w in [
            webhook("opal", 1, Some(("True", "ReceiverAvailable", 1))),
            webhook("orgs", 2, Some(("False", "SecretNotFound", 2))),
            webhook("new", 1, None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(w));
        }
        let text = encoded(&metrics);
        for line in [
            r#"hookwarden_operator_webhook_ready{webhook="team-a/opal",reason="ReceiverAvailable"} 1"#,
            r#"hookwarden_operator_webhook_ready{webhook="team-a/orgs",reason="SecretNotFound"} 0"#,
            r#"hookwarden_operator_webhook_ready{webhook="team-a/new",reason="Pending"} 0"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        // A deleted Webhook's series goes with it.
        writer.apply_watcher_event(&watcher::Event::Delete(webhook("orgs", 2, None)));
        let text = encoded(&metrics);
        assert!(!text.contains("team-a/orgs"), "{text}");
        assert!(text.contains("team-a/opal"), "{text}");
        // A replica that no longer leads reports none: its cache is out of date.
        metrics.leader.set(0);
        assert!(!encoded(&metrics).contains("team-a/opal"));
    }

    #[test]
    fn sink_bytes_are_what_the_last_reconciliation_found() {
        let metrics = Metrics::default();
        metrics.leader.set(1);
        let mut writer = Writer::<Webhook>::default();
        metrics.webhooks.watch(writer.as_reader());
        for name in ["opal", "orgs"] {
            writer.apply_watcher_event(&watcher::Event::Apply(webhook(name, 1, None)));
        }
        let used = |bytes| SinkUsage::Used {
            name: "opal-access".into(),
            bytes,
        };
        metrics.webhooks.sink("team-a/opal".into(), &used(1000));
        metrics.webhooks.sink("team-a/opal".into(), &used(800_000));
        // Not looked at this time: what was found before stands.
        metrics
            .webhooks
            .sink("team-a/opal".into(), &SinkUsage::Unknown);
        metrics.webhooks.sink("team-a/gone".into(), &used(5));
        let text = encoded(&metrics);
        assert!(
            text.contains(r#"hookwarden_operator_sink_bytes{webhook="team-a/opal",configmap="opal-access"} 800000"#),
            "{text}"
        );
        assert!(
            text.contains(r#"hookwarden_operator_sink_limit_bytes{webhook="team-a/opal",configmap="opal-access"} 921600"#),
            "{text}"
        );
        // A Webhook that is gone, or has no sink, has no series.
        assert!(!text.contains("team-a/gone"), "{text}");
        assert!(
            !text.contains(r#"sink_bytes{webhook="team-a/orgs""#),
            "{text}"
        );
        metrics
            .webhooks
            .sink("team-a/opal".into(), &SinkUsage::NoSink);
        assert!(!encoded(&metrics).contains("sink_bytes{"));
    }
}
