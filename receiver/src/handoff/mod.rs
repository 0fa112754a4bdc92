//! One writer per receiver Deployment for its ConfigMap sinks.
//!
//! Two replicas writing the same ConfigMap refuse each other's writes (409, the document
//! read again and written again) and each writes half of what one would carry per write:
//! measured with `make bench-sinks` (README, "Speed and footprint"), two writers recorded
//! 252-276 deliveries/s where one recorded 412-416. So the replicas elect a writer on a
//! Lease (`coordination.k8s.io/v1`; the operator creates it, kube-lease-manager takes and
//! renews it), and a replica that does not hold it hands each verified delivery of a
//! Webhook with a ConfigMap sink to the one that does: the same request, headers and body,
//! posted to the holder's address with [`HANDOFF_HEADER`]. The holder verifies it again
//! and records it; its answer is the delivery's.
//!
//! The Lease makes the writes fast, not right: every write is still optimistic
//! (`sink::configmap`), so when the holder cannot be reached, answers anything but
//! recorded or duplicate, or two replicas both believe they hold it for a moment, a
//! replica records the delivery itself, and no delivery is acknowledged unrecorded.
//!
//! - `holder`: the identity a replica writes into the Lease, and the term it holds (pure).

mod holder;

pub use holder::{Identity, Term};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube_lease_manager::{LeaseCreateMode, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::delivery::Recorded;

/// Marks a delivery handed over by another replica; its value is the holder's token (see
/// `holder`), so a sender cannot make a request look like one.
pub const HANDOFF_HEADER: &str = "hookwarden-handoff";
/// How long the Lease is held without renewal before another replica may take it.
pub const LEASE_SECONDS: u64 = 15;
/// How long before expiry the holder renews.
pub const GRACE_SECONDS: u64 = 5;
/// How long to wait before joining the election again when the Lease cannot be used (not
/// created yet by the operator, or the API server unreachable).
const REJOIN: Duration = Duration::from_secs(5);

/// The election a replica takes part in, as the operator runs it (`--writer-lease`).
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    /// The Lease, which the operator creates.
    pub lease: String,
    /// This pod's name and address (`POD_NAME`, `POD_IP`).
    pub pod: String,
    pub ip: IpAddr,
}

