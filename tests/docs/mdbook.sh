#!/usr/bin/env bash
# mdBook, the documentation's generator, installed by the project on first use: from
# crates.io with `cargo install --locked` into the project's cache, and installed again when
# the binary is missing or reports another version than the one pinned here. Prints nothing
# when it is already there; then runs `mdbook ARGS` (no ARGS: only installs).
#   tests/docs/mdbook.sh build          (what `make docs` runs)
# HOOKWARDEN_CACHE moves the cache (default ~/.cache/hookwarden).
# Only the `search` feature: `serve` and `watch` would add a web server and a file watcher
# to the build (`mdbook serve` is then unavailable; open target/book/index.html instead).
set -euo pipefail
MDBOOK_VERSION=0.5.4
CACHE=${HOOKWARDEN_CACHE:-$HOME/.cache/hookwarden}
ROOT=$CACHE/tools/mdbook-$MDBOOK_VERSION
MDBOOK=$ROOT/bin/mdbook
if [[ "$("$MDBOOK" --version 2>/dev/null)" != "mdbook v$MDBOOK_VERSION" ]]; then
  echo "mdbook: installing mdbook $MDBOOK_VERSION from crates.io into $ROOT (a few minutes, once)" >&2
  rm -rf "$ROOT"
  cargo install --quiet --locked --root "$ROOT" --no-default-features --features search \
    mdbook --version "$MDBOOK_VERSION"
  got=$("$MDBOOK" --version)
  if [[ "$got" != "mdbook v$MDBOOK_VERSION" ]]; then
    echo "mdbook: installed $got, expected mdbook v$MDBOOK_VERSION" >&2
    exit 1
  fi
fi
[[ $# -eq 0 ]] || exec "$MDBOOK" "$@"
