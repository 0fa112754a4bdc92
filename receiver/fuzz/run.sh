#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 300) on the kept corpus, then minimises the
# corpus. cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP lets the stable toolchain
# build them, as there is no other toolchain on these machines.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH=${1:-300}
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz --version 0.13.2
cargo fuzz build -O
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  echo "fuzz: $target for ${SECONDS_EACH}s"
  cargo fuzz run -O "$target" "corpus/$target" -- -max_total_time="$SECONDS_EACH" -max_len=4096 2>&1 |
    grep -E '^(Done|INFO: seed corpus|==|SUMMARY)|panicked' || true
  test "${PIPESTATUS[0]}" = 0
  cargo fuzz cmin -O "$target" "corpus/$target" >/dev/null 2>&1
  echo "fuzz: $target corpus: $(find "corpus/$target" -type f | wc -l) inputs"
done
