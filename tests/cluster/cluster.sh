#!/usr/bin/env bash
# hookwarden's test cluster: a real single-node Kubernetes 1.20.2 built from Debian's
# packages alone (no registry, no downloads beyond Debian's mirror). Run as root.
#
#   etcd            Debian's etcd-server (127.0.0.1 only)
#   control plane   kube-apiserver, kube-controller-manager, kube-scheduler (and kubectl) built
#                   from Debian's `kubernetes` source package with Debian's Go
#   node            Debian's docker.io (containerd + dockerd + runc, on their own sockets and
#                   directories under $HOOKWARDEN_STATE) for the kubelet's dockershim, Debian's
#                   containernetworking-plugins (bridge cni0 10.244.0.0/24, host-local, portmap),
#                   kubelet (node "node1") and kube-proxy (iptables mode)
#
# Usage: tests/cluster/cluster.sh build | up | down | status | env
#   build   install packages and build the Kubernetes binaries (cached; ~7 min the first time)
#   up      build if needed, then start the control plane and the node and wait until the node
#           is Ready and the default ServiceAccount has its token; idempotent (returns at once
#           when the cluster is already up and healthy, restarts it when it is half up)
#   down    stop every process, remove every container, mount, link and iptables rule the
#           cluster made, forget the cluster (etcd); keeps the built images; idempotent
#   status  print whether each component is running (exit 1 unless all are)
#   env     print the exports to talk to the cluster (KUBECONFIG, DOCKER_HOST)
#
# Where things go (override with the environment):
#   HOOKWARDEN_CACHE  built binaries and Kubernetes sources (default ~/.cache/hookwarden)
#   HOOKWARDEN_STATE  certificates, logs, etcd, docker data (default /tmp/hookwarden-cluster);
#                     component logs are in $HOOKWARDEN_STATE/logs
#   HOOKWARDEN_PORT   API server port (default 16443); in pods: https://10.96.0.1:443
set -euo pipefail
CACHE=${HOOKWARDEN_CACHE:-${HOME:-/root}/.cache/hookwarden}
ROOT=${HOOKWARDEN_STATE:-/tmp/hookwarden-cluster}
case $ROOT in /*) ;; *) ROOT=$PWD/$ROOT ;; esac
BIN=$CACHE/k8s-1.20.2/bin
PORT=${HOOKWARDEN_PORT:-16443}
ETCD_PORT=${HOOKWARDEN_ETCD_PORT:-23790}
export DOCKER_HOST=unix://$ROOT/docker.sock
export KUBECONFIG=$ROOT/kubeconfig
WHAT="kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl"
PKGS="golang-go etcd-server rsync jq golang-github-modern-go-reflect2-dev gcc libc6-dev openssl iproute2 \
docker.io containernetworking-plugins conntrack socat ebtables ethtool iptables curl util-linux"
# start order; down stops them in reverse
COMPONENTS="etcd containerd dockerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy"
SERVICE_CIDR=10.96.0.0/16
POD_SUBNET=10.244.0.0/24
CLUSTER_CIDR=10.244.0.0/16
NODE=node1
CNI_NET=hookwarden
# host settings the kubelet, kube-proxy and the bridge change; down puts them back
SYSCTLS="net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet \
vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"
DOCKER=/usr/bin/docker   # Debian's CLI, the engine's own version (not a newer one earlier in PATH)

log() { echo "cluster: $*" >&2; }
set -E
trap 'log "failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

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
  local missing=0
  for b in $WHAT pause; do [ -x "$BIN/$b" ] || missing=1; done
  [ $missing = 0 ] && return 0
  log "building Kubernetes 1.20.2 from Debian's source package into $CACHE (about 7 minutes)"
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    # the same mirror and suites as the machine's binary packages, for source packages
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/hookwarden-debsrc.sources
    apt-get update -qq >/dev/null
  fi
  local src=$CACHE/k8s-1.20.2/src
  mkdir -p "$src"
  (
    cd "$src"
    if [ ! -d kubernetes-1.20.2 ]; then
      apt-get source --download-only kubernetes >/dev/null 2>&1
      tar xzf kubernetes_*.orig.tar.gz
    fi
    cd kubernetes-1.20.2
    # The vendored reflect2 1.0.1 faults under Go >= 1.18 (map iteration when a custom
    # resource is created); Debian ships 1.0.2.
    rm -rf vendor/github.com/modern-go/reflect2
    cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
    rm -f vendor/github.com/modern-go/reflect2/go.mod
    mkdir -p .go/src/k8s.io && ln -sfn ../../.. .go/src/k8s.io/kubernetes
    if ! GOPATH=$PWD/.go CGO_ENABLED=0 HOME=$CACHE/k8s-1.20.2/home \
      make WHAT="$(for b in $WHAT; do printf 'cmd/%s ' "$b"; done)" >"$CACHE/k8s-1.20.2/build.log" 2>&1; then
      log "build failed; last lines of $CACHE/k8s-1.20.2/build.log:"
      tail -n 40 "$CACHE/k8s-1.20.2/build.log" >&2
      exit 1
    fi
    mkdir -p "$BIN"
    for b in $WHAT; do cp "_output/local/bin/linux/amd64/$b" "$BIN/"; done
    gcc -Os -static -o "$BIN/pause" build/pause/linux/pause.c
  )
  log "built $(ls "$BIN" | tr '\n' ' ')"
}

# --- helpers -------------------------------------------------------------------------------

kubectl() { "$BIN/kubectl" --kubeconfig="$KUBECONFIG" --request-timeout=10s "$@"; }
docker() { "$DOCKER" "$@"; }

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
    </dev/null >>"$ROOT/logs/$name.log" 2>&1 9>&- &
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

sa_token_ready() {
  local secret
  secret=$(kubectl -n default get serviceaccount default -o 'jsonpath={.secrets[0].name}' 2>/dev/null)
  [ -n "$secret" ] && kubectl -n default get secret "$secret" -o 'jsonpath={.data.token}' 2>/dev/null | grep -q .
}

healthy() {
  local c
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
    # the API server's client certificate for the kubelet's API (logs, exec, port-forward)
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver-kubelet-client.key -out apiserver-kubelet-client.csr \
      -subj "/O=system:masters/CN=kube-apiserver-kubelet-client" 2>/dev/null
    openssl x509 -req -in apiserver-kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
      -out apiserver-kubelet-client.crt -days 365 -extfile client.ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    # the admin identity: a static token in group system:masters
    echo "$(openssl rand -hex 24),admin,admin,system:masters" >tokens.csv
    chmod 600 ./*.key tokens.csv
  )
}

kubeconfig() {
  local token
  token=$(cut -d, -f1 "$ROOT/pki/tokens.csv")
  cat >"$KUBECONFIG.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: hookwarden
  cluster:
    server: https://127.0.0.1:$PORT
    certificate-authority-data: $(base64 -w0 "$ROOT/pki/ca.crt")
users:
- name: admin
  user:
    token: $token
contexts:
- name: hookwarden
  context: {cluster: hookwarden, user: admin, namespace: default}
current-context: hookwarden
EOF
  chmod 600 "$KUBECONFIG.tmp"
  mv "$KUBECONFIG.tmp" "$KUBECONFIG"
}

node_config() {
  # runc as the default runtime, behind a wrapper: this sandbox lacks CAP_SYS_RESOURCE, so
  # the negative oom_score_adj the kubelet asks for (-998 for pod sandboxes) cannot be set
  # and runc would fail the container; clamp it to 0
  cat >"$ROOT/runc-wrapper" <<'EOF'
#!/bin/sh
prev=""
for a in "$@"; do
  if [ "$prev" = "--bundle" ] || [ "$prev" = "-b" ]; then
    [ -f "$a/config.json" ] && sed -i 's/"oomScoreAdj": *-[0-9]*/"oomScoreAdj":0/' "$a/config.json"
  fi
  prev="$a"
