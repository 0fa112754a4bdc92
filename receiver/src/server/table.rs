//! The routing table: which Webhook a delivery path belongs to. A dedicated receiver's
//! table has one entry; a pool's is replaced whole whenever its configuration changes
//! (see [`super::Receiver::swap`]).

use std::collections::HashMap;
use std::sync::Arc;

use super::budget::BodyBudget;
use super::state::AppState;
use crate::secrets::SecretState;

/// Up to this many entries are found by comparing paths one by one, which beats hashing
/// the path; more are found through a hash map.
const LINEAR: usize = 8;

/// Delivery paths and the state of the Webhook each belongs to, and when the receiver is
/// ready.
pub struct Table {
    lookup: Lookup,
    readiness: Readiness,
}

enum Lookup {
    Few(Vec<(Box<str>, Arc<AppState>)>),
    Many(HashMap<Box<str>, Arc<AppState>>),
}

/// When `/readyz` answers 200.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// When every Webhook's signing secrets are loaded (a dedicated receiver).
    SecretsLoaded,
    /// Once a configuration was applied, whatever the Webhooks' secrets (a pool: one
    /// Webhook without its secret does not take the others out of service).
    Applied,
    /// Not yet (a pool before its first configuration).
    NotYet,
}

impl Table {
    /// A dedicated receiver's table: its one Webhook.
    pub fn dedicated(state: Arc<AppState>) -> Table {
        Table::new([state], Readiness::SecretsLoaded)
    }

    /// A table of `states`, each on its `config.path` (the paths must differ: a later one
    /// on the same path replaces an earlier one).
    pub fn new(states: impl IntoIterator<Item = Arc<AppState>>, readiness: Readiness) -> Table {
        let mut entries: Vec<(Box<str>, Arc<AppState>)> = Vec::new();
        for state in states {
            let path: Box<str> = state.config.path.as_str().into();
            entries.retain(|(p, _)| *p != path);
            entries.push((path, state));
        }
        let lookup = if entries.len() <= LINEAR {
            Lookup::Few(entries)
        } else {
            Lookup::Many(entries.into_iter().collect())
        };
        Table { lookup, readiness }
    }

    /// A pool's table before its first configuration: nothing served, not ready.
    pub fn empty() -> Table {
        Table::new([], Readiness::NotYet)
    }

    /// The Webhook served on `path`.
    #[inline]
    pub fn get(&self, path: &str) -> Option<&Arc<AppState>> {
        match &self.lookup {
            Lookup::Few(entries) => entries
                .iter()
                .find(|(p, _)| &**p == path)
                .map(|(_, state)| state),
            Lookup::Many(map) => map.get(path),
        }
    }

    /// Every Webhook served.
    pub fn states(&self) -> Box<dyn Iterator<Item = &Arc<AppState>> + '_> {
        match &self.lookup {
            Lookup::Few(entries) => Box::new(entries.iter().map(|(_, s)| s)),
            Lookup::Many(map) => Box::new(map.values()),
        }
    }

    pub fn len(&self) -> usize {
        match &self.lookup {
            Lookup::Few(entries) => entries.len(),
            Lookup::Many(map) => map.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tells each body budget the Webhooks of this table share how many share it (see
    /// `budget`): done as the table is served.
    pub fn share_budgets(&self) {
        let mut budgets: Vec<(&Arc<BodyBudget>, usize)> = Vec::new();
        for state in self.states() {
            match budgets
                .iter_mut()
                .find(|(b, _)| Arc::ptr_eq(b, &state.budget))
            {
                Some((_, n)) => *n += 1,
                None => budgets.push((&state.budget, 1)),
            }
        }
        for (budget, webhooks) in budgets {
            budget.share_among(webhooks);
        }
    }

    /// Why `/readyz` does not answer 200, if it does.
    pub fn not_ready(&self) -> Option<&'static str> {
        match self.readiness {
            Readiness::NotYet => Some("no configuration applied yet\n"),
            Readiness::Applied => None,
            Readiness::SecretsLoaded => self
                .states()
                .any(|s| matches!(s.secrets.current(), SecretState::Unavailable(_)))
                .then_some("signing secret unavailable\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Provider, ReceiverConfig, SinksConfig, WebhookIdentity};
    use crate::sink::Sinks;

    fn state(name: &str, path: &str) -> Arc<AppState> {
        let config = ReceiverConfig {
            webhook: WebhookIdentity {
                name: name.into(),
                namespace: "ns".into(),
                uid: "u".into(),
            },
            listen: "127.0.0.1:0".parse().unwrap(),
            metrics_listen: "127.0.0.1:0".parse().unwrap(),
            path: path.into(),
            provider: Provider::Github,
            event_types: vec![],
            secret_files: vec![],
            sinks: SinksConfig::default(),
            generic_hmac: None,
            limits: Limits::default(),
        };
        Arc::new(AppState::new(config, Sinks::new(vec![])))
    }

    #[test]
    fn finds_entries_by_exact_path_few_or_many() {
        for n in [1, LINEAR, LINEAR + 1, 100] {
            let table = Table::new(
                (0..n).map(|i| state(&format!("w{i}"), &format!("/w{i}"))),
                Readiness::Applied,
            );
            assert_eq!(table.len(), n);
            for i in 0..n {
                let found = table.get(&format!("/w{i}")).unwrap();
                assert_eq!(found.config.webhook.name, format!("w{i}"));
            }
            assert!(table.get("/w0/").is_none());
            assert!(table.get("/nope").is_none());
            assert_eq!(table.states().count(), n);
        }
    }

    #[test]
    fn webhooks_of_one_budget_learn_how_many_share_it() {
        let shared = Arc::new(BodyBudget::new(100));
        let with = |name: &str, budget: &Arc<BodyBudget>| {
            let mut s = (*state(name, &format!("/{name}"))).clone();
            s.budget = budget.clone();
            Arc::new(s)
        };
        let own = Arc::new(BodyBudget::new(100));
        let table = Table::new(
            [with("a", &shared), with("b", &shared), with("c", &own)],
            Readiness::Applied,
        );
        assert_eq!((shared.per_webhook(), own.per_webhook()), (100, 100));
        table.share_budgets();
        assert_eq!((shared.per_webhook(), own.per_webhook()), (50, 100));
        Table::new([with("a", &shared)], Readiness::Applied).share_budgets();
        assert_eq!(shared.per_webhook(), 100);
    }

    #[test]
    fn readiness() {
        assert!(Table::empty().not_ready().is_some());
        assert!(Table::new([], Readiness::Applied).not_ready().is_none());
        // No secret files at all reads as "loaded, none" for this test's state; a missing
        // file makes a dedicated receiver unready.
        let missing = {
            let s = state("a", "/a");
            let mut config = (*s.config).clone();
            config.secret_files = vec!["/nonexistent/secret".into()];
            Arc::new(AppState::new(config, Sinks::new(vec![])))
        };
        assert!(Table::dedicated(missing.clone()).not_ready().is_some());
        assert!(
            Table::new([missing], Readiness::Applied)
                .not_ready()
                .is_none()
        );
    }
}
