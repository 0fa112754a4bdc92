//! The Webhook controller: read -> validate -> check conflicts and the Secret -> build
//! children -> apply -> write status. Decisions live in pure modules (`validate`,
//! `conflict`, `children`, `status`); this module does the I/O.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, info, instrument, warn};

use crate::crd::Webhook;
use crate::error::{Error, NotOwned, Result};
use crate::runtime::backoff;
use crate::runtime::metrics::{Metrics, ReadyLabels};
use crate::runtime::names;
use crate::runtime::scoped;
use crate::webhook::children::{self, ReceiverDefaults, ReceiverPlan};
use crate::webhook::conflict::find_conflict;
use crate::webhook::placement;
use crate::webhook::route::{self, RouteState};
use crate::webhook::secret;
use crate::webhook::seen::{self, Seen};
use crate::webhook::served::{self, Reports, Wanted};
use crate::webhook::status::{self, Readiness, Reason, SinkUsage};
use crate::webhook::triggers;
use crate::webhook::validate::{SecretSource, ValidSpec, validate};
use hookwarden_api::pool::{DEFAULT_POOL, ReceiverPool, ReceiverPoolSpec};

/// How often a healthy Webhook is reconciled even without a change.
const RESYNC: Duration = Duration::from_secs(300);
/// How often a Webhook waiting for its Secret looks again.
const SECRET_RETRY: Duration = Duration::from_secs(10);
/// How often a Webhook in conflict looks again.
const CONFLICT_RETRY: Duration = Duration::from_secs(10);
/// How soon a Webhook asking for a route looks again on a cluster without the Gateway API.
const ROUTE_RETRY: Duration = Duration::from_secs(15);
/// How soon a Webhook moving into a pool looks again while its old Service still sends its
/// old pods connections, and one leaving a pool while the pool still serves it.
const SWITCH_RETRY: Duration = Duration::from_secs(2);

/// Webhooks reconciled at once. Unbounded, a thousand Webhooks applied together held a
/// thousand requests (and connections) to the API server at once, and the operator's
/// memory with them; a few dozen keep the API server as busy.
const RECONCILES_AT_ONCE: u16 = 32;
/// Changes to one Webhook's inputs within this time are one reconcile: a pool's pods
/// report what they serve one after the other, and each report concerns all its Webhooks.
const DEBOUNCE: Duration = Duration::from_millis(250);

/// Operator-wide settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch only these namespaces; all namespaces when empty.
    pub namespaces: Vec<String>,
    pub receiver: ReceiverDefaults,
    /// Name of this replica, for Events.
    pub instance: Option<String>,
}

/// What the Webhook controller knows of receiver pools, from the watches that also trigger
/// its reconciles (each change is in these stores before the reconcile it causes): read
/// here rather than from the API server on every reconcile of every pooled Webhook.
#[derive(Clone)]
pub struct PoolView {
    pub pools: Store<ReceiverPool>,
    pub pods: Store<Pod>,
    pub reports: Store<ConfigMap>,
}

/// What every reconciliation shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    /// Every Webhook the controller sees, for conflict checks.
    pub webhooks: Store<Webhook>,
    /// The pools, their pods and their reports, as the controller's watches see them.
    pub pools: PoolView,
    /// The children the operator manages, as the controller's watches see them.
    pub seen: Seen,
    /// Consecutive failures per Webhook, for back-off.
    failures: backoff::Streaks<Webhook>,
}

impl PoolView {
    /// The pods of `pool` in `namespace`, as watched.
    fn pods_of(&self, namespace: &str, pool: &str) -> Vec<Pod> {
        let selector = names::pool_selector_labels(pool);
        self.pods
            .state()
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .filter(|p| selector.iter().all(|(k, v)| p.labels().get(k) == Some(v)))
            .map(|p| p.as_ref().clone())
            .collect()
    }

    /// What the pods of `pool` in `namespace` report they serve, as watched.
    fn reports_of(&self, namespace: &str, pool: &str) -> Reports {
        let key = ObjectRef::<ConfigMap>::new(&names::pool_served(pool)).within(namespace);
        Reports::read(self.reports.get(&key).as_deref())
    }
}

/// The Webhooks of `pool` (`spec.pool`, or the default pool) in `namespace`.
fn pool_members(
    webhooks: &Store<Webhook>,
    namespace: Option<String>,
    pool: Option<&String>,
) -> Vec<Arc<Webhook>> {
    let (Some(ns), Some(pool)) = (namespace, pool) else {
        return vec![];
    };
    webhooks
        .state()
        .into_iter()
        .filter(|w| w.namespace().as_ref() == Some(&ns))
        .filter(|w| w.spec.pool_name() == Some(pool.as_str()))
        .collect()
}

/// The Webhooks of `pool` whose readiness the pool's pods and reports, as they are now,
/// change: a report or a pod concerns every Webhook of the pool, and reconciling all of
/// them for each would cost a pool of a hundred a hundred reconciles per report.
fn pool_news(
    webhooks: &Store<Webhook>,
    view: &PoolView,
    namespace: Option<String>,
    pool: Option<&String>,
) -> Vec<ObjectRef<Webhook>> {
    let (Some(ns), Some(pool)) = (namespace.clone(), pool) else {
        return vec![];
    };
    let members = pool_members(webhooks, namespace, Some(pool));
    if members.is_empty() {
        return vec![];
    }
    let pods = view.pods_of(&ns, pool);
    let reports = view.reports_of(&ns, pool);
    members
        .iter()
        .filter(|w| {
            let name = w.name_any();
            let wanted = Wanted {
                name: &name,
                uid: w.metadata.uid.as_deref().unwrap_or_default(),
                generation: w.metadata.generation.unwrap_or_default(),
            };
            served::is_news(w, &served::pool_readiness(pool, &wanted, &pods, &reports))
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// Runs the Webhook controller of one scope (a namespace, or all) until `shutdown`
/// completes (started by `run`, beside the other controllers of the scope).
pub async fn run_scope(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    ns: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let webhooks: Api<Webhook> = scoped(&client, ns.as_deref());
    let managed = watcher::Config::default().labels(&names::managed_selector());
    let controller = Controller::new(webhooks.clone(), watcher::Config::default());
    let store = controller.store();
    metrics.webhooks.watch(store.clone());
    let shutdown = shutdown.shared();
    let reporter = Reporter {
        controller: names::FIELD_MANAGER.into(),
        instance: config.instance.clone(),
    };
    let (pools_seen, pools_writer) = reflector::store();
    let (pods_seen, pods_writer) = reflector::store();
    let (reports_seen, reports_writer) = reflector::store();
    let (children_seen, writers) = Seen::new(route::http_route_resource());
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        metrics,
        config,
        webhooks: store.clone(),
        pools: PoolView {
            pools: pools_seen,
            pods: pods_seen,
            reports: reports_seen,
        },
        seen: children_seen,
        failures: backoff::Streaks::default(),
    });
    let reports = reflector(
        reports_writer,
        watcher(
            scoped::<ConfigMap>(&client, ns.as_deref()),
            watcher::Config::default().labels(&format!("{}=pool-served", names::ROLE_LABEL)),
        ),
    )
    .default_backoff()
    .touched_objects();
    let pool_pods = reflector(
        pods_writer,
        watcher(
            scoped::<Pod>(&client, ns.as_deref()),
            watcher::Config::default().labels(names::POOL_LABEL),
        ),
    )
    .default_backoff()
    .touched_objects();
    let members_of_pool = {
        let store = store.clone();
        move |namespace: Option<String>, pool: Option<&String>| -> Vec<ObjectRef<Webhook>> {
            pool_members(&store, namespace, pool)
                .iter()
                .map(|w| ObjectRef::from_obj(w.as_ref()))
                .collect()
        }
    };
    let news = {
        let (store, view) = (store.clone(), ctx.pools.clone());
        move |namespace: Option<String>, pool: Option<&String>| {
            pool_news(&store, &view, namespace, pool)
        }
    };
    let news_of_report = news.clone();
    info!(
        namespace = ns.as_deref().unwrap_or("<all>"),
        "controller starting"
    );
    let scope = ns.as_deref();
    let webhooks_done = controller
        .owns_stream(seen::owned(&client, scope, &managed, writers.deployments))
        .owns_stream(seen::owned(&client, scope, &managed, writers.services))
        // Not on every write a receiver makes to a sink's data: see `triggers`.
        .watches_stream(
            triggers::config_maps(
                scoped::<ConfigMap>(&client, scope),
                managed.clone(),
                writers.config_maps,
            ),
            |cm: ConfigMap| triggers::webhook_of(&cm),
        )
        .owns_stream(seen::owned(
            &client,
            scope,
            &managed,
            writers.service_accounts,
        ))
        .owns_stream(seen::owned(&client, scope, &managed, writers.roles))
        .owns_stream(seen::owned(&client, scope, &managed, writers.role_bindings))
        .owns_stream(seen::owned(&client, scope, &managed, writers.ingresses))
        .owns_stream_with(
            triggers::routes(&client, scope, managed.clone(), writers.routes),
            route::http_route_resource(),
        )
        // Pods that opted in to a Webhook's sidecar receiver: its status counts them.
        .watches(
            scoped::<Pod>(&client, ns.as_deref()),
            watcher::Config::default().labels(names::INJECT_LABEL),
            |pod: Pod| {
                let name = pod.labels().get(names::INJECT_LABEL).cloned();
                let ns = pod.namespace();
                name.zip(ns)
                    .map(|(name, ns)| ObjectRef::<Webhook>::new(&name).within(&ns))
            },
        )
        // A pooled Webhook is Ready once its pool's pods report they serve it: their reports
        // and their readiness are watched.
        .watches_stream(reports, move |cm: ConfigMap| {
            news_of_report(cm.namespace(), cm.labels().get(names::POOL_LABEL))
        })
        // A pool named before it existed.
        .watches_stream(
            triggers::pools(scoped(&client, ns.as_deref()), pools_writer),
            move |pool: ReceiverPool| {
                members_of_pool(pool.namespace(), pool.metadata.name.as_ref())
            },
        )
        .watches_stream(pool_pods, move |pod: Pod| {
            news(pod.namespace(), pod.labels().get(names::POOL_LABEL))
        })
        // A Webhook's conflicts depend on its neighbours: when one changes or goes away,
        // the others of the same sender in its namespace are looked at again.
        .watches(
            webhooks,
            watcher::Config::default(),
            move |changed: Webhook| neighbours(&store, &changed),
        )
        .with_config(
            controller::Config::default()
                .concurrency(RECONCILES_AT_ONCE)
                .debounce(DEBOUNCE),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => {
                    debug!(webhook = %obj.name, namespace = ?obj.namespace, "reconciled")
                }
                Err(error) => debug!(%error, "reconcile loop"),
            }
        });
    webhooks_done.await;
}

