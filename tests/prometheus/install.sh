#!/usr/bin/env bash
# Debian's `prometheus` package, for its `promtool` (check rules, test rules) in the chart's
# tests (tests/chart/test_alerts.py). Does nothing when promtool and prometheus are on PATH.
# Leaves no Prometheus server running: the package's postinst would start one, which the
# tests do not want; a policy-rc.d forbids that (when the machine has none of its own), and
# a server started anyway is stopped and kept from starting at boot.
set -euo pipefail
log() { echo "prometheus: $*" >&2; }

if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  log "promtool is missing: run $0 as root (it installs Debian's prometheus package)"
  exit 1
fi

POLICY=/usr/sbin/policy-rc.d
ours=""
cleanup() { if [ -n "$ours" ]; then rm -f "$POLICY"; fi; }
trap cleanup EXIT
if [ ! -e "$POLICY" ]; then
  # 101: "action forbidden by policy"; invoke-rc.d then starts no service.
  printf '#!/bin/sh\n# hookwarden tests/prometheus/install.sh: no service starts while it installs\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  ours=1
fi

log "installing Debian's prometheus package (for promtool)"
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
apt_install 2>/dev/null || { apt-get update -qq >/dev/null; apt_install; }

# Whatever started it (systemd ignores policy-rc.d for some packages), stop it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  if systemctl is-active --quiet prometheus 2>/dev/null || systemctl is-enabled --quiet prometheus 2>/dev/null; then
    log "stopping and disabling the prometheus service the package set up"
    systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
elif [ -x /etc/init.d/prometheus ] && /etc/init.d/prometheus status >/dev/null 2>&1; then
  log "stopping the prometheus service the package started"
  /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

command -v promtool >/dev/null || { log "promtool not found after installing prometheus"; exit 1; }
log "$(promtool --version 2>&1 | head -1)"
