"""The Helm chart against the project's real Kubernetes (run by tests/e2e.sh, last: it
upgrades, uninstalls and reinstalls the release every other test runs under).

- What the chart renders for this cluster, with defaults and with every option, is accepted
  by the API server (server-side dry run), and so is all of the plain manifest
  deploy/hookwarden.yaml, its policy/v1 PodDisruptionBudget included.
- `helm upgrade` with a changed value rolls the operator, which goes on reconciling.
- `helm uninstall` removes everything the chart made but the CRD, which Helm never deletes
  (deleting it would delete every Webhook), and so leaves Webhooks and their receivers
  running; a reinstall picks them up again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

import helm_python as helm

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import helm as tool  # noqa: E402
from test_chart import EVERY_OPTION  # noqa: E402

REPO = tool.REPO
RELEASE = "hookwarden"
NAMESPACE = "hookwarden-system"
LOCAL_VALUES = HERE / "local.yaml"
TIMEOUT = 180
# Stand-ins for the Prometheus Operator's CRDs (tests/chart/*-crd.yaml), by name.
PROMETHEUS_OPERATOR_CRDS = {
    "servicemonitors.monitoring.coreos.com": "servicemonitor-crd.yaml",
    "prometheusrules.monitoring.coreos.com": "prometheusrule-crd.yaml",
}


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    out = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def get_json(*args: str) -> dict | None:
    out = subprocess.run(["kubectl", "get", *args, "-o", "json"], capture_output=True, text=True)
    if out.returncode != 0:
        if "NotFound" in out.stderr or "not found" in out.stderr:
            return None
        raise AssertionError(out.stderr)
    return json.loads(out.stdout)


def eventually(what: str, check, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError as error:
            last = error
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; last: {last}")


def helm_cli(*args: str) -> None:
    subprocess.run([sys.executable, str(HERE / "helm.py"), *args], check=True)


def values_file(values: dict, path: Path) -> Path:
    path.write_text(json.dumps(values))  # JSON is YAML
    return path


def ready(namespace: str, name: str) -> bool:
    w = get_json("webhook", "-n", namespace, name)
    conditions = (w or {}).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def apply_webhook(namespace: str, name: str, event_types: list[str]) -> None:
    manifest = {
        "apiVersion": "hookwarden.io/v1alpha1", "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"path": f"/{name}", "provider": "membrane", "eventTypes": event_types},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(manifest))


def operator_pods() -> set[str]:
    pods = get_json("pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=hookwarden-operator")
    return {p["metadata"]["name"] for p in pods["items"]
            if not p["metadata"].get("deletionTimestamp")}


class Render(unittest.TestCase):
    """Rendered for this cluster (its version and APIs) by a server dry run of helm install."""

    @classmethod
    def setUpClass(cls) -> None:
        suffix = os.urandom(3).hex()
        cls.namespaces = [f"hw-chart-watch-a-{suffix}", f"hw-chart-watch-b-{suffix}"]
        for ns in cls.namespaces:
            kubectl("create", "namespace", ns)
        # The Prometheus Operator's CRDs, so the ServiceMonitors and the PrometheusRule have
        # a kind to be checked as.
        for crd in PROMETHEUS_OPERATOR_CRDS.values():
            kubectl("apply", "-f", str(HERE / crd))
        # (polled: `kubectl wait` fails outright on a CRD whose status is not written yet)
        for name in PROMETHEUS_OPERATOR_CRDS:
            eventually(f"the CRD {name} established", lambda name=name: kubectl(
                "get", "crd", name, "-o",
                'jsonpath={.status.conditions[?(@.type=="Established")].status}') == "True")

    @classmethod
    def tearDownClass(cls) -> None:
        for ns in cls.namespaces:
            kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for name in PROMETHEUS_OPERATOR_CRDS:
            kubectl("delete", "crd", name, "--wait=false", check=False)

    def server_dry_run(self, values: dict) -> str:
        cfg = helm.Config(namespace=NAMESPACE, kubeconfig_path=os.environ.get("KUBECONFIG"))
        release = cfg.install(str(tool.CHART), "hookwarden-dryrun", values,
                              namespace=NAMESPACE, dry_run="server")
        manifest = release["manifest"]
        out = kubectl("apply", "--dry-run=server", "-f", "-", stdin=manifest)
        return manifest + out

    def test_defaults_are_accepted(self) -> None:
        out = self.server_dry_run({})
        self.assertIn("deployment.apps/hookwarden-dryrun-operator created (server dry run)", out)
        # policy/v1, the only PodDisruptionBudget version every supported Kubernetes serves.
        self.assertIn("apiVersion: policy/v1\nkind: PodDisruptionBudget", out)
        self.assertIn(
            "poddisruptionbudget.policy/hookwarden-dryrun-operator created (server dry run)", out)

    def test_every_option_is_accepted(self) -> None:
        values = json.loads(json.dumps(EVERY_OPTION))
        values["watchNamespaces"] = self.namespaces
        values["grafanaDashboard"]["namespace"] = self.namespaces[0]
        out = self.server_dry_run(values)
        for kind in ["servicemonitor.monitoring.coreos.com/hookwarden-dryrun-operator",
                     "prometheusrule.monitoring.coreos.com/hookwarden-dryrun",
                     "configmap/hookwarden-dryrun-dashboard",
                     "networkpolicy.networking.k8s.io/hookwarden-dryrun-operator",
                     "rolebinding.rbac.authorization.k8s.io/hookwarden-dryrun-operator"]:
            self.assertIn(f"{kind} created (server dry run)", out)
        # Only the injector's binding is cluster-wide: its configuration is cluster-scoped.
        bindings = [line for line in out.splitlines()
                    if line.startswith("clusterrolebinding.") and "(server dry run)" in line]
        self.assertEqual(bindings, ["clusterrolebinding.rbac.authorization.k8s.io/"
                                    "hookwarden-dryrun-operator-injector created (server dry run)"])

    def test_plain_manifest_is_accepted(self) -> None:
        # All of it in one apply, the PodDisruptionBudget (policy/v1) included: every API in
        # deploy/hookwarden.yaml is served by each supported Kubernetes, 1.33 and later.
        out = kubectl("apply", "--dry-run=server", "-f", str(REPO / "deploy" / "hookwarden.yaml"))
        for kind in ["namespace/hookwarden-system", "serviceaccount/hookwarden-operator",
                     "clusterrole.rbac.authorization.k8s.io/hookwarden-operator",
                     "clusterrolebinding.rbac.authorization.k8s.io/hookwarden-operator",
                     "service/hookwarden-operator-metrics", "deployment.apps/hookwarden-operator",
                     "poddisruptionbudget.policy/hookwarden-operator"]:
            self.assertIn(kind, out)


class Lifecycle(unittest.TestCase):
    """Upgrade, uninstall and reinstall of the release the e2e tests run under."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.ns = f"hw-chart-lifecycle-{os.urandom(3).hex()}"
        kubectl("create", "namespace", cls.ns)

    @classmethod
    def tearDownClass(cls) -> None:
        kubectl("delete", "namespace", cls.ns, "--wait=false", check=False)

    @staticmethod
    def log_level() -> str:
        deployment = get_json("deployment", "-n", NAMESPACE, "hookwarden-operator")
        env = {e["name"]: e.get("value")
               for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env["HOOKWARDEN_LOG_LEVEL"]

    def test_upgrade_uninstall_reinstall(self) -> None:
        apply_webhook(self.ns, "first", ["org-created"])
        eventually("Webhook first Ready", lambda: ready(self.ns, "first"))

        # helm upgrade with a changed value rolls the operator.
        before = operator_pods()
        self.assertEqual(len(before), 2)
        revision = helm.Config(namespace=NAMESPACE).status(RELEASE)["revision"]
        level = "debug" if self.log_level() != "debug" else "info"
        helm_cli("upgrade", "--values", str(LOCAL_VALUES), "--set", f"logLevel={level}")
        self.assertEqual(self.log_level(), level)
        kubectl("-n", NAMESPACE, "rollout", "status", "deployment/hookwarden-operator",
                f"--timeout={TIMEOUT}s")
        after = eventually("old operator pods gone",
                           lambda: (lambda p: p if p and not (p & before) else None)(operator_pods()))
        self.assertEqual(len(after), 2)
        release = helm.Config(namespace=NAMESPACE).status(RELEASE)
        self.assertEqual((release["revision"], release["status"]), (revision + 1, "deployed"))
        # The upgraded operator reconciles.
        apply_webhook(self.ns, "second", ["org-access-requested"])
        eventually("Webhook second Ready", lambda: ready(self.ns, "second"))

        # helm uninstall: the chart's objects go; the CRD, Webhooks and receivers stay.
        helm_cli("uninstall")
        gone = [
            ("deployment", "-n", NAMESPACE, "hookwarden-operator"),
            ("serviceaccount", "-n", NAMESPACE, "hookwarden-operator"),
            ("service", "-n", NAMESPACE, "hookwarden-operator-metrics"),
            ("poddisruptionbudget", "-n", NAMESPACE, "hookwarden-operator"),
            ("role", "-n", NAMESPACE, "hookwarden-operator-leader-election"),
            ("rolebinding", "-n", NAMESPACE, "hookwarden-operator-leader-election"),
            ("clusterrole", "hookwarden-operator"),
            ("clusterrolebinding", "hookwarden-operator"),
            ("service", "-n", NAMESPACE, "hookwarden-operator-webhook"),
            ("role", "-n", NAMESPACE, "hookwarden-operator-webhook-tls"),
            ("rolebinding", "-n", NAMESPACE, "hookwarden-operator-webhook-tls"),
            ("clusterrole", "hookwarden-operator-injector"),
            ("clusterrolebinding", "hookwarden-operator-injector"),
            # written by the operator, owned by the injector's ClusterRole: collected with it
            ("mutatingwebhookconfiguration", "hookwarden-operator"),
            ("secret", "-n", NAMESPACE, "hookwarden-operator-webhook-tls"),
        ]
        for obj in gone:
            eventually(f"{obj} deleted", lambda obj=obj: get_json(*obj) is None)
        releases = get_json("secrets", "-n", NAMESPACE, "-l", "owner=helm,name=hookwarden")
        self.assertEqual(releases["items"], [])
        self.assertIsNotNone(get_json("crd", "webhooks.hookwarden.io"))
        for name in ["first", "second"]:
            self.assertIsNotNone(get_json("webhook", "-n", self.ns, name))
        # (both served by the namespace's default pool, which stays with its pods)
        self.assertIsNotNone(get_json("receiverpool", "-n", self.ns, "default"))
        pool = get_json("deployment", "-n", self.ns, "default-pool")
        self.assertIsNotNone(pool)
        self.assertEqual(pool["status"].get("availableReplicas"), pool["spec"]["replicas"])
        self.assertGreaterEqual(pool["spec"]["replicas"], 1)
        eventually("operator pods gone", lambda: not operator_pods())

        # A reinstall takes the Webhooks over again: a spec change is reconciled.
        helm_cli("install", "--values", str(LOCAL_VALUES))
        kubectl("-n", NAMESPACE, "rollout", "status", "deployment/hookwarden-operator",
                f"--timeout={TIMEOUT}s")
        apply_webhook(self.ns, "first", ["org-created", "user-invited-to-org"])

        def reconciled() -> bool:
            w = get_json("webhook", "-n", self.ns, "first")
            return (w["status"].get("observedGeneration") == w["metadata"]["generation"]
                    and ready(self.ns, "first"))

        eventually("the reinstalled operator reconciles the change", reconciled)


if __name__ == "__main__":
    unittest.main()
