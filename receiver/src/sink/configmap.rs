//! The `configMap` sink: applies deliveries to one ConfigMap (see `view` for the layout) with
//! optimistic concurrency: read, apply, replace at the read `resourceVersion`; a conflict
//! (another replica wrote first) reads again, so no update is lost. A delivery applied
//! before is recognised from the ConfigMap itself, so it applies once.
//!
//! Deliveries that arrive while a write is under way are coalesced: one writer task takes
//! everything queued, applies it all and writes once, then answers each delivery. Under
//! load that is one API write per batch instead of one per delivery, and no conflicts
//! between deliveries of the same pod.
//!
//! The writer keeps the ConfigMap as its last write returned it, so a batch costs one
//! write, not a read and a write; when another replica wrote meanwhile, the write is
//! refused (409) and the batch is applied again at once to a fresh read.
//!
//! A receiver writes only its own sinks: a ConfigMap is written only when the Webhook the
//! receiver records for is its controller (an owner reference with `controller: true` and
//! that Webhook's uid: [`controlled_by`]), as the operator makes it. Any other ConfigMap
//! of that name (someone else's, made before the Webhook) is never written: the
//! delivery is not recorded (`RecordError::NotOwned`, metric label `sink_refused`, 503).
//! Since each write is made at the resourceVersion the check saw, an owner changed
//! meanwhile makes the write fail (409), and the ConfigMap is read and checked again. A
//! ConfigMap that does not exist yet is waited for (the operator creates it), never
//! created here.

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::retry::{Failure, retry_until};
use crate::config::ConfigMapMode;
use crate::delivery::{Delivery, RecordError, Recorded, Sink};
use crate::view;

/// Deliveries waiting for the writer; more are refused at once (the sender retries).
const QUEUE: usize = 1024;
/// How long the writer waits for more deliveries after the first of a batch, at most: until
/// as many have come as the last write answered plus those that came while it was under
/// way (the senders it answered send their next ones within a millisecond or two). Without
/// the wait, batches stay as small as the moment they start (measured: under 3 deliveries a
/// write with 16 senders); with a fixed wait instead of the count, every write waits it
/// whole (measured with `make bench-sinks`: 412-416 recorded/s with one replica, against
/// 470 counting).
const LINGER: Duration = Duration::from_millis(5);
/// The most deliveries one write carries.
const BATCH: usize = 256;

struct Job {
    delivery: Delivery,
    deadline: Instant,
    done: oneshot::Sender<Result<Recorded, RecordError>>,
}

pub struct ConfigMapSink {
    jobs: mpsc::Sender<Job>,
}

impl ConfigMapSink {
    /// Starts the writer task of ConfigMap `name` in `namespace`, which it writes only
    /// while the Webhook of uid `owner` controls it; must be called inside a Tokio runtime.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        mode: ConfigMapMode,
        owner: &str,
    ) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            mode,
            owner: owner.into(),
            last: std::sync::Mutex::new(None),
        };
        tokio::spawn(writer.run(queue));
        ConfigMapSink { jobs }
    }
}

impl Sink for ConfigMapSink {
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move {
            let (done, answer) = oneshot::channel();
            let job = Job {
                delivery: delivery.clone(),
                deadline,
                done,
            };
            if self.jobs.try_send(job).is_err() {
                return Err(RecordError::Unavailable(
                    "ConfigMap writer overloaded".into(),
                ));
            }
            match tokio::time::timeout_at(deadline, answer).await {
                Ok(Ok(result)) => result,
                // The writer may still record it; the sender's retry will then find it
                // applied. What matters: no 2xx before the write is confirmed.
                Ok(Err(_)) | Err(_) => Err(RecordError::Unavailable(
                    "ConfigMap write not confirmed in time".into(),
                )),
            }
        })
    }
}

struct Writer {
    api: Api<ConfigMap>,
    name: String,
    mode: ConfigMapMode,
    /// The uid of the Webhook that must control the ConfigMap.
    owner: String,
    /// The ConfigMap as last read or written, at its resourceVersion; taken by an attempt,
    /// put back by a successful one.
    last: std::sync::Mutex<Option<ConfigMap>>,
}

