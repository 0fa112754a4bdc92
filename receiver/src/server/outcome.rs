//! What became of one delivery: the answer the sender gets, the metric label and the log
//! line.

use axum::body::Bytes;
use axum::http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use super::refusals::{Refusals, WINDOW};
use crate::delivery::RecordError;
use crate::payload::ParseError;
use crate::signature::Rejection;
use crate::trace::TraceId;

/// The result of one delivery.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Recorded by every sink: how many events, and the trace the delivery was part of,
    /// where it had one (see `deliver::trace_context`).
    Recorded {
        events: usize,
        trace_id: Option<TraceId>,
    },
    Duplicate,
    Ignored,
    Rejected(Rejection),
    Malformed(ParseError),
    NoSecret,
    NotRecorded(RecordError),
    Overloaded,
    TooLarge,
    TimedOut,
    BodyUnreadable,
    /// A handoff from a replica that serves another configuration of the Webhook.
    HandoffRefused,
    /// From a source outside the Webhook's `limits.sourceRanges`, or an unknown one.
    SourceRefused,
    /// Past the Webhook's `limits.rateLimit`; the next token is this many seconds away.
    RateLimited {
        retry_after: u64,
    },
    /// No room in the pod's budget of body bytes in flight, or in the Webhook's part of it.
    BodyBudget,
    /// The body stopped arriving for `connection::BODY_STALL_TIMEOUT`.
    BodyStalled,
}

impl Outcome {
    pub(super) fn label(&self) -> &'static str {
        match self {
            Outcome::Recorded { .. } => "recorded",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Rejected(r) => r.metric_label(),
            Outcome::Malformed(_) => "malformed_payload",
            Outcome::NoSecret => "no_secret",
            Outcome::NotRecorded(e) => e.metric_label(),
            Outcome::Overloaded => "overloaded",
            Outcome::TooLarge => "too_large",
            Outcome::TimedOut => "timed_out",
            Outcome::BodyUnreadable => "body_unreadable",
            Outcome::HandoffRefused => "handoff_refused",
            Outcome::SourceRefused => "source_refused",
            Outcome::RateLimited { .. } => "rate_limited",
            Outcome::BodyBudget => "body_budget",
            Outcome::BodyStalled => "body_stalled",
        }
    }

    /// Whether the delivery was refused: neither recorded nor acknowledged.
    pub(super) fn is_refusal(&self) -> bool {
        !matches!(
            self,
            Outcome::Recorded { .. } | Outcome::Duplicate | Outcome::Ignored
        )
    }
}

impl Outcome {
    pub(super) fn answer(self) -> Response<Full<Bytes>> {
        // Fixed texts wherever possible: the common answers cost no formatting.
        fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
            let mut resp = Response::new(Full::new(body.into()));
            *resp.status_mut() = status;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
            json(status, serde_json::json!({ "error": message }).to_string())
        }
        fn retry_after(
            mut resp: Response<Full<Bytes>>,
            seconds: &'static str,
        ) -> Response<Full<Bytes>> {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
            resp
        }
        match self {
            Outcome::Recorded { events: 1, .. } => {
                json(StatusCode::OK, r#"{"events":1,"status":"recorded"}"#)
            }
            Outcome::Recorded { events: n, .. } => json(
                StatusCode::OK,
                format!(r#"{{"events":{n},"status":"recorded"}}"#),
            ),
            Outcome::Duplicate => json(StatusCode::OK, r#"{"status":"duplicate"}"#),
            Outcome::Ignored => json(StatusCode::OK, r#"{"status":"ignored"}"#),
            Outcome::Rejected(
                r @ (Rejection::MalformedHeader { .. } | Rejection::DuplicateKey),
            ) => error(StatusCode::BAD_REQUEST, &r.to_string()),
            Outcome::Rejected(r) => {
                let mut resp = error(StatusCode::UNAUTHORIZED, &r.to_string());
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("HMAC realm=\"hookwarden\""),
                );
                resp
            }
            Outcome::Malformed(e) => error(
                StatusCode::BAD_REQUEST,
                &format!("payload not understood: {e}"),
            ),
            Outcome::NoSecret => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing secret unavailable; not recorded",
            ),
            Outcome::NotRecorded(_) => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "delivery not recorded; retry",
                ),
                "5",
            ),
            Outcome::Overloaded => retry_after(
                error(StatusCode::SERVICE_UNAVAILABLE, "overloaded; retry"),
                "1",
            ),
            Outcome::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
            Outcome::TimedOut => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "delivery not handled in time; not recorded",
                ),
                "5",
            ),
            Outcome::BodyUnreadable => error(StatusCode::BAD_REQUEST, "request body unreadable"),
            Outcome::HandoffRefused => error(
                StatusCode::CONFLICT,
                "handoff refused: this replica serves another configuration of the Webhook",
            ),
            Outcome::SourceRefused => error(StatusCode::FORBIDDEN, "source not accepted"),
            Outcome::RateLimited { retry_after } => {
                let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate limited; retry");
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
                resp
            }
            Outcome::BodyBudget => retry_after(
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded: too many body bytes in flight; retry",
                ),
                "1",
            ),
            // The rest of the body may still come: the connection cannot carry another
            // request.
            Outcome::BodyStalled => {
                let mut resp = error(StatusCode::REQUEST_TIMEOUT, "request body stalled");
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }
        }
    }
}

