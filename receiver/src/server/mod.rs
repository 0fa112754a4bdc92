//! The receiver's HTTP surface: [`app`] builds the service, [`serve`] runs it until
//! SIGTERM.
//!
//! A delivery goes: raw body -> signature check over those bytes -> replay check -> parse
//! -> event-type filter -> every sink confirms -> 2xx. Anything else gets a clear status
//! and a short reason, never a secret, an expected signature or internal error text.
//!
//! - `state`: what every delivery to one Webhook shares;
//! - `table`: which Webhook a delivery path belongs to (one in a dedicated receiver, many
//!   in a pool);
//! - `outcome`: what became of a delivery: its answer, metric label and log line;
//! - `refusals`: which deliveries that were not recorded get a log line of their own;
//! - `deliver`: one delivery, from the request to its outcome;
//! - `serve`: the service, the listener loop and shutdown.
//!
//! A delivery finds its Webhook's state in the routing table (`table`), which a pool
//! replaces whole when its configuration changes (an `ArcSwap`: a load and a lookup per
//! delivery, no lock); the delivery holds that state until it is answered.
//!
//! ## Why the delivery path is hand-made
//!
//! A POST to the delivery path bypasses axum's router (routing, boxed handler future and
//! bodies, extensions), its limits (concurrency, body size, timeout) are applied in the
//! handler rather than by tower layers, the header read timeout is one timer per connection
//! (`connection`) rather than hyper's one per request, and replay detection keeps its own
//! tables (`replay`). Each was measured with `make bench` (bench/run.sh: the receiver
//! against a bare axum server in the same run): the router alone was a fifth of what the
//! receiver costs beyond a bare server. Another method on a delivery path gets 405 with
//! `Allow: POST`, as axum answers it (delivery paths change while a pool runs, and are
//! not axum route patterns); everything else (health, 404, 405 on the health endpoints)
//! goes through axum as usual.

mod deliver;
mod outcome;
mod refusals;
mod serve;
mod state;
mod table;

pub use refusals::{EACH as REFUSALS_LOGGED_EACH, WINDOW as REFUSAL_WINDOW};
pub use serve::{
    HEADER_READ_TIMEOUT, Receiver, Reply, SHUTDOWN_GRACE, app, metrics_app, serve, serve_on,
    shutdown_signal,
};
pub use state::{AppState, REPLAY_CAPACITY, REPLAY_MEMORY_SECS};
pub use table::{Readiness, Table};