impl Writer {
    async fn run(self, mut queue: mpsc::Receiver<Job>) {
        // How many the last write carried: the senders it answered send their next
        // deliveries within a millisecond or two.
        let mut answered = 0;
        loop {
            // What came while the last write was under way: from senders other than the
            // ones it answered, so a batch waits for both.
            let mut batch = Vec::new();
            while batch.len() < BATCH
                && let Ok(job) = queue.try_recv()
            {
                batch.push(job);
            }
            let expected = (answered + batch.len()).clamp(1, BATCH);
            if batch.is_empty() {
                match queue.recv().await {
                    Some(job) => batch.push(job),
                    None => return,
                }
            }
            let until = Instant::now() + LINGER;
            while batch.len() < expected {
                match tokio::time::timeout_at(until, queue.recv()).await {
                    Ok(Some(more)) => batch.push(more),
                    Ok(None) | Err(_) => break,
                }
            }
            answered = batch.len();
            let deadline = batch
                .iter()
                .map(|j| j.deadline)
                .min()
                .unwrap_or_else(Instant::now);
            let deliveries: Vec<&Delivery> = batch.iter().map(|j| &j.delivery).collect();
            let found = std::sync::Mutex::new(Vec::new());
            let unconfirmed = std::sync::Mutex::new(vec![false; deliveries.len()]);
            let written =
                retry_until(deadline, || self.attempt(&deliveries, &found, &unconfirmed)).await;
            let unconfirmed = unconfirmed.into_inner().unwrap_or_else(|p| p.into_inner());
            let mut found = found
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .into_iter();
            for (job, unconfirmed) in batch.into_iter().zip(unconfirmed) {
                let result = match (&written, found.next()) {
                    (_, Some(Err(e))) => Err(e),
                    // Found applied, but an earlier attempt of this batch may have applied
                    // it (a write that got no answer): recorded now, as far as anyone knows.
                    (Ok(()), Some(Ok(applied))) => Ok(match applied || unconfirmed {
                        true => Recorded::Now,
                        false => Recorded::Before,
                    }),
                    (Err(e), _) => Err(e.clone()),
                    // Not reached: a successful attempt judged every delivery.
                    (Ok(()), None) => Err(RecordError::Unavailable("not applied".into())),
                };
                let _ = job.done.send(result);
            }
        }
    }

    /// Reads the ConfigMap, applies every delivery that fits and writes once. What each
    /// delivery found goes into `found`, in order: applied now (`true`), applied before
    /// (`false`), or refused.
    fn attempt<'a>(
        &'a self,
        deliveries: &'a [&'a Delivery],
        found: &'a std::sync::Mutex<Vec<Result<bool, RecordError>>>,
        unconfirmed: &'a std::sync::Mutex<Vec<bool>>,
    ) -> BoxFuture<'a, Result<(), Failure>> {
        Box::pin(async move {
            let cached = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
            let mut cm = match cached {
                Some(cm) => cm,
                None => self
                    .api
                    .get(&self.name)
                    .await
                    .map_err(|e| self.failure(e))?,
            };
            if !controlled_by(&cm.metadata, &self.owner) {
                // Not cached: a fresh read judges the next batch.
                return Err(Failure::Final(RecordError::NotOwned {
                    config_map: self.name.clone(),
                    uid: self.owner.clone(),
                }));
            }
            let mut data = cm.data.take().unwrap_or_default();
            let now = crate::clock::system_clock()();
            let results: Vec<_> = view::apply_all(self.mode, &mut data, deliveries, now)
                .into_iter()
                .map(|result| {
                    result.map_err(|e| {
                        tracing::warn!(configmap = %self.name, error = %e, "delivery cannot be applied to the ConfigMap");
                        RecordError::Refused(e.to_string())
                    })
                })
                .collect();
            let applied: Vec<bool> = results.iter().map(|r| matches!(r, Ok(true))).collect();
            let changed = applied.contains(&true);
            let any_refused = results.iter().any(Result::is_err);
            *found.lock().unwrap_or_else(|p| p.into_inner()) = results;
            cm.data = Some(data);
            if !changed {
                // Kept only when it served: a refusal (full, or a key this receiver did not
                // write) must be judged again on a fresh read, since someone may clear it.
                if !any_refused {
                    *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(cm);
                }
                return Ok(());
            }
            // `cm` carries the resourceVersion it was read at: the API server refuses the
            // write with 409 if anyone wrote since, and the batch is applied again.
            let written = match self
                .api
                .replace(&self.name, &PostParams::default(), &cm)
                .await
            {
                Ok(written) => written,
                Err(e) => {
                    let failure = self.failure(e);
                    // Refused outright (a conflict, a 4xx), nothing was written; otherwise
                    // (no answer, a 5xx) it may have been.
                    if matches!(failure, Failure::Transient(_)) {
                        let mut unconfirmed = unconfirmed.lock().unwrap_or_else(|p| p.into_inner());
                        for (u, a) in unconfirmed.iter_mut().zip(&applied) {
                            *u |= a;
                        }
                    }
                    return Err(failure);
                }
            };
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(written);
            Ok(())
        })
    }

    fn failure(&self, e: kube::Error) -> Failure {
        match &e {
            kube::Error::Api(s) if s.code == 409 => {
                Failure::Conflict(format!("ConfigMap {} changed meanwhile", self.name))
            }
            // The operator creates it; a receiver can start first.
            kube::Error::Api(s) if s.code == 404 => {
                Failure::Transient(format!("ConfigMap {} does not exist yet", self.name))
            }
            kube::Error::Api(s) if s.code != 429 && s.code < 500 => Failure::Final(
                RecordError::Refused(format!("ConfigMap {}: {} {}", self.name, s.code, s.reason)),
            ),
            _ => Failure::Transient(e.to_string()),
        }
    }
}

