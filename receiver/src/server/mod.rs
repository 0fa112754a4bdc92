//! The receiver's HTTP surface: [`app`] builds the service, [`serve`] runs it until
//! SIGTERM.
//!
//! A delivery goes: source check -> Content-Length, signature and timestamp headers,
//! replay window -> a place in flight, bytes of the body budget, a rate-limit token ->
//! raw body (no frame stalled) -> signature check over those bytes -> replay check -> parse
//! -> event-type filter -> every sink confirms -> 2xx. Everything up to the body is decided
//! before a byte of it is read, so a sender that is refused costs no memory for its body.
//! Anything else gets a clear status and a short reason, never a secret, an expected
//! signature or internal error text.
//!
//! The receiver is internet-facing, and a pool pod serves every Webhook of a namespace, so
//! one sender must not hurt the others: each Webhook has its own places in flight
//! (`limits.maxConcurrentDeliveries`), rate limit and source ranges; the pod's budget of
//! body bytes in flight is shared, and a Webhook of a pool holds half of it at most.
//!
//! - `state`: what every delivery to one Webhook shares;
//! - `table`: which Webhook a delivery path belongs to (one in a dedicated receiver, many
//!   in a pool);
//! - `sources`: which source addresses a Webhook accepts, and where a delivery comes from
//!   (pure);
//! - `rate`: a Webhook's token bucket;
//! - `budget`: the pod's budget of body bytes in flight, and each Webhook's part of it;
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
//! bodies, extensions), its limits (sources, concurrency, rate, body size and budget,
//! body stall, timeout) are applied in the handler (`deliver`) rather than by tower layers, the header read timeout is one timer per connection
//! (`connection`) rather than hyper's one per request, and replay detection keeps its own
//! tables (`replay`). Each was measured with `make bench` (bench/run.sh: the receiver
//! against a bare axum server in the same run): the router alone was a fifth of what the
//! receiver costs beyond a bare server. Another method on a delivery path gets 405 with
//! `Allow: POST`, as axum answers it (delivery paths change while a pool runs, and are
//! not axum route patterns); everything else (health, 404, 405 on the health endpoints)
//! goes through axum as usual.

mod budget;
mod deliver;
mod outcome;
mod rate;
mod refusals;
mod serve;
mod sources;
mod state;
mod table;

pub use budget::{BodyBudget, DEFAULT_BODY_BUDGET, budget_bytes};
pub use refusals::{EACH as REFUSALS_LOGGED_EACH, WINDOW as REFUSAL_WINDOW};
pub use serve::{
    BODY_STALL_TIMEOUT, HEADER_READ_TIMEOUT, MAX_BUFFER_BYTES, Receiver, Reply, SHUTDOWN_GRACE,
    app, connection_limit, metrics_app, serve, serve_on, shutdown_signal,
};
pub use state::{AppState, REPLAY_CAPACITY, REPLAY_MEMORY_SECS};
pub use table::{Readiness, Table};
