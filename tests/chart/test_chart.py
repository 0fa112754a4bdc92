"""The Helm chart through Helm's own engine (helm-python-sdk), without a cluster.

Run by `make chart` (part of `make test`): tests/chart/python -m unittest ...
The cluster half (the API server accepts what renders; install, upgrade, uninstall) is
tests/chart/test_cluster.py, run by tests/e2e.sh.
"""

from __future__ import annotations

import subprocess
import sys
import unittest
from pathlib import Path

import helm_python as helm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm as tool  # noqa: E402  (tests/chart/helm.py)

REPO = tool.REPO
CHART = tool.CHART

# The Kubernetes minors the project supports (k8s-openapi 0.29's range); Chart.yaml's
# kubeVersion says the same lower bound.
SUPPORTED_KUBE_VERSIONS = ["v1.33.0", "v1.34.0", "v1.35.0", "v1.36.0", "v1.37.0"]

# Every option the chart offers, set to something other than its default.
EVERY_OPTION = {
    "operator": {
        "replicaCount": 3,
        "image": {"repository": "registry.example.com/hw/operator", "tag": "9.9.9",
                  "pullPolicy": "Always"},
        "leaderElection": True,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"},
                      "limits": {"memory": "256Mi"}},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "platform",
                         "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]}]}]}}},
        "priorityClassName": "system-cluster-critical",
        "podLabels": {"team": "platform"},
        "podAnnotations": {"example.com/owner": "platform"},
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
    },
    "receiver": {
        "image": {"repository": "registry.example.com/hw/receiver", "tag": "9.9.9",
                  "pullPolicy": "Always"},
        "imagePullSecrets": ["regcred"],
    },
    "imagePullSecrets": ["regcred"],
    "guardrails": {
        "receiverImages": ["registry.example.com/hw/*", "ghcr.io/acme/receiver:1.0"],
        "ingressAnnotations": ["cert-manager.io/cluster-issuer"],
        "forwardHosts": ["*.internal.example.com"],
    },
    "watchNamespaces": ["team-a", "team-b"],
    "logLevel": "debug",
    "logFormat": "text",
    "serviceAccount": {"annotations": {"example.com/sa": "yes"}},
    "commonLabels": {"example.com/cost-centre": "42"},
    "commonAnnotations": {"example.com/contact": "platform@example.com"},
    "metrics": {"service": {"enabled": True, "port": 9000,
                            "annotations": {"prometheus.io/scrape": "true"}}},
    "serviceMonitor": {"enabled": True, "receivers": True, "interval": "15s",
                       "labels": {"release": "prometheus"}, "jobLabel": "app.kubernetes.io/part-of"},
    "prometheusRule": {
        "enabled": True, "labels": {"release": "prometheus"},
        "operatorSelector": 'job="hookwarden",namespace="{{ .Release.Namespace }}"',
        "receiverSelector": 'job="hookwarden"',
        "alerts": {
            "webhookNotReady": {"for": "15m", "severity": "page"},
            "signatureRefusals": {"window": "15m", "ratio": 0.75, "minCount": 20, "for": "10m",
                                  "severity": "page"},
            "sinkNotRecording": {"window": "15m", "ratio": 0.2, "minCount": 10, "for": "10m",
                                 "severity": "page"},
            "deliveriesShed": {"window": "15m", "ratio": 0.2, "minCount": 10, "for": "10m",
                               "severity": "page"},
            "sinkNearlyFull": {"ratio": 0.9, "for": "30m", "severity": "ticket"},
            "operatorNoLeader": {"for": "10m", "severity": "page"},
            "receiverDown": {"for": "10m", "severity": "page"},
        },
    },
    "grafanaDashboard": {"enabled": True, "namespace": "monitoring", "label": "dashboards",
                         "labelValue": "hookwarden", "annotations": {"grafana_folder": "Webhooks"}},
    "networkPolicy": {"enabled": True, "metricsFrom": [
        {"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]},
}


def render(values: dict | None = None, namespace: str = "hookwarden-system") -> list[dict]:
    chart = helm.Chart.load(CHART)
    chart.validate_schema(values or {})
    out = chart.render(values or {}, name="hookwarden", namespace=namespace, is_install=True)
    return [helm.values_from_yaml(text) for _, text in tool.documents(out)]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict], kind: str, name: str | None = None) -> dict:
    found = find(objects, kind, name)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def env(deployment: dict) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


