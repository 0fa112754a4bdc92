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
//! never more than `capacity`, and recording one costs one insert, not an insert plus the
//! eviction of the oldest key.
//!
//! Each generation is an open-addressing table whose slots hold the key itself (no
//! separate control bytes), kept at most half full: a lookup reads one cache line, and
//! recording a key after looking it up writes that same line. On the verify path a full
//! cache is megabytes of randomly accessed memory, so what a delivery costs here is the
//! number of cache lines it touches: two (a lookup in each generation), where a general
//! hash map touches four.

use std::sync::Mutex;

/// A delivery's identity.
pub type Key = [u8; 32];

/// What a generation keeps of a key: its first 64 bits (`id`, with the lowest bit set so
/// that 0 marks an empty slot), which also place it in the table, the next 32 bits
/// (`check`), and when it was recorded, in Unix seconds (`at`): `[id, check << 32 | at]`.
/// 95 bits of a SHA-256 digest are as unique as the whole for any number of deliveries a
/// receiver sees. Keys are digests already, uniformly spread and not choosable by a sender
/// without the secret, so they need no further hashing.
type Slot = [u64; 2];

const EMPTY: Slot = [0, 0];

#[derive(Clone, Copy, PartialEq, Eq)]
struct Short {
    id: u64,
    check: u32,
}

fn short(key: &Key) -> Short {
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[..8]);
    let mut check = [0u8; 4];
    check.copy_from_slice(&key[8..12]);
    Short {
        id: u64::from_le_bytes(id) | 1,
        check: u32::from_le_bytes(check),
    }
}

/// Seconds as stored: Unix time fits 32 bits until 2106.
fn stored_time(now: i64) -> u32 {
    now.clamp(0, i64::from(u32::MAX)) as u32
}

/// One generation: a linear-probing table, grown by doubling, never more than half full.
struct Generation {
    slots: Box<[Slot]>,
    len: usize,
}

/// Where a key is in a generation, or where it would go.
enum Probe {
    Found(usize),
    Vacant(usize),
}

impl Generation {
    fn with_slots(n: usize) -> Self {
        Generation {
            // All zeros: allocated zeroed, so untouched pages cost no memory.
            slots: vec![EMPTY; n].into_boxed_slice(),
            len: 0,
        }
    }

    fn probe(&self, key: Short) -> Probe {
        let mask = self.slots.len() - 1;
        let mut i = (key.id >> 1) as usize & mask;
        // Ends: at most half of the slots are taken.
        loop {
            let [id, rest] = self.slots[i];
            if id == 0 {
                return Probe::Vacant(i);
            }
            if id == key.id && (rest >> 32) as u32 == key.check {
                return Probe::Found(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// When `key` was recorded in this generation, if it was.
    fn get(&self, key: Short) -> Option<u32> {
        match self.probe(key) {
            Probe::Found(i) => Some(self.slots[i][1] as u32),
            Probe::Vacant(_) => None,
        }
    }

    fn insert(&mut self, key: Short, at: u32) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let slot = [key.id, u64::from(key.check) << 32 | u64::from(at)];
        match self.probe(key) {
            Probe::Found(i) => self.slots[i] = slot,
            Probe::Vacant(i) => {
                self.slots[i] = slot;
                self.len += 1;
            }
        }
    }

    fn grow(&mut self) {
        let old = std::mem::replace(self, Generation::with_slots(self.slots.len() * 2));
        for slot in old.slots.iter().filter(|s| s[0] != 0) {
            if let Probe::Vacant(i) = self.probe(Short {
                id: slot[0],
                check: (slot[1] >> 32) as u32,
            }) {
                self.slots[i] = *slot;
                self.len += 1;
            }
        }
    }

    /// Forgets every key; keeps the table's size for the next generation.
    fn clear(&mut self) {
        if self.len > 0 {
            self.slots.fill(EMPTY);
            self.len = 0;
        }
    }
}

/// Keys recorded within the last `window_secs`; at least the last `capacity / 2` of them
/// and at most `capacity`.
pub struct ReplayCache {
    window_secs: i64,
    generation_size: usize,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayCache")
            .field("window_secs", &self.window_secs)
            .field("generation_size", &self.generation_size)
            .field("len", &self.len())
            .finish()
    }
}

struct Inner {
    current: Generation,
    previous: Generation,
}

/// The slots a generation starts with; it grows as keys arrive.
const INITIAL_SLOTS: usize = 1024;

impl ReplayCache {
    pub fn new(window_secs: i64, capacity: usize) -> Self {
        let generation_size = (capacity / 2).max(1);
        let slots = INITIAL_SLOTS.min((generation_size * 2).next_power_of_two());
        ReplayCache {
            window_secs,
            generation_size,
            inner: Mutex::new(Inner {
                current: Generation::with_slots(slots),
                previous: Generation::with_slots(slots),
            }),
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
            .get(key)
            .or_else(|| inner.previous.get(key))
            .is_some_and(|at| now - i64::from(at) <= self.window_secs)
    }

    /// Remembers that `key` was recorded at `now`.
    pub fn remember(&self, key: Key, now: i64) {
        let mut inner = self.lock();
        if inner.current.len >= self.generation_size {
            // The previous generation is forgotten; its table is kept for the next one.
            let Inner { current, previous } = &mut *inner;
            previous.clear();
            std::mem::swap(current, previous);
        }
        inner.current.insert(short(&key), stored_time(now));
    }

    /// How many keys are remembered (a key remembered in both generations counts twice).
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.current.len + inner.previous.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key as the receiver makes them: a SHA-256 digest.
    fn k(n: u32) -> Key {
        use sha2::{Digest, Sha256};
        Sha256::digest(n.to_le_bytes()).into()
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
    fn keys_differing_past_their_first_12_bytes_are_one_key() {
        // Documents the 95-bit identity: the first 12 bytes of a digest count, but for the
        // lowest bit.
        let c = ReplayCache::new(300, 100);
        let mut a = k(7);
        c.remember(a, 1000);
        a[31] = 0xff;
        assert!(c.seen(&a, 1000));
        let mut lowest = k(7);
        lowest[0] ^= 1;
        assert!(c.seen(&lowest, 1000));
        for byte in 0..12 {
            let mut b = k(7);
            b[byte] ^= 0x80;
            assert!(!c.seen(&b, 1000), "byte {byte}");
        }
    }

    #[test]
    fn a_generation_grows_and_keeps_every_key() {
        let c = ReplayCache::new(300, 40_000);
        for n in 0..10_000 {
            c.remember(k(n), 1000 + i64::from(n % 7));
        }
        assert_eq!(c.len(), 10_000);
        for n in 0..10_000 {
            assert!(c.seen(&k(n), 1300), "{n}");
        }
        assert!(!c.seen(&k(10_000), 1000));
        // Remembering a key again refreshes its time, without a second entry.
        c.remember(k(3), 2000);
        assert_eq!(c.len(), 10_000);
        assert!(c.seen(&k(3), 2300));
        assert!(!c.seen(&k(4), 2300));
    }
}
