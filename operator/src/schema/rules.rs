//! The `Webhook` CRD's CEL validation rules (`x-kubernetes-validations`): what `validate`
//! checks and CEL can express, so that `kubectl apply` of an invalid Webhook fails with a
//! message naming the field and the fix, instead of a green sync and `Ready=False,
//! InvalidSpec` afterwards. Pure: a table and the schema transform that places it.
//!
//! The operator keeps its own checks (`validate`): for Webhooks stored before these rules
//! existed, and as defence in depth. What CEL cannot know (whether a Secret exists, a
//! conflict with another Webhook) stays in status.
//!
//! Every string or list a rule reads has a `maxLength`/`maxItems` in the schema, so that the
//! API server's cost estimate stays within its budget (a CRD over it is refused at apply).

use serde_json::{Value, json};

use crate::webhook::validate::{MEMBRANE_EVENT_TYPES, OPAL_EVENT_TYPES};

/// One rule: where in the schema (a dotted path from the root; `[]` steps into a list's
/// items), the CEL expression, and the message. `on_create` rules see `oldSelf` as an
/// optional (`optionalOldSelf`) and pass on updates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub at: &'static str,
    pub rule: String,
    pub message: String,
    pub on_create: bool,
}

fn rule(at: &'static str, rule: &str, message: &str) -> Rule {
    Rule {
        at,
        rule: rule.into(),
        message: message.into(),
        on_create: false,
    }
}

/// A rule on the whole object, checked when it is created only. The API server re-checks a
/// rule on every update unless the node it sits on is unchanged, and the root always
/// changes (status, resourceVersion): a root rule checked on updates would refuse every
/// status write, and every label, to a Webhook stored before the rule existed. The name a
/// root rule reads cannot change after creation anyway.
fn on_create(rule: &str, message: &str) -> Rule {
    Rule {
        at: "",
        rule: format!("oldSelf.hasValue() || ({rule})"),
        message: message.into(),
        on_create: true,
    }
}

/// A DNS-1123 subdomain, as `names::check_dns_subdomain` (length by the schema's maxLength).
const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$";
/// An HTTP header name (RFC 9110 token), as the receiver's `HeaderName` parsing.
const HEADER_TOKEN: &str = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+";
/// A path's allowed characters, as `validate::check_path`.
const PATH_CHARS: &str = r"^[A-Za-z0-9._~!$&'()+,;=:@%/-]*$";

/// `'...'` as a CEL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn name_rule(at: &'static str, field: &str) -> Rule {
    rule(
        at,
        &format!("self.matches({})", lit(DNS_SUBDOMAIN)),
        &format!(
            "{field} must be a valid name (lowercase letters, digits, '-' and '.', at most 253)"
        ),
    )
}

fn event_types_rule(provider: &str, known: &[&str]) -> Rule {
    let list: Vec<String> = known.iter().map(|t| lit(t)).collect();
    rule(
        "spec",
        &format!(
            "self.provider != {} || !has(self.eventTypes) || self.eventTypes.all(t, t in [{}])",
            lit(provider),
            list.join(", ")
        ),
        &format!(
            "spec.eventTypes: {provider} sends only {}",
            known.join(", ")
        ),
    )
}

