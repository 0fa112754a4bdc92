//! Names and labels of the objects the operator creates for a Webhook. Pure.

use std::collections::BTreeMap;

/// The field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "hookwarden-operator";
/// `app.kubernetes.io/managed-by` of every child.
pub const MANAGED_BY: &str = "hookwarden-operator";
/// Label naming the Webhook a child belongs to (shared with the receiver's Events).
pub use hookwarden_api::names::WEBHOOK_LABEL;
/// Label telling which part of a receiver a child is (`receiver`, `config`, `sink`, `secret`).
pub const ROLE_LABEL: &str = "hookwarden.io/role";
/// The key of a generated signing Secret.
pub const GENERATED_SECRET_KEY: &str = "secret";
/// Pod-template annotation carrying the hash of the receiver config.
pub const CONFIG_HASH_ANNOTATION: &str = "hookwarden.io/config-hash";

const RECEIVER_SUFFIX: &str = "-receiver";
const CONFIG_SUFFIX: &str = "-receiver-config";
const SECRET_SUFFIX: &str = "-signing-secret";

/// Deployment, Service, ServiceAccount, Role and RoleBinding of a Webhook's receiver.
pub fn receiver(webhook: &str) -> String {
    format!("{webhook}{RECEIVER_SUFFIX}")
}

/// The ConfigMap holding the rendered receiver config.
pub fn receiver_config(webhook: &str) -> String {
    format!("{webhook}{CONFIG_SUFFIX}")
}

/// The Secret a generated signing secret lives in.
pub fn generated_secret(webhook: &str) -> String {
    format!("{webhook}{SECRET_SUFFIX}")
}

/// A Webhook's name must give valid child names: a Service name is a DNS-1035 label of at
/// most 63 characters.
pub fn check_webhook_name(name: &str) -> Result<(), String> {
    let max = 63 - CONFIG_SUFFIX.len().max(RECEIVER_SUFFIX.len());
    if name.len() > max {
        return Err(format!(
            "the Webhook name {name:?} is {} characters long; at most {max}, so that the receiver's Service name fits",
            name.len()
        ));
    }
    let starts_with_letter = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    let valid = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !starts_with_letter || !valid {
        return Err(format!(
            "the Webhook name {name:?} must start with a letter and contain only lowercase letters, digits and '-', so that it can name the receiver's Service"
        ));
    }
    Ok(())
}

/// Checks a ReceiverPool's name as `field` gives it: a DNS label short enough that the
/// pool's objects (`<pool>-pool`, a Service name among them) are DNS labels too.
pub fn check_pool_name(field: &str, name: &str) -> Result<(), String> {
    const MAX: usize = 63 - "-pool".len();
    let label = !name.is_empty()
        && name.len() <= MAX
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-');
    match label {
        true => Ok(()),
        false => Err(format!(
            "{field} {name:?} must be a DNS label of at most {MAX} characters (lower-case \
             letters, digits and '-', starting with a letter)"
        )),
    }
}

/// Checks a DNS-1123 subdomain (names of Secrets, ConfigMaps, ...).
pub fn check_dns_subdomain(field: &str, value: &str) -> Result<(), String> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if value.is_empty() || value.len() > 253 || !value.split('.').all(label_ok) {
        return Err(format!(
            "{field} {value:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
        ));
    }
    Ok(())
}

/// The receiver container a Webhook adds to an application's pods (`spec.sidecar`).
pub fn sidecar_container(webhook: &str) -> String {
    format!("hookwarden-{webhook}")
}

/// A volume the receiver container adds to an application's pods: `hw-<webhook>-<what>`.
pub fn sidecar_volume(webhook: &str, what: &str) -> String {
    format!("hw-{webhook}-{what}")
}

/// The label a pod template carries to get a Webhook's receiver injected as a native
/// sidecar: its value is the Webhook's name (in the pod's namespace).
pub const INJECT_LABEL: &str = "hookwarden.io/inject";

/// The annotation the injector puts on each pod it injects: a digest of the receiver it
/// injected (container, volumes, config), so that status can name the pods that run an
/// outdated one.
pub const RECEIVER_HASH_ANNOTATION: &str = "hookwarden.io/receiver-hash";

/// The path the operator's pod admission webhook serves.
pub const INJECT_PATH: &str = "/inject-pods";

/// The name of the webhook inside the operator's MutatingWebhookConfiguration.
pub const INJECT_WEBHOOK: &str = "inject.hookwarden.io";

/// The field manager the previous release owned what it added to an application's
/// Deployment with (one per Webhook); kept to take such a container out again.
pub fn sidecar_field_manager(webhook: &str) -> String {
    format!("hookwarden.io/sidecar-{webhook}")
}

/// Label the previous release put on an application Deployment it added a receiver
/// container to, so that the operator finds it and takes that container out (once).
pub const SIDECAR_LABEL: &str = "hookwarden.io/sidecar";

/// The Webhooks whose sidecar field managers own fields of `deployment`.
pub fn sidecar_managers(deployment: &k8s_openapi::api::apps::v1::Deployment) -> Vec<String> {
    let prefix = sidecar_field_manager("");
    let mut found: Vec<String> = deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref()?.strip_prefix(prefix.as_str()))
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Labels that select a Webhook's receiver pods. Never change: a Deployment's selector is
/// immutable.
pub fn selector_labels(webhook: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".into(),
            "hookwarden-receiver".into(),
        ),
        ("app.kubernetes.io/instance".into(), webhook.into()),
    ])
}

/// Labels of every child of a Webhook; `role` says which part it is.
pub fn labels(webhook: &str, role: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(webhook);
    l.insert("app.kubernetes.io/component".into(), "receiver".into());
    l.insert("app.kubernetes.io/part-of".into(), "hookwarden".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l.insert(WEBHOOK_LABEL.into(), webhook.into());
    l.insert(ROLE_LABEL.into(), role.into());
    l
}

/// The label selector that finds every child the operator manages.
pub fn managed_selector() -> String {
    format!("app.kubernetes.io/managed-by={MANAGED_BY}")
}

/// Label naming the ReceiverPool an object belongs to (its children and its pods).
pub const POOL_LABEL: &str = "hookwarden.io/pool";

pub use hookwarden_api::names::{pool_config, pool_receiver, pool_served, writer_lease};

/// Labels that select a pool's pods. `app.kubernetes.io/instance` is `<pool>.pool`, which
/// no Webhook's name can be (Webhook names have no '.'), so that a Webhook's own receiver
/// Service never selects a pool's pods. Never change: a Deployment's selector is immutable.
pub fn pool_selector_labels(pool: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".into(),
            "hookwarden-receiver".into(),
        ),
        ("app.kubernetes.io/instance".into(), format!("{pool}.pool")),
    ])
}

/// Labels of every child of a ReceiverPool; `role` says which part it is (`pool`,
/// `pool-config`, `pool-served`).
pub fn pool_labels(pool: &str, role: &str) -> BTreeMap<String, String> {
    let mut l = pool_selector_labels(pool);
    l.insert("app.kubernetes.io/component".into(), "receiver-pool".into());
    l.insert("app.kubernetes.io/part-of".into(), "hookwarden".into());
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l.insert(POOL_LABEL.into(), pool.into());
    l.insert(ROLE_LABEL.into(), role.into());
    l
}
