"""Layered configuration: defaults < TOML file < ``GEARBROKER_*`` environment < CLI flags.

The file is the ``path`` argument, else ``$GEARBROKER_CONFIG``, else
``$XDG_CONFIG_HOME/gearbroker/config.toml`` (``~/.config/gearbroker/config.toml``).
A missing file contributes nothing (``Settings.config_found`` says so); a file
that does not parse, holds a wrongly typed value or an undeclared key (outside
the open tables ``[backends.slurm]`` and ``[backends.kubernetes]``) is a
``ConfigError`` naming the file.

Environment mapping: ``GEARBROKER_<SECTION>__<NAME>`` sets ``section.name``
(double underscores separate sections, single underscores stay in names, case is
folded), e.g. ``GEARBROKER_CATALOG__DATABASE`` -> ``catalog.database`` and
``GEARBROKER_BACKENDS__SLURM__PARTITION`` -> ``backends.slurm.partition`` (open
tables keep such values as strings; in the file they keep their TOML type, and
sub-tables inside an open table stay tables, e.g. ``[runtimes.bwrap.images]``).
Short forms: ``GEARBROKER_DATABASE``, ``GEARBROKER_STORE``, ``GEARBROKER_USER`` and
``GEARBROKER_DATA_DIR``; the full form wins when both are set.  Variables without ``__``
other than these (for example ``GEARBROKER_TEST_PG_URL``) are not settings and are ignored; a ``__``
variable naming an undeclared key is a ``ConfigError``.  Strings convert to the
setting's kind: integers, floats, booleans (1/0/true/false/yes/no), lists
(comma-separated or a JSON array).

Flags are a mapping of dotted keys to values; ``None`` means "flag not given".
String flag values are converted like environment strings.

Values are data: nothing is shell-expanded or interpolated.  Only path-typed
settings expand a leading ``~`` (from the given environment's ``HOME``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from broker.config_schema import (
    CONFIG_ENV,
    ENV_PREFIX,
    REGISTRY,
    SETTINGS,
    SHORT_ENV,
    Setting,
    default_config_path,
    home_dir,
    is_section,
    open_section_of,
)
from catalog.errors import ConfigError, ConflictError

DEFAULT_SOURCE = "default"
FLAG_SOURCE = "flag"

_INIT_KEYS = ("catalog.data_dir", "catalog.database", "catalog.store", "catalog.store_endpoint_url")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}

# One layer: key -> (value, source).
_Layer = dict[str, tuple[Any, str]]


@dataclass
class Settings:
    """The merged configuration; ``sources`` maps each key to where its value came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_path: Path
    config_found: bool

    def get(self, key: str) -> Any:
        """The value of ``key`` (``None`` for an unset optional setting)."""
        if key not in self.values:
            raise ConfigError(f"unknown setting {key!r}")
        return self.values[key]

    def section(self, name: str) -> dict[str, Any]:
        """Every value below ``name``, keyed by the rest of its dotted key."""
        prefix = name + "."
        return {key[len(prefix) :]: v for key, v in self.values.items() if key.startswith(prefix)}

    def as_rows(self) -> list[tuple[str, Any, str]]:
        """``(key, value, source)`` for declared settings in order, then open-table keys."""
        extra = sorted(key for key in self.values if key not in REGISTRY)
        keys = [setting.key for setting in SETTINGS] + extra
        return [(key, self.values[key], self.sources[key]) for key in keys]

    @property
    def database_url(self) -> str:
        return cast(str, self.get("catalog.database"))

    @property
    def store_url(self) -> str:
        return cast(str, self.get("catalog.store"))

    @property
    def store_endpoint_url(self) -> str | None:
        return cast("str | None", self.get("catalog.store_endpoint_url"))

    @property
    def data_dir(self) -> Path:
        return cast(Path, self.get("catalog.data_dir"))

    @property
    def user(self) -> str:
        return cast(str, self.get("user.name"))

    @property
    def backend(self) -> str:
        return cast(str, self.get("broker.backend"))

    @property
    def runtime(self) -> str:
        return cast(str, self.get("broker.runtime"))

    @property
    def work_dir(self) -> Path:
        return cast(Path, self.get("broker.work_dir"))

    @property
    def poll_interval(self) -> float:
        return cast(float, self.get("broker.poll_interval"))

    @property
    def max_concurrent(self) -> int:
        return cast(int, self.get("broker.max_concurrent"))


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    """Merge defaults, the config file, ``env`` (default ``os.environ``) and ``flags``.

    Reads only the config file and the mappings given; never creates anything.
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    if path is None:
        selected = environ.get(CONFIG_ENV)
        path = Path(_expand_home(selected, environ)) if selected else default_config_path(environ)
    file_layer, found = _file_layer(path, environ)
    explicit: _Layer = {**file_layer, **_env_layer(environ), **_flag_layer(flags or {}, environ)}
    resolver = _Resolver(environ, explicit)
    values = {key: resolver.get(key) for key in (*REGISTRY, *sorted(explicit))}
    sources = {key: explicit[key][1] if key in explicit else DEFAULT_SOURCE for key in values}
    return Settings(values=values, sources=sources, config_path=path, config_found=found)


def write_default_config(path: Path, settings: Settings, *, force: bool = False) -> None:
    """Write a commented TOML file with the effective catalog settings to ``path``.

    Raises ``ConflictError`` if ``path`` exists and ``force`` is false, ``ConfigError``
    if it cannot be written.  Creates missing parent directories.
    """
    try:
        data = render_default_config(settings).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"a catalog setting cannot be written as TOML: {exc}") from exc
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc
    try:
        with path.open("wb" if force else "xb") as handle:
            handle.write(data)
    except FileExistsError as exc:
        raise ConflictError(f"{path} already exists (use force to overwrite)") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc}") from exc


def render_default_config(settings: Settings) -> str:
    """The text :func:`write_default_config` writes."""
    lines = [
        "# gearbroker configuration, written by `gearbroker init`.",
        "# Precedence: defaults < this file < GEARBROKER_* environment variables < flags.",
        "# `gearbroker config show` lists every setting and where its value came from.",
        "",
        "[catalog]",
    ]
    for key in _INIT_KEYS:
        value = settings.get(key)
        if value is not None:
            lines.append(f"# {REGISTRY[key].help}")
            lines.append(f"{key.split('.', 1)[1]} = {_toml_string(str(value))}")
    return "\n".join(lines) + "\n"


class _Resolver:
    """Resolves each declared key: an explicit value, else its (possibly derived) default."""

    def __init__(self, env: Mapping[str, str], explicit: _Layer) -> None:
        self._env = env
        self._explicit = explicit
        self._cache: dict[str, Any] = {}

    @property
    def env(self) -> Mapping[str, str]:
        return self._env

    def get(self, key: str) -> Any:
        if key in self._explicit:
            return self._explicit[key][0]
        if key not in self._cache:
            setting = REGISTRY[key]
            value = setting.default if setting.factory is None else setting.factory(self)
            self._cache[key] = None if value is None else setting.kind.coerce(value)
        return self._cache[key]


def _file_layer(path: Path, env: Mapping[str, str]) -> tuple[_Layer, bool]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, False
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    flat: dict[str, Any] = {}
    _flatten(table, "", str(path), flat)
    layer: _Layer = {}
    for key, value in flat.items():
        setting = REGISTRY.get(key)
        where = f"{path}: {key}"
        typed = value if setting is None else _convert(setting, value, where, env, text=False)
        layer[key] = (typed, str(path))
    return layer, True


def _flatten(table: Mapping[str, Any], prefix: str, origin: str, out: dict[str, Any]) -> None:
    for name, value in table.items():
        key = prefix + name
        if key in REGISTRY:
            out[key] = value
        elif isinstance(value, dict) and is_section(key) and open_section_of(key) is None:
            _flatten(value, key + ".", origin, out)
        elif open_section_of(key) is not None:
            out[key] = value
        else:
            raise ConfigError(f"{origin}: unknown setting {key!r}")


def _env_layer(env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for var, key in SHORT_ENV.items():
        if var in env:
            layer[key] = (_convert(REGISTRY[key], env[var], var, env, text=True), var)
    for var in sorted(env):
        rest = var[len(ENV_PREFIX) :]
        if not var.startswith(ENV_PREFIX) or "__" not in rest:
            continue
        key = ".".join(rest.lower().split("__"))
        setting = REGISTRY.get(key)
        if setting is not None:
            layer[key] = (_convert(setting, env[var], var, env, text=True), var)
        elif open_section_of(key) is not None:
            layer[key] = (env[var], var)
        else:
            raise ConfigError(f"{var}: unknown setting {key!r}")
    return layer


def _flag_layer(flags: Mapping[str, Any], env: Mapping[str, str]) -> _Layer:
    layer: _Layer = {}
    for key, value in flags.items():
        if value is None:
            continue
        setting = REGISTRY.get(key)
        where = f"flag {key}"
        if setting is not None:
            text = isinstance(value, str)
            layer[key] = (_convert(setting, value, where, env, text=text), FLAG_SOURCE)
        elif open_section_of(key) is not None:
            layer[key] = (value, FLAG_SOURCE)
        else:
            raise ConfigError(f"{where}: unknown setting {key!r}")
    return layer


def _convert(
    setting: Setting, value: Any, where: str, env: Mapping[str, str], *, text: bool
) -> Any:
    """Convert ``value`` to the setting's kind; ``where`` names the source in errors."""
    kind = setting.kind
    try:
        converted = kind.from_text(value) if text else kind.coerce(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: expected {kind.name}: {exc}") from exc
    if kind.expands_home:
        converted = type(converted)(_expand_home(str(converted), env))
    return converted


def _expand_home(value: str, env: Mapping[str, str]) -> str:
    """Expand a leading ``~`` or ``~/`` from ``env``'s HOME and ``~user`` from the account."""
    if value == "~" or value.startswith("~/"):
        return str(home_dir(env)) + value[1:]
    if value.startswith("~"):
        return os.path.expanduser(value)
    return value


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
