"""Resolving paths to rows, creating containers, and naming rows by their path."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import and_, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.orm.util import identity_key

from catalog.errors import ConflictError, InvalidInputError, NotFoundError, PathError
from catalog.models import (
    ANCESTOR_COLUMNS,
    HIERARCHY,
    LEVEL_CLASSES,
    Container,
    File,
    Level,
)
from catalog.paths import ParsedPath, format_path, parse_path, validate_label


def child_level(parent: Container | None) -> Level:
    """The level a (non-analysis) child of ``parent`` has."""
    if parent is None:
        return Level.GROUP
    level = Level(parent.level)
    if level is Level.ANALYSIS:
        raise InvalidInputError("analyses hold files, not containers")
    index = HIERARCHY.index(level)
    if index + 1 >= len(HIERARCHY):
        raise InvalidInputError("acquisitions hold files, not containers")
    return HIERARCHY[index + 1]


def find_child(session: Session, parent: Container | None, label: str) -> Container | None:
    """The non-analysis child of ``parent`` (None: a group) labelled ``label``."""
    stmt = select(Container).where(Container.label == label, Container.level != Level.ANALYSIS)
    if parent is None:
        stmt = stmt.where(Container.level == Level.GROUP, Container.parent_id.is_(None))
    else:
        stmt = stmt.where(Container.parent_id == parent.id)
    return session.scalars(stmt).one_or_none()


def find_analysis(session: Session, parent: Container, label: str) -> Container:
    rows = session.scalars(
        select(Container)
        .where(Container.parent_id == parent.id, Container.level == Level.ANALYSIS)
        .where(Container.label == label)
        .order_by(Container.id.desc())
    ).all()
    if not rows:
        raise NotFoundError(f"no analysis {label!r} under {container_path(session, parent)}")
    return rows[0]


def get_container(session: Session, container_id: int) -> Container:
    container = session.get(Container, container_id)
    if container is None:
        raise NotFoundError(f"no container with id {container_id}")
    return container


def resolve_container(session: Session, parsed: ParsedPath) -> Container:
    """The container a parsed path names (ignoring ``file_name``)."""
    node: Container | None
    if parsed.anchor_id is not None:
        node = get_container(session, parsed.anchor_id)
    else:
        if not parsed.labels:
            raise PathError("the path names no container")
        node = _walk(session, parsed.labels)
    if parsed.analysis is not None:
        node = find_analysis(session, node, parsed.analysis)
    return node


#: One alias per hierarchy level, built once (building aliases costs more than the query).
_CHAIN = tuple(aliased(Container, name=f"walk_{level.value}") for level in HIERARCHY)


def _walk(session: Session, labels: tuple[str, ...]) -> Container:
    """The container at the end of a label path: one query for the whole chain; when it
    finds nothing, a level-by-level walk says which level is missing."""
    chain = _CHAIN[: len(labels)]
    top = chain[0]
    stmt = select(*chain).where(
        top.level == Level.GROUP, top.parent_id.is_(None), top.label == labels[0]
    )
    for parent, child, label in zip(chain, chain[1:], labels[1:], strict=False):
        stmt = stmt.join(
            child,
            and_(child.parent_id == parent.id, child.label == label, child.level != Level.ANALYSIS),
        )
    row = session.execute(stmt).one_or_none()
    if row is not None:
        return hold(session, tuple(row))[-1]
    node: Container | None = None
    for depth, label in enumerate(labels, start=1):
        node = find_child(session, node, label)
        if node is None:
            level = HIERARCHY[depth - 1].value
            raise NotFoundError(f"no {level} {format_path(labels[:depth])!r}")
    raise NotFoundError(f"no container {format_path(labels)!r}")  # changed meanwhile


def resolve(session: Session, path: str | ParsedPath) -> Container | File:
    """The container or (current version of the) file a path names."""
    parsed = parse_path(path) if isinstance(path, str) else path
    container = resolve_container(session, parsed)
    if parsed.file_name is None:
        return container
    file = current_file(session, container.id, parsed.file_name)
    if file is None:
        raise NotFoundError(f"no file {parsed.file_name!r} in {container_path(session, container)}")
    return file


def current_file(session: Session, container_id: int, name: str) -> File | None:
    return session.scalars(
        select(File).where(File.container_id == container_id, File.name == name, File.current)
    ).one_or_none()


def new_container(
    session: Session,
    parent: Container | None,
    label: str,
    level: Level | None = None,
    *,
    flush: bool = True,
) -> Container:
    """Create a child container (flushed to get its id, unless ``flush`` is False: then it
    has its id after the caller's next flush); checks label and sibling clashes."""
    level = level or child_level(parent)
    validate_label(label, level)
    if level is not Level.ANALYSIS and find_child(session, parent, label) is not None:
        where = container_path(session, parent) if parent else "the catalog"
        raise ConflictError(f"{level.value} {label!r} already exists in {where}")
    container = LEVEL_CLASSES[level](label=label, parent_id=parent.id if parent else None)
    if parent is not None:
        for column, value in parent.ancestor_ids().items():
            setattr(container, column, value)
    session.add(container)
    if flush:
        session.flush()
    return container


def ancestors(session: Session, container: Container) -> list[Container]:
    """The container's ancestors top-down (excluding itself): those this session holds
    already, the others in one query."""
    ids = [getattr(container, col) for col in ANCESTOR_COLUMNS.values()]
    wanted = [i for i in ids if i is not None and i != container.id]
    rows: dict[int, Container] = {}
    for i in wanted:
        held = session.identity_map.get(identity_key(Container, i))
        if isinstance(held, Container):
            rows[i] = held
    missing = [i for i in wanted if i not in rows]
    if missing:
        found = session.scalars(select(Container).where(Container.id.in_(missing))).all()
        rows.update((c.id, c) for c in hold(session, found))
    return [rows[i] for i in wanted if i in rows]


def hold(session: Session, rows: Sequence[Container]) -> Sequence[Container]:
    """Keep ``rows`` alive as long as ``session``: its identity map holds rows weakly, so a
    container looked up again by id (ancestors, paths, permission checks) costs no query."""
    session.info.setdefault("gb_held", []).extend(rows)
    return rows


def container_path(session: Session, container: Container | None) -> str:
    """The path string of a container."""
    if container is None:
        return ""
    chain = [*ancestors(session, container), container]
    labels = [c.label for c in chain if c.level != Level.ANALYSIS]
    analysis = container.label if container.level == Level.ANALYSIS else None
    return format_path(labels, analysis=analysis)


def file_path(session: Session, file: File) -> str:
    container = get_container(session, file.container_id)
    base = container_path(session, container)
    return f"{base}/{format_path([], file_name=file.name)}"
