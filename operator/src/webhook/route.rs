//! `spec.gateway`: the Gateway API HTTPRoute that exposes a receiver, the URL senders get,
//! and what the route's status says about it. Pure: JSON in, JSON and conditions out.
//!
//! The Gateway API is not part of Kubernetes (its CRDs are installed separately) and
//! k8s-openapi has no types for it, so the route is a `DynamicObject` of
//! `gateway.networking.k8s.io/v1`; only the standard-channel fields are used.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{ApiResource, DynamicObject, ObjectMeta};
use serde_json::{Value, json};

use crate::crd::{WebhookGateway, WebhookStatus};
use crate::webhook::validate::ValidSpec;

/// The Webhook condition that tells whether a Gateway controller took the route.
pub const ROUTE_ACCEPTED: &str = "RouteAccepted";
const GROUP: &str = "gateway.networking.k8s.io";

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: format!("{GROUP}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// `HTTPRoute`.
pub fn http_route_resource() -> ApiResource {
    resource("HTTPRoute", "httproutes")
}

/// `Gateway`, read for its listeners' protocol.
pub fn gateway_resource() -> ApiResource {
    resource("Gateway", "gateways")
}

/// The route sending exactly `spec.path` on the hostname to the receiver's Service, with
/// `metadata` (name, namespace, labels, owner) as the other children's.
pub fn http_route(
    metadata: ObjectMeta,
    spec: &ValidSpec,
    set: &WebhookGateway,
    service: &str,
) -> DynamicObject {
    let parents: Vec<Value> = set
        .parent_refs
        .iter()
        .map(|p| {
            let mut r = json!({"group": GROUP, "kind": "Gateway", "name": p.name});
            if let Some(ns) = &p.namespace {
                r["namespace"] = json!(ns);
            }
            if let Some(section) = &p.section_name {
                r["sectionName"] = json!(section);
            }
            r
        })
        .collect();
    let mut route = DynamicObject::new("", &http_route_resource());
    route.metadata = metadata;
    route.data = json!({"spec": {
        "parentRefs": parents,
        "hostnames": [set.hostname],
        "rules": [{
            "matches": [{"path": {"type": "Exact", "value": spec.path}}],
            "backendRefs": [{"group": "", "kind": "Service", "name": service, "port": 80}],
        }],
    }});
    route
}

/// The URL to give senders: https when a listener the route attaches to on `gateway` (the
/// first parent's) is HTTPS, http otherwise (or when the Gateway cannot be read).
pub fn external_url(set: &WebhookGateway, path: &str, gateway: Option<&Value>) -> String {
    let section = set
        .parent_refs
        .first()
        .and_then(|p| p.section_name.as_deref());
    let https = gateway
        .and_then(|g| g.pointer("/spec/listeners"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| section.is_none_or(|s| l.get("name").and_then(Value::as_str) == Some(s)))
        .filter(|l| {
            // a listener without a hostname takes every host
            l.get("hostname")
                .and_then(Value::as_str)
                .is_none_or(|h| listener_matches(h, &set.hostname))
        })
        .any(|l| l.get("protocol").and_then(Value::as_str) == Some("HTTPS"));
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{}{path}", set.hostname)
}

fn listener_matches(listener: &str, host: &str) -> bool {
    match listener.strip_prefix("*.") {
        Some(suffix) => host
            .strip_suffix(suffix)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
        None => listener == host,
    }
}

/// What became of the route in this reconciliation.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteState {
    /// Not looked at (the reconciliation stopped early): keep what status says.
    Unknown,
    /// The Webhook asks for no route.
    NoRoute,
    /// The cluster does not serve HTTPRoutes (the Gateway API CRDs are not installed).
    NotInstalled,
    /// Applied; the route as the API server returned it, status included.
    Applied(Value),
}

/// The `RouteAccepted` condition for `state`: True once every parent the route names
/// reports `Accepted` (and `ResolvedRefs` where given) for the route's current generation.
pub fn condition(
    previous: Option<&Condition>,
    state: &RouteState,
    generation: Option<i64>,
    now: Time,
) -> Option<Condition> {
    let (status, reason, message) = match state {
        RouteState::Unknown => return previous.cloned(),
        RouteState::NoRoute => return None,
        RouteState::NotInstalled => (
            "False",
            "GatewayAPINotInstalled".to_string(),
            "this cluster does not serve gateway.networking.k8s.io/v1 HTTPRoutes: install the \
             Gateway API CRDs (standard channel), or expose the receiver with spec.ingress"
                .to_string(),
        ),
        RouteState::Applied(route) => accepted(route),
    };
    let last_transition_time = crate::webhook::status::transition_time(previous, status, now);
    Some(Condition {
        type_: ROUTE_ACCEPTED.into(),
        status: status.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time,
    })
}

fn accepted(route: &Value) -> (&'static str, String, String) {
    let name = route
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let generation = route
        .pointer("/metadata/generation")
        .and_then(Value::as_i64);
    let wanted = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let reported = route
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for parent in &wanted {
        let gateway = parent.get("name").and_then(Value::as_str).unwrap_or("");
        let same = |r: &&Value| {
            let got = r.get("parentRef").unwrap_or(&Value::Null);
            got.get("name") == parent.get("name")
                && got.get("namespace") == parent.get("namespace")
                && got.get("sectionName") == parent.get("sectionName")
        };
        let Some(report) = reported.iter().find(same) else {
            return (
                "False",
                "Pending".into(),
                format!(
                    "no Gateway controller has accepted HTTPRoute {name} for Gateway {gateway} \
                     yet; check that a controller serves that Gateway's class"
                ),
            );
        };
        let conditions = report
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for kind in ["Accepted", "ResolvedRefs"] {
            let Some(c) = conditions
                .iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
            else {
                if kind == "Accepted" {
                    return (
                        "False",
                        "Pending".into(),
                        format!(
                            "the controller of Gateway {gateway} has not reported on HTTPRoute {name} yet"
                        ),
                    );
                }
                continue;
            };
            let stale = match (
                c.get("observedGeneration").and_then(Value::as_i64),
                generation,
            ) {
                (Some(seen), Some(now)) => seen < now,
                _ => false,
            };
            if stale {
                return (
                    "False",
                    "Pending".into(),
                    format!(
                        "the controller of Gateway {gateway} has not looked at the current HTTPRoute {name} yet"
                    ),
                );
            }
            if c.get("status").and_then(Value::as_str) != Some("True") {
                let reason = c.get("reason").and_then(Value::as_str).unwrap_or(kind);
                let message = c.get("message").and_then(Value::as_str).unwrap_or("");
                return (
                    "False",
                    reason.to_string(),
                    format!(
                        "Gateway {gateway} does not take HTTPRoute {name} ({kind}: {reason}): {message}"
                    ),
                );
            }
        }
    }
    (
        "True",
        "Accepted".into(),
        format!("HTTPRoute {name} is accepted by every Gateway it names"),
    )
}

/// `status` with its `RouteAccepted` condition set for `state` (or removed: no route).
pub fn with_route(
    mut status: WebhookStatus,
    state: &RouteState,
    generation: Option<i64>,
    now: Time,
) -> WebhookStatus {
    let previous = crate::webhook::status::take_condition(&mut status, ROUTE_ACCEPTED);
    status
        .conditions
        .extend(condition(previous.as_ref(), state, generation, now));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::GatewayParentRef;

    fn set(section: Option<&str>) -> WebhookGateway {
        WebhookGateway {
            parent_refs: vec![GatewayParentRef {
                name: "public".into(),
                namespace: Some("gateways".into()),
                section_name: section.map(String::from),
            }],
            hostname: "hooks.example.com".into(),
        }
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn https_only_when_an_attached_listener_is_https() {
        let gw = json!({"spec": {"listeners": [
            {"name": "http", "protocol": "HTTP", "port": 80},
            {"name": "https", "protocol": "HTTPS", "port": 443, "hostname": "*.example.com"},
            {"name": "other", "protocol": "HTTPS", "port": 8443, "hostname": "other.org"}
        ]}});
        let url = |section| external_url(&set(section), "/opal", Some(&gw));
        assert_eq!(url(None), "https://hooks.example.com/opal");
        assert_eq!(url(Some("http")), "http://hooks.example.com/opal");
        assert_eq!(url(Some("other")), "http://hooks.example.com/opal");
        assert_eq!(
            external_url(&set(None), "/opal", None),
            "http://hooks.example.com/opal"
        );
        assert!(!listener_matches("*.example.com", "example.com"));
        assert!(listener_matches("*.example.com", "a.b.example.com"));
    }

    fn route(status: Value) -> Value {
        json!({"metadata": {"name": "opal-receiver", "generation": 2},
               "spec": {"parentRefs": [{"group": GROUP, "kind": "Gateway", "name": "public", "namespace": "gateways"}]},
               "status": status})
    }

    fn state_of(status: Value) -> (String, String) {
        let c = condition(None, &RouteState::Applied(route(status)), Some(1), t(0)).unwrap();
        (c.status, c.reason)
    }

    #[test]
    fn the_condition_follows_the_routes_status() {
        let parent =
            json!({"group": GROUP, "kind": "Gateway", "name": "public", "namespace": "gateways"});
        let report = |conds: Value| json!({"parents": [{"parentRef": parent, "controllerName": "x", "conditions": conds}]});
        assert_eq!(state_of(json!({})), ("False".into(), "Pending".into()));
        assert_eq!(
            state_of(report(
                json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2},
                                   {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "observedGeneration": 2}])
            )),
            ("True".into(), "Accepted".into())
        );
        assert_eq!(
            state_of(report(
                json!([{"type": "Accepted", "status": "False", "reason": "NotAllowedByListeners", "observedGeneration": 2}])
            )),
            ("False".into(), "NotAllowedByListeners".into())
        );
        assert_eq!(
            state_of(report(
                json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 2},
                                   {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound", "observedGeneration": 2}])
            )),
            ("False".into(), "BackendNotFound".into())
        );
        // a report about an older generation of the route says nothing about this one
        assert_eq!(
            state_of(report(
                json!([{"type": "Accepted", "status": "True", "reason": "Accepted", "observedGeneration": 1}])
            )),
            ("False".into(), "Pending".into())
        );
    }

    #[test]
    fn not_installed_unknown_and_no_route() {
        let c = condition(None, &RouteState::NotInstalled, Some(1), t(0)).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "GatewayAPINotInstalled")
        );
        assert_eq!(
            condition(Some(&c), &RouteState::Unknown, Some(2), t(5)),
            Some(c.clone())
        );
        assert_eq!(
            condition(Some(&c), &RouteState::NoRoute, Some(2), t(5)),
            None
        );
        // the transition time moves only when the status does
        let again = condition(Some(&c), &RouteState::NotInstalled, Some(2), t(9)).unwrap();
        assert_eq!(again.last_transition_time, t(0));
    }

    #[test]
    fn the_route_sends_the_path_on_the_host_to_the_service() {
        let spec = crate::webhook::validate::validate(
            "opal",
            &crate::crd::WebhookSpec {
                gateway: Some(set(Some("https"))),
                path: "/opal".into(),
                provider: "opal".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let r = http_route(
            ObjectMeta::default(),
            &spec,
            &set(Some("https")),
            "opal-receiver",
        );
        assert_eq!(
            r.types.as_ref().unwrap().api_version,
            "gateway.networking.k8s.io/v1"
        );
        assert_eq!(r.types.as_ref().unwrap().kind, "HTTPRoute");
        let s = &r.data["spec"];
        assert_eq!(s["hostnames"], json!(["hooks.example.com"]));
        assert_eq!(s["parentRefs"][0]["namespace"], "gateways");
        assert_eq!(s["parentRefs"][0]["sectionName"], "https");
        assert_eq!(
            s["rules"][0]["matches"][0]["path"],
            json!({"type": "Exact", "value": "/opal"})
        );
        assert_eq!(s["rules"][0]["backendRefs"][0]["name"], "opal-receiver");
        assert_eq!(s["rules"][0]["backendRefs"][0]["port"], 80);
    }
}
