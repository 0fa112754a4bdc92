//! Checks a Webhook's spec and resolves its defaults. Pure: no I/O.
//!
//! The CRD refuses most invalid specs at admission (its schema, and the CEL rules of
//! `rules`, which mirror these checks). They are all checked here too, for Webhooks stored
//! before a rule existed: a failure becomes `Ready=False`, reason `InvalidSpec`, with a
//! message that says what to fix.

use hookwarden_api::config::{ConfigMapMode, ConfigMapSinkConfig, Limits, Provider, RateLimit};

use crate::crd::{SidecarSettings, WebhookGateway, WebhookIngress, WebhookLimits, WebhookSpec};
use crate::runtime::names;

/// Event types Opal sends (Opal's access-change webhook documentation).
pub const OPAL_EVENT_TYPES: [&str; 6] = [
    "USER_ADDED_TO_RESOURCE",
    "USER_REMOVED_FROM_RESOURCE",
    "USER_ADDED_TO_GROUP",
    "USER_REMOVED_FROM_GROUP",
    "RESOURCE_ADDED_TO_GROUP",
    "RESOURCE_REMOVED_FROM_GROUP",
];

/// Event types Membrane sends (Membrane's system webhook documentation).
pub const MEMBRANE_EVENT_TYPES: [&str; 3] =
    ["user-invited-to-org", "org-access-requested", "org-created"];

/// Paths the receiver serves itself.
/// Secrets beyond `secretRef` a Webhook may name; rotation needs one, a few is plenty.
const MAX_ADDITIONAL_SECRETS: usize = 4;

const RESERVED_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// The bounds the CRD's schema sets (and its CEL rules' cost estimate needs).
const MAX_EVENT_TYPES: usize = 256;
const MAX_EVENT_TYPE_LEN: usize = 128;
const MAX_URL_LEN: usize = 2048;

/// Where the signing secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A Secret the user manages.
    Referenced { name: String, key: String },
    /// A Secret the operator generates and owns.
    Generated { name: String },
}

impl SecretSource {
    pub fn name(&self) -> &str {
        match self {
            SecretSource::Referenced { name, .. } | SecretSource::Generated { name } => name,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            SecretSource::Referenced { key, .. } => key,
            SecretSource::Generated { .. } => names::GENERATED_SECRET_KEY,
        }
    }
}

/// A spec that passed validation, with every default resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidSpec {
    pub path: String,
    pub provider: Provider,
    pub event_types: Vec<String>,
    pub secret: SecretSource,
    /// `spec.additionalSecretRefs`, in order.
    pub additional_secrets: Vec<SecretSource>,
    pub events: bool,
    pub config_map: Option<ConfigMapSinkConfig>,
    pub forward: Option<String>,
    pub replicas: i32,
    pub generic_hmac: Option<hookwarden_api::layout::GenericHmac>,
    pub limits: Limits,
    /// `spec.ingress`, checked.
    pub ingress: Option<WebhookIngress>,
    /// `spec.gateway`, checked.
    pub gateway: Option<WebhookGateway>,
    /// `spec.sidecar`, checked, with its defaults.
    pub sidecar: Option<ValidSidecar>,
    /// The ReceiverPool that serves this Webhook, when it is pooled: `spec.pool`, or the
    /// namespace's `default` pool when the spec asks for no placement.
    pub pool: Option<String>,
}

/// Where the receiver runs as a sidecar.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidSidecar {
    /// A Deployment the previous release added the receiver to (nothing is added now).
    pub deployment: Option<String>,
    pub port: u16,
    pub metrics_port: u16,
}

/// The sidecar's ports unless the Webhook says otherwise.
pub const SIDECAR_PORT: u16 = 8090;
pub const SIDECAR_METRICS_PORT: u16 = 8091;

impl ValidSpec {
    /// Every active signing secret: the main one first, then the additional ones.
    pub fn secrets(&self) -> impl Iterator<Item = &SecretSource> {
        std::iter::once(&self.secret).chain(&self.additional_secrets)
    }

