"""The pod of a Job with ``staging = "s3"``: an ``emptyDir``, two stager containers, a wrapper.

Layout of the ``emptyDir`` volume (mounted whole at ``/gearbroker`` in the stager containers)::

    stage/<path of a mount source relative to the job folder>   (v0/input/..., v0/config.json)
    status/started  status/exit                                (written by the gear wrapper)
    upload/output.tar                                          (built by the finishing step)

- init container ``stage-in`` (the stager image): streams the staged tar from a presigned GET
  URL into ``stage/``;
- container ``gear``: each task mount is a ``subPath`` mount of ``stage/<relative path>``, and
  ``status/`` is mounted at ``/gearbroker-status``; the gear's argv runs under ``sh -c`` as
  positional parameters (never quoted into a string), which records ``started``, forwards
  SIGTERM, writes the exit code to ``exit`` and exits with it;
- container ``stage-out`` (the stager image): waits for ``exit`` (gives up when ``started``
  never appears), tars the output folder and POSTs it with the presigned policy (curl).

Scripts are constants; every value (URLs, policy fields, paths) is a separate argument.  The
pod never sees an AWS credential: only a presigned URL and a presigned POST policy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from backends.errors import BackendError
from backends.kubernetes.config import KubernetesSiteConfig
from broker.task import GEAR_ROOT, TaskSpec

ROOT = "/gearbroker"
STATUS_MOUNT = "/gearbroker-status"
STAGE_IN = "stage-in"
STAGE_OUT = "stage-out"
OUTPUT_TARGET = f"{GEAR_ROOT}/output"
#: Seconds the finishing step waits for the gear container to start before giving up.
START_WAIT_S = 300

STAGE_IN_SCRIPT = """\
trap 'exit 143' TERM INT
mkdir -p /gearbroker/stage /gearbroker/status /gearbroker/upload
{ curl -fsS --retry 3 "$1" || : > /gearbroker/upload/fetch-failed; } |
  tar -x -f - -C /gearbroker/stage || unpacked=no
if [ -e /gearbroker/upload/fetch-failed ]; then
  echo "gearbroker: downloading the staged inputs failed" >&2
  exit 1
fi
if [ -n "${unpacked:-}" ]; then
  echo "gearbroker: cannot unpack the staged inputs" >&2
  exit 1
fi
"""

GEAR_SCRIPT = """\
: > /gearbroker-status/started
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
"$@" &
child=$!
while :; do
  wait "$child"
  code=$?
  kill -0 "$child" 2>/dev/null || break
done
echo "$code" > /gearbroker-status/exit.tmp && mv /gearbroker-status/exit.tmp /gearbroker-status/exit
exit "$code"
"""

STAGE_OUT_SCRIPT = f"""\
trap 'exit 143' TERM INT
url=$1
out=$2
shift 2
for field do set -- "$@" --form-string "$field"; shift; done
waited=0
until [ -e /gearbroker/status/exit ]; do
  if [ ! -e /gearbroker/status/started ]; then
    waited=$((waited + 1))
    if [ "$waited" -gt {START_WAIT_S} ]; then
      echo "gearbroker: the gear container did not start" >&2
      exit 1
    fi
  fi
  sleep 1
done
cd /gearbroker/stage
tar -c -f /gearbroker/upload/output.tar "$out" ||
  echo "gearbroker: some outputs were not archived" >&2
curl -fsS --retry 3 -o /dev/null "$@" \\
  -F "file=@/gearbroker/upload/output.tar;type=application/x-tar" "$url" ||
  {{ echo "gearbroker: uploading the outputs failed" >&2; exit 1; }}
echo "gearbroker: outputs uploaded"
"""


@dataclass(frozen=True)
class PodUrls:
    """What a pod gets instead of credentials: a presigned GET and a presigned POST policy."""

    stage_url: str
    upload_url: str
    upload_fields: tuple[tuple[str, str], ...]


def relative_source(task: TaskSpec, source: str) -> str:
    """``source`` relative to the job folder; BackendError when it lies outside."""
    root = PurePosixPath(os.path.abspath(task.job_dir))
    path = PurePosixPath(os.path.abspath(source))
    if not path.is_relative_to(root) or path == root:
        raise BackendError(
            f"{task.key}: {source} is not inside the job folder {task.job_dir}; with "
            "staging = s3 every mount is uploaded from the job folder"
        )
    return str(path.relative_to(root))


def output_path(task: TaskSpec) -> str:
    """The job-folder-relative path of the writable mount at /flywheel/v0/output."""
    for mount in task.container.mounts:
        if mount.target.rstrip("/") == OUTPUT_TARGET and not mount.read_only:
            return relative_source(task, mount.source)
    raise BackendError(f"{task.key}: no writable mount at {OUTPUT_TARGET} to upload outputs from")


def gear_mounts(task: TaskSpec, volume: str) -> list[dict[str, Any]]:
    """The gear container's mounts: each staged path, and the status folder."""
    mounts = [
        {
            "name": volume,
            "mountPath": mount.target,
            "subPath": f"stage/{relative_source(task, mount.source)}",
            "readOnly": mount.read_only,
        }
        for mount in task.container.mounts
    ]
    mounts.append({"name": volume, "mountPath": STATUS_MOUNT, "subPath": "status"})
    return mounts


def gear_command(argv: list[str]) -> list[str]:
    """``argv`` run by the status-recording wrapper (argv stays a list of arguments)."""
    return ["sh", "-c", GEAR_SCRIPT, "gearbroker", *argv]


def stager_resources(site: KubernetesSiteConfig) -> dict[str, dict[str, str]]:
    """Small requests; a memory limit (and a one-CPU limit when the site sets CPU limits)."""
    limits = {"memory": "256Mi", **({"cpu": "1"} if site.cpu_limits else {})}
    return {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": limits}


def stager_containers(
    task: TaskSpec,
    site: KubernetesSiteConfig,
    urls: PodUrls,
    volume: str,
    security: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``stage-in`` init container and the ``stage-out`` container (unescaped values)."""
    fields = [f"{name}={value}" for name, value in urls.upload_fields]
    for value in (urls.stage_url, urls.upload_url, *fields):
        if "\n" in value or "\r" in value:
            raise BackendError(f"{task.key}: a presigned value spans lines")
    common = {
        "image": site.stager_image,
        "imagePullPolicy": site.image_pull_policy,
        "volumeMounts": [{"name": volume, "mountPath": ROOT}],
        "resources": stager_resources(site),
        "securityContext": security,
    }
    stage_in = {
        "name": STAGE_IN,
        "command": ["sh", "-c", STAGE_IN_SCRIPT, STAGE_IN, urls.stage_url],
        **common,
    }
    stage_out = {
        "name": STAGE_OUT,
        "command": [
            "sh", "-c", STAGE_OUT_SCRIPT, STAGE_OUT, urls.upload_url, output_path(task), *fields,
        ],
        **common,
    }  # fmt: skip
    return stage_in, stage_out
