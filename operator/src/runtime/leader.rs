//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas are safe: only
//! the holder reconciles; the other waits and takes over within the lease duration.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tracing::info;

use crate::error::Result;

/// How long a Lease is held without renewal before another replica may take it.
pub const LEASE_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
pub const GRACE_SECONDS: u64 = 5;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
}

/// Joins the election. The receiver reports `true` while this replica leads; dropping it
/// releases the Lease.
pub async fn join(client: Client, config: &LeaseConfig) -> Result<watch::Receiver<bool>> {
    let manager = LeaseManagerBuilder::new(client, &config.name)
        .with_namespace(&config.namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(GRACE_SECONDS)
        .build()
        .await?;
    let (channel, _task) = manager.watch().await;
    info!(lease = %config.name, namespace = %config.namespace, identity = %config.identity, "joined leader election");
    Ok(channel)
}

/// Waits until this replica leads. Returns `false` if the election ended first.
pub async fn until_leading(channel: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *channel.borrow_and_update() {
            return true;
        }
        if channel.changed().await.is_err() {
            return false;
        }
    }
}

/// Completes when this replica stops leading.
pub async fn until_lost(mut channel: watch::Receiver<bool>) {
    loop {
        if channel.changed().await.is_err() || !*channel.borrow_and_update() {
            return;
        }
    }
}

/// How a term of [`lead`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// Shutdown was asked for (before or while leading).
    Shutdown,
    /// The Lease was lost while leading: the process should exit, so that a fresh replica
    /// rejoins the election.
    Lost,
    /// The election ended before this replica could lead.
    NeverLed,
}

/// Runs `work` while this replica leads, per `channel` (see [`join`]): waits to lead, then
/// starts `work` with a future that completes when leading ends (the Lease lost, or
/// `shutdown`), and waits for `work` to finish. `leading` is 1 meanwhile. Dropping the
/// channel afterwards releases the Lease, so that another replica takes over at once.
pub async fn lead<W, F>(
    mut channel: watch::Receiver<bool>,
    leading: &Gauge,
    work: W,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Term
where
    W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> F,
    F: Future<Output = ()>,
{
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    tokio::select! {
        led = until_leading(&mut channel) => {
            if !led {
                return Term::NeverLed;
            }
        }
        _ = shutdown.clone() => return Term::Shutdown,
    }
    info!("leading: starting the controller");
    leading.set(1);
    let lost = Arc::new(AtomicBool::new(false));
    let stop = {
        let (lost, channel, shutdown) = (lost.clone(), channel.clone(), shutdown.clone());
        async move {
            tokio::select! {
                _ = until_lost(channel) => lost.store(true, Ordering::Relaxed),
                _ = shutdown => {}
            }
        }
    };
    work(Box::pin(stop)).await;
    leading.set(0);
    drop(channel);
    if lost.load(Ordering::Relaxed) {
        Term::Lost
    } else {
        Term::Shutdown
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// What `work` saw: whether it ran, and whether its stop future completed.
    async fn term_of(
        channel: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (Term, bool) {
        watched_term_of(channel, shutdown, Arc::default()).await
    }

    async fn watched_term_of(
        channel: watch::Receiver<bool>,
        shutdown: impl Future<Output = ()> + Send + 'static,
        ran: Arc<AtomicBool>,
    ) -> (Term, bool) {
        let gauge = Gauge::default();
        let flag = ran.clone();
        let term = lead(
            channel,
            &gauge,
            |stop| async move {
                flag.store(true, Ordering::Relaxed);
                stop.await;
            },
            shutdown,
        )
        .await;
        assert_eq!(gauge.get(), 0, "the leader gauge is reset after a term");
        (term, ran.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn works_only_while_leading_and_reports_a_lost_lease() {
        let (tx, rx) = watch::channel(false);
        let ran = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(watched_term_of(rx, std::future::pending(), ran.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!ran.load(Ordering::Relaxed), "worked before leading");
        assert!(!task.is_finished(), "ended before leading");
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(ran.load(Ordering::Relaxed), "leads but does not work");
        assert!(!task.is_finished(), "stopped while still leading");
        tx.send(false).unwrap();
        assert_eq!(task.await.unwrap(), (Term::Lost, true));
    }

    #[tokio::test]
    async fn shutdown_stops_the_work_and_is_not_a_loss() {
        let (tx, rx) = watch::channel(true);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(term_of(rx, async move {
            let _ = stop_rx.await;
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop_tx.send(()).unwrap();
        assert_eq!(task.await.unwrap(), (Term::Shutdown, true));
        drop(tx);
    }

    #[tokio::test]
    async fn shutdown_before_leading_starts_nothing() {
        let (_tx, rx) = watch::channel(false);
        assert_eq!(term_of(rx, async {}).await, (Term::Shutdown, false));
    }

    #[tokio::test]
    async fn an_election_that_ends_first_is_never_led() {
        let (tx, rx) = watch::channel(false);
        drop(tx);
        assert_eq!(
            term_of(rx, std::future::pending()).await,
            (Term::NeverLed, false)
        );
    }
}
