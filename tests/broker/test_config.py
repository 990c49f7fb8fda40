"""Tests for broker.config: layering, sources, conversion, errors and init file writing."""

from __future__ import annotations

import getpass
import re
import tomllib
from pathlib import Path

import pytest

from broker.config import (
    DEFAULT_SOURCE,
    FLAG_SOURCE,
    load_settings,
    render_default_config,
    write_default_config,
)
from broker.config_schema import BOOL, FLOAT, INT, LIST, REGISTRY, env_var_for
from catalog.errors import ConfigError, ConflictError

HOSTILE = [
    "$(rm -rf /)",
    "`reboot`",
    "a; rm -rf ~",
    "line1\nline2",
    "${HOME} && echo $USER | cat > /etc/passwd",
]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A hermetic environment rooted in tmp_path."""
    return {"HOME": str(tmp_path / "home"), "USER": "alice", **extra}


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_follow_home_and_data_dir(tmp_path: Path) -> None:
    home = tmp_path / "home"
    s = load_settings(env=_env(tmp_path))
    data = home / ".local/share/gearbroker"
    assert s.data_dir == data
    assert s.database_url == f"sqlite:///{data}/catalog.db"
    assert s.store_url == str(data / "blobs")
    assert s.work_dir == data / "jobs"
    assert s.user == "alice"
    assert (s.backend, s.runtime, s.poll_interval, s.max_concurrent) == ("local", "auto", 2.0, 0)
    assert s.get("ingest.shard_files") == 200
    assert s.get("ingest.workers") is None
    assert s.store_endpoint_url is None
    assert s.config_path == home / ".config/gearbroker/config.toml"
    assert not s.config_found
    assert set(s.sources.values()) == {DEFAULT_SOURCE}
    assert [row[0] for row in s.as_rows()] == list(REGISTRY)


def test_xdg_paths(tmp_path: Path) -> None:
    env = _env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "d"))
    s = load_settings(env=env)
    assert s.config_path == tmp_path / "cfg/gearbroker/config.toml"
    assert s.data_dir == tmp_path / "d/gearbroker"
    assert s.database_url == f"sqlite:///{tmp_path}/d/gearbroker/catalog.db"


def test_relative_xdg_vars_are_ignored(tmp_path: Path) -> None:
    s = load_settings(env=_env(tmp_path, XDG_CONFIG_HOME="rel", XDG_DATA_HOME="rel"))
    assert s.config_path == tmp_path / "home/.config/gearbroker/config.toml"
    assert s.data_dir == tmp_path / "home/.local/share/gearbroker"


def test_gearbroker_config_selects_file_and_path_argument_wins(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.toml", '[broker]\nbackend = "slurm"\n')
    b = _write(tmp_path / "b.toml", '[broker]\nbackend = "kubernetes"\n')
    env = _env(tmp_path, GEARBROKER_CONFIG=str(a))
    assert load_settings(env=env).backend == "slurm"
    s = load_settings(env=env, path=b)
    assert (s.backend, s.sources["broker.backend"], s.config_found) == ("kubernetes", str(b), True)


def test_gearbroker_config_expands_tilde(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    _write(home / "g.toml", "[ingest]\nshard_files = 7\n")
    s = load_settings(env=_env(tmp_path, GEARBROKER_CONFIG="~/g.toml"))
    assert s.config_path == home / "g.toml"
    assert s.get("ingest.shard_files") == 7


def test_precedence_default_file_env_flag(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "c.toml",
        '[broker]\nbackend = "slurm"\nruntime = "podman"\npoll_interval = 5\nmax_concurrent = 3\n',
    )
    env = _env(
        tmp_path,
        GEARBROKER_BROKER__RUNTIME="docker",
        GEARBROKER_BROKER__POLL_INTERVAL="0.5",
        GEARBROKER_BROKER__MAX_CONCURRENT="4",
    )
    flags = {"broker.poll_interval": 9.5, "broker.max_concurrent": None}
    s = load_settings(flags=flags, env=env, path=cfg)
    assert s.backend == "slurm"
    assert s.sources["broker.backend"] == str(cfg)
    assert s.runtime == "docker"
    assert s.sources["broker.runtime"] == "GEARBROKER_BROKER__RUNTIME"
    assert s.poll_interval == 9.5
    assert s.sources["broker.poll_interval"] == FLAG_SOURCE
    assert s.max_concurrent == 4  # a None flag is "not given"
    assert s.sources["broker.max_concurrent"] == "GEARBROKER_BROKER__MAX_CONCURRENT"
    assert s.sources["ingest.shard_files"] == DEFAULT_SOURCE
    rows = {key: (value, source) for key, value, source in s.as_rows()}
    assert rows["broker.runtime"] == ("docker", "GEARBROKER_BROKER__RUNTIME")


def test_file_float_accepts_toml_integer(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "c.toml", "[broker]\npoll_interval = 5\n")
    value = load_settings(env=_env(tmp_path), path=cfg).poll_interval
    assert value == 5.0
    assert isinstance(value, float)


def test_derived_defaults_follow_overridden_data_dir(tmp_path: Path) -> None:
    s = load_settings(env=_env(tmp_path, GEARBROKER_DATA_DIR="~/data"))
    data = tmp_path / "home/data"
    assert s.data_dir == data
    assert s.sources["catalog.data_dir"] == "GEARBROKER_DATA_DIR"
    assert s.database_url == f"sqlite:///{data}/catalog.db"
    assert s.work_dir == data / "jobs"
    assert s.sources["catalog.database"] == DEFAULT_SOURCE


def test_short_env_forms_and_full_form_wins(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        GEARBROKER_DATABASE="postgresql+psycopg://db/x",
        GEARBROKER_STORE="s3://bucket/prefix",
        GEARBROKER_USER="bob",
    )
    s = load_settings(env=env)
    assert (s.database_url, s.store_url, s.user) == (
        "postgresql+psycopg://db/x",
        "s3://bucket/prefix",
        "bob",
    )
    assert s.sources["user.name"] == "GEARBROKER_USER"
    env["GEARBROKER_USER__NAME"] = "carol"
    s = load_settings(env=env)
    assert (s.user, s.sources["user.name"]) == ("carol", "GEARBROKER_USER__NAME")


def test_non_setting_env_vars_are_ignored(tmp_path: Path) -> None:
    env = _env(tmp_path, GEARBROKER_TEST_PG_URL="postgresql://x", OTHER__THING="1")
    assert load_settings(env=env).sources["catalog.database"] == DEFAULT_SOURCE


def test_env_var_names() -> None:
    assert env_var_for("catalog.store_endpoint_url") == "GEARBROKER_CATALOG__STORE_ENDPOINT_URL"
    assert REGISTRY["backends.local.workers"].env_var == "GEARBROKER_BACKENDS__LOCAL__WORKERS"


@pytest.mark.parametrize(
    ("var", "value", "expected"),
    [
        ("GEARBROKER_BROKER__MAX_CONCURRENT", "many", "integer"),
        ("GEARBROKER_BROKER__POLL_INTERVAL", "fast", "float"),
        ("GEARBROKER_INGEST__SHARD_FILES", "2.5", "integer"),
        ("GEARBROKER_DATA_DIR", "", "path"),
    ],
)
def test_env_type_errors_name_variable_and_type(
    tmp_path: Path, var: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError, match=rf"{var}: expected {expected}"):
        load_settings(env=_env(tmp_path, **{var: value}))


def test_unknown_env_setting_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"GEARBROKER_CATLOG__DATABASE.*'catlog.database'"):
        load_settings(env=_env(tmp_path, GEARBROKER_CATLOG__DATABASE="x"))


@pytest.mark.parametrize(
    ("text", "value"),
    [("1", True), ("yes", True), ("TRUE", True), ("0", False), ("no", False), ("False", False)],
)
def test_bool_from_text(text: str, value: bool) -> None:
    assert BOOL.from_text(text) is value


def test_bool_from_text_rejects_other_words() -> None:
    with pytest.raises(ValueError, match="1/0/true/false/yes/no"):
        BOOL.from_text("maybe")


def test_list_from_text() -> None:
    assert LIST.from_text("a, b,,c ") == ["a", "b", "c"]
    assert LIST.from_text('["a,b", " c"]') == ["a,b", " c"]
    assert LIST.from_text("") == []
    with pytest.raises(ValueError, match="JSON"):
        LIST.from_text("[1,")
    with pytest.raises(ValueError, match="list of strings"):
        LIST.from_text("[1, 2]")


def test_numbers_from_text_and_typed_values() -> None:
    assert INT.from_text(" 12 ") == 12
    assert FLOAT.from_text("1e-3") == 0.001
    with pytest.raises(ValueError):
        INT.coerce(True)
    with pytest.raises(ValueError):
        FLOAT.coerce("2.0")


def test_bad_toml_names_file_and_line(tmp_path: Path) -> None:
    cfg = _write(tmp_path / "bad.toml", '[catalog]\ndatabase = "x"\nstore = \n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}: invalid TOML: .*line 3"):
        load_settings(env=_env(tmp_path), path=cfg)


def test_non_utf8_file_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "bin.toml"
    cfg.write_bytes(b'[catalog]\ndatabase = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(env=_env(tmp_path), path=cfg)


def test_unreadable_config_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(env=_env(tmp_path), path=tmp_path)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[catalog]\ndatabse = 'x'\n", "catalog.databse"),
        ("colour = 'blue'\n", "colour"),
        ("[backends.local]\nnodes = 2\n", "backends.local.nodes"),
        ("catalog = 'x'\n", "catalog"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path: Path, text: str, key: str) -> None:
    cfg = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}: unknown setting '{key}'"):
        load_settings(env=_env(tmp_path), path=cfg)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[broker]\nmax_concurrent = '4'\n", "broker.max_concurrent", "integer"),
        ("[broker]\nmax_concurrent = true\n", "broker.max_concurrent", "integer"),
        ("[broker]\npoll_interval = 'fast'\n", "broker.poll_interval", "float"),
        ("[catalog.database]\nurl = 'x'\n", "catalog.database", "string"),
    ],
)
def test_wrong_type_in_file(tmp_path: Path, text: str, key: str, expected: str) -> None:
    cfg = _write(tmp_path / "c.toml", text)
    with pytest.raises(ConfigError, match=rf"{re.escape(str(cfg))}: {key}: expected {expected}"):
        load_settings(env=_env(tmp_path), path=cfg)


def test_open_backend_tables_keep_values(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "c.toml",
        "[backends.slurm]\npartition = 'gpu'\nnodes = 4\nextra = ['--qos=low']\n"
        "[backends.kubernetes]\nnamespace = 'imaging'\n"
        "[backends.kubernetes.resources]\ncpu = 2.5\n",
    )
    env = _env(tmp_path, GEARBROKER_BACKENDS__SLURM__ACCOUNT="lab")
    flags = {"backends.kubernetes.namespace": "other"}
    s = load_settings(flags=flags, env=env, path=cfg)
    assert s.section("backends.slurm") == {
        "partition": "gpu",
        "nodes": 4,
        "extra": ["--qos=low"],
        "account": "lab",
    }
    assert s.section("backends.kubernetes") == {"namespace": "other", "resources": {"cpu": 2.5}}
    assert s.sources["backends.slurm.nodes"] == str(cfg)
    assert s.sources["backends.slurm.account"] == "GEARBROKER_BACKENDS__SLURM__ACCOUNT"
    assert s.sources["backends.kubernetes.namespace"] == FLAG_SOURCE
    rows = s.as_rows()
    assert ("backends.slurm.partition", "gpu", str(cfg)) in rows
    assert rows[: len(REGISTRY)] == [(k, s.get(k), s.sources[k]) for k in REGISTRY]
    assert s.section("backends.local") == {"scheduler": None, "workers": None}


def test_flags(tmp_path: Path) -> None:
    flags = {"catalog.data_dir": "~/fl", "broker.max_concurrent": "3", "user.name": "dave"}
    s = load_settings(flags=flags, env=_env(tmp_path))
    assert s.data_dir == tmp_path / "home/fl"
    assert s.max_concurrent == 3
    assert s.user == "dave"
    with pytest.raises(ConfigError, match=r"flag broker.max_concurrent: expected integer"):
        load_settings(flags={"broker.max_concurrent": 1.5}, env=_env(tmp_path))
    with pytest.raises(ConfigError, match=r"flag broker\.nope: unknown setting"):
        load_settings(flags={"broker.nope": 1}, env=_env(tmp_path))


def test_get_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'broker\.nope'"):
        load_settings(env=_env(tmp_path)).get("broker.nope")


def test_tilde_expanded_only_for_path_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cfg = _write(
        tmp_path / "c.toml",
        "[catalog]\ndata_dir = '~/d'\nstore = '~/blobs'\ndatabase = 'sqlite:///~/x.db'\n"
        "[user]\nname = '~root'\n[broker]\nwork_dir = 'rel/~/jobs'\n",
    )
    s = load_settings(env=_env(tmp_path), path=cfg)
    assert s.data_dir == home / "d"
    assert s.store_url == f"{home}/blobs"
    assert s.database_url == "sqlite:///~/x.db"
    assert s.user == "~root"
    assert s.work_dir == Path("rel/~/jobs")


@pytest.mark.parametrize("value", HOSTILE)
def test_shell_metacharacters_are_kept_verbatim(tmp_path: Path, value: str) -> None:
    s = load_settings(env=_env(tmp_path, GEARBROKER_USER=value, GEARBROKER_DATABASE=value))
    assert (s.user, s.database_url) == (value, value)
    s = load_settings(flags={"broker.runtime": value}, env=_env(tmp_path))
    assert s.runtime == value
    cfg = tmp_path / "c.toml"
    cfg.write_text(f"[catalog]\nstore = {_basic(value)}\n", encoding="utf-8")
    assert load_settings(env=_env(tmp_path), path=cfg).store_url == value


def _basic(value: str) -> str:
    """Quote ``value`` as a TOML multi-line-safe basic string for the test file."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


