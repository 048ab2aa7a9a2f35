"""deploy/kubernetes (issue 14), offline: `kubectl kustomize` output validated against the Kubernetes
schemas with kubernetes-validate, and the properties the README promises (rolling update on a config
change, readiness = converged, node name as identity, the systemd unit's capabilities and no more)."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.32.0"  # the kubectl installed here (kubectl 1.32, kustomize 5.5)


def kustomize(path: Path = KUSTOMIZE) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed for these tests (kubectl kustomize runs offline)"
    r = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def daemonset(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    return ds


def test_every_manifest_and_the_kustomize_output_validate_against_the_kubernetes_schemas() -> None:
    docs = kustomize()
    assert {d["kind"] for d in docs} == {"Namespace", "ConfigMap", "DaemonSet"}
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any error
    for name in ("namespace.yaml", "daemonset.yaml"):
        for doc in yaml.safe_load_all((KUSTOMIZE / name).read_text()):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_caught_by_the_validator() -> None:
    ds = daemonset(kustomize())
    ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailabel"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, K8S_VERSION, strict=True)


def test_a_config_change_is_a_rolling_update_one_node_at_a_time(tmp_path: Path) -> None:
    copy = tmp_path / "k"
    shutil.copytree(KUSTOMIZE, copy)
    before = daemonset(kustomize(copy))
    (copy / "config" / "config.d" / "50-web-1.yaml").write_text(
        (copy / "config" / "config.d" / "50-web-1.yaml").read_text().replace("192.0.2.11/24", "192.0.2.31/24"))
    after = daemonset(kustomize(copy))
    names = [[v["configMap"]["name"] for v in ds["spec"]["template"]["spec"]["volumes"] if "configMap" in v]
             for ds in (before, after)]
    assert names[0][0] == names[1][0] and names[0][1] != names[1][1], names  # the drop-ins' name changed
    assert before["spec"]["template"] != after["spec"]["template"]  # so the pods are replaced, in a rollout
    strategy = after["spec"]["updateStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert after["spec"]["minReadySeconds"] >= 30


def test_readiness_is_converged_liveness_is_progress_identity_is_the_node_name() -> None:
    (c,) = daemonset(kustomize())["spec"]["template"]["spec"]["containers"]
    assert c["readinessProbe"]["exec"]["command"] == ["ipvland", "status", "--state-dir", "/run/ipvland"]
    assert "status.json" in " ".join(c["livenessProbe"]["exec"]["command"])
    env = {e["name"]: e for e in c["env"]}
    assert env["IPVLAND_HOST"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert c["args"][:3] == ["run", "-c", "/etc/ipvland/config.yaml"] and "--metrics-listen" in c["args"]


def unit_capabilities() -> set[str]:
    caps: set[str] = set()
    for name in ("ipvland.service", "ipvland-probes.conf"):
        for line in (ROOT / "systemd" / name).read_text().splitlines():
            if line.startswith("CapabilityBoundingSet="):
                caps |= {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}
    return caps


def test_the_pod_has_the_units_capabilities_and_no_more_and_shares_run_netns() -> None:
    spec = daemonset(kustomize())["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert set(sc["capabilities"]["add"]) <= unit_capabilities(), unit_capabilities()
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert spec["hostNetwork"] is True
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts["netns"]["mountPath"] == "/run/netns" and volumes["netns"]["hostPath"]["path"] == "/run/netns"
    # Bidirectional propagation is refused by the API server for unprivileged containers: the node's
    # mount namespace makes the namespaces' mounts (as under systemd), and they come back HostToContainer.
    assert mounts["netns"]["mountPropagation"] == "HostToContainer"
    assert {e["name"]: e.get("value") for e in c["env"]}["IPVLAND_HOST_MOUNT_NS"] == "/proc/1/ns/mnt"
    assert spec["hostPID"] is True


def test_the_config_in_the_kustomization_is_valid_for_every_node_it_names(tmp_path: Path) -> None:
    import sys

    config = KUSTOMIZE / "config" / "config.yaml"
    listed = set(yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())["configMapGenerator"][1]["files"])
    on_disk = {f"config/config.d/{p.name}" for p in (KUSTOMIZE / "config" / "config.d").glob("*.yaml")}
    assert listed == on_disk, "every drop-in must be listed in configMapGenerator (kustomize takes no globs)"
    hosts = sorted({h for p in (KUSTOMIZE / "config" / "config.d").glob("*.yaml")
                    for h in yaml.safe_load(p.read_text()).get("hosts", []) if re.fullmatch(r"[a-z0-9-]+", h)})
    inventory = tmp_path / "nodes"
    inventory.write_text("\n".join([*hosts, "some-other-node"]) + "\n")
    r = subprocess.run([sys.executable, "-m", "ipvland", "validate", "-c", str(config), "--hosts", str(inventory)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _podman_run_module() -> Any:
    import importlib.util
    spec = importlib.util.spec_from_file_location("podman_run", ROOT / "tests" / "hostimage" / "podman_run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_container_test_runs_the_pod_the_daemonset_describes() -> None:
    """tests/hostimage's podman run is derived from daemonset.yaml: host network and PID, the
    capabilities and nothing else, the node name, /run/netns as HostToContainer (rslave)."""
    podman_run = _podman_run_module()
    docs = kustomize()
    kustomization = yaml.safe_load((KUSTOMIZE / "kustomization.yaml").read_text())
    pod = podman_run.podman_run(daemonset(docs), kustomization, "/cm", "node-7")
    run = pod["run"]
    pairs = set(itertools.pairwise(run))
    assert {("--network", "host"), ("--pid", "host"), ("--cap-drop", "all"), ("--user", "0")} <= pairs
    caps = {b for a, b in pairs if a == "--cap-add"}
    container = daemonset(docs)["spec"]["template"]["spec"]["containers"][0]
    assert caps == {c.lower() for c in container["securityContext"]["capabilities"]["add"]}
    assert ("--env", "IPVLAND_HOST=node-7") in pairs
    assert ("--volume", "/run/netns:/run/netns:rw,rslave") in pairs
    assert "--read-only" in run and "localhost/ipvland:0.1.0" in run
    assert run[run.index("localhost/ipvland:0.1.0") + 1:] == container["args"]


def test_a_pod_field_the_container_test_cannot_run_is_refused() -> None:
    podman_run = _podman_run_module()
    ds = daemonset(kustomize())
    ds["spec"]["template"]["spec"]["initContainers"] = [{"name": "x", "image": "busybox"}]
    with pytest.raises(ValueError, match="initContainers"):
        podman_run.podman_run(ds, {}, "/cm", "node-1")
