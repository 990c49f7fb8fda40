"""A test Kubernetes API server (batch/v1 Jobs, core/v1 pods) that runs pods with Podman.

No real API server can be installed on the development machines, so the Kubernetes backend
is verified against :class:`KubeTestServer` through the official client and a generated
kubeconfig.  ``python -m tests.k8s_api`` runs it as its own process (for benchmarks).
"""

from __future__ import annotations

from tests.k8s_api.cluster import ApiError, Cluster
from tests.k8s_api.server import KubeTestServer

__all__ = ["ApiError", "Cluster", "KubeTestServer"]
