#!/usr/bin/env bash
# Builds hookwarden's binaries and images and installs it into the test cluster exactly as
# shipped: the generated CRD from crds/ and the manifests in deploy/ (through
# tests/deploy, which only swaps in the locally built images).
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
echo "install: building images" >&2
tests/cluster/images.sh "$PROFILE_DIR"

echo "install: applying the CRD and the operator" >&2
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/webhooks.hookwarden.io >/dev/null
# deploy/ as shipped, with only the image names swapped for the local builds.
sed -e 's#ghcr.io/hookwarden/hookwarden-operator:[^"[:space:]]*#hookwarden-operator:dev#' \
    -e 's#ghcr.io/hookwarden/hookwarden-receiver:[^"[:space:]]*#hookwarden-receiver:dev#' \
    deploy/hookwarden.yaml | kubectl apply -f - >/dev/null
# Pick up freshly built images when the operator was already installed.
kubectl -n hookwarden-system rollout restart deployment/hookwarden-operator >/dev/null
kubectl -n hookwarden-system rollout status deployment/hookwarden-operator --timeout=180s
