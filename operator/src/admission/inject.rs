//! The pod admission webhook's decisions for `spec.sidecar`: which Webhook a pod asks for,
//! whether that Webhook can serve it, and the JSON patch that adds the receiver to the pod
//! as a native sidecar. Pure: objects in, a decision out (`admission` does the I/O).

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::crd::Webhook;
use crate::runtime::names;
use crate::webhook::children::SidecarReceiver;
use crate::webhook::validate::{ValidSpec, validate};

/// What to answer for one pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    /// Admit it as it is (it does not ask for a receiver, or already carries it).
    Unchanged,
    /// Admit it with this JSON patch applied.
    Patch(json_patch::Patch),
    /// Refuse it; the message says what to fix. Its ReplicaSet (or Job, ...) tries again.
    Deny(String),
}

/// The Webhook a pod asks for with its `hookwarden.io/inject` label.
pub fn requested(pod: &Pod) -> Option<&str> {
    pod.metadata
        .labels
        .as_ref()?
        .get(names::INJECT_LABEL)
        .map(String::as_str)
}

/// The Webhook's checked spec when it can serve pods as a sidecar, or why not.
pub fn sidecar_spec(
    namespace: &str,
    name: &str,
    webhook: Option<&Webhook>,
) -> Result<ValidSpec, String> {
    let label = names::INJECT_LABEL;
    let Some(webhook) = webhook.filter(|w| w.metadata.deletion_timestamp.is_none()) else {
        return Err(format!(
            "this pod asks for the receiver of Webhook {name:?} (label {label}), which does \
             not exist in namespace {namespace:?}: create the Webhook (with spec.sidecar) or \
             remove the label from the pod template"
        ));
    };
    let spec = validate(name, &webhook.spec).map_err(|problems| {
        format!(
            "this pod asks for the receiver of Webhook {name:?}, whose spec is invalid: {problems}"
        )
    })?;
    if spec.sidecar.is_none() {
        return Err(format!(
            "this pod asks for the receiver of Webhook {name:?} (label {label}), which has no \
             spec.sidecar: add spec.sidecar to the Webhook, or remove the label from the pod \
             template"
        ));
    }
    Ok(spec)
}

