"""Kubernetes backend: one batch/v1 Job per gear run, one watch stream; the staged folder
reaches pods on a shared PVC (the default) or through an S3 bucket with presigned URLs.

Public entry points: :class:`KubernetesBackend`, :class:`KubernetesSiteConfig` (the
``[backends.kubernetes]`` keys are documented in :mod:`backends.kubernetes.config`),
:func:`job_manifest`, and :func:`check_site` for ``gearbroker doctor kubernetes``.  The
official ``kubernetes`` client (the ``gearbroker[kubernetes]`` extra) is imported only when
the backend first talks to a cluster; rendering a manifest does not need it.
"""

from __future__ import annotations

from backends.kubernetes.backend import KubernetesBackend
from backends.kubernetes.config import KubernetesSiteConfig
from backends.kubernetes.doctor import Check, check_site
from backends.kubernetes.manifest import job_manifest, job_name

__all__ = [
    "Check",
    "KubernetesBackend",
    "KubernetesSiteConfig",
    "check_site",
    "job_manifest",
    "job_name",
]