ROUND_TRIP = [
    'quote " and backslash \\ and C:\\temp',
    "unicode: Zürich \u2013 日本語 \u00e9 🧠",
    "control \t tab \r cr \x01 \x7f del\nnewline",
    "$(rm -rf /); `x` 'single'",
    "''' and \"\"\" triple",
]


@pytest.mark.parametrize("value", ROUND_TRIP)
def test_write_default_config_round_trip(tmp_path: Path, value: str) -> None:
    flags = {
        "catalog.database": f"sqlite:///{value}",
        "catalog.store": value,
        "catalog.data_dir": f"/data/{value}",
        "catalog.store_endpoint_url": f"http://{value}",
    }
    s = load_settings(flags=flags, env=_env(tmp_path))
    target = tmp_path / "new" / "dir" / "config.toml"
    write_default_config(target, s)
    back = load_settings(env=_env(tmp_path), path=target)
    for key in flags:
        assert back.get(key) == s.get(key)
        assert back.sources[key] == str(target)
    assert tomllib.loads(target.read_text(encoding="utf-8"))["catalog"]["store"] == value


def test_written_file_is_commented_and_skips_unset_values(tmp_path: Path) -> None:
    s = load_settings(env=_env(tmp_path))
    text = render_default_config(s)
    assert text.startswith("# gearbroker configuration")
    assert "# SQLAlchemy URL of the catalog database." in text
    assert "store_endpoint_url" not in text
    assert set(tomllib.loads(text)["catalog"]) == {"data_dir", "database", "store"}


