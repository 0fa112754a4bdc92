//! Where verified deliveries are recorded. A delivery is acknowledged only after every
//! configured sink confirmed it; recording is idempotent, so a retried or replayed delivery
//! is never recorded twice.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::config::{ReceiverConfig, WebhookIdentity};
use crate::payload::{self, ReceivedEvent};
use crate::replay::Key;

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
}

impl RecordError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            RecordError::Unavailable(_) => "sink_unavailable",
            RecordError::Refused(_) => "sink_refused",
            RecordError::Unsupported(_) => "sink_unsupported",
        }
    }
}

/// Records deliveries somewhere.
pub trait Sink: Send + Sync {
    /// Records `delivery`, giving up at `deadline`.
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(), RecordError>>;
}

/// Every configured sink, in order.
pub struct Sinks(pub Vec<Arc<dyn Sink>>);

impl Sinks {
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
                Some(c) => sinks.push(Arc::new(crate::cmsink::ConfigMapSink::new(
                    c.clone(),
                    &config.webhook.namespace,
                    &cm.name,
                    cm.mode,
                ))),
                None => sinks.push(Arc::new(Unsupported("configMap (no Kubernetes client)"))),
            }
        }
        if let Some(forward) = &config.sinks.forward {
            match crate::forward::ForwardSink::new(&forward.url, &config.webhook) {
                Ok(sink) => sinks.push(Arc::new(sink)),
                Err(error) => {
                    // A URL the operator let through but this build cannot use: refuse
                    // every delivery rather than acknowledge what was not forwarded.
                    tracing::error!(%error, "forward sink unusable; refusing deliveries");
                    sinks.push(Arc::new(Unsupported("forward (invalid URL)")))
                }
            }
        }
        Sinks(sinks)
    }

    pub async fn record(&self, delivery: &Delivery, deadline: Instant) -> Result<(), RecordError> {
        for sink in &self.0 {
            sink.record(delivery, deadline).await?;
        }
        Ok(())
    }
}

/// A sink this build cannot write to: it refuses every delivery, so none is acknowledged
/// unrecorded.
pub struct Unsupported(pub &'static str);

impl Sink for Unsupported {
    fn record<'a>(&'a self, _: &'a Delivery, _: Instant) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move { Err(RecordError::Unsupported(self.0)) })
    }
}

/// The component name on the Events the receiver publishes.
pub const REPORTING_CONTROLLER: &str = "hookwarden.io/receiver";

/// The name of the Event for the `index`th event of a delivery: derived from the delivery,
/// so recording it twice is recognised by the API server (409) instead of duplicated.
pub fn event_name(webhook: &str, key: &Key, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(key);
    h.update((index as u64).to_be_bytes());
    format!("{webhook}.{}", hex::encode(&h.finalize()[..10]))
}

