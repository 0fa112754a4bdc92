//! Builds the objects a Webhook's receiver needs, from a validated spec. Pure: the
//! reconciler applies what these functions return.

use std::collections::BTreeMap;

use hookwarden_api::config::{
    CONFIG_FILE_NAME, DEFAULT_METRICS_PORT, DEFAULT_PORT, ForwardConfig, ReceiverConfig,
    SinksConfig, WebhookIdentity,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, LocalObjectReference, ObjectFieldSelector, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceFieldSelector, ResourceRequirements, SeccompProfile,
    Secret, SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use crate::crd::{ReceiverSettings, Webhook, WebhookIngress};
use crate::error::{Error, Result};
use crate::runtime::names;
use crate::webhook::validate::{ValidSidecar, ValidSpec};

/// Where the receiver finds its config file.
pub use hookwarden_api::names::CONFIG_DIR;
/// Where the receiver finds its signing secrets, one directory per secret.
pub const SECRETS_DIR: &str = "/var/run/hookwarden/secrets";
/// The environment variable that gives the receiver its container's memory limit (bytes).
pub const MEMORY_LIMIT_ENV: &str = "HOOKWARDEN_MEMORY_LIMIT_BYTES";
/// The non-root user the receiver runs as (the distroless `nonroot` user).
pub const RECEIVER_UID: i64 = 65532;

/// Operator-wide settings of receivers.
#[derive(Clone, Debug)]
pub struct ReceiverDefaults {
    pub image: String,
    pub image_pull_policy: String,
    /// Pull secrets for the receiver image, for Webhooks that name none of their own. Each
    /// must exist in the Webhook's namespace.
    pub image_pull_secrets: Vec<String>,
    /// What the platform team allows Webhook and pool authors (see `guardrails`).
    pub guardrails: crate::webhook::guardrails::Guardrails,
}

/// Everything applied for one Webhook (the generated Secret is handled apart: it is created
/// once and never re-applied).
#[derive(Clone, Debug)]
pub struct Children {
    /// The receiver's config file (none for a pooled Webhook: its pool's config names it).
    pub config: Option<ConfigMap>,
    pub sink: Option<ConfigMap>,
    /// Where the receiver runs.
    pub receiver: ReceiverPlan,
    /// The receiver's Service: over its own pods, or over the pods it is injected into
    /// (none for a pooled Webhook: it is reached through its pool's Service).
    pub service: Option<Service>,
    /// The Ingress for `spec.ingress`, when set.
    pub ingress: Option<Ingress>,
    /// The Gateway API HTTPRoute for `spec.gateway`, when set.
    pub http_route: Option<kube::api::DynamicObject>,
}

/// Where a Webhook's receiver runs: the one difference between its two placements.
#[derive(Clone, Debug)]
pub enum ReceiverPlan {
    /// Pods of its own.
    Own(Box<OwnReceiver>),
    /// `spec.sidecar`: injected into the application's opted-in pods at their admission.
    Sidecar {
        /// What is injected now ([`SidecarReceiver::hash`]), to tell outdated pods.
        hash: String,
    },
    /// `spec.pool`: served by the pods of this ReceiverPool.
    Pool { pool: String },
}

/// A receiver with pods of its own: a Deployment, under a ServiceAccount whose Role allows
/// exactly what its sinks write.
#[derive(Clone, Debug)]
pub struct OwnReceiver {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub deployment: Deployment,
}

/// Whether `webhook` is the controller of the object with `meta` (its owner reference
/// with `controller: true`): what the operator made for it, and may change or delete.
pub fn controlled_by(meta: &ObjectMeta, webhook: &Webhook) -> bool {
    let Some(uid) = webhook.metadata.uid.as_ref() else {
        return false;
    };
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| &o.uid == uid && o.controller == Some(true))
}

/// Identity of the Webhook the children belong to.
struct Owner {
    name: String,
    namespace: String,
    owner_ref: OwnerReference,
    uid: String,
}

fn owner(webhook: &Webhook) -> Result<Owner> {
    let name = webhook
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let namespace = webhook
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let uid = webhook
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    let owner_ref = webhook
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey("metadata.uid"))?;
    Ok(Owner {
        name,
        namespace,
        owner_ref,
        uid,
    })
}

fn meta(owner: &Owner, name: String, role: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(owner.namespace.clone()),
        labels: Some(names::labels(&owner.name, role)),
        owner_references: Some(vec![owner.owner_ref.clone()]),
        ..ObjectMeta::default()
    }
}

/// The receiver's config file, as the receiver crate defines it.
pub fn receiver_config(webhook: &Webhook, spec: &ValidSpec) -> Result<ReceiverConfig> {
    let o = owner(webhook)?;
    Ok(ReceiverConfig {
        webhook: WebhookIdentity {
            name: o.name,
            namespace: o.namespace,
            uid: o.uid,
        },
        listen: std::net::SocketAddr::from((
            [0, 0, 0, 0],
            spec.sidecar.as_ref().map_or(DEFAULT_PORT, |s| s.port),
        )),
        metrics_listen: std::net::SocketAddr::from((
            [0, 0, 0, 0],
            spec.sidecar
                .as_ref()
                .map_or(DEFAULT_METRICS_PORT, |s| s.metrics_port),
        )),
        path: spec.path.clone(),
        provider: spec.provider,
        event_types: spec.event_types.clone(),
        secret_files: (0..spec.secrets().count())
            .map(|i| secret_file(i).into())
            .collect(),
        sinks: SinksConfig {
            events: spec.events,
            config_map: spec.config_map.clone(),
            forward: spec.forward.clone().map(|url| ForwardConfig { url }),
        },
        generic_hmac: spec.generic_hmac.clone(),
        limits: spec.limits.clone(),
    })
}

