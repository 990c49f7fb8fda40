"""Find or create the subjects, sessions and acquisitions of an ingest, in bulk.

A path below the project is a tuple of ``(label, uid)`` per level.  A container matches by
label unless both it and the incoming path carry a UID (``info.uid``: StudyInstanceUID for
sessions, SeriesInstanceUID for acquisitions) and they differ: then the label gets a short
UID suffix, so two studies that share a description never merge.  Lookups and inserts are
one query per level per batch; a bounded cache keeps repeat batches cheap.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.orm import Session

from catalog.models import ANCESTOR_COLUMNS, HIERARCHY, Container, Level, utcnow
from catalog.paths import validate_label

Path = tuple[tuple[str, str | None], ...]
Ancestors = dict[str, int | None]
_CACHE_SIZE = 20_000
_CHUNK = 500


class ContainerResolver:
    """Resolves paths below one project to container ids (creating what is missing)."""

    def __init__(self, project_id: int, project_ancestors: Ancestors) -> None:
        self.project_id = project_id
        self.root: Ancestors = dict(project_ancestors)
        self._cache: OrderedDict[tuple[int, str, str | None], tuple[int, Ancestors]] = OrderedDict()
        self.created = 0

    def resolve(
        self, session: Session, paths: Sequence[Path], *, create: bool = True
    ) -> dict[Path, tuple[int, Ancestors] | None]:
        """Container id and file ancestor ids per path (None: missing and not created)."""
        found: dict[Path, tuple[int, Ancestors] | None] = {(): (self.project_id, self.root)}
        depth = max((len(p) for p in paths), default=0)
        for size in range(1, depth + 1):
            level = HIERARCHY[1 + size]
            wanted: dict[tuple[int, str, str | None], list[Path]] = {}
            for path in {p[:size] for p in paths if len(p) >= size}:
                parent = found.get(path[:-1])
                if parent is None:
                    found[path] = None
                    continue
                label, uid = path[-1]
                wanted.setdefault((parent[0], validate_label(label, level), uid), []).append(path)
            parents = {key[0]: found[paths_[0][:-1]] for key, paths_ in wanted.items()}
            resolved = self._level(session, level, list(wanted), parents, create)
            for key, paths_ in wanted.items():
                for path in paths_:
                    found[path] = resolved.get(key)
        return found

    def _level(
        self,
        session: Session,
        level: Level,
        keys: list[tuple[int, str, str | None]],
        parents: dict[int, tuple[int, Ancestors] | None],
        create: bool,
    ) -> dict[tuple[int, str, str | None], tuple[int, Ancestors]]:
        out: dict[tuple[int, str, str | None], tuple[int, Ancestors]] = {}
        misses = []
        for key in keys:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                out[key] = hit
            else:
                misses.append(key)
        if not misses:
            return out
        existing = self._existing(session, misses)
        to_create: list[tuple[tuple[int, str, str | None], str]] = []
        planned: dict[tuple[int, str], tuple[tuple[int, str, str | None], str | None]] = {}
        aliases: list[tuple[tuple[int, str, str | None], tuple[int, str, str | None]]] = []
        for key in misses:
            parent_id, label, uid = key
            choice = _choose(existing.get((parent_id, label)), uid)
            if choice is None and uid:
                alt = _suffixed(label, uid)
                choice = _choose(existing.get((parent_id, alt)), uid)
                if (parent_id, label) in existing:
                    label = alt  # the plain label belongs to another UID
            if choice is not None:
                out[key] = (choice, self._child(parents[parent_id], level, choice))
                continue
            if (parent_id, label) in planned:
                creator, their_uid = planned[(parent_id, label)]
                if uid is None or their_uid is None or uid == their_uid:
                    aliases.append((key, creator))
                    continue
                label = _suffixed(label, uid)
            if create:
                planned[(parent_id, label)] = (key, uid)
                to_create.append((key, label))
        if to_create:
            ids = self._insert(session, level, to_create, parents)
            for (key, _label), new_id in zip(to_create, ids, strict=True):
                out[key] = (new_id, self._child(parents[key[0]], level, new_id))
        for key, creator in aliases:
            if creator in out:
                out[key] = out[creator]
        for key in misses:
            if key in out:
                self._remember(key, out[key])
        return out

    def _existing(
        self, session: Session, keys: list[tuple[int, str, str | None]]
    ) -> dict[tuple[int, str], list[tuple[int, Any]]]:
        """Children with the wanted labels (and their UID-suffixed variants)."""
        found: dict[tuple[int, str], list[tuple[int, Any]]] = {}
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            labels = {k[1] for k in chunk} | {_suffixed(k[1], k[2]) for k in chunk if k[2]}
            rows = session.execute(
                select(Container.id, Container.parent_id, Container.label, Container.info).where(
                    Container.parent_id.in_({k[0] for k in chunk}),
                    Container.label.in_(labels),
                    Container.level != Level.ANALYSIS.value,
                )
            )
            for cid, parent_id, label, info in rows:
                found.setdefault((parent_id, label), []).append((cid, (info or {}).get("uid")))
        return found

    def _insert(
        self,
        session: Session,
        level: Level,
        items: list[tuple[tuple[int, str, str | None], str]],
        parents: dict[int, tuple[int, Ancestors] | None],
    ) -> list[int]:
        now = utcnow()
        rows: list[dict[str, Any]] = []
        for (parent_id, _label, uid), label in items:
            parent = parents[parent_id]
            assert parent is not None
            rows.append(
                {
                    "level": level.value,
                    "parent_id": parent_id,
                    "label": label,
                    "info": {"uid": uid} if uid else {},
                    "tags": [],
                    **{col: parent[1].get(col) for col in ANCESTOR_COLUMNS.values()},
                    "created": now,
                    "modified": now,
                }
            )
        table = Container.__table__
        assert isinstance(table, Table)
        result = session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
        )
        self.created += len(rows)
        return [int(row[0]) for row in result]

    def _child(self, parent: tuple[int, Ancestors] | None, level: Level, cid: int) -> Ancestors:
        assert parent is not None
        ancestors = dict(parent[1])
        ancestors[ANCESTOR_COLUMNS[level]] = cid
        return ancestors

    def _remember(self, key: tuple[int, str, str | None], value: tuple[int, Ancestors]) -> None:
        self._cache[key] = value
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)

    def forget(self) -> None:
        """Drop the cache (after a rolled-back transaction its ids may not exist)."""
        self._cache.clear()


def _choose(candidates: list[tuple[int, Any]] | None, uid: str | None) -> int | None:
    """The candidate a path with ``uid`` may use: same UID, or either side without one."""
    for cid, their_uid in candidates or ():
        if uid is None or their_uid is None or their_uid == uid:
            return cid
    return None


def _suffixed(label: str, uid: str | None) -> str:
    tail = (uid or "").replace(".", "")[-8:]
    return f"{label[: 255 - len(tail) - 1]}_{tail}"
