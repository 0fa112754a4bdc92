//! Prometheus metrics and the operator's health endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// The operator's metrics.
pub struct Metrics {
    pub registry: Registry,
    pub reconciliations: Family<ResultLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub outcomes: Family<ReadyLabels, Counter>,
    pub leader: Gauge,
    pub admissions: Family<ResultLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookwarden_operator");
        let reconciliations = Family::<ResultLabels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let outcomes = Family::<ReadyLabels, Counter>::default();
        let leader = Gauge::default();
        let admissions = Family::<ResultLabels, Counter>::default();
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
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register(
            "pod_admissions",
            "Pods the sidecar injector answered for, by result (injected, unchanged, denied)",
            admissions.clone(),
        );
        Metrics {
            admissions,
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
