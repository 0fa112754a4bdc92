//! One writer per receiver Deployment for its ConfigMap sinks.
//!
//! Two replicas writing the same ConfigMap refuse each other's writes (409, the document
//! read again and written again) and each writes half of what one would carry per write:
//! measured with `make bench-sinks` (README, "Speed and footprint"), two writers recorded
//! 252-276 deliveries/s where one recorded 412-416. So the replicas elect a writer on a
//! Lease (`coordination.k8s.io/v1`; the operator creates it, kube-lease-manager takes and
//! renews it), and a replica that does not hold it hands each verified delivery of a
//! Webhook with a ConfigMap sink to the one that does: the same request, headers and body,
//! posted to the holder's pod with [`HANDOFF_HEADER`]. The holder verifies it again and
//! records it; its answer is the delivery's.
//!
//! Where the holder is comes from the ready endpoints of the Deployment's own Service,
//! never from the Lease, so that whoever may patch Leases in the namespace cannot send
//! deliveries (and the headers that sign them) elsewhere; and only from the EndpointSlices
//! Kubernetes' EndpointSlice controller manages, a pod named with two addresses being
//! unknown, so that whoever may create EndpointSlices cannot either (see `holder`). A handoff says which
//! configuration of the Webhook the replica serves; a holder that serves another (a
//! rollout under way) refuses it, so that every delivery is recorded as the replica that
//! answers it is configured to.
//!
//! The Lease makes the writes fast, not right: every write is still optimistic
//! (`sink::configmap`), so when the holder cannot be reached, answers anything but
//! recorded or duplicate, or two replicas both believe they hold it for a moment, a
//! replica records the delivery itself, and no delivery is acknowledged unrecorded.
//!
//! The holder counts each handoff in `handoffs_taken_total`; one it refuses (a signature
//! it does not verify, another configuration) it also counts in `deliveries_total` and
//! logs as any refusal, so that probing through this path shows where it happens.
//!
//! - `holder`: the identity a replica writes into the Lease, the term it holds, and the
//!   ready pods of a Service, from the EndpointSlices believed (pure);
//! - `election`: the tasks that stand for the Lease and follow it and the Service.

mod election;
mod holder;

pub use election::{GRACE_SECONDS, LEASE_SECONDS};
pub use holder::{Identity, MANAGED_BY, SERVICE_NAME, Term, ready_pods, slice_selector};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::jiff::Timestamp;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::config::ReceiverConfig;
use crate::delivery::Recorded;
use crate::error::Error;
use crate::trace::{TRACEPARENT, TraceContext};

/// Marks a delivery handed over by another replica; its value is the holder's token (see
/// `holder`), so a sender cannot make a request look like one. A request that carries it
/// is never handed on, whatever its value.
pub const HANDOFF_HEADER: HeaderName = HeaderName::from_static("hookwarden-handoff");
/// The configuration of the Webhook the handing replica serves ([`fingerprint`]).
pub const CONFIG_HEADER: HeaderName = HeaderName::from_static("hookwarden-handoff-config");
/// How long the handing replica waits for the answer, in milliseconds: the holder gives up
/// recording by then too, so that the two never both record one delivery.
pub const WITHIN_HEADER: HeaderName = HeaderName::from_static("hookwarden-handoff-within-ms");
/// How long to wait for a connection to the holder: a pod that went without a word (its
/// node lost) must not cost each delivery half its budget.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Idle connections to the holder are dropped before its own idle timeout closes them
/// (`server::HEADER_READ_TIMEOUT`), so that no handoff is sent on a closing one.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// The election a replica takes part in, as the operator asks for it (`--writer-election`).
#[derive(Debug, Clone)]
pub struct Election {
    pub namespace: String,
    /// The receiver Deployment, and its Service of the same name. The Lease is
    /// `hookwarden_api::names::writer_lease` of it; the operator creates it.
    pub deployment: String,
    /// This pod's name (`POD_NAME`).
    pub pod: String,
}

/// Where the replicas are, as this one last saw it.
pub struct View {
    /// Whether this replica holds the Lease, as kube-lease-manager last found.
    pub leading: watch::Receiver<bool>,
    /// The holder and its term, as the Lease was last seen.
    pub term: watch::Receiver<Option<Term>>,
    /// The ready pods of the Deployment's Service, and their addresses.
    pub pods: watch::Receiver<BTreeMap<String, IpAddr>>,
}

