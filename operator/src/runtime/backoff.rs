//! How soon a failed reconcile is tried again, the same for every controller: 5 s after the
//! first failure of a streak, doubling to 5 minutes ([`delay`], pure), and each object's
//! streak of failures ([`Streaks`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::ObjectRef;

/// The first retry.
const FIRST: Duration = Duration::from_secs(5);
/// The longest wait.
const LONGEST: Duration = Duration::from_secs(300);

/// The wait before retrying after the `attempt`th consecutive failure (1 for the first).
pub fn delay(attempt: u32) -> Duration {
    let doublings = attempt.clamp(1, 7) - 1;
    FIRST.saturating_mul(1 << doublings).min(LONGEST)
}

/// Consecutive failed reconciles per object: counted by the error policy, ended by a
/// success.
pub struct Streaks<K: Resource>(Mutex<HashMap<ObjectRef<K>, u32>>)
where
    K::DynamicType: Eq + std::hash::Hash + Clone;

impl<K: Resource> Default for Streaks<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    fn default() -> Self {
        Streaks(Mutex::default())
    }
}

impl<K: Resource> Streaks<K>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    /// Marks `key` as failing; whether this began its streak (it was not failing before).
    pub fn begin(&self, key: ObjectRef<K>) -> bool {
        self.0.lock().map_or(true, |mut streaks| {
            let first = !streaks.contains_key(&key);
            streaks.entry(key).or_insert(0);
            first
        })
    }

    /// Counts one more failure of `key`; how many in a row now (1 for the first).
    pub fn fail(&self, key: ObjectRef<K>) -> u32 {
        self.0.lock().map_or(1, |mut streaks| {
            let n = streaks.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
    }

    /// Ends `key`'s streak: it succeeded.
    pub fn end(&self, key: &ObjectRef<K>) {
        if let Ok(mut streaks) = self.0.lock() {
            streaks.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_seconds_doubling_to_five_minutes() {
        let waits: Vec<u64> = (0..=9).map(|n| delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(delay(u32::MAX), LONGEST);
    }

    #[test]
    fn a_streak_counts_until_a_success() {
        use k8s_openapi::api::core::v1::ConfigMap;
        let streaks = Streaks::<ConfigMap>::default();
        let key = || ObjectRef::new("a").within("ns");
        assert!(streaks.begin(key()));
        assert!(!streaks.begin(key()), "already failing");
        assert_eq!((streaks.fail(key()), streaks.fail(key())), (1, 2));
        streaks.end(&key());
        assert_eq!(streaks.fail(key()), 1, "a success ends the streak");
    }
}
