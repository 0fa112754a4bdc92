//! What every delivery to one Webhook shares.

use std::sync::Arc;

use axum::http::HeaderValue;
use tokio::sync::Semaphore;

use super::budget::{BodyBudget, DEFAULT_BODY_BUDGET, Share};
use super::outcome::log_window;
use super::rate::Bucket;
use super::refusals::Refusals;
use super::sources::Sources;

use crate::clock::{Clock, system_clock};
use crate::config::ReceiverConfig;
use crate::handoff::Handoff;
use crate::metrics::Metrics;
use crate::replay::ReplayCache;
use crate::secrets::SecretStore;
use crate::signature::Scheme;
use crate::sink::Sinks;

/// How long a recorded delivery is remembered for replay detection without a timestamp.
pub const REPLAY_MEMORY_SECS: i64 = 24 * 3600;
/// At most this many deliveries are remembered for replay detection, and at least half as
/// many: the last 100 000 (see `replay`).
pub const REPLAY_CAPACITY: usize = 200_000;

/// What every delivery to one Webhook shares: a dedicated receiver has one, a pool one per
/// Webhook it serves.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ReceiverConfig>,
    pub scheme: Arc<Scheme>,
    pub secrets: SecretStore,
    pub replay: Arc<ReplayCache>,
    pub sinks: Arc<Sinks>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    /// Places for deliveries in flight, `limits.maxConcurrentDeliveries` of them, taken
    /// without waiting (`try_acquire`): past that, a delivery is shed with 503.
    pub in_flight: Arc<Semaphore>,
    /// The pod's budget of body bytes in flight (see `budget`), shared by every Webhook
    /// the pod serves: [`DEFAULT_BODY_BUDGET`] of this Webhook's own unless given one.
    pub budget: Arc<BodyBudget>,
    /// What this Webhook holds of the budget now.
    pub(super) body_share: Arc<Share>,
    /// `limits.rateLimit`'s token bucket, if the Webhook has one.
    pub(super) rate: Option<Arc<Bucket>>,
    /// `limits.sourceRanges` and `limits.trustedProxies`, parsed.
    pub(super) sources: Arc<Sources>,
    /// Which deliveries that were not recorded are logged one by one.
    pub(super) refusals: Arc<Refusals>,
    /// The election of the replica that writes ConfigMap sinks (see `handoff`); `None`
    /// outside a cluster, and when the operator runs no election.
    pub handoff: Option<Arc<Handoff>>,
    /// What a handoff of this Webhook's deliveries says of its configuration.
    pub(super) fingerprint: HeaderValue,
}

impl AppState {
    /// The state of a receiver of its own: secrets read from `config.secretFiles`, metrics
    /// in a registry of its own.
    pub fn new(config: ReceiverConfig, sinks: Sinks) -> Self {
        let metrics = Metrics::new(
            &format!("{}/{}", config.webhook.namespace, config.webhook.name),
            config.provider.as_str(),
        );
        let secrets = SecretStore::new(config.provider, config.secret_files.clone());
        Self::with(config, sinks, secrets, Arc::new(metrics))
    }

    /// The state of a Webhook whose secrets and metrics are given (a pool's).
    pub fn with(
        config: ReceiverConfig,
        sinks: Sinks,
        secrets: SecretStore,
        metrics: Arc<Metrics>,
    ) -> Self {
        let scheme = crate::signature::Scheme::of(&config);
        let fingerprint = crate::handoff::fingerprint(&config);
        let max_in_flight = config.limits.max_concurrent_deliveries as usize;
        let rate = config.limits.rate_limit.as_ref().and_then(Bucket::new);
        let sources = Sources::of(&config.limits);
        AppState {
            secrets,
            config: Arc::new(config),
            scheme: Arc::new(scheme),
            replay: Arc::new(ReplayCache::new(REPLAY_MEMORY_SECS, REPLAY_CAPACITY)),
            sinks: Arc::new(sinks),
            metrics,
            clock: system_clock(),
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            budget: Arc::new(BodyBudget::new(DEFAULT_BODY_BUDGET)),
            body_share: Arc::default(),
            rate: rate.map(Arc::new),
            sources: Arc::new(sources),
            refusals: Arc::default(),
            handoff: None,
            fingerprint,
        }
    }

    /// Takes over what `before` (the same Webhook, configured differently) remembers: the
    /// deliveries it recorded, so that a replay of one stays a duplicate, its current
    /// window of refusals, what its deliveries in flight hold of the body budget, and its
    /// token bucket where the rate limit did not change.
    pub fn carry_over(&mut self, before: &AppState) {
        self.replay = before.replay.clone();
        self.refusals = before.refusals.clone();
        self.body_share = before.body_share.clone();
        if self.config.limits.rate_limit == before.config.limits.rate_limit {
            self.rate = before.rate.clone();
        }
    }

    /// Bytes of the body budget this Webhook's deliveries hold now.
    pub fn body_bytes_held(&self) -> u64 {
        self.body_share.held()
    }

    /// Deliveries to this Webhook in flight now.
    pub fn deliveries_in_flight(&self) -> usize {
        let places =
            (self.config.limits.max_concurrent_deliveries as usize).min(Semaphore::MAX_PERMITS);
        places.saturating_sub(self.in_flight.available_permits())
    }

    /// Ends the current window of refusals: logs the summary of what it did not log one by
    /// one, if anything.
    pub fn end_refusal_window(&self) {
        log_window(&self.config.webhook.name, &self.refusals);
    }
}
