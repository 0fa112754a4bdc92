//! The API server stops answering mid-stream (its process is paused, as an overloaded or
//! partitioned API server looks to a client): no delivery gets a 2xx unless it was recorded,
//! and the receiver records again as soon as the API server is back. Pauses the API server,
//! so `tests/e2e.sh` runs it alone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use hookwarden_tests::*;

fn body(i: usize) -> String {
    format!(
        r#"{{"type":"org-created","name":"Org {i}","orgId":"org{i}","org":{{"id":"org{i}","name":"Org {i}"}},"user":{{"email":"u{i}@example.com"}}}}"#
    )
}

fn apiserver(signal: &str) {
    let root = std::env::var("HOOKWARDEN_CLUSTER_ROOT")
        .unwrap_or_else(|_| "/tmp/hookwarden-cluster".into());
    let pid = std::fs::read_to_string(format!("{root}/run/kube-apiserver.pid")).unwrap();
    let ok = std::process::Command::new("kill")
        .args([signal, pid.trim()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {signal} kube-apiserver");
}

/// Resumes the API server even when the test fails half way.
struct Resume;

impl Drop for Resume {
    fn drop(&mut self) {
        apiserver("-CONT");
    }
}

#[tokio::test]
async fn no_2xx_while_the_api_server_is_away_and_recovery_after() {
    let ns = TestNamespace::new("outage").await;
    let (url, secret) = ready_receiver(
        &ns,
        "orgs",
        "membrane",
        ", sinks: {events: false, configMap: {name: orgs}}",
    )
    .await;
    let out = send_eventually(&url, "membrane", secret.path(), &body(0), &[]);
    assert!(out.starts_with("200"), "{out}");

    let mut acknowledged = vec![0];
    {
        let _resume = Resume;
        apiserver("-STOP");
        let paused = Instant::now();
        for i in 1..=3 {
            let (ok, out) = send(&url, "membrane", secret.path(), &body(i), &[]);
            assert!(
                !ok && out.starts_with("503"),
                "delivery {i} while away: {out}"
            );
        }
        // The receiver answered within its budget, below Membrane's 30 s and Opal's 10 s.
        assert!(
            paused.elapsed() < Duration::from_secs(3 * 9),
            "{:?}",
            paused.elapsed()
        );
    }
    // Back: the senders' retries are recorded, once each.
    for i in 1..=3 {
        let out = eventually(
            "a retry to be recorded",
            Duration::from_secs(90),
            || async {
                let (ok, out) = send(&url, "membrane", secret.path(), &body(i), &[]);
                if ok { Ok(out) } else { Err(out) }
            },
        )
        .await;
        assert!(out.starts_with("200"), "{out}");
        acknowledged.push(i);
    }
    let orgs = recorded_org_ids(&ns, "orgs").await;
    let expected: Vec<String> = acknowledged.iter().map(|i| format!("org{i}")).collect();
    assert_eq!(orgs, expected, "recorded exactly what was acknowledged");
    // The receiver pods lived through it.
    let restarts: i32 = receiver_pods(&ns, "orgs")
        .await
        .iter()
        .map(|(_, r)| r)
        .sum();
    assert_eq!(restarts, 0);
}