    /// The event types this Webhook claims from its sender: its own list, or every type
    /// the sender has when the list is empty.
    pub fn claimed_event_types(&self) -> Vec<&str> {
        if self.event_types.is_empty() {
            known_event_types(self.provider).to_vec()
        } else {
            self.event_types.iter().map(String::as_str).collect()
        }
    }
}

/// The event types a provider is known to send; empty when any type may arrive.
pub fn known_event_types(provider: Provider) -> &'static [&'static str] {
    match provider {
        Provider::Opal => &OPAL_EVENT_TYPES,
        Provider::Membrane => &MEMBRANE_EVENT_TYPES,
        _ => &[],
    }
}

/// Validates `spec` of the Webhook named `name`. The error lists every problem found,
/// each with what to do about it.
pub fn validate(name: &str, spec: &WebhookSpec) -> Result<ValidSpec, String> {
    let mut problems = Vec::new();

    if let Err(p) = names::check_webhook_name(name) {
        problems.push(p);
    }
    if let Err(p) = check_path(&spec.path) {
        problems.push(p);
    }
    let provider = Provider::parse(&spec.provider);
    if provider.is_none() {
        let known: Vec<&str> = Provider::ALL.iter().map(|p| p.as_str()).collect();
        problems.push(format!(
            "spec.provider {:?} is not known; use one of: {}",
            spec.provider,
            known.join(", ")
        ));
    }

    let mut event_types: Vec<String> = Vec::new();
    if spec.event_types.len() > MAX_EVENT_TYPES {
        problems.push(format!(
            "spec.eventTypes has {} entries; at most {MAX_EVENT_TYPES}",
            spec.event_types.len()
        ));
    }
    for t in &spec.event_types {
        if t.len() > MAX_EVENT_TYPE_LEN {
            problems.push(format!(
                "spec.eventTypes entry {t:?} is longer than {MAX_EVENT_TYPE_LEN} characters"
            ));
        } else if t.trim().is_empty() {
            problems.push("spec.eventTypes must not contain an empty entry".into());
        } else if event_types.contains(t) {
            problems.push(format!("spec.eventTypes lists {t:?} twice"));
        } else {
            event_types.push(t.clone());
        }
    }
    if let Some(p) = provider {
        let known = known_event_types(p);
        if !known.is_empty() {
            for t in &event_types {
                if !known.contains(&t.as_str()) {
                    problems.push(format!(
                        "spec.eventTypes: {p} does not send {t:?}; it sends {}",
                        known.join(", ")
                    ));
                }
            }
        }
    }

    let secret = match &spec.secret_ref {
        None => SecretSource::Generated {
            name: names::generated_secret(name),
        },
        Some(r) => {
            if let Err(p) = names::check_dns_subdomain("spec.secretRef.name", &r.name) {
                problems.push(p);
            }
            if let Err(p) = check_secret_key(&r.key) {
                problems.push(p);
            }
            SecretSource::Referenced {
                name: r.name.clone(),
                key: r.key.clone(),
            }
        }
    };

    let mut additional_secrets = Vec::new();
    for (i, r) in spec.additional_secret_refs.iter().enumerate() {
        let field = format!("spec.additionalSecretRefs[{i}]");
        if let Err(p) = names::check_dns_subdomain(&format!("{field}.name"), &r.name) {
            problems.push(p);
        }
        if let Err(p) = check_secret_key(&r.key) {
            problems.push(format!("{field}: {p}"));
        }
        let source = SecretSource::Referenced {
            name: r.name.clone(),
            key: r.key.clone(),
        };
        if source == secret || additional_secrets.contains(&source) {
            problems.push(format!(
                "{field} names Secret {:?} key {:?} a second time; remove it",
                r.name, r.key
            ));
        }
        additional_secrets.push(source);
    }
    if additional_secrets.len() > MAX_ADDITIONAL_SECRETS {
        problems.push(format!(
            "spec.additionalSecretRefs has {} entries; at most {MAX_ADDITIONAL_SECRETS} are allowed",
            additional_secrets.len()
        ));
    }

    let sinks = spec.sinks.clone().unwrap_or_default();
    // A sidecar runs under the application's ServiceAccount: it records nothing itself.
    let events = sinks.events.unwrap_or(spec.sidecar.is_none());
    let config_map = sinks.config_map.map(|cm| {
        if let Err(p) = names::check_dns_subdomain("spec.sinks.configMap.name", &cm.name) {
            problems.push(p);
        }
        let stateful = matches!(provider, Some(Provider::Opal | Provider::Membrane));
        let mode = cm.mode.unwrap_or(if stateful {
            ConfigMapMode::State
        } else {
            ConfigMapMode::Latest
        });
        if mode == ConfigMapMode::State && !stateful && provider.is_some() {
            problems.push(format!(
                "spec.sinks.configMap.mode \"state\" needs provider opal or membrane; \
                 use \"latest\" or \"log\" for {}",
                spec.provider
            ));
        }
        if cm.name == names::receiver_config(name) {
            problems.push(format!(
                "spec.sinks.configMap.name {:?} is the receiver's own config; choose another name",
                cm.name
            ));
        }
        ConfigMapSinkConfig {
            name: cm.name,
            mode,
        }
    });
    let forward = sinks.forward.map(|f| {
        if f.url.len() > MAX_URL_LEN {
            problems.push(format!(
                "spec.sinks.forward.url is longer than {MAX_URL_LEN} characters"
            ));
        } else if !(f.url.starts_with("http://") || f.url.starts_with("https://"))
            || f.url.contains(char::is_whitespace)
        {
            problems.push(format!(
                "spec.sinks.forward.url {:?} must be an http:// or https:// URL",
                f.url
            ));
        }
        f.url
    });
    if !events && config_map.is_none() && forward.is_none() && spec.sidecar.is_none() {
        problems.push(
            "spec.sinks records deliveries nowhere; enable events, or set configMap or forward"
                .into(),
        );
    }

    let settings = spec.receiver.clone().unwrap_or_default();
    let replicas = settings.replicas.unwrap_or(1);
    if replicas < 0 {
        problems.push(format!(
            "spec.receiver.replicas must be 0 or more, not {replicas}"
        ));
    }

    match (provider, &spec.generic_hmac) {
        (Some(Provider::GenericHmac), None) => problems.push(
            "provider generic-hmac needs spec.genericHmac (header, algorithm, encoding)".into(),
        ),
        (Some(p), Some(_)) if p != Provider::GenericHmac => problems.push(format!(
            "spec.genericHmac applies to provider generic-hmac only, not {p}; remove it"
        )),
        (_, Some(g)) => {
            if let Some(problem) = g.problem() {
                problems.push(format!("spec.genericHmac.{problem}"))
            }
        }
        _ => {}
    }

    let set = spec.limits.clone().unwrap_or_default();
    if set.burst.is_some() && set.requests_per_second.is_none() {
        problems.push("spec.limits.burst needs spec.limits.requestsPerSecond".into());
    }
    let limits = resolve_limits(set);
    if let Some(p) = limits.problem() {
        problems.push(format!("spec.{p}"));
    }

    let ingress = spec.ingress.clone();
    if let Some(i) = &ingress {
        problems.extend(check_ingress(i));
    }
    let gateway = spec.gateway.clone();
    if let Some(g) = &gateway {
        problems.extend(check_gateway(g));
        if ingress.is_some() {
            problems
                .push("spec.ingress and spec.gateway both expose the receiver; keep one".into());
        }
    }
    // A Webhook that asks for no placement is served by its namespace's default pool.
    let pool = spec.pool_name().map(str::to_string);
    if let Some(pool) = &spec.pool {
        if let Err(p) = names::check_pool_name("spec.pool", pool) {
            problems.push(p);
        }
        if spec.receiver.is_some() || spec.sidecar.is_some() {
            problems.push(
                "spec.pool, spec.receiver and spec.sidecar each place the receiver; keep one"
                    .into(),
            );
        }
    }
    let sidecar = spec.sidecar.as_ref().map(|s| {
        let (sidecar, found) = check_sidecar(s, events, config_map.is_some(), forward.is_some());
        problems.extend(found);
        sidecar
    });

    match (provider, problems.is_empty()) {
        (Some(provider), true) => Ok(ValidSpec {
            path: spec.path.clone(),
            provider,
            event_types,
            secret,
            additional_secrets,
            events,
            config_map,
            forward,
            replicas,
            generic_hmac: spec.generic_hmac.clone(),
            limits,
            ingress,
            gateway,
            sidecar,
            pool,
        }),
        _ => Err(problems.join("; ")),
    }
}

