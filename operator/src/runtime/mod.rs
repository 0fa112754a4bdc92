//! What every controller shares: server-side apply over what the operator made (`apply`),
//! the names and labels of what it makes (`names`), leader election (`leader`), and the
//! health and Prometheus endpoints (`metrics`), and the namespaces a watch covers
//! (`scope`).

pub mod apply;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod scope;

pub use scope::scoped;
