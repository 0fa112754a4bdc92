//! The `Webhook` custom resource (`webhooks.hookwarden.io/v1alpha1`). Types only, no I/O.

use std::collections::BTreeMap;

use crate::config::{ConfigMapMode, Provider};
use crate::layout::GenericHmac;
use k8s_openapi::api::core::v1::{
    Affinity, LocalObjectReference, ResourceRequirements, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A webhook endpoint: where deliveries arrive, how their signatures are verified, and where
/// verified deliveries are recorded. The operator runs receiver pods for it.
#[derive(CustomResource, Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "hookwarden.io",
    version = "v1alpha1",
    kind = "Webhook",
    plural = "webhooks",
    namespaced,
    shortname = "wh",
    category = "hookwarden",
    doc = "A webhook endpoint that hookwarden receives, verifies and records deliveries on.",
    status = "WebhookStatus",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.provider"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".spec.path"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"URL","type":"string","priority":1,"jsonPath":".status.url"}"#,
    printcolumn = r#"{"name":"External URL","type":"string","priority":1,"jsonPath":".status.externalUrl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The request path deliveries arrive on, e.g. `/opal`. Starts with `/`; letters,
    /// digits and `-._~!$&'()+,;=:@%/` only.
    #[schemars(length(max = 256))]
    pub path: String,

    /// The sender's signature scheme and payload format.
    #[schemars(schema_with = "provider_schema")]
    pub provider: String,

    /// The event types accepted (Opal's `USER_ADDED_TO_RESOURCE`, Membrane's `org-created`,
    /// ...). Empty accepts every type. A delivery of another type is acknowledged and
    /// counted, not recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 128)))]
    pub event_types: Vec<String>,

    /// The Secret key holding the signing secret. When omitted, the operator generates a
    /// random secret into a Secret it owns (named in `status.secretName`) and never
    /// regenerates it while that Secret exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// More active signing secrets, for rotation without a missed delivery: a delivery that
    /// verifies under any secret is accepted. Add the new secret here, switch the sender to
    /// it, then remove the old one. A Secret's value changed in place reaches running
    /// receivers within about a minute, without a restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub additional_secret_refs: Vec<SecretKeyRef>,

    /// Where verified deliveries are recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sinks: Option<Sinks>,

    /// Settings of a receiver of this Webhook's own: pods that serve this Webhook alone
    /// (for isolation; `receiver: {}` for the defaults). Use this, `pool` or `sidecar`,
    /// not two of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver: Option<ReceiverSettings>,

    /// The `ReceiverPool` of this namespace whose pods serve this Webhook, on its path,
    /// beside the pool's other Webhooks. Changes to this Webhook reach the pool's pods
    /// without a restart. Use this, `receiver` or `sidecar`, not two of them. Default,
    /// when none of the three is given: `default`, created on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 58))]
    pub pool: Option<String>,

    /// The signature layout, for provider `generic-hmac` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_hmac: Option<GenericHmac>,

    /// Limits against abuse and slow senders; each has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<WebhookLimits>,

    /// Expose the receiver outside the cluster through a `networking.k8s.io/v1` Ingress the
    /// operator owns, for `spec.path` on `host` only. `status.externalUrl` then shows the URL
    /// to paste into the sender. Removing this field deletes the Ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<WebhookIngress>,

    /// Expose the receiver outside the cluster through the Gateway API: the operator owns
    /// a `gateway.networking.k8s.io/v1` HTTPRoute `<name>-receiver` that sends exactly
    /// `spec.path` on `hostname` to the receiver's Service, attached to the Gateways named.
    /// `status.externalUrl` then shows the URL to paste into the sender (https when the
    /// Gateway's listener is HTTPS), and the `RouteAccepted` condition whether a Gateway
    /// controller took the route. Use this or `ingress`, not both. Removing this field
    /// deletes the HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<WebhookGateway>,

    /// Run the receiver inside an application's pods instead of in pods of its own:
    /// verified deliveries go to the application over `127.0.0.1` through `sinks.forward`
    /// (the only sink allowed here, since the receiver runs under the application's
    /// ServiceAccount). A pod opts in with the label `hookwarden.io/inject: <this Webhook's
    /// name>` on its template; the operator's admission webhook then adds the receiver to
    /// each such pod as it is created, as a native sidecar (an init container with
    /// `restartPolicy: Always`: it starts, and serves, before the application's containers
    /// and stops after them). The application's Deployment is never written. The Service
    /// `<name>-receiver` selects the opted-in pods; `status.sidecar` counts them and names
    /// those that run an outdated receiver (a change here rolls nothing by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSettings>,
}

