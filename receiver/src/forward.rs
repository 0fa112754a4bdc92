//! The `forward` sink, for the sidecar use: after verification, the raw body goes to an
//! application (typically `http://127.0.0.1:PORT/...` in the same pod), and its 2xx is the
//! acknowledgement.
//!
//! The application gets the sender's body byte for byte with its content type, and headers
//! saying what hookwarden checked: `X-Hookwarden-Webhook` (`namespace/name`),
//! `X-Hookwarden-Delivery` (the delivery's identity, the same for a retried or replayed
//! delivery, so the application can recognise one it already took) and
//! `X-Hookwarden-Event-Types` (the accepted event types it carries).

use axum::body::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use crate::config::WebhookIdentity;
use crate::error::{Error, Result};
use crate::sink::{Delivery, RecordError, Sink};

pub const WEBHOOK_HEADER: &str = "x-hookwarden-webhook";
pub const DELIVERY_HEADER: &str = "x-hookwarden-delivery";
pub const EVENT_TYPES_HEADER: &str = "x-hookwarden-event-types";

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Forwards verified deliveries to one URL, reusing connections.
pub struct ForwardSink {
    client: HttpsClient,
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
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::Config(format!("cannot load CA roots: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        Ok(ForwardSink {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
            webhook: format!("{}/{}", webhook.namespace, webhook.name),
        })
    }

    fn request(&self, delivery: &Delivery) -> Result<Request<Full<Bytes>>, RecordError> {
        let mut types: Vec<&str> = delivery
            .events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect();
        types.dedup();
        let content_type = delivery
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, content_type)
            .header(WEBHOOK_HEADER, &self.webhook)
            .header(DELIVERY_HEADER, hex::encode(delivery.key))
            .header(EVENT_TYPES_HEADER, types.join(","))
            .body(Full::new(delivery.body.clone()))
            // Only a content type a sender sent that is not a valid header value gets here.
            .map_err(|e| RecordError::Refused(format!("cannot forward: {e}")))
    }

    async fn attempt(&self, delivery: &Delivery) -> Attempt {
        let request = match self.request(delivery) {
            Ok(r) => r,
            Err(e) => return Attempt::Final(e),
        };
        match self.client.request(request).await {
            Err(e) => Attempt::Retry(format!("application unreachable: {e}")),
            Ok(response) => {
                let status = response.status();
                // Drain the answer so the connection can be reused.
                let _ = response.into_body().collect().await;
                classify(status)
            }
        }
    }
}

enum Attempt {
    Done,
    Retry(String),
    Final(RecordError),
}

/// 2xx is the acknowledgement; 429 and 5xx may pass; any other answer is the
/// application's refusal.
fn classify(status: StatusCode) -> Attempt {
    if status.is_success() {
        Attempt::Done
    } else if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        Attempt::Retry(format!("application answered {status}"))
    } else {
        Attempt::Final(RecordError::Refused(format!(
            "application answered {status}"
        )))
    }
}

impl Sink for ForwardSink {
    fn record<'a>(
        &'a self,
        delivery: &'a Delivery,
        deadline: Instant,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move {
            let mut delay = std::time::Duration::from_millis(100);
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let last = match tokio::time::timeout(remaining, self.attempt(delivery)).await {
                    Ok(Attempt::Done) => return Ok(()),
                    Ok(Attempt::Final(e)) => return Err(e),
                    Ok(Attempt::Retry(why)) => why,
                    Err(_) => "the application did not answer in time".to_string(),
                };
                if Instant::now() + delay >= deadline {
                    return Err(RecordError::Unavailable(last));
                }
                tracing::debug!(reason = %last, "forward failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(1));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_acknowledges() {
        assert!(matches!(classify(StatusCode::OK), Attempt::Done));
        assert!(matches!(classify(StatusCode::ACCEPTED), Attempt::Done));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Attempt::Retry(_)
        ));
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST),
            Attempt::Final(RecordError::Refused(_))
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
