//! hookwarden's contract: the types the operator and the receiver both build on, with no
//! I/O, HTTP or async runtime in them.
//!
//! - `webhook`: the `Webhook` custom resource (`webhooks.hookwarden.io/v1alpha1`).
//! - `config`: the receiver's config file, which the operator renders into a ConfigMap.
//! - `pool`: the `ReceiverPool` custom resource (`receiverpools.hookwarden.io/v1alpha1`).
//! - `pool_config`: a pool's config (rendered by the operator) and what its pods report
//!   they serve.
//! - `layout`: a `generic-hmac` sender's signature layout and its checks.
//! - `names`: labels and paths both sides use.
//! - `text`: bounded text for Kubernetes fields.

pub mod config;
pub mod error;
pub mod layout;
pub mod names;
pub mod pool;
pub mod pool_config;
pub mod text;
pub mod webhook;

pub use error::{Error, Result};
