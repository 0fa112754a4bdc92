//! The receiver's Prometheus metrics, served on their own port.
//!
//! One registry ([`Families`]) per process; each Webhook served gets a [`Metrics`] handle
//! whose series carry its `webhook` (`namespace/name`) and `provider` labels, and the
//! per-delivery label `outcome`. A dedicated receiver serves one Webhook; a pool serves
//! many, and has two gauges of its own ([`PoolGauges`]).

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every outcome a delivery can have. Their counters start at 0 when the receiver starts (or
/// a pool starts serving the Webhook), so that each series exists before its first delivery:
/// an alert's `increase()` then counts the first refusals after a restart too, and a
/// dashboard shows 0 instead of nothing.
///
/// Refused before a byte of the body is read: `source_refused` (403: from outside
/// `limits.sourceRanges`, or an unknown source), `too_large` (413, by Content-Length),
/// `missing_header`, `malformed_header`, `stale_timestamp` (the scheme's headers), `no_secret`,
/// `overloaded` (503: `limits.maxConcurrentDeliveries` in flight), `body_budget` (503,
/// `Retry-After: 1`: the pod's budget of body bytes in flight, or the Webhook's half of it
/// in a pool, is taken), `rate_limited` (429, `Retry-After`: past `limits.rateLimit`).
/// While the body is read: `too_large` (past the limit without a Content-Length),
/// `body_unreadable`, `body_stalled` (408: no body frame for
/// `connection::BODY_STALL_TIMEOUT`; the connection is closed). `handoff_refused`: a
/// handoff from a replica serving another configuration of the Webhook (409).
pub const OUTCOMES: [&str; 22] = [
    "recorded",
    "duplicate",
    "ignored",
    "bad_signature",
    "missing_header",
    "malformed_header",
    "stale_timestamp",
    "duplicate_key",
    "malformed_payload",
    "no_secret",
    "sink_unavailable",
    "sink_refused",
    "sink_unsupported",
    "overloaded",
    "too_large",
    "timed_out",
    "body_unreadable",
    "handoff_refused",
    "source_refused",
    "rate_limited",
    "body_budget",
    "body_stalled",
];

/// The Webhook a series is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    /// `namespace/name`.
    pub webhook: String,
    pub provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub webhook: String,
    pub provider: String,
    /// `recorded`, `duplicate`, `ignored`, or why the delivery was refused.
    pub outcome: &'static str,
}

type Latency = Family<WebhookLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// A pool's own gauges, set when scraped.
#[derive(Clone, Debug, Default)]
pub struct PoolGauges {
    /// Deliveries in flight, over all Webhooks.
    pub in_flight: Gauge,
    /// Webhooks served.
    pub webhooks: Gauge,
}

/// The process's registry and the metric families every Webhook's series belong to.
#[derive(Debug)]
pub struct Families {
    registry: Registry,
    deliveries: Family<DeliveryLabels, Counter>,
    latency: Latency,
    /// Deliveries another replica handed to this one (see `handoff`), by outcome. Those
    /// recorded, duplicate or ignored are not in `deliveries`, where the replica that
    /// answered the sender counts them; those refused are in both (a handoff refused for
    /// its signature is signature probing, or a secret this replica lacks).
    handoffs_taken: Family<DeliveryLabels, Counter>,
    /// Deliveries this replica recorded itself because the writer it handed them to did not.
    handoffs_failed: Family<WebhookLabels, Counter>,
    pool: Option<PoolGauges>,
}

impl Families {
    /// The families of a dedicated receiver.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// The families of a pool, with its gauges.
    pub fn pool() -> Self {
        Self::build(Some(PoolGauges::default()))
    }