fn neighbours(store: &Store<Webhook>, changed: &Webhook) -> Vec<ObjectRef<Webhook>> {
    store
        .state()
        .iter()
        .filter(|w| w.metadata.namespace == changed.metadata.namespace)
        .filter(|w| w.metadata.uid != changed.metadata.uid)
        .filter(|w| {
            w.spec.provider == changed.spec.provider
                || w.spec.pool_name().is_some() && w.spec.pool_name() == changed.spec.pool_name()
                || w.spec.ingress.is_some() && changed.spec.ingress.is_some()
                || sink_of(w).is_some() && sink_of(w) == sink_of(changed)
        })
        .map(|w| ObjectRef::from_obj(w.as_ref()))
        .collect()
}

/// The ConfigMap a Webhook's spec names as its sink.
fn sink_of(webhook: &Webhook) -> Option<&str> {
    let sinks = webhook.spec.sinks.as_ref()?;
    sinks.config_map.as_ref().map(|c| c.name.as_str())
}

/// One reconciliation, under a span that names the Webhook: what it logs carries the
/// Webhook's name and namespace from there, not on every line.
/// (The span is at level ERROR so that it is on whatever the log level: its fields are the
/// only place that names the Webhook.)
#[instrument(level = "error", name = "reconcile", skip_all, fields(webhook = %webhook.name_any(), namespace = webhook.namespace().unwrap_or_default()))]
async fn reconcile(webhook: Arc<Webhook>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = match reconcile_inner(&webhook, &ctx).await {
        Err(Error::NotOwned(taken)) => report_not_owned(&webhook, &ctx, &taken).await,
        result => result,
    };
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.record(label, started.elapsed());
    match &result {
        Ok(_) => {
            ctx.failures.end(&ObjectRef::from_obj(webhook.as_ref()));
        }
        Err(error) => report_failure(&webhook, &ctx, error).await,
    }
    result
}

/// An object of a name this Webhook needs exists and is not its own: it is left as it is,
/// and the Webhook is `NotOwned` until that object is gone or the Webhook names another.
/// (Such an object carries none of the operator's labels, so no watch brings the Webhook
/// back when it goes: it looks again shortly.)
async fn report_not_owned(webhook: &Webhook, ctx: &Context, taken: &NotOwned) -> Result<Action> {
    let readiness = Readiness::new(Reason::NotOwned, not_owned_message(webhook, taken));
    let previous_secret = webhook.status.as_ref().and_then(|s| s.secret_name.clone());
    let again = Action::requeue(CONFLICT_RETRY);
    stop_not_ready(ctx, webhook, &readiness, previous_secret, again).await
}

/// What `NotOwned` says: the object, and how to fix it for the name the Webhook gave.
fn not_owned_message(webhook: &Webhook, taken: &NotOwned) -> String {
    let sink = webhook
        .spec
        .sinks
        .as_ref()
        .and_then(|s| s.config_map.as_ref())
        .map(|c| c.name.as_str());
    let fix = if taken.kind == "ConfigMap" && sink == Some(taken.name.as_str()) {
        "name another ConfigMap in spec.sinks.configMap.name (the receiver makes its own), or \
         delete that ConfigMap if nothing needs it"
            .to_string()
    } else if taken.kind == "Secret" {
        format!(
            "to sign with it, name it in spec.secretRef; otherwise delete it, and a signing \
             secret is generated under the name {:?}",
            taken.name
        )
    } else {
        format!(
            "the receiver's objects are named after the Webhook ({}); rename the Webhook, or \
             delete that {} if nothing needs it",
            names::receiver(&webhook.name_any()),
            taken.kind
        )
    };
    format!("{taken}; hookwarden never takes over an object it did not create: {fix}")
}

/// Makes a failed reconciliation visible on the Webhook, not in the operator's log only.
/// Without a verdict on the current spec yet, `Ready` becomes `Unknown`/`ReconcileFailed`
/// (written once per generation: a status write triggers a reconcile, so rewriting it on
/// every failure would defeat the back-off); with one, it stays (the receiver serves what
/// was last applied) and the first failure of a streak is a Warning Event.
async fn report_failure(webhook: &Webhook, ctx: &Context, error: &Error) {
    let then = if needs_a_change(error) {
        "waiting for a change to the Webhook"
    } else {
        "retrying with back-off"
    };
    let message = truncate(&format!("reconciling failed, {then}: {error}"), 1000);
    // The first failure of a streak marks the Webhook (error_policy counts on from there,
    // for both kinds of error; a success clears it).
    let first = ctx.failures.begin(ObjectRef::from_obj(webhook));
    if status::failure_to_report(webhook.status.as_ref(), webhook.metadata.generation) {
        let readiness = Readiness::new(Reason::ReconcileFailed, message);
        let previous = webhook.status.clone().unwrap_or_default();
        // Where the receiver was reached stays: it still serves what was last applied.
        let placement = status::Placement {
            internal: previous.url,
            external: previous.external_url,
            sidecar: previous.sidecar,
            pool: previous.pool,
        };
        let written = write_status(
            ctx,
            webhook,
            &readiness,
            placement,
            previous.secret_name,
            SinkUsage::Unknown,
            &RouteState::Unknown,
        );
        if let Err(error) = written.await {
            debug!(%error, "cannot report the failure in the status");
        }
        return;
    }
    if first {
        let event = Event {
            type_: EventType::Warning,
            reason: Reason::ReconcileFailed.as_str().into(),
            note: Some(message),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &webhook.object_ref(&())).await {
            warn!(%error, "cannot publish Event");
        }
    }
}

