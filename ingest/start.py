"""Starting, running and resuming ingests: the entry points the CLI (and others) call.

An ingest acts as the catalog's user: it needs write access to the project (a missing
project is created, which takes admin rights on the group).  It is audited once when it
starts, once per committed batch and once when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from catalog import audit
from catalog.access import require
from catalog.catalog import Catalog
from catalog.errors import InvalidInputError, NotFoundError
from catalog.models import Container, Level, RoleName
from catalog.paths import format_path, parse_path
from catalog.tree import find_child, resolve_container
from ingest import runs
from ingest.driver import Driver, ProgressCallback
from ingest.options import IngestOptions
from ingest.pipeline import dask_client


def start_ingest(cat: Catalog, options: IngestOptions) -> int:
    """Check access, create the project if needed, record a new IngestRun; returns its id."""
    source = options.open_source()  # fails early on a bad URL or a missing folder
    source.check()  # ... and on a bucket without a client library, account or credentials
    project = _project(cat, options.group, options.project)
    run_id = runs.create_run(
        cat.db, source.url, options.kind, project.id, options.to_json(), cat.actor.username
    )
    with cat.db.session() as session:
        audit.record(
            session,
            cat.actor,
            "ingest.start",
            "ingest",
            run_id,
            format_path([options.group, options.project]),
            source=source.url,
            kind=options.kind,
            dry_run=options.dry_run,
        )
    return run_id


def _project(cat: Catalog, group: str, label: str) -> Container:
    with cat.db.session(readonly=True) as session:
        parent = resolve_container(session, parse_path(group))
        if parent.level != Level.GROUP:
            raise InvalidInputError(f"{group!r} is not a group")
        project = find_child(session, parent, label)
    if project is None:
        return cat.create_project(group, label)
    with cat.db.session(readonly=True) as session:
        require(session, cat.actor, project, RoleName.READ_WRITE)
    return project


def run_ingest(
    cat: Catalog,
    run_id: int,
    *,
    store_url: str,
    store_options: Mapping[str, Any] | None = None,
    cluster: str | None = None,
    workers: int = 2,
    slurm_section: Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
) -> runs.RunInfo:
    """Run (or continue) ingest ``run_id`` to its end; returns the final run.

    ``store_url``/``store_options`` name the catalog's blob store for the workers.  A folder
    dry run needs no cluster; everything else runs on the Dask cluster ``cluster`` names
    (see :func:`ingest.pipeline.dask_client`).
    """
    run = runs.load_run(cat.db, run_id)
    if run.project_id is None:
        raise NotFoundError(f"the project of ingest {run_id} was removed")
    with cat.db.session(readonly=True) as session:
        project = session.get(Container, run.project_id)
        if project is None:
            raise NotFoundError(f"the project of ingest {run_id} was removed")
        require(session, cat.actor, project, RoleName.READ_WRITE)
    options = IngestOptions.from_json(run.options)

    def drive(client: Any) -> None:
        Driver(cat, run, client, store_url, dict(store_options or {}), on_progress).execute()

    if options.dry_run and options.kind == "folder":
        drive(None)
    else:
        with dask_client(cluster, workers, slurm_section) as client:
            drive(client)
    return runs.load_run(cat.db, run_id)


def resume_ingest(cat: Catalog, run_id: int, **kwargs: Any) -> runs.RunInfo:
    """Take over a stopped (killed, interrupted, failed) ingest and run it to its end."""
    run = runs.claim_run(cat.db, run_id)
    with cat.db.session() as session:
        audit.record(session, cat.actor, "ingest.resume", "ingest", run_id, run.source)
    return run_ingest(cat, run_id, **kwargs)
