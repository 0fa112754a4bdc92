//! A verified delivery, and what records one: the `Sink` interface and why recording can
//! fail. Pure data and an interface; the sinks that do the I/O live in `sink`.

use futures::future::BoxFuture;
use tokio::time::Instant;

use crate::payload::ReceivedEvent;
use crate::replay::Key;
use crate::trace::TraceContext;

/// A verified, parsed delivery, reduced to the events the Webhook accepts.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The delivery's identity (see `replay`).
    pub key: Key,
    pub events: Vec<ReceivedEvent>,
    /// The raw body the signature covered, for the `forward` sink.
    pub body: axum::body::Bytes,
    /// The sender's `Content-Type`, if it sent one.
    pub content_type: Option<axum::http::HeaderValue>,
    /// The sender's event time, where it has one (Opal's `event_ts`): orders state changes.
    pub event_ts: Option<i64>,
    /// The trace it belongs to, where one is used (see `trace`): the `forward` sink passes
    /// it on.
    pub trace: Option<TraceContext>,
}

/// Why a delivery could not be recorded. The sender gets 503 and may retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the Kubernetes API did not confirm the write in time: {0}")]
    Unavailable(String),
    #[error("the Kubernetes API refused the write: {0}")]
    Refused(String),
    #[error("sink {0} is not available in this version of the receiver")]
    Unsupported(&'static str),
    /// The sink ConfigMap is not controlled by the Webhook the delivery is for: never
    /// written (see `sink::configmap`).
    #[error(
        "ConfigMap {config_map} is not controlled by this Webhook (uid {uid}): this receiver does not write it"
    )]
    NotOwned { config_map: String, uid: String },
}

impl RecordError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            RecordError::Unavailable(_) => "sink_unavailable",
            RecordError::Refused(_) => "sink_refused",
            RecordError::Unsupported(_) => "sink_unsupported",
            // For the alert on sink_refused: a sink refused for good.
            RecordError::NotOwned { .. } => "sink_refused",
        }
    }
}

/// What a sink found when it recorded a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    Now,
    /// Found recorded already, so nothing was written: a replay that another replica
    /// recorded, or a retry whose earlier write went through unconfirmed.
    Before,
}

impl Recorded {
    /// Of a delivery recorded in several places (sinks, or the events of one delivery):
    /// `Before` only when it was recorded before everywhere.
    pub fn and(self, other: Recorded) -> Recorded {
        match (self, other) {
            (Recorded::Before, Recorded::Before) => Recorded::Before,
            _ => Recorded::Now,
        }
    }
}

/// Records deliveries somewhere (the sinks in `sink`).
pub trait Sink: Send + Sync {
    /// Records `delivery`, giving up at `deadline`.
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>>;
}
