//! Guardrails the platform team sets for everyone who may create a Webhook or a
//! ReceiverPool (the chart's `guardrails` values, cluster-wide): which receiver images may
//! run, which Ingress annotations pass through, and which hosts a `forward` sink may reach
//! from a shared pool. A Webhook or pool outside them is not acted on (`Ready=False`,
//! `NotAllowed`, naming the field and the setting). Pure.
//!
//! A pattern is exact, or ends in `*` to allow every value with that prefix
//! (`registry.example.com/hookwarden/*`, `cert-manager.io/*`); for hosts, `*.example.com`
//! allows every name under `example.com`.

use crate::crd::WebhookSpec;
use crate::webhook::validate::ValidSpec;

/// The guardrails in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guardrails {
    /// Receiver images a Webhook's `spec.receiver.image` or a pool's `spec.image` may name,
    /// besides the operator's own receiver image.
    pub images: Vec<String>,
    /// Ingress annotations (keys) a Webhook's `spec.ingress.annotations` may set.
    pub ingress_annotations: Vec<String>,
    /// Hosts a `forward` sink of a pooled Webhook may reach besides the Services of the
    /// Webhook's own namespace.
    pub forward_hosts: Vec<String>,
}

/// Whether `value` matches `pattern` (exact, or a prefix ending in `*`).
fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

/// Whether `host` matches a host pattern: exact, or `*.domain` for names under `domain`.
fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// The host of an `http(s)://` URL, lowercased, without port or user information.
fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => host_port.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.trim_end_matches('.').to_ascii_lowercase())
}

impl Guardrails {
    /// `image` (from `field`) against the allowed images; `default` (the operator's own
    /// receiver image) is always allowed.
    pub fn image(&self, field: &str, image: &str, default: &str) -> Result<(), String> {
        if image == default || self.images.iter().any(|p| matches(p, image)) {
            return Ok(());
        }
        Err(format!(
            "{field} {image:?} is not an allowed receiver image; the platform team allows \
             {} (chart value guardrails.receiverImages)",
            listed(std::iter::once(default).chain(self.images.iter().map(String::as_str)))
        ))
    }

    /// The keys of `annotations` (from `field`) against the allowed Ingress annotations.
    pub fn ingress_annotations<'a>(
        &self,
        field: &str,
        annotations: impl IntoIterator<Item = &'a String>,
    ) -> Result<(), String> {
        let refused: Vec<&str> = annotations
            .into_iter()
            .filter(|key| !self.ingress_annotations.iter().any(|p| matches(p, key)))
            .map(String::as_str)
            .collect();
        if refused.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{field} sets {} which the platform team does not allow; allowed: {} (chart \
             value guardrails.ingressAnnotations)",
            listed(refused.into_iter()),
            listed(self.ingress_annotations.iter().map(String::as_str))
        ))
    }

    /// A pooled Webhook's `forward` URL (in `namespace`): a Service of that namespace
    /// (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`; another cluster domain
    /// is allowed through `forward_hosts`), or an allowed host.
    pub fn forward(&self, namespace: &str, url: &str) -> Result<(), String> {
        let Some(host) = host_of(url) else {
            return Err(format!(
                "spec.sinks.forward.url {url:?} has no host the guardrails can check"
            ));
        };
        let labels: Vec<&str> = host.split('.').collect();
        let service = labels[0];
        let dns_label = !service.is_empty()
            && service != "localhost"
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let own_service = dns_label
            && match labels.as_slice() {
                [_] => true,
                [_, ns] | [_, ns, "svc"] | [_, ns, "svc", "cluster", "local"] => *ns == namespace,
                _ => false,
            };
        if own_service || self.forward_hosts.iter().any(|p| host_matches(p, &host)) {
            return Ok(());
        }
        Err(format!(
            "spec.sinks.forward.url reaches {host:?}, which a Webhook of a shared pool may not: \
             forward to a Service of namespace {namespace:?}, or ask the platform team to \
             allow the host (chart value guardrails.forwardHosts)"
        ))
    }
}

