//! The pod admission webhook of `spec.sidecar` (I/O): an HTTPS server on every operator
//! replica (not only the leader), the TLS material it serves with (generated, kept in a
//! Secret, rotated: `certs`), and the `MutatingWebhookConfiguration` that sends opted-in
//! pods to it, which the operator writes itself so that the CA bundle in it is never a
//! chart-rendered field that drifts. Decisions are `inject`'s.

pub mod certs;
pub mod inject;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::ByteString;
use k8s_openapi::Resource as _;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use tracing::{info, warn};

use crate::crd::Webhook;
use crate::error::{Error, Result};
use crate::runtime::metrics::Metrics;
use crate::runtime::names;
use crate::webhook::children::{self, ReceiverDefaults};
use certs::Material;
use inject::Decision;

/// How often each replica looks at the TLS Secret (rotation, another replica's rotation)
/// and re-applies the webhook configuration.
const REFRESH: Duration = Duration::from_secs(20);
/// How long a new CA bundle is given to reach the API server's webhook client before this
/// replica presents a certificate only the new CA signed.
const BUNDLE_PROPAGATION: Duration = Duration::from_secs(5);
/// How long a stopping replica keeps answering after it turned unready, so that the API
/// server's endpoints have moved on before the port closes.
const DRAIN: Duration = Duration::from_secs(8);
/// How long the API server waits for an answer before the failure policy applies.
const TIMEOUT_SECONDS: i32 = 10;

/// Where the webhook listens and what it is called.
#[derive(Clone, Debug)]
pub struct InjectorConfig {
    pub addr: SocketAddr,
    /// The Service (in `namespace`) in front of the operator's pods' webhook port.
    pub service: String,
    /// The operator's namespace: the Service's and the TLS Secret's.
    pub namespace: String,
    /// The Secret holding the TLS material.
    pub secret: String,
    /// The MutatingWebhookConfiguration the operator writes.
    pub configuration: String,
    /// A ClusterRole that owns the configuration, so that it goes with the release.
    pub owner: Option<String>,
    /// Lifetime of a generated CA and certificate.
    pub validity: Duration,
    /// Pods only in these namespaces (the operator's watched ones); all when empty.
    pub namespaces: Vec<String>,
}

struct Injector {
    client: Client,
    defaults: ReceiverDefaults,
    metrics: Arc<Metrics>,
    namespaces: Vec<String>,
}

/// Serves the webhook until `shutdown`; sets `serving` once it accepts connections with a
/// certificate the webhook configuration trusts.
pub async fn run(
    client: Client,
    config: InjectorConfig,
    defaults: ReceiverDefaults,
    metrics: Arc<Metrics>,
    serving: Arc<AtomicBool>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    // The process-wide TLS provider, as kube's client uses (ring); already set is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &config.namespace);
    let mut material = loop {
        match ensure_material(&client, &secrets, &config).await {
            Ok(m) => break m,
            Err(error) => {
                warn!(%error, "cannot prepare the admission webhook's certificate; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        }
    };
    // (checked by ensure_material, so this does not fail on what the Secret holds)
    let tls = RustlsConfig::from_pem(
        material.cert.clone().into_bytes(),
        material.key.clone().into_bytes(),
    )
    .await
    .map_err(Error::Http)?;
    let injector = Arc::new(Injector {
        client: client.clone(),
        defaults,
        metrics,
        namespaces: config.namespaces.clone(),
    });
    let app = Router::new()
        .route(names::INJECT_PATH, post(review))
        .with_state(injector);
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls(config.addr, tls.clone())
        .handle(handle.clone())
        .serve(app.into_make_service());
    let server = tokio::spawn(server);
    if handle.listening().await.is_none() {
        return Err(Error::Render(format!(
            "the admission webhook cannot listen on {}",
            config.addr
        )));
    }
    info!(addr = %config.addr, "admission webhook serving");

    let keeper = async {
        loop {
            // Ready only while the configuration trusts what this replica serves.
            match apply_configuration(&client, &config, &material).await {
                Ok(trusted) => serving.store(trusted, Ordering::Relaxed),
                Err(error) => {
                    warn!(%error, "cannot apply the MutatingWebhookConfiguration; retrying")
                }
            }
            tokio::time::sleep(REFRESH).await;
            let next = match ensure_material(&client, &secrets, &config).await {
                Ok(next) if next != material => next,
                Ok(_) => continue,
                Err(error) => {
                    warn!(%error, "cannot read the admission webhook's certificate");
                    continue;
                }
            };
            // The API server trusts the new CA first (its bundle keeps the ones replicas
            // still serve with), and only then does this replica present the new certificate.
            match apply_configuration(&client, &config, &next).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        "the CA bundle does not trust the new certificate yet; keeping the current one"
                    );
                    continue;
                }
                Err(error) => {
                    warn!(%error, "cannot apply the new CA bundle; keeping the current certificate");
                    continue;
                }
            }
            tokio::time::sleep(BUNDLE_PROPAGATION).await;
            match tls
                .reload_from_pem(
                    next.cert.clone().into_bytes(),
                    next.key.clone().into_bytes(),
                )
                .await
            {
                Ok(()) => {
                    info!(not_after = %next.not_after, "admission webhook certificate reloaded");
                    material = next;
                }
                Err(error) => warn!(%error, "cannot load the new admission webhook certificate"),
            }
        }
    };
    tokio::select! {
        _ = keeper => {}
        _ = shutdown => {}
    }
    // Out of the Service first (readiness), still answering what arrives meanwhile; then
    // the reviews in flight finish.
    serving.store(false, Ordering::Relaxed);
    info!("admission webhook draining");
    tokio::time::sleep(DRAIN).await;
    handle.graceful_shutdown(Some(Duration::from_secs(5)));
    let _ = server.await;
    Ok(())
}

