//! What wakes the controller besides the Webhooks themselves: the watches of children whose
//! changes a reconcile must see, filtered to the changes that matter.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject};
use kube::core::{PartialObjectMeta, PartialObjectMetaExt};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tracing::debug;

use crate::crd::Webhook;
use crate::runtime::names;
use crate::webhook::route;
use crate::webhook::status;

/// The HTTPRoutes the operator applied, for their status (a Gateway's controller writes it).
///
/// On a cluster without the Gateway API (a normal one) this watch fails until its CRDs
/// arrive. It backs off on its own, and its errors end here: the `Controller` pauses all
/// of its watches after an error from any one of them (one back-off over them all), so
/// passing these on would hold back every Webhook's changes for as long as the Gateway API
/// is missing, up to 30 s each.
/// What is seen goes into `store` first (metadata only: the owner references are all a
/// trigger needs, and whether a route exists all a reconcile asks).
pub fn routes(
    client: &Client,
    namespace: Option<&str>,
    managed: watcher::Config,
    store: Writer<PartialObjectMeta<DynamicObject>>,
) -> impl Stream<Item = Result<PartialObjectMeta<DynamicObject>, watcher::Error>> + Send + 'static {
    let resource = route::http_route_resource();
    let routes: Api<PartialObjectMeta<DynamicObject>> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    reflector(store, watcher(routes, managed))
        .default_backoff()
        .touched_objects()
        .filter_map(|touched| {
            futures::future::ready(match touched {
                Ok(route) => Some(Ok(route)),
                Err(error) => {
                    debug!(%error, "HTTPRoute watch failed (no Gateway API?); retrying with back-off");
                    None
                }
            })
        })
}