/// Where the receiver runs as a sidecar.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSettings {
    /// No longer used to place the receiver (pods opt in with the label
    /// `hookwarden.io/inject`). Kept so that manifests written for the previous release
    /// still apply; a receiver container that release added to this Deployment is taken
    /// out of it by the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub deployment: Option<String>,
    /// The port the receiver listens on inside those pods; must be free there. Default:
    /// 8090.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,
    /// The port of the receiver's `/metrics`; must be free there. Default: 8091.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub metrics_port: Option<i32>,
}

/// The HTTPRoute that exposes a receiver through a Gateway.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookGateway {
    /// The Gateways the route attaches to (the Gateway must allow routes from this
    /// namespace).
    #[schemars(length(min = 1, max = 8))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// The public host name senders call, e.g. `hooks.example.com`. No wildcards.
    #[schemars(length(max = 253))]
    pub hostname: String,
}

/// A Gateway a route attaches to.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// The Gateway's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The Gateway's namespace; the Webhook's when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// One listener of the Gateway, by name; every listener that takes the host when
    /// omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub section_name: Option<String>,
}

/// The Ingress that exposes a receiver.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookIngress {
    /// The public host name senders call, e.g. `hooks.example.com`. No wildcards.
    #[schemars(length(max = 253))]
    pub host: String,
    /// The IngressClass that serves it; the cluster's default class when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub class_name: Option<String>,
    /// A `kubernetes.io/tls` Secret in this namespace with the certificate for `host`. With
    /// it the external URL is `https://`; without it `http://` (senders such as Opal and
    /// Membrane should only be given an `https://` URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret_name: Option<String>,
    /// Annotations for the Ingress controller (e.g. `cert-manager.io/cluster-issuer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Limits of the receiver. Unset fields take the default given.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
// Each limit's schema says `format: int32`, a format Kubernetes knows, instead of
// schemars' `uint32`, which the API server warns about; every range fits in an int32.
#[serde(rename_all = "camelCase")]
pub struct WebhookLimits {
    /// Largest delivery body accepted, in bytes; larger ones are answered 413. Default:
    /// 1048576 (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 16_777_216), extend("format" = "int32"))]
    pub max_body_bytes: Option<u32>,
    /// Signed timestamps further than this in the past or future are refused. Default: 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400), extend("format" = "int32"))]
    pub replay_window_seconds: Option<u32>,
    /// Deliveries each receiver pod handles at once; more are answered 503 with
    /// `Retry-After`. Default: 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65_536), extend("format" = "int32"))]
    pub max_concurrent_deliveries: Option<u32>,
    /// Time from request to answer; keep it below the sender's deadline (Opal waits 10 s,
    /// Membrane 30 s). Default: 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 60), extend("format" = "int32"))]
    pub request_timeout_seconds: Option<u32>,
    /// Deliveries per second each receiver pod accepts for this Webhook (a token bucket of
    /// `burst`); more are answered 429 with `Retry-After`, so that one sender's flood costs
    /// the other Webhooks of a pool nothing. Default: no limit (Membrane never retries: a
    /// 429 loses its delivery, so set it where the sender's volume is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100_000), extend("format" = "int32"))]
    pub requests_per_second: Option<u32>,
    /// Deliveries the bucket holds at once (a burst the sender may send without waiting).
    /// Default: twice `requestsPerSecond`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000), extend("format" = "int32"))]
    pub burst: Option<u32>,
    /// Source address ranges (CIDR, e.g. `192.30.252.0/22`) deliveries may come from;
    /// others are answered 403. Default: any source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub source_ranges: Option<Vec<String>>,
    /// Proxies (CIDR) in front of the receiver, such as the Ingress controller's pods, whose
    /// `X-Forwarded-For` names the source. Default: none, the connection's peer is the
    /// source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub trusted_proxies: Option<Vec<String>>,
}

