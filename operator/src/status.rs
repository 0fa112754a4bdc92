//! The Webhook's status: the `Ready` condition and what it is computed from. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::WebhookStatus;

/// The condition type telling whether the receiver can take deliveries.
pub const READY: &str = "Ready";
/// The condition type telling whether the sink ConfigMap has room for more deliveries.
pub const SINK_CAPACITY: &str = "SinkCapacity";
/// A ConfigMap holds at most 1 MiB.
pub const CONFIGMAP_LIMIT: usize = 1024 * 1024;
/// Past this share of the limit, `SinkCapacity` turns False (the receiver itself refuses
/// deliveries past 900 KiB).
pub const NEARLY_FULL_PERCENT: usize = 75;

/// Why a Webhook is, or is not, ready. The variant name is the condition's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Children applied and the receiver Deployment has available replicas.
    ReceiverAvailable,
    /// Children applied; waiting for the receiver Deployment to have available replicas.
    ReceiverUnavailable,
    /// The spec cannot be acted on; the message says what to fix.
    InvalidSpec,
    /// An older Webhook holds the same sender claim.
    Conflict,
    /// The referenced Secret, or its key, does not exist.
    SecretNotFound,
    /// `spec.sidecar.deployment` does not exist, or its pods cannot be selected.
    DeploymentNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ReceiverAvailable => "ReceiverAvailable",
            Reason::ReceiverUnavailable => "ReceiverUnavailable",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Conflict => "Conflict",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::DeploymentNotFound => "DeploymentNotFound",
        }
    }

    pub fn is_ready(self) -> bool {
        self == Reason::ReceiverAvailable
    }
}

/// The `Ready` verdict of one reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub reason: Reason,
    pub message: String,
}

impl Readiness {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Readiness {
            reason,
            message: message.into(),
        }
    }
}

/// Readiness of a receiver Deployment as the API server last reported it.
pub fn deployment_readiness(deployment: &Deployment) -> Readiness {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    if available > 0 {
        Readiness::new(
            Reason::ReceiverAvailable,
            format!("receiver Deployment {name} has {available}/{desired} replicas available"),
        )
    } else if desired == 0 {
        Readiness::new(
            Reason::ReceiverUnavailable,
            format!("receiver Deployment {name} is scaled to 0 replicas (spec.receiver.replicas)"),
        )
    } else {
        Readiness::new(
            Reason::ReceiverUnavailable,
            format!("waiting for receiver Deployment {name}: 0/{desired} replicas available"),
        )
    }
}

/// Readiness of an application Deployment the receiver runs in as a sidecar: ready once
/// every replica runs the current pod template (the one with the receiver) and is available.
pub fn sidecar_readiness(deployment: &Deployment) -> Readiness {
    let name = deployment.metadata.name.as_deref().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let observed = status.observed_generation.unwrap_or(0) >= generation;
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    if observed && desired > 0 && updated == desired && available == desired && replicas == desired
    {
        Readiness::new(
            Reason::ReceiverAvailable,
            format!("the receiver runs in all {desired} pods of Deployment {name}"),
        )
    } else if desired == 0 {
        Readiness::new(
            Reason::ReceiverUnavailable,
            format!("Deployment {name} is scaled to 0 replicas"),
        )
    } else {
        Readiness::new(
            Reason::ReceiverUnavailable,
            format!(
                "rolling the receiver into Deployment {name}: {updated}/{desired} pods updated, {available} available"
            ),
        )
    }
}

