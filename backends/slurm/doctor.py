"""``gearbroker doctor slurm``: check a site's Slurm setup and say what is wrong in plain words.

:func:`check_site` returns :class:`Check` rows in order (connection, commands, controller,
partitions, shared folder, compute node, runtime); checks that depend on a failed one are
reported as not run.  Nothing is printed here; the CLI formats the rows.
"""

from __future__ import annotations

import secrets
import shlex
from typing import NamedTuple

from backends.slurm.config import SlurmSiteConfig
from backends.slurm.script import ARRAY_LOG_DIR, site_directives
from broker.commands import CommandError
from broker.runtimes.base import ContainerRuntime
from broker.transport import Transport
from catalog.errors import GearbrokerError

COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")


class Check(NamedTuple):
    check: str
    ok: bool
    message: str


def check_site(
    site: SlurmSiteConfig,
    runtime: ContainerRuntime,
    transport: Transport,
    *,
    job_timeout_s: float = 300.0,
) -> list[Check]:
    """Run every check against ``site`` through ``transport``; never raises for a failed check."""
    results: list[Check] = []
    where = "this host" if transport.name == "local" else f"the login node ({site.ssh_host})"
    try:
        host = transport.run(["hostname"], timeout=site.command_timeout_s).stdout.strip()
    except GearbrokerError as exc:
        return [Check("connection", False, f"cannot run commands on {where}: {exc}")]
    results.append(Check("connection", True, f"commands run on {host} ({where})"))
    missing = []
    for name in COMMANDS:
        try:
            transport.run([site.command(name), "--version"], timeout=site.command_timeout_s)
        except CommandError:
            missing.append(name)
    if missing:
        hint = "install the Slurm client there or set backends.slurm.bin_dir"
        results.append(
            Check("commands", False, f"{', '.join(missing)} not found on {host}: {hint}")
        )
        return [*results, *_not_run("controller", "partitions", "shared folder", "compute node")]
    results.append(Check("commands", True, f"{', '.join(COMMANDS)} found on {host}"))
    try:
        listing = transport.run(
            [site.command("sinfo"), "-h", "-o", "%P %a"], timeout=site.command_timeout_s
        ).stdout
    except CommandError as exc:
        results.append(Check("controller", False, f"slurmctld does not answer sinfo: {exc}"))
        return [*results, *_not_run("partitions", "shared folder", "compute node")]
    results.append(Check("controller", True, "slurmctld answers"))
    results.append(_partitions(site, listing))
    results.append(_shared_folder(site, transport))
    if not results[-1].ok:
        return [*results, *_not_run("compute node", "runtime")]
    return results + _compute_node(site, runtime, transport, job_timeout_s)


def _not_run(*names: str) -> list[Check]:
    return [Check(name, False, "not run: an earlier check failed") for name in names]


def _partitions(site: SlurmSiteConfig, listing: str) -> Check:
    states = {}
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0].rstrip("*")] = parts[1]
    if not site.partition:
        default = [p for p in listing.split() if p.endswith("*")]
        text = f"default partition {default[0].rstrip('*')}" if default else "no default partition"
        return Check("partitions", bool(default), f"no partition configured; {text}")
    problems = []
    for name in site.partition.split(","):
        if name not in states:
            problems.append(f"{name} does not exist (known: {', '.join(sorted(states))})")
        elif states[name] != "up":
            problems.append(f"{name} is {states[name]}, not up")
    if problems:
        return Check("partitions", False, "; ".join(problems))
    return Check("partitions", True, f"{site.partition} up")


def _shared_folder(site: SlurmSiteConfig, transport: Transport) -> Check:
    root = site.scratch_root
    probe = transport.run(["test", "-d", root, "-a", "-w", root], check=False)
    if probe.returncode != 0:
        return Check(
            "shared folder",
            False,
            f"scratch_root {root} does not exist or is not writable on the login node: create "
            "it on the shared filesystem, or point backends.slurm.scratch_root elsewhere",
        )
    return Check("shared folder", True, f"{root} is writable on the login node")


def _compute_node(
    site: SlurmSiteConfig, runtime: ContainerRuntime, transport: Transport, timeout: float
) -> list[Check]:
    """Run a tiny job that writes a marker to the shared folder and asks the runtime's version."""
    marker = f"{site.scratch_root}/{ARRAY_LOG_DIR}/doctor-{secrets.token_hex(6)}"
    binary = shlex.quote(runtime.binary)
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {o}" for o in site_directives(site)),
        "#SBATCH --job-name=gb-doctor",
        "#SBATCH --time=00:02:00",
        f"#SBATCH --chdir={site.scratch_root}",
        f"#SBATCH --output={marker}.out",
        *site.setup,
        f"hostname > {shlex.quote(marker)}",
        f"if command -v {binary} >/dev/null; then {binary} --version >> {shlex.quote(marker)}"
        f" 2>&1; else echo 'NOT FOUND' >> {shlex.quote(marker)}; fi",
    ]
    try:
        transport.run(["mkdir", "-p", "--", f"{site.scratch_root}/{ARRAY_LOG_DIR}"])
        submit = transport.run(
            [site.command("sbatch"), "--parsable", "--wait"],
            input="\n".join(lines) + "\n",
            timeout=timeout,
            check=False,
        )
    except CommandError as exc:
        return [
            Check("compute node", False, f"the test job did not finish: {exc}"),
            *_not_run("runtime"),
        ]
    if submit.returncode != 0:
        detail = (submit.stderr or submit.stdout).strip()
        return [
            Check("compute node", False, f"sbatch of a tiny test job failed: {detail}"),
            *_not_run("runtime"),
        ]
    seen = transport.run(["cat", marker], check=False)
    transport.run(["rm", "-f", "--", marker, f"{marker}.out"], check=False)
    if seen.returncode != 0:
        return [
            Check(
                "compute node",
                False,
                f"the test job ran but its file {marker} is not visible from the login node: "
                "scratch_root is not shared between login and compute nodes",
            ),
            *_not_run("runtime"),
        ]
    node, _, version = seen.stdout.partition("\n")
    results = [Check("compute node", True, f"a test job ran on {node} and wrote to scratch_root")]
    version = version.strip()
    if not version or version == "NOT FOUND":
        results.append(
            Check(
                "runtime",
                False,
                f"{runtime.binary} ({runtime.name}) is not on the PATH of compute node {node}: "
                "install it or add its `module load` line to backends.slurm.setup",
            )
        )
    else:
        results.append(Check("runtime", True, f"{runtime.name} on {node}: {version}"))
    return results
