//! The pool: reads its configuration as it changes, builds the routing table it plans
//! (`table`), swaps it in without touching the listeners, and reports what it serves.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hookwarden_api::pool_config::{PoolConfig, PoolWebhook, ServedReport};
use tokio::sync::{mpsc, watch};

use super::report::{ReportTarget, served_report, writer};
use super::secrets::{SecretSource, SecretUpdate, SecretWatches};
use super::source::{self, ConfigUpdate};
use super::table::{Step, plan, receiver_config, secret_names};
use crate::config::ReceiverConfig;
use crate::error::{Error, Result};
use crate::handoff::{Election, Handoff};
use crate::metrics::{Families, Metrics, Scrape};
use crate::secrets::SecretState;
use crate::server::{
    AppState, BodyBudget, DEFAULT_BODY_BUDGET, Readiness, Receiver, Table, connection_limit,
    metrics_app, serve_on,
};
use crate::sink::Sinks;

/// Where a pool's configuration and secrets come from.
pub enum Source {
    /// In a cluster: ConfigMap `config_map` (key `pool.yaml`) and the Secrets it names,
    /// watched in `namespace`; what is served reported under key `pod_name` of ConfigMap
    /// `served_config_map`.
    Cluster {
        namespace: String,
        config_map: String,
        served_config_map: String,
        pod_name: String,
    },
    /// Outside a cluster: the file `config`, re-read when it changes, and secrets in
    /// `secrets_dir/<secret>/<key>`; what is served written to `served_file`, if given.
    Files {
        config: PathBuf,
        secrets_dir: PathBuf,
        served_file: Option<PathBuf>,
    },
}

/// The sinks of one Webhook, made from its configuration (the benchmark's counting sink
/// instead of the configured ones).
pub type SinkFactory = Arc<dyn Fn(&ReceiverConfig) -> Sinks + Send + Sync>;

pub struct PoolOptions {
    pub source: Source,
    /// Where deliveries and health checks are served; set at start, never moved.
    pub listen: SocketAddr,
    /// Where metrics are served.
    pub metrics_listen: SocketAddr,
    /// How often the configuration file is read (`Source::Files`).
    pub config_poll: Duration,
    /// How often the secret files are re-read (`Source::Files`).
    pub secrets_refresh: Duration,
    /// Makes each Webhook's sinks; `None`: the sinks its configuration names.
    pub sinks: Option<SinkFactory>,
    /// The election of the replica that writes the ConfigMap sinks (`Source::Cluster`;
    /// see `handoff`).
    pub election: Option<Election>,
    /// The pod's budget of body bytes in flight, shared by every Webhook served (see
    /// `server::budget_bytes`).
    pub body_budget: u64,
}

impl PoolOptions {
    /// Options with the default addresses and periods.
    pub fn new(source: Source) -> Self {
        PoolOptions {
            source,
            listen: SocketAddr::from(([0, 0, 0, 0], crate::config::DEFAULT_PORT)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], crate::config::DEFAULT_METRICS_PORT)),
            config_poll: Duration::from_millis(500),
            secrets_refresh: Duration::from_secs(5),
            sinks: None,
            election: None,
            body_budget: DEFAULT_BODY_BUDGET,
        }
    }
}

/// One Webhook served: its entry as configured, and the state its deliveries share.
#[derive(Clone)]
struct Entry {
    webhook: PoolWebhook,
    state: Arc<AppState>,
}

/// What the pool serves and where it comes from.
struct Pool {
    receiver: Receiver,
    families: Arc<Families>,
    secrets: SecretSource,
    sinks: Option<SinkFactory>,
    /// The API client: the pool's own in a cluster; outside, made the first time a sink
    /// needs one (`None` inside once that failed).
    client: Option<Option<kube::Client>>,
    served: BTreeMap<String, Entry>,
    /// Where deliveries to Webhooks with a ConfigMap sink are handed (see `handoff`).
    handoff: Option<Arc<Handoff>>,
    /// The body budget every Webhook's state shares.
    budget: Arc<BodyBudget>,
    namespace: String,
    refused: Option<String>,
    listening: (SocketAddr, SocketAddr),
    report: watch::Sender<Option<ServedReport>>,
}

/// The pool's metrics: every Webhook's series, and the pool's gauges as of the scrape.
struct PoolScrape {
    families: Arc<Families>,
    receiver: Receiver,
}

impl Scrape for PoolScrape {
    fn scrape(&self) -> String {
        if let Some(gauges) = self.families.pool_gauges() {
            let table = self.receiver.table();
            let in_flight: usize = table.states().map(|s| s.deliveries_in_flight()).sum();
            gauges.webhooks.set(table.len() as i64);
            gauges.in_flight.set(in_flight as i64);
        }
        self.families.encode()
    }
}