/// `spec.sidecar` with its defaults, and its problems: a valid Deployment name if any, two distinct
/// ports, and `forward` as the only sink.
fn check_sidecar(
    set: &SidecarSettings,
    events: bool,
    config_map: bool,
    forward: bool,
) -> (ValidSidecar, Vec<String>) {
    let mut problems = Vec::new();
    if let Some(Err(p)) = set
        .deployment
        .as_deref()
        .map(|d| names::check_dns_subdomain("spec.sidecar.deployment", d))
    {
        problems.push(p);
    }
    let mut port = |field: &str, value: Option<i32>, default: u16| match value {
        None => default,
        Some(v) => u16::try_from(v).ok().filter(|p| *p > 0).unwrap_or_else(|| {
            problems.push(format!("spec.sidecar.{field} {v} is not a port (1-65535)"));
            default
        }),
    };
    let sidecar = ValidSidecar {
        deployment: set.deployment.clone(),
        port: port("port", set.port, SIDECAR_PORT),
        metrics_port: port("metricsPort", set.metrics_port, SIDECAR_METRICS_PORT),
    };
    if sidecar.port == sidecar.metrics_port {
        problems.push(format!(
            "spec.sidecar.port and spec.sidecar.metricsPort are both {}; use two ports",
            sidecar.port
        ));
    }
    if events || config_map {
        problems.push(
            "spec.sidecar runs the receiver under the application's ServiceAccount, which \
             hookwarden does not grant rights to: use sinks.forward only (remove \
             sinks.configMap, set sinks.events to false)"
                .into(),
        );
    }
    if !forward {
        problems.push(
            "spec.sidecar needs sinks.forward.url, the application's address in the pod \
             (e.g. http://127.0.0.1:8080/webhooks)"
                .into(),
        );
    }
    (sidecar, problems)
}

