"""The service scripts parse, their shared helpers behave, and the service fixtures work."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((REPO / "scripts").rglob("*.sh"))
LIB = REPO / "scripts" / "services" / "lib.sh"


def test_scripts_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in SCRIPTS}
    assert {
        "scripts/bootstrap.sh",
        "scripts/services/lib.sh",
        "scripts/services/postgres.sh",
        "scripts/services/moto.sh",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.relative_to(REPO).as_posix())
def test_script_syntax(script: Path) -> None:
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _lib(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f'set -euo pipefail; source "$1"; {body}', "lib-test", str(LIB)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "GB_SERVICES_DIR": str(tmp_path)},
    )


def test_lib_write_env_and_free_port(tmp_path: Path) -> None:
    result = _lib(tmp_path, 'write_env demo "A=http://x:1/y" "B=two words"; free_port')
    assert result.returncode == 0, result.stderr
    assert 1024 <= int(result.stdout) <= 65535
    env_file = tmp_path / "demo.env"
    assert env_file.read_text().splitlines() == [
        "export A=http://x:1/y",
        "export B=two\\ words",
    ]
    sourced = subprocess.run(
        ["bash", "-c", 'source "$1"; printf "%s|%s" "$A" "$B"', "src", str(env_file)],
        capture_output=True,
        text=True,
    )
    assert sourced.stdout == "http://x:1/y|two words"


def test_lib_wait_for_times_out(tmp_path: Path) -> None:
    ok = _lib(tmp_path, "wait_for -t 1 true")
    assert ok.returncode == 0, ok.stderr
    failed = _lib(tmp_path, "wait_for -t 1 false || echo gave-up")
    assert failed.stdout.strip() == "gave-up"
    assert "timed out" in failed.stderr


@pytest.mark.s3
def test_s3_bucket_put_get(s3_client: Any, s3_bucket: str) -> None:
    s3_client.put_object(Bucket=s3_bucket, Key="a/b.txt", Body=b"payload")
    body = s3_client.get_object(Bucket=s3_bucket, Key="a/b.txt")["Body"].read()
    assert body == b"payload"
    listed = s3_client.list_objects_v2(Bucket=s3_bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["a/b.txt"]


@pytest.mark.postgres
def test_pg_url_connects(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("select 1")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_database_is_fresh(pg_url: str, pg_database: str) -> None:
    name = sa.make_url(pg_database).database
    assert name != sa.make_url(pg_url).database
    engine = sa.create_engine(pg_database)
    try:
        with engine.begin() as conn:
            assert conn.execute(sa.text("select current_database()")).scalar_one() == name
            assert sa.inspect(conn).get_table_names() == []
            conn.execute(sa.text("create table t (x int)"))
            conn.execute(sa.text("insert into t values (1)"))
    finally:
        engine.dispose()


def test_lib_emulator_starts_reports_and_stops_a_server(tmp_path: Path) -> None:
    extra = LIB.parent / "lib_extra.sh"
    emulator = LIB.parent / "lib_emulator.sh"
    body = (
        f'source "{extra}"; source "{emulator}"; '
        'emu_start web "" python3 -m http.server "{port}" --bind 127.0.0.1; '
        "emu_start web '' false; "  # running: not started again
        'port="$(emu_port web)"; emu_status web; '
        'emu_stop web; emu_status web || echo "stopped with $?"; '
        '! port_in_use "$port" && echo "port $port free"'
    )
    result = _lib(tmp_path, body)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("running: 127.0.0.1:") and lines[1] == "not running"
    assert lines[2] == "stopped with 3" and lines[3].startswith("port ")
    assert not (tmp_path / "web.pid").exists()
