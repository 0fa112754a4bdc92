//! What two Webhooks of a namespace cannot both have: a path in one pool, a host and path
//! of an Ingress, a sink ConfigMap (it belongs to one Webhook: another's deliveries must
//! never change it), and the singleton rules of the senders, from their documentation
//! (Opal allows one webhook per organization, Membrane one per event type). The older
//! Webhook keeps its claim; a newer one that overlaps is in conflict. Pure.

use hookwarden_api::config::Provider;

use crate::crd::Webhook;
use crate::webhook::validate::{ValidSpec, validate};

/// Why a Webhook cannot run: an older Webhook holds the same claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The older Webhook's name.
    pub other: String,
    /// A message for the status condition.
    pub message: String,
}

/// Finds the Webhook that `me` (already validated as `spec`) conflicts with, among the
/// Webhooks in `others` (any namespace; `me` itself may be among them).
pub fn find_conflict<'a>(
    me: &Webhook,
    spec: &ValidSpec,
    others: impl IntoIterator<Item = &'a Webhook>,
) -> Option<Conflict> {
    let my_key = age_key(me);
    let my_pools = me.pools();
    let mut winners: Vec<(AgeKey, Conflict)> = others
        .into_iter()
        .filter(|o| o.metadata.namespace == me.metadata.namespace)
        .filter(|o| o.metadata.uid != me.metadata.uid)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .filter(|o| age_key(o) < my_key)
        .filter_map(|o| {
            let name = o.metadata.name.clone().unwrap_or_default();
            // An invalid Webhook runs no receiver, so it claims nothing.
            let theirs = validate(&name, &o.spec).ok()?;
            let message = overlap((spec, &my_pools), (&theirs, &o.pools()), &name)?;
            Some((
                age_key(o),
                Conflict {
                    other: name,
                    message,
                },
            ))
        })
        .collect();
    winners.sort_by(|a, b| a.0.cmp(&b.0));
    winners.into_iter().next().map(|(_, c)| c)
}

fn overlap(
    (mine, my_pools): (&ValidSpec, &[&str]),
    (theirs, their_pools): (&ValidSpec, &[&str]),
    their_name: &str,
) -> Option<String> {
    if mine.path == theirs.path
        && let Some(pool) = my_pools.iter().find(|p| their_pools.contains(p))
    {
        return Some(format!(
            "Webhook {their_name:?} already takes path {} in ReceiverPool {pool:?}; \
             choose another spec.path",
            mine.path
        ));
    }
    if let (Some(a), Some(b)) = (&mine.ingress, &theirs.ingress)
        && a.host == b.host
        && mine.path == theirs.path
    {
        return Some(format!(
            "Webhook {their_name:?} already exposes {}{} through its Ingress; choose \
             another spec.path or host",
            a.host, mine.path
        ));
    }
    if let (Some(a), Some(b)) = (&mine.config_map, &theirs.config_map)
        && a.name == b.name
    {
        return Some(format!(
            "Webhook {their_name:?} already records into ConfigMap {:?}; a sink ConfigMap \
             belongs to one Webhook: name another in spec.sinks.configMap.name",
            a.name
        ));
    }
    match (mine.provider, theirs.provider) {
        (Provider::Opal, Provider::Opal) => Some(format!(
            "Webhook {their_name:?} already receives Opal's webhook in this namespace; \
             Opal sends one webhook per organization. Delete one of the two"
        )),
        (Provider::Membrane, Provider::Membrane) => {
            let theirs_claimed = theirs.claimed_event_types();
            let shared: Vec<&str> = mine
                .claimed_event_types()
                .into_iter()
                .filter(|t| theirs_claimed.contains(t))
                .collect();
            (!shared.is_empty()).then(|| {
                format!(
                    "Webhook {their_name:?} already receives Membrane event type(s) {} in this \
                     namespace; Membrane sends one webhook per event type. Narrow spec.eventTypes \
                     or delete one of the two",
                    shared.join(", ")
                )
            })
        }
        _ => None,
    }
}

/// Older first: creation time, then name, so that the order is total and stable.
type AgeKey = (Option<k8s_openapi::jiff::Timestamp>, String);