/// The TLS material from the Secret: created when there is none, replaced when due.
/// Replicas race through optimistic concurrency: a create or replace that loses re-reads.
async fn ensure_material(
    client: &Client,
    secrets: &Api<Secret>,
    config: &InjectorConfig,
) -> Result<Material> {
    let names = certs::dns_names(&config.service, &config.namespace);
    for _ in 0..3 {
        let now = jiff::Timestamp::now();
        let existing = secrets.get_opt(&config.secret).await?;
        let stored = existing
            .as_ref()
            .and_then(|s| certs::from_secret(s.data.as_ref(), s.metadata.annotations.as_ref()));
        // A pair that does not load is replaced, as a missing one is.
        let current = stored.filter(|m| match certs::check(m) {
            Ok(()) => true,
            Err(problem) => {
                warn!(%problem, secret = %config.secret, "the admission webhook's certificate is unusable; issuing a new one");
                false
            }
        });
        if let Some(m) = &current
            && !certs::due(m, config.validity, now)
        {
            return Ok(m.clone());
        }
        let next = certs::generate(&names, config.validity, now, current.as_ref())
            .map_err(Error::Render)?;
        let (data, annotations) = certs::to_secret(&next);
        let written = match existing {
            None => {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some(config.secret.clone()),
                        namespace: Some(config.namespace.clone()),
                        labels: Some(
                            [(
                                "app.kubernetes.io/managed-by".to_string(),
                                names::MANAGED_BY.to_string(),
                            )]
                            .into(),
                        ),
                        annotations: Some(annotations),
                        owner_references: owner_reference(client, config).await?.map(|o| vec![o]),
                        ..ObjectMeta::default()
                    },
                    type_: Some("kubernetes.io/tls".into()),
                    data: Some(data),
                    ..Secret::default()
                };
                secrets.create(&PostParams::default(), &secret).await
            }
            Some(mut secret) => {
                // resourceVersion stays: a replica that rotated first wins, this one re-reads.
                secret.data = Some(data);
                secret
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .extend(annotations);
                secrets
                    .replace(&config.secret, &PostParams::default(), &secret)
                    .await
            }
        };
        match written {
            Ok(_) => {
                info!(secret = %config.secret, not_after = %next.not_after, "admission webhook certificate issued");
                return Ok(next);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Render(
        "the admission webhook's TLS Secret keeps changing under this replica".into(),
    ))
}