done
exec /usr/sbin/runc "$@"
EOF
  chmod +x "$ROOT/runc-wrapper"
  mkdir -p "$ROOT/containerd"
  cat >"$ROOT/containerd/config.toml" <<EOF
version = 2
root = "$ROOT/containerd/root"
state = "$ROOT/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$ROOT/containerd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$ROOT/containerd/opt"
EOF
  # not /etc/docker/key.json
  printf '{"deprecated-key-path": "%s"}\n' "$ROOT/docker/key.json" >"$ROOT/docker-daemon.json"
  mkdir -p "$ROOT/cni/net.d"
  cat >"$ROOT/cni/net.d/10-$CNI_NET.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$ROOT/cni/ipam",
              "ranges": [[{"subnet": "$POD_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

# Paths outside $ROOT that the components insist on (dockerd's /run/docker/plugins, the
# kubelet's /var/lib/kubelet/device-plugins and /var/log/{pods,containers}): down removes the
# ones that did not exist before the cluster first came up.
# (containerd's shims put their sockets in /run/containerd/s whatever containerd's state is)
HOST_PATHS="/run/docker /run/containerd /var/lib/kubelet /var/log/pods /var/log/containers"
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

up() {
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
  if healthy; then log "already up (export KUBECONFIG=$KUBECONFIG)"; return 0; fi
  build
  # a clean slate: a half-up or crashed cluster's processes, mounts, links and rules go
  [ -d "$ROOT/run" ] && log "the cluster is not healthy; restarting it"
  down_locked
  local t0=$SECONDS ip
  ip=$(node_ip)
  mkdir -p "$ROOT/run" "$ROOT/logs"
  log "starting a single-node Kubernetes 1.20.2 in $ROOT (node IP $ip)"
  certs "$ip"
  kubeconfig
  node_config
  save_sysctls
  save_host_paths
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null

  rm -rf "$ROOT/etcd"
  start etcd etcd --name hookwarden --data-dir "$ROOT/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
    --initial-cluster "hookwarden=http://127.0.0.1:$((ETCD_PORT + 10))"
  # the node's runtime comes up while the control plane does
  start containerd containerd --config "$ROOT/containerd/config.toml"
  wait_for etcd 30 "etcd health" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
  log "etcd up"
  start kube-apiserver "$BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=0.0.0.0 --secure-port="$PORT" --insecure-port=0 --advertise-address="$ip" \
    --tls-cert-file="$ROOT/pki/apiserver.crt" --tls-private-key-file="$ROOT/pki/apiserver.key" \
    --client-ca-file="$ROOT/pki/ca.crt" --token-auth-file="$ROOT/pki/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-key-file="$ROOT/pki/sa.pub" --service-account-signing-key-file="$ROOT/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" --allow-privileged=true --cert-dir="$ROOT/pki/apiserver-certs" \
    --kubelet-preferred-address-types=InternalIP --kubelet-client-certificate="$ROOT/pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$ROOT/pki/apiserver-kubelet-client.key"
  wait_for containerd 30 "containerd's socket" test -S "$ROOT/containerd/containerd.sock"
  start dockerd dockerd --host "$DOCKER_HOST" --config-file "$ROOT/docker-daemon.json" \
    --containerd "$ROOT/containerd/containerd.sock" --data-root "$ROOT/docker" --exec-root "$ROOT/docker-exec" \
    --pidfile "$ROOT/run/dockerd.self.pid" --add-runtime hookwarden="$ROOT/runc-wrapper" --default-runtime=hookwarden \
    --bridge=none --iptables=false --ip-masq=false --ip-forward=false --userland-proxy=false \
    --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent=/hookwarden --oom-score-adjust=0
  wait_for kube-apiserver 60 "the API server's /readyz" kubectl get --raw /readyz
  log "API server up"
  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --service-account-private-key-file="$ROOT/pki/sa.key" --root-ca-file="$ROOT/pki/ca.crt" \
    --cluster-signing-cert-file="$ROOT/pki/ca.crt" --cluster-signing-key-file="$ROOT/pki/ca.key" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 --port=0 \
    --controllers='*,-nodeipam,-attachdetach,-persistentvolume-binder,-route,-service,-cloud-node-lifecycle'
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port=0 --port=0
  wait_for dockerd 60 "the Docker engine" docker version
  docker ps -aq | xargs -r "$DOCKER" rm -f >/dev/null 2>&1 || true
  if ! docker image inspect k8s.gcr.io/pause:3.2 >/dev/null 2>&1; then
    mkdir -p "$ROOT/pause"
    cp "$BIN/pause" "$ROOT/pause/pause"
    printf 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n' >"$ROOT/pause/Dockerfile"
    DOCKER_BUILDKIT=0 docker build -q -t k8s.gcr.io/pause:3.2 "$ROOT/pause" >/dev/null
  fi
  log "Docker engine up"
  # (--docker: cAdvisor's own flag; without it cAdvisor tries /var/run/docker.sock for 5 s)
  start kubelet "$BIN/kubelet" --kubeconfig="$KUBECONFIG" --hostname-override="$NODE" --node-ip="$ip" \
    --container-runtime=docker --docker-endpoint="$DOCKER_HOST" --docker="$DOCKER_HOST" \
    --container-runtime-endpoint="unix://$ROOT/dockershim.sock" --experimental-dockershim-root-directory="$ROOT/dockershim" \
    --pod-infra-container-image=k8s.gcr.io/pause:3.2 \
    --network-plugin=cni --cni-bin-dir=/usr/lib/cni --cni-conf-dir="$ROOT/cni/net.d" --cni-cache-dir="$ROOT/cni/cache" \
    --root-dir="$ROOT/kubelet" --cert-dir="$ROOT/kubelet-pki" --volume-plugin-dir="$ROOT/kubelet-plugins" \
    --seccomp-profile-root="$ROOT/kubelet-seccomp" \
    --cgroup-driver=cgroupfs --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false \
    --eviction-hard= --image-gc-high-threshold=100 --image-gc-low-threshold=99 --oom-score-adj=0 \
    --client-ca-file="$ROOT/pki/ca.crt" --anonymous-auth=false --authorization-mode=Webhook --authentication-token-webhook \
    --read-only-port=0 --healthz-bind-address=127.0.0.1 --cluster-domain=cluster.local --sync-frequency=10s --node-status-update-frequency=3s
  # kube-proxy reads the node's IP from its Node object: start it once the kubelet registered
  wait_for kubelet 60 "node $NODE to register" kubectl get node "$NODE"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$KUBECONFIG" --hostname-override="$NODE" --proxy-mode=iptables \
    --cluster-cidr="$CLUSTER_CIDR" --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 \
    --conntrack-tcp-timeout-close-wait=0 --oom-score-adj=0 --iptables-min-sync-period=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  wait_for kubelet 90 "node $NODE to be Ready" node_ready
  log "node $NODE Ready"
  wait_for kube-proxy 30 "kube-proxy's first sync" curl -fsS http://127.0.0.1:10256/healthz
  wait_for kube-controller-manager 60 "the default ServiceAccount's token" sa_token_ready
  alive kube-scheduler || fail kube-scheduler "exited"
  log "up in $((SECONDS - t0))s; export KUBECONFIG=$KUBECONFIG DOCKER_HOST=$DOCKER_HOST"
}

# --- down ----------------------------------------------------------------------------------

# our leftover processes: the known daemons whose command lines name $ROOT (pidfiles lost)
stray_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
    case $exe in
      "$BIN"/kubectl) continue ;;  # a client's, not ours
      "$BIN"/* | /usr/bin/etcd | /usr/bin/containerd | /usr/bin/containerd-shim* | /usr/sbin/dockerd | /usr/sbin/runc) ;;
      *) continue ;;
    esac
    alive_pid "$p" && echo "$p"
  done
}

# processes in the containers' cgroup (dockerd --cgroup-parent=/hookwarden)
container_pids() {
  cat /sys/fs/cgroup/pids/hookwarden/*/cgroup.procs /sys/fs/cgroup/pids/hookwarden/cgroup.procs 2>/dev/null || true
}

remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/hookwarden; do
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
  # kube-proxy's rules
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
  if alive dockerd; then
    docker ps -aq 2>/dev/null | xargs -r timeout 60 "$DOCKER" rm -f >/dev/null 2>&1 || true
  fi
  for c in dockerd containerd kube-apiserver etcd; do stop "$c"; done
  # whatever is left: containers whose engine died, daemons whose pidfiles were lost
  for i in 1 2 3; do
    pid="$(container_pids) $(stray_pids)"
    [ -n "${pid// /}" ] || break
    # shellcheck disable=SC2086
    kill -KILL $pid 2>/dev/null || true
    sleep 0.5
  done
  remove_cgroups
  # the kubelet's volume mounts, docker's overlays and network namespaces outlive them
  awk -v r="$ROOT/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  # the CNI bridge and its veths
  if ip link show cni0 >/dev/null 2>&1; then
    ip -o link show master cni0 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | while read -r l; do
      ip link del "$l" 2>/dev/null || true
    done
    ip link del cni0 2>/dev/null || true
  fi
  clean_iptables
  restore_sysctls
  # the kubelet's log links to our containers
  for d in /var/log/pods/*; do
    [ -d "$d" ] || continue
    if find "$d" -type l -lname "$ROOT/*" | grep -q .; then rm -rf "$d"; fi
  done
  for l in /var/log/containers/*.log; do if [ -L "$l" ] && [ ! -e "$l" ]; then rm -f "$l"; fi; done
  if [ -f "$ROOT/host-paths.created" ]; then
    while read -r p; do
      case $p in
        /run/containerd)
          # shim sockets nothing listens on (shims that were killed), then the directories if empty
          for f in /run/containerd/s/*; do
            if [ -S "$f" ] && ! grep -qF " $f" /proc/net/unix; then rm -f "$f"; fi
          done
          rmdir /run/containerd/s /run/containerd 2>/dev/null || true ;;
        /*) rm -rf "$p" ;;
      esac
    done <"$ROOT/host-paths.created"
    rm -f "$ROOT/host-paths.created"
  fi
  # forget the cluster; keep the Docker engine's images (the pause and test images)
  rm -rf "$ROOT/etcd" "$ROOT/kubelet" "$ROOT/kubelet-pki" "$ROOT/kubelet-plugins" "$ROOT/kubelet-seccomp" \
    "$ROOT/dockershim" "$ROOT/dockershim.sock" "$ROOT/cni" "$ROOT/containerd/state" "$ROOT/docker-exec" \
    "$ROOT/containerd/containerd.sock" "$ROOT/containerd/containerd.sock.ttrpc" \
    "$ROOT/run" "$ROOT/docker.sock"
}

down() {
  [ "$(id -u)" = 0 ] || { log "must run as root"; exit 1; }
  [ -d "$ROOT" ] || return 0
  down_locked
  log "down"
}

# --- status --------------------------------------------------------------------------------

status() {
  local c ok=0 pid
  for c in $COMPONENTS; do
    pid=$(pid_of "$c")
    if alive_pid "$pid"; then printf '%-24s running (pid %s)\n' "$c" "$pid"; else printf '%-24s stopped\n' "$c"; ok=1; fi
  done
  if [ $ok = 0 ]; then
    if kubectl get --raw /readyz >/dev/null 2>&1; then echo "api server               ready (https://127.0.0.1:$PORT)"; else echo "api server               not ready"; ok=1; fi
    if node_ready; then echo "node $NODE               Ready"; else echo "node $NODE               not Ready"; ok=1; fi
  fi
  return $ok
}

lock() {
  mkdir -p "$ROOT"
  exec 9>"$ROOT/lock"
  flock 9
}

case "${1:-up}" in
  build) build ;;
  up) lock; up ;;
  down) lock; down ;;
  status) status || exit 1 ;;
  env) echo "export KUBECONFIG=$KUBECONFIG DOCKER_HOST=$DOCKER_HOST" ;;
  *) echo "usage: $0 build|up|down|status|env" >&2; exit 2 ;;
esac
