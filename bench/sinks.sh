#!/usr/bin/env bash
# The sink benchmark (`make bench-sinks`; README, "Speed and footprint"): signed, distinct Opal
# deliveries pushed by wrk through the receivers the operator runs on the project's cluster,
# into the real API server, once with the `events` sink and once with the `configMap` sink
# (`state` mode: each delivery adds one user). Reports deliveries recorded per second, p99
# acknowledgement latency, and the deliveries sent, acknowledged and found recorded.
#
# Starts the cluster if needed and installs hookwarden from release builds; leaves the
# cluster running (`make install` puts the dev builds back).
# Not a test: figures go into README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-20}
CONNECTIONS=${BENCH_CONNECTIONS:-8}
NS=hookwarden-bench
# KUBECONFIG and the kubectl built for the cluster's version first on PATH
eval "$(tests/cluster/cluster.sh env)"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
tests/cluster/cluster.sh up
PROFILE=release tests/install.sh >/dev/null
cargo build -q --release -p hookwarden-receiver --example bench_server
SERVER=target/release/examples/bench_server

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$WORK/secret"
# One namespace per sink: Opal allows one webhook per organization (namespace).
for sink in events state; do
  case $sink in
    events) sinks="{events: true}" ;;
    state) sinks="{events: false, configMap: {name: bench-state}}" ;;
  esac
  kubectl delete namespace "$NS-$sink" --ignore-not-found --wait=true >/dev/null
  kubectl create namespace "$NS-$sink" >/dev/null
  kubectl label namespace "$NS-$sink" pod-security.kubernetes.io/enforce=restricted >/dev/null
  kubectl -n "$NS-$sink" create secret generic signing --from-file=secret="$WORK/secret" >/dev/null
  kubectl -n "$NS-$sink" apply -f - >/dev/null <<EOT
apiVersion: hookwarden.io/v1alpha1
kind: Webhook
metadata: {name: bench-$sink}
spec: {path: /opal, provider: opal, secretRef: {name: signing, key: secret}, sinks: $sinks}
EOT
done
for sink in events state; do
  kubectl -n "$NS-$sink" wait --for=condition=Ready --timeout=180s "webhook/bench-$sink" >/dev/null
done

echo "bench-sinks: $(date -u +%Y-%m-%d), $(nproc) cores, ${DURATION}s per sink, $CONNECTIONS connections; receiver, API server, etcd and wrk share the machine"
for sink in events state; do
  ip=$(kubectl -n "$NS-$sink" get service "bench-$sink-receiver" -o jsonpath='{.spec.clusterIP}')
  # wait until the Service routes
  for _ in $(seq 50); do curl -fs "http://$ip/healthz" >/dev/null && break; sleep 0.2; done
  "$SERVER" requests $((DURATION * 2000)) "$WORK/secret" "$WORK/requests"
  BENCH_REQUESTS="$WORK/requests" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency --timeout 15s \
    -s bench/wrk.lua "http://$ip/opal" >"$WORK/$sink.wrk"
  sleep 2 # answers still in flight when wrk stopped counting
  sent=$(awk '/requests in/ {print $1}' "$WORK/$sink.wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$sink.wrk")
  acked=$((sent - ${non2xx:-0}))
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$sink.wrk")
  case $sink in
    events)
      recorded=$(kubectl -n "$NS-$sink" get events.events.k8s.io -l hookwarden.io/webhook=bench-events -o name | wc -l) ;;
    state)
      recorded=$(kubectl -n "$NS-$sink" get configmap bench-state -o jsonpath='{.data.opal\.json}' | jq '.resourceAccess | length') ;;
  esac
  awk -v s="$sink" -v r="$recorded" -v d="$DURATION" -v p="$p99" -v n="$sent" -v a="$acked" \
    'BEGIN {printf "%-7s %8.1f recorded/s   p99 %8s   sent %d, acknowledged %d, recorded %d\n", s, r / d, p, n, a, r}'
  if [ "$recorded" -lt "$acked" ]; then
    echo "bench-sinks: $sink: fewer recorded than acknowledged" >&2
    exit 1
  fi
done
