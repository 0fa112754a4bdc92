//! The receiver's Prometheus metrics, served on their own port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub webhook: String,
    pub provider: String,
    /// `recorded`, `duplicate`, `ignored`, or why the delivery was refused.
    pub outcome: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hookwarden_receiver");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "deliveries",
            "Deliveries by webhook, provider and outcome",
            deliveries.clone(),
        );
        registry.register(
            "delivery_duration_seconds",
            "Time from a delivery's arrival to its answer",
            latency.clone(),
        );
        Metrics {
            registry,
            deliveries,
            latency,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
