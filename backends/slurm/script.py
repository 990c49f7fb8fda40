"""sbatch scripts: ``#SBATCH`` directives from resources + site config, and the run body.

A script is plain bash that a human can read (``gearbroker render``).  Nothing a gear controls
reaches a directive unchecked: numbers are validated and formatted here, names and paths must
match strict patterns, and the container command appears only as ``shlex``-quoted words in a
bash array.  A batch is one array script whose ``case`` picks each task's folder and command.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence

from backends.slurm.config import DIRECTIVE_PATH_RE, SlurmSiteConfig
from broker.runtimes.base import ContainerRuntime
from broker.task import Resources, TaskSpec
from catalog.errors import InvalidInputError

ARRAY_LOG_DIR = ".slurm"

_RUNNER = """\
if ((${#gb_stop[@]})); then
    trap '"${gb_stop[@]}" >/dev/null 2>&1' TERM INT
    "${gb_run[@]}" &
    gb_pid=$!
    wait "$gb_pid"
    gb_code=$?
    while kill -0 "$gb_pid" 2>/dev/null; do
        wait "$gb_pid"
        gb_code=$?
    done
else
    "${gb_run[@]}"
    gb_code=$?
fi
if ((${#gb_remove[@]})); then
    "${gb_remove[@]}" >/dev/null 2>&1
fi
exit "$gb_code"
"""


class ScriptError(InvalidInputError):
    """A task's resources or paths cannot be expressed safely in an sbatch script."""


def format_walltime(seconds: int) -> str:
    """Slurm ``--time`` text: ``HH:MM:SS``, or ``D-HH:MM:SS`` from one day on."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock


def resource_directives(resources: Resources, site: SlurmSiteConfig) -> list[str]:
    """``--cpus-per-task``, memory, ``--gres`` and ``--time`` options for ``resources``."""
    cpus = _positive_number("cpus", resources.cpus)
    ncpus = max(1, math.ceil(cpus))
    options = [f"--cpus-per-task={ncpus}"]
    if resources.memory_mb is not None:
        memory = int(_positive_number("memory_mb", resources.memory_mb))
        if site.memory_flag == "mem-per-cpu":
            options.append(f"--mem-per-cpu={math.ceil(memory / ncpus)}M")
        else:
            options.append(f"--mem={memory}M")
    gpus = resources.gpus
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 0:
        raise ScriptError(f"gpus must be a whole number >= 0, not {gpus!r}")
    if gpus:
        kind = f"{site.gpu_type}:" if site.gpu_type else ""
        options.append(f"--gres=gpu:{kind}{gpus}")
    walltime = resources.walltime_s if resources.walltime_s is not None else site.default_walltime_s
    if walltime is not None:
        options.append(
            f"--time={format_walltime(math.ceil(_positive_number('walltime_s', walltime)))}"
        )
    return options


def site_directives(site: SlurmSiteConfig) -> list[str]:
    """Partition, account, QoS and the site's extra flags (validated by the config).

    ``--export=NONE`` unless the site sets ``--export`` itself: the broker's environment
    (database URLs, cloud credentials) must not leak into batch jobs; sbatch then starts the
    job with the user's login environment (``--get-user-env`` is implied).
    """
    options = []
    if not any(flag.startswith("--export") for flag in site.sbatch_flags):
        options.append("--export=NONE")
    if site.partition:
        options.append(f"--partition={site.partition}")
    if site.account:
        options.append(f"--account={site.account}")
    if site.qos:
        options.append(f"--qos={site.qos}")
    return [*options, *site.sbatch_flags]


def job_script(
    tasks: Sequence[TaskSpec],
    runtime: ContainerRuntime,
    site: SlurmSiteConfig,
    *,
    array_limit: int | None = None,
) -> str:
    """The sbatch script for one task, or an array script when ``tasks`` has several.

    Every task of an array must have the same resources.  A single task's Slurm output is its
    ``logs/output.log``; array tasks redirect into theirs inside the per-task ``case`` arm.
    """
    if not tasks:
        raise ScriptError("no tasks to render")
    first = tasks[0]
    for task in tasks:
        _check_dir(task.job_dir)
        if task.resources != first.resources:
            raise ScriptError("tasks of one array must request the same resources")
    if len(tasks) == 1:
        options = [
            f"--job-name={first.key}",
            f"--chdir={first.job_dir}",
            f"--output={first.job_dir}/logs/output.log",
        ]
    else:
        throttle = f"%{array_limit}" if array_limit else ""
        options = [
            f"--job-name=gb-array-{first.job_id}-{first.attempt}",
            f"--array=0-{len(tasks) - 1}{throttle}",
            f"--chdir={site.scratch_root}",
            f"--output={site.scratch_root}/{ARRAY_LOG_DIR}/%x-%A_%a.out",
        ]
    options += ["--open-mode=append", *site_directives(site)]
    options += resource_directives(first.resources, site)
    lines = ["#!/bin/bash", *(f"#SBATCH {option}" for option in options)]
    lines.append(f"# gearbroker: {len(tasks)} task(s) of image {bash_quote(first.container.image)}")
    lines.append("set -u")
    if len(tasks) == 1:
        lines += _task_lines(first, runtime, indent="")
    else:
        lines.append('case "${SLURM_ARRAY_TASK_ID:-}" in')
        for index, task in enumerate(tasks):
            lines.append(f"{index})")
            log = shlex.quote(f"{task.job_dir}/logs/output.log")
            lines.append(f"    exec >>{log} 2>&1")
            lines.append(f"    cd -- {shlex.quote(task.job_dir)} || exit 1")
            lines += _task_lines(task, runtime, indent="    ")
            lines.append("    ;;")
        lines.append('*)\n    echo "gearbroker: no array task ${SLURM_ARRAY_TASK_ID:-}" >&2')
        lines.append("    exit 64\n    ;;\nesac")
    lines += list(site.setup)
    return "\n".join(lines) + "\n" + _RUNNER


def bash_quote(word: str) -> str:
    """``shlex.quote``, but words with control characters (newlines...) become ``$'...'``.

    No gear-controlled value can then start a new line in the script.
    """
    if not any(ord(c) < 32 or ord(c) == 127 for c in word):
        return shlex.quote(word)
    escaped = "".join(
        "\\\\"
        if c == "\\"
        else "\\'"
        if c == "'"
        else f"\\x{ord(c):02x}"
        if ord(c) < 32 or ord(c) == 127
        else c
        for c in word
    )
    return f"$'{escaped}'"


def _task_lines(task: TaskSpec, runtime: ContainerRuntime, indent: str) -> list[str]:
    spec = task.container
    words = {
        "gb_run": runtime.argv(spec),
        "gb_stop": runtime.stop_argv(spec) or [],
        "gb_remove": runtime.remove_argv(spec) or [],
    }
    lines = [f"{indent}# {task.key}"]
    for name, argv in words.items():
        for word in argv:
            if "\x00" in word:
                raise ScriptError("NUL byte in a container command")
        lines.append(f"{indent}{name}=({' '.join(bash_quote(w) for w in argv)})")
    return lines


def _check_dir(path: str) -> None:
    if not DIRECTIVE_PATH_RE.fullmatch(path) or "/../" in path + "/":
        raise ScriptError(
            f"job folder {path!r} must be an absolute path of letters, digits and _ . / + @ , : = -"
        )


def _positive_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScriptError(f"{name} must be a number, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ScriptError(f"{name} must be a positive finite number, not {value!r}")
    return float(value)
