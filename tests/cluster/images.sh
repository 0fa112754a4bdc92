#!/usr/bin/env bash
# Build hookwarden's container images into the test cluster's Docker engine, without a registry.
#
# Usage: tests/cluster/images.sh DIR
#   DIR holds the built binaries hookwarden-operator and hookwarden-receiver (e.g. target/debug).
#
#   1. hookwarden/base:local   FROM scratch + the glibc shared libraries the two binaries load
#                              (from ldd, plus the dynamic loader; none for static binaries),
#                              /etc/passwd and /etc/group with user nonroot (65532:65532),
#                              /etc/nsswitch.conf, the host's CA bundle, /home/nonroot and an
#                              empty /tmp: a local stand-in for gcr.io/distroless/cc-debian12.
#   2. hookwarden-operator:$IMAGE_TAG and hookwarden-receiver:$IMAGE_TAG (default tag: dev) from
#      operator/Dockerfile and receiver/Dockerfile with --build-arg BASE=hookwarden/base:local.
#   3. hookwarden-e2e-app:$IMAGE_TAG, the tests' stand-in application, when DIR holds it.
#
# The images land in the harness's dockerd (DOCKER_HOST from `cluster.sh env`), the one the
# kubelet uses: run `tests/cluster/cluster.sh up` first, and use imagePullPolicy: Never.
# Reruns are fast (Docker's build cache).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=${1:?usage: $0 DIR (a directory holding hookwarden-operator and hookwarden-receiver)}
TAG=${IMAGE_TAG:-dev}
BASE=hookwarden/base:local
BINS="hookwarden-operator hookwarden-receiver"

log() { echo "images: $*" >&2; }

DIR=$(cd "$DIR" 2>/dev/null && pwd) || { log "$1: no such directory"; exit 1; }
for b in $BINS; do [ -x "$DIR/$b" ] || { log "$DIR/$b: no such executable"; exit 1; }; done
eval "$("$HERE/cluster.sh" env)"
# Debian's docker CLI matches the engine; the legacy builder needs no BuildKit or buildx.
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
export DOCKER_BUILDKIT=0
"$DOCKER" version >/dev/null 2>&1 || { log "no Docker engine at $DOCKER_HOST: run tests/cluster/cluster.sh up first"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hookwarden-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. the base image's root file system
root=$work/base/rootfs
mkdir -p "$root/etc" "$root/tmp"
chmod 1777 "$root/tmp"
libs=""
LIB_BINS=$BINS
[ -x "$DIR/hookwarden-e2e-app" ] && LIB_BINS="$BINS hookwarden-e2e-app"
for b in $LIB_BINS; do
  out=$(LC_ALL=C ldd "$DIR/$b" 2>&1) || true
  case $out in *"not a dynamic executable"* | *"statically linked"*) continue ;; esac
  if grep -q 'not found' <<<"$out"; then log "$b: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"; exit 1; fi
  # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
  libs="$libs $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out")"
done
for lib in $(tr ' ' '\n' <<<"$libs" | sort -u); do
  mkdir -p "$root$(dirname "$lib")"
  cp -L "$lib" "$root$lib"
done
if [ -n "${libs// /}" ] && ! ls "$root"/lib*/ld-linux* >/dev/null 2>&1; then log "ldd named no dynamic loader"; exit 1; fi
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
mkdir -p "$root/home" "$work/base/home"
printf 'FROM scratch\nCOPY rootfs/ /\nCOPY --chown=65532:65532 home/ /home/nonroot/\n' > "$work/base/Dockerfile"
log "building $BASE"
"$DOCKER" build -q -t "$BASE" "$work/base" >/dev/null

# 2. the project's images; the context holds only the binary, not all of $DIR
for b in $BINS; do
  comp=${b#hookwarden-}
  mkdir -p "$work/$comp"
  ln "$DIR/$b" "$work/$comp/$b" 2>/dev/null || cp "$DIR/$b" "$work/$comp/$b"
  log "building $b:$TAG"
  "$DOCKER" build -q --build-arg "BASE=$BASE" -f "$REPO/$comp/Dockerfile" -t "$b:$TAG" "$work/$comp" >/dev/null
done
if [ -x "$DIR/hookwarden-e2e-app" ]; then
  mkdir -p "$work/e2e-app"
  ln "$DIR/hookwarden-e2e-app" "$work/e2e-app/" 2>/dev/null || cp "$DIR/hookwarden-e2e-app" "$work/e2e-app/"
  log "building hookwarden-e2e-app:$TAG"
  "$DOCKER" build -q --build-arg "BASE=$BASE" -f "$HERE/e2e-app.Dockerfile" -t "hookwarden-e2e-app:$TAG" "$work/e2e-app" >/dev/null
fi
# the images these tags replaced (a debug binary is ~200 MB)
"$DOCKER" image prune -f >/dev/null 2>&1 || true
log "done: $BASE $(for b in $BINS; do printf '%s:%s ' "$b" "$TAG"; done)"
