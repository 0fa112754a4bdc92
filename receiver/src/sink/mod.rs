//! Where verified deliveries are recorded. A delivery is acknowledged only after every
//! configured sink confirmed it; recording is idempotent, so a retried or replayed delivery
//! is never recorded twice.
//!
//! `events` and `configmap` write to the API server, `forward` to an application; `retry`
//! is the deadline-bounded retry they share.

mod configmap;
mod events;
mod forward;
mod retry;

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::config::ReceiverConfig;
use crate::delivery::{Delivery, RecordError, Recorded, Sink};

pub use configmap::{ConfigMapSink, controlled_by};
pub use events::{EventsSink, REPORTING_CONTROLLER, event_name, event_object};
pub use forward::{DELIVERY_HEADER, EVENT_TYPES_HEADER, ForwardSink, WEBHOOK_HEADER};

/// Every configured sink, in order.
pub struct Sinks {
    sinks: Vec<Arc<dyn Sink>>,
}

impl Sinks {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Sinks {
        Sinks { sinks }
    }

    /// The sinks `config` asks for. `client` is needed when one writes to the API server.
    pub fn from_config(config: &ReceiverConfig, client: Option<kube::Client>) -> Sinks {
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        if config.sinks.events {
            match &client {
                Some(c) => sinks.push(Arc::new(EventsSink::new(c.clone(), config.webhook.clone()))),
                None => sinks.push(Arc::new(Unsupported("events (no Kubernetes client)"))),
            }
        }
        if let Some(cm) = &config.sinks.config_map {
            match &client {
                Some(c) => sinks.push(Arc::new(ConfigMapSink::new(
                    c.clone(),
                    &config.webhook.namespace,
                    &cm.name,
                    cm.mode,
                    &config.webhook.uid,
                ))),
                None => sinks.push(Arc::new(Unsupported("configMap (no Kubernetes client)"))),
            }
        }
        if let Some(forward) = &config.sinks.forward {
            match ForwardSink::new(&forward.url, &config.webhook) {
                Ok(sink) => sinks.push(Arc::new(sink)),
                Err(error) => {
                    // A URL the operator let through but this build cannot use: refuse
                    // every delivery rather than acknowledge what was not forwarded.
                    tracing::error!(%error, "forward sink unusable; refusing deliveries");
                    sinks.push(Arc::new(Unsupported("forward (invalid URL)")))
                }
            }
        }
        Sinks { sinks }
    }

    /// Records `delivery` in every sink, in order; `Before` when each had it already.
    pub async fn record(
        &self,
        delivery: &Delivery,
        deadline: Instant,
    ) -> Result<Recorded, RecordError> {
        let mut recorded: Option<Recorded> = None;
        for sink in &self.sinks {
            let this = sink.record(delivery, deadline).await?;
            recorded = Some(recorded.map_or(this, |r| r.and(this)));
        }
        Ok(recorded.unwrap_or(Recorded::Now))
    }
}

/// A sink this build cannot write to: it refuses every delivery, so none is acknowledged
/// unrecorded.
pub struct Unsupported(pub &'static str);

impl Sink for Unsupported {
    fn record<'a>(
        &'a self,
        _: &'a Delivery,
        _: Instant,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move { Err(RecordError::Unsupported(self.0)) })
    }
}
