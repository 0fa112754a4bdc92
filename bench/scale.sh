#!/usr/bin/env bash
# The scale benchmark (`make bench-scale`; README, "Receiver pools"): NAMESPACES namespaces
# (default 10) with PER_NAMESPACE Webhooks each (default 100), every one in its namespace's
# default ReceiverPool, all applied at once (one `kubectl apply` per namespace, in
# parallel) on the project's cluster. Reports:
# - the time from the first apply until every Webhook is Ready (its pool's pods report they
#   serve its current generation; target < 60 s);
# - the receiver pods per namespace (target <= 2);
# - the RSS of each pool's receiver process and of the operator (targets < 64 MiB), read
#   from /proc on this machine, which is the cluster's one node;
# - the time from apply to Ready (served) of one more Webhook added to a pool that serves
#   PER_NAMESPACE already.
#
# Starts the cluster if needed and installs hookwarden from release builds; deletes its
# namespaces at the end and leaves the cluster running. Not a test: figures go into
# README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
NAMESPACES=${BENCH_NAMESPACES:-10}
PER_NAMESPACE=${BENCH_PER_NAMESPACE:-100}
TIMEOUT=${BENCH_TIMEOUT:-600}
PREFIX=hookwarden-scale
TOTAL=$((NAMESPACES * PER_NAMESPACE))
eval "$(tests/cluster/cluster.sh env)"
WORK=$(mktemp -d)
cleanup() {
  for i in $(seq 0 $((NAMESPACES - 1))); do
    kubectl delete namespace "$PREFIX-$i" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

tests/cluster/cluster.sh up
PROFILE=release tests/install.sh >/dev/null

webhook() { # NAME: a GitHub Webhook with default settings (the default pool), recording Events
  printf -- '---\napiVersion: hookwarden.io/v1alpha1\nkind: Webhook\nmetadata: {name: %s}\nspec: {path: /%s, provider: github}\n' "$1" "$1"
}
for i in $(seq 0 $((NAMESPACES - 1))); do
  ns=$PREFIX-$i
  kubectl delete namespace "$ns" --ignore-not-found --wait=true >/dev/null
  kubectl create namespace "$ns" >/dev/null
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  for j in $(seq 0 $((PER_NAMESPACE - 1))); do webhook "hook-$j"; done >"$WORK/$ns.yaml"
done
# Wait for each namespace's default ServiceAccount (pods need it), as a user's would have.
for i in $(seq 0 $((NAMESPACES - 1))); do
  until kubectl -n "$PREFIX-$i" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
done

ready_count() {
  kubectl get webhooks -A -o json |
    jq '[.items[] | select(.metadata.namespace | startswith("'"$PREFIX"'-"))
         | select(.metadata.generation as $g | any(.status.conditions[]?;
             .type == "Ready" and .status == "True" and .observedGeneration == $g))] | length' 2>/dev/null ||
    echo 0
}

# The API server's requests by verb and resource (its own counter), to say where the time
# goes: the difference over the run is printed at the end.
requests() {
  kubectl get --raw /metrics |
    awk 'function label(name,   v) {
           if (!match($0, "[{,]" name "=\"[^\"]*\"")) return ""
           v = substr($0, RSTART + length(name) + 3, RLENGTH - length(name) - 4)
           return v
         }
         /^apiserver_request_total\{/ {
      sub_ = label("subresource"); if (sub_ != "") sub_ = "/" sub_
      n[label("verb") " " label("resource") sub_] += $NF
    } END { for (k in n) print k, n[k] }' | sort
}
requests >"$WORK/requests.before"

echo "bench-scale: $(date -u +%Y-%m-%d), $(nproc) cores, $NAMESPACES namespaces x $PER_NAMESPACE Webhooks; operator, API server, etcd and the pools share the machine"
start=$(date +%s.%N)
for i in $(seq 0 $((NAMESPACES - 1))); do
  kubectl -n "$PREFIX-$i" apply -f "$WORK/$PREFIX-$i.yaml" >/dev/null &
done
wait
applied=$(date +%s.%N)
ready=0
while :; do
  ready=$(ready_count)
  now=$(date +%s.%N)
  [ "$ready" -ge "$TOTAL" ] && break
  tick=$(awk "BEGIN {printf \"%d\", $now - $start}")
  if [ $((tick / 10)) -gt "${last_tick:-0}" ]; then
    last_tick=$((tick / 10))
    echo "  ${tick} s: $ready/$TOTAL Ready"
  fi
  if awk "BEGIN {exit !($now - $start > $TIMEOUT)}"; then
    echo "bench-scale: only $ready/$TOTAL Webhooks Ready after ${TIMEOUT}s" >&2
    exit 1
  fi
  sleep 1
done
elapsed() { awk "BEGIN {printf \"%.1f\", $2 - $1}"; }
echo "  applied: $TOTAL Webhooks in $(elapsed "$start" "$applied") s (kubectl)"
echo "  all Ready: $(elapsed "$start" "$now") s after the first apply (target < 60 s)"
requests >"$WORK/requests.after"
echo "  API requests until all Ready, by verb and resource (the 12 most):"
awk 'NR == FNR {before[$1 " " $2] = $3; next}
     {d = $3 - before[$1 " " $2]; if (d > 0) printf "%d %s %s\n", d, $1, $2}' \
  "$WORK/requests.before" "$WORK/requests.after" | sort -rn | head -12 |
  awk '{printf "    %8d %s %s\n", $1, $2, $3}'

max_pods=0
for i in $(seq 0 $((NAMESPACES - 1))); do
  n=$(kubectl -n "$PREFIX-$i" get pods -l hookwarden.io/pool=default --no-headers 2>/dev/null |
    grep -c Running || true)
  [ "$n" -gt "$max_pods" ] && max_pods=$n
done
total_pods=$(kubectl get pods -A -l hookwarden.io/pool=default --no-headers | grep -c Running || true)
echo "  receiver pods: $total_pods in all, at most $max_pods per namespace (target <= 2)"

# The pools' receivers and the operator are processes of this machine (the one node).
pool_rss=$(ps -C hookwarden-receiver -o rss=,args= | awk '/ pool / {print $1}' | sort -n)
if [ -n "$pool_rss" ]; then
  echo "  pool RSS: max $(echo "$pool_rss" | tail -1 | awk '{printf "%.1f", $1/1024}') MiB, median $(echo "$pool_rss" | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1024}') MiB over $(echo "$pool_rss" | wc -l) pods (target < 64 MiB)"
fi
operator_rss=$(ps -C hookwarden-operator -o rss= | sort -n | tail -1)
echo "  operator RSS: $(awk "BEGIN {printf \"%.1f\", $operator_rss/1024}") MiB (the larger of its replicas; target < 64 MiB)"

# One more Webhook in a pool that serves PER_NAMESPACE already.
start=$(date +%s.%N)
webhook extra | kubectl -n "$PREFIX-0" apply -f - >/dev/null
kubectl -n "$PREFIX-0" wait --for=condition=Ready --timeout=120s webhook/extra >/dev/null
echo "  one Webhook added to a pool of $PER_NAMESPACE: Ready (served) $(elapsed "$start" "$(date +%s.%N)") s after its apply"
