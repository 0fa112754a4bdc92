//! A real Prometheus (Debian's package, installed by `tests/prometheus/install.sh`) for the
//! monitoring tests: started on the host, it discovers the operator's and the receivers'
//! metrics endpoints through the API server as the chart's ServiceMonitors would, under a
//! ServiceAccount of its own that may only read Services, Endpoints and Pods in the
//! namespaces it scrapes, and evaluates the chart's rendered alert rules.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{OPERATOR_NAMESPACE, eventually, kubectl, kubectl_stdin};

/// The `job` labels the chart's ServiceMonitors give (`jobLabel: app.kubernetes.io/name`).
pub const OPERATOR_JOB: &str = "hookwarden-operator";
pub const RECEIVER_JOB: &str = "hookwarden-receiver";

/// A Prometheus process, stopped when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The chart's PrometheusRule rendered with `set` (Helm `--set` values, beside
/// `prometheusRule.enabled=true`), as a Prometheus rules file: its `spec`.
pub fn rendered_rules(set: &[&str]) -> String {
    let helm = concat!(env!("CARGO_MANIFEST_DIR"), "/chart/helm");
    let mut args = vec!["template", "--set", "prometheusRule.enabled=true"];
    for s in set {
        args.extend(["--set", s]);
    }
    let out = Command::new(helm)
        .args(&args)
        .output()
        .expect("run tests/chart/helm");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("rendered YAML");
    let rule = docs
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule among the rendered objects");
    serde_json::to_string(&rule["spec"]).expect("rules as JSON (YAML's subset)")
}

/// The expressions of the chart's Grafana dashboard, with Grafana's variables replaced by
/// what a user's selection would give (every namespace and Webhook, a 1 m rate window).
pub fn dashboard_expressions() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/hookwarden/dashboards/hookwarden.json"
    );
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("dashboard JSON");
    let mut found = Vec::new();
    collect_targets(&dashboard, "", &mut found);
    found
        .into_iter()
        .map(|(title, expr)| (title, grafana_variables(&expr)))
        .collect()
}

fn collect_targets(v: &Value, title: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            let title = map.get("title").and_then(Value::as_str).unwrap_or(title);
            if let Some(expr) = map.get("expr").and_then(Value::as_str)
                && map.contains_key("refId")
            {
                out.push((title.to_string(), expr.to_string()));
            }
            for child in map.values() {
                collect_targets(child, title, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_targets(i, title, out)),
        _ => {}
    }
}

/// Grafana's variables as a dashboard user with "All" selected would send them.
pub fn grafana_variables(expr: &str) -> String {
    let mut out = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("${__range}", "5m")
        .replace("$__range", "5m");
    // Template variables ($namespace, ${webhook}, ...): "All" is a regex matching anything.
    for var in ["namespace", "webhook", "provider", "job"] {
        out = out
            .replace(&format!("${{{var}}}"), ".*")
            .replace(&format!("${{{var}:regex}}"), ".*")
            .replace(&format!("${var}"), ".*");
    }
    out
}

impl Prometheus {
    /// Starts Prometheus on `port`, scraping the operator and the receivers of `namespaces`
    /// every second and evaluating `rules` (a rules file's YAML or JSON) every second.
    pub fn start(port: u16, namespaces: &[&str], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = identity(namespaces);
        std::fs::write(dir.path().join("token"), token.trim()).expect("write token");
        std::fs::write(dir.path().join("ca.crt"), cluster_ca()).expect("write CA");
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
        std::fs::write(
            dir.path().join("prometheus.yaml"),
            config(dir.path(), namespaces),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yaml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus (tests/prometheus/install.sh installs it)");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// Prometheus's own log so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/{path}`'s `data`, failing on anything but `status: success`.
    pub async fn api(&self, path: &str) -> Result<Value, String> {
        let (code, body) = crate::http_get("127.0.0.1", self.port, &format!("/api/v1/{path}"))
            .await
            .map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&body).map_err(|e| format!("{code} {body}: {e}"))?;
        if answer["status"] != "success" {
            return Err(format!("{code} {body}"));
        }
        Ok(answer["data"].clone())
    }

    /// The result of an instant query of `expr`.
    pub async fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("query?query={}", encode(expr))).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until every target of `job` is up, and there are `at_least` of them.
    pub async fn targets_up(&self, job: &str, at_least: usize) {
        eventually(
            &format!("{at_least} {job} targets up"),
            Duration::from_secs(90),
            || async {
                let up = self
                    .query(&format!("up{{job=\"{job}\"}}"))
                    .await
                    .map_err(|e| format!("{e}\n{}", self.log()))?;
                let healthy = up.iter().filter(|s| s["value"][1] == "1").count();
                if healthy >= at_least && healthy == up.len() {
                    Ok(())
                } else {
                    Err(format!("{up:?}"))
                }
            },
        )
        .await;
    }