/// Problems with `spec.gateway`: a concrete DNS host name, and Gateways named validly.
fn check_gateway(gateway: &WebhookGateway) -> Vec<String> {
    let mut problems = Vec::new();
    if gateway.hostname.starts_with("*.") {
        problems.push(format!(
            "spec.gateway.hostname {:?} is a wildcard; senders need one concrete host name",
            gateway.hostname
        ));
    } else if let Err(p) = names::check_dns_subdomain("spec.gateway.hostname", &gateway.hostname) {
        problems.push(p);
    }
    if gateway.parent_refs.is_empty() || gateway.parent_refs.len() > 8 {
        problems.push("spec.gateway.parentRefs must name 1 to 8 Gateways".into());
    }
    for (i, p) in gateway.parent_refs.iter().enumerate() {
        let field = format!("spec.gateway.parentRefs[{i}]");
        if let Err(e) = names::check_dns_subdomain(&format!("{field}.name"), &p.name) {
            problems.push(e);
        }
        if let Some(ns) = &p.namespace
            && (ns.len() > 63 || ns.contains('.') || names::check_dns_subdomain("", ns).is_err())
        {
            problems.push(format!("{field}.namespace {ns:?} is not a namespace name"));
        }
        if let Some(section) = &p.section_name
            && let Err(e) = names::check_dns_subdomain(&format!("{field}.sectionName"), section)
        {
            problems.push(e);
        }
    }
    problems
}

