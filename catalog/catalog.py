"""The catalog API: every read and write of the hierarchy goes through :class:`Catalog`.

A Catalog is bound to one acting user; every method checks that user's role and every
mutation (and download) writes an AuditEvent in the same transaction as the change.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from catalog import audit, infokeys, transfer
from catalog import query as search_query
from catalog.access import Actor, actor_for, get_or_create_user, readable_scope_ids, require
from catalog.blobstore import BlobStore, open_blobstore
from catalog.db import Database, check_schema, upgrade
from catalog.errors import (
    ConflictError,
    InvalidInputError,
    PermissionDeniedError,
)
from catalog.models import Container, File, Level, Role, RoleName
from catalog.paths import format_path, parse_path
from catalog.rules import enqueue_rule_matches
from catalog.transfer import UploadResult
from catalog.tree import (
    container_path,
    file_path,
    find_child,
    get_container,
    new_container,
    resolve,
    resolve_container,
)


@dataclass
class Node:
    """One entry of a tree listing."""

    kind: str  # a Level value or "file"
    id: int
    label: str
    path: str
    size: int | None = None
    children: list[Node] = field(default_factory=list)


class Catalog:
    """The catalog database plus blob store, acting as one user."""

    def __init__(self, db: Database, blobs: BlobStore, username: str) -> None:
        self.db = db
        self.blobs = blobs
        with db.session() as session:
            self.actor: Actor = actor_for(session, username)

    @classmethod
    def open(
        cls, database_url: str, store_url: str, username: str, **store_options: Any
    ) -> Catalog:
        """Open an initialised catalog; raises SchemaOutdatedError when migrations are due."""
        db = Database(database_url)
        check_schema(db.engine)
        return cls(db, open_blobstore(store_url, **store_options), username)

    @classmethod
    def initialize(
        cls, database_url: str, store_url: str, admin: str, **store_options: Any
    ) -> Catalog:
        """Create or upgrade the schema, create the store, make ``admin`` a site admin."""
        db = Database(database_url)
        upgrade(db.engine)
        with db.session() as session:
            get_or_create_user(session, admin).is_admin = True
        return cls(db, open_blobstore(store_url, **store_options), admin)

    def close(self) -> None:
        self.db.dispose()

    # -- containers ---------------------------------------------------------------------

    def create_group(self, label: str) -> Container:
        if not self.actor.is_admin:
            raise PermissionDeniedError(
                f"user {self.actor.username!r}: only site admins create groups"
            )
        with self.db.session() as session:
            group = new_container(session, None, label)
            self._grant(session, group, self.actor.username, RoleName.ADMIN)
            audit.record(session, self.actor, "create", "group", group.id, label)
            return group

    def create_project(self, group_label: str, label: str) -> Container:
        with self.db.session() as session:
            group = resolve_container(session, parse_path(group_label))
            if group.level != Level.GROUP:
                raise InvalidInputError(f"{group_label!r} is not a group")
            require(session, self.actor, group, RoleName.ADMIN)
            project = new_container(session, group, label)
            self._grant(session, project, self.actor.username, RoleName.ADMIN)
            audit.record(
                session,
                self.actor,
                "create",
                "project",
                project.id,
                container_path(session, project),
            )
            return project

    def ensure_path(self, session: Session, labels: Sequence[str]) -> Container:
        """The container at ``labels``, creating missing levels below the project."""
        if len(labels) < 2:
            raise InvalidInputError("give at least group/project")
        node = resolve_container(session, parse_path(format_path(list(labels[:2]))))
        require(session, self.actor, node, RoleName.READ_WRITE)
        for label in labels[2:]:
            child = find_child(session, node, label)
            if child is None:
                child = new_container(session, node, label)
                audit.record(
                    session,
                    self.actor,
                    "create",
                    child.level,
                    child.id,
                    container_path(session, child),
                )
            node = child
        return node

    def get(self, path: str) -> Container | File:
        """The container or file at ``path`` (read access required)."""
        with self.db.session(readonly=True) as session:
            obj = resolve(session, path)
            self._require_obj(session, obj, RoleName.READ_ONLY)
            return obj

    def path_of(self, obj: Container | File) -> str:
        with self.db.session(readonly=True) as session:
            if isinstance(obj, File):
                return file_path(session, obj)
            return container_path(session, obj)

    def tree(self, path: str | None = None, depth: int = 1, files: bool = True) -> list[Node]:
        """Children of ``path`` (the visible groups when None) down to ``depth`` levels."""
        with self.db.session(readonly=True) as session:
            if path and path.strip("/"):
                obj = resolve(session, path)
                self._require_obj(session, obj, RoleName.READ_ONLY)
                if isinstance(obj, File):
                    return [Node("file", obj.id, obj.name, file_path(session, obj), obj.size)]
                return self._children(session, obj, container_path(session, obj), depth, files)
            nodes = []
            for group in self._visible_groups(session):
                node = Node(group.level, group.id, group.label, format_path([group.label]))
                if depth > 1:
                    node.children = self._children(session, group, node.path, depth - 1, files)
                nodes.append(node)
            return nodes

    def _children(
        self, session: Session, parent: Container, base: str, depth: int, files: bool
    ) -> list[Node]:
        out: list[Node] = []
        kids = session.scalars(
            select(Container).where(Container.parent_id == parent.id).order_by(Container.label)
        ).all()
        for kid in kids:
            seg = (
                format_path([], analysis=kid.label)
                if kid.level == Level.ANALYSIS
                else format_path([kid.label])
            )
            node = Node(kid.level, kid.id, kid.label, f"{base}/{seg}")
            if depth > 1:
                node.children = self._children(session, kid, node.path, depth - 1, files)
            out.append(node)
        if files:
            for f in session.scalars(
                select(File).where(File.container_id == parent.id, File.current).order_by(File.name)
            ):
                out.append(
                    Node(
                        "file", f.id, f.name, f"{base}/{format_path([], file_name=f.name)}", f.size
                    )
                )
        return out

    def _visible_groups(self, session: Session) -> list[Container]:
        scope = readable_scope_ids(session, self.actor)
        stmt = select(Container).where(Container.level == Level.GROUP).order_by(Container.label)
        if scope is not None:
            group_ids = select(func.coalesce(Container.group_id, Container.id)).where(
                Container.id.in_(scope)
            )
            stmt = stmt.where(Container.id.in_(group_ids))
        return list(session.scalars(stmt))

    # -- files --------------------------------------------------------------------------

    def upload(self, sources: Sequence[Path], to: str) -> list[UploadResult]:
        """Upload files/directories below ``to`` (see :func:`catalog.transfer.upload`)."""
        return transfer.upload(self, sources, to)

    def download(self, path: str, dest: Path, overwrite: bool = False) -> list[Path]:
        return transfer.download(self, path, dest, overwrite)

    # -- metadata -----------------------------------------------------------------------

    def info_get(self, path: str, key: str | None = None) -> Any:
        obj = self.get(path)
        return obj.info if key is None else infokeys.get_key(obj.info, key)

    def info_set(self, path: str, values: dict[str, Any]) -> dict[str, Any]:
        """Set dotted keys; returns the new info."""

        def change(info: dict[str, Any]) -> dict[str, Any]:
            for key, value in values.items():
                info = infokeys.set_key(info, key, value)
            return info

        return self._update_info(path, change, "info.set", sorted(values))

    def info_delete(self, path: str, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)

        def change(info: dict[str, Any]) -> dict[str, Any]:
            for key in keys:
                info = infokeys.delete_key(info, key)
            return info

        return self._update_info(path, change, "info.delete", keys)

    def _update_info(self, path: str, change: Any, action: str, keys: list[str]) -> dict[str, Any]:
        with self.db.session() as session:
            obj = resolve(session, path)
            self._require_obj(session, obj, RoleName.READ_WRITE)
            obj.info = change(obj.info)
            if isinstance(obj, File):
                session.flush()
                enqueue_rule_matches(session, [obj], "file-metadata-changed")
            audit.record(session, self.actor, action, _kind(obj), obj.id, path, keys=keys)
            return obj.info

    def tags_add(self, path: str, tags: Iterable[str]) -> list[str]:
        new = [_check_tag(t) for t in tags]
        return self._update_tags(
            path, lambda old: old + [t for t in new if t not in old], "tag.add", new
        )

    def tags_rm(self, path: str, tags: Iterable[str]) -> list[str]:
        gone = set(tags)
        return self._update_tags(
            path, lambda old: [t for t in old if t not in gone], "tag.rm", sorted(gone)
        )

    def _update_tags(self, path: str, change: Any, action: str, tags: list[str]) -> list[str]:
        with self.db.session() as session:
            obj = resolve(session, path)
            self._require_obj(session, obj, RoleName.READ_WRITE)
            obj.tags = list(dict.fromkeys(change(list(obj.tags))))
            if isinstance(obj, File):
                session.flush()
                enqueue_rule_matches(session, [obj], "file-metadata-changed")
            audit.record(session, self.actor, action, _kind(obj), obj.id, path, tags=tags)
            return obj.tags

    # -- search -----------------------------------------------------------------------

    def search(
        self,
        query: str,
        target: str = "file",
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Readable ``target`` objects matching ``query`` (see :mod:`catalog.query`), streamed
        as dicts keyed by column.  QueryError is raised now; rows come from one database
        connection (one snapshot) held until the iterator is exhausted or dropped.  What the
        user may read is looked up now, too."""
        readable = None
        if not self.actor.is_admin:
            with self.db.session(readonly=True) as session:
                readable = readable_scope_ids(session, self.actor)
        statement = search_query.prepare_search(
            self.db.engine.dialect, readable, query, target, columns, limit
        )

        def chunks() -> Iterator[list[dict[str, Any]]]:
            # A driver connection, not a SQLAlchemy Connection (~15 us less per search).
            with self.db.driver_connection() as conn:
                yield from search_query.search_chunks(conn, statement)

        return chain.from_iterable(chunks())

    # -- removal and permissions ------------------------------------------------------

    def rm(self, path: str, recursive: bool = False) -> None:
        """Remove a file (all versions) or a container (non-empty ones need ``recursive``)."""
        with self.db.session() as session:
            obj = resolve(session, path)
            if isinstance(obj, File):
                self._require_obj(session, obj, RoleName.READ_WRITE)
                session.execute(
                    delete(File).where(File.container_id == obj.container_id, File.name == obj.name)
                )
                audit.record(session, self.actor, "delete", "file", obj.id, path, sha256=obj.sha256)
                return
            level = Level(obj.level)
            if level is Level.GROUP:
                if not self.actor.is_admin:
                    raise PermissionDeniedError("only site admins remove groups")
            else:
                needed = RoleName.ADMIN if level is Level.PROJECT else RoleName.READ_WRITE
                require(session, self.actor, obj, needed)
            has_children = session.scalar(
                select(func.count()).select_from(Container).where(Container.parent_id == obj.id)
            ) or session.scalar(
                select(func.count()).select_from(File).where(File.container_id == obj.id)
            )
            if has_children and not recursive:
                raise ConflictError(f"{path!r} is not empty: remove it recursively (-r)")
            audit.record(session, self.actor, "delete", obj.level, obj.id, path)
            session.execute(delete(Container).where(Container.id == obj.id))

    def add_permission(self, path: str, username: str, role: str) -> None:
        """Grant ``role`` (admin, rw, ro) on a group or project to ``username``."""
        try:
            role_name = RoleName(role)
        except ValueError as exc:
            raise InvalidInputError(f"unknown role {role!r}: admin, rw or ro") from exc
        with self.db.session() as session:
            target = resolve_container(session, parse_path(path))
            if target.level not in (Level.GROUP, Level.PROJECT):
                raise InvalidInputError("roles are granted on groups and projects")
            require(session, self.actor, target, RoleName.ADMIN)
            self._grant(session, target, username, role_name)
            audit.record(
                session,
                self.actor,
                "permission.set",
                target.level,
                target.id,
                path,
                user=username,
                role=role_name.value,
            )

    def _grant(self, session: Session, target: Container, username: str, role: RoleName) -> None:
        user = get_or_create_user(session, username)
        row = session.scalars(
            select(Role).where(Role.container_id == target.id, Role.user_id == user.id)
        ).one_or_none()
        if row is None:
            session.add(Role(container_id=target.id, user_id=user.id, role=role.value))
        else:
            row.role = role.value

    def _require_obj(self, session: Session, obj: Container | File, needed: RoleName) -> None:
        container = get_container(session, obj.container_id) if isinstance(obj, File) else obj
        if container.level == Level.GROUP and needed is not RoleName.READ_ONLY:
            if not self.actor.is_admin:
                require(session, self.actor, container, RoleName.ADMIN)
            return
        require(session, self.actor, container, needed)


def _kind(obj: Container | File) -> str:
    return "file" if isinstance(obj, File) else obj.level


def _check_tag(tag: str) -> str:
    if not tag or tag != tag.strip() or len(tag) > 255 or any(ord(c) < 32 for c in tag):
        raise InvalidInputError(f"invalid tag {tag!r}")
    return tag