impl Guardrails {
    /// A Webhook (`spec`, validated as `valid`) in `namespace` against the guardrails;
    /// `default_image` is the operator's receiver image. The first problem, naming its field.
    pub fn webhook(
        &self,
        spec: &WebhookSpec,
        valid: &ValidSpec,
        namespace: &str,
        default_image: &str,
    ) -> Result<(), String> {
        if let Some(image) = spec.receiver.as_ref().and_then(|r| r.image.as_deref()) {
            self.image("spec.receiver.image", image, default_image)?;
        }
        if let Some(annotations) = valid.ingress.as_ref().and_then(|i| i.annotations.as_ref()) {
            self.ingress_annotations("spec.ingress.annotations", annotations.keys())?;
        }
        if let (Some(_), Some(url)) = (&valid.pool, &valid.forward) {
            self.forward(namespace, url)?;
        }
        Ok(())
    }
}

fn listed<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let all: Vec<String> = items.map(|i| format!("{i:?}")).collect();
    match all.is_empty() {
        true => "none".into(),
        false => all.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "hookwarden-receiver:dev";

    #[test]
    fn only_the_operators_image_by_default() {
        let g = Guardrails::default();
        assert!(g.image("spec.receiver.image", DEFAULT, DEFAULT).is_ok());
        let err = g
            .image("spec.receiver.image", "attacker.example/miner:1", DEFAULT)
            .unwrap_err();
        assert!(
            err.contains("\"attacker.example/miner:1\" is not an allowed"),
            "{err}"
        );
        assert!(err.contains("guardrails.receiverImages"), "{err}");
        let g = Guardrails {
            images: vec!["registry.example.com/hookwarden/*".into()],
            ..Guardrails::default()
        };
        assert!(
            g.image(
                "spec.image",
                "registry.example.com/hookwarden/receiver:2",
                DEFAULT
            )
            .is_ok()
        );
        assert!(
            g.image("spec.image", "registry.example.com/other:2", DEFAULT)
                .is_err()
        );
    }

    #[test]
    fn ingress_annotations_outside_the_list_are_named() {
        let g = Guardrails {
            ingress_annotations: vec![
                "cert-manager.io/cluster-issuer".into(),
                "external-dns.alpha.kubernetes.io/*".into(),
            ],
            ..Guardrails::default()
        };
        let ok = [
            "cert-manager.io/cluster-issuer".to_string(),
            "external-dns.alpha.kubernetes.io/ttl".to_string(),
        ];
        assert!(
            g.ingress_annotations("spec.ingress.annotations", &ok)
                .is_ok()
        );
        // The snippet annotations of ingress-nginx run configuration of the attacker's choice.
        let snippet = ["nginx.ingress.kubernetes.io/server-snippet".to_string()];
        let err = g
            .ingress_annotations("spec.ingress.annotations", &snippet)
            .unwrap_err();
        assert!(err.contains("server-snippet"), "{err}");
        assert!(Guardrails::default().ingress_annotations("a", &ok).is_err());
    }

    #[test]
    fn a_pooled_forward_reaches_services_of_its_own_namespace() {
        let g = Guardrails::default();
        for url in [
            "http://app:8080/hooks",
            "http://app.team-a/hooks",
            "http://app.team-a.svc:80/x",
            "https://app.team-a.svc.cluster.local/x",
            "http://user@APP.team-a.svc.cluster.local./x",
        ] {
            assert!(g.forward("team-a", url).is_ok(), "{url}");
        }
        for url in [
            "http://app.team-b.svc/x",
            "http://kubernetes.default.svc/api",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00::1]:80/",
            "http://localhost:9090/metrics",
            "https://hooks.example.com/x",
            "http://app.team-a.example.com/x",
            "http://app.team-a.svc.evil.example/x",
        ] {
            let err = g.forward("team-a", url).unwrap_err();
            assert!(err.contains("guardrails.forwardHosts"), "{url}: {err}");
        }
        let g = Guardrails {
            forward_hosts: vec!["*.example.com".into(), "10.0.0.7".into()],
            ..Guardrails::default()
        };
        assert!(g.forward("team-a", "https://hooks.example.com/x").is_ok());
        assert!(g.forward("team-a", "http://10.0.0.7:9000/").is_ok());
        assert!(g.forward("team-a", "https://example.com/x").is_err());
        assert!(g.forward("team-a", "https://evilexample.com/x").is_err());
    }
}