/// The `events.k8s.io/v1` Event recording one received event. Pure.
pub fn event_object(
    webhook: &WebhookIdentity,
    name: String,
    event: &ReceivedEvent,
    instance: &str,
    now: MicroTime,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(webhook.namespace.clone()),
            labels: Some(
                [
                    (
                        hookwarden_api::names::WEBHOOK_LABEL.to_string(),
                        webhook.name.clone(),
                    ),
                    (
                        "hookwarden.io/event-type".to_string(),
                        label_value(&event.event_type),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        event_time: Some(now),
        action: Some("Received".into()),
        reason: Some(payload::reason(&event.event_type)),
        note: Some(payload::note(event)),
        type_: Some("Normal".into()),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("hookwarden.io/v1alpha1".into()),
            kind: Some("Webhook".into()),
            name: Some(webhook.name.clone()),
            namespace: Some(webhook.namespace.clone()),
            uid: Some(webhook.uid.clone()),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// A label value from an event type (letters, digits, `-_.`, at most 63).
fn label_value(s: &str) -> String {
    hookwarden_api::text::key_chars(s, 63)
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Records each event as a Kubernetes Event regarding the Webhook.
pub struct EventsSink {
    api: Api<Event>,
    webhook: WebhookIdentity,
    instance: String,
}

impl EventsSink {
    pub fn new(client: kube::Client, webhook: WebhookIdentity) -> Self {
        EventsSink {
            api: Api::namespaced(client, &webhook.namespace),
            instance: std::env::var("POD_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| "hookwarden-receiver".into()),
            webhook,
        }
    }
}

impl Sink for EventsSink {
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move {
            for (i, event) in delivery.events.iter().enumerate() {
                let name = event_name(&self.webhook.name, &delivery.key, i);
                let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
                let object = event_object(&self.webhook, name, event, &self.instance, now);
                with_retry(deadline, || async {
                    match self.api.create(&PostParams::default(), &object).await {
                        Ok(_) => Ok(()),
                        // Recorded before (a retry, a replay, another replica): done.
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            }
            Ok(())
        })
    }
}

/// Whether an API error may go away by itself.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        // Connection refused, reset, timeouts, TLS hiccups while the API server restarts.
        _ => true,
    }
}

/// Why one attempt to record failed.
#[derive(Debug)]
pub enum Failure {
    /// May go away by itself (unreachable, overloaded, 5xx): try again within the budget.
    Transient(String),
    /// Will not: give up now.
    Final(RecordError),
}

/// Runs `op` until it succeeds, fails for good, or `deadline` passes, backing off from
/// 100 ms to 1 s between attempts.
pub async fn retry_until<F, Fut>(deadline: Instant, mut op: F) -> Result<(), RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failure>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(RecordError::Unavailable("deadline passed".into()));
        }
        let last = match tokio::time::timeout(remaining, op()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(Failure::Final(e))) => return Err(e),
            Ok(Err(Failure::Transient(why))) => why,
            Err(_) => return Err(RecordError::Unavailable("timed out".into())),
        };
        if Instant::now() + delay >= deadline {
            return Err(RecordError::Unavailable(last));
        }
        tracing::debug!(reason = %last, "write failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// [`retry_until`] for a Kubernetes API call: 429, 5xx and connection errors are transient.
pub async fn with_retry<F, Fut>(deadline: Instant, mut op: F) -> Result<(), RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), kube::Error>>,
{
    retry_until(deadline, || {
        let attempt = op();
        async move {
            attempt.await.map_err(|e| {
                if transient(&e) {
                    Failure::Transient(short(&e))
                } else {
                    Failure::Final(RecordError::Refused(short(&e)))
                }
            })
        }
    })
    .await
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Provider;
    use crate::payload::parse;
    use axum::http::HeaderMap;

    fn identity() -> WebhookIdentity {
        WebhookIdentity {
            name: "opal".into(),
            namespace: "team-a".into(),
            uid: "uid-1".into(),
        }
    }

    #[test]
    fn event_names_are_stable_per_delivery_and_index() {
        let a = event_name("opal", &[1; 32], 0);
        assert_eq!(a, event_name("opal", &[1; 32], 0));
        assert_ne!(a, event_name("opal", &[1; 32], 1));
        assert_ne!(a, event_name("opal", &[2; 32], 0));
        assert!(a.starts_with("opal.") && a.len() == "opal.".len() + 20);
    }

    #[test]
    fn event_regards_the_webhook_and_reads_well() {
        let body = br#"{"event_ts":1,"organization_id":"o","events":[{"event_type":"USER_ADDED_TO_RESOURCE","resource_type":"CUSTOM","user_id":"user@example.com","resource_id":"0eb35db24007c8148","access_level":"admin"}]}"#;
        let parsed = parse(Provider::Opal, &HeaderMap::new(), body).unwrap();
        let now = MicroTime(k8s_openapi::jiff::Timestamp::from_second(5).unwrap());
        let e = event_object(
            &identity(),
            "opal.x".into(),
            &parsed.events[0],
            "pod-1",
            now,
        );
        assert_eq!(e.reason.as_deref(), Some("UserAddedToResource"));
        assert_eq!(
            e.note.as_deref(),
            Some("user@example.com added to resource 0eb35db24007c8148 as admin")
        );
        let r = e.regarding.unwrap();
        assert_eq!(
            (r.kind.as_deref(), r.uid.as_deref()),
            (Some("Webhook"), Some("uid-1"))
        );
        assert_eq!(
            e.metadata.labels.unwrap()["hookwarden.io/event-type"],
            "USER_ADDED_TO_RESOURCE"
        );
        assert_eq!(label_value("issues.opened"), "issues.opened");
        assert_eq!(label_value("a b/c"), "a_b_c");
    }

    #[tokio::test]
    async fn retries_transient_errors_until_the_deadline() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let unavailable = || {
            kube::Error::Api(Box::new(kube::core::Status {
                code: 503,
                reason: "ServiceUnavailable".into(),
                ..Default::default()
            }))
        };
        let deadline = Instant::now() + Duration::from_millis(700);
        let r = with_retry(deadline, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err(unavailable()) }
        })
        .await;
        assert!(matches!(r, Err(RecordError::Unavailable(_))), "{r:?}");
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) >= 3);
        // then it recovers
        let n = std::sync::atomic::AtomicUsize::new(0);
        let r = with_retry(Instant::now() + Duration::from_secs(5), || {
            let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { if k < 2 { Err(unavailable()) } else { Ok(()) } }
        })
        .await;
        assert_eq!(r, Ok(()));
        // a refusal is final
        let r = with_retry(Instant::now() + Duration::from_secs(5), || async {
            Err(kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                reason: "Forbidden".into(),
                ..Default::default()
            })))
        })
        .await;
        assert!(matches!(r, Err(RecordError::Refused(m)) if m.contains("403")));
    }
}
