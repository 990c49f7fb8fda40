"""The one place gearbroker runs subprocesses (locally; SSH goes through a Transport).

Commands are argv lists, never shell strings.  A failure raises :class:`CommandError`
carrying the command, exit code, stdout and stderr, so every caller reports the same facts.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from catalog.errors import GearbrokerError

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(GearbrokerError):
    """A command failed to start, timed out or exited non-zero."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
        reason: str = "",
    ) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        what = reason or f"exited with status {returncode}"
        detail = (stderr or stdout).strip()
        if len(detail) > 2000:
            detail = detail[-2000:]
        super().__init__(
            f"command `{shlex.join(self.argv)}` {what}" + (f": {detail}" if detail else "")
        )


def run_command(
    argv: Sequence[str],
    *,
    timeout: float | None = DEFAULT_TIMEOUT_S,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> CommandResult:
    """Run ``argv`` and capture its output; raise CommandError on failure when ``check``."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(
            args, None, "", str(exc), reason="could not start (not installed?)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else ""
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        raise CommandError(args, None, out, err, reason=f"timed out after {timeout} s") from exc
    result = CommandResult(tuple(args), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stdout, proc.stderr)
    return result
