//! The `events` sink: each accepted event becomes an `events.k8s.io/v1` Event regarding
//! the Webhook, named after the delivery so that recording it twice is a 409, not a copy.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::retry::with_retry;
use crate::config::WebhookIdentity;
use crate::delivery::{Delivery, RecordError, Recorded, Sink};
use crate::payload::{self, ReceivedEvent};
use crate::replay::Key;

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
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move {
            let mut recorded = Recorded::Before;
            for (i, event) in delivery.events.iter().enumerate() {
                let name = event_name(&self.webhook.name, &delivery.key, i);
                let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
                let object = event_object(&self.webhook, name, event, &self.instance, now);
                let object = &object;
                let mut attempts = 0;
                let this = with_retry(deadline, || {
                    attempts += 1;
                    // A 409 after an attempt of ours that got no answer may be our own write.
                    let first = attempts == 1;
                    async move {
                        match self.api.create(&PostParams::default(), object).await {
                            Ok(_) => Ok(Recorded::Now),
                            // Recorded before (a replay, another replica): done.
                            Err(kube::Error::Api(s)) if s.code == 409 && first => {
                                Ok(Recorded::Before)
                            }
                            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Recorded::Now),
                            Err(e) => Err(e),
                        }
                    }
                })
                .await?;
                recorded = recorded.and(this);
            }
            Ok(recorded)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Provider;
    use crate::payload::parse;
    use axum::http::HeaderMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

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
}
