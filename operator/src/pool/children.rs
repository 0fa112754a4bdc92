//! Builds the objects a ReceiverPool needs, from the pool and the Webhooks it serves. Pure:
//! the pool controller applies what these functions return.
//!
//! A pool is one Deployment and one Service serving every member Webhook on its path. Its
//! pods read their configuration from the API server (the config ConfigMap, watched) and
//! their Webhooks' Secrets (each watched by name), so that a change reaches them without a
//! restart: the pod template carries no hash of the configuration. Each pod reports what
//! it serves into the served ConfigMap, which the Webhook controller reads for `Ready`.

use std::collections::{BTreeMap, BTreeSet};

use hookwarden_api::config::{DEFAULT_METRICS_PORT, DEFAULT_PORT, ForwardConfig, SinksConfig};
use hookwarden_api::pool::{DEFAULT_POOL_REPLICAS, ReceiverPool};
use hookwarden_api::pool_config::{POOL_CONFIG_FILE, PoolConfig, PoolIdentity, PoolWebhook};
use hookwarden_api::webhook::SecretKeyRef;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PodSpec, PodTemplateSpec, ResourceRequirements, Service, ServiceAccount,
    ServicePort, ServiceSpec, TopologySpreadConstraint,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::crd::Webhook;
use crate::error::{Error, Result};
use crate::runtime::names;
use crate::webhook::children::{
    ContainerLayout, ReceiverDefaults, image_pull_secrets, pod_security_context,
    receiver_container, surge_first,
};
use crate::webhook::validate::ValidSpec;

/// A Webhook the pool serves, validated.
pub struct Member<'a> {
    pub webhook: &'a Webhook,
    pub spec: ValidSpec,
}

/// Everything applied for one pool.
#[derive(Clone, Debug)]
pub struct PoolChildren {
    pub config: ConfigMap,
    /// Created empty: each pool pod writes its own key into it.
    pub served: ConfigMap,
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub service: Service,
    pub deployment: Deployment,
    pub disruption_budget: PodDisruptionBudget,
    /// How many Webhooks the configuration names.
    pub webhooks: usize,
}

struct Owner {
    name: String,
    namespace: String,
    owner_ref: OwnerReference,
}

fn owner(pool: &ReceiverPool) -> Result<Owner> {
    Ok(Owner {
        name: pool
            .metadata
            .name
            .clone()
            .ok_or(Error::MissingObjectKey("metadata.name"))?,
        namespace: pool
            .namespace()
            .ok_or(Error::MissingObjectKey("metadata.namespace"))?,
        owner_ref: pool
            .controller_owner_ref(&())
            .ok_or(Error::MissingObjectKey("metadata.uid"))?,
    })
}

fn meta(o: &Owner, name: String, role: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(o.namespace.clone()),
        labels: Some(names::pool_labels(&o.name, role)),
        owner_references: Some(vec![o.owner_ref.clone()]),
        ..ObjectMeta::default()
    }
}

