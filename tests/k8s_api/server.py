"""A threaded HTTP server speaking the slice of the Kubernetes REST API the backend uses.

Routes: ``/version``; batch/v1 Jobs (create with 409 on duplicates, get, list and watch with
label selectors and resourceVersion, delete with ``propagationPolicy``, default Orphan as
for a real batch/v1 Job); core/v1 pods (list, get, ``/log`` with ``follow`` and
``limitBytes``), PVCs (get) and SelfSubjectAccessReviews.  Watches and followed logs use
chunked transfer encoding like the real server.

Fault knobs: :meth:`KubeTestServer.fail_next` (the next K requests answer 500/429),
:meth:`drop_watch_after` (cut the open watch streams after N more events, without ending
them), :meth:`cut_watches` (cut them now), :meth:`Cluster.compact` (410 Gone on resume), ``cluster.unschedulable`` (a function of the
Job giving the scheduler's message), :meth:`delete_job` (kubectl delete by someone else).
``counts`` holds requests per ``"<verb> <resource>"`` (``GET /_test/counts`` returns them
uncounted, for a benchmark in another process).
"""

from __future__ import annotations

import bisect
import json
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from broker.runtimes.podman import PodmanRuntime
from tests.k8s_api.cluster import JOBS, PODS, ApiError, Cluster
from tests.k8s_api.podman import PodRunner
from tests.k8s_api.selectors import SelectorError, parse_selector

VERSION = {"major": "1", "minor": "30", "gitVersion": "v1.30.0-gearbroker-test"}
ROUTES = (
    ("jobs", r"^/apis/batch/v1/namespaces/([^/]+)/jobs/?$"),
    ("job", r"^/apis/batch/v1/namespaces/([^/]+)/jobs/([^/]+)$"),
    ("pods", r"^/api/v1/namespaces/([^/]+)/pods/?$"),
    ("pod", r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)$"),
    ("log", r"^/api/v1/namespaces/([^/]+)/pods/([^/]+)/log$"),
    ("pvc", r"^/api/v1/namespaces/([^/]+)/persistentvolumeclaims/([^/]+)$"),
    ("review", r"^/apis/authorization\.k8s\.io/v1/selfsubjectaccessreviews$"),
    ("version", r"^/version/?$"),
    ("counts", r"^/_test/counts$"),
)
#: Route -> the resource named in ``counts``.
RESOURCES = {
    "jobs": "jobs", "job": "jobs", "pods": "pods", "pod": "pods", "log": "pods/log",
    "pvc": "persistentvolumeclaims", "review": "selfsubjectaccessreviews", "version": "version",
}  # fmt: skip


