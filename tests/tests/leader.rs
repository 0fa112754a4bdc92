//! Two operator replicas: one leads through the Lease, the other takes over when it goes.
//! Its own test binary, because it deletes an operator pod.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use hookwarden_tests::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};

async fn running_operator_pods(client: &kube::Client) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    pods.list(&ListParams::default().labels("app.kubernetes.io/name=hookwarden-operator"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|p| p.name_any())
        .collect()
}

async fn holder(client: &kube::Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    leases
        .get_opt("hookwarden-operator")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over() {
    let client = client().await;
    let (pods, leader) = eventually(
        "two running operator pods, one holding the Lease",
        CONVERGE,
        || {
            let client = client.clone();
            async move {
                let pods = running_operator_pods(&client).await;
                let leader = holder(&client).await;
                match &leader {
                    Some(l) if pods.len() == 2 && pods.contains(l) => Ok((pods, l.clone())),
                    _ => Err(format!("pods {pods:?}, holder {leader:?}")),
                }
            }
        },
    )
    .await;
    let follower = pods.iter().find(|p| **p != leader).unwrap().clone();

    // Only the leader reconciles: the follower has not started a controller.
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let follower_log = pod_api.logs(&follower, &Default::default()).await.unwrap();
    assert!(
        !follower_log.contains("controller starting"),
        "{follower_log}"
    );

    // The leader goes away; another replica (the follower, or the replacement pod if it
    // is quicker) takes the Lease and starts the controller, and only it.
    pod_api
        .delete(&leader, &DeleteParams::default())
        .await
        .unwrap();
    let (new_leader, others) = eventually("another replica holds the Lease", CONVERGE, || {
        let client = client.clone();
        let leader = leader.clone();
        async move {
            let pods = running_operator_pods(&client).await;
            match holder(&client).await {
                Some(h) if h != leader && pods.contains(&h) => {
                    let others: Vec<String> = pods.into_iter().filter(|p| *p != h).collect();
                    Ok((h, others))
                }
                other => Err(format!("holder {other:?}, running {pods:?}")),
            }
        }
    })
    .await;
    let new_leader_log = eventually("the new leader starts its controller", CONVERGE, || {
        let pod_api = pod_api.clone();
        let new_leader = new_leader.clone();
        async move {
            let log = pod_api
                .logs(&new_leader, &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if log.contains("controller starting") {
                Ok(log)
            } else {
                Err(log)
            }
        }
    })
    .await;
    assert!(new_leader_log.contains("leading"));
    for other in others {
        let log = pod_api.logs(&other, &Default::default()).await.unwrap();
        assert!(
            !log.contains("controller starting"),
            "{other} is not the leader but runs a controller: {log}"
        );
    }

    // ...and does the work.
    let ns = TestNamespace::new("leader").await;
    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: after}\n\
         spec: {path: /after, provider: github}\n",
    )
    .await;
    ns.webhook_ready("after", "True", "ReceiverAvailable").await;
}
