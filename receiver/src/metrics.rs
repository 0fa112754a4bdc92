//! The receiver's Prometheus metrics, served on their own port.
//!
//! The Webhook and provider are the same for every delivery a receiver sees, so they are
//! constant labels of the registry; the per-delivery label is only the outcome.

use std::borrow::Cow;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Every outcome a delivery can have. Their counters start at 0 when the receiver starts, so
/// that each series exists before its first delivery: an alert's `increase()` then counts
/// the first refusals after a restart too, and a dashboard shows 0 instead of nothing.
pub const OUTCOMES: [&str; 17] = [
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
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `recorded`, `duplicate`, `ignored`, or why the delivery was refused.
    pub outcome: &'static str,
}

pub struct Metrics {
    pub registry: Registry,
    deliveries: Family<OutcomeLabel, Counter>,
    /// The counters of the outcomes seen so far, for a lookup without hashing: a receiver
    /// sees a handful of outcomes, `recorded` first.
    counters: std::sync::RwLock<Vec<(&'static str, Counter)>>,
    latency: Histogram,
}

impl Metrics {
    /// Metrics of the receiver for `webhook` (as `namespace/name`) and `provider`.
    pub fn new(webhook: &str, provider: &str) -> Self {
        let mut root = Registry::with_prefix("hookwarden_receiver");
        let registry = root.sub_registry_with_labels(
            [
                (Cow::Borrowed("webhook"), Cow::Owned(webhook.to_string())),
                (Cow::Borrowed("provider"), Cow::Owned(provider.to_string())),
            ]
            .into_iter(),
        );
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register("deliveries", "Deliveries by outcome", deliveries.clone());
        registry.register(
            "delivery_duration_seconds",
            "Time from a delivery's arrival to its answer",
            latency.clone(),
        );
        let metrics = Metrics {
            registry: root,
            deliveries,
            counters: Default::default(),
            latency,
        };
        for outcome in OUTCOMES {
            metrics.first_of(outcome);
        }
        metrics
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

    /// The counter of an outcome not counted before, remembered for the next time.
    fn first_of(&self, outcome: &'static str) -> Counter {
        // A counter of the family shares its value with this clone.
        let counter = self
            .deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .clone();
        if let Ok(mut known) = self.counters.write()
            && !known.iter().any(|(o, _)| *o == outcome)
        {
            known.push((outcome, counter.clone()));
        }
        counter
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
        assert!(text.contains("hookwarden_receiver_delivery_duration_seconds_count{"));
    }
}
