#!/usr/bin/env python3
"""Helpers of scripts/check-monitoring.sh (run inside .venv-tools, which has PyYAML).

  check_monitoring.py dashboard-rules DASHBOARD OUT
      Writes every PromQL expression of the Grafana dashboard, its variables replaced by
      concrete values, as recording rules into OUT, for `promtool check rules` (a parse
      check of each expression). Prints the number of expressions.
  check_monitoring.py addrs LOG
      Prints the KMS and CSI metrics addresses from `akv-bridge dev --log-format-json`'s
      "... serving" lines (one per line, KMS first), or nothing yet.
  check_monitoring.py control METHOD URL [JSON]
      One call to mock-vault's control API (faults, identities, tokens).
  check_monitoring.py live PROMETHEUS_URL KMS_METRICS_URL CSI_METRICS_URL EXPECTED
      Against the running Prometheus that scraped both servers:
      - both targets are up and every rule of alerts.yaml evaluates with health "ok";
      - the alerts named in EXPECTED (comma-separated) are pending or firing, and no other;
      - every metric name used by alerts.yaml, alerts_test.yaml and dashboard.json is in
        what Prometheus scraped; a family with no series in this run (a labelled family
        nothing used yet: prometheus-client then emits nothing for it, not even its HELP
        and TYPE lines) must at least have a `# TYPE` line in /metrics or be registered
        for that component in src/observability/metrics.rs, and is listed as such;
      - each input series of alerts_test.yaml has the label names the servers emit for
        that metric (for metrics that have series), plus job and instance;
      - every alert of alerts.yaml is expected to fire by some test of alerts_test.yaml;
      - every dashboard expression evaluates (HTTP API /api/v1/query) without error.
      Prints what it found and `check-monitoring: N passed, M failed`.
"""

from __future__ import annotations

import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MON = ROOT / "deploy" / "monitoring"
METRICS_RS = ROOT / "src" / "observability" / "metrics.rs"
# Names of the servers' metrics: ours, and the Go originals' exported beside them.
NAME = re.compile(r"\b((?:akv_bridge_(?:kms|csi)_|kms_request_|grpc_request_|keyvault_request_)[a-z0-9_]*)")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
# Grafana variables and their stand-ins for evaluation.
VARIABLES = {"$__rate_interval": "1m", "$kms_instance": ".*", "$csi_instance": ".*"}
TARGET_LABELS = {"job", "instance"}


def dashboard_exprs(path: Path) -> list[tuple[str, str]]:
    dash = json.loads(path.read_text())
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict) and q.get("query", "").startswith("label_values("):
            metric = q["query"][len("label_values("):].split(",")[0].strip()
            out.append((f"variable {v['name']}", metric))
    return out


def concrete(expr: str) -> str:
    for k, v in VARIABLES.items():
        expr = expr.replace(k, v)
    if "$" in expr:
        raise SystemExit(f"dashboard expression with an unknown variable: {expr}")
    return expr


