"""``gearbroker doctor kubernetes``: check a site's cluster setup and say what is wrong.

:func:`check_site` returns :class:`Check` rows in order (credentials, API server, namespace,
permissions, volume); checks that depend on a failed one are reported as not run.  With
``staging = "s3"`` the last row is ``staging``: the broker can write to and presign for the
staging bucket (the pods' own access to ``s3_pod_endpoint_url`` is not checked here).  Nothing
is printed here; the CLI formats the rows.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import NamedTuple

from backends.kubernetes.api import KubeApi, KubeApiError
from backends.kubernetes.config import KubernetesSiteConfig
from backends.kubernetes.s3stage import S3Staging, S3StagingError
from catalog.errors import GearbrokerError

#: (verb, resource, API group, subresource) the backend needs in its namespace.
PERMISSIONS = (
    ("create", "jobs", "batch", ""),
    ("get", "jobs", "batch", ""),
    ("list", "jobs", "batch", ""),
    ("watch", "jobs", "batch", ""),
    ("delete", "jobs", "batch", ""),
    ("list", "pods", "", ""),
    ("get", "pods", "", "log"),
)


class Check(NamedTuple):
    check: str
    ok: bool
    message: str


def check_site(site: KubernetesSiteConfig, api: KubeApi | None = None) -> list[Check]:
    """Run every check against ``site``; never raises for a failed check."""
    where = "in-cluster credentials" if site.in_cluster else site.kubeconfig or "kubeconfig"
    last = "volume" if site.staging == "pvc" else "staging"
    try:
        api = api if api is not None else KubeApi(site)
    except GearbrokerError as exc:
        later = _not_run("API server", "namespace", "permissions", last)
        return [Check("credentials", False, str(exc)), *later]
    results = [Check("credentials", True, f"loaded from {where}")]
    try:
        version = api.server_version()
    except KubeApiError as exc:
        host = api.api_client.configuration.host
        results.append(Check("API server", False, f"no answer from {host}: {exc}"))
        return [*results, *_not_run("namespace", "permissions", last)]
    results.append(Check("API server", True, f"Kubernetes {version} answers"))
    try:
        api.list_jobs(site.selector)
    except KubeApiError as exc:
        hint = {404: "it does not exist", 403: "these credentials may not list Jobs there"}
        words = hint.get(exc.status or 0, str(exc))
        results.append(Check("namespace", False, f"namespace {site.namespace}: {words}"))
    else:
        results.append(Check("namespace", True, f"Jobs can be listed in {site.namespace}"))
    results.append(_permissions(api, site))
    results.append(_volume(api, site) if site.staging == "pvc" else _bucket(site))
    return results


def _not_run(*names: str) -> list[Check]:
    return [Check(name, False, "not run: an earlier check failed") for name in names]


def _permissions(api: KubeApi, site: KubernetesSiteConfig) -> Check:
    denied = []
    try:
        for verb, resource, group, sub in PERMISSIONS:
            if not api.allowed(verb, resource, group, sub):
                denied.append(f"{verb} {resource}/{sub}" if sub else f"{verb} {resource}")
    except KubeApiError as exc:
        return Check("permissions", False, f"cannot ask the API server (access review): {exc}")
    if denied:
        return Check(
            "permissions",
            False,
            f"denied in namespace {site.namespace}: {', '.join(denied)}; grant them with a "
            "Role and RoleBinding for the broker's credentials",
        )
    names = ", ".join(f"{v} {r}/{s}" if s else f"{v} {r}" for v, r, _, s in PERMISSIONS)
    return Check("permissions", True, f"allowed: {names}")


def _bucket(site: KubernetesSiteConfig) -> Check:
    try:
        return Check("staging", True, S3Staging(site).probe())
    except S3StagingError as exc:
        return Check("staging", False, str(exc))


def _volume(api: KubeApi, site: KubernetesSiteConfig) -> Check:
    assert site.pvc_root is not None and site.pvc_name is not None
    root = Path(site.pvc_root)
    if not root.is_dir():
        return Check("volume", False, f"pvc_root {root} is not a folder on this host")
    try:
        with tempfile.NamedTemporaryFile(dir=root, prefix=".gb-doctor-"):
            pass
    except OSError as exc:
        return Check("volume", False, f"pvc_root {root} is not writable here: {exc}")
    try:
        pvc = api.get_pvc(site.pvc_name)
    except KubeApiError as exc:
        return Check("volume", False, f"cannot read PersistentVolumeClaim {site.pvc_name}: {exc}")
    if pvc is None:
        return Check(
            "volume",
            False,
            f"PersistentVolumeClaim {site.pvc_name} does not exist in namespace {site.namespace}",
        )
    phase = (pvc.get("status") or {}).get("phase")
    modes = (pvc.get("spec") or {}).get("accessModes") or []
    if phase != "Bound":
        return Check(
            "volume", False, f"PersistentVolumeClaim {site.pvc_name} is {phase}, not Bound"
        )
    if "ReadWriteMany" not in modes:
        return Check(
            "volume",
            False,
            f"PersistentVolumeClaim {site.pvc_name} is not ReadWriteMany ({', '.join(modes)}): "
            "pods on several nodes and the broker must share it",
        )
    user = os.getuid()
    return Check(
        "volume",
        True,
        f"{site.pvc_name} is Bound (ReadWriteMany); {root} is writable here (uid {user})",
    )