fn age_key(w: &Webhook) -> AgeKey {
    (
        w.metadata.creation_timestamp.as_ref().map(|t| t.0),
        w.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WebhookSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn wh(name: &str, provider: &str, types: &[&str], created: i64) -> Webhook {
        let mut w = Webhook::new(
            name,
            WebhookSpec {
                path: format!("/{name}"),
                provider: provider.into(),
                event_types: types.iter().map(|s| s.to_string()).collect(),
                ..WebhookSpec::default()
            },
        );
        w.metadata.namespace = Some("ns".into());
        w.metadata.uid = Some(format!("uid-{name}"));
        w.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + created).unwrap(),
        ));
        w
    }

    fn conflict_of(me: &Webhook, all: &[Webhook]) -> Option<Conflict> {
        let spec = validate(me.metadata.name.as_deref().unwrap(), &me.spec).unwrap();
        find_conflict(me, &spec, all)
    }

    #[test]
    fn second_opal_conflicts_first_does_not() {
        let a = wh("a", "opal", &[], 1);
        let b = wh("b", "opal", &[], 2);
        let all = [a.clone(), b.clone()];
        assert_eq!(conflict_of(&a, &all), None);
        let c = conflict_of(&b, &all).unwrap();
        assert_eq!(c.other, "a");
        assert!(c.message.contains("one webhook per organization"));
    }

    #[test]
    fn same_second_is_broken_by_name() {
        let a = wh("a", "opal", &[], 1);
        let b = wh("b", "opal", &[], 1);
        let all = [b.clone(), a.clone()];
        assert_eq!(conflict_of(&a, &all), None);
        assert_eq!(conflict_of(&b, &all).unwrap().other, "a");
    }

    #[test]
    fn membrane_conflicts_only_on_shared_event_types() {
        let a = wh("a", "membrane", &["org-created"], 1);
        let b = wh("b", "membrane", &["user-invited-to-org"], 2);
        let c = wh("c", "membrane", &[], 3);
        let all = [a.clone(), b.clone(), c.clone()];
        assert_eq!(conflict_of(&b, &all), None);
        let conflict = conflict_of(&c, &all).unwrap();
        assert_eq!(conflict.other, "a");
        assert!(
            conflict.message.contains("org-created"),
            "{}",
            conflict.message
        );
    }

    /// The attack of issue "Trust inside a namespace": a generic-hmac Webhook that names
    /// the sink of a Membrane Webhook, to write its own data into it.
    #[test]
    fn a_sink_configmap_belongs_to_the_older_webhook() {
        use crate::crd::{ConfigMapSink, Sinks};
        let sink = |w: &mut Webhook, name: &str| {
            w.spec.sinks = Some(Sinks {
                config_map: Some(ConfigMapSink {
                    name: name.into(),
                    mode: None,
                }),
                ..Sinks::default()
            })
        };
        let mut victim = wh("victim", "membrane", &[], 1);
        sink(&mut victim, "victim-orgs");
        let mut attacker = wh("attacker", "github", &[], 2);
        sink(&mut attacker, "victim-orgs");
        let mut elsewhere = wh("elsewhere", "github", &[], 3);
        sink(&mut elsewhere, "elsewhere-state");
        let all = [victim.clone(), attacker.clone(), elsewhere.clone()];
        assert_eq!(conflict_of(&victim, &all), None);
        assert_eq!(conflict_of(&elsewhere, &all), None);
        let c = conflict_of(&attacker, &all).unwrap();
        assert_eq!(c.other, "victim");
        assert!(
            c.message.contains("ConfigMap \"victim-orgs\""),
            "{}",
            c.message
        );
    }

    #[test]
    fn other_namespaces_deleted_and_invalid_webhooks_do_not_count() {
        let mut a = wh("a", "opal", &[], 1);
        a.metadata.namespace = Some("elsewhere".into());
        let mut d = wh("d", "opal", &[], 2);
        d.metadata.deletion_timestamp = d.metadata.creation_timestamp.clone();
        let mut i = wh("i", "opal", &[], 3);
        i.spec.path = "bad".into();
        let me = wh("me", "opal", &[], 4);
        assert_eq!(conflict_of(&me, &[a, d, i, me.clone()]), None);
    }

    #[test]
    fn other_providers_never_conflict() {
        let a = wh("a", "github", &[], 1);
        let b = wh("b", "github", &[], 2);
        assert_eq!(conflict_of(&b, &[a, b.clone()]), None);
        let o = wh("o", "opal", &[], 1);
        let m = wh("m", "membrane", &[], 2);
        assert_eq!(conflict_of(&m, &[o, m.clone()]), None);
    }

    #[test]
    fn two_webhooks_of_a_pool_on_one_path_conflict_the_newer_loses() {
        let pooled = |name: &str, pool: &str, path: &str, created: i64| {
            let mut w = wh(name, "github", &[], created);
            w.spec.pool = Some(pool.into());
            w.spec.path = path.into();
            w
        };
        let a = pooled("a", "default", "/hooks", 1);
        let b = pooled("b", "default", "/hooks", 2);
        let other_pool = pooled("c", "other", "/hooks", 3);
        let other_path = pooled("d", "default", "/d", 4);
        let all = [a.clone(), b.clone(), other_pool.clone(), other_path.clone()];
        assert_eq!(conflict_of(&a, &all), None);
        let c = conflict_of(&b, &all).unwrap();
        assert_eq!(c.other, "a");
        assert!(
            c.message
                .contains("path /hooks in ReceiverPool \"default\""),
            "{}",
            c.message
        );
        assert_eq!(conflict_of(&other_pool, &all), None);
        assert_eq!(conflict_of(&other_path, &all), None);
        // Once the older one goes, the newer one is served.
        assert_eq!(conflict_of(&b, std::slice::from_ref(&b)), None);
    }

    #[test]
    fn a_webhook_leaving_a_pool_keeps_its_path_there_until_it_is_gone() {
        use hookwarden_api::webhook::WebhookStatus;
        // `a` moves out of `default` to a receiver of its own; the pool still serves it.
        let mut a = wh("a", "github", &[], 1);
        a.spec.path = "/hooks".into();
        a.spec.receiver = Some(Default::default());
        a.status = Some(WebhookStatus {
            pool: Some("default".into()),
            ..WebhookStatus::default()
        });
        let mut b = wh("b", "github", &[], 2);
        b.spec.path = "/hooks".into();
        b.spec.pool = Some("default".into());
        let c = conflict_of(&b, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(c.other, "a");
        // Once the pool let it go, the path is free.
        a.status = None;
        assert_eq!(conflict_of(&b, &[a, b.clone()]), None);
    }
}
