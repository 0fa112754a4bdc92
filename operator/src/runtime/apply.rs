//! Server-side apply of the operator's children, under its one field manager, over what
//! the operator made and nothing else.
//!
//! Every child carries a controller owner reference (its Webhook, its ReceiverPool, or for
//! a writer Lease its Deployment). Before a child is applied, the object of its name is
//! looked at ([`claim`], pure): absent, it is created; controlled by the same owner, it is
//! updated, taking over fields another manager set; anything else (an application's
//! ConfigMap, a ServiceAccount someone made, another Webhook's sink) is left exactly as it
//! is and the apply fails with [`Error::NotOwned`], which the owner reports in its status.
//! Never adopting also means never deleting: garbage collection removes only objects whose
//! owner reference the operator wrote.
//!
//! The look is at the watch's store of the operator's children where the caller has one
//! (at a thousand Webhooks a GET per child per reconcile was most of what the operator
//! asked the API server), and a GET of the object's metadata otherwise, that is whenever
//! the store does not hold it: a first creation, or an object without the operator's labels.
//! A creation is applied without `force`, so an object made by someone else between the
//! look and the apply with a value of its own for one of the fields conflicts (409) rather
//! than being taken over.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, NotOwned, Result};
use crate::runtime::names;

/// What may be done with the object of a child's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No such object: create it.
    Create,
    /// The owner controls it: update it.
    Update,
    /// Someone else's: leave it. The controller it has, if any (`Kind/name`).
    Taken { controller: Option<String> },
}

/// What may be done with `existing` (the object of a child's name, if there is one) for
/// the owner whose uid is `owner_uid`. Pure.
pub fn claim(existing: Option<&ObjectMeta>, owner_uid: &str) -> Claim {
    let Some(meta) = existing else {
        return Claim::Create;
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match controller {
        Some(c) if !owner_uid.is_empty() && c.uid == owner_uid => Claim::Update,
        _ => Claim::Taken {
            controller: controller_of(meta),
        },
    }
}

/// The controller `meta` names (`Kind/name`), if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<String> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|c| format!("{}/{}", c.kind, c.name))
}

/// The uid of the controller that `object` names in its owner references: the owner the
/// operator applies it for.
fn owner_uid(meta: &ObjectMeta) -> Result<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.as_str())
        .ok_or(Error::MissingObjectKey(
            "metadata.ownerReferences (controller)",
        ))
}

/// Server-side applies `object` in `namespace` under the operator's field manager if the
/// object of its name is absent or controlled by `object`'s own controller (see the
/// module); `seen` is the watch's store of this kind, where the caller has one. Returns the
/// object as the API server holds it now.
pub async fn apply<K>(
    client: &Client,
    namespace: &str,
    object: &K,
    seen: Option<&Store<PartialObjectMeta<K>>>,
) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug
        + 'static,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = name_of(object.meta())?;
    let uid = owner_uid(object.meta())?;
    let stored = seen.and_then(|s| s.get(&ObjectRef::new(name).within(namespace)));
    let stored = stored.as_ref().map(|m| &m.metadata);
    let verdict = look(stored, uid, api.get_metadata_opt(name)).await?;
    let params = params(verdict, K::kind(&()).as_ref(), name)?;
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// The claim on the object of a child's name: `Update` when the store holds the owner's
/// own object (`stored`), else from what `get` finds on the API server.
async fn look<K>(
    stored: Option<&ObjectMeta>,
    uid: &str,
    get: impl std::future::Future<Output = kube::Result<Option<PartialObjectMeta<K>>>>,
) -> Result<Claim> {
    if stored.is_some_and(|m| claim(Some(m), uid) == Claim::Update) {
        return Ok(Claim::Update);
    }
    let existing = get.await?;
    Ok(claim(existing.as_ref().map(|m| &m.metadata), uid))
}

/// [`apply`] for a kind known only at run time (the Gateway API's HTTPRoute), through
/// `api`; `seen` as for [`apply`].
pub async fn apply_dynamic(
    api: &Api<DynamicObject>,
    resource: &ApiResource,
    namespace: &str,
    object: &DynamicObject,
    seen: &Store<PartialObjectMeta<DynamicObject>>,
) -> Result<DynamicObject> {
    let name = name_of(&object.metadata)?;
    let uid = owner_uid(&object.metadata)?;
    let key = ObjectRef::new_with(name, resource.clone()).within(namespace);
    let stored = seen.get(&key);
    let stored = stored.as_ref().map(|m| &m.metadata);
    let verdict = look(stored, uid, api.get_metadata_opt(name)).await?;
    let params = params(verdict, &resource.kind, name)?;
    Ok(api.patch(name, &params, &Patch::Apply(object)).await?)
}

/// The apply's parameters for `verdict`: `force` only over the owner's own object.
fn params(verdict: Claim, kind: &str, name: &str) -> Result<PatchParams> {
    match verdict {
        Claim::Create => Ok(PatchParams::apply(names::FIELD_MANAGER)),
        Claim::Update => Ok(PatchParams::apply(names::FIELD_MANAGER).force()),
        Claim::Taken { controller } => Err(Error::NotOwned(NotOwned {
            kind: kind.to_string(),
            name: name.to_string(),
            controller,
        })),
    }
}

fn name_of(meta: &ObjectMeta) -> Result<&str> {
    meta.name
        .as_deref()
        .ok_or(Error::MissingObjectKey("metadata.name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(uid: &str, controller: Option<bool>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: "hookwarden.io/v1alpha1".into(),
                kind: "Webhook".into(),
                name: "victim".into(),
                uid: uid.into(),
                controller,
                ..OwnerReference::default()
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn absent_is_created_and_own_is_updated() {
        assert_eq!(claim(None, "u1"), Claim::Create);
        assert_eq!(claim(Some(&owned("u1", Some(true))), "u1"), Claim::Update);
    }

    #[test]
    fn an_object_without_a_controller_is_never_adopted() {
        // An application's ConfigMap, a ServiceAccount someone made by hand.
        assert_eq!(
            claim(Some(&ObjectMeta::default()), "u1"),
            Claim::Taken { controller: None }
        );
        // Owned, but not controlled, by this owner: still not ours.
        assert_eq!(
            claim(Some(&owned("u1", None)), "u1"),
            Claim::Taken { controller: None }
        );
    }

    #[test]
    fn another_owners_object_is_left_and_named() {
        assert_eq!(
            claim(Some(&owned("u2", Some(true))), "u1"),
            Claim::Taken {
                controller: Some("Webhook/victim".into())
            }
        );
        // An owner without a uid claims nothing.
        assert!(matches!(
            claim(Some(&owned("", Some(true))), ""),
            Claim::Taken { .. }
        ));
    }

    #[test]
    fn force_only_over_the_owners_own_object() {
        assert!(!params(Claim::Create, "ConfigMap", "a").unwrap().force);
        assert!(params(Claim::Update, "ConfigMap", "a").unwrap().force);
        let err = params(
            Claim::Taken { controller: None },
            "ConfigMap",
            "app-settings",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("ConfigMap \"app-settings\""), "{err}");
    }
}