/// Where the receiver reads the `i`th active secret: one directory per secret, so that each
/// is its own Secret volume and follows in-place updates of that Secret.
fn secret_file(i: usize) -> String {
    format!("{SECRETS_DIR}/{i}/{}", names::GENERATED_SECRET_KEY)
}

/// Builds every child of `webhook`.
pub fn build(webhook: &Webhook, spec: &ValidSpec, defaults: &ReceiverDefaults) -> Result<Children> {
    let o = owner(webhook)?;
    // The Service senders reach this Webhook through.
    let receiver_name = match &spec.pool {
        Some(pool) => names::pool_receiver(pool),
        None => names::receiver(&o.name),
    };
    let config_yaml = receiver_config(webhook, spec)?
        .to_yaml()
        .map_err(|e| Error::Render(e.to_string()))?;

    let (receiver, service) = match (&spec.pool, &spec.sidecar) {
        (Some(pool), _) => (ReceiverPlan::Pool { pool: pool.clone() }, None),
        (None, None) => {
            let own = own_receiver(webhook, &o, spec, defaults, &config_yaml);
            let service = receiver_service(
                &o,
                names::selector_labels(&o.name),
                IntOrString::String("http".into()),
                IntOrString::String("metrics".into()),
            );
            (ReceiverPlan::Own(Box::new(own)), Some(service))
        }
        (None, Some(sidecar)) => {
            let injected =
                sidecar_receiver_with(webhook, &o, spec, sidecar, defaults, &config_yaml)?;
            let service = receiver_service(
                &o,
                BTreeMap::from([(names::INJECT_LABEL.to_string(), o.name.clone())]),
                IntOrString::Int(i32::from(sidecar.port)),
                IntOrString::Int(i32::from(sidecar.metrics_port)),
            );
            (
                ReceiverPlan::Sidecar {
                    hash: injected.hash,
                },
                Some(service),
            )
        }
    };

    let config = spec.pool.is_none().then(|| ConfigMap {
        metadata: meta(&o, names::receiver_config(&o.name), "config"),
        data: Some(BTreeMap::from([(
            CONFIG_FILE_NAME.to_string(),
            config_yaml,
        )])),
        ..ConfigMap::default()
    });

    // The sink carries no data here: the receiver owns its content, and server-side apply
    // leaves fields this manager does not set alone.
    let sink = spec.config_map.as_ref().map(|cm| ConfigMap {
        metadata: meta(&o, cm.name.clone(), "sink"),
        ..ConfigMap::default()
    });

    let ingress = spec
        .ingress
        .as_ref()
        .map(|i| ingress(&o, spec, i, &receiver_name));

    let http_route = spec.gateway.as_ref().map(|g| {
        crate::webhook::route::http_route(
            meta(&o, names::receiver(&o.name), "receiver"),
            spec,
            g,
            &receiver_name,
        )
    });

    Ok(Children {
        config,
        sink,
        receiver,
        service,
        ingress,
        http_route,
    })
}

/// The receiver's own Deployment, ServiceAccount, Role and RoleBinding.
fn own_receiver(
    webhook: &Webhook,
    o: &Owner,
    spec: &ValidSpec,
    defaults: &ReceiverDefaults,
    config_yaml: &str,
) -> OwnReceiver {
    let receiver_name = names::receiver(&o.name);
    let service_account = ServiceAccount {
        metadata: meta(o, receiver_name.clone(), "receiver"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };

    let mut rules = vec![PolicyRule {
        api_groups: Some(vec!["events.k8s.io".into()]),
        resources: Some(vec!["events".into()]),
        verbs: vec!["create".into(), "patch".into()],
        ..PolicyRule::default()
    }];
    if let Some(cm) = &spec.config_map {
        rules.push(PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![cm.name.clone()]),
            verbs: vec!["get".into(), "update".into(), "patch".into()],
            ..PolicyRule::default()
        });
        rules.extend(writer_election_rules(&receiver_name));
    }
    let role = Role {
        metadata: meta(o, receiver_name.clone(), "receiver"),
        rules: Some(rules),
    };
    let role_binding = RoleBinding {
        metadata: meta(o, receiver_name.clone(), "receiver"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: receiver_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: receiver_name.clone(),
            namespace: Some(o.namespace.clone()),
            ..Subject::default()
        }]),
    };
    let deployment = deployment(
        webhook,
        o,
        spec,
        defaults,
        &receiver_name,
        &hash(config_yaml),
    );
    OwnReceiver {
        service_account,
        role,
        role_binding,
        deployment,
    }
}

