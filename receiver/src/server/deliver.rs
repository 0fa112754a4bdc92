//! One delivery, from the request to its outcome.
//!
//! Refused before a byte of the body is read ([`admit`]), in this order: a handoff from a
//! replica configured otherwise; a source outside `limits.sourceRanges` (not asked of a
//! handoff: the replica that handed it asked); a Content-Length over `limits.maxBodyBytes`;
//! no signing secret; the scheme's signature and timestamp headers missing, malformed or
//! out of the replay window (`Scheme::precheck`); no place among the deliveries in flight;
//! no room in the body budget (`budget`); past the rate limit (`rate`; not asked of a
//! handoff either: the replica that handed it counted it). Then the body is read, each
//! frame within `connection::BODY_STALL_TIMEOUT` of the last, verified in full, parsed and
//! recorded, all within `limits.requestTimeoutSeconds`.

use std::sync::Arc;
use std::task::Poll;

use axum::body::{Bytes, HttpBody};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use sha2::{Digest, Sha256};
use tokio::sync::SemaphorePermit;

use super::budget::Reservation;
use super::outcome::{Outcome, log};
use super::state::AppState;
use crate::connection::{BODY_STALL_TIMEOUT, PeerAddr};
use crate::delivery::{Delivery, Recorded};
use crate::handoff::{self, HANDOFF_HEADER, Handed, Handoff, Peer};
use crate::payload;
use crate::replay::Key;
use crate::secrets::{Secret, SecretState};
use crate::signature::{Rejection, Verified};
use crate::trace::{RANDOM_BYTES, TRACEPARENT, TraceContext};

pub(super) async fn deliver<B>(state: &AppState, request: Request<B>) -> Response<Full<Bytes>>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let started = tokio::time::Instant::now();
    let (parts, body) = request.into_parts();
    // Handed over by another replica (see `handoff`): recorded here, answered to that
    // replica, which logs and counts it as the sender's delivery.
    let handed = state
        .handoff
        .as_ref()
        .is_some_and(|h| h.is_handoff(&parts.headers));
    let declared = declared_length(&parts.headers, &body);
    let outcome = match admit(state, &parts, declared, handed) {
        Err(outcome) => outcome,
        Ok(admitted) => {
            let work = async {
                match read_body(body, admitted.bytes.bytes()).await {
                    Ok(bytes) => {
                        handle(state, &parts, bytes, &admitted.secrets, started, handed).await
                    }
                    Err(outcome) => outcome,
                }
            };
            let deadline = started + state.config.limits.request_timeout();
            let outcome = tokio::time::timeout_at(deadline, work)
                .await
                .unwrap_or(Outcome::TimedOut);
            // Its place and its bytes are given back as it is answered.
            drop(admitted);
            outcome
        }
    };
    count(state, handed, &outcome, started);
    outcome.answer()
}

/// What a delivery holds from its admission until it is answered.
struct Admitted<'a> {
    /// The signing secrets as they were when it was admitted.
    secrets: Arc<[Secret]>,
    /// Its bytes of the body budget: as many as its body may have.
    bytes: Reservation<'a>,
    _place: SemaphorePermit<'a>,
}

/// Whether the delivery may be read, from what came before its body: see the module's
/// documentation for what is asked, in which order.
fn admit<'a>(
    state: &'a AppState,
    parts: &Parts,
    declared: Option<u64>,
    handed: bool,
) -> Result<Admitted<'a>, Outcome> {
    let headers = &parts.headers;
    if handed {
        // From a replica that serves another configuration of the Webhook (a rollout
        // under way): it records the delivery itself, as it is configured to.
        if !handoff::same_config(headers, &state.fingerprint) {
            return Err(Outcome::HandoffRefused);
        }
    } else {
        let peer = parts.extensions.get::<PeerAddr>().map(|p| p.0.ip());
        if !state.sources.admit(peer, headers) {
            return Err(Outcome::SourceRefused);
        }
    }
    let max = u64::from(state.config.limits.max_body_bytes);
    if declared.is_some_and(|n| n > max) {
        return Err(Outcome::TooLarge);
    }
    let secrets = match state.secrets.current() {
        SecretState::Loaded(s) => s,
        SecretState::Unavailable(_) => return Err(Outcome::NoSecret),
    };
    match state.scheme.precheck(headers, (state.clock)()) {
        Ok(()) => {}
        Err(Rejection::NoSecret) => return Err(Outcome::NoSecret),
        Err(r) => return Err(Outcome::Rejected(r)),
    }
    // Load shedding: a sender told to retry shortly beats one left waiting.
    let place = state
        .in_flight
        .try_acquire()
        .map_err(|_| Outcome::Overloaded)?;
    let bytes = state
        .budget
        .try_reserve(&state.body_share, declared.unwrap_or(max))
        .ok_or(Outcome::BodyBudget)?;
    // Last: a token is spent only on a delivery that is read.
    if !handed && let Some(bucket) = &state.rate {
        bucket
            .take()
            .map_err(|retry_after| Outcome::RateLimited { retry_after })?;
    }
    Ok(Admitted {
        secrets,
        bytes,
        _place: place,
    })
}

