//! What every request shares.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::refusals::Refusals;

use crate::clock::{Clock, system_clock};
use crate::config::ReceiverConfig;
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

/// What every handler shares.
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
    /// Which deliveries that were not recorded are logged one by one.
    pub(super) refusals: Arc<Refusals>,
}

impl AppState {
    pub fn new(config: ReceiverConfig, sinks: Sinks) -> Self {
        let scheme = crate::signature::Scheme::of(&config);
        let config_webhook = config.webhook.clone();
        let config_provider = config.provider;
        let max_in_flight = config.limits.max_concurrent_deliveries as usize;
        AppState {
            secrets: SecretStore::new(config.provider, config.secret_files.clone()),
            config: Arc::new(config),
            scheme: Arc::new(scheme),
            replay: Arc::new(ReplayCache::new(REPLAY_MEMORY_SECS, REPLAY_CAPACITY)),
            sinks: Arc::new(sinks),
            metrics: Arc::new(Metrics::new(
                &format!("{}/{}", config_webhook.namespace, config_webhook.name),
                config_provider.as_str(),
            )),
            clock: system_clock(),
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            refusals: Arc::default(),
        }
    }
}
