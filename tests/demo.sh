#!/usr/bin/env bash
# `make demo`: the local cluster, hookwarden installed as shipped, the example Webhooks
# applied, and what the operator made of them. The cluster keeps running afterwards;
# `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tests/cluster/cluster.sh env)"
# The cluster's own kubectl (1.20) serves when the machine has none.
export PATH="$PATH:${HOOKWARDEN_CACHE:-$HOME/.cache/hookwarden}/k8s-1.20.2/bin"
NS=hookwarden-demo
tests/cluster/cluster.sh up
tests/install.sh

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
# Opal generates the signing secret and shows it once; the user stores it in a Secret.
# Here a random value stands in for the one Opal would show.
if ! kubectl -n "$NS" get secret opal-signing >/dev/null 2>&1; then
  kubectl -n "$NS" create secret generic opal-signing \
    --from-literal=signing-secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >/dev/null
fi
kubectl -n "$NS" apply -f examples/opal.yaml -f examples/membrane.yaml
kubectl -n "$NS" wait --for=condition=Ready --timeout=180s webhook/opal webhook/membrane-orgs

echo; echo "== Webhooks"
kubectl -n "$NS" get webhooks -o wide
echo; echo "== What the operator created for them"
kubectl -n "$NS" get deployments,pods,services,serviceaccounts,roles,rolebindings,configmaps,secrets \
  -l app.kubernetes.io/managed-by=hookwarden-operator
echo; echo "== Status of the membrane Webhook"
kubectl -n "$NS" get webhook membrane-orgs -o jsonpath='{.status}' | jq .
echo; echo "== Events"
kubectl -n "$NS" get events --field-selector involvedObject.kind=Webhook
cat <<EOT

The cluster is still running: export KUBECONFIG=$KUBECONFIG
The generated Membrane secret (paste it into Membrane's webhook settings):
  kubectl -n $NS get secret membrane-orgs-signing-secret -o jsonpath='{.data.secret}' | base64 -d
Stop everything with: make cluster-down
EOT
