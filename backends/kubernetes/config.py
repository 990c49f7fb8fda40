"""The ``[backends.kubernetes]`` site configuration, validated into :class:`KubernetesSiteConfig`.

Keys (TOML types; strings from ``GEARBROKER_BACKENDS__KUBERNETES__*`` convert, tables and
lists as JSON; a dotted key such as ``pvc.name`` is the same as ``pvc_name``):

``kubeconfig`` (str), ``context`` (str)
    The kubeconfig file and context to use (default: ``$KUBECONFIG`` or ``~/.kube/config``,
    and its current context).
``in_cluster`` (bool, default false)
    Use the pod's service-account credentials instead (the broker runs inside the cluster).
``namespace`` (str, default ``default``)
    Where the Jobs are created and watched.
``instance`` (str, default ``default``)
    Label value (``gearbroker.io/instance``) telling this broker's Jobs from other brokers'
    in the same namespace; the watch selects on it.
``staging`` (``pvc`` | ``s3``, default ``pvc``)
    How the staged ``/flywheel/v0`` reaches the pod: a shared PersistentVolumeClaim, or an
    S3 bucket (an init container downloads it, a finishing container uploads ``output/``).
``pvc_name`` (str), ``pvc_root`` (str); both required with ``staging = "pvc"``
    The shared PersistentVolumeClaim, and the folder where the same volume is mounted on
    the broker host.  Job folders must live below ``pvc_root``; a pod mounts each staged path
    with ``subPath`` = its path relative to ``pvc_root``.
``s3_bucket`` (str, required with ``staging = "s3"``), ``s3_prefix`` (str, default
``gearbroker-staging/``)
    Where each job's staging objects live: ``<s3_prefix><Job name>/``.
``s3_endpoint_url`` (str), ``s3_region`` (str)
    The S3 API as the broker reaches it (default: AWS, or the standard environment); the
    broker's credentials come from the standard AWS chain and never reach a pod.
``s3_pod_endpoint_url`` (str, default ``s3_endpoint_url``)
    The S3 API as pods reach it; the presigned URLs name this endpoint.
``stager_image`` (str, default ``docker.io/curlimages/curl:8.10.1``)
    The init and finishing containers' image: it needs ``sh``, ``tar`` and ``curl``.
``presign_ttl_s`` (int, default 604800, at most 7 days)
    How long the presigned download URL and upload policy stay valid (pending time plus
    walltime must fit; temporary credentials end them sooner).
``service_account``, ``priority_class`` (str)
    ``serviceAccountName`` and ``priorityClassName`` of the pods.
``node_selector`` (table of str), ``tolerations`` (list of tables with ``key``,
``operator``, ``value``, ``effect``, ``toleration_seconds``), ``image_pull_secrets`` (list)
    Copied into every pod.
``image_pull_policy`` (``IfNotPresent`` | ``Always`` | ``Never``, default ``IfNotPresent``)
``run_as_user``, ``run_as_group`` (int)
    The pod's non-root identity; default: the job's user (a job of uid 0 is refused).
``default_memory_mb``, ``default_walltime_s`` (int)
    Used when the gear declares no memory or walltime.
``cpu_limits`` (bool, default true)
    Set a CPU limit equal to the request (false: request only).
``gpu_resource`` (str, default ``nvidia.com/gpu``)
    Extended resource name for GPUs.
``ttl_seconds_after_finished`` (int, default 86400)
    How long Kubernetes keeps a finished Job (the broker reads it within seconds).
``pending_timeout_s`` (float, default 900)
    A Job whose pod is not running after this long fails with the pod's reason
    (unschedulable, image pull error) and is deleted.
``watch_timeout_s`` (int, default 300)
    Server-side length of one watch request; it is resumed from the last resourceVersion.
``request_timeout_s`` (float, default 30), ``retries`` (int, default 6),
``retry_backoff_s`` (float, default 0.5)
    Per-request timeout, and retries with exponential backoff on HTTP 429/5xx and broken
    connections (``Retry-After`` is honoured).
``log_streams`` (int, default 16)
    Running jobs whose pod log is streamed live into ``logs/output.log`` at once (others get
    their log when they finish).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from backends.siteconfig import convert, number
from catalog.errors import ConfigError

SECTION = "backends.kubernetes"
#: RFC 1123 label (namespaces) and subdomain (most object names).
DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
_LABEL_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9]$")
_PULL_POLICIES = ("IfNotPresent", "Always", "Never")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL_RE = re.compile(r"^https?://[^\s/]+(/\S*)?$")
_TOLERATION_KEYS = {"key", "operator", "value", "effect", "toleration_seconds"}
STAGING_MODES = ("pvc", "s3")
DEFAULT_STAGER_IMAGE = "docker.io/curlimages/curl:8.10.1"
#: SigV4 presigned URLs live at most seven days.
MAX_PRESIGN_TTL_S = 7 * 24 * 3600


def is_label_key(key: str) -> bool:
    """Whether ``key`` is a valid label (or node-selector) key: ``[prefix/]name``."""
    prefix, _, name = key.rpartition("/")
    if prefix and not DNS_SUBDOMAIN_RE.fullmatch(prefix):
        return False
    return bool(_LABEL_NAME_RE.fullmatch(name))


@dataclass(frozen=True)
class Toleration:
    """One pod toleration (``operator`` Equal or Exists)."""

    key: str | None = None
    operator: str = "Equal"
    value: str | None = None
    effect: str | None = None
    toleration_seconds: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"operator": self.operator}
        for name, value in (("key", self.key), ("value", self.value), ("effect", self.effect)):
            if value is not None:
                out[name] = value
        if self.toleration_seconds is not None:
            out["tolerationSeconds"] = self.toleration_seconds
        return out


@dataclass(frozen=True)
class KubernetesSiteConfig:
    """One site's Kubernetes settings; build with :meth:`from_mapping` (which validates)."""

    pvc_name: str | None = None
    pvc_root: str | None = None
    staging: str = "pvc"
    s3_bucket: str | None = None
    s3_prefix: str = "gearbroker-staging/"
    s3_endpoint_url: str | None = None
    s3_pod_endpoint_url: str | None = None
    s3_region: str | None = None
    stager_image: str = DEFAULT_STAGER_IMAGE
    presign_ttl_s: int = MAX_PRESIGN_TTL_S
    kubeconfig: str | None = None
    context: str | None = None
    in_cluster: bool = False
    namespace: str = "default"
    instance: str = "default"
    service_account: str | None = None
    priority_class: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    tolerations: tuple[Toleration, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()
    image_pull_policy: str = "IfNotPresent"
    run_as_user: int | None = None
    run_as_group: int | None = None
    default_memory_mb: int | None = None
    default_walltime_s: int | None = None
    cpu_limits: bool = True
    gpu_resource: str = "nvidia.com/gpu"
    ttl_seconds_after_finished: int = 86400
    pending_timeout_s: float = 900.0
    watch_timeout_s: int = 300
    request_timeout_s: float = 30.0
    retries: int = 6
    retry_backoff_s: float = 0.5
    log_streams: int = 16

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any]) -> KubernetesSiteConfig:
        """Validate ``section`` (the ``[backends.kubernetes]`` table); ConfigError names keys."""
        known = {f.name: str(f.type) for f in fields(cls)}
        values: dict[str, Any] = {}
        for raw_key, value in _flatten(section).items():
            key = raw_key.replace(".", "_").replace("-", "_")
            if key not in known:
                raise ConfigError(f"{SECTION}: unknown key {raw_key!r}")
            values[key] = _convert(key, known[key], value)
        if values.get("staging", "pvc") == "pvc":
            for required in ("pvc_name", "pvc_root"):
                if required not in values:
                    raise ConfigError(
                        f"{SECTION}.{required} is required: the shared PersistentVolumeClaim "
                        "(pvc_name) and where it is mounted on the broker host (pvc_root)"
                    )
        elif values["staging"] == "s3" and "s3_bucket" not in values:
            raise ConfigError(f'{SECTION}.s3_bucket is required with staging = "s3"')
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Raise ConfigError for any value Kubernetes would refuse."""
        if not DNS_LABEL_RE.fullmatch(self.namespace):
            raise ConfigError(f"{SECTION}.namespace: invalid namespace {self.namespace!r}")
        if not self.instance or not LABEL_VALUE_RE.fullmatch(self.instance):
            raise ConfigError(
                f"{SECTION}.instance: {self.instance!r} is not a label value "
                "(1-63 letters, digits, '-', '_', '.'; alphanumeric at both ends)"
            )
        for key in ("pvc_name", "service_account", "priority_class"):
            value = getattr(self, key)
            if value is not None and not DNS_SUBDOMAIN_RE.fullmatch(value):
                raise ConfigError(f"{SECTION}.{key}: invalid Kubernetes name {value!r}")
        for name in self.image_pull_secrets:
            if not DNS_SUBDOMAIN_RE.fullmatch(name):
                raise ConfigError(f"{SECTION}.image_pull_secrets: invalid name {name!r}")
        if self.pvc_root is not None and (
            not self.pvc_root.startswith("/") or "/../" in self.pvc_root + "/"
        ):
            raise ConfigError(f"{SECTION}.pvc_root must be an absolute path: {self.pvc_root!r}")
        self._validate_staging()
        for key, value in self.node_selector.items():
            if not is_label_key(key) or not LABEL_VALUE_RE.fullmatch(value):
                raise ConfigError(f"{SECTION}.node_selector: invalid entry {key!r} = {value!r}")
        for toleration in self.tolerations:
            _check_toleration(toleration)
        if self.image_pull_policy not in _PULL_POLICIES:
            raise ConfigError(f"{SECTION}.image_pull_policy must be one of {_PULL_POLICIES}")
        if not is_label_key(self.gpu_resource) or "/" not in self.gpu_resource:
            raise ConfigError(f"{SECTION}.gpu_resource: {self.gpu_resource!r} is not vendor/name")
        for key in ("run_as_user", "run_as_group"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{SECTION}.{key} must be >= 1 (pods never run as root)")
        for key in ("default_memory_mb", "default_walltime_s"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{SECTION}.{key} must be >= 1")
        for key in ("ttl_seconds_after_finished", "retries"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{SECTION}.{key} must be >= 0")
        for key in ("pending_timeout_s", "watch_timeout_s", "request_timeout_s", "log_streams"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{SECTION}.{key} must be > 0")
        if self.retry_backoff_s < 0:
            raise ConfigError(f"{SECTION}.retry_backoff_s must be >= 0")

    def _validate_staging(self) -> None:
        if self.staging not in STAGING_MODES:
            raise ConfigError(f"{SECTION}.staging must be one of {STAGING_MODES}")
        if self.staging == "pvc" and (self.pvc_name is None or self.pvc_root is None):
            raise ConfigError(f'{SECTION}: staging = "pvc" needs pvc_name and pvc_root')
        if self.staging != "s3":
            return
        if not self.s3_bucket or not _BUCKET_RE.fullmatch(self.s3_bucket):
            raise ConfigError(f"{SECTION}.s3_bucket: invalid bucket name {self.s3_bucket!r}")
        if self.s3_prefix.startswith("/") or any(c in self.s3_prefix for c in "\r\n"):
            raise ConfigError(f"{SECTION}.s3_prefix must be relative, on one line")
        for key in ("s3_endpoint_url", "s3_pod_endpoint_url"):
            value = getattr(self, key)
            if value is not None and not _URL_RE.fullmatch(value):
                raise ConfigError(f"{SECTION}.{key}: {value!r} is not an http(s) URL")
        if not self.stager_image.strip() or any(c.isspace() for c in self.stager_image):
            raise ConfigError(f"{SECTION}.stager_image: invalid image {self.stager_image!r}")
        if not 1 <= self.presign_ttl_s <= MAX_PRESIGN_TTL_S:
            raise ConfigError(f"{SECTION}.presign_ttl_s must be between 1 and {MAX_PRESIGN_TTL_S}")

    @property
    def pod_endpoint_url(self) -> str | None:
        """The S3 endpoint named in the presigned URLs pods use."""
        return self.s3_pod_endpoint_url or self.s3_endpoint_url

    @property
    def selector(self) -> str:
        """The label selector of every Job (and pod) of this broker instance."""
        return f"app.kubernetes.io/managed-by=gearbroker,gearbroker.io/instance={self.instance}"


def _flatten(section: Mapping[str, Any]) -> dict[str, Any]:
    """Sub-tables become dotted keys, except the tables that are values (node_selector)."""
    out: dict[str, Any] = {}
    for key, value in section.items():
        if isinstance(value, Mapping) and key.replace("-", "_") != "node_selector":
            for sub, inner in _flatten(value).items():
                out[f"{key}.{sub}"] = inner
        else:
            out[key] = value
    return out


def _check_toleration(toleration: Toleration) -> None:
    where = f"{SECTION}.tolerations"
    if toleration.operator not in ("Equal", "Exists"):
        raise ConfigError(f"{where}: operator must be Equal or Exists")
    if toleration.effect not in (None, "NoSchedule", "PreferNoSchedule", "NoExecute"):
        raise ConfigError(f"{where}: effect must be NoSchedule, PreferNoSchedule or NoExecute")
    if toleration.key is not None and not is_label_key(toleration.key):
        raise ConfigError(f"{where}: invalid key {toleration.key!r}")
    if toleration.operator == "Exists" and toleration.value:
        raise ConfigError(f"{where}: operator Exists takes no value")
    if toleration.value is not None and not LABEL_VALUE_RE.fullmatch(toleration.value):
        raise ConfigError(f"{where}: invalid value {toleration.value!r}")
    if toleration.key is None and toleration.operator != "Exists":
        raise ConfigError(f"{where}: a toleration without key needs operator Exists")


def _json(where: str, value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError as exc:
            raise ConfigError(f"{where} is not valid JSON: {exc}") from exc
    return value


def _convert(key: str, kind: str, value: Any) -> Any:
    """Convert a TOML or environment value to the field's type; ConfigError when it cannot."""
    where = f"{SECTION}.{key}"
    if key == "node_selector":
        value = _json(where, value)
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise ConfigError(f"{where} must be a table of strings")
        return MappingProxyType(dict(value))
    if key == "tolerations":
        value = _json(where, value)
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise ConfigError(f"{where} must be a list of tables")
        out = []
        for item in value:
            names = {k.replace("-", "_") for k in item}
            if names - _TOLERATION_KEYS:
                raise ConfigError(f"{where}: unknown keys {sorted(names - _TOLERATION_KEYS)}")
            fixed = {k.replace("-", "_"): v for k, v in item.items()}
            seconds = fixed.get("toleration_seconds")
            if seconds is not None:
                fixed["toleration_seconds"] = number(where, seconds, int)
            if not all(isinstance(v, str) for k, v in fixed.items() if k != "toleration_seconds"):
                raise ConfigError(f"{where}: key, operator, value and effect are strings")
            out.append(Toleration(**fixed))
        return tuple(out)
    return convert(where, kind, value)
