//! Names and paths the operator and the receiver must agree on.

/// The label on every object that belongs to a Webhook (its children, the Events the
/// receiver records), with the Webhook's name as value.
pub const WEBHOOK_LABEL: &str = "hookwarden.io/webhook";

/// The directory the receiver's config ConfigMap is mounted at.
pub const CONFIG_DIR: &str = "/etc/hookwarden";

/// The Webhook condition that tells whether the receiver can take deliveries.
pub const READY_CONDITION: &str = "Ready";
