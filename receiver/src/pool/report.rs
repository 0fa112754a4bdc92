//! What a pool pod reports it serves ([`ServedReport`]): built from the table swapped in
//! (pure), written into the pool's served ConfigMap under the pod's own key with
//! server-side apply (field manager `hookwarden-receiver/<pod>`, so that each pod owns its
//! key only), or into a file outside a cluster. A write that fails (the ConfigMap not made
//! yet, the API away) is retried with back-off, always with the newest report.

use std::path::PathBuf;
use std::time::Duration;

use hookwarden_api::pool_config::{PoolWebhook, Served, ServedReport};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;

use crate::secrets::SecretState;

/// The report of the Webhooks served, each with its secrets' state, and of the newest
/// configuration if it was refused. Pure; never holds a secret (a secret state's reason
/// names files or Secret keys only).
pub fn served_report<'a>(
    served: impl IntoIterator<Item = (&'a PoolWebhook, SecretState)>,
    refused: Option<&str>,
) -> ServedReport {
    let webhooks = served
        .into_iter()
        .map(|(w, secrets)| {
            let problem = match secrets {
                SecretState::Loaded(_) => None,
                SecretState::Unavailable(why) => Some(why),
            };
            let served = Served {
                uid: w.uid.clone(),
                generation: w.generation,
                ready: problem.is_none(),
                problem,
            };
            (w.name.clone(), served)
        })
        .collect();
    ServedReport {
        webhooks,
        refused: refused.map(str::to_string),
    }
}

/// Where reports go.
pub enum ReportTarget {
    /// The served ConfigMap `name` in `namespace`, key `pod`.
    ConfigMap {
        client: kube::Client,
        namespace: String,
        name: String,
        pod: String,
    },
    /// A file (outside a cluster), replaced whole.
    File(PathBuf),
    Nowhere,
}

/// The field manager of pod `pod`'s key (at most 128 characters, as the API wants).
pub fn field_manager(pod: &str) -> String {
    format!("hookwarden-receiver/{pod}")
        .chars()
        .take(128)
        .collect()
}

/// The server-side apply patch that sets `pod`'s key of ConfigMap `name` to `report`. Pure.
pub fn apply_patch(namespace: &str, name: &str, pod: &str, report: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": name, "namespace": namespace },
        "data": { pod: report },
    })
}

const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(30);

/// Starts writing reports to `target`: the newest one sent is written, the ones before it
/// may be skipped.
pub fn writer(target: ReportTarget) -> watch::Sender<Option<ServedReport>> {
    let (to, mut from) = watch::channel(None::<ServedReport>);
    tokio::spawn(async move {
        while from.changed().await.is_ok() {
            let mut wait = FIRST_RETRY;
            loop {
                let Some(report) = from.borrow_and_update().clone() else {
                    break;
                };
                match write(&target, &report).await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, retry_in_s = wait.as_secs(), "cannot write the served report; retrying");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(LAST_RETRY);
                    }
                }
            }
        }
    });
    to
}

async fn write(target: &ReportTarget, report: &ServedReport) -> Result<(), String> {
    let text = report.to_json().map_err(|e| e.to_string())?;
    match target {
        ReportTarget::ConfigMap {
            client,
            namespace,
            name,
            pod,
        } => {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
            let params = PatchParams::apply(&field_manager(pod)).force();
            let patch = apply_patch(namespace, name, pod, &text);
            api.patch(name, &params, &Patch::Apply(&patch))
                .await
                .map(|_| ())
                .map_err(|e| format!("ConfigMap {namespace}/{name}: {e}"))
        }
        ReportTarget::File(path) => {
            let partial = path.with_extension("partial");
            tokio::fs::write(&partial, text)
                .await
                .and(tokio::fs::rename(&partial, path).await)
                .map_err(|e| format!("{}: {e}", path.display()))
        }
        ReportTarget::Nowhere => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Provider, SinksConfig};
    use crate::secrets::Secret;
    use hookwarden_api::webhook::SecretKeyRef;

    fn entry(name: &str, generation: i64) -> PoolWebhook {
        PoolWebhook {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation,
            path: format!("/{name}"),
            provider: Provider::Github,
            event_types: vec![],
            secrets: vec![SecretKeyRef {
                name: "s".into(),
                key: "k".into(),
            }],
            sinks: SinksConfig::default(),
            generic_hmac: None,
            limits: Limits::default(),
        }
    }

    #[test]
    fn reports_each_webhook_served_with_its_generation_and_readiness() {
        let (a, b) = (entry("a", 3), entry("b", 1));
        let report = served_report(
            [
                (
                    &a,
                    SecretState::Loaded(vec![Secret::new(b"hunter2")].into()),
                ),
                (&b, SecretState::Unavailable("Secret s not found".into())),
            ],
            Some("webhook c: path /a is also a's"),
        );
        let json = report.to_json().unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        let back = ServedReport::from_json(&json).unwrap();
        assert_eq!(back.webhooks["a"].generation, 3);
        assert!(back.webhooks["a"].ready && back.webhooks["a"].problem.is_none());
        assert_eq!(back.webhooks["b"].uid, "uid-b");
        assert!(!back.webhooks["b"].ready);
        assert_eq!(
            back.webhooks["b"].problem.as_deref(),
            Some("Secret s not found")
        );
        assert_eq!(
            back.refused.as_deref(),
            Some("webhook c: path /a is also a's")
        );
    }

    #[test]
    fn each_pod_applies_its_own_key_under_its_own_manager() {
        let patch = apply_patch("team-a", "p-pool-served", "p-pool-0", "{}");
        assert_eq!(patch["metadata"]["name"], "p-pool-served");
        assert_eq!(patch["metadata"]["namespace"], "team-a");
        assert_eq!(patch["data"]["p-pool-0"], "{}");
        assert_eq!(patch["kind"], "ConfigMap");
        assert_eq!(field_manager("p-pool-0"), "hookwarden-receiver/p-pool-0");
        assert_eq!(field_manager(&"x".repeat(300)).len(), 128);
    }
}
