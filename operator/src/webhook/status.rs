//! The Webhook's status: the `Ready` condition and what it is computed from. Pure.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{SidecarPods, WebhookStatus};

/// The condition type telling whether the receiver can take deliveries.
pub const READY: &str = hookwarden_api::names::READY_CONDITION;
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
    /// `spec.sidecar`: no pod has opted in (label `hookwarden.io/inject`).
    NoSidecarPods,
    /// `spec.pool` names a ReceiverPool that does not exist.
    PoolNotFound,
    /// An object of a name the Webhook's receiver needs (its sink ConfigMap, its
    /// ServiceAccount, its generated Secret, ...) exists and was not created for this
    /// Webhook: it is left untouched, and nothing is applied until it is gone or renamed.
    NotOwned,
    /// The Webhook asks for what the platform team's guardrails do not allow (a receiver
    /// image, an Ingress annotation, a host a pooled `forward` sink reaches).
    NotAllowed,
    /// The reconciliation of this spec failed and is retried with back-off; whether the
    /// receiver serves it is not known. Only set when there is no verdict on the spec yet.
    ReconcileFailed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ReceiverAvailable => "ReceiverAvailable",
            Reason::ReceiverUnavailable => "ReceiverUnavailable",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::Conflict => "Conflict",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::NoSidecarPods => "NoSidecarPods",
            Reason::PoolNotFound => "PoolNotFound",
            Reason::NotOwned => "NotOwned",
            Reason::NotAllowed => "NotAllowed",
            Reason::ReconcileFailed => "ReconcileFailed",
        }
    }

    pub fn is_ready(self) -> bool {
        self == Reason::ReceiverAvailable
    }

    /// The `Ready` condition's status for this reason.
    pub fn condition_status(self) -> &'static str {
        match self {
            Reason::ReceiverAvailable => "True",
            Reason::ReconcileFailed => "Unknown",
            _ => "False",
        }
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

/// Takes the condition of `type_` out of `status`, to be written anew.
pub(crate) fn take_condition(status: &mut WebhookStatus, type_: &str) -> Option<Condition> {
    status
        .conditions
        .iter()
        .position(|c| c.type_ == type_)
        .map(|i| status.conditions.remove(i))
}

/// A condition's `lastTransitionTime`: the previous one's while its status stays, else now.
pub fn transition_time(previous: Option<&Condition>, status: &str, now: Time) -> Time {
    match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    }
}

/// How many names `status.sidecar.outdated` lists at most.
pub const OUTDATED_LISTED: usize = 20;

/// Readiness of a sidecar Webhook from the pods that opted in (label `hookwarden.io/inject`),
/// and their count: Ready while at least one Ready pod runs an injected receiver (an
/// outdated one still verifies and forwards: an operator upgrade or a Webhook change must
/// not turn every sidecar Webhook unready); pods whose receiver is not `current` (the hash
/// the injector gives a pod now), or who have none, are listed as outdated, and the
/// `SidecarsCurrent` condition says so.
pub fn sidecar_pods(webhook: &str, pods: &[Pod], current: &str) -> (Readiness, SidecarPods) {
    let live: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            !matches!(phase, Some("Succeeded" | "Failed"))
        })
        .collect();
    let injected = |p: &Pod| {
        p.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crate::runtime::names::RECEIVER_HASH_ANNOTATION))
            .cloned()
    };
    let is_ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let ready = live
        .iter()
        .filter(|p| injected(p).is_some() && is_ready(p))
        .count();
    let mut outdated: Vec<String> = live
        .iter()
        .filter(|p| injected(p).as_deref() != Some(current))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    outdated.sort();
    let outdated_count = outdated.len();
    outdated.truncate(OUTDATED_LISTED);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    let counted = SidecarPods {
        pods: count(live.len()),
        ready: count(ready),
        outdated,
        outdated_count: (outdated_count > 0).then(|| count(outdated_count)),
    };
    let label = format!("{}={webhook}", crate::runtime::names::INJECT_LABEL);
    let readiness = if ready > 0 {
        let mut message = format!("the receiver serves in {ready} ready pod(s) labelled {label}");
        if outdated_count > 0 {
            message.push_str(&format!(
                "; {outdated_count} pod(s) run an outdated receiver (see SidecarsCurrent)"
            ));
        }
        Readiness::new(Reason::ReceiverAvailable, message)
    } else if live.is_empty() {
        Readiness::new(
            Reason::NoSidecarPods,
            format!(
                "no pod in this namespace is labelled {label}: put that label on the pod template \
                 of the application that should receive these deliveries"
            ),
        )
    } else {
        Readiness::new(
            Reason::ReceiverUnavailable,
            format!(
                "waiting for a pod labelled {label} to be Ready with its receiver: {} pod(s), 0 ready",
                live.len()
            ),
        )
    };
    (readiness, counted)
}

