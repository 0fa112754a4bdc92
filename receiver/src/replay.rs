//! Recently recorded deliveries, so that a replayed or retried delivery is acknowledged
//! without being recorded twice. Keys are digests of what identifies a delivery (its
//! signature headers and body, or the sender's delivery id). Pure: the clock is passed in.
//!
//! This is the fast path inside one receiver; the sinks make recording idempotent across
//! replicas and restarts (Event names are derived from the delivery).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

/// A delivery's identity.
pub type Key = [u8; 32];

/// Keys recorded within the last `window_secs`, at most `capacity` of them.
#[derive(Debug)]
pub struct ReplayCache {
    window_secs: i64,
    capacity: usize,
    inner: Mutex<Inner>,
}

/// Keys are SHA-256 digests already, uniformly spread and not choosable by a sender without
/// the secret, so their first eight bytes serve as the hash; no second hash per lookup.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]` hashes as one write of its bytes (arrays hash their slice, and the
        // length prefix of slices is written with `write_usize`, below).
        let mut first = [0u8; 8];
        let n = bytes.len().min(8);
        first[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(first);
    }

    fn write_usize(&mut self, _: usize) {}
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashMap<Key, i64, BuildHasherDefault<DigestHasher>>,
    order: VecDeque<(i64, Key)>,
}

impl ReplayCache {
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        ReplayCache {
            window_secs,
            capacity,
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
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        inner.seen.contains_key(key)
    }

    /// Remembers that `key` was recorded at `now`.
    pub fn remember(&self, key: Key, now: i64) {
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if inner.seen.insert(key, now).is_none() {
            inner.order.push_back((now, key));
        }
        while inner.order.len() > self.capacity {
            if let Some((_, old)) = inner.order.pop_front() {
                inner.seen.remove(&old);
            }
        }
    }

    fn expire(&self, inner: &mut Inner, now: i64) {
        while let Some((at, key)) = inner.order.front().copied() {
            if now - at <= self.window_secs {
                break;
            }
            inner.order.pop_front();
            inner.seen.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(n: u8) -> Key {
        [n; 32]
    }

    #[test]
    fn remembers_within_the_window_only() {
        let c = ReplayCache::new(300, 100);
        assert!(!c.seen(&k(1), 1000));
        c.remember(k(1), 1000);
        assert!(c.seen(&k(1), 1000));
        assert!(c.seen(&k(1), 1300));
        assert!(!c.seen(&k(1), 1301));
        assert!(c.is_empty());
    }

    #[test]
    fn is_bounded() {
        let c = ReplayCache::new(300, 3);
        for n in 0..5 {
            c.remember(k(n), 1000);
        }
        assert_eq!(c.len(), 3);
        assert!(!c.seen(&k(0), 1000));
        assert!(c.seen(&k(4), 1000));
    }
}