/// Every rule of the CRD.
pub fn all() -> Vec<Rule> {
    let fix = "use an absolute path such as /opal";
    let header = |field: &str| {
        format!(
            "!has(self.{field}) || self.{field}.matches({})",
            lit(&format!("^{HEADER_TOKEN}$"))
        )
    };
    vec![
        // The Webhook's name becomes the names of its children.
        on_create(
            "self.metadata.name.size() <= 47 && self.metadata.name.matches('^[a-z][-a-z0-9]*$')",
            "metadata.name must start with a letter, hold only lowercase letters, digits and '-', \
             and be at most 47 characters, so that it can name the receiver's Service \
             (<name>-receiver) and config (<name>-receiver-config)",
        ),
        // (On creation only, as a root rule; a later change to this name is left to the
        // operator's InvalidSpec.)
        on_create(
            "!has(self.spec.sinks) || !has(self.spec.sinks.configMap) || \
             self.spec.sinks.configMap.name != self.metadata.name + '-receiver-config'",
            "spec.sinks.configMap.name is the receiver's own config (<name>-receiver-config); \
             choose another name",
        ),
        // spec.path
        rule(
            "spec.path",
            "self.startsWith('/')",
            &format!("spec.path must start with '/'; {fix}"),
        ),
        rule(
            "spec.path",
            &format!("self.matches({})", lit(PATH_CHARS)),
            &format!("spec.path may hold letters, digits and -._~!$&'()+,;=:@%/ only; {fix}"),
        ),
        rule(
            "spec.path",
            r"!self.contains('//') && !self.matches('(^|/)[.][.]?(/|$)')",
            &format!("spec.path has an empty, '.' or '..' segment; {fix}"),
        ),
        rule(
            "spec.path",
            "!(self in ['/', '/healthz', '/readyz', '/metrics'])",
            &format!("spec.path /, /healthz, /readyz and /metrics are the receiver's own; {fix}"),
        ),
        // spec.eventTypes
        rule(
            "spec.eventTypes[]",
            r"self.matches('\\S')",
            "spec.eventTypes must not contain an empty entry",
        ),
        rule(
            "spec.eventTypes",
            "self.all(t, self.exists_one(u, u == t))",
            "spec.eventTypes lists an event type twice; list each once",
        ),
        event_types_rule("opal", &OPAL_EVENT_TYPES),
        event_types_rule("membrane", &MEMBRANE_EVENT_TYPES),
        // Secrets
        name_rule("spec.secretRef.name", "spec.secretRef.name"),
        rule(
            "spec.secretRef.key",
            r"self.matches('\\S')",
            "spec.secretRef.key is empty; name the key of the Secret that holds the signing secret",
        ),
        rule(
            "spec.secretRef.key",
            r"self.matches('^[-._a-zA-Z0-9]*$')",
            "spec.secretRef.key must be a valid Secret key (letters, digits, '-', '_', '.')",
        ),
        name_rule(
            "spec.additionalSecretRefs[].name",
            "spec.additionalSecretRefs[].name",
        ),
        rule(
            "spec.additionalSecretRefs[].key",
            r"self.matches('^[-._a-zA-Z0-9]+$')",
            "spec.additionalSecretRefs[].key must be a valid, non-empty Secret key (letters, \
             digits, '-', '_', '.')",
        ),
        rule(
            "spec",
            "!has(self.additionalSecretRefs) || self.additionalSecretRefs.all(r, \
             self.additionalSecretRefs.exists_one(s, s.name == r.name && s.key == r.key) && \
             (!has(self.secretRef) || r.name != self.secretRef.name || r.key != self.secretRef.key))",
            "spec.additionalSecretRefs names a Secret key twice, or the one of spec.secretRef; \
             remove the repeat",
        ),
        // The generic HMAC layout
        rule(
            "spec",
            "self.provider != 'generic-hmac' || has(self.genericHmac)",
            "provider generic-hmac needs spec.genericHmac (header, algorithm, encoding)",
        ),
        rule(
            "spec",
            "!has(self.genericHmac) || self.provider == 'generic-hmac'",
            "spec.genericHmac applies to provider generic-hmac only; remove it",
        ),
        rule(
            "spec.genericHmac",
            &header("header"),
            "spec.genericHmac.header must be a header name, e.g. X-Signature",
        ),
        rule(
            "spec.genericHmac",
            &header("timestampHeader"),
            "spec.genericHmac.timestampHeader must be a header name, e.g. X-Timestamp",
        ),
        rule(
            "spec.genericHmac",
            &format!(
                "!has(self.template) || self.template.matches({})",
                lit(&format!(
                    r"^([^{{]|\{{body\}}|\{{timestamp\}}|\{{header:{HEADER_TOKEN}\}})*$"
                ))
            ),
            "spec.genericHmac.template has an unknown placeholder or a { without its }; use \
             {body}, {timestamp} or {header:Name}",
        ),
        rule(
            "spec.genericHmac",
            "!has(self.template) || self.template.contains('{body}')",
            "spec.genericHmac.template does not sign {body}; a signature must cover the body",
        ),
        rule(
            "spec.genericHmac",
            "!has(self.template) || !self.template.contains('{timestamp}') || has(self.timestampHeader)",
            "spec.genericHmac.template uses {timestamp}; set spec.genericHmac.timestampHeader",
        ),
        rule(
            "spec.genericHmac",
            "!has(self.timestampHeader) || (has(self.template) && self.template.contains('{timestamp}'))",
            "spec.genericHmac.timestampHeader is not signed: put {timestamp} in \
             spec.genericHmac.template (e.g. {timestamp}.{body}), or remove timestampHeader",
        ),
        // Sinks
        name_rule("spec.sinks.configMap.name", "spec.sinks.configMap.name"),
        rule(
            "spec",
            "!has(self.sinks) || !has(self.sinks.configMap) || !has(self.sinks.configMap.mode) || \
             self.sinks.configMap.mode != 'state' || self.provider in ['opal', 'membrane']",
            "spec.sinks.configMap.mode \"state\" needs provider opal or membrane; use \"latest\" \
             or \"log\"",
        ),
        rule(
            "spec.sinks.forward.url",
            r"self.matches('^https?://\\S*$')",
            "spec.sinks.forward.url must be an http:// or https:// URL",
        ),
        rule(
            "spec",
            "has(self.sidecar) || !has(self.sinks) || !has(self.sinks.events) || self.sinks.events \
             || has(self.sinks.configMap) || has(self.sinks.forward)",
            "spec.sinks records deliveries nowhere; enable events, or set configMap or forward",
        ),
        // The sidecar
        name_rule("spec.sidecar.deployment", "spec.sidecar.deployment"),
        rule(
            "spec.sidecar",
            "(has(self.port) ? self.port : 8090) != (has(self.metricsPort) ? self.metricsPort : 8091)",
            "spec.sidecar.port and spec.sidecar.metricsPort must differ",
        ),
        rule(
            "spec",
            "!has(self.sidecar) || !has(self.sinks) || (!has(self.sinks.configMap) && \
             !(has(self.sinks.events) && self.sinks.events))",
            "spec.sidecar runs the receiver under the application's ServiceAccount, which \
             hookwarden does not grant rights to: use sinks.forward only (remove \
             sinks.configMap, set sinks.events to false)",
        ),
        rule(
            "spec",
            "!has(self.sidecar) || (has(self.sinks) && has(self.sinks.forward))",
            "spec.sidecar needs sinks.forward.url, the application's address in the pod (e.g. \
             http://127.0.0.1:8080/webhooks)",
        ),
        // The pool
        rule(
            "spec",
            "!has(self.pool) || (!has(self.receiver) && !has(self.sidecar))",
            "spec.pool, spec.receiver and spec.sidecar each place the receiver; keep one",
        ),
        rule(
            "spec.pool",
            "self.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
            "spec.pool must be a DNS label (lower-case letters, digits and '-', starting with \
             a letter)",
        ),
        // The Ingress
        rule(
            "spec.ingress.host",
            "!self.startsWith('*.')",
            "spec.ingress.host is a wildcard; senders need one concrete host name",
        ),
        name_rule("spec.ingress.host", "spec.ingress.host"),
        name_rule("spec.ingress.className", "spec.ingress.className"),
        name_rule("spec.ingress.tlsSecretName", "spec.ingress.tlsSecretName"),
        // The Gateway API route
        rule(
            "spec",
            "!(has(self.ingress) && has(self.gateway))",
            "spec.ingress and spec.gateway both expose the receiver; keep one",
        ),
        rule(
            "spec.gateway.hostname",
            "!self.startsWith('*.')",
            "spec.gateway.hostname is a wildcard; senders need one concrete host name",
        ),
        name_rule("spec.gateway.hostname", "spec.gateway.hostname"),
        name_rule(
            "spec.gateway.parentRefs[].name",
            "spec.gateway.parentRefs[].name",
        ),
        rule(
            "spec.gateway.parentRefs[].namespace",
            "self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",
            "spec.gateway.parentRefs[].namespace must be a namespace name",
        ),
        name_rule(
            "spec.gateway.parentRefs[].sectionName",
            "spec.gateway.parentRefs[].sectionName",
        ),
    ]
}

