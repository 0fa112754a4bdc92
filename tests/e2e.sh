#!/usr/bin/env bash
# End-to-end tests: start the project's Kubernetes, install hookwarden as shipped, run the
# tests in tests/tests/ and the chart's cluster tests: every suite on the newest Kubernetes
# (versions.sh: K8S_VERSION_NEW), then every suite again on the oldest that k8s-openapi
# supports (K8S_VERSION_OLD), each on a fresh cluster with a real kubelet. The cluster is
# stopped afterwards (KEEP_CLUSTER=1 keeps the last one running).
#
#   E2E_VERSIONS="1.37.2"   run on these releases only (default: both, newest first)
#   E2E_THREADS=4           tests at once within a suite
set -euo pipefail
cd "$(dirname "$0")/.."
. tests/cluster/versions.sh
VERSIONS=${E2E_VERSIONS:-"$K8S_VERSION_NEW $K8S_VERSION_OLD"}
if [ "${KEEP_CLUSTER:-0}" != 1 ]; then
  trap 'echo "e2e: stopping the cluster" >&2; tests/cluster/cluster.sh down' EXIT
fi
RECEIVER_BIN=$PWD/${PROFILE_DIR:-target/debug}/hookwarden-receiver
THREADS=${E2E_THREADS:-4}
failed=""
t_all=$SECONDS

# suite VERSION NAME CMD...: one suite, its outcome remembered
suite() {
  local v=$1 name=$2 t0=$SECONDS since; shift 2
  since=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "e2e: [$v] suite $name" >&2
  if "$@"; then
    echo "e2e: [$v] suite $name passed in $((SECONDS - t0))s" >&2
  else
    echo "e2e: [$v] suite $name FAILED after $((SECONDS - t0))s" >&2
    failed="$failed $v/$name"
    operator_logs "$v" "$name" "$since"
  fi
}

# operator_logs VERSION SUITE SINCE: what the operator said during a failed suite: all of
# it into target/e2e-logs/, its warnings and errors (and leader changes) here.
operator_logs() {
  local file=target/e2e-logs/$1-$2-operator.log
  mkdir -p target/e2e-logs
  kubectl -n hookwarden-system logs -l app.kubernetes.io/name=hookwarden-operator \
    --since-time="$3" --prefix --tail=-1 >"$file" 2>&1 || true
  kubectl -n hookwarden-system get pods -o wide >>"$file" 2>&1 || true
  echo "e2e: [$1] operator during suite $2 (warnings, errors, leadership; all in $file):" >&2
  grep -E '"level":"(WARN|ERROR)"|leading|Lease|panicked' "$file" | cut -c1-600 | tail -n 80 >&2 || true
  kubectl -n hookwarden-system get pods >&2 || true
}

run_on() {
  local v=$1 t0=$SECONDS
  export K8S_VERSION=$v
  eval "$(tests/cluster/cluster.sh env)"
  # (cluster.sh up restarts the cluster from scratch when another version runs)
  tests/cluster/cluster.sh up
  echo "e2e: [$v] $(kubectl version 2>/dev/null | tr '\n' ' ')" >&2
  tests/install.sh
  # Tests share one operator; each works in its own namespace.
  suite "$v" operator cargo test -p hookwarden-tests --test operator -- --test-threads="$THREADS"
  # Removes the Gateway API's CRDs and waits for a quiet cluster, so it runs alone.
  suite "$v" no-gateway-api cargo test -p hookwarden-tests --test no_gateway_api
  # The Gateway API's CRDs, which examples/opal.yaml routes through (the operator suite
  # removes and installs them itself).
  kubectl apply --server-side -f "$HOOKWARDEN_GATEWAY_API_CRDS" >/dev/null
  tests/cluster/cluster.sh established gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io
  # Every file in examples/, applied with kubectl as a GitOps tool would (kubectl diff clean
  # after apply) and sent a signed delivery.
  suite "$v" examples env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" \
    cargo test -p hookwarden-tests --test examples -- --test-threads="$THREADS"
  # Deliveries through the receivers' Services, signed by `hookwarden-receiver send`.
  suite "$v" deliveries env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" \
    cargo test -p hookwarden-tests --test deliveries -- --test-threads="$THREADS"
  # Receiver pools: Webhooks of a namespace served by one Deployment, reconfigured live.
  suite "$v" pool env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" \
    cargo test -p hookwarden-tests --test pool -- --test-threads="$THREADS"
  # Trust inside a namespace, tried as an attacker would: objects the operator did not make
  # are never taken over, a Webhook writes only its own sink, the guardrails, and hundreds
  # of stalled senders against a pool while its neighbour's deliveries are all recorded.
  suite "$v" trust env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" \
    cargo test -p hookwarden-tests --test trust -- --test-threads="$THREADS"
  # The chart's alert rules and dashboard against a real Prometheus (Debian's package) that
  # scrapes this cluster.
  suite "$v" monitoring env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" \
    cargo test -p hookwarden-tests --test monitoring
  # Deletes an operator pod, so it runs alone.
  suite "$v" leader cargo test -p hookwarden-tests --test leader
  # Scales the operator to zero and rotates its admission webhook's certificate, so it runs
  # alone, one test at a time.
  suite "$v" injector cargo test -p hookwarden-tests --test injector -- --test-threads=1
  # Takes the CRD's CEL rules away for a while (Webhooks stored before them), so it runs alone.
  suite "$v" upgrade cargo test -p hookwarden-tests --test upgrade
  # Pauses the API server, so it runs alone, after the others on this cluster.
  suite "$v" outage env HOOKWARDEN_RECEIVER_BIN="$RECEIVER_BIN" cargo test -p hookwarden-tests --test outage
  # The chart against this cluster: server dry runs of what it renders, then upgrade,
  # uninstall and reinstall of the release everything above ran under; so it runs last.
  suite "$v" chart tests/chart/python -m unittest discover -s tests/chart -p 'test_cluster.py' -v
  echo "e2e: [$v] done in $((SECONDS - t0))s" >&2
}

# Prometheus and promtool for the monitoring suite (Debian's package).
tests/prometheus/install.sh
for v in $VERSIONS; do run_on "$v"; done
echo "e2e: all done in $((SECONDS - t_all))s" >&2
if [ -n "$failed" ]; then
  echo "e2e: FAILED suites:$failed" >&2
  exit 1
fi