/// Problems with `spec.ingress`: a concrete DNS host name, valid class and Secret names.
fn check_ingress(ingress: &WebhookIngress) -> Vec<String> {
    let mut problems = Vec::new();
    if ingress.host.starts_with("*.") {
        problems.push(format!(
            "spec.ingress.host {:?} is a wildcard; senders need one concrete host name",
            ingress.host
        ));
    } else if let Err(p) = names::check_dns_subdomain("spec.ingress.host", &ingress.host) {
        problems.push(p);
    }
    if let Some(class) = &ingress.class_name
        && let Err(p) = names::check_dns_subdomain("spec.ingress.className", class)
    {
        problems.push(p);
    }
    if let Some(tls) = &ingress.tls_secret_name
        && let Err(p) = names::check_dns_subdomain("spec.ingress.tlsSecretName", tls)
    {
        problems.push(p);
    }
    problems
}

/// The receiver's limits: the Webhook's where set, the receiver's defaults otherwise.
fn resolve_limits(set: WebhookLimits) -> Limits {
    let d = Limits::default();
    Limits {
        max_body_bytes: set.max_body_bytes.unwrap_or(d.max_body_bytes),
        replay_window_seconds: set.replay_window_seconds.unwrap_or(d.replay_window_seconds),
        max_concurrent_deliveries: set
            .max_concurrent_deliveries
            .unwrap_or(d.max_concurrent_deliveries),
        request_timeout_seconds: set
            .request_timeout_seconds
            .unwrap_or(d.request_timeout_seconds),
        rate_limit: set.requests_per_second.map(|rate| RateLimit {
            requests_per_second: rate,
            burst: set.burst.unwrap_or_else(|| rate.saturating_mul(2)),
        }),
        source_ranges: set.source_ranges.unwrap_or_default(),
        trusted_proxies: set.trusted_proxies.unwrap_or_default(),
    }
}

fn check_path(path: &str) -> Result<(), String> {
    const ALLOWED: &str = "-._~!$&'()+,;=:@%/";
    let fix = "use an absolute path such as /opal";
    if !path.starts_with('/') {
        return Err(format!("spec.path {path:?} must start with '/'; {fix}"));
    }
    if path.len() > 256 {
        return Err(format!(
            "spec.path is {} characters long; at most 256",
            path.len()
        ));
    }
    if let Some(c) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ALLOWED.contains(*c)))
    {
        return Err(format!(
            "spec.path {path:?} contains {c:?}; {fix} (letters, digits and {ALLOWED} only)"
        ));
    }
    if path.contains("//") || path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!(
            "spec.path {path:?} has an empty, '.' or '..' segment; {fix}"
        ));
    }
    if path == "/" || RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "spec.path {path:?} is reserved by the receiver; {fix}"
        ));
    }
    Ok(())
}

