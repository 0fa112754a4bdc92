#!/usr/bin/env bash
# hookwarden's test cluster: a real single-node Kubernetes, every program built from the Go
# module proxy by build.sh (no container registry, no downloads beyond the package
# registries). Run as root.
#
#   etcd            etcd 3.6 (127.0.0.1 only)
#   control plane   kube-apiserver, kube-controller-manager, kube-scheduler
#   node            containerd 2 (its CRI plugin, on its own socket and directories under
#                   $HOOKWARDEN_STATE) with Debian's runc and CNI plugins (bridge hwcni0
#                   10.244.0.0/24, host-local, portmap); kubelet (node "node1") and kube-proxy
#                   (iptables mode)
#   add-ons         CoreDNS as a Deployment behind the kube-dns Service (10.96.0.10)
#
# Usage: tests/cluster/cluster.sh build | up | down | status | env | version | established
#   build   install packages and build the programs (cached; about 15 min the first time)
#   up      build if needed, then start everything and wait until the node is Ready and
#           cluster DNS answers; idempotent (returns at once when a healthy cluster of the
#           wanted version runs, restarts it from scratch otherwise)
#   down    stop every process, remove every container, mount, link and iptables rule the
#           cluster made, forget the cluster (etcd, containerd's state); keeps the cached
#           builds and image tarballs; idempotent
#   status  print whether each component is running (exit 1 unless all are)
#   env     print the exports to talk to the cluster (KUBECONFIG, PATH with its kubectl,
#           CONTAINERD_ADDRESS)
#   version print the Kubernetes version `up` starts
#   established CRD...
#           wait (60 s at most) until each CRD is Established (`kubectl wait` fails at once
#           on a CRD whose status the API server has not written yet)
#
# Environment:
#   K8S_VERSION       the Kubernetes release (default: the newest in versions.sh)
#   HOOKWARDEN_CACHE  builds, Go caches, image tarballs (default ~/.cache/hookwarden)
#   HOOKWARDEN_STATE  certificates, logs, etcd, containerd (default /tmp/hookwarden-cluster);
#                     component logs are in $HOOKWARDEN_STATE/logs
#   HOOKWARDEN_PORT   API server port (default 16443); in pods: https://10.96.0.1:443
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.sh
. "$HERE/versions.sh"
CACHE=${HOOKWARDEN_CACHE:-${HOME:-/root}/.cache/hookwarden}
case $CACHE in /*) ;; *) CACHE=$PWD/$CACHE ;; esac
export HOOKWARDEN_CACHE=$CACHE
ROOT=${HOOKWARDEN_STATE:-/tmp/hookwarden-cluster}
case $ROOT in /*) ;; *) ROOT=$PWD/$ROOT ;; esac
K8S_VERSION=${K8S_VERSION:-$K8S_VERSION_NEW}
export K8S_VERSION
BIN=$("$HERE/build.sh" path "kubernetes-$K8S_VERSION")
CONTAINERD_BIN=$("$HERE/build.sh" path containerd)
ETCD_BIN=$("$HERE/build.sh" path etcd)
CRANE=$("$HERE/build.sh" path crane)/crane
CTR=$CONTAINERD_BIN/ctr
PORT=${HOOKWARDEN_PORT:-16443}
ETCD_PORT=${HOOKWARDEN_ETCD_PORT:-23790}
export KUBECONFIG=$ROOT/kubeconfig
export CONTAINERD_ADDRESS=$ROOT/containerd/containerd.sock
PKGS="runc containernetworking-plugins iptables conntrack iproute2 openssl jq curl util-linux socat ethtool gcc libc6-dev tar"
# start order; down stops them in reverse
COMPONENTS="etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
NODE=node1
CNI_NET=hookwarden
# the pods' bridge: a name of our own, so that down deletes nothing another runtime made
BRIDGE=hwcni0
# the pod sandbox image, built from the release's pause.c and pinned in containerd's config
PAUSE_IMAGE=registry.k8s.io/pause:hookwarden
COREDNS_IMAGE=registry.k8s.io/coredns/coredns:v$COREDNS_VERSION
# host settings the kubelet, kube-proxy and the bridge change; down puts them back
SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet \
vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

log() { echo "cluster: $*" >&2; }
set -E
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR
# shellcheck source=oci.sh
. "$HERE/oci.sh"

install_packages() {
  local missing=""
  for p in $PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"; done
  [ -z "$missing" ] && return 0
  log "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null 2>&1 || { apt-get update -qq >/dev/null; apt-get install -y -qq $missing >/dev/null; }
}

build() {
  install_packages
  "$HERE/build.sh" "kubernetes-$K8S_VERSION" etcd containerd coredns crane gateway-api
  add_on_images
}

# The pause and CoreDNS images as tarballs in the cache, made once per build of their
# binary (the tarball's name carries a digest of it, so a rebuild makes a new image).
image_tar() { echo "$CACHE/images/$1-$(sha256sum "$2" | cut -c1-12).tar"; }
PAUSE_TAR() { image_tar "pause-$K8S_VERSION" "$BIN/pause"; }
COREDNS_TAR() { image_tar "coredns-$COREDNS_VERSION" "$("$HERE/build.sh" path coredns)/coredns"; }
add_on_images() {
  local work pause coredns
  mkdir -p "$CACHE/images"
  pause=$(PAUSE_TAR) coredns=$(COREDNS_TAR)
  [ -s "$pause" ] && [ -s "$coredns" ] && return 0
  work=$(mktemp -d)
  mkdir -p "$work/pause" "$work/coredns"
  cp "$BIN/pause" "$work/pause/pause"
  oci_layer "$work/pause" "$work/pause.layer.tar"
  oci_image "$PAUSE_IMAGE" "$pause.tmp" "$work/pause.layer.tar" -- --entrypoint /pause --user 65535:65535
  mv "$pause.tmp" "$pause"
  cp "$("$HERE/build.sh" path coredns)/coredns" "$work/coredns/coredns"
  oci_layer "$work/coredns" "$work/coredns.layer.tar"
  oci_image "$COREDNS_IMAGE" "$coredns.tmp" "$work/coredns.layer.tar" -- --entrypoint /coredns --user 65532:65532
  mv "$coredns.tmp" "$coredns"
  oci_stop
  rm -rf "$work"
}

# --- helpers -------------------------------------------------------------------------------

kubectl() { "$BIN/kubectl" --kubeconfig="$KUBECONFIG" --request-timeout=10s "$@"; }

node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')
  [ -n "$ip" ] || ip=$(ip -4 -o addr show scope global 2>/dev/null | awk '{sub(/\/.*/, "", $4); print $4; exit}')
  [ -n "$ip" ] || { log "no IPv4 address on this machine for the node"; exit 1; }
  echo "$ip"
}

