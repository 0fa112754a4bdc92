//! Helpers for hookwarden's end-to-end tests.
//!
//! The tests run against the project's own single-node Kubernetes (`tests/cluster/`),
//! started by `make e2e` / `make test`, with the operator deployed from the shipped
//! manifests and running under its own ServiceAccount. The test process itself talks to
//! the API server as the cluster admin, only to set up scenarios and observe results.
//! Each test works in a namespace of its own, deleted when the test ends.
#![allow(clippy::expect_used, clippy::unwrap_used)] // test support: a failure is a test failure

pub mod prometheus;

use std::fmt::Debug;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use hookwarden_operator::crd::Webhook;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The namespace the operator is installed in.
pub const OPERATOR_NAMESPACE: &str = "hookwarden-system";
/// How long a test waits for the cluster to converge before failing.
pub const CONVERGE: Duration = Duration::from_secs(180);

/// An admin client for the test cluster, from `KUBECONFIG`.
pub async fn client() -> Client {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set: run these tests with `make e2e` (or `make test`), which starts \
         the project's Kubernetes and installs the operator"
    );
    Client::try_default()
        .await
        .expect("cannot build a client from KUBECONFIG")
}

/// A namespace for one test, deleted when dropped (also when the test panics).
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
}

impl TestNamespace {
    pub async fn new(prefix: &str) -> Self {
        let client = client().await;
        let mut suffix = [0u8; 3];
        getrandom::fill(&mut suffix).expect("random");
        let name = format!("hw-{prefix}-{}", hex::encode(suffix));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                // Pods here must meet the restricted Pod Security profile: the receivers,
                // dedicated or sidecar, and the tests' stand-in applications.
                labels: Some(
                    [
                        ("hookwarden.io/e2e", "true"),
                        ("pod-security.kubernetes.io/enforce", "restricted"),
                        ("pod-security.kubernetes.io/warn", "restricted"),
                    ]
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        // Pods need the namespace's default ServiceAccount to exist.
        let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        eventually(
            "default ServiceAccount exists",
            Duration::from_secs(60),
            || {
                let sa = sa.clone();
                async move {
                    sa.get_opt("default")
                        .await
                        .ok()
                        .flatten()
                        .map(|_| ())
                        .ok_or("missing")
                }
            },
        )
        .await;
        TestNamespace { name, client }
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Creates or updates `object` in this namespace, as a user's `kubectl apply` would.
    pub async fn apply<K>(&self, object: &K) -> K
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + Debug,
    {
        let name = object.meta().name.clone().expect("object needs a name");
        self.api::<K>()
            .patch(
                &name,
                &PatchParams::apply("e2e-user").force(),
                &Patch::Apply(object),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", K::kind(&())))
    }

    /// Applies a Webhook given as YAML.
    pub async fn apply_webhook(&self, yaml: &str) -> Webhook {
        let mut webhook: Webhook = serde_saphyr::from_str(yaml).expect("test Webhook YAML");
        webhook.metadata.namespace = Some(self.name.clone());
        self.apply(&webhook).await
    }

    pub async fn delete<K>(&self, name: &str)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + Debug,
    {
        self.api::<K>()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("delete {} {name}: {e}", K::kind(&())));
    }

    /// Waits until the Webhook's `Ready` condition describes its current spec (its
    /// `observedGeneration`) with `status` and `reason`; returns the Webhook.
    pub async fn webhook_ready(&self, name: &str, status: &str, reason: &str) -> Webhook {
        self.webhook_ready_within(name, status, reason, CONVERGE)
            .await
    }

    /// [`Self::webhook_ready`], waiting `timeout` at most.
    pub async fn webhook_ready_within(
        &self,
        name: &str,
        status: &str,
        reason: &str,
        timeout: Duration,
    ) -> Webhook {
        let api = self.api::<Webhook>();
        eventually(
            &format!(
                "Webhook {}/{name} Ready={status} reason={reason}",
                self.name
            ),
            timeout,
            || {
                let api = api.clone();
                async move {
                    let w = api.get(name).await.map_err(|e| e.to_string())?;
                    match w.ready_condition() {
                        // A condition about an older spec says nothing about this one.
                        Some(c) if c.observed_generation != w.metadata.generation => Err(format!(
                            "Ready describes generation {:?}, the spec is at {:?}",
                            c.observed_generation, w.metadata.generation
                        )),
                        Some(c) if c.status == status && c.reason == reason => Ok(w.clone()),
                        Some(c) => Err(format!(
                            "Ready={} reason={} message={}",
                            c.status, c.reason, c.message
                        )),
                        None => Err("no Ready condition yet".into()),
                    }
                }
            },
        )
        .await
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::env::var_os("HOOKWARDEN_KEEP_NAMESPACES").is_some() {
            eprintln!("keeping namespace {}", self.name);
            return;
        }
        let _ = std::process::Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Polls `check` until it succeeds or `timeout` passes; on timeout, panics with `what` and
/// the last failure, so that a failing test says what it waited for and what it saw.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if tokio::time::Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last:?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that `check` keeps succeeding for `duration` (something must NOT happen).
pub async fn consistently<E, F, Fut>(what: &str, duration: Duration, mut check: F)
where
    E: Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), E>>,
{
    let deadline = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < deadline {
        if let Err(e) = check().await {
            panic!("{what} stopped holding: {e:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The logs of every operator pod, concatenated.
pub async fn operator_logs(client: &Client) -> String {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let list = pods
        .list(
            &kube::api::ListParams::default().labels("app.kubernetes.io/name=hookwarden-operator"),
        )
        .await
        .expect("list operator pods");
    let mut all = String::new();
    for pod in list {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if let Ok(text) = pods.logs(&name, &kube::api::LogParams::default()).await {
            all.push_str(&text);
        }
    }
    all
}

/// The object `name` of kind `K` in the test's namespace, if it exists.
pub async fn get<K>(ns: &TestNamespace, name: &str) -> Option<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    ns.api::<K>().get_opt(name).await.expect("get")
}

/// Runs `kubectl` with the test cluster's KUBECONFIG; returns (success, stdout + stderr).
pub fn kubectl(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("kubectl")
        .args(args)
        .output()
        .expect("run kubectl");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// `kubectl apply -n NAMESPACE -f - EXTRA...` of `yaml`; returns (success, stdout + stderr).
pub fn kubectl_stdin(namespace: &str, yaml: &str, extra: &[&str]) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new("kubectl")
        .args(["apply", "-n", namespace, "-f", "-"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("write to kubectl");
    let out = child.wait_with_output().expect("kubectl output");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// A GET of `path` on `host:port` with the receiver's own HTTP client; returns the status
/// code and body.
pub async fn http_get(
    host: &str,
    port: u16,
    path: &str,
) -> Result<(u16, String), hookwarden_receiver::Error> {
    let url = format!("http://{host}:{port}{path}");
    let answer = hookwarden_receiver::client::get(&url, Duration::from_secs(10)).await?;
    Ok((answer.status, answer.body))
}

/// Events (events.k8s.io/v1) in `namespace` regarding the object named `name`.
pub async fn events_regarding(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), namespace);
    api.list(&kube::api::ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Asks the API server whether `user` may do `verb` on `resource` (SubjectAccessReview).
pub async fn can(
    client: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
    name: Option<&str>,
) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                namespace: namespace.map(Into::into),
                name: name.map(Into::into),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview");
    answer.status.map(|s| s.allowed).unwrap_or(false)
}

// ---- deliveries ----

/// The `hookwarden-receiver` binary the tests sign and send with.
pub fn receiver_bin() -> PathBuf {
    std::env::var_os("HOOKWARDEN_RECEIVER_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/debug/hookwarden-receiver"
            ))
        })
}

/// Runs `hookwarden-receiver send`; returns (exit ok, printed answer).
pub fn send(
    url: &str,
    provider: &str,
    secret_file: &std::path::Path,
    body: &str,
    extra: &[&str],
) -> (bool, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(receiver_bin())
        .args(["send", url, "--provider", provider, "--secret-file"])
        .arg(secret_file)
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hookwarden-receiver send");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

/// Applies a Webhook recording to Events, waits until it is Ready, and returns its URL on
/// the Service's ClusterIP and a file holding its generated secret.
pub async fn ready_receiver(
    ns: &TestNamespace,
    name: &str,
    provider: &str,
    extra_spec: &str,
) -> (String, tempfile::NamedTempFile) {
    ns.apply_webhook(&format!(
        "apiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {{name: {name}}}\n\
         spec: {{path: /{name}, provider: {provider}{extra_spec}}}\n"
    ))
    .await;
    ns.webhook_ready(name, "True", "ReceiverAvailable").await;
    let file = generated_secret_file(ns, name).await;
    (service_url(ns, name).await, file)
}

/// The Webhook's `status.url` with the Service's ClusterIP in place of its DNS name (the
/// tests run on the host, outside the cluster's DNS).
pub async fn service_url(ns: &TestNamespace, webhook: &str) -> String {
    let w: Webhook = ns.api().get(webhook).await.unwrap();
    let url = w.status.and_then(|s| s.url).expect("status.url");
    let (host, path) = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split_once('/'))
        .expect("http://<service>.<namespace>.svc/<path>");
    let service = host.split('.').next().unwrap_or(host);
    let svc: Service = ns.api().get(service).await.unwrap();
    format!("http://{}/{path}", svc.spec.unwrap().cluster_ip.unwrap())
}

/// The secret the operator generated for `webhook`, in a file for `hookwarden-receiver
/// send`.
pub async fn generated_secret_file(ns: &TestNamespace, webhook: &str) -> tempfile::NamedTempFile {
    let secret: Secret = ns
        .api()
        .get(&format!("{webhook}-signing-secret"))
        .await
        .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &secret.data.unwrap()["secret"].0).unwrap();
    file
}

/// The first delivery after a pod turns Ready can meet a Service rule not yet in place.
pub fn send_eventually(
    url: &str,
    provider: &str,
    file: &std::path::Path,
    body: &str,
    extra: &[&str],
) -> String {
    for _ in 0..20 {
        let (ok, out) = send(url, provider, file, body, extra);
        if ok {
            return out;
        }
        if !out.contains("cannot send") {
            panic!("delivery refused: {out}");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("receiver at {url} never answered");
}

/// (pod uid, container restart count) of the pods that serve `webhook`: its own receiver's,
/// or its pool's. Never empty: a Webhook that is served has pods.
pub async fn receiver_pods(ns: &TestNamespace, webhook: &str) -> Vec<(String, i32)> {
    let w: Webhook = ns.api().get(webhook).await.unwrap();
    let selector = match w.spec.pool_name() {
        Some(pool) => format!("hookwarden.io/pool={pool}"),
        None => format!("app.kubernetes.io/instance={webhook}"),
    };
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let mut v: Vec<(String, i32)> = pods
        .list(&kube::api::ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            let restarts = p
                .status
                .and_then(|s| s.container_statuses)
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or_default();
            (p.metadata.uid.unwrap_or_default(), restarts)
        })
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no pod ({selector}) serves {webhook}");
    v
}

/// (name, uid, restarts) of the pods of the namespace's `default` pool.
pub async fn pool_pods(ns: &TestNamespace) -> Vec<(String, String, i32)> {
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let mut v: Vec<_> = pods
        .list(&kube::api::ListParams::default().labels("hookwarden.io/pool=default"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            let restarts = p
                .status
                .and_then(|s| s.container_statuses)
                .map(|c| c.iter().map(|c| c.restart_count).sum())
                .unwrap_or(0);
            (p.metadata.name.unwrap(), p.metadata.uid.unwrap(), restarts)
        })
        .collect();
    v.sort();
    v
}

/// The base URL of the `default` pool's Service (its ClusterIP).
pub async fn pool_url(ns: &TestNamespace) -> String {
    let svc: Service = ns.api().get("default-pool").await.unwrap();
    format!("http://{}", svc.spec.unwrap().cluster_ip.unwrap())
}

/// The names of the objects of kind `K` in the namespace, sorted.
pub async fn names<K>(ns: &TestNamespace) -> Vec<String>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let mut names: Vec<String> = ns
        .api::<K>()
        .list(&kube::api::ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|o| o.meta().name.clone())
        .collect();
    names.sort();
    names
}

/// The `state` view of the sink ConfigMap, parsed.
pub async fn config_map_json(ns: &TestNamespace, name: &str, key: &str) -> serde_json::Value {
    let cm: k8s_openapi::api::core::v1::ConfigMap = ns.api().get(name).await.unwrap();
    let text = cm
        .data
        .unwrap_or_default()
        .remove(key)
        .unwrap_or_else(|| panic!("ConfigMap {name} has no key {key}"));
    serde_json::from_str(&text).unwrap()
}

/// The organisation ids a Membrane `state` sink ConfigMap `name` holds, sorted.
pub async fn recorded_org_ids(ns: &TestNamespace, name: &str) -> Vec<String> {
    let state = config_map_json(ns, name, "membrane.json").await;
    let mut orgs: Vec<String> = state["organizations"]
        .as_array()
        .unwrap_or_else(|| panic!("ConfigMap {name} holds no organizations: {state}"))
        .iter()
        .map(|o| o["orgId"].as_str().unwrap().to_string())
        .collect();
    orgs.sort();
    orgs
}

/// The Gateway API HTTPRoutes of a test namespace.
pub fn http_routes(ns: &TestNamespace) -> Api<kube::api::DynamicObject> {
    Api::namespaced_with(
        ns.client.clone(),
        &ns.name,
        &hookwarden_operator::webhook::route::http_route_resource(),
    )
}

/// The HTTPRoute `name`, once it exists.
pub async fn route_eventually(
    routes: &Api<kube::api::DynamicObject>,
    name: &str,
) -> kube::api::DynamicObject {
    eventually(&format!("the HTTPRoute {name}"), CONVERGE, || async {
        routes
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "none".to_string())
    })
    .await
}

/// An application Deployment `billing` of the e2e stand-in app (restricted Pod Security),
/// whose pods carry `labels` besides `app: billing`.
pub fn billing_deployment(replicas: u32, labels: &str) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: billing, labels: {{app: billing}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: billing}}}}
  template:
    metadata: {{labels: {{app: billing{labels}}}}}
    spec:
      securityContext: {{runAsNonRoot: true, seccompProfile: {{type: RuntimeDefault}}}}
      terminationGracePeriodSeconds: 20
      containers:
        - name: app
          image: hookwarden-e2e-app:dev
          imagePullPolicy: Never
          ports: [{{name: http, containerPort: 8080}}]
          securityContext: {{allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#
    )
}
