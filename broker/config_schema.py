"""The declared settings of gearbroker: keys, value kinds, defaults and help text.

Every setting is one :class:`Setting` line in :data:`SETTINGS`; later features add
lines there.  A setting's kind converts values from environment strings
(:meth:`Kind.from_text`) and checks values that already carry a type (TOML values,
CLI flags; :meth:`Kind.coerce`).  Both raise ``ValueError`` with a short reason; the
loader in :mod:`broker.config` turns that into a ``ConfigError`` naming the source.

Keys inside :data:`OPEN_SECTIONS` need not be declared: they are kept as given.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from catalog.errors import ConfigError

_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})
_KEY_PART = re.compile(r"[a-z][a-z0-9_]*")


class DefaultContext(Protocol):
    """What a default factory may consult: the given environment and other settings."""

    @property
    def env(self) -> Mapping[str, str]: ...

    def get(self, key: str) -> Any: ...


@dataclass(frozen=True)
class Kind:
    """A value type: ``name`` is shown in error messages."""

    name: str
    from_text: Callable[[str], Any]
    coerce: Callable[[Any], Any]
    expands_home: bool = False


def _parse_int(text: str) -> int:
    return int(text.strip())


def _check_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"not an integer: {value!r}")
    return value


def _parse_float(text: str) -> float:
    return float(text.strip())


def _check_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


def _parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"not one of 1/0/true/false/yes/no: {text!r}")


def _check_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"not a boolean: {value!r}")
    return value


def _check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def _parse_list(text: str) -> list[str]:
    if text.lstrip().startswith("["):
        try:
            return _check_list(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ValueError(f"invalid JSON list: {exc}") from exc
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"not a list of strings: {value!r}")
    return list(value)


def _parse_path(text: str) -> Path:
    if not text:
        raise ValueError("empty path")
    return Path(text)


def _check_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    return _parse_path(_check_str(value))


STR = Kind("string", str, _check_str)
INT = Kind("integer", _parse_int, _check_int)
FLOAT = Kind("float", _parse_float, _check_float)
BOOL = Kind("boolean", _parse_bool, _check_bool)
LIST = Kind("list of strings (comma-separated or JSON)", _parse_list, _check_list)
PATH = Kind("path", _parse_path, _check_path, expands_home=True)
LOCATION = Kind("path or URL", str, _check_str, expands_home=True)


@dataclass(frozen=True)
class Setting:
    """One declared setting; ``factory`` (if given) computes the default lazily."""

    key: str
    kind: Kind
    default: Any = None
    help: str = ""
    factory: Callable[[DefaultContext], Any] | None = None

    def __post_init__(self) -> None:
        parts = self.key.split(".")
        if len(parts) < 2 or not all(_KEY_PART.fullmatch(part) for part in parts):
            raise ValueError(f"setting key must be dotted lowercase words: {self.key!r}")

    @property
    def env_var(self) -> str:
        """The full environment variable name, e.g. ``GEARBROKER_CATALOG__DATABASE``."""
        return env_var_for(self.key)


def env_var_for(key: str) -> str:
    """Map a dotted key to its ``GEARBROKER_SECTION__NAME`` variable."""
    return ENV_PREFIX + "__".join(key.split(".")).upper()


def _xdg_dir(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    """An XDG base directory: the variable if set to an absolute path, else ``~/fallback``."""
    value = env.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return home_dir(env) / fallback


def home_dir(env: Mapping[str, str]) -> Path:
    """``$HOME`` from the given environment, else the account's home directory."""
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def default_config_path(env: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/gearbroker/config.toml`` (default ``~/.config/...``)."""
    return _xdg_dir(env, "XDG_CONFIG_HOME", ".config") / "gearbroker" / "config.toml"


def _default_data_dir(ctx: DefaultContext) -> Path:
    return _xdg_dir(ctx.env, "XDG_DATA_HOME", ".local/share") / "gearbroker"


def _default_user(ctx: DefaultContext) -> str:
    """The login name from the given environment (as getpass does), else the account's."""
    for variable in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if ctx.env.get(variable):
            return ctx.env[variable]
    try:
        return getpass.getuser()
    except (KeyError, OSError) as exc:
        raise ConfigError("cannot determine the user name; set GEARBROKER_USER") from exc


ENV_PREFIX = "GEARBROKER_"
CONFIG_ENV = "GEARBROKER_CONFIG"

SETTINGS: tuple[Setting, ...] = (
    Setting("catalog.data_dir", PATH, help="Directory for the catalog, blobs and job work dirs.",
            factory=_default_data_dir),
    Setting("catalog.database", STR, help="SQLAlchemy URL of the catalog database.",
            factory=lambda c: f"sqlite:///{c.get('catalog.data_dir')}/catalog.db"),
    Setting("catalog.store", LOCATION, help="Blob store: a directory or an s3://bucket/prefix URL.",
            factory=lambda c: str(c.get("catalog.data_dir") / "blobs")),
    Setting("catalog.store_endpoint_url", STR, help="Endpoint URL of an S3-compatible store."),
    Setting("user.name", STR, help="Acting user name.", factory=_default_user),
    Setting("broker.backend", STR, "local", help="Compute backend: local, slurm or kubernetes."),
    Setting("broker.runtime", STR, "auto", help="Container runtime, or auto to detect one."),
    Setting("broker.work_dir", PATH, help="Directory for per-job work dirs.",
            factory=lambda c: c.get("catalog.data_dir") / "jobs"),
    Setting("broker.poll_interval", FLOAT, 2.0, help="Seconds between job status polls."),
    Setting("broker.max_concurrent", INT, 0, help="Jobs run at once; 0 means one per core."),
    Setting("broker.max_per_user", INT, 0, help="Jobs one user may have in flight; 0: no limit."),
    Setting("broker.max_per_project", INT, 0, help="Jobs one project may have in flight; 0: none."),
    Setting("broker.max_retries", INT, 0, help="Retries of transient failures (gear/rule/job "
            "settings take precedence)."),
    Setting("broker.retry_backoff", FLOAT, 10.0, help="Seconds before the first retry (doubles)."),
    Setting("broker.oom_memory_factor", FLOAT, 2.0, help="Memory multiplier for an OOM retry."),
    Setting("broker.oom_memory_cap_mb", INT, 65536, help="Most memory an OOM retry may ask."),
    Setting("backends.local.scheduler", STR, help="Dask scheduler address, e.g. tcp://host:8786."),
    Setting("backends.local.workers", INT, help="Number of local Dask workers."),
    Setting("ingest.workers", INT, help="Parallel ingest workers."),
    Setting("ingest.shard_files", INT, 200, help="Files per ingest shard."),
    Setting("ingest.shard_bytes", INT, 256 * 1024 * 1024, help="Max bytes per ingest shard."),
    Setting("ingest.cluster", STR, "local", help="Ingest cluster: local, threads, slurm, tcp://..."),
)  # fmt: skip

OPEN_SECTIONS: tuple[str, ...] = (
    "backends.slurm",
    "backends.kubernetes",
    "runtimes.podman",
    "runtimes.docker",
    "runtimes.apptainer",
    "runtimes.bwrap",
)

SHORT_ENV: Mapping[str, str] = {
    "GEARBROKER_DATABASE": "catalog.database",
    "GEARBROKER_STORE": "catalog.store",
    "GEARBROKER_USER": "user.name",
    "GEARBROKER_DATA_DIR": "catalog.data_dir",
}

REGISTRY: Mapping[str, Setting] = {setting.key: setting for setting in SETTINGS}


def open_section_of(key: str) -> str | None:
    """The open section that contains ``key`` (strictly below it), if any."""
    for section in OPEN_SECTIONS:
        if key.startswith(section + "."):
            return section
    return None


def is_section(key: str) -> bool:
    """Whether ``key`` names a table that holds declared or open settings."""
    prefix = key + "."
    return key in OPEN_SECTIONS or any(
        known.startswith(prefix) for known in (*REGISTRY, *OPEN_SECTIONS)
    )
