//! Which namespaces a controller's watches cover.

use k8s_openapi::NamespaceResourceScope;
use kube::{Api, Client, Resource};

/// An `Api` over `namespace`, or over all namespaces.
pub fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
