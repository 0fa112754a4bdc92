//! The ReceiverPool controller: members (from the Webhook controller's store) -> build the
//! pool's children (`pool::children`, pure) -> apply -> prune reports of gone pods -> write
//! status. A Webhook joining, changing or leaving the pool re-renders its configuration
//! once, here, rather than once per Webhook.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::rbac::v1::Role;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, instrument, warn};

use hookwarden_api::pool::{ReceiverPool, ReceiverPoolStatus};

use super::children::{self, Member};
use crate::crd::Webhook;
use crate::error::{Error, Result};
use crate::runtime::backoff;
use crate::runtime::names;
use crate::runtime::scoped;
use crate::webhook::children::ReceiverDefaults;
use crate::webhook::conflict::find_conflict;
use crate::webhook::validate::{SecretSource, validate};

/// How often a pool is reconciled even without a change.
const RESYNC: Duration = Duration::from_secs(300);

/// What every pool reconciliation shares.
pub struct PoolContext {
    pub client: Client,
    pub defaults: ReceiverDefaults,
    /// Every Webhook of the scope, from this controller's own watch of them: a change that
    /// triggers a pool's reconcile is in this store before the reconcile runs (the Webhook
    /// controller's store, fed by another watch, can be behind, and a pool rendered from
    /// it would miss the Webhook that triggered it).
    webhooks: Store<Webhook>,
    /// The sink ConfigMaps the operator made (metadata): a pool serves a Webhook with a
    /// ConfigMap sink only once that ConfigMap is the Webhook's own ([`sink_store`]).
    sinks: Store<PartialObjectMeta<ConfigMap>>,
    /// Consecutive failures per pool, for back-off.
    failures: backoff::Streaks<ReceiverPool>,
}

impl PoolContext {
    pub fn new(
        client: Client,
        defaults: ReceiverDefaults,
        webhooks: Store<Webhook>,
        sinks: Store<PartialObjectMeta<ConfigMap>>,
    ) -> Self {
        PoolContext {
            client,
            defaults,
            webhooks,
            sinks,
            failures: backoff::Streaks::default(),
        }
    }
}

