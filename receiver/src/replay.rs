//! Recently recorded deliveries, so that a replayed or retried delivery is acknowledged
//! without being recorded twice. Keys are digests of what identifies a delivery (the MAC
//! that verified it, or the sender's delivery id). Pure: the clock is passed in.
//!
//! This is the fast path inside one receiver; the sinks make recording idempotent across
//! replicas and restarts (Event names are derived from the delivery).
//!
//! Two generations of keys rather than an ordered queue: a key goes into the current
//! generation; when that is full, it becomes the previous one and the old previous one is
//! forgotten at once. So the cache remembers at least the last `capacity / 2` keys and
//! never more than `capacity`, and recording one costs one hash-table insert, not an insert
//! plus the eviction of the oldest key (a second random memory access, which on the verify
//! path cost more than the lookup itself).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// A delivery's identity.
pub type Key = [u8; 32];

/// The first 128 bits of a key: as unique as the whole for any number of deliveries a
/// receiver sees, in half the memory.
type Short = u128;

fn short(key: &Key) -> Short {
    let mut first = [0u8; 16];
    first.copy_from_slice(&key[..16]);
    u128::from_le_bytes(first)
}

/// Keys are SHA-256 digests already, uniformly spread and not choosable by a sender without
/// the secret, so their low 64 bits serve as the hash; no second hash per lookup.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u128` keys (`write_u128` below); folds anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type Generation = HashMap<Short, i64, BuildHasherDefault<DigestHasher>>;

/// Keys recorded within the last `window_secs`; at least the last `capacity / 2` of them
/// and at most `capacity`.
#[derive(Debug)]
pub struct ReplayCache {
    window_secs: i64,
    generation_size: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    current: Generation,
    previous: Generation,
}

impl ReplayCache {
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        ReplayCache {
            window_secs,
            generation_size: (capacity / 2).max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Whether `key` was recorded within the window before `now`.
    pub fn seen(&self, key: &Key, now: i64) -> bool {
        let key = short(key);
        let inner = self.lock();
        inner
            .current
            .get(&key)
            .or_else(|| inner.previous.get(&key))
            .is_some_and(|at| now - at <= self.window_secs)
    }

    /// Remembers that `key` was recorded at `now`.
    pub fn remember(&self, key: Key, now: i64) {
        let mut inner = self.lock();
        if inner.current.len() >= self.generation_size {
            // The previous generation is forgotten; its table is kept for the next one.
            let Inner { current, previous } = &mut *inner;
            previous.clear();
            std::mem::swap(current, previous);
        }
        inner.current.insert(short(&key), now);
    }

    /// How many keys are remembered (a key remembered in both generations counts twice).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.current.len() + inner.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u32) -> Key {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_le_bytes());
        key
    }

    #[test]
    fn remembers_within_the_window_only() {
        let c = ReplayCache::new(300, 100);
        assert!(!c.seen(&k(1), 1000));
        c.remember(k(1), 1000);
        assert!(c.seen(&k(1), 1000));
        assert!(c.seen(&k(1), 1300));
        assert!(!c.seen(&k(1), 1301));
    }

    #[test]
    fn keeps_at_least_half_its_capacity_and_never_more_than_all_of_it() {
        let c = ReplayCache::new(300, 100);
        for n in 0..1000 {
            c.remember(k(n), 1000);
            assert!(c.len() <= 100, "{} keys after {n}", c.len());
            // The last 50 are always remembered.
            for recent in n.saturating_sub(49)..=n {
                assert!(c.seen(&k(recent), 1000), "{recent} forgotten after {n}");
            }
        }
        assert!(!c.seen(&k(0), 1000));
        assert!(!c.seen(&k(899), 1000));
    }

    #[test]
    fn keys_differing_past_their_first_half_are_one_key() {
        // Documents the 128-bit identity: only the first 16 bytes of a digest count.
        let c = ReplayCache::new(300, 100);
        let mut a = k(7);
        c.remember(a, 1000);
        a[31] = 0xff;
        assert!(c.seen(&a, 1000));
        let mut b = k(7);
        b[15] = 0xff;
        assert!(!c.seen(&b, 1000));
    }
}
