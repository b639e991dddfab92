#!/usr/bin/env bash
# The declared `rust-version` (workspace Cargo.toml) must build every library and binary of
# the workspace: installs that toolchain with rustup (minimal profile) if missing, then
# `cargo check` with it. Tests and benches are left to the current toolchain, as rustls's
# `msrv` job does: the promise is about what users build.
set -euo pipefail
cd "$(dirname "$0")/.."

msrv="$(sed -n 's/^rust-version = "\([0-9.]*\)"$/\1/p' Cargo.toml | head -n 1)"
if [ -z "$msrv" ]; then
  echo "msrv: no rust-version in Cargo.toml" >&2
  exit 1
fi
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal --no-self-update
fi
echo "==> cargo +$msrv check (libraries and binaries, all features)"
cargo "+$msrv" check --workspace --lib --bins --all-features --locked