class Lint(unittest.TestCase):
    def lint(self, values: dict, kube_version: str | None = None) -> None:
        report = helm.lint(CHART, values, strict=True, kube_version=kube_version)
        problems = [m for m in report["messages"] if m["severity"] >= 2]
        self.assertEqual(problems, [], kube_version)
        self.assertEqual(report["errors"], [], kube_version)
        self.assertEqual(report["total_charts_linted"], 1)

    def test_lint_is_clean_with_defaults(self) -> None:
        self.lint({})

    def test_lint_is_clean_with_every_option(self) -> None:
        self.lint(EVERY_OPTION)

    def test_lint_is_clean_on_every_supported_kubernetes(self) -> None:
        # Lint renders for the given version and warns (strict: fails) of any API that version
        # deprecates or no longer serves, as policy/v1beta1 PodDisruptionBudgets from 1.21.
        for version in SUPPORTED_KUBE_VERSIONS:
            self.lint(EVERY_OPTION, kube_version=version)


class Schema(unittest.TestCase):
    def rejects(self, values: dict, mention: str) -> None:
        chart = helm.Chart.load(CHART)
        with self.assertRaises(helm.HelmValuesError) as caught:
            chart.validate_schema(values)
        self.assertIn(mention, str(caught.exception))

    def test_misspelt_keys_are_refused(self) -> None:
        self.rejects({"operator": {"replicaCout": 3}}, "replicaCout")
        self.rejects({"loglevel": "debug"}, "loglevel")
        self.rejects({"receiver": {"image": {"reposit0ry": "x"}}}, "reposit0ry")
        self.rejects({"serviceMonitor": {"enable": True}}, "enable")
        self.rejects({"prometheusRule": {"alerts": {"signatureRefusal": {}}}}, "signatureRefusal")
        self.rejects({"grafanaDashboard": {"labels": {}}}, "labels")

    def test_bad_values_are_refused(self) -> None:
        self.rejects({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy")
        self.rejects({"logFormat": "xml"}, "logFormat")
        self.rejects({"watchNamespaces": ["Team_A"]}, "watchNamespaces")
        self.rejects({"operator": {"replicaCount": -1}}, "replicaCount")
        self.rejects({"prometheusRule": {"alerts": {"signatureRefusals": {"ratio": 50}}}}, "ratio")
        # --set gives a decimal as a string: one between 0 and 1 is taken, nothing else.
        for ratio in ["1.5", "-0.1", "0.9x", "abc", "", -0.1]:
            self.rejects({"prometheusRule": {"alerts": {"sinkNearlyFull": {"ratio": ratio}}}},
                         "ratio")
        self.rejects({"prometheusRule": {"alerts": {"sinkNearlyFull": {"for": "5 min"}}}}, "for")
        self.rejects({"grafanaDashboard": {"namespace": "Monitoring"}}, "namespace")
        # A comma would smuggle a second pattern into the operator's list.
        self.rejects({"guardrails": {"receiverImages": ["a,b"]}}, "receiverImages")
        self.rejects({"guardrails": {"forwardHosts": ["https://x.example.com"]}}, "forwardHosts")

    def test_defaults_and_every_option_pass(self) -> None:
        chart = helm.Chart.load(CHART)
        chart.validate_schema({})
        chart.validate_schema(EVERY_OPTION)

    def test_ratios_may_be_numbers_or_decimal_strings(self) -> None:
        chart = helm.Chart.load(CHART)
        for ratio in [0, 1, 0.5, "0", "0.9", "0.05", "1", "1.0"]:
            chart.validate_schema({"prometheusRule": {"alerts": {
                "signatureRefusals": {"ratio": ratio}, "sinkNearlyFull": {"ratio": ratio}}}})

    def test_values_yaml_documents_every_key(self) -> None:
        # "Documented line by line": every key has a comment right above it, except the keys
        # inside free-form data (resources and the like), which Kubernetes documents.
        free_form = {"resources", "nodeSelector", "tolerations", "affinity", "podLabels",
                     "podAnnotations", "annotations", "labels", "commonLabels",
                     "commonAnnotations", "metricsFrom"}
        lines = (CHART / "values.yaml").read_text().splitlines()
        ancestors: list[tuple[int, str]] = []
        undocumented = []
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
                continue
            indent = len(line) - len(line.lstrip())
            key = stripped.split(":", 1)[0]
            while ancestors and ancestors[-1][0] >= indent:
                ancestors.pop()
            inside_data = any(a in free_form for _, a in ancestors)
            ancestors.append((indent, key))
            if inside_data:
                continue
            if not (i and lines[i - 1].strip().startswith("#")):
                undocumented.append(key)
        self.assertEqual(undocumented, [])


class Defaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.objects = render()

    def test_the_crd_is_the_generated_one(self) -> None:
        chart = helm.Chart.load(CHART)
        crds = chart.crds
        names = ["receiverpools.hookwarden.io.yaml", "webhooks.hookwarden.io.yaml"]
        self.assertEqual(sorted(c["name"] for c in crds), [f"crds/{n}" for n in names])
        for crd in crds:
            committed = (REPO / crd["name"]).read_text()
            self.assertEqual(crd["data"], committed)
        self.assertTrue((CHART / "crds").is_symlink(), "charts/hookwarden/crds must link crds/")

    def test_objects(self) -> None:
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in self.objects)
        self.assertEqual(kinds, sorted([
            ("ServiceAccount", "hookwarden-operator"),
            ("ClusterRole", "hookwarden-operator"),
            ("ClusterRoleBinding", "hookwarden-operator"),
            ("Role", "hookwarden-operator-leader-election"),
            ("RoleBinding", "hookwarden-operator-leader-election"),
            ("Deployment", "hookwarden-operator"),
            ("PodDisruptionBudget", "hookwarden-operator"),
            ("Service", "hookwarden-operator-metrics"),
            ("Service", "hookwarden-operator-webhook"),
            ("ClusterRole", "hookwarden-operator-injector"),
            ("ClusterRoleBinding", "hookwarden-operator-injector"),
            ("Role", "hookwarden-operator-webhook-tls"),
            ("RoleBinding", "hookwarden-operator-webhook-tls"),
        ]))
        for o in self.objects:
            if o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
                self.assertEqual(o["metadata"]["namespace"], "hookwarden-system", o["kind"])

    def test_operator_pods_are_restricted(self) -> None:
        d = one(self.objects, "Deployment")
        pod = d["spec"]["template"]["spec"]
        self.assertEqual(d["spec"]["replicas"], 2)
        self.assertEqual(pod["serviceAccountName"], "hookwarden-operator")
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
        c = pod["containers"][0]
        self.assertEqual(c["image"], "ghcr.io/hookwarden/hookwarden-operator:0.1.0")
        sc = c["securityContext"]
        self.assertFalse(sc["allowPrivilegeEscalation"])
        self.assertTrue(sc["readOnlyRootFilesystem"])
        self.assertEqual(sc["capabilities"]["drop"], ["ALL"])
        self.assertIn("requests", c["resources"])
        e = env(d)
        self.assertEqual(e["HOOKWARDEN_RECEIVER_IMAGE"], "ghcr.io/hookwarden/hookwarden-receiver:0.1.0")
        self.assertEqual(e["HOOKWARDEN_LEADER_ELECT"], "true")
        self.assertNotIn("HOOKWARDEN_WATCH_NAMESPACES", e)
        self.assertIn("--lease-name=hookwarden-operator", c["args"])

    def test_pdb_is_policy_v1_whatever_the_kubernetes(self) -> None:
        # Every supported version serves policy/v1, so the chart does not ask the cluster
        # (.Capabilities) which version to render: nothing it renders depends on the version.
        pdb = one(self.objects, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        chart = helm.Chart.load(CHART)
        for template in chart.templates:
            self.assertNotIn(".Capabilities", template["data"], template["name"])
        # Helm refuses to install or upgrade on a cluster older than this; the SDK's offline
        # render and lint take no notice of it, so this test can only read the claim.
        self.assertEqual(chart.metadata["kubeVersion"], ">=1.33.0-0")

    def test_pdb_and_metrics_service_select_the_operator(self) -> None:
        selector = one(self.objects, "Deployment")["spec"]["selector"]["matchLabels"]
        pdb = one(self.objects, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["selector"]["matchLabels"], selector)
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        svc = one(self.objects, "Service", "hookwarden-operator-metrics")
        self.assertEqual(svc["spec"]["selector"], selector)
        self.assertEqual(svc["spec"]["ports"][0]["name"], "metrics")
        # The admission webhook: every replica serves it, on the port the container names.
        hook = one(self.objects, "Service", "hookwarden-operator-webhook")
        self.assertEqual(hook["spec"]["selector"], selector)
        self.assertEqual(hook["spec"]["ports"], [{"name": "webhook", "port": 443,
                                                 "targetPort": "webhook", "protocol": "TCP"}])
        c = one(self.objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
        self.assertIn({"name": "webhook", "containerPort": 9443}, c["ports"])
        for arg in ["--injector-service=hookwarden-operator-webhook",
                    "--injector-secret=hookwarden-operator-webhook-tls",
                    "--injector-configuration=hookwarden-operator",
                    "--injector-owner=hookwarden-operator-injector"]:
            self.assertIn(arg, c["args"])

    def test_cluster_role_is_least_privilege(self) -> None:
        rules = one(self.objects, "ClusterRole", "hookwarden-operator")["rules"]
        granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        for rule in rules:
            self.assertNotIn("*", rule["verbs"])
            self.assertNotIn("*", rule["resources"])
        # Secrets: read one by name and create the generated one; never changed. list and
        # watch only so that the operator may grant them to a pool on its Webhooks' Secrets.
        secret_verbs = {v for (g, r, v) in granted if r == "secrets"}
        self.assertEqual(secret_verbs, {"get", "list", "watch", "create"})
        # Webhooks: never written except their status.
        webhook_verbs = {v for (g, r, v) in granted if r == "webhooks"}
        self.assertEqual(webhook_verbs, {"get", "list", "watch"})
        self.assertEqual({v for (g, r, v) in granted if r == "webhooks/status"}, {"get", "patch"})
        # ReceiverPools: only the default one is created; never changed except their status.
        self.assertEqual({v for (g, r, v) in granted if r == "receiverpools"},
                         {"get", "list", "watch", "create"})
        # Nothing cluster-scoped besides what it reads through the binding.
        resources = {r for (_, r, _) in granted}
        self.assertEqual(resources, {
            "webhooks", "webhooks/status", "deployments", "services", "serviceaccounts",
            "configmaps", "secrets", "roles", "rolebindings", "ingresses", "httproutes",
            "gateways", "pods", "events", "receiverpools", "receiverpools/status",
            "poddisruptionbudgets", "endpointslices", "leases"})
        self.assertEqual({v for (g, r, v) in granted if r == "endpointslices"}, {"list", "watch"})
        # Leases: each receiver Deployment's writer Lease, created and labelled; the rest
        # only because a receiver's Role grants it on its own Lease. Never updated whole,
        # never deleted (it goes with its Deployment).
        self.assertEqual({v for (g, r, v) in granted if r == "leases"},
                         {"get", "list", "watch", "create", "patch"})
        # Gateways: read one by name, for its listeners; never listed or changed.
        self.assertEqual({v for (g, r, v) in granted if r == "gateways"}, {"get"})
        # Pods (spec.sidecar): counted, never written (the receiver is added at admission).
        self.assertEqual({v for (g, r, v) in granted if r == "pods"}, {"get", "list", "watch"})

    def test_the_injector_may_write_only_its_own_configuration_and_certificate(self) -> None:
        rules = one(self.objects, "ClusterRole", "hookwarden-operator-injector")["rules"]
        by_name = {(r["resources"][0], v): r.get("resourceNames") for r in rules for v in r["verbs"]}
        # create cannot be limited by name in RBAC; everything else is.
        self.assertEqual(by_name, {
            ("mutatingwebhookconfigurations", "create"): None,
            ("mutatingwebhookconfigurations", "get"): ["hookwarden-operator"],
            ("mutatingwebhookconfigurations", "patch"): ["hookwarden-operator"],
            ("clusterroles", "get"): ["hookwarden-operator-injector"],
        })
        tls = one(self.objects, "Role", "hookwarden-operator-webhook-tls")
        self.assertEqual(tls["metadata"]["namespace"], "hookwarden-system")
        by_name = {v: r.get("resourceNames") for r in tls["rules"] for v in r["verbs"]}
        self.assertEqual(by_name, {"create": None, "get": ["hookwarden-operator-webhook-tls"],
                                   "update": ["hookwarden-operator-webhook-tls"]})
        binding = one(self.objects, "ClusterRoleBinding", "hookwarden-operator-injector")
        self.assertEqual(binding["roleRef"]["name"], "hookwarden-operator-injector")

    def test_notes_tell_the_next_steps(self) -> None:
        chart = helm.Chart.load(CHART)
        out = chart.render({}, name="hookwarden", namespace="hw", is_install=True)
        notes = next(v for k, v in out.items() if k.endswith("NOTES.txt"))
        self.assertIn("kubectl -n hw rollout status deployment/hookwarden-operator", notes)
        self.assertIn("kind: Webhook", notes)
        self.assertIn(".status.secretName", notes)
        self.assertIn("externalUrl", notes)

    def test_plain_manifest_is_not_stale(self) -> None:
        generated = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("helm.py")), "manifest"],
            check=True, capture_output=True, text=True).stdout
        committed = (REPO / "deploy" / "hookwarden.yaml").read_text()
        self.assertTrue(generated == committed,
                        "deploy/hookwarden.yaml is stale: run `make manifests` and commit it")

    def test_plain_manifest_holds_everything_with_the_pdb(self) -> None:
        # One file for every supported version: each serves policy/v1, so the PDB needs no
        # file of its own.
        main = (REPO / "deploy" / "hookwarden.yaml").read_text()
        self.assertEqual(main.count("apiVersion: policy/v1\nkind: PodDisruptionBudget"), 1)
        self.assertEqual(main.count("kind: PodDisruptionBudget"), 1)
        self.assertIn("kind: Deployment", main)
        self.assertNotIn("deploy/pdb.yaml", main)
        self.assertFalse((REPO / "deploy" / "pdb.yaml").exists())
        self.assertNotIn("pdb.yaml", (REPO / "deploy" / "kustomization.yaml").read_text())