/// The configuration that sends every opted-in pod's creation to this webhook.
pub fn configuration(
    config: &InjectorConfig,
    ca_bundle: &str,
    owner: Option<OwnerReference>,
) -> MutatingWebhookConfiguration {
    let mut excluded = vec!["kube-system".to_string(), config.namespace.clone()];
    excluded.dedup();
    let mut namespace_rules = vec![LabelSelectorRequirement {
        key: "kubernetes.io/metadata.name".into(),
        operator: "NotIn".into(),
        values: Some(excluded),
    }];
    if !config.namespaces.is_empty() {
        namespace_rules.push(LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "In".into(),
            values: Some(config.namespaces.clone()),
        });
    }
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(config.configuration.clone()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    names::MANAGED_BY.to_string(),
                )]
                .into(),
            ),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: names::INJECT_WEBHOOK.into(),
            admission_review_versions: vec!["v1".into()],
            side_effects: "None".into(),
            // Refused, not admitted without its receiver: the pod's ReplicaSet tries again
            // and the pod gets its receiver once the operator answers.
            failure_policy: Some("Fail".into()),
            match_policy: Some("Equivalent".into()),
            reinvocation_policy: Some("Never".into()),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca_bundle.as_bytes().to_vec())),
                service: Some(ServiceReference {
                    name: config.service.clone(),
                    namespace: config.namespace.clone(),
                    path: Some(names::INJECT_PATH.into()),
                    port: Some(443),
                }),
                url: None,
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec!["".into()]),
                api_versions: Some(vec!["v1".into()]),
                operations: Some(vec!["CREATE".into()]),
                resources: Some(vec!["pods".into()]),
                scope: Some("Namespaced".into()),
            }]),
            object_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: names::INJECT_LABEL.into(),
                    operator: "Exists".into(),
                    values: None,
                }]),
                match_labels: None,
            }),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(namespace_rules),
                match_labels: None,
            }),
            match_conditions: None,
        }]),
    }
}

/// The ClusterRole that owns what the webhook writes (its configuration and certificate
/// Secret), so that both go with the release.
async fn owner_reference(
    client: &Client,
    config: &InjectorConfig,
) -> Result<Option<OwnerReference>> {
    let Some(name) = &config.owner else {
        return Ok(None);
    };
    let roles: Api<ClusterRole> = Api::all(client.clone());
    Ok(roles.get_opt(name).await?.and_then(|r| {
        Some(OwnerReference {
            api_version: ClusterRole::API_VERSION.into(),
            kind: ClusterRole::KIND.into(),
            name: name.clone(),
            uid: r.metadata.uid?,
            controller: None,
            block_owner_deletion: None,
        })
    }))
}

/// Writes the webhook configuration with a CA bundle that trusts `material` and keeps the
/// CAs it already holds (another replica's, old or newer), conditional on what was read so
/// that two replicas never overwrite each other's bundle blindly. Returns whether the stored
/// bundle trusts this replica's certificate.
async fn apply_configuration(
    client: &Client,
    config: &InjectorConfig,
    material: &Material,
) -> Result<bool> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let ours = certs::current_ca(&material.ca_bundle).to_string();
    let owner = owner_reference(client, config).await?;
    for _ in 0..3 {
        let existing = api.get_opt(&config.configuration).await?;
        let there = existing.as_ref().and_then(|c| {
            let hook = c
                .webhooks
                .as_ref()?
                .iter()
                .find(|w| w.name == names::INJECT_WEBHOOK)?;
            String::from_utf8(hook.client_config.ca_bundle.as_ref()?.0.clone()).ok()
        });
        let bundle = certs::merged_bundle(&material.ca_bundle, there.as_deref());
        let mut wanted = configuration(config, &bundle, owner.clone());
        wanted.metadata.resource_version = existing.and_then(|c| c.metadata.resource_version);
        let params = PatchParams::apply(names::FIELD_MANAGER).force();
        match api
            .patch(&config.configuration, &params, &Patch::Apply(&wanted))
            .await
        {
            Ok(_) => return Ok(!ours.is_empty() && bundle.contains(&ours)),
            // Changed since it was read (another replica): read it again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

async fn review(State(injector): State<Arc<Injector>>, body: Bytes) -> Response {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview: {e}\n"),
            )
                .into_response();
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return json(&AdmissionResponse::invalid(e.to_string()).into_review()),
    };
    let response = AdmissionResponse::from(&request);
    let (outcome, response) = match injector.decide(&request).await {
        (Decision::Unchanged, _) => ("unchanged", response),
        (Decision::Patch(patch), _) => match response.clone().with_patch(patch) {
            Ok(r) => ("injected", r),
            Err(e) => (
                "denied",
                response.deny(format!("cannot encode the patch: {e}")),
            ),
        },
        (Decision::Deny(message), webhook) => {
            warn!(
                namespace = request.namespace.as_deref().unwrap_or(""),
                webhook = webhook.as_deref().unwrap_or(""),
                reason = %message,
                "pod refused"
            );
            ("denied", response.deny(message))
        }
    };
    injector.metrics.admission(outcome);
    json(&response.into_review())
}