/// The replica a delivery is handed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    token: HeaderValue,
}

/// A replica's part in its Deployment's writer election.
pub struct Handoff {
    me: Identity,
    /// Port deliveries are served on, the same in every replica.
    port: u16,
    view: View,
    /// Taken when this replica stops (see [`Handoff::leave`]).
    resign: Mutex<Option<oneshot::Sender<oneshot::Sender<()>>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Handoff {
    /// Joins `election` as this replica, which serves deliveries on `port`; follows who
    /// holds the Lease and where the Service's pods are. Must be called inside a Tokio
    /// runtime; the election runs until [`Handoff::leave`].
    pub fn join(
        client: kube::Client,
        election: &Election,
        port: u16,
    ) -> crate::Result<Arc<Handoff>> {
        let me = Identity::new(&election.pod).map_err(|e| Error::Random(e.to_string()))?;
        let lease = hookwarden_api::names::writer_lease(&election.deployment);
        let (leading_tx, leading) = watch::channel(false);
        let (term_tx, term) = watch::channel(None);
        let (pods_tx, pods) = watch::channel(BTreeMap::new());
        let (resign, resigned) = oneshot::channel();
        let namespace = &election.namespace;
        let ballot = election::Ballot {
            client: client.clone(),
            namespace: namespace.clone(),
            lease: lease.clone(),
            me: me.clone(),
        };
        tokio::spawn(election::stand(ballot, leading_tx, resigned));
        tokio::spawn(election::follow_lease(
            client.clone(),
            namespace.clone(),
            lease.clone(),
            term_tx,
        ));
        tokio::spawn(election::follow_pods(
            client,
            namespace.clone(),
            election.deployment.clone(),
            pods_tx,
        ));
        tracing::info!(%lease, pod = %me.pod, "joined the election of the ConfigMap sinks' writer");
        let view = View {
            leading,
            term,
            pods,
        };
        Ok(Arc::new(Self::build(me, port, view, Some(resign))))
    }

    /// A replica `me` serving on `port` that sees the others as `view` says, kept by a
    /// test rather than by [`join`]'s tasks.
    ///
    /// [`join`]: Handoff::join
    pub fn with(me: Identity, port: u16, view: View) -> Handoff {
        Self::build(me, port, view, None)
    }

    fn build(
        me: Identity,
        port: u16,
        view: View,
        resign: Option<oneshot::Sender<oneshot::Sender<()>>>,
    ) -> Handoff {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Handoff {
            me,
            port,
            view,
            resign: Mutex::new(resign),
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(IDLE_TIMEOUT)
                .build(connector),
        }
    }

    /// Leaves the election as this replica stops, releasing the Lease if it holds it (the
    /// other replicas record deliveries themselves until one of them takes it); returns
    /// once that is done, or given up.
    pub async fn leave(&self) {
        let resign = self.resign.lock().ok().and_then(|mut r| r.take());
        let Some(resign) = resign else {
            return;
        };
        let (done, released) = oneshot::channel();
        if resign.send(done).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), released).await;
        }
    }

    /// `shutdown`, then leaving the election (if this replica takes part in one): what a
    /// server waits for before it drains.
    pub async fn leaving_after(shutdown: impl Future<Output = ()>, handoff: Option<Arc<Handoff>>) {
        shutdown.await;
        if let Some(handoff) = handoff {
            handoff.leave().await;
        }
    }

    /// Whether `headers` mark a delivery another replica handed to this one: the header
    /// with this replica's token.
    pub fn is_handoff(&self, headers: &HeaderMap) -> bool {
        headers
            .get(&HANDOFF_HEADER)
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(self.me.token.as_bytes())))
    }

    /// Where to hand a delivery: the holder, when another replica holds the Lease now and
    /// is a ready pod of the Service; `None` when this one holds it, or nobody does.
    pub fn target(&self, now: Timestamp) -> Option<Peer> {
        if *self.view.leading.borrow() {
            return None;
        }
        let term = self.view.term.borrow();
        let holder = &term.as_ref().filter(|t| t.runs_at(now))?.holder;
        if holder.pod == self.me.pod {
            // This pod, before a restart: nobody holds it now.
            return None;
        }
        let ip = *self.view.pods.borrow().get(&holder.pod)?;
        Some(Peer {
            addr: SocketAddr::new(ip, self.port),
            token: HeaderValue::from_str(&holder.token).ok()?,
        })
    }

    /// Hands the delivery that came as `path`, `headers` and `body` to `peer`, saying it
    /// serves the Webhook's configuration `config` and continues `trace`, and waits until
    /// `until` at most. What the holder found, when it recorded the delivery or found it
    /// recorded; `None` when it did neither, and this replica should record it itself.
    pub async fn hand(
        &self,
        peer: &Peer,
        delivery: Handed<'_>,
        until: Instant,
    ) -> Option<Recorded> {
        let mut request = Request::post(format!("http://{}{}", peer.addr, delivery.path));
        if let Some(out) = request.headers_mut() {
            for (name, value) in delivery.headers {
                if !HOP_BY_HOP.contains(name) {
                    out.append(name, value.clone());
                }
            }
            out.insert(HANDOFF_HEADER, peer.token.clone());
            out.insert(CONFIG_HEADER, delivery.config.clone());
            let within = until.saturating_duration_since(Instant::now()).as_millis();
            out.insert(WITHIN_HEADER, HeaderValue::from(within as u64));
            // The trace this replica logs is the one the application gets.
            if let Some(trace) = delivery.trace
                && let Ok(value) = HeaderValue::from_str(&trace.traceparent())
            {
                out.insert(&TRACEPARENT, value);
            }
        }
        let request = request.body(Full::new(delivery.body)).ok()?;
        let answer = async {
            let response = self.client.request(request).await.ok()?;
            let status = response.status();
            let body = response.into_body().collect().await.ok()?.to_bytes();
            Some((status, body))
        };
        let (status, body) = match tokio::time::timeout_at(until, answer).await {
            Ok(Some(answer)) => answer,
            Ok(None) | Err(_) => {
                tracing::debug!(writer = %peer.addr, "the writer did not answer a handoff; recording here");
                return None;
            }
        };
        let found = recorded(status, &body);
        if found.is_none() {
            tracing::debug!(writer = %peer.addr, %status, "the writer did not record a handoff; recording here");
        }
        found
    }
}

