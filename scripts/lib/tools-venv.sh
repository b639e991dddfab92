# Sourced by scripts/validate-deploy.sh and scripts/supply-chain.sh: makes sure
# .venv-tools holds exactly the tools pinned in scripts/ci-tools.txt.
#
# The first run installs them from PyPI in pip's hash-checking mode (every file must match
# the SHA-256 in the lock); later runs only compare versions and touch no network, so the
# checks are offline-safe once installed.

TOOLS_VENV=.venv-tools
TOOLS_LOCK=scripts/ci-tools.txt

_tools_wanted() {
  grep -oE '^[A-Za-z0-9_.-]+==[^ \\]+' "$TOOLS_LOCK" | tr 'A-Z_.' 'a-z--' | sort
}
_tools_have() {
  "$TOOLS_VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_.' 'a-z--' | sort
}

ensure_tools_venv() {
  if [ ! -x "$TOOLS_VENV/bin/python" ]; then
    echo "==> creating $TOOLS_VENV"
    python3 -m venv "$TOOLS_VENV"
  fi
  if [ "$(_tools_wanted)" != "$(_tools_have)" ]; then
    echo "==> installing the pinned tools into $TOOLS_VENV (one-off, about a minute)"
    # --no-deps: the lock already lists every dependency; hashes make pip refuse any file
    # that differs from the one the lock was made from.
    "$TOOLS_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      --require-hashes -r "$TOOLS_LOCK"
    if [ "$(_tools_wanted)" != "$(_tools_have)" ]; then
      echo "$TOOLS_VENV does not match $TOOLS_LOCK after installing:" >&2
      diff <(_tools_wanted) <(_tools_have) >&2 || true
      return 1
    fi
  fi
}
