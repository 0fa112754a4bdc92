//! The receiver pool: one process serving many Webhooks, reconfigured without a restart
//! (`hookwarden-receiver pool`).
//!
//! The operator renders a [`hookwarden_api::pool_config::PoolConfig`] into the pool's
//! ConfigMap; each pod watches it (or, outside a cluster, a file), and on each change:
//! checks it whole (a refused configuration leaves the table served as it was), plans what
//! changes Webhook by Webhook (`table`: pure), builds the changed entries, swaps the new
//! routing table in at once (the listeners are never touched; a delivery in flight
//! finishes with the state it started with), and reports what it serves (`report`).
//!
//! - `table`: the plan: entries kept, rebuilt (keeping their replay memory) or new, and
//!   dropped; the receiver configuration of one entry;
//! - `watch`: one named object watched through the API;
//! - `source`: the configuration's text, from the ConfigMap or a file;
//! - `secrets`: signing secrets, from a watch per Secret or a directory;
//! - `report`: the served report, into the served ConfigMap or a file;
//! - `run`: the pool itself.

mod report;
mod run;
mod secrets;
mod source;
mod table;
mod watch;

pub use run::{PoolOptions, SinkFactory, Source, run};
