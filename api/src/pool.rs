//! The `ReceiverPool` custom resource (`receiverpools.hookwarden.io/v1alpha1`): the pods
//! that serve the Webhooks of a namespace together. Types only, no I/O.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::webhook::{ReceiverSettings, WebhookSpec};

/// The name of the pool a Webhook joins when it names none.
pub const DEFAULT_POOL: &str = "default";

/// The replicas of a pool that does not set them.
pub const DEFAULT_POOL_REPLICAS: i32 = 2;

/// Receiver pods shared by Webhooks of one namespace: one Deployment and one Service serve
/// each of them on its own path, and a change to one of them reaches the running pods
/// without a restart. A Webhook joins a pool by naming it in `spec.pool`. The operator
/// creates the pool named `default`, with these defaults, the first time a Webhook names
/// it; edit it to tune the pool. A pool without Webhooks keeps no pods. The pool serves
/// only Webhooks of its own namespace, and may read only the Secrets and write only the
/// ConfigMaps those Webhooks name.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "hookwarden.io",
    version = "v1alpha1",
    kind = "ReceiverPool",
    plural = "receiverpools",
    namespaced,
    shortname = "rpool",
    category = "hookwarden",
    doc = "Receiver pods shared by the Webhooks of one namespace.",
    status = "ReceiverPoolStatus",
    printcolumn = r#"{"name":"Webhooks","type":"integer","jsonPath":".status.webhooks"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverPoolSpec {
    /// The pool's pods: replicas (default 2, spread over nodes, with a
    /// PodDisruptionBudget that keeps one), resources, scheduling and image.
    #[serde(flatten)]
    pub pods: ReceiverSettings,
}

/// What the operator observed of a pool. Written only through the status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverPoolStatus {
    /// `Ready`: whether the pool's pods are available.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// How many Webhooks the pool is configured to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhooks: Option<i32>,
    /// Pool pods that are Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The in-cluster base URL of the pool's Service; a Webhook is served on its path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

impl WebhookSpec {
    /// The ReceiverPool that serves this Webhook: `pool`, or the namespace's
    /// [`DEFAULT_POOL`] when the spec asks for no placement
    /// (none of `pool`, `receiver`, `sidecar`); `None` for a receiver of its own or a
    /// sidecar.
    pub fn pool_name(&self) -> Option<&str> {
        match (&self.pool, &self.receiver, &self.sidecar) {
            (Some(pool), _, _) => Some(pool),
            (None, None, None) => Some(DEFAULT_POOL),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_that_asks_for_no_placement_is_served_by_the_default_pool() {
        let mut spec = WebhookSpec::default();
        assert_eq!(spec.pool_name(), Some(DEFAULT_POOL));
        spec.pool = Some("edge".into());
        assert_eq!(spec.pool_name(), Some("edge"));
        spec.pool = None;
        spec.receiver = Some(ReceiverSettings::default());
        assert_eq!(spec.pool_name(), None, "a receiver of its own");
        spec.receiver = None;
        spec.sidecar = Some(serde_json::from_str(r#"{"deployment": "app"}"#).unwrap());
        assert_eq!(spec.pool_name(), None, "a sidecar");
    }
}
