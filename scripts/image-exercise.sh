#!/usr/bin/env bash
# The container image's final stage, run the way a kubelet runs it, without a container
# engine: the release binary, built static for musl as the Dockerfile builds it (default
# features, `--locked`), alone in a read-only root holding nothing but the CA bundle (what
# distroless/static adds: /etc/ssl/certs/ca-certificates.crt), run as uid/gid 65532 with no
# shell, no libc and no other program, /proc and a few /dev nodes as a runtime provides
# them, and the manifests' volumes (azure.json read-only, the socket directory writable).
# Both servers start there against mock-vault (outside the root), and are called from
# outside as their clients call them: `probe kms` (Status, Encrypt, Decrypt) and `probe
# csi` (Version, a Mount), plus /healthz.
#
# /etc/hosts and /etc/resolv.conf are the machine's, as kubelet mounts the node's (or the
# pod's) into every container. What differs from the image build: this machine's Rust
# toolchain (the Dockerfile pins the declared rust-version, which scripts/msrv.sh checks)
# and Debian's musl-gcc for the C of aws-lc-sys (the Dockerfile: Alpine's toolchain).
#
# Installs what the static build needs if missing: the musl target (rustup) and musl-gcc
# (Debian's musl-tools). Needs root (a mount namespace and chroot). Prints what it did;
# exit 0 when both servers served their clients.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN_DIR="$TARGET_DIR/debug"
IMAGE_BIN="$TARGET_DIR/$TARGET/release/akv-bridge"
# The debug build (./scripts/test.sh) plays the clients and runs mock-vault.
AKV="$BIN_DIR/akv-bridge"
MOCK="$BIN_DIR/mock-vault"
for b in "$AKV" "$MOCK"; do
  if [ ! -x "$b" ]; then
    echo "image-exercise: $b is missing: run ./scripts/test.sh (or cargo build -p akv-bridge -p mock-vault) first" >&2
    exit 1
  fi
done
if [ "$(id -u)" != 0 ]; then
  echo "image-exercise: needs root (a mount namespace and chroot, as a container runtime)" >&2
  exit 1
fi

if ! rustup target list --installed | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools >/dev/null \
    || { apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools >/dev/null; }
fi
echo "==> the image's binary: cargo build --release --locked --target $TARGET --bin akv-bridge"
build_started=$SECONDS
CC_x86_64_unknown_linux_musl=musl-gcc \
  cargo build --release --locked --target "$TARGET" --bin akv-bridge
build_secs=$((SECONDS - build_started))
# As the Dockerfile refuses it: a binary that needs a loader or a library would not start
# on distroless/static.
if readelf -d "$IMAGE_BIN" | grep -q NEEDED || readelf -l "$IMAGE_BIN" | grep -q 'Requesting program interpreter'; then
  echo "image-exercise: $IMAGE_BIN is dynamically linked" >&2
  readelf -d "$IMAGE_BIN" | grep NEEDED >&2 || true
  exit 1
fi