/// An error that trying again cannot fix: only a change to the Webhook can (what the
/// operator renders from it cannot be made). Anything else backs off, API errors above all:
/// even an object the API server refuses as invalid (422) may be accepted once something
/// else changes (a newer Gateway API, a relaxed admission policy).
fn needs_a_change(error: &Error) -> bool {
    matches!(
        error,
        Error::Render(_) | Error::MissingObjectKey(_) | Error::Serialize(_) | Error::Yaml(_)
    )
}

/// Waits for a change to the Webhook after an error only a change can fix; otherwise
/// retries with exponential backoff, 5 s doubling up to 5 minutes.
fn error_policy(webhook: Arc<Webhook>, error: &Error, ctx: Arc<Context>) -> Action {
    if needs_a_change(error) {
        warn!(
            %error,
            webhook = %webhook.name_any(),
            namespace = ?webhook.namespace(),
            "reconcile failed; waiting for a change to the Webhook"
        );
        return Action::await_change();
    }
    let attempt = ctx.failures.fail(ObjectRef::from_obj(webhook.as_ref()));
    let delay = backoff::delay(attempt);
    warn!(
        %error,
        webhook = %webhook.name_any(),
        namespace = ?webhook.namespace(),
        attempt,
        retry_in_s = delay.as_secs(),
        "reconcile failed"
    );
    Action::requeue(delay)
}

/// The outcome of checking the signing Secret.
enum SecretCheck {
    Ready { generated: Option<String> },
    Missing(String),
}

async fn reconcile_inner(webhook: &Webhook, ctx: &Context) -> Result<Action> {
    let name = webhook.name_any();
    let namespace = webhook
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    if webhook.metadata.deletion_timestamp.is_some() {
        // Children go with the Webhook through their owner references.
        return Ok(Action::await_change());
    }
    let previous_secret = webhook.status.as_ref().and_then(|s| s.secret_name.clone());

    let spec = match validate(&name, &webhook.spec) {
        Ok(spec) => spec,
        Err(message) => {
            let readiness = Readiness::new(Reason::InvalidSpec, message);
            return stop_not_ready(
                ctx,
                webhook,
                &readiness,
                previous_secret,
                Action::await_change(),
            )
            .await;
        }
    };

    let all = ctx.webhooks.state();
    if let Some(conflict) = find_conflict(webhook, &spec, all.iter().map(|w| w.as_ref())) {
        let readiness = Readiness::new(Reason::Conflict, conflict.message);
        // The neighbour watch re-queues this Webhook when the holder goes away, but it can
        // run before the shared store has seen the deletion: look again shortly as well.
        let again = Action::requeue(CONFLICT_RETRY);
        return stop_not_ready(ctx, webhook, &readiness, previous_secret, again).await;
    }

    let receiver = &ctx.config.receiver;
    let allowed = receiver
        .guardrails
        .webhook(&webhook.spec, &spec, &namespace, &receiver.image);
    if let Err(message) = allowed {
        // (the guardrails change only with the operator's flags, which restart it)
        let readiness = Readiness::new(Reason::NotAllowed, message);
        let again = Action::await_change();
        return stop_not_ready(ctx, webhook, &readiness, previous_secret, again).await;
    }

    let generated = match check_secret(ctx, webhook, &namespace, &spec).await? {
        SecretCheck::Ready { generated } => generated,
        SecretCheck::Missing(message) => {
            let readiness = Readiness::new(Reason::SecretNotFound, message);
            let again = Action::requeue(SECRET_RETRY);
            return stop_not_ready(ctx, webhook, &readiness, previous_secret, again).await;
        }
    };

    let children = children::build(webhook, &spec, &ctx.config.receiver)?;
    if let Some(config) = &children.config {
        apply(ctx, &namespace, config, Some(&ctx.seen.config_maps)).await?;
    }
    let sink_usage = match &children.sink {
        Some(sink) => {
            // The applied object comes back whole, with the data the receiver wrote.
            let applied = apply(ctx, &namespace, sink, Some(&ctx.seen.config_maps)).await?;
            SinkUsage::Used {
                name: applied.name_any(),
                bytes: status::config_map_bytes(&applied),
            }
        }
        None => SinkUsage::NoSink,
    };
    ctx.metrics
        .webhooks
        .sink(format!("{namespace}/{}", webhook.name_any()), &sink_usage);
    remove_stale_sinks(ctx, webhook, &namespace, &spec).await?;

    // The pool that serves it now, if one does (`status.pool`).
    let served_by = webhook.status.as_ref().and_then(|s| s.pool.as_deref());
    let (readiness, sidecar_pods, again) = match &children.receiver {
        ReceiverPlan::Own(own) => {
            apply(
                ctx,
                &namespace,
                &own.service_account,
                Some(&ctx.seen.service_accounts),
            )
            .await?;
            apply(ctx, &namespace, &own.role, Some(&ctx.seen.roles)).await?;
            apply(
                ctx,
                &namespace,
                &own.role_binding,
                Some(&ctx.seen.role_bindings),
            )
            .await?;
            let deployment = apply(
                ctx,
                &namespace,
                &own.deployment,
                Some(&ctx.seen.deployments),
            )
            .await?;
            if spec.config_map.is_some()
                && let Some(lease) = children::writer_lease(&own.deployment, &deployment)
            {
                apply(ctx, &namespace, &lease, None).await?;
            }
            let readiness = status::deployment_readiness(&deployment);
            let service = children.service.as_ref();
            apply_service(ctx, webhook, &namespace, service, served_by, &readiness).await?;
            (readiness, None, RESYNC)
        }
        ReceiverPlan::Sidecar { hash: current } => {
            // The pods that opted in, against what the injector gives a pod now.
            let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
            let selector = format!("{}={name}", names::INJECT_LABEL);
            let listed = pods.list(&ListParams::default().labels(&selector)).await?;
            let (readiness, counted) = status::sidecar_pods(&name, &listed.items, current);
            let service = children.service.as_ref();
            apply_service(ctx, webhook, &namespace, service, served_by, &readiness).await?;
            remove_own_receiver(ctx, webhook, &namespace).await?;
            // Pods are watched; this is a backstop.
            (readiness, Some(counted), RESYNC)
        }
        ReceiverPlan::Pool { pool } => {
            let readiness = pool_readiness(ctx, webhook, &namespace, pool).await?;
            // The pool's reports and pods are watched; this is a backstop.
            (readiness, None, RESYNC)
        }
    };
    // A Webhook moving into a pool, out of one or between two keeps its routes to what
    // served it before until the new placement serves it: no moment in which its path goes
    // unanswered (see `placement`).
    let target = match &children.receiver {
        ReceiverPlan::Pool { pool } => Some(pool.as_str()),
        _ => None,
    };
    // Since when its routes point at the new placement: its last status, written then,
    // already names the new placement's URL.
    let switched_for = (webhook.status.as_ref().and_then(|s| s.url.as_ref())
        == children::url(webhook, &spec).as_ref())
    .then(|| written_at(&webhook.metadata, Some("status")))
    .flatten()
    .map(|t| {
        k8s_openapi::jiff::Timestamp::now()
            .duration_since(t)
            .as_secs()
    });
    let step = placement::step(served_by, target, readiness.reason.is_ready(), switched_for);
    let switch = step.switch;
    let (route_state, route_url) = match switch {
        true => {
            match &children.ingress {
                Some(ingress) => {
                    apply(ctx, &namespace, ingress, Some(&ctx.seen.ingresses)).await?;
                }
                None => remove_stale_ingress(ctx, webhook, &namespace).await?,
            }
            let route = children.http_route.as_ref();
            reconcile_route(ctx, webhook, &namespace, &spec, route).await?
        }
        false => (RouteState::Unknown, None),
    };
    let mut again = again;
    if let (ReceiverPlan::Pool { pool }, true) = (&children.receiver, switch)
        && !retire_own_receiver(ctx, webhook, &namespace, pool).await?
    {
        // Its old Service is switched; its old pods go once it no longer sends them any.
        again = again.min(SWITCH_RETRY);
    }
    if step.settling {
        again = again.min(SWITCH_RETRY);
    }
    // Without the Gateway API, look again now and then: its CRDs may be installed later.
    // And until a controller accepts the route, look again too, besides the route's watch.
    let accepted = route::condition(
        None,
        &route_state,
        None,
        Time(k8s_openapi::jiff::Timestamp::now()),
    )
    .is_none_or(|c| c.status == "True");
    let again = if accepted {
        again
    } else {
        again.min(ROUTE_RETRY)
    };

    let (internal, external) = match (switch, webhook.status.as_ref()) {
        // Still served by its pool, and reached there.
        (false, Some(previous)) if served_by.is_some() => {
            (previous.url.clone(), previous.external_url.clone())
        }
        _ => (
            children::url(webhook, &spec),
            route_url.or_else(|| children::external_url(&spec)),
        ),
    };
    let placement = status::Placement {
        internal,
        external,
        sidecar: sidecar_pods,
        pool: step.pool,
    };
    write_status(
        ctx,
        webhook,
        &readiness,
        placement,
        generated,
        sink_usage,
        &route_state,
    )
    .await?;
    Ok(Action::requeue(again))
}

