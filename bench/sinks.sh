#!/usr/bin/env bash
# The sink benchmark (`make bench-sinks`; README, "Speed and footprint"): signed, distinct
# Membrane `org-created` deliveries pushed by wrk through the receivers the operator runs on
# the project's cluster (one Webhook per sink, two receiver replicas), into the real API
# server: once with the `events` sink (one Event per delivery) and once with the `configMap`
# sink in `state` mode. Membrane's events only add to the state, so each delivery adds an
# organisation; each of BENCH_ROUNDS rounds of BENCH_DURATION seconds starts again from a
# document of 1000 organisations (a single long round measures the document growing to
# its bound instead). Reports, per round and as the median of the rounds, deliveries
# acknowledged per second (every one of them recorded), p99 acknowledgement latency, and
# the deliveries sent, acknowledged and found recorded; fails if fewer are recorded than
# were acknowledged, or any twice.
#
# Starts the cluster if needed and installs hookwarden from release builds; leaves the
# cluster running (`make install` puts the dev builds back).
# Not a test: figures go into README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${BENCH_ROUNDS:-5}
DURATION=${BENCH_DURATION:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-16}
REPLICAS=${BENCH_REPLICAS:-2}
ORGANIZATIONS=${BENCH_ORGANIZATIONS:-1000}
SINKS=${BENCH_SINKS:-events state}
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
# One namespace per sink (a Membrane Webhook per event type and namespace).
for sink in $SINKS; do
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
spec: {path: /membrane, provider: membrane, secretRef: {name: signing, key: secret}, sinks: $sinks, receiver: {replicas: $REPLICAS}}
EOT
done
for sink in $SINKS; do
  kubectl -n "$NS-$sink" wait --for=condition=Ready --timeout=180s "webhook/bench-$sink" >/dev/null
done
# The state document the run starts from, as the receiver would have written it.
"$SERVER" organizations "$ORGANIZATIONS" >"$WORK/membrane.json"
jq -n --rawfile doc "$WORK/membrane.json" '{data: {"membrane.json": $doc}}' >"$WORK/patch.json"
kubectl -n "$NS-state" patch configmap bench-state --type merge --patch-file "$WORK/patch.json" >/dev/null

echo "bench-sinks: $(date -u +%Y-%m-%d), $(nproc) cores, $ROUNDS rounds of ${DURATION}s per sink, $CONNECTIONS connections, $REPLICAS receiver replicas, state from $ORGANIZATIONS organisations at each round's start; receivers, API server, etcd and wrk share the machine"
# What a sink holds, a line per delivery recorded: the Events' notes, or the organisations
# the state document gained.
recorded_by() {
  case $1 in
    events)
      kubectl -n "$NS-$1" get events.events.k8s.io -l hookwarden.io/webhook=bench-events \
        -o jsonpath='{range .items[*]}{.note}{"\n"}{end}' ;;
    state)
      kubectl -n "$NS-$1" get configmap bench-state -o jsonpath='{.data.membrane\.json}' |
        jq -r '.organizations[] | select(.orgId | startswith("org-seed-") | not) | .orgId' ;;
  esac
}
for sink in $SINKS; do
  ip=$(kubectl -n "$NS-$sink" get service "bench-$sink-receiver" -o jsonpath='{.spec.clusterIP}')
  # wait until the Service routes
  for _ in $(seq 50); do curl -fs "http://$ip/healthz" >/dev/null && break; sleep 0.2; done
  : >"$WORK/$sink.all"
  rates=()
  for round in $(seq "$ROUNDS"); do
    # Each round from the same document: the rate is the one of a document of
    # $ORGANIZATIONS organisations (and what a round adds), not of one grown by earlier rounds.
    [ "$sink" = state ] && kubectl -n "$NS-state" patch configmap bench-state --type merge --patch-file "$WORK/patch.json" >/dev/null
    # Distinct from every earlier round's: the ids carry the second they were made.
    "$SERVER" requests $((DURATION * 4000)) "$WORK/secret" "$WORK/requests" membrane
    before=$(recorded_by "$sink" | wc -l)
    BENCH_PROVIDER=membrane BENCH_REQUESTS="$WORK/requests" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency --timeout 15s \
      -s bench/wrk.lua "http://$ip/membrane" >"$WORK/$sink.wrk"
    sleep 2 # answers still in flight when wrk stopped counting
    sent=$(awk '/requests in/ {print $1}' "$WORK/$sink.wrk")
    non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$sink.wrk")
    acked=$((sent - ${non2xx:-0}))
    p99=$(awk '$1 == "99%" {print $2}' "$WORK/$sink.wrk")
    recorded_by "$sink" >"$WORK/recorded"
    case $sink in
      # The document was reset: everything it gained is this round's.
      state) cat "$WORK/recorded" >>"$WORK/$sink.all"; recorded=$(wc -l <"$WORK/recorded") ;;
      events) cp "$WORK/recorded" "$WORK/$sink.all"; recorded=$(($(wc -l <"$WORK/recorded") - before)) ;;
    esac
    twice=$(sort "$WORK/$sink.all" | uniq -d | wc -l)
    if [ "$twice" != 0 ]; then
      echo "bench-sinks: $sink: $twice deliveries recorded twice" >&2
      exit 1
    fi
    # Acknowledged, not found recorded: those answered after wrk stopped counting (about
    # one per connection) are recorded but not in its count.
    rate=$(awk -v a="$acked" -v d="$DURATION" 'BEGIN {printf "%.1f", a / d}')
    rates+=("$rate")
    printf '%-7s round %d %8s recorded/s   p99 %8s   sent %d, acknowledged %d, recorded %d\n' \
      "$sink" "$round" "$rate" "$p99" "$sent" "$acked" "$recorded"
    if [ "$recorded" -lt "$acked" ]; then
      echo "bench-sinks: $sink: fewer recorded than acknowledged" >&2
      exit 1
    fi
  done
  median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  printf '%-7s median of %d rounds: %s recorded/s\n' "$sink" "$ROUNDS" "$median"
done