/// The condition type telling whether every opted-in pod runs the current receiver.
pub const SIDECARS_CURRENT: &str = "SidecarsCurrent";

/// `status` with its `SidecarsCurrent` condition set from `status.sidecar` (removed
/// without a sidecar).
pub fn with_sidecars(
    mut status: WebhookStatus,
    generation: Option<i64>,
    now: Time,
) -> WebhookStatus {
    let previous = take_condition(&mut status, SIDECARS_CURRENT);
    let Some(pods) = &status.sidecar else {
        return status;
    };
    let (state, reason, message) = if pods.outdated.is_empty() {
        (
            "True",
            "Current",
            format!("all {} opted-in pod(s) run the current receiver", pods.pods),
        )
    } else {
        let total = pods.outdated_count.unwrap_or(0);
        let more = total - i32::try_from(pods.outdated.len()).unwrap_or(0);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        (
            "False",
            "Outdated",
            format!(
                "{} of {} pod(s) run a receiver older than this spec, or none: {}{more}; \
                 restart their workload (kubectl rollout restart) to give them the current one",
                total,
                pods.pods,
                pods.outdated.join(", ")
            ),
        )
    };
    let last_transition_time = transition_time(previous.as_ref(), state, now);
    status.conditions.push(Condition {
        type_: SIDECARS_CURRENT.into(),
        status: state.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    });
    status
}

/// The `Ready` condition for `readiness`, keeping the previous transition time when the
/// condition's status did not change.
pub fn ready_condition(
    previous: Option<&Condition>,
    readiness: &Readiness,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let status = readiness.reason.condition_status();
    let last_transition_time = transition_time(previous, status, now);
    Condition {
        type_: READY.into(),
        status: status.into(),
        reason: readiness.reason.as_str().into(),
        message: readiness.message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether a failed reconciliation should be written into `Ready`: only when it holds no
/// verdict on the spec at `generation` (none at all, or one about an older spec).
pub fn failure_to_report(status: Option<&WebhookStatus>, generation: Option<i64>) -> bool {
    status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
        .is_none_or(|ready| ready.observed_generation != generation)
}

/// What `Ready` says of the spec at `generation`, for the `webhook_ready` metric: whether it
/// is True, and its reason (`Pending` while the current spec has no verdict yet, which
/// includes a verdict on an older spec).
pub fn readiness(status: Option<&WebhookStatus>, generation: Option<i64>) -> (bool, &str) {
    match status.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY)) {
        Some(ready) if ready.observed_generation == generation => {
            (ready.status == "True", ready.reason.as_str())
        }
        _ => (false, "Pending"),
    }
}

/// Where a Webhook's receiver runs and is reached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Through its Service, inside the cluster.
    pub internal: Option<String>,
    /// Through its Ingress, from outside.
    pub external: Option<String>,
    /// The pods it is injected into, as a sidecar.
    pub sidecar: Option<SidecarPods>,
    /// The pool that serves it (see `placement`).
    pub pool: Option<String>,
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
        sidecar: placement.sidecar,
        secret_name,
        pool: placement.pool,
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