/// The body's length as the request declares it: its Content-Length, or what the body
/// itself knows of its length (a body made in memory).
fn declared_length(headers: &HeaderMap, body: &impl HttpBody) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| body.size_hint().exact())
}

/// Counts and logs `outcome`. A delivery handed here by another replica is counted as a
/// handoff; and, when it was refused, as a delivery too, logged like any refusal (so that
/// signature probing, or a secret missing here, shows where it happens). Recorded,
/// duplicate or ignored, it is the replica that answered the sender that counts it.
fn count(state: &AppState, handed: bool, outcome: &Outcome, started: tokio::time::Instant) {
    let webhook = &state.config.webhook.name;
    if handed {
        tracing::debug!(%webhook, outcome = outcome.label(), "handoff answered");
        state.metrics.handoff_taken(outcome.label());
        if !outcome.is_refusal() {
            return;
        }
    }
    log(webhook, &state.refusals, outcome);
    state
        .metrics
        .observe(outcome.label(), started.elapsed().as_secs_f64());
}

/// Reads the whole body, refusing more than `limit` bytes (as soon as the limit is passed),
/// and a body that sends no frame for [`BODY_STALL_TIMEOUT`]. A body that arrives in one
/// piece, as most deliveries do, is returned as it is, without a copy.
async fn read_body<B>(body: B, limit: u64) -> Result<Bytes, Outcome>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = std::pin::pin!(Limited::new(body, limit));
    let mut first: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    loop {
        // A frame there already costs no timer.
        let mut next = body.frame();
        let frame = match futures::poll!(&mut next) {
            Poll::Ready(frame) => frame,
            Poll::Pending => tokio::time::timeout(BODY_STALL_TIMEOUT, next)
                .await
                .map_err(|_| Outcome::BodyStalled)?,
        };
        let Some(frame) = frame else {
            break;
        };
        let frame = frame.map_err(|e| match e.is::<LengthLimitError>() {
            true => Outcome::TooLarge,
            false => Outcome::BodyUnreadable,
        })?;
        // Trailers carry nothing a delivery is made of.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(first) => {
                if joined.is_empty() {
                    joined.extend_from_slice(first);
                }
                joined.extend_from_slice(&data);
            }
        }
        if body.is_end_stream() {
            break;
        }
    }
    Ok(match joined.is_empty() {
        true => first.unwrap_or_default(),
        false => Bytes::from(joined),
    })
}

