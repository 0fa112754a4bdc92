//! The receiver's configuration file.
//!
//! This type is the contract between the operator and the receiver: the operator renders
//! it into the receiver's ConfigMap (see `hookwarden-operator`'s `children` module), the
//! receiver reads it with `hookwarden-receiver run --config FILE`. Signing secrets are never
//! part of it: the configuration names the files (mounted Secrets) that hold them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::GenericHmac;

/// The file name the operator uses inside the receiver's config ConfigMap.
pub const CONFIG_FILE_NAME: &str = "receiver.yaml";
/// The port the receiver serves deliveries and health checks on, unless configured.
pub const DEFAULT_PORT: u16 = 8080;
/// The port the receiver serves Prometheus metrics on, unless configured.
pub const DEFAULT_METRICS_PORT: u16 = 9090;

/// A sender's signature scheme and payload format.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Opal access-change webhooks: `X-Opal-Signature` over `v0:<timestamp>:<body>`.
    Opal,
    /// Membrane system webhooks: `X-Signature` over the body.
    Membrane,
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// Slack: `X-Slack-Signature: v0=<hex>` over `v0:<timestamp>:<body>`.
    Slack,
    /// Stripe: `Stripe-Signature: t=<ts>,v1=<hex>`.
    Stripe,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    StandardWebhooks,
    /// Shopify: `X-Shopify-Hmac-Sha256` (base64).
    Shopify,
    /// GitLab: `X-Gitlab-Token` compared in constant time.
    Gitlab,
    /// Any HMAC layout, configured per Webhook.
    GenericHmac,
}

impl Provider {
    /// Every provider, in the order the documentation lists them.
    pub const ALL: [Provider; 9] = [
        Provider::Opal,
        Provider::Membrane,
        Provider::Github,
        Provider::Slack,
        Provider::Stripe,
        Provider::StandardWebhooks,
        Provider::Shopify,
        Provider::Gitlab,
        Provider::GenericHmac,
    ];

    /// The name used in a Webhook's `spec.provider` and in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Opal => "opal",
            Provider::Membrane => "membrane",
            Provider::Github => "github",
            Provider::Slack => "slack",
            Provider::Stripe => "stripe",
            Provider::StandardWebhooks => "standard-webhooks",
            Provider::Shopify => "shopify",
            Provider::Gitlab => "gitlab",
            Provider::GenericHmac => "generic-hmac",
        }
    }

    /// Parses a provider name; `None` for a name hookwarden does not know.
    pub fn parse(name: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How deliveries are written into a sink ConfigMap.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigMapMode {
    /// A materialised view of the sender's state (Opal access, Membrane organisations).
    #[default]
    State,
    /// The last payload per event type.
    Latest,
    /// The last deliveries, bounded.
    Log,
}

/// The Webhook object a receiver works for; Events it records regard this object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// Where verified deliveries go.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinksConfig {
    /// Record each event as an `events.k8s.io/v1` Event regarding the Webhook.
    #[serde(default)]
    pub events: bool,
    /// Apply deliveries to this ConfigMap (in the Webhook's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<ConfigMapSinkConfig>,
    /// POST the verified raw body to this URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<ForwardConfig>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfigMapSinkConfig {
    pub name: String,
    pub mode: ConfigMapMode,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardConfig {
    pub url: String,
}

/// The whole configuration file of one receiver.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReceiverConfig {
    pub webhook: WebhookIdentity,
    /// Address deliveries and health checks are served on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Address Prometheus metrics are served on.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: SocketAddr,
    /// The request path deliveries arrive on, e.g. `/opal`.
    pub path: String,
    pub provider: Provider,
    /// Accepted event types; empty accepts all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub event_types: Vec<String>,
    /// Files holding the active signing secrets (one secret per file, mounted from Secrets).
    /// A delivery verified by any of them is accepted, which is how secrets are rotated.
    pub secret_files: Vec<PathBuf>,
    #[serde(default)]
    pub sinks: SinksConfig,
    /// The layout of a `generic-hmac` sender's signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_hmac: Option<GenericHmac>,
    /// Limits against abuse and slow senders.
    #[serde(default)]
    pub limits: Limits,
}

