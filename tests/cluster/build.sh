#!/usr/bin/env bash
# Builds the test cluster's programs from the Go module proxy with Go at /usr/local/go (or the
# `go` on PATH), once, into $HOOKWARDEN_CACHE; a component is rebuilt only when its version or
# build recipe changes (each build directory holds a stamp of both).
#
# Usage: tests/cluster/build.sh [COMPONENT...]     (default: what cluster.sh needs for
#                                                   K8S_VERSION, default the newest)
#   kubernetes-X.Y.Z  kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#                     kube-proxy, kubectl (a wrapper module requiring k8s.io/kubernetes, every
#                     staging module replaced by its v0.Y.Z release, the list generated from
#                     the published go.mod) and the pause binary (build/pause, gcc -static)
#   etcd              go.etcd.io/etcd/server/v3 (a wrapper module: the published go.mod
#                     points its sibling modules at ../, which only a wrapper can replace)
#   containerd        containerd, containerd-shim-runc-v2, ctr
#   coredns           CoreDNS with its default plugins
#   crane             go-containerregistry's crane (OCI tarballs without a daemon)
#   gateway-api       the Gateway API's standard-channel CRD manifests (config/crd/standard
#                     of sigs.k8s.io/gateway-api), nothing built
#   path COMPONENT    print the directory holding COMPONENT's binaries (builds nothing)
#
# Caches: $HOOKWARDEN_CACHE/go/{mod,build} (GOMODCACHE, GOCACHE), binaries in
# $HOOKWARDEN_CACHE/bin/COMPONENT-VERSION, build logs in $HOOKWARDEN_CACHE/logs.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$HERE/versions.sh"
CACHE=${HOOKWARDEN_CACHE:-${HOME:-/root}/.cache/hookwarden}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
K8S_VERSION=${K8S_VERSION:-$K8S_VERSION_NEW}
# Bump when a recipe below changes, so cached builds are redone.
RECIPE=1

log() { echo "build: $*" >&2; }

go_env() {
  if [ -x /usr/local/go/bin/go ]; then export PATH=/usr/local/go/bin:$PATH; fi
  command -v go >/dev/null || { log "no Go toolchain: expected /usr/local/go/bin/go"; exit 1; }
  export GOMODCACHE=$CACHE/go/mod GOCACHE=$CACHE/go/build GOFLAGS=-mod=mod GOTOOLCHAIN=local
  export CGO_ENABLED=0 GOWORK=off
  # the machine's proxy settings are kept (GOPROXY, GONOSUMDB, ...)
}

# dir COMPONENT: where its binaries go
dir() {
  case $1 in
    kubernetes-*) echo "$CACHE/bin/$1" ;;
    etcd) echo "$CACHE/bin/etcd-$ETCD_VERSION" ;;
    containerd) echo "$CACHE/bin/containerd-$CONTAINERD_VERSION" ;;
    coredns) echo "$CACHE/bin/coredns-$COREDNS_VERSION" ;;
    crane) echo "$CACHE/bin/crane-$CRANE_VERSION" ;;
    gateway-api) echo "$CACHE/bin/gateway-api-$GATEWAY_API_VERSION" ;;
    *) log "unknown component $1"; exit 2 ;;
  esac
}

stamp() { echo "recipe=$RECIPE go=$(go env GOVERSION)"; }
# (a built component's stamp; the image tarballs made from it carry it in their names)
built() { [ -f "$(dir "$1")/.built" ] && [ "$(cat "$(dir "$1")/.built")" = "$(stamp)" ]; }

# wrapper NAME REQUIRE...: a fresh module in $CACHE/src/NAME requiring each "path@version"
wrapper() {
  local name=$1 w; shift
  w=$CACHE/src/$name
  rm -rf "$w"; mkdir -p "$w"
  {
    echo "module hookwarden.test/cluster/$name"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//; s/^\([0-9]*\.[0-9]*\).*/\1/').0"
    echo
    echo "require ("
    local r
    for r in "$@"; do echo "	${r%@*} ${r#*@}"; done
    echo ")"
  } >"$w/go.mod"
  echo "$w"
}

