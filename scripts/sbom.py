#!/usr/bin/env python3
"""CycloneDX 1.5 SBOM of the akv-bridge binary (standard library only).

    python3 scripts/sbom.py                 # writes target/sbom/akv-bridge.cdx.json
    python3 scripts/sbom.py --check         # writes it, then checks it (run by .ci/run)
    python3 scripts/sbom.py --output FILE [--target TRIPLE]

What is in it: the crates compiled into the production binary, i.e. `akv-bridge` with its
default features (the `dev` feature, and with it mock-vault, is off) and the `normal`
dependency edges only, for one target platform (default: x86_64-unknown-linux-musl, the
container image's). Proc-macro crates are included (they generate the binary's code) and
marked with the property cargo:crate-type=proc-macro. Build-time tools (build scripts' dependencies such as protox and cc,
dev-dependencies) are not in the binary and are not listed.

How: `cargo tree` resolves features exactly as `cargo build -p akv-bridge` does (Cargo's
feature resolver, per package and target), which `cargo metadata`'s unified `resolve`
graph does not; `cargo metadata` then supplies each crate's licence, description and
repository, and Cargo.lock its SHA-256 checksum.

Deterministic: the same Cargo.lock, commit and target give byte-identical output
(components and dependencies sorted, no wall-clock time: the timestamp is the commit's,
or SOURCE_DATE_EPOCH, and the serial number is derived from the content).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOT_PACKAGE = "akv-bridge"
DEFAULT_TARGET = "x86_64-unknown-linux-musl"
DEFAULT_OUTPUT = ROOT / "target" / "sbom" / "akv-bridge.cdx.json"
CRATES_IO = "registry+https://github.com/rust-lang/crates.io-index"
# A fixed namespace for the content-derived serial number (uuid5).
SERIAL_NAMESPACE = uuid.UUID("6f1c3a52-2b7e-4d0e-9a51-6b3c1d2e8f40")


def run(cmd: list[str]) -> str:
    return subprocess.run(
        cmd, cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout


def cargo_tree_graph(
    target: str,
) -> tuple[str, dict[tuple[str, str], set[tuple[str, str]]], set[tuple[str, str]]]:
    """(root id, {(name, version): {(name, version) of its normal dependencies}},
    the proc-macro crates)."""
    out = run(
        [
            "cargo", "tree", "--locked", "-p", ROOT_PACKAGE, "-e", "normal",
            "--target", target, "--prefix", "depth", "-f", "{p}",
        ]
    )
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    proc_macros: set[tuple[str, str]] = set()
    stack: list[tuple[str, str]] = []
    line_re = re.compile(r"^(\d+)(\S+) v(\S+)(?: \((.*)\))?$")
    for line in out.splitlines():
        m = line_re.match(line.strip())
        if not m:
            raise SystemExit(f"sbom: unexpected cargo tree line: {line!r}")
        depth = int(m.group(1))
        node = (m.group(2), m.group(3))
        if "proc-macro" in (m.group(4) or ""):
            proc_macros.add(node)
        # `(*)` marks a node whose dependencies were printed at its first occurrence.
        del stack[depth:]
        if stack:
            edges.setdefault(stack[-1], set()).add(node)
        edges.setdefault(node, set())
        stack.append(node)
    roots = [n for n in edges if n[0] == ROOT_PACKAGE]
    if len(roots) != 1:
        raise SystemExit("sbom: cargo tree did not print akv-bridge as its root")
    return f"{roots[0][0]}@{roots[0][1]}", edges, proc_macros


def metadata_packages() -> dict[tuple[str, str], dict]:
    meta = json.loads(run(["cargo", "metadata", "--locked", "--format-version", "1"]))
    return {(p["name"], p["version"]): p for p in meta["packages"]}


def lock_checksums() -> dict[tuple[str, str], str]:
    with open(ROOT / "Cargo.lock", "rb") as f:
        lock = tomllib.load(f)
    return {
        (p["name"], p["version"]): p["checksum"]
        for p in lock.get("package", [])
        if "checksum" in p
    }


def spdx_expression(license_field: str | None) -> str | None:
    """Cargo's licence field as an SPDX expression (the old `/` separator means OR)."""
    if not license_field:
        return None
    return re.sub(r"\s*/\s*", " OR ", license_field.strip())


def git(*args: str) -> str | None:
    try:
        return run(["git", *args]).strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def purl(name: str, version: str) -> str:
    return f"pkg:cargo/{name}@{version}"


def component(pkg: dict, checksum: str | None, kind: str) -> dict:
    c: dict = {
        "type": kind,
        "bom-ref": purl(pkg["name"], pkg["version"]),
        "name": pkg["name"],
        "version": pkg["version"],
    }
    if pkg.get("description"):
        c["description"] = " ".join(pkg["description"].split())
    expr = spdx_expression(pkg.get("license"))
    if expr:
        c["licenses"] = [{"expression": expr}]
    c["purl"] = purl(pkg["name"], pkg["version"])
    if checksum:
        c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
    refs = []
    if pkg.get("repository"):
        refs.append({"type": "vcs", "url": pkg["repository"]})
    if pkg.get("homepage"):
        refs.append({"type": "website", "url": pkg["homepage"]})
    if refs:
        c["externalReferences"] = refs
    return c


