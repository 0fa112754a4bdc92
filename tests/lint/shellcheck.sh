#!/usr/bin/env bash
# Every shell script of the repository through shellcheck (Debian's package, installed on
# first use), following what each sources (`-x`, paths relative to the script): part of
# `make lint`. A script is a tracked `*.sh` file or a tracked file whose first line runs a
# shell.
set -euo pipefail
cd "$(dirname "$0")/../.."
log() { echo "shellcheck: $*" >&2; }

if ! command -v shellcheck >/dev/null; then
  if [ "$(id -u)" != 0 ]; then
    log "shellcheck is missing: run as root (it installs Debian's shellcheck package)"
    exit 1
  fi
  log "installing Debian's shellcheck package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq shellcheck >/dev/null
fi

scripts=()
while IFS= read -r f; do
  case "$f" in
    *.sh) scripts+=("$f") ;;
    *) if head -n1 "$f" 2>/dev/null | grep -Eq '^#!.*\b(ba)?sh\b'; then scripts+=("$f"); fi ;;
  esac
done < <(git ls-files)
shellcheck -x -P SCRIPTDIR "${scripts[@]}"
log "${#scripts[@]} scripts clean"