/// When the operator last changed an object (`subresource`: only that one, such as
/// `status`), from its field manager's entries.
fn written_at(
    meta: &ObjectMeta,
    subresource: Option<&str>,
) -> Option<k8s_openapi::jiff::Timestamp> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|f| f.manager.as_deref() == Some(names::FIELD_MANAGER))
        .filter(|f| subresource.is_none() || f.subresource.as_deref() == subresource)
        .filter_map(|f| f.time.as_ref())
        .map(|t| t.0)
        .max()
}

/// Applies the Service of a receiver of its own or of a sidecar; while the Webhook leaves
/// the pool `served_by` and its new placement is not Ready yet, the Service keeps selecting
/// the pool's pods instead (see `placement`).
async fn apply_service(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    service: Option<&Service>,
    served_by: Option<&str>,
    readiness: &Readiness,
) -> Result<()> {
    let Some(service) = service else {
        return Ok(());
    };
    match served_by.filter(|_| !readiness.reason.is_ready()) {
        Some(pool) => {
            let switched = children::switched_service(webhook, pool)?;
            apply(ctx, namespace, &switched, Some(&ctx.seen.services)).await?
        }
        None => apply(ctx, namespace, service, Some(&ctx.seen.services)).await?,
    };
    Ok(())
}

/// Applies the HTTPRoute of `spec.gateway` (or deletes the one this Webhook owns when the
/// field is gone); returns what became of it and the URL senders get through it.
async fn reconcile_route(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    spec: &ValidSpec,
    route: Option<&DynamicObject>,
) -> Result<(RouteState, Option<String>)> {
    let resource = route::http_route_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let (Some(route), Some(set)) = (route, spec.gateway.as_ref()) else {
        // (without the HTTPRoute kind in this cluster, there is nothing to delete)
        let name = names::receiver(&webhook.name_any());
        if seen::has_route(&ctx.seen.routes, namespace, &name)
            && delete_controlled(&api, webhook, &name).await?
        {
            info!("deleted the HTTPRoute: spec.gateway is gone");
        }
        return Ok((RouteState::NoRoute, None));
    };
    let applied = match crate::runtime::apply::apply_dynamic(
        &api,
        &resource,
        namespace,
        route,
        &ctx.seen.routes,
    )
    .await
    {
        Ok(applied) => applied,
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => {
            return Ok((RouteState::NotInstalled, None));
        }
        Err(e) => return Err(e),
    };
    // The first Gateway's listeners tell http from https; unreadable means http.
    let gateway = match set.parent_refs.first() {
        Some(parent) => {
            let ns = parent.namespace.as_deref().unwrap_or(namespace);
            let gateways: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), ns, &route::gateway_resource());
            match gateways.get_opt(&parent.name).await {
                Ok(found) => found.map(serde_json::to_value).transpose()?,
                Err(error) => {
                    debug!(%error, gateway = %parent.name, "cannot read the Gateway");
                    None
                }
            }
        }
        None => None,
    };
    let url = route::external_url(set, &spec.path, gateway.as_ref());
    Ok((
        RouteState::Applied(serde_json::to_value(&applied)?),
        Some(url),
    ))
}

/// What served a Webhook before it joined `pool` (a receiver of its own), once the pool
/// serves it: its Service, if it had one, is switched to the pool's pods (its URL keeps
/// answering), and its Deployment, ServiceAccount, Role, RoleBinding and config go once no
/// endpoint of that Service is one of its old pods any more. Returns whether it is all
/// done; `false` means: look again shortly.
async fn retire_own_receiver(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    pool: &str,
) -> Result<bool> {
    let name = webhook.name_any();
    let receiver = names::receiver(&name);
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), namespace);
    let had_service = seen::has(&ctx.seen.services, namespace, &receiver);
    if had_service
        && let Some(service) = services.get_opt(&receiver).await?
        && children::controlled_by(&service.metadata, webhook)
    {
        let switched = children::switched_service(webhook, pool)?;
        let pool_selector = switched.spec.as_ref().and_then(|s| s.selector.as_ref());
        if service.spec.as_ref().and_then(|s| s.selector.as_ref()) != pool_selector {
            info!(service = %receiver, pool, "switching the Service to the pool's pods");
            apply(ctx, namespace, &switched, Some(&ctx.seen.services)).await?;
            return Ok(false);
        }
        // kube-proxy follows EndpointSlices within a second or so: the old pods go once
        // none is named there and the switch is a few seconds old.
        let switched_at = written_at(&service.metadata, None);
        let settled = switched_at.is_none_or(|t| {
            k8s_openapi::jiff::Timestamp::now()
                .duration_since(t)
                .as_secs()
                >= placement::SETTLE_SECS
        });
        if !settled || old_pods_have_endpoints(ctx, namespace, &receiver, &name).await? {
            return Ok(false);
        }
    }
    remove_own_receiver(ctx, webhook, namespace).await?;
    let config = names::receiver_config(&name);
    delete_owned(ctx, &ctx.seen.config_maps, webhook, namespace, &config).await?;
    Ok(true)
}

/// Whether an EndpointSlice of the Service `service` still names a pod of the Webhook's own
/// receiver (kube-proxy may still send it connections).
async fn old_pods_have_endpoints(
    ctx: &Context,
    namespace: &str,
    service: &str,
    webhook: &str,
) -> Result<bool> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let named: Vec<String> = slices
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .flat_map(|s| s.endpoints)
        .filter_map(|e| e.target_ref.and_then(|r| r.name))
        .collect();
    if named.is_empty() {
        return Ok(false);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let own = names::selector_labels(webhook)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let old = pods
        .list_metadata(&ListParams::default().labels(&own))
        .await?;
    Ok(old.items.iter().any(|p| named.contains(&p.name_any())))
}

