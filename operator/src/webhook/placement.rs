//! Where a Webhook is served while it moves between placements: into a pool, out of one
//! (to a receiver of its own or a sidecar), or from one pool to another. Pure.
//!
//! `status.pool` names the pool that serves a Webhook; a pool renders its configuration for
//! the Webhooks that ask for it and those it still serves. A Webhook that leaves a pool
//! stays in it, with its routes (Ingress, HTTPRoute, Service) where they were, until its new
//! placement is Ready; then its routes switch, and the old pool lets it go
//! [`SETTLE_SECS`] later, once ingress controllers and kube-proxy have followed. No moment in
//! which its path goes unanswered.

/// How long after a moving Webhook's routes switched its old pool keeps serving it.
pub const SETTLE_SECS: i64 = 5;

/// What a reconciliation does about a Webhook's placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Point its routes (and `status.url`) at the new placement now.
    pub switch: bool,
    /// The pool that serves it from now on (`status.pool`).
    pub pool: Option<String>,
    /// Its routes switched and its old pool still serves it: look again shortly. (While
    /// the new placement is not Ready, the watches of what makes it Ready bring it back.)
    pub settling: bool,
}

/// The step for a Webhook served by `served_by` (its `status.pool`) that asks for `target`
/// (a pool, or `None`: a receiver of its own or a sidecar), whose new placement is `ready`,
/// and whose routes were switched to it `switched_for` seconds ago (its last status, written
/// then, names the new placement's URL), if they were.
pub fn step(
    served_by: Option<&str>,
    target: Option<&str>,
    ready: bool,
    switched_for: Option<i64>,
) -> Step {
    let leaving = served_by.is_some() && served_by != target;
    if !leaving {
        return Step {
            // A receiver of its own or a sidecar: routes as soon as they exist; a pool: once
            // it serves the Webhook.
            switch: target.is_none() || ready,
            pool: match ready {
                true => target.map(str::to_string),
                false => served_by.map(str::to_string),
            },
            settling: false,
        };
    }
    let settled = ready && switched_for.is_some_and(|s| s >= SETTLE_SECS);
    Step {
        switch: ready,
        pool: match settled {
            true => target.map(str::to_string),
            false => served_by.map(str::to_string),
        },
        settling: ready && !settled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(switch: bool, pool: Option<&str>, settling: bool) -> Step {
        Step {
            switch,
            pool: pool.map(str::to_string),
            settling,
        }
    }

    #[test]
    fn a_webhook_that_stays_where_it_is_is_served_there() {
        // A receiver of its own: routes at once, no pool.
        assert_eq!(step(None, None, false, None), s(true, None, false));
        assert_eq!(step(None, None, true, Some(100)), s(true, None, false));
        // Joining a pool: routes and status.pool once the pool serves it.
        assert_eq!(step(None, Some("p"), false, None), s(false, None, false));
        assert_eq!(step(None, Some("p"), true, None), s(true, Some("p"), false));
        // In its pool, while the pool's pods are away: still the pool's.
        assert_eq!(
            step(Some("p"), Some("p"), false, None),
            s(false, Some("p"), false)
        );
    }

    #[test]
    fn a_webhook_leaving_a_pool_stays_in_it_until_the_new_placement_serves_it() {
        // Its own receiver is starting: the pool serves it, routes stay.
        assert_eq!(
            step(Some("p"), None, false, None),
            s(false, Some("p"), false)
        );
        // Ready: routes switch, the pool keeps it a little longer.
        assert_eq!(step(Some("p"), None, true, None), s(true, Some("p"), true));
        assert_eq!(
            step(Some("p"), None, true, Some(SETTLE_SECS - 1)),
            s(true, Some("p"), true)
        );
        // Settled: the pool lets it go.
        assert_eq!(
            step(Some("p"), None, true, Some(SETTLE_SECS)),
            s(true, None, false)
        );
        // To another pool: the same, with the new pool in the end.
        assert_eq!(
            step(Some("p"), Some("q"), false, None),
            s(false, Some("p"), false)
        );
        assert_eq!(
            step(Some("p"), Some("q"), true, Some(0)),
            s(true, Some("p"), true)
        );
        assert_eq!(
            step(Some("p"), Some("q"), true, Some(60)),
            s(true, Some("q"), false)
        );
    }
}