def test_write_default_config_refuses_to_overwrite(tmp_path: Path) -> None:
    target = _write(tmp_path / "config.toml", "# mine\n")
    s = load_settings(env=_env(tmp_path))
    with pytest.raises(ConflictError, match="already exists"):
        write_default_config(target, s)
    assert target.read_text(encoding="utf-8") == "# mine\n"
    write_default_config(target, s, force=True)
    assert load_settings(env=_env(tmp_path), path=target).database_url == s.database_url


def test_write_default_config_unwritable_target(tmp_path: Path) -> None:
    blocker = _write(tmp_path / "file", "")
    with pytest.raises(ConfigError, match="cannot write"):
        write_default_config(blocker / "config.toml", load_settings(env=_env(tmp_path)))


def test_load_settings_creates_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "d"))
    load_settings(env=env)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_user_default_without_login_name(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_user() -> str:
        raise KeyError("uid 12345 not found")

    monkeypatch.setattr(getpass, "getuser", no_user)
    with pytest.raises(ConfigError, match="set GEARBROKER_USER"):
        load_settings(env={"HOME": "/h"})
    assert load_settings(env={"HOME": "/h", "GEARBROKER_USER": "eve"}).user == "eve"


def test_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEARBROKER_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("GEARBROKER_INGEST__WORKERS", "6")
    s = load_settings()
    assert s.get("ingest.workers") == 6
    assert s.config_path == tmp_path / "absent.toml"
