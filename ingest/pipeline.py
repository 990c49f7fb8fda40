"""The Dask side of an ingest: which cluster runs the tasks, and a bounded task pump.

``--cluster`` values: ``local`` (default; a local cluster of worker processes), ``threads``
(one process, worker threads: small ingests and tests), ``slurm`` (dask-jobqueue workers
from the ``[backends.slurm]`` site config) or the address of a running scheduler
(``tcp://host:8786``).
"""

from __future__ import annotations

import logging
import pickle
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dask.config
from distributed import Client, LocalCluster, as_completed

from catalog.errors import ConfigError, GearbrokerError

#: Seconds to wait for the first worker of a Slurm or remote cluster.
WORKER_WAIT_S = 300.0
#: Entries Dask keeps in its developer logs while an ingest runs (recent messages on each
#: connection, transitions, events; Dask's default: 1000).  Each logged message holds the
#: tasks it carried, and an ingest task carries its shard's object list, so with the default
#: the driver (the client and, for local and Slurm clusters, the scheduler) grew by ~450
#: bytes a file for the first ~400,000 files.
DASK_LOG_LENGTH = 50
#: glibc allocator settings for the worker processes of a cluster the ingest starts.  Dask's
#: default sets only ``MALLOC_TRIM_THRESHOLD_`` (64 KiB), which also turns off glibc's
#: adaptive mmap threshold: every buffer over 128 KiB (a typical DICOM file read whole) was
#: then a fresh mmap, page-faulted in and unmapped again.  Measured on the 20,000-file
#: benchmark: 2-4 s less kernel time.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 4 << 20, "MALLOC_TRIM_THRESHOLD_": 64 << 20}


class IngestTaskError(GearbrokerError):
    """A Dask task failed as a whole (not one file: a worker crash, a bug)."""


@contextmanager
def dask_client(
    cluster: str | None, workers: int, slurm_section: Mapping[str, Any] | None = None
) -> Iterator[Client]:
    """A Dask client on the cluster ``cluster`` names, closed (and the cluster stopped) after;
    Dask's developer logs are kept to :data:`DASK_LOG_LENGTH` entries meanwhile, and worker
    processes it starts get :data:`WORKER_MALLOC`."""
    settings: dict[str, Any] = {"distributed.admin.low-level-log-length": DASK_LOG_LENGTH}
    for name, value in WORKER_MALLOC.items():
        settings[f"distributed.nanny.pre-spawn-environ.{name}"] = value
    with (
        dask.config.set(settings),
        _client(cluster, workers, slurm_section) as client,
    ):
        yield client


@contextmanager
def _client(
    cluster: str | None, workers: int, slurm_section: Mapping[str, Any] | None
) -> Iterator[Client]:
    workers = max(1, workers)
    name = cluster or "local"
    if name == "local":
        with _main_not_reimported():
            local = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=logging.ERROR,
            )
        with local, Client(local) as client:  # type: ignore[no-untyped-call]
            yield client
    elif name == "threads":
        local = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1,
            threads_per_worker=workers,
            processes=False,
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
        with local, Client(local) as client:  # type: ignore[no-untyped-call]
            yield client
    elif name == "slurm":
        from backends.slurm.dask import slurm_cluster

        if not slurm_section:
            raise ConfigError("--cluster slurm needs the [backends.slurm] site config")
        with slurm_cluster(slurm_section, workers) as jobs, Client(jobs) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            yield client
    elif "://" in name:
        try:
            client = Client(name, timeout=30)  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {name}: {exc}") from exc
        with client:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
            yield client
    else:
        raise ConfigError(f"unknown --cluster {name!r}: local, threads, slurm or tcp://host:port")


@contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While the local cluster spawns its workers, ``__main__`` names no file or module.

    Python's ``spawn`` start method re-imports the parent's main module in every child: for
    the ``gearbroker`` script that is the whole CLI, ~0.7 CPU-seconds a worker while the
    ingest waits for them (measured: the cluster up in 1.4-1.7 s instead of 0.45).  Ingest
    tasks live in :mod:`ingest.tasks`, never in ``__main__``; a worker Dask restarts later
    takes the usual path."""
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    spec, path = main.__spec__, main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__spec__ = spec
        if path is not None:
            main.__file__ = path


def worker_count(client: Client) -> int:
    """The number of worker threads the cluster has now (at least 1)."""
    info = client.scheduler_info()
    return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))


def pump(
    client: Client,
    task: Callable[..., Any],
    spec: Any,
    payloads: Iterator[tuple[Any, Any]],
    in_flight: int,
) -> Iterator[tuple[Any, Any]]:
    """Run ``task(spec, payload)`` for each ``(tag, payload)``, at most ``in_flight`` at once,
    yielding ``(tag, result)`` as tasks finish.  ``payloads`` is consumed lazily, so a
    streamed listing never sits in memory; a task that raises raises IngestTaskError.

    Each payload and each result travels as one pickle (see :func:`_pickled`)."""
    tags: dict[Any, Any] = {}
    done = as_completed()  # type: ignore[no-untyped-call]

    def submit() -> bool:
        try:
            tag, payload = next(payloads)
        except StopIteration:
            return False
        data = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        future = client.submit(_pickled, task, spec, data, pure=False)
        tags[future.key] = tag
        done.add(future)  # type: ignore[no-untyped-call]
        return True

    for _ in range(max(1, in_flight)):
        if not submit():
            break
    for future in done:
        tag = tags.pop(future.key)
        try:
            result = pickle.loads(future.result())  # noqa: S301 (our workers; Dask pickles too)
        except Exception as exc:
            raise IngestTaskError(f"an ingest task failed: {exc!r}") from exc
        finally:
            future.release()
        yield tag, result
        submit()


def _pickled(task: Callable[..., Any], spec: Any, payload: bytes) -> bytes:
    """``task(spec, pickle.loads(payload))`` as one pickle.  Dask would serialize a list of
    records item by item (a pickle and frames for each dict): 60-120 us a file in the
    worker and again in the driver, where one pickle of the whole list costs a few.  The
    payload comes pickled for a like reason: handed a shard's object list, ``submit`` walks
    every element of it looking for futures."""
    work = pickle.loads(payload)  # noqa: S301 (from our driver)
    return pickle.dumps(task(spec, work), protocol=pickle.HIGHEST_PROTOCOL)