/// Adds `receiver` to `pod`: its container after the pod's own init containers, its
/// volumes, and the annotation naming what was injected. A pod that already carries the
/// container is left alone (a pod created from a copy of an injected one); a pod whose own
/// containers or volumes take the receiver's names or ports is refused.
pub fn decide(pod: &Pod, receiver: &SidecarReceiver) -> Decision {
    let Some(spec) = pod.spec.as_ref() else {
        return Decision::Deny("the pod has no spec".into());
    };
    let ours = &receiver.container.name;
    let all_containers = || {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
    };
    if spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| &c.name == ours && c.restart_policy.as_deref() == Some("Always"))
    {
        return Decision::Unchanged;
    }
    if let Some(c) = all_containers().find(|c| &c.name == ours) {
        return Decision::Deny(format!(
            "the pod already has a container named {:?}, which is the name of the injected \
             receiver: rename it (an old receiver container added to a Deployment by the \
             previous hookwarden release is taken out by the operator)",
            c.name
        ));
    }
    let volumes = spec.volumes.iter().flatten();
    for v in volumes {
        if receiver.volumes.iter().any(|r| r.name == v.name) {
            return Decision::Deny(format!(
                "the pod already has a volume named {:?}, which the injected receiver uses: \
                 rename it",
                v.name
            ));
        }
    }
    // The receiver's volumes hold the Webhook's signing secrets: no container of the pod's
    // own may mount them (it would declare no volume of that name, counting on the one the
    // injector adds).
    for c in all_containers() {
        let mounts = c.volume_mounts.iter().flatten();
        let devices = c.volume_devices.iter().flatten().map(|d| &d.name);
        if let Some(name) = mounts
            .map(|m| &m.name)
            .chain(devices)
            .find(|n| receiver.volumes.iter().any(|r| &r.name == *n))
        {
            return Decision::Deny(format!(
                "container {:?} mounts volume {name:?}, which only the injected receiver may \
                 mount (it holds the Webhook's signing secret): remove that volumeMount",
                c.name
            ));
        }
    }
    let taken: Vec<i32> = receiver
        .container
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port)
        .collect();
    for c in all_containers() {
        if let Some(p) = c
            .ports
            .iter()
            .flatten()
            .find(|p| taken.contains(&p.container_port))
        {
            return Decision::Deny(format!(
                "container {:?} declares port {}, which the injected receiver listens on: \
                 choose other ports in the Webhook's spec.sidecar (port, metricsPort)",
                c.name, p.container_port
            ));
        }
    }

    let container = match serde_json::to_value(&receiver.container) {
        Ok(v) => v,
        Err(e) => return Decision::Deny(format!("cannot encode the receiver container: {e}")),
    };
    let mut ops: Vec<Value> = Vec::new();
    match &spec.init_containers {
        None => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers", "value": [container]}))
        }
        Some(_) => {
            ops.push(json!({"op": "add", "path": "/spec/initContainers/-", "value": container}))
        }
    }
    for v in &receiver.volumes {
        let v = match serde_json::to_value(v) {
            Ok(v) => v,
            Err(e) => return Decision::Deny(format!("cannot encode a receiver volume: {e}")),
        };
        if spec.volumes.is_none() && !ops.iter().any(|o| o["path"] == "/spec/volumes") {
            ops.push(json!({"op": "add", "path": "/spec/volumes", "value": [v]}));
        } else {
            ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": v}));
        }
    }
    let annotation = names::RECEIVER_HASH_ANNOTATION
        .replace('~', "~0")
        .replace('/', "~1");
    match &pod.metadata.annotations {
        None => ops.push(json!({"op": "add", "path": "/metadata/annotations",
                                "value": {names::RECEIVER_HASH_ANNOTATION: receiver.hash}})),
        Some(_) => ops.push(
            json!({"op": "add", "path": format!("/metadata/annotations/{annotation}"),
                                   "value": receiver.hash}),
        ),
    }
    match serde_json::from_value(Value::Array(ops)) {
        Ok(patch) => Decision::Patch(patch),
        Err(e) => Decision::Deny(format!("cannot encode the patch: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::children::{ReceiverDefaults, sidecar_receiver};
    use kube::api::ObjectMeta;

    fn webhook(extra: Value) -> Webhook {
        let mut spec = json!({"path": "/shopify", "provider": "shopify",
            "sinks": {"events": false, "forward": {"url": "http://127.0.0.1:8080/hooks"}}});
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let mut w = Webhook::new("shopify", serde_json::from_value(spec).unwrap());
        w.metadata.namespace = Some("shop".into());
        w.metadata.uid = Some("u-1".into());
        w
    }

    fn receiver(w: &Webhook) -> SidecarReceiver {
        let spec = sidecar_spec("shop", "shopify", Some(w)).expect("servable");
        let defaults = ReceiverDefaults {
            image: "hookwarden-receiver:test".into(),
            image_pull_policy: "IfNotPresent".into(),
            image_pull_secrets: vec![],
            guardrails: Default::default(),
        };
        sidecar_receiver(w, &spec, spec.sidecar.as_ref().unwrap(), &defaults).unwrap()
    }

    fn pod(spec: Value, annotations: Option<Value>) -> Pod {
        let mut p: Pod = serde_json::from_value(json!({"spec": spec})).unwrap();
        p.metadata = ObjectMeta {
            labels: Some([(names::INJECT_LABEL.to_string(), "shopify".to_string())].into()),
            annotations: annotations.map(|a| serde_json::from_value(a).unwrap()),
            ..ObjectMeta::default()
        };
        p
    }

    fn patched(pod: &Pod, decision: Decision) -> Pod {
        let Decision::Patch(patch) = decision else {
            panic!("expected a patch, got {decision:?}")
        };
        let mut doc = serde_json::to_value(pod).unwrap();
        json_patch::patch(&mut doc, &patch).expect("the patch applies");
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn only_a_sidecar_webhook_serves_pods() {
        assert_eq!(
            requested(&pod(json!({"containers": []}), None)),
            Some("shopify")
        );
        let missing = sidecar_spec("shop", "shopify", None).unwrap_err();
        assert!(
            missing.contains("does not exist in namespace \"shop\""),
            "{missing}"
        );
        let own = webhook(json!({"sinks": {"events": true}}));
        let err = sidecar_spec("shop", "shopify", Some(&own)).unwrap_err();
        assert!(err.contains("has no spec.sidecar"), "{err}");
        let invalid = webhook(json!({"sidecar": {"port": 9000, "metricsPort": 9000}}));
        let err = sidecar_spec("shop", "shopify", Some(&invalid)).unwrap_err();
        assert!(
            err.contains("spec is invalid") && err.contains("two ports"),
            "{err}"
        );
        assert!(sidecar_spec("shop", "shopify", Some(&webhook(json!({"sidecar": {}})))).is_ok());
    }

    #[test]
    fn the_receiver_goes_in_as_a_native_sidecar_after_the_pods_own_init_containers() {
        let w = webhook(json!({"sidecar": {}}));
        let r = receiver(&w);
        // A pod without init containers, volumes or annotations.
        let bare = pod(
            json!({"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]}),
            None,
        );
        let out = patched(&bare, decide(&bare, &r));
        let spec = out.spec.as_ref().unwrap();
        let init = spec.init_containers.as_ref().unwrap();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0], r.container);
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            spec.containers.len(),
            1,
            "the application's containers stay as they are"
        );
        assert_eq!(spec.volumes.as_ref().unwrap(), &r.volumes);
        assert_eq!(
            out.metadata.annotations.as_ref().unwrap()[names::RECEIVER_HASH_ANNOTATION],
            r.hash
        );
        // Once injected, a second look changes nothing.
        assert_eq!(decide(&out, &r), Decision::Unchanged);

        // A pod with its own init container, volume and annotations keeps them, in order.
        let full = pod(
            json!({"initContainers": [{"name": "migrate"}],
                   "containers": [{"name": "app"}],
                   "volumes": [{"name": "data", "emptyDir": {}}]}),
            Some(json!({"team": "shop"})),
        );
        let out = patched(&full, decide(&full, &r));
        let spec = out.spec.as_ref().unwrap();
        let init: Vec<&str> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(init, ["migrate", "hookwarden-shopify"]);
        let volumes: Vec<&str> = spec
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(
            volumes,
            ["data", "hw-shopify-config", "hw-shopify-secret-0"]
        );
        let annotations = out.metadata.annotations.unwrap();
        assert_eq!(annotations["team"], "shop");
        assert_eq!(annotations[names::RECEIVER_HASH_ANNOTATION], r.hash);
    }

    #[test]
    fn clashing_names_and_ports_are_refused_with_what_to_change() {
        let r = receiver(&webhook(json!({"sidecar": {}})));
        let deny = |spec: Value| match decide(&pod(spec, None), &r) {
            Decision::Deny(m) => m,
            other => panic!("expected a denial, got {other:?}"),
        };
        let m = deny(json!({"containers": [{"name": "app", "ports": [{"containerPort": 8090}]}]}));
        assert!(m.contains("port 8090") && m.contains("spec.sidecar"), "{m}");
        let m = deny(json!({"containers": [{"name": "hookwarden-shopify"}]}));
        assert!(m.contains("already has a container named"), "{m}");
        let m = deny(
            json!({"containers": [{"name": "app"}], "volumes": [{"name": "hw-shopify-config"}]}),
        );
        assert!(m.contains("volume named \"hw-shopify-config\""), "{m}");
        // An application container that mounts the receiver's secret volume, declared by
        // nobody but the injector: it would read the signing secret.
        let m = deny(json!({"containers": [{"name": "app",
            "volumeMounts": [{"name": "hw-shopify-secret-0", "mountPath": "/steal"}]}]}));
        assert!(
            m.contains("container \"app\" mounts volume \"hw-shopify-secret-0\""),
            "{m}"
        );
        let m = deny(json!({"initContainers": [{"name": "early",
            "volumeMounts": [{"name": "hw-shopify-config", "mountPath": "/c"}]}],
            "containers": [{"name": "app"}]}));
        assert!(m.contains("only the injected receiver may mount"), "{m}");
        // Other ports are fine.
        let ok = pod(
            json!({"containers": [{"name": "app", "ports": [{"containerPort": 8080}]}]}),
            None,
        );
        assert!(matches!(decide(&ok, &r), Decision::Patch(_)));
    }
}