class EveryOption(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        cls.objects = render(EVERY_OPTION)

    def test_watched_namespaces_get_role_bindings_not_a_cluster_binding(self) -> None:
        # Only the injector's, whose configuration is cluster-scoped.
        self.assertEqual([b["metadata"]["name"] for b in find(self.objects, "ClusterRoleBinding")],
                         ["hookwarden-operator-injector"])
        bindings = [o for o in find(self.objects, "RoleBinding", "hookwarden-operator")]
        self.assertEqual(sorted(b["metadata"]["namespace"] for b in bindings), ["team-a", "team-b"])
        for b in bindings:
            self.assertEqual(b["roleRef"], {"apiGroup": "rbac.authorization.k8s.io",
                                            "kind": "ClusterRole", "name": "hookwarden-operator"})
            self.assertEqual(b["subjects"][0]["namespace"], "hookwarden-system")
        self.assertEqual(env(one(self.objects, "Deployment"))["HOOKWARDEN_WATCH_NAMESPACES"],
                         "team-a,team-b")

    def test_images_logs_and_scheduling(self) -> None:
        d = one(self.objects, "Deployment")
        pod = d["spec"]["template"]["spec"]
        c = pod["containers"][0]
        self.assertEqual(d["spec"]["replicas"], 3)
        self.assertEqual(c["image"], "registry.example.com/hw/operator:9.9.9")
        self.assertEqual(c["imagePullPolicy"], "Always")
        self.assertEqual(pod["imagePullSecrets"], [{"name": "regcred"}])
        self.assertEqual(pod["nodeSelector"], {"kubernetes.io/os": "linux"})
        self.assertEqual(pod["tolerations"][0]["key"], "dedicated")
        self.assertIn("nodeAffinity", pod["affinity"])
        self.assertEqual(pod["priorityClassName"], "system-cluster-critical")
        self.assertEqual(d["spec"]["template"]["metadata"]["labels"]["team"], "platform")
        self.assertEqual(d["spec"]["template"]["metadata"]["annotations"],
                         {"example.com/owner": "platform"})
        self.assertEqual(c["resources"]["limits"]["memory"], "256Mi")
        e = env(d)
        self.assertEqual(e["HOOKWARDEN_RECEIVER_IMAGE"], "registry.example.com/hw/receiver:9.9.9")
        self.assertEqual(e["HOOKWARDEN_RECEIVER_IMAGE_PULL_POLICY"], "Always")
        self.assertEqual(e["HOOKWARDEN_RECEIVER_IMAGE_PULL_SECRETS"], "regcred")
        self.assertEqual(e["HOOKWARDEN_LOG_LEVEL"], "debug")
        self.assertEqual(e["HOOKWARDEN_LOG_FORMAT"], "text")
        self.assertEqual(e["HOOKWARDEN_ALLOWED_RECEIVER_IMAGES"],
                         "registry.example.com/hw/*,ghcr.io/acme/receiver:1.0")
        self.assertEqual(e["HOOKWARDEN_ALLOWED_INGRESS_ANNOTATIONS"],
                         "cert-manager.io/cluster-issuer")
        self.assertEqual(e["HOOKWARDEN_ALLOWED_FORWARD_HOSTS"], "*.internal.example.com")

    def test_guardrails_by_default_allow_only_the_charts_image_and_a_short_list(self) -> None:
        e = env(one(render(), "Deployment"))
        self.assertNotIn("HOOKWARDEN_ALLOWED_RECEIVER_IMAGES", e)
        self.assertNotIn("HOOKWARDEN_ALLOWED_FORWARD_HOSTS", e)
        allowed = e["HOOKWARDEN_ALLOWED_INGRESS_ANNOTATIONS"].split(",")
        self.assertIn("cert-manager.io/cluster-issuer", allowed)
        self.assertFalse([a for a in allowed if "nginx" in a or "snippet" in a], allowed)

    def test_labels_and_annotations_reach_every_object(self) -> None:
        for o in self.objects:
            meta = o["metadata"]
            self.assertEqual(meta["labels"].get("example.com/cost-centre"), "42", o["kind"])
            self.assertEqual(meta.get("annotations", {}).get("example.com/contact"),
                             "platform@example.com", o["kind"])
        sa = one(self.objects, "ServiceAccount")
        self.assertEqual(sa["metadata"]["annotations"]["example.com/sa"], "yes")

    def test_monitoring_and_network_policy(self) -> None:
        monitors = find(self.objects, "ServiceMonitor")
        self.assertEqual(len(monitors), 2)
        receivers = one(self.objects, "ServiceMonitor", "hookwarden-receivers")
        self.assertEqual(receivers["spec"]["namespaceSelector"], {"matchNames": ["team-a", "team-b"]})
        self.assertEqual(receivers["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
                         "hookwarden-receiver")
        for m in monitors:
            self.assertEqual(m["metadata"]["labels"]["release"], "prometheus")
            self.assertEqual(m["spec"]["endpoints"][0]["interval"], "15s")
            self.assertEqual(m["spec"]["jobLabel"], "app.kubernetes.io/part-of")
        # The alerts and the dashboard (their content: test_alerts.py).
        rule = one(self.objects, "PrometheusRule", "hookwarden")
        self.assertEqual(rule["metadata"]["labels"]["release"], "prometheus")
        self.assertIn('hookwarden_operator_leader{job="hookwarden",namespace="hookwarden-system"}',
                      rule["spec"]["groups"][0]["rules"][5]["expr"])
        dashboard = one(self.objects, "ConfigMap", "hookwarden-dashboard")
        self.assertEqual(dashboard["metadata"]["namespace"], "monitoring")
        self.assertEqual(dashboard["metadata"]["labels"]["dashboards"], "hookwarden")
        self.assertEqual(dashboard["metadata"]["annotations"]["grafana_folder"], "Webhooks")
        svc = one(self.objects, "Service", "hookwarden-operator-metrics")
        self.assertEqual(svc["spec"]["ports"][0]["port"], 9000)
        policy = one(self.objects, "NetworkPolicy")
        self.assertEqual(policy["spec"]["policyTypes"], ["Ingress"])
        # The API server reaches the admission webhook from an address no policy can name.
        self.assertEqual(policy["spec"]["ingress"][0], {"ports": [{"port": 9443, "protocol": "TCP"}]})
        rule = policy["spec"]["ingress"][1]
        self.assertEqual(rule["ports"], [{"port": 8080, "protocol": "TCP"}])
        self.assertEqual(rule["from"][0]["namespaceSelector"]["matchLabels"]["name"], "monitoring")
        self.assertEqual(one(self.objects, "PodDisruptionBudget")["spec"]["maxUnavailable"], "50%")

    def test_optional_parts_can_be_switched_off(self) -> None:
        objects = render({"operator": {"replicaCount": 1, "leaderElection": False,
                                       "podDisruptionBudget": {"enabled": False}},
                          "metrics": {"service": {"enabled": False}}})
        kinds = sorted(o["kind"] for o in objects)
        self.assertEqual(kinds, ["ClusterRole", "ClusterRole", "ClusterRoleBinding",
                                 "ClusterRoleBinding", "Deployment", "Role", "RoleBinding",
                                 "Service", "ServiceAccount"])
        self.assertEqual(env(one(objects, "Deployment"))["HOOKWARDEN_LEADER_ELECT"], "false")


if __name__ == "__main__":
    unittest.main()