/// What a ConfigMap's data weighs against its 1 MiB limit.
pub fn config_map_bytes(cm: &ConfigMap) -> usize {
    let text: usize = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    let binary: usize = cm
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.0.len())
        .sum();
    text + binary
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
    let previous = take_condition(&mut status, SINK_CAPACITY);
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
    let last_transition_time = transition_time(previous.as_ref(), state, now);
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

    #[test]
    fn readiness_is_the_verdict_on_the_current_spec() {
        let ready = |status: &str, reason: &str, generation: i64| WebhookStatus {
            conditions: vec![Condition {
                type_: READY.into(),
                status: status.into(),
                reason: reason.into(),
                message: String::new(),
                observed_generation: Some(generation),
                last_transition_time: t(0),
            }],
            ..Default::default()
        };
        let ok = ready("True", "ReceiverAvailable", 2);
        assert_eq!(readiness(Some(&ok), Some(2)), (true, "ReceiverAvailable"));
        // A verdict on an older spec says nothing of this one.
        assert_eq!(readiness(Some(&ok), Some(3)), (false, "Pending"));
        let missing = ready("False", "SecretNotFound", 3);
        assert_eq!(
            readiness(Some(&missing), Some(3)),
            (false, "SecretNotFound")
        );
        assert_eq!(readiness(None, Some(1)), (false, "Pending"));
        assert_eq!(
            readiness(Some(&WebhookStatus::default()), Some(1)),
            (false, "Pending")
        );
    }

    fn urls() -> Placement {
        Placement {
            internal: Some("u".into()),
            external: Some("https://e/u".into()),
            sidecar: None,
            pool: None,
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
    fn a_sidecar_is_ready_while_a_pod_serves_and_outdated_pods_are_named() {
        let pod = |name: &str, hash: Option<&str>, ready: bool, terminating: bool| {
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap();
            if let Some(h) = hash {
                p.metadata.annotations = Some(
                    [(
                        crate::runtime::names::RECEIVER_HASH_ANNOTATION.to_string(),
                        h.to_string(),
                    )]
                    .into(),
                );
            }
            if terminating {
                p.metadata.deletion_timestamp = Some(t(1));
            }
            p
        };
        let (r, c) = sidecar_pods("shopify", &[], "h1");
        assert_eq!(r.reason, Reason::NoSidecarPods);
        assert!(
            r.message.contains("hookwarden.io/inject=shopify"),
            "{}",
            r.message
        );
        assert_eq!(c, SidecarPods::default());

        let pods = [
            pod("a", Some("h1"), true, false),
            pod("b", Some("h0"), true, false),
            pod("c", None, true, false),
            pod("d", Some("h0"), true, true),
        ];
        let (r, c) = sidecar_pods("shopify", &pods, "h1");
        assert_eq!(r.reason, Reason::ReceiverAvailable);
        assert!(
            r.message.contains("2 pod(s) run an outdated receiver"),
            "{}",
            r.message
        );
        let expected = SidecarPods {
            pods: 3,
            ready: 2,
            outdated: vec!["b".into(), "c".into()],
            outdated_count: Some(2),
        };
        assert_eq!(c, expected);

        // Only outdated receivers: still serving, so Ready; a pod without one does not serve.
        let (r, _) = sidecar_pods("shopify", &[pod("b", Some("h0"), true, false)], "h1");
        assert_eq!(r.reason, Reason::ReceiverAvailable);
        let (r, _) = sidecar_pods("shopify", &[pod("c", None, true, false)], "h1");
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
        let (r, _) = sidecar_pods("shopify", &[pod("a", Some("h1"), false, false)], "h1");
        assert_eq!(r.reason, Reason::ReceiverUnavailable);

        let many: Vec<Pod> = (0..30)
            .map(|i| pod(&format!("p{i:02}"), None, true, false))
            .collect();
        let (_, c) = sidecar_pods("shopify", &many, "h1");
        assert_eq!(
            (c.pods, c.outdated.len(), c.outdated_count),
            (30, OUTDATED_LISTED, Some(30))
        );

        // The condition.
        let status = |sidecar| WebhookStatus {
            sidecar,
            ..WebhookStatus::default()
        };
        let find = |s: &WebhookStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == SIDECARS_CURRENT)
                .cloned()
        };
        let outdated = with_sidecars(status(Some(c.clone())), Some(2), t(3));
        let cond = find(&outdated).unwrap();
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", "Outdated")
        );
        assert!(
            cond.message.contains("p00, p01") && cond.message.contains("and 10 more"),
            "{}",
            cond.message
        );
        let current = with_sidecars(
            status(Some(SidecarPods {
                pods: 2,
                ready: 2,
                ..SidecarPods::default()
            })),
            Some(2),
            t(4),
        );
        assert_eq!(find(&current).unwrap().reason, "Current");
        let mut gone = current.clone();
        gone.sidecar = None;
        assert!(find(&with_sidecars(gone, Some(3), t(5))).is_none());
    }
}
