#!/usr/bin/env bash
# The receiver's speed and footprint benchmark (`make bench`; README, "Speed and footprint"):
# wrk on loopback drives (a) a bare axum server that answers 200 and (b) the receiver's own
# router and connection loop verifying signed Opal deliveries, each server pinned to core 0
# and wrk to core 1. Reports throughput and the ratio, p50/p99 latency, and RSS idle and
# peak; checks that every delivery was answered 2xx and recorded exactly once. Then prints
# the in-process cost of each step of a delivery (`bench_server stages`).
#
# A third server, `logged`, is the receiver again with JSON logs on (one line per delivery,
# to a file), as `hookwarden-receiver run --log-format json` runs in a pod: what a receiver
# really costs in production; the target is measured on `receiver`.
#
# A fourth, `pool`, is the receiver pool (`hookwarden-receiver pool --config FILE
# --secrets-dir DIR`, JSON logs on, as in a pod) serving 100 Opal Webhooks, each on its own
# path with its own secret; the deliveries are spread over all of them in turn.
#
# The servers run alternately ROUNDS times (default 5) and each one's median round is
# reported: on a shared VM single runs vary by 15 % or more, and a neighbour's load can halve
# a round. The ratio is the median of each round's receiver against that round's bare
# server, run just before it, so that a slow stretch of the host weighs on both sides.
#
# Not a test: nothing here fails on a slow machine. Figures go into README.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${BENCH_DURATION:-10}
ROUNDS=${BENCH_ROUNDS:-5}
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
# Enough distinct deliveries for one round at up to 200k/s, so none is a replay; signed
# afresh for each receiver round so that their timestamps are current.
COUNT=$((DURATION * 200000))
export BENCH_REQUESTS="$WORK/requests"
POOL_WEBHOOKS=${BENCH_POOL_WEBHOOKS:-100}
mkdir -p "$WORK/pool"
"$SERVER" pool-setup "$POOL_WEBHOOKS" "$PORT" "$METRICS_PORT" "$WORK/pool"

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing listens on port $1" >&2
  return 1
}
# wait_ready PORT: until /readyz answers 200 (a pool, once its configuration is applied).
wait_ready() {
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
    sleep 0.05
  done
  echo "bench: nothing ready on port $1" >&2
  return 1
}
rss_kib() { awk "/^$2:/ {print \$2}" "/proc/$1/status"; }
mib() { awk "BEGIN {printf \"%.1f\", $1 / 1024}"; }

# run NAME ROUND ARGS...: starts the server, loads it, appends one summary line to
# $WORK/NAME.rounds ("rps p50 p99 idle_kib peak_kib requests non2xx recorded").
run() {
  local name=$1 round=$2
  shift 2
  local log=
  if [ "$name" = logged ] || [ "$name" = pool ]; then log=json; fi
  if [ "$name" = pool ]; then
    "$SERVER" pool-requests "$COUNT" "$WORK/pool" "$WORK/requests"
  elif [ "$name" != bare ]; then
    "$SERVER" requests "$COUNT" "$WORK/secret" "$WORK/requests"
  fi
  BENCH_LOG_FORMAT=$log taskset -c "$SERVER_CPU" "$SERVER" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  local pid=$!
  wait_port "$PORT"
  [ "$name" != pool ] || wait_ready "$PORT"
  sleep 0.5
  local idle
  idle=$(rss_kib "$pid" VmRSS)
  taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s bench/wrk.lua "http://127.0.0.1:$PORT/opal" >"$WORK/$name.wrk"
  local peak
  peak=$(rss_kib "$pid" VmHWM)
  if [ "$name" != bare ]; then
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" >"$WORK/$name.metrics"
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  local rps p50 p99 requests non2xx recorded
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk")
  requests=$(awk '/requests in/ {print $1}' "$WORK/$name.wrk")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$WORK/$name.wrk")
  recorded=$(awk '/^recorded/ {print $2}' "$WORK/$name.out")
  printf '  round %s %-9s %10s req/s   p50 %8s   p99 %8s   RSS idle %5s MiB, peak %5s MiB\n' \
    "$round" "$name" "$rps" "$p50" "$p99" "$(mib "$idle")" "$(mib "$peak")"
  echo "$rps $p50 $p99 $idle $peak $requests ${non2xx:-0} ${recorded:-0}" >>"$WORK/$name.rounds"
}

# median NAME: the summary line of NAME's median round by throughput
median() { sort -n "$WORK/$1.rounds" | awk -v n="$ROUNDS" 'NR == int((n + 1) / 2)'; }

echo "bench: $(date -u +%Y-%m-%d), $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), ${ROUNDS} rounds of ${DURATION}s, $CONNECTIONS connections, server on CPU $SERVER_CPU, wrk on CPU $LOAD_CPU"
"$SERVER" requests "$COUNT" "$WORK/secret" "$WORK/requests"
for round in $(seq "$ROUNDS"); do
  run bare "$round" bare "$PORT"
  run receiver "$round" receiver "$PORT" "$METRICS_PORT" "$WORK/secret"
  run logged "$round" receiver "$PORT" "$METRICS_PORT" "$WORK/secret"
  run pool "$round" pool "$PORT" "$METRICS_PORT" "$WORK/pool/pool.yaml" "$WORK/pool/secrets"
done

status=0
echo "median rounds:"
for name in bare receiver logged pool; do
  read -r rps p50 p99 idle peak requests non2xx recorded <<<"$(median "$name")"
  printf '%-9s %10s req/s   p50 %8s   p99 %8s   RSS idle %5s MiB, peak %5s MiB\n' \
    "$name" "$rps" "$p50" "$p99" "$(mib "$idle")" "$(mib "$peak")"
done
# ratios NAME: NAME's throughput over the bare server's, round by round ("median r1 r2 ...").
ratios() {
  paste -d' ' "$WORK/$1.rounds" "$WORK/bare.rounds" |
    awk '{printf "%.2f\n", $1 / $9}' | sort -n |
    awk '{r[NR] = $1} END {printf "%s ", r[int((NR + 1) / 2)]; for (i = 1; i <= NR; i++) printf " %s", r[i]; print ""}'
}
read -r ratio rounds <<<"$(ratios receiver)"
echo "ratio     $ratio of the bare server's throughput on the verify path (median; rounds, sorted: $rounds)"
read -r ratio rounds <<<"$(ratios logged)"
echo "          $ratio with JSON logs, one line per delivery (rounds: $rounds)"
read -r ratio rounds <<<"$(ratios pool)"
echo "          $ratio the pool of $POOL_WEBHOOKS Webhooks, JSON logs on (rounds: $rounds)"
# Where the receiver's time goes beyond the bare server's, step by step, without the network.
taskset -c "$SERVER_CPU" "$SERVER" stages 200000
# Every receiver round, with logs or without: all answered 2xx, each recorded (wrk stops
# counting answers still in flight when its time is up, so a few more may be recorded than
# it counted), no replays.
for name in receiver logged pool; do
  while read -r rps p50 p99 idle peak requests non2xx recorded; do
    echo "$name round: $requests sent, $((requests - non2xx)) acknowledged, $recorded recorded"
    if [ "$requests" -gt "$COUNT" ]; then
      echo "bench: wrk sent more requests than there are distinct deliveries; raise COUNT" >&2
      status=1
    fi
    if [ "$non2xx" != 0 ] || [ "$recorded" -lt "$requests" ]; then
      echo "bench: the receiver refused or lost deliveries" >&2
      status=1
    fi
  done <"$WORK/$name.rounds"
done
exit "$status"