fn check_secret_key(key: &str) -> Result<(), String> {
    if key.trim().is_empty() {
        return Err(
            "spec.secretRef.key is empty; name the key of the Secret that holds the signing secret"
                .into(),
        );
    }
    let valid = key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(format!(
            "spec.secretRef.key {key:?} is not a valid Secret key (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConfigMapSink, ForwardSink, SecretKeyRef, Sinks};
    use crate::webhook::validate::ValidSidecar;

    fn spec(provider: &str, path: &str) -> WebhookSpec {
        WebhookSpec {
            path: path.into(),
            provider: provider.into(),
            ..WebhookSpec::default()
        }
    }

    #[test]
    fn additional_secrets_and_limits_are_checked() {
        let mut s = spec("membrane", "/m");
        let r = |name: &str, key: &str| SecretKeyRef {
            name: name.into(),
            key: key.into(),
        };
        s.secret_ref = Some(r("creds", "a"));
        s.additional_secret_refs = vec![r("creds", "b")];
        let v = validate("w", &s).unwrap();
        assert_eq!(v.secrets().count(), 2);
        assert_eq!(v.limits, Limits::default());

        s.additional_secret_refs = vec![r("creds", "a"), r("Bad_Name", "b")];
        s.limits = Some(WebhookLimits {
            request_timeout_seconds: Some(1),
            ..WebhookLimits::default()
        });
        let err = validate("w", &s).unwrap_err();
        assert!(
            err.contains(
                "spec.additionalSecretRefs[0] names Secret \"creds\" key \"a\" a second time"
            ),
            "{err}"
        );
        assert!(err.contains("spec.additionalSecretRefs[1].name"), "{err}");
        assert!(err.contains("spec.limits.requestTimeoutSeconds"), "{err}");

        s.additional_secret_refs = vec![];
        s.limits = Some(WebhookLimits {
            max_body_bytes: Some(4096),
            ..WebhookLimits::default()
        });
        let v = validate("w", &s).unwrap();
        assert_eq!(v.limits.max_body_bytes, 4096);
        assert_eq!(v.limits.request_timeout_seconds, 8);
    }

    #[test]
    fn generic_hmac_needs_its_layout() {
        let err = validate("w", &spec("generic-hmac", "/g")).unwrap_err();
        assert!(err.contains("needs spec.genericHmac"), "{err}");
        let mut s = spec("github", "/g");
        s.generic_hmac = Some(hookwarden_api::layout::GenericHmac {
            header: "X-Sig".into(),
            algorithm: hookwarden_api::layout::Algorithm::Sha256,
            encoding: hookwarden_api::layout::Encoding::Hex,
            prefix: String::new(),
            timestamp_header: None,
            template: None,
            accept_json_stringify: false,
        });
        assert!(validate("w", &s).unwrap_err().contains("generic-hmac only"));
        s.provider = "generic-hmac".into();
        assert!(validate("w", &s).is_ok());
        // A layout that does not sign the body is refused, with the reason.
        if let Some(g) = s.generic_hmac.as_mut() {
            g.timestamp_header = Some("X-Ts".into());
            g.template = Some("{timestamp}".into());
        }
        let err = validate("w", &s).unwrap_err();
        assert!(
            err.contains("spec.genericHmac.template does not sign {body}"),
            "{err}"
        );
        // A timestamp header that is checked but not signed: a captured delivery would
        // replay with a fresh header. Refused, with the default template too.
        for template in [Some("{body}"), Some("{header:X-Ts}.{body}"), None] {
            if let Some(g) = s.generic_hmac.as_mut() {
                g.timestamp_header = Some("X-Ts".into());
                g.template = template.map(String::from);
            }
            let err = validate("w", &s).unwrap_err();
            assert!(
                err.contains("timestampHeader is not signed: put {timestamp} in template"),
                "{template:?}: {err}"
            );
        }
        if let Some(g) = s.generic_hmac.as_mut() {
            g.template = Some("{timestamp}.{body}".into());
        }
        assert!(validate("w", &s).is_ok());
    }

    #[test]
    fn rate_limits_and_source_ranges_reach_the_receivers_limits() {
        let mut s = spec("github", "/gh");
        s.limits = Some(WebhookLimits {
            requests_per_second: Some(5),
            source_ranges: Some(vec!["192.30.252.0/22".into(), "2001:db8::/32".into()]),
            trusted_proxies: Some(vec!["10.244.0.0/16".into()]),
            ..WebhookLimits::default()
        });
        let v = validate("gh", &s).unwrap();
        assert_eq!(
            v.limits.rate_limit,
            Some(RateLimit {
                requests_per_second: 5,
                burst: 10
            })
        );
        assert_eq!(v.limits.source_ranges, ["192.30.252.0/22", "2001:db8::/32"]);
        assert_eq!(v.limits.trusted_proxies, ["10.244.0.0/16"]);
        // A burst without a rate, and a range that is not one, are named.
        s.limits = Some(WebhookLimits {
            burst: Some(3),
            source_ranges: Some(vec!["10.0.0/8".into()]),
            ..WebhookLimits::default()
        });
        let err = validate("gh", &s).unwrap_err();
        assert!(
            err.contains("spec.limits.burst needs spec.limits.requestsPerSecond"),
            "{err}"
        );
        assert!(err.contains("sourceRanges"), "{err}");
        // Without them, no limit and any source, as before.
        s.limits = None;
        let v = validate("gh", &s).unwrap();
        assert_eq!(v.limits.rate_limit, None);
        assert!(v.limits.source_ranges.is_empty());
    }

    #[test]
    fn defaults_resolve() {
        let v = validate("opal", &spec("opal", "/opal")).unwrap();
        assert_eq!(v.provider, Provider::Opal);
        assert_eq!(
            v.secret,
            SecretSource::Generated {
                name: "opal-signing-secret".into()
            }
        );
        assert!(v.events);
        assert_eq!(v.replicas, 1);
        assert_eq!(v.claimed_event_types().len(), 6);
    }

    #[test]
    fn bad_paths_are_explained() {
        for (path, needle) in [
            ("opal", "must start with '/'"),
            ("/a b", "contains ' '"),
            ("/a{id}", "contains '{'"),
            ("/a/*", "contains '*'"),
            ("/a//b", "empty, '.' or '..'"),
            ("/a/../b", "empty, '.' or '..'"),
            ("/healthz", "reserved"),
            ("/", "reserved"),
        ] {
            let err = validate("w", &spec("github", path)).unwrap_err();
            assert!(err.contains(needle), "{path}: {err}");
        }
        assert!(validate("w", &spec("github", "/hooks/git-hub_1.0~x")).is_ok());
    }

    #[test]
    fn unknown_provider_lists_the_known_ones() {
        let err = validate("w", &spec("paypal", "/p")).unwrap_err();
        assert!(err.contains("\"paypal\" is not known"), "{err}");
        assert!(err.contains("standard-webhooks"), "{err}");
    }

    #[test]
    fn the_schemas_bounds_hold_here_too() {
        let mut s = spec("github", "/g");
        s.event_types = vec!["x".repeat(129)];
        assert!(validate("w", &s).unwrap_err().contains("longer than 128"));
        s.event_types = (0..257).map(|i| format!("t{i}")).collect();
        assert!(validate("w", &s).unwrap_err().contains("at most 256"));
        s.event_types = vec!["x".repeat(128)];
        assert!(validate("w", &s).is_ok());
        s.sinks = Some(Sinks {
            forward: Some(ForwardSink {
                url: format!("http://a/{}", "x".repeat(2048)),
            }),
            ..Sinks::default()
        });
        assert!(validate("w", &s).unwrap_err().contains("longer than 2048"));
    }

    #[test]
    fn empty_or_bad_secret_key() {
        let mut s = spec("membrane", "/m");
        s.secret_ref = Some(SecretKeyRef {
            name: "m".into(),
            key: "".into(),
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("spec.secretRef.key is empty")
        );
        s.secret_ref = Some(SecretKeyRef {
            name: "m".into(),
            key: "a/b".into(),
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("not a valid Secret key")
        );
        s.secret_ref = Some(SecretKeyRef {
            name: "Bad_Name".into(),
            key: "k".into(),
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("spec.secretRef.name")
        );
    }

    #[test]
    fn event_types_are_checked_against_the_sender() {
        let mut s = spec("membrane", "/m");
        s.event_types = vec!["org-created".into(), "org-deleted".into()];
        let err = validate("w", &s).unwrap_err();
        assert!(err.contains("does not send \"org-deleted\""), "{err}");
        s.event_types = vec!["org-created".into(), "org-created".into()];
        assert!(validate("w", &s).unwrap_err().contains("twice"));
        s.event_types = vec!["org-created".into()];
        assert_eq!(
            validate("w", &s).unwrap().claimed_event_types(),
            ["org-created"]
        );
        // other senders' types are free-form
        let mut g = spec("github", "/g");
        g.event_types = vec!["push".into()];
        assert!(validate("w", &g).is_ok());
    }

    #[test]
    fn sinks_are_checked() {
        let mut s = spec("github", "/g");
        s.sinks = Some(Sinks {
            events: Some(false),
            config_map: None,
            forward: None,
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("records deliveries nowhere")
        );
        s.sinks = Some(Sinks {
            events: Some(false),
            config_map: Some(ConfigMapSink {
                name: "gh".into(),
                mode: Some(ConfigMapMode::State),
            }),
            forward: None,
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("needs provider opal or membrane")
        );
        s.sinks = Some(Sinks {
            events: None,
            config_map: Some(ConfigMapSink {
                name: "gh".into(),
                mode: None,
            }),
            forward: Some(ForwardSink {
                url: "ftp://x".into(),
            }),
        });
        assert!(
            validate("w", &s)
                .unwrap_err()
                .contains("http:// or https://")
        );
        s.sinks.as_mut().unwrap().forward = None;
        let v = validate("w", &s).unwrap();
        assert_eq!(v.config_map.unwrap().mode, ConfigMapMode::Latest);
    }

    #[test]
    fn webhook_names_must_fit_child_names() {
        let long = "a".repeat(60);
        assert!(
            validate(&long, &spec("github", "/g"))
                .unwrap_err()
                .contains("at most")
        );
        assert!(
            validate("1abc", &spec("github", "/g"))
                .unwrap_err()
                .contains("start with a letter")
        );
        assert!(validate("a.b", &spec("github", "/g")).is_err());
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut s = spec("paypal", "nope");
        s.secret_ref = Some(SecretKeyRef {
            name: "x".into(),
            key: "".into(),
        });
        let err = validate("w", &s).unwrap_err();
        assert!(err.matches("; ").count() >= 2, "{err}");
    }

    #[test]
    fn ingress_needs_a_concrete_host_and_valid_names() {
        let mut s = spec("opal", "/opal");
        s.ingress = Some(WebhookIngress {
            host: "hooks.example.com".into(),
            class_name: Some("nginx".into()),
            tls_secret_name: Some("hooks-tls".into()),
            annotations: None,
        });
        let valid = validate("opal", &s).expect("valid");
        assert_eq!(valid.ingress, s.ingress);

        s.ingress = Some(WebhookIngress {
            host: "*.example.com".into(),
            class_name: Some("Nginx".into()),
            tls_secret_name: Some("tls_secret".into()),
            annotations: None,
        });
        let err = validate("opal", &s).expect_err("invalid");
        assert!(err.contains("wildcard"), "{err}");
        assert!(err.contains("spec.ingress.className"), "{err}");
        assert!(err.contains("spec.ingress.tlsSecretName"), "{err}");

        s.ingress = Some(WebhookIngress {
            host: "Hooks.Example.com:443".into(),
            class_name: None,
            tls_secret_name: None,
            annotations: None,
        });
        let err = validate("opal", &s).expect_err("invalid");
        assert!(err.contains("spec.ingress.host"), "{err}");
    }

    #[test]
    fn sidecars_forward_only_on_two_free_ports() {
        let sidecar = |port, metrics_port| {
            Some(crate::crd::SidecarSettings {
                deployment: Some("billing".into()),
                port,
                metrics_port,
            })
        };
        let forward = Some(Sinks {
            events: None,
            config_map: None,
            forward: Some(ForwardSink {
                url: "http://127.0.0.1:8080/hooks".into(),
            }),
        });
        let mut s = spec("stripe", "/stripe");
        s.sinks = forward.clone();
        s.sidecar = sidecar(None, None);
        let valid = validate("stripe", &s).expect("valid");
        assert!(!valid.events, "a sidecar records no Events by default");
        assert_eq!(
            valid.sidecar,
            Some(ValidSidecar {
                deployment: Some("billing".into()),
                port: SIDECAR_PORT,
                metrics_port: SIDECAR_METRICS_PORT
            })
        );

        s.sidecar = sidecar(Some(9000), Some(9000));
        assert!(
            validate("stripe", &s)
                .unwrap_err()
                .contains("use two ports")
        );
        s.sidecar = sidecar(Some(70000), None);
        assert!(
            validate("stripe", &s)
                .unwrap_err()
                .contains("70000 is not a port")
        );

        s.sidecar = sidecar(None, None);
        s.sinks = Some(Sinks {
            events: Some(true),
            config_map: Some(ConfigMapSink {
                name: "x".into(),
                mode: None,
            }),
            forward: None,
        });
        let err = validate("stripe", &s).unwrap_err();
        assert!(err.contains("use sinks.forward only"), "{err}");
        assert!(err.contains("needs sinks.forward.url"), "{err}");
    }
}
