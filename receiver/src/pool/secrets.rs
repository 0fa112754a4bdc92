//! A pool's signing secrets: read from a directory laid out as Secret volumes are
//! (`<dir>/<secret>/<key>`, re-read periodically), or through the API with one watch per
//! Secret named by a Webhook served, started when a configuration names the Secret and
//! stopped when none does any more.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use futures::StreamExt;
use hookwarden_api::pool_config::PoolWebhook;
use hookwarden_api::webhook::SecretKeyRef;
use k8s_openapi::api::core::v1::Secret as SecretObject;
use kube::api::Api;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::table::secret_file;
use super::watch;
use crate::secrets::{Secret, SecretStore};

/// What a watch saw of one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Missing,
    /// Its data, by key.
    Data(BTreeMap<String, Vec<u8>>),
}

/// A change of one Secret, from its watch.
#[derive(Debug)]
pub struct SecretUpdate {
    pub name: String,
    pub seen: Seen,
}

/// Where a pool reads its signing secrets.
pub enum SecretSource {
    /// Files `<dir>/<secret>/<key>`.
    Dir(PathBuf),
    /// The API.
    Api(Box<SecretWatches>),
}

impl SecretSource {
    /// The files `webhook`'s secrets are read from (none when read through the API).
    pub fn files_for(&self, webhook: &PoolWebhook) -> Vec<PathBuf> {
        match self {
            SecretSource::Dir(dir) => webhook
                .secrets
                .iter()
                .map(|s| secret_file(dir, &s.name, &s.key))
                .collect(),
            SecretSource::Api(_) => Vec::new(),
        }
    }

    /// A store of `webhook`'s secrets, as read now.
    pub fn store_for(&self, webhook: &PoolWebhook) -> SecretStore {
        match self {
            SecretSource::Dir(_) => SecretStore::new(webhook.provider, self.files_for(webhook)),
            SecretSource::Api(watches) => {
                let store = SecretStore::pushed(webhook.provider);
                store.set(resolve(&watches.values, &webhook.secrets));
                store
            }
        }
    }
}

/// One watch per Secret followed, and what each saw last.
pub struct SecretWatches {
    api: Api<SecretObject>,
    updates: mpsc::Sender<SecretUpdate>,
    watches: BTreeMap<String, AbortHandle>,
    values: BTreeMap<String, Seen>,
}

impl SecretWatches {
    /// No watch yet; their updates arrive on the receiver returned.
    pub fn new(client: kube::Client, namespace: &str) -> (Self, mpsc::Receiver<SecretUpdate>) {
        let (updates, received) = mpsc::channel(64);
        let watches = SecretWatches {
            api: Api::namespaced(client, namespace),
            updates,
            watches: BTreeMap::new(),
            values: BTreeMap::new(),
        };
        (watches, received)
    }

    /// Watches exactly the Secrets `names`: starts the new ones' watches, stops the others'.
    pub fn follow(&mut self, names: &BTreeSet<String>) {
        self.watches.retain(|name, watch| {
            let keep = names.contains(name);
            if !keep {
                watch.abort();
                tracing::info!(secret = %name, "no Webhook names this Secret any more; stopped watching it");
            }
            keep
        });
        self.values.retain(|name, _| names.contains(name));
        for name in names {
            if self.watches.contains_key(name) {
                continue;
            }
            let updates = self.updates.clone();
            let stream = watch::named(self.api.clone(), name);
            let name2 = name.clone();
            let task = tokio::spawn(async move {
                let mut stream = std::pin::pin!(stream);
                while let Some(object) = stream.next().await {
                    let seen = match object {
                        None => Seen::Missing,
                        Some(secret) => Seen::Data(
                            secret
                                .data
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(k, v)| (k, v.0))
                                .collect(),
                        ),
                    };
                    let update = SecretUpdate {
                        name: name2.clone(),
                        seen,
                    };
                    if updates.send(update).await.is_err() {
                        return;
                    }
                }
            });
            tracing::info!(secret = %name, "watching Secret");
            self.watches.insert(name.clone(), task.abort_handle());
        }
    }

    /// Takes `update`; whether it changed what is known (an update of a Secret no longer
    /// followed is ignored).
    pub fn update(&mut self, update: SecretUpdate) -> bool {
        if !self.watches.contains_key(&update.name) {
            return false;
        }
        self.values.insert(update.name, update.seen.clone()) != Some(update.seen)
    }

    /// `webhook`'s secrets as known now.
    pub fn resolve(&self, refs: &[SecretKeyRef]) -> Result<Vec<(String, Secret)>, String> {
        resolve(&self.values, refs)
    }
}

impl Drop for SecretWatches {
    fn drop(&mut self) {
        for watch in self.watches.values() {
            watch.abort();
        }
    }
}

/// The secrets `refs` name, from what the watches saw, or why they cannot be had (naming
/// the Secret and key, never a value). Surrounding whitespace is not part of a secret, and
/// an empty value is none, as with files. Pure.
pub fn resolve(
    values: &BTreeMap<String, Seen>,
    refs: &[SecretKeyRef],
) -> Result<Vec<(String, Secret)>, String> {
    refs.iter()
        .map(|r| {
            let from = format!("Secret {} key {}", r.name, r.key);
            match values.get(&r.name) {
                None => Err(format!("Secret {} not read yet", r.name)),
                Some(Seen::Missing) => Err(format!("Secret {} not found", r.name)),
                Some(Seen::Data(data)) => match data.get(&r.key).map(|v| v.trim_ascii()) {
                    None => Err(format!("Secret {} has no key {}", r.name, r.key)),
                    Some([]) => Err(format!("{from} is empty")),
                    Some(bytes) => Ok((from, Secret::new(bytes))),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn resolves_each_key_or_says_which_is_missing_without_values() {
        let mut values = BTreeMap::new();
        values.insert(
            "a".to_string(),
            Seen::Data(
                [
                    ("k".to_string(), b"hunter2\n".to_vec()),
                    ("e".into(), b" ".to_vec()),
                ]
                .into(),
            ),
        );
        values.insert("gone".to_string(), Seen::Missing);
        let got = resolve(&values, &[key("a", "k")]).unwrap();
        assert_eq!(got[0].0, "Secret a key k");
        assert_eq!(got[0].1.expose(), b"hunter2");
        let cases = [
            (key("a", "x"), "Secret a has no key x"),
            (key("a", "e"), "Secret a key e is empty"),
            (key("gone", "k"), "Secret gone not found"),
            (key("new", "k"), "Secret new not read yet"),
        ];
        for (r, why) in cases {
            let err = resolve(&values, &[key("a", "k"), r]).unwrap_err();
            assert_eq!(err, why);
            assert!(!err.contains("hunter2"));
        }
    }
}