/// The receiver's Service: ports `http` (80) and `metrics` to `http` and `metrics` of the
/// pods `selector` picks.
fn receiver_service(
    o: &Owner,
    selector: BTreeMap<String, String>,
    http: IntOrString,
    metrics: IntOrString,
) -> Service {
    Service {
        metadata: meta(o, names::receiver(&o.name), "receiver"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(http),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: i32::from(DEFAULT_METRICS_PORT),
                    target_port: Some(metrics),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service of a Webhook that had a receiver of its own and is served by `pool` now: the
/// same name, selecting the pool's pods, so that senders given its old URL still reach it.
pub fn switched_service(webhook: &Webhook, pool: &str) -> Result<Service> {
    Ok(receiver_service(
        &owner(webhook)?,
        names::pool_selector_labels(pool),
        IntOrString::String("http".into()),
        IntOrString::String("metrics".into()),
    ))
}

/// An Ingress routing exactly `spec.path` on the host to the receiver's Service.
fn ingress(o: &Owner, spec: &ValidSpec, set: &WebhookIngress, receiver_name: &str) -> Ingress {
    let mut metadata = meta(o, names::receiver(&o.name), "receiver");
    metadata.annotations = set.annotations.clone().filter(|a| !a.is_empty());
    Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: set.class_name.clone(),
            tls: set.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![set.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(set.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some(spec.path.clone()),
                        path_type: "Exact".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: receiver_name.to_string(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    number: None,
                                }),
                            }),
                            resource: None,
                        },
                    }],
                }),
            }]),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    }
}