async fn handle(
    state: &AppState,
    request: &Parts,
    body: Bytes,
    secrets: &[Secret],
    arrived: tokio::time::Instant,
    handed: bool,
) -> Outcome {
    let headers = &request.headers;
    // As it came, for a handoff: the writer verifies what the sender signed.
    let raw = body.clone();
    let now = (state.clock)();
    let mut verified = match state.scheme.verify(headers, &body, secrets, now) {
        Ok(v) => v,
        Err(Rejection::NoSecret) => return Outcome::NoSecret,
        Err(r) => return Outcome::Rejected(r),
    };
    // What is recorded is what was verified: the body's JSON.stringify form, when that is
    // what the signature covered.
    let body = verified.signed_body.take().map_or(body, Bytes::from);
    let key = delivery_key(&verified, &body);
    if state.replay.seen(&key, now) {
        return Outcome::Duplicate;
    }
    let parsed = match payload::parse(state.config.provider, headers, &body) {
        Ok(p) => p,
        Err(e) => return Outcome::Malformed(e),
    };
    let accepted = &state.config.event_types;
    let event_ts = parsed.event_ts;
    let events: Vec<_> = parsed
        .events
        .into_iter()
        .filter(|e| accepted.is_empty() || accepted.iter().any(|a| *a == e.event_type))
        .collect();
    if events.is_empty() {
        return Outcome::Ignored;
    }
    let n = events.len();
    let delivery = Delivery {
        key,
        events,
        body,
        content_type: headers.get(header::CONTENT_TYPE).cloned(),
        event_ts,
        trace: trace_context(state, headers),
    };
    // The sender's clock started when the delivery arrived; a handoff's, when the replica
    // that hands it stops waiting.
    let mut deadline = arrived + state.config.limits.record_budget();
    if handed && let Some(within) = handoff::within(headers) {
        deadline = deadline.min(arrived + within);
    }
    let recorded = match handoff_target(state, headers, handed) {
        Some((handoff, peer)) => {
            // Half the budget at most, so that a writer that hangs (its pod stopping)
            // leaves time to record the delivery here.
            let now = tokio::time::Instant::now();
            let wait = now + deadline.saturating_duration_since(now) / 2;
            let as_it_came = Handed {
                path: request.uri.path(),
                headers,
                body: raw,
                config: &state.fingerprint,
                trace: delivery.trace.as_ref(),
            };
            match handoff.hand(&peer, as_it_came, wait).await {
                Some(found) => Ok(found),
                None => {
                    state.metrics.handoff_failed();
                    state.sinks.record(&delivery, deadline).await
                }
            }
        }
        None => state.sinks.record(&delivery, deadline).await,
    };
    match recorded {
        Ok(Recorded::Now) => {
            state.replay.remember(key, now);
            Outcome::Recorded {
                events: n,
                trace_id: delivery.trace.map(|t| t.trace_id),
            }
        }
        // Another replica recorded it (a replay that reached the other pod), or an earlier
        // attempt of this one went through unconfirmed: nothing new was written.
        Ok(Recorded::Before) => {
            state.replay.remember(key, now);
            Outcome::Duplicate
        }
        Err(e) => Outcome::NotRecorded(e),
    }
}

/// The replica to hand a delivery to (see `handoff`): the writer of the ConfigMap sinks,
/// for a Webhook with one, when that is another replica and the delivery was not handed
/// here already (nor claims to be: such a request is never handed on).
fn handoff_target<'a>(
    state: &'a AppState,
    headers: &HeaderMap,
    handed: bool,
) -> Option<(&'a Handoff, Peer)> {
    if handed || state.config.sinks.config_map.is_none() || headers.contains_key(&HANDOFF_HEADER) {
        return None;
    }
    let handoff = state.handoff.as_deref()?;
    handoff
        .target(k8s_openapi::jiff::Timestamp::now())
        .map(|peer| (handoff, peer))
}

/// The delivery's trace (see `trace`), where it is used: passed on by a `forward` sink, or
/// continued from the sender's `traceparent` into the log line. Deliveries recorded only in
/// the cluster, from senders that trace nothing, cost no random ids.
fn trace_context(state: &AppState, headers: &HeaderMap) -> Option<TraceContext> {
    if state.config.sinks.forward.is_none() && !headers.contains_key(&TRACEPARENT) {
        return None;
    }
    let mut random = [0u8; RANDOM_BYTES];
    match getrandom::fill(&mut random) {
        Ok(()) => Some(TraceContext::of(headers, random)),
        Err(error) => {
            // Not expected: the system's random source does not fail once it is ready.
            tracing::warn!(%error, "no random ids for a trace: the delivery goes on without one");
            None
        }
    }
}

/// What identifies a delivery: the sender's id where the scheme has one; else the MAC that
/// verified it, which stands for the signed timestamp and body (and costs one hash block
/// instead of a second pass over the body); else (a token scheme) the body itself.
fn delivery_key(verified: &Verified, body: &[u8]) -> Key {
    let mut h = Sha256::new();
    match (&verified.delivery_id, &verified.mac) {
        (Some(id), _) => {
            h.update(b"id:");
            h.update(id.as_bytes());
        }
        (None, Some(mac)) => {
            h.update(b"mac:");
            h.update(mac.as_slice());
        }
        (None, None) => {
            h.update(b"ts:");
            h.update(verified.timestamp.unwrap_or_default().to_be_bytes());
            h.update(b"body:");
            h.update(body);
        }
    }
    h.finalize().into()
}