    /// The alerts Prometheus holds now: (alert name, state, labels).
    pub async fn alerts(&self) -> Result<Vec<(String, String, Value)>, String> {
        let data = self.api("alerts").await?;
        Ok(data["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect())
    }
}

fn binary() -> PathBuf {
    ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("prometheus"))
}

/// Percent-encoding of a query parameter's value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The cluster's CA, from the kubeconfig.
fn cluster_ca() -> Vec<u8> {
    use base64::Engine;
    let (ok, data) = kubectl(&[
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ]);
    assert!(ok, "kubectl config view: {data}");
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .expect("CA data")
}

fn api_server() -> String {
    let (ok, server) = kubectl(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    assert!(ok, "kubectl config view: {server}");
    server.trim().to_string()
}

/// Prometheus's own identity: a ServiceAccount in the first of `namespaces`, allowed to
/// discover targets (read Services, Endpoints, EndpointSlices, Pods) in each of
/// `namespaces` and the operator's. Returns a token for it.
fn identity(namespaces: &[&str]) -> String {
    let home = namespaces[0];
    let (ok, out) = kubectl_stdin(
        home,
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: prometheus}\n",
        &[],
    );
    assert!(ok, "{out}");
    for ns in namespaces.iter().chain([&OPERATOR_NAMESPACE]) {
        let name = format!("prometheus-{home}");
        let (ok, out) = kubectl_stdin(
            ns,
            &format!(
                "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: {name}}}\n\
                 rules:\n- apiGroups: ['']\n  resources: [services, endpoints, pods]\n  verbs: [get, list, watch]\n\
                 - apiGroups: [discovery.k8s.io]\n  resources: [endpointslices]\n  verbs: [get, list, watch]\n\
                 ---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: {name}}}\n\
                 roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {name}}}\n\
                 subjects: [{{kind: ServiceAccount, name: prometheus, namespace: {home}}}]\n"
            ),
            &[],
        );
        assert!(ok, "{out}");
    }
    let (ok, token) = kubectl(&["-n", home, "create", "token", "prometheus", "--duration=1h"]);
    assert!(ok, "{token}");
    token
}

/// Removes what [`identity`] put in the operator's namespace (the test namespace goes with
/// the test).
pub fn forget_identity(home: &str) {
    let _ = kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "delete",
        "role,rolebinding",
        &format!("prometheus-{home}"),
        "--ignore-not-found",
    ]);
}

/// One scrape job per kind of target, discovered and labelled as the Prometheus Operator
/// does for the chart's ServiceMonitors: endpoints of Services selected by label, port
/// `metrics`, `job` from `app.kubernetes.io/name`, and `namespace`, `service`, `pod`.
fn config(dir: &Path, namespaces: &[&str]) -> String {
    let sd = |names: &[&str]| {
        serde_json::json!([{
            "role": "endpointslice",
            "api_server": api_server(),
            "tls_config": {"ca_file": dir.join("ca.crt")},
            "authorization": {"credentials_file": dir.join("token")},
            "namespaces": {"names": names},
        }])
    };
    let relabel = |selector: Vec<(&str, &str)>| {
        let mut rules: Vec<Value> = selector
            .into_iter()
            .map(|(label, value)| {
                serde_json::json!({
                    "source_labels": [format!("__meta_kubernetes_service_label_{label}")],
                    "regex": value,
                    "action": "keep",
                })
            })
            .collect();
        rules.extend([
            serde_json::json!({"source_labels": ["__meta_kubernetes_endpointslice_port_name"], "regex": "metrics", "action": "keep"}),
            serde_json::json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
            serde_json::json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}),
            serde_json::json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
            serde_json::json!({"source_labels": ["__meta_kubernetes_service_label_app_kubernetes_io_name"], "target_label": "job"}),
        ]);
        rules
    };
    serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [dir.join("rules.yaml")],
        "scrape_configs": [
            {
                "job_name": OPERATOR_JOB,
                "kubernetes_sd_configs": sd(&[OPERATOR_NAMESPACE]),
                "relabel_configs": relabel(vec![
                    ("app_kubernetes_io_name", OPERATOR_JOB),
                    ("app_kubernetes_io_component", "metrics"),
                ]),
            },
            {
                "job_name": RECEIVER_JOB,
                "kubernetes_sd_configs": sd(namespaces),
                "relabel_configs": relabel(vec![
                    ("app_kubernetes_io_name", RECEIVER_JOB),
                    ("app_kubernetes_io_managed_by", "hookwarden-operator"),
                ]),
            },
        ],
    })
    .to_string()
}
