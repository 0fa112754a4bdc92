//! The replica's part in the election, as tasks that run as long as the process: standing
//! for the Lease (kube-lease-manager), following who holds it, and following which pods
//! of the Deployment's Service are ready, and where.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::{oneshot, watch};

use super::holder::{Identity, Term, ready_pods, slice_selector};

/// How long the Lease is held without renewal before another replica may take it.
pub const LEASE_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
pub const GRACE_SECONDS: u64 = 5;
/// How long to wait before standing again when the Lease cannot be used (not created yet
/// by the operator, or the API server unreachable).
const REJOIN: Duration = Duration::from_secs(5);
/// How long a stopping replica waits for its Lease to be released.
const RELEASE: Duration = Duration::from_secs(2);

/// Where a replica stands: the Lease, and its identity there.
pub struct Ballot {
    pub client: kube::Client,
    pub namespace: String,
    pub lease: String,
    pub me: Identity,
}

/// How a stopping replica leaves the election: it sends a sender, answered once the Lease
/// is released (or that was given up after [`RELEASE`]).
pub type Resign = oneshot::Receiver<oneshot::Sender<()>>;

/// Stands for the Lease until `resign` comes (or its sender is dropped): `leading` says
/// whether this replica holds it. Resigning drops kube-lease-manager's channel, which
/// releases the Lease.
pub async fn stand(ballot: Ballot, leading: watch::Sender<bool>, mut resign: Resign) {
    let Ballot {
        client,
        namespace,
        lease,
        me,
    } = ballot;
    // Unique per process, as kube-lease-manager requires, and short: the API server takes
    // field managers of 128 characters at most, and its default adds the whole identity.
    let field_manager = format!("hookwarden-writer-{}", me.token);
    let mut warned = false;
    let done = loop {
        let manager = LeaseManagerBuilder::new(client.clone(), &lease)
            .with_namespace(&namespace)
            .with_identity(me.lease_identity())
            .with_field_manager(&field_manager)
            .with_create_mode(LeaseCreateMode::UseExistent)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await;
        match manager {
            Ok(manager) => {
                warned = false;
                let (mut channel, task) = manager.watch().await;
                let resigned = loop {
                    let _ = leading.send(*channel.borrow_and_update());
                    tokio::select! {
                        changed = channel.changed() => if changed.is_err() { break None },
                        done = &mut resign => break Some(done.ok()),
                    }
                };
                let _ = leading.send(false);
                drop(channel);
                if let Some(done) = resigned {
                    // Released by the manager's task once its channel is gone.
                    let _ = tokio::time::timeout(RELEASE, task).await;
                    tracing::info!(%lease, "left the election of the ConfigMap sinks' writer");
                    break done;
                }
                tracing::warn!(%lease, "left the election of the ConfigMap sinks' writer; standing again");
            }
            Err(error) => {
                // Once until it works: the Lease comes with the Deployment, and a receiver
                // may start first.
                if !warned {
                    tracing::warn!(%lease, %error, "cannot stand for the ConfigMap sinks' writer yet; each replica writes itself meanwhile");
                    warned = true;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REJOIN) => {}
            done = &mut resign => break done.ok(),
        }
    };
    if let Some(done) = done {
        let _ = done.send(());
    }
}

/// Follows Lease `lease`: `term` holds who holds it and until when.
pub async fn follow_lease(
    client: kube::Client,
    namespace: String,
    lease: String,
    term: watch::Sender<Option<Term>>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={lease}"));
    let mut leases = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(seen) = leases.next().await {
        match seen {
            Ok(seen) => {
                let _ = term.send(seen.spec.as_ref().and_then(Term::of));
            }
            Err(error) => tracing::debug!(%lease, %error, "watching the writer Lease"),
        }
    }
}

/// Follows the EndpointSlices of Service `service` that the EndpointSlice controller
/// manages: `pods` holds its ready pods and their addresses, the only places a delivery is
/// handed to (see `holder`).
pub async fn follow_pods(
    client: kube::Client,
    namespace: String,
    service: String,
    pods: watch::Sender<BTreeMap<String, IpAddr>>,
) {
    let api: Api<EndpointSlice> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().labels(&slice_selector(&service));
    let (store, writer) = reflector::store();
    let mut events = std::pin::pin!(
        reflector(writer, watcher(api, config))
            .default_backoff()
            .touched_objects()
    );
    while let Some(event) = events.next().await {
        match event {
            Ok(_) => {
                let slices = store.state();
                let _ = pods.send(ready_pods(&service, slices.iter().map(|s| s.as_ref())));
            }
            Err(error) => tracing::debug!(%service, %error, "watching the Service's endpoints"),
        }
    }
}
