"""One ``batch/v1`` Job per gear run, built as plain dicts (rendered with ``yaml.safe_dump``).

Contract of :func:`job_manifest`:

- name ``<task.key>-<8 hex of the job folder's digest>`` (two brokers' job 5 never clash);
  labels ``app.kubernetes.io/managed-by=gearbroker``, ``gearbroker.io/instance``,
  ``gearbroker.io/job-id``, ``gearbroker.io/attempt``, ``gearbroker.io/network``
  (``none`` or ``allowed``: Kubernetes cannot switch a pod's network off, so a site enforces
  ``none`` with a NetworkPolicy selecting that label), sanitised ``gear``/``user`` labels, and
  annotations with the exact values (job folder, gear, user, log limit);
- ``backoffLimit: 0`` (the broker owns retries), ``restartPolicy: Never``,
  ``activeDeadlineSeconds`` from the walltime (or the site default),
  ``ttlSecondsAfterFinished`` from the site;
- one container ``gear``: the image (``@digest`` appended when known), the task argv as
  ``command``, env, working dir, requests/limits (cpu, memory, GPUs), a non-root
  restricted security context; ``$`` in command and env values is doubled, so Kubernetes'
  ``$(VAR)`` expansion leaves them as written;
- ``staging = "pvc"``: every mount's host path must lie below ``pvc_root``: it becomes a
  ``subPath`` mount of the shared PVC volume;
- ``staging = "s3"`` (``urls`` given): an ``emptyDir`` volume, the ``stage-in`` init
  container, the gear command wrapped to record its exit code, and the ``stage-out``
  container (see :mod:`backends.kubernetes.s3pod`); annotation ``gearbroker.io/output-path``
  names the output folder relative to the job folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from backends.errors import BackendError
from backends.kubernetes.config import KubernetesSiteConfig
from backends.kubernetes.s3pod import (
    PodUrls,
    gear_command,
    gear_mounts,
    output_path,
    stager_containers,
)
from broker.runtimes.common import parse_user
from broker.task import Resources, TaskSpec

CONTAINER = "gear"
VOLUME = "gear-data"
MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "gearbroker.io/instance"
LABEL_JOB_ID = "gearbroker.io/job-id"
LABEL_ATTEMPT = "gearbroker.io/attempt"
LABEL_NETWORK = "gearbroker.io/network"
ANNOTATION_JOB_DIR = "gearbroker.io/job-dir"
ANNOTATION_LOG_LIMIT = "gearbroker.io/log-limit-bytes"
ANNOTATION_OUTPUT_PATH = "gearbroker.io/output-path"
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def staged_digest(job_dir: str) -> str | None:
    """``custom.gearbroker.image-digest`` of the staged ``v0/manifest.json``, if any."""
    try:
        doc = json.loads((Path(job_dir) / "v0" / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    custom = doc.get("custom") if isinstance(doc, dict) else None
    block = custom.get("gearbroker") if isinstance(custom, dict) else None
    value = block.get("image-digest") if isinstance(block, dict) else None
    return value if isinstance(value, str) else None


def job_name(key: str, job_dir: str) -> str:
    """The Job's name: the attempt's key plus a digest of its absolute job folder."""
    digest = hashlib.sha256(os.path.abspath(job_dir).encode()).hexdigest()[:8]
    name = f"{key}-{digest}".lower()
    return re.sub(r"[^a-z0-9-]", "-", name)[:63].strip("-")


def label_value(text: str) -> str:
    """``text`` squeezed into a label value: [A-Za-z0-9._-], 63 chars, alphanumeric ends."""
    value = re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", value)


def pinned_image(image: str, digest: str | None) -> str:
    """``image@digest`` when a valid digest is known and the reference has none yet."""
    if "@" in image or digest is None or not _DIGEST.fullmatch(digest):
        return image
    return f"{image}@{digest}"


def escape(text: str) -> str:
    """Protect ``text`` from Kubernetes' ``$(VAR)`` expansion (``$$`` reads as ``$``)."""
    return text.replace("$", "$$")


