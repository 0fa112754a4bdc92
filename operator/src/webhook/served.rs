//! Whether a pooled Webhook is served, from what the pool's pods report. Pure.
//!
//! Each pool pod writes what it serves into the pool's served ConfigMap under its own name
//! (`hookwarden_api::pool_config::ServedReport`). A Webhook is Ready once every Ready pod of
//! its pool (every pod its Service sends deliveries to) serves its current generation and
//! can read its signing secrets: what the pods say, not what the operator last applied.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};

use hookwarden_api::pool_config::ServedReport;

use crate::crd::Webhook;
use crate::webhook::status::{Readiness, Reason};

/// The Webhook being looked for, as it is now.
pub struct Wanted<'a> {
    pub name: &'a str,
    pub uid: &'a str,
    pub generation: i64,
}

/// Whether a pod is Ready and not on its way out: the Service sends it deliveries.
fn serving_pod(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What each pod of a pool reports it serves, read from the pool's served ConfigMap once for
/// all of its Webhooks. A report that cannot be read counts as none.
#[derive(Debug, Default)]
pub struct Reports(BTreeMap<String, ServedReport>);

impl Reports {
    /// The reports in `served` (none when it does not exist yet), by pod name.
    pub fn read(served: Option<&ConfigMap>) -> Reports {
        let data = served.and_then(|cm| cm.data.as_ref());
        Reports(
            data.into_iter()
                .flatten()
                .filter_map(|(pod, text)| Some((pod.clone(), ServedReport::from_json(text).ok()?)))
                .collect(),
        )
    }
}

/// The readiness of `wanted` in the pool `pool`, from its pods and their reports.
pub fn pool_readiness(
    pool: &str,
    wanted: &Wanted<'_>,
    pods: &[Pod],
    reports: &Reports,
) -> Readiness {
    let ready: Vec<&Pod> = pods.iter().filter(|p| serving_pod(p)).collect();
    if ready.is_empty() {
        return Readiness::new(
            Reason::ReceiverUnavailable,
            format!("waiting for ReceiverPool {pool:?}: none of its pods is Ready"),
        );
    }
    let mut serving = 0;
    let mut problem: Option<String> = None;
    for pod in &ready {
        let name = pod.metadata.name.as_deref().unwrap_or_default();
        let Some(entry) = reports
            .0
            .get(name)
            .and_then(|r| r.webhooks.get(wanted.name))
        else {
            continue;
        };
        if entry.uid != wanted.uid || entry.generation != wanted.generation {
            continue;
        }
        match (&entry.ready, &entry.problem) {
            (true, _) => serving += 1,
            (false, found) => {
                problem = Some(found.clone().unwrap_or_else(|| "not ready".into()));
            }
        }
    }
    let total = ready.len();
    if serving == total {
        return Readiness::new(
            Reason::ReceiverAvailable,
            format!("served by {serving}/{total} Ready pods of ReceiverPool {pool:?}"),
        );
    }
    match problem {
        Some(problem) => Readiness::new(
            Reason::ReceiverUnavailable,
            format!("ReceiverPool {pool:?} cannot verify its deliveries: {problem}"),
        ),
        None => Readiness::new(
            Reason::ReceiverUnavailable,
            format!(
                "waiting for ReceiverPool {pool:?}: {serving}/{total} Ready pods serve generation {}",
                wanted.generation
            ),
        ),
    }
}

/// Whether `readiness` is news for `webhook`: its `Ready` condition, for its current
/// generation, says something else. A report or a pod of a pool concerns all of the pool's
/// Webhooks, but only these need a reconcile for it.
pub fn is_news(webhook: &Webhook, readiness: &Readiness) -> bool {
    let current = webhook.ready_condition().filter(|c| {
        c.observed_generation == webhook.metadata.generation
            && webhook.status.as_ref().map(|s| s.observed_generation)
                == Some(webhook.metadata.generation)
    });
    current.is_none_or(|c| c.reason != readiness.reason.as_str() || c.message != readiness.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookwarden_api::pool_config::Served;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};

    fn pod(name: &str, ready: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        p
    }

    fn report(entries: &[(&str, &str, i64, bool)]) -> String {
        let mut r = ServedReport::default();
        for (name, uid, generation, ready) in entries {
            r.webhooks.insert(
                name.to_string(),
                Served {
                    uid: uid.to_string(),
                    generation: *generation,
                    ready: *ready,
                    problem: (!ready).then(|| "Secret \"s\" not found".into()),
                },
            );
        }
        r.to_json().unwrap()
    }

    fn served(reports: &[(&str, String)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                reports
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        }
    }

    const A: Wanted<'static> = Wanted {
        name: "a",
        uid: "u",
        generation: 2,
    };

    #[test]
    fn ready_once_every_ready_pod_serves_the_current_generation() {
        let pods = [pod("p1", true), pod("p2", true), pod("p3", false)];
        let both = served(&[
            ("p1", report(&[("a", "u", 2, true)])),
            ("p2", report(&[("a", "u", 2, true)])),
        ]);
        let r = pool_readiness("default", &A, &pods, &Reports::read(Some(&both)));
        assert_eq!(r.reason, Reason::ReceiverAvailable, "{r:?}");
        assert!(r.message.contains("2/2"), "{}", r.message);

        let one_old = served(&[
            ("p1", report(&[("a", "u", 2, true)])),
            ("p2", report(&[("a", "u", 1, true)])),
        ]);
        let r = pool_readiness("default", &A, &pods, &Reports::read(Some(&one_old)));
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
        assert!(
            r.message.contains("1/2 Ready pods serve generation 2"),
            "{}",
            r.message
        );

        let one_missing = served(&[("p1", report(&[("a", "u", 2, true)]))]);
        let r = pool_readiness("default", &A, &pods, &Reports::read(Some(&one_missing)));
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
    }

    #[test]
    fn a_webhook_made_again_under_the_same_name_is_not_the_one_served() {
        let pods = [pod("p1", true)];
        let old = served(&[("p1", report(&[("a", "old-uid", 2, true)]))]);
        let r = pool_readiness("default", &A, &pods, &Reports::read(Some(&old)));
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
    }

    #[test]
    fn no_ready_pod_or_no_report_is_not_ready_and_a_secret_problem_is_told() {
        let r = pool_readiness("default", &A, &[pod("p1", false)], &Reports::default());
        assert!(
            r.message.contains("none of its pods is Ready"),
            "{}",
            r.message
        );
        let r = pool_readiness("default", &A, &[pod("p1", true)], &Reports::default());
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
        let broken = served(&[("p1", report(&[("a", "u", 2, false)]))]);
        let r = pool_readiness(
            "default",
            &A,
            &[pod("p1", true)],
            &Reports::read(Some(&broken)),
        );
        assert!(
            r.message.contains("Secret \"s\" not found"),
            "{}",
            r.message
        );
        let garbage = served(&[("p1", "{".into())]);
        let r = pool_readiness(
            "default",
            &A,
            &[pod("p1", true)],
            &Reports::read(Some(&garbage)),
        );
        assert_eq!(r.reason, Reason::ReceiverUnavailable);
    }
}
