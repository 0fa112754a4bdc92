//! A cluster without the Gateway API, the common case: the operator's HTTPRoute watch fails
//! again and again there, and must not hold back any Webhook. It did: kube-runtime's
//! `Controller` pauses all of its watches after an error from any one of them, with one
//! back-off that grows to 30 s while nothing else happens; a Webhook applied to a quiet
//! cluster then waited up to that long (measured against the previous operator: 28 s for
//! the first Webhook after a quiet minute; 0.3 s now). The test removes the Gateway API's
//! CRDs and needs a quiet cluster, so this suite runs alone (tests/e2e.sh), and puts the
//! CRDs back when it ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hookwarden_tests::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams};

/// Long enough for a back-off over all of the operator's watches to reach its cap
/// (0.8 s doubling to 30 s: 50 s of failures).
const QUIET: Duration = Duration::from_secs(60);
/// A Webhook's first verdict (no pod involved) takes well under a second; this is the
/// bound, a third of the back-off's cap.
const PROMPT: Duration = Duration::from_secs(10);

/// Puts the Gateway API's CRDs back, also when the test fails.
struct Reinstall(String);

impl Drop for Reinstall {
    fn drop(&mut self) {
        let (ok, out) = kubectl(&["apply", "--server-side", "-f", &self.0]);
        if !ok {
            eprintln!("cannot put the Gateway API CRDs back: {out}");
        }
    }
}

#[tokio::test]
async fn a_failing_route_watch_holds_back_no_webhook() {
    let crds = std::env::var("HOOKWARDEN_GATEWAY_API_CRDS")
        .expect("HOOKWARDEN_GATEWAY_API_CRDS (set by tests/e2e.sh): the Gateway API CRDs");
    let (ok, out) = kubectl(&["delete", "-f", &crds, "--ignore-not-found", "--wait=true"]);
    assert!(ok, "{out}");
    let _reinstall = Reinstall(crds);

    // Earlier suites' namespaces going away are changes the operator watches, which would
    // wake it up and hide the fault: wait for a quiet cluster.
    let namespaces: Api<Namespace> = Api::all(client().await);
    let kept = std::env::var_os("HOOKWARDEN_KEEP_NAMESPACES").is_some();
    let others = if kept { Duration::ZERO } else { CONVERGE };
    if kept {
        eprintln!("HOOKWARDEN_KEEP_NAMESPACES: not waiting for earlier namespaces to go");
    }
    eventually("earlier tests' namespaces gone", others, || async {
        if kept {
            return Ok(());
        }
        let left: Vec<String> = namespaces
            .list(&ListParams::default().labels("hookwarden.io/e2e=true"))
            .await
            .map_err(|e| vec![e.to_string()])?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        if left.is_empty() { Ok(()) } else { Err(left) }
    })
    .await;
    let ns = TestNamespace::new("no-gateway").await;
    tokio::time::sleep(QUIET).await;

    ns.apply_webhook(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: late}\n\
         spec: {path: /late, provider: github, secretRef: {name: not-there, key: token}}\n",
    )
    .await;
    ns.webhook_ready_within("late", "False", "SecretNotFound", PROMPT)
        .await;
}
