#!/usr/bin/env bash
# Supply-chain checks of the dependency graph with cargo-deny (policy: deny.toml):
#   - bans: no OpenSSL, no wildcard requirements, duplicate versions reported;
#   - licenses: only the permissive licences deny.toml lists;
#   - sources: crates.io only, no git dependencies.
# The advisories check (RustSec) needs to fetch the advisory database from github.com,
# which this project's CI cannot reach; run it where the network allows:
#   AKV_BRIDGE_ADVISORIES=1 ./scripts/supply-chain.sh
#
# Installs cargo-deny into ~/.cargo/bin on first use (from crates.io, --locked, at the
# pinned version, with its own target directory under target/tools so it shares no build
# output with the project). Later runs reuse it and need no network beyond what `cargo
# metadata` needs for an already-fetched Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DENY_VERSION=0.20.2
CARGO_BIN="${CARGO_HOME:-$HOME/.cargo}/bin"

installed_version() {
  "$CARGO_BIN/cargo-deny" --version 2>/dev/null | awk '{print $2}'
}

if [ "$(installed_version || true)" != "$CARGO_DENY_VERSION" ]; then
  echo "==> installing cargo-deny $CARGO_DENY_VERSION into $CARGO_BIN (one-off, a few minutes)"
  # nice: CI and developers may be building the project at the same time on 2 cores.
  CARGO_TARGET_DIR="$PWD/target/tools" nice -n 19 \
    cargo install --locked --quiet --version "$CARGO_DENY_VERSION" cargo-deny
fi

echo "==> cargo deny: bans, licenses, sources ($("$CARGO_BIN/cargo-deny" --version))"
# Duplicate versions are warnings (deny.toml says why); their inclusion graphs would run
# to a thousand lines, so only the crates are listed.
"$CARGO_BIN/cargo-deny" --locked check --hide-inclusion-graph bans licenses sources

if [ "${AKV_BRIDGE_ADVISORIES:-0}" = "1" ]; then
  echo "==> cargo deny: advisories (fetches the RustSec database from github.com)"
  "$CARGO_BIN/cargo-deny" --locked check advisories
else
  echo "==> cargo deny: advisories skipped (needs github.com; set AKV_BRIDGE_ADVISORIES=1 where reachable)"
fi
