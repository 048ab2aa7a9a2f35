"""The DaemonSet's pod, as one `podman run` (issue 14): the container test runs the image exactly as
deploy/kubernetes/daemonset.yaml says, and a change to the manifest changes the test.

Translated: host network and PID, capabilities, read-only root, no privilege escalation, the user,
env (the downward API's node name becomes NODE), volumes (hostPath: the same path; emptyDir: a tmpfs;
configMap: a ConfigMap-style directory under CONFIGMAPS/NAME that the test fills, subPath included),
mount propagation, and args. Anything else in the pod spec is refused, so the test cannot silently
run something the cluster would not.

    python tests/hostimage/podman_run.py CONFIGMAPS NODE >podman-run.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
PROPAGATION = {None: "rprivate", "None": "rprivate", "HostToContainer": "rslave", "Bidirectional": "rshared"}
# Pod fields that change nothing a podman run on one node can show (scheduling, probes, ports of the
# host network), and the container fields the translation reads.
POD_FIELDS = {"hostNetwork", "hostPID", "dnsPolicy", "priorityClassName", "terminationGracePeriodSeconds",
              "tolerations", "containers", "volumes"}
CONTAINER_FIELDS = {"name", "image", "imagePullPolicy", "args", "env", "ports", "readinessProbe", "livenessProbe",
                    "resources", "securityContext", "volumeMounts"}
SECURITY_FIELDS = {"privileged", "allowPrivilegeEscalation", "readOnlyRootFilesystem", "runAsUser", "capabilities",
                   "appArmorProfile"}
MOUNT_FIELDS = {"name", "mountPath", "subPath", "readOnly", "mountPropagation"}
VOLUME_FIELDS = {"name", "hostPath", "configMap", "emptyDir"}
HOST_PATH_TYPES = {None, "Directory", "DirectoryOrCreate"}  # the test's host has these paths


def image(kustomization: dict[str, Any], name: str) -> str:
    for entry in kustomization.get("images", []):
        if entry["name"] == name.split(":")[0]:
            return f"{entry['newName']}:{entry['newTag']}"
    return name


def _known(fields: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"{where}: fields this translation does not know: {sorted(unknown)}")


def podman_run(daemonset: dict[str, Any], kustomization: dict[str, Any], configmaps: str, node: str
               ) -> dict[str, Any]:
    pod = daemonset["spec"]["template"]["spec"]
    unknown = set(pod) - POD_FIELDS
    if unknown:
        raise ValueError(f"pod fields this translation does not know: {sorted(unknown)}")
    (container,) = pod["containers"]
    unknown = set(container) - CONTAINER_FIELDS
    if unknown:
        raise ValueError(f"container fields this translation does not know: {sorted(unknown)}")
    args = ["--name", container["name"]]
    if pod.get("hostNetwork"):
        args += ["--network", "host"]
    if pod.get("hostPID"):
        args += ["--pid", "host"]
    sc = container.get("securityContext", {})
    _known(sc, SECURITY_FIELDS, "securityContext")
    if sc.get("privileged"):
        args.append("--privileged")
    caps = sc.get("capabilities", {})
    for cap in caps.get("drop", []):
        args += ["--cap-drop", cap.lower()]
    for cap in caps.get("add", []):
        args += ["--cap-add", cap.lower()]
    if sc.get("readOnlyRootFilesystem"):
        args += ["--read-only", "--read-only-tmpfs=false"]  # podman's default adds writable /run, /tmp
    if sc.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    if "runAsUser" in sc:
        args += ["--user", str(sc["runAsUser"])]
    apparmor = sc.get("appArmorProfile", {}).get("type")
    if apparmor == "Unconfined":
        args += ["--security-opt", "apparmor=unconfined"]
    elif apparmor not in (None, "RuntimeDefault"):
        raise ValueError(f"appArmorProfile {apparmor}: not translated")
    memory = container.get("resources", {}).get("limits", {}).get("memory")
    if memory is not None:
        if not str(memory).endswith("Mi"):
            raise ValueError(f"memory limit {memory}: only Mi is translated")
        args += ["--memory", f"{str(memory)[:-2]}m"]
    for env in container.get("env", []):
        if "value" in env:
            args += ["--env", f"{env['name']}={env['value']}"]
        elif env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            args += ["--env", f"{env['name']}={node}"]
        else:
            raise ValueError(f"env {env['name']}: only values and spec.nodeName are translated")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        _known(mount, MOUNT_FIELDS, f"volumeMount {mount['name']}")
        volume = volumes[mount["name"]]
        _known(volume, VOLUME_FIELDS, f"volume {volume['name']}")
        if "emptyDir" in volume:
            args += ["--tmpfs", mount["mountPath"]]
            continue
        if "hostPath" in volume:
            if volume["hostPath"].get("type") not in HOST_PATH_TYPES:
                raise ValueError(f"volume {volume['name']}: hostPath type {volume['hostPath']['type']}")
            source = volume["hostPath"]["path"]
        elif "configMap" in volume:
            _known(volume["configMap"], {"name"}, f"volume {volume['name']}: configMap")  # no items:
            source = f"{configmaps}/{volume['configMap']['name']}"
        else:
            raise ValueError(f"volume {volume['name']}: only hostPath, configMap and emptyDir are translated")
        if "subPath" in mount:
            source = f"{source}/{mount['subPath']}"
        options = ["ro" if mount.get("readOnly") else "rw", PROPAGATION[mount.get("mountPropagation")]]
        args += ["--volume", f"{source}:{mount['mountPath']}:{','.join(options)}"]
    return {"run": [*args, image(kustomization, container["image"]), *container.get("args", [])],
            "readiness": container["readinessProbe"]["exec"]["command"],
            "liveness": container["livenessProbe"]["exec"]["command"],
            "grace": pod.get("terminationGracePeriodSeconds", 30),
            "configmaps": sorted(v["configMap"]["name"] for v in volumes.values() if "configMap" in v)}


def main() -> None:
    configmaps, node = sys.argv[1:3]
    daemonset = yaml.safe_load((KUBERNETES / "daemonset.yaml").read_text())
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    json.dump(podman_run(daemonset, kustomization, configmaps, node), sys.stdout, indent=1)


if __name__ == "__main__":
    main()