/// A delivery as it came, for a handoff.
pub struct Handed<'a> {
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The body as it came: the holder verifies what the sender signed.
    pub body: Bytes,
    /// This replica's [`fingerprint`] of the Webhook.
    pub config: &'a HeaderValue,
    pub trace: Option<&'a TraceContext>,
}

/// What identifies a configuration of a Webhook in a handoff: what decides what is
/// verified and recorded (provider, path, layout, accepted types, sinks), hashed.
pub fn fingerprint(config: &ReceiverConfig) -> HeaderValue {
    let what = (
        &config.webhook,
        config.provider,
        &config.path,
        &config.generic_hmac,
        &config.event_types,
        &config.sinks,
    );
    let bytes = serde_json::to_vec(&what).unwrap_or_default();
    let hash = Sha256::digest(&bytes);
    // Hex is always a valid header value.
    HeaderValue::from_str(&hex::encode(&hash[..16])).unwrap_or(HeaderValue::from_static("-"))
}

/// Whether a handoff came from a replica serving the configuration `mine`.
pub fn same_config(headers: &HeaderMap, mine: &HeaderValue) -> bool {
    headers.get(&CONFIG_HEADER) == Some(mine)
}

/// How long the handing replica waits for a handoff's answer, if it said.
pub fn within(headers: &HeaderMap) -> Option<Duration> {
    let ms = headers.get(&WITHIN_HEADER)?.to_str().ok()?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Headers of one connection, not of the delivery: not passed on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::HOST,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
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
            recorded(StatusCode::CONFLICT, br#"{"status":"recorded"}"#),
            None
        );
    }

    struct Driven {
        handoff: Handoff,
        leading: watch::Sender<bool>,
        term: watch::Sender<Option<Term>>,
        pods: watch::Sender<BTreeMap<String, IpAddr>>,
    }

    fn driven(me: &Identity) -> Driven {
        let (leading, l) = watch::channel(false);
        let (term, t) = watch::channel(None);
        let (pods, p) = watch::channel(BTreeMap::new());
        let view = View {
            leading: l,
            term: t,
            pods: p,
        };
        Driven {
            handoff: Handoff::with(me.clone(), 8080, view),
            leading,
            term,
            pods,
        }
    }

    #[test]
    fn a_replica_hands_off_only_to_another_ready_pod_of_its_service_that_holds_the_lease() {
        let me = Identity::new("pool-a").unwrap();
        let other = Identity::new("pool-b").unwrap();
        let now: Timestamp = "2026-12-06T10:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-12-06T10:00:10Z".parse().unwrap();
        let d = driven(&me);
        let term = |holder: &Identity| {
            Some(Term {
                holder: holder.clone(),
                until: later,
            })
        };
        d.term.send_replace(term(&other));
        // Not (yet) a ready pod of the Service: nowhere to hand to.
        assert_eq!(d.handoff.target(now), None);
        d.pods.send_replace(BTreeMap::from([
            ("pool-a".into(), "10.0.0.1".parse().unwrap()),
            ("pool-b".into(), "10.0.0.2".parse().unwrap()),
        ]));
        let peer = d.handoff.target(now).unwrap();
        assert_eq!(peer.addr, "10.0.0.2:8080".parse().unwrap());
        assert_eq!(peer.token, other.token.as_str());
        // Expired: nobody holds it.
        assert_eq!(d.handoff.target(later), None);
        // This replica holds it, by the election or as the Lease names this pod (before
        // a restart of it, with another token).
        d.leading.send_replace(true);
        assert_eq!(d.handoff.target(now), None);
        d.leading.send_replace(false);
        let before_restart = Identity::new("pool-a").unwrap();
        d.term.send_replace(term(&before_restart));
        assert_eq!(d.handoff.target(now), None);
        d.term.send_replace(None);
        assert_eq!(d.handoff.target(now), None);
    }

    #[test]
    fn a_handoff_is_known_by_this_replicas_token_only() {
        let me = Identity::new("pool-a").unwrap();
        let d = driven(&me);
        let mut headers = HeaderMap::new();
        assert!(!d.handoff.is_handoff(&headers));
        headers.insert(HANDOFF_HEADER, HeaderValue::from_static("1"));
        assert!(!d.handoff.is_handoff(&headers), "a sender's guess");
        headers.insert(HANDOFF_HEADER, HeaderValue::from_str(&me.token).unwrap());
        assert!(d.handoff.is_handoff(&headers));
    }

    #[test]
    fn the_fingerprint_changes_with_what_is_recorded_and_how() {
        let config = |yaml: &str| ReceiverConfig::from_yaml(yaml).unwrap();
        let base = "webhook: {name: w, namespace: n, uid: u}\npath: /opal\nprovider: opal\nsecretFiles: [/s]\nsinks: {events: false, configMap: {name: state, mode: state}}\n";
        let a = fingerprint(&config(base));
        assert_eq!(a, fingerprint(&config(base)));
        let mut headers = HeaderMap::new();
        headers.insert(CONFIG_HEADER, a.clone());
        assert!(same_config(&headers, &a));
        for changed in [
            base.replace("mode: state", "mode: log"),
            base.replace("events: false", "events: true"),
            base.replace("/opal", "/opal-2"),
            base.replace("uid: u", "uid: v"),
            format!("{base}eventTypes: [USER_ADDED_TO_RESOURCE]\n"),
        ] {
            let b = fingerprint(&config(&changed));
            assert_ne!(a, b, "{changed}");
            assert!(!same_config(&headers, &b));
        }
        // Not what only sets how the receiver runs.
        assert_eq!(
            a,
            fingerprint(&config(
                &base.replace("secretFiles: [/s]", "secretFiles: [/t]")
            ))
        );
    }

    #[test]
    fn the_wait_a_handoff_names_is_read_back() {
        let mut headers = HeaderMap::new();
        assert_eq!(within(&headers), None);
        headers.insert(WITHIN_HEADER, HeaderValue::from(2500u64));
        assert_eq!(within(&headers), Some(Duration::from_millis(2500)));
        headers.insert(WITHIN_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(within(&headers), None);
    }
}