class KubeTestServer:
    """The API server plus its Podman "kubelet"; ``volumes`` maps claim names to host roots."""

    def __init__(
        self,
        runtime: PodmanRuntime,
        volumes: Mapping[str, Path],
        work_dir: Path,
        *,
        slots: int = 4,
    ) -> None:
        self.cluster = Cluster()
        self.runner = PodRunner(self.cluster, runtime, volumes, work_dir, slots)
        self.volumes = dict(volumes)
        self.counts: Counter[str] = Counter()
        self.denied: set[tuple[str, str, str]] = set()  # (verb, resource, subresource)
        self._routes = [(name, re.compile(pattern)) for name, pattern in ROUTES]
        self._failures: list[tuple[int, float | None]] = []
        self._drop_after: int | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def start(self) -> KubeTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        with self.cluster.cond:
            self.cluster.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.runner.close()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Write a kubeconfig (no auth) pointing the official client at this server."""
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "gb-test", "cluster": {"server": self.url}}],
            "users": [{"name": "gb-test", "user": {"token": "test"}}],
            "contexts": [
                {
                    "name": "gb-test",
                    "context": {"cluster": "gb-test", "user": "gb-test", "namespace": namespace},
                }
            ],
            "current-context": "gb-test",
        }
        path.write_text(yaml.safe_dump(doc))
        return path

    # -- knobs ---------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 500, retry_after: float | None = None) -> None:
        with self._lock:
            self._failures += [(status, retry_after)] * count

    def clear_faults(self) -> None:
        """Undo every knob: no failures, drops, unschedulable pods or denied permissions."""
        with self._lock:
            self._failures.clear()
            self._drop_after = None
        self.cluster.unschedulable = lambda job: None
        self.denied.clear()

    def drop_watch_after(self, events: int) -> None:
        with self._lock:
            self._drop_after = events

    def cut_watches(self) -> None:
        """Break every open watch stream now (no final chunk), as a dropped connection does."""
        with self._lock:
            self.cuts += 1
        with self.cluster.cond:
            self.cluster.cond.notify_all()

    def delete_job(self, namespace: str, name: str) -> None:
        """``kubectl delete job`` by someone else (Background propagation, not counted)."""
        self.cluster.delete_job(namespace, name, "Background")

    def count(self, verb: str | None = None, resource: str | None = None) -> int:
        return sum(
            n
            for key, n in self.counts.items()
            if (verb is None or key.split()[0] == verb)
            and (resource is None or key.split()[1] == resource)
        )

    def _take_failure(self) -> tuple[int, float | None] | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_drop(self) -> int | None:
        with self._lock:
            value, self._drop_after = self._drop_after, None
            return value


def _handler(server: KubeTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        owner = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: KubeTestServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # -- plumbing ------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        routes = self.owner._routes
        found = next(((n, m) for n, p in routes if (m := p.match(url.path))), None)
        if found is None:
            self._send(404, ApiError(404, "NotFound", f"no route {url.path}").status())
            return
        name, match = found
        if name == "counts":
            self._send(200, dict(self.owner.counts))
            return
        verb = self._verb(method, name, query)
        self.owner.counts[f"{verb} {RESOURCES[name]}"] += 1
        failure = self.owner._take_failure()
        if failure is not None:
            code, retry_after = failure
            reason = "TooManyRequests" if code == 429 else "InternalError"
            headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
            self._send(code, ApiError(code, reason, "injected fault").status(), headers)
            return
        try:
            body = json.loads(raw) if raw else {}
            getattr(self, f"_{name}")(method, query, body, *match.groups())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away mid-stream
        except ApiError as exc:
            self._send(exc.code, exc.status())
        except SelectorError as exc:
            self._send(400, ApiError(400, "BadRequest", str(exc)).status())

    @staticmethod
    def _verb(method: str, name: str, query: Mapping[str, str]) -> str:
        if method == "POST":
            return "create"
        if method == "DELETE":
            return "delete"
        if query.get("watch") in ("true", "1"):
            return "watch"
        return "list" if name in ("jobs", "pods") else "get"

    def _send(self, code: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _start_chunks(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- routes --------------------------------------------------------------------
    def _version(self, method: str, query: Mapping[str, str], body: Any) -> None:
        self._send(200, VERSION)

    def _jobs(self, method: str, query: Mapping[str, str], body: Any, ns: str) -> None:
        if method == "POST":
            self._send(201, self.owner.cluster.create_job(ns, body))
        elif query.get("watch") in ("true", "1"):
            self._watch(JOBS, ns, query)
        else:
            self._list(JOBS, ns, query, "JobList", "batch/v1")

    def _job(self, method: str, query: Mapping[str, str], body: Any, ns: str, name: str) -> None:
        cluster = self.owner.cluster
        if method == "DELETE":
            policy = body.get("propagationPolicy") or query.get("propagationPolicy") or "Orphan"
            self._send(200, cluster.delete_job(ns, name, policy))
        else:
            self._send(200, cluster.get(JOBS, ns, name))

    def _pods(self, method: str, query: Mapping[str, str], body: Any, ns: str) -> None:
        self._list(PODS, ns, query, "PodList", "v1")

    def _pod(self, method: str, query: Mapping[str, str], body: Any, ns: str, name: str) -> None:
        self._send(200, self.owner.cluster.get(PODS, ns, name))

    def _pvc(self, method: str, query: Mapping[str, str], body: Any, ns: str, name: str) -> None:
        if name not in self.owner.volumes:
            raise ApiError(404, "NotFound", f'persistentvolumeclaims "{name}" not found')
        self._send(
            200,
            {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": {"name": name, "namespace": ns},
                "spec": {"accessModes": ["ReadWriteMany"]},
                "status": {"phase": "Bound", "accessModes": ["ReadWriteMany"]},
            },
        )

    def _review(self, method: str, query: Mapping[str, str], body: Any) -> None:
        attrs = (body.get("spec") or {}).get("resourceAttributes") or {}
        key = (attrs.get("verb", ""), attrs.get("resource", ""), attrs.get("subresource", ""))
        allowed = key not in self.owner.denied
        body["status"] = {"allowed": allowed, **({} if allowed else {"reason": "denied by test"})}
        self._send(201, body)

    def _list(self, resource: str, ns: str, query: Mapping[str, str], kind: str, api: str) -> None:
        items, version = self.owner.cluster.list(resource, ns, query.get("labelSelector"))
        self._send(
            200,
            {"apiVersion": api, "kind": kind, "metadata": {"resourceVersion": str(version)},
             "items": items},
        )  # fmt: skip

    def _watch(self, resource: str, ns: str, query: Mapping[str, str]) -> None:
        cluster = self.owner.cluster
        selector = query.get("labelSelector")
        match = parse_selector(selector)
        since = int(query.get("resourceVersion") or 0)
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        drop_after: int | None = None
        cuts = self.owner.cuts
        self._start_chunks("application/json")
        if since and since < cluster.oldest - 1:
            gone = ApiError(410, "Expired", f"too old resource version: {since} ({cluster.oldest})")
            self._chunk(json.dumps({"type": "ERROR", "object": gone.status()}).encode() + b"\n")
            self._end_chunks()
            return
        if not since:
            items, since = cluster.list(resource, ns, selector)
            for obj in items:
                self._chunk(json.dumps({"type": "ADDED", "object": obj}).encode() + b"\n")
        sent = 0
        while time.monotonic() < deadline and not self.owner.stopping.is_set():
            knob = self.owner._take_drop()
            if knob is not None:
                drop_after, sent = knob, 0
            if self.owner.cuts != cuts:
                self._cut()
                return
            with cluster.cond:
                position = bisect.bisect_right(cluster.versions, since)
                events = cluster.history[position:]
                scanned = cluster.version
                if not events:
                    cluster.cond.wait(min(0.5, max(deadline - time.monotonic(), 0.01)))
                    continue
            for event in events:
                since = event.version
                if event.resource != resource or event.namespace != ns:
                    continue
                if not match(event.obj["metadata"].get("labels") or {}):
                    continue
                doc = {"type": event.type, "object": event.obj}
                self._chunk(json.dumps(doc).encode() + b"\n")
                sent += 1
                if drop_after is not None and sent >= drop_after:
                    self._cut()
                    return
            since = max(since, scanned)
        self._end_chunks()

    def _cut(self) -> None:
        self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _log(self, method: str, query: Mapping[str, str], body: Any, ns: str, name: str) -> None:
        pod = self.owner.cluster.get(PODS, ns, name)
        key = (ns, name)
        runner = self.owner.runner
        spec = pod["spec"]
        names = [c["name"] for c in [*(spec.get("initContainers") or ()), *spec["containers"]]]
        container = query.get("container") or spec["containers"][0]["name"]
        if container not in names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        path = runner.log_path(ns, name, container) if key in runner.logs else None
        limit = int(query["limitBytes"]) if "limitBytes" in query else None
        if path is None or not path.exists():
            raise ApiError(
                400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start'
            )
        if query.get("follow") not in ("true", "1"):
            data = path.read_bytes() if path.exists() else b""
            self._send_text(data[:limit] if limit is not None else data)
            return
        self._start_chunks("text/plain")
        offset = 0
        while not self.owner.stopping.is_set():
            done = key in runner.finished or (ns, name, container) in runner.done
            data = path.read_bytes()[offset:] if path.exists() else b""
            if limit is not None:
                data = data[: max(limit - offset, 0)]
            if data:
                self._chunk(data)
                offset += len(data)
            if done or (limit is not None and offset >= limit):
                break
            if (ns, name) not in self.owner.cluster.pods:
                break
            time.sleep(0.05)
        self._end_chunks()

    def _send_text(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