/// Whether the object of `meta` is controlled by the object of uid `owner`: an owner
/// reference with `controller: true` and that uid. An empty `owner` controls nothing.
pub fn controlled_by(meta: &ObjectMeta, owner: &str) -> bool {
    !owner.is_empty()
        && meta
            .owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && r.uid == owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;
    use axum::http::{Method, Request, Response};
    use http_body_util::{BodyExt, Full};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::sync::{Arc, Mutex};

    const UID: &str = "uid-of-the-webhook";

    fn owner(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "hookwarden.io/v1alpha1".into(),
            kind: "Webhook".into(),
            name: "opal".into(),
            uid: uid.into(),
            controller,
            ..OwnerReference::default()
        }
    }

    fn meta(owners: Option<Vec<OwnerReference>>) -> ObjectMeta {
        ObjectMeta {
            name: Some("opal-state".into()),
            namespace: Some("team-a".into()),
            resource_version: Some("1".into()),
            owner_references: owners,
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_the_webhook_that_controls_a_config_map_may_write_it() {
        assert!(controlled_by(
            &meta(Some(vec![owner(UID, Some(true))])),
            UID
        ));
        assert!(controlled_by(
            &meta(Some(vec![
                owner("someone-else", Some(false)),
                owner(UID, Some(true))
            ])),
            UID
        ));
        for (owners, why) in [
            (None, "no owner references"),
            (Some(vec![]), "an empty list"),
            (Some(vec![owner(UID, None)]), "owned, not controlled"),
            (Some(vec![owner(UID, Some(false))]), "owned, not controlled"),
            (
                Some(vec![owner("another-webhook", Some(true))]),
                "another controller",
            ),
        ] {
            assert!(!controlled_by(&meta(owners), UID), "{why}");
        }
        // A receiver that knows no uid writes nothing, whatever the ConfigMap says.
        assert!(!controlled_by(&meta(Some(vec![owner("", Some(true))])), ""));
    }

    /// The API server, for one ConfigMap: GET reads it, PUT replaces it at its
    /// resourceVersion (409 otherwise), and counts the writes.
    #[derive(Default)]
    struct FakeApi {
        stored: Mutex<ConfigMap>,
        writes: Mutex<usize>,
    }

    impl FakeApi {
        fn with(owners: Option<Vec<OwnerReference>>) -> Arc<FakeApi> {
            Arc::new(FakeApi {
                stored: Mutex::new(ConfigMap {
                    metadata: meta(owners),
                    ..ConfigMap::default()
                }),
                writes: Mutex::new(0),
            })
        }

        fn writes(&self) -> usize {
            *self.writes.lock().unwrap()
        }

        fn client(self: &Arc<Self>) -> kube::Client {
            let api = self.clone();
            let service = tower::service_fn(move |request: Request<kube::client::Body>| {
                let api = api.clone();
                async move {
                    let (status, body) = api.answer(request).await;
                    Ok::<_, std::convert::Infallible>(
                        Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                }
            });
            kube::Client::new(service, "team-a")
        }

        async fn answer(&self, request: Request<kube::client::Body>) -> (u16, String) {
            let method = request.method().clone();
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let mut stored = self.stored.lock().unwrap();
            match method {
                Method::GET => (200, serde_json::to_string(&*stored).unwrap()),
                Method::PUT => {
                    let new: ConfigMap = serde_json::from_slice(&body).unwrap();
                    if new.metadata.resource_version != stored.metadata.resource_version {
                        return (409, status(409, "Conflict"));
                    }
                    *self.writes.lock().unwrap() += 1;
                    *stored = new;
                    next_version(&mut stored.metadata);
                    (200, serde_json::to_string(&*stored).unwrap())
                }
                _ => (405, status(405, "MethodNotAllowed")),
            }
        }

        /// Someone else changes the ConfigMap's owners.
        fn set_owners(&self, owners: Option<Vec<OwnerReference>>) {
            let mut stored = self.stored.lock().unwrap();
            stored.metadata.owner_references = owners;
            next_version(&mut stored.metadata);
        }

        fn data(&self) -> std::collections::BTreeMap<String, String> {
            self.stored.lock().unwrap().data.clone().unwrap_or_default()
        }
    }

    /// A write: the resourceVersion after `meta`'s.
    fn next_version(meta: &mut ObjectMeta) {
        let version: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
        meta.resource_version = Some((version + 1).to_string());
    }

    fn status(code: u16, reason: &str) -> String {
        serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": reason, "reason": reason, "code": code,
        })
        .to_string()
    }

    fn delivery(n: u8) -> Delivery {
        crate::view::tests::opal(n, n.into(), crate::view::tests::JOIN)
    }

    fn sink(api: &Arc<FakeApi>) -> ConfigMapSink {
        ConfigMapSink::new(
            api.client(),
            "team-a",
            "opal-state",
            ConfigMapMode::Log,
            UID,
        )
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[tokio::test]
    async fn a_config_map_the_webhook_controls_is_written() {
        let api = FakeApi::with(Some(vec![owner(UID, Some(true))]));
        let sink = sink(&api);
        assert_eq!(sink.record(&delivery(1), soon()).await, Ok(Recorded::Now));
        assert_eq!(api.writes(), 1);
        assert!(!api.data().is_empty());
    }

    #[tokio::test]
    async fn a_config_map_the_webhook_does_not_control_is_never_written() {
        for owners in [
            None,
            Some(vec![owner(UID, Some(false))]),
            Some(vec![owner("another-webhook", Some(true))]),
        ] {
            let api = FakeApi::with(owners.clone());
            let sink = sink(&api);
            let refused = sink.record(&delivery(1), soon()).await;
            assert_eq!(
                refused,
                Err(RecordError::NotOwned {
                    config_map: "opal-state".into(),
                    uid: UID.into()
                }),
                "{owners:?}"
            );
            assert_eq!(refused.unwrap_err().metric_label(), "sink_refused");
            assert_eq!(api.writes(), 0, "{owners:?}");
            assert!(api.data().is_empty());
        }
    }

    #[tokio::test]
    async fn a_config_map_taken_over_after_a_write_is_not_written_again() {
        let api = FakeApi::with(Some(vec![owner(UID, Some(true))]));
        let sink = sink(&api);
        assert_eq!(sink.record(&delivery(1), soon()).await, Ok(Recorded::Now));
        // Another controller now: the write at the version the sink kept is refused (409),
        // the ConfigMap read again, and seen not to be this Webhook's.
        api.set_owners(Some(vec![owner("another-webhook", Some(true))]));
        let before = api.data();
        assert!(matches!(
            sink.record(&delivery(2), soon()).await,
            Err(RecordError::NotOwned { .. })
        ));
        assert_eq!(api.writes(), 1);
        assert_eq!(api.data(), before);
        // Given back: written again.
        api.set_owners(Some(vec![owner(UID, Some(true))]));
        assert_eq!(sink.record(&delivery(3), soon()).await, Ok(Recorded::Now));
        assert_eq!(api.writes(), 2);
    }
}