/// The ReceiverPools, for the Webhooks that name them. Errors end here, as for
/// [`routes`]: an operator upgraded with Helm, which does not install a chart's new CRDs on
/// upgrade, has no ReceiverPool kind until `crds/` is applied, and the Webhook controller
/// must not stall its other watches meanwhile.
/// What is seen goes into `store` first.
pub fn pools(
    api: Api<hookwarden_api::pool::ReceiverPool>,
    store: kube::runtime::reflector::store::Writer<hookwarden_api::pool::ReceiverPool>,
) -> impl Stream<Item = Result<hookwarden_api::pool::ReceiverPool, watcher::Error>> + Send + 'static
{
    kube::runtime::reflector(store, watcher(api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .filter_map(|touched| {
            futures::future::ready(match touched {
                Ok(pool) => Some(Ok(pool)),
                Err(error) => {
                    debug!(%error, "ReceiverPool watch failed (CRD not applied?); retrying with back-off");
                    None
                }
            })
        })
}

/// The ConfigMaps the operator manages, passed on only when what a reconcile looks at
/// changed (see [`config_map_state`]) or when one is deleted (so it is made again). A
/// receiver writes its sink ConfigMap on every delivery it records; reconciling the
/// Webhook for each of those writes made the operator busy in proportion to the traffic.
/// Every change goes into `store` first, metadata only (a sink's data is the receiver's,
/// and can be a MiB).
pub fn config_maps(
    api: Api<ConfigMap>,
    managed: watcher::Config,
    mut store: Writer<PartialObjectMeta<ConfigMap>>,
) -> impl Stream<Item = Result<ConfigMap, watcher::Error>> + Send + 'static {
    // What was last passed on of each ConfigMap, by uid (a ConfigMap made again is new).
    let mut seen: HashMap<String, u64> = HashMap::new();
    watcher(api, managed)
        .default_backoff()
        .filter_map(move |event| {
            if let Ok(event) = &event {
                store.apply_watcher_event(&metadata_only(event));
            }
            let passed = match event {
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                    let state = config_map_state(&cm);
                    let uid = cm.uid().unwrap_or_default();
                    (seen.insert(uid, state) != Some(state)).then_some(Ok(cm))
                }
                Ok(watcher::Event::Delete(cm)) => {
                    seen.remove(&cm.uid().unwrap_or_default());
                    Some(Ok(cm))
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
                Err(error) => Some(Err(error)),
            };
            futures::future::ready(passed)
        })
}

/// The Webhook a managed ConfigMap belongs to: its controller, or, once that owner
/// reference is gone (taken away by hand), the Webhook its label names, so that the
/// Webhook hears of it (and reports the sink as no longer its own).
pub fn webhook_of(cm: &ConfigMap) -> Option<ObjectRef<Webhook>> {
    let namespace = cm.namespace()?;
    let controller = cm
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    let name = match controller {
        Some(o) if o.kind == "Webhook" => Some(o.name.clone()),
        Some(_) => None,
        None => cm.labels().get(names::WEBHOOK_LABEL).cloned(),
    }?;
    Some(ObjectRef::new(&name).within(&namespace))
}

/// `event` with each ConfigMap reduced to its metadata.
fn metadata_only(
    event: &watcher::Event<ConfigMap>,
) -> watcher::Event<PartialObjectMeta<ConfigMap>> {
    let meta = |cm: &ConfigMap| cm.metadata.clone().into_response_partial::<ConfigMap>();
    match event {
        watcher::Event::Apply(cm) => watcher::Event::Apply(meta(cm)),
        watcher::Event::Delete(cm) => watcher::Event::Delete(meta(cm)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(cm) => watcher::Event::InitApply(meta(cm)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// What a reconcile reads of a ConfigMap it manages, hashed: its metadata (labels,
/// annotations, owners, deletion) and, for the receiver's config, its data (drift is put
/// back); for a sink, only how full it is in whole percent, which its `SinkCapacity`
/// condition reports. The data a receiver writes to a sink is the receiver's.
pub fn config_map_state(cm: &ConfigMap) -> u64 {
    let mut h = DefaultHasher::new();
    let meta = &cm.metadata;
    meta.labels.hash(&mut h);
    meta.annotations.hash(&mut h);
    meta.deletion_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .hash(&mut h);
    for owner in meta.owner_references.iter().flatten() {
        (&owner.uid, &owner.controller).hash(&mut h);
    }
    let sink = cm.labels().get(names::ROLE_LABEL).map(String::as_str) == Some("sink");
    if sink {
        (status::config_map_bytes(cm) * 100 / status::CONFIGMAP_LIMIT).hash(&mut h);
    } else {
        cm.data.hash(&mut h);
        cm.binary_data
            .iter()
            .flatten()
            .for_each(|(k, v)| (k, &v.0).hash(&mut h));
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn config_map(role: &str, data: &[(&str, String)]) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.labels = Some(names::labels("w", role));
        cm.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
        );
        cm
    }

    #[test]
    fn a_sinks_data_matters_only_by_how_full_it_is() {
        let state = |n: usize| config_map_state(&config_map("sink", &[("s.json", "x".repeat(n))]));
        assert_eq!(state(100), state(200), "a write of data");
        assert_eq!(state(0), state(10_000));
        assert_ne!(
            state(100),
            state(status::CONFIGMAP_LIMIT / 100 + 1),
            "a percent more"
        );
        let mut relabelled = config_map("sink", &[("s.json", "x".repeat(100))]);
        relabelled
            .metadata
            .labels
            .get_or_insert_default()
            .insert("extra".into(), "1".into());
        assert_ne!(config_map_state(&relabelled), state(100), "labels changed");
    }

    #[test]
    fn a_config_map_belongs_to_its_controller_or_else_to_the_webhook_it_names() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut cm = config_map("sink", &[]);
        cm.metadata.namespace = Some("ns".into());
        // (labelled for Webhook "w" by `config_map`)
        assert_eq!(webhook_of(&cm), Some(ObjectRef::new("w").within("ns")));
        let owner = |kind: &str, name: &str| OwnerReference {
            kind: kind.into(),
            name: name.into(),
            controller: Some(true),
            ..OwnerReference::default()
        };
        cm.metadata.owner_references = Some(vec![owner("Webhook", "w")]);
        assert_eq!(webhook_of(&cm), Some(ObjectRef::new("w").within("ns")));
        // A pool's ConfigMap concerns no Webhook.
        cm.metadata.owner_references = Some(vec![owner("ReceiverPool", "default")]);
        assert_eq!(webhook_of(&cm), None);
    }

    #[test]
    fn the_receivers_config_matters_in_full() {
        let state = |v: &str| config_map_state(&config_map("config", &[("config.yaml", v.into())]));
        assert_eq!(state("a: 1"), state("a: 1"));
        assert_ne!(state("a: 1"), state("a: 2"));
    }
}