/// A replica's part in its Deployment's writer election.
pub struct Handoff {
    me: Identity,
    me_header: HeaderValue,
    /// Whether this replica holds the Lease, as kube-lease-manager last found.
    leading: watch::Receiver<bool>,
    /// The holder and its term, as the Lease was last seen.
    term: watch::Receiver<Option<Term>>,
    /// Set when this replica stops: it leaves the election, releasing the Lease if it holds
    /// it, so that another replica takes it at once rather than when it expires.
    resign: watch::Sender<bool>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Handoff {
    /// Joins `election` as this replica, which serves deliveries on `port`, and follows who
    /// holds the Lease. Must be called inside a Tokio runtime; the election runs as long as
    /// the process.
    pub fn join(
        client: kube::Client,
        election: &Election,
        port: u16,
    ) -> Result<Arc<Handoff>, getrandom::Error> {
        let me = Identity::new(&election.pod, SocketAddr::new(election.ip, port))?;
        let (leading_tx, leading) = watch::channel(false);
        let (term_tx, term) = watch::channel(None);
        let handoff = Self::with(me, leading, term);
        let Election {
            namespace, lease, ..
        } = election.clone();
        let ballot = Ballot {
            client: client.clone(),
            namespace: namespace.clone(),
            lease: lease.clone(),
            identity: handoff.me.to_string(),
        };
        tokio::spawn(elect(ballot, leading_tx, handoff.resign.subscribe()));
        tracing::info!(%lease, identity = %handoff.me, "joined the election of the ConfigMap sinks' writer");
        tokio::spawn(follow(client, namespace, lease, term_tx));
        Ok(Arc::new(handoff))
    }

    /// A handoff whose election is driven from outside (tests).
    pub fn with(
        me: Identity,
        leading: watch::Receiver<bool>,
        term: watch::Receiver<Option<Term>>,
    ) -> Handoff {
        let me_header = HeaderValue::from_str(&me.token).unwrap_or(HeaderValue::from_static(""));
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Handoff {
            me,
            me_header,
            leading,
            term,
            resign: watch::channel(false).0,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Leaves the election as this replica stops: releases the Lease if it holds it (the
    /// other replicas then record deliveries themselves until one of them takes it).
    pub fn resign(&self) {
        self.resign.send_replace(true);
    }

    /// Whether `headers` mark a delivery another replica handed to this one.
    pub fn is_handoff(&self, headers: &HeaderMap) -> bool {
        headers
            .get(HANDOFF_HEADER)
            .is_some_and(|v| !self.me.token.is_empty() && v == self.me_header)
    }

    /// Where to hand a delivery: the holder's address, when another replica holds the
    /// Lease now; `None` when this one does, or nobody does.
    pub fn target(&self, now: Timestamp) -> Option<SocketAddr> {
        if *self.leading.borrow() {
            return None;
        }
        let term = self.term.borrow();
        let term = term.as_ref().filter(|t| t.runs_at(now))?;
        (term.holder.pod != self.me.pod && term.holder.addr != self.me.addr)
            .then_some(term.holder.addr)
    }

    /// Hands the delivery that came as `path`, `headers` and `body` to the holder at `to`.
    /// What the holder found, when it recorded the delivery or found it recorded; `None`
    /// when it did neither, and this replica should record it itself.
    pub async fn hand(
        &self,
        to: SocketAddr,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
        deadline: Instant,
    ) -> Option<Recorded> {
        let token = {
            let term = self.term.borrow();
            term.as_ref()
                .filter(|t| t.holder.addr == to)
                .and_then(|t| HeaderValue::from_str(&t.holder.token).ok())?
        };
        let mut request = Request::post(format!("http://{to}{path}"));
        if let Some(out) = request.headers_mut() {
            for (name, value) in headers {
                if !HOP_BY_HOP.contains(name) {
                    out.append(name, value.clone());
                }
            }
            out.insert(HANDOFF_HEADER, token);
        }
        let request = request.body(Full::new(body)).ok()?;
        let answer = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        let (status, body) = match tokio::time::timeout_at(deadline, answer).await {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(_) => {
                tracing::debug!(writer = %to, "the writer did not answer a handoff; recording here");
                return None;
            }
        };
        let found = recorded(status, &body);
        if found.is_none() {
            tracing::debug!(writer = %to, %status, "the writer did not record a handoff; recording here");
        }
        found
    }
}

/// Headers of one connection, not of the delivery: not passed on.
const HOP_BY_HOP: [header::HeaderName; 6] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
];

/// What a holder's answer says of the delivery: recorded now, found recorded, or neither.
fn recorded(status: StatusCode, body: &[u8]) -> Option<Recorded> {
    #[derive(serde::Deserialize)]
    struct Answer<'a> {
        status: &'a str,
    }
    if status != StatusCode::OK {
        return None;
    }
    match serde_json::from_slice::<Answer>(body).ok()?.status {
        "recorded" => Some(Recorded::Now),
        "duplicate" => Some(Recorded::Before),
        _ => None,
    }
}

/// What a replica stands in the election with.
struct Ballot {
    client: kube::Client,
    namespace: String,
    lease: String,
    identity: String,
}

/// Takes part in the election until `resign` is set: `leading` says whether this replica
/// holds the Lease. Resigning drops kube-lease-manager's channel, which releases the Lease.
async fn elect(ballot: Ballot, leading: watch::Sender<bool>, mut resign: watch::Receiver<bool>) {
    let Ballot {
        client,
        namespace,
        lease,
        identity,
    } = ballot;
    while !*resign.borrow_and_update() {
        let manager = LeaseManagerBuilder::new(client.clone(), &lease)
            .with_namespace(&namespace)
            .with_identity(&identity)
            .with_create_mode(LeaseCreateMode::UseExistent)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await;
        match manager {
            Ok(manager) => {
                let (mut channel, task) = manager.watch().await;
                let resigned = loop {
                    let _ = leading.send(*channel.borrow_and_update());
                    tokio::select! {
                        changed = channel.changed() => if changed.is_err() { break false },
                        _ = resign.changed() => break true,
                    }
                };
                let _ = leading.send(false);
                drop(channel);
                if resigned {
                    // Released by the manager's task once its channel is gone.
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                    tracing::info!(%lease, "left the election of the ConfigMap sinks' writer");
                    return;
                }
                tracing::warn!(%lease, "left the election of the ConfigMap sinks' writer; joining again");
            }
            Err(error) => {
                tracing::warn!(%lease, %error, "cannot join the election of the ConfigMap sinks' writer yet; each replica writes itself meanwhile");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REJOIN) => {}
            _ = resign.changed() => return,
        }
    }
}

/// Follows the Lease: `term` holds who holds it and until when.
async fn follow(
    client: kube::Client,
    namespace: String,
    lease: String,
    term: watch::Sender<Option<Term>>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={lease}"));
    let mut leases = std::pin::pin!(watcher(api, config).default_backoff().applied_objects());
    while let Some(seen) = leases.next().await {
        match seen {
            Ok(seen) => {
                let _ = term.send(seen.spec.as_ref().and_then(Term::of));
            }
            Err(error) => tracing::debug!(%lease, %error, "watching the writer Lease"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_recorded_or_duplicate_answer_is_taken() {
        let ok = StatusCode::OK;
        assert_eq!(
            recorded(ok, br#"{"events":1,"status":"recorded"}"#),
            Some(Recorded::Now)
        );
        assert_eq!(
            recorded(ok, br#"{"status":"duplicate"}"#),
            Some(Recorded::Before)
        );
        assert_eq!(recorded(ok, br#"{"status":"ignored"}"#), None);
        assert_eq!(recorded(ok, b"not json"), None);
        assert_eq!(
            recorded(
                StatusCode::SERVICE_UNAVAILABLE,
                br#"{"error":"delivery not recorded; retry"}"#
            ),
            None
        );
        assert_eq!(
            recorded(StatusCode::ACCEPTED, br#"{"status":"recorded"}"#),
            None
        );
    }

    fn term(holder: &Identity, until: Timestamp) -> Option<Term> {
        Some(Term {
            holder: holder.clone(),
            until,
        })
    }

    #[test]
    fn a_replica_hands_off_only_to_another_that_holds_the_lease_now() {
        let me = Identity::new("pool-a", "10.0.0.1:8080".parse().unwrap()).unwrap();
        let other = Identity::new("pool-b", "10.0.0.2:8080".parse().unwrap()).unwrap();
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-12-06T10:00:10Z".parse().unwrap();
        let (leading_tx, leading) = watch::channel(false);
        let (term_tx, term_rx) = watch::channel(term(&other, later));
        let handoff = Handoff::with(me.clone(), leading, term_rx);
        assert_eq!(handoff.target(now), Some(other.addr));
        // Expired: nobody holds it.
        assert_eq!(handoff.target(later), None);
        // This replica holds it (by the election, or as the Lease names it).
        leading_tx.send(true).unwrap();
        assert_eq!(handoff.target(now), None);
        leading_tx.send(false).unwrap();
        term_tx.send(term(&me, later)).unwrap();
        assert_eq!(handoff.target(now), None);
        term_tx.send(None).unwrap();
        assert_eq!(handoff.target(now), None);
    }

    #[test]
    fn a_handoff_is_known_by_this_replicas_token_only() {
        let me = Identity::new("pool-a", "10.0.0.1:8080".parse().unwrap()).unwrap();
        let (_l, leading) = watch::channel(false);
        let (_t, term) = watch::channel(None);
        let handoff = Handoff::with(me.clone(), leading, term);
        let mut headers = HeaderMap::new();
        assert!(!handoff.is_handoff(&headers));
        headers.insert(HANDOFF_HEADER, HeaderValue::from_static("1"));
        assert!(!handoff.is_handoff(&headers), "a sender's guess");
        headers.insert(HANDOFF_HEADER, HeaderValue::from_str(&me.token).unwrap());
        assert!(handoff.is_handoff(&headers));
    }
}
