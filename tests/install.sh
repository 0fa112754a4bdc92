#!/usr/bin/env bash
# Builds hookwarden's binaries and images and installs it into the test cluster exactly as
# users do: `helm install` of charts/hookwarden (Helm's own engine, see tests/chart/helm),
# with only the images swapped for the local builds (tests/chart/local.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
# KUBECONFIG, containerd's socket, and the kubectl built for the cluster's version first on PATH
eval "$(tests/cluster/cluster.sh env)"
# PROFILE=release builds the images from release binaries (the benchmarks do).
PROFILE=${PROFILE:-dev}
if [ "$PROFILE" = dev ]; then PROFILE_DIR=target/debug; else PROFILE_DIR=target/$PROFILE; fi

echo "install: building binaries ($PROFILE profile)" >&2
cargo build --profile "$PROFILE" --bins -p hookwarden-operator -p hookwarden-receiver
# The tests' stand-in application, the target of forward sinks.
cargo build --profile "$PROFILE" --bin hookwarden-e2e-app -p hookwarden-tests
echo "install: building images" >&2
tests/cluster/images.sh "$PROFILE_DIR"

if kubectl get crd webhooks.hookwarden.io >/dev/null 2>&1; then
  # Helm installs crds/ on first install only and never upgrades it; users do this too.
  echo "install: updating the CRD" >&2
  kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
  restart=1
else
  restart=0
fi
# The install namespace admits only pods of the restricted Pod Security profile, as a
# hardened cluster's would: the operator must run there as shipped.
kubectl create namespace hookwarden-system --dry-run=client -o yaml |
  kubectl label --local -f - -o yaml pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/warn=restricted |
  kubectl apply -f - >/dev/null
echo "install: helm install charts/hookwarden" >&2
tests/chart/helm install --name hookwarden --namespace hookwarden-system --values tests/chart/local.yaml
tests/cluster/cluster.sh established webhooks.hookwarden.io
tests/cluster/cluster.sh established receiverpools.hookwarden.io
if [ "$restart" = 1 ]; then
  # Same tag, new build: roll the operator onto the freshly built image.
  kubectl -n hookwarden-system rollout restart deployment/hookwarden-operator >/dev/null
fi
kubectl -n hookwarden-system rollout status deployment/hookwarden-operator --timeout=180s