/// Limits of one receiver. Every field has a default that suits Opal and Membrane.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Largest delivery body accepted, in bytes; larger ones are answered 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u32,
    /// Signed timestamps further than this in the past or future are refused.
    #[serde(default = "default_replay_window_seconds")]
    pub replay_window_seconds: u32,
    /// Deliveries handled at once; more are answered 503 with `Retry-After`.
    #[serde(default = "default_max_concurrent_deliveries")]
    pub max_concurrent_deliveries: u32,
    /// Time a delivery may take from request to answer; keep it below the sender's deadline
    /// (Opal waits 10 s). Recording gets this less one second.
    #[serde(default = "default_request_timeout_seconds")]
    pub request_timeout_seconds: u32,
    /// Deliveries per second each receiver pod accepts for this Webhook (a token bucket);
    /// more are answered 429 with `Retry-After`. `None`: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Source address ranges (CIDR) accepted; empty: any source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<String>,
    /// Proxies (CIDR) whose `X-Forwarded-For` names the source; empty: the connection's
    /// peer address is the source.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
}

/// A token bucket: `requests_per_second` deliveries a second on average, up to `burst` at
/// once.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    pub requests_per_second: u32,
    pub burst: u32,
}

pub const DEFAULT_MAX_BODY_BYTES: u32 = 1024 * 1024;

fn default_max_body_bytes() -> u32 {
    DEFAULT_MAX_BODY_BYTES
}
fn default_replay_window_seconds() -> u32 {
    300
}
fn default_max_concurrent_deliveries() -> u32 {
    512
}
fn default_request_timeout_seconds() -> u32 {
    8
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: default_max_body_bytes(),
            replay_window_seconds: default_replay_window_seconds(),
            max_concurrent_deliveries: default_max_concurrent_deliveries(),
            request_timeout_seconds: default_request_timeout_seconds(),
            rate_limit: None,
            source_ranges: Vec::new(),
            trusted_proxies: Vec::new(),
        }
    }
}

impl Limits {
    /// The whole request, from the first body byte to the answer.
    pub fn request_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.request_timeout_seconds.into())
    }

    /// The time the sinks get to confirm a write: a second less than the request timeout, so
    /// the sender hears 503 from us rather than a timeout.
    pub fn record_budget(&self) -> std::time::Duration {
        self.request_timeout()
            .saturating_sub(std::time::Duration::from_secs(1))
    }

    /// What is wrong with these limits, naming the field (`limits.<field>`), if anything.
    pub fn problem(&self) -> Option<String> {
        let problem = if self.max_body_bytes == 0 {
            "maxBodyBytes must be at least 1"
        } else if self.max_concurrent_deliveries == 0 {
            "maxConcurrentDeliveries must be at least 1"
        } else if !(2..=60).contains(&self.request_timeout_seconds) {
            "requestTimeoutSeconds must be between 2 and 60"
        } else if !(1..=86_400).contains(&self.replay_window_seconds) {
            "replayWindowSeconds must be between 1 and 86400"
        } else if self
            .rate_limit
            .as_ref()
            .is_some_and(|r| r.requests_per_second == 0)
        {
            "rateLimit.requestsPerSecond must be at least 1"
        } else if self.rate_limit.as_ref().is_some_and(|r| r.burst == 0) {
            "rateLimit.burst must be at least 1"
        } else {
            return cidr_problem("sourceRanges", &self.source_ranges)
                .or_else(|| cidr_problem("trustedProxies", &self.trusted_proxies))
                .map(|problem| format!("limits.{problem}"));
        };
        Some(format!("limits.{problem}"))
    }
}

/// The address range `text` names: a CIDR (`10.0.0.0/8`, `2001:db8::/32`), or a bare
/// address, which stands for itself alone (`/32`, `/128`). Host bits are kept as written
/// and ignored when matching (`10.1.2.3/8` is `10.0.0.0/8`).
pub fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

