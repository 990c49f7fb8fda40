"""The slice of the Kubernetes REST API the backend uses, through the official client.

The ``kubernetes`` package (the ``gearbroker[kubernetes]`` extra) is imported here only,
when a :class:`KubeApi` is first built.  Every call goes through :meth:`KubeApi._call`, which
asks for the raw response (JSON parsed here, never the client's slow model objects) and
retries HTTP 429 and 5xx answers and broken connections with exponential backoff, honouring
``Retry-After``.  Errors that remain are :class:`KubeApiError` with the HTTP status.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

from backends.errors import BackendError
from backends.kubernetes.config import KubernetesSiteConfig

RETRYABLE = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 10.0
#: A followed log silent this long is dropped (and followed again by the backend).
FOLLOW_READ_TIMEOUT_S = 3600.0


class KubeApiError(BackendError):
    """A Kubernetes API request failed; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


def load_client() -> Any:
    """The ``kubernetes`` package; BackendError naming the extra when it is missing."""
    try:
        import kubernetes
    except ImportError as exc:
        raise BackendError(
            "the Kubernetes backend needs the official client: pip install 'gearbroker[kubernetes]'"
        ) from exc
    return kubernetes


def make_api_client(site: KubernetesSiteConfig) -> Any:
    """A ``kubernetes.client.ApiClient`` for the site (kubeconfig/context, or in-cluster)."""
    k8s = load_client()
    configuration = k8s.client.Configuration()
    try:
        if site.in_cluster:
            k8s.config.load_incluster_config(client_configuration=configuration)
        else:
            k8s.config.load_kube_config(
                config_file=site.kubeconfig,
                context=site.context,
                client_configuration=configuration,
                persist_config=False,
            )
    except (k8s.config.ConfigException, OSError, TypeError, ValueError) as exc:
        where = "in-cluster credentials" if site.in_cluster else (site.kubeconfig or "kubeconfig")
        raise BackendError(f"cannot load Kubernetes credentials from {where}: {exc}") from exc
    # the watch, the live log streams and the dispatcher's calls each hold a connection
    configuration.connection_pool_maxsize = site.log_streams + 8
    return k8s.client.ApiClient(configuration)


