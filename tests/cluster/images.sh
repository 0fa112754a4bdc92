#!/usr/bin/env bash
# Build hookwarden's container images and import them into the test cluster's containerd,
# without a daemon or a registry (crane and ctr, see oci.sh).
#
# Usage: tests/cluster/images.sh DIR
#   DIR holds the built binaries hookwarden-operator and hookwarden-receiver (e.g. target/debug).
#
#   1. a base layer: the glibc shared libraries the binaries load (from ldd, plus the dynamic
#      loader), /etc/passwd and /etc/group with user nonroot (65532:65532),
#      /etc/nsswitch.conf, the host's CA bundle, /home/nonroot and an empty /tmp: a local
#      stand-in for gcr.io/distroless/cc-debian12:nonroot, the shipped Dockerfiles' base.
#   2. hookwarden-operator:$IMAGE_TAG and hookwarden-receiver:$IMAGE_TAG (default tag: dev)
#      as operator/Dockerfile and receiver/Dockerfile describe them: each Dockerfile's COPY,
#      USER, ENTRYPOINT and CMD are read and applied on top of the base layer, so the test
#      images are the shipped recipe (a Dockerfile with any other instruction is refused).
#   3. hookwarden-e2e-app:$IMAGE_TAG, the tests' stand-in application, when DIR holds it.
#
# The images land in containerd's k8s.io namespace, where the kubelet finds them: run
# `tests/cluster/cluster.sh up` first, and use imagePullPolicy: Never or IfNotPresent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
DIR=${1:?usage: $0 DIR (a directory holding hookwarden-operator and hookwarden-receiver)}
TAG=${IMAGE_TAG:-dev}
BINS="hookwarden-operator hookwarden-receiver"

log() { echo "images: $*" >&2; }

DIR=$(cd "$DIR" 2>/dev/null && pwd) || { log "$1: no such directory"; exit 1; }
for b in $BINS; do [ -x "$DIR/$b" ] || { log "$DIR/$b: no such executable"; exit 1; }; done
eval "$("$HERE/cluster.sh" env)"
CRANE=$("$HERE/build.sh" path crane)/crane
CTR=$("$HERE/build.sh" path containerd)/ctr
# shellcheck source=oci.sh
. "$HERE/oci.sh"
[ -S "$CONTAINERD_ADDRESS" ] || { log "no containerd at $CONTAINERD_ADDRESS: run tests/cluster/cluster.sh up first"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/hookwarden-images.XXXXXX")
trap 'oci_stop; rm -rf "$work"' EXIT

# 1. the base layer
root=$work/base
mkdir -p "$root/etc" "$root/tmp" "$work/home/home/nonroot"
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
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
  mkdir -p "$root/etc/ssl/certs"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
fi
oci_layer "$root" "$work/base.tar"
oci_layer "$work/home" "$work/home.tar" 65532:65532

# image DOCKERFILE NAME: the image a Dockerfile of the form FROM/COPY/USER/ENTRYPOINT/CMD
# describes, on the base layer, its COPY sources taken from $DIR
image() {
  local file=$1 name=$2 flags=() line instr rest src dst n=0 layers=()
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in '' | '#'*) continue ;; esac
    instr=${line%% *}; rest=${line#* }
    case $instr in
      ARG | FROM) ;;  # the base: ours stands in for distroless
      COPY)
        src=${rest%% *}; dst=${rest##* }
        n=$((n + 1))
        mkdir -p "$work/$name.$n$(dirname "$dst")"
        cp "$DIR/$src" "$work/$name.$n$dst"
        oci_layer "$work/$name.$n" "$work/$name.$n.tar"
        layers+=("$work/$name.$n.tar") ;;
      USER) flags+=(--user "$rest") ;;
      ENTRYPOINT) flags+=(--entrypoint "$(jq -r 'join(",")' <<<"$rest")") ;;
      CMD) flags+=(--cmd "$(jq -r 'join(",")' <<<"$rest")") ;;
      *) log "$file: $instr is not supported by this harness"; exit 1 ;;
    esac
  done <"$file"
  oci_image "$name:$TAG" "$work/$name.image.tar" "$work/base.tar" "$work/home.tar" "${layers[@]}" -- "${flags[@]}"
  oci_import "$work/$name.image.tar"
  log "built and imported $name:$TAG"
}

# 2. and 3.
image "$REPO/operator/Dockerfile" hookwarden-operator
image "$REPO/receiver/Dockerfile" hookwarden-receiver
[ -x "$DIR/hookwarden-e2e-app" ] && image "$HERE/e2e-app.Dockerfile" hookwarden-e2e-app
# (the images these tags replaced are garbage-collected by containerd)
log "done"
