//! hookwarden's contract: the types the operator and the receiver both build on, with no
//! I/O, HTTP or async runtime in them.
//!
//! - `webhook`: the `Webhook` custom resource (`webhooks.hookwarden.io/v1alpha1`).
//! - `config`: the receiver's config file, which the operator renders into a ConfigMap.
//! - `layout`: a `generic-hmac` sender's signature layout and its checks.
//! - `names`: labels and paths both sides use.
//! - `text`: bounded text for Kubernetes fields.

pub mod config;
pub mod error;
pub mod layout;
pub mod names;
pub mod text;
pub mod webhook;

pub use error::{Error, Result};
