# shellcheck shell=bash
# Container images without a daemon or a remote registry (sourced by cluster.sh and images.sh).
#
# crane (go-containerregistry, built by build.sh) assembles each image from layer tarballs
# and sets its config; it only edits images held by a registry, so a throwaway one of its
# own (`crane registry serve`, blobs on disk) runs on 127.0.0.1 while images are built.
# The result is a docker-save tarball that containerd imports into its `k8s.io` namespace,
# where the kubelet finds it (pods use imagePullPolicy: Never or IfNotPresent).
#
# needs: CRANE (the crane binary), CTR (ctr), CONTAINERD_ADDRESS (containerd's socket)

OCI_REG=""
OCI_REG_PID=""
OCI_WORK=""

# oci_start: the throwaway registry, stopped by oci_stop
oci_start() {
  [ -n "$OCI_REG" ] && return 0
  OCI_WORK=$(mktemp -d "${TMPDIR:-/tmp}/hookwarden-oci.XXXXXX")
  mkdir -p "$OCI_WORK/blobs"
  # (without the callers' lock descriptors: a registry left behind must not hold their locks)
  "$CRANE" registry serve --address 127.0.0.1:0 --disk "$OCI_WORK/blobs" >"$OCI_WORK/registry.log" 2>&1 8>&- 9>&- &
  OCI_REG_PID=$!
  local port
  for _ in $(seq 50); do
    port=$(sed -n 's/.*serving on port \([0-9]*\).*/\1/p' "$OCI_WORK/registry.log")
    [ -n "$port" ] && break
    kill -0 "$OCI_REG_PID" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "oci: crane's registry did not start: $(cat "$OCI_WORK/registry.log")" >&2; return 1; }
  OCI_REG=127.0.0.1:$port
}

oci_stop() {
  if [ -n "$OCI_REG_PID" ]; then
    kill "$OCI_REG_PID" 2>/dev/null || true
    wait "$OCI_REG_PID" 2>/dev/null || true
  fi
  if [ -n "$OCI_WORK" ]; then rm -rf "$OCI_WORK"; fi
  OCI_REG="" OCI_REG_PID="" OCI_WORK=""
}

# oci_layer DIR OUT.tar [OWNER]: a layer of DIR's contents (owned by root, or OWNER uid:gid)
oci_layer() {
  local owner=${3:-0:0}
  tar --numeric-owner --owner="${owner%:*}" --group="${owner#*:}" --mtime=@0 --sort=name \
    -C "$1" -cf "$2" .
}

# oci_image NAME:TAG OUT.tar LAYER.tar... -- [crane mutate flags]: an image of the layers in
# order on an empty base, with the config the flags set (--entrypoint, --cmd, --user, ...),
# written to OUT.tar under the name docker.io/library/NAME:TAG (or NAME:TAG when NAME has a
# registry)
oci_image() {
  local ref=$1 out=$2 layers=() name; shift 2
  while [ $# -gt 0 ] && [ "$1" != -- ]; do layers+=(-f "$1"); shift; done
  [ "${1:-}" = -- ] && shift
  oci_start
  case ${ref%%/*} in
    *.*:* | *.* | localhost*) name=$ref ;;
    *) case $ref in */*) name=docker.io/$ref ;; *) name=docker.io/library/$ref ;; esac ;;
  esac
  # (crane logs every blob; its output is shown only when it fails)
  local log=$OCI_WORK/crane.log
  if ! "$CRANE" append --oci-empty-base "${layers[@]}" -t "$OCI_REG/${ref##*/}" >"$log" 2>&1 ||
    ! "$CRANE" mutate "$OCI_REG/${ref##*/}" --set-platform "linux/$(dpkg --print-architecture)" "$@" -t "$name" -o "$out" >"$log" 2>&1; then
    echo "oci: building $ref failed: $(cat "$log")" >&2
    return 1
  fi
}

# oci_import IMAGE.tar...: into containerd's k8s.io namespace
oci_import() {
  local f
  for f in "$@"; do
    "$CTR" --address "$CONTAINERD_ADDRESS" -n k8s.io images import --platform linux/amd64 "$f" >/dev/null
  done
}
