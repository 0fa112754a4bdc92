//! What every controller shares: server-side apply over what the operator made (`apply`),
//! how soon a failed reconcile is retried (`backoff`),
//! the names and labels of what it makes (`names`), leader election (`leader`), and the
//! health and Prometheus endpoints (`metrics`), and the namespaces a watch covers
//! (`scope`).

pub mod apply;
pub mod backoff;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod scope;

pub use scope::scoped;
