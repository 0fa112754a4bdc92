"""The chart's PrometheusRule and Grafana dashboard, offline, through promtool.

Run by `make chart` (part of `make test`). promtool comes from Debian's prometheus package,
which tests/prometheus/install.sh installs on first use (and leaves no Prometheus running).

- The rules the chart renders (defaults, and custom thresholds) pass `promtool check rules`,
  and `promtool test rules` runs tests/chart/alerts/*-test.yaml against them: for each
  alert, cases where it fires (labels and annotations asserted exactly) and where it does
  not.
- Ratios given as `--set` gives them (a decimal string) pass the schema and render valid
  rules; with watchNamespaces, the default receiver selector keeps to those namespaces.
- Every query of the dashboard is valid PromQL (written as recording rules, checked by
  promtool), uses only the metrics hookwarden exports, and only variables it defines; the
  Webhook panels follow the namespace and Webhook variables.
- Neither object renders by default; each carries what its loader needs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import helm_python as helm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import helm as tool  # noqa: E402  (tests/chart/helm.py)
from test_chart import find, one, render  # noqa: E402

REPO = tool.REPO
CHART = tool.CHART
ALERT_TESTS = Path(__file__).resolve().parent / "alerts"
INSTALL = REPO / "tests" / "prometheus" / "install.sh"
# The file name the unit-test files' rule_files name.
RULES_FILE = "hookwarden-rules.yaml"
# The documentation page with the "## Metrics" and "## Alerts" sections.
MONITORING_DOC = REPO / "docs" / "guides" / "monitoring.md"

# Every metric hookwarden exports (docs/guides/monitoring.md, "Metrics"), histograms by their
# series' names.
METRICS = {
    "hookwarden_operator_reconciliations_total",
    "hookwarden_operator_reconcile_duration_seconds",
    "hookwarden_operator_ready_outcomes_total",
    "hookwarden_operator_leader",
    "hookwarden_operator_pod_admissions_total",
    "hookwarden_operator_webhook_ready",
    "hookwarden_operator_sink_bytes",
    "hookwarden_operator_sink_limit_bytes",
    "hookwarden_receiver_deliveries_total",
    "hookwarden_receiver_delivery_duration_seconds",
    "hookwarden_receiver_in_flight",
    "hookwarden_receiver_webhooks",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")

ALERTS = [
    "HookwardenWebhookNotReady",
    "HookwardenSignatureRefusals",
    "HookwardenSinkNotRecording",
    "HookwardenDeliveriesShed",
    "HookwardenSinkNearlyFull",
    "HookwardenOperatorNoLeader",
    "HookwardenReceiverDown",
]

# Thresholds other than the defaults, for tests/chart/alerts/custom-test.yaml.
CUSTOM = {
    "operator": {"leaderElection": False, "replicaCount": 1},
    "prometheusRule": {
        "enabled": True,
        "labels": {"release": "prometheus"},
        "operatorSelector": 'job="hw-operator"',
        "receiverSelector": 'job="webhooks",cluster="eu"',
        "alerts": {
            "signatureRefusals": {"window": "5m", "ratio": 0.9, "minCount": 3, "for": "1m",
                                  "severity": "page"},
            "sinkNotRecording": {"window": "30m", "ratio": 0.5, "minCount": 1, "for": "2m",
                                 "severity": "ticket"},
            "sinkNearlyFull": {"ratio": 0.5, "for": "1h", "severity": "info"},
            "operatorNoLeader": {"for": "3m", "severity": "page"},
        },
    },
}

# A release that serves two namespaces, for tests/chart/alerts/namespaces-test.yaml.
NAMESPACES = {"watchNamespaces": ["team-a", "team-b"], "prometheusRule": {"enabled": True}}


def set_values(*pairs: str) -> dict:
    """Values as `helm --set PAIR ...` gives them (Helm's own parser: a decimal stays a
    string, as it does on the command line)."""
    values: dict = {}
    for pair in pairs:
        tool.merge(values, helm.parse_set_string(pair))
    return values


def promtool(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"promtool {' '.join(args)}:\n{out.stdout}{out.stderr}")
    return out.stdout + out.stderr


def rule_spec(values: dict) -> dict:
    return one(render(values), "PrometheusRule")["spec"]


def rules(values: dict) -> dict[str, dict]:
    """The rendered alerts by name."""
    return {r["alert"]: r for g in rule_spec(values)["groups"] for r in g["rules"]}


def load_yaml(path: Path) -> dict:
    return helm.values_from_yaml(path.read_text())


def dashboard() -> dict:
    return json.loads((CHART / "dashboards" / "hookwarden.json").read_text())


def panels(d: dict) -> list[dict]:
    out = []
    for p in d["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def metric_names(expr: str) -> set[str]:
    """Names of the series an expression selects (identifiers followed by { or [, or bare)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # no label values
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b\s*(\(|\{|\[)?", expr):
        word, after = m.group(1), m.group(2)
        if after == "(" or word in {"and", "or", "unless", "bool", "offset"}:
            continue
        if re.fullmatch(r"[0-9]+[smhdwy]", word) or word in {"le", "webhook", "outcome"}:
            continue
        if after in ("{", "[") or word.startswith("hookwarden_") or word == "up":
            names.add(word)
    return names


class Promtool(unittest.TestCase):
    """Base: promtool installed, a scratch directory per test class."""

    @classmethod
    def setUpClass(cls) -> None:
        subprocess.run([str(INSTALL)], check=True)
        cls.scratch = Path(tempfile.mkdtemp(prefix="hookwarden-alerts-"))

    @classmethod
    def tearDownClass(cls) -> None:
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def write_rules(self, name: str, spec: dict) -> Path:
        """`spec` as a rules file (JSON is YAML) in a directory of its own."""
        folder = self.scratch / name
        folder.mkdir(exist_ok=True)
        path = folder / RULES_FILE
        path.write_text(json.dumps(spec, indent=1))
        return path

    def unit_test(self, values: dict, test_file: str) -> str:
        """Runs tests/chart/alerts/TEST_FILE against the rules `values` render."""
        rules_path = self.write_rules(test_file.removesuffix(".yaml"), rule_spec(values))
        shutil.copy(ALERT_TESTS / test_file, rules_path.parent / test_file)
        return promtool("test", "rules", test_file, cwd=rules_path.parent)


class Rules(Promtool):
    def test_not_rendered_by_default(self) -> None:
        self.assertEqual(find(render(), "PrometheusRule"), [])
        self.assertEqual(find(render({"serviceMonitor": {"enabled": True}}), "PrometheusRule"), [])

    def test_rendered_rules_pass_promtool_check(self) -> None:
        for name, values in [("defaults", {"prometheusRule": {"enabled": True}}),
                             ("custom", CUSTOM),
                             ("empty-selectors", {"prometheusRule": {
                                 "enabled": True, "operatorSelector": "",
                                 "receiverSelector": ""}})]:
            with self.subTest(name):
                path = self.write_rules(f"check-{name}", rule_spec(values))
                out = promtool("check", "rules", str(path))
                self.assertIn(f"SUCCESS: {len(ALERTS)} rules found", out)

    def test_alerts_fire_as_the_unit_tests_say(self) -> None:
        out = self.unit_test({"prometheusRule": {"enabled": True}}, "alerts-test.yaml")
        self.assertIn("SUCCESS", out)

    def test_custom_thresholds_and_selectors_take_effect(self) -> None:
        out = self.unit_test(CUSTOM, "custom-test.yaml")
        self.assertIn("SUCCESS", out)

    def test_ratios_given_with_set_render_and_pass_promtool_check(self) -> None:
        values = set_values("prometheusRule.enabled=true",
                            "prometheusRule.alerts.signatureRefusals.ratio=0.9",
                            "prometheusRule.alerts.sinkNotRecording.ratio=0.25",
                            "prometheusRule.alerts.deliveriesShed.ratio=1",
                            "prometheusRule.alerts.sinkNearlyFull.ratio=0.5")
        # What --set gives: the decimals are strings, a whole number is an integer.
        alerts = values["prometheusRule"]["alerts"]
        self.assertEqual(alerts["signatureRefusals"]["ratio"], "0.9")
        self.assertEqual(alerts["deliveriesShed"]["ratio"], 1)
        path = self.write_rules("check-set-strings", rule_spec(values))  # schema-checked
        out = promtool("check", "rules", str(path))
        self.assertIn(f"SUCCESS: {len(ALERTS)} rules found", out)
        by_name = rules(values)
        self.assertIn(") > 0.9\nand\n", by_name["HookwardenSignatureRefusals"]["expr"])
        self.assertIn(") > 0.25\nand\n", by_name["HookwardenSinkNotRecording"]["expr"])
        self.assertIn(") > 1\nand\n", by_name["HookwardenDeliveriesShed"]["expr"])
        self.assertTrue(by_name["HookwardenSinkNearlyFull"]["expr"].endswith(") > 0.5"))

    def test_receiver_selector_keeps_to_watch_namespaces(self) -> None:
        by_name = rules(NAMESPACES)
        self.assertEqual(by_name["HookwardenReceiverDown"]["expr"],
                         'up{job="hookwarden-receiver",namespace=~"team-a|team-b"} == 0')
        self.assertIn('hookwarden_receiver_deliveries_total{job="hookwarden-receiver",'
                      'namespace=~"team-a|team-b",outcome="bad_signature"}[10m]',
                      by_name["HookwardenSignatureRefusals"]["expr"])
        # A selector of one's own is taken as it is.
        custom = rules({**NAMESPACES, "prometheusRule": {
            "enabled": True, "receiverSelector": 'job="webhooks"'}})
        self.assertEqual(custom["HookwardenReceiverDown"]["expr"], 'up{job="webhooks"} == 0')
        # And promtool: another release's receivers (team-c) page nothing of this one.
        out = self.unit_test(NAMESPACES, "namespaces-test.yaml")
        self.assertIn("SUCCESS", out)

    def test_every_alert_has_a_firing_and_a_quiet_case(self) -> None:
        self.assertEqual(sorted(rules({"prometheusRule": {"enabled": True}})), sorted(ALERTS))
        cases = [case for group in load_yaml(ALERT_TESTS / "alerts-test.yaml")["tests"]
                 for case in group.get("alert_rule_test", [])]
        for alert in ALERTS:
            mine = [c for c in cases if c["alertname"] == alert]
            self.assertTrue(any(c.get("exp_alerts") for c in mine), f"{alert} never fires")
            self.assertTrue(any(not c.get("exp_alerts") for c in mine), f"{alert} never quiet")

    def test_thresholds_windows_and_severities_are_values(self) -> None:
        custom = rules(CUSTOM)
        sig = custom["HookwardenSignatureRefusals"]
        self.assertIn('hookwarden_receiver_deliveries_total{job="webhooks",cluster="eu",'
                      'outcome="bad_signature"}[5m]', sig["expr"])
        self.assertIn(") > 0.9\nand\n", sig["expr"])
        self.assertTrue(sig["expr"].endswith(">= 3"), sig["expr"])
        self.assertEqual((sig["for"], sig["labels"]), ("1m", {"severity": "page"}))
        sink = custom["HookwardenSinkNotRecording"]
        self.assertIn("[30m]", sink["expr"])
        self.assertEqual((sink["for"], sink["labels"]["severity"]), ("2m", "ticket"))
        full = custom["HookwardenSinkNearlyFull"]
        # The operator's series, through the operator's selector.
        self.assertEqual(full["expr"],
                         'max by (webhook, configmap) (hookwarden_operator_sink_bytes{job="hw-operator"}'
                         ' / hookwarden_operator_sink_limit_bytes{job="hw-operator"}) > 0.5')
        self.assertEqual((full["for"], full["labels"]["severity"]), ("1h", "info"))
        # Without leader election the one replica reports leading, as with it.
        leader = custom["HookwardenOperatorNoLeader"]
        self.assertEqual(leader["expr"],
                         '(sum(hookwarden_operator_leader{job="hw-operator"}) or vector(0)) < 1')
        obj = one(render(CUSTOM), "PrometheusRule")
        self.assertEqual(obj["metadata"]["labels"]["release"], "prometheus")

    def test_default_selectors_match_what_the_service_monitors_scrape(self) -> None:
        # The ServiceMonitors take `job` from app.kubernetes.io/name of the Services.
        objects = render({"serviceMonitor": {"enabled": True},
                          "prometheusRule": {"enabled": True}}, namespace="hw")
        for monitor in find(objects, "ServiceMonitor"):
            self.assertEqual(monitor["spec"]["jobLabel"], "app.kubernetes.io/name")
        svc = one(objects, "Service", "hookwarden-operator-metrics")
        self.assertEqual(svc["metadata"]["labels"]["app.kubernetes.io/name"], "hookwarden-operator")
        receivers = one(objects, "ServiceMonitor", "hookwarden-receivers")
        self.assertEqual(receivers["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
                         "hookwarden-receiver")
        by_name = {r["alert"]: r for r in one(objects, "PrometheusRule")["spec"]["groups"][0]["rules"]}
        self.assertIn('hookwarden_operator_leader{job="hookwarden-operator",namespace="hw"}',
                      by_name["HookwardenOperatorNoLeader"]["expr"])
        self.assertEqual(by_name["HookwardenReceiverDown"]["expr"], 'up{job="hookwarden-receiver"} == 0')
        self.assertEqual(
            by_name["HookwardenSinkNearlyFull"]["expr"],
            'max by (webhook, configmap) (hookwarden_operator_sink_bytes{job="hookwarden-operator",'
            'namespace="hw"} / hookwarden_operator_sink_limit_bytes{job="hookwarden-operator",'
            'namespace="hw"}) > 0.85')

    def test_every_description_says_where_to_read_on(self) -> None:
        doc = MONITORING_DOC.read_text()
        alerts_section = doc.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
        for name, rule in rules({"prometheusRule": {"enabled": True}}).items():
            self.assertIn("README: Troubleshooting", rule["annotations"]["description"], name)
            self.assertEqual(set(rule["annotations"]), {"summary", "description"}, name)
            self.assertIn(f"`{name}`", alerts_section, f"the docs' Alerts section lacks {name}")

    def test_the_rules_query_only_hookwarden_metrics(self) -> None:
        for name, rule in rules({"prometheusRule": {"enabled": True}}).items():
            used = metric_names(rule["expr"])
            self.assertTrue(used, name)
            self.assertLessEqual(used, METRICS | {"up"}, name)


class Dashboard(Promtool):
    def test_not_rendered_by_default(self) -> None:
        self.assertEqual(find(render(), "ConfigMap"), [])

    def test_config_map_carries_the_sidecar_label_and_the_dashboard(self) -> None:
        cm = one(render({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
        self.assertEqual(cm["metadata"]["name"], "hookwarden-dashboard")
        self.assertEqual(cm["metadata"]["namespace"], "hookwarden-system")
        self.assertEqual(cm["metadata"]["labels"]["grafana_dashboard"], "1")
        self.assertEqual(list(cm["data"]), ["hookwarden.json"])
        self.assertEqual(json.loads(cm["data"]["hookwarden.json"]), dashboard())

    def test_label_namespace_and_annotations_are_values(self) -> None:
        cm = one(render({"grafanaDashboard": {
            "enabled": True, "namespace": "monitoring", "label": "example.com/dashboard",
            "labelValue": "hookwarden", "annotations": {"grafana_folder": "Webhooks"}}}),
            "ConfigMap")
        self.assertEqual(cm["metadata"]["namespace"], "monitoring")
        self.assertEqual(cm["metadata"]["labels"]["example.com/dashboard"], "hookwarden")
        self.assertNotIn("grafana_dashboard", cm["metadata"]["labels"])
        self.assertEqual(cm["metadata"]["annotations"], {"grafana_folder": "Webhooks"})

    def test_dashboard_shape(self) -> None:
        d = dashboard()
        self.assertEqual(d["uid"], "hookwarden")
        self.assertGreaterEqual(d["schemaVersion"], 39)
        variables = {v["name"]: v for v in d["templating"]["list"]}
        self.assertEqual(variables["datasource"]["type"], "datasource")
        self.assertEqual(variables["datasource"]["query"], "prometheus")
        # Both from the operator's gauge, so every Webhook is there, scraped receiver or not;
        # the namespace is the first part of its webhook label.
        namespace, webhook = variables["namespace"], variables["webhook"]
        self.assertEqual(namespace["definition"],
                         "label_values(hookwarden_operator_webhook_ready, webhook)")
        regex = re.fullmatch(r"/(.*)/", namespace["regex"])
        self.assertIsNotNone(regex, namespace["regex"])
        self.assertEqual(re.match(regex.group(1), "shop/opal").group(1), "shop")
        self.assertEqual(webhook["definition"], 'label_values(hookwarden_operator_webhook_ready'
                                                '{webhook=~"($namespace)/.*"}, webhook)')
        for v in (namespace, webhook):
            self.assertEqual(v["query"]["query"], v["definition"])
            self.assertEqual((v["includeAll"], v["multi"], v["allValue"]), (True, True, ".*"))
        ids = [p["id"] for p in panels(d)]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for p in panels(d):
            if p["type"] == "row":
                continue
            self.assertEqual(p["datasource"], {"type": "prometheus", "uid": "${datasource}"}, p["title"])
            for t in p["targets"]:
                self.assertEqual(t["datasource"]["uid"], "${datasource}", p["title"])
                if "rate(" in t["expr"] or "increase(" in t["expr"]:
                    self.assertIn("[$__rate_interval]", t["expr"], p["title"])
        titles = " / ".join(p["title"] for p in panels(d))
        for what in ["Deliveries by Webhook and outcome", "p50 / p99", "Refusals by reason",
                     "sink errors", "Sink ConfigMap capacity", "Readiness", "errors are any result but ok",
                     "Leader"]:
            self.assertIn(what, titles)

    def queries(self) -> list[tuple[str, str]]:
        """(where, PromQL) of every query: panels' targets and the variables' label_values."""
        d = dashboard()
        out = [(f"{p['title']} {t['refId']}", t["expr"])
               for p in panels(d) if p["type"] != "row" for t in p["targets"]]
        for v in d["templating"]["list"]:
            if v["type"] == "query":
                m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
                self.assertIsNotNone(m, v["definition"])
                out.append((f"variable {v['name']}", m.group(1)))
        return out

    def test_every_query_is_valid_promql(self) -> None:
        d = dashboard()
        defined = {v["name"] for v in d["templating"]["list"]} | {"__rate_interval"}
        recording = []
        for i, (where, expr) in enumerate(self.queries()):
            used = set(re.findall(r"\$\{?(\w+)", expr))
            self.assertLessEqual(used, defined, where)
            promql = expr.replace("$__rate_interval", "5m")
            promql = re.sub(r"\$\{?(namespace|webhook)\}?", ".*", promql)
            self.assertNotIn("$", promql, where)
            recording.append({"record": f"hookwarden:dashboard_query_{i}", "expr": promql})
        self.assertGreater(len(recording), 10)
        path = self.write_rules("dashboard", {"groups": [{"name": "dashboard", "rules": recording}]})
        out = promtool("check", "rules", str(path))
        self.assertIn(f"SUCCESS: {len(recording)} rules found", out)

    def test_a_broken_query_would_fail(self) -> None:
        # The check above can fail: promtool refuses a query with a syntax error.
        path = self.write_rules("broken", {"groups": [{"name": "broken", "rules": [
            {"record": "hookwarden:broken", "expr": "sum by (webhook (rate(x[5m]))"}]}]})
        with self.assertRaises(AssertionError):
            promtool("check", "rules", str(path))

    def test_webhook_panels_follow_the_namespace_and_webhook_variables(self) -> None:
        # Receiver series by their target's namespace; the operator's per-Webhook series
        # (their namespace is the operator's) by the first part of the webhook label; a
        # pool's own gauges (no webhook label) by namespace only.
        want = {"hookwarden_receiver": {'namespace=~"$namespace"', 'webhook=~"$webhook"'},
                "hookwarden_operator": {'webhook=~"($namespace)/.*"', 'webhook=~"$webhook"'}}
        per_pool = {"hookwarden_receiver_in_flight", "hookwarden_receiver_webhooks"}
        per_webhook = ("hookwarden_receiver_", "hookwarden_operator_webhook_ready",
                       "hookwarden_operator_sink_")
        checked = 0
        for p in panels(dashboard()):
            for t in p.get("targets", []):
                for name, matchers in re.findall(r"\b(hookwarden_\w+)\{([^}]*)\}", t["expr"]):
                    if not name.startswith(per_webhook):
                        continue
                    found = {m.strip() for m in matchers.split(",")}
                    wanted = ({'namespace=~"$namespace"'} if name in per_pool
                              else want[name[:19]])
                    self.assertLessEqual(wanted, found, f"{p['title']}: {name}")
                    checked += 1
                bare = re.findall(r"\b(hookwarden_\w+)\b(?!\{)", t["expr"])
                self.assertFalse([n for n in bare if n.startswith(per_webhook)], p["title"])
        self.assertGreaterEqual(checked, 13)

    def test_queries_use_hookwarden_metrics_and_show_every_one(self) -> None:
        used: set[str] = set()
        for where, expr in self.queries():
            names = metric_names(expr)
            self.assertTrue(names, where)
            used |= names
        bare = {re.sub("(" + "|".join(HISTOGRAM_SERIES) + ")$", "", n)
                if n.endswith(HISTOGRAM_SERIES) and "duration_seconds" in n else n for n in used}
        self.assertLessEqual(bare, METRICS, "a query names a metric hookwarden does not export")
        self.assertEqual(METRICS - bare, set(), "metrics the dashboard does not show")

    def test_docs_list_every_metric(self) -> None:
        doc = MONITORING_DOC.read_text()
        section = doc.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
        for metric in sorted(METRICS):
            self.assertIn(f"`{metric}", section, metric)


if __name__ == "__main__":
    unittest.main()
