"""Engines, sessions and schema versioning for the catalog database.

SQLite is the embedded default: WAL journal, a 30 s busy timeout and ``BEGIN IMMEDIATE`` for
write transactions, so two processes writing at once queue instead of failing with
"database is locked" (a deferred transaction that upgrades from read to write would get
SQLITE_BUSY without waiting).  PostgreSQL is used through psycopg 3
(``postgresql+psycopg://...``).  The schema is owned by Alembic; :func:`check_schema` refuses a
database whose revision differs from the code's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from catalog import jsoncodec
from catalog.errors import DatabaseError, SchemaOutdatedError
from catalog.query.functions import install_sqlite_functions

SQLITE_BUSY_TIMEOUT_S = 30.0


def normalize_url(url: str) -> str:
    """Accept a bare path as SQLite and ``postgresql://`` as psycopg 3."""
    if "://" not in url:
        return f"sqlite:///{Path(url).expanduser().resolve()}"
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the catalog's per-dialect settings."""
    url = normalize_url(url)
    kwargs.setdefault("json_serializer", jsoncodec.dumps)
    kwargs.setdefault("json_deserializer", jsoncodec.loads)
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise DatabaseError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "isolation_level": None},
            **kwargs,
        )
        _configure_sqlite(engine)
        install_sqlite_functions(engine)
        return engine
    if parsed.get_backend_name() == "postgresql":
        kwargs.setdefault("pool_pre_ping", True)
        # No server-side prepared statements: psycopg prepares a query after 5 runs, and
        # PostgreSQL may then switch to a generic plan that ignores the parameters; on 1M
        # files that made a search ~8x slower.  Searches are planned per run instead.
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("prepare_threshold", None)
        return create_engine(url, connect_args=connect_args, **kwargs)
    raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r} (sqlite, postgresql)")


#: Set on every SQLite connection.  WAL with ``synchronous=NORMAL``: a commit survives a crash
#: of the process (not always a power cut).  A 64 MiB page cache (SQLite's default: 2 MiB)
#: holds the hot index pages of a million-file catalog, and checkpoints every 64 MiB of WAL
#: (default: 4 MiB) fsync the database 16 times less often during bulk writes.
SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "foreign_keys=ON",
    "cache_size=-65536",
    "wal_autocheckpoint=16384",
)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "DEFERRED" if conn.get_execution_options().get("gb_readonly") else "IMMEDIATE"
        # Straight to the driver: a statement through SQLAlchemy costs ~25 us more, which is
        # a sixth of a short search.
        try:
            conn.connection.driver_connection.execute(f"BEGIN {mode}")
        except sqlite3.OperationalError as exc:  # e.g. locked longer than the busy timeout
            raise DatabaseError(f"cannot begin a transaction on the catalog: {exc}") from exc


#: Driver connections a Database on a SQLite file keeps for searches (see
#: :meth:`Database.driver_connection`).
SPARE_DRIVER_CONNECTIONS = 4


class Database:
    """An engine plus session factories for read-write and read-only work."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalize_url(url)
        self.engine = make_engine(self.url, **engine_kwargs)
        self._write = sessionmaker(self.engine, expire_on_commit=False)
        self._read = sessionmaker(
            self.engine.execution_options(gb_readonly=True), expire_on_commit=False
        )
        # Only a file's connections can be kept: each new :memory: connection is a new database.
        self._keeps_spares = self.dialect == "sqlite" and isinstance(self.engine.pool, QueuePool)
        self._spares: list[Any] = []
        self._spares_pid = os.getpid()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, readonly: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.  A
        database failure that the code inside did not handle (the server gone, a disk
        full, a file that is not a database) leaves as a :class:`DatabaseError`; an
        ``IntegrityError`` (a unique key clash) leaves as it is, for callers that retry."""
        factory = self._read if readonly else self._write
        with factory() as sess:
            try:
                yield sess
                sess.commit()  # read-only: nothing to write, but keeps loaded objects usable
            except sa_exc.IntegrityError:  # a clash: the callers that expect one handle it
                sess.rollback()
                raise
            except sa_exc.DBAPIError as exc:
                # The connection may be what failed: report this error, not the rollback's
                # (the pool discards a connection it cannot roll back).
                with suppress(sa_exc.DBAPIError):
                    sess.rollback()
                raise DatabaseError(f"catalog database error: {exc.orig}") from exc
            except BaseException:
                sess.rollback()
                raise

    @contextmanager
    def driver_connection(self) -> Iterator[Any]:
        """A DBAPI connection for statements run straight on the driver (searches), apart
        from any session's transaction.  A failed connect raises DatabaseError.

        On a SQLite file, up to :data:`SPARE_DRIVER_CONNECTIONS` such connections are kept
        out of the pool and reused: a pool checkout and return cost ~10 us, a quarter of a
        short indexed search.  One goes back only if it left no transaction open and raised
        nothing; a forked child never uses its parent's.  Elsewhere (PostgreSQL, an
        in-memory SQLite) it is a pooled connection, whose return rolls back what psycopg
        began."""
        if not self._keeps_spares:
            pooled = self._checkout()
            try:
                yield pooled.driver_connection
            finally:
                pooled.close()
            return
        if self._spares_pid != os.getpid():  # the parent's connections must not be touched
            self._spares, self._spares_pid = [], os.getpid()
        try:
            conn = self._spares.pop()
        except IndexError:
            pooled = self._checkout()
            conn = pooled.driver_connection
            pooled.detach()
        reuse = True
        try:
            yield conn
        except Exception:
            reuse = False
            raise
        finally:
            if reuse and not conn.in_transaction and len(self._spares) < SPARE_DRIVER_CONNECTIONS:
                self._spares.append(conn)
            else:
                conn.close()

    def _checkout(self) -> Any:
        try:
            return self.engine.raw_connection()
        except sa_exc.DBAPIError as exc:
            raise DatabaseError(f"cannot open the catalog database: {exc.orig}") from exc

    def dispose(self) -> None:
        """Close the pool's connections and the kept driver connections."""
        spares, self._spares = self._spares, []
        if self._spares_pid == os.getpid():
            for conn in spares:
                conn.close()
        self.engine.dispose()


def _alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("catalog") / "migrations"))
    cfg.attributes["engine"] = engine
    return cfg


def head_revision() -> str:
    """The newest migration revision this code knows."""
    script = ScriptDirectory.from_config(_alembic_config(create_engine("sqlite://")))
    head = script.get_current_head()
    if head is None:
        raise DatabaseError("no migrations found in the catalog package")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(_alembic_config(engine), revision)


def check_schema(engine: Engine) -> None:
    """Raise unless the database is at exactly this code's schema revision."""
    try:
        current = current_revision(engine)
    except sa_exc.DBAPIError as exc:  # refused, missing, or not a database at all
        raise DatabaseError(f"cannot open the catalog database: {exc.orig}") from exc
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaOutdatedError(
            "the catalog database has no schema yet: "
            "run `gearbroker init` or `gearbroker db upgrade`"
        )
    script = ScriptDirectory.from_config(_alembic_config(engine))
    known = {rev.revision for rev in script.walk_revisions()}
    if current in known:
        raise SchemaOutdatedError(
            f"the catalog schema is at revision {current}, older than this code's {head}: "
            "run `gearbroker db upgrade`"
        )
    raise SchemaOutdatedError(
        f"the catalog schema is at revision {current}, unknown to this code (head {head}): "
        "it was upgraded by a newer gearbroker"
    )
