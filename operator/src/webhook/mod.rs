//! The Webhook controller and what it decides.
//!
//! `controller` does the I/O: its watches, the reconcile (read -> validate -> check
//! conflicts, guardrails and the Secret -> build children -> apply -> write status) and its
//! error policy; `triggers` and `seen` are its watches of children. The rest is pure:
//! `validate` (a spec into a checked one), `conflict` (what two Webhooks of a namespace
//! cannot share), `guardrails` (what the platform team allows), `secret` (a generated
//! signing secret), `children` (the objects a receiver needs, and the receiver pod template
//! that pools and the injector use too), `route` (the Gateway API HTTPRoute), `served` (what
//! a pool's pods report they serve), `placement` (moving into and out of a pool) and
//! `status` (conditions).

pub mod children;
pub mod conflict;
pub mod controller;
pub mod guardrails;
pub mod placement;
pub mod route;
pub mod secret;
pub mod seen;
pub mod served;
pub mod status;
pub mod triggers;
pub mod validate;