    fn build(pool: Option<PoolGauges>) -> Self {
        let mut registry = Registry::with_prefix("hookwarden_receiver");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let latency: Latency = Family::new_with_constructor(latency_histogram);
        registry.register("deliveries", "Deliveries by outcome", deliveries.clone());
        registry.register(
            "delivery_duration_seconds",
            "Time from a delivery's arrival to its answer",
            latency.clone(),
        );
        let handoffs_taken = Family::<DeliveryLabels, Counter>::default();
        let handoffs_failed = Family::<WebhookLabels, Counter>::default();
        registry.register(
            "handoffs_taken",
            "Deliveries another replica handed to this one, the writer of the ConfigMap sinks, by outcome (recorded ones counted in deliveries by the replica that answered the sender; refused ones in deliveries here too)",
            handoffs_taken.clone(),
        );
        registry.register(
            "handoffs_failed",
            "Deliveries handed to the writer of the ConfigMap sinks that it did not record, recorded by this replica itself",
            handoffs_failed.clone(),
        );
        if let Some(gauges) = &pool {
            registry.register(
                "in_flight",
                "Deliveries in flight, over all Webhooks served",
                gauges.in_flight.clone(),
            );
            registry.register("webhooks", "Webhooks served", gauges.webhooks.clone());
        }
        Families {
            registry,
            deliveries,
            latency,
            handoffs_taken,
            handoffs_failed,
            pool,
        }
    }

    /// The pool's gauges (`None` for a dedicated receiver).
    pub fn pool_gauges(&self) -> Option<&PoolGauges> {
        self.pool.as_ref()
    }

