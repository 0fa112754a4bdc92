//! The header read timeout, kept per connection rather than per request.
//!
//! A client must send a request's headers within [`HEADER_READ_TIMEOUT`] of connecting or of
//! its previous answer, or its connection is closed: a slow client cannot hold a connection
//! forever. hyper can enforce that itself (`header_read_timeout`), but it arms and disarms a
//! timer for every request, which cost the receiver about 6 % of its throughput on the
//! verify path (`make bench`). Here a connection has a watchdog that looks at it four times
//! per timeout period, and a request only counts itself in and out: two atomic additions,
//! no clock. The watchdog notices an answer at its next look, so a connection is closed
//! between the timeout and a quarter more after its last answer (or its opening).
//!
//! Two more things of a connection a delivery needs: how long its body may pause
//! ([`BODY_STALL_TIMEOUT`], kept by the delivery as it reads the body), and the peer's
//! address ([`PeerAddr`], put into each request's extensions by `server::serve_on`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A client must send its request headers within this time, or the connection is closed.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// A delivery whose body sends nothing for this long (no frame, from its headers or the
/// frame before) is answered 408 (outcome `body_stalled`) and its connection closed: a
/// sender that stalls mid-body holds its place among the deliveries in flight and its
/// bytes of the body budget for seconds, not for the whole `limits.requestTimeoutSeconds`.
/// A sender's body arrives in one go, or frames close together; three seconds of silence
/// is a connection lost or held on purpose.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The address of the connection a request came on: the sender's, or the last proxy's.
/// A request without it (one made in a test, not read from a connection) has an unknown
/// source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// What a connection is doing, as its requests report it: the requests being handled (low
/// 32 bits) and how many were answered (high 32 bits, wrapping), in one word.
#[derive(Debug, Default)]
pub struct Activity(AtomicU64);

const ANSWERED: u64 = 1 << 32;
const IN_FLIGHT: u64 = ANSWERED - 1;

impl Activity {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Marks a request as being handled until the returned guard is dropped.
    pub fn request(self: &Arc<Self>) -> Busy {
        self.0.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }

    fn now(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// A request in flight on a connection; dropped when it is answered.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        // One fewer in flight, one more answered.
        self.0.0.fetch_add(ANSWERED - 1, Ordering::Release);
    }
}

/// Completes once the connection has waited longer than `limit` for a request's headers: no
/// request in flight, and none answered, for `limit`. It looks every quarter of `limit`, so
/// it completes between `limit` and `limit * 5 / 4` after the last answer, and exactly
/// `limit` after the start on a connection that never sent a request.
pub async fn idle_expired(activity: &Activity, limit: Duration) {
    let look = limit / 4;
    let mut quiet_since = Instant::now();
    let mut last = activity.now();
    let mut at = quiet_since + look;
    loop {
        tokio::time::sleep_until(at).await;
        let now = activity.now();
        if now != last || now & IN_FLIGHT > 0 {
            quiet_since = at;
            last = now;
        } else if at - quiet_since >= limit {
            return;
        }
        at += look;
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