/// Whether the pods of `pool` serve `webhook`'s current generation, from their reports.
/// The `default` pool is created (with the defaults) the first time a Webhook needs it.
async fn pool_readiness(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    pool: &str,
) -> Result<Readiness> {
    let view = &ctx.pools;
    let key = ObjectRef::<ReceiverPool>::new(pool).within(namespace);
    // The API server is asked only when the store does not know the pool (yet).
    let pools: Api<ReceiverPool> = Api::namespaced(ctx.client.clone(), namespace);
    if view.pools.get(&key).is_none() && pools.get_opt(pool).await?.is_none() {
        if pool != DEFAULT_POOL {
            return Ok(Readiness::new(
                Reason::PoolNotFound,
                format!(
                    "ReceiverPool {pool:?} (spec.pool) does not exist in namespace \
                     {namespace:?}; create it, or name another pool"
                ),
            ));
        }
        let mut default = ReceiverPool::new(DEFAULT_POOL, ReceiverPoolSpec::default());
        default.metadata.labels = Some(BTreeMap::from([(
            "app.kubernetes.io/managed-by".to_string(),
            names::MANAGED_BY.to_string(),
        )]));
        match pools.create(&PostParams::default(), &default).await {
            Ok(_) => info!(pool, "created the default ReceiverPool"),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Until both are listed, what they hold says nothing.
    if view.pods.wait_until_ready().await.is_err() || view.reports.wait_until_ready().await.is_err()
    {
        return Err(Error::Render("the pool watches stopped".into()));
    }
    let pods = view.pods_of(namespace, pool);
    let reports = view.reports_of(namespace, pool);
    let name = webhook.name_any();
    let wanted = Wanted {
        name: &name,
        uid: webhook.metadata.uid.as_deref().unwrap_or_default(),
        generation: webhook.metadata.generation.unwrap_or_default(),
    };
    Ok(served::pool_readiness(pool, &wanted, &pods, &reports))
}

/// Deletes the receiver's own Deployment, ServiceAccount, Role and RoleBinding (when it now
/// runs as a sidecar), where this Webhook controls them.
async fn remove_own_receiver(ctx: &Context, webhook: &Webhook, namespace: &str) -> Result<()> {
    let name = names::receiver(&webhook.name_any());
    let seen = &ctx.seen;
    delete_owned(ctx, &seen.deployments, webhook, namespace, &name).await?;
    delete_owned(ctx, &seen.role_bindings, webhook, namespace, &name).await?;
    delete_owned(ctx, &seen.roles, webhook, namespace, &name).await?;
    delete_owned(ctx, &seen.service_accounts, webhook, namespace, &name).await
}

/// Deletes `name` if `webhook` controls it; asks the API server only when the watch of its
/// kind has seen it (see [`seen`]).
async fn delete_owned<K>(
    ctx: &Context,
    seen: &Store<PartialObjectMeta<K>>,
    webhook: &Webhook,
    namespace: &str,
    name: &str,
) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    if !seen::has(seen, namespace, name) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), namespace);
    delete_controlled(&api, webhook, name).await.map(|_| ())
}

