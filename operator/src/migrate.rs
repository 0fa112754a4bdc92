//! A controller over application Deployments that the previous release added a receiver
//! container to (label `hookwarden.io/sidecar`): it takes every such container out, once,
//! since receivers are now injected into pods at admission and a Deployment is never
//! written.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::runtime::{names, scoped};
use crate::webhook::children;

/// How soon a failed cleanup is tried again.
const RETRY: Duration = Duration::from_secs(10);

/// Runs the cleanup of one scope until `shutdown`. Its listing at start finds every
/// labelled Deployment.
pub async fn run_scope(
    client: Client,
    ns: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let deployments: Api<Deployment> = scoped(&client, ns.as_deref());
    let labelled = watcher::Config::default().labels(names::SIDECAR_LABEL);
    Controller::new(deployments, labelled)
        .graceful_shutdown_on(shutdown)
        .run(
            clean_deployment,
            |_, error: &Error, _| {
                warn!(%error, "sidecar cleanup failed; retrying");
                Action::requeue(RETRY)
            },
            Arc::new(client),
        )
        .for_each(|_| async {})
        .await;
}

async fn clean_deployment(deployment: Arc<Deployment>, client: Arc<Client>) -> Result<Action> {
    let namespace = deployment
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = deployment.name_any();
    for webhook in names::sidecar_managers(&deployment) {
        remove_sidecar_of(&client, &webhook, &namespace, &name).await?;
    }
    Ok(Action::await_change())
}

/// Takes what the Webhook named `webhook` added out of `deployment` (nothing when the
/// Deployment is gone): applying an empty configuration under its field manager removes
/// the fields only that manager owned.
async fn remove_sidecar_of(
    client: &Client,
    webhook: &str,
    namespace: &str,
    deployment: &str,
) -> Result<()> {
    let apps: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    if apps.get_opt(deployment).await?.is_none() {
        return Ok(());
    }
    info!(
        webhook,
        namespace, deployment, "removing the receiver sidecar"
    );
    let params = PatchParams::apply(&names::sidecar_field_manager(webhook)).force();
    let removal = children::sidecar_removal(namespace, deployment);
    match apps
        .patch(deployment, &params, &Patch::Apply(&removal))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
