#!/usr/bin/env python3
"""Checks everything under deploy/ and the Dockerfile (run by scripts/validate-deploy.sh,
inside its virtual environment, which provides kubernetes-validate, jsonschema, PyYAML,
checkov and hadolint).

1. Builds every kustomization (the pinned `kubectl kustomize`, or one on PATH).
2. Validates every manifest: the built output of each kustomization, and each YAML file no
   kustomization includes (examples, the EncryptionConfiguration, the kube-apiserver
   changes):
   - Kubernetes API objects against the Kubernetes OpenAPI schemas of the oldest and newest
     versions we target (strict: unknown fields are errors);
   - what those schemas do not cover against schemas in scripts/schemas/:
     EncryptionConfiguration, SecretProviderClass (plus the azure provider's parameters and
     each `objects` entry), kubeadm's ClusterConfiguration, JSON patches.
3. Checks that the pieces agree with each other: the plugin's socket and the
   EncryptionConfiguration's endpoint, the kube-apiserver mounts, the node's tmpfiles
   rules, the CSI provider's socket, symlink and host paths in every overlay; applies the
   Cluster API patch to a CAPZ-shaped fixture; checks the hardening rules of every
   workload (non-root, read-only root, no privilege escalation, capabilities dropped,
   seccomp, resources, probes); and checks that the Dockerfile's Rust image is new enough
   for every crate the image builds.
4. Runs checkov over deploy/ and the Dockerfile (zero failed checks; every skip carries a
   reason, and a skip that no longer matches a finding is an error) and hadolint over the
   Dockerfile (zero findings).

deploy/monitoring/ (Prometheus rules, their tests, a Grafana dashboard) is not Kubernetes:
scripts/check-monitoring.sh checks it.

Prints the figures, then `validate-deploy: N passed, M failed`; exits non-zero on any
failure.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCHEMAS = ROOT / "scripts" / "schemas"
VENV_BIN = Path(sys.executable).parent
# KMS v2 is GA from 1.29 (the oldest we support); the newest is the newest schema the
# pinned kubernetes-validate ships.
K8S_VERSIONS = ["1.29", kubernetes_validate.latest_version()]
OUR_IMAGE = "ghcr.io/akv-bridge/akv-bridge"
OUR_UID = 65532
# Where the kustomize builds are written for checkov (under target/, ignored by git).
RENDER_DIR = ROOT / "target" / "deploy-render"
# Prometheus rules, their tests and a Grafana dashboard: checked by
# scripts/check-monitoring.sh (promtool and a live Prometheus), not here.
MONITORING = DEPLOY / "monitoring"


@dataclass
class Report:
    passed: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: dict[str, str] = field(default_factory=dict)

    def ok(self, n: int = 1) -> None:
        self.passed += n

    def fail(self, msg: str) -> None:
        self.failures.append(msg)
        print(f"  FAIL {msg}")

    def check(self, cond: bool, msg: str) -> bool:
        if cond:
            self.ok()
        else:
            self.fail(msg)
        return cond


R = Report()


def rel(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


# ---------------------------------------------------------------------------------------
# kustomize
# ---------------------------------------------------------------------------------------


def kustomize_cmd() -> list[str] | None:
    # The pinned kubectl of .venv-tools (scripts/ci-tools.txt) first, so every machine
    # renders with the same kustomize; then whatever is on PATH when run outside the venv.
    pinned = VENV_BIN / "kubectl"
    if pinned.is_file():
        return [str(pinned), "kustomize"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def kustomization_dirs() -> list[Path]:
    return sorted(p.parent for p in DEPLOY.rglob("kustomization.yaml"))


def kustomization_resource_files(d: Path) -> set[Path]:
    """YAML files a kustomization (and the kustomizations it includes) reads as resources."""
    out: set[Path] = set()
    k = yaml.safe_load((d / "kustomization.yaml").read_text()) or {}
    for r in k.get("resources", []) or []:
        p = (d / r).resolve()
        if p.is_dir():
            out |= kustomization_resource_files(p)
        else:
            out.add(p)
    for patch in k.get("patches", []) or []:
        if isinstance(patch, dict) and patch.get("path"):
            out.add((d / patch["path"]).resolve())
    return out


def render(cmd: list[str], d: Path) -> str | None:
    proc = subprocess.run([*cmd, str(d)], capture_output=True, text=True)
    if proc.returncode != 0:
        R.fail(f"{rel(d)}: kustomize build failed: {proc.stderr.strip()[:500]}")
        return None
    R.ok()
    return proc.stdout


def docs_of(text: str, origin: str) -> list:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        R.fail(f"{origin}: not YAML: {e}")
        return []


# ---------------------------------------------------------------------------------------
# Schema validation
# ---------------------------------------------------------------------------------------

_schemas: dict[str, dict] = {}


def schema(name: str) -> dict:
    if name not in _schemas:
        _schemas[name] = json.loads((SCHEMAS / name).read_text())
    return _schemas[name]


def validate_with_schema(doc, schema_name: str, origin: str) -> bool:
    errors = sorted(
        jsonschema.Draft202012Validator(schema(schema_name)).iter_errors(doc),
        key=lambda e: list(e.absolute_path),
    )
    for e in errors[:5]:
        path = "/".join(str(p) for p in e.absolute_path) or "(root)"
        R.fail(f"{origin}: {schema_name}: {path}: {e.message[:300]}")
    if not errors:
        R.ok()
    return not errors


def validate_k8s(doc: dict, origin: str) -> bool:
    ok = True
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            R.fail(f"{origin}: Kubernetes {version}: {e.message}")
            ok = False
        except kubernetes_validate.SchemaNotFoundError:
            R.fail(
                f"{origin}: no Kubernetes {version} schema for {doc.get('apiVersion')}/"
                f"{doc.get('kind')}: add a schema to scripts/schemas/ and route it here"
            )
            ok = False
    if ok:
        R.ok()
    return ok


# Keys of one `objects` entry that akv-bridge accepts (src/csi/params.rs): the Go
# provider's, plus the extensions optional, objectJsonKey, objectYamlKey, failoverKeyvaultName
# and keyvaultName.
OBJECT_KEYS = {
    "objectName", "objectType", "objectVersion", "objectVersionHistory", "objectAlias",
    "objectFormat", "objectEncoding", "filePermission", "optional", "objectJsonKey", "objectYamlKey",
    "failoverKeyvaultName", "objectNamePrefix", "objectTag", "objectMaxCount",
    "keyvaultName",
}
SPC_PARAMETERS = {
    "keyvaultName", "tenantID", "tenantId", "cloudName", "useVMManagedIdentity",
    "userAssignedIdentityID", "clientID", "useAzureTokenProxy", "failoverKeyvaultName", "objects",
}
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
VAULT = re.compile(r"^[-A-Za-z0-9]{3,24}$")


def validate_spc(doc: dict, origin: str) -> None:
    if not validate_with_schema(doc, "secretproviderclass.json", origin):
        return
    spec = doc["spec"]
    where = f"{origin}: SecretProviderClass {doc['metadata']['name']}"
    if not R.check(spec["provider"] == "azure", f"{where}: provider must be azure"):
        return
    p = spec["parameters"]
    problems = []
    unknown = set(p) - SPC_PARAMETERS
    if unknown:
        problems.append(f"unknown parameters {sorted(unknown)}")
    if not VAULT.match(p.get("keyvaultName", "")):
        problems.append("keyvaultName missing or not 3-24 of [-A-Za-z0-9]")
    if not GUID.match(p.get("tenantID", p.get("tenantId", ""))):
        problems.append("tenantID missing or not a GUID")
    wi = bool(p.get("clientID"))
    mi = p.get("useVMManagedIdentity", "").lower() in ("true", "1", "t")
    if wi and mi:
        problems.append("clientID together with useVMManagedIdentity is refused")
    if p.get("useAzureTokenProxy", "").lower() in ("true", "1", "t") and (mi or not wi):
        problems.append("useAzureTokenProxy needs clientID and no useVMManagedIdentity")
    for k in ("clientID", "userAssignedIdentityID"):
        if p.get(k) and not GUID.match(p[k]):
            problems.append(f"{k} is not a GUID")
    try:
        objects = yaml.safe_load(p.get("objects", ""))
        entries = objects["array"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("empty")
    except Exception:  # noqa: BLE001 - any shape problem is the same finding
        problems.append("objects is not a YAML document `array:` of entries")
        entries = []
    for i, entry in enumerate(entries):
        try:
            obj = yaml.safe_load(entry) if isinstance(entry, str) else None
        except yaml.YAMLError:
            obj = None
        if not isinstance(obj, dict):
            problems.append(f"objects[{i}] is not a YAML string holding a mapping")
            continue
        bad = set(obj) - OBJECT_KEYS
        if bad:
            problems.append(f"objects[{i}] has keys akv-bridge refuses: {sorted(bad)}")
        selection = bool(obj.get("objectNamePrefix") or obj.get("objectTag"))
        if selection:
            if obj.get("objectName") or str(obj.get("objectType", "")).lower() != "secret":
                problems.append(f"objects[{i}] a selection (objectNamePrefix/objectTag) has no objectName and objectType secret")
        elif not obj.get("objectName") or str(obj.get("objectType", "")).lower() not in ("secret", "key", "cert"):
            problems.append(f"objects[{i}] needs objectName and objectType secret|key|cert")
        if "keyvaultName" in obj and not VAULT.match(str(obj["keyvaultName"])):
            problems.append(f"objects[{i}] keyvaultName is not a vault name")
        for field in ("objectJsonKey", "objectYamlKey"):
            if field in obj and str(obj.get("objectType")).lower() != "secret":
                problems.append(f"objects[{i}] {field} needs objectType secret")
        if "objectJsonKey" in obj and "objectYamlKey" in obj:
            problems.append(f"objects[{i}] objectJsonKey and objectYamlKey cannot both be set")
    for msg in problems:
        R.fail(f"{where}: {msg}")
    if not problems:
        R.ok()


def validate_doc(doc, origin: str, counts: dict[str, int]) -> None:
    if isinstance(doc, list):
        counts["own schema"] += 1
        validate_with_schema(doc, "jsonpatch.json", origin)
        return
    if not isinstance(doc, dict) or "kind" not in doc:
        R.fail(f"{origin}: not a Kubernetes-style document (no kind)")
        return
    api, kind = doc.get("apiVersion", ""), doc["kind"]
    if kind == "EncryptionConfiguration":
        counts["own schema"] += 1
        validate_with_schema(doc, "encryptionconfiguration.json", origin)
    elif kind == "SecretProviderClass":
        counts["own schema"] += 1
        validate_spc(doc, origin)
    elif kind == "ClusterConfiguration" and api.startswith("kubeadm.k8s.io/"):
        counts["own schema"] += 1
        validate_with_schema(doc, "kubeadm-clusterconfiguration.json", origin)
    else:
        counts["kubernetes"] += 1
        validate_k8s(doc, origin)


# ---------------------------------------------------------------------------------------
# Consistency and hardening
# ---------------------------------------------------------------------------------------


def last_flag(args: list[str], flag: str) -> str | None:
    """The value of the last `--flag=value` (a repeated flag overrides the earlier one)."""
    value = None
    for a in args:
        if a.startswith(f"{flag}="):
            value = a.split("=", 1)[1]
    return value


def unix_path(addr: str) -> str:
    return addr.removeprefix("unix://")


def duration_s(text: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") == "Pod":
        return doc["spec"]
    if doc.get("kind") in ("DaemonSet", "Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def check_hardening(doc: dict, origin: str) -> None:
    spec = pod_spec(doc)
    if spec is None:
        return
    name = f"{origin}: {doc['kind']} {doc['metadata']['name']}"
    psc = spec.get("securityContext", {})
    problems = []
    if spec.get("hostPID") or spec.get("hostIPC"):
        problems.append("hostPID/hostIPC")
    if spec.get("hostNetwork") and "CKV_K8S_19" not in json.dumps(doc["metadata"].get("annotations", {})):
        problems.append("hostNetwork without a stated reason")
    if spec.get("automountServiceAccountToken") is not False:
        problems.append("service-account token mounted")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    if psc.get("runAsNonRoot") is not True:
        problems.append("pod runAsNonRoot is not true")
    for init, c in [(False, c) for c in spec.get("containers", [])] + [
        (True, c) for c in spec.get("initContainers", [])
    ]:
        sc = c.get("securityContext", {})
        cn = f"container {c['name']}"
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cn}: root filesystem not read-only")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cn}: allowPrivilegeEscalation not false")
        if sc.get("privileged"):
            problems.append(f"{cn}: privileged")
        if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
            problems.append(f"{cn}: capabilities not dropped (ALL)")
        if (sc.get("seccompProfile") or {}).get("type", "RuntimeDefault") != "RuntimeDefault":
            problems.append(f"{cn}: seccomp not RuntimeDefault")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            if not {"cpu", "memory"} <= set(res.get(kind, {})):
                problems.append(f"{cn}: no cpu/memory {kind}")
        image = c.get("image", "")
        if ":" not in image.rsplit("/", 1)[-1] and "@sha256:" not in image:
            problems.append(f"{cn}: image without a tag or digest")
        if init:
            # Root init containers are the audited exception (daemonset.yaml): a fixed
            # command, at most CAP_CHOWN.
            if set((sc.get("capabilities") or {}).get("add", [])) - {"CHOWN"}:
                problems.append(f"{cn}: adds capabilities beyond CHOWN")
            if "command" not in c:
                problems.append(f"{cn}: no fixed command")
            continue
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True or not uid:
            problems.append(f"{cn}: not non-root with a fixed uid")
        if image.startswith(OUR_IMAGE):
            gid = sc.get("runAsGroup", psc.get("runAsGroup"))
            if uid != OUR_UID or gid != OUR_UID:
                problems.append(f"{cn}: akv-bridge must run as {OUR_UID}:{OUR_UID}")
            if "livenessProbe" not in c or "readinessProbe" not in c:
                problems.append(f"{cn}: akv-bridge needs liveness and readiness probes")
        elif "readinessProbe" not in c:
            problems.append(f"{cn}: no readiness probe")
    for p in problems:
        R.fail(f"{name}: {p}")
    if not problems:
        R.ok()


def kms_pod(docs: list) -> dict | None:
    pods = [d for d in docs if d.get("kind") == "Pod"]
    return pods[0] if len(pods) == 1 else None


def check_kms(rendered: dict[str, list], standalone: dict[str, list]) -> None:
    enc = standalone.get("deploy/kms/encryption-config.yaml", [None])[0]
    kubeadm = standalone.get("deploy/kms/kube-apiserver/kubeadm-clusterconfiguration.yaml", [None])[0]
    capz = standalone.get("deploy/kms/kube-apiserver/capz-kubeadmcontrolplane.jsonpatch.yaml", [None])[0]
    tmpfiles = (DEPLOY / "kms/node/akv-bridge-kms.tmpfiles.conf").read_text()
    if not all([enc, kubeadm, capz]):
        R.fail("deploy/kms: encryption-config, kubeadm or CAPZ file missing")
        return
    providers = enc["resources"][0]["providers"]
    kms = providers[0].get("kms", {})
    R.check(
        kms.get("apiVersion") == "v2" and kms.get("name") == "azurekmsprovider"
        and "identity" in providers[-1],
        "encryption-config: first provider must be kms v2 azurekmsprovider, last identity",
    )
    endpoint = unix_path(kms.get("endpoint", ""))
    socket_dir = posixpath.dirname(endpoint)
    # kube-apiserver: the config and the socket directory are mounted (read-only), in both
    # the kubeadm and the Cluster API variants.
    args = {a["name"]: a["value"] for a in kubeadm["apiServer"]["extraArgs"]}
    vols = kubeadm["apiServer"]["extraVolumes"]
    config_path = args.get("encryption-provider-config", "")
    for variant, cfg, volumes in [
        ("kubeadm", config_path, vols),
        (
            "capz",
            next((op["value"] for op in capz if op["path"].endswith("/encryption-provider-config")), ""),
            [op["value"] for op in capz if op["path"].endswith("/extraVolumes/-")],
        ),
    ]:
        mounted = {v["mountPath"]: v for v in volumes}
        R.check(
            any(cfg.startswith(m + "/") and v.get("readOnly") for m, v in mounted.items()),
            f"{variant}: --encryption-provider-config {cfg!r} is not under a read-only mount",
        )
        R.check(
            socket_dir in mounted and mounted[socket_dir]["hostPath"] == socket_dir
            and mounted[socket_dir].get("readOnly") is True,
            f"{variant}: kube-apiserver does not mount the socket directory {socket_dir} read-only",
        )
    capz_files = [op["value"]["path"] for op in capz if op["path"].endswith("/files/-")]
    R.check(
        config_path in capz_files and "/etc/kubernetes/manifests/akv-bridge-kms.yaml" in capz_files,
        "capz: the static pod manifest and the EncryptionConfiguration are not written",
    )
    # The node's tmpfiles rules create the socket directory for the plugin's uid.
    rule = re.search(rf"^d\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)", tmpfiles, re.M)
    R.check(
        bool(rule) and posixpath.normpath(rule.group(1)) == socket_dir.replace("/var/run/", "/run/")
        and rule.group(3) == str(OUR_UID),
        f"tmpfiles: no `d {socket_dir}` rule owned by {OUR_UID}",
    )
    # Every KMS build: the plugin listens where the EncryptionConfiguration points, on a
    # hostPath that is that directory, answers inside kube-apiserver's timeout, and the
    # placeholders are overridden in overlays.
    for origin, docs in rendered.items():
        if not origin.startswith("deploy/kms"):
            continue
        pod = kms_pod(docs)
        if not R.check(pod is not None, f"{origin}: expected exactly one Pod"):
            continue
        c = pod["spec"]["containers"][0]
        cargs = c["args"]
        listen = unix_path(last_flag(cargs, "--listen-addr") or "")
        R.check(listen == endpoint, f"{origin}: --listen-addr {listen!r} != EncryptionConfiguration endpoint {endpoint!r}")
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        vol = {v["name"]: v for v in pod["spec"]["volumes"]}.get(mounts.get(socket_dir, ""), {})
        R.check(
            vol.get("hostPath", {}).get("path") == socket_dir and vol["hostPath"].get("type") == "Directory",
            f"{origin}: the socket directory is not the hostPath {socket_dir} (type Directory)",
        )
        R.check(
            duration_s(last_flag(cargs, "--keyvault-timeout") or "0s") < duration_s(kms.get("timeout", "3s")),
            f"{origin}: --keyvault-timeout is not inside the EncryptionConfiguration timeout",
        )
        cfg = last_flag(cargs, "--config-file-path")
        R.check(
            cfg in mounts and any(m.get("readOnly") and m["mountPath"] == cfg for m in c["volumeMounts"]),
            f"{origin}: azure.json ({cfg}) is not mounted read-only",
        )
        if "/overlays/" in origin:
            R.check(
                last_flag(cargs, "--keyvault-name") != "REPLACE-ME" and last_flag(cargs, "--key-name") != "REPLACE-ME",
                f"{origin}: the overlay does not set --keyvault-name and --key-name",
            )


def check_capz_patch_applies(cmd: list[str] | None) -> None:
    """Apply the Cluster API JSON patch, with kustomize, to a KubeadmControlPlane shaped like
    CAPZ's templates, and check the result keeps the template's own entries."""
    if cmd is None:
        R.notes.append("GAP: no kustomize; the Cluster API patch was not applied to a fixture")
        return
    fixture = {
        "apiVersion": "controlplane.cluster.x-k8s.io/v1beta1",
        "kind": "KubeadmControlPlane",
        "metadata": {"name": "example-control-plane", "namespace": "default"},
        "spec": {
            "kubeadmConfigSpec": {
                "files": [{"path": "/etc/kubernetes/azure.json", "owner": "root:root", "permissions": "0644",
                           "contentFrom": {"secret": {"name": "example-azure-json", "key": "control-plane-azure.json"}}}],
                "preKubeadmCommands": [],
                "clusterConfiguration": {"apiServer": {
                    "extraArgs": {"cloud-provider": "external"},
                    "extraVolumes": [{"name": "cloud-config", "hostPath": "/etc/kubernetes/azure.json",
                                      "mountPath": "/etc/kubernetes/azure.json", "readOnly": True}]}},
                "initConfiguration": {"nodeRegistration": {"ignorePreflightErrors": []}},
                "joinConfiguration": {"nodeRegistration": {"ignorePreflightErrors": []}},
            },
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "kcp.yaml").write_text(yaml.safe_dump(fixture))
        shutil.copy(DEPLOY / "kms/kube-apiserver/capz-kubeadmcontrolplane.jsonpatch.yaml", t / "patch.yaml")
        (t / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": ["kcp.yaml"],
            "patches": [{"path": "patch.yaml", "target": {"kind": "KubeadmControlPlane"}}],
        }))
        proc = subprocess.run([*cmd, str(t)], capture_output=True, text=True)
    if not R.check(proc.returncode == 0, f"capz patch does not apply to a CAPZ-shaped KubeadmControlPlane: {proc.stderr.strip()[:300]}"):
        return
    spec = yaml.safe_load(proc.stdout)["spec"]["kubeadmConfigSpec"]
    api = spec["clusterConfiguration"]["apiServer"]
    R.check(
        len(spec["files"]) == 4 and spec["files"][0]["path"] == "/etc/kubernetes/azure.json"
        and api["extraArgs"].get("cloud-provider") == "external"
        and "encryption-provider-config" in api["extraArgs"]
        and len(api["extraVolumes"]) == 3
        and spec["preKubeadmCommands"] and spec["initConfiguration"]["nodeRegistration"]["ignorePreflightErrors"],
        "capz patch: the patched KubeadmControlPlane lost template entries or lacks ours",
    )


def check_csi(rendered: dict[str, list]) -> None:
    for origin, docs in rendered.items():
        if not origin.startswith("deploy/csi"):
            continue
        ds = [d for d in docs if d.get("kind") == "DaemonSet"]
        if not R.check(len(ds) == 1, f"{origin}: expected exactly one DaemonSet"):
            continue
        spec = ds[0]["spec"]["template"]["spec"]
        vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
        shared, own = vols.get("providers-dir"), vols.get("provider-socket-dir")
        c = spec["containers"][0]
        endpoint = unix_path(last_flag(c["args"], "--endpoint") or "")
        mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}.get("provider-socket-dir")
        inits = {i["name"]: i["command"] for i in spec.get("initContainers", [])}
        link = inits.get("link-socket", [])
        problems = []
        if not shared or own != f"{shared}/akv-bridge":
            problems.append(f"host paths {shared!r}/{own!r}: the provider's directory must be <providers dir>/akv-bridge")
        if posixpath.dirname(endpoint) != mount or posixpath.basename(endpoint) != "azure.sock":
            problems.append(f"--endpoint {endpoint!r} is not azure.sock in the mounted {mount!r}")
        if link[-2:] != ["akv-bridge/azure.sock", "/providers/azure.sock"]:
            problems.append(f"the init symlink {link} does not publish azure.sock")
        if inits.get("chown-socket-dir", [])[1:] != [f"{OUR_UID}:{OUR_UID}", "/providers/akv-bridge"]:
            problems.append("the chown init container does not hand the directory to the provider's uid")
        if any(m["name"] == "providers-dir" for m in c["volumeMounts"]):
            problems.append("the provider mounts the shared providers directory")
        if spec.get("priorityClassName") == "system-node-critical" and ds[0]["metadata"]["namespace"] != "kube-system":
            if not any(d.get("kind") == "ResourceQuota" for d in docs):
                problems.append("system-node-critical outside kube-system without a ResourceQuota")
        np = [d for d in docs if d.get("kind") == "NetworkPolicy"]
        if len(np) != 1 or set(np[0]["spec"]["policyTypes"]) != {"Ingress", "Egress"}:
            problems.append("no NetworkPolicy limiting both ingress and egress")
        else:
            ports = {p["port"] for r in np[0]["spec"]["egress"] for p in r.get("ports", [])}
            if not ports <= {53, 443, 80}:
                problems.append(f"egress beyond DNS, HTTPS and IMDS: {sorted(ports)}")
        sa = [d for d in docs if d.get("kind") == "ServiceAccount"]
        if len(sa) != 1 or sa[0].get("automountServiceAccountToken") is not False:
            problems.append("the ServiceAccount mounts a token")
        if any(d.get("kind") in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding") for d in docs):
            problems.append("RBAC objects: the provider needs no Kubernetes API access")
        for p in problems:
            R.fail(f"{origin}: {p}")
        if not problems:
            R.ok()


def check_builder_rust_version() -> None:
    """The Dockerfile's Rust image must be new enough for every crate the image builds
    (`--locked` uses Cargo.lock as is, so a crate needing a newer compiler fails there)."""
    m = re.search(r"^FROM rust:(\d+)\.(\d+)(?:\.(\d+))?", (ROOT / "Dockerfile").read_text(), re.M)
    if not R.check(bool(m), "Dockerfile: no `FROM rust:<version>` builder"):
        return
    builder = tuple(int(x or 0) for x in m.groups())
    try:
        meta = json.loads(subprocess.run(
            ["cargo", "metadata", "--locked", "--format-version", "1"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout)
        tree = subprocess.run(
            ["cargo", "tree", "--locked", "-p", "akv-bridge", "-e", "normal,build",
             "--target", "x86_64-unknown-linux-musl", "--prefix", "none", "-f", "{p}"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        R.fail(f"cargo metadata/tree failed: {e}")
        return
    built = {tuple(l.split()[:2]) for l in tree.splitlines() if l.strip()}
    need = []
    for pkg in meta["packages"]:
        if (pkg["name"], "v" + pkg["version"]) in built and pkg.get("rust_version"):
            v = tuple(int(x) for x in (pkg["rust_version"].split(".") + ["0", "0"])[:3])
            need.append((v, pkg["name"]))
    top = max(need, default=((0, 0, 0), "-"))
    R.check(
        top[0] <= builder,
        f"Dockerfile builds with Rust {'.'.join(map(str, builder))} but {top[1]} needs "
        f"{'.'.join(map(str, top[0]))}: raise the FROM rust: tag",
    )
    R.figures["image toolchain"] = (
        f"rust {'.'.join(map(str, builder))} >= {'.'.join(map(str, top[0]))}, the highest "
        f"rust-version among the {len(built)} crates the image builds ({top[1]})"
    )


# ---------------------------------------------------------------------------------------
# Scanners
# ---------------------------------------------------------------------------------------

SKIP_ANNOTATION = re.compile(r"checkov\.io/skip\d+:\s*(CKV2?_[A-Z0-9]+_\d+)=(.*)")
SKIP_COMMENT = re.compile(r"checkov:skip=(CKV2?_[A-Z0-9]+_\d+):(.*)")


def declared_skips() -> dict[tuple[str, str], str]:
    out = {}
    files = [p for p in DEPLOY.rglob("*.yaml")] + [ROOT / "Dockerfile"]
    for f in files:
        for line in f.read_text().splitlines():
            for rx in (SKIP_ANNOTATION, SKIP_COMMENT):
                m = rx.search(line)
                if m:
                    out[(rel(f), m.group(1))] = m.group(2).strip()
    return out


def checkov_json(args: list[str]) -> list[dict] | None:
    checkov = VENV_BIN / "checkov"
    proc = subprocess.run(
        # --skip-download: no calls to the vendor's platform (none is reachable here, and
        # none is needed for the built-in checks).
        [str(checkov), *args, "--skip-download", "--output", "json", "--compact"],
        capture_output=True, text=True, cwd=ROOT, stdin=subprocess.DEVNULL,
        # No worker processes: deterministic, and none of the parallel runner's races.
        env={**os.environ, "LOG_LEVEL": "ERROR", "CHECKOV_PARALLELIZATION_TYPE": "none"},
    )
    try:
        results = json.loads(proc.stdout)
    except json.JSONDecodeError:
        R.fail(f"checkov {' '.join(args)}: no JSON output (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
        return None
    results = results if isinstance(results, list) else [results]
    return [r for r in results if "results" in r]  # frameworks with nothing to scan have none


def run_checkov() -> None:
    # The kustomize builds are scanned from RENDER_DIR (written by main) with checkov's
    # kubernetes framework rather than with its own kustomize framework, whose
    # multiprocessing crashes or hangs intermittently (checkov 3.3.30).
    runs = [
        ("deploy/", ["-d", str(DEPLOY), "--framework", "kubernetes", "secrets"]),
        ("kustomize builds", ["-d", str(RENDER_DIR), "--framework", "kubernetes"]),
        ("Dockerfile", ["-f", str(ROOT / "Dockerfile"), "--framework", "dockerfile", "secrets"]),
    ]
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for label, args in runs:
        for r in checkov_json(args) or []:
            s = r["summary"]
            for k in totals:
                totals[k] += s[k]
            for c in r["results"]["failed_checks"]:
                R.fail(f"checkov {r['check_type']}: {c['check_id']} {c['check_name']} ({c['resource']}, {c['file_path']})")
            for c in r["results"]["skipped_checks"]:
                reason = (c.get("check_result") or {}).get("suppress_comment", "")
                if not reason or reason == "No comment provided":
                    R.fail(f"checkov {label}: skip of {c['check_id']} in {c['file_path']} has no reason")
    R.check(totals["failed"] == 0, f"checkov: {totals['failed']} failed checks")
    R.figures["checkov"] = (
        f"{totals['passed']} passed, {totals['failed']} failed, {totals['skipped']} skipped "
        f"(over deploy/, the {len(list(RENDER_DIR.glob('*.yaml')))} kustomize builds and the Dockerfile)"
    )
    check_skips_still_needed()


def check_skips_still_needed() -> None:
    """checkov reports a suppressed check as skipped whether or not it would fail, so a
    skip that no longer matches anything goes unnoticed. Scan a copy with every skip
    removed: each declared skip must match a failure there."""
    declared = declared_skips()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        shutil.copytree(DEPLOY, t / "deploy")
        shutil.copy(ROOT / "Dockerfile", t / "Dockerfile")
        for f in [*(t / "deploy").rglob("*.yaml"), t / "Dockerfile"]:
            lines = f.read_text().splitlines(keepends=True)
            f.write_text("".join(l for l in lines if not (SKIP_ANNOTATION.search(l) or SKIP_COMMENT.search(l))))
        failing: set[tuple[str, str]] = set()
        # Each component on its own, as an operator deploying only one of them would scan
        # it: in one scan of all of deploy/, checkov's graph wrongly credits the CSI
        # provider's NetworkPolicy to the KMS static pod (same namespace).
        scans = [
            (["-d", str(d), "--framework", "kubernetes", "secrets"], d)
            for d in sorted((t / "deploy").iterdir()) if d.is_dir()
        ] + [(["-f", str(t / "Dockerfile"), "--framework", "dockerfile", "secrets"], t)]
        for args, base in scans:
            for r in checkov_json(args) or []:
                for c in r["results"]["failed_checks"]:
                    # With -d, file_path is relative to the scanned directory (leading /);
                    # with -f it is absolute. file_abs_path is wrong for graph checks.
                    fp = c["file_path"]
                    p = Path(fp) if fp.startswith(str(t)) else base / fp.lstrip("/")
                    failing.add((str(p.resolve().relative_to(t.resolve())), c["check_id"]))
    for (f, check_id), reason in sorted(declared.items()):
        R.check(bool(reason), f"{f}: skip of {check_id} has no reason")
        R.check((f, check_id) in failing, f"{f}: skip of {check_id} matches no finding: remove it")
    R.figures["checkov skips"] = f"{len(declared)} declared, each still needed (re-scanned without them) and with a reason"


def run_hadolint() -> None:
    hadolint = VENV_BIN / "hadolint"
    proc = subprocess.run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(ROOT / "Dockerfile")],
        capture_output=True, text=True,
    )
    findings = [l for l in proc.stdout.splitlines() if l.strip()]
    for f in findings:
        R.fail(f"hadolint: {f}")
    R.check(proc.returncode == 0, f"hadolint exited {proc.returncode}")
    version = subprocess.run([str(hadolint), "--version"], capture_output=True, text=True).stdout.strip()
    R.figures["hadolint"] = f"{len(findings)} findings ({version}, every rule down to style)"


# ---------------------------------------------------------------------------------------


def main() -> int:
    cmd = kustomize_cmd()
    counts = {"kubernetes": 0, "own schema": 0}
    rendered: dict[str, list] = {}
    covered: set[Path] = set()

    print("==> kustomize builds")
    dirs = kustomization_dirs()
    shutil.rmtree(RENDER_DIR, ignore_errors=True)
    RENDER_DIR.mkdir(parents=True)
    for d in dirs:
        covered |= kustomization_resource_files(d)
        if cmd is None:
            continue
        text = render(cmd, d)
        if text is not None:
            (RENDER_DIR / (rel(d).replace("/", "_") + ".yaml")).write_text(text)
            rendered[rel(d)] = docs_of(text, rel(d))
            print(f"  {rel(d)}: {len(rendered[rel(d)])} objects")
    if cmd is None:
        R.notes.append(
            "GAP: neither kubectl nor kustomize is installed: kustomizations were not built; "
            "their resource files were validated directly and overlay patches were not applied"
        )
        for f in sorted(covered):
            rendered[rel(f)] = docs_of(f.read_text(), rel(f))

    print(f"==> manifests against Kubernetes {' and '.join(K8S_VERSIONS)} (strict) and scripts/schemas/")
    for origin, docs in rendered.items():
        for i, doc in enumerate(docs):
            validate_doc(doc, f"{origin}[{i}] {doc.get('kind', '?') if isinstance(doc, dict) else 'patch'}", counts)
    standalone: dict[str, list] = {}
    for f in sorted(DEPLOY.rglob("*.y*ml")):
        if f.name == "kustomization.yaml" or f.resolve() in covered:
            continue
        if f.is_relative_to(MONITORING):
            # Prometheus's own formats (rules, rule tests), not Kubernetes objects.
            continue
        docs = docs_of(f.read_text(), rel(f))
        standalone[rel(f)] = docs
        for i, doc in enumerate(docs):
            validate_doc(doc, f"{rel(f)}[{i}]", counts)
    n_docs = counts["kubernetes"] + counts["own schema"]
    R.figures["manifests"] = (
        f"{n_docs} documents ({len(rendered)} kustomize builds, {len(standalone)} standalone files): "
        f"{counts['kubernetes']} against the Kubernetes {' and '.join(K8S_VERSIONS)} schemas, "
        f"{counts['own schema']} against scripts/schemas/"
    )

    print("==> consistency and hardening")
    before = R.passed
    for origin, docs in list(rendered.items()) + list(standalone.items()):
        for doc in docs:
            if isinstance(doc, dict) and "metadata" in doc:
                check_hardening(doc, origin)
    check_kms(rendered, standalone)
    check_capz_patch_applies(cmd)
    check_csi(rendered)
    check_builder_rust_version()
    R.figures["consistency/hardening"] = f"{R.passed - before} checks passed"

    print("==> checkov (deploy/, Dockerfile)")
    run_checkov()
    print("==> hadolint (Dockerfile)")
    run_hadolint()

    print("==> figures")
    tool = "no tool"
    if cmd:
        version = subprocess.run([cmd[0], "version", "--client", "-o", "json"], capture_output=True, text=True)
        try:
            tool = f"kubectl {json.loads(version.stdout)['clientVersion']['gitVersion']} kustomize"
        except (ValueError, KeyError):
            tool = " ".join(cmd)
    print(f"  kustomizations built: {len(rendered) if cmd else 0} of {len(dirs)} ({tool})")
    for k, v in R.figures.items():
        print(f"  {k}: {v}")
    for n in R.notes:
        print(f"  {n}")
    print(f"validate-deploy: {R.passed} passed, {len(R.failures)} failed")
    return 1 if R.failures else 0


if __name__ == "__main__":
    sys.exit(main())
