//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas are safe: only
//! the holder reconciles; the other waits and takes over within the lease duration.

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
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