def rules_exprs() -> list[tuple[str, str]]:
    doc = yaml.safe_load((MON / "alerts.yaml").read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def test_doc() -> dict:
    return yaml.safe_load((MON / "alerts_test.yaml").read_text())


def cmd_dashboard_rules(dashboard: str, out: str) -> int:
    exprs = dashboard_exprs(Path(dashboard))
    rules = [{"record": f"dashboard:expr{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)]
    Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    print(len(rules))
    return 0


def cmd_addrs(log: str) -> int:
    found = {}
    for line in Path(log).read_text(errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        fields = {**ev, **ev.get("fields", {})} if isinstance(ev, dict) else {}
        msg = str(fields.get("message", ""))
        if msg.endswith(" serving") and fields.get("metrics"):
            found["kms" if msg.startswith("KMS") else "csi"] = fields["metrics"]
    if "kms" in found and "csi" in found:
        print(found["kms"])
        print(found["csi"])
    return 0


def registered(fam: str, source: str) -> bool:
    """Whether metrics.rs registers `fam` (the component prefix off) for that component: the
    shared families (ServerMetrics, ConnectionMetrics) for both, KeyMetrics for the KMS
    plugin, MountMetrics for the CSI provider."""
    m = re.match(r"^akv_bridge_(kms|csi)_(.+)$", fam)
    if not m:
        return False
    component, base = m.groups()
    blocks = {
        "shared": r"impl ServerMetrics \{.*?\n\}|impl ConnectionMetrics \{.*?\n\}",
        "kms": r"impl KeyMetrics \{.*?\n\}",
        "csi": r"impl MountMetrics \{.*?\n\}",
    }
    text = "".join(re.findall(blocks["shared"], source, re.S) + re.findall(blocks[component], source, re.S))
    return re.search(r'register\(\s*"' + re.escape(base) + '"', text) is not None


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def family(name: str) -> str:
    for s in SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, cond: bool, what: str) -> bool:
        if cond:
            self.passed += 1
        else:
            self.failed.append(what)
            print(f"  FAIL {what}")
        return cond


def cmd_live(prom: str, kms_url: str, csi_url: str, expected_active: set[str]) -> int:
    R = Report()
    api = prom.rstrip("/") + "/api/v1/"

    print("==> targets and rules in the live Prometheus")
    targets = get_json(api + "targets")["data"]["activeTargets"]
    for t in targets:
        R.check(t["health"] == "up", f"target {t['scrapePool']} {t['scrapeUrl']} is {t['health']}: {t.get('lastError')}")
    R.check(len(targets) == 2, f"2 targets expected, {len(targets)} found")
    groups = get_json(api + "rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    for r in rules:
        R.check(r.get("health") == "ok", f"rule {r['name']} evaluates with health {r.get('health')}: {r.get('lastError')}")
    states = {}
    for r in rules:
        states[r.get("state", "?")] = states.get(r.get("state", "?"), 0) + 1
    print(f"  {len(targets)} targets up; {len(rules)} rules loaded and evaluated, states: {states}")

    print("==> the provoked failures set off exactly the expected alerts")
    active = {}
    for r in rules:
        if r.get("state") in ("pending", "firing"):
            active[r["name"]] = sorted(
                "{" + ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items())
                               if k not in ("alertname", "severity", "job", "instance")) + "}"
                for a in r.get("alerts", []))
    for name in sorted(expected_active):
        R.check(name in active, f"alert {name} is not pending or firing after the provoked failures")
    for name in sorted(set(active) - expected_active):
        R.check(False, f"alert {name} is {active[name]} active, though nothing provoked it")
    for name, alerts in sorted(active.items()):
        print(f"  {name}: {' '.join(alerts)}")

    print("==> every metric name used exists in the scrape")
    scraped = set(get_json(api + "label/__name__/values")["data"])
    texts = {"kms": get_text(kms_url), "csi": get_text(csi_url)}
    typed = {m for t in texts.values() for m in re.findall(r"^# TYPE (\S+) ", t, re.M)}
    source = METRICS_RS.read_text()
    users: dict[str, set[str]] = {}
    sources = {
        "alerts.yaml": [e for _, e in rules_exprs()],
        "dashboard.json": [e for _, e in dashboard_exprs(MON / "dashboard.json")],
        "alerts_test.yaml": [s["series"] for t in test_doc()["tests"] for s in t.get("input_series", [])],
    }
    for src, exprs in sources.items():
        for e in exprs:
            for n in NAME.findall(e):
                users.setdefault(n, set()).add(src)
    only_typed, only_source = [], []
    for n in sorted(users):
        if n in scraped:
            R.check(True, n)
        elif family(n) in typed or n in typed:
            only_typed.append(n)
            R.check(True, n)
        elif registered(family(n), source):
            only_source.append(n)
            R.check(True, n)
        else:
            R.check(False, f"{n} (used in {', '.join(sorted(users[n]))}) is not in the scrape, "
                           f"and no family of that name is registered in {METRICS_RS.relative_to(ROOT)}")
    print(f"  {len(users)} names used: {len(users) - len(only_typed) - len(only_source)} with series in Prometheus")
    if only_typed:
        print(f"  declared by a # TYPE line but with no series yet: {', '.join(only_typed)}")
    if only_source:
        print(f"  no series in this run (a labelled family is emitted, HELP and TYPE included, only once "
              f"used), registered in {METRICS_RS.relative_to(ROOT)}: {', '.join(only_source)}")

    print("==> input series of alerts_test.yaml carry the servers' label names")
    label_sets: dict[str, set[frozenset]] = {}
    for n in users:
        if n not in scraped:
            continue
        series = get_json(api + "series?" + urllib.parse.urlencode({"match[]": n}))["data"]
        label_sets[n] = {frozenset(k for k in s if k != "__name__") for s in series}
    checked = 0
    for t in test_doc()["tests"]:
        for s in t.get("input_series", []):
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$", s["series"])
            if not m or m.group(1) not in label_sets:
                continue
            names = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="', m.group(2)))
            checked += 1
            R.check(names in label_sets[m.group(1)],
                    f"alerts_test.yaml: {s['series']}: labels {sorted(names)}, the server emits "
                    f"{[sorted(x) for x in label_sets[m.group(1)]]}")
    print(f"  {checked} input series checked against live label sets")

    print("==> every alert is proven to fire by alerts_test.yaml")
    fired = {a["alertname"] for t in test_doc()["tests"] for a in t.get("alert_rule_test", []) if a.get("exp_alerts")}
    for name, _ in rules_exprs():
        R.check(name in fired, f"alert {name} has no test in alerts_test.yaml expecting it to fire")
    print(f"  {len(fired)} of {len(rules_exprs())} alerts have a firing test")

    print("==> every dashboard expression evaluates in the live Prometheus")
    nonempty = 0
    exprs = dashboard_exprs(MON / "dashboard.json")
    for title, e in exprs:
        q = concrete(e)
        try:
            res = get_json(api + "query?" + urllib.parse.urlencode({"query": q}))
        except urllib.error.HTTPError as err:
            R.check(False, f"dashboard panel {title!r}: {q}: HTTP {err.code}: {err.read()[:300]!r}")
            continue
        if R.check(res.get("status") == "success", f"dashboard panel {title!r}: {q}: {res}"):
            nonempty += bool(res["data"]["result"])
    print(f"  {len(exprs)} expressions evaluated; {nonempty} return data after the dev traffic")

    print(f"check-monitoring: {R.passed} passed, {len(R.failed)} failed")
    return 1 if R.failed else 0


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[1] == "dashboard-rules":
        return cmd_dashboard_rules(argv[2], argv[3])
    if len(argv) == 3 and argv[1] == "addrs":
        return cmd_addrs(argv[2])
    if len(argv) == 6 and argv[1] == "live":
        return cmd_live(argv[2], argv[3], argv[4], set(argv[5].split(",")))
    if len(argv) in (4, 5) and argv[1] == "control":
        data = argv[4].encode() if len(argv) == 5 else None
        req = urllib.request.Request(argv[3], data=data, method=argv[2],
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
