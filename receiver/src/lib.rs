//! hookwarden's receiver: verifies signed webhook deliveries and records them in Kubernetes.
//!
//! `config` is the file format the operator renders; `server` is the HTTP surface;
//! `secrets` reads the signing secrets from mounted files; `trace` is the W3C trace context a
//! forwarded delivery carries.

pub mod client;
pub mod clock;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod handoff;
pub mod metrics;
pub mod payload;
pub mod pool;
pub mod replay;
pub mod secrets;
pub mod server;
pub mod signature;
pub mod sink;
pub use hookwarden_process::telemetry;
pub mod trace;
pub mod view;

pub use error::{Error, Result};
