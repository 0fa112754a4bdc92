//! The header read timeout, kept per connection rather than per request.
//!
//! A client must send a request's headers within [`HEADER_READ_TIMEOUT`] of connecting or of
//! its previous answer, or its connection is closed: a slow client cannot hold a connection
//! forever. hyper can enforce that itself (`header_read_timeout`), but it arms and disarms a
//! timer for every request, which cost the receiver about 6 % of its throughput on the
//! verify path (`make bench`). Here a connection has one timer, which wakes at most a few
//! times per timeout period, and a request only stamps the time it was answered. The time
//! runs from the answer being ready, a moment before hyper writes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A client must send its request headers within this time, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What a connection is doing, as its requests report it.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// Requests being handled.
    busy: AtomicU32,
    /// When the last request was answered (or the connection opened), in milliseconds
    /// since `opened`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            opened: Instant::now(),
            busy: AtomicU32::new(0),
            idle_since_ms: AtomicU64::new(0),
        })
    }

    /// Marks a request as being handled until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn idle_since(&self) -> Instant {
        self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Relaxed))
    }
}

/// A request in flight on a connection; dropped when it is answered.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = a.opened.elapsed().as_millis() as u64;
        a.idle_since_ms.store(ms, Ordering::Relaxed);
        a.busy.fetch_sub(1, Ordering::Release);
    }
}

/// Completes once the connection has waited longer than `limit` for a request's headers:
/// no request in flight, and none answered within `limit`. While a request is in flight it
/// looks again every quarter of `limit`; once none is, it sleeps until `limit` after the
/// last answer, so an idle connection is closed `limit` after it (to the millisecond).
pub async fn idle_expired(activity: &Activity, limit: Duration) {
    let mut at = activity.idle_since() + limit;
    loop {
        tokio::time::sleep_until(at).await;
        if activity.busy.load(Ordering::Acquire) > 0 {
            at = Instant::now() + limit / 4;
            continue;
        }
        let deadline = activity.idle_since() + limit;
        if deadline <= Instant::now() {
            return;
        }
        at = deadline;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_expires_after_the_limit() {
        let a = Activity::new();
        let started = Instant::now();
        idle_expired(&a, HEADER_READ_TIMEOUT).await;
        assert_eq!(started.elapsed(), HEADER_READ_TIMEOUT);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_and_requests_in_flight_keep_it_open() {
        let a = Activity::new();
        let limit = Duration::from_secs(4);
        let started = Instant::now();
        let traffic = {
            let a = a.clone();
            async move {
                // An answer at 3 s, then a request handled from 6 s to 11 s.
                tokio::time::sleep(Duration::from_secs(3)).await;
                drop(a.request());
                tokio::time::sleep(Duration::from_secs(3)).await;
                let busy = a.request();
                tokio::time::sleep(Duration::from_secs(5)).await;
                drop(busy);
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            () = idle_expired(&a, limit) => {}
            () = traffic => unreachable!(),
        }
        // Answered at 11 s; expired between 15 s and 16 s.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(15) && took <= Duration::from_secs(16),
            "{took:?}"
        );
    }
}