/// Places every rule into a CRD version's `openAPIV3Schema` (as JSON). Fails, naming the
/// rule, when its place is not in the schema, so that a renamed field cannot silently drop
/// its rule.
pub fn apply(schema: &mut Value, rules: &[Rule]) -> Result<(), String> {
    for r in rules {
        let node = locate(schema, r.at)
            .ok_or_else(|| format!("the CEL rule for {:?} has no place in the schema", r.at))?;
        let mut entry = json!({"rule": r.rule, "message": r.message});
        if r.on_create {
            entry["optionalOldSelf"] = json!(true);
        }
        match node.get_mut("x-kubernetes-validations") {
            Some(Value::Array(list)) => list.push(entry),
            _ => {
                node["x-kubernetes-validations"] = Value::Array(vec![entry]);
            }
        }
    }
    Ok(())
}

/// The schema node at a dotted path (`spec.eventTypes[]`).
fn locate<'a>(schema: &'a mut Value, at: &str) -> Option<&'a mut Value> {
    let mut node = schema;
    for step in at.split('.').filter(|s| !s.is_empty()) {
        let (name, items) = match step.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (step, false),
        };
        node = node.get_mut("properties")?.get_mut(name)?;
        if items {
            node = node.get_mut("items")?;
        }
    }
    node.is_object().then_some(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_is_placed_where_it_says() {
        let mut schema = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "path": {"type": "string"},
                "eventTypes": {"type": "array", "items": {"type": "string"}}
            }}
        }});
        let rules = [
            rule("spec.path", "self.startsWith('/')", "m1"),
            rule("spec.eventTypes[]", "self != ''", "m2"),
            rule("spec.path", "self != '/'", "m3"),
            rule("", "has(self.spec)", "m4"),
        ];
        apply(&mut schema, &rules).unwrap();
        let path = &schema["properties"]["spec"]["properties"]["path"]["x-kubernetes-validations"];
        assert_eq!(path[0]["message"], "m1");
        assert_eq!(path[1]["rule"], "self != '/'");
        let item = &schema["properties"]["spec"]["properties"]["eventTypes"]["items"];
        assert_eq!(item["x-kubernetes-validations"][0]["message"], "m2");
        assert_eq!(
            schema["x-kubernetes-validations"][0]["rule"],
            "has(self.spec)"
        );
    }

    #[test]
    fn a_rule_without_a_place_is_an_error() {
        let mut schema = json!({"type": "object", "properties": {"spec": {"type": "object"}}});
        let err = apply(&mut schema, &[rule("spec.nope", "true", "m")]).unwrap_err();
        assert!(err.contains("spec.nope"), "{err}");
    }

    #[test]
    fn root_rules_are_checked_on_creation_only() {
        let mut schema = json!({"type": "object", "properties": {}});
        apply(&mut schema, &[on_create("self.x", "m")]).unwrap();
        let placed = &schema["x-kubernetes-validations"][0];
        assert_eq!(placed["rule"], "oldSelf.hasValue() || (self.x)");
        assert_eq!(placed["optionalOldSelf"], true);
        for r in all().iter().filter(|r| r.at.is_empty()) {
            assert!(
                r.on_create && r.rule.starts_with("oldSelf.hasValue() || "),
                "{r:?}"
            );
        }
    }

    #[test]
    fn cel_literals_escape_quotes_and_backslashes() {
        assert_eq!(lit(r"a'b\c"), r"'a\'b\\c'");
    }

    #[test]
    fn every_message_names_a_field() {
        for r in all() {
            assert!(
                r.message.starts_with("spec.")
                    || r.message.starts_with("metadata.name")
                    || r.message.starts_with("provider "),
                "{r:?}"
            );
        }
    }
}