work="$(mktemp -d)"
pids=()
cleanup() {
  for f in "$work"/*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

root="$work/root"
mkdir -p "$root/etc/ssl/certs" "$root/etc/kubernetes" "$root/var/run/kmsplugin" \
  "$root/provider" "$root/proc" "$root/dev"
# kubelet mounts these two into every container.
touch "$root/etc/hosts" "$root/etc/resolv.conf"
install -m 0555 "$IMAGE_BIN" "$root/akv-bridge"
for d in null zero random urandom; do touch "$root/dev/$d"; done

# mock-vault outside the root, with a key for the plugin and a secret for the provider.
cat >"$work/fixture.yaml" <<'EOF'
vaults:
  - name: kv1
    keys: [{name: kek, kty: RSA, size: 2048}]
    secrets: [{name: db-password, value: "image-exercise-value"}]
identities:
  - name: kms
    client_id: 00000000-0000-0000-0000-00000000c0de
    client_secret: kms-secret
    permissions: {kv1: {keys: [get, list, encrypt, decrypt]}}
  - name: app
    client_id: 33333333-0000-0000-0000-0000000005b1
    client_secret: sp-secret-value
    permissions: {kv1: {secrets: [get, list]}}
EOF
"$MOCK" --listen 127.0.0.1:0 --fixture "$work/fixture.yaml" --ca-out "$work/ca.pem" \
  >"$work/mock.out" 2>"$work/mock.err" &
pids+=($!)
for _ in $(seq 100); do
  [ -s "$work/mock.out" ] && break
  sleep 0.1
done
info() { python3 -c 'import json,sys; i=json.loads(open(sys.argv[1]).readline()); print(eval(sys.argv[2]))' "$work/mock.out" "$1"; }
address="$(info 'i["address"]')"
vault_url="$(info 'i["vaults"]["kv1"]["url"]')"
authority="$(info 'i["authority_host"]')"
tenant="$(info 'i["tenant_id"]')"

# The image's only file besides the binary: the CA bundle, where rustls-native-certs
# finds it (no --ca-bundle flag).
install -m 0444 "$work/ca.pem" "$root/etc/ssl/certs/ca-certificates.crt"
# The volumes: azure.json (read-only, readable by the group), the socket directories
# (owned by the servers' uid, as our manifests' init step makes them).
mkdir -p "$work/kubernetes" "$work/kmsplugin" "$work/provider"
printf '{"tenantId": "%s", "aadClientId": "00000000-0000-0000-0000-00000000c0de", "aadClientSecret": "kms-secret"}\n' \
  "$tenant" >"$work/kubernetes/azure.json"
chgrp 65532 "$work/kubernetes/azure.json"
chmod 0640 "$work/kubernetes/azure.json"
chown 65532:65532 "$work/kmsplugin" "$work/provider"
chmod 0700 "$work/kmsplugin" "$work/provider"

# Runs the binary as a container runtime would: its own mount namespace, the root
# read-only, /proc and /dev nodes, the volumes, uid/gid 65532, no supplementary groups.
contain() {
  local log="$1"
  shift
  unshare --mount --fork --kill-child -- bash -c '
    set -e
    root="$1"; work="$2"; log="$3"; shift 3
    mount --make-rprivate /
    mount --bind "$root" "$root"
    for d in null zero random urandom; do mount --bind "/dev/$d" "$root/dev/$d"; done
    mount -t proc proc "$root/proc"
    for f in hosts resolv.conf; do mount --bind -o ro "/etc/$f" "$root/etc/$f"; done
    mount --bind "$work/kubernetes" "$root/etc/kubernetes"
    mount -o remount,bind,ro "$root/etc/kubernetes"
    mount --bind "$work/kmsplugin" "$root/var/run/kmsplugin"
    mount --bind "$work/provider" "$root/provider"
    mount -o remount,bind,ro "$root"
    # Not exec: a change of user clears the parent-death signal, so the server is
    # stopped by its pid (cleanup reads the file).
    chroot --userspec=65532:65532 --groups=65532 "$root" /akv-bridge "$@" &
    echo "$!" >"$work/$(basename "$log").pid"
    wait "$!"
  ' contain "$root" "$work" "$log" "$@" >"$log" 2>&1 &
  pids+=($!)
}

mock_flags=(--vault-connect-addr="$address" --authority-host="$authority")
contain "$work/kms.log" kms \
  --listen-addr=unix:///var/run/kmsplugin/azurekms.socket \
  --vault-url="$vault_url" --key-name=kek "${mock_flags[@]}" \
  --healthz-port=0 --metrics-addr=127.0.0.1:0
contain "$work/csi.log" csi \
  --endpoint=unix:///provider/azure.sock \
  --vault-url-template="${vault_url/kv1/\{name\}}" "${mock_flags[@]}" \
  --healthz-port=0 --prometheus-port=0 --healthz-bind-address=127.0.0.1 \
  --metrics-bind-address=127.0.0.1

fail() {
  echo "image-exercise: $1" >&2
  for l in kms csi; do
    echo "--- $l.log" >&2
    tail -n 20 "$work/$l.log" >&2 || true
  done
  exit 1
}
for s in kmsplugin/azurekms.socket provider/azure.sock; do
  for _ in $(seq 200); do
    [ -S "$work/$s" ] && break
    sleep 0.1
  done
  [ -S "$work/$s" ] || fail "no socket $s within 20 s"
done

# /healthz of each, at the address it logged.
for l in kms csi; do
  health="$(grep -o 'health=[0-9.:]*' "$work/$l.log" | head -n 1 | cut -d= -f2)"
  [ -n "$health" ] || fail "$l logged no health address"
  code="$(python3 -c 'import sys,urllib.request; print(urllib.request.urlopen("http://"+sys.argv[1]+"/healthz", timeout=15).status)' "$health" 2>/dev/null || true)"
  [ "$code" = 200 ] || fail "$l /healthz answered ${code:-nothing}"
done

# kube-apiserver's calls, then the driver's.
for _ in $(seq 60); do
  if "$AKV" probe kms --socket "unix://$work/kmsplugin/azurekms.socket" --envelope >"$work/probe-kms.txt" 2>&1; then
    break
  fi
  sleep 0.5
done
"$AKV" probe kms --socket "unix://$work/kmsplugin/azurekms.socket" --envelope >"$work/probe-kms.txt" 2>&1 \
  || { cat "$work/probe-kms.txt" >&2; fail "probe kms failed"; }
cat >"$work/spc.yaml" <<EOF
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: image-exercise, namespace: default}
spec:
  provider: azure
  parameters:
    keyvaultName: kv1
    tenantId: "$tenant"
    objects: |
      array:
        - |
          objectName: db-password
          objectType: secret
EOF
printf 'clientid: 33333333-0000-0000-0000-0000000005b1\nclientsecret: sp-secret-value\n' >"$work/secrets.yaml"
"$AKV" probe csi --socket "unix://$work/provider/azure.sock" --spc "$work/spc.yaml" \
  --secrets "$work/secrets.yaml" >"$work/probe-csi.txt" 2>&1 \
  || { cat "$work/probe-csi.txt" >&2; fail "probe csi failed"; }

for l in kms csi; do
  if grep -qi 'read-only file system\|permission denied' "$work/$l.log"; then
    fail "$l hit the read-only root or a permission"
  fi
done
size="$(stat -c %s "$IMAGE_BIN")"
echo "image-exercise: the static release binary ($((size / 1024 / 1024)) MiB, built in ${build_secs} s) ran both servers as 65532:65532 in a read-only root holding only itself and the CA bundle:"
echo "  root: $(cd "$root" && find . -type f ! -path './proc/*' ! -path './dev/*' | sort | tr '\n' ' ')"
sed 's/^/  kms: /' "$work/probe-kms.txt" | head -n 12
sed 's/^/  csi: /' "$work/probe-csi.txt" | head -n 12