class KubeApi:
    """Jobs, pods, pod logs, PVCs and access reviews in the site's namespace."""

    def __init__(
        self,
        site: KubernetesSiteConfig,
        api_client: Any = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.site = site
        self.namespace = site.namespace
        k8s = load_client()
        self._k8s = k8s
        self.api_client = api_client if api_client is not None else make_api_client(site)
        self.batch = k8s.client.BatchV1Api(self.api_client)
        self.core = k8s.client.CoreV1Api(self.api_client)
        self._sleep = sleep
        self._closed = threading.Event()

    # -- the one helper ----------------------------------------------------------------
    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` returning the raw response, retried when that can help."""
        exc_type = self._k8s.client.exceptions.ApiException
        kwargs.setdefault("_request_timeout", self.site.request_timeout_s)
        attempt = 0
        while True:
            try:
                return fn(*args, _preload_content=False, **kwargs)
            except exc_type as exc:
                status = int(exc.status) if exc.status else None
                error = KubeApiError(f"{what}: HTTP {status} {_reason(exc)}", status, exc.body)
                retry_after = _retry_after(exc.headers)
            except (OSError, urllib3.exceptions.HTTPError) as exc:
                error = KubeApiError(f"{what}: {type(exc).__name__}: {exc}")
                status, retry_after = None, None
            if (status is not None and status not in RETRYABLE) or attempt >= self.site.retries:
                raise error
            if self._closed.is_set():
                raise error
            delay = min(self.site.retry_backoff_s * 2**attempt, MAX_BACKOFF_S)
            self._sleep(retry_after if retry_after is not None else delay)
            attempt += 1

    def _json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        response = self._call(what, fn, *args, **kwargs)
        try:
            return json.loads(response.data)
        finally:
            response.release_conn()

    # -- jobs --------------------------------------------------------------------------
    def create_job(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body = self._k8s.client.V1Job.model_validate(manifest)
        name = manifest["metadata"]["name"]
        result: dict[str, Any] = self._json(
            f"create Job {name}", self.batch.create_namespaced_job, self.namespace, body
        )
        return result

    def get_job(self, name: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self._json(
                f"get Job {name}", self.batch.read_namespaced_job, name, self.namespace
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return job

    def list_jobs(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Jobs matching ``selector`` and the list's resourceVersion."""
        data = self._json(
            "list Jobs", self.batch.list_namespaced_job, self.namespace, label_selector=selector
        )
        return list(data.get("items") or []), str(data["metadata"].get("resourceVersion", ""))

    def watch_jobs(self, selector: str, resource_version: str, timeout_s: int) -> Any:
        """An open watch response (newline-separated JSON events); the caller closes it."""
        return self._call(
            "watch Jobs",
            self.batch.list_namespaced_job,
            self.namespace,
            label_selector=selector,
            watch=True,
            resource_version=resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=timeout_s,
            _request_timeout=(self.site.request_timeout_s, timeout_s + 30),
        )

    def delete_job(self, name: str) -> bool:
        """Delete the Job and (in the background) its pods; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._json(
                f"delete Job {name}",
                self.batch.delete_namespaced_job,
                name,
                self.namespace,
                body=body,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- pods --------------------------------------------------------------------------
    def list_pods(self, selector: str) -> list[dict[str, Any]]:
        data = self._json(
            "list pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        return list(data.get("items") or [])

    def pod_log(self, pod: str, limit_bytes: int | None, container: str = "gear") -> bytes:
        response = self._call(
            f"log of pod {pod}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container=container,
            limit_bytes=limit_bytes,
        )
        try:
            return bytes(response.data)
        finally:
            response.release_conn()

    def follow_pod_log(self, pod: str, limit_bytes: int | None) -> Any:
        """An open, following log response; the caller reads it with ``stream`` and closes it."""
        return self._call(
            f"follow log of pod {pod}",
            self.core.read_namespaced_pod_log,
            pod,
            self.namespace,
            container="gear",
            follow=True,
            limit_bytes=limit_bytes,
            _request_timeout=(self.site.request_timeout_s, FOLLOW_READ_TIMEOUT_S),
        )

    # -- checks ------------------------------------------------------------------------
    def server_version(self) -> str:
        data = self._json("server version", self._k8s.client.VersionApi(self.api_client).get_code)
        return str(data.get("gitVersion") or "unknown")

    def get_pvc(self, name: str) -> dict[str, Any] | None:
        try:
            pvc: dict[str, Any] = self._json(
                f"get PVC {name}",
                self.core.read_namespaced_persistent_volume_claim,
                name,
                self.namespace,
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise
        return pvc

    def allowed(self, verb: str, resource: str, group: str = "", subresource: str = "") -> bool:
        """A SelfSubjectAccessReview: may these credentials ``verb`` ``resource`` here?"""
        attributes = {"namespace": self.namespace, "verb": verb, "resource": resource}
        if group:
            attributes["group"] = group
        if subresource:
            attributes["subresource"] = subresource
        review = self._k8s.client.V1SelfSubjectAccessReview.model_validate(
            {"spec": {"resourceAttributes": attributes}}
        )
        api = self._k8s.client.AuthorizationV1Api(self.api_client)
        data = self._json(
            f"access review {verb} {resource}", api.create_self_subject_access_review, review
        )
        return bool((data.get("status") or {}).get("allowed"))

    def close(self) -> None:
        self._closed.set()
        self.api_client.close()


def iter_lines(response: Any) -> Iterator[bytes]:
    """The non-empty lines of a streamed (chunked) response, as they arrive."""
    pending = b""
    for chunk in response.stream(None, decode_content=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line for line in lines if line.strip())
    if pending.strip():
        yield pending


def _reason(exc: Any) -> str:
    try:
        body = json.loads(exc.body or "")
    except ValueError:
        return str(exc.reason or "")
    return str(body.get("message") or exc.reason or "") if isinstance(body, dict) else ""


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return min(float(value), 30.0) if value is not None else None
    except ValueError:
        return None