# go_build DIR OUT PKG...: build each main package PKG inside wrapper module DIR into OUT,
# with upstream's release flags
go_build() {
  local w=$1 out=$2 ldflags=${LDFLAGS:-} tags=${TAGS:-}; shift 2
  mkdir -p "$out"
  (cd "$w" && go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$out/" "$@")
}

build_kubernetes() {
  local v=${1#kubernetes-} out w gomod minor major commit date
  out=$(dir "$1")
  major=${v%%.*}; minor=${v#*.}; minor=${minor%%.*}
  gomod=$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { log "k8s.io/kubernetes@v$v: not served by the module proxy"; return 1; }
  w=$(wrapper "kubernetes-$v" "k8s.io/kubernetes@v$v")
  # every staging module (`k8s.io/X => ./staging/src/k8s.io/X` upstream) at its v0 release
  {
    echo
    echo "replace ("
    sed -n 's|^\t\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$|\t\1 => \1 v0.'"$minor.${v##*.}"'|p' "$gomod"
    echo ")"
  } >>"$w/go.mod"
  [ "$(grep -c '=> k8s.io/' "$w/go.mod")" -gt 20 ] || { log "found no staging modules in $gomod"; return 1; }
  commit=$(go list -m -json "k8s.io/kubernetes@v$v" | sed -n 's/^\t\t"Hash": "\(.*\)",*$/\1/p')
  date=$(go list -m -json "k8s.io/kubernetes@v$v" | sed -n 's/^\t"Time": "\(.*\)",*$/\1/p')
  local ld="" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $pkg.gitVersion=v$v -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ld="$ld -X $pkg.gitCommit=${commit:-unknown} -X $pkg.gitTreeState=clean -X $pkg.buildDate=${date:-1970-01-01T00:00:00Z}"
  done
  local cmds="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
  # shellcheck disable=SC2046
  LDFLAGS=$ld TAGS=selinux,notest,grpcnotrace go_build "$w" "$out" $(for c in $cmds; do echo "k8s.io/kubernetes/cmd/$c"; done)
  # the pod sandbox's pause process, from the same release
  local src
  src=$(go mod download -json "k8s.io/kubernetes@v$v" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  gcc -Os -static -DVERSION="v$v" -o "$out/pause" "$src/build/pause/linux/pause.c"
}

build_etcd() {
  local w out
  out=$(dir etcd)
  w=$(wrapper "etcd-$ETCD_VERSION" "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
    "go.etcd.io/etcd/api/v3@v$ETCD_VERSION" "go.etcd.io/etcd/client/pkg/v3@v$ETCD_VERSION" \
    "go.etcd.io/etcd/client/v3@v$ETCD_VERSION" "go.etcd.io/etcd/pkg/v3@v$ETCD_VERSION")
  go_build "$w" "$out" go.etcd.io/etcd/server/v3
  # go names a .../v3 main package after the element before the version
  if [ -x "$out/server" ]; then mv "$out/server" "$out/etcd"; elif [ -x "$out/v3" ]; then mv "$out/v3" "$out/etcd"; fi
}

build_containerd() {
  local w out p=github.com/containerd/containerd/v2
  out=$(dir containerd)
  w=$(wrapper "containerd-$CONTAINERD_VERSION" "$p@v$CONTAINERD_VERSION")
  LDFLAGS="-X $p/version.Version=v$CONTAINERD_VERSION -X $p/version.Revision=v$CONTAINERD_VERSION" \
    TAGS="no_btrfs no_devmapper no_zfs no_aufs" \
    go_build "$w" "$out" "$p/cmd/containerd" "$p/cmd/containerd-shim-runc-v2" "$p/cmd/ctr"
}

build_coredns() {
  local w out
  out=$(dir coredns)
  w=$(wrapper "coredns-$COREDNS_VERSION" "github.com/coredns/coredns@v$COREDNS_VERSION")
  go_build "$w" "$out" github.com/coredns/coredns
}

build_crane() {
  local w out
  out=$(dir crane)
  w=$(wrapper "crane-$CRANE_VERSION" "github.com/google/go-containerregistry@v$CRANE_VERSION")
  go_build "$w" "$out" github.com/google/go-containerregistry/cmd/crane
}

build_gateway() {
  local out src
  out=$(dir gateway-api)
  src=$(go mod download -json "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src/config/crd/standard" ] || { log "sigs.k8s.io/gateway-api@v$GATEWAY_API_VERSION has no config/crd/standard"; return 1; }
  mkdir -p "$out/crds"
  cp "$src"/config/crd/standard/*.yaml "$out/crds/"
}

# what each component must leave behind
expected() {
  case $1 in
    kubernetes-*) echo "kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl pause" ;;
    etcd) echo etcd ;;
    containerd) echo "containerd containerd-shim-runc-v2 ctr" ;;
    coredns) echo coredns ;;
    crane) echo crane ;;
    gateway-api) echo crds/gateway.networking.k8s.io_httproutes.yaml crds/gateway.networking.k8s.io_gateways.yaml ;;
  esac
}

# build COMPONENT N M: build one component (its log in $CACHE/logs), say how far we are
build_one() {
  local c=$1 n=$2 m=$3 t0=$SECONDS logf out
  out=$(dir "$c")
  logf=$CACHE/logs/build-$c.log
  mkdir -p "$CACHE/logs"
  log "[$n/$m] building $c into $out (log: $logf)"
  rm -rf "$out"
  # a progress line every minute while the (silent) Go build runs
  ( while sleep 60; do log "[$n/$m] still building $c ($(( (SECONDS - t0) / 60 )) min; total elapsed $(( SECONDS / 60 )) min)"; done ) 8>&- 9>&- &
  local ticker=$!
  # shellcheck disable=SC2064
  trap "kill $ticker 2>/dev/null || true" EXIT
  # (not under `if`: that would switch off errexit inside the build functions)
  local rc=0 b
  set +e
  local fn=build_${c%%-*}
  ( set -ex; "$fn" "$c" ) >"$logf" 2>&1
  rc=$?
  set -e
  for b in $(expected "$c"); do
    if [ "$rc" = 0 ] && [ ! -s "$out/$b" ]; then echo "build: $out/$b is missing" >>"$logf"; rc=1; fi
  done
  kill "$ticker" 2>/dev/null || true
  if [ "$rc" != 0 ]; then
    log "[$n/$m] building $c failed after $((SECONDS - t0))s; last lines of $logf:"
    tail -n 40 "$logf" | sed 's/^/    /' >&2
    exit 1
  fi
  stamp >"$out/.built"
  log "[$n/$m] built $c in $((SECONDS - t0))s: $(find "$out" -mindepth 1 -maxdepth 1 ! -name '.*' -printf '%f ')"
}

main() {
  if [ "${1:-}" = path ]; then dir "${2:?usage: $0 path COMPONENT}"; return; fi
  go_env
  local want=("$@") todo=() c n=0
  [ ${#want[@]} -gt 0 ] || want=("kubernetes-$K8S_VERSION" etcd containerd coredns crane)
  for c in "${want[@]}"; do built "$c" || todo+=("$c"); done
  [ ${#todo[@]} -gt 0 ] || return 0
  log "${#todo[@]} component(s) to build from the Go module proxy: ${todo[*]}; a first build takes" \
    "a while (about 7 minutes per Kubernetes release, 6 for the rest, on 2 cores); later runs reuse $CACHE"
  SECONDS=0
  mkdir -p "$CACHE/logs"
  exec 8>"$CACHE/build.lock"
  flock 8
  for c in "${todo[@]}"; do
    n=$((n + 1))
    built "$c" || build_one "$c" "$n" "${#todo[@]}"
  done
  log "done in $((SECONDS / 60)) min $((SECONDS % 60)) s"
}

main "$@"
