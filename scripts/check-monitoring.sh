#!/usr/bin/env bash
# Checks deploy/monitoring/ (run by .ci/run after validate-deploy.sh):
#   1. `promtool check rules` on alerts.yaml, and on every expression of dashboard.json
#      (written out as recording rules, so each one is parsed by Prometheus's own parser);
#   2. `promtool test rules alerts_test.yaml`: each alert fires on series named and
#      labelled as the servers emit them (and the healthy series beside them do not);
#   3. a live run: `akv-bridge dev` (mock Key Vault, KMS plugin, CSI provider, and their
#      self-check: Status, Encrypt, Decrypt, Mount), a few more probes, and a real
#      Prometheus scraping both metrics endpoints every 2 s with alerts.yaml loaded; then
#      mounts that fail through mock-vault's controls (not found, throttled, identity
#      rejected by Entra); then scripts/check_monitoring.py asks its HTTP API that both
#      targets are up, every rule evaluates, exactly the alerts those failures should set
#      off are pending, every metric name used by the rules, their tests and the dashboard was
#      scraped (a labelled family nothing has used yet has no series, nor HELP and TYPE
#      lines: those are accepted if src/observability/metrics.rs registers them for that
#      server, and listed), the tests' label names match the live series, and every
#      dashboard expression evaluates.
#
# Prometheus and promtool come from Debian's `prometheus` package (PROM_DEB_VERSION below),
# downloaded with `apt-get download`, checked against PROM_DEB_SHA256, and unpacked into
# .tools/prometheus/ without installing it (no root needed, nothing started). Later runs
# reuse them and touch no network. PROMTOOL and PROMETHEUS in the environment override.
# Update: `apt-cache show prometheus` gives the new Version and SHA256.
#
# Uses ${CARGO_TARGET_DIR:-target}/debug/akv-bridge as ./scripts/test.sh builds it (all
# features, `dev` among them); builds it the same way if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PROM_DEB_VERSION="2.42.0+ds-5+deb12u1"
PROM_DEB_SHA256="81d59a24fce84f7fbe97a45a4f2914b6a5881b5cd1db2a6a0e129e515e1a5f55"
TOOLS_DIR=.tools/prometheus
SCRAPE_SECONDS="${CHECK_MONITORING_SCRAPE_SECONDS:-20}"
BIN="${CARGO_TARGET_DIR:-target}/debug/akv-bridge"
MON=deploy/monitoring
started=$SECONDS

WORK="$(mktemp -d "${TMPDIR:-/tmp}/check-monitoring.XXXXXX")"
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    # Up to 10 s each for a clean stop, then for good.
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_prometheus() {
  if [ -n "${PROMTOOL:-}" ] && [ -n "${PROMETHEUS:-}" ]; then
    return
  fi
  PROMTOOL="$TOOLS_DIR/promtool"
  PROMETHEUS="$TOOLS_DIR/prometheus"
  if [ -x "$PROMTOOL" ] && [ -x "$PROMETHEUS" ] \
    && [ "$(cat "$TOOLS_DIR/VERSION" 2>/dev/null)" = "$PROM_DEB_VERSION" ]; then
    return
  fi
  echo "==> downloading Debian's prometheus $PROM_DEB_VERSION into $TOOLS_DIR (one-off)"
  local dl="$WORK/deb"
  mkdir -p "$dl"
  if ! (cd "$dl" && apt-get download -q "prometheus=$PROM_DEB_VERSION" 2>"$dl/err"); then
    # An empty or old package list: refresh it (root only) and try once more.
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq
      (cd "$dl" && apt-get download -q "prometheus=$PROM_DEB_VERSION")
    else
      cat "$dl/err" >&2
      echo "apt-get download prometheus=$PROM_DEB_VERSION failed; run 'apt-get update' or set PROMTOOL and PROMETHEUS" >&2
      return 1
    fi
  fi
  local deb
  deb="$(echo "$dl"/prometheus_*.deb)"
  echo "$PROM_DEB_SHA256  $deb" | sha256sum --quiet -c -
  dpkg-deb -x "$deb" "$dl/x"
  rm -rf "$TOOLS_DIR"
  mkdir -p "$TOOLS_DIR"
  cp "$dl/x/usr/bin/prometheus" "$dl/x/usr/bin/promtool" "$TOOLS_DIR/"
  echo "$PROM_DEB_VERSION" >"$TOOLS_DIR/VERSION"
}

ensure_prometheus
. scripts/lib/tools-venv.sh
ensure_tools_venv
PY="$TOOLS_VENV/bin/python"
"$PROMTOOL" --version 2>&1 | head -1

echo "==> promtool check rules (alerts.yaml)"
"$PROMTOOL" check rules "$MON/alerts.yaml"

echo "==> promtool check rules (every expression of dashboard.json)"
n="$("$PY" scripts/check_monitoring.py dashboard-rules "$MON/dashboard.json" "$WORK/dashboard-rules.yaml")"
echo "  $n expressions"
"$PROMTOOL" check rules "$WORK/dashboard-rules.yaml"

echo "==> promtool test rules (alerts_test.yaml)"
"$PROMTOOL" test rules "$MON/alerts_test.yaml"

echo "==> akv-bridge dev, scraped by Prometheus for ${SCRAPE_SECONDS} s"
if ! "$BIN" dev --help >/dev/null 2>&1; then
  cargo build --all-features --locked --bin akv-bridge
