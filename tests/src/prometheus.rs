//! A real Prometheus (Debian's package, installed by `tests/prometheus/install.sh`) for the
//! monitoring tests: started on the host, it scrapes the operator's and the receivers'
//! metrics endpoints (pod IPs, which the host reaches) and evaluates the chart's rendered
//! alert rules.
//!
//! Debian builds Prometheus without its Kubernetes service discovery, so the targets are
//! found here, as the chart's ServiceMonitors select them (Services by label, the endpoints
//! of their `metrics` port, `job` from `app.kubernetes.io/name`, and `namespace`,
//! `service`, `pod` labels), and handed to Prometheus as a `file_sd` file that
//! [`Prometheus::discover`] rewrites.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{OPERATOR_NAMESPACE, eventually};

/// The `job` labels the chart's ServiceMonitors give (`jobLabel: app.kubernetes.io/name`).
pub const OPERATOR_JOB: &str = "hookwarden-operator";
pub const RECEIVER_JOB: &str = "hookwarden-receiver";

/// A Prometheus process, stopped when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    /// Where the receivers are discovered.
    namespaces: Vec<String>,
    dir: tempfile::TempDir,
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
/// what a user's selection would give (every namespace and Webhook, a 5 m rate window, which
/// covers everything the test sent).
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
        .replace("$__rate_interval", "5m")
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
    /// (once [`Prometheus::discover`] found them) every second and evaluating `rules` (a
    /// rules file's YAML or JSON) every second.
    pub fn start(port: u16, namespaces: &[&str], rules: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("rules.yaml"), rules).expect("write rules");
        std::fs::write(dir.path().join("targets.json"), "[]").expect("write targets");
        std::fs::write(dir.path().join("prometheus.yaml"), config(dir.path()))
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
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            dir,
        }
    }

    /// Finds the operator's and the receivers' metrics endpoints now and hands them to
    /// Prometheus (which reads the file again within a second).
    pub async fn discover(&self) {
        let client = crate::client().await;
        let mut all = targets(
            &client,
            OPERATOR_NAMESPACE,
            "app.kubernetes.io/name=hookwarden-operator,app.kubernetes.io/component=metrics",
        )
        .await;
        for ns in &self.namespaces {
            all.extend(
                targets(
                    &client,
                    ns,
                    "app.kubernetes.io/name=hookwarden-receiver,app.kubernetes.io/managed-by=hookwarden-operator",
                )
                .await,
            );
        }
        let next = self.dir.path().join("targets.json.next");
        std::fs::write(&next, Value::Array(all).to_string()).expect("write targets");
        std::fs::rename(&next, self.dir.path().join("targets.json")).expect("move targets");
    }

    /// Prometheus's own log so far, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
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
                self.discover().await;
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

/// Scrapes every target of the `file_sd` file, every second; rules evaluated every second.
fn config(dir: &Path) -> String {
    serde_json::json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [dir.join("rules.yaml")],
        "scrape_configs": [{
            "job_name": "hookwarden",
            "file_sd_configs": [{"files": [dir.join("targets.json")], "refresh_interval": "1s"}],
        }],
    })
    .to_string()
}

/// The metrics endpoints of the Services in `namespace` with `selector`, labelled as the
/// Prometheus Operator labels a ServiceMonitor's targets.
async fn targets(client: &kube::Client, namespace: &str, selector: &str) -> Vec<Value> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::{Api, ListParams};
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for svc in services
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list Services")
    {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let job = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("app.kubernetes.io/name"))
            .cloned()
            .unwrap_or_default();
        let by_service = format!("kubernetes.io/service-name={name}");
        for slice in slices
            .list(&ListParams::default().labels(&by_service))
            .await
            .expect("list EndpointSlices")
        {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some("metrics"))
                .and_then(|p| p.port)
            else {
                continue;
            };
            for endpoint in &slice.endpoints {
                let pod = endpoint
                    .target_ref
                    .as_ref()
                    .and_then(|r| r.name.clone())
                    .unwrap_or_default();
                for address in &endpoint.addresses {
                    out.push(serde_json::json!({
                        "targets": [format!("{address}:{port}")],
                        "labels": {"job": job, "namespace": namespace, "service": name, "pod": pod},
                    }));
                }
            }
        }
    }
    out
}
