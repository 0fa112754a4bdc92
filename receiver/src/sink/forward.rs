//! The `forward` sink, for the sidecar use: after verification, the raw body goes to an
//! application (typically `http://127.0.0.1:PORT/...` in the same pod), and its 2xx is the
//! acknowledgement.
//!
//! The application gets the sender's body byte for byte with its content type, and headers
//! saying what hookwarden checked: `X-Hookwarden-Webhook` (`namespace/name`),
//! `X-Hookwarden-Delivery` (the delivery's identity, the same for a retried or replayed
//! delivery, so the application can recognise one it already took) and
//! `X-Hookwarden-Event-Types` (the accepted event types it carries).
//!
//! It also gets W3C trace context (see `trace`): the sender's `traceparent` and `tracestate`
//! when it sent a valid one, else a new trace; the receiver's log line for the delivery
//! carries the same trace id.

use axum::body::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use tokio::time::Instant;

use super::retry::{Failure, retry_until};
use crate::config::WebhookIdentity;
use crate::delivery::{Delivery, RecordError, Recorded, Sink};
use crate::error::{Error, Result};
use crate::trace::{TRACEPARENT, TRACESTATE};

pub const WEBHOOK_HEADER: &str = "x-hookwarden-webhook";
pub const DELIVERY_HEADER: &str = "x-hookwarden-delivery";
pub const EVENT_TYPES_HEADER: &str = "x-hookwarden-event-types";

/// Forwards verified deliveries to one URL, reusing connections.
pub struct ForwardSink {
    client: crate::client::HttpClient,
    url: Uri,
    webhook: String,
}

impl ForwardSink {
    pub fn new(url: &str, webhook: &WebhookIdentity) -> Result<Self> {
        let url: Uri = url
            .parse()
            .map_err(|e| Error::Config(format!("sinks.forward.url {url:?}: {e}")))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(Error::Config(format!(
                "sinks.forward.url {url} must be an http:// or https:// URL"
            )));
        }
        Ok(ForwardSink {
            client: crate::client::http_client().map_err(Error::Config)?,
            url,
            webhook: format!("{}/{}", webhook.namespace, webhook.name),
        })
    }

    fn request(&self, delivery: &Delivery) -> Result<Request<Full<Bytes>>, RecordError> {
        let mut types: Vec<&str> = delivery
            .events
            .iter()
            .map(|e| e.event_type.as_ref())
            .collect();
        types.dedup();
        let content_type = delivery
            .content_type
            .clone()
            .unwrap_or_else(|| hyper::header::HeaderValue::from_static("application/octet-stream"));
        let mut request = Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(WEBHOOK_HEADER, &self.webhook)
            .header(DELIVERY_HEADER, hex::encode(delivery.key))
            .header(EVENT_TYPES_HEADER, types.join(","));
        if let Some(trace) = &delivery.trace {
            request = request.header(&TRACEPARENT, trace.traceparent());
            if let Some(state) = &trace.tracestate {
                request = request.header(&TRACESTATE, state);
            }
        }
        request
            .body(Full::new(delivery.body.clone()))
            // Not expected: every value here is a valid header value.
            .map_err(|e| RecordError::Refused(format!("cannot forward: {e}")))
    }

    async fn attempt(&self, delivery: &Delivery) -> Result<(), Failure> {
        let request = self.request(delivery).map_err(Failure::Final)?;
        match self.client.request(request).await {
            Err(e) => Err(Failure::Transient(format!("application unreachable: {e}"))),
            Ok(response) => {
                let status = response.status();
                // Drain the answer so the connection can be reused.
                let _ = response.into_body().collect().await;
                classify(status)
            }
        }
    }
}

/// 2xx is the acknowledgement; 429 and 5xx may pass; any other answer is the
/// application's refusal.
fn classify(status: StatusCode) -> Result<(), Failure> {
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Err(Failure::Transient(format!("application answered {status}")))
    } else {
        Err(Failure::Final(RecordError::Refused(format!(
            "application answered {status}"
        ))))
    }
}

impl Sink for ForwardSink {
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        // Every attempt carries the same `traceparent`: retries are one delivery. The
        // application decides what a replay is (by the delivery id header), so to this sink
        // every delivery is recorded now.
        Box::pin(async move {
            retry_until(deadline, move || self.attempt(delivery)).await?;
            Ok(Recorded::Now)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_acknowledges() {
        assert!(classify(StatusCode::OK).is_ok());
        assert!(classify(StatusCode::ACCEPTED).is_ok());
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Err(Failure::Transient(_))
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST),
            Err(Failure::Final(RecordError::Refused(_)))
        ));
    }

    #[test]
    fn urls_must_be_http() {
        let id = WebhookIdentity {
            name: "w".into(),
            namespace: "n".into(),
            uid: "u".into(),
        };
        assert!(ForwardSink::new("http://127.0.0.1:3000/hooks", &id).is_ok());
        assert!(ForwardSink::new("ftp://x/y", &id).is_err());
        assert!(ForwardSink::new("/relative", &id).is_err());
    }
}
