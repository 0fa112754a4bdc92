#!/usr/bin/env bash
# Builds hookwarden's binaries and images and installs it into the test cluster exactly as
# users do: `helm install` of charts/hookwarden (Helm's own engine, see tests/chart/helm),
# with only the images swapped for the local builds (tests/chart/local.yaml).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tests/cluster/cluster.sh env)"
# The cluster's own kubectl (1.20) serves when the machine has none.
export PATH="$PATH:${HOOKWARDEN_CACHE:-$HOME/.cache/hookwarden}/k8s-1.20.2/bin"
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
echo "install: helm install charts/hookwarden" >&2
tests/chart/helm install --name hookwarden --namespace hookwarden-system --values tests/chart/local.yaml
kubectl wait --for=condition=Established --timeout=60s crd/webhooks.hookwarden.io >/dev/null
if [ "$restart" = 1 ]; then
  # Same tag, new build: roll the operator onto the freshly built image.
  kubectl -n hookwarden-system rollout restart deployment/hookwarden-operator >/dev/null
fi
kubectl -n hookwarden-system rollout status deployment/hookwarden-operator --timeout=180s