pid_of() { cat "$ROOT/run/$1.pid" 2>/dev/null || true; }

# alive PID: a live (not zombie) process of ours (its command line names $ROOT)
alive_pid() {
  local pid=$1 state
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ "$state" != Z ] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$ROOT"
}
alive() { alive_pid "$(pid_of "$1")"; }

# start NAME CMD...: run CMD in its own session (so down can end it with all its children),
# detached from our stdin/stdout (callers may capture our output) and from the lock
start() {
  local name=$1; shift
  : >"$ROOT/logs/$name.log"
  rm -f "$ROOT/run/$name.pid"
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$ROOT/run/$name.pid" "$@" \
    </dev/null >>"$ROOT/logs/$name.log" 2>&1 9>&- 8>&- &
  for _ in $(seq 50); do [ -s "$ROOT/run/$name.pid" ] && return 0; sleep 0.1; done
  fail "$name" "did not start"
}

fail() {
  log "$1: $2; last lines of $ROOT/logs/$1.log:"
  tail -n 40 "$ROOT/logs/$1.log" 2>/dev/null | sed 's/^/    /' >&2 || true
  log "the cluster is left as it is for inspection; 'tests/cluster/cluster.sh down' cleans up"
  exit 1
}

# wait_for COMPONENT SECONDS WHAT CMD...: until CMD succeeds; fail if COMPONENT dies or time is up
wait_for() {
  local comp=$1 secs=$2 what=$3 i; shift 3
  for ((i = 0; i < secs * 5; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    alive "$comp" || fail "$comp" "exited while waiting for $what"
    sleep 0.2
  done
  fail "$comp" "timed out after ${secs}s waiting for $what"
}

# stop NAME: TERM the process group, KILL it after 15 s
stop() {
  local name=$1 pid i
  pid=$(pid_of "$name")
  if alive_pid "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do alive_pid "$pid" || break; sleep 0.2; done
    if alive_pid "$pid"; then
      log "$name did not stop in 15s; killing it"
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$ROOT/run/$name.pid"
}

node_ready() {
  [ "$(kubectl get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

dns_ready() {
  [ "$(kubectl -n kube-system get deployment coredns -o 'jsonpath={.status.availableReplicas}' 2>/dev/null)" = 1 ] &&
    kubectl -n default get serviceaccount default >/dev/null 2>&1 &&
    kubectl -n default get configmap kube-root-ca.crt >/dev/null 2>&1
}

healthy() {
  local c
  [ "$(cat "$ROOT/version" 2>/dev/null)" = "$K8S_VERSION" ] || return 1
  for c in $COMPONENTS; do alive "$c" || return 1; done
  kubectl get --raw /readyz >/dev/null 2>&1 && node_ready
}

# --- up ------------------------------------------------------------------------------------

certs() {
  local ip=$1 pki=$ROOT/pki
  rm -rf "$pki"; mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=hookwarden-test-ca" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' "$ip" >apiserver.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 365 -extfile apiserver.ext 2>/dev/null
    # client certificates: the API server's for the kubelet's API (logs, exec, port-forward),
    # and the node's (group system:nodes, so the Node authorizer and NodeRestriction apply)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
    openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver-kubelet-client.crt -days 365 -extfile client.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout kubelet.key -out kubelet.csr -subj "/O=system:nodes/CN=system:node:$NODE" 2>/dev/null
    openssl x509 -req -in kubelet.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out kubelet.crt -days 365 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # the admin identity: a static token in group system:masters
    echo "$(openssl rand -hex 24),admin,admin,system:masters" >tokens.csv
    chmod 600 ./*.key tokens.csv
  )
}

# kubeconfig FILE USER-YAML: a kubeconfig for the API server on loopback
write_kubeconfig() {
  cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hookwarden
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority-data: $(base64 -w0 "$ROOT/pki/ca.crt")
users:
- name: user
  user:
$2
contexts:
- name: hookwarden
  context: {cluster: hookwarden, user: user, namespace: default}
current-context: hookwarden
EOF
  chmod 600 "$1.tmp"
  mv "$1.tmp" "$1"
}

kubeconfigs() {
  write_kubeconfig "$KUBECONFIG" "    token: $(cut -d, -f1 "$ROOT/pki/tokens.csv")"
  write_kubeconfig "$ROOT/kubelet.kubeconfig" "    client-certificate: $ROOT/pki/kubelet.crt
    client-key: $ROOT/pki/kubelet.key"
}

node_config() {
  local ip=$1
  mkdir -p "$ROOT/containerd"
  # containerd 2's config (version 3). This sandbox lacks CAP_SYS_RESOURCE, so a negative
  # oom_score_adj (the kubelet asks -998 for sandboxes) cannot be set: the CRI plugin clamps
  # it to containerd's own (0). cgroupfs, not systemd (PID 1 is not systemd).
  cat >"$ROOT/containerd/config.toml" <<EOF
version = 3
root = "$ROOT/containerd/root"
state = "$ROOT/containerd/state"
oom_score = 0
[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$CONTAINERD_ADDRESS.ttrpc"
[plugins.'io.containerd.internal.v1.opt']
  path = "$ROOT/containerd/opt"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  enable_selinux = false
  # pods' network namespaces under the state directory, not in /run/netns
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '/usr/sbin/runc'
        Root = '$ROOT/runc'
        SystemdCgroup = false
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$ROOT/cni/net.d'
[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = '127.0.0.1'
EOF
  mkdir -p "$ROOT/cni/net.d"
  cat >"$ROOT/cni/net.d/10-$CNI_NET.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$ROOT/cni/ipam",
              "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # The kubelet's settings in its config file (the flags for most are gone or deprecated).
  # Quirks of this sandbox: cgroup v1 (refused by default since 1.35: failCgroupV1), no
  # CAP_SYS_RESOURCE (oomScoreAdj 0), no systemd (cgroupfs, no QoS cgroups, no allocatable
  # enforcement); images come from no registry, so image GC never runs.
  cat >"$ROOT/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$CONTAINERD_ADDRESS
imageServiceEndpoint: unix://$CONTAINERD_ADDRESS
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
failCgroupV1: false
oomScoreAdj: 0
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $ROOT/resolv.conf
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $ROOT/pki/ca.crt}
authorization: {mode: Webhook}
address: $ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
volumePluginDir: $ROOT/kubelet-plugins
podLogsDir: $ROOT/pod-logs
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
nodeStatusUpdateFrequency: 3s
serializeImagePulls: false
EOF
  # Pods' upstream resolver: the host's, without loopback servers a pod cannot reach
  # (CoreDNS forwards other names there; with none, see add_ons)
  grep -v '^nameserver 127\.' /etc/resolv.conf >"$ROOT/resolv.conf" 2>/dev/null || : >"$ROOT/resolv.conf"
}

# Paths outside $ROOT that the components insist on (the kubelet's /var/lib/kubelet and
# /var/log/containers, the shims' sockets in /run/containerd/s): down removes the ones that
# did not exist before the cluster first came up.
HOST_PATHS="/run/containerd /var/lib/kubelet /var/log/pods /var/log/containers /etc/cni /opt/cni"
save_host_paths() {
  [ -f "$ROOT/host-paths.created" ] && return 0
  local p
  for p in $HOST_PATHS; do [ -e "$p" ] || echo "$p"; done >"$ROOT/host-paths.created"
}

save_sysctls() {
  [ -f "$ROOT/sysctl.saved" ] && return 0
  local k v
  for k in $SYSCTLS; do
    v=$(sysctl -n "$k" 2>/dev/null) && printf '%s=%s\n' "$k" "$v"
  done >"$ROOT/sysctl.saved.tmp"
  mv "$ROOT/sysctl.saved.tmp" "$ROOT/sysctl.saved"
}

add_ons() {
  # CoreDNS, as kubeadm deploys it, from the image built above; without an upstream server
  # (the host has only loopback ones, which a pod cannot reach) it answers cluster names only
  local upstream=()
  grep -q '^nameserver' "$ROOT/resolv.conf" || upstream=(-e '/forward \. \/etc\/resolv.conf/d')
  sed -e "s|@IMAGE@|$COREDNS_IMAGE|" -e "s|@DNS_IP@|$DNS_IP|" "${upstream[@]}" "$HERE/coredns.yaml" |
    kubectl apply -f - >/dev/null
}

up() {
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
  if healthy; then log "Kubernetes $K8S_VERSION already up (export KUBECONFIG=$KUBECONFIG)"; return 0; fi
  build
  # a clean slate: a half-up or crashed cluster's processes, mounts, links and rules go
  if [ -d "$ROOT/run" ]; then
    log "no healthy cluster of Kubernetes $K8S_VERSION; (re)starting it"
    down_locked
  fi
  local t0=$SECONDS ip
  ip=$(node_ip)
  mkdir -p "$ROOT/run" "$ROOT/logs"
  log "starting a single-node Kubernetes $K8S_VERSION in $ROOT (node IP $ip)"
  certs "$ip"
  kubeconfigs
  node_config "$ip"
  save_sysctls
  save_host_paths
  modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.ipv4.ip_forward=1 >/dev/null
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 >/dev/null 2>&1 || log "net.bridge.bridge-nf-call-iptables is not available"

  rm -rf "$ROOT/etcd"
  start etcd "$ETCD_BIN/etcd" --name hookwarden --data-dir "$ROOT/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "hookwarden=http://127.0.0.1:$((ETCD_PORT + 10))" --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 20))"
  # the node's runtime comes up while the control plane does
  start containerd "$CONTAINERD_BIN/containerd" --config "$ROOT/containerd/config.toml"
  wait_for etcd 30 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  log "etcd up"
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --secure-port="$PORT" --advertise-address="$ip" \
    --tls-cert-file="$ROOT/pki/apiserver.crt" --tls-private-key-file="$ROOT/pki/apiserver.key" \
    --client-ca-file="$ROOT/pki/ca.crt" --token-auth-file="$ROOT/pki/tokens.csv" --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --service-account-key-file="$ROOT/pki/sa.pub" --service-account-signing-key-file="$ROOT/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true --cert-dir="$ROOT/pki/apiserver-certs" \
    --kubelet-preferred-address-types=InternalIP --kubelet-client-certificate="$ROOT/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$ROOT/pki/apiserver-kubelet-client.key"
  wait_for containerd 30 "containerd's socket" test -S "$CONTAINERD_ADDRESS"
  log "containerd up; importing the pause and CoreDNS images"
  oci_import "$(PAUSE_TAR)" "$(COREDNS_TAR)"
  wait_for kube-apiserver 90 "the API server's /readyz" kubectl get --raw /readyz
  log "API server up"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --service-account-private-key-file="$ROOT/pki/sa.key" --root-ca-file="$ROOT/pki/ca.crt" \
    --cluster-signing-cert-file="$ROOT/pki/ca.crt" --cluster-signing-key-file="$ROOT/pki/ca.key" \
    --use-service-account-credentials=true --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 \
    --controllers='*,-node-ipam-controller,-persistentvolume-attach-detach-controller,-persistentvolume-binder-controller'
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=0
  start kubelet "$BIN/kubelet" --config="$ROOT/kubelet-config.yaml" --kubeconfig="$ROOT/kubelet.kubeconfig" \
    --hostname-override="$NODE" --node-ip="$ip" --root-dir="$ROOT/kubelet" --cert-dir="$ROOT/kubelet-pki"
  # kube-proxy reads the node's IP from its Node object: start it once the kubelet registered
  wait_for kubelet 60 "node $NODE to register" kubectl get node "$NODE"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG" --hostname-override="$NODE" --proxy-mode=iptables \
    --cluster-cidr="$CLUSTER_CIDR" --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 --oom-score-adj=0 --iptables-min-sync-period=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  wait_for kubelet 90 "node $NODE to be Ready" node_ready
  log "node $NODE Ready"
  wait_for kube-proxy 30 "kube-proxy's first sync" curl -fsS http://127.0.0.1:10256/healthz
  wait_for kube-apiserver 30 "the API server to take the add-ons" add_ons
  wait_for kube-controller-manager 120 "CoreDNS and the default ServiceAccount" dns_ready
  alive kube-scheduler || fail kube-scheduler "exited"
  echo "$K8S_VERSION" >"$ROOT/version"
  log "Kubernetes $K8S_VERSION up in $((SECONDS - t0))s; export KUBECONFIG=$KUBECONFIG"
}

# --- down ----------------------------------------------------------------------------------

# our leftover processes: the known daemons whose command lines name $ROOT (pidfiles lost),
# and every process a shim of ours started (the containers)
stray_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case $exe in
      */kubectl) continue ;;  # a client's, not ours
      "$CACHE"/bin/*) alive_pid "$p" && echo "$p" ;;
    esac
  done
}

# the containers: every process below one of our shims
container_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case $exe in "$CACHE"/bin/containerd-*/containerd-shim-runc-v2) pgrep -P "$p" || true ;; esac
  done
}

# the cgroups runc made for pods (kubepods..., or the containers' own ids under the root)
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/*/hookwarden; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

# delete the rules of table $1 that jump to one of the chains $2 or carry our CNI network's
# comment, then the chains
drop_chains() {
  local t=$1 chains=$2 ours="name: \\\"$CNI_NET\\\"" rule c
  iptables -w -t "$t" -S 2>/dev/null | while read -r rule; do
    case $rule in -A*) ;; *) continue ;; esac
    case $rule in *"$ours"*) echo "$rule"; continue ;; esac
    for c in $chains; do
      case " $rule " in *" -j $c "* | *" -g $c "*) echo "$rule"; break ;; esac
    done
  done | while read -r rule; do
    eval "iptables -w -t $t -D ${rule#-A }" 2>/dev/null || true
  done
  for c in $chains; do iptables -w -t "$t" -F "$c" 2>/dev/null || true; done
  for c in $chains; do iptables -w -t "$t" -X "$c" 2>/dev/null || true; done
}

clean_iptables() {
  command -v iptables >/dev/null || return 0
  # kube-proxy's rules (iptables and, had it used them, nftables and ipvs)
  if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true; fi
  # the kubelet's chains (KUBE-FIREWALL, KUBE-MARK-DROP, KUBE-MARK-MASQ, KUBE-POSTROUTING,
  # canaries), and the bridge (ipMasq) and portmap plugins' per-pod chains and rules for our
  # network: the containers went without a CNI DEL
  local t rules chains ours="name: \\\"$CNI_NET\\\""
  for t in filter nat mangle; do
    rules=$(iptables -w -t "$t" -S 2>/dev/null) || continue
    chains=$({
      awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}' <<<"$rules"
      OURS=$ours awk 'index($0, ENVIRON["OURS"]) {
        if ($1 == "-A" && $2 ~ /^CNI-/ && $2 !~ /^CNI-HOSTPORT-/) print $2
        for (i = 1; i < NF; i++) if (($i == "-j" || $i == "-g") && $(i + 1) ~ /^CNI-/ && $(i + 1) !~ /^CNI-HOSTPORT-/) print $(i + 1)
      }' <<<"$rules"
    } | sort -u | tr '\n' ' ')
    if [ -n "${chains// /}" ] || grep -qF "$ours" <<<"$rules"; then drop_chains "$t" "$chains"; fi
  done
  # portmap's shared chains, once no other network's rules are left in them
  if iptables -w -t nat -S CNI-HOSTPORT-DNAT >/dev/null 2>&1 && [ "$(iptables -w -t nat -S CNI-HOSTPORT-DNAT | grep -c '^-A')" = 0 ]; then
    drop_chains nat "$(iptables -w -t nat -S | awk '$1 == "-N" && $2 ~ /^CNI-HOSTPORT-/ {print $2}' | tr '\n' ' ')"
  fi
  # the kubelet's and kube-proxy's nftables tables, where nft exists
  if command -v nft >/dev/null; then
    for t in kube-proxy kubelet; do nft delete table ip "$t" 2>/dev/null || true; nft delete table ip6 "$t" 2>/dev/null || true; done
  fi
}

restore_sysctls() {
  [ -f "$ROOT/sysctl.saved" ] || return 0
  local kv
  while read -r kv; do sysctl -qw "$kv" >/dev/null 2>&1 || true; done <"$ROOT/sysctl.saved"
  rm -f "$ROOT/sysctl.saved"
}

down_locked() {
  local c pid i
  # first the node agents, so that nothing restarts the containers
  for c in kube-proxy kubelet kube-scheduler kube-controller-manager; do stop "$c"; done
  # the containers, then their runtime
  for i in 1 2 3; do
    pid=$(container_pids | tr '\n' ' ')
    [ -n "${pid// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.5
  done
  for c in containerd kube-apiserver etcd; do stop "$c"; done
  # whatever is left: shims, daemons whose pidfiles were lost
  for i in 1 2 3; do
    pid="$(container_pids | tr '\n' ' ') $(stray_pids | tr '\n' ' ')"
    [ -n "${pid// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.5
  done
  remove_cgroups
  # the kubelet's volume mounts, containerd's overlays and network namespaces outlive them
  awk -v r="$ROOT/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # our CNI bridge and its veths
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | while read -r l; do
      ip link del "$l" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
  fi
  clean_iptables
  restore_sysctls
  if [ -f "$ROOT/host-paths.created" ]; then
    while read -r p; do
      case $p in
        /run/containerd)
          # shim sockets nothing listens on (shims that were killed), then the directories if empty
          for f in /run/containerd/s/*; do
            if [ -S "$f" ] && ! grep -qF " $f" /proc/net/unix; then rm -f "$f"; fi
          done
          [ -d /run/containerd/runc ] && find /run/containerd/runc -depth -type d -empty -delete 2>/dev/null
          rmdir /run/containerd/s /run/containerd 2>/dev/null || true ;;
        /*) rm -rf "$p" ;;
      esac
    done <"$ROOT/host-paths.created"
    rm -f "$ROOT/host-paths.created"
  fi
  # forget the cluster and containerd's images (imported again by the next up)
  rm -rf "$ROOT/etcd" "$ROOT/kubelet" "$ROOT/kubelet-pki" "$ROOT/kubelet-plugins" "$ROOT/pod-logs" \
    "$ROOT/cni" "$ROOT/containerd" "$ROOT/runc" "$ROOT/run" "$ROOT/version"
}

down() {
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
  # nothing of ours runs unless up got as far as making its run directory
  [ -d "$ROOT/run" ] || { log "not up"; return 0; }
  down_locked
  log "down"
}

# --- status --------------------------------------------------------------------------------

status() {
  local c ok=0 pid
  echo "kubernetes               $(cat "$ROOT/version" 2>/dev/null || echo "(not up; up starts $K8S_VERSION)")"
  for c in $COMPONENTS; do
    pid=$(pid_of "$c")
    if alive_pid "$pid"; then printf '%-24s running (pid %s)\n' "$c" "$pid"; else printf '%-24s stopped\n' "$c"; ok=1; fi
  done
  if [ $ok = 0 ]; then
    if kubectl get --raw /readyz >/dev/null 2>&1; then echo "api server               ready (https://127.0.0.1:$PORT)"; else echo "api server               not ready"; ok=1; fi
    if node_ready; then echo "node $NODE               Ready"; else echo "node $NODE               not Ready"; ok=1; fi
    if dns_ready; then echo "cluster DNS              ready ($DNS_IP)"; else echo "cluster DNS              not ready"; ok=1; fi
  fi
  return $ok
}

lock() {
  mkdir -p "$ROOT"
  exec 9>"$ROOT/lock"
  flock 9
  # a throwaway image registry (oci.sh) never outlives this script
  trap oci_stop EXIT
}

case "${1:-up}" in
  build) build ;;
  up) lock; up ;;
  down) lock; down ;;
  status) status || exit 1 ;;
  env) echo "export KUBECONFIG=$KUBECONFIG CONTAINERD_ADDRESS=$CONTAINERD_ADDRESS K8S_VERSION=$K8S_VERSION PATH=$BIN:\$PATH" \
    "HOOKWARDEN_GATEWAY_API_CRDS=$("$HERE/build.sh" path gateway-api)/crds" ;;
  version) echo "$K8S_VERSION" ;;
  established)
    shift
    for crd in "$@"; do
      for _ in $(seq 60); do
        [ "$(kubectl get crd "$crd" -o 'jsonpath={.status.conditions[?(@.type=="Established")].status}' 2>/dev/null)" = True ] &&
          continue 2
        sleep 1
      done
      echo "cluster: CRD $crd is not Established after 60 s" >&2
      exit 1
    done ;;
  *) echo "usage: $0 build|up|down|status|env|version|established CRD..." >&2; exit 2 ;;
esac