    /// Forgets every series of `webhook`: a pool stopped serving it.
    pub fn remove(&self, webhook: &WebhookLabels) {
        self.latency.remove(webhook);
        self.handoffs_failed.remove(webhook);
        for outcome in OUTCOMES {
            let labels = DeliveryLabels {
                webhook: webhook.webhook.clone(),
                provider: webhook.provider.clone(),
                outcome,
            };
            self.deliveries.remove(&labels);
        }
        for outcome in OUTCOMES {
            self.handoffs_taken.remove(&DeliveryLabels {
                webhook: webhook.webhook.clone(),
                provider: webhook.provider.clone(),
                outcome,
            });
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Families {
    fn default() -> Self {
        Self::new()
    }
}

/// What the metrics endpoint serves.
pub trait Scrape: Send + Sync + 'static {
    fn scrape(&self) -> String;
}

/// One Webhook's series.
#[derive(Debug)]
pub struct Metrics {
    families: Arc<Families>,
    labels: WebhookLabels,
    /// The counters of the outcomes seen so far, for a lookup without hashing: a receiver
    /// sees a handful of outcomes, `recorded` first.
    counters: RwLock<Vec<(&'static str, Counter)>>,
    latency: Histogram,
}

impl Metrics {
    /// Metrics of a receiver of its own for `webhook` (as `namespace/name`) and `provider`.
    pub fn new(webhook: &str, provider: &str) -> Self {
        Self::of(Arc::new(Families::new()), webhook, provider)
    }

    /// The series of `webhook` and `provider` in `families`, every outcome at 0 if new. Two
    /// handles of the same labels share their values.
    pub fn of(families: Arc<Families>, webhook: &str, provider: &str) -> Self {
        let labels = WebhookLabels {
            webhook: webhook.to_string(),
            provider: provider.to_string(),
        };
        let latency = families.latency.get_or_create_owned(&labels);
        let metrics = Metrics {
            families,
            labels,
            counters: Default::default(),
            latency,
        };
        for outcome in OUTCOMES {
            metrics.first_of(outcome);
        }
        metrics
    }

    pub fn labels(&self) -> &WebhookLabels {
        &self.labels
    }

    pub fn families(&self) -> &Arc<Families> {
        &self.families
    }

    /// Counts one delivery with `outcome` that took `seconds`.
    pub fn observe(&self, outcome: &'static str, seconds: f64) {
        let counted = match self.counters.read() {
            Ok(known) => known
                .iter()
                .find(|(o, _)| *o == outcome)
                .map(|(_, counter)| counter.inc())
                .is_some(),
            Err(_) => false,
        };
        if !counted {
            self.first_of(outcome).inc();
        }
        self.latency.observe(seconds);
    }

    /// Counts a delivery another replica handed to this one, with `outcome`.
    pub fn handoff_taken(&self, outcome: &'static str) {
        self.families
            .handoffs_taken
            .get_or_create(&DeliveryLabels {
                webhook: self.labels.webhook.clone(),
                provider: self.labels.provider.clone(),
                outcome,
            })
            .inc();
    }

    /// Counts a delivery the writer did not record when handed it.
    pub fn handoff_failed(&self) {
        self.families
            .handoffs_failed
            .get_or_create(&self.labels)
            .inc();
    }

    /// The counter of an outcome not counted before, remembered for the next time.
    fn first_of(&self, outcome: &'static str) -> Counter {
        // A counter of the family shares its value with this clone.
        let counter = self
            .families
            .deliveries
            .get_or_create_owned(&DeliveryLabels {
                webhook: self.labels.webhook.clone(),
                provider: self.labels.provider.clone(),
                outcome,
            });
        if let Ok(mut known) = self.counters.write()
            && !known.iter().any(|(o, _)| *o == outcome)
        {
            known.push((outcome, counter.clone()));
        }
        counter
    }

    /// The whole registry's text, this Webhook's series and any other.
    pub fn encode(&self) -> String {
        self.families.encode()
    }
}

impl Scrape for Metrics {
    fn scrape(&self) -> String {
        self.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_carry_webhook_provider_and_outcome() {
        let m = Metrics::new("team-a/opal", "opal");
        m.observe("recorded", 0.001);
        m.observe("recorded", 0.001);
        m.observe("bad_signature", 0.001);
        let text = m.encode();
        assert!(
            text.contains(r#"hookwarden_receiver_deliveries_total{webhook="team-a/opal",provider="opal",outcome="recorded"} 2"#),
            "{text}"
        );
        assert!(text.contains(r#"outcome="bad_signature"} 1"#), "{text}");
        // Outcomes not seen yet are there, at 0.
        assert!(text.contains(r#"outcome="sink_refused"} 0"#), "{text}");
        // Buckets carry `le` first (before 2026-12, when the Webhook's labels were constant
        // labels of the registry, last): the same series to Prometheus.
        assert!(text.contains(
            r#"hookwarden_receiver_delivery_duration_seconds_bucket{le="0.001",webhook="team-a/opal",provider="opal"} 3"#
        ), "{text}");
        assert!(text.contains(
            r#"hookwarden_receiver_delivery_duration_seconds_count{webhook="team-a/opal",provider="opal"} 3"#
        ), "{text}");
        // A dedicated receiver has no pool gauges.
        assert!(!text.contains("hookwarden_receiver_webhooks"), "{text}");
    }

    #[test]
    fn webhooks_of_a_pool_have_series_of_their_own_until_removed() {
        let families = Arc::new(Families::pool());
        let a = Metrics::of(families.clone(), "ns/a", "opal");
        let b = Metrics::of(families.clone(), "ns/b", "github");
        a.observe("recorded", 0.001);
        b.observe("bad_signature", 0.001);
        // A second handle of the same labels (a rebuilt entry) shares the values.
        let a2 = Metrics::of(families.clone(), "ns/a", "opal");
        a2.observe("recorded", 0.001);
        if let Some(g) = families.pool_gauges() {
            g.webhooks.set(2);
        }
        let text = families.encode();
        for series in [
            r#"deliveries_total{webhook="ns/a",provider="opal",outcome="recorded"} 2"#,
            r#"deliveries_total{webhook="ns/b",provider="github",outcome="bad_signature"} 1"#,
            r#"deliveries_total{webhook="ns/b",provider="github",outcome="recorded"} 0"#,
            r#"delivery_duration_seconds_count{webhook="ns/b",provider="github"} 1"#,
            "hookwarden_receiver_webhooks 2",
            "hookwarden_receiver_in_flight 0",
        ] {
            assert!(text.contains(series), "{series}: {text}");
        }
        families.remove(b.labels());
        let text = families.encode();
        assert!(!text.contains("ns/b"), "{text}");
        assert!(text.contains(r#"webhook="ns/a""#), "{text}");
    }
}
