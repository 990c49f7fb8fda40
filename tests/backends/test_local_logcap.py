"""The capped task log: head and tail kept, the middle dropped with a marker."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.local.logcap import CappedLog


def write_all(path: Path, limit: int, chunks: list[bytes]) -> CappedLog:
    log = CappedLog(path, limit)
    for chunk in chunks:
        log.write(chunk)
    log.close()
    return log


def test_small_log_is_kept_whole(tmp_path: Path) -> None:
    log = write_all(tmp_path / "out.log", 10, [b"abc", b"defgh", b"ij"])
    assert (tmp_path / "out.log").read_bytes() == b"abcdefghij"
    assert log.dropped == 0
    assert log.total == 10


def test_head_is_followable_while_running(tmp_path: Path) -> None:
    log = CappedLog(tmp_path / "out.log", 10)
    log.write(b"abcdefgh")
    assert (tmp_path / "out.log").read_bytes().startswith(b"abcde")
    log.close()


def test_overflow_keeps_head_and_tail_with_marker(tmp_path: Path) -> None:
    data = bytes(range(256)) * 40
    log = write_all(tmp_path / "out.log", 100, [data[i : i + 7] for i in range(0, len(data), 7)])
    dropped = len(data) - 100
    expected = data[:50] + f"\n[... {dropped} bytes of log dropped ...]\n".encode() + data[-50:]
    assert (tmp_path / "out.log").read_bytes() == expected
    assert log.dropped == dropped
    assert [p.name for p in tmp_path.iterdir()] == ["out.log"]


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=0, max_value=40),
    chunks=st.lists(st.binary(min_size=0, max_size=30), max_size=12),
)
def test_any_stream_keeps_exact_head_and_tail(
    tmp_path_factory: pytest.TempPathFactory, limit: int, chunks: list[bytes]
) -> None:
    path = tmp_path_factory.mktemp("log") / "out.log"
    log = write_all(path, limit, chunks)
    data = b"".join(chunks)
    head, tail = limit // 2, limit - limit // 2
    if len(data) <= limit:
        assert path.read_bytes() == data
    else:
        marker = f"\n[... {len(data) - limit} bytes of log dropped ...]\n".encode()
        kept_tail = data[len(data) - tail :] if tail else b""
        assert path.read_bytes() == data[:head] + marker + kept_tail
    assert log.total == len(data)
