//! The pod's budget of body bytes in flight: what the deliveries being read and handled
//! may hold in memory at once, over every Webhook the pod serves.
//!
//! A delivery reserves, before a byte of its body is read, as many bytes as it may hold:
//! its Content-Length (already no more than `limits.maxBodyBytes`), or
//! `limits.maxBodyBytes` when it did not say. The reservation is taken without waiting
//! and given back when the delivery is answered ([`Reservation`] is a guard). Past the
//! budget the delivery is answered 503 with `Retry-After: 1` (outcome `body_budget`).
//!
//! So that one Webhook of a pool cannot take the whole budget from its neighbours, a
//! Webhook holds at most half of it while the pod serves more than one ([`Share`]); a
//! dedicated receiver's one Webhook may hold it all.
//!
//! The budget is a quarter of the container's memory limit (`--memory-limit-bytes`, as the
//! downward API gives `limits.memory`), or [`DEFAULT_BODY_BUDGET`] without one, or what
//! `--body-budget-bytes` says ([`budget_bytes`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// The budget of a receiver that knows neither its memory limit nor a budget of its own.
pub const DEFAULT_BODY_BUDGET: u64 = 32 * 1024 * 1024;

/// The budget a receiver takes: `body_budget` where given; else a quarter of
/// `memory_limit`, the container's (the rest is for the process, the secrets, the replay
/// memory and the copies a delivery makes on its way); else [`DEFAULT_BODY_BUDGET`].
pub fn budget_bytes(memory_limit: Option<u64>, body_budget: Option<u64>) -> u64 {
    body_budget
        .or(memory_limit.map(|limit| limit / 4))
        .unwrap_or(DEFAULT_BODY_BUDGET)
}

/// The bytes of bodies in flight, over every Webhook that shares it.
#[derive(Debug)]
pub struct BodyBudget {
    capacity: u64,
    used: AtomicU64,
    /// How many Webhooks share it (see [`BodyBudget::share_among`]).
    webhooks: AtomicUsize,
}

/// What one Webhook holds of a budget now.
#[derive(Debug, Default)]
pub struct Share(AtomicU64);

impl Share {
    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl BodyBudget {
    /// A budget of `capacity` bytes, for one Webhook until told otherwise.
    pub fn new(capacity: u64) -> Self {
        BodyBudget {
            capacity,
            used: AtomicU64::new(0),
            webhooks: AtomicUsize::new(1),
        }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved now, over every Webhook.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Tells the budget how many Webhooks share it: the pod's routing table, each time it
    /// is served (`Receiver::new`, `Receiver::swap`).
    pub fn share_among(&self, webhooks: usize) {
        self.webhooks.store(webhooks, Ordering::Relaxed);
    }

    /// The most one Webhook may hold: half the budget while it is shared, else all of it.
    pub fn per_webhook(&self) -> u64 {
        match self.webhooks.load(Ordering::Relaxed) > 1 {
            true => self.capacity / 2,
            false => self.capacity,
        }
    }

    /// Reserves `bytes` for a delivery to the Webhook whose share is `share`, if both the
    /// Webhook's part and the whole budget have room; given back when the reservation is
    /// dropped.
    pub fn try_reserve<'a>(&'a self, share: &'a Share, bytes: u64) -> Option<Reservation<'a>> {
        let cap = self.per_webhook();
        take(&share.0, bytes, cap)?;
        if take(&self.used, bytes, self.capacity).is_none() {
            share.0.fetch_sub(bytes, Ordering::AcqRel);
            return None;
        }
        Some(Reservation {
            budget: self,
            share,
            bytes,
        })
    }
}

/// Adds `bytes` to `counter` if the sum stays within `cap`.
fn take(counter: &AtomicU64, bytes: u64, cap: u64) -> Option<u64> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            held.checked_add(bytes).filter(|&sum| sum <= cap)
        })
        .ok()
}

/// Bytes of the budget a delivery holds until it is answered.
#[derive(Debug)]
pub struct Reservation<'a> {
    budget: &'a BodyBudget,
    share: &'a Share,
    bytes: u64,
}

impl Reservation<'_> {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        self.share.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_given_or_a_quarter_of_the_memory_limit_or_the_default() {
        assert_eq!(budget_bytes(None, None), DEFAULT_BODY_BUDGET);
        assert_eq!(budget_bytes(Some(512 << 20), None), 128 << 20);
        assert_eq!(budget_bytes(Some(512 << 20), Some(1000)), 1000);
        assert_eq!(budget_bytes(None, Some(1000)), 1000);
    }

    #[test]
    fn reservations_are_refused_past_the_budget_and_given_back_when_dropped() {
        let budget = BodyBudget::new(100);
        let share = Share::default();
        let a = budget.try_reserve(&share, 60).unwrap();
        assert!(budget.try_reserve(&share, 41).is_none());
        let b = budget.try_reserve(&share, 40).unwrap();
        assert_eq!((budget.in_use(), share.held()), (100, 100));
        assert!(budget.try_reserve(&share, 1).is_none());
        drop(a);
        assert_eq!((budget.in_use(), share.held()), (40, 40));
        assert_eq!(b.bytes(), 40);
        let c = budget.try_reserve(&share, 60).unwrap();
        drop((b, c));
        assert_eq!((budget.in_use(), share.held()), (0, 0));
        // Never more than the whole, however large the ask.
        assert!(budget.try_reserve(&share, u64::MAX).is_none());
        assert_eq!((budget.in_use(), share.held()), (0, 0));
    }

    #[test]
    fn a_webhook_that_shares_the_budget_holds_half_of_it_at_most() {
        let budget = BodyBudget::new(100);
        let (greedy, neighbour) = (Share::default(), Share::default());
        // Alone, all of it.
        let all = budget.try_reserve(&greedy, 100).unwrap();
        drop(all);
        budget.share_among(2);
        assert_eq!(budget.per_webhook(), 50);
        let half = budget.try_reserve(&greedy, 50).unwrap();
        assert!(budget.try_reserve(&greedy, 1).is_none());
        // What the greedy one cannot take stays for its neighbour, which is refused only
        // past its own half.
        let other = budget.try_reserve(&neighbour, 50).unwrap();
        assert!(budget.try_reserve(&neighbour, 1).is_none());
        // A refusal by the whole budget leaves the Webhook's part as it was.
        drop(half);
        budget.share_among(3);
        let third = Share::default();
        let some = budget.try_reserve(&third, 40).unwrap();
        assert!(budget.try_reserve(&greedy, 20).is_none());
        assert_eq!(greedy.held(), 0);
        drop((other, some));
        assert_eq!(budget.in_use(), 0);
        budget.share_among(1);
        assert_eq!(budget.per_webhook(), 100);
    }
}