def cpu_quantity(cpus: float) -> str:
    millis = max(round(cpus * 1000), 1)
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def resources(res: Resources, site: KubernetesSiteConfig) -> dict[str, dict[str, str]]:
    """Requests and limits; memory limit = request, so exceeding it is an OOM kill."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if res.cpus > 0:
        requests["cpu"] = cpu_quantity(res.cpus)
        if site.cpu_limits:
            limits["cpu"] = requests["cpu"]
    memory_mb = res.memory_mb or site.default_memory_mb
    if memory_mb:
        requests["memory"] = limits["memory"] = f"{memory_mb}Mi"
    if res.gpus > 0:
        requests[site.gpu_resource] = limits[site.gpu_resource] = str(res.gpus)
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def volume_mounts(task: TaskSpec, site: KubernetesSiteConfig) -> list[dict[str, Any]]:
    """One ``subPath`` mount of the shared PVC per task mount; BackendError outside pvc_root."""
    if site.pvc_root is None:
        raise BackendError(f"{task.key}: backends.kubernetes.pvc_root is not set")
    root = PurePosixPath(site.pvc_root)
    mounts = []
    for mount in task.container.mounts:
        source = PurePosixPath(os.path.abspath(mount.source))
        if not source.is_relative_to(root) or source == root:
            raise BackendError(
                f"{task.key}: {mount.source} is not below backends.kubernetes.pvc_root "
                f"({site.pvc_root}); put the broker's work_dir on the shared volume"
            )
        mounts.append(
            {
                "name": VOLUME,
                "mountPath": mount.target,
                "subPath": str(source.relative_to(root)),
                "readOnly": mount.read_only,
            }
        )
    return mounts


def identity(task: TaskSpec, site: KubernetesSiteConfig) -> tuple[int, int]:
    """The pod's (uid, gid): the site's when set, else the job's; never root."""
    uid, gid = parse_user(task.container.user) if task.container.user else (None, None)
    uid = site.run_as_user or uid
    gid = site.run_as_group if site.run_as_group is not None else gid
    if not uid:
        raise BackendError(
            f"{task.key}: the job would run as root (user {task.container.user!r}); pods run "
            "as non-root: set backends.kubernetes.run_as_user and run_as_group"
        )
    return uid, uid if gid is None else gid


def labels(task: TaskSpec, site: KubernetesSiteConfig) -> dict[str, str]:
    out = {
        MANAGED_BY: "gearbroker",
        LABEL_INSTANCE: site.instance,
        LABEL_JOB_ID: str(task.job_id),
        LABEL_ATTEMPT: str(task.attempt),
        LABEL_NETWORK: "allowed" if task.container.network else "none",
    }
    for key in ("gear", "user"):
        if key in task.labels:
            out[f"gearbroker.io/{key}"] = label_value(task.labels[key])
    return out


def job_manifest(
    task: TaskSpec,
    site: KubernetesSiteConfig,
    image_digest: str | None = None,
    urls: PodUrls | None = None,
) -> dict[str, Any]:
    """The Job object for ``task`` (see the module docstring for its contract); ``urls`` are
    required with ``staging = "s3"``."""
    spec = task.container
    for name in spec.env:
        if not _ENV_NAME.fullmatch(name):
            raise BackendError(f"{task.key}: invalid environment variable name {name!r}")
    if site.staging == "s3" and urls is None:
        raise BackendError(f"{task.key}: staging = s3 needs the presigned URLs")
    uid, gid = identity(task, site)
    security = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
    }
    argv = spec.argv if urls is None else gear_command(spec.argv)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": pinned_image(spec.image, image_digest),
        "imagePullPolicy": site.image_pull_policy,
        "command": [escape(arg) for arg in argv],
        "workingDir": spec.workdir,
        "env": [{"name": k, "value": escape(v)} for k, v in spec.env.items()],
        "volumeMounts": volume_mounts(task, site) if urls is None else gear_mounts(task, VOLUME),
        "resources": resources(spec.resources, site),
        "securityContext": security,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
    }
    annotations = {
        ANNOTATION_JOB_DIR: os.path.abspath(task.job_dir),
        ANNOTATION_LOG_LIMIT: str(task.log_limit_bytes),
        "gearbroker.io/key": task.key,
        **{f"gearbroker.io/{k}": v for k, v in task.labels.items() if k in ("gear", "user")},
    }
    if urls is None:
        pod["volumes"] = [{"name": VOLUME, "persistentVolumeClaim": {"claimName": site.pvc_name}}]
    else:
        stage_in, stage_out = stager_containers(task, site, urls, VOLUME, dict(security))
        for extra in (stage_in, stage_out):
            extra["command"] = [escape(arg) for arg in extra["command"]]
        pod["initContainers"] = [stage_in]
        pod["containers"].append(stage_out)
        pod["volumes"] = [{"name": VOLUME, "emptyDir": {}}]
        annotations[ANNOTATION_OUTPUT_PATH] = output_path(task)
    _site_pod_options(pod, site)
    job_labels = labels(task, site)
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": site.ttl_seconds_after_finished,
        "template": {"metadata": {"labels": job_labels}, "spec": pod},
    }
    walltime = spec.resources.walltime_s or site.default_walltime_s
    if walltime:
        job_spec["activeDeadlineSeconds"] = walltime
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(task.key, task.job_dir),
            "namespace": site.namespace,
            "labels": job_labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }


def _site_pod_options(pod: dict[str, Any], site: KubernetesSiteConfig) -> None:
    if site.node_selector:
        pod["nodeSelector"] = dict(site.node_selector)
    if site.tolerations:
        pod["tolerations"] = [t.to_dict() for t in site.tolerations]
    if site.priority_class:
        pod["priorityClassName"] = site.priority_class
    if site.service_account:
        pod["serviceAccountName"] = site.service_account
    if site.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in site.image_pull_secrets]
