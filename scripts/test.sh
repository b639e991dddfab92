#!/usr/bin/env bash
# The project's test command (README "Run the tests"; .ci/run calls exactly this).
# Installs what it needs itself: a Python virtual environment for the SDK interop check.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> cargo test (workspace, all features)"
cargo test --workspace --all-features --locked

# The binaries `cargo test --workspace --all-features` just built (for the integration
# tests): building them again with `cargo run`/`cargo build` would resolve other features.
BIN="${CARGO_TARGET_DIR:-target}/debug"

echo "==> the main job: akv-bridge dev, self-checked"
"$BIN/akv-bridge" dev --check-only --vault-port 0 --dir target/dev-check

echo "==> official Python SDKs against mock-vault"
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import azure.keyvault.keys, azure.identity' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r mock-vault/tests/python/requirements.txt
fi
.venv/bin/python mock-vault/tests/python/check_sdks.py "$BIN/mock-vault"
