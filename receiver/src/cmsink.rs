//! The `configMap` sink: applies each delivery to one ConfigMap (see `view` for the layout)
//! with optimistic concurrency: read, apply, replace at the read `resourceVersion`; a
//! conflict (another replica wrote first) reads again, so no update is lost. A delivery
//! applied before is recognised from the ConfigMap itself, so it applies once.

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::config::ConfigMapMode;
use crate::sink::{Delivery, Failure, RecordError, Sink, retry_until};
use crate::view;

pub struct ConfigMapSink {
    api: Api<ConfigMap>,
    name: String,
    mode: ConfigMapMode,
}

impl ConfigMapSink {
    pub fn new(client: kube::Client, namespace: &str, name: &str, mode: ConfigMapMode) -> Self {
        ConfigMapSink {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            mode,
        }
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), Failure> {
        let api_failure = |e: kube::Error| match &e {
            kube::Error::Api(s) if s.code == 409 => {
                Failure::Transient(format!("ConfigMap {} changed meanwhile", self.name))
            }
            // The operator creates it; a receiver can start first.
            kube::Error::Api(s) if s.code == 404 => {
                Failure::Transient(format!("ConfigMap {} does not exist yet", self.name))
            }
            kube::Error::Api(s) if s.code != 429 && s.code < 500 => Failure::Final(
                RecordError::Refused(format!("ConfigMap {}: {} {}", self.name, s.code, s.reason)),
            ),
            _ => Failure::Transient(e.to_string()),
        };
        let mut cm = self.api.get(&self.name).await.map_err(api_failure)?;
        let mut data = cm.data.take().unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        match view::apply(self.mode, &mut data, delivery, now) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(configmap = %self.name, error = %e, "delivery cannot be applied to the ConfigMap");
                return Err(Failure::Final(RecordError::Refused(e.to_string())));
            }
        }
        cm.data = Some(data);
        // `cm` carries the resourceVersion it was read at: the API server refuses the write
        // with 409 if anyone wrote since.
        self.api
            .replace(&self.name, &PostParams::default(), &cm)
            .await
            .map(|_| ())
            .map_err(api_failure)
    }
}

impl Sink for ConfigMapSink {
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(retry_until(deadline, move || self.attempt(delivery)))
    }
}