/// Deletes `name` through `api` if `webhook` controls it ([`children::controlled_by`]);
/// returns whether it did. Gone already (or a kind this cluster does not serve) is fine.
async fn delete_controlled<K>(api: &Api<K>, webhook: &Webhook, name: &str) -> Result<bool>
where
    K: Resource + DeserializeOwned + Clone + Debug,
{
    let existing = match api.get(name).await {
        Ok(existing) => existing,
        Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    if !children::controlled_by(existing.meta(), webhook) {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Ends a reconciliation that cannot go on: children are left as they are, status says why.
async fn stop_not_ready(
    ctx: &Context,
    webhook: &Webhook,
    readiness: &Readiness,
    previous_secret: Option<String>,
    then: Action,
) -> Result<Action> {
    // What was last seen of the sidecar's pods stays, and so does the pool that serves it:
    // a Webhook leaving a pool still has its routes there (and one the pool cannot serve
    // now, invalid or in conflict, is left out of the pool's configuration anyway).
    let previous = webhook.status.as_ref();
    let placement = status::Placement {
        sidecar: previous.and_then(|s| s.sidecar.clone()),
        pool: previous.and_then(|s| s.pool.clone()),
        ..status::Placement::default()
    };
    write_status(
        ctx,
        webhook,
        readiness,
        placement,
        previous_secret,
        SinkUsage::Unknown,
        &RouteState::Unknown,
    )
    .await?;
    Ok(then)
}

/// Checks that the referenced Secret and key exist, or makes sure the generated one does.
async fn check_secret(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    spec: &ValidSpec,
) -> Result<SecretCheck> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let name = spec.secret.name();
    let key = spec.secret.key();
    let existing = secrets.get_opt(name).await?;
    let generated = match (&spec.secret, existing) {
        (SecretSource::Referenced { .. }, None) => {
            return Ok(SecretCheck::Missing(format!(
                "Secret {name:?} (spec.secretRef.name) does not exist in namespace {namespace:?}; create it with the signing secret under key {key:?}"
            )));
        }
        // A Secret of the generated one's name that this Webhook did not create is never
        // used: whoever made it could sign deliveries.
        (SecretSource::Generated { .. }, Some(found))
            if !children::controlled_by(&found.metadata, webhook) =>
        {
            return Err(Error::NotOwned(NotOwned {
                kind: "Secret".into(),
                name: name.to_string(),
                controller: crate::runtime::apply::controller_of(&found.metadata),
            }));
        }
        (SecretSource::Referenced { .. }, Some(found))
        | (SecretSource::Generated { .. }, Some(found)) => {
            if !has_key(&found, key) {
                return Ok(SecretCheck::Missing(format!(
                    "Secret {name:?} has no key {key:?}; add the signing secret under that key"
                )));
            }
            matches!(spec.secret, SecretSource::Generated { .. }).then(|| name.to_string())
        }
        (SecretSource::Generated { .. }, None) => {
            let value = secret::generate(spec.provider)?;
            let object = children::generated_secret(webhook, name, &value)?;
            match secrets.create(&PostParams::default(), &object).await {
                Ok(_) => {
                    info!(secret = name, "generated signing secret")
                }
                // Another replica or an earlier attempt won the race: keep theirs.
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Some(name.to_string())
        }
    };
    for (i, extra) in spec.additional_secrets.iter().enumerate() {
        let (name, key) = (extra.name(), extra.key());
        match secrets.get_opt(name).await? {
            None => {
                return Ok(SecretCheck::Missing(format!(
                    "Secret {name:?} (spec.additionalSecretRefs[{i}].name) does not exist in namespace {namespace:?}"
                )));
            }
            Some(found) if !has_key(&found, key) => {
                return Ok(SecretCheck::Missing(format!(
                    "Secret {name:?} (spec.additionalSecretRefs[{i}]) has no key {key:?}"
                )));
            }
            Some(_) => {}
        }
    }
    Ok(SecretCheck::Ready { generated })
}

fn has_key(secret: &Secret, key: &str) -> bool {
    let in_data = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.0.is_empty());
    let in_string_data = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .is_some_and(|v| !v.is_empty());
    in_data || in_string_data
}

/// Server-side applies `object` under the operator's field manager, if the object of its
/// name is absent or this Webhook's (see `apply`); `seen` is the watch's store of its kind.
async fn apply<K>(
    ctx: &Context,
    namespace: &str,
    object: &K,
    seen: Option<&Store<PartialObjectMeta<K>>>,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + 'static,
{
    crate::runtime::apply::apply(&ctx.client, namespace, object, seen).await
}

/// Deletes sink ConfigMaps this Webhook owns but no longer names.
async fn remove_stale_sinks(
    ctx: &Context,
    webhook: &Webhook,
    namespace: &str,
    spec: &ValidSpec,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
    let name = webhook.name_any();
    let wanted = spec.config_map.as_ref().map(|c| c.name.as_str());
    // (from the watch of managed ConfigMaps: see `seen`)
    let sinks = ctx.seen.config_maps.state().into_iter().filter(|cm| {
        let labels = cm.labels();
        cm.namespace().as_deref() == Some(namespace)
            && labels.get(names::WEBHOOK_LABEL) == Some(&name)
            && labels.get(names::ROLE_LABEL).map(String::as_str) == Some("sink")
    });
    for cm in sinks {
        let cm_name = cm.name_any();
        if children::controlled_by(&cm.metadata, webhook) && Some(cm_name.as_str()) != wanted {
            info!(configmap = %cm_name, "deleting sink ConfigMap no longer in spec");
            match api.delete(&cm_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Deletes the Ingress this Webhook owns once `spec.ingress` is gone.
async fn remove_stale_ingress(ctx: &Context, webhook: &Webhook, namespace: &str) -> Result<()> {
    let name = names::receiver(&webhook.name_any());
    delete_owned(ctx, &ctx.seen.ingresses, webhook, namespace, &name).await
}

/// Writes the status through the status subresource when it changed, and publishes an
/// Event when the `Ready` reason changes.
async fn write_status(
    ctx: &Context,
    webhook: &Webhook,
    readiness: &Readiness,
    placement: status::Placement,
    secret_name: Option<String>,
    sink: SinkUsage,
    route_state: &RouteState,
) -> Result<()> {
    let previous = webhook.status.as_ref();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let next = status::next_status(
        previous,
        readiness,
        webhook.metadata.generation,
        placement,
        secret_name,
        now.clone(),
    );
    let (next, sink_nearly_full) =
        status::with_sink_capacity(next, &sink, webhook.metadata.generation, now.clone());
    let next = route::with_route(next, route_state, webhook.metadata.generation, now.clone());
    let next = status::with_sidecars(next, webhook.metadata.generation, now);
    if previous == Some(&next) {
        return Ok(());
    }
    let name = webhook.name_any();
    let namespace = webhook
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let api: Api<Webhook> = Api::namespaced(ctx.client.clone(), &namespace);
    let patch = serde_json::json!({
        "apiVersion": Webhook::api_version(&()),
        "kind": Webhook::kind(&()),
        "status": next,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(names::FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    let previous_reason = webhook.ready_condition().map(|c| c.reason.as_str());
    if previous_reason != Some(readiness.reason.as_str()) {
        ctx.metrics
            .outcomes
            .get_or_create(&ReadyLabels {
                reason: readiness.reason.as_str().into(),
            })
            .inc();
        let ready = readiness.reason.is_ready();
        if ready {
            info!(reason = readiness.reason.as_str(), "webhook ready");
        } else {
            warn!(reason = readiness.reason.as_str(), detail = %readiness.message, "webhook not ready");
        }
        let event = Event {
            type_: if ready || readiness.reason == Reason::ReceiverUnavailable {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: readiness.reason.as_str().into(),
            note: Some(truncate(&readiness.message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &webhook.object_ref(&())).await {
            // An Event is a courtesy: failing to publish one must not fail the reconcile.
            warn!(%error, "cannot publish Event");
        }
    }
    if sink_nearly_full {
        let message = next
            .conditions
            .iter()
            .find(|c| c.type_ == status::SINK_CAPACITY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        warn!(detail = %message, "sink ConfigMap nearly full");
        let event = Event {
            type_: EventType::Warning,
            reason: "SinkNearlyFull".into(),
            note: Some(truncate(&message, 1000)),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &webhook.object_ref(&())).await {
            warn!(%error, "cannot publish Event");
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}...", hookwarden_api::text::prefix_within(s, max))
}

/// The reconcile against a mocked API server: each test lists the requests it expects, in
/// order, answers them, and fails on any other (a child written when none should be). The
/// cluster e2e tests are the evidence; these are the fast loop for controller changes.
#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use kube::runtime::reflector;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn context() -> (Arc<Context>, Handle, reflector::store::Writer<Webhook>) {
        context_seeing(|_| {})
    }

    /// A context whose watches of the children have seen what `fill` puts in.
    fn context_seeing(
        fill: impl FnOnce(&mut seen::Writers),
    ) -> (Arc<Context>, Handle, reflector::store::Writer<Webhook>) {
        let (seen, mut writers) = Seen::new(route::http_route_resource());
        fill(&mut writers);
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let (webhooks, writer) = reflector::store();
        let reporter = Reporter {
            controller: names::FIELD_MANAGER.into(),
            instance: None,
        };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics: Arc::default(),
            config: Config {
                namespaces: vec![],
                receiver: ReceiverDefaults {
                    image: "hookwarden-receiver:test".into(),
                    image_pull_policy: "IfNotPresent".into(),
                    image_pull_secrets: vec![],
                    guardrails: Default::default(),
                },
                instance: None,
            },
            webhooks,
            pools: PoolView {
                pools: reflector::store().0,
                pods: reflector::store().0,
                reports: reflector::store().0,
            },
            seen,
            failures: backoff::Streaks::default(),
        };
        (Arc::new(ctx), handle, writer)
    }

    fn webhook(name: &str, spec: Value, created: &str) -> Webhook {
        let mut w = Webhook::new(name, serde_json::from_value(spec).unwrap());
        w.metadata.namespace = Some("team".into());
        w.metadata.uid = Some(format!("uid-{name}"));
        w.metadata.generation = Some(1);
        w.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        w
    }

    /// The next request: its method, path and JSON body (Null when it has none).
    async fn next(
        handle: &mut Handle,
    ) -> (
        Method,
        String,
        Value,
        tower_test::mock::SendResponse<Response<Body>>,
    ) {
        let (request, send) = handle
            .next_request()
            .await
            .expect("the reconcile made no further request");
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (method, path, body, send)
    }

    fn answer(
        send: tower_test::mock::SendResponse<Response<Body>>,
        status: StatusCode,
        body: Value,
    ) {
        send.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap(),
        );
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
    }

    /// Expects the status patch and the Event that follow a verdict of `reason`; returns
    /// the Ready condition written.
    async fn expect_status_and_event(
        handle: &mut Handle,
        webhook: &Webhook,
        reason: &str,
        event_type: &str,
    ) -> Value {
        let name = webhook.metadata.name.clone().unwrap();
        let (method, path, body, send) = next(handle).await;
        assert_eq!(method, Method::PATCH);
        assert_eq!(
            path,
            format!("/apis/hookwarden.io/v1alpha1/namespaces/team/webhooks/{name}/status")
        );
        let ready = body["status"]["conditions"][0].clone();
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["reason"], reason, "{body}");
        let mut written = serde_json::to_value(webhook).unwrap();
        written["status"] = body["status"].clone();
        answer(send, StatusCode::OK, written);
        let (method, path, event, send) = next(handle).await;
        assert_eq!(
            (method, path.as_str()),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/team/events"
            )
        );
        assert_eq!(event["reason"], reason);
        assert_eq!(event["type"], event_type);
        assert_eq!(event["regarding"]["name"], name);
        answer(send, StatusCode::CREATED, event);
        ready
    }

    #[tokio::test]
    async fn an_invalid_spec_writes_status_and_an_event_and_no_child() {
        let (ctx, mut handle, _) = context();
        let w = webhook(
            "bad",
            json!({"path": "no-slash", "provider": "opal"}),
            "2026-01-01T00:00:00Z",
        );
        let reconcile = tokio::spawn({
            let (w, ctx) = (w.clone(), ctx.clone());
            async move { reconcile_inner(&w, &ctx).await }
        });
        let ready = expect_status_and_event(&mut handle, &w, "InvalidSpec", "Warning").await;
        assert!(
            ready["message"].as_str().unwrap().contains("spec.path"),
            "{ready}"
        );
        let action = reconcile.await.unwrap().unwrap();
        assert_eq!(
            action,
            Action::await_change(),
            "only a spec change can fix it"
        );
        drop(ctx);
        assert!(handle.next_request().await.is_none(), "a child was written");
    }

    #[tokio::test]
    async fn a_missing_secret_is_reported_and_looked_at_again() {
        let (ctx, mut handle, _) = context();
        let spec = json!({"path": "/gh", "provider": "github", "secretRef": {"name": "gh-secret", "key": "token"}});
        let w = webhook("gh", spec, "2026-01-01T00:00:00Z");
        let reconcile = tokio::spawn({
            let (w, ctx) = (w.clone(), ctx.clone());
            async move { reconcile_inner(&w, &ctx).await }
        });
        let (method, path, _, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (Method::GET, "/api/v1/namespaces/team/secrets/gh-secret")
        );
        answer(send, StatusCode::NOT_FOUND, not_found());
        let ready = expect_status_and_event(&mut handle, &w, "SecretNotFound", "Warning").await;
        assert!(
            ready["message"].as_str().unwrap().contains("\"gh-secret\""),
            "{ready}"
        );
        assert!(
            !ready.to_string().contains("token\":"),
            "no secret material: {ready}"
        );
        let action = reconcile.await.unwrap().unwrap();
        assert_eq!(action, Action::requeue(SECRET_RETRY));
        drop(ctx);
        assert!(handle.next_request().await.is_none(), "a child was written");
    }

    #[tokio::test]
    async fn the_newer_of_two_webhooks_for_one_sender_is_in_conflict() {
        let (ctx, mut handle, mut writer) = context();
        let older = webhook(
            "first",
            json!({"path": "/opal", "provider": "opal"}),
            "2026-01-01T00:00:00Z",
        );
        let newer = webhook(
            "second",
            json!({"path": "/opal2", "provider": "opal"}),
            "2026-01-02T00:00:00Z",
        );
        writer.apply_watcher_event(&watcher::Event::Apply(older));
        writer.apply_watcher_event(&watcher::Event::Apply(newer.clone()));
        let reconcile = tokio::spawn({
            let (w, ctx) = (newer.clone(), ctx.clone());
            async move { reconcile_inner(&w, &ctx).await }
        });
        let ready = expect_status_and_event(&mut handle, &newer, "Conflict", "Warning").await;
        assert!(
            ready["message"].as_str().unwrap().contains("\"first\""),
            "{ready}"
        );
        assert_eq!(
            reconcile.await.unwrap().unwrap(),
            Action::requeue(CONFLICT_RETRY)
        );
        drop(ctx);
        assert!(handle.next_request().await.is_none(), "a child was written");
    }

    /// Answers like an API server that has none of the objects yet: a GET finds nothing, a
    /// list is empty, a create or server-side apply returns what it was given. Returns
    /// every request as `METHOD path` and the bodies of the status patches.
    async fn empty_cluster(handle: Handle, webhook: Webhook) -> (Vec<String>, Vec<Value>) {
        cluster_with(handle, webhook, BTreeMap::new()).await
    }

    /// [`empty_cluster`], but a GET of a path in `existing` finds that object.
    async fn cluster_with(
        mut handle: Handle,
        webhook: Webhook,
        existing: BTreeMap<String, Value>,
    ) -> (Vec<String>, Vec<Value>) {
        let mut seen = Vec::new();
        let mut statuses = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let method = request.method().clone();
            let path = request.uri().path().to_string();
            let listing = request
                .uri()
                .query()
                .is_some_and(|q| q.contains("labelSelector"));
            let bytes = request.into_body().collect_bytes().await.unwrap();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.push(format!("{method} {path}"));
            match method {
                Method::GET if listing => answer(
                    send,
                    StatusCode::OK,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": []}),
                ),
                Method::GET => match existing.get(&path) {
                    Some(object) => answer(send, StatusCode::OK, object.clone()),
                    None => answer(send, StatusCode::NOT_FOUND, not_found()),
                },
                Method::PATCH if path.ends_with("/status") => {
                    statuses.push(body.clone());
                    let mut w = serde_json::to_value(&webhook).unwrap();
                    w["status"] = body["status"].clone();
                    answer(send, StatusCode::OK, w);
                }
                Method::PATCH | Method::POST => {
                    let mut object = body;
                    object["metadata"]["uid"] = json!("uid-child");
                    object["metadata"]["resourceVersion"] = json!("1");
                    let code = if method == Method::POST {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    answer(send, code, object);
                }
                other => panic!("unexpected {other} {path}"),
            }
        }
        (seen, statuses)
    }

    #[tokio::test]
    async fn the_happy_path_applies_every_child_in_order_then_writes_status() {
        let (ctx, handle, _) = context();
        let w = webhook(
            "gh",
            json!({"path": "/gh", "provider": "github", "receiver": {}}),
            "2026-01-01T00:00:00Z",
        );
        let server = tokio::spawn(empty_cluster(handle, w.clone()));
        let action = reconcile_inner(&w, &ctx).await.unwrap();
        drop(ctx);
        let (seen, statuses) = server.await.unwrap();
        let ns = "/namespaces/team";
        // Each child is looked at before it is applied (none exists: each is created).
        let looked_then_applied = |path: String| [format!("GET {path}"), format!("PATCH {path}")];
        let children = [
            format!("/api/v1{ns}/configmaps/gh-receiver-config"),
            format!("/api/v1{ns}/serviceaccounts/gh-receiver"),
            format!("/apis/rbac.authorization.k8s.io/v1{ns}/roles/gh-receiver"),
            format!("/apis/rbac.authorization.k8s.io/v1{ns}/rolebindings/gh-receiver"),
            format!("/apis/apps/v1{ns}/deployments/gh-receiver"),
            format!("/api/v1{ns}/services/gh-receiver"),
        ];
        let expected: Vec<String> = [
            format!("GET /api/v1{ns}/secrets/gh-signing-secret"),
            format!("POST /api/v1{ns}/secrets"),
        ]
        .into_iter()
        .chain(children.into_iter().flat_map(looked_then_applied))
        .chain([
            format!("PATCH /apis/hookwarden.io/v1alpha1{ns}/webhooks/gh/status"),
            format!("POST /apis/events.k8s.io/v1{ns}/events"),
        ])
        .collect();
        assert_eq!(seen, expected);
        // The Deployment has no available replica yet: not Ready, looked at again on resync.
        let ready = &statuses[0]["status"]["conditions"][0];
        assert_eq!(ready["reason"], "ReceiverUnavailable", "{ready}");
        assert_eq!(statuses[0]["status"]["secretName"], "gh-signing-secret");
        assert_eq!(
            statuses[0]["status"]["url"],
            "http://gh-receiver.team.svc/gh"
        );
        assert_eq!(action, Action::requeue(RESYNC));
    }

    #[tokio::test]
    async fn a_child_the_watches_have_seen_is_looked_at_and_only_that_one() {
        use kube::core::PartialObjectMetaExt;
        use kube::runtime::watcher;
        let (ctx, handle, _) = context_seeing(|w| {
            let meta = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("gh-receiver".into()),
                namespace: Some("team".into()),
                ..Default::default()
            };
            w.ingresses
                .apply_watcher_event(&watcher::Event::Apply(meta.into_response_partial()));
        });
        let w = webhook(
            "gh",
            json!({"path": "/gh", "provider": "github", "receiver": {}}),
            "2026-01-01T00:00:00Z",
        );
        let server = tokio::spawn(empty_cluster(handle, w.clone()));
        reconcile_inner(&w, &ctx).await.unwrap();
        drop(ctx);
        let (seen, _) = server.await.unwrap();
        let ns = "/namespaces/team";
        // (besides the look at each child before it is applied)
        let applied = |get: &str| seen.contains(&get.replacen("GET", "PATCH", 1));
        let looked_at: Vec<&String> = seen
            .iter()
            .filter(|r| r.starts_with("GET") && !applied(r))
            .collect();
        assert_eq!(
            looked_at,
            [
                &format!("GET /api/v1{ns}/secrets/gh-signing-secret"),
                &format!("GET /apis/networking.k8s.io/v1{ns}/ingresses/gh-receiver"),
            ]
        );
    }

    /// The attack of issue "Trust inside a namespace": a Webhook names an application's
    /// ConfigMap as its sink. The ConfigMap is left as it is (no apply, so no owner
    /// reference, so garbage collection never deletes it), the Webhook is `NotOwned`.
    #[tokio::test]
    async fn a_configmap_the_webhook_did_not_create_is_never_applied() {
        let (ctx, handle, _) = context();
        let w = webhook(
            "gh",
            json!({"path": "/gh", "provider": "github", "receiver": {},
                   "sinks": {"configMap": {"name": "app-settings", "mode": "latest"}}}),
            "2026-01-01T00:00:00Z",
        );
        let ns = "/namespaces/team";
        let app_settings = format!("/api/v1{ns}/configmaps/app-settings");
        let existing = BTreeMap::from([(
            app_settings.clone(),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "app-settings", "namespace": "team", "uid": "app"},
                   "data": {"feature": "on"}}),
        )]);
        let server = tokio::spawn(cluster_with(handle, w.clone(), existing));
        let action = reconcile(Arc::new(w), ctx.clone()).await.unwrap();
        drop(ctx);
        let (seen, statuses) = server.await.unwrap();
        assert!(seen.contains(&format!("GET {app_settings}")), "{seen:?}");
        assert!(
            !seen
                .iter()
                .any(|r| r.starts_with("PATCH") && r.ends_with("/app-settings")),
            "the application's ConfigMap was written: {seen:?}"
        );
        assert!(
            !seen.iter().any(|r| r.contains("/deployments/")),
            "a receiver was started for it: {seen:?}"
        );
        let ready = &statuses.last().unwrap()["status"]["conditions"][0];
        assert_eq!(ready["reason"], "NotOwned", "{ready}");
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.contains("ConfigMap \"app-settings\" exists")
                && message.contains("spec.sinks.configMap.name"),
            "{message}"
        );
        assert_eq!(action, Action::requeue(CONFLICT_RETRY));
    }

    /// A Secret of the generated secret's name that someone planted before the Webhook:
    /// never used (its author could sign deliveries), never applied.
    #[tokio::test]
    async fn a_planted_generated_secret_is_never_used() {
        let (ctx, handle, _) = context();
        let w = webhook(
            "gh",
            json!({"path": "/gh", "provider": "github", "receiver": {}}),
            "2026-01-01T00:00:00Z",
        );
        let ns = "/namespaces/team";
        let planted = format!("/api/v1{ns}/secrets/gh-signing-secret");
        let existing = BTreeMap::from([(
            planted.clone(),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": "gh-signing-secret", "namespace": "team", "uid": "p"},
                   "data": {"secret": "a25vd24="}}),
        )]);
        let server = tokio::spawn(cluster_with(handle, w.clone(), existing));
        reconcile(Arc::new(w), ctx.clone()).await.unwrap();
        drop(ctx);
        let (seen, statuses) = server.await.unwrap();
        assert!(
            !seen
                .iter()
                .any(|r| r.starts_with("PATCH") && !r.ends_with("/status")),
            "a child was applied with a planted secret: {seen:?}"
        );
        let ready = &statuses.last().unwrap()["status"]["conditions"][0];
        assert_eq!(ready["reason"], "NotOwned", "{ready}");
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains("Secret \"gh-signing-secret\""),
            "{ready}"
        );
    }

    fn server_error() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "InternalError", "code": 500, "message": "etcd is away"})
    }

    #[tokio::test]
    async fn a_failure_without_a_verdict_is_reported_in_ready_once() {
        let (ctx, mut handle, _) = context();
        let spec = json!({"path": "/gh", "provider": "github", "secretRef": {"name": "gh-secret", "key": "token"}});
        let w = Arc::new(webhook("gh", spec, "2026-01-01T00:00:00Z"));
        let run = tokio::spawn(reconcile(w.clone(), ctx.clone()));
        let (_, path, _, send) = next(&mut handle).await;
        assert_eq!(path, "/api/v1/namespaces/team/secrets/gh-secret");
        answer(send, StatusCode::INTERNAL_SERVER_ERROR, server_error());
        let ready = expect_status_and_event(&mut handle, &w, "ReconcileFailed", "Warning").await;
        assert_eq!(ready["status"], "Unknown");
        let message = ready["message"].as_str().unwrap();
        assert!(
            message.contains("retrying with back-off") && message.contains("etcd is away"),
            "{message}"
        );
        let error = run.await.unwrap().expect_err("the reconcile failed");
        assert_eq!(
            error_policy(w.clone(), &error, ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );

        // Failing again on the same spec writes nothing more: the verdict is there.
        let mut reported = (*w).clone();
        reported.status = Some(serde_json::from_value(json!({"conditions": [ready]})).unwrap());
        let run = tokio::spawn(reconcile(Arc::new(reported), ctx.clone()));
        let (_, _, _, send) = next(&mut handle).await;
        answer(send, StatusCode::INTERNAL_SERVER_ERROR, server_error());
        run.await.unwrap().expect_err("the reconcile failed");
        drop(ctx);
        assert!(handle.next_request().await.is_none(), "wrote again");
    }

    #[tokio::test]
    async fn a_failure_on_a_new_spec_keeps_where_the_receiver_is_reached() {
        let (ctx, mut handle, _) = context();
        let spec = json!({"path": "/gh", "provider": "github", "secretRef": {"name": "gh-secret", "key": "token"}});
        let mut w = webhook("gh", spec, "2026-01-01T00:00:00Z");
        w.metadata.generation = Some(2);
        w.status = Some(
            serde_json::from_value(json!({
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "ReceiverAvailable", "message": "",
                    "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"
                }],
                "url": "http://gh-receiver.team.svc/gh",
                "externalUrl": "https://hooks.example.com/gh"
            }))
            .unwrap(),
        );
        let run = tokio::spawn(reconcile(Arc::new(w.clone()), ctx.clone()));
        let (_, _, _, send) = next(&mut handle).await;
        answer(send, StatusCode::INTERNAL_SERVER_ERROR, server_error());
        let (method, path, body, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (
                Method::PATCH,
                "/apis/hookwarden.io/v1alpha1/namespaces/team/webhooks/gh/status"
            )
        );
        assert_eq!(body["status"]["conditions"][0]["reason"], "ReconcileFailed");
        assert_eq!(body["status"]["url"], "http://gh-receiver.team.svc/gh");
        assert_eq!(
            body["status"]["externalUrl"],
            "https://hooks.example.com/gh"
        );
        let mut written = serde_json::to_value(&w).unwrap();
        written["status"] = body["status"].clone();
        answer(send, StatusCode::OK, written);
        let (_, _, event, send) = next(&mut handle).await;
        assert_eq!(event["reason"], "ReconcileFailed");
        answer(send, StatusCode::CREATED, event);
        run.await.unwrap().expect_err("the reconcile failed");
    }

    #[tokio::test]
    async fn a_failure_after_a_verdict_keeps_ready_and_is_an_event() {
        let (ctx, mut handle, _) = context();
        let spec = json!({"path": "/gh", "provider": "github", "secretRef": {"name": "gh-secret", "key": "token"}});
        let mut w = webhook("gh", spec, "2026-01-01T00:00:00Z");
        w.status = Some(
            serde_json::from_value(json!({"conditions": [{
                "type": "Ready", "status": "True", "reason": "ReceiverAvailable", "message": "",
                "observedGeneration": 1, "lastTransitionTime": "2026-01-01T00:00:00Z"
            }]}))
            .unwrap(),
        );
        let run = tokio::spawn(reconcile(Arc::new(w), ctx.clone()));
        let (_, _, _, send) = next(&mut handle).await;
        answer(send, StatusCode::INTERNAL_SERVER_ERROR, server_error());
        let (method, path, event, send) = next(&mut handle).await;
        assert_eq!(
            (method, path.as_str()),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/team/events"
            )
        );
        assert_eq!(event["reason"], "ReconcileFailed");
        assert_eq!(event["type"], "Warning");
        answer(send, StatusCode::CREATED, event);
        run.await.unwrap().expect_err("the reconcile failed");
        drop(ctx);
        assert!(
            handle.next_request().await.is_none(),
            "the status was written"
        );
    }

    #[tokio::test]
    async fn errors_only_a_change_fixes_wait_for_it_and_the_others_back_off() {
        let (ctx, _handle, _) = context();
        let w = Arc::new(webhook(
            "gh",
            json!({"path": "/gh", "provider": "github"}),
            "2026-01-01T00:00:00Z",
        ));
        let api = |code: u16| {
            Error::Kube(kube::Error::Api(
                serde_json::from_value(
                    json!({"status": "Failure", "message": "m", "reason": "r", "code": code}),
                )
                .unwrap(),
            ))
        };
        let render = Error::Render("x".into());
        assert_eq!(
            error_policy(w.clone(), &render, ctx.clone()),
            Action::await_change()
        );
        // the others back off: 5 s, then 10 s, ...
        assert_eq!(
            error_policy(w.clone(), &api(500), ctx.clone()),
            Action::requeue(Duration::from_secs(5))
        );
        assert_eq!(
            error_policy(w.clone(), &api(403), ctx.clone()),
            Action::requeue(Duration::from_secs(10))
        );
        assert_eq!(
            error_policy(w.clone(), &api(422), ctx.clone()),
            Action::requeue(Duration::from_secs(20))
        );
        assert_eq!(
            error_policy(w, &api(409), ctx),
            Action::requeue(Duration::from_secs(40))
        );
    }
}