impl Injector {
    /// What to answer for one pod, and the Webhook it asked for.
    async fn decide(&self, request: &AdmissionRequest<Pod>) -> (Decision, Option<String>) {
        let (Operation::Create, Some(pod)) = (&request.operation, &request.object) else {
            return (Decision::Unchanged, None);
        };
        let Some(name) = inject::requested(pod) else {
            return (Decision::Unchanged, None);
        };
        let namespace = request.namespace.clone().unwrap_or_default();
        let name = name.to_string();
        if !self.namespaces.is_empty() && !self.namespaces.contains(&namespace) {
            let message = format!(
                "hookwarden's operator does not watch namespace {namespace:?}, so Webhook \
                 {name:?} cannot serve this pod: add the namespace to the operator's \
                 watchNamespaces or remove the label {}",
                names::INJECT_LABEL
            );
            return (Decision::Deny(message), Some(name));
        }
        let webhooks: Api<Webhook> = Api::namespaced(self.client.clone(), &namespace);
        let webhook = match webhooks.get_opt(&name).await {
            Ok(w) => w,
            Err(error) => {
                let message = format!("cannot read Webhook {name:?}: {error}");
                return (Decision::Deny(message), Some(name));
            }
        };
        let spec = match inject::sidecar_spec(&namespace, &name, webhook.as_ref()) {
            Ok(s) => s,
            Err(message) => return (Decision::Deny(message), Some(name)),
        };
        let (Some(webhook), Some(sidecar)) = (webhook, spec.sidecar.as_ref()) else {
            return (Decision::Unchanged, Some(name));
        };
        let decision = match children::sidecar_receiver(&webhook, &spec, sidecar, &self.defaults) {
            Ok(receiver) => inject::decide(pod, &receiver),
            Err(error) => Decision::Deny(format!(
                "cannot build the receiver of Webhook {name:?}: {error}"
            )),
        };
        if matches!(decision, Decision::Patch(_)) {
            info!(namespace, webhook = %name, pod = pod.metadata.generate_name.as_deref().or(pod.metadata.name.as_deref()).unwrap_or(""), "injecting the receiver");
        }
        (decision, Some(name))
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(namespaces: &[&str]) -> InjectorConfig {
        InjectorConfig {
            addr: "0.0.0.0:9443".parse().unwrap(),
            service: "hookwarden-operator-webhook".into(),
            namespace: "hookwarden-system".into(),
            secret: "hookwarden-operator-webhook-tls".into(),
            configuration: "hookwarden-operator".into(),
            owner: None,
            validity: Duration::from_secs(86_400),
            namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_opted_in_pods_outside_system_namespaces_reach_the_webhook() {
        let c = configuration(&config(&[]), "PEM", None);
        let w = &c.webhooks.as_ref().unwrap()[0];
        assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(w.side_effects, "None");
        let object = w
            .object_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(
            (object[0].key.as_str(), object[0].operator.as_str()),
            ("hookwarden.io/inject", "Exists")
        );
        let ns = w
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .as_ref()
            .unwrap();
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].operator, "NotIn");
        assert_eq!(
            ns[0].values.as_deref().unwrap(),
            ["kube-system", "hookwarden-system"]
        );
        let rules = w.rules.as_ref().unwrap();
        assert_eq!(rules[0].operations.as_deref().unwrap(), ["CREATE"]);
        assert_eq!(rules[0].resources.as_deref().unwrap(), ["pods"]);
        let svc = w.client_config.service.as_ref().unwrap();
        assert_eq!(svc.path.as_deref(), Some("/inject-pods"));
        assert_eq!(w.client_config.ca_bundle.as_ref().unwrap().0, b"PEM");

        let scoped = configuration(&config(&["team-a", "team-b"]), "PEM", None);
        let ns = scoped.webhooks.as_ref().unwrap()[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_expressions
            .clone()
            .unwrap();
        assert_eq!(ns[1].operator, "In");
        assert_eq!(ns[1].values.as_deref().unwrap(), ["team-a", "team-b"]);
    }
}
