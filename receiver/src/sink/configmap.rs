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

use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
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
    /// Starts the writer task; must be called inside a Tokio runtime.
    pub fn new(client: kube::Client, namespace: &str, name: &str, mode: ConfigMapMode) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let writer = Writer {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            mode,
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