fi
"$BIN" dev --vault-port 0 --dir "$WORK/dev" --log-format-json >"$WORK/dev.out" 2>"$WORK/dev.log" &
PIDS+=($!)
for _ in $(seq 600); do
  grep -q '^Serving until Ctrl-C' "$WORK/dev.out" && break
  if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    cat "$WORK/dev.out" "$WORK/dev.log" >&2
    echo "akv-bridge dev stopped before serving" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q '^Serving until Ctrl-C' "$WORK/dev.out"; then
  tail -50 "$WORK/dev.out" "$WORK/dev.log" >&2
  echo "akv-bridge dev did not pass its self-check within 60 s" >&2
  exit 1
fi
mapfile -t addrs < <("$PY" scripts/check_monitoring.py addrs "$WORK/dev.log")
if [ "${#addrs[@]}" -ne 2 ]; then
  tail -20 "$WORK/dev.log" >&2
  echo "no metrics addresses in akv-bridge dev's serving lines" >&2
  exit 1
fi
echo "  KMS metrics http://${addrs[0]}/metrics, CSI metrics http://${addrs[1]}/metrics"

# A free port for Prometheus's API (it cannot report one the kernel picked).
prom_port="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cp "$MON/alerts.yaml" "$WORK/alerts.yaml"
cat >"$WORK/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - alerts.yaml
scrape_configs:
  - job_name: akv-bridge-kms
    static_configs:
      - targets: ["${addrs[0]}"]
  - job_name: akv-bridge-csi
    static_configs:
      - targets: ["${addrs[1]}"]
EOF
"$PROMTOOL" check config "$WORK/prometheus.yml" >/dev/null
"$PROMETHEUS" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PROM_URL="http://127.0.0.1:$prom_port"
for _ in $(seq 100); do
  "$PY" -c "import urllib.request as u; u.urlopen('$PROM_URL/-/ready', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

# More traffic while Prometheus scrapes: what the dev output suggests, several times (the
# second Mount is served from the cache).
mapfile -t probes < <(grep -E '^  akv-bridge probe (kms|csi) ' "$WORK/dev.out" | sed 's/^  akv-bridge //')
for round in 1 2 3; do
  for p in "${probes[@]}"; do
    # shellcheck disable=SC2086 # the line is the command's words (paths without spaces)
    "$BIN" $p >>"$WORK/probes.out" 2>&1 || { cat "$WORK/probes.out" >&2; echo "probe failed: $p" >&2; exit 1; }
  done
  if [ "$round" -lt 3 ]; then sleep 2; fi
done
echo "  $((${#probes[@]} * 3)) probes run"

# Failures, through mock-vault's fault and identity controls: mounts of a missing secret
# (NOT_FOUND), of a secret while Key Vault throttles (RESOURCE_EXHAUSTED: the Retry-After is
# beyond the deadline, so no retry), then of a secret after the pod's identity was deleted
# and its tokens expired (Entra rejects it: UNAUTHENTICATED). Each object name is new, so
# the cache does not answer; three of each, a scrape apart, since a labelled series
# appears at 1 and rate() sees only the increments after that.
control="$(sed -n 's/^  mock control *//p' "$WORK/dev.out")"
csi_probe="$(printf '%s\n' "${probes[@]}" | grep '^probe csi ')"
spc="$(sed -n 's/.* --spc \([^ ]*\).*/\1/p' <<<"$csi_probe")"
mount_one() { # object name, expected code
  sed -n '1,/^    objects: |/p' "$spc" >"$WORK/spc-$1.yaml"
  printf '      array:\n        - |\n          objectName: %s\n          objectType: secret\n' "$1" >>"$WORK/spc-$1.yaml"
  # shellcheck disable=SC2086 # the line is the command's words (paths without spaces)
  "$BIN" ${csi_probe/--spc $spc/--spc $WORK/spc-$1.yaml} >"$WORK/probe-$1.out" 2>&1 || true
  grep -q "FAILED ($2)" "$WORK/probe-$1.out" || { cat "$WORK/probe-$1.out" >&2; echo "mount of $1: expected $2" >&2; exit 1; }
}
for i in 1 2 3; do
  mount_one "missing-$i" NOT_FOUND
  "$PY" scripts/check_monitoring.py control POST "$control/faults" \
    '{"kind": "throttle", "retry_after_secs": 3600, "scope": {"operation": "secrets."}}'
  mount_one "throttled-$i" RESOURCE_EXHAUSTED
  "$PY" scripts/check_monitoring.py control DELETE "$control/faults"
  sleep 2.5
done
"$PY" scripts/check_monitoring.py control DELETE "$control/identities/app"
"$PY" scripts/check_monitoring.py control POST "$control/tokens/expire"
for i in 1 2 3; do
  mount_one "rejected-$i" UNAUTHENTICATED
  sleep 2.5
done
echo "  9 failing mounts (NOT_FOUND, RESOURCE_EXHAUSTED, UNAUTHENTICATED); scraping"
sleep "$SCRAPE_SECONDS"

# What those failures must set off (pending: each rule's `for:` is minutes); every other
# rule, the KMS plugin's included, must stay inactive.
expected=AkvBridgeCsiMountFailures,AkvBridgeCsiKeyVaultThrottled,AkvBridgeCsiAuthenticationFailing,AkvBridgeCsiEntraFailing
if ! "$PY" scripts/check_monitoring.py live "$PROM_URL" "http://${addrs[0]}/metrics" "http://${addrs[1]}/metrics" "$expected"; then
  echo "--- prometheus.log (tail)" >&2
  tail -20 "$WORK/prometheus.log" >&2
  exit 1
fi
echo "check-monitoring: done in $((SECONDS - started)) s"
