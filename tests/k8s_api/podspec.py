"""A pod's spec as the Podman containers a kubelet would start (or why it cannot start them).

Each container of ``initContainers`` and ``containers`` becomes a
:class:`~broker.task.ContainerSpec`: ``command`` with Kubernetes' ``$(VAR)`` expansion, env,
working dir, ``runAsUser:runAsGroup``, ``limits.cpu``/``limits.memory``, and its volume
mounts: a PVC ``subPath`` is bound from ``<claim root>/<subPath>``, an ``emptyDir`` from a
per-pod host folder (mode 0777, like a kubelet's).  The ``gear`` container runs without a
network (``--network=none``); the others (stagers) share the host's network, so they reach
services on 127.0.0.1 such as a test S3 server.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.task import ContainerSpec, Mount, Resources
from tests.k8s_api.cluster import now_iso

GEAR = "gear"
_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_UNITS = {
    "": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: ``$$`` is ``$``; unknown references stay as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            if text[i + 1] == "$":
                out.append("$")
                i += 2
                continue
            end = text.find(")", i + 2)
            if text[i + 1] == "(" and end != -1:
                name = text[i + 2 : end]
                out.append(env.get(name, text[i : end + 1]))
                i = end + 1
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


def quantity(text: str) -> float:
    """A resource quantity (``500m``, ``64Mi``, ``2``) as a number of units."""
    if text.endswith("m") and text[:-1].replace(".", "").isdigit():
        return float(text[:-1]) / 1000
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"invalid quantity {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Blocked(Exception):
    """The pod cannot start: ``status`` is the pod status to publish."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(str(status))
        self.status = status


def unschedulable(message: str) -> Blocked:
    condition = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": message, "lastTransitionTime": now_iso(),
    }  # fmt: skip
    return Blocked({"phase": "Pending", "conditions": [condition]})


def waiting(reason: str, message: str) -> Blocked:
    state = {"waiting": {"reason": reason, "message": message}}
    scheduled = {"type": "PodScheduled", "status": "True", "lastTransitionTime": now_iso()}
    return Blocked(
        {
            "phase": "Pending",
            "conditions": [scheduled],
            "containerStatuses": [
                {
                    "name": GEAR,
                    "ready": False,
                    "restartCount": 0,
                    "state": state,
                    "image": "",
                    "imageID": "",
                },
            ],
        }
    )


@dataclass(frozen=True)
class PodPlan:
    """The containers of one pod, by name: init containers in order, then the app ones."""

    init: list[tuple[str, ContainerSpec]]
    apps: list[tuple[str, ContainerSpec]]
    empty_dirs: list[Path]


def plan_pod(
    pod: Mapping[str, Any],
    claims: Mapping[str, Path],
    pod_dir: Path,
    image_present: Callable[[str], bool],
) -> PodPlan:
    """The pod's containers as ContainerSpecs; Blocked when a kubelet could not start it."""
    spec = pod["spec"]
    name = pod["metadata"]["name"]
    volumes: dict[str, Path] = {}
    empty_dirs = []
    for volume in spec.get("volumes") or ():
        if "emptyDir" in volume:
            volumes[volume["name"]] = pod_dir / "volumes" / volume["name"]
            empty_dirs.append(volumes[volume["name"]])
            continue
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName", "")
        if claim not in claims:
            raise unschedulable(
                f'0/1 nodes are available: persistentvolumeclaim "{claim}" not found.'
            )
        volumes[volume["name"]] = claims[claim]

    def one(container: Mapping[str, Any]) -> tuple[str, ContainerSpec]:
        cname = container["name"]
        full = name if cname == GEAR else f"{name}-{cname}"
        return cname, container_spec(full, container, spec, volumes, image_present)

    init = [one(c) for c in spec.get("initContainers") or ()]
    return PodPlan(init, [one(c) for c in spec["containers"]], empty_dirs)


def container_spec(
    name: str,
    container: Mapping[str, Any],
    pod_spec: Mapping[str, Any],
    volumes: Mapping[str, Path],
    image_present: Callable[[str], bool],
) -> ContainerSpec:
    mounts = []
    for vm in container.get("volumeMounts") or ():
        root = volumes.get(vm["name"])
        if root is None:
            raise waiting("CreateContainerConfigError", f'volume "{vm["name"]}" not found')
        source = root / vm.get("subPath", "")
        mounts.append(Mount(str(source), vm["mountPath"], bool(vm.get("readOnly"))))
    security = {
        **(pod_spec.get("securityContext") or {}),
        **(container.get("securityContext") or {}),
    }
    uid, gid = security.get("runAsUser"), security.get("runAsGroup")
    if security.get("runAsNonRoot") and not uid:
        raise waiting(
            "CreateContainerConfigError", "container has runAsNonRoot and image will run as root"
        )
    env: dict[str, str] = {}
    for item in container.get("env") or ():
        env[item["name"]] = expand(item.get("value", ""), env)
    limits = (container.get("resources") or {}).get("limits") or {}
    memory = limits.get("memory")
    image = container["image"]
    if not image_present(image):
        raise waiting("ImagePullBackOff", f'Back-off pulling image "{image}": not found')
    return ContainerSpec(
        name=name,
        image=image,
        argv=[expand(arg, env) for arg in container["command"]],
        mounts=mounts,
        env=env,
        workdir=container.get("workingDir") or "/",
        user=f"{uid}:{gid if gid is not None else uid}" if uid else None,
        network=container["name"] != GEAR,
        resources=Resources(
            cpus=quantity(limits["cpu"]) if "cpu" in limits else 0.0,
            memory_mb=math.ceil(quantity(memory) / 2**20) if memory else None,
        ),
    )
