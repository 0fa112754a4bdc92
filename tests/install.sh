#!/usr/bin/env bash
# Builds hookwarden's binaries and images and installs it into the test cluster exactly as
# shipped: the generated CRD from crds/ and the manifests in deploy/ (through
# tests/deploy, which only swaps in the locally built images).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(tests/cluster/cluster.sh env)"
PROFILE_DIR=${PROFILE_DIR:-target/debug}

echo "install: building binaries" >&2
cargo build --bins -p hookwarden-operator -p hookwarden-receiver
echo "install: building images" >&2
tests/cluster/images.sh "$PROFILE_DIR"

echo "install: applying the CRD and the operator" >&2
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/webhooks.hookwarden.io >/dev/null
kubectl apply -k tests/deploy >/dev/null
# Pick up freshly built images when the operator was already installed.
kubectl -n hookwarden-system rollout restart deployment/hookwarden-operator >/dev/null
kubectl -n hookwarden-system rollout status deployment/hookwarden-operator --timeout=180s