fn deployment(
    webhook: &Webhook,
    o: &Owner,
    spec: &ValidSpec,
    defaults: &ReceiverDefaults,
    receiver_name: &str,
    config_hash: &str,
) -> Deployment {
    let settings = webhook.spec.receiver.clone().unwrap_or_default();
    let mut pod_labels = settings.pod_labels.clone().unwrap_or_default();
    pod_labels.extend(names::labels(&o.name, "receiver"));
    let mut pod_annotations = settings.pod_annotations.clone().unwrap_or_default();
    pod_annotations.insert(names::CONFIG_HASH_ANNOTATION.into(), config_hash.into());

    let layout = ContainerLayout {
        port: DEFAULT_PORT,
        metrics_port: DEFAULT_METRICS_PORT,
        config_volume: "config".into(),
        secret_volume: |i| format!("secret-{i}"),
        run_as: None,
    };
    let mounts = webhook_mounts(&layout, spec);
    let mut args = run_args();
    if spec.config_map.is_some() {
        args.extend(writer_election_args(receiver_name));
    }
    let container = receiver_container("receiver", layout, (args, mounts), defaults, &settings);

    // Only a receiver that writes to the API server gets a token.
    let needs_api = spec.events || spec.config_map.is_some();
    Deployment {
        metadata: meta(o, receiver_name.into(), "receiver"),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector {
                match_labels: Some(names::selector_labels(&o.name)),
                ..LabelSelector::default()
            },
            strategy: Some(surge_first()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(receiver_name.into()),
                    automount_service_account_token: Some(needs_api),
                    containers: vec![container],
                    security_context: Some(pod_security_context()),
                    volumes: Some(
                        std::iter::once(Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: names::receiver_config(&o.name),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        })
                        .chain(secret_volumes(spec, |i| format!("secret-{i}"), 0o440))
                        .collect(),
                    ),
                    node_selector: settings.node_selector.clone(),
                    tolerations: settings.tolerations.clone(),
                    affinity: settings.affinity.clone(),
                    priority_class_name: settings.priority_class_name.clone(),
                    image_pull_secrets: image_pull_secrets(&settings, defaults),
                    termination_grace_period_seconds: Some(30),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

/// The Lease the replicas of receiver Deployment `deployment` (as applied: it owns the
/// Lease, which goes with it) elect the writer of their ConfigMap sinks on; see the
/// receiver's `handoff`. The operator sets no holder: the replicas take and renew it.
pub(crate) fn writer_lease(desired: &Deployment, applied: &Deployment) -> Option<Lease> {
    let meta = &applied.metadata;
    let name = meta.name.as_deref()?;
    Some(Lease {
        metadata: ObjectMeta {
            name: Some(names::writer_lease(name)),
            namespace: meta.namespace.clone(),
            labels: desired.metadata.labels.clone(),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                uid: meta.uid.clone()?,
                // The Deployment controls it: the operator applies it for that Deployment
                // only (see `apply`).
                controller: Some(true),
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        },
        spec: None,
    })
}

/// What a receiver's Role grants for the writer election of Deployment `deployment`: its
/// Lease, which kube-lease-manager reads and patches and the replicas watch by name; and
/// the namespace's EndpointSlices, read to find the holder among the ready pods of the
/// Deployment's Service (never at an address the Lease names). EndpointSlice names are
/// made by Kubernetes, so that grant cannot be narrowed by name; it reads addresses only.
pub(crate) fn writer_election_rules(deployment: &str) -> [PolicyRule; 2] {
    [
        PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            resource_names: Some(vec![names::writer_lease(deployment)]),
            verbs: ["get", "list", "watch", "patch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        },
        PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: ["list", "watch"].map(String::from).to_vec(),
            ..PolicyRule::default()
        },
    ]
}

/// The receiver's arguments for the writer election of its Deployment `deployment`.
pub(crate) fn writer_election_args(deployment: &str) -> [String; 2] {
    ["--writer-election".into(), deployment.into()]
}

/// A rolling update that starts a new receiver pod before it stops an old one: receivers
/// keep serving through a change.
pub(crate) fn surge_first() -> DeploymentStrategy {
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// The security context of a receiver's own pod (Pod Security `restricted`).
pub(crate) fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RECEIVER_UID),
        run_as_group: Some(RECEIVER_UID),
        fs_group: Some(RECEIVER_UID),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

/// The pull secrets of a receiver's pods: its own settings', else the operator's defaults.
pub(crate) fn image_pull_secrets(
    settings: &ReceiverSettings,
    defaults: &ReceiverDefaults,
) -> Option<Vec<LocalObjectReference>> {
    settings.image_pull_secrets.clone().or_else(|| {
        (!defaults.image_pull_secrets.is_empty()).then(|| {
            defaults
                .image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        })
    })
}

/// How the receiver container fits into its pod.
pub(crate) struct ContainerLayout<F: Fn(usize) -> String> {
    pub(crate) port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) config_volume: String,
    pub(crate) secret_volume: F,
    /// The user and group to run as, when the pod does not say (a sidecar).
    pub(crate) run_as: Option<i64>,
}

/// The arguments of a receiver serving one Webhook from its mounted config file.
fn run_args() -> Vec<String> {
    vec![
        "run".into(),
        "--config".into(),
        format!("{CONFIG_DIR}/{CONFIG_FILE_NAME}"),
        "--log-format".into(),
        "json".into(),
    ]
}

/// The mounts of a receiver serving one Webhook: its config and each of its secrets.
fn webhook_mounts<F: Fn(usize) -> String>(
    layout: &ContainerLayout<F>,
    spec: &ValidSpec,
) -> Vec<VolumeMount> {
    std::iter::once(VolumeMount {
        name: layout.config_volume.clone(),
        mount_path: CONFIG_DIR.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    })
    .chain((0..spec.secrets().count()).map(|i| VolumeMount {
        name: (layout.secret_volume)(i),
        mount_path: format!("{SECRETS_DIR}/{i}"),
        read_only: Some(true),
        ..VolumeMount::default()
    }))
    .collect()
}

pub(crate) fn receiver_container<F: Fn(usize) -> String>(
    name: &str,
    layout: ContainerLayout<F>,
    (args, mounts): (Vec<String>, Vec<VolumeMount>),
    defaults: &ReceiverDefaults,
    settings: &ReceiverSettings,
) -> Container {
    let http_probe = |path: &str, period: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(layout.port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Probe::default()
    };
    Container {
        name: name.into(),
        image: Some(
            settings
                .image
                .clone()
                .unwrap_or_else(|| defaults.image.clone()),
        ),
        image_pull_policy: Some(defaults.image_pull_policy.clone()),
        env: Some(vec![
            EnvVar {
                name: "POD_NAME".into(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar {
                // The receiver bounds the delivery bodies it holds at once by a share of its
                // memory limit, so that no number of slow senders gets it OOM-killed.
                name: MEMORY_LIMIT_ENV.into(),
                value_from: Some(EnvVarSource {
                    resource_field_ref: Some(ResourceFieldSelector {
                        container_name: Some(name.into()),
                        resource: "limits.memory".into(),
                        ..ResourceFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
        ]),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: layout.run_as.is_none().then(|| "http".into()),
                container_port: i32::from(layout.port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
            ContainerPort {
                name: layout.run_as.is_none().then(|| "metrics".into()),
                container_port: i32::from(layout.metrics_port),
                protocol: Some("TCP".into()),
                ..ContainerPort::default()
            },
        ]),
        readiness_probe: Some(http_probe("/readyz", 5)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        resources: Some(settings.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: layout.run_as,
            run_as_group: layout.run_as,
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: layout.run_as.map(|_| SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Container::default()
    }
}

/// The secret volumes of a receiver; `mode` is their files' mode.
fn secret_volumes<'a>(
    spec: &'a ValidSpec,
    name: impl Fn(usize) -> String + 'a,
    mode: i32,
) -> impl Iterator<Item = Volume> + 'a {
    spec.secrets().enumerate().map(move |(i, s)| Volume {
        name: name(i),
        secret: Some(SecretVolumeSource {
            secret_name: Some(s.name().into()),
            items: Some(vec![KeyToPath {
                key: s.key().into(),
                path: names::GENERATED_SECRET_KEY.into(),
                ..KeyToPath::default()
            }]),
            default_mode: Some(mode),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    })
}

/// The receiver of `spec.sidecar` as the pod admission webhook adds it to an opted-in
/// pod: a native sidecar, its volumes, and a digest of both and of the receiver's config.
#[derive(Clone, Debug, PartialEq)]
pub struct SidecarReceiver {
    /// An init container with `restartPolicy: Always`: started, and serving (its startup
    /// probe), before the application's containers; stopped after them.
    pub container: Container,
    pub volumes: Vec<Volume>,
    /// Changes whenever what is injected would (image, settings, config, Secret names).
    pub hash: String,
}

/// What `spec.sidecar` injects into an opted-in pod of `webhook`.
pub fn sidecar_receiver(
    webhook: &Webhook,
    spec: &ValidSpec,
    sidecar: &ValidSidecar,
    defaults: &ReceiverDefaults,
) -> Result<SidecarReceiver> {
    let o = owner(webhook)?;
    let config = receiver_config(webhook, spec)?
        .to_yaml()
        .map_err(|e| Error::Render(e.to_string()))?;
    sidecar_receiver_with(webhook, &o, spec, sidecar, defaults, &config)
}

/// [`sidecar_receiver`], with the receiver's config rendered already.
fn sidecar_receiver_with(
    webhook: &Webhook,
    o: &Owner,
    spec: &ValidSpec,
    sidecar: &ValidSidecar,
    defaults: &ReceiverDefaults,
    config: &str,
) -> Result<SidecarReceiver> {
    let settings = webhook.spec.receiver.clone().unwrap_or_default();
    let layout = ContainerLayout {
        port: sidecar.port,
        metrics_port: sidecar.metrics_port,
        config_volume: names::sidecar_volume(&o.name, "config"),
        secret_volume: |i| names::sidecar_volume(&o.name, &format!("secret-{i}")),
        run_as: Some(RECEIVER_UID),
    };
    let mounts = webhook_mounts(&layout, spec);
    let mut container = receiver_container(
        &names::sidecar_container(&o.name),
        layout,
        (run_args(), mounts),
        defaults,
        &settings,
    );
    container.restart_policy = Some("Always".into());
    // The application's containers start once this one passes: the receiver listens and
    // holds its signing secret.
    container.startup_probe = Some(Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/readyz".into()),
            port: IntOrString::Int(i32::from(sidecar.port)),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(1),
        timeout_seconds: Some(2),
        failure_threshold: Some(120),
        ..Probe::default()
    });
    // Without fsGroup (the application's pod decides that), the receiver's user reads the
    // secret files only when they are readable by all; only this container mounts them.
    let volumes: Vec<Volume> = std::iter::once(Volume {
        name: names::sidecar_volume(&o.name, "config"),
        config_map: Some(ConfigMapVolumeSource {
            name: names::receiver_config(&o.name),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    })
    .chain(secret_volumes(
        spec,
        |i| names::sidecar_volume(&o.name, &format!("secret-{i}")),
        0o444,
    ))
    .collect();
    let digest_of = serde_json::to_string(&(&container, &volumes, config))?;
    Ok(SidecarReceiver {
        container,
        volumes,
        hash: hash(&digest_of),
    })
}

/// The apply configuration that takes a receiver container the previous release added out
/// of `deployment`: the same field manager applying nothing releases, and so removes, what
/// it added before.
pub fn sidecar_removal(namespace: &str, deployment: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": deployment, "namespace": namespace},
    })
}

fn default_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("10m".into())),
            ("memory".into(), Quantity("16Mi".into())),
        ])),
        limits: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
        ..ResourceRequirements::default()
    }
}

/// The Secret a generated signing secret is stored in. Created once, never re-applied.
pub fn generated_secret(webhook: &Webhook, name: &str, value: &str) -> Result<Secret> {
    let o = owner(webhook)?;
    Ok(Secret {
        metadata: meta(&o, name.into(), "secret"),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            names::GENERATED_SECRET_KEY.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    })
}

/// The in-cluster URL of a Webhook's receiver.
pub fn url(webhook: &Webhook, spec: &ValidSpec) -> Option<String> {
    let name = webhook.metadata.name.as_deref()?;
    let ns = webhook.metadata.namespace.as_deref()?;
    let service = match &spec.pool {
        Some(pool) => names::pool_receiver(pool),
        None => names::receiver(name),
    };
    Some(format!("http://{service}.{ns}.svc{}", spec.path))
}

/// The URL senders outside the cluster call, when the Webhook has an Ingress.
pub fn external_url(spec: &ValidSpec) -> Option<String> {
    let ingress = spec.ingress.as_ref()?;
    let scheme = if ingress.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    Some(format!("{scheme}://{}{}", ingress.host, spec.path))
}

fn hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConfigMapSink, ReceiverSettings, SecretKeyRef, Sinks, WebhookSpec};
    use crate::webhook::validate::validate;
    use hookwarden_api::config::ConfigMapMode;

    fn defaults() -> ReceiverDefaults {
        ReceiverDefaults {
            image: "hookwarden-receiver:test".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec![],
            guardrails: Default::default(),
        }
    }

    fn webhook(spec: WebhookSpec) -> Webhook {
        let mut w = Webhook::new("opal", spec);
        w.metadata.namespace = Some("team-a".into());
        w.metadata.uid = Some("1234".into());
        w
    }

    #[test]
    fn only_a_controller_reference_to_this_webhook_counts() {
        let w = webhook(opal());
        let reference = |uid: &str, controller: Option<bool>| ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                uid: uid.into(),
                controller,
                ..w.controller_owner_ref(&()).unwrap()
            }]),
            ..ObjectMeta::default()
        };
        assert!(controlled_by(&reference("1234", Some(true)), &w));
        assert!(!controlled_by(&reference("1234", None), &w));
        assert!(!controlled_by(&reference("1234", Some(false)), &w));
        assert!(!controlled_by(&reference("5678", Some(true)), &w));
        assert!(!controlled_by(&ObjectMeta::default(), &w));
        let mut no_uid = w.clone();
        no_uid.metadata.uid = None;
        assert!(!controlled_by(&reference("1234", Some(true)), &no_uid));
    }

    fn opal() -> WebhookSpec {
        WebhookSpec {
            path: "/opal".into(),
            provider: "opal".into(),
            sinks: Some(Sinks {
                events: Some(true),
                config_map: Some(ConfigMapSink {
                    name: "opal-access".into(),
                    mode: None,
                }),
                forward: None,
            }),
            receiver: Some(ReceiverSettings::default()),
            ..WebhookSpec::default()
        }
    }

    /// The children of a Webhook whose receiver has pods of its own, in one struct.
    struct Built {
        service_account: ServiceAccount,
        role: Role,
        role_binding: RoleBinding,
        config: ConfigMap,
        sink: Option<ConfigMap>,
        deployment: Deployment,
        service: Service,
        ingress: Option<Ingress>,
    }

    fn flatten(c: Children) -> Built {
        let ReceiverPlan::Own(own) = c.receiver else {
            panic!("the receiver runs as a sidecar")
        };
        let own = *own;
        Built {
            service_account: own.service_account,
            role: own.role,
            role_binding: own.role_binding,
            config: c.config.expect("a config"),
            sink: c.sink,
            deployment: own.deployment,
            service: c.service.expect("a Service"),
            ingress: c.ingress,
        }
    }

    fn build_for(spec: WebhookSpec) -> Built {
        let w = webhook(spec);
        let v = validate("opal", &w.spec).unwrap();
        flatten(build(&w, &v, &defaults()).unwrap())
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let c = build_for(opal());
        let metas = [
            &c.service_account.metadata,
            &c.role.metadata,
            &c.role_binding.metadata,
            &c.config.metadata,
            &c.sink.as_ref().unwrap().metadata,
            &c.deployment.metadata,
            &c.service.metadata,
        ];
        for m in metas {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "Webhook");
            assert_eq!(owners[0].uid, "1234");
            assert_eq!(owners[0].controller, Some(true));
            let labels = m.labels.as_ref().unwrap();
            assert_eq!(
                labels["app.kubernetes.io/managed-by"],
                "hookwarden-operator"
            );
            assert_eq!(labels["app.kubernetes.io/instance"], "opal");
            assert_eq!(m.namespace.as_deref(), Some("team-a"));
        }
        assert_eq!(c.deployment.metadata.name.as_deref(), Some("opal-receiver"));
        assert!(
            c.sink.as_ref().unwrap().data.is_none(),
            "the operator must not own sink data"
        );
    }

    #[test]
    fn role_is_least_privilege() {
        let c = build_for(opal());
        let rules = c.role.rules.unwrap();
        assert_eq!(rules.len(), 4);
        assert_eq!(
            rules[0].api_groups.as_deref(),
            Some(&["events.k8s.io".to_string()][..])
        );
        assert_eq!(rules[0].verbs, ["create", "patch"]);
        assert_eq!(
            rules[1].resources.as_deref(),
            Some(&["configmaps".to_string()][..])
        );
        assert_eq!(
            rules[1].resource_names.as_deref(),
            Some(&["opal-access".to_string()][..])
        );
        assert_eq!(rules[1].verbs, ["get", "update", "patch"]);
        // The writer election: its own Lease only, which it lists and watches by name.
        assert_eq!(
            rules[2].api_groups.as_deref(),
            Some(&["coordination.k8s.io".to_string()][..])
        );
        assert_eq!(
            rules[2].resource_names.as_deref(),
            Some(&["opal-receiver-writer".to_string()][..])
        );
        assert_eq!(rules[2].verbs, ["get", "list", "watch", "patch"]);
        // And where its Service's pods are: read only.
        assert_eq!(
            rules[3].resources.as_deref(),
            Some(&["endpointslices".to_string()][..])
        );
        assert_eq!(rules[3].verbs, ["list", "watch"]);
        for r in &rules {
            assert!(!r.verbs.iter().any(|v| v == "*" || v == "delete"));
            let unnamed_read = r.resources.as_deref() == Some(&["endpointslices".to_string()][..]);
            assert!(
                r.resource_names.is_some() || unnamed_read || !r.verbs.iter().any(|v| v == "list"),
                "{r:?}"
            );
        }
        // without a ConfigMap sink, no ConfigMap access and no election at all
        let mut spec = opal();
        spec.sinks = None;
        let c = build_for(spec);
        assert_eq!(c.role.rules.unwrap().len(), 1);
        let args = c.deployment.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert!(!args.iter().any(|a| a == "--writer-election"), "{args:?}");
    }

    #[test]
    fn replicas_with_a_configmap_sink_elect_its_writer_on_a_lease_the_deployment_owns() {
        let c = build_for(opal());
        let pod = c.deployment.spec.clone().unwrap().template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        let at = args.iter().position(|a| a == "--writer-election").unwrap();
        assert_eq!(args[at + 1], "opal-receiver");

        // As applied: the Lease is owned by the Deployment, labelled as the operator wants
        // it (not with what others added to the Deployment), and carries no holder.
        let mut applied = c.deployment.clone();
        applied.metadata.uid = Some("d-1".into());
        applied
            .metadata
            .labels
            .get_or_insert_default()
            .insert("added-by".into(), "someone-else".into());
        let lease = writer_lease(&c.deployment, &applied).unwrap();
        assert_eq!(lease.metadata.name.as_deref(), Some("opal-receiver-writer"));
        assert_eq!(lease.metadata.namespace.as_deref(), Some("team-a"));
        assert_eq!(lease.metadata.labels, c.deployment.metadata.labels);
        let owners = lease.metadata.owner_references.unwrap();
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("Deployment", "opal-receiver", "d-1")
        );
        assert!(lease.spec.is_none());
        // Not before the Deployment exists: nothing to own it.
        assert!(writer_lease(&c.deployment, &c.deployment).is_none());
    }

    #[test]
    fn pod_is_locked_down() {
        let c = build_for(opal());
        let pod = c.deployment.spec.unwrap().template.spec.unwrap();
        let psc = pod.security_context.unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let sc = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(pod.service_account_name.as_deref(), Some("opal-receiver"));
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some("hookwarden-receiver:test")
        );
    }

    #[test]
    fn config_is_the_receivers_own_type_and_names_no_secret() {
        let c = build_for(opal());
        let yaml = &c.config.data.unwrap()[CONFIG_FILE_NAME];
        let parsed = ReceiverConfig::from_yaml(yaml).unwrap();
        assert_eq!(parsed.path, "/opal");
        assert_eq!(parsed.webhook.uid, "1234");
        assert_eq!(parsed.sinks.config_map.unwrap().mode, ConfigMapMode::State);
        assert_eq!(
            parsed.secret_files,
            [std::path::PathBuf::from(
                "/var/run/hookwarden/secrets/0/secret"
            )]
        );
    }

    #[test]
    fn secret_volume_maps_the_referenced_key() {
        let mut spec = opal();
        spec.secret_ref = Some(SecretKeyRef {
            name: "opal-creds".into(),
            key: "signing-secret".into(),
        });
        let c = build_for(spec);
        let pod = c.deployment.spec.unwrap().template.spec.unwrap();
        let vol = pod
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "secret-0")
            .unwrap();
        let s = vol.secret.unwrap();
        assert_eq!(s.secret_name.as_deref(), Some("opal-creds"));
        assert_eq!(s.items.unwrap()[0].key, "signing-secret");
    }

    #[test]
    fn every_active_secret_is_a_volume_and_a_file_of_the_config() {
        let mut spec = opal();
        spec.secret_ref = Some(SecretKeyRef {
            name: "opal-creds".into(),
            key: "current".into(),
        });
        spec.additional_secret_refs = vec![SecretKeyRef {
            name: "opal-creds".into(),
            key: "next".into(),
        }];
        let c = build_for(spec);
        let config = ReceiverConfig::from_yaml(&c.config.data.unwrap()[CONFIG_FILE_NAME]).unwrap();
        assert_eq!(
            config.secret_files,
            [
                std::path::PathBuf::from("/var/run/hookwarden/secrets/0/secret"),
                std::path::PathBuf::from("/var/run/hookwarden/secrets/1/secret"),
            ]
        );
        let pod = c.deployment.spec.unwrap().template.spec.unwrap();
        let keys: Vec<(String, String)> = pod
            .volumes
            .unwrap()
            .into_iter()
            .filter_map(|v| {
                let s = v.secret?;
                Some((v.name, s.items.unwrap()[0].key.clone()))
            })
            .collect();
        assert_eq!(
            keys,
            [
                ("secret-0".to_string(), "current".to_string()),
                ("secret-1".to_string(), "next".to_string())
            ]
        );
        let mounts: Vec<String> = pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .map(|m| m.mount_path)
            .collect();
        assert!(mounts.contains(&"/var/run/hookwarden/secrets/1".to_string()));
    }

    #[test]
    fn config_hash_rolls_pods_only_when_config_changes() {
        let hash_of = |spec: WebhookSpec| {
            let d = build_for(spec).deployment;
            d.spec
                .unwrap()
                .template
                .metadata
                .unwrap()
                .annotations
                .unwrap()[names::CONFIG_HASH_ANNOTATION]
                .clone()
        };
        let a = hash_of(opal());
        assert_eq!(a, hash_of(opal()));
        let mut changed = opal();
        changed.event_types = vec!["USER_ADDED_TO_GROUP".into()];
        assert_ne!(a, hash_of(changed));
        // replicas do not touch the config
        let mut scaled = opal();
        scaled.receiver = Some(ReceiverSettings {
            replicas: Some(3),
            ..ReceiverSettings::default()
        });
        assert_eq!(a, hash_of(scaled));
    }

    #[test]
    fn url_points_at_the_service() {
        let w = webhook(opal());
        let v = validate("opal", &w.spec).unwrap();
        assert_eq!(url(&w, &v).unwrap(), "http://opal-receiver.team-a.svc/opal");
    }

    #[test]
    fn ingress_routes_only_the_path_to_the_service() {
        let mut spec = opal();
        assert!(build_for(spec.clone()).ingress.is_none());
        assert_eq!(external_url(&validate("opal", &spec).expect("valid")), None);
        spec.ingress = Some(WebhookIngress {
            host: "hooks.example.com".into(),
            class_name: Some("nginx".into()),
            tls_secret_name: Some("hooks-tls".into()),
            annotations: Some(BTreeMap::from([(
                "cert-manager.io/cluster-issuer".into(),
                "letsencrypt".into(),
            )])),
        });
        let children = build_for(spec.clone());
        let ingress = children.ingress.expect("an Ingress");
        assert_eq!(ingress.metadata.name.as_deref(), Some("opal-receiver"));
        assert_eq!(
            ingress.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let annotations = ingress.metadata.annotations.expect("annotations");
        assert_eq!(annotations["cert-manager.io/cluster-issuer"], "letsencrypt");
        let ispec = ingress.spec.expect("spec");
        assert_eq!(ispec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &ispec.tls.expect("tls")[0];
        assert_eq!(tls.secret_name.as_deref(), Some("hooks-tls"));
        assert_eq!(tls.hosts, Some(vec!["hooks.example.com".to_string()]));
        let rules = ispec.rules.expect("rules");
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].host.as_deref(), Some("hooks.example.com"));
        let paths = &rules[0].http.as_ref().expect("http").paths;
        assert_eq!(paths.len(), 1);
        assert_eq!(paths[0].path.as_deref(), Some("/opal"));
        assert_eq!(paths[0].path_type, "Exact");
        let backend = paths[0].backend.service.as_ref().expect("service backend");
        assert_eq!(
            backend.name,
            children.service.metadata.name.clone().unwrap_or_default()
        );
        assert_eq!(
            backend.port.as_ref().and_then(|p| p.name.as_deref()),
            Some("http")
        );
        let valid = validate("opal", &spec).expect("valid");
        assert_eq!(
            external_url(&valid).as_deref(),
            Some("https://hooks.example.com/opal")
        );
        if let Some(i) = spec.ingress.as_mut() {
            i.tls_secret_name = None;
        }
        let valid = validate("opal", &spec).expect("valid");
        assert_eq!(
            external_url(&valid).as_deref(),
            Some("http://hooks.example.com/opal")
        );
    }

    #[test]
    fn operator_pull_secrets_apply_unless_the_webhook_names_its_own() {
        let spec = opal();
        let valid = validate("opal", &spec).expect("valid");
        let mut with_secrets = defaults();
        with_secrets.image_pull_secrets = vec!["registry".into()];
        let pod = |children: Built| {
            children
                .deployment
                .spec
                .and_then(|s| s.template.spec)
                .expect("pod spec")
        };
        let built =
            flatten(build(&webhook(spec.clone()), &valid, &with_secrets).expect("children"));
        let names: Vec<String> = pod(built)
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["registry".to_string()]);

        let mut own = spec;
        own.receiver = Some(ReceiverSettings {
            image_pull_secrets: Some(vec![LocalObjectReference {
                name: "team-registry".into(),
            }]),
            ..ReceiverSettings::default()
        });
        let valid = validate("opal", &own).expect("valid");
        let built = flatten(build(&webhook(own), &valid, &with_secrets).expect("children"));
        let names: Vec<String> = pod(built)
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, vec!["team-registry".to_string()]);
        assert!(pod(build_for(opal())).image_pull_secrets.is_none());
    }

    fn sidecar_spec() -> WebhookSpec {
        let mut spec = opal();
        spec.sinks = Some(Sinks {
            events: None,
            config_map: None,
            forward: Some(crate::crd::ForwardSink {
                url: "http://127.0.0.1:8080/hooks".into(),
            }),
        });
        spec.sidecar = Some(crate::crd::SidecarSettings {
            deployment: None,
            port: None,
            metrics_port: None,
        });
        spec
    }

    #[test]
    fn the_sidecar_receiver_is_a_native_sidecar_with_its_volumes_and_a_hash() {
        let spec = sidecar_spec();
        let valid = validate("opal", &spec).expect("valid");
        let sidecar = valid.sidecar.clone().expect("sidecar");
        let w = webhook(spec.clone());
        let r = sidecar_receiver(&w, &valid, &sidecar, &defaults()).expect("receiver");
        let c = &r.container;
        assert_eq!(c.name, "hookwarden-opal");
        assert_eq!(c.restart_policy.as_deref(), Some("Always"));
        assert_eq!(c.image.as_deref(), Some("hookwarden-receiver:test"));
        let ports: Vec<i32> = c.ports.iter().flatten().map(|p| p.container_port).collect();
        assert_eq!(ports, [8090, 8091]);
        let probe_port =
            |p: &Option<Probe>| p.as_ref().and_then(|p| p.http_get.clone()).map(|h| h.port);
        assert_eq!(probe_port(&c.startup_probe), Some(IntOrString::Int(8090)));
        assert_eq!(probe_port(&c.readiness_probe), Some(IntOrString::Int(8090)));
        let security = c.security_context.clone().unwrap();
        assert_eq!(security.run_as_user, Some(65532));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let volumes: Vec<&str> = r.volumes.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(volumes, ["hw-opal-config", "hw-opal-secret-0"]);
        assert_eq!(
            r.volumes[1].secret.as_ref().unwrap().default_mode,
            Some(0o444)
        );
        let mounts: Vec<&str> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(mounts, volumes);
        // The receiver listens where the pod expects it.
        let config = receiver_config(&w, &valid).expect("config");
        assert_eq!(config.listen.port(), 8090);
        assert_eq!(config.metrics_listen.port(), 8091);
        assert!(!config.sinks.events);

        // The hash follows what is injected, and only that.
        let again = sidecar_receiver(&w, &valid, &sidecar, &defaults()).unwrap();
        assert_eq!(again.hash, r.hash);
        let mut changed = spec.clone();
        changed.event_types = vec!["USER_ADDED_TO_GROUP".into()];
        let valid2 = validate("opal", &changed).expect("valid");
        let other = sidecar_receiver(&webhook(changed), &valid2, &sidecar, &defaults()).unwrap();
        assert_ne!(other.hash, r.hash, "a config change is a new receiver");

        let removal = sidecar_removal("team-a", "billing");
        assert_eq!(removal.as_object().unwrap().len(), 3);
        assert!(removal.get("spec").is_none());

        let children = build(&w, &valid, &defaults()).expect("children");
        assert!(
            matches!(&children.receiver, ReceiverPlan::Sidecar { hash } if *hash == r.hash),
            "the plan carries what is injected now"
        );
        let sspec = children.service.unwrap().spec.unwrap();
        assert_eq!(sspec.selector.unwrap()["hookwarden.io/inject"], "opal");
        let ports = sspec.ports.unwrap();
        assert_eq!(ports[0].target_port, Some(IntOrString::Int(8090)));
        assert_eq!(ports[1].target_port, Some(IntOrString::Int(8091)));
    }
}
