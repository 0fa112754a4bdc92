#!/usr/bin/env bash
# The receiver's speed and footprint benchmark (`make bench`), as issue #3 defines it:
# wrk on loopback drives (a) a bare axum server that answers 200 and (b) the receiver's own
# router and connection loop verifying signed Opal deliveries, each server pinned to core 0
# and wrk to core 1. Reports throughput and the ratio, p50/p99 latency, and RSS idle and
# peak; checks that every delivery was answered 2xx and recorded exactly once.
#
# Not a test: nothing here fails on a slow machine. Figures go into README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
PORT=18080
METRICS_PORT=18081
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || {
  echo "bench: installing wrk from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
}
cargo build -q --release -p hookwarden-receiver --example bench_server
SERVER=target/release/examples/bench_server
CORES=$(nproc)
if [ "$CORES" -ge 2 ]; then SERVER_CPU=0 LOAD_CPU=1; else SERVER_CPU=0 LOAD_CPU=0; fi

head -c 32 /dev/urandom | base64 > "$WORK/secret"
# Enough distinct deliveries for the run at up to 60k/s, so none is a replay.
COUNT=$((DURATION * 60000))
"$SERVER" requests "$COUNT" "$WORK/secret" "$WORK/requests"
export BENCH_REQUESTS="$WORK/requests"

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}
rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
mib() { awk "BEGIN {printf \"%.1f\", $1 / 1024}"; }

# run NAME: starts the server, loads it, prints one summary line, leaves output in $WORK/NAME.*
run() {
  local name=$1
  shift
  taskset -c "$SERVER_CPU" "$SERVER" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  wait_port "$PORT"
  sleep 0.5
  local idle
  idle=$(rss_kib "$pid" VmRSS)
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s bench/wrk.lua "http://127.0.0.1:$PORT/opal" >"$WORK/$name.wrk"
  local peak
  peak=$(rss_kib "$pid" VmHWM)
  if [ "$name" = receiver ]; then
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/$name.metrics"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  local rps p50 p99 requests non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.wrk")
  printf '%-9s %10s req/s   p50 %8s   p99 %8s   RSS idle %5s MiB, peak %5s MiB   requests %s, non-2xx %s\n' \
    "$name" "$rps" "$p50" "$p99" "$(mib "$idle")" "$(mib "$peak")" "$requests" "${non2xx:-0}"
  eval "${name}_rps=$rps ${name}_requests=$requests ${name}_non2xx=${non2xx:-0}"
}

echo "bench: $(date -u +%Y-%m-%d), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), ${DURATION}s, $CONNECTIONS connections, server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
run bare bare "$PORT"
run receiver receiver "$PORT" "$METRICS_PORT" "$WORK/secret"

recorded=$(awk '/^recorded/ {print $2}' "$WORK/receiver.out")
awk -v r="$receiver_rps" -v b="$bare_rps" 'BEGIN {printf "ratio     %.2f of the bare server'"'"'s throughput on the verify path\n", r / b}'
echo "receiver: $receiver_requests sent, $((receiver_requests - receiver_non2xx)) acknowledged, $recorded recorded"
if [ "$receiver_requests" -gt "$COUNT" ]; then
  echo "bench: wrk sent more requests than there are distinct deliveries; raise COUNT" >&2
  exit 1
fi
# wrk counts requests whose answers arrived; any it cut off at the end are neither.
if [ "$receiver_non2xx" != 0 ] || [ "$recorded" -lt "$receiver_requests" ]; then
  echo "bench: the receiver refused or lost deliveries; see above" >&2
  exit 1
fi