fn provider_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let names: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
    schemars::json_schema!({
        "type": "string",
        "enum": names,
        "description": "The sender's signature scheme and payload format.",
    })
}

/// A key of a Secret in the Webhook's namespace.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The key inside the Secret whose value is the signing secret.
    #[schemars(length(max = 253))]
    pub key: String,
}

/// Where verified deliveries go. Without `sinks`, each event becomes a Kubernetes Event.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Sinks {
    /// Record each received event as an `events.k8s.io/v1` Event regarding this Webhook.
    /// Default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<bool>,
    /// Apply deliveries to a ConfigMap the operator creates in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSink>,
    /// POST each verified delivery's raw body to this URL (e.g. an application in the
    /// same pod); its 2xx is the acknowledgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardSink>,
}

/// A ConfigMap sink.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
pub struct ConfigMapSink {
    /// The ConfigMap's name. The operator creates it; the receiver may only read and
    /// update this one ConfigMap.
    #[schemars(length(max = 253))]
    pub name: String,
    /// `state` (Opal and Membrane: a materialised view), `latest` (last payload per event
    /// type) or `log` (the last deliveries). Default: `state` for Opal and Membrane,
    /// `latest` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ConfigMapMode>,
}

/// A forward sink.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
pub struct ForwardSink {
    /// An `http://` or `https://` URL.
    #[schemars(length(max = 2048))]
    pub url: String,
}

/// Settings of the receiver Deployment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverSettings {
    /// Number of receiver pods. Default: 1 for a Webhook's own receiver, 2 for a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Compute resources of the receiver container. Default: requests 10m CPU and
    /// 16Mi memory, limit 64Mi memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Node labels the receiver pods must run on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Tolerations of the receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Affinity of the receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Priority class of the receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Extra labels on the receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Extra annotations on the receiver pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Pull secrets for the receiver image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Receiver image, overriding the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What the operator observed. Written only through the status subresource.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// `Ready` tells whether the receiver can take deliveries, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The in-cluster URL deliveries are received on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// The URL senders outside the cluster use, when `spec.ingress` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// The pods the receiver is injected into (`spec.sidecar`), as last observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarPods>,
    /// The Secret the operator generated the signing secret into (when `secretRef` is
    /// omitted). Its value is never shown here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    /// The ReceiverPool that serves this Webhook, when one does. A Webhook that moves out
    /// of a pool (to a receiver of its own, a sidecar or another pool) stays served by it,
    /// and keeps its routes to it, until the new placement serves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The pods that opted in to a Webhook's sidecar receiver.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SidecarPods {
    /// Pods in this namespace labelled `hookwarden.io/inject: <name>` (not terminating).
    pub pods: i32,
    /// Of those, the Ready ones that run an injected receiver (current or outdated).
    pub ready: i32,
    /// Pods that run a receiver older than this Webhook's spec (or none); at most 20
    /// names. Restart their workload (`kubectl rollout restart`) to give them the current
    /// one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outdated: Vec<String>,
    /// How many pods are outdated (all of them, where `outdated` lists 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outdated_count: Option<i32>,
}

impl Webhook {
    /// The pools that take this Webhook's path: the one its spec asks for, and the one
    /// still serving it while it moves out (`status.pool`); once each.
    pub fn pools(&self) -> Vec<&str> {
        let serving = self.status.as_ref().and_then(|s| s.pool.as_deref());
        let mut pools: Vec<&str> = self.spec.pool_name().into_iter().chain(serving).collect();
        pools.dedup();
        pools
    }

    /// The `Ready` condition, if the operator has written one.
    pub fn ready_condition(&self) -> Option<&Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_ == crate::names::READY_CONDITION)
    }
}
