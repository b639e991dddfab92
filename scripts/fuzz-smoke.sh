#!/usr/bin/env bash
# Fuzz smoke (run by .ci/run): every cargo-fuzz target in fuzz/ runs for a short while from
# its committed seed corpus (fuzz/seeds/<target>, coverage-minimised). A crash, a leak
# (ASan/LeakSanitizer), a timeout or an out-of-memory fails the run and leaves the input
# in target/fuzz/artifacts/<target>/. Longer, optimised runs: RELIABILITY.md.
#
#   ./scripts/fuzz-smoke.sh                      # every target, 20 s each
#   AKV_BRIDGE_FUZZ_SECONDS=300 ./scripts/fuzz-smoke.sh csi_content
#
# Builds with --dev (unoptimised but for the crypto crates, see fuzz/Cargo.toml): a cold
# optimised ASan build of the stack takes longer than CI's budget allows on 2 cores.
# cargo-fuzz comes from scripts/ci-tools.txt (hash-pinned wheel). It needs nightly
# compiler flags (-Zsanitizer); the machine has one stable toolchain, so RUSTC_BOOTSTRAP=1
# unlocks them for this build only.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/tools-venv.sh
ensure_tools_venv
CARGO_FUZZ="$PWD/$TOOLS_VENV/bin/cargo-fuzz"
SECONDS_EACH="${AKV_BRIDGE_FUZZ_SECONDS:-20}"
TARGET_DIR="$PWD/${CARGO_TARGET_DIR:-target}/fuzz"
export RUSTC_BOOTSTRAP=1

mapfile -t targets < <(cd fuzz && "$CARGO_FUZZ" list)
if [ $# -gt 0 ]; then targets=("$@"); fi

echo "==> cargo fuzz build --dev (${#targets[@]} targets, $("$CARGO_FUZZ" --version))"
mkdir -p "$TARGET_DIR"
for t in "${targets[@]}"; do
  if ! (cd fuzz && "$CARGO_FUZZ" build --dev --target-dir "$TARGET_DIR" "$t") >"$TARGET_DIR/build.log" 2>&1; then
    tail -n 40 "$TARGET_DIR/build.log" >&2
    echo "fuzz-smoke: building $t failed" >&2
    exit 1
  fi
done
# fuzz/Cargo.lock is committed: the build must not have changed it (cargo-fuzz has no --locked).
git diff --quiet --exit-code -- fuzz/Cargo.lock || {
  echo "fuzz-smoke: fuzz/Cargo.lock changed during the build; commit the update" >&2
  git --no-pager diff --stat -- fuzz/Cargo.lock >&2
  exit 1
}

summary=()
for t in "${targets[@]}"; do
  seeds="fuzz/seeds/$t"
  [ -d "$seeds" ] || { echo "fuzz-smoke: no seed corpus $seeds" >&2; exit 1; }
  work="$TARGET_DIR/corpus/$t"        # new inputs land here, not in the committed seeds
  artifacts="$TARGET_DIR/artifacts/$t/"
  rm -rf "$work"; mkdir -p "$work" "$artifacts"
  log="$TARGET_DIR/$t.log"
  echo "==> $t: ${SECONDS_EACH}s from $(find "$seeds" -type f | wc -l) seeds"
  if ! (cd fuzz && "$CARGO_FUZZ" run --dev --target-dir "$TARGET_DIR" "$t" "$work" "../$seeds" -- \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$artifacts" -print_final_stats=1) >"$log" 2>&1; then
    grep -E "ERROR|panicked|SUMMARY|Test unit written|==[0-9]+==" "$log" | head -n 40 >&2 || tail -n 40 "$log" >&2
    echo "fuzz-smoke: $t failed; input in $artifacts, full log $log" >&2
    exit 1
  fi
  runs=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $2}')
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | awk '{print $2}')
  summary+=("$(printf '  %-12s %9s executions, %6s coverage edges, 0 crashes' "$t" "${runs:-?}" "${cov:-?}")")
done
echo "==> fuzz smoke figures (${SECONDS_EACH}s each, --dev build with ASan)"
printf '%s\n' "${summary[@]}"
