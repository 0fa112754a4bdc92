//! A Webhook's rate limit in one receiver pod (`limits.rateLimit`): a token bucket
//! (governor's GCRA) of `requestsPerSecond`, holding `burst`. A delivery past it is
//! answered 429 with `Retry-After`: the wait the bucket reports, in whole seconds, at least
//! one.
//!
//! The bucket reads tokio's clock, so that tests run it on paused time.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::config::RateLimit;

/// tokio's clock, as governor reads one: the time since the bucket was made.
#[derive(Debug, Clone)]
struct TokioClock(tokio::time::Instant);

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.elapsed())
    }
}

/// The token bucket of one Webhook.
#[derive(Debug)]
pub struct Bucket {
    limiter: RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>,
    clock: TokioClock,
}

impl Bucket {
    /// The bucket of `limit`; `None` where a rate or burst of 0 leaves nothing to limit
    /// with (the configuration's check refuses both).
    pub fn new(limit: &RateLimit) -> Option<Bucket> {
        let rate = NonZeroU32::new(limit.requests_per_second)?;
        let burst = NonZeroU32::new(limit.burst)?;
        let clock = TokioClock(tokio::time::Instant::now());
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(Bucket {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        })
    }

    /// Takes a token for one delivery; or how many whole seconds (at least one) until the
    /// next one.
    pub fn take(&self) -> Result<(), u64> {
        self.limiter
            .check()
            .map_err(|not_until| retry_after(not_until.wait_time_from(self.clock.now())))
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least one.
fn retry_after(wait: Duration) -> u64 {
    let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    whole.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(requests_per_second: u32, burst: u32) -> Bucket {
        Bucket::new(&RateLimit {
            requests_per_second,
            burst,
        })
        .unwrap()
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after(Duration::ZERO), 1);
        assert_eq!(retry_after(Duration::from_millis(1)), 1);
        assert_eq!(retry_after(Duration::from_secs(1)), 1);
        assert_eq!(retry_after(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after(Duration::from_secs(60)), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let b = bucket(2, 3);
        for _ in 0..3 {
            assert_eq!(b.take(), Ok(()));
        }
        // Empty: a token comes back every half second.
        assert_eq!(b.take(), Err(1));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.take(), Ok(()));
        assert_eq!(b.take(), Err(1));
        // Refused takes cost nothing; after a while, the whole burst again, and no more.
        tokio::time::advance(Duration::from_secs(10)).await;
        for _ in 0..3 {
            assert_eq!(b.take(), Ok(()));
        }
        assert!(b.take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_delivery_waits_until_the_next_token() {
        // At one or more a second, the next token is less than a second away: 1 s.
        let b = bucket(1, 1);
        assert_eq!(b.take(), Ok(()));
        assert_eq!(b.take(), Err(1));
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_eq!(b.take(), Err(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.take(), Ok(()));
    }

    #[test]
    fn a_zero_rate_or_burst_makes_no_bucket() {
        let none = |rps, burst| {
            Bucket::new(&RateLimit {
                requests_per_second: rps,
                burst,
            })
            .is_none()
        };
        assert!(none(0, 1) && none(1, 0));
        assert!(!none(1, 1));
    }
}