/// A store of the sink ConfigMaps `api` sees (those the operator labels as sinks; metadata
/// only), and the stream that fills it, to be run as a trigger of the pool controller.
pub fn sink_store(
    api: Api<PartialObjectMeta<ConfigMap>>,
) -> (
    Store<PartialObjectMeta<ConfigMap>>,
    impl futures::Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let sinks = watcher::Config::default().labels(&format!(
        "{},{}=sink",
        names::managed_selector(),
        names::ROLE_LABEL
    ));
    let stream = reflector(writer, watcher(api, sinks))
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Whether `webhook` may be served for its sinks: it has no ConfigMap sink, or the one it
/// names is its own (made for it by the operator; see `apply`). A Webhook that names a
/// ConfigMap someone else controls is not served, so no pool pod is given the right to
/// write that ConfigMap.
fn owns_its_sink(
    sinks: &Store<PartialObjectMeta<ConfigMap>>,
    webhook: &Webhook,
    sink: Option<&str>,
) -> bool {
    let (Some(sink), Some(ns)) = (sink, webhook.namespace()) else {
        return true;
    };
    sinks
        .get(&ObjectRef::new(sink).within(&ns))
        .is_some_and(|cm| crate::webhook::children::controlled_by(&cm.metadata, webhook))
}

/// A store of the Webhooks `api` sees, and the stream that fills it (to be run as the pool
/// controller's Webhook trigger, which updates the store before it passes a change on).
pub fn webhook_store(
    api: Api<Webhook>,
) -> (
    Store<Webhook>,
    impl futures::Stream<Item = Result<Webhook, watcher::Error>> + Send + 'static,
) {
    let (reader, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects();
    (reader, stream)
}

/// Runs the pool controller of one scope (a namespace, or all) until `shutdown`: its own
/// stores of the scope's Webhooks and sinks, fed by the watches that trigger it.
pub async fn run_scope(
    client: Client,
    defaults: ReceiverDefaults,
    ns: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (members, changes) = webhook_store(scoped(&client, ns.as_deref()));
    let (sinks, sink_changes) = sink_store(scoped(&client, ns.as_deref()));
    let ctx = Arc::new(PoolContext::new(client.clone(), defaults, members, sinks));
    let scope = (client.clone(), ns.clone());
    run(
        ctx,
        scoped(&client, ns.as_deref()),
        changes,
        sink_changes,
        move || {
            let (client, ns) = &scope;
            (
                scoped(client, ns.as_deref()),
                scoped(client, ns.as_deref()),
                scoped(client, ns.as_deref()),
            )
        },
        shutdown,
    )
    .await
}

/// Runs the pool controller of one scope (a namespace, or all) until `shutdown`.
/// `webhooks` is the stream that fills `ctx`'s Webhook store ([`webhook_store`]).
pub async fn run(
    ctx: Arc<PoolContext>,
    pools: Api<ReceiverPool>,
    webhooks: impl futures::Stream<Item = Result<Webhook, watcher::Error>> + Send + 'static,
    sinks: impl futures::Stream<Item = Result<PartialObjectMeta<ConfigMap>, watcher::Error>>
    + Send
    + 'static,
    scoped: impl Fn() -> (Api<Deployment>, Api<ConfigMap>, Api<Role>),
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let owned = |role: &str| {
        watcher::Config::default().labels(&format!(
            "{},{}={role}",
            names::POOL_LABEL,
            names::ROLE_LABEL
        ))
    };
    let controller = Controller::new(pools, watcher::Config::default());
    let pool_store = controller.store();
    let webhooks_seen = ctx.webhooks.clone();
    let (deployments, config_maps, roles) = scoped();
    controller
        .owns(deployments, owned("pool"))
        .owns(config_maps, owned("pool-config"))
        .owns(roles, owned("pool"))
        // A Webhook that joins, changes or leaves: the pools of its namespace (it may have
        // left one for another, and the watch sees only where it is now).
        .watches_stream(webhooks, move |w: Webhook| {
            let ns = w.namespace();
            let mut pools: Vec<ObjectRef<ReceiverPool>> = pool_store
                .state()
                .iter()
                .filter(|p| p.namespace() == ns)
                .map(|p| ObjectRef::from_obj(p.as_ref()))
                .collect();
            if let Some(ns) = ns.as_ref() {
                for pool in w.pools() {
                    pools.push(ObjectRef::new(pool).within(ns));
                }
            }
            pools
        })
        // A sink made (or deleted): the pools of the Webhook it belongs to.
        .watches_stream(sinks, move |cm: PartialObjectMeta<ConfigMap>| {
            let ns = cm.namespace();
            let owner = cm.labels().get(names::WEBHOOK_LABEL).cloned();
            let found = ns.clone().zip(owner).and_then(|(ns, name)| {
                webhooks_seen.get(&ObjectRef::<Webhook>::new(&name).within(&ns))
            });
            found
                .map(|w| {
                    w.pools()
                        .into_iter()
                        .map(|p| {
                            ObjectRef::<ReceiverPool>::new(p)
                                .within(ns.as_deref().unwrap_or_default())
                        })
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .with_config(
            controller::Config::default()
                .concurrency(4)
                .debounce(Duration::from_millis(250)),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                debug!(%error, "pool reconcile loop");
            }
        })
        .await;
}

/// Retries with the Webhook controller's back-off (`runtime::backoff`), counted per pool
/// from the first failure of a streak.
fn error_policy(pool: Arc<ReceiverPool>, error: &Error, ctx: Arc<PoolContext>) -> Action {
    let attempt = ctx.failures.fail(ObjectRef::from_obj(pool.as_ref()));
    let delay = backoff::delay(attempt);
    warn!(%error, pool = %pool.name_any(), namespace = ?pool.namespace(), attempt, retry_in_s = delay.as_secs(), "pool reconcile failed");
    Action::requeue(delay)
}

#[instrument(level = "error", name = "reconcile_pool", skip_all, fields(pool = %pool.name_any(), namespace = pool.namespace().unwrap_or_default()))]
async fn reconcile(pool: Arc<ReceiverPool>, ctx: Arc<PoolContext>) -> Result<Action> {
    let result = reconcile_inner(pool.clone(), ctx.clone()).await;
    if result.is_ok() {
        ctx.failures.end(&ObjectRef::from_obj(pool.as_ref()));
    }
    match result {
        // An object of a name the pool needs is someone else's: left as it is (see `apply`).
        Err(Error::NotOwned(taken)) => {
            let message = format!(
                "{taken}; hookwarden never takes over an object it did not create: delete \
                 that {}, or name the pool otherwise",
                taken.kind
            );
            warn!(detail = %message, "pool cannot be reconciled");
            let ready = condition(&pool, "False", "NotOwned", &message);
            let served = pool.status.as_ref().and_then(|s| s.webhooks).unwrap_or(0);
            write_status(&ctx, &pool, served, 0, None, ready).await?;
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        result => result,
    }
}

async fn reconcile_inner(pool: Arc<ReceiverPool>, ctx: Arc<PoolContext>) -> Result<Action> {
    let name = pool.name_any();
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    if pool.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    if let Err(problem) = names::check_pool_name("metadata.name", &name) {
        let ready = condition(&pool, "False", "InvalidName", &problem);
        write_status(&ctx, &pool, 0, 0, None, ready).await?;
        return Ok(Action::await_change());
    }
    if let Some(image) = pool.spec.pods.image.as_deref()
        && let Err(problem) =
            ctx.defaults
                .guardrails
                .image("spec.image", image, &ctx.defaults.image)
    {
        let ready = condition(&pool, "False", "NotAllowed", &problem);
        write_status(&ctx, &pool, 0, 0, None, ready).await?;
        return Ok(Action::await_change());
    }
    // Until the Webhooks are all listed, the members are not known: rendering now would
    // take Webhooks out of a running pool.
    if ctx.webhooks.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let all = ctx.webhooks.state();
    let members: Vec<Member<'_>> = all
        .iter()
        .map(|w| w.as_ref())
        .filter(|w| w.namespace().as_deref() == Some(&namespace))
        // Those that ask for it, and those moving out whose new placement does not serve
        // them yet (see `placement`).
        .filter(|w| w.pools().contains(&name.as_str()))
        .filter(|w| w.metadata.deletion_timestamp.is_none())
        .filter_map(|w| {
            let spec = validate(&w.name_any(), &w.spec).ok()?;
            let sink = spec.config_map.as_ref().map(|c| c.name.as_str());
            if !owns_its_sink(&ctx.sinks, w, sink) {
                return None;
            }
            // A generated signing secret is used once the Webhook controller has found it
            // to be the Webhook's own (`status.secretName`): a Secret of that name planted
            // before the Webhook existed is never read (its author could sign deliveries).
            if let SecretSource::Generated { name } = &spec.secret {
                let checked = w.status.as_ref().and_then(|s| s.secret_name.as_deref());
                if checked != Some(name.as_str()) {
                    return None;
                }
            }
            // Outside the guardrails: not served (its status says why).
            let guardrails = &ctx.defaults.guardrails;
            guardrails
                .webhook(&w.spec, &spec, &namespace, &ctx.defaults.image)
                .ok()?;
            // A Webhook in conflict is not served: the older one keeps its path.
            find_conflict(w, &spec, all.iter().map(|o| o.as_ref()))
                .is_none()
                .then_some(Member { webhook: w, spec })
        })
        .collect();
    let children = children::build(&pool, &members, &ctx.defaults)?;

    // Rights first: a pod that reads the new configuration may read what it names.
    apply(&ctx, &namespace, &children.service_account).await?;
    apply(&ctx, &namespace, &children.role).await?;
    apply(&ctx, &namespace, &children.role_binding).await?;
    apply(&ctx, &namespace, &children.served).await?;
    apply(&ctx, &namespace, &children.config).await?;
    apply(&ctx, &namespace, &children.service).await?;
    apply(&ctx, &namespace, &children.disruption_budget).await?;
    let deployment = apply(&ctx, &namespace, &children.deployment).await?;
    if let Some(lease) = crate::webhook::children::writer_lease(&children.deployment, &deployment) {
        apply(&ctx, &namespace, &lease).await?;
    }
    prune_reports(&ctx, &namespace, &name).await?;

    let ready_replicas = deployment
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let ready = match (children.webhooks, ready_replicas) {
        (0, _) => condition(
            &pool,
            "True",
            "NoWebhooks",
            "no Webhook names this pool; it keeps no pods",
        ),
        (_, 0) => condition(
            &pool,
            "False",
            "PodsUnavailable",
            "waiting for the pool's pods to be Ready",
        ),
        (n, r) => condition(
            &pool,
            "True",
            "PodsAvailable",
            &format!("{r} Ready pods serve {n} Webhooks"),
        ),
    };
    let url = children::url(&name, &namespace);
    let webhooks = i32::try_from(children.webhooks).unwrap_or(i32::MAX);
    write_status(&ctx, &pool, webhooks, ready_replicas, Some(url), ready).await?;
    Ok(Action::requeue(RESYNC))
}

/// Takes the reports of pods that no longer exist out of the served ConfigMap.
async fn prune_reports(ctx: &PoolContext, namespace: &str, pool: &str) -> Result<()> {
    let maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(served) = maps.get_opt(&names::pool_served(pool)).await? else {
        return Ok(());
    };
    let reported: Vec<String> = served.data.unwrap_or_default().into_keys().collect();
    if reported.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = names::pool_selector_labels(pool)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let live: Vec<String> = pods
        .list_metadata(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .map(|p| p.name_any())
        .collect();
    let gone: BTreeMap<String, Option<String>> = reported
        .into_iter()
        .filter(|k| !live.contains(k))
        .map(|k| (k, None))
        .collect();
    if gone.is_empty() {
        return Ok(());
    }
    debug!(pods = ?gone.keys().collect::<Vec<_>>(), "removing reports of pods that are gone");
    let patch = serde_json::json!({ "data": gone });
    maps.patch(
        &names::pool_served(pool),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

fn condition(pool: &ReceiverPool, status: &str, reason: &str, message: &str) -> Condition {
    let previous = pool
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    Condition {
        type_: "Ready".into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: pool.metadata.generation,
        last_transition_time: crate::webhook::status::transition_time(previous, status, now),
    }
}

async fn write_status(
    ctx: &PoolContext,
    pool: &ReceiverPool,
    webhooks: i32,
    ready_replicas: i32,
    url: Option<String>,
    ready: Condition,
) -> Result<()> {
    let next = ReceiverPoolStatus {
        conditions: vec![ready],
        observed_generation: pool.metadata.generation,
        webhooks: Some(webhooks),
        ready_replicas: Some(ready_replicas),
        url,
    };
    if pool.status.as_ref() == Some(&next) {
        return Ok(());
    }
    let namespace = pool
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<ReceiverPool> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": ReceiverPool::api_version(&()),
        "kind": ReceiverPool::kind(&()),
        "status": next,
    });
    api.patch_status(
        &pool.name_any(),
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    info!(webhooks, ready_replicas, "pool status written");
    Ok(())
}

async fn apply<K>(ctx: &PoolContext, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + 'static,
{
    crate::runtime::apply::apply(&ctx.client, namespace, object, None).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WebhookSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use kube::core::PartialObjectMetaExt;

    fn webhook(name: &str, uid: &str) -> Webhook {
        let mut w = Webhook::new(name, WebhookSpec::default());
        w.metadata.namespace = Some("ns".into());
        w.metadata.uid = Some(uid.into());
        w
    }

    /// A pool serves a Webhook with a ConfigMap sink only once the operator made that
    /// ConfigMap for it: not while it is missing, never when another Webhook (or nobody)
    /// controls it.
    #[test]
    fn a_webhook_is_served_only_with_a_sink_of_its_own() {
        let (store, mut writer) = reflector::store::<PartialObjectMeta<ConfigMap>>();
        let sink = |name: &str, controller: Option<&str>| {
            ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                owner_references: controller.map(|uid| {
                    vec![OwnerReference {
                        kind: "Webhook".into(),
                        uid: uid.into(),
                        controller: Some(true),
                        ..OwnerReference::default()
                    }]
                }),
                ..ObjectMeta::default()
            }
            .into_response_partial::<ConfigMap>()
        };
        for cm in [
            sink("victim-orgs", Some("u-victim")),
            sink("app-settings", None),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(cm));
        }
        let victim = webhook("victim", "u-victim");
        let attacker = webhook("attacker", "u-attacker");
        assert!(owns_its_sink(&store, &victim, Some("victim-orgs")));
        assert!(!owns_its_sink(&store, &attacker, Some("victim-orgs")));
        assert!(!owns_its_sink(&store, &attacker, Some("app-settings")));
        assert!(!owns_its_sink(&store, &victim, Some("not-made-yet")));
        assert!(
            owns_its_sink(&store, &attacker, None),
            "no sink, nothing to own"
        );
    }
}
