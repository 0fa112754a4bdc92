//! Retrying a write until it succeeds, fails for good, or the delivery's deadline passes.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::delivery::RecordError;

/// Whether an API error may go away by itself.
fn transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        // Connection refused, reset, timeouts, TLS hiccups while the API server restarts.
        _ => true,
    }
}

/// Why one attempt to record failed.
#[derive(Debug)]
pub enum Failure {
    /// May go away by itself (unreachable, overloaded, 5xx): try again within the budget.
    Transient(String),
    /// Another writer wrote first (409 on an optimistic write): try again at once, reading
    /// afresh; waiting would only let the other writer get further ahead.
    Conflict(String),
    /// Will not: give up now.
    Final(RecordError),
}

/// Runs `op` until it succeeds, fails for good, or `deadline` passes, backing off from
/// 100 ms to 1 s between attempts after a transient failure (backon's exponential
/// back-off; no retry that would start past the deadline), at once after a conflict.
pub async fn retry_until<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T, RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .without_max_times();
    let attempt = || {
        let attempt = op();
        async move {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Failure::Final(RecordError::Unavailable(
                    "deadline passed".into(),
                )));
            }
            tokio::time::timeout(remaining, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Final(RecordError::Unavailable("timed out".into())))
                })
        }
    };
    let outcome = attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|failure| matches!(failure, Failure::Transient(_) | Failure::Conflict(_)))
        .adjust(|failure, delay| match failure {
            Failure::Conflict(_) => Some(Duration::ZERO),
            _ => delay.filter(|d| Instant::now() + *d < deadline),
        })
        .notify(|failure, _| tracing::debug!(reason = ?failure, "write failed; retrying"))
        .await;
    match outcome {
        Ok(done) => Ok(done),
        Err(Failure::Final(e)) => Err(e),
        Err(Failure::Transient(last) | Failure::Conflict(last)) => {
            Err(RecordError::Unavailable(last))
        }
    }
}

/// [`retry_until`] for a Kubernetes API call: 429, 5xx and connection errors are transient.
pub async fn with_retry<T, F, Fut>(deadline: Instant, mut op: F) -> Result<T, RecordError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    retry_until(deadline, || {
        let attempt = op();
        async move {
            attempt.await.map_err(|e| {
                if transient(&e) {
                    Failure::Transient(short(&e))
                } else {
                    Failure::Final(RecordError::Refused(short(&e)))
                }
            })
        }
    })
    .await
}

fn short(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} {}", s.code, s.reason),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::RecordError;

    #[tokio::test]
    async fn retries_transient_errors_until_the_deadline() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let unavailable = || {
            kube::Error::Api(Box::new(kube::core::Status {
                code: 503,
                reason: "ServiceUnavailable".into(),
                ..Default::default()
            }))
        };
        let deadline = Instant::now() + Duration::from_millis(700);
        let r: Result<(), _> = with_retry(deadline, || {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Err(unavailable()) }
        })
        .await;
        assert!(matches!(r, Err(RecordError::Unavailable(_))), "{r:?}");
        assert!(calls.load(std::sync::atomic::Ordering::Relaxed) >= 3);
        // then it recovers
        let n = std::sync::atomic::AtomicUsize::new(0);
        let r = with_retry(Instant::now() + Duration::from_secs(5), || {
            let k = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { if k < 2 { Err(unavailable()) } else { Ok(()) } }
        })
        .await;
        assert_eq!(r, Ok(()));
        // a refusal is final
        let r: Result<(), _> = with_retry(Instant::now() + Duration::from_secs(5), || async {
            Err(kube::Error::Api(Box::new(kube::core::Status {
                code: 403,
                reason: "Forbidden".into(),
                ..Default::default()
            })))
        })
        .await;
        assert!(matches!(r, Err(RecordError::Refused(m)) if m.contains("403")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_is_tried_again_at_once() {
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let started = Instant::now();
        let r = retry_until(started + Duration::from_secs(5), || {
            let k = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if k < 5 {
                    Err(Failure::Conflict("409".into()))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 6);
        // (the clock is paused: any back-off would show as time passed)
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
