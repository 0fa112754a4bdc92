#!/usr/bin/env bash
# `make demo`: the local cluster, hookwarden installed with its Helm chart, the example Webhooks
# applied, and what the operator made of them. The cluster keeps running afterwards;
# `make cluster-down` stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
# KUBECONFIG and the kubectl built for the cluster's version first on PATH (the newest
# Kubernetes unless K8S_VERSION says otherwise)
eval "$(tests/cluster/cluster.sh env)"
NS=hookwarden-demo
tests/cluster/cluster.sh up
echo "== kubectl version"
kubectl version
tests/install.sh

# The Gateway API (its CRDs from the module's release manifests) and a Gateway for
# examples/opal.yaml to attach to. No Gateway controller runs here: the demo shows the
# route and what its status says.
kubectl apply --server-side -f "$HOOKWARDEN_GATEWAY_API_CRDS" >/dev/null
tests/cluster/cluster.sh established gateways.gateway.networking.k8s.io \
  httproutes.gateway.networking.k8s.io
kubectl create namespace gateways --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<'EOG'
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: gateways}
spec:
  gatewayClassName: example
  listeners:
    - name: https
      protocol: HTTPS
      port: 443
      hostname: "*.example.com"
      tls: {certificateRefs: [{name: hooks-example-com-tls}]}
      allowedRoutes: {namespaces: {from: All}}
EOG
kubectl create namespace "$NS" --dry-run=client -o yaml |
  kubectl label --local -f - -o yaml pod-security.kubernetes.io/enforce=restricted |
  kubectl apply -f - >/dev/null
# Opal generates the signing secret and shows it once; the user stores it in a Secret.
# Here a random value stands in for the one Opal would show.
if ! kubectl -n "$NS" get secret opal-signing >/dev/null 2>&1; then
  kubectl -n "$NS" create secret generic opal-signing \
    --from-literal=signing-secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >/dev/null
fi
kubectl -n "$NS" apply -f examples/opal.yaml -f examples/membrane.yaml
kubectl -n "$NS" wait --for=condition=Ready --timeout=180s webhook/opal webhook/membrane-orgs
# Both are Ready once every Ready pod of their pool serves them; the pool itself reports
# Ready once its Deployment has Ready pods.
kubectl -n "$NS" wait --for=condition=Ready --timeout=180s receiverpool/default >/dev/null

echo; echo "== Webhooks"
kubectl -n "$NS" get webhooks -o wide
echo; echo "== The receiver pool that serves both"
kubectl -n "$NS" get receiverpools -o wide
echo; echo "== What the operator created for them"
kubectl -n "$NS" get deployments,pods,services,ingresses,serviceaccounts,roles,rolebindings,configmaps,secrets,poddisruptionbudgets \
  -l app.kubernetes.io/managed-by=hookwarden-operator
echo; echo "== The Opal Webhook's HTTPRoute, and what its status says (no Gateway controller runs here)"
kubectl -n "$NS" get httproute opal-receiver -o jsonpath='{.spec}' | jq -c .
kubectl -n "$NS" get webhook opal -o jsonpath='{.status.conditions[?(@.type=="RouteAccepted")]}' | jq -c .
echo; echo "== Status of the membrane Webhook"
kubectl -n "$NS" get webhook membrane-orgs -o jsonpath='{.status}' | jq .
# One signed delivery each, as Opal and Membrane sign them, through the pool's Service.
SEND=$PWD/${PROFILE_DIR:-target/debug}/hookwarden-receiver
SECRETS=$(mktemp -d)
trap 'rm -rf "$SECRETS"' EXIT
kubectl -n "$NS" get secret opal-signing -o jsonpath='{.data.signing-secret}' | base64 -d >"$SECRETS/opal"
kubectl -n "$NS" get secret membrane-orgs-signing-secret -o jsonpath='{.data.secret}' | base64 -d >"$SECRETS/membrane"
url() { # url WEBHOOK PATH: its status.url on its Service's ClusterIP (no cluster DNS here)
  local service
  service=$(kubectl -n "$NS" get webhook "$1" -o jsonpath='{.status.url}' | sed -E 's#^http://([^.]+)\..*#\1#')
  echo "http://$(kubectl -n "$NS" get service "$service" -o jsonpath='{.spec.clusterIP}')$2"
}
send() { # send NAME PATH PROVIDER BODY: retries while a fresh Service rule settles
  for _ in $(seq 20); do
    if out=$("$SEND" send "$(url "$1" "$2")" --provider "$3" --secret-file "$SECRETS/$3" <<<"$4" 2>&1); then
      echo "$3 delivery: $out"
      return 0
    fi
    case $out in *"cannot send"*) sleep 1 ;; *) echo "$3 delivery refused: $out" >&2; return 1 ;; esac
  done
  echo "$3 receiver unreachable: $out" >&2
  return 1
}
echo; echo "== Deliveries"
send opal /opal opal "{\"event_ts\":$(date +%s),\"organization_id\":\"eec5dcd9-fb0a-4726-b283-4379b524a772\",\"events\":[{\"event_type\":\"USER_ADDED_TO_RESOURCE\",\"resource_type\":\"AWS_IAM_ROLE\",\"user_id\":\"user@example.com\",\"resource_id\":\"0eb35db24007c8148\",\"access_level\":\"admin\"},{\"event_type\":\"USER_ADDED_TO_GROUP\",\"group_type\":\"OKTA_GROUP\",\"user_id\":\"user@example.com\",\"group_id\":\"00g1835ro5hxRmpel5d7\"}]}"
send membrane-orgs /membrane/orgs membrane '{"type":"org-created","name":"New Organization","workspaceName":"Main Workspace","orgId":"org456","org":{"id":"org456","name":"New Organization","domains":["company.com"]},"user":{"name":"Creator User","email":"creator@company.com"}}'

echo; echo "== Events"
kubectl -n "$NS" get events --sort-by=.metadata.creationTimestamp
echo; echo "== ConfigMap opal-access, key opal.json"
kubectl -n "$NS" get configmap opal-access -o jsonpath='{.data.opal\.json}' | jq .
echo; echo "== ConfigMap membrane-orgs, key membrane.json"
kubectl -n "$NS" get configmap membrane-orgs -o jsonpath='{.data.membrane\.json}' | jq .
cat <<EOT

The cluster is still running; to use it (KUBECONFIG, and its own kubectl first on PATH):
  eval "\$(tests/cluster/cluster.sh env)"
The generated Membrane secret (paste it into Membrane's webhook settings):
  kubectl -n $NS get secret membrane-orgs-signing-secret -o jsonpath='{.data.secret}' | base64 -d
Stop everything with: make cluster-down
EOT
