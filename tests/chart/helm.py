"""Helm's own engine for the project's scripts and tests, through helm-python-sdk.

Run it through tests/chart/helm, which provides the virtualenv:

  helm lint                          lint the chart (strict); fails on any warning or error
  helm template [OPTIONS]            render manifests (install order) to stdout
  helm manifest                      the plain install manifest (deploy/hookwarden.yaml)
  helm install [OPTIONS]             install, or upgrade when the release exists
  helm upgrade [OPTIONS]             upgrade an existing release
  helm uninstall [--name N] [--namespace NS]

OPTIONS: --name (default hookwarden), --namespace (default hookwarden-system),
--set key=value (repeatable), --values FILE (YAML, repeatable), --timeout SECONDS.
The cluster comes from KUBECONFIG, as for kubectl.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import helm_python as helm

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "hookwarden"

# Helm's own install order for the kinds this chart renders.
KIND_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "ConfigMap",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "Service",
    "Deployment",
    "ServiceMonitor",
    "PrometheusRule",
]

MANIFEST_HEADER = """\
# hookwarden operator: identity, least-privilege RBAC, Deployment, metrics Service and
# PodDisruptionBudget, in namespace hookwarden-system. For Kubernetes 1.33 and later.
#
# GENERATED from charts/hookwarden with its default values by `make manifests`; do not edit
# (a test fails when this file is stale). Install the CRD first:
#
#   kubectl apply --server-side -f crds/
#   kubectl apply -f deploy/hookwarden.yaml
"""


def load_values(args: argparse.Namespace) -> dict:
    values: dict = {}
    for path in args.values or []:
        merge(values, helm.values_from_yaml(Path(path).read_text()))
    for pair in args.set or []:
        merge(values, helm.parse_set_string(pair))
    return values


def merge(into: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


def documents(rendered: dict[str, str]) -> list[tuple[str, str]]:
    """(kind, text) of every non-empty rendered document, in install order."""
    docs = []
    for path in sorted(rendered):
        if path.endswith("NOTES.txt"):
            continue
        for doc in re.split(r"^---\s*$", rendered[path], flags=re.M):
            body = "\n".join(
                line for line in doc.strip("\n").splitlines() if line.strip()
            ).strip("\n")
            kind = re.search(r"^kind:\s*(\S+)", body, flags=re.M)
            if not kind:
                continue
            source = path.split("/", 1)[-1]
            docs.append((kind.group(1), f"# Source: {source}\n{body}\n"))
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    docs.sort(key=lambda d: order.get(d[0], len(order)))
    return docs


def render(args: argparse.Namespace) -> dict[str, str]:
    chart = helm.Chart.load(CHART)
    values = load_values(args)
    chart.validate_schema(values)
    return chart.render(values, name=args.name, namespace=args.namespace, is_install=True)


def cmd_lint(args: argparse.Namespace) -> int:
    report = helm.lint(CHART, load_values(args), strict=True, namespace=args.namespace)
    bad = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report["errors"]
    ]
    for m in report["messages"]:
        level = {1: "INFO", 2: "WARNING", 3: "ERROR"}.get(m["severity"], "?")
        print(f"[{level}] {m['path']}: {m['error']}")
    print(f"{report['total_charts_linted']} chart(s) linted, {len(bad)} problem(s)")
    return 1 if bad else 0


def cmd_template(args: argparse.Namespace) -> int:
    sys.stdout.write("---\n".join(text for _, text in documents(render(args))))
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    """deploy/hookwarden.yaml: everything the chart renders with its defaults, and the
    namespace, which Helm creates itself (--create-namespace) and so no template holds."""
    args.name, args.namespace, args.set, args.values = "hookwarden", "hookwarden-system", [], []
    docs = documents(render(args))
    namespace = (
        "# Source: the namespace the chart is installed in\n"
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hookwarden-system\n"
        "  labels:\n    app.kubernetes.io/part-of: hookwarden\n"
        "    # the operator runs under the restricted Pod Security profile\n"
        "    pod-security.kubernetes.io/enforce: restricted\n"
    )
    body = [namespace] + [text for _, text in docs]
    sys.stdout.write(MANIFEST_HEADER + "---\n" + "---\n".join(body))
    return 0


def config(args: argparse.Namespace) -> helm.Config:
    return helm.Config(namespace=args.namespace, kubeconfig_path=os.environ.get("KUBECONFIG"))


def exists(cfg: helm.Config, name: str) -> bool:
    try:
        cfg.status(name)
        return True
    except helm.HelmNotFoundError:
        return False


def summary(release: dict) -> str:
    keys = ("name", "namespace", "revision", "status", "chart_version")
    return json.dumps({k: release.get(k) for k in keys})


def cmd_install(args: argparse.Namespace) -> int:
    cfg = config(args)
    values = load_values(args)
    if exists(cfg, args.name):
        return cmd_upgrade(args)
    release = cfg.install(
        str(CHART),
        args.name,
        values,
        namespace=args.namespace,
        create_namespace=True,
        wait="watcher",
        timeout=args.timeout,
    )
    print(f"installed {summary(release)}", file=sys.stderr)
    return 0


def cmd_upgrade(args: argparse.Namespace) -> int:
    cfg = config(args)
    release = cfg.upgrade(
        str(CHART),
        args.name,
        load_values(args),
        namespace=args.namespace,
        wait="watcher",
        timeout=args.timeout,
    )
    print(f"upgraded {summary(release)}", file=sys.stderr)
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    cfg = config(args)
    cfg.uninstall(args.name, wait="watcher", timeout=args.timeout)
    print(f"uninstalled {args.name}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tests/chart/helm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ["lint", "template", "manifest", "install", "upgrade", "uninstall"]:
        p = sub.add_parser(name)
        p.add_argument("--name", default="hookwarden")
        p.add_argument("--namespace", default="hookwarden-system")
        p.add_argument("--set", action="append")
        p.add_argument("--values", action="append")
        p.add_argument("--timeout", type=int, default=300)
    args = parser.parse_args(argv)
    helm.disable_logging()
    handler = globals()[f"cmd_{args.command}"]
    try:
        return handler(args)
    except helm.HelmError as error:
        print(f"helm {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