/// The pool's configuration: its members in the order of their names.
pub fn pool_config(pool: &ReceiverPool, members: &[Member<'_>]) -> Result<PoolConfig> {
    let o = owner(pool)?;
    let mut webhooks: Vec<PoolWebhook> = members
        .iter()
        .map(|m| {
            let w = m.webhook;
            Ok(PoolWebhook {
                name: w.name_any(),
                uid: w
                    .metadata
                    .uid
                    .clone()
                    .ok_or(Error::MissingObjectKey("metadata.uid"))?,
                generation: w.metadata.generation.unwrap_or_default(),
                path: m.spec.path.clone(),
                provider: m.spec.provider,
                event_types: m.spec.event_types.clone(),
                secrets: m
                    .spec
                    .secrets()
                    .map(|s| SecretKeyRef {
                        name: s.name().into(),
                        key: s.key().into(),
                    })
                    .collect(),
                sinks: SinksConfig {
                    events: m.spec.events,
                    config_map: m.spec.config_map.clone(),
                    forward: m.spec.forward.clone().map(|url| ForwardConfig { url }),
                },
                generic_hmac: m.spec.generic_hmac.clone(),
                limits: m.spec.limits.clone(),
            })
        })
        .collect::<Result<_>>()?;
    webhooks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(PoolConfig {
        webhooks,
        ..PoolConfig::new(PoolIdentity {
            name: o.name,
            namespace: o.namespace,
        })
    })
}

/// Builds every child of `pool`, serving `members`.
pub fn build(
    pool: &ReceiverPool,
    members: &[Member<'_>],
    defaults: &ReceiverDefaults,
) -> Result<PoolChildren> {
    let o = owner(pool)?;
    let name = names::pool_receiver(&o.name);
    let config = pool_config(pool, members)?;
    config
        .check()
        .map_err(|e| Error::Render(format!("pool configuration: {e}")))?;
    let yaml = config.to_yaml().map_err(|e| Error::Render(e.to_string()))?;

    let config_map = ConfigMap {
        metadata: meta(&o, names::pool_config(&o.name), "pool-config"),
        data: Some(BTreeMap::from([(POOL_CONFIG_FILE.to_string(), yaml)])),
        ..ConfigMap::default()
    };
    let served = ConfigMap {
        metadata: meta(&o, names::pool_served(&o.name), "pool-served"),
        ..ConfigMap::default()
    };
    let service_account = ServiceAccount {
        metadata: meta(&o, name.clone(), "pool"),
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    };
    let role = Role {
        metadata: meta(&o, name.clone(), "pool"),
        rules: Some(rules(&o.name, &config)),
    };
    let role_binding = RoleBinding {
        metadata: meta(&o, name.clone(), "pool"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: name.clone(),
            namespace: Some(o.namespace.clone()),
            ..Subject::default()
        }]),
    };
    let service = Service {
        metadata: meta(&o, name.clone(), "pool"),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(names::pool_selector_labels(&o.name)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: i32::from(DEFAULT_METRICS_PORT),
                    target_port: Some(IntOrString::String("metrics".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let disruption_budget = PodDisruptionBudget {
        metadata: meta(&o, name.clone(), "pool"),
        spec: Some(PodDisruptionBudgetSpec {
            // With the default two replicas: one stays while a node drains.
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(names::pool_selector_labels(&o.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    };
    let deployment = deployment(pool, &o, defaults, !config.webhooks.is_empty());
    Ok(PoolChildren {
        webhooks: config.webhooks.len(),
        config: config_map,
        served,
        service_account,
        role,
        role_binding,
        service,
        deployment,
        disruption_budget,
    })
}

/// What the pool's pods may do: read its configuration, report what they serve, read the
/// Secrets and write the sink ConfigMaps its Webhooks name, and record Events. Nothing
/// else, and nothing of a Webhook that left the pool.
fn rules(pool: &str, config: &PoolConfig) -> Vec<PolicyRule> {
    let rule = |resource: &str, names: Vec<String>, verbs: &[&str]| PolicyRule {
        api_groups: Some(vec!["".into()]),
        resources: Some(vec![resource.into()]),
        resource_names: Some(names),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
        ..PolicyRule::default()
    };
    let secrets: BTreeSet<String> = config
        .webhooks
        .iter()
        .flat_map(|w| w.secrets.iter().map(|s| s.name.clone()))
        .collect();
    let sinks: BTreeSet<String> = config
        .webhooks
        .iter()
        .filter_map(|w| w.sinks.config_map.as_ref().map(|c| c.name.clone()))
        .collect();
    let mut rules = vec![
        PolicyRule {
            api_groups: Some(vec!["events.k8s.io".into()]),
            resources: Some(vec!["events".into()]),
            verbs: vec!["create".into(), "patch".into()],
            ..PolicyRule::default()
        },
        rule(
            "configmaps",
            vec![names::pool_config(pool)],
            &["get", "list", "watch"],
        ),
        rule(
            "configmaps",
            vec![names::pool_served(pool)],
            &["get", "patch"],
        ),
    ];
    if !sinks.is_empty() {
        rules.push(rule(
            "configmaps",
            sinks.into_iter().collect(),
            &["get", "update", "patch"],
        ));
    }
    // Granted whether or not a Webhook has a ConfigMap sink now: the pods take part in the
    // election from their start, and one that gains a sink needs no restart.
    rules.extend(crate::webhook::children::writer_election_rules(
        &names::pool_receiver(pool),
    ));
    if !secrets.is_empty() {
        // list and watch with a field selector on the name, which RBAC checks against
        // resourceNames: one watch per Secret.
        rules.push(rule(
            "secrets",
            secrets.into_iter().collect(),
            &["get", "list", "watch"],
        ));
    }
    rules
}

/// Resources of a pool's receiver unless the pool says: room for a few hundred Webhooks.
fn pool_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), Quantity("20m".into())),
            ("memory".into(), Quantity("32Mi".into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".into(),
            Quantity("128Mi".into()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn deployment(
    pool: &ReceiverPool,
    o: &Owner,
    defaults: &ReceiverDefaults,
    serving: bool,
) -> Deployment {
    let mut settings = pool.spec.pods.clone();
    settings.resources = settings.resources.or_else(|| Some(pool_resources()));
    let name = names::pool_receiver(&o.name);
    let mut pod_labels = settings.pod_labels.clone().unwrap_or_default();
    pod_labels.extend(names::pool_labels(&o.name, "pool"));
    let args = vec![
        "pool".into(),
        "--namespace".into(),
        o.namespace.clone(),
        "--config-map".into(),
        names::pool_config(&o.name),
        "--served-config-map".into(),
        names::pool_served(&o.name),
        "--log-format".into(),
        "json".into(),
    ];
    let args = [
        args,
        crate::webhook::children::writer_election_args(&name).to_vec(),
    ]
    .concat();
    let layout = ContainerLayout {
        port: DEFAULT_PORT,
        metrics_port: DEFAULT_METRICS_PORT,
        config_volume: String::new(),
        secret_volume: |_| String::new(),
        run_as: None,
    };
    let container = receiver_container("receiver", layout, (args, vec![]), defaults, &settings);
    // A pool without Webhooks keeps no pods.
    let replicas = match serving {
        true => settings.replicas.unwrap_or(DEFAULT_POOL_REPLICAS),
        false => 0,
    };
    let selector = names::pool_selector_labels(&o.name);
    Deployment {
        metadata: meta(o, name.clone(), "pool"),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..LabelSelector::default()
            },
            strategy: Some(surge_first()),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: settings.pod_annotations.clone(),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(name),
                    automount_service_account_token: Some(true),
                    containers: vec![container],
                    security_context: Some(pod_security_context()),
                    node_selector: settings.node_selector.clone(),
                    tolerations: settings.tolerations.clone(),
                    affinity: settings.affinity.clone(),
                    // Spread over nodes where it can (one node still runs both).
                    topology_spread_constraints: Some(vec![TopologySpreadConstraint {
                        max_skew: 1,
                        topology_key: "kubernetes.io/hostname".into(),
                        when_unsatisfiable: "ScheduleAnyway".into(),
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector),
                            ..LabelSelector::default()
                        }),
                        ..TopologySpreadConstraint::default()
                    }]),
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

/// The in-cluster base URL of the pool's Service.
pub fn url(pool: &str, namespace: &str) -> String {
    format!("http://{}.{namespace}.svc", names::pool_receiver(pool))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConfigMapSink, SecretKeyRef as Ref, Sinks, WebhookSpec};
    use crate::webhook::validate::validate;
    use hookwarden_api::pool::ReceiverPoolSpec;

    fn defaults() -> ReceiverDefaults {
        ReceiverDefaults {
            image: "receiver:test".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec![],
            guardrails: Default::default(),
        }
    }

    fn pool() -> ReceiverPool {
        let mut p = ReceiverPool::new("default", ReceiverPoolSpec::default());
        p.metadata.namespace = Some("team-a".into());
        p.metadata.uid = Some("pool-uid".into());
        p
    }

    fn webhook(name: &str, spec: WebhookSpec) -> Webhook {
        let mut w = Webhook::new(name, spec);
        w.metadata.namespace = Some("team-a".into());
        w.metadata.uid = Some(format!("uid-{name}"));
        w.metadata.generation = Some(3);
        w
    }

    fn members(webhooks: &[Webhook]) -> Vec<Member<'_>> {
        webhooks
            .iter()
            .map(|w| Member {
                webhook: w,
                spec: validate(&w.name_any(), &w.spec).unwrap(),
            })
            .collect()
    }

    fn two() -> Vec<Webhook> {
        vec![
            webhook(
                "opal",
                WebhookSpec {
                    path: "/opal".into(),
                    provider: "opal".into(),
                    pool: Some("default".into()),
                    secret_ref: Some(Ref {
                        name: "opal-secret".into(),
                        key: "s".into(),
                    }),
                    sinks: Some(Sinks {
                        config_map: Some(ConfigMapSink {
                            name: "opal-state".into(),
                            mode: None,
                        }),
                        ..Sinks::default()
                    }),
                    ..WebhookSpec::default()
                },
            ),
            webhook(
                "github",
                WebhookSpec {
                    path: "/github".into(),
                    provider: "github".into(),
                    pool: Some("default".into()),
                    ..WebhookSpec::default()
                },
            ),
        ]
    }

    #[test]
    fn the_config_names_every_member_with_its_generation_and_secrets() {
        let webhooks = two();
        let config = pool_config(&pool(), &members(&webhooks)).unwrap();
        let names: Vec<&str> = config.webhooks.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["github", "opal"], "sorted by name");
        let opal = &config.webhooks[1];
        assert_eq!((opal.uid.as_str(), opal.generation), ("uid-opal", 3));
        assert_eq!(opal.secrets[0].name, "opal-secret");
        assert_eq!(config.webhooks[0].secrets[0].name, "github-signing-secret");
        assert_eq!(
            opal.sinks.config_map.as_ref().map(|c| c.name.as_str()),
            Some("opal-state")
        );
        // What the pool reads back is what was rendered.
        let built = build(&pool(), &members(&webhooks), &defaults()).unwrap();
        let yaml = &built.config.data.as_ref().unwrap()[POOL_CONFIG_FILE];
        assert_eq!(PoolConfig::from_yaml(yaml).unwrap(), config);
    }

    #[test]
    fn the_role_grants_exactly_what_the_members_name() {
        let webhooks = two();
        let built = build(&pool(), &members(&webhooks), &defaults()).unwrap();
        let rules = built.role.rules.unwrap();
        let find = |resource: &str, verb: &str| -> Vec<String> {
            rules
                .iter()
                .filter(|r| r.resources.as_ref().unwrap()[0] == resource)
                .filter(|r| r.verbs.iter().any(|v| v == verb))
                .flat_map(|r| r.resource_names.clone().unwrap_or_default())
                .collect()
        };
        assert_eq!(
            find("secrets", "watch"),
            ["github-signing-secret", "opal-secret"]
        );
        assert_eq!(find("configmaps", "update"), ["opal-state"]);
        assert_eq!(find("configmaps", "watch"), ["default-pool-config"]);
        assert_eq!(
            find("configmaps", "patch"),
            ["default-pool-served", "opal-state"]
        );
        assert_eq!(
            rules
                .iter()
                .filter(|r| r.resources.as_ref().unwrap()[0] == "leases")
                .flat_map(|r| r.resource_names.clone().unwrap_or_default())
                .collect::<Vec<_>>(),
            ["default-pool-writer"],
            "the pool's writer election"
        );
        for r in &rules {
            let unnamed = r.resource_names.is_none();
            let resource = r.resources.as_ref().unwrap()[0].as_str();
            assert!(
                !unnamed || resource == "events" || resource == "endpointslices",
                "only Events and EndpointSlices (read) go unnamed: {r:?}"
            );
            if resource == "endpointslices" {
                assert_eq!(r.verbs, ["list", "watch"]);
            }
        }
        // One member fewer: its Secret and sink are no longer granted.
        let one = &webhooks[1..];
        let built = build(&pool(), &members(one), &defaults()).unwrap();
        let text = serde_json::to_string(&built.role).unwrap();
        assert!(
            !text.contains("opal-secret") && !text.contains("opal-state"),
            "{text}"
        );
    }

    #[test]
    fn the_deployment_runs_the_pool_without_a_config_hash_and_spreads() {
        let webhooks = two();
        let built = build(&pool(), &members(&webhooks), &defaults()).unwrap();
        let d = built.deployment.spec.unwrap();
        assert_eq!(d.replicas, Some(DEFAULT_POOL_REPLICAS));
        let template = d.template;
        assert_eq!(template.metadata.as_ref().unwrap().annotations, None);
        let pod = template.spec.unwrap();
        let args = pod.containers[0].args.clone().unwrap();
        assert_eq!(args[0], "pool");
        assert!(
            args.windows(2)
                .any(|a| a == ["--config-map", "default-pool-config"])
        );
        assert!(
            args.windows(2)
                .any(|a| a == ["--writer-election", "default-pool"])
        );
        assert!(pod.containers[0].volume_mounts.is_none());
        assert_eq!(pod.service_account_name.as_deref(), Some("default-pool"));
        assert!(pod.topology_spread_constraints.is_some());
        // The Service and the PodDisruptionBudget select the pods the Deployment makes.
        let selector = d.selector.match_labels.unwrap();
        let labels = template.metadata.unwrap().labels.unwrap();
        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(built.service.spec.unwrap().selector.unwrap(), selector);
        // No Webhook's own receiver Service (selecting instance=<webhook>) selects these.
        assert_eq!(labels["app.kubernetes.io/instance"], "default.pool");
        // A pool without Webhooks keeps no pods.
        let empty = build(&pool(), &[], &defaults()).unwrap();
        assert_eq!(empty.deployment.spec.unwrap().replicas, Some(0));
        assert_eq!(empty.webhooks, 0);
    }

    #[test]
    fn every_child_is_owned_by_the_pool() {
        let webhooks = two();
        let b = build(&pool(), &members(&webhooks), &defaults()).unwrap();
        for m in [
            &b.config.metadata,
            &b.served.metadata,
            &b.service_account.metadata,
            &b.role.metadata,
            &b.role_binding.metadata,
            &b.service.metadata,
            &b.deployment.metadata,
            &b.disruption_budget.metadata,
        ] {
            let owners = m.owner_references.as_ref().unwrap();
            assert_eq!(owners[0].uid, "pool-uid");
            assert_eq!(owners[0].kind, "ReceiverPool");
            assert_eq!(m.labels.as_ref().unwrap()[names::POOL_LABEL], "default");
        }
        assert_eq!(b.served.data, None, "the pods write its data");
    }
}
