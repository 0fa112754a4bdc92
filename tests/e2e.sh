#!/usr/bin/env bash
# End-to-end tests: start the project's Kubernetes, install hookwarden as shipped, run the
# tests in tests/tests/, and stop the cluster afterwards (KEEP_CLUSTER=1 keeps it running).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tests/cluster/cluster.sh env)"
# The cluster's own kubectl (1.20) serves when the machine has none.
export PATH="$PATH:${HOOKWARDEN_CACHE:-$HOME/.cache/hookwarden}/k8s-1.20.2/bin"
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'echo "e2e: stopping the cluster" >&2; tests/cluster/cluster.sh down' EXIT
fi
tests/cluster/cluster.sh up
tests/install.sh
status=0
# Tests share one operator; each works in its own namespace.
cargo test -p hookwarden-tests --test operator -- --test-threads="${E2E_THREADS:-4}" || status=$?
# Deliveries through the receivers' Services, signed by `hookwarden-receiver send`.
HOOKWARDEN_RECEIVER_BIN=$PWD/${PROFILE_DIR:-target/debug}/hookwarden-receiver \
  cargo test -p hookwarden-tests --test deliveries -- --test-threads="${E2E_THREADS:-4}" || status=$?
# Every file in examples/, applied with kubectl and sent a signed delivery.
HOOKWARDEN_RECEIVER_BIN=$PWD/${PROFILE_DIR:-target/debug}/hookwarden-receiver \
  cargo test -p hookwarden-tests --test examples -- --test-threads="${E2E_THREADS:-4}" || status=$?
# Deletes an operator pod, so it runs alone.
cargo test -p hookwarden-tests --test leader || status=$?
# Pauses the API server, so it runs alone, last.
HOOKWARDEN_RECEIVER_BIN=$PWD/${PROFILE_DIR:-target/debug}/hookwarden-receiver \
  cargo test -p hookwarden-tests --test outage || status=$?
# The chart against this cluster: server dry runs of what it renders, then upgrade,
# uninstall and reinstall of the release everything above ran under; so it runs last.
tests/chart/python -m unittest discover -s tests/chart -p 'test_cluster.py' -v || status=$?
if [ "$status" != 0 ]; then
  echo "e2e: FAILED; operator logs follow" >&2
  kubectl -n hookwarden-system logs -l app.kubernetes.io/name=hookwarden-operator --tail=80 --prefix >&2 || true
fi
exit "$status"
