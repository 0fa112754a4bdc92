//! What the Webhook controller's watches of the children it manages have seen, metadata
//! only. A reconcile that may have to delete a child (a receiver of its own once the Webhook
//! is pooled, an Ingress or HTTPRoute no longer in its spec, a sink it no longer names)
//! reads here whether that child exists, and asks the API server only about children that
//! do: at a thousand Webhooks, a GET per possible child per reconcile was most of what the
//! operator asked the API server.
//!
//! Each store is filled by the watch that also triggers the controller on that kind
//! ([`Controller::owns_stream`](kube::runtime::Controller::owns_stream)), before the event
//! is passed on. A child that a reconcile does not see yet is seen by the next one, which
//! its arrival in the store triggers.

use std::fmt::Debug;

use futures::Stream;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

/// The children the operator manages, by kind, as last seen (metadata only).
#[derive(Clone)]
pub struct Seen {
    pub deployments: Store<PartialObjectMeta<Deployment>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub roles: Store<PartialObjectMeta<Role>>,
    pub role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub routes: Store<PartialObjectMeta<DynamicObject>>,
}

/// The writers that fill a [`Seen`], one per kind, for the watches to take.
pub struct Writers {
    pub deployments: Writer<PartialObjectMeta<Deployment>>,
    pub services: Writer<PartialObjectMeta<Service>>,
    pub service_accounts: Writer<PartialObjectMeta<ServiceAccount>>,
    pub roles: Writer<PartialObjectMeta<Role>>,
    pub role_bindings: Writer<PartialObjectMeta<RoleBinding>>,
    pub ingresses: Writer<PartialObjectMeta<Ingress>>,
    pub config_maps: Writer<PartialObjectMeta<ConfigMap>>,
    pub routes: Writer<PartialObjectMeta<DynamicObject>>,
}

impl Seen {
    /// Empty stores and the writers that fill them; `routes` is the HTTPRoute kind.
    pub fn new(routes: kube::api::ApiResource) -> (Seen, Writers) {
        let writers = Writers {
            deployments: Writer::default(),
            services: Writer::default(),
            service_accounts: Writer::default(),
            roles: Writer::default(),
            role_bindings: Writer::default(),
            ingresses: Writer::default(),
            config_maps: Writer::default(),
            routes: Writer::new(routes),
        };
        let seen = Seen {
            deployments: writers.deployments.as_reader(),
            services: writers.services.as_reader(),
            service_accounts: writers.service_accounts.as_reader(),
            roles: writers.roles.as_reader(),
            role_bindings: writers.role_bindings.as_reader(),
            ingresses: writers.ingresses.as_reader(),
            config_maps: writers.config_maps.as_reader(),
            routes: writers.routes.as_reader(),
        };
        (seen, writers)
    }
}

/// Whether `store` holds `namespace/name`.
pub fn has<K>(store: &Store<PartialObjectMeta<K>>, namespace: &str, name: &str) -> bool
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&ObjectRef::new(name).within(namespace)).is_some()
}

/// Whether `store` holds the HTTPRoute `namespace/name`.
pub fn has_route(
    store: &Store<PartialObjectMeta<DynamicObject>>,
    namespace: &str,
    name: &str,
) -> bool {
    let key =
        ObjectRef::new_with(name, crate::webhook::route::http_route_resource()).within(namespace);
    store.get(&key).is_some()
}

/// A metadata watch of the managed objects of kind `K` (in `namespace`, or all) that fills
/// `writer` and passes on each object it touched, to trigger the owner's reconcile.
pub fn owned<K>(
    client: &Client,
    namespace: Option<&str>,
    managed: &watcher::Config,
    writer: Writer<PartialObjectMeta<K>>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    // (an Api of PartialObjectMeta asks for metadata only)
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    reflector(writer, watcher(api, managed.clone()))
        .default_backoff()
        .touched_objects()
}