/// The first of `ranges` that is not a CIDR, as `field[i] "text" is not a CIDR`.
fn cidr_problem(field: &str, ranges: &[String]) -> Option<String> {
    ranges
        .iter()
        .enumerate()
        .find(|(_, r)| parse_cidr(r).is_none())
        .map(|(i, r)| format!("{field}[{i}] {r:?} is not a CIDR"))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
}

fn default_metrics_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_METRICS_PORT))
}

impl ReceiverConfig {
    /// Parses a configuration document (YAML, which includes JSON).
    pub fn from_yaml(text: &str) -> Result<Self> {
        let config: ReceiverConfig =
            serde_saphyr::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Renders the configuration as the YAML document the receiver reads.
    pub fn to_yaml(&self) -> Result<String> {
        serde_saphyr::to_string(self).map_err(|e| Error::Config(e.to_string()))
    }

    fn check(&self) -> Result<()> {
        if self.provider == Provider::GenericHmac && self.generic_hmac.is_none() {
            return Err(Error::Config(
                "provider generic-hmac needs genericHmac (header, algorithm, encoding)".into(),
            ));
        }
        if let Some(problem) = self.generic_hmac.as_ref().and_then(|g| g.problem()) {
            return Err(Error::Config(format!("genericHmac.{problem}")));
        }
        if !self.path.starts_with('/') {
            return Err(Error::Config(format!(
                "path {:?} must start with '/'",
                self.path
            )));
        }
        let s = &self.sinks;
        if !s.events && s.config_map.is_none() && s.forward.is_none() {
            return Err(Error::Config(
                "sinks records deliveries nowhere; enable events, or set configMap or forward"
                    .into(),
            ));
        }
        if let Some(problem) = self.limits.problem() {
            return Err(Error::Config(problem));
        }
        if self.secret_files.is_empty() {
            return Err(Error::Config(
                "secretFiles must name at least one file".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReceiverConfig {
        ReceiverConfig {
            webhook: WebhookIdentity {
                name: "opal".into(),
                namespace: "team-a".into(),
                uid: "0b0c".into(),
            },
            listen: default_listen(),
            metrics_listen: default_metrics_listen(),
            path: "/opal".into(),
            provider: Provider::Opal,
            event_types: vec!["USER_ADDED_TO_RESOURCE".into()],
            secret_files: vec!["/var/run/hookwarden/secrets/0/secret".into()],
            sinks: SinksConfig {
                events: true,
                config_map: Some(ConfigMapSinkConfig {
                    name: "opal-state".into(),
                    mode: ConfigMapMode::State,
                }),
                forward: None,
            },
            generic_hmac: None,
            limits: Limits::default(),
        }
    }

    #[test]
    fn round_trips_through_yaml() {
        let config = sample();
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("provider: opal"), "{yaml}");
        assert_eq!(ReceiverConfig::from_yaml(&yaml).unwrap(), config);
    }

    #[test]
    fn defaults_listen_addresses() {
        let yaml = "webhook: {name: a, namespace: b, uid: c}\npath: /a\nprovider: membrane\nsecretFiles: [/s]\nsinks: {events: true}\n";
        let config = ReceiverConfig::from_yaml(yaml).unwrap();
        assert_eq!(config.listen.port(), DEFAULT_PORT);
        assert_eq!(config.metrics_listen.port(), DEFAULT_METRICS_PORT);
        assert!(config.sinks.events);
        let nowhere = yaml.replace("sinks: {events: true}\n", "");
        let err = ReceiverConfig::from_yaml(&nowhere).unwrap_err();
        assert!(
            err.to_string().contains("records deliveries nowhere"),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let base =
            "webhook: {name: a, namespace: b, uid: c}\nprovider: membrane\nsecretFiles: [/s]\n";
        let err = ReceiverConfig::from_yaml(&format!("{base}path: /a\nsurprise: 1\n")).unwrap_err();
        assert!(err.to_string().contains("surprise"), "{err}");
        let err = ReceiverConfig::from_yaml(&format!("{base}path: nope\n")).unwrap_err();
        assert!(err.to_string().contains("must start with '/'"), "{err}");
        let err = ReceiverConfig::from_yaml(
            "webhook: {name: a, namespace: b, uid: c}\npath: /a\nprovider: paypal\nsecretFiles: [/s]\nsinks: {events: true}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("paypal"), "{err}");
    }

    #[test]
    fn rate_limit_and_ranges_round_trip_and_stay_out_of_the_file_when_unset() {
        let yaml = sample().to_yaml().unwrap();
        for field in ["rateLimit", "sourceRanges", "trustedProxies"] {
            assert!(!yaml.contains(field), "{yaml}");
        }
        let mut config = sample();
        config.limits.rate_limit = Some(RateLimit {
            requests_per_second: 10,
            burst: 20,
        });
        config.limits.source_ranges = vec!["192.30.252.0/22".into(), "2001:db8::1".into()];
        config.limits.trusted_proxies = vec!["10.0.0.0/8".into()];
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("requestsPerSecond: 10"), "{yaml}");
        assert!(yaml.contains("sourceRanges:"), "{yaml}");
        assert_eq!(ReceiverConfig::from_yaml(&yaml).unwrap(), config);
        let unknown = yaml.replace("burst: 20", "burst: 20\n    perMinute: 1");
        assert!(ReceiverConfig::from_yaml(&unknown).is_err(), "{unknown}");
    }

    #[test]
    fn zero_rates_and_ranges_that_are_not_cidrs_are_refused_by_name() {
        let with = |f: &dyn Fn(&mut Limits)| {
            let mut limits = Limits::default();
            f(&mut limits);
            limits.problem()
        };
        assert_eq!(Limits::default().problem(), None);
        assert_eq!(
            with(&|l| {
                l.rate_limit = Some(RateLimit {
                    requests_per_second: 1,
                    burst: 1,
                });
                l.source_ranges = vec!["10.0.0.0/8".into(), "192.0.2.7".into(), "::1".into()];
                l.trusted_proxies = vec!["fd00::/8".into()];
            }),
            None
        );
        for (set, says) in [
            (
                RateLimit {
                    requests_per_second: 0,
                    burst: 5,
                },
                "limits.rateLimit.requestsPerSecond must be at least 1",
            ),
            (
                RateLimit {
                    requests_per_second: 5,
                    burst: 0,
                },
                "limits.rateLimit.burst must be at least 1",
            ),
        ] {
            assert_eq!(
                with(&|l| l.rate_limit = Some(set.clone())).as_deref(),
                Some(says)
            );
        }
        assert_eq!(
            with(&|l| l.source_ranges = vec!["10.0.0.0/8".into(), "10.0.0/8".into()]).as_deref(),
            Some(r#"limits.sourceRanges[1] "10.0.0/8" is not a CIDR"#)
        );
        for bad in ["10.0.0.0/33", "", "example.com", "10.0.0.0/8 ", "::/129"] {
            let problem = with(&|l| l.trusted_proxies = vec![bad.into()]).unwrap_or_default();
            assert!(
                problem.starts_with("limits.trustedProxies[0]"),
                "{bad:?}: {problem}"
            );
        }
        let err = ReceiverConfig::from_yaml(
            "webhook: {name: a, namespace: b, uid: c}\npath: /a\nprovider: membrane\nsecretFiles: [/s]\nsinks: {events: true}\nlimits: {sourceRanges: [nope]}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("limits.sourceRanges[0]"), "{err}");
    }

    #[test]
    fn a_bare_address_is_a_range_of_one() {
        assert_eq!(
            parse_cidr("192.0.2.7"),
            Some("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("2001:db8::1"),
            Some("2001:db8::1/128".parse().unwrap())
        );
        assert_eq!(
            parse_cidr("10.0.0.0/8"),
            Some("10.0.0.0/8".parse().unwrap())
        );
        assert_eq!(parse_cidr("10.0.0/8"), None);
    }

    #[test]
    fn provider_names_round_trip() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Provider::parse("Opal"), None);
    }
}
