//! Every controller of the operator, started from one place: per scope (all namespaces, or
//! each watched one, with its own watches so that the operator needs rights there only),
//! the Webhook controller (`webhook`), the ReceiverPool controller (`pool`) and the
//! cleanup of the previous release's sidecar containers (`migrate`). The pod admission
//! webhook (`admission`) and leader election (`runtime::leader`) are started by `main`.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use kube::Client;
use tracing::info;

use crate::runtime::metrics::Metrics;
use crate::webhook::controller::Config;
use crate::{migrate, pool, webhook};

/// Runs every controller until `shutdown` completes.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|ns| {
        let webhooks = webhook::controller::run_scope(
            client.clone(),
            config.clone(),
            metrics.clone(),
            ns.clone(),
            shutdown.clone(),
        );
        let pools = pool::controller::run_scope(
            client.clone(),
            config.receiver.clone(),
            ns.clone(),
            shutdown.clone(),
        );
        let cleanup = migrate::run_scope(client.clone(), ns, shutdown.clone());
        futures::future::join3(webhooks, pools, cleanup)
    });
    futures::future::join_all(runs).await;
    info!("controllers stopped");
}