/// One structured line per delivery, never its contents. A recorded delivery's line carries
/// its `trace_id` when it had a trace: the id the application got in `traceparent`.
///
/// A recorded delivery always gets its line; any other outcome only as [`Refusals`] admits
/// it (the first few of each kind per window; [`log_window`] sums up the rest).
pub(super) fn log(webhook: &str, refusals: &Refusals, outcome: &Outcome) {
    if !matches!(outcome, Outcome::Recorded { .. }) && !refusals.admit(outcome.label()) {
        return;
    }
    match outcome {
        // `trace_id` only where the delivery had a trace: a field of `None` is left out.
        Outcome::Recorded { events, trace_id } => tracing::info!(
            %webhook,
            events,
            trace_id = trace_id.map(tracing::field::display),
            "delivery recorded"
        ),
        Outcome::Duplicate | Outcome::Ignored => {
            tracing::info!(%webhook, outcome = outcome.label(), "delivery acknowledged, not recorded (duplicate or not an accepted type)")
        }
        Outcome::Rejected(r) => tracing::warn!(%webhook, reason = %r, "delivery refused"),
        Outcome::Malformed(e) => {
            tracing::warn!(%webhook, error = %e, "verified payload not understood")
        }
        Outcome::NoSecret => {
            tracing::warn!(%webhook, "delivery refused: signing secret unavailable")
        }
        Outcome::NotRecorded(e) => tracing::error!(%webhook, error = %e, "delivery not recorded"),
        Outcome::Overloaded
        | Outcome::TooLarge
        | Outcome::TimedOut
        | Outcome::BodyUnreadable
        | Outcome::HandoffRefused
        | Outcome::SourceRefused
        | Outcome::RateLimited { .. }
        | Outcome::BodyBudget
        | Outcome::BodyStalled => {
            tracing::warn!(%webhook, outcome = outcome.label(), "delivery refused")
        }
    }
}

/// Ends the current window of `refusals`: one line for the deliveries it did not log one
/// by one, if there were any.
pub(super) fn log_window(webhook: &str, refusals: &Refusals) {
    let Some(summary) = refusals.end_window() else {
        return;
    };
    // As loud as the worst of what it sums up: a sink that did not record is an error.
    if summary.has_sink_failures() {
        tracing::error!(
            %webhook,
            count = summary.total(),
            by_outcome = %summary,
            window_s = WINDOW.as_secs(),
            "deliveries not recorded and not logged one by one in the last window"
        );
    } else {
        tracing::warn!(
            %webhook,
            count = summary.total(),
            by_outcome = %summary,
            window_s = WINDOW.as_secs(),
            "deliveries not recorded and not logged one by one in the last window"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_counted_from_the_start() {
        let outcomes = [
            Outcome::Recorded {
                events: 1,
                trace_id: None,
            },
            Outcome::Duplicate,
            Outcome::Ignored,
            Outcome::Rejected(Rejection::MissingHeader("x".into())),
            Outcome::Rejected(Rejection::MalformedHeader {
                header: "x".into(),
                reason: "r",
            }),
            Outcome::Rejected(Rejection::StaleTimestamp { tolerance_secs: 1 }),
            Outcome::Rejected(Rejection::BadSignature),
            Outcome::Rejected(Rejection::DuplicateKey),
            Outcome::Rejected(Rejection::NoSecret),
            Outcome::Malformed(ParseError("x".into())),
            Outcome::NoSecret,
            Outcome::NotRecorded(RecordError::Unavailable("x".into())),
            Outcome::NotRecorded(RecordError::Refused("x".into())),
            Outcome::NotRecorded(RecordError::Unsupported("x")),
            Outcome::NotRecorded(RecordError::NotOwned {
                config_map: "x".into(),
                uid: "u".into(),
            }),
            Outcome::Overloaded,
            Outcome::TooLarge,
            Outcome::TimedOut,
            Outcome::BodyUnreadable,
            Outcome::HandoffRefused,
            Outcome::SourceRefused,
            Outcome::RateLimited { retry_after: 1 },
            Outcome::BodyBudget,
            Outcome::BodyStalled,
        ];
        let labels: std::collections::BTreeSet<&str> =
            outcomes.iter().map(Outcome::label).collect();
        let counted: std::collections::BTreeSet<&str> =
            crate::metrics::OUTCOMES.into_iter().collect();
        assert_eq!(labels, counted);
    }
}
