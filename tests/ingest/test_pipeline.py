"""The Dask side of an ingest: the task pump and the memory Dask keeps for it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import dask.config

from ingest.pipeline import DASK_LOG_LENGTH, WORKER_MALLOC, dask_client, pump

LOG_KEY = "distributed.admin.low-level-log-length"
REPO = Path(__file__).resolve().parents[2]


def _count(_spec: Any, payload: list[list[Any]]) -> int:
    return len(payload)


def test_dask_keeps_only_a_short_log_of_the_shards_it_carried() -> None:
    """Dask logs the recent messages of every connection, and each compute-task message
    holds its shard's object list: with Dask's default of 1000 entries the driver grew with
    every shard.  While the client is open the logs are capped; afterwards the setting is
    back as it was."""
    before = dask.config.get(LOG_KEY)
    shards = 3 * DASK_LOG_LENGTH
    payloads = ((n, [[f"k{n}-{i}", 100_000, "etag"] for i in range(200)]) for n in range(shards))
    with dask_client("threads", 1) as client:
        assert dask.config.get(LOG_KEY) == DASK_LOG_LENGTH
        results = dict(pump(client, _count, None, payloads, in_flight=2))
        assert results == dict.fromkeys(range(shards), 200)
        scheduler = client.cluster.scheduler  # type: ignore[union-attr]
        logs = [comm.recent_message_log for comm in scheduler.stream_comms.values()]
        logs.append(client.scheduler_comm.recent_message_log)
        assert all(log.maxlen == DASK_LOG_LENGTH for log in logs)
        assert max(len(log) for log in logs) == DASK_LOG_LENGTH  # full, and no longer
    assert dask.config.get(LOG_KEY) == before


def _malloc_env(_spec: Any, names: list[str]) -> dict[str, str | None]:
    import os

    return {name: os.environ.get(name) for name in names}


def test_worker_processes_keep_file_buffers_off_the_mmap_path() -> None:
    """Dask's default environment for worker processes sets only MALLOC_TRIM_THRESHOLD_,
    which turns off glibc's adaptive mmap threshold; the ingest's local cluster sets both."""
    names = sorted(WORKER_MALLOC)
    with dask_client("local", 1) as client:
        ((_tag, seen),) = list(pump(client, _malloc_env, None, iter([(0, names)]), in_flight=1))
    assert seen == {name: str(WORKER_MALLOC[name]) for name in names}


def test_local_workers_do_not_import_the_main_module_again(tmp_path: Path) -> None:
    """Spawned workers re-import the parent's ``__main__`` (for the ``gearbroker`` script,
    the whole CLI): not while the ingest's local cluster starts them."""
    marker, script = tmp_path / "imported-as", tmp_path / "main.py"
    script.write_text(
        textwrap.dedent(f"""
            import sys
            with open({str(marker)!r}, "a") as fh:
                fh.write(__name__ + "\\n")
            from ingest.pipeline import dask_client, pump
            if __name__ == "__main__":
                with dask_client("local", 2) as client:
                    print(sorted(pump(client, max, 0, iter([(0, 5), (1, -5)]), in_flight=2)))
                print(sys.modules["__main__"].__file__ == {str(script)!r})
        """)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["[(0, 5), (1, 0)]", "True"]
    assert marker.read_text().split() == ["__main__"]  # never as the workers' __mp_main__
