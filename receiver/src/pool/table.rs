//! What a new pool configuration changes, Webhook by Webhook. Pure: the pool
//! (`pool::run`) builds and swaps what this plans.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use hookwarden_api::pool_config::{PoolConfig, PoolWebhook};

use crate::config::{ReceiverConfig, WebhookIdentity};

/// What becomes of one Webhook of the new configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Served as it is: its state object is kept.
    Keep,
    /// Changed, same uid: a new state that keeps the old one's replay memory, so that a
    /// delivery recorded before the change is still a duplicate after it.
    Rebuild,
    /// Not served before, or made again under the same name (another uid): a new state.
    New,
}

/// The new table, planned: each Webhook of the new configuration (in its order) with its
/// step, and the names served before and no longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<(String, Step)>,
    pub dropped: Vec<String>,
}

impl Plan {
    /// How many Webhooks take `step`.
    pub fn count(&self, step: Step) -> usize {
        self.steps.iter().filter(|(_, s)| *s == step).count()
    }
}

/// Plans the move from the Webhooks served (by name, in pool namespace `namespace`) to
/// `next`. A Webhook is kept only when its entry and the pool's namespace are unchanged.
pub fn plan(served: &BTreeMap<String, PoolWebhook>, namespace: &str, next: &PoolConfig) -> Plan {
    let same_namespace = namespace == next.pool.namespace;
    let steps = next
        .webhooks
        .iter()
        .map(|w| {
            let step = match served.get(&w.name) {
                Some(before) if before == w && same_namespace => Step::Keep,
                Some(before) if before.uid == w.uid => Step::Rebuild,
                _ => Step::New,
            };
            (w.name.clone(), step)
        })
        .collect();
    let wanted: BTreeSet<&str> = next.webhooks.iter().map(|w| w.name.as_str()).collect();
    let dropped = served
        .keys()
        .filter(|name| !wanted.contains(name.as_str()))
        .cloned()
        .collect();
    Plan { steps, dropped }
}

/// The Secrets (by name) that `config`'s Webhooks read.
pub fn secret_names(config: &PoolConfig) -> BTreeSet<String> {
    config
        .webhooks
        .iter()
        .flat_map(|w| w.secrets.iter().map(|s| s.name.clone()))
        .collect()
}

/// One Webhook of a pool as the delivery path sees it: the configuration of a receiver of
/// its own, in the pool's namespace, with `secret_files` (empty when the secrets are read
/// through the API).
pub fn receiver_config(
    pool: &PoolConfig,
    webhook: &PoolWebhook,
    secret_files: Vec<PathBuf>,
) -> ReceiverConfig {
    ReceiverConfig {
        webhook: WebhookIdentity {
            name: webhook.name.clone(),
            namespace: pool.pool.namespace.clone(),
            uid: webhook.uid.clone(),
        },
        listen: pool.listen,
        metrics_listen: pool.metrics_listen,
        path: webhook.path.clone(),
        provider: webhook.provider,
        event_types: webhook.event_types.clone(),
        secret_files,
        sinks: webhook.sinks.clone(),
        generic_hmac: webhook.generic_hmac.clone(),
        limits: webhook.limits.clone(),
    }
}

/// Where a Secret volume keeps `key` of Secret `name`: `<dir>/<name>/<key>`.
pub fn secret_file(dir: &std::path::Path, name: &str, key: &str) -> PathBuf {
    dir.join(name).join(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Provider, SinksConfig};
    use hookwarden_api::pool_config::PoolIdentity;
    use hookwarden_api::webhook::SecretKeyRef;

    fn entry(name: &str, path: &str) -> PoolWebhook {
        PoolWebhook {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            path: path.into(),
            provider: Provider::Github,
            event_types: vec![],
            secrets: vec![SecretKeyRef {
                name: format!("{name}-secret"),
                key: "secret".into(),
            }],
            sinks: SinksConfig {
                events: true,
                ..SinksConfig::default()
            },
            generic_hmac: None,
            limits: Limits::default(),
        }
    }

    fn pool(namespace: &str, webhooks: Vec<PoolWebhook>) -> PoolConfig {
        PoolConfig {
            webhooks,
            ..PoolConfig::new(PoolIdentity {
                name: "p".into(),
                namespace: namespace.into(),
            })
        }
    }

    fn served(webhooks: &[PoolWebhook]) -> BTreeMap<String, PoolWebhook> {
        webhooks
            .iter()
            .map(|w| (w.name.clone(), w.clone()))
            .collect()
    }

    #[test]
    fn keeps_the_unchanged_rebuilds_the_changed_adds_and_drops() {
        let (a, b, c) = (entry("a", "/a"), entry("b", "/b"), entry("c", "/c"));
        let before = served(&[a.clone(), b.clone(), c.clone()]);
        let mut b2 = b.clone();
        b2.event_types = vec!["push".into()];
        b2.generation = 2;
        let mut c2 = c.clone();
        c2.uid = "made-again".into();
        let d = entry("d", "/d");
        let plan = plan(&before, "ns", &pool("ns", vec![a, b2, c2, d]));
        assert_eq!(
            plan.steps,
            [
                ("a".to_string(), Step::Keep),
                ("b".to_string(), Step::Rebuild),
                ("c".to_string(), Step::New),
                ("d".to_string(), Step::New),
            ]
        );
        assert!(plan.dropped.is_empty());
        assert_eq!(
            (
                plan.count(Step::Keep),
                plan.count(Step::Rebuild),
                plan.count(Step::New)
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn drops_what_is_no_longer_listed_and_rebuilds_all_on_a_new_namespace() {
        let (a, b) = (entry("a", "/a"), entry("b", "/b"));
        let before = served(&[a.clone(), b]);
        let p = plan(&before, "ns", &pool("ns", vec![a.clone()]));
        assert_eq!(p.steps, [("a".to_string(), Step::Keep)]);
        assert_eq!(p.dropped, ["b".to_string()]);
        let p = plan(&before, "ns", &pool("other", vec![a]));
        assert_eq!(p.steps, [("a".to_string(), Step::Rebuild)]);
        let p = plan(&BTreeMap::new(), "", &pool("ns", vec![]));
        assert!(p.steps.is_empty() && p.dropped.is_empty());
    }

    #[test]
    fn a_webhook_is_served_as_a_receiver_of_the_pool_namespace() {
        let mut a = entry("a", "/a");
        a.secrets.push(SecretKeyRef {
            name: "shared".into(),
            key: "k".into(),
        });
        let config = pool("team-a", vec![a.clone(), entry("b", "/b")]);
        assert_eq!(
            secret_names(&config).into_iter().collect::<Vec<_>>(),
            ["a-secret", "b-secret", "shared"]
        );
        let dir = std::path::Path::new("/s");
        let files = a
            .secrets
            .iter()
            .map(|s| secret_file(dir, &s.name, &s.key))
            .collect();
        let r = receiver_config(&config, &a, files);
        assert_eq!(r.webhook.namespace, "team-a");
        assert_eq!(r.webhook.uid, "uid-a");
        assert_eq!(r.path, "/a");
        assert_eq!(
            r.secret_files,
            [
                PathBuf::from("/s/a-secret/secret"),
                PathBuf::from("/s/shared/k")
            ]
        );
    }
}