/// The `Ready` condition for `readiness`, keeping the previous transition time when the
/// condition's status did not change.
pub fn ready_condition(
    previous: Option<&Condition>,
    readiness: &Readiness,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = if readiness.reason.is_ready() {
        "True"
    } else {
        "False"
    };
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: readiness.reason.as_str().into(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Where a Webhook's receiver runs and is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Through its Service, inside the cluster.
    pub internal: Option<String>,
    /// Through its Ingress, from outside.
    pub external: Option<String>,
    /// The application Deployment it runs in as a sidecar.
    pub sidecar_deployment: Option<String>,
}

/// The whole status to write after a reconciliation.
pub fn next_status(
    previous: Option<&WebhookStatus>,
    readiness: &Readiness,
    generation: Option<i64>,
    placement: Placement,
    secret_name: Option<String>,
    now: Time,
) -> WebhookStatus {
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let mut conditions: Vec<Condition> = previous
        .map(|s| {
            s.conditions
                .iter()
                .filter(|c| c.type_ != READY)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    conditions.insert(
        0,
        ready_condition(previous_ready, readiness, generation, now),
    );
    WebhookStatus {
        conditions,
        observed_generation: generation,
        url: placement.internal,
        external_url: placement.external,
        sidecar_deployment: placement.sidecar_deployment,
        secret_name,
    }
}

/// What this reconciliation learnt about the sink ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SinkUsage {
    /// Not looked at (the reconciliation stopped early): keep what status says.
    Unknown,
    /// The Webhook has no ConfigMap sink.
    NoSink,
    /// The sink ConfigMap `name` holds `bytes` of data.
    Used { name: String, bytes: usize },
}

/// `status` with its `SinkCapacity` condition set from `usage`: True while the ConfigMap has
/// room, False with reason `SinkNearlyFull` past [`NEARLY_FULL_PERCENT`] of the limit.
/// Returns the status and whether the condition just turned False.
pub fn with_sink_capacity(
    mut status: WebhookStatus,
    usage: &SinkUsage,
    generation: Option<i64>,
    now: Time,
) -> (WebhookStatus, bool) {
    let previous = status
        .conditions
        .iter()
        .position(|c| c.type_ == SINK_CAPACITY)
        .map(|i| status.conditions.remove(i));
    let (name, bytes) = match usage {
        SinkUsage::Unknown => {
            status.conditions.extend(previous);
            return (status, false);
        }
        SinkUsage::NoSink => return (status, false),
        SinkUsage::Used { name, bytes } => (name, *bytes),
    };
    let percent = bytes * 100 / CONFIGMAP_LIMIT;
    let full = percent >= NEARLY_FULL_PERCENT;
    let (state, reason, message) = if full {
        (
            "False",
            "SinkNearlyFull",
            format!(
                "ConfigMap {name} holds {bytes} bytes, {percent}% of the 1 MiB a ConfigMap can hold; \
                 the receiver refuses deliveries that would take it past 900 KiB. Use mode latest \
                 or log, or split the event types across Webhooks with their own ConfigMaps"
            ),
        )
    } else {
        (
            "True",
            "CapacityAvailable",
            format!("ConfigMap {name} holds {bytes} bytes, {percent}% of the 1 MiB limit"),
        )
    };
    let last_transition_time = match &previous {
        Some(p) if p.status == state => p.last_transition_time.clone(),
        _ => now,
    };
    let turned_full = full && previous.as_ref().is_none_or(|p| p.status != "False");
    status.conditions.push(Condition {
        type_: SINK_CAPACITY.into(),
        status: state.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    (status, turned_full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};

    fn urls() -> Placement {
        Placement {
            internal: Some("u".into()),
            external: Some("https://e/u".into()),
            sidecar_deployment: None,
        }
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn deployment(replicas: i32, available: Option<i32>) -> Deployment {
        Deployment {
            metadata: kube::api::ObjectMeta {
                name: Some("w-receiver".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: available,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn readiness_comes_from_available_replicas() {
        let r = deployment_readiness(&deployment(2, None));
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
        assert!(r.message.contains("0/2"), "{}", r.message);
        let r = deployment_readiness(&deployment(2, Some(1)));
        assert_eq!(r.reason, Reason::ReceiverAvailable);
        assert!(r.message.contains("1/2"), "{}", r.message);
        let r = deployment_readiness(&deployment(0, None));
        assert!(r.message.contains("scaled to 0"), "{}", r.message);
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let waiting = Readiness::new(Reason::ReceiverUnavailable, "waiting");
        let invalid = Readiness::new(Reason::InvalidSpec, "bad path");
        let ready = Readiness::new(Reason::ReceiverAvailable, "ok");
        let s1 = next_status(None, &waiting, Some(1), Placement::default(), None, t(10));
        assert_eq!(s1.conditions[0].last_transition_time, t(10));
        assert_eq!(s1.conditions[0].status, "False");
        // False -> False with another reason: same transition time, new reason
        let s2 = next_status(
            Some(&s1),
            &invalid,
            Some(2),
            Placement::default(),
            None,
            t(20),
        );
        assert_eq!(s2.conditions[0].last_transition_time, t(10));
        assert_eq!(s2.conditions[0].reason, "InvalidSpec");
        assert_eq!(s2.conditions[0].observed_generation, Some(2));
        // False -> True
        let s3 = next_status(Some(&s2), &ready, Some(2), urls(), None, t(30));
        assert_eq!(s3.conditions[0].last_transition_time, t(30));
        assert_eq!(s3.conditions[0].status, "True");
        assert_eq!(s3.conditions.len(), 1);
        assert_eq!(s3.url.as_deref(), Some("u"));
        assert_eq!(s3.external_url.as_deref(), Some("https://e/u"));
        // unchanged inputs give an identical status, so nothing needs writing
        let s4 = next_status(Some(&s3), &ready, Some(2), urls(), None, t(40));
        assert_eq!(s3, s4);
    }

    #[test]
    fn sink_capacity_turns_false_when_nearly_full_and_back() {
        let ready = Readiness::new(Reason::ReceiverAvailable, "ok");
        let base = next_status(None, &ready, Some(1), Placement::default(), None, t(1));
        let used = |bytes| SinkUsage::Used {
            name: "opal-access".into(),
            bytes,
        };
        let (s, alert) = with_sink_capacity(base.clone(), &used(1000), Some(1), t(2));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == SINK_CAPACITY)
            .unwrap();
        assert_eq!((c.status.as_str(), alert), ("True", false));
        let (s, alert) = with_sink_capacity(s, &used(900 * 1024), Some(1), t(3));
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == SINK_CAPACITY)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), alert),
            ("False", "SinkNearlyFull", true)
        );
        assert!(c.message.contains("87%"), "{}", c.message);
        assert_eq!(c.last_transition_time, t(3));
        // still full: no new alert, same transition time
        let (s, alert) = with_sink_capacity(s, &used(910 * 1024), Some(1), t(4));
        assert!(!alert);
        assert_eq!(
            s.conditions
                .iter()
                .find(|c| c.type_ == SINK_CAPACITY)
                .unwrap()
                .last_transition_time,
            t(3)
        );
        // an early return keeps it; a Webhook without a sink drops it
        let (kept, _) = with_sink_capacity(s.clone(), &SinkUsage::Unknown, Some(1), t(5));
        assert_eq!(kept, s);
        let (dropped, _) = with_sink_capacity(s, &SinkUsage::NoSink, Some(1), t(5));
        assert!(dropped.conditions.iter().all(|c| c.type_ != SINK_CAPACITY));
        assert_eq!(dropped.conditions[0].type_, READY);
    }

    #[test]
    fn sidecar_is_ready_only_when_every_pod_runs_it() {
        use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
        let d = |generation: i64, observed: i64, updated: i32, available: i32, replicas: i32| {
            Deployment {
                metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some("billing".into()),
                    generation: Some(generation),
                    ..Default::default()
                },
                spec: Some(DeploymentSpec {
                    replicas: Some(2),
                    ..Default::default()
                }),
                status: Some(DeploymentStatus {
                    observed_generation: Some(observed),
                    updated_replicas: Some(updated),
                    available_replicas: Some(available),
                    replicas: Some(replicas),
                    ..Default::default()
                }),
            }
        };
        assert!(sidecar_readiness(&d(3, 3, 2, 2, 2)).reason.is_ready());
        // the controller has not seen the new template yet
        assert!(!sidecar_readiness(&d(3, 2, 2, 2, 2)).reason.is_ready());
        // old pods (without the receiver) still serve
        assert!(!sidecar_readiness(&d(3, 3, 1, 2, 3)).reason.is_ready());
        // new pods not available yet
        let r = sidecar_readiness(&d(3, 3, 2, 1, 2));
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
        assert!(
            r.message.contains("2/2 pods updated, 1 available"),
            "{}",
            r.message
        );
    }
}