def build_sbom(target: str) -> dict:
    root_ref, edges, proc_macros = cargo_tree_graph(target)
    packages = metadata_packages()
    checksums = lock_checksums()

    def pkg_of(node: tuple[str, str]) -> dict:
        pkg = packages.get(node)
        if pkg is None:
            raise SystemExit(f"sbom: {node[0]} {node[1]} is in cargo tree but not in cargo metadata")
        if node[0] != ROOT_PACKAGE and pkg.get("source") != CRATES_IO:
            raise SystemExit(f"sbom: {node[0]} {node[1]} does not come from crates.io")
        return pkg

    root_node = next(n for n in edges if f"{n[0]}@{n[1]}" == root_ref)
    commit = os.environ.get("AKV_BRIDGE_COMMIT") or git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    epoch = os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct") or "0"
    timestamp = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)

    root_component = component(pkg_of(root_node), None, "application")
    root_component["properties"] = [
        {"name": "akv-bridge:commit", "value": commit},
        {"name": "akv-bridge:dirty", "value": "true" if dirty else "false"},
        {"name": "akv-bridge:features", "value": "default (dev off)"},
        {"name": "akv-bridge:target", "value": target},
    ]

    components = []
    for n in sorted(edges, key=lambda n: (n[0], n[1])):
        if n == root_node:
            continue
        c = component(pkg_of(n), checksums.get(n), "library")
        if n in proc_macros:
            # Runs inside the compiler and shapes the binary's code, but is not linked in.
            c["properties"] = [{"name": "cargo:crate-type", "value": "proc-macro"}]
        components.append(c)
    dependencies = [
        {
            "ref": purl(*n),
            "dependsOn": sorted(purl(*d) for d in deps),
        }
        for n, deps in sorted(edges.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    ]

    bom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": timestamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "tools": {
                "components": [
                    {"type": "application", "name": "scripts/sbom.py", "version": commit}
                ]
            },
            "component": root_component,
        },
        "components": components,
        "dependencies": dependencies,
    }
    body = json.dumps(bom, sort_keys=True, separators=(",", ":"))
    serial = uuid.uuid5(SERIAL_NAMESPACE, hashlib.sha256(body.encode()).hexdigest())
    return {"serialNumber": f"urn:uuid:{serial}", **bom}


def render(bom: dict) -> str:
    return json.dumps(bom, indent=2, sort_keys=False) + "\n"


def check(path: Path, target: str) -> list[str]:
    """Problems with the SBOM at `path` (empty when it is good)."""
    problems = []
    text = path.read_text()
    try:
        bom = json.loads(text)
    except json.JSONDecodeError as e:
        return [f"{path} is not JSON: {e}"]
    if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
        problems.append("not a CycloneDX 1.5 document")
    meta = bom.get("metadata", {}).get("component", {})
    if meta.get("name") != ROOT_PACKAGE or not meta.get("version"):
        problems.append("metadata.component is not akv-bridge with a version")
    props = {p["name"]: p["value"] for p in meta.get("properties", [])}
    if not props.get("akv-bridge:commit"):
        problems.append("metadata.component has no commit")
    names = {c.get("name") for c in bom.get("components", [])}
    for needed in ("tonic", "azure_core", "azure_identity", "rustls", "aws-lc-rs", "prost"):
        if needed not in names:
            problems.append(f"{needed} missing: the binary links it")
    for forbidden in ("mock-vault", "proptest", "tempfile", "rcgen", "protox", "tonic-prost-build"):
        if forbidden in names:
            problems.append(f"{forbidden} listed: it is not in the production binary")
    refs = {c["bom-ref"] for c in bom.get("components", [])} | {meta.get("bom-ref")}
    for c in bom.get("components", []):
        if not c.get("purl", "").startswith("pkg:cargo/"):
            problems.append(f"{c.get('name')}: no cargo purl")
        if not c.get("licenses"):
            problems.append(f"{c.get('name')}: no licence")
        if not c.get("hashes"):
            problems.append(f"{c.get('name')}: no SHA-256 from Cargo.lock")
    for d in bom.get("dependencies", []):
        for r in [d["ref"], *d.get("dependsOn", [])]:
            if r not in refs:
                problems.append(f"dependency graph names unknown ref {r}")
    # Deterministic: generating again gives the same bytes.
    if render(build_sbom(target)) != text:
        problems.append("regenerating gives different output (not deterministic)")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    ap.add_argument("--target", default=DEFAULT_TARGET, help="target triple (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="also verify the written SBOM")
    args = ap.parse_args()

    bom = build_sbom(args.target)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(bom))
    n = len(bom["components"])
    print(f"sbom: {args.output.relative_to(ROOT) if args.output.is_relative_to(ROOT) else args.output}: "
          f"{n} components, {ROOT_PACKAGE} {bom['metadata']['component']['version']} "
          f"({args.target})")
    if args.check:
        problems = check(args.output, args.target)
        for p in problems:
            print(f"sbom: FAIL: {p}", file=sys.stderr)
        if problems:
            return 1
        print("sbom: check passed (CycloneDX 1.5, licences, hashes, graph, no dev crates, deterministic)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
