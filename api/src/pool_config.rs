//! A receiver pool's configuration and what its pods report they serve.
//!
//! The operator renders [`PoolConfig`] into the pool's config ConfigMap (key
//! [`POOL_CONFIG_FILE`]); each pool pod watches that ConfigMap through the API server and
//! serves what it says without restarting. Each pod then writes a [`ServedReport`] under its
//! own name (key = pod name) into the pool's served ConfigMap; the operator reads those to
//! tell whether a Webhook's current generation is served, rather than guessing.
//!
//! Signing secrets are never in either: a pool Webhook names Secret keys
//! ([`SecretKeyRef`]), which the pool reads through the API (or, outside a cluster, from a
//! directory laid out as a Secret volume is: `<dir>/<secret>/<key>`).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::config::{DEFAULT_METRICS_PORT, DEFAULT_PORT, Limits, Provider, SinksConfig};
use crate::error::{Error, Result};
use crate::layout::GenericHmac;
use crate::webhook::SecretKeyRef;

/// The key of the pool's config ConfigMap that holds the [`PoolConfig`] (YAML).
pub const POOL_CONFIG_FILE: &str = "pool.yaml";

/// Paths a Webhook of a pool may not take: the pool's own endpoints.
pub const RESERVED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Which pool this is.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolIdentity {
    pub name: String,
    pub namespace: String,
}

/// One Webhook as its pool serves it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolWebhook {
    /// The Webhook's name.
    pub name: String,
    /// The Webhook's uid: Events regard it, and a Webhook deleted and made again under the
    /// same name starts afresh (its replay memory is not carried over).
    pub uid: String,
    /// The `metadata.generation` this entry was rendered from; reported back as served.
    pub generation: i64,
    /// The request path deliveries arrive on, e.g. `/opal`; unique within the pool.
    pub path: String,
    pub provider: Provider,
    /// Accepted event types; empty accepts all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// The Secret keys (in the pool's namespace) that hold the active signing secrets; a
    /// delivery verified by any of them is accepted.
    pub secrets: Vec<SecretKeyRef>,
    #[serde(default)]
    pub sinks: SinksConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_hmac: Option<GenericHmac>,
    #[serde(default)]
    pub limits: Limits,
}

/// The whole configuration of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PoolConfig {
    pub pool: PoolIdentity,
    /// Address deliveries and health checks are served on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address Prometheus metrics are served on.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// The Webhooks served, in the order of their names.
    #[serde(default)]
    pub webhooks: Vec<PoolWebhook>,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT))
}

impl PoolConfig {
    /// An empty pool listening on the default ports.
    pub fn new(pool: PoolIdentity) -> PoolConfig {
        PoolConfig {
            pool,
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            webhooks: Vec::new(),
        }
    }

    /// Parses a pool configuration (YAML, which includes JSON) and checks it whole.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let config: PoolConfig =
            serde_saphyr::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Renders the configuration as the YAML document a pool reads.
    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| Error::Config(e.to_string()))
    }

    /// What is wrong with this configuration, naming the Webhook, if anything. A pool
    /// refuses a configuration that is wrong anywhere and keeps serving the one before.
    pub fn check(&self) -> Result<()> {
        let mut paths: BTreeMap<&str, &str> = BTreeMap::new();
        let mut names: BTreeMap<&str, ()> = BTreeMap::new();
        for w in &self.webhooks {
            let problem = |p: String| Error::Config(format!("webhook {}: {p}", w.name));
            if names.insert(&w.name, ()).is_some() {
                return Err(problem("listed twice".into()));
            }
            if let Some(other) = paths.insert(&w.path, &w.name) {
                return Err(problem(format!("path {} is also {other}'s", w.path)));
            }
            w.check().map_err(problem)?;
        }
        Ok(())
    }
}

impl PoolWebhook {
    /// What is wrong with this entry, if anything.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !self.path.starts_with('/') {
            return Err(format!("path {:?} must start with '/'", self.path));
        }
        if RESERVED_PATHS.contains(&self.path.as_str()) {
            return Err(format!("path {} is the pool's own endpoint", self.path));
        }
        if self.provider == Provider::GenericHmac && self.generic_hmac.is_none() {
            return Err("provider generic-hmac needs genericHmac".into());
        }
        if let Some(problem) = self.generic_hmac.as_ref().and_then(|g| g.problem()) {
            return Err(format!("genericHmac.{problem}"));
        }
        let s = &self.sinks;
        if !s.events && s.config_map.is_none() && s.forward.is_none() {
            return Err("sinks records deliveries nowhere".into());
        }
        if let Some(problem) = self.limits.problem() {
            return Err(problem);
        }
        if self.secrets.is_empty() {
            return Err("secrets must name at least one Secret key".into());
        }
        Ok(())
    }
}

/// What one pool pod serves, as it reports it (key = the pod's name in the served
/// ConfigMap, value = this as JSON).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ServedReport {
    /// The served Webhooks by name.
    #[serde(default)]
    pub webhooks: BTreeMap<String, Served>,
    /// Why the pod does not serve the newest configuration it read, when it does not (the
    /// configuration was refused; it serves the one before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One Webhook as a pool pod serves it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    pub uid: String,
    /// The generation of the entry being served.
    pub generation: i64,
    /// Whether deliveries can be verified: every signing secret named could be read. When
    /// none can, deliveries are answered 503 and `problem` says why (never the secret).
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl ServedReport {
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| Error::Config(format!("served report: {e}")))
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Config(format!("served report: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SinksConfig;

    pub(crate) fn entry(name: &str, path: &str) -> PoolWebhook {
        PoolWebhook {
            name: name.into(),
            uid: format!("uid-{name}"),
            generation: 1,
            path: path.into(),
            provider: Provider::Membrane,
            event_types: vec![],
            secrets: vec![SecretKeyRef {
                name: format!("{name}-secret"),
                key: "secret".into(),
            }],
            sinks: SinksConfig {
                events: true,
                ..SinksConfig::default()
            },
            generic_hmac: None,
            limits: Limits::default(),
        }
    }

    fn pool(webhooks: Vec<PoolWebhook>) -> PoolConfig {
        PoolConfig {
            webhooks,
            ..PoolConfig::new(PoolIdentity {
                name: "default".into(),
                namespace: "team-a".into(),
            })
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = pool(vec![entry("a", "/a"), entry("b", "/b")]);
        let yaml = config.to_yaml().unwrap();
        assert_eq!(PoolConfig::from_yaml(&yaml).unwrap(), config);
    }

    #[test]
    fn refuses_two_webhooks_on_one_path_and_reserved_paths() {
        let err = pool(vec![entry("a", "/x"), entry("b", "/x")])
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("path /x is also a's"), "{err}");
        let err = pool(vec![entry("a", "/metrics")]).check().unwrap_err();
        assert!(err.to_string().contains("pool's own endpoint"), "{err}");
        let err = pool(vec![entry("a", "/a"), entry("a", "/b")])
            .check()
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let mut nowhere = entry("a", "/a");
        nowhere.sinks.events = false;
        let err = pool(vec![nowhere]).check().unwrap_err();
        assert!(err.to_string().contains("webhook a: sinks"), "{err}");
    }

    #[test]
    fn served_reports_round_trip() {
        let mut report = ServedReport::default();
        report.webhooks.insert(
            "a".into(),
            Served {
                uid: "u".into(),
                generation: 3,
                ready: false,
                problem: Some("Secret a-secret not found".into()),
            },
        );
        let json = report.to_json().unwrap();
        assert_eq!(ServedReport::from_json(&json).unwrap(), report);
        assert!(ServedReport::from_json("{").is_err());
    }
}