/// Runs a pool until `shutdown` completes, then lets in-flight deliveries finish.
pub async fn run(
    options: PoolOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut handoff = None;
    let (client, mut configs, secrets, target, secret_updates) = match options.source {
        Source::Cluster {
            namespace,
            config_map,
            served_config_map,
            pod_name,
        } => {
            let client = kube::Client::try_default()
                .await
                .map_err(Error::KubeClient)?;
            if let Some(election) = &options.election {
                handoff = Some(Handoff::join(
                    client.clone(),
                    election,
                    options.listen.port(),
                )?);
            }
            let configs = source::config_map(client.clone(), &namespace, &config_map);
            let (watches, updates) = SecretWatches::new(client.clone(), &namespace);
            let target = ReportTarget::ConfigMap {
                client: client.clone(),
                namespace,
                name: served_config_map,
                pod: pod_name,
            };
            (
                Some(Some(client)),
                configs,
                SecretSource::Api(Box::new(watches)),
                target,
                Some(updates),
            )
        }
        Source::Files {
            config,
            secrets_dir,
            served_file,
        } => (
            None,
            source::file(config, options.config_poll),
            SecretSource::Dir(secrets_dir),
            served_file.map_or(ReportTarget::Nowhere, ReportTarget::File),
            None,
        ),
    };
    let families = Arc::new(Families::pool());
    let receiver = Receiver::new(Table::empty());

    let metrics_listener = bind(options.metrics_listen).await?;
    let scrape = Arc::new(PoolScrape {
        families: families.clone(),
        receiver: receiver.clone(),
    });
    tokio::spawn(async move {
        if let Err(error) = axum::serve(metrics_listener, metrics_app(scrape)).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    let listener = bind(options.listen).await?;
    tracing::info!(addr = %options.listen, body_budget = options.body_budget, "receiver pool listening; waiting for its configuration");
    // Stopping, the pod leaves the writer election before it drains (see `handoff`).
    let shutdown = Handoff::leaving_after(shutdown, handoff.clone());
    let connections = connection_limit(options.body_budget);
    let mut serving = tokio::spawn(serve_on(listener, receiver.clone(), connections, shutdown));

    let mut pool = Pool {
        receiver,
        families,
        secrets,
        sinks: options.sinks,
        client,
        served: BTreeMap::new(),
        handoff,
        budget: Arc::new(BodyBudget::new(options.body_budget)),
        namespace: String::new(),
        refused: None,
        listening: (options.listen, options.metrics_listen),
        report: writer(target),
    };
    let mut secret_updates = secret_updates.unwrap_or_else(|| mpsc::channel(1).1);
    let mut refresh = tokio::time::interval(options.secrets_refresh);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut serving => break,
            Some(update) = configs.recv() => pool.apply(update).await,
            Some(update) = secret_updates.recv() => pool.secret_changed(update),
            _ = refresh.tick() => pool.reread_secret_files(),
        }
    }
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

impl Pool {
    /// Serves `update` if it is a valid configuration; else keeps serving what it serves
    /// and reports why.
    async fn apply(&mut self, update: ConfigUpdate) {
        let config = match update
            .and_then(|text| PoolConfig::from_yaml(&text).map_err(|e| e.to_string()))
        {
            Ok(config) => config,
            Err(reason) => {
                tracing::warn!(%reason, served = self.served.len(), "pool configuration refused; serving the one before");
                self.refused = Some(reason);
                self.send_report();
                return;
            }
        };
        if (config.listen, config.metrics_listen) != self.listening {
            tracing::warn!(
                listen = %config.listen,
                metrics_listen = %config.metrics_listen,
                "the configuration's addresses differ from the ones listened on, which are set at start (--listen, --metrics-listen)"
            );
        }
        let before: BTreeMap<String, PoolWebhook> = self
            .served
            .iter()
            .map(|(name, e)| (name.clone(), e.webhook.clone()))
            .collect();
        let plan = plan(&before, &self.namespace, &config);
        if let SecretSource::Api(watches) = &mut self.secrets {
            watches.follow(&secret_names(&config));
        }
        let mut next = BTreeMap::new();
        for webhook in &config.webhooks {
            let step = plan
                .steps
                .iter()
                .find(|(name, _)| *name == webhook.name)
                .map_or(Step::New, |(_, step)| *step);
            let old = self.served.get(&webhook.name).cloned();
            let entry = match (step, old) {
                (Step::Keep, Some(old)) => old,
                (step, old) => {
                    let mut state = self.build(&config, webhook).await;
                    if let (Step::Rebuild, Some(old)) = (step, old) {
                        state.carry_over(&old.state);
                    }
                    Entry {
                        webhook: webhook.clone(),
                        state: Arc::new(state),
                    }
                }
            };
            next.insert(webhook.name.clone(), entry);
        }
        self.receiver.swap(Table::new(
            next.values().map(|e| e.state.clone()),
            Readiness::Applied,
        ));
        // Series of Webhooks no longer served go; a Webhook rebuilt under the same labels
        // keeps counting in its series.
        let live: HashSet<_> = next.values().map(|e| e.state.metrics.labels()).collect();
        for old in self.served.values() {
            if !live.contains(old.state.metrics.labels()) {
                self.families.remove(old.state.metrics.labels());
            }
        }
        for name in &plan.dropped {
            if let Some(old) = self.served.get(name) {
                old.state.end_refusal_window();
            }
        }
        tracing::info!(
            pool = %config.pool.name,
            webhooks = next.len(),
            kept = plan.count(Step::Keep),
            changed = plan.count(Step::Rebuild),
            added = plan.count(Step::New),
            removed = plan.dropped.len(),
            "pool configuration applied"
        );
        for entry in next.values() {
            if let SecretState::Unavailable(reason) = entry.state.secrets.current() {
                tracing::warn!(webhook = %entry.webhook.name, %reason, "signing secrets unavailable; refusing its deliveries");
            }
        }
        drop(live);
        self.served = next;
        self.namespace = config.pool.namespace;
        self.refused = None;
        self.send_report();
    }

    /// The state of `webhook` of `config`, new.
    async fn build(&mut self, config: &PoolConfig, webhook: &PoolWebhook) -> AppState {
        let receiver = receiver_config(config, webhook, self.secrets.files_for(webhook));
        let sinks = match &self.sinks {
            Some(make) => make(&receiver),
            None => {
                let client = self.client_for(&receiver).await;
                Sinks::from_config(&receiver, client)
            }
        };
        let metrics = Metrics::of(
            self.families.clone(),
            &format!("{}/{}", receiver.webhook.namespace, receiver.webhook.name),
            receiver.provider.as_str(),
        );
        let secrets = self.secrets.store_for(webhook);
        let mut state = AppState::with(receiver, sinks, secrets, Arc::new(metrics));
        state.handoff = self.handoff.clone();
        state.budget = self.budget.clone();
        state
    }

    /// An API client, when `receiver`'s sinks write to the API.
    async fn client_for(&mut self, receiver: &ReceiverConfig) -> Option<kube::Client> {
        if !receiver.sinks.events && receiver.sinks.config_map.is_none() {
            return None;
        }
        if self.client.is_none() {
            let client = kube::Client::try_default()
                .await
                .inspect_err(|error| {
                    tracing::warn!(%error, "no Kubernetes client: the events and configMap sinks refuse deliveries")
                })
                .ok();
            self.client = Some(client);
        }
        self.client.clone().flatten()
    }

    /// A Secret changed: the Webhooks that name it take its new value.
    fn secret_changed(&mut self, update: SecretUpdate) {
        let SecretSource::Api(watches) = &mut self.secrets else {
            return;
        };
        let name = update.name.clone();
        if !watches.update(update) {
            return;
        }
        let mut changed = false;
        for entry in self.served.values() {
            if entry.webhook.secrets.iter().any(|s| s.name == name)
                && entry
                    .state
                    .secrets
                    .set(watches.resolve(&entry.webhook.secrets))
            {
                log_secrets(entry);
                changed = true;
            }
        }
        if changed {
            self.send_report();
        }
    }

    /// Re-reads the secret files (`Source::Files`).
    fn reread_secret_files(&mut self) {
        let mut changed = false;
        for entry in self.served.values() {
            if entry.state.secrets.reload() {
                log_secrets(entry);
                changed = true;
            }
        }
        if changed {
            self.send_report();
        }
    }

    /// Reports what is served now, if that changed.
    fn send_report(&self) {
        let report = served_report(
            self.served
                .values()
                .map(|e| (&e.webhook, e.state.secrets.current())),
            self.refused.as_deref(),
        );
        self.report.send_if_modified(|last| {
            let modified = last.as_ref() != Some(&report);
            if modified {
                *last = Some(report);
            }
            modified
        });
    }
}

fn log_secrets(entry: &Entry) {
    match entry.state.secrets.current() {
        SecretState::Loaded(s) => {
            tracing::info!(webhook = %entry.webhook.name, secrets = s.len(), "signing secrets loaded")
        }
        SecretState::Unavailable(reason) => {
            tracing::warn!(webhook = %entry.webhook.name, %reason, "signing secrets unavailable; refusing its deliveries")
        }
    }
}
