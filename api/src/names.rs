//! Names and paths the operator and the receiver must agree on.

/// The label on every object that belongs to a Webhook (its children, the Events the
/// receiver records), with the Webhook's name as value.
pub const WEBHOOK_LABEL: &str = "hookwarden.io/webhook";

/// The directory the receiver's config ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/hookwarden";

/// The Webhook condition that tells whether the receiver can take deliveries.
pub const READY_CONDITION: &str = "Ready";

/// The most a sink ConfigMap's data may hold (keys and values, in bytes): the receiver
/// refuses a delivery that would take it past this, below the 1 MiB an object may weigh.
pub const SINK_MAX_BYTES: usize = 900 * 1024;

/// The Deployment, Service, ServiceAccount, Role, RoleBinding and PodDisruptionBudget of the
/// receiver pool `pool`.
pub fn pool_receiver(pool: &str) -> String {
    format!("{pool}-pool")
}

/// The Lease the replicas of receiver Deployment `deployment` elect the writer of their
/// ConfigMap sinks on (the receiver's `handoff`).
pub fn writer_lease(deployment: &str) -> String {
    format!("{deployment}-writer")
}

/// The ConfigMap holding the pool's configuration (`pool_config::POOL_CONFIG_FILE`).
pub fn pool_config(pool: &str) -> String {
    format!("{pool}-pool-config")
}

/// The ConfigMap each pool pod reports what it serves into (key: the pod's name).
pub fn pool_served(pool: &str) -> String {
    format!("{pool}-pool-served")
}
